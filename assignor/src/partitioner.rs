//! Kafka's default partitioning: a keyed record goes to `murmur2(key) & 0x7fffffff % n`, exactly
//! as the Java client computes it, so keys land on the same partitions whichever client wrote
//! them. [`Partitioner`] lets a producer route records its own way (the lag-aware one:
//! [`crate::lag_partitioner`]).

/// A custom partitioner for [`crate::producer::Producer::with_partitioner`]. Called once per
/// record that names no partition, outside the producer's locks; it must be cheap.
pub trait Partitioner: Send + Sync {
    /// Partition of a record of `topic` with `key` among `num_partitions` (> 0), or `None`
    /// for the default: `murmur2` for keyed records, the sticky partition for unkeyed ones.
    /// An answer outside `0..num_partitions` is ignored (the default applies).
    fn partition(&self, topic: &str, key: Option<&[u8]>, num_partitions: i32) -> Option<i32>;
}

/// Kafka's murmur2 (32-bit, seed 0x9747b28c) as in `org.apache.kafka.common.utils.Utils`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Partition of `key` among `num_partitions` (Java's `BuiltInPartitioner.partitionForKey`).
pub fn partition_for_key(key: &[u8], num_partitions: i32) -> i32 {
    if num_partitions <= 0 {
        return 0;
    }
    (murmur2(key) & 0x7fff_ffff) % num_partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from Kafka's own `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_java() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58897971,
            ),
            (b"abc", 479470107),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input),
                *expected,
                "murmur2({:?})",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn partition_is_in_range_and_stable() {
        for n in 1..50 {
            for k in 0..200u32 {
                let key = k.to_string();
                let p = partition_for_key(key.as_bytes(), n);
                assert!((0..n).contains(&p));
                assert_eq!(p, partition_for_key(key.as_bytes(), n));
            }
        }
    }
}
