//! API version negotiation (pure: no I/O).
//!
//! On connect we send ApiVersions and, per API, use the highest version both sides support.
//! Our ceiling per API is the newest version whose semantics this client implements (not
//! merely what `kafka-protocol` can encode): e.g. Fetch would stop at v12 because v13 addresses
//! topics by id, and v12 stops at v11 because tansu 0.6.0 sends a v16-only tagged field
//! (node endpoints) in v12 responses, which `kafka-protocol` rejects. The group APIs stop at
//! their last non-flexible versions (JoinGroup v5, SyncGroup/Heartbeat/LeaveGroup v3):
//! librdkafka's mock cluster announces the flexible ones but closes the connection on them,
//! and they add nothing the classic consumer protocol needs (v5 already has static
//! membership).

use std::collections::HashMap;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::ResponseError;

use crate::error::{Error, Result};

/// The version range this client implements for `api`, or `None` if it never sends it.
pub fn client_range(api: ApiKey) -> Option<(i16, i16)> {
    use ApiKey::*;
    Some(match api {
        ApiVersions => (0, 3),
        Metadata => (1, 12),
        Produce => (3, 11),
        Fetch => (4, 11),
        ListOffsets => (1, 7),
        OffsetCommit => (2, 8),
        OffsetFetch => (1, 7),
        FindCoordinator => (0, 3),
        JoinGroup => (2, 5),
        SyncGroup => (0, 3),
        Heartbeat => (0, 3),
        LeaveGroup => (0, 3),
        DescribeGroups => (0, 5),
        ListGroups => (0, 4),
        // kafka-protocol encodes CreateTopics from v2 and DeleteTopics from v1 only.
        CreateTopics => (2, 7),
        DeleteTopics => (1, 6),
        // v0 of SaslHandshake means raw (unframed) SASL tokens; we only speak v1 + SaslAuthenticate.
        SaslHandshake => (1, 1),
        SaslAuthenticate => (0, 2),
        // v3 (KIP-360) lets an idempotent producer bump its own epoch; v5+ is transactions v2.
        InitProducerId => (0, 4),
        _ => return None,
    })
}

/// The highest version of each API that Kafka 4.0 removed (KIP-896): our ranges start above
/// them, so no broker can talk this client down into one.
pub const KAFKA_4_REMOVED: [(ApiKey, i16); 6] = [
    (ApiKey::Produce, 2),
    (ApiKey::Fetch, 3),
    (ApiKey::ListOffsets, 0),
    (ApiKey::OffsetCommit, 1),
    (ApiKey::OffsetFetch, 0),
    (ApiKey::JoinGroup, 1),
];

/// Versions a broker announced, one range per API key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrokerVersions {
    ranges: HashMap<i16, (i16, i16)>,
}

impl BrokerVersions {
    pub fn from_response(resp: &ApiVersionsResponse) -> Self {
        let ranges = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        BrokerVersions { ranges }
    }

    /// The broker's range for `api`, if it announced one.
    pub fn broker_range(&self, api: ApiKey) -> Option<(i16, i16)> {
        self.ranges.get(&(api as i16)).copied()
    }

    /// Highest version of `api` both sides support.
    pub fn pick(&self, api: ApiKey, addr: &str) -> Result<i16> {
        let (ours_min, ours_max) = client_range(api)
            .ok_or_else(|| Error::Config(format!("{api:?} is not an API this client sends")))?;
        let (broker_min, broker_max) = self.broker_range(api).unwrap_or((-1, -1));
        let hi = ours_max.min(broker_max);
        let lo = ours_min.max(broker_min);
        if broker_max < 0 || hi < lo {
            return Err(Error::UnsupportedVersion {
                addr: addr.to_owned(),
                api: format!("{api:?}"),
                broker_min,
                broker_max,
                ours_min,
                ours_max,
            });
        }
        Ok(hi)
    }
}

/// The ApiVersions request we send first at `version`.
pub fn api_versions_request(version: i16) -> ApiVersionsRequest {
    let mut req = ApiVersionsRequest::default();
    if version >= 3 {
        req.client_software_name = StrBytes::from_static_str("lagbalance");
        req.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
    }
    req
}

/// What to do with an ApiVersions answer.
#[derive(Debug, PartialEq)]
pub enum Negotiation {
    /// The broker told us its versions.
    Done(BrokerVersions),
    /// The broker rejected our request version; retry with this one (Kafka's rule: v0 is
    /// always understood, and the error body lists what the broker supports).
    RetryWith(i16),
}

/// Interpret an ApiVersions response body (after the header) sent at `version`.
///
/// Error 35 (UNSUPPORTED_VERSION) means "retry with a version I support". Brokers answer that
/// error with a v0 body, and some (librdkafka's mock cluster) with a body that does not parse
/// at our version at all, so the error code (the first field of every version) is read first.
pub fn interpret_api_versions(body: Bytes, version: i16) -> Result<Negotiation> {
    if body.len() < 2 {
        return Err(Error::malformed(
            "ApiVersions response",
            "body shorter than its error code",
        ));
    }
    let code = i16::from_be_bytes([body[0], body[1]]);
    if code == ResponseError::UnsupportedVersion.code() {
        if version == 0 {
            return Err(Error::broker("ApiVersions v0", code));
        }
        return Ok(Negotiation::RetryWith(0));
    }
    let mut buf = body;
    let resp = ApiVersionsResponse::decode(&mut buf, version)
        .map_err(|e| Error::malformed(format!("ApiVersions v{version} response"), e))?;
    crate::error::check_code(|| "ApiVersions".into(), resp.error_code)?;
    Ok(Negotiation::Done(BrokerVersions::from_response(&resp)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Message, Request};

    fn within<R: Request>() {
        let api = ApiKey::try_from(R::KEY).unwrap();
        let (lo, hi) = client_range(api).unwrap();
        for range in [R::VERSIONS, <R::Response as Message>::VERSIONS] {
            assert!(
                range.min <= lo && hi <= range.max,
                "{api:?}: client range {lo}..={hi}, kafka-protocol {}..={}",
                range.min,
                range.max
            );
        }
    }

    #[test]
    fn no_range_reaches_a_version_kafka_4_removed() {
        for (api, removed_max) in KAFKA_4_REMOVED {
            let (lo, _) = client_range(api).unwrap();
            assert!(lo > removed_max, "{api:?} starts at v{lo}");
        }
    }

    /// Every version we may negotiate is one kafka-protocol can encode and decode (the fuzz
    /// seed generator found CreateTopics v0/v1 and DeleteTopics v0 were not).
    #[test]
    fn client_ranges_are_within_what_kafka_protocol_supports() {
        within::<ApiVersionsRequest>();
        within::<MetadataRequest>();
        within::<ProduceRequest>();
        within::<FetchRequest>();
        within::<ListOffsetsRequest>();
        within::<OffsetCommitRequest>();
        within::<OffsetFetchRequest>();
        within::<FindCoordinatorRequest>();
        within::<JoinGroupRequest>();
        within::<SyncGroupRequest>();
        within::<HeartbeatRequest>();
        within::<LeaveGroupRequest>();
        within::<DescribeGroupsRequest>();
        within::<ListGroupsRequest>();
        within::<CreateTopicsRequest>();
        within::<DeleteTopicsRequest>();
    }
}
