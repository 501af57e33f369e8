//! The `lagbalance` subscription user data: what a member tells the leader about itself.
//!
//! Layout (big-endian, like the rest of the Kafka protocol):
//!
//! ```text
//! i16     version                      (writers emit USER_DATA_VERSION)
//! u32     crc32 (IEEE) of every byte after this field
//! -- v0 --
//! u8      flags: 1 backlogged, 2 capacity present, 4 cpu_used present, 8 cpu_limit present
//! f32     capacity estimate, records/s
//! f32     observed processing rate, records/s
//! f32     cpu used, cores
//! f32     cpu limit, cores
//! varint  measured_at_ms (member's clock)
//! -- v1 --
//! varint  sequence number (increments per encoded sample)
//! varint  topic count
//!   varint  name length, name bytes (UTF-8, 1..=249)
//!   varint  partition count
//!     varint  partition id delta (first: the id; then id − previous − 1; ids strictly ascend)
//!     f32     processing rate, records/s
//!     f32     lag, records
//! -- anything a later version appends is ignored --
//! ```
//!
//! Why this shape:
//! - *Forward compatible*: a later version may only append fields, so a reader decodes the
//!   prefix it knows and skips the rest (the checksum covers everything, so it still checks).
//! - *Backward compatible*: a v0 blob decodes with no per-partition section and sequence 0.
//! - *Hostile bytes*: the checksum turns random or bit-flipped input into a clean
//!   [`UserDataError::Checksum`] (so garbage cannot masquerade as a capacity claim), every count
//!   is bounded by the bytes that remain before anything is allocated, and numbers that are NaN,
//!   infinite or negative are sanitised to "unknown" rather than trusted.
//! - *Compact*: f32 is plenty for rates; partition ids are delta varints (usually one byte);
//!   topic names appear once.

use bytes::{BufMut, Bytes, BytesMut};

use crate::model::{MemberStats, PartitionLoad};

/// Version this code writes.
pub const USER_DATA_VERSION: i16 = 1;

/// Kafka's limit on topic name length; longer names cannot be real topics.
const MAX_TOPIC_NAME: usize = 249;
/// Smallest encoding of one partition entry (1-byte varint + two f32).
const MIN_PARTITION_BYTES: usize = 9;
/// Smallest encoding of one topic entry (1-byte name length + 1 name byte + 1-byte count).
const MIN_TOPIC_BYTES: usize = 3;

const FLAG_BACKLOGGED: u8 = 1;
const FLAG_CAPACITY: u8 = 2;
const FLAG_CPU_USED: u8 = 4;
const FLAG_CPU_LIMIT: u8 = 8;

/// Why user data could not be decoded. The leader treats every error the same way (capacity
/// unknown = group median); the variants exist for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserDataError {
    #[error("user data truncated while reading {0}")]
    Truncated(&'static str),
    #[error("unsupported user data version {0}")]
    UnsupportedVersion(i16),
    #[error("user data checksum mismatch")]
    Checksum,
    #[error("declared {what} count {count} exceeds the {remaining} bytes left")]
    CountTooLarge {
        what: &'static str,
        count: u64,
        remaining: usize,
    },
    #[error("invalid topic name in user data")]
    TopicName,
    #[error("partition id out of range in user data")]
    PartitionId,
    #[error("malformed varint in user data")]
    Varint,
}

/// One partition a member processed: its rate and lag as the member saw them.
/// `NaN` means the member sent something unusable.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionSample {
    pub partition: i32,
    pub rate: f64,
    pub lag: f64,
}

/// Partitions of one topic, ids strictly ascending.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicSamples {
    pub name: String,
    pub partitions: Vec<PartitionSample>,
}

/// Decoded (and sanitised) user data.
///
/// ```
/// use lagbalance_assign::model::{MemberStats, PartitionLoad};
/// use lagbalance_assign::userdata::MemberUserData;
///
/// let stats = MemberStats {
///     processed_rate: 850.0,
///     backlogged: true,
///     partitions: vec![PartitionLoad {
///         topic: "orders".into(),
///         partition: 3,
///         lag: 1200.0,
///         rate: 420.0,
///     }],
///     measured_at_ms: 60_000,
///     ..MemberStats::default()
/// };
/// let bytes = MemberUserData::from_stats(&stats, Some(850.0), 7).encode();
/// let back = MemberUserData::decode(&bytes).unwrap();
/// assert_eq!(back.capacity, Some(850.0));
/// assert_eq!(back.topics[0].partitions[0].partition, 3);
/// // Garbage is an error, never a claim.
/// assert!(MemberUserData::decode(b"\x00\x01garbage").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Default)]
pub struct MemberUserData {
    /// Version the blob declared (may be newer than [`USER_DATA_VERSION`]).
    pub version: i16,
    /// Capacity estimate, records/s: finite and > 0, else `None` (unknown).
    pub capacity: Option<f64>,
    /// Observed processing rate, records/s: finite and ≥ 0 (garbage becomes 0).
    pub observed_rate: f64,
    /// Whether the member had a backlog for its whole measurement window.
    pub backlogged: bool,
    /// CPU used, cores: finite and ≥ 0, else `None`.
    pub cpu_used_cores: Option<f64>,
    /// CPU limit, cores: finite and > 0, else `None`.
    pub cpu_limit_cores: Option<f64>,
    /// Member's clock when it measured.
    pub measured_at_ms: u64,
    /// Increments with every sample the member encodes, so the leader can tell fresh from
    /// repeated data and compute rates from successive samples.
    pub seq: u32,
    /// Per-partition observations, topics sorted by name.
    pub topics: Vec<TopicSamples>,
}

fn positive(x: f64) -> Option<f64> {
    (x.is_finite() && x > 0.0).then_some(x)
}

fn non_negative(x: f64) -> Option<f64> {
    (x.is_finite() && x >= 0.0).then_some(x)
}

impl MemberUserData {
    /// Build from what a member measured, its current capacity estimate and sample sequence.
    /// Partitions are grouped by topic, sorted, de-duplicated (first entry wins); invalid
    /// partition ids (negative) are dropped.
    pub fn from_stats(stats: &MemberStats, capacity: Option<f64>, seq: u32) -> Self {
        let mut parts: Vec<&PartitionLoad> = stats
            .partitions
            .iter()
            .filter(|p| p.partition >= 0 && !p.topic.is_empty() && p.topic.len() <= MAX_TOPIC_NAME)
            .collect();
        parts.sort_by(|a, b| (a.topic.as_str(), a.partition).cmp(&(b.topic.as_str(), b.partition)));
        let mut topics: Vec<TopicSamples> = Vec::new();
        for load in parts {
            if topics.last().map(|t| t.name.as_str()) != Some(load.topic.as_str()) {
                topics.push(TopicSamples {
                    name: load.topic.clone(),
                    partitions: Vec::new(),
                });
            }
            let t = topics.last_mut().expect("pushed above");
            if t.partitions.last().map(|p| p.partition) == Some(load.partition) {
                continue;
            }
            t.partitions.push(PartitionSample {
                partition: load.partition,
                rate: load.rate,
                lag: load.lag,
            });
        }
        MemberUserData {
            version: USER_DATA_VERSION,
            capacity: capacity.and_then(positive),
            observed_rate: non_negative(stats.processed_rate).unwrap_or(0.0),
            backlogged: stats.backlogged,
            cpu_used_cores: stats.cpu_used_cores.and_then(non_negative),
            cpu_limit_cores: stats.cpu_limit_cores.and_then(positive),
            measured_at_ms: stats.measured_at_ms,
            seq,
            topics,
        }
    }

    /// Encode at [`USER_DATA_VERSION`].
    pub fn encode(&self) -> Bytes {
        self.encode_version(USER_DATA_VERSION)
    }

    /// Encode at an older version (0 or 1) — for tests and for talking to older leaders.
    /// Versions above the current one are written as the current layout.
    pub fn encode_version(&self, version: i16) -> Bytes {
        let version = version.clamp(0, USER_DATA_VERSION);
        let mut body = BytesMut::with_capacity(32 + self.topics.len() * 16);
        let mut flags = 0u8;
        if self.backlogged {
            flags |= FLAG_BACKLOGGED;
        }
        if self.capacity.is_some() {
            flags |= FLAG_CAPACITY;
        }
        if self.cpu_used_cores.is_some() {
            flags |= FLAG_CPU_USED;
        }
        if self.cpu_limit_cores.is_some() {
            flags |= FLAG_CPU_LIMIT;
        }
        body.put_u8(flags);
        body.put_f32(self.capacity.unwrap_or(0.0) as f32);
        body.put_f32(self.observed_rate as f32);
        body.put_f32(self.cpu_used_cores.unwrap_or(0.0) as f32);
        body.put_f32(self.cpu_limit_cores.unwrap_or(0.0) as f32);
        put_varint(&mut body, self.measured_at_ms);
        if version >= 1 {
            put_varint(&mut body, u64::from(self.seq));
            put_varint(&mut body, self.topics.len() as u64);
            for t in &self.topics {
                put_varint(&mut body, t.name.len() as u64);
                body.put_slice(t.name.as_bytes());
                put_varint(&mut body, t.partitions.len() as u64);
                let mut prev: i64 = -1;
                for p in &t.partitions {
                    // Callers build ascending lists (from_stats sorts); a non-ascending entry
                    // would not round-trip, so clamp the delta rather than write garbage.
                    let delta = (i64::from(p.partition) - prev - 1).max(0);
                    put_varint(&mut body, delta as u64);
                    prev += delta + 1;
                    body.put_f32(p.rate as f32);
                    body.put_f32(p.lag as f32);
                }
            }
        }
        frame(version, &body)
    }

    /// Decode user data from an untrusted member. Never panics; allocations are bounded by the
    /// input length.
    pub fn decode(bytes: &[u8]) -> Result<Self, UserDataError> {
        let mut r = Reader { buf: bytes };
        let version = r.i16("version")?;
        if version < 0 {
            return Err(UserDataError::UnsupportedVersion(version));
        }
        let crc = r.u32("checksum")?;
        if crc32(r.buf) != crc {
            return Err(UserDataError::Checksum);
        }
        let flags = r.u8("flags")?;
        let capacity = r.f32("capacity")?;
        let observed = r.f32("observed rate")?;
        let cpu_used = r.f32("cpu used")?;
        let cpu_limit = r.f32("cpu limit")?;
        let measured_at_ms = r.varint("measured_at_ms")?;
        let mut out = MemberUserData {
            version,
            capacity: (flags & FLAG_CAPACITY != 0)
                .then_some(capacity)
                .and_then(positive),
            observed_rate: non_negative(observed).unwrap_or(0.0),
            backlogged: flags & FLAG_BACKLOGGED != 0,
            cpu_used_cores: (flags & FLAG_CPU_USED != 0)
                .then_some(cpu_used)
                .and_then(non_negative),
            cpu_limit_cores: (flags & FLAG_CPU_LIMIT != 0)
                .then_some(cpu_limit)
                .and_then(positive),
            measured_at_ms,
            seq: 0,
            topics: Vec::new(),
        };
        if version == 0 {
            return Ok(out);
        }
        out.seq = u32::try_from(r.varint("seq")?).unwrap_or(u32::MAX);
        let topic_count = r.count("topic", MIN_TOPIC_BYTES)?;
        let mut topics = Vec::with_capacity(topic_count);
        for _ in 0..topic_count {
            let len = r.varint("topic name length")?;
            if len == 0 || len > MAX_TOPIC_NAME as u64 {
                return Err(UserDataError::TopicName);
            }
            let name = r.take(len as usize, "topic name")?;
            let name = std::str::from_utf8(name)
                .map_err(|_| UserDataError::TopicName)?
                .to_string();
            let count = r.count("partition", MIN_PARTITION_BYTES)?;
            let mut partitions = Vec::with_capacity(count);
            let mut prev: i64 = -1;
            for _ in 0..count {
                let delta = r.varint("partition delta")?;
                let id = prev
                    .checked_add(1)
                    .and_then(|x| x.checked_add(i64::try_from(delta).ok()?))
                    .filter(|&x| x <= i64::from(i32::MAX))
                    .ok_or(UserDataError::PartitionId)?;
                prev = id;
                let rate = r.f32("partition rate")?;
                let lag = r.f32("partition lag")?;
                partitions.push(PartitionSample {
                    partition: id as i32,
                    rate: non_negative(rate).unwrap_or(f64::NAN),
                    lag: non_negative(lag).unwrap_or(f64::NAN),
                });
            }
            topics.push(TopicSamples { name, partitions });
        }
        out.topics = topics;
        // Anything after this point belongs to a later version: ignored on purpose.
        Ok(out)
    }
}

/// version + crc + body.
fn frame(version: i16, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + 6);
    out.put_i16(version);
    out.put_u32(crc32(body));
    out.put_slice(body);
    out.freeze()
}

/// Wrap an arbitrary body as user data of any version. Exposed for tests of forward
/// compatibility (a "future" version is an old body plus appended fields).
#[doc(hidden)]
pub fn frame_raw(version: i16, body: &[u8]) -> Bytes {
    frame(version, body)
}

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], UserDataError> {
        if self.buf.len() < n {
            return Err(UserDataError::Truncated(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, UserDataError> {
        Ok(self.take(1, what)?[0])
    }

    fn i16(&mut self, what: &'static str) -> Result<i16, UserDataError> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, UserDataError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f32(&mut self, what: &'static str) -> Result<f64, UserDataError> {
        Ok(f64::from(f32::from_bits(self.u32(what)?)))
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, UserDataError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8(what)?;
            let bits = u64::from(b & 0x7f);
            if i == 9 && bits > 1 {
                return Err(UserDataError::Varint);
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(UserDataError::Varint)
    }

    /// A declared element count, refused before allocating if the remaining bytes could not
    /// possibly hold that many elements of at least `min_bytes` each.
    fn count(&mut self, what: &'static str, min_bytes: usize) -> Result<usize, UserDataError> {
        let count = self.varint(what)?;
        let remaining = self.buf.len();
        if count > (remaining / min_bytes) as u64 {
            return Err(UserDataError::CountTooLarge {
                what,
                count,
                remaining,
            });
        }
        Ok(count as usize)
    }
}

/// CRC-32 (IEEE 802.3, reflected, as zlib); table built at compile time.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut c = !0u32;
    for &b in data {
        c = TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn sample(rng: &mut Rng) -> MemberUserData {
        let topics = rng.below(4) as usize;
        let mut ts = Vec::new();
        for t in 0..topics {
            let mut id = -1i64;
            let mut partitions = Vec::new();
            for _ in 0..rng.below(20) {
                let span = if rng.below(10) == 0 { 100_000 } else { 3 };
                id += 1 + rng.below(span) as i64;
                if id > i64::from(i32::MAX) {
                    break;
                }
                partitions.push(PartitionSample {
                    partition: id as i32,
                    // f32-representable so the round trip is exact.
                    rate: f64::from(rng.below(1_000_000) as f32 / 7.0),
                    lag: f64::from(rng.below(1 << 30) as f32),
                });
            }
            ts.push(TopicSamples {
                name: format!("topic-{t}-{}", rng.below(1000)),
                partitions,
            });
        }
        ts.sort_by(|a, b| a.name.cmp(&b.name));
        MemberUserData {
            version: USER_DATA_VERSION,
            capacity: (rng.below(4) != 0).then(|| f64::from(1.0f32 + rng.below(100_000) as f32)),
            observed_rate: f64::from(rng.below(100_000) as f32),
            backlogged: rng.below(2) == 1,
            cpu_used_cores: (rng.below(3) != 0).then(|| f64::from(rng.below(64) as f32 / 4.0)),
            cpu_limit_cores: (rng.below(3) != 0).then(|| (1 + rng.below(64)) as f64),
            measured_at_ms: rng.next_u64(),
            seq: rng.next_u64() as u32,
            topics: ts,
        }
    }

    #[test]
    fn round_trip_property() {
        let mut rng = Rng::new(1);
        for _ in 0..2000 {
            let d = sample(&mut rng);
            let bytes = d.encode();
            assert_eq!(MemberUserData::decode(&bytes).as_ref(), Ok(&d));
        }
    }

    #[test]
    fn from_stats_sorts_dedups_and_sanitises() {
        let load = |topic: &str, partition, lag, rate| PartitionLoad {
            topic: topic.into(),
            partition,
            lag,
            rate,
        };
        let stats = MemberStats {
            processed_rate: f64::NAN,
            backlogged: true,
            cpu_used_cores: Some(-1.0),
            cpu_limit_cores: Some(f64::INFINITY),
            busy_fraction: None,
            partitions: vec![
                load("b", 3, 10.0, 1.5),
                load("a", 7, 1.0, 2.0),
                load("b", 1, 0.0, 3.0),
                load("b", 1, 5.0, 9.0),
                load("a", -4, 0.0, 1.0),
            ],
            measured_at_ms: 42,
        };
        let d = MemberUserData::from_stats(&stats, Some(f64::NAN), 9);
        assert_eq!(d.capacity, None);
        assert_eq!(d.observed_rate, 0.0);
        assert_eq!(d.cpu_used_cores, None);
        assert_eq!(d.cpu_limit_cores, None);
        assert_eq!(d.topics.len(), 2);
        assert_eq!(d.topics[0].name, "a");
        assert_eq!(d.topics[0].partitions.len(), 1);
        let b: Vec<i32> = d.topics[1].partitions.iter().map(|p| p.partition).collect();
        assert_eq!(b, vec![1, 3]);
        assert_eq!(d.topics[1].partitions[0].rate, 3.0);
        let back = MemberUserData::decode(&d.encode()).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn compact_encoding() {
        // 100 partitions of one topic: header 2+4+17+~6, topic ~10, then 9 bytes a partition.
        let stats = MemberStats {
            processed_rate: 1000.0,
            partitions: (0..100)
                .map(|partition| PartitionLoad {
                    topic: "orders".into(),
                    partition,
                    lag: 5.0,
                    rate: 10.0,
                })
                .collect(),
            ..MemberStats::default()
        };
        let bytes = MemberUserData::from_stats(&stats, Some(2000.0), 1).encode();
        assert!(bytes.len() < 100 * 9 + 50, "{} bytes", bytes.len());
    }

    #[test]
    fn older_version_decodes_without_partition_section() {
        let mut rng = Rng::new(2);
        let d = sample(&mut rng);
        let v0 = d.encode_version(0);
        let back = MemberUserData::decode(&v0).unwrap();
        assert_eq!(back.version, 0);
        assert_eq!(back.capacity, d.capacity);
        assert_eq!(back.backlogged, d.backlogged);
        assert_eq!(back.measured_at_ms, d.measured_at_ms);
        assert_eq!(back.seq, 0);
        assert!(back.topics.is_empty());
    }

    #[test]
    fn newer_version_with_appended_fields_decodes_known_prefix() {
        let mut rng = Rng::new(3);
        for _ in 0..200 {
            let d = sample(&mut rng);
            let current = d.encode();
            let mut body = current[6..].to_vec();
            body.extend_from_slice(b"\x05future fields the old reader must skip");
            let future = frame_raw(7, &body);
            let back = MemberUserData::decode(&future).unwrap();
            assert_eq!(back.version, 7);
            assert_eq!(MemberUserData { version: 1, ..back }, d);
        }
    }

    #[test]
    fn hostile_bytes_never_panic_and_random_bytes_are_rejected() {
        let mut rng = Rng::new(4);
        for len in 0..200usize {
            for _ in 0..50 {
                let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                // Random input almost surely fails the checksum; any Ok must be sanitised.
                if let Ok(d) = MemberUserData::decode(&bytes) {
                    assert!(d.capacity.is_none_or(|c| c.is_finite() && c > 0.0));
                }
            }
        }
    }

    #[test]
    fn truncations_and_bit_flips_are_errors() {
        let mut rng = Rng::new(5);
        for _ in 0..300 {
            let d = sample(&mut rng);
            let bytes = d.encode();
            for cut in 0..bytes.len() {
                assert!(
                    MemberUserData::decode(&bytes[..cut]).is_err(),
                    "cut at {cut}"
                );
            }
            let mut flipped = bytes.to_vec();
            let i = 6 + rng.below((flipped.len() - 6) as u64) as usize;
            flipped[i] ^= 1 << rng.below(8);
            assert!(MemberUserData::decode(&flipped).is_err());
        }
    }

    #[test]
    fn huge_declared_counts_are_refused_before_allocating() {
        // Valid checksum, absurd partition count: must fail fast with CountTooLarge.
        let mut body = BytesMut::new();
        body.put_u8(FLAG_CAPACITY);
        body.put_f32(10.0);
        body.put_f32(1.0);
        body.put_f32(0.0);
        body.put_f32(0.0);
        put_varint(&mut body, 1);
        put_varint(&mut body, 1); // seq
        put_varint(&mut body, 1); // one topic
        put_varint(&mut body, 1);
        body.put_slice(b"t");
        put_varint(&mut body, u64::MAX >> 1); // partitions
        let err = MemberUserData::decode(&frame_raw(1, &body)).unwrap_err();
        assert!(matches!(err, UserDataError::CountTooLarge { .. }), "{err}");

        let mut body2 = body.clone();
        body2.truncate(body2.len() - 9);
        put_varint(&mut body2, u64::MAX); // topic count
        assert!(MemberUserData::decode(&frame_raw(1, &body2)).is_err());
    }

    #[test]
    fn hostile_numbers_are_sanitised() {
        let mut body = BytesMut::new();
        body.put_u8(FLAG_CAPACITY | FLAG_CPU_USED | FLAG_CPU_LIMIT);
        body.put_f32(f32::NAN);
        body.put_f32(f32::NEG_INFINITY);
        body.put_f32(-3.0);
        body.put_f32(f32::INFINITY);
        put_varint(&mut body, 5);
        put_varint(&mut body, 1);
        put_varint(&mut body, 1);
        put_varint(&mut body, 1);
        body.put_slice(b"t");
        put_varint(&mut body, 2);
        put_varint(&mut body, 0);
        body.put_f32(-1.0);
        body.put_f32(f32::NAN);
        put_varint(&mut body, u64::from(u32::MAX)); // id 1 + 2^32 - 1: beyond i32
        body.put_f32(1.0);
        body.put_f32(1.0);
        assert_eq!(
            MemberUserData::decode(&frame_raw(1, &body)),
            Err(UserDataError::PartitionId)
        );
        body.truncate(body.len() - 13);
        put_varint(&mut body, 4);
        body.put_f32(2.0);
        body.put_f32(3.0);
        let d = MemberUserData::decode(&frame_raw(1, &body)).unwrap();
        assert_eq!(d.capacity, None);
        assert_eq!(d.observed_rate, 0.0);
        assert_eq!(d.cpu_used_cores, None);
        assert_eq!(d.cpu_limit_cores, None);
        let p = &d.topics[0].partitions;
        assert!(p[0].rate.is_nan() && p[0].lag.is_nan());
        assert_eq!((p[1].partition, p[1].rate, p[1].lag), (5, 2.0, 3.0));
    }

    #[test]
    fn negative_version_and_bad_names_are_errors() {
        let d = MemberUserData::default();
        let bytes = d.encode();
        let mut neg = bytes.to_vec();
        neg[0] = 0x80;
        neg[1] = 0x00;
        assert_eq!(
            MemberUserData::decode(&neg),
            Err(UserDataError::UnsupportedVersion(i16::MIN))
        );
        let mut body = BytesMut::new();
        body.put_u8(0);
        body.put_slice(&[0; 16]);
        put_varint(&mut body, 0);
        put_varint(&mut body, 0);
        put_varint(&mut body, 1);
        put_varint(&mut body, 2);
        body.put_slice(&[0xff, 0xfe]);
        put_varint(&mut body, 0);
        assert_eq!(
            MemberUserData::decode(&frame_raw(1, &body)),
            Err(UserDataError::TopicName)
        );
    }
}
