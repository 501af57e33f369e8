//! Request translation: a membership machine [`Request`] becomes the Kafka request message at
//! the version negotiated with the broker, and the broker's answer becomes the machine's
//! [`Response`] (or, when the request failed, the [`Input`] that says so). The machine stays
//! sans-IO and version-agnostic; every wire detail of the group protocol lives here.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, FindCoordinatorRequest, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::{Request as KafkaRequest, StrBytes};
use kafka_protocol::ResponseError;

use crate::cluster::{Client, Lane};
use crate::error::{BrokerCode, Error, Result};
use crate::group::machine::{JoinAnswer, JoinedMember};
use crate::group::{Input, Request, Response};
use crate::wire::Connection;

/// The machine's input for a failed request: a refusal (credentials, certificate, missing
/// ACL) stops the member, since repeating cannot help; anything else is retried.
pub(super) fn failure(id: u64, e: &Error) -> Input {
    let reason = e.to_string();
    match e.refusal_kind() {
        Some(kind) => Input::RequestRefused { id, kind, reason },
        None => Input::RequestFailed { id, reason },
    }
}

/// The partition count of each of `topics` the cluster knows, from freshly refreshed
/// metadata (topics it does not know are left out).
pub(super) async fn partition_counts(
    client: &Client,
    topics: &[String],
) -> Result<Vec<(String, i32)>> {
    let meta = client.refresh_metadata(topics).await?;
    Ok(topics
        .iter()
        .filter_map(|t| meta.topics.get(t).map(|p| (t.clone(), p.len() as i32)))
        .collect())
}

/// Where the error code sits in a non-flexible group response body: after the throttle time
/// from v1 on, first in v0.
fn error_offset(version: i16) -> usize {
    if version >= 1 {
        4
    } else {
        0
    }
}

/// Send a JoinGroup, SyncGroup or Heartbeat at `version`. An error answer whose other fields
/// do not decode still counts: its error code is read at [`error_offset`] and `with_code`
/// makes the answer carrying it (see [`Connection::send_salvaging_error`]).
async fn send_group_request<R: KafkaRequest>(
    conn: &Connection,
    req: &R,
    version: i16,
    timeout: Duration,
    with_code: impl FnOnce(i16) -> R::Response,
) -> Result<R::Response> {
    conn.send_salvaging_error(req, version, timeout, error_offset(version), with_code)
        .await
}

/// One protocol the member offers, with its subscription blob.
fn join_protocol((name, metadata): (String, Bytes)) -> JoinGroupRequestProtocol {
    JoinGroupRequestProtocol::default()
        .with_name(s(&name))
        .with_metadata(metadata)
}

/// One member as the JoinGroup response lists it (to the leader).
fn joined_member(m: JoinGroupResponseMember) -> JoinedMember {
    JoinedMember {
        member_id: m.member_id.to_string(),
        instance_id: m.group_instance_id.map(|i| i.to_string()),
        metadata: m.metadata,
    }
}

/// The leader's assignment for one member.
fn sync_assignment((member_id, assignment): (String, Bytes)) -> SyncGroupRequestAssignment {
    SyncGroupRequestAssignment::default()
        .with_member_id(s(&member_id))
        .with_assignment(assignment)
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

/// Turn a machine request into the wire request at the negotiated version and back.
pub(super) async fn send_request(
    client: &Client,
    coordinator: Option<String>,
    group: &str,
    request: Request,
    join_timeout: Duration,
) -> Result<Response> {
    if let Request::FindCoordinator = request {
        let conn = client.any_broker().await?;
        let (_, resp) = client
            .send(&conn, ApiKey::FindCoordinator, |_| {
                FindCoordinatorRequest::default()
                    .with_key(s(group))
                    .with_key_type(0)
            })
            .await?;
        let error = BrokerCode(resp.error_code);
        if !error.is_ok() {
            return Ok(Response::CoordinatorError { error });
        }
        if resp.node_id.0 < 0 {
            // No error and no coordinator: as good as "not available yet".
            return Ok(Response::CoordinatorError {
                error: ResponseError::CoordinatorNotAvailable.into(),
            });
        }
        return Ok(Response::Coordinator {
            node_id: resp.node_id.0,
            addr: format!("{}:{}", resp.host.as_str(), resp.port),
        });
    }
    let addr = coordinator.ok_or_else(|| Error::NoBrokerAvailable("coordinator unknown".into()))?;
    let lane = match request {
        Request::Heartbeat { .. } => Lane::Heartbeat,
        _ => Lane::Group,
    };
    let conn = client.connection_on(&addr, lane).await?;
    let gid = GroupId(s(group));
    match request {
        Request::FindCoordinator => unreachable!("handled above"),
        Request::Join {
            member_id,
            instance_id,
            session_timeout_ms,
            rebalance_timeout_ms,
            protocols,
            reason,
        } => {
            let version = conn.version(ApiKey::JoinGroup)?;
            if instance_id.is_some() && version < 5 {
                return Err(Error::Config(
                    "static membership needs JoinGroup v5+".into(),
                ));
            }
            let mut req = JoinGroupRequest::default()
                .with_group_id(gid)
                .with_session_timeout_ms(session_timeout_ms)
                .with_member_id(s(&member_id))
                .with_protocol_type(s("consumer"))
                .with_protocols(protocols.into_iter().map(join_protocol).collect());
            if version >= 1 {
                req.rebalance_timeout_ms = rebalance_timeout_ms;
            }
            if version >= 5 {
                req.group_instance_id = instance_id.map(|i| s(&i));
            }
            if version >= 8 {
                req.reason = Some(s(&reason));
            }
            let resp = send_group_request(&conn, &req, version, join_timeout, |code| {
                JoinGroupResponse::default().with_error_code(code)
            })
            .await?;
            Ok(Response::Join(JoinAnswer {
                error: BrokerCode(resp.error_code),
                generation: resp.generation_id,
                protocol: resp.protocol_name.map(|p| p.to_string()),
                leader: resp.leader.to_string(),
                member_id: resp.member_id.to_string(),
                members: resp.members.into_iter().map(joined_member).collect(),
            }))
        }
        Request::Sync {
            generation,
            member_id,
            instance_id,
            protocol,
            assignments,
        } => {
            let version = conn.version(ApiKey::SyncGroup)?;
            let mut req = SyncGroupRequest::default()
                .with_group_id(gid)
                .with_generation_id(generation)
                .with_member_id(s(&member_id))
                .with_assignments(assignments.into_iter().map(sync_assignment).collect());
            if version >= 3 {
                req.group_instance_id = instance_id.map(|i| s(&i));
            }
            if version >= 5 {
                req.protocol_type = Some(s("consumer"));
                req.protocol_name = Some(s(&protocol));
            }
            let resp = send_group_request(&conn, &req, version, join_timeout, |code| {
                SyncGroupResponse::default().with_error_code(code)
            })
            .await?;
            Ok(Response::Sync {
                error: BrokerCode(resp.error_code),
                assignment: resp.assignment,
            })
        }
        Request::Heartbeat {
            generation,
            member_id,
            instance_id,
        } => {
            let version = conn.version(ApiKey::Heartbeat)?;
            let mut req = HeartbeatRequest::default()
                .with_group_id(gid)
                .with_generation_id(generation)
                .with_member_id(s(&member_id));
            if version >= 3 {
                req.group_instance_id = instance_id.map(|i| s(&i));
            }
            let timeout = client.config().connection.request_timeout;
            let resp = send_group_request(&conn, &req, version, timeout, |code| {
                HeartbeatResponse::default().with_error_code(code)
            })
            .await?;
            Ok(Response::Heartbeat {
                error: BrokerCode(resp.error_code),
            })
        }
        Request::Leave {
            member_id,
            instance_id,
            reason,
        } => {
            let version = conn.version(ApiKey::LeaveGroup)?;
            let mut req = LeaveGroupRequest::default().with_group_id(gid);
            if version >= 3 {
                let mut m = MemberIdentity::default()
                    .with_member_id(s(&member_id))
                    .with_group_instance_id(instance_id.map(|i| s(&i)));
                if version >= 5 {
                    m.reason = Some(s(&reason));
                }
                req.members = vec![m];
            } else {
                req.member_id = s(&member_id);
            }
            let resp = conn.send(&req, version).await?;
            Ok(Response::Leave {
                error: BrokerCode(resp.error_code),
            })
        }
    }
}
