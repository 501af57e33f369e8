//! One poll of the group: DescribeGroups, OffsetFetch, ListOffsets.

use std::time::Duration;

use anyhow::Context;
use lagbalance::admin::OffsetSpec;
use lagbalance::security::SecurityConfig;
use lagbalance::{Client, ClientConfig};

use crate::view::Snapshot;

/// A client whose operations give up within `timeout` (so one stuck poll cannot stall the
/// agent for the library's default minute), with the agent's TLS / SASL settings.
pub fn client(
    bootstrap: &str,
    timeout: Duration,
    security: &SecurityConfig,
) -> anyhow::Result<Client> {
    let mut cfg = ClientConfig::new(bootstrap);
    cfg.operation_timeout = timeout;
    cfg.connection.security = security.clone();
    Client::new(cfg).context("creating the Kafka client")
}

/// Most topics measured per poll.
pub const MAX_TOPICS: usize = 256;

/// Take one snapshot of `group` at clock reading `at_ms`. `extra_topics`: topics to measure
/// besides the ones DescribeGroups reveals (the own member's, from its app, for brokers that
/// hide assignments).
///
/// Committed offsets are fetched *before* the log ends, so a partition's log end is never
/// older than its committed offset. OffsetFetch names its partitions explicitly: tansu 0.6.0
/// answers the "all partitions" form (null topics) with a null array that is not valid at
/// OffsetFetch v7+.
pub async fn snapshot(
    client: &Client,
    group: &str,
    at_ms: u64,
    extra_topics: &[String],
) -> anyhow::Result<Snapshot> {
    let desc = client
        .describe_group(group)
        .await
        .with_context(|| format!("DescribeGroups {group}"))?;
    let mut snap = Snapshot::from_description(at_ms, &desc);
    if snap.members.is_empty() {
        return Ok(snap);
    }
    let mut topics = snap.topics();
    topics.extend(extra_topics.iter().cloned());
    topics.sort();
    topics.dedup();
    // Member blobs are untrusted: a member naming thousands of made-up topics must not turn
    // every interval into thousands of metadata requests.
    if topics.len() > MAX_TOPICS {
        tracing::warn!(
            topics = topics.len(),
            max = MAX_TOPICS,
            "too many topics; measuring the first ones only"
        );
        topics.truncate(MAX_TOPICS);
    }
    let mut tps: Vec<(String, i32)> = Vec::new();
    let mut known_topics = Vec::with_capacity(topics.len());
    for t in topics {
        match client.partitions(&t).await {
            Ok(parts) => {
                tps.extend(parts.iter().map(|p| (t.clone(), p.partition)));
                known_topics.push(t);
            }
            // A topic that vanished (or a hostile member's made-up topic) must not blind us
            // to the others.
            Err(e) => tracing::warn!(topic = %t, error = %e, "topic metadata failed"),
        }
    }
    if tps.is_empty() {
        return Ok(snap);
    }
    snap.committed = client
        .offset_fetch(group, Some(&tps))
        .await
        .with_context(|| format!("OffsetFetch {group}"))?;
    for t in &known_topics {
        match client.list_offsets(t, &[], OffsetSpec::Latest).await {
            Ok(ends) => {
                for (p, o) in ends {
                    snap.log_end.insert((t.clone(), p), o);
                }
            }
            Err(e) => tracing::warn!(topic = %t, error = %e, "ListOffsets failed"),
        }
    }
    Ok(snap)
}
