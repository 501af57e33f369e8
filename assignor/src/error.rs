//! The library's one error type. Callers can ask [`Error::is_retriable`] to decide whether an
//! operation may succeed if repeated (after a metadata refresh or a backoff).

use std::time::Duration;

use kafka_protocol::ResponseError;

/// Every failure the client reports.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The TCP connection could not be made or broke.
    #[error("i/o error talking to {addr}: {source}")]
    Io {
        addr: String,
        #[source]
        source: std::sync::Arc<std::io::Error>,
    },
    /// The connection was closed (by the peer or by us) while a request was pending.
    #[error("connection to {addr} closed")]
    ConnectionClosed { addr: String },
    /// No answer within the request timeout or the operation's deadline.
    #[error("{what} timed out after {after:?}")]
    Timeout { what: String, after: Duration },
    /// A size prefix announced a frame larger than we accept. Nothing of that size was allocated.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: i64, max: usize },
    /// Bytes from a broker or a group member that do not parse.
    #[error("malformed {what}: {detail}")]
    Malformed { what: String, detail: String },
    /// Neither side supports a common version of an API.
    #[error("broker {addr} supports no version of {api} that we speak (broker {broker_min}..={broker_max}, us {ours_min}..={ours_max})")]
    UnsupportedVersion {
        addr: String,
        api: String,
        broker_min: i16,
        broker_max: i16,
        ours_min: i16,
        ours_max: i16,
    },
    /// The broker answered with a Kafka error code.
    #[error("{context}: broker error {code:?}")]
    Broker { context: String, code: BrokerCode },
    /// Configuration the caller gave is unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The consumer's group membership stopped for good; the variant says why. Polling again
    /// returns the same error: the consumer does not rejoin.
    #[error("consumer group failure: {0}")]
    Group(crate::group::GroupFatal),
    /// A topic or partition the caller named does not exist (after metadata refreshes).
    #[error("unknown topic or partition {topic}/{partition}")]
    UnknownTopicOrPartition { topic: String, partition: i32 },
    /// The client or one of its components was shut down.
    #[error("client is shut down")]
    Shutdown,
    /// No broker could be reached from the bootstrap list or metadata.
    #[error("no broker reachable: {0}")]
    NoBrokerAvailable(String),
    /// SASL authentication failed: wrong credentials, a mechanism the broker does not enable,
    /// or a server that could not prove it knows the credentials (SCRAM). Not retriable.
    #[error("SASL {mechanism} authentication failed: {detail}")]
    Authentication { mechanism: String, detail: String },
    /// The TLS handshake failed: an untrusted or misnamed certificate, or no common protocol.
    /// Not retriable.
    #[error("TLS handshake with {addr} failed: {detail}")]
    Tls { addr: String, detail: String },
    /// Offset out of range and `auto.offset.reset = none`.
    #[error("offset {offset} out of range for {topic}/{partition} and auto.offset.reset is none")]
    OffsetOutOfRange {
        topic: String,
        partition: i32,
        offset: i64,
    },
}

/// A Kafka error code as a broker answered it: [`BrokerCode::NONE`] (0) for success, else the
/// error, with the name the protocol gives it when we know it. `Display` shows that name as
/// Kafka writes it (`GROUP_AUTHORIZATION_FAILED`), `Debug` the variant and the number
/// (`GroupAuthorizationFailed(30)`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BrokerCode(pub i16);

impl BrokerCode {
    /// No error.
    pub const NONE: BrokerCode = BrokerCode(0);

    /// Whether the answer was a success (code 0).
    pub fn is_ok(self) -> bool {
        self == Self::NONE
    }
    /// The protocol's error; `None` for success. A code `kafka-protocol` does not know is
    /// `ResponseError::Unknown`.
    pub fn known(self) -> Option<ResponseError> {
        ResponseError::try_from_code(self.0)
    }
    /// Whether this is error `e`.
    pub fn is(self, e: ResponseError) -> bool {
        self.0 == e.code()
    }
}

impl From<i16> for BrokerCode {
    fn from(code: i16) -> Self {
        BrokerCode(code)
    }
}

impl From<ResponseError> for BrokerCode {
    fn from(e: ResponseError) -> Self {
        BrokerCode(e.code())
    }
}

impl std::fmt::Debug for BrokerCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.known() {
            None => write!(f, "NONE(0)"),
            Some(ResponseError::Unknown(code)) => write!(f, "UNKNOWN({code})"),
            Some(e) => write!(f, "{e:?}({})", self.0),
        }
    }
}

impl std::fmt::Display for BrokerCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.known() {
            None => f.write_str("NONE"),
            Some(ResponseError::Unknown(code)) => write!(f, "UNKNOWN_ERROR_CODE({code})"),
            Some(e) => {
                // `GroupAuthorizationFailed` → `GROUP_AUTHORIZATION_FAILED`, Kafka's spelling.
                for (i, c) in format!("{e:?}").chars().enumerate() {
                    if c.is_ascii_uppercase() && i > 0 {
                        f.write_str("_")?;
                    }
                    write!(f, "{}", c.to_ascii_uppercase())?;
                }
                Ok(())
            }
        }
    }
}

/// What refused us for good ([`Error::refusal_kind`]): nothing changes until someone fixes the
/// credentials, the certificates or the ACLs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalKind {
    /// SASL authentication failed: wrong credentials, a mechanism the broker does not enable,
    /// or a server that could not prove it knows the credentials (SCRAM).
    Authentication,
    /// The TLS handshake failed: an untrusted or misnamed certificate, or no common protocol.
    Tls,
    /// The broker denied the request: the principal lacks an ACL. `code` says on what
    /// (TOPIC_, GROUP_, CLUSTER_ or TRANSACTIONAL_ID_AUTHORIZATION_FAILED).
    Authorization(BrokerCode),
}

impl Error {
    /// Whether repeating the operation (after backoff / metadata refresh) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Io { .. } | Error::ConnectionClosed { .. } | Error::Timeout { .. } => true,
            Error::NoBrokerAvailable(_) | Error::UnknownTopicOrPartition { .. } => true,
            Error::Broker { code, .. } => code.known().is_some_and(|e| e.is_retriable()),
            _ => false,
        }
    }

    /// Whether the broker (or the TLS peer) refused *us*: bad credentials, an untrusted or
    /// misnamed certificate, or a missing ACL. Not retriable, and not transient either: a
    /// long-running component (the consumer's group membership) stops on it instead of
    /// retrying until someone fixes the configuration.
    pub fn is_refusal(&self) -> bool {
        self.refusal_kind().is_some()
    }

    /// What refused us, if this error is a refusal (see [`Error::is_refusal`]).
    pub fn refusal_kind(&self) -> Option<RefusalKind> {
        match self {
            Error::Authentication { .. } => Some(RefusalKind::Authentication),
            Error::Tls { .. } => Some(RefusalKind::Tls),
            Error::Group(fatal) => fatal.refusal_kind(),
            Error::Broker { code, .. } if code.is(ResponseError::SaslAuthenticationFailed) => {
                Some(RefusalKind::Authentication)
            }
            Error::Broker { code, .. } => [
                ResponseError::TopicAuthorizationFailed,
                ResponseError::GroupAuthorizationFailed,
                ResponseError::ClusterAuthorizationFailed,
                ResponseError::TransactionalIdAuthorizationFailed,
            ]
            .into_iter()
            .any(|e| code.is(e))
            .then_some(RefusalKind::Authorization(*code)),
            _ => None,
        }
    }

    /// The broker error code, if this is a broker error.
    pub fn broker_code(&self) -> Option<BrokerCode> {
        match self {
            Error::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn malformed(what: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Error::Malformed {
            what: what.into(),
            detail: detail.to_string(),
        }
    }

    pub(crate) fn broker(context: impl Into<String>, code: i16) -> Self {
        Error::Broker {
            context: context.into(),
            code: BrokerCode(code),
        }
    }
}

/// Turn a non-zero error code into an [`Error::Broker`].
pub(crate) fn check_code(context: impl FnOnce() -> String, code: i16) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(Error::broker(context(), code))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_codes_read_as_kafka_names_them() {
        let none = BrokerCode::from(0);
        assert!(none.is_ok() && none == BrokerCode::NONE && none.known().is_none());
        assert_eq!(
            (none.to_string(), format!("{none:?}")),
            ("NONE".into(), "NONE(0)".into())
        );
        let denied = BrokerCode::from(ResponseError::GroupAuthorizationFailed);
        assert!(!denied.is_ok() && denied.is(ResponseError::GroupAuthorizationFailed));
        assert_eq!(denied.to_string(), "GROUP_AUTHORIZATION_FAILED");
        assert_eq!(format!("{denied:?}"), "GroupAuthorizationFailed(30)");
        assert_eq!(BrokerCode(-1).to_string(), "UNKNOWN_SERVER_ERROR");
        let unknown = BrokerCode(9999);
        assert_eq!(unknown.to_string(), "UNKNOWN_ERROR_CODE(9999)");
        assert_eq!(format!("{unknown:?}"), "UNKNOWN(9999)");
    }

    #[test]
    fn refusals_are_the_security_errors_and_missing_acls() {
        let refused = [
            Error::Authentication {
                mechanism: "PLAIN".into(),
                detail: "bad password".into(),
            },
            Error::Tls {
                addr: "b:9093".into(),
                detail: "UnknownIssuer".into(),
            },
            Error::broker("metadata", ResponseError::TopicAuthorizationFailed.code()),
            Error::broker("join", ResponseError::GroupAuthorizationFailed.code()),
            Error::broker("create", ResponseError::ClusterAuthorizationFailed.code()),
        ];
        let kinds = [
            RefusalKind::Authentication,
            RefusalKind::Tls,
            RefusalKind::Authorization(ResponseError::TopicAuthorizationFailed.into()),
            RefusalKind::Authorization(ResponseError::GroupAuthorizationFailed.into()),
            RefusalKind::Authorization(ResponseError::ClusterAuthorizationFailed.into()),
        ];
        for (e, kind) in refused.into_iter().zip(kinds) {
            assert!(e.is_refusal() && !e.is_retriable(), "{e}");
            assert_eq!(e.refusal_kind(), Some(kind), "{e}");
        }
        let sasl = Error::broker("sasl", ResponseError::SaslAuthenticationFailed.code());
        assert_eq!(sasl.refusal_kind(), Some(RefusalKind::Authentication));
        for e in [
            Error::broker("fetch", ResponseError::NotLeaderOrFollower.code()),
            Error::ConnectionClosed { addr: "b".into() },
            Error::Config("x".into()),
        ] {
            assert!(!e.is_refusal(), "{e}");
        }
    }
}
