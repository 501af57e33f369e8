//! What a slow member's consumer reports and how it answers its agent, on a real broker (Apache
//! Kafka by default). A slow application holds fetched records for seconds between polls: its lag must
//! count them, and a rebalance its agent asks for must not wait for the next poll.

use std::time::{Duration, Instant};

use lagbalance::consumer::NoopListener;
use lagbalance::control::{ControlClient, ControlConfig, Op};
use lagbalance::producer::{Producer, ProducerConfig};
use lagbalance::records::ProducerRecord;
use lagbalance::{Client, ClientConfig, Consumer, ConsumerConfig};
use lagbalance_integration::{unique, TestBroker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_rejoin_is_served_while_the_application_is_busy() {
    let broker = TestBroker::start().await.expect("broker");
    let client = Client::new(ClientConfig::new(&broker.bootstrap)).unwrap();
    let topic = unique("control");
    let group = unique("control-g");
    client.create_topic(&topic, 2, 1).await.unwrap();

    let mut config = ConsumerConfig::new(&broker.bootstrap, &group);
    config.set("heartbeat.interval.ms", "500").unwrap();
    let mut consumer = Consumer::new(config, Box::new(NoopListener)).unwrap();
    let addr = consumer
        .enable_control_with(ControlConfig::loopback(0))
        .await
        .unwrap();
    consumer.subscribe(&[topic.as_str()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumer.assignment().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "never assigned: {:?}",
            consumer.identity()
        );
        consumer.poll(Duration::from_millis(100)).await.unwrap();
    }
    let before = consumer.identity().generation;

    let mut agent = ControlClient::connect(addr, None, Duration::from_secs(5))
        .await
        .unwrap();
    let reply = agent
        .request(
            Op::Rejoin {
                reason: "test: lag outlier".into(),
            },
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(reply.ok, "{reply:?}");

    // The application is busy with a long batch: no poll until the group has moved on.
    let deadline = Instant::now() + Duration::from_secs(20);
    while consumer.identity().generation <= before {
        assert!(
            Instant::now() < deadline,
            "the rejoin waited for the next poll: still generation {before}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the member is still whole afterwards.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        consumer.poll(Duration::from_millis(100)).await.unwrap();
        if consumer.assignment().len() == 2 && consumer.identity().generation > before {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}", consumer.identity());
    }
    consumer.close(Duration::from_secs(10)).await.unwrap();
}

/// The fetcher reads far ahead of the application (one round trip drains the log); lag
/// measured from the fetch position said 0 while the application had hundreds of records to
/// go, so a slow member never looked backlogged to its own capacity estimate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_counts_records_fetched_but_not_yet_handed_to_the_application() {
    const RECORDS: i64 = 300;
    const BATCH: usize = 10;
    let broker = TestBroker::start().await.expect("broker");
    let client = Client::new(ClientConfig::new(&broker.bootstrap)).unwrap();
    let topic = unique("lag");
    client.create_topic(&topic, 1, 1).await.unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default()).unwrap();
    let mut acks = Vec::new();
    for i in 0..RECORDS {
        let record = ProducerRecord::new(&topic)
            .partition(0)
            .value(format!("v{i}"));
        acks.push(producer.send(record).await.unwrap());
    }
    producer.flush().await.unwrap();
    for ack in acks {
        ack.await.unwrap();
    }
    producer.close().await.unwrap();

    let mut config = ConsumerConfig::new(&broker.bootstrap, &unique("lag-g"));
    config.set("auto.offset.reset", "earliest").unwrap();
    config.set("max.poll.records", &BATCH.to_string()).unwrap();
    let mut consumer = Consumer::new(config, Box::new(NoopListener)).unwrap();
    consumer.subscribe(&[topic.as_str()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut handed = 0usize;
    while handed == 0 {
        assert!(
            Instant::now() < deadline,
            "no records: {:?}",
            consumer.identity()
        );
        handed = consumer
            .poll(Duration::from_millis(200))
            .await
            .unwrap()
            .len();
    }
    assert_eq!(handed, BATCH);
    let lag: i64 = consumer.lag().values().sum();
    assert_eq!(lag, RECORDS - BATCH as i64, "{:?}", consumer.lag());
    consumer.close(Duration::from_secs(10)).await.unwrap();
}
