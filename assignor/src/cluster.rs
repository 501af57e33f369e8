//! The cluster client: bootstrap, metadata cache, one reused connection per broker, and retries
//! with backoff under a total deadline.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiKey, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::ResponseError;
use tokio::time::Instant;

use crate::error::{BrokerCode, Error, Result};
use crate::wire::{Connection, ConnectionConfig};

/// Settings shared by every component built on a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `bootstrap.servers`: `host:port` entries.
    pub bootstrap: Vec<String>,
    pub connection: ConnectionConfig,
    /// First pause between retries (`retry.backoff.ms`); doubles up to `retry_backoff_max`.
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    /// Total time an operation may take across its retries (like `default.api.timeout.ms`).
    pub operation_timeout: Duration,
}

impl ClientConfig {
    pub fn new(bootstrap: impl Into<String>) -> Self {
        ClientConfig {
            bootstrap: bootstrap
                .into()
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            connection: ConnectionConfig::default(),
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            operation_timeout: Duration::from_secs(60),
        }
    }

    /// Set a client-level property by its Kafka name — the security settings
    /// (`security.protocol`, `ssl.*`, `sasl.*`, see [`crate::security`]) that the producer and
    /// admin share with the consumer. `Ok(false)` if `key` is not one of them.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool> {
        self.connection.security.set(key, value)
    }
}

/// Which connection to a broker a request travels on.
///
/// A broker answers the requests of one connection in order, so a request that the broker
/// holds (a Fetch long poll, a JoinGroup waiting for the group) would stall everything behind
/// it. Like Java's client, group coordination and fetching get connections of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// Metadata, admin, produce.
    Default,
    /// JoinGroup, SyncGroup, LeaveGroup.
    Group,
    /// Heartbeat: never queued behind a JoinGroup the coordinator is holding (a broker answers
    /// one connection's requests in order), so the member stays alive while it joins.
    Heartbeat,
    /// Fetch long polls.
    Fetch,
}

/// One partition as the metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
}

/// Cached cluster metadata.
#[derive(Clone, Debug, Default)]
pub struct Metadata {
    pub brokers: HashMap<i32, String>,
    /// Topic → partitions sorted by id (only topics without a topic-level error).
    pub topics: HashMap<String, Vec<PartitionInfo>>,
}

/// A handle to the cluster. Cheap to clone; all clones share connections and metadata.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// A broker's connection, created on first use and replaced when it dies.
type ConnectionSlot = Arc<tokio::sync::Mutex<Option<Arc<Connection>>>>;

struct Inner {
    config: ClientConfig,
    metadata: RwLock<Metadata>,
    /// One slot per broker address; the async mutex serialises connecting to that address only.
    connections: std::sync::Mutex<HashMap<(String, Lane), ConnectionSlot>>,
}

impl Client {
    pub fn new(config: ClientConfig) -> Result<Client> {
        if config.bootstrap.is_empty() {
            return Err(Error::Config("bootstrap.servers is empty".into()));
        }
        config.connection.security.validate()?;
        Ok(Client {
            inner: Arc::new(Inner {
                config,
                metadata: RwLock::new(Metadata::default()),
                connections: Default::default(),
            }),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// A live connection to `addr`, reusing the existing one.
    pub async fn connection(&self, addr: &str) -> Result<Arc<Connection>> {
        self.connection_on(addr, Lane::Default).await
    }

    /// A live connection to `addr` on `lane`, reusing the existing one.
    pub async fn connection_on(&self, addr: &str, lane: Lane) -> Result<Arc<Connection>> {
        let slot = {
            let mut map = self.inner.connections.lock().map_err(|_| Error::Shutdown)?;
            map.entry((addr.to_owned(), lane)).or_default().clone()
        };
        let mut guard = slot.lock().await;
        if let Some(conn) = guard.as_ref() {
            if !conn.is_closed() {
                return Ok(conn.clone());
            }
        }
        let conn = Arc::new(Connection::connect(addr, self.inner.config.connection.clone()).await?);
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// A connection to broker `node_id`, refreshing metadata if the broker is unknown.
    pub async fn broker(&self, node_id: i32) -> Result<Arc<Connection>> {
        self.broker_on(node_id, Lane::Default).await
    }

    /// A connection to broker `node_id` on `lane`.
    pub async fn broker_on(&self, node_id: i32, lane: Lane) -> Result<Arc<Connection>> {
        let addr = self.broker_addr(node_id);
        let addr = match addr {
            Some(a) => a,
            None => {
                self.refresh_metadata(&[]).await?;
                self.broker_addr(node_id).ok_or_else(|| {
                    Error::NoBrokerAvailable(format!("broker {node_id} is not in the metadata"))
                })?
            }
        };
        self.connection_on(&addr, lane).await
    }

    fn broker_addr(&self, node_id: i32) -> Option<String> {
        self.inner
            .metadata
            .read()
            .ok()?
            .brokers
            .get(&node_id)
            .cloned()
    }

    /// Any reachable broker: known brokers first, then the bootstrap list.
    pub async fn any_broker(&self) -> Result<Arc<Connection>> {
        let mut candidates: Vec<String> = self
            .inner
            .metadata
            .read()
            .map(|m| {
                let mut v: Vec<_> = m.brokers.iter().map(|(id, a)| (*id, a.clone())).collect();
                v.sort();
                v.into_iter().map(|(_, a)| a).collect()
            })
            .unwrap_or_default();
        candidates.extend(self.inner.config.bootstrap.iter().cloned());
        let mut last = None;
        for addr in candidates {
            match self.connection(&addr).await {
                Ok(c) => return Ok(c),
                // Wrong credentials or an untrusted certificate: every broker will say the
                // same, and retrying cannot help.
                Err(e @ (Error::Authentication { .. } | Error::Tls { .. } | Error::Config(_))) => {
                    return Err(e)
                }
                Err(e) => last = Some(format!("{addr}: {e}")),
            }
        }
        Err(Error::NoBrokerAvailable(
            last.unwrap_or_else(|| "no address".into()),
        ))
    }

    /// Send a request to `conn` at the negotiated version, building it for that version.
    pub async fn send<R: Request>(
        &self,
        conn: &Connection,
        api: ApiKey,
        build: impl FnOnce(i16) -> R,
    ) -> Result<(i16, R::Response)> {
        let version = conn.version(api)?;
        let req = build(version);
        let resp = conn.send(&req, version).await?;
        Ok((version, resp))
    }

    /// Fetch metadata for `topics` (all topics if empty) and merge it into the cache.
    pub async fn refresh_metadata(&self, topics: &[String]) -> Result<Metadata> {
        let conn = self.any_broker().await?;
        let (_, resp) = self
            .send(&conn, ApiKey::Metadata, |version| {
                let mut req = MetadataRequest::default();
                req.topics = if topics.is_empty() {
                    None
                } else {
                    Some(
                        topics
                            .iter()
                            .map(|t| {
                                MetadataRequestTopic::default()
                                    .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                            })
                            .collect(),
                    )
                };
                if version >= 4 {
                    req.allow_auto_topic_creation = false;
                }
                req
            })
            .await?;
        // A topic we named but may not describe is reported by name rather than as "unknown"
        // (which is retriable, so it would be retried until the deadline).
        if let Some(t) = resp.topics.iter().find(|t| {
            !topics.is_empty()
                && BrokerCode(t.error_code).is(ResponseError::TopicAuthorizationFailed)
        }) {
            let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            return Err(Error::broker(
                format!("metadata for topic '{name}' (the principal needs the Describe ACL)"),
                t.error_code,
            ));
        }
        let fresh = metadata_from_response(&resp);
        let mut cache = self.inner.metadata.write().map_err(|_| Error::Shutdown)?;
        cache.brokers.extend(fresh.brokers.clone());
        if topics.is_empty() {
            cache.topics = fresh.topics.clone();
        } else {
            for t in topics {
                match fresh.topics.get(t) {
                    Some(p) => cache.topics.insert(t.clone(), p.clone()),
                    None => cache.topics.remove(t),
                };
            }
        }
        Ok(cache.clone())
    }

    /// Partitions of `topic` from the cache, refreshing once if unknown.
    pub async fn partitions(&self, topic: &str) -> Result<Vec<PartitionInfo>> {
        if let Some(p) = self.cached_partitions(topic) {
            return Ok(p);
        }
        self.refresh_metadata(&[topic.to_owned()]).await?;
        self.cached_partitions(topic)
            .ok_or_else(|| Error::UnknownTopicOrPartition {
                topic: topic.to_owned(),
                partition: -1,
            })
    }

    /// Number of partitions of `topic` from the cache, without copying the partition list.
    pub fn cached_partition_count(&self, topic: &str) -> Option<usize> {
        self.inner
            .metadata
            .read()
            .ok()?
            .topics
            .get(topic)
            .map(Vec::len)
    }

    pub fn cached_partitions(&self, topic: &str) -> Option<Vec<PartitionInfo>> {
        self.inner.metadata.read().ok()?.topics.get(topic).cloned()
    }

    /// Leader of `topic`/`partition` from the cache, refreshing once if unknown.
    pub async fn leader(&self, topic: &str, partition: i32) -> Result<i32> {
        let find = |parts: &[PartitionInfo]| {
            parts
                .iter()
                .find(|p| p.partition == partition && p.leader >= 0)
                .map(|p| p.leader)
        };
        if let Some(l) = self.cached_partitions(topic).and_then(|p| find(&p)) {
            return Ok(l);
        }
        self.refresh_metadata(&[topic.to_owned()]).await?;
        self.cached_partitions(topic)
            .and_then(|p| find(&p))
            .ok_or_else(|| Error::UnknownTopicOrPartition {
                topic: topic.to_owned(),
                partition,
            })
    }

    /// Forget cached metadata for `topic` so the next lookup asks the cluster again.
    pub fn invalidate(&self, topic: &str) {
        if let Ok(mut m) = self.inner.metadata.write() {
            m.topics.remove(topic);
        }
    }

    /// Run `op` until it succeeds, fails with a non-retriable error, or the operation deadline
    /// passes. Between attempts: exponential backoff; stale-metadata errors clear the cache.
    pub async fn retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let cfg = &self.inner.config;
        let started = Instant::now();
        let deadline = started + cfg.operation_timeout;
        let mut backoff = cfg.retry_backoff;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let last = match tokio::time::timeout(remaining, op()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) if e.is_retriable() => e,
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(Error::Timeout {
                        what: what.to_owned(),
                        after: started.elapsed(),
                    })
                }
            };
            if invalidates_metadata(&last) {
                if let Ok(mut m) = self.inner.metadata.write() {
                    m.topics.clear();
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Error::Timeout {
                    what: format!("{what} (last error: {last})"),
                    after: started.elapsed(),
                });
            }
            tracing::debug!(what, error = %last, ?backoff, "retrying");
            tokio::time::sleep(backoff.min(remaining)).await;
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("{what} (last error: {last})"),
                    after: started.elapsed(),
                });
            }
            backoff = (backoff * 2).min(cfg.retry_backoff_max);
        }
    }
}

/// Errors after which the cached leaders may be wrong.
fn invalidates_metadata(e: &Error) -> bool {
    match e {
        Error::Io { .. }
        | Error::ConnectionClosed { .. }
        | Error::UnknownTopicOrPartition { .. } => true,
        Error::Broker { code, .. } => {
            code.is(ResponseError::NotLeaderOrFollower)
                || code.is(ResponseError::UnknownTopicOrPartition)
                || code.is(ResponseError::LeaderNotAvailable)
                || code.is(ResponseError::FencedLeaderEpoch)
                || code.is(ResponseError::UnknownLeaderEpoch)
        }
        _ => false,
    }
}

fn metadata_from_response(resp: &MetadataResponse) -> Metadata {
    let brokers = resp
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port)))
        .collect();
    let topics = resp
        .topics
        .iter()
        .filter(|t| t.error_code == 0)
        .filter_map(|t| {
            let name = t.name.as_ref()?.0.to_string();
            let mut parts: Vec<PartitionInfo> = t
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    partition: p.partition_index,
                    leader: if p.error_code == 0 || p.leader_id.0 >= 0 {
                        p.leader_id.0
                    } else {
                        -1
                    },
                    leader_epoch: p.leader_epoch,
                })
                .collect();
            parts.sort_by_key(|p| p.partition);
            Some((name, parts))
        })
        .collect();
    Metadata { brokers, topics }
}
