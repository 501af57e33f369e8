//! The wire client against a real broker (tansu): produce, fetch, offsets, broker loss.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use lagbalance::admin::OffsetSpec;
use lagbalance::fetcher::{FetchConfig, Fetcher, OffsetReset};
use lagbalance::partitioner::partition_for_key;
use lagbalance::producer::{Acks, Producer, ProducerConfig};
use lagbalance::records::{CompressionCodec, ProducerRecord};
use lagbalance::{Client, ClientConfig};
use lagbalance_integration::{readback, unique, TestBroker};

const RECORDS: usize = 100_000;
const PARTITIONS: i32 = 12;

fn key(i: usize) -> String {
    format!("key-{i}")
}
fn value(i: usize) -> String {
    format!("value-{i}-{}", i.wrapping_mul(2_654_435_761) % 1_000_003)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_fetch_100k_keyed_records() {
    let broker = TestBroker::start().await.expect("broker");
    let client = Client::new(ClientConfig::new(&broker.bootstrap)).unwrap();
    let topic = unique("keyed");
    client
        .create_topic(&topic, PARTITIONS, 1)
        .await
        .expect("create topic");

    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: Acks::All,
            compression: CompressionCodec::Lz4,
            // One record per batch: tansu 0.6.0 answers ListOffsets(latest) with the base
            // offset of the newest batch + 1 (docs/tansu-quirks.md), the log end only for
            // single-record batches. Batched produce: `batched_produce_round_trips_with_every_codec`.
            batch_size: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let mut deliveries = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let record = ProducerRecord::new(&topic).key(key(i)).value(value(i));
        deliveries.push((i, producer.send(record).await.expect("queued")));
    }
    producer.flush().await.expect("flush");
    let mut per_partition = BTreeMap::<i32, HashSet<i64>>::new();
    for (i, d) in deliveries {
        let meta = d.await.expect("delivered");
        assert_eq!(
            meta.partition,
            partition_for_key(key(i).as_bytes(), PARTITIONS),
            "record {i} is on the partition murmur2 predicts"
        );
        assert!(
            per_partition
                .entry(meta.partition)
                .or_default()
                .insert(meta.offset),
            "offsets unique"
        );
    }

    let latest = client
        .list_offsets(&topic, &[], OffsetSpec::Latest)
        .await
        .unwrap();
    assert_eq!(latest.len(), PARTITIONS as usize);
    assert_eq!(
        latest.values().sum::<i64>(),
        RECORDS as i64,
        "log end offsets sum to the count"
    );
    let earliest = client
        .list_offsets(&topic, &[], OffsetSpec::Earliest)
        .await
        .unwrap();
    assert!(earliest.values().all(|o| *o == 0));

    let mut fetcher = readback::from_earliest(&client, Duration::from_millis(200));
    for p in 0..PARTITIONS {
        fetcher.assign(&topic, p, None);
    }
    let mut seen = vec![false; RECORDS];
    let mut count = 0usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    while count < RECORDS {
        assert!(
            Instant::now() < deadline,
            "only {count} of {RECORDS} fetched in time"
        );
        for r in fetcher.fetch().await.expect("fetch") {
            let k = String::from_utf8(r.key.clone().unwrap().to_vec()).unwrap();
            let i: usize = k.strip_prefix("key-").unwrap().parse().unwrap();
            assert_eq!(
                r.value.as_deref(),
                Some(value(i).as_bytes()),
                "value of {k}"
            );
            assert_eq!(
                r.partition,
                partition_for_key(k.as_bytes(), PARTITIONS),
                "{k}"
            );
            assert!(!seen[i], "record {i} fetched twice");
            seen[i] = true;
            count += 1;
        }
    }
    assert_eq!(count, RECORDS);
    for p in 0..PARTITIONS {
        let st = fetcher.state(&topic, p).unwrap();
        assert_eq!(
            st.position,
            Some(latest[&p]),
            "partition {p} fetched to its end"
        );
        assert_eq!(st.lag(), Some(0));
    }
    // Nothing more arrives: the next round is empty, not a duplicate.
    assert!(fetcher.fetch().await.unwrap().is_empty());
    producer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_produce_round_trips_with_every_codec() {
    let broker = TestBroker::start().await.expect("broker");
    let client = Client::new(ClientConfig::new(&broker.bootstrap)).unwrap();
    for codec in [
        CompressionCodec::None,
        CompressionCodec::Gzip,
        CompressionCodec::Snappy,
        CompressionCodec::Lz4,
        CompressionCodec::Zstd,
    ] {
        let topic = unique("batched");
        client.create_topic(&topic, 3, 1).await.unwrap();
        let producer = Producer::new(
            client.clone(),
            ProducerConfig {
                compression: codec,
                linger: Duration::from_millis(20),
                ..Default::default()
            },
        )
        .unwrap();
        const N: usize = 5_000;
        let mut deliveries = Vec::new();
        for i in 0..N {
            let r = ProducerRecord::new(&topic).key(key(i)).value(value(i));
            deliveries.push(producer.send(r).await.unwrap());
        }
        producer.flush().await.unwrap();
        let mut expected = BTreeMap::<(i32, i64), usize>::new();
        for (i, d) in deliveries.into_iter().enumerate() {
            let m = d.await.unwrap();
            assert!(
                expected.insert((m.partition, m.offset), i).is_none(),
                "{codec:?}: offset reused"
            );
        }
        let mut fetcher = Fetcher::new(
            client.clone(),
            FetchConfig {
                auto_offset_reset: OffsetReset::Earliest,
                max_wait: Duration::from_millis(100),
                // Several rounds, with batches the broker cuts at the size limit.
                max_partition_bytes: 16 * 1024,
                ..Default::default()
            },
        );
        for p in 0..3 {
            fetcher.assign(&topic, p, None);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut got = 0;
        while got < N {
            assert!(Instant::now() < deadline, "{codec:?}: {got} of {N}");
            for r in fetcher.fetch().await.unwrap() {
                let i = expected
                    .remove(&(r.partition, r.offset))
                    .expect("a produced offset, once");
                assert_eq!(r.key.as_deref(), Some(key(i).as_bytes()), "{codec:?}");
                assert_eq!(r.value.as_deref(), Some(value(i).as_bytes()), "{codec:?}");
                got += 1;
            }
        }
        assert!(expected.is_empty());
        // The Fetch high watermarks (what ListOffsets(latest) means for a consumer) add up.
        let hw: i64 = (0..3)
            .map(|p| fetcher.state(&topic, p).unwrap().high_watermark.unwrap())
            .sum();
        assert_eq!(hw, N as i64, "{codec:?}");
        producer.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_offset_is_reset_by_policy() {
    let broker = TestBroker::start().await.expect("broker");
    let client = Client::new(ClientConfig::new(&broker.bootstrap)).unwrap();
    let topic = unique("reset");
    client.create_topic(&topic, 1, 1).await.unwrap();
    // Single-record batches keep tansu's ListOffsets(latest) exact (docs/tansu-quirks.md).
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            batch_size: 1,
            ..Default::default()
        },
    )
    .unwrap();
    for i in 0..10 {
        producer
            .send(
                ProducerRecord::new(&topic)
                    .partition(0)
                    .value(format!("v{i}")),
            )
            .await
            .unwrap();
    }
    producer.flush().await.unwrap();

    for (policy, expect_first) in [
        (OffsetReset::Earliest, Some(0)),
        (OffsetReset::Latest, None),
    ] {
        let mut f = Fetcher::new(
            client.clone(),
            FetchConfig {
                auto_offset_reset: policy,
                max_wait: Duration::from_millis(100),
                ..Default::default()
            },
        );
        f.assign(&topic, 0, Some(1_000)); // beyond the log end
        let deadline = Instant::now() + Duration::from_secs(20);
        let first = loop {
            assert!(Instant::now() < deadline, "{policy:?}: no reset in time");
            let recs = f.fetch().await.unwrap();
            if let Some(r) = recs.first() {
                break Some(r.offset);
            }
            if f.state(&topic, 0).unwrap().position == Some(10) {
                break None; // reset to the end: nothing to read
            }
        };
        assert_eq!(first, expect_first, "{policy:?}");
    }

    let mut strict = Fetcher::new(
        client.clone(),
        FetchConfig {
            auto_offset_reset: OffsetReset::None,
            ..Default::default()
        },
    );
    strict.assign(&topic, 0, Some(1_000));
    let err = strict.fetch().await.unwrap_err();
    assert!(
        matches!(
            err,
            lagbalance::Error::OffsetOutOfRange { offset: 1_000, .. }
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_stopped_mid_test_gives_a_clear_error_within_the_deadline() {
    let mut broker = TestBroker::start_own().await.expect("broker");
    let mut config = ClientConfig::new(&broker.bootstrap);
    config.operation_timeout = Duration::from_secs(3);
    config.connection.request_timeout = Duration::from_secs(2);
    let client = Client::new(config).unwrap();
    let topic = unique("gone");
    client.create_topic(&topic, 2, 1).await.unwrap();
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            delivery_timeout: Duration::from_secs(3),
            ..Default::default()
        },
    )
    .unwrap();
    let first = producer
        .send(ProducerRecord::new(&topic).key("a").value("1"))
        .await
        .unwrap();
    first.await.expect("delivered while the broker is up");

    broker.stop();

    let started = Instant::now();
    let err = client
        .list_offsets(&topic, &[], OffsetSpec::Latest)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "list_offsets gave up after {took:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("list offsets"),
        "the error names the operation: {msg}"
    );
    assert!(
        err.is_retriable(),
        "a lost broker is a retriable condition: {err:?}"
    );

    let started = Instant::now();
    // Either `send` fails (no metadata) or the delivery does (no leader): both within bounds.
    let err = match producer
        .send(ProducerRecord::new(&topic).key("b").value("2"))
        .await
    {
        Ok(pending) => pending.await.unwrap_err(),
        Err(e) => e,
    };
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "delivery failed after {:?}",
        started.elapsed()
    );
    assert!(err.is_retriable(), "{err:?}");

    let mut fetcher = Fetcher::new(client.clone(), FetchConfig::default());
    fetcher.assign(&topic, 0, Some(0));
    let started = Instant::now();
    let err = fetcher.fetch().await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "fetch failed after {:?}",
        started.elapsed()
    );
    assert!(err.is_retriable(), "{err:?}");
}
