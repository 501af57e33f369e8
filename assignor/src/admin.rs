//! Admin operations the rest of the project needs: topics, offsets, coordinators, groups.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId,
    ListOffsetsRequest, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::cluster::Client;
use crate::error::{check_code, Error, Result};
use crate::lag::{self, LagReading};
use crate::wire::Connection;

/// Which offset ListOffsets should return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    Latest,
    /// First offset whose timestamp is ≥ this (ms since epoch).
    Timestamp(i64),
}

impl OffsetSpec {
    fn timestamp(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(t) => t,
        }
    }
}

/// The broker coordinating a consumer group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coordinator {
    pub node_id: i32,
    pub addr: String,
}

/// One member as DescribeGroups reports it; the metadata / assignment bytes are raw consumer
/// protocol blobs.
#[derive(Clone, Debug, PartialEq)]
pub struct DescribedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as DescribeGroups reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupDescription {
    pub group_id: String,
    /// `Empty`, `PreparingRebalance`, `CompletingRebalance`, `Stable` or `Dead`.
    pub state: String,
    pub protocol_type: String,
    /// The chosen assignor.
    pub protocol: String,
    pub members: Vec<DescribedMember>,
}

/// One partition's position for one group, as [`Client::topic_offsets`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub partition: i32,
    /// ListOffsets(latest). On tansu 0.6.0 the newest batch's base offset + 1
    /// (docs/tansu-quirks.md): read lag through [`PartitionOffsets::reading`], not from this.
    pub log_end: i64,
    pub committed: Option<i64>,
}

impl PartitionOffsets {
    /// The group's lag on this partition by the one lag rule ([`crate::lag`]), given the
    /// log end of the previous reading of the partition, if any.
    pub fn reading(&self, known_log_end: Option<i64>) -> LagReading {
        lag::read(Some(self.log_end), self.committed, known_log_end)
    }
}

/// Offsets per (topic, partition).
pub type OffsetMap = BTreeMap<(String, i32), i64>;

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_owned()))
}

/// The error code of one partition in an answer: `Ok` for none, else the broker error,
/// named by `what` and the partition (`commit g t/3`).
fn check_partition_code(what: &str, topic: &TopicName, partition: i32, code: i16) -> Result<()> {
    check_code(|| format!("{what} {}/{partition}", topic.0.as_str()), code)
}

impl Client {
    /// Create a topic and wait until the metadata shows all its partitions with leaders.
    pub async fn create_topic(&self, name: &str, partitions: i32, replication: i16) -> Result<()> {
        self.retry(&format!("create topic {name}"), || async {
            let conn = self.any_broker().await?;
            let (_, resp) = self
                .send(&conn, ApiKey::CreateTopics, |_| {
                    let mut req = CreateTopicsRequest::default();
                    req.timeout_ms = 30_000;
                    req.topics = vec![CreatableTopic::default()
                        .with_name(topic_name(name))
                        .with_num_partitions(partitions)
                        .with_replication_factor(replication)];
                    req
                })
                .await?;
            let result = resp.topics.first().ok_or_else(|| {
                Error::malformed("CreateTopics response", "no result for the topic")
            })?;
            check_code(|| format!("create topic {name}"), result.error_code)
        })
        .await?;
        self.retry(&format!("metadata of new topic {name}"), || async {
            self.refresh_metadata(&[name.to_owned()]).await?;
            match self.cached_partitions(name) {
                Some(p) if p.len() == partitions as usize && p.iter().all(|p| p.leader >= 0) => {
                    Ok(())
                }
                _ => Err(Error::UnknownTopicOrPartition {
                    topic: name.to_owned(),
                    partition: -1,
                }),
            }
        })
        .await
    }

    /// Offsets of `partitions` of `topic` (all partitions if empty) by `spec`.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
    ) -> Result<BTreeMap<i32, i64>> {
        self.retry(&format!("list offsets of {topic}"), || async {
            let wanted: Vec<i32> = if partitions.is_empty() {
                self.partitions(topic)
                    .await?
                    .iter()
                    .map(|p| p.partition)
                    .collect()
            } else {
                partitions.to_vec()
            };
            let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
            for p in wanted {
                by_leader
                    .entry(self.leader(topic, p).await?)
                    .or_default()
                    .push(p);
            }
            let mut out = BTreeMap::new();
            for (leader, parts) in by_leader {
                let conn = self.broker(leader).await?;
                out.extend(list_offsets_on(self, &conn, topic, &parts, spec).await?);
            }
            Ok(out)
        })
        .await
    }

    /// The coordinator of `group`.
    pub async fn find_coordinator(&self, group: &str) -> Result<Coordinator> {
        self.retry(&format!("find coordinator of {group}"), || async {
            let conn = self.any_broker().await?;
            let (_, resp) = self
                .send(&conn, ApiKey::FindCoordinator, |_| {
                    FindCoordinatorRequest::default()
                        .with_key(StrBytes::from_string(group.to_owned()))
                        .with_key_type(0)
                })
                .await?;
            check_code(|| format!("find coordinator of {group}"), resp.error_code)?;
            if resp.node_id.0 < 0 || resp.port <= 0 {
                return Err(Error::broker(
                    format!("find coordinator of {group}"),
                    ResponseError::CoordinatorNotAvailable.code(),
                ));
            }
            Ok(Coordinator {
                node_id: resp.node_id.0,
                addr: format!("{}:{}", resp.host.as_str(), resp.port),
            })
        })
        .await
    }

    /// A connection to the coordinator of `group`.
    pub async fn coordinator_connection(&self, group: &str) -> Result<Arc<Connection>> {
        let c = self.find_coordinator(group).await?;
        self.connection(&c.addr).await
    }

    /// Committed offsets of `group` for `partitions` (every committed partition if `None`).
    /// Partitions without a commit are left out.
    pub async fn offset_fetch(
        &self,
        group: &str,
        partitions: Option<&[(String, i32)]>,
    ) -> Result<OffsetMap> {
        self.retry(&format!("fetch offsets of {group}"), || async {
            let conn = self.coordinator_connection(group).await?;
            let (_, resp) = self
                .send(&conn, ApiKey::OffsetFetch, |_| {
                    let mut req = OffsetFetchRequest::default();
                    req.group_id = GroupId(StrBytes::from_string(group.to_owned()));
                    req.topics = partitions.map(|parts| {
                        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
                        for (t, p) in parts {
                            by_topic.entry(t).or_default().push(*p);
                        }
                        by_topic
                            .into_iter()
                            .map(|(t, ps)| {
                                OffsetFetchRequestTopic::default()
                                    .with_name(topic_name(t))
                                    .with_partition_indexes(ps)
                            })
                            .collect()
                    });
                    req
                })
                .await?;
            check_code(|| format!("fetch offsets of {group}"), resp.error_code)?;
            let what = format!("fetch offset of {group}");
            let mut out = OffsetMap::new();
            for t in &resp.topics {
                for p in &t.partitions {
                    check_partition_code(&what, &t.name, p.partition_index, p.error_code)?;
                    if let Some(o) = lag::offset(p.committed_offset) {
                        out.insert((t.name.0.to_string(), p.partition_index), o);
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Commit `offsets` for `group` as member `member_id` of `generation` (-1 / "" for a
    /// commit outside the group protocol). Not retried: a generation error must reach the
    /// group logic unchanged.
    pub async fn offset_commit(
        &self,
        group: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        offsets: &OffsetMap,
    ) -> Result<()> {
        let conn = self.coordinator_connection(group).await?;
        let (_, resp) = self
            .send(&conn, ApiKey::OffsetCommit, |version| {
                let mut req = OffsetCommitRequest::default();
                req.group_id = GroupId(StrBytes::from_string(group.to_owned()));
                req.generation_id_or_member_epoch = generation;
                req.member_id = StrBytes::from_string(member_id.to_owned());
                if version >= 7 {
                    req.group_instance_id = instance_id.map(|s| StrBytes::from_string(s.into()));
                }
                if (2..=4).contains(&version) {
                    req.retention_time_ms = -1;
                }
                let mut by_topic: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> =
                    BTreeMap::new();
                for ((t, p), o) in offsets {
                    by_topic.entry(t).or_default().push(
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(*p)
                            .with_committed_offset(*o)
                            .with_committed_leader_epoch(-1),
                    );
                }
                req.topics = by_topic
                    .into_iter()
                    .map(|(t, parts)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(topic_name(t))
                            .with_partitions(parts)
                    })
                    .collect();
                req
            })
            .await?;
        let what = format!("commit {group}");
        for t in &resp.topics {
            for p in &t.partitions {
                check_partition_code(&what, &t.name, p.partition_index, p.error_code)?;
            }
        }
        Ok(())
    }

    /// Committed offset and log end of every partition of `topic` for `group`, in partition
    /// order: one OffsetFetch (naming the partitions: tansu 0.6.0 cannot answer the "all"
    /// form) and one ListOffsets per partition leader. Committed offsets are read first, so a
    /// log end is never older than the committed offset beside it. `committed` is `None` for a
    /// partition the group never committed.
    pub async fn topic_offsets(&self, group: &str, topic: &str) -> Result<Vec<PartitionOffsets>> {
        let partitions: Vec<i32> = self
            .partitions(topic)
            .await?
            .iter()
            .map(|p| p.partition)
            .collect();
        let tps: Vec<(String, i32)> = partitions.iter().map(|p| (topic.to_owned(), *p)).collect();
        let committed = self.offset_fetch(group, Some(&tps)).await?;
        let ends = self
            .list_offsets(topic, &partitions, OffsetSpec::Latest)
            .await?;
        let mut out: Vec<PartitionOffsets> = partitions
            .iter()
            .map(|&p| PartitionOffsets {
                partition: p,
                log_end: ends.get(&p).copied().unwrap_or(0),
                committed: committed.get(&(topic.to_owned(), p)).copied(),
            })
            .collect();
        out.sort_by_key(|o| o.partition);
        Ok(out)
    }

    /// Describe `group`: state, chosen protocol and members with their raw blobs.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        self.retry(&format!("describe group {group}"), || async {
            let conn = self.coordinator_connection(group).await?;
            let (_, resp) = self
                .send(&conn, ApiKey::DescribeGroups, |_| {
                    DescribeGroupsRequest::default()
                        .with_groups(vec![GroupId(StrBytes::from_string(group.to_owned()))])
                })
                .await?;
            let g = resp.groups.into_iter().next().ok_or_else(|| {
                Error::malformed("DescribeGroups response", "no entry for the group")
            })?;
            check_code(|| format!("describe group {group}"), g.error_code)?;
            Ok(GroupDescription {
                group_id: g.group_id.0.to_string(),
                state: g.group_state.to_string(),
                protocol_type: g.protocol_type.to_string(),
                protocol: g.protocol_data.to_string(),
                members: g
                    .members
                    .into_iter()
                    .map(|m| DescribedMember {
                        member_id: m.member_id.to_string(),
                        instance_id: m.group_instance_id.map(|s| s.to_string()),
                        client_id: m.client_id.to_string(),
                        client_host: m.client_host.to_string(),
                        metadata: m.member_metadata,
                        assignment: m.member_assignment,
                    })
                    .collect(),
            })
        })
        .await
    }
}

async fn list_offsets_on(
    client: &Client,
    conn: &Connection,
    topic: &str,
    partitions: &[i32],
    spec: OffsetSpec,
) -> Result<HashMap<i32, i64>> {
    let (_, resp) = client
        .send(conn, ApiKey::ListOffsets, |_| {
            let mut req = ListOffsetsRequest::default();
            req.replica_id = BrokerId(-1);
            req.topics = vec![ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(*p)
                                .with_current_leader_epoch(-1)
                                .with_timestamp(spec.timestamp())
                        })
                        .collect(),
                )];
            req
        })
        .await?;
    let mut out = HashMap::new();
    for t in &resp.topics {
        for p in &t.partitions {
            check_partition_code("list offsets", &t.name, p.partition_index, p.error_code)?;
            out.insert(p.partition_index, p.offset);
        }
    }
    for p in partitions {
        if !out.contains_key(p) {
            return Err(Error::malformed(
                "ListOffsets response",
                format!("no answer for {topic}/{p}"),
            ));
        }
    }
    Ok(out)
}
