//! Version negotiation on canned ApiVersions answers.

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use lagbalance::wire::versions::{client_range, interpret_api_versions, Negotiation};
use lagbalance::Error;

/// ApiVersions v0 body: error 0, Metadata 0..12, Fetch 0..16, Produce 3..5.
const V0_BODY: &[u8] = &[
    0, 0, // error
    0, 0, 0, 3, // three entries
    0, 3, 0, 0, 0, 12, // Metadata
    0, 1, 0, 0, 0, 16, // Fetch
    0, 0, 0, 3, 0, 5, // Produce
];

#[test]
fn picks_the_highest_version_both_sides_support() {
    let Negotiation::Done(v) = interpret_api_versions(Bytes::from_static(V0_BODY), 0).unwrap()
    else {
        panic!("expected versions");
    };
    // Broker Fetch max 16 > ours 12 → ours; Produce max 5 < ours → the broker's.
    assert_eq!(
        v.pick(ApiKey::Fetch, "b").unwrap(),
        client_range(ApiKey::Fetch).unwrap().1
    );
    assert_eq!(v.pick(ApiKey::Produce, "b").unwrap(), 5);
    assert_eq!(v.pick(ApiKey::Metadata, "b").unwrap(), 12);
}

#[test]
fn api_the_broker_lacks_is_unsupported() {
    let Negotiation::Done(v) = interpret_api_versions(Bytes::from_static(V0_BODY), 0).unwrap()
    else {
        panic!("expected versions");
    };
    let err = v.pick(ApiKey::JoinGroup, "b:1").unwrap_err();
    assert!(matches!(err, Error::UnsupportedVersion { .. }), "{err:?}");
    assert!(err.to_string().contains("JoinGroup"), "{err}");
}

#[test]
fn disjoint_ranges_are_unsupported() {
    // Produce 0..2 only: we need record batches v2, i.e. Produce ≥ 3.
    let body: &[u8] = &[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2];
    let Negotiation::Done(v) = interpret_api_versions(Bytes::from_static(body), 0).unwrap() else {
        panic!("expected versions");
    };
    match v.pick(ApiKey::Produce, "b").unwrap_err() {
        Error::UnsupportedVersion {
            broker_max,
            ours_min,
            ..
        } => {
            assert_eq!(broker_max, 2);
            assert_eq!(ours_min, 3);
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn flexible_v3_answer_is_read() {
    // v3: error, compact array (n+1 = 2) of one entry with empty tags, throttle, empty tags.
    let body: &[u8] = &[0, 0, 2, 0, 1, 0, 4, 0, 13, 0, 0, 0, 0, 0, 0];
    let Negotiation::Done(v) = interpret_api_versions(Bytes::from_static(body), 3).unwrap() else {
        panic!("expected versions");
    };
    assert_eq!(v.broker_range(ApiKey::Fetch), Some((4, 13)));
}

#[test]
fn unsupported_version_error_means_retry_with_v0() {
    // A Kafka broker answers error 35 with a v0 body listing its ApiVersions range.
    let kafka_style: &[u8] = &[0, 35, 0, 0, 0, 1, 0, 18, 0, 0, 0, 2];
    assert_eq!(
        interpret_api_versions(Bytes::from_static(kafka_style), 3).unwrap(),
        Negotiation::RetryWith(0)
    );
    // librdkafka's mock cluster sends a body that does not parse at any version.
    let mock_style: &[u8] = &[0, 35, 0xff];
    assert_eq!(
        interpret_api_versions(Bytes::from_static(mock_style), 3).unwrap(),
        Negotiation::RetryWith(0)
    );
}

#[test]
fn unsupported_version_at_v0_is_final() {
    let err = interpret_api_versions(Bytes::from_static(&[0, 35, 0, 0, 0, 0]), 0).unwrap_err();
    assert_eq!(err.broker_code().map(|c| c.0), Some(35));
}

#[test]
fn garbage_answers_are_errors_not_panics() {
    for body in [
        &[][..],
        &[0][..],
        &[0, 0, 0x7f, 0xff, 0xff, 0xff][..],
        &[0, 0, 0, 0, 0, 1, 0][..],
    ] {
        let r = interpret_api_versions(Bytes::copy_from_slice(body), 0);
        assert!(
            matches!(r, Err(Error::Malformed { .. })),
            "{body:?} → {r:?}"
        );
    }
}
