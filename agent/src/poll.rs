//! One poll of the group: DescribeGroups, OffsetFetch, ListOffsets.

use std::time::Duration;

use anyhow::Context;
use lagbalance::admin::OffsetSpec;
use lagbalance::{Client, ClientConfig};

use crate::view::Snapshot;

/// A client whose operations give up within `timeout` (so one stuck poll cannot stall the
/// agent for the library's default minute).
pub fn client(bootstrap: &str, timeout: Duration) -> anyhow::Result<Client> {
    let mut cfg = ClientConfig::new(bootstrap);
    cfg.operation_timeout = timeout;
    Client::new(cfg).context("creating the Kafka client")
}

/// Take one snapshot of `group` at clock reading `at_ms`.
pub async fn snapshot(client: &Client, group: &str, at_ms: u64) -> anyhow::Result<Snapshot> {
    let desc = client
        .describe_group(group)
        .await
        .with_context(|| format!("DescribeGroups {group}"))?;
    let mut snap = Snapshot::from_description(at_ms, &desc);
    let topics = snap.topics();
    if topics.is_empty() {
        return Ok(snap);
    }
    snap.committed = client
        .offset_fetch(group, None)
        .await
        .with_context(|| format!("OffsetFetch {group}"))?;
    for t in &topics {
        match client.list_offsets(t, &[], OffsetSpec::Latest).await {
            Ok(ends) => {
                for (p, o) in ends {
                    snap.log_end.insert((t.clone(), p), o);
                }
            }
            // A topic that vanished (or a hostile member's made-up topic) must not blind us
            // to the others.
            Err(e) => tracing::warn!(topic = %t, error = %e, "ListOffsets failed"),
        }
    }
    Ok(snap)
}
