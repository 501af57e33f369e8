//! TLS and SASL against the real broker (tansu 0.6.0) on 127.0.0.1; see docs/security.md.
//!
//! * tansu's own SASL (`--authentication`): it refuses anonymous requests and SCRAM logins of
//!   users it does not have — and it can have none here (its store is in memory, and creating
//!   a user needs a login nothing can make: no PLAIN in its build, OAUTHBEARER refuses every
//!   token). So [`tansu_authenticator_refuses_clearly`] checks the refusal path only.
//! * Successful SASL: a loopback SASL gate in this file (PLAIN and SCRAM-SHA-256/512 server
//!   side per RFC 4616/5802/7677, written against the RFCs, not our client) authenticates the
//!   connection and then relays its requests to tansu; tansu advertises the gate's port, so
//!   every connection the client makes logs in.
//! * TLS: tansu 0.6.0 cannot serve TLS (its `--cert` and `--key` flags exclude each other, and
//!   the broker drops the TLS acceptor it builds). So TLS is terminated by a rustls acceptor in
//!   this file that forwards the plaintext bytes (to tansu, or to the gate for SASL_SSL).
//!   The CA and certificates are made here with rcgen, written to a temporary directory and
//!   deleted afterwards.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::{
    ApiKey, RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use lagbalance::{Client, Error};
use lagbalance_integration::broker::TansuOptions;
use lagbalance_integration::secure::{client_config, connect, path, produce_fetch_round_trip};
use lagbalance_integration::{unique_temp_dir, TestBroker};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------------------------
// Throwaway PKI

/// A CA, with the PEM files of certificates it signed, in a directory deleted on drop.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = unique_temp_dir(&format!("lagbalance-pki-{name}")).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("lagbalance test CA {name}"));
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for `names` (DNS names or IP addresses): (cert PEM path, key PEM path,
    /// rustls forms).
    fn issue(&self, file: &str, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, file.to_owned());
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let cert_path = self.dir.join(format!("{file}.pem"));
        let key_path = self.dir.join(format!("{file}.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Issued {
            cert_path,
            key_path,
            cert: cert.der().clone(),
            key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }
}

struct Issued {
    cert_path: PathBuf,
    key_path: PathBuf,
    cert: rustls::pki_types::CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
}

// ---------------------------------------------------------------------------------------------
// The loopback TLS terminator in front of tansu

/// Accepts TLS on 127.0.0.1 and forwards the plaintext to `upstream`. Stops on drop.
struct TlsTerminator {
    port: u16,
    task: Option<JoinHandle<()>>,
    listener: Option<TcpListener>,
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl TlsTerminator {
    /// Bind first (tansu must advertise the port), serve later.
    async fn bind() -> TlsTerminator {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        TlsTerminator {
            port: listener.local_addr().unwrap().port(),
            task: None,
            listener: Some(listener),
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Serve with `server` as certificate; with `client_ca`, demand a client certificate it
    /// signed (mutual TLS).
    fn serve(&mut self, server: &Issued, client_ca: Option<&Pki>, upstream: String) {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(pki) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(pki.ca.der().clone()).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(vec![server.cert.clone()], server.key.clone_key())
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = self.listener.take().expect("serve once");
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let upstream = upstream.clone();
                conns.spawn(async move {
                    let Ok(Ok(mut tls)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                    else {
                        return;
                    };
                    let Ok(mut plain) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        }));
    }
}

// ---------------------------------------------------------------------------------------------
// The loopback SASL gate in front of tansu

/// How the gate's SCRAM server behaves.
#[derive(Clone, Copy, PartialEq)]
enum GateMode {
    Honest,
    /// Accepts the client's proof but sends a server signature made with the wrong key: a
    /// server that does not really know the credentials.
    ForgedSignature,
}

/// A Kafka SASL server (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 per RFC 5802/7677) that forwards
/// everything else, after a successful login, to `upstream`. Requests are relayed one at a
/// time (a broker answers a connection's requests in order anyway). Stops on drop.
struct SaslGate {
    port: u16,
    task: JoinHandle<()>,
}

impl Drop for SaslGate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct User {
    password: &'static str,
    salt: &'static [u8],
    iterations: u32,
}

const USERS: &[(&str, User)] = &[(
    "alice",
    User {
        password: "alice-secret",
        salt: b"alice-salt",
        iterations: 4096,
    },
)];

async fn read_frame(s: &mut (impl AsyncRead + Unpin)) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.ok()?;
    let len = i32::from_be_bytes(len);
    if !(8..=100 << 20).contains(&len) {
        return None;
    }
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body).await.ok()?;
    Some(body)
}

fn response<R: Encodable>(api: ApiKey, version: i16, correlation: i32, body: &R) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(correlation)
        .encode(&mut buf, api.response_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    buf.to_vec()
}

/// Server side of one SCRAM exchange, after the client-first message.
struct ScramServer {
    client_first_bare: String,
    server_first: String,
    nonce: String,
    salted: Vec<u8>,
}

enum Login {
    Plain,
    Scram {
        sha512: bool,
        state: Option<ScramServer>,
    },
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One SASL token from the client → (answer, logged in?) or the error message.
fn sasl_step(login: &mut Login, token: &[u8], mode: GateMode) -> Result<(Vec<u8>, bool), String> {
    let (sha512, state) = match login {
        Login::Plain => {
            let parts: Vec<&[u8]> = token.split(|b| *b == 0).collect();
            let [_, user, password] = parts[..] else {
                return Err("malformed PLAIN message".into());
            };
            let ok = USERS
                .iter()
                .any(|(name, u)| name.as_bytes() == user && u.password.as_bytes() == password);
            return if ok {
                Ok((Vec::new(), true))
            } else {
                Err("Authentication failed: Invalid username or password".into())
            };
        }
        Login::Scram { sha512, state } => (*sha512, state),
    };
    let (hash, digest, pbkdf2, len) = if sha512 {
        (
            ring::hmac::HMAC_SHA512,
            &ring::digest::SHA512,
            ring::pbkdf2::PBKDF2_HMAC_SHA512,
            64,
        )
    } else {
        (
            ring::hmac::HMAC_SHA256,
            &ring::digest::SHA256,
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            32,
        )
    };
    let msg = std::str::from_utf8(token).map_err(|_| "not UTF-8".to_string())?;
    let Some(st) = state.as_ref() else {
        let bare = msg.strip_prefix("n,,").ok_or("bad gs2 header")?;
        let (user, cnonce) = bare
            .strip_prefix("n=")
            .and_then(|r| r.split_once(",r="))
            .ok_or("bad client-first")?;
        let Some((_, u)) = USERS.iter().find(|(n, _)| *n == user) else {
            return Err(format!("Authentication failed: unknown user {user}"));
        };
        let nonce = format!("{cnonce}gate{}", std::process::id());
        let server_first = format!("r={nonce},s={},i={}", b64(u.salt), u.iterations);
        let mut salted = vec![0u8; len];
        ring::pbkdf2::derive(
            pbkdf2,
            NonZeroU32::new(u.iterations).unwrap(),
            u.salt,
            u.password.as_bytes(),
            &mut salted,
        );
        *state = Some(ScramServer {
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
            salted,
        });
        return Ok((server_first.into_bytes(), false));
    };
    let (without_proof, proof) = msg.rsplit_once(",p=").ok_or("client-final without proof")?;
    if without_proof != format!("c=biws,r={}", st.nonce) {
        return Err("client-final does not echo the nonce".into());
    }
    let auth = format!(
        "{},{},{without_proof}",
        st.client_first_bare, st.server_first
    );
    let key = ring::hmac::Key::new(hash, &st.salted);
    let client_key = ring::hmac::sign(&key, b"Client Key");
    let stored = ring::digest::digest(digest, client_key.as_ref());
    let sig = ring::hmac::sign(
        &ring::hmac::Key::new(hash, stored.as_ref()),
        auth.as_bytes(),
    );
    let proof = base64::engine::general_purpose::STANDARD
        .decode(proof)
        .map_err(|_| "proof not base64".to_string())?;
    let recovered: Vec<u8> = proof.iter().zip(sig.as_ref()).map(|(a, b)| a ^ b).collect();
    if ring::digest::digest(digest, &recovered).as_ref() != stored.as_ref() {
        return Err("Authentication failed: invalid credentials".into());
    }
    let label: &[u8] = match mode {
        GateMode::Honest => b"Server Key",
        GateMode::ForgedSignature => b"Not The Server Key",
    };
    let server_key = ring::hmac::Key::new(hash, ring::hmac::sign(&key, label).as_ref());
    let v = ring::hmac::sign(&server_key, auth.as_bytes());
    Ok((format!("v={}", b64(v.as_ref())).into_bytes(), true))
}

async fn gate_connection(mut client: TcpStream, upstream: String, mode: GateMode) {
    let mut login: Option<Login> = None;
    let mut authenticated = false;
    let Ok(mut broker) = TcpStream::connect(&upstream).await else {
        return;
    };
    while let Some(frame) = read_frame(&mut client).await {
        let mut buf = Bytes::from(frame.clone());
        let api = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let Ok(key) = ApiKey::try_from(api) else {
            return;
        };
        let Ok(header) = RequestHeader::decode(&mut buf, key.request_header_version(version))
        else {
            return;
        };
        let correlation = header.correlation_id;
        let answer = match key {
            ApiKey::SaslHandshake => {
                let Ok(req) = SaslHandshakeRequest::decode(&mut buf, version) else {
                    return;
                };
                let mut resp = SaslHandshakeResponse::default().with_mechanisms(
                    ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
                        .map(StrBytes::from_static_str)
                        .to_vec(),
                );
                login = match req.mechanism.as_str() {
                    "PLAIN" => Some(Login::Plain),
                    "SCRAM-SHA-256" => Some(Login::Scram {
                        sha512: false,
                        state: None,
                    }),
                    "SCRAM-SHA-512" => Some(Login::Scram {
                        sha512: true,
                        state: None,
                    }),
                    _ => {
                        resp.error_code = 33; // UNSUPPORTED_SASL_MECHANISM
                        None
                    }
                };
                response(key, version, correlation, &resp)
            }
            ApiKey::SaslAuthenticate => {
                let Ok(req) = SaslAuthenticateRequest::decode(&mut buf, version) else {
                    return;
                };
                let mut resp = SaslAuthenticateResponse::default();
                match login.as_mut() {
                    None => resp.error_code = 34, // ILLEGAL_SASL_STATE
                    Some(l) => match sasl_step(l, &req.auth_bytes, mode) {
                        Ok((bytes, done)) => {
                            resp.auth_bytes = Bytes::from(bytes);
                            authenticated |= done;
                        }
                        Err(message) => {
                            resp.error_code = 58; // SASL_AUTHENTICATION_FAILED
                            resp.error_message = Some(StrBytes::from_string(message));
                            login = None;
                        }
                    },
                }
                response(key, version, correlation, &resp)
            }
            // Like a broker: nothing but ApiVersions before the login.
            _ if !authenticated && key != ApiKey::ApiVersions => return,
            _ => {
                let mut out = (frame.len() as i32).to_be_bytes().to_vec();
                out.extend_from_slice(&frame);
                if broker.write_all(&out).await.is_err() {
                    return;
                }
                let Some(reply) = read_frame(&mut broker).await else {
                    return;
                };
                let mut out = (reply.len() as i32).to_be_bytes().to_vec();
                out.extend_from_slice(&reply);
                out
            }
        };
        if client.write_all(&answer).await.is_err() {
            return;
        }
    }
}

impl SaslGate {
    fn start(listener: TcpListener, upstream: String, mode: GateMode) -> SaslGate {
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                conns.spawn(gate_connection(tcp, upstream.clone(), mode));
            }
        });
        SaslGate { port, task }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn sasl(
    mechanism: &'static str,
    user: &'static str,
    password: &'static str,
) -> Vec<(&'static str, &'static str)> {
    vec![
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanism", mechanism),
        ("sasl.username", user),
        ("sasl.password", password),
    ]
}

// ---------------------------------------------------------------------------------------------
// SASL against tansu's own authenticator

/// tansu 0.6.0 with `--authentication` can hold no SCRAM user here: its in-memory store starts
/// empty, and AlterUserScramCredentials needs a logged-in connection that nothing can make
/// (its rsasl is built without PLAIN, and its OAUTHBEARER rejects every token; `tansu user
/// create` does not log in). What can be checked against it: it refuses anonymous requests,
/// it takes our SCRAM-SHA-256/512 messages, and its refusal reaches the caller as a named,
/// non-retriable error, without a retry loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_authenticator_refuses_clearly() {
    let broker = TestBroker::start_own_with(&TansuOptions {
        authentication: true,
        ..Default::default()
    })
    .await
    .expect("tansu --authentication");
    let addr = broker.bootstrap.clone();

    let anonymous = Client::new(client_config(&addr, &[])).unwrap();
    assert!(
        anonymous.refresh_metadata(&[]).await.is_err(),
        "tansu --authentication served an anonymous Metadata request"
    );

    // tansu's build has no PLAIN: it drops the connection at the handshake (log:
    // `Auth(Sasl(NoSharedMechanism))`) instead of answering UNSUPPORTED_SASL_MECHANISM.
    let e = connect(&addr, &sasl("PLAIN", "alice", "alice-secret"))
        .await
        .err()
        .expect("PLAIN on tansu");
    assert!(matches!(e, Error::ConnectionClosed { .. }), "{e}");

    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let props = sasl(mechanism, "alice", "alice-secret");
        let e = connect(&addr, &props)
            .await
            .err()
            .expect("no such user on tansu");
        assert!(
            matches!(e, Error::Authentication { .. }),
            "{mechanism}: {e}"
        );
        assert!(!e.is_retriable());
        // rsasl (tansu's SASL library) answers an unknown user with a made-up server-first
        // message and then a server-final `e=unknown-user` (RFC 5802 §9: do not reveal which
        // users exist), so the refusal comes from our SCRAM client reading that final message.
        assert!(e.to_string().contains("unknown-user"), "{e}");
        let client = Client::new(client_config(&addr, &props)).unwrap();
        let started = Instant::now();
        let e = client.refresh_metadata(&[]).await.unwrap_err();
        assert!(
            matches!(e, Error::Authentication { .. }),
            "{mechanism}: {e}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "authentication failure was retried for {:?}",
            started.elapsed()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// SASL through the gate, to tansu

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_plain_and_scram_produce_fetch_through_gate() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let broker = TestBroker::start_own_with(&TansuOptions {
        advertised_port: Some(port),
        ..Default::default()
    })
    .await
    .expect("tansu");
    let gate = SaslGate::start(listener, broker.bootstrap.clone(), GateMode::Honest);
    let addr = gate.addr();

    for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let props = sasl(mechanism, "alice", "alice-secret");
        let client = Client::new(client_config(&addr, &props)).unwrap();
        produce_fetch_round_trip(&client, 10).await;

        for (user, password) in [("alice", "wrong"), ("mallory", "alice-secret")] {
            let props = sasl(mechanism, user, password);
            let e = connect(&addr, &props).await.err().expect("refused");
            assert!(
                matches!(e, Error::Authentication { .. }),
                "{mechanism}: {e}"
            );
            assert!(!e.is_retriable());
            assert!(e.to_string().contains(mechanism), "{e}");
            let started = Instant::now();
            let e = Client::new(client_config(&addr, &props))
                .unwrap()
                .refresh_metadata(&[])
                .await
                .unwrap_err();
            assert!(
                matches!(e, Error::Authentication { .. }),
                "{mechanism}: {e}"
            );
            assert!(started.elapsed() < Duration::from_secs(10));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_rejects_a_server_that_cannot_prove_the_password() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broker = TestBroker::start().await.expect("broker");
    let gate = SaslGate::start(
        listener,
        broker.bootstrap.clone(),
        GateMode::ForgedSignature,
    );
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let e = connect(&gate.addr(), &sasl(mechanism, "alice", "alice-secret"))
            .await
            .err()
            .expect("forged server signature");
        assert!(
            matches!(e, Error::Authentication { .. }),
            "{mechanism}: {e}"
        );
        assert!(e.to_string().contains("signature"), "{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// TLS through the loopback terminator

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_produce_fetch_and_certificate_checks() {
    let pki = Pki::new("tls");
    let mut tls = TlsTerminator::bind().await;
    let broker = TestBroker::start_own_with(&TansuOptions {
        advertised_port: Some(tls.port),
        ..Default::default()
    })
    .await
    .expect("tansu");
    let server = pki.issue("broker", &["localhost", "127.0.0.1"]);
    tls.serve(&server, None, broker.bootstrap.clone());
    let addr = tls.addr();
    let ca = pki.ca_path();

    let ssl = [("security.protocol", "SSL"), ("ssl.ca.location", path(&ca))];
    let client = Client::new(client_config(&addr, &ssl)).unwrap();
    produce_fetch_round_trip(&client, 50).await;
    // The hostname form of the address is checked against the certificate's DNS name.
    connect(&format!("localhost:{}", tls.port), &ssl)
        .await
        .expect("localhost is in the certificate");

    // Plaintext against a TLS port fails (and does not hang).
    assert!(connect(&addr, &[]).await.is_err());

    // A certificate from a CA we do not trust.
    let other = Pki::new("other");
    let e = connect(
        &addr,
        &[
            ("security.protocol", "SSL"),
            ("ssl.ca.location", path(&other.ca_path())),
        ],
    )
    .await
    .err()
    .expect("untrusted CA");
    assert!(matches!(e, Error::Tls { .. }), "{e}");
    assert!(!e.is_retriable());
    let e = Client::new(client_config(
        &addr,
        &[
            ("security.protocol", "SSL"),
            ("ssl.ca.location", path(&other.ca_path())),
        ],
    ))
    .unwrap()
    .refresh_metadata(&[])
    .await
    .unwrap_err();
    assert!(
        matches!(e, Error::Tls { .. }),
        "not retried until the deadline: {e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_hostname_check_and_mutual_tls() {
    let pki = Pki::new("mtls");
    let mut tls = TlsTerminator::bind().await;
    let broker = TestBroker::start_own_with(&TansuOptions {
        advertised_port: Some(tls.port),
        ..Default::default()
    })
    .await
    .expect("tansu");
    // A certificate for another name than the one we connect to, and client certificates
    // required.
    let server = pki.issue("elsewhere", &["broker.invalid"]);
    tls.serve(&server, Some(&pki), broker.bootstrap.clone());
    let addr = tls.addr();
    let ca = pki.ca_path();
    let client_cert = pki.issue("client", &["client.invalid"]);

    let mut props = vec![
        ("security.protocol", "SSL"),
        ("ssl.ca.location", path(&ca)),
        ("ssl.certificate.location", path(&client_cert.cert_path)),
        ("ssl.key.location", path(&client_cert.key_path)),
    ];
    let e = connect(&addr, &props).await.err().expect("name mismatch");
    assert!(matches!(e, Error::Tls { .. }), "{e}");
    assert!(e.to_string().to_lowercase().contains("name"), "{e}");

    props.push(("ssl.endpoint.identification.algorithm", "none"));
    let client = Client::new(client_config(&addr, &props)).unwrap();
    produce_fetch_round_trip(&client, 10).await;

    // Without a client certificate the terminator refuses us (TLS 1.3 reports it after the
    // handshake, so the failure may come as a closed connection rather than a TLS error).
    let no_cert = [
        ("security.protocol", "SSL"),
        ("ssl.ca.location", path(&ca)),
        ("ssl.endpoint.identification.algorithm", "none"),
    ];
    assert!(connect(&addr, &no_cert).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_ssl_scram_through_tls() {
    let pki = Pki::new("sasl-ssl");
    let mut tls = TlsTerminator::bind().await;
    let broker = TestBroker::start_own_with(&TansuOptions {
        advertised_port: Some(tls.port),
        ..Default::default()
    })
    .await
    .expect("tansu");
    // TLS terminator → SASL gate → tansu.
    let gate = SaslGate::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        broker.bootstrap.clone(),
        GateMode::Honest,
    );
    let server = pki.issue("broker", &["127.0.0.1"]);
    tls.serve(&server, None, gate.addr());

    let ca = pki.ca_path();
    let props = [
        ("security.protocol", "SASL_SSL"),
        ("ssl.ca.location", path(&ca)),
        ("sasl.mechanism", "SCRAM-SHA-512"),
        ("sasl.username", "alice"),
        ("sasl.password", "alice-secret"),
    ];
    let client = Client::new(client_config(&tls.addr(), &props)).unwrap();
    produce_fetch_round_trip(&client, 10).await;
}
