//! Produce and consume throughput of lagbalance's wire client side by side with the `rdkafka`
//! crate (librdkafka), against the same local broker and the same topic.
//!
//! ```text
//! cargo run --release -p lagbalance-integration --example wire_bench -- \
//!     [--bootstrap HOST:PORT] [--records 200000] [--value-size 100] [--partitions 12] [--rounds 3]
//!     [--warmup 1] [--idempotence on|off]
//! ```
//! Without `--bootstrap` (or `LAGBALANCE_BOOTSTRAP`) it starts its own broker (Apache Kafka by default). Each round
//! produces N keyed records with each client into one topic (2N in all), then each client reads
//! the whole topic from the beginning; the medians and the ratio ours ÷ rdkafka are printed as
//! a markdown table. `--warmup` rounds (default 1) run first and do not count: a fresh broker's
//! JVM is several times slower in its first seconds. Both producers use acks=all, lz4, linger 5 ms, 64 KiB batches and the same
//! `enable.idempotence` (on by default, as in Kafka's own clients since 3.0; librdkafka's own
//! default is off). Every timing starts before the client is created, so connecting and
//! metadata count for both. `--warmup` rounds (default 1) run first and do not count: a fresh
//! broker's JVM is several times slower in its first seconds.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lagbalance::assign::stats::median;
use lagbalance::producer::{Acks, Producer, ProducerConfig};
use lagbalance::records::{CompressionCodec, ProducerRecord};
use lagbalance::{Client, ClientConfig};
use lagbalance_integration::{readback, unique, TestBroker};
use rdkafka::config::ClientConfig as RdConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};

struct Args {
    bootstrap: Option<String>,
    records: usize,
    value_size: usize,
    partitions: i32,
    rounds: usize,
    warmup: usize,
    idempotence: bool,
}

/// What one producer writes or one consumer reads back.
struct Workload<'a> {
    bootstrap: &'a str,
    topic: &'a str,
    partitions: i32,
    idempotence: bool,
}

const USAGE: &str = "\
usage: wire_bench [--bootstrap HOST:PORT] [--records 200000] [--value-size 100] [--partitions 12]
                  [--rounds 3] [--warmup 1] [--idempotence on|off]

Produce and consume throughput of lagbalance next to rdkafka on the same broker and topic.
Without --bootstrap (or LAGBALANCE_BOOTSTRAP) it starts its own broker. The --warmup rounds
run first and do not count.
  -h, --help    print this and exit
";

fn parse_args() -> Result<Args> {
    let mut a = Args {
        bootstrap: std::env::var("LAGBALANCE_BOOTSTRAP").ok(),
        records: 200_000,
        value_size: 100,
        partitions: 12,
        rounds: 3,
        warmup: 1,
        idempotence: true,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    if lagbalance::settings::wants_help(&args) {
        print!("{USAGE}");
        std::process::exit(0);
    }
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--bootstrap" => a.bootstrap = Some(val()?),
            "--records" => a.records = val()?.parse()?,
            "--value-size" => a.value_size = val()?.parse()?,
            "--partitions" => a.partitions = val()?.parse()?,
            "--rounds" => a.rounds = val()?.parse()?,
            "--warmup" => a.warmup = val()?.parse()?,
            "--idempotence" => {
                a.idempotence = match val()?.as_str() {
                    "on" => true,
                    "off" => false,
                    v => bail!("--idempotence: '{v}' is not on or off"),
                }
            }
            other => bail!("unknown flag {other}\n\n{USAGE}"),
        }
    }
    Ok(a)
}

async fn produce_ours(w: &Workload<'_>, n: usize, value: &[u8]) -> Result<Duration> {
    // A fresh client, like the fresh rdkafka producer: connection set-up counts for both.
    let started = Instant::now();
    let client = Client::new(ClientConfig::new(w.bootstrap))?;
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: Acks::All,
            compression: CompressionCodec::Lz4,
            linger: Duration::from_millis(5),
            batch_size: 64 * 1024,
            enable_idempotence: Some(w.idempotence),
            ..Default::default()
        },
    )?;
    let mut pending = Vec::with_capacity(n);
    for i in 0..n {
        let r = ProducerRecord::new(w.topic)
            .key(format!("ours-{i}"))
            .value(bytes::Bytes::copy_from_slice(value));
        pending.push(producer.send(r).await?);
    }
    producer.flush().await?;
    for p in pending {
        p.await?;
    }
    let took = started.elapsed();
    producer.close().await?;
    Ok(took)
}

fn produce_rdkafka(w: &Workload<'_>, n: usize, value: &[u8]) -> Result<Duration> {
    let started = Instant::now();
    let producer: BaseProducer = RdConfig::new()
        .set("bootstrap.servers", w.bootstrap)
        .set("enable.idempotence", w.idempotence.to_string())
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("batch.size", "65536")
        .set("partitioner", "murmur2_random")
        .create()?;
    for i in 0..n {
        let key = format!("rd-{i}");
        let mut record = BaseRecord::to(w.topic).key(&key).payload(value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) => {
                    if !matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ) {
                        bail!("rdkafka send: {e}");
                    }
                    record = r;
                    producer.poll(Duration::from_millis(1));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120))?;
    Ok(started.elapsed())
}

async fn consume_ours(w: &Workload<'_>, total: usize) -> Result<Duration> {
    let started = Instant::now();
    let client = Client::new(ClientConfig::new(w.bootstrap))?;
    let mut f = readback::from_earliest(&client, Duration::from_millis(100));
    for p in 0..w.partitions {
        f.assign(w.topic, p, Some(0));
    }
    let mut n = 0;
    while n < total {
        n += f.fetch().await?.len();
        if started.elapsed() > Duration::from_secs(300) {
            bail!("ours: only {n} of {total} consumed");
        }
    }
    Ok(started.elapsed())
}

fn consume_rdkafka(w: &Workload<'_>, total: usize) -> Result<Duration> {
    let started = Instant::now();
    let consumer: BaseConsumer = RdConfig::new()
        .set("bootstrap.servers", w.bootstrap)
        .set("group.id", unique("bench"))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..w.partitions {
        tpl.add_partition_offset(w.topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut n = 0;
    while n < total {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            m?;
            n += 1;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("rdkafka: only {n} of {total} consumed");
        }
    }
    Ok(started.elapsed())
}

/// One round's four timings.
struct Timings {
    produce_ours: Duration,
    produce_rdkafka: Duration,
    consume_ours: Duration,
    consume_rdkafka: Duration,
}

/// Each client produces `records` into a fresh topic, then each reads the whole topic back.
async fn run_round(
    client: &Client,
    bootstrap: &str,
    args: &Args,
    round: usize,
    value: &[u8],
) -> Result<Timings> {
    let n = args.records;
    let topic = unique("bench");
    client.create_topic(&topic, args.partitions, 1).await?;
    let w = Workload {
        bootstrap,
        topic: &topic,
        partitions: args.partitions,
        idempotence: args.idempotence,
    };
    // Alternate who goes first so neither always meets a warm (or cold) broker.
    let (produce_ours, produce_rdkafka) = if round % 2 == 0 {
        let po = self::produce_ours(&w, n, value).await?;
        (po, self::produce_rdkafka(&w, n, value)?)
    } else {
        let pr = self::produce_rdkafka(&w, n, value)?;
        (self::produce_ours(&w, n, value).await?, pr)
    };
    let (consume_ours, consume_rdkafka) = if round % 2 == 0 {
        let co = self::consume_ours(&w, 2 * n).await?;
        (co, self::consume_rdkafka(&w, 2 * n)?)
    } else {
        let cr = self::consume_rdkafka(&w, 2 * n)?;
        (self::consume_ours(&w, 2 * n).await?, cr)
    };
    Ok(Timings {
        produce_ours,
        produce_rdkafka,
        consume_ours,
        consume_rdkafka,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let _own;
    let bootstrap = match &args.bootstrap {
        Some(b) => b.clone(),
        None => {
            _own = TestBroker::start_own().await?;
            _own.bootstrap.clone()
        }
    };
    let client = Client::new(ClientConfig::new(&bootstrap))?;
    let value = vec![b'x'; args.value_size];
    let n = args.records;
    let (mut p_ours, mut p_rd, mut c_ours, mut c_rd) = (vec![], vec![], vec![], vec![]);
    // The warm-up rounds give the broker's JVM its JIT and page cache before anything counts.
    for round in 0..args.warmup + args.rounds {
        let t = run_round(&client, &bootstrap, &args, round, &value).await?;
        let label = match round.checked_sub(args.warmup) {
            None => format!("warm-up {round}"),
            Some(r) => format!("round {r}"),
        };
        eprintln!(
            "{label}: produce ours {:?} rdkafka {:?} (ratio {:.2}); consume ours {:?} rdkafka {:?} (ratio {:.2})",
            t.produce_ours, t.produce_rdkafka, t.produce_rdkafka.as_secs_f64() / t.produce_ours.as_secs_f64(),
            t.consume_ours, t.consume_rdkafka, t.consume_rdkafka.as_secs_f64() / t.consume_ours.as_secs_f64(),
        );
        if round < args.warmup {
            continue;
        }
        p_ours.push(n as f64 / t.produce_ours.as_secs_f64());
        p_rd.push(n as f64 / t.produce_rdkafka.as_secs_f64());
        c_ours.push(2.0 * n as f64 / t.consume_ours.as_secs_f64());
        c_rd.push(2.0 * n as f64 / t.consume_rdkafka.as_secs_f64());
    }
    let median_rate =
        |v: &[f64]| median(v).context("no round counted: --rounds must be at least 1");
    let (po, pr, co, cr) = (
        median_rate(&p_ours)?,
        median_rate(&p_rd)?,
        median_rate(&c_ours)?,
        median_rate(&c_rd)?,
    );
    let mb = |rate: f64| rate * args.value_size as f64 / 1e6;
    println!(
        "| {} records × {} B, {} partitions, idempotence {}, median of {} rounds | lagbalance | rdkafka | ratio |",
        n,
        args.value_size,
        args.partitions,
        if args.idempotence { "on" } else { "off" },
        args.rounds
    );
    println!("|---|---:|---:|---:|");
    println!(
        "| produce (records/s, MB/s) | {po:.0} ({:.1}) | {pr:.0} ({:.1}) | {:.2} |",
        mb(po),
        mb(pr),
        po / pr
    );
    println!(
        "| consume (records/s, MB/s) | {co:.0} ({:.1}) | {cr:.0} ({:.1}) | {:.2} |",
        mb(co),
        mb(cr),
        co / cr
    );
    Ok(())
}
