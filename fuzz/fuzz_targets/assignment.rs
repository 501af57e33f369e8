//! Consumer-protocol assignment blobs (SyncGroup answers, DescribeGroups member assignments):
//! any bytes decode to `Ok` or `Err`, never a panic; the empty blob is the empty assignment;
//! what decodes re-encodes and decodes back (partitions sorted by (topic, id), duplicates
//! dropped); and an assignment built from the input round-trips exactly that way.
#![no_main]

use bytes::Bytes;
use lagbalance::group::codec::{decode_assignment, encode_assignment, CONSUMER_PROTOCOL_VERSION};
use lagbalance::group::Assignment;
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    partitions: Vec<(String, i32)>,
    user_data: Option<Vec<u8>>,
}

fn round_trip(a: &Assignment) {
    let blob = encode_assignment(a).expect("encoding an assignment cannot fail");
    assert_eq!(&blob[..2], &CONSUMER_PROTOCOL_VERSION.to_be_bytes());
    let back = decode_assignment(&blob).expect("our own encoding decodes");
    let mut want = a.clone();
    want.partitions.sort();
    want.partitions.dedup();
    assert_eq!(back, want);
    assert_eq!(encode_assignment(&back).unwrap(), blob);
}

fuzz_target!(|data: &[u8]| {
    match decode_assignment(data) {
        Ok(a) => {
            if data.is_empty() {
                assert_eq!(a, Assignment::default());
            }
            round_trip(&a);
        }
        Err(_) => assert!(!data.is_empty(), "the empty blob is an empty assignment"),
    }

    if let Ok(input) = Input::arbitrary(&mut Unstructured::new(data)) {
        round_trip(&Assignment {
            partitions: input.partitions,
            user_data: input.user_data.map(Bytes::from),
        });
    }
});
