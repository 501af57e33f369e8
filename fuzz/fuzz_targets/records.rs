//! Record batches as a Fetch response carries them, through `decode_records` (what the fetcher
//! calls for every partition): input = `[from_offset byte, record bytes…]`. The bytes are
//! decoded as sent and with every batch CRC rewritten (so mutations get past the CRC-32C check
//! and reach the batch and record decoders, including decompression). Checks: never a panic
//! (overflow checks are on); only non-control records at or after `from_offset` come out,
//! labelled with the requested topic and partition; and a clean decode of our own encoding
//! (`encode_batch` of the decoded records) gives the same records back.
#![no_main]

use bytes::Bytes;
use lagbalance::records::{decode_records, encode_batch, CompressionCodec, ProducerRecord};
use lagbalance_fuzz::fix_batch_crcs;
use libfuzzer_sys::fuzz_target;

fn decode(bytes: Bytes, from: i64) {
    let Ok(d) = decode_records("t", 3, bytes, from) else {
        return;
    };
    for r in &d.records {
        assert!(r.offset >= from, "{} < {from}", r.offset);
        assert_eq!((r.topic.as_str(), r.partition), ("t", 3));
    }
    if d.records.is_empty() {
        return;
    }
    // Our producer's encoding of what came out decodes to the same keys, values, headers and
    // timestamps, at consecutive offsets from 0.
    let produced: Vec<ProducerRecord> = d
        .records
        .iter()
        .map(|r| ProducerRecord {
            topic: "t".into(),
            partition: Some(3),
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r.headers.clone(),
            timestamp: Some(r.timestamp),
        })
        .collect();
    // Timestamps are written as deltas from the batch's smallest; a hostile batch can carry
    // timestamps further apart than an i64 delta holds, which no producer of ours writes.
    let min = produced
        .iter()
        .filter_map(|r| r.timestamp)
        .min()
        .unwrap_or(0);
    let max = produced
        .iter()
        .filter_map(|r| r.timestamp)
        .max()
        .unwrap_or(0);
    if max.checked_sub(min).is_none() {
        return;
    }
    let batch = encode_batch(&produced, 0, CompressionCodec::None).expect("encodes");
    let again = decode_records("t", 3, batch, 0).expect("our own batch decodes");
    assert!(!again.truncated);
    assert_eq!(again.next_offset, Some(produced.len() as i64));
    assert_eq!(again.records.len(), d.records.len());
    for (i, (a, b)) in again.records.iter().zip(&d.records).enumerate() {
        assert_eq!(a.offset, i as i64);
        assert_eq!(
            (&a.key, &a.value, a.timestamp),
            (&b.key, &b.value, b.timestamp)
        );
        assert_eq!(a.headers, b.headers);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&from, bytes)) = data.split_first() else {
        return;
    };
    let from = i64::from(from);
    decode(Bytes::copy_from_slice(bytes), from);
    let mut fixed = bytes.to_vec();
    fix_batch_crcs(&mut fixed);
    decode(Bytes::from(fixed), from);
});
