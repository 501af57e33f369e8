//! SASL authentication of a fresh connection: SaslHandshake v1, then SaslAuthenticate rounds
//! (KIP-152), with the codecs of `kafka-protocol`.

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::scram::{ScramClient, ScramHash};
use super::{SaslMechanism, SecurityConfig};
use crate::error::{Error, Result};
use crate::wire::Connection;

fn failed(addr: &str, mechanism: SaslMechanism, detail: impl std::fmt::Display) -> Error {
    Error::Authentication {
        mechanism: mechanism.name().into(),
        detail: format!("{addr}: {detail}"),
    }
}

/// One SaslAuthenticate round: send `bytes`, return the broker's answer or the authentication
/// error it reported.
async fn step(
    conn: &Connection,
    mechanism: SaslMechanism,
    bytes: Vec<u8>,
) -> Result<SaslAuthenticateResponse> {
    let version = conn.version(ApiKey::SaslAuthenticate)?;
    let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(bytes));
    let resp = conn.send(&req, version).await?;
    if resp.error_code != 0 {
        let code = crate::error::BrokerCode(resp.error_code);
        let message = resp
            .error_message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default();
        return Err(failed(
            conn.addr(),
            mechanism,
            format!("broker answered {code:?}: {message}"),
        ));
    }
    Ok(resp)
}

/// Authenticate `conn` as `cfg` says. Returns the session lifetime the broker granted
/// (KIP-368), in milliseconds, when it announced one.
pub(crate) async fn authenticate(conn: &Connection, cfg: &SecurityConfig) -> Result<Option<i64>> {
    let mechanism = cfg.sasl_mechanism;
    let addr = conn.addr().to_owned();
    let username = cfg.username.as_deref().unwrap_or_default();
    let password = cfg.password.as_deref().unwrap_or_default();

    let version = conn.version(ApiKey::SaslHandshake)?;
    let handshake =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism.name()));
    let resp = conn.send(&handshake, version).await?;
    if resp.error_code != 0 {
        let enabled: Vec<String> = resp.mechanisms.iter().map(|m| m.to_string()).collect();
        let code = crate::error::BrokerCode(resp.error_code);
        return Err(
            if code.is(ResponseError::UnsupportedSaslMechanism)
                || code.is(ResponseError::IllegalSaslState)
            {
                failed(
                    &addr,
                    mechanism,
                    format!(
                        "broker refused the mechanism ({code:?}); it offers {enabled:?} — set sasl.mechanism"
                    ),
                )
            } else {
                Error::broker(format!("SaslHandshake with {addr}"), resp.error_code)
            },
        );
    }

    let last = match mechanism {
        SaslMechanism::Plain => {
            // authzid NUL authcid NUL password (RFC 4616), with an empty authzid as Kafka's
            // clients send it.
            let mut msg = Vec::with_capacity(2 + username.len() + password.len());
            msg.push(0);
            msg.extend_from_slice(username.as_bytes());
            msg.push(0);
            msg.extend_from_slice(password.as_bytes());
            step(conn, mechanism, msg).await?
        }
        SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
            let hash = if mechanism == SaslMechanism::ScramSha256 {
                ScramHash::Sha256
            } else {
                ScramHash::Sha512
            };
            let mut client = ScramClient::new(hash, username, password)?;
            let server_first = step(conn, mechanism, client.client_first().into_bytes()).await?;
            // PBKDF2 takes milliseconds to (at the iteration cap) about a second: keep it off
            // the async workers.
            let (client, client_final) = tokio::task::spawn_blocking(move || {
                let r = client.client_final(&server_first.auth_bytes);
                (client, r)
            })
            .await
            .map_err(|_| Error::Shutdown)?;
            let client_final = client_final.map_err(|e| with_addr(&addr, e))?;
            let server_final = step(conn, mechanism, client_final.into_bytes()).await?;
            client
                .verify_server_final(&server_final.auth_bytes)
                .map_err(|e| with_addr(&addr, e))?;
            server_final
        }
    };
    tracing::debug!(addr, mechanism = mechanism.name(), "SASL authenticated");
    Ok((last.session_lifetime_ms > 0).then_some(last.session_lifetime_ms))
}

fn with_addr(addr: &str, e: Error) -> Error {
    match e {
        Error::Authentication { mechanism, detail } => Error::Authentication {
            mechanism,
            detail: format!("{addr}: {detail}"),
        },
        Error::Malformed { what, detail } => Error::Malformed {
            what: format!("{what} from {addr}"),
            detail,
        },
        other => other,
    }
}
