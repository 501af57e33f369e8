//! The idempotent producer against Apache Kafka, through a loopback proxy that loses Produce
//! answers: it forwards a Produce request, lets the broker write and answer it, then cuts the
//! connection instead of forwarding the answer. The producer sees a lost connection and
//! retries a batch that is already in the log. With idempotence (the default) the broker
//! recognises the retry by its sequence: every record is in the partition exactly once, in
//! order. With `enable.idempotence=false` the same run writes duplicates — the check below can
//! fail, and does for a producer without idempotence. A third run has the proxy answer some
//! Produce requests itself with the errors of a broker that lost the producer's sequence state
//! (OUT_OF_ORDER_SEQUENCE_NUMBER, UNKNOWN_PRODUCER_ID, INVALID_PRODUCER_EPOCH): the producer
//! must move to a new epoch or producer id that the real broker then accepts from sequence 0.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, MetadataResponse, ProduceRequest, ProduceResponse,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use kafka_protocol::ResponseError;
use lagbalance::admin::OffsetSpec;
use lagbalance::fetcher::Fetcher;
use lagbalance::producer::{Producer, ProducerConfig};
use lagbalance::records::ProducerRecord;
use lagbalance::{Client, ClientConfig};
use lagbalance_integration::{readback, unique, TestBroker};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const PARTITIONS: i32 = 2;
const PER_PARTITION: usize = 150;
/// Produce requests (counted from 1, across connections) whose answers the proxy swallows.
const CUTS: [(usize, Fault); 4] = [
    (2, Fault::CutAnswer),
    (5, Fault::CutAnswer),
    (9, Fault::CutAnswer),
    (14, Fault::CutAnswer),
];

/// What the proxy does to one Produce request.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Forward it, let the broker write and answer, then close the connection.
    CutAnswer,
    /// Do not forward it; answer every partition in it with this error.
    Refuse(ResponseError),
}

// ---------------------------------------------------------------------------------------------
// The proxy

/// Forwards Kafka requests to `upstream` one at a time, advertises itself in Metadata answers
/// (so the client keeps coming back through it), and applies `faults` to the Produce requests
/// they number. Stops on drop.
struct CuttingProxy {
    addr: String,
    produces: Arc<AtomicUsize>,
    cuts: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CuttingProxy {
    async fn start(upstream: String, faults: &'static [(usize, Fault)]) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let produces = Arc::new(AtomicUsize::new(0));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (p, c) = (produces.clone(), cuts.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                conns.spawn(proxy_connection(
                    tcp,
                    upstream.clone(),
                    port,
                    faults,
                    p.clone(),
                    c.clone(),
                ));
            }
        });
        CuttingProxy {
            addr: format!("127.0.0.1:{port}"),
            produces,
            cuts,
            task,
        }
    }
}

/// One client connection. Requests are forwarded one at a time (a pipelining client simply
/// waits), so each answer read from the broker belongs to the request just forwarded.
async fn proxy_connection(
    mut client: TcpStream,
    upstream: String,
    port: u16,
    faults: &'static [(usize, Fault)],
    produces: Arc<AtomicUsize>,
    cuts: Arc<AtomicUsize>,
) {
    let Ok(mut broker) = TcpStream::connect(&upstream).await else {
        return;
    };
    while let Some(request) = read_frame(&mut client).await {
        let api = i16::from_be_bytes([request[0], request[1]]);
        let version = i16::from_be_bytes([request[2], request[3]]);
        let mut fault = None;
        if ApiKey::try_from(api) == Ok(ApiKey::Produce) {
            let n = produces.fetch_add(1, Ordering::SeqCst) + 1;
            fault = faults.iter().find(|(at, _)| *at == n).map(|(_, f)| *f);
        }
        if let Some(Fault::Refuse(error)) = fault {
            cuts.fetch_add(1, Ordering::SeqCst);
            let Some(answer) = refuse_produce(&request, version, error) else {
                return;
            };
            if write_frame(&mut client, &answer).await.is_none() {
                return;
            }
            continue;
        }
        if write_frame(&mut broker, &request).await.is_none() {
            return;
        }
        let Some(mut answer) = read_frame(&mut broker).await else {
            return;
        };
        match ApiKey::try_from(api) {
            Ok(ApiKey::Produce) if matches!(fault, Some(Fault::CutAnswer)) => {
                // The broker has written the batches; the client never hears of it.
                cuts.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Ok(ApiKey::Metadata) => match advertise_proxy(&request, &answer, version, port) {
                Some(rewritten) => answer = rewritten,
                None => return,
            },
            _ => {}
        }
        if write_frame(&mut client, &answer).await.is_none() {
            return;
        }
    }
}

/// The Metadata answer with every broker's address replaced by the proxy's.
fn advertise_proxy(request: &[u8], answer: &[u8], version: i16, port: u16) -> Option<Vec<u8>> {
    let header_version = ApiKey::Metadata.response_header_version(version);
    // The request header is decoded only to check that the frame is what it claims to be.
    RequestHeader::decode(
        &mut Bytes::copy_from_slice(request),
        ApiKey::Metadata.request_header_version(version),
    )
    .ok()?;
    let mut buf = Bytes::copy_from_slice(answer);
    let header = ResponseHeader::decode(&mut buf, header_version).ok()?;
    let mut body = MetadataResponse::decode(&mut buf, version).ok()?;
    for b in body.brokers.iter_mut() {
        b.host = StrBytes::from_static_str("127.0.0.1");
        b.port = i32::from(port);
    }
    let mut out = BytesMut::new();
    header.encode(&mut out, header_version).ok()?;
    body.encode(&mut out, version).ok()?;
    Some(out.to_vec())
}

/// A Produce answer giving `error` for every partition of `request`, as the broker would.
fn refuse_produce(request: &[u8], version: i16, error: ResponseError) -> Option<Vec<u8>> {
    let mut buf = Bytes::copy_from_slice(request);
    let header =
        RequestHeader::decode(&mut buf, ApiKey::Produce.request_header_version(version)).ok()?;
    let body = ProduceRequest::decode(&mut buf, version).ok()?;
    let responses = body
        .topic_data
        .iter()
        .map(|t| {
            TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_partition_responses(
                    t.partition_data
                        .iter()
                        .map(|p| {
                            PartitionProduceResponse::default()
                                .with_index(p.index)
                                .with_error_code(error.code())
                                .with_base_offset(-1)
                        })
                        .collect(),
                )
        })
        .collect();
    let header_version = ApiKey::Produce.response_header_version(version);
    let mut out = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(header.correlation_id)
        .encode(&mut out, header_version)
        .ok()?;
    ProduceResponse::default()
        .with_responses(responses)
        .encode(&mut out, version)
        .ok()?;
    Some(out.to_vec())
}

/// One size-prefixed frame, without its prefix; `None` at EOF or on a nonsensical size.
async fn read_frame(s: &mut (impl AsyncRead + Unpin)) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.ok()?;
    let len = i32::from_be_bytes(len);
    if !(8..=100 << 20).contains(&len) {
        return None;
    }
    let mut body = vec![0u8; len as usize];
    s.read_exact(&mut body).await.ok()?;
    Some(body)
}

async fn write_frame(s: &mut TcpStream, frame: &[u8]) -> Option<()> {
    let mut out = BytesMut::with_capacity(frame.len() + 4);
    out.put_i32(frame.len() as i32);
    out.put_slice(frame);
    s.write_all(&out).await.ok()
}

// ---------------------------------------------------------------------------------------------
// The run

fn value(partition: i32, i: usize) -> String {
    format!("p{partition}-{i:05}")
}

/// What one run through the proxy left in the topic.
struct Outcome {
    /// Partition → values in log order.
    logs: BTreeMap<i32, Vec<String>>,
    /// Partition → (value → offset the producer reported), for reported offsets ≥ 0.
    reported: BTreeMap<i32, BTreeMap<String, i64>>,
    /// Deliveries reported at offset −1 (a duplicate whose offset the broker forgot).
    unknown_offsets: usize,
    /// Faults the proxy applied.
    cuts: usize,
    /// Partition → the idempotence fields of its batches, in log order.
    batches: BTreeMap<i32, Vec<BatchHeader>>,
}

/// The idempotence fields of one batch in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BatchHeader {
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
    records: i32,
}

/// The headers of every batch of `topic`/`partition` (small enough for one Fetch), read with a
/// raw Fetch: the fetcher does not expose producer ids and sequences.
async fn batch_headers(client: &Client, topic: &str, partition: i32) -> Vec<BatchHeader> {
    let leader = client.leader(topic, partition).await.expect("leader");
    let conn = client.broker(leader).await.expect("connection");
    let (_, resp) = client
        .send(&conn, ApiKey::Fetch, |_| {
            let mut req = FetchRequest::default();
            req.replica_id = BrokerId(-1);
            req.max_wait_ms = 0;
            req.min_bytes = 1;
            req.max_bytes = 8 << 20;
            req.session_epoch = -1;
            req.topics = vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(8 << 20)])];
            req
        })
        .await
        .expect("fetch");
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0, "fetch {topic}/{partition}");
    let mut bytes = p.records.clone().unwrap_or_default();
    RecordBatchDecoder::decode_batch_info(&mut bytes)
        .expect("whole batches")
        .into_iter()
        .map(|b| BatchHeader {
            producer_id: b.producer_id,
            epoch: b.producer_epoch,
            base_sequence: b.base_sequence,
            records: b.record_count,
        })
        .collect()
}

/// Per partition, the batches of each (producer id, epoch) start at sequence 0 and follow on
/// without gaps or repeats: what the broker enforces, seen from the log.
fn assert_sequences_contiguous(batches: &BTreeMap<i32, Vec<BatchHeader>>) {
    for (p, list) in batches {
        let mut next: BTreeMap<(i64, i16), i32> = BTreeMap::new();
        for b in list {
            assert!(
                b.producer_id >= 0,
                "partition {p}: batch without idempotence {b:?}"
            );
            let expected = next.entry((b.producer_id, b.epoch)).or_insert(0);
            assert_eq!(
                b.base_sequence, *expected,
                "partition {p}: {b:?} in {list:?}"
            );
            *expected += b.records;
        }
    }
}

/// Produce `PER_PARTITION` records to each partition of a new topic through a proxy that
/// applies `faults`; read back every partition directly.
async fn run(
    broker: &TestBroker,
    config: ProducerConfig,
    faults: &'static [(usize, Fault)],
) -> Outcome {
    let direct = Client::new(ClientConfig::new(&broker.bootstrap)).expect("client");
    let topic = unique("idempotence");
    direct
        .create_topic(&topic, PARTITIONS, 1)
        .await
        .expect("create topic");

    let proxy = CuttingProxy::start(broker.bootstrap.clone(), faults).await;
    let client = Client::new(ClientConfig::new(&proxy.addr)).expect("proxied client");
    let producer = Producer::new(client, config).expect("producer");
    let mut deliveries = Vec::new();
    for i in 0..PER_PARTITION {
        for p in 0..PARTITIONS {
            let record = ProducerRecord::new(&topic).partition(p).value(value(p, i));
            deliveries.push((p, value(p, i), producer.send(record).await.expect("queued")));
        }
    }
    producer.flush().await.expect("flush");
    let mut reported = BTreeMap::<i32, BTreeMap<String, i64>>::new();
    let mut unknown_offsets = 0;
    for (p, v, d) in deliveries {
        let meta = d.await.unwrap_or_else(|e| panic!("{v} not delivered: {e}"));
        assert_eq!(meta.partition, p);
        if meta.offset < 0 {
            unknown_offsets += 1;
        } else {
            reported.entry(p).or_default().insert(v, meta.offset);
        }
    }
    producer.close().await.expect("close");
    let cuts = proxy.cuts.load(Ordering::SeqCst);
    eprintln!(
        "{} Produce requests through the proxy, {cuts} faults applied",
        proxy.produces.load(Ordering::SeqCst)
    );

    // Read every partition to its end, straight from the broker.
    let ends = direct
        .list_offsets(&topic, &[], OffsetSpec::Latest)
        .await
        .expect("log end offsets");
    let mut fetcher = readback::from_earliest(&direct, Duration::from_millis(100));
    for p in 0..PARTITIONS {
        fetcher.assign(&topic, p, Some(0));
    }
    let mut logs = BTreeMap::<i32, Vec<String>>::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    assert_eq!(ends.len(), PARTITIONS as usize, "{ends:?}");
    let at_end = |f: &Fetcher| {
        ends.iter()
            .all(|(p, end)| f.state(&topic, *p).and_then(|s| s.position) >= Some(*end))
    };
    while !at_end(&fetcher) {
        assert!(
            Instant::now() < deadline,
            "partitions not read to their ends {ends:?} in time"
        );
        for r in fetcher.fetch().await.expect("fetch") {
            let v = String::from_utf8(r.value.expect("value").to_vec()).expect("utf-8");
            logs.entry(r.partition).or_default().push(v);
        }
    }
    let mut batches = BTreeMap::new();
    for p in 0..PARTITIONS {
        batches.insert(p, batch_headers(&direct, &topic, p).await);
    }
    Outcome {
        logs,
        reported,
        unknown_offsets,
        cuts,
        batches,
    }
}

fn duplicates(log: &[String]) -> usize {
    let mut seen = HashSet::new();
    log.iter().filter(|v| !seen.insert(*v)).count()
}

fn base_config() -> ProducerConfig {
    ProducerConfig {
        // A few records per batch: sequences advance by more than one.
        batch_size: 64,
        linger: Duration::from_millis(2),
        delivery_timeout: Duration::from_secs(60),
        ..ProducerConfig::default()
    }
}

/// Every record of every partition exactly once, in the order sent, at the offset reported.
fn assert_exactly_once_in_order(out: &Outcome) {
    for p in 0..PARTITIONS {
        let want: Vec<String> = (0..PER_PARTITION).map(|i| value(p, i)).collect();
        let log = out.logs.get(&p).cloned().unwrap_or_default();
        assert_eq!(duplicates(&log), 0, "partition {p} has duplicates");
        assert_eq!(log, want, "partition {p}: every record once, in order");
        for (v, offset) in out.reported.get(&p).into_iter().flatten() {
            let at = log.iter().position(|x| x == v).expect("record in log");
            assert_eq!(*offset, at as i64, "{v}: reported offset");
        }
    }
    eprintln!(
        "no duplicates; {} deliveries with an unknown offset",
        out.unknown_offsets
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_produce_answers_leave_every_record_exactly_once_in_order() {
    let broker = TestBroker::start().await.expect("broker");
    let config = base_config();
    assert!(config.idempotent().unwrap(), "idempotence is the default");
    let out = run(&broker, config, &CUTS).await;
    assert_eq!(out.cuts, CUTS.len(), "every planned cut happened");
    assert_exactly_once_in_order(&out);
    // Retries re-sent the same stamp: one producer id and epoch throughout.
    assert_sequences_contiguous(&out.batches);
    let identities: HashSet<(i64, i16)> = out
        .batches
        .values()
        .flatten()
        .map(|b| (b.producer_id, b.epoch))
        .collect();
    assert_eq!(identities.len(), 1, "{identities:?}");
}

/// Sequence-state errors make the producer bump its epoch (KIP-360, locally) or get a new
/// producer id, and restart each partition at sequence 0: the real broker must accept that,
/// and nothing may be lost, duplicated or reordered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_state_errors_renew_the_epoch_the_broker_accepts() {
    const FAULTS: [(usize, Fault); 3] = [
        (3, Fault::Refuse(ResponseError::OutOfOrderSequenceNumber)),
        (7, Fault::Refuse(ResponseError::UnknownProducerId)),
        (11, Fault::Refuse(ResponseError::InvalidProducerEpoch)),
    ];
    let broker = TestBroker::start().await.expect("broker");
    let out = run(&broker, base_config(), &FAULTS).await;
    assert_eq!(out.cuts, FAULTS.len(), "every planned refusal happened");
    assert_exactly_once_in_order(&out);
    assert_sequences_contiguous(&out.batches);
    let identities: BTreeMap<i64, HashSet<i16>> =
        out.batches
            .values()
            .flatten()
            .fold(BTreeMap::new(), |mut m, b| {
                m.entry(b.producer_id).or_default().insert(b.epoch);
                m
            });
    eprintln!("producer id → epochs in the log: {identities:?}");
    // Kafka (KIP-360) takes a locally bumped epoch. tansu 0.6.0 announces InitProducerId v3+
    // but answers a bumped epoch with PRODUCER_FENCED, so there every renewal ends in a new
    // producer id (docs/tansu-quirks.md): still exactly once and in order.
    let renewals = identities.values().map(HashSet::len).sum::<usize>() - 1;
    assert!(renewals > 0, "the producer never renewed: {identities:?}");
    if broker.kind.is_some_and(|k| k.is_kafka()) {
        assert!(
            identities.values().any(|epochs| epochs.len() > 1),
            "no locally bumped epoch reached the log: {identities:?}"
        );
        assert!(
            identities.len() > 1,
            "INVALID_PRODUCER_EPOCH did not lead to a new producer id: {identities:?}"
        );
    }
}

/// The same run without idempotence: the retried batches are written twice. This shows the
/// check above can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_idempotence_lost_produce_answers_duplicate_records() {
    let broker = TestBroker::start().await.expect("broker");
    let mut config = base_config();
    config.set("enable.idempotence", "false").unwrap();
    let out = run(&broker, config, &CUTS).await;
    assert_eq!(out.cuts, CUTS.len(), "every planned cut happened");
    assert!(
        out.batches.values().flatten().all(|b| b.producer_id == -1),
        "batches without idempotence carry no producer id"
    );
    let mut total = 0;
    for p in 0..PARTITIONS {
        let log = out.logs.get(&p).cloned().unwrap_or_default();
        let dups = duplicates(&log);
        eprintln!("partition {p}: {} records, {dups} duplicates", log.len());
        // Nothing is lost either way.
        let distinct: HashSet<&String> = log.iter().collect();
        assert_eq!(distinct.len(), PER_PARTITION, "partition {p}");
        total += dups;
    }
    assert!(
        total > 0,
        "{} cut Produce answers caused no duplicate without idempotence",
        out.cuts
    );
}
