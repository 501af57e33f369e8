//! Record batches (v2) in and out: building producer batches, and cutting a Fetch response's
//! record bytes into whole batches before decoding (the broker may truncate the last one).

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use crate::error::{Error, Result};
use crate::idempotence::Stamp;

/// A record as the consumer hands it to the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// One record to produce, before it has a partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    pub topic: String,
    /// Explicit partition; `None` lets the partitioner choose.
    pub partition: Option<i32>,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Creation time in ms since the epoch; `None` = now.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    pub fn new(topic: impl Into<String>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            ..Default::default()
        }
    }
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }
    pub fn value(mut self, value: impl Into<Bytes>) -> Self {
        self.value = Some(value.into());
        self
    }
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Rough encoded size, for batch-size accounting.
    pub fn estimated_size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()) + 4)
            .sum();
        self.key.as_ref().map_or(0, |k| k.len())
            + self.value.as_ref().map_or(0, |v| v.len())
            + headers
            + 16
    }
}

/// Compression codecs the producer can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CompressionCodec {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl CompressionCodec {
    fn to_protocol(self) -> Compression {
        match self {
            CompressionCodec::None => Compression::None,
            CompressionCodec::Gzip => Compression::Gzip,
            CompressionCodec::Snappy => Compression::Snappy,
            CompressionCodec::Lz4 => Compression::Lz4,
            CompressionCodec::Zstd => Compression::Zstd,
        }
    }

    /// Parse a `compression.type` value.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "none" => CompressionCodec::None,
            "gzip" => CompressionCodec::Gzip,
            "snappy" => CompressionCodec::Snappy,
            "lz4" => CompressionCodec::Lz4,
            "zstd" => CompressionCodec::Zstd,
            other => {
                return Err(Error::Config(format!(
                    "compression.type '{other}' is not one of none, gzip, snappy, lz4, zstd"
                )))
            }
        })
    }
}

/// Encode `records` (all for one partition) as one v2 record batch, without idempotence.
pub fn encode_batch(
    records: &[ProducerRecord],
    now_ms: i64,
    codec: CompressionCodec,
) -> Result<Bytes> {
    encode_stamped_batch(records, now_ms, codec, None)
}

/// Encode `records` as one v2 record batch; `stamp` gives the idempotent producer's id, epoch
/// and base sequence (`None`: producer id −1, no idempotence).
pub fn encode_stamped_batch(
    records: &[ProducerRecord],
    now_ms: i64,
    codec: CompressionCodec,
    stamp: Option<Stamp>,
) -> Result<Bytes> {
    // The encoder starts a new batch whenever `offset − sequence` changes, so record i carries
    // sequence `base + i` (wrapping as Kafka's sequences do). Without a stamp the base is −1
    // (no sequence): one batch all the same.
    let (producer_id, producer_epoch, base_sequence) = match stamp {
        Some(s) => (s.producer.id, s.producer.epoch, s.base_sequence),
        None => (-1, -1, -1),
    };
    let encoded: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: base_sequence.wrapping_add(i as i32),
            timestamp: r.timestamp.unwrap_or(now_ms),
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone()))
                .collect::<IndexMap<_, _>>(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: codec.to_protocol(),
    };
    let encoded = if codec == CompressionCodec::Lz4 {
        RecordBatchEncoder::encode_with_custom_compression(
            &mut buf,
            &encoded,
            &options,
            Some(lz4_fast),
        )
    } else {
        RecordBatchEncoder::encode(&mut buf, &encoded, &options)
    };
    encoded.map_err(|e| Error::Config(format!("cannot encode record batch: {e}")))?;
    Ok(buf.freeze())
}

/// LZ4 frames at the fast level, as librdkafka writes them by default: kafka-protocol's own
/// LZ4 compressor uses the high-compression mode (level 4), which costs several times the CPU
/// for a few percent smaller batches and set our producer's ceiling.
fn lz4_fast(records: &mut BytesMut, out: &mut BytesMut, _: Compression) -> anyhow::Result<()> {
    use std::io::Write;
    let mut encoder = lz4::EncoderBuilder::new()
        .level(0)
        .block_mode(lz4::BlockMode::Independent)
        .build(out.writer())?;
    encoder.write_all(records)?;
    let (_, finished) = encoder.finish();
    Ok(finished?)
}

/// Byte offsets inside a v2 batch header.
const BATCH_HEADER_LEN: usize = 61;
const MAGIC_AT: usize = 16;
const RECORD_COUNT_AT: usize = 57;
const LAST_OFFSET_DELTA_AT: usize = 23;
/// No batch we accept claims more records than this: it bounds what the decoder reserves for a
/// hostile record count.
pub const MAX_RECORDS_PER_BATCH: i32 = 1 << 21;

/// Result of decoding a partition's record bytes.
#[derive(Debug, Default)]
pub struct DecodedRecords {
    /// Records at or after the requested offset, control records removed.
    pub records: Vec<ConsumerRecord>,
    /// Offset to fetch next: one past the last batch seen (also past control batches).
    pub next_offset: Option<i64>,
    /// The bytes ended inside a batch (normal when the broker cut at a size limit).
    pub truncated: bool,
}

/// Decode every whole batch in `bytes`, skipping records below `from_offset`.
pub fn decode_records(
    topic: &str,
    partition: i32,
    bytes: Bytes,
    from_offset: i64,
) -> Result<DecodedRecords> {
    let mut out = DecodedRecords::default();
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.len() < 12 {
            out.truncated = true;
            break;
        }
        let base_offset = i64::from_be_bytes(rest[0..8].try_into().expect("8 bytes"));
        let batch_len = i32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"));
        if batch_len < (BATCH_HEADER_LEN - 12) as i32 {
            return Err(Error::malformed(
                "record batch",
                format!("{topic}/{partition}: batch length {batch_len} at offset {base_offset}"),
            ));
        }
        let total = 12 + batch_len as usize;
        if rest.len() < total {
            out.truncated = true;
            break;
        }
        let mut batch = rest.split_to(total);
        let magic = batch[MAGIC_AT] as i8;
        if magic != 2 {
            return Err(Error::malformed(
                "record batch",
                format!("{topic}/{partition}: magic {magic} (only v2 batches are supported)"),
            ));
        }
        let count = i32::from_be_bytes(
            batch[RECORD_COUNT_AT..RECORD_COUNT_AT + 4]
                .try_into()
                .expect("4 bytes"),
        );
        let last_delta = i32::from_be_bytes(
            batch[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
                .try_into()
                .expect("4 bytes"),
        );
        if !(0..=MAX_RECORDS_PER_BATCH).contains(&count) || last_delta < 0 {
            return Err(Error::malformed(
                "record batch",
                format!("{topic}/{partition}: {count} records, last offset delta {last_delta}"),
            ));
        }
        let set = RecordBatchDecoder::decode(&mut batch)
            .map_err(|e| Error::malformed("record batch", format!("{topic}/{partition}: {e}")))?;
        // A hostile base offset near i64::MAX must not overflow (a panic in debug builds).
        let next = base_offset
            .checked_add(i64::from(last_delta) + 1)
            .ok_or_else(|| {
                Error::malformed(
                    "record batch",
                    format!(
                        "{topic}/{partition}: base offset {base_offset} + {last_delta} overflows"
                    ),
                )
            })?;
        out.next_offset = Some(next);
        for r in set.records {
            if r.control || r.offset < from_offset {
                continue;
            }
            out.records.push(ConsumerRecord {
                topic: topic.to_owned(),
                partition,
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_hostile_base_offset() {
        let records = vec![
            ProducerRecord::new("t").key("k").value("v"),
            ProducerRecord::new("t"),
        ];
        let batch = encode_batch(&records, 1_000, CompressionCodec::None).unwrap();
        let d = decode_records("t", 0, batch.clone(), 1).unwrap();
        assert_eq!(d.next_offset, Some(2));
        assert_eq!(d.records.len(), 1, "offset 0 is below from_offset");
        assert_eq!(d.records[0].offset, 1);

        // The base offset is outside the CRC: a hostile one near i64::MAX is an error, not an
        // overflow (found by the `records` fuzz target).
        let mut hostile = batch.to_vec();
        hostile[..8].copy_from_slice(&(i64::MAX - 1).to_be_bytes());
        let err = decode_records("t", 0, Bytes::from(hostile), 0).unwrap_err();
        assert!(err.to_string().contains("overflows"), "{err}");
    }

    /// The vendored snappy bound (declared length ≤ 22 × compressed) must not refuse real
    /// data at snappy's best ratio: a megabyte of zeros, every codec.
    #[test]
    fn highly_compressible_batches_decode_with_every_codec() {
        let value = Bytes::from(vec![0u8; 1 << 20]);
        let records = vec![ProducerRecord::new("t").value(value.clone())];
        for codec in [
            CompressionCodec::Snappy,
            CompressionCodec::Gzip,
            CompressionCodec::Lz4,
            CompressionCodec::Zstd,
        ] {
            let batch = encode_batch(&records, 1, codec).unwrap();
            assert!(
                batch.len() < (1 << 20) / 10,
                "{codec:?}: {} bytes",
                batch.len()
            );
            let d = decode_records("t", 0, batch, 0).unwrap();
            assert_eq!(d.records[0].value.as_ref(), Some(&value), "{codec:?}");
        }
    }

    /// A stamped batch carries the producer id, epoch and base sequence in its header, with
    /// one batch for all records (Kafka's sequence wrap included).
    #[test]
    fn stamped_batches_carry_the_idempotence_fields() {
        use crate::idempotence::ProducerIdentity;
        let records: Vec<_> = (0..3)
            .map(|i| ProducerRecord::new("t").value(format!("v{i}")))
            .collect();
        for base in [0, 41, i32::MAX - 1] {
            let stamp = Stamp {
                producer: ProducerIdentity { id: 1234, epoch: 5 },
                base_sequence: base,
            };
            let mut batch =
                encode_stamped_batch(&records, 1, CompressionCodec::None, Some(stamp)).unwrap();
            let info = RecordBatchDecoder::decode_batch_info(&mut batch.clone()).unwrap();
            assert_eq!(info.len(), 1, "one batch for base {base}");
            assert_eq!(info[0].producer_id, 1234);
            assert_eq!(info[0].producer_epoch, 5);
            assert_eq!(info[0].base_sequence, base);
            assert_eq!(info[0].record_count, 3);
            let set = RecordBatchDecoder::decode(&mut batch).unwrap();
            let seqs: Vec<i32> = set.records.iter().map(|r| r.sequence).collect();
            assert_eq!(
                seqs,
                (0..3).map(|i| base.wrapping_add(i)).collect::<Vec<_>>()
            );
        }
        let plain = encode_batch(&records, 1, CompressionCodec::None).unwrap();
        let info = RecordBatchDecoder::decode_batch_info(&mut plain.clone()).unwrap();
        assert_eq!((info[0].producer_id, info[0].base_sequence), (-1, -1));
    }
}
