//! Consumer-protocol subscription blobs (JoinGroup member metadata, as the leader and the
//! agent decode them): any bytes decode to `Ok` or `Err`, never a panic; what decodes
//! re-encodes (at v3, normalised) and decodes back to the same subscription; and a
//! subscription built from the input survives encode → decode exactly as documented
//! (topics sorted and de-duplicated, owned partitions sorted by (topic, id), empty rack = none).
#![no_main]

use bytes::Bytes;
use lagbalance::group::codec::{
    decode_subscription, encode_subscription, CONSUMER_PROTOCOL_VERSION,
};
use lagbalance::group::Subscription;
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    topics: Vec<String>,
    user_data: Option<Vec<u8>>,
    owned: Vec<(String, i32)>,
    generation: i32,
    rack: Option<String>,
}

/// What `decode(encode(s))` must return: the normalised subscription.
fn normalised(s: &Subscription) -> Subscription {
    let mut n = s.clone();
    n.topics.sort();
    n.topics.dedup();
    n.owned.sort();
    n.owned.dedup();
    n.rack = n.rack.filter(|r| !r.is_empty());
    n
}

fn round_trip(s: &Subscription) {
    let blob = encode_subscription(s).expect("encoding a subscription cannot fail");
    assert_eq!(&blob[..2], &CONSUMER_PROTOCOL_VERSION.to_be_bytes());
    let (version, back) = decode_subscription(&blob).expect("our own encoding decodes");
    assert_eq!(version, CONSUMER_PROTOCOL_VERSION);
    assert_eq!(back, normalised(s));
    // Encoding is canonical: the normalised form encodes to the same bytes.
    assert_eq!(encode_subscription(&back).unwrap(), blob);
}

fuzz_target!(|data: &[u8]| {
    if let Ok((version, s)) = decode_subscription(data) {
        assert!(version >= 0);
        if version < 2 {
            assert_eq!(s.generation, -1, "v{version} has no generation");
        }
        if version < 1 {
            assert!(s.owned.is_empty(), "v0 has no owned partitions");
        }
        assert!(s.rack.as_ref().is_none_or(|r| !r.is_empty()));
        round_trip(&s);
    }

    if let Ok(input) = Input::arbitrary(&mut Unstructured::new(data)) {
        let s = Subscription {
            topics: input.topics,
            user_data: input.user_data.map(Bytes::from),
            owned: input.owned,
            generation: input.generation,
            rack: input.rack,
        };
        round_trip(&s);
    }
});
