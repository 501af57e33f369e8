//! Producing at a fixed rate with a ledger of every acknowledged offset, for the end-to-end
//! scenarios that prove nothing was lost (the agent scenario, the chaos suite) and the
//! end-to-end run ([`crate::e2e`]), which keeps its own ledger through [`produce_paced`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use lagbalance::producer::{Producer, ProducerConfig, RecordMetadata};
use lagbalance::records::ProducerRecord;
use lagbalance::Client;
use lagbalance::NamedPartition;

/// Acknowledged offsets per partition, readable while records are still being produced.
pub type LiveLedger = Arc<Mutex<BTreeMap<NamedPartition, BTreeSet<i64>>>>;

/// Produce round-robin over `partitions` at `rate`/s until `stop`; returns every acknowledged
/// (partition, offset) and, if given, keeps `live` current while it runs.
pub async fn produce_until(
    client: Client,
    topic: String,
    partitions: i32,
    rate: f64,
    stop: Arc<AtomicBool>,
    live: Option<LiveLedger>,
) -> Result<BTreeSet<(NamedPartition, i64)>> {
    let acked: Arc<Mutex<BTreeSet<(NamedPartition, i64)>>> = Arc::default();
    let ledger = acked.clone();
    let running = |_elapsed: Duration| !stop.load(Ordering::Relaxed);
    produce_paced(client, &topic, partitions, rate, running, move |m| {
        let tp = (m.topic, m.partition);
        if let Some(live) = &live {
            live.lock()
                .map_err(|_| anyhow::anyhow!("ledger poisoned"))?
                .entry(tp.clone())
                .or_default()
                .insert(m.offset);
        }
        ledger
            .lock()
            .map_err(|_| anyhow::anyhow!("ledger poisoned"))?
            .insert((tp, m.offset));
        Ok(())
    })
    .await?;
    let out = std::mem::take(&mut *acked.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    Ok(out)
}

/// Produce at `rate`/s while `running(time since the start)`: record `i` goes to partition
/// `i % partitions` with value `i` (big-endian), due `i / rate` seconds after the start, so a
/// slow acknowledgement never slows the pace. `on_ack` hears every acknowledgement; the first
/// error (sending, delivery or `on_ack`) ends the run. Flushes and closes the producer.
pub async fn produce_paced(
    client: Client,
    topic: &str,
    partitions: i32,
    rate: f64,
    mut running: impl FnMut(Duration) -> bool,
    on_ack: impl Fn(RecordMetadata) -> Result<()> + Send + Sync + 'static,
) -> Result<()> {
    let producer = Producer::new(client, ProducerConfig::default())?;
    let on_ack = Arc::new(on_ack);
    let started = Instant::now();
    let mut acks = tokio::task::JoinSet::new();
    let mut i: u64 = 0;
    while running(started.elapsed()) {
        let due = started + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let r = ProducerRecord::new(topic)
            .partition((i % partitions as u64) as i32)
            .value(i.to_be_bytes().to_vec());
        let delivery = producer.send(r).await?;
        let on_ack = on_ack.clone();
        acks.spawn(async move { on_ack(delivery.await?) });
        // Reap finished acknowledgements as we go (a long run sends tens of thousands).
        while let Some(r) = acks.try_join_next() {
            r??;
        }
        i += 1;
    }
    producer.flush().await?;
    while let Some(r) = acks.join_next().await {
        r??;
    }
    producer.close().await?;
    Ok(())
}
