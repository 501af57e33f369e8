//! The embedded consumer protocol: the subscription a member sends in JoinGroup and the
//! assignment the leader sends back through SyncGroup.
//!
//! Each blob is an int16 version followed by a non-flexible body whose layout comes from
//! `kafka-protocol`. We write version 3 (topics, user data, owned partitions, generation, rack).
//! On read, versions newer than 3 are parsed with the v3 layout — newer versions only append
//! fields — and every decode failure is an error naming the blob, never a panic: these bytes
//! come from other group members.

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTp;
use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTp;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use lagbalance_assign::NamedPartition;

use crate::error::{Error, Result};

/// Highest consumer-protocol version we understand field by field.
pub const CONSUMER_PROTOCOL_VERSION: i16 = 3;

/// A member's subscription.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subscription {
    pub topics: Vec<String>,
    pub user_data: Option<Bytes>,
    /// Partitions the member owns now (v1+).
    pub owned: Vec<NamedPartition>,
    /// Generation `owned` refers to (v2+); −1 when unknown.
    pub generation: i32,
    /// Rack id (v3+); `None` when empty.
    pub rack: Option<String>,
}

/// What the leader assigned to one member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Assignment {
    pub partitions: Vec<NamedPartition>,
    pub user_data: Option<Bytes>,
}

/// Group `(topic, partition)` pairs by topic, both sorted: the wire form of owned/assigned lists.
fn by_topic(parts: &[NamedPartition]) -> BTreeMap<&str, Vec<i32>> {
    let mut m: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in parts {
        m.entry(t.as_str()).or_default().push(*p);
    }
    for v in m.values_mut() {
        v.sort_unstable();
        v.dedup();
    }
    m
}

/// `parts` in wire form: one entry per topic, made by `entry` from the topic name and its
/// partitions ([`by_topic`]: sorted, deduplicated). The subscription's owned list and the
/// assignment's list have entry types of their own but the same layout.
fn to_wire<T>(parts: &[NamedPartition], entry: impl Fn(TopicName, Vec<i32>) -> T) -> Vec<T> {
    by_topic(parts)
        .into_iter()
        .map(|(t, ps)| entry(TopicName(StrBytes::from_string(t.to_owned())), ps))
        .collect()
}

/// The inverse of [`to_wire`]: per-topic entries, split by `topic_and_partitions`, back to
/// `(topic, partition)` pairs in the order they came.
fn from_wire<T>(
    entries: Vec<T>,
    topic_and_partitions: impl Fn(T) -> (TopicName, Vec<i32>),
) -> Vec<NamedPartition> {
    let mut out = Vec::new();
    for e in entries {
        let (topic, partitions) = topic_and_partitions(e);
        let topic = topic.0.to_string();
        out.extend(partitions.into_iter().map(|p| (topic.clone(), p)));
    }
    out
}

/// Prefix `version` and encode `body` at it.
fn versioned<T: Encodable>(body: &T, version: i16) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    body.encode(&mut buf, version)
        .map_err(|e| Error::Config(format!("cannot encode consumer protocol blob: {e}")))?;
    Ok(buf.freeze())
}

/// Encode a subscription at version 3, topics sorted, owned partitions sorted by (topic, id).
pub fn encode_subscription(s: &Subscription) -> Result<Bytes> {
    encode_subscription_at(s, CONSUMER_PROTOCOL_VERSION)
}

/// [`encode_subscription`] at `version` (0 to 3), as a client that writes that version does:
/// v0 has no owned partitions, v1 no generation, v2 no rack. Tests use it to play older
/// clients.
pub(crate) fn encode_subscription_at(s: &Subscription, version: i16) -> Result<Bytes> {
    let mut topics = s.topics.clone();
    topics.sort();
    topics.dedup();
    let body = ConsumerProtocolSubscription::default()
        .with_topics(topics.into_iter().map(StrBytes::from_string).collect())
        .with_user_data(s.user_data.clone())
        .with_owned_partitions(to_wire(&s.owned, |topic, ps| {
            OwnedTp::default().with_topic(topic).with_partitions(ps)
        }))
        .with_generation_id(s.generation)
        // Empty rack = no rack: written as null, so the encoding is canonical.
        .with_rack_id(
            s.rack
                .clone()
                .filter(|r| !r.is_empty())
                .map(StrBytes::from_string),
        );
    versioned(&body, version)
}

/// Split the int16 version off a blob; the version to parse the body with is capped at 3.
fn split_version(blob: &[u8], what: &str) -> Result<(i16, i16, Bytes)> {
    if blob.len() < 2 {
        return Err(Error::malformed(
            what,
            format!("{} bytes, no version", blob.len()),
        ));
    }
    let version = i16::from_be_bytes([blob[0], blob[1]]);
    if version < 0 {
        return Err(Error::malformed(
            what,
            format!("negative version {version}"),
        ));
    }
    Ok((
        version,
        version.min(CONSUMER_PROTOCOL_VERSION),
        Bytes::copy_from_slice(&blob[2..]),
    ))
}

/// Decode a subscription of any version; returns the version the member wrote.
pub fn decode_subscription(blob: &[u8]) -> Result<(i16, Subscription)> {
    let (version, layout, mut body) = split_version(blob, "subscription")?;
    let s = ConsumerProtocolSubscription::decode(&mut body, layout)
        .map_err(|e| Error::malformed(format!("subscription v{version}"), e))?;
    let owned = from_wire(s.owned_partitions, |tp| (tp.topic, tp.partitions));
    Ok((
        version,
        Subscription {
            topics: s.topics.into_iter().map(|t| t.to_string()).collect(),
            user_data: s.user_data,
            owned,
            generation: if layout >= 2 { s.generation_id } else { -1 },
            rack: s.rack_id.map(|r| r.to_string()).filter(|r| !r.is_empty()),
        },
    ))
}

/// Encode an assignment at version 3.
pub fn encode_assignment(a: &Assignment) -> Result<Bytes> {
    let body = ConsumerProtocolAssignment::default()
        .with_assigned_partitions(to_wire(&a.partitions, |topic, ps| {
            AssignedTp::default().with_topic(topic).with_partitions(ps)
        }))
        .with_user_data(a.user_data.clone());
    versioned(&body, CONSUMER_PROTOCOL_VERSION)
}

/// Decode an assignment of any version. An empty blob is an empty assignment (some brokers,
/// tansu among them, send nothing to a member that gets no partitions).
pub fn decode_assignment(blob: &[u8]) -> Result<Assignment> {
    if blob.is_empty() {
        return Ok(Assignment::default());
    }
    let (version, layout, mut body) = split_version(blob, "assignment")?;
    let a = ConsumerProtocolAssignment::decode(&mut body, layout)
        .map_err(|e| Error::malformed(format!("assignment v{version}"), e))?;
    Ok(Assignment {
        partitions: from_wire(a.assigned_partitions, |tp| (tp.topic, tp.partitions)),
        user_data: a.user_data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub() -> Subscription {
        Subscription {
            topics: vec!["b".into(), "a".into()],
            user_data: Some(Bytes::from_static(b"ud")),
            owned: vec![("b".into(), 2), ("a".into(), 1), ("a".into(), 0)],
            generation: 7,
            rack: Some("r1".into()),
        }
    }

    #[test]
    fn subscription_round_trips_sorted() {
        let blob = encode_subscription(&sub()).unwrap();
        assert_eq!(&blob[..2], &[0, 3]);
        let (v, s) = decode_subscription(&blob).unwrap();
        assert_eq!(v, 3);
        assert_eq!(s.topics, vec!["a", "b"]);
        assert_eq!(
            s.owned,
            vec![("a".into(), 0), ("a".into(), 1), ("b".into(), 2)],
            "owned sorted by (topic, partition)"
        );
        assert_eq!(s.generation, 7);
        assert_eq!(s.rack.as_deref(), Some("r1"));
        assert_eq!(s.user_data.as_deref(), Some(&b"ud"[..]));
    }

    #[test]
    fn newer_versions_parse_with_the_v3_layout() {
        let mut blob = encode_subscription(&sub()).unwrap().to_vec();
        blob[1] = 9; // version 9
        blob.extend_from_slice(&[1, 2, 3, 4]); // a field v3 does not know
        let (v, s) = decode_subscription(&blob).unwrap();
        assert_eq!(v, 9);
        assert_eq!(s.generation, 7);
    }

    #[test]
    fn v0_subscription_has_no_owned_or_generation() {
        // v0: topics ["t"], user data null.
        let blob = [0, 0, 0, 0, 0, 1, 0, 1, b't', 0xff, 0xff, 0xff, 0xff];
        let (v, s) = decode_subscription(&blob).unwrap();
        assert_eq!(v, 0);
        assert_eq!(s.topics, vec!["t"]);
        assert!(s.owned.is_empty());
        assert_eq!(s.generation, -1);
        assert_eq!(s.user_data, None);
    }

    #[test]
    fn empty_rack_means_no_rack() {
        let mut s = sub();
        s.rack = Some(String::new());
        let blob = encode_subscription(&s).unwrap();
        let (_, d) = decode_subscription(&blob).unwrap();
        assert_eq!(d.rack, None);
        // Written as null, exactly like no rack (canonical; found by the subscription fuzz target).
        s.rack = None;
        assert_eq!(blob, encode_subscription(&s).unwrap());
    }

    #[test]
    fn assignment_round_trips_and_empty_is_nothing() {
        let a = Assignment {
            partitions: vec![("t".into(), 3), ("s".into(), 0)],
            user_data: None,
        };
        let d = decode_assignment(&encode_assignment(&a).unwrap()).unwrap();
        assert_eq!(d.partitions, vec![("s".into(), 0), ("t".into(), 3)]);
        assert_eq!(decode_assignment(&[]).unwrap(), Assignment::default());
    }

    #[test]
    fn hostile_blobs_are_errors() {
        let cases: Vec<Vec<u8>> = vec![
            vec![0],
            vec![0xff, 0xff],
            vec![0, 3, 0x7f, 0xff, 0xff, 0xff],
            vec![0, 1, 0, 0, 0, 1, 0x7f, 0xff],
            vec![0, 3, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 1, 2],
        ];
        for c in cases {
            assert!(decode_subscription(&c).is_err(), "{c:?}");
            if !c.is_empty() {
                assert!(decode_assignment(&c).is_err(), "{c:?}");
            }
        }
        // Random bytes: never a panic.
        let mut rng = lagbalance_assign::rng::Rng::new(429);
        for len in 0..400 {
            let blob: Vec<u8> = (0..len % 64).map(|_| rng.next_u64() as u8).collect();
            let _ = decode_subscription(&blob);
            let _ = decode_assignment(&blob);
        }
    }
}
