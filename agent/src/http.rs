//! A tiny HTTP/1.1 responder for `/metrics`, `/healthz` and `/readyz`. One request per
//! connection, bounded request head, timeouts, `Connection: close`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::{render, AgentState};

const MAX_HEAD: usize = 8 * 1024;

pub type Shared = Arc<Mutex<AgentState>>;

/// Answer one request path (pure): status, content type, body.
pub fn respond(path: &str, state: &AgentState) -> (u16, &'static str, String) {
    let path = path.split('?').next().unwrap_or(path);
    match path {
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            render(state),
        ),
        "/healthz" => (200, "text/plain", "ok\n".into()),
        "/readyz" if state.ready => (200, "text/plain", "ready\n".into()),
        "/readyz" => (
            503,
            "text/plain",
            "not ready: no successful poll yet\n".into(),
        ),
        _ => (404, "text/plain", "not found\n".into()),
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

async fn handle(mut stream: TcpStream, state: Shared) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let read_head = async {
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n")
                || buf.windows(2).any(|w| w == b"\n\n")
                || buf.len() > MAX_HEAD
            {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(5), read_head)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let head = String::from_utf8_lossy(&buf[..buf.len().min(MAX_HEAD)]);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (code, ctype, body) = if method != "GET" && method != "HEAD" {
        (
            if method.is_empty() { 400 } else { 405 },
            "text/plain",
            "GET only\n".to_owned(),
        )
    } else {
        let s = state.lock().map(|s| s.clone()).unwrap_or_default();
        respond(path, &s)
    };
    let mut out = format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        reason(code),
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    tokio::time::timeout(Duration::from_secs(5), stream.write_all(&out))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let _ = stream.shutdown().await;
    Ok(())
}

/// Serve until the task is dropped.
pub async fn serve(listener: TcpListener, state: Shared) {
    let permits = Arc::new(tokio::sync::Semaphore::new(16));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue; // overloaded: drop the connection
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _ = handle(stream, state).await;
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serves_the_three_endpoints() {
        let state: Shared = Arc::new(Mutex::new(AgentState {
            group: "g".into(),
            ..AgentState::default()
        }));
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(serve(l, state.clone()));
        async fn get(addr: std::net::SocketAddr, req: &str) -> String {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
                .await
                .unwrap()
                .unwrap();
            out
        }
        assert!(get(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 200"));
        assert!(get(addr, "GET /readyz HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 503"));
        state.lock().unwrap().ready = true;
        assert!(get(addr, "GET /readyz HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 200"));
        let m = get(addr, "GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(m.contains("lagbalance_agent_polls_total 0"), "{m}");
        assert!(get(addr, "GET /nope HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 405"));
        assert!(get(addr, "\x00\x01garbage\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 405"));
        task.abort();
    }
}
