//! Why a member stopped for good: [`GroupFatal`], what [`super::Output::Fatal`] carries and
//! what the consumer returns as [`crate::Error::Group`].

use std::fmt;

use lagbalance_assign::leader::LeaderError;

use crate::error::{BrokerCode, RefusalKind};

/// The group request that was answered FENCED_INSTANCE_ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FencedIn {
    Join,
    Sync,
    Heartbeat,
}

/// Why the member cannot continue. Each stops it for good: repeating the request cannot help
/// until someone changes the configuration, the ACLs or the group, so the member gives its
/// partitions up as lost and sends nothing more. The application matches on the variant; the
/// `Display` text names the group or the broker's error code for a human.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum GroupFatal {
    /// The group is a KIP-848 consumer-protocol group (`group.protocol=consumer`): the broker
    /// assigns its partitions and the client-side `assignors` of this member would never run.
    Kip848Group {
        group: String,
        assignors: Vec<String>,
    },
    /// The group chose `protocol` (an assignor), which this member does not offer.
    AssignorNotOffered { protocol: Option<String> },
    /// As leader, no plan could be made (unknown assignor, assignor failure, invalid plan).
    Leader(LeaderError),
    /// FindCoordinator for `group` answered GROUP_AUTHORIZATION_FAILED: the principal lacks
    /// the Read ACL on the group, so no coordinator will ever be found.
    CoordinatorAuthorization { group: String, code: BrokerCode },
    /// Another member with our `group.instance.id` took over the identity (KIP-345).
    FencedInstanceId { group: String, request: FencedIn },
    /// JoinGroup of `group` answered an error no retry can fix: GROUP_AUTHORIZATION_FAILED,
    /// INCONSISTENT_GROUP_PROTOCOL, INVALID_SESSION_TIMEOUT, GROUP_MAX_SIZE_REACHED,
    /// UNSUPPORTED_VERSION (FENCED_INSTANCE_ID is [`GroupFatal::FencedInstanceId`]).
    JoinRejected { group: String, code: BrokerCode },
    /// A request was refused for good before reaching the group: `kind` says by what
    /// (credentials, certificate or a missing ACL, see [`crate::Error::refusal_kind`]);
    /// `reason` is that error's text.
    Refused { kind: RefusalKind, reason: String },
}

impl GroupFatal {
    /// Whether the broker (or the TLS peer) refused *us*: credentials, certificate or ACL.
    pub fn is_refusal(&self) -> bool {
        self.refusal_kind().is_some()
    }

    /// What refused us, if the member stopped on a refusal: [`GroupFatal::Refused`], and the
    /// group answers that mean a missing Read ACL on the group.
    pub fn refusal_kind(&self) -> Option<RefusalKind> {
        match self {
            GroupFatal::Refused { kind, .. } => Some(*kind),
            GroupFatal::CoordinatorAuthorization { code, .. } => {
                Some(RefusalKind::Authorization(*code))
            }
            GroupFatal::JoinRejected { code, .. }
                if code.is(kafka_protocol::ResponseError::GroupAuthorizationFailed) =>
            {
                Some(RefusalKind::Authorization(*code))
            }
            _ => None,
        }
    }
}

impl fmt::Display for GroupFatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupFatal::Kip848Group { group, assignors } => write!(
                f,
                "group {group} is a KIP-848 consumer-protocol group (JoinGroup named no leader): \
                 the broker assigns its partitions and the client-side assignors ({}) cannot \
                 run; use a group of the classic protocol",
                assignors.join(", ")
            ),
            GroupFatal::AssignorNotOffered { .. } => {
                f.write_str("the group chose an assignor this member does not offer")
            }
            GroupFatal::Leader(e) => write!(f, "{e}"),
            GroupFatal::CoordinatorAuthorization { group, code } => write!(
                f,
                "FindCoordinator for group '{group}' failed with {code:?} \
                 (the principal needs the Read ACL on the group)"
            ),
            GroupFatal::FencedInstanceId { group, request } => match request {
                FencedIn::Join => write!(
                    f,
                    "JoinGroup of group '{group}' failed with {:?}",
                    BrokerCode(kafka_protocol::ResponseError::FencedInstanceId.code())
                ),
                FencedIn::Sync => {
                    f.write_str("SyncGroup: fenced by another member with our group.instance.id")
                }
                FencedIn::Heartbeat => {
                    f.write_str("heartbeat: fenced by another member with our group.instance.id")
                }
            },
            GroupFatal::JoinRejected { group, code } => {
                write!(f, "JoinGroup of group '{group}' failed with {code:?}")
            }
            GroupFatal::Refused { reason, .. } => f.write_str(reason),
        }
    }
}

impl std::error::Error for GroupFatal {}

#[cfg(test)]
mod tests {
    use kafka_protocol::ResponseError;
    use lagbalance_assign::model::AssignError;

    use super::*;

    /// The texts are what the member reported before the variants existed; logs, alerts and
    /// tests match on them.
    #[test]
    fn each_variant_displays_the_established_text() {
        let g = || "g".to_string();
        let cases = [
            (
                GroupFatal::Kip848Group {
                    group: g(),
                    assignors: vec!["lagbalance".into(), "cooperative-sticky".into()],
                },
                "group g is a KIP-848 consumer-protocol group (JoinGroup named no leader): the \
                 broker assigns its partitions and the client-side assignors (lagbalance, \
                 cooperative-sticky) cannot run; use a group of the classic protocol",
            ),
            (
                GroupFatal::AssignorNotOffered {
                    protocol: Some("range".into()),
                },
                "the group chose an assignor this member does not offer",
            ),
            (
                GroupFatal::Leader(LeaderError::UnknownAssignor("x".into())),
                "leader does not know assignor x",
            ),
            (
                GroupFatal::Leader(LeaderError::InvalidPlan {
                    protocol: "greedy".into(),
                    error: AssignError::InvalidPlan("t-0 twice".into()),
                }),
                "assignor greedy produced an invalid plan: assignor produced an invalid plan: \
                 t-0 twice",
            ),
            (
                GroupFatal::CoordinatorAuthorization {
                    group: g(),
                    code: BrokerCode(ResponseError::GroupAuthorizationFailed.code()),
                },
                "FindCoordinator for group 'g' failed with GroupAuthorizationFailed(30) (the \
                 principal needs the Read ACL on the group)",
            ),
            (
                GroupFatal::FencedInstanceId {
                    group: g(),
                    request: FencedIn::Join,
                },
                "JoinGroup of group 'g' failed with FencedInstanceId(82)",
            ),
            (
                GroupFatal::FencedInstanceId {
                    group: g(),
                    request: FencedIn::Sync,
                },
                "SyncGroup: fenced by another member with our group.instance.id",
            ),
            (
                GroupFatal::FencedInstanceId {
                    group: g(),
                    request: FencedIn::Heartbeat,
                },
                "heartbeat: fenced by another member with our group.instance.id",
            ),
            (
                GroupFatal::JoinRejected {
                    group: g(),
                    code: BrokerCode(ResponseError::InconsistentGroupProtocol.code()),
                },
                "JoinGroup of group 'g' failed with InconsistentGroupProtocol(23)",
            ),
            (
                GroupFatal::Refused {
                    kind: RefusalKind::Authentication,
                    reason: "SASL PLAIN authentication failed: bad password".into(),
                },
                "SASL PLAIN authentication failed: bad password",
            ),
        ];
        for (fatal, text) in cases {
            assert_eq!(fatal.to_string(), text, "{fatal:?}");
        }
    }

    #[test]
    fn refusals_are_the_denied_credentials_and_acls() {
        let g = || "g".to_string();
        let code = |e: ResponseError| BrokerCode(e.code());
        let no_read_acl = RefusalKind::Authorization(code(ResponseError::GroupAuthorizationFailed));
        for (fatal, kind) in [
            (
                GroupFatal::Refused {
                    kind: RefusalKind::Tls,
                    reason: "TLS handshake with b:9093 failed: UnknownIssuer".into(),
                },
                RefusalKind::Tls,
            ),
            (
                GroupFatal::CoordinatorAuthorization {
                    group: g(),
                    code: code(ResponseError::GroupAuthorizationFailed),
                },
                no_read_acl,
            ),
            (
                GroupFatal::JoinRejected {
                    group: g(),
                    code: code(ResponseError::GroupAuthorizationFailed),
                },
                no_read_acl,
            ),
        ] {
            assert!(fatal.is_refusal(), "{fatal}");
            assert_eq!(fatal.refusal_kind(), Some(kind), "{fatal}");
            assert_eq!(crate::Error::Group(fatal).refusal_kind(), Some(kind));
        }
        for fatal in [
            GroupFatal::JoinRejected {
                group: g(),
                code: code(ResponseError::GroupMaxSizeReached),
            },
            GroupFatal::FencedInstanceId {
                group: g(),
                request: FencedIn::Heartbeat,
            },
        ] {
            assert!(!fatal.is_refusal(), "{fatal}");
            assert!(!crate::Error::Group(fatal).is_retriable());
        }
    }
}
