//! Reading a topic back from its start: how the tests and benchmarks that check what reached
//! the broker consume it.

use std::time::Duration;

use lagbalance::fetcher::{FetchConfig, Fetcher, OffsetReset};
use lagbalance::Client;

/// A fetcher over `client` that starts a partition with no position at its earliest offset and
/// waits up to `max_wait` per fetch for records to arrive; otherwise the default settings.
pub fn from_earliest(client: &Client, max_wait: Duration) -> Fetcher {
    Fetcher::new(
        client.clone(),
        FetchConfig {
            auto_offset_reset: OffsetReset::Earliest,
            max_wait,
            ..Default::default()
        },
    )
}
