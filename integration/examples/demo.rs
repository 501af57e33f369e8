//! The README's first command (for now): start a local broker if none is given, create a
//! sample topic, produce keyed records, consume them back, and print what happened.
//!
//! `cargo run --release -p lagbalance-integration --example demo -- [--bootstrap HOST:PORT]`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use lagbalance::admin::OffsetSpec;
use lagbalance::fetcher::{FetchConfig, Fetcher, OffsetReset};
use lagbalance::producer::{Producer, ProducerConfig};
use lagbalance::records::ProducerRecord;
use lagbalance::{Client, ClientConfig};
use lagbalance_integration::{unique, TestBroker};

const RECORDS: usize = 10_000;
const PARTITIONS: i32 = 6;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let arg = std::env::args().skip_while(|a| a != "--bootstrap").nth(1);
    let broker;
    let bootstrap = match arg.or_else(|| std::env::var("LAGBALANCE_BOOTSTRAP").ok()) {
        Some(b) => b,
        None => {
            println!("starting a local tansu broker…");
            broker = TestBroker::start_own().await?;
            broker.bootstrap.clone()
        }
    };
    println!("broker: {bootstrap}");
    let client = Client::new(ClientConfig::new(&bootstrap))?;
    let topic = unique("demo");
    client.create_topic(&topic, PARTITIONS, 1).await?;
    println!("created topic {topic} with {PARTITIONS} partitions");

    let producer = Producer::new(client.clone(), ProducerConfig::default())?;
    let started = Instant::now();
    let mut pending = Vec::new();
    for i in 0..RECORDS {
        let r = ProducerRecord::new(&topic)
            .key(format!("user-{}", i % 100))
            .value(format!("event {i}"));
        pending.push(producer.send(r).await?);
    }
    producer.flush().await?;
    let mut per_partition = BTreeMap::new();
    for p in pending {
        *per_partition.entry(p.await?.partition).or_insert(0usize) += 1;
    }
    println!("produced {RECORDS} records in {:?}", started.elapsed());
    for (p, n) in &per_partition {
        println!("  partition {p}: {n} records (keys hashed with Kafka's murmur2)");
    }
    let ends = client.list_offsets(&topic, &[], OffsetSpec::Latest).await?;
    println!("log end offsets: {ends:?}");

    let mut fetcher = Fetcher::new(
        client.clone(),
        FetchConfig {
            auto_offset_reset: OffsetReset::Earliest,
            max_wait: Duration::from_millis(100),
            ..Default::default()
        },
    );
    for p in 0..PARTITIONS {
        fetcher.assign(&topic, p, None);
    }
    let started = Instant::now();
    let mut consumed = 0;
    let mut sample = None;
    while consumed < RECORDS {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("consumed only {consumed} of {RECORDS}");
        }
        let batch = fetcher.fetch().await?;
        if sample.is_none() {
            sample = batch.first().cloned();
        }
        consumed += batch.len();
    }
    println!("consumed {consumed} records in {:?}", started.elapsed());
    if let Some(r) = sample {
        println!(
            "first record: partition {} offset {} key {:?} value {:?}",
            r.partition,
            r.offset,
            r.key.map(|k| String::from_utf8_lossy(&k).into_owned()),
            r.value.map(|v| String::from_utf8_lossy(&v).into_owned())
        );
    }
    producer.close().await?;
    Ok(())
}
