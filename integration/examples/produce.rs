//! Produce N keyed records to a topic (creating it if asked), at an optional fixed rate.
//!
//! Flags: [`USAGE`] (`produce --help`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lagbalance::producer::{Producer, ProducerConfig};
use lagbalance::records::ProducerRecord;
use lagbalance::{Client, ClientConfig};

const USAGE: &str = "\
usage: produce --bootstrap B --topic T [--create-partitions N] [--records N] [--rate R]

  --bootstrap B            Kafka bootstrap servers
  --topic T                topic to write
  --create-partitions N    create the topic with N partitions first
  --records N              records to produce (default 1000)
  --rate R                 records per second (default: as fast as possible)
  -h, --help               print this and exit
";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if lagbalance::settings::wants_help(&args) {
        print!("{USAGE}");
        return Ok(());
    }
    let mut bootstrap = String::new();
    let mut topic = String::new();
    let mut create = None;
    let mut records = 1000u64;
    let mut rate: Option<f64> = None;
    let mut it = args.into_iter();
    while let Some(f) = it.next() {
        let v = it.next().with_context(|| format!("{f} needs a value"))?;
        match f.as_str() {
            "--bootstrap" => bootstrap = v,
            "--topic" => topic = v,
            "--create-partitions" => create = Some(v.parse::<i32>()?),
            "--records" => records = v.parse()?,
            "--rate" => rate = Some(v.parse()?),
            other => bail!("unknown flag {other}\n\n{USAGE}"),
        }
    }
    let client = Client::new(ClientConfig::new(&bootstrap))?;
    if let Some(n) = create {
        client.create_topic(&topic, n, 1).await?;
    }
    let producer = Producer::new(client, ProducerConfig::default())?;
    let started = Instant::now();
    let mut pending = Vec::new();
    for i in 0..records {
        if let Some(r) = rate {
            let due = started + Duration::from_secs_f64(i as f64 / r);
            tokio::time::sleep_until(due.into()).await;
        }
        pending.push(
            producer
                .send(
                    ProducerRecord::new(&topic)
                        .key(format!("k{i}"))
                        .value(format!("v{i}")),
                )
                .await?,
        );
        if pending.len() >= 10_000 {
            for p in pending.drain(..) {
                p.await?;
            }
        }
    }
    producer.flush().await?;
    for p in pending {
        p.await?;
    }
    eprintln!("produced {records} records in {:?}", started.elapsed());
    Ok(())
}
