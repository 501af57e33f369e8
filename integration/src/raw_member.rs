//! A group member driven by hand over the raw protocol (JoinGroup, SyncGroup, Heartbeat), for
//! tests and benchmarks that must control every step: who joins when, which plan the leader
//! syncs, and that members stay alive while no consumer of ours runs. Also fills a topic with
//! a known number of records per partition, so lag is known exactly.

use std::time::Duration;

use anyhow::{Context, Result};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    ApiKey, GroupId, HeartbeatRequest, JoinGroupRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;
use lagbalance::group::codec::{encode_assignment, encode_subscription, Assignment, Subscription};
use lagbalance::producer::{Producer, ProducerConfig};
use lagbalance::records::ProducerRecord;
use lagbalance::{Client, NamedPartition};
use tokio::task::JoinHandle;

/// The protocol every hand-driven member offers.
const PROTOCOL: &str = "range";

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_owned())
}

/// What a JoinGroup answered: its error code as the broker sent it, so that callers can test
/// codes such as MEMBER_ID_REQUIRED (79) themselves.
#[derive(Clone, Debug)]
pub struct Joined {
    pub error: i16,
    pub generation: i32,
    pub member_id: String,
}

/// One JoinGroup for `member_id` (empty: a new member) subscribing to `topic`.
pub async fn join(client: &Client, group: &str, topic: &str, member_id: &str) -> Result<Joined> {
    let subscription = encode_subscription(&Subscription {
        topics: vec![topic.into()],
        generation: -1,
        ..Subscription::default()
    })?;
    let conn = client.coordinator_connection(group).await?;
    let (_, r) = client
        .send(&conn, ApiKey::JoinGroup, |_| {
            JoinGroupRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_session_timeout_ms(30_000)
                .with_rebalance_timeout_ms(30_000)
                .with_member_id(s(member_id))
                .with_protocol_type(s("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(s(PROTOCOL))
                    .with_metadata(subscription.clone())])
        })
        .await?;
    Ok(Joined {
        error: r.error_code,
        generation: r.generation_id,
        member_id: r.member_id.to_string(),
    })
}

/// One SyncGroup; `plan` is the leader's assignment (empty for a follower). Fails unless the
/// broker answers without error.
pub async fn sync(
    client: &Client,
    group: &str,
    member_id: &str,
    generation: i32,
    plan: &[(String, Vec<NamedPartition>)],
) -> Result<()> {
    let assignments = plan
        .iter()
        .map(|(member, partitions)| {
            let blob = encode_assignment(&Assignment {
                partitions: partitions.clone(),
                user_data: None,
            })?;
            Ok(SyncGroupRequestAssignment::default()
                .with_member_id(s(member))
                .with_assignment(blob))
        })
        .collect::<Result<Vec<_>>>()?;
    let conn = client.coordinator_connection(group).await?;
    let (_, r) = client
        .send(&conn, ApiKey::SyncGroup, |_| {
            SyncGroupRequest::default()
                .with_group_id(GroupId(s(group)))
                .with_generation_id(generation)
                .with_member_id(s(member_id))
                .with_protocol_type(Some(s("consumer")))
                .with_protocol_name(Some(s(PROTOCOL)))
                .with_assignments(assignments.clone())
        })
        .await?;
    anyhow::ensure!(r.error_code == 0, "SyncGroup error {}", r.error_code);
    Ok(())
}

/// Join `group` as its only member and take every partition of `topic`; returns the member
/// id and generation. A fresh broker answers COORDINATOR_LOAD_IN_PROGRESS / _NOT_AVAILABLE /
/// NOT_COORDINATOR (14, 15, 16) until its coordinator is loaded: those are retried for 30 s.
pub async fn join_alone(
    client: &Client,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<(String, i32)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut member_id = String::new();
    loop {
        let joined = join(client, group, topic, &member_id).await?;
        member_id = joined.member_id;
        match joined.error {
            0 => {
                let all = (0..partitions).map(|p| (topic.to_owned(), p)).collect();
                let plan = [(member_id.clone(), all)];
                sync(client, group, &member_id, joined.generation, &plan).await?;
                return Ok((member_id, joined.generation));
            }
            79 => continue, // MEMBER_ID_REQUIRED: rejoin with the id just given
            14..=16 if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            code => anyhow::bail!("JoinGroup error {code}"),
        }
    }
}

/// Heartbeats for `members` of `generation` every `every`, until the handle is aborted.
pub fn keep_alive(
    client: Client,
    group: String,
    generation: i32,
    members: Vec<String>,
    every: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            for member in &members {
                if let Ok(conn) = client.coordinator_connection(&group).await {
                    let _ = client
                        .send(&conn, ApiKey::Heartbeat, |_| {
                            HeartbeatRequest::default()
                                .with_group_id(GroupId(s(&group)))
                                .with_generation_id(generation)
                                .with_member_id(s(member))
                        })
                        .await;
                }
            }
        }
    })
}

/// `per_partition` records on each of `topic`'s `partitions`, one record per batch so that
/// ListOffsets reports exact log ends on tansu too (it answers the newest batch's base offset
/// + 1, see `docs/tansu-quirks.md`).
pub async fn fill(client: &Client, topic: &str, partitions: i32, per_partition: u32) -> Result<()> {
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            batch_size: 1,
            ..Default::default()
        },
    )?;
    let mut pending = Vec::new();
    for p in 0..partitions {
        for i in 0..per_partition {
            let record = ProducerRecord::new(topic)
                .partition(p)
                .value(i.to_be_bytes().to_vec());
            pending.push(producer.send(record).await?);
        }
    }
    producer.flush().await?;
    for delivery in pending {
        delivery.await.context("record delivery")?;
    }
    Ok(())
}
