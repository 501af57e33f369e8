//! Broker responses, through the decode functions the client uses: the first input byte picks
//! one of the APIs the client decodes (`CLIENT_APIS`), the second a version within the client's
//! range for it (`client_range`), and the rest is a response frame after its length prefix
//! (correlation id, header, body) — what `split_frame` hands to `decode_response`. ApiVersions
//! goes through `interpret_api_versions` as during negotiation. Checks: never a panic; a body
//! that decodes re-encodes at the same version and decodes to the same value; every string the
//! decoder accepted is UTF-8 (`StrBytes` derefs with `from_utf8_unchecked`); a Fetch response's
//! record bytes go on through `decode_records` (as the fetcher does), both as sent and with
//! their batch CRCs rewritten so mutations reach the record decoder. The whole input is also
//! fed to the framing functions.
#![no_main]

use std::fmt::Debug;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, Request};
use lagbalance::records::decode_records;
use lagbalance::wire::frame::{decode_response, peek_correlation_id, split_frame};
use lagbalance::wire::versions::{client_range, interpret_api_versions, Negotiation};
use lagbalance_fuzz::{fix_batch_crcs, select, CLIENT_APIS};
use libfuzzer_sys::fuzz_target;

/// Decode like `Connection::send` does; on success, re-encode the body and decode it again.
fn check<R: Request>(frame: &[u8], version: i16) -> Option<R::Response>
where
    R::Response: PartialEq + Debug,
{
    let resp = decode_response::<R>(Bytes::copy_from_slice(frame), version).ok()?;
    let mut buf = BytesMut::new();
    resp.encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("a decoded {resp:?} does not re-encode at v{version}: {e}"));
    // Debug formatting walks every field, including every StrBytes as &str.
    let debug = format!("{resp:?}");
    // Known kafka-protocol asymmetry, harmless to the client (which never re-encodes a
    // response and ignores unknown tagged fields): a tag number above i32::MAX decodes to a
    // negative key, and the encoder counts that field but skips writing it. Maps are sorted,
    // so such a key is always the first one printed.
    if debug.contains("unknown_tagged_fields: {-") {
        return Some(resp);
    }
    let mut bytes = buf.freeze();
    let again = R::Response::decode(&mut bytes, version).expect("re-encoded body decodes");
    assert_eq!(again, resp, "re-encoded body decodes to something else");
    assert!(bytes.is_empty(), "re-decoding left {} bytes", bytes.len());
    Some(resp)
}

fn records(topic: &str, partition: i32, bytes: &Bytes, from_offset: i64) {
    for bytes in [bytes.clone(), {
        let mut fixed = bytes.to_vec();
        fix_batch_crcs(&mut fixed);
        Bytes::from(fixed)
    }] {
        if let Ok(d) = decode_records(topic, partition, bytes, from_offset) {
            for r in &d.records {
                assert!(r.offset >= from_offset);
                assert_eq!((r.topic.as_str(), r.partition), (topic, partition));
            }
        }
    }
}

fuzz_target!(
    init: {
        // The selector list and the client's version table must name the same APIs.
        for key in 0..=i16::MAX {
            let Ok(api) = ApiKey::try_from(key) else { continue };
            assert_eq!(client_range(api).is_some(), CLIENT_APIS.contains(&api), "{api:?}");
        }
    },
    |data: &[u8]| {
    // Framing: whatever arrives on the socket is split into frames or refused, never a panic.
    let mut stream = BytesMut::from(data);
    while let Ok(Some(frame)) = split_frame(&mut stream, 1 << 16) {
        let _ = peek_correlation_id(&frame);
    }

    let Some((api, version, frame)) = select(data) else {
        return;
    };
    // The correlation id is peeked before any decoding (`read_frames`).
    if peek_correlation_id(frame).is_err() {
        return;
    }
    match api {
        ApiKey::ApiVersions => {
            if let Ok(Negotiation::RetryWith(v)) =
                interpret_api_versions(Bytes::copy_from_slice(&frame[4..]), version)
            {
                assert_eq!(v, 0);
            }
        }
        ApiKey::Metadata => drop(check::<MetadataRequest>(frame, version)),
        ApiKey::Produce => drop(check::<ProduceRequest>(frame, version)),
        ApiKey::Fetch => {
            if let Some(resp) = check::<FetchRequest>(frame, version) {
                for t in &resp.responses {
                    for p in &t.partitions {
                        if let Some(bytes) = &p.records {
                            records(&t.topic.0, p.partition_index, bytes, 0);
                        }
                    }
                }
            }
        }
        ApiKey::ListOffsets => drop(check::<ListOffsetsRequest>(frame, version)),
        ApiKey::OffsetCommit => drop(check::<OffsetCommitRequest>(frame, version)),
        ApiKey::OffsetFetch => drop(check::<OffsetFetchRequest>(frame, version)),
        ApiKey::FindCoordinator => drop(check::<FindCoordinatorRequest>(frame, version)),
        ApiKey::JoinGroup => drop(check::<JoinGroupRequest>(frame, version)),
        ApiKey::SyncGroup => drop(check::<SyncGroupRequest>(frame, version)),
        ApiKey::Heartbeat => drop(check::<HeartbeatRequest>(frame, version)),
        ApiKey::LeaveGroup => drop(check::<LeaveGroupRequest>(frame, version)),
        ApiKey::DescribeGroups => drop(check::<DescribeGroupsRequest>(frame, version)),
        ApiKey::ListGroups => drop(check::<ListGroupsRequest>(frame, version)),
        ApiKey::CreateTopics => drop(check::<CreateTopicsRequest>(frame, version)),
        ApiKey::DeleteTopics => drop(check::<DeleteTopicsRequest>(frame, version)),
        ApiKey::SaslHandshake => drop(check::<SaslHandshakeRequest>(frame, version)),
        ApiKey::SaslAuthenticate => drop(check::<SaslAuthenticateRequest>(frame, version)),
        ApiKey::InitProducerId => drop(check::<InitProducerIdRequest>(frame, version)),
        other => unreachable!("{other:?} is not in CLIENT_APIS"),
    }
});
