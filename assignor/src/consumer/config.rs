//! Consumer settings: [`ConsumerConfig`], its Kafka-named properties, and the factory that
//! turns an assignor's protocol name into a built-in [`Assignor`].

use std::time::Duration;

use lagbalance_assign::{Assignor, CooperativeStickyAssignor, LagBalanceAssignor, RangeAssignor};

use crate::cluster::ClientConfig;
use crate::error::{Error, Result};
use crate::fetcher::{FetchConfig, OffsetReset};
use crate::group::MemberConfig;

/// Consumer settings, named after the Java client's (see [`ConsumerConfig::set`]).
#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    pub client: ClientConfig,
    pub group: MemberConfig,
    pub fetch: FetchConfig,
    /// `partition.assignment.strategy`, in preference order.
    pub assignors: Vec<String>,
    /// `auto.commit.interval.ms`.
    pub auto_commit_interval: Duration,
    /// `max.poll.records`.
    pub max_poll_records: usize,
}

impl ConsumerConfig {
    /// Defaults for `bootstrap.servers` and `group.id`; offers `[lagbalance,
    /// cooperative-sticky]`, so a group with older members still works (it runs
    /// cooperative-sticky until every member offers lagbalance).
    pub fn new(bootstrap: &str, group_id: &str) -> Self {
        ConsumerConfig {
            client: ClientConfig::new(bootstrap),
            group: MemberConfig {
                group_id: group_id.to_owned(),
                ..Default::default()
            },
            fetch: FetchConfig::default(),
            assignors: vec!["lagbalance".into(), "cooperative-sticky".into()],
            auto_commit_interval: Duration::from_secs(5),
            max_poll_records: 500,
        }
    }

    /// Set one property by its Kafka name.
    pub fn set(&mut self, key: &str, value: &str) -> Result<&mut Self> {
        let ms = |v: &str| -> Result<u64> {
            v.parse::<u64>().map_err(|_| {
                Error::Config(format!("{key} = '{v}' is not a number of milliseconds"))
            })
        };
        match key {
            "bootstrap.servers" => self.client.bootstrap = ClientConfig::new(value).bootstrap,
            "client.id" => self.client.connection.client_id = value.to_owned(),
            "group.id" => self.group.group_id = value.to_owned(),
            "group.instance.id" => {
                self.group.instance_id = (!value.is_empty()).then(|| value.to_owned())
            }
            "client.rack" => self.group.rack = (!value.is_empty()).then(|| value.to_owned()),
            "session.timeout.ms" => self.group.session_timeout_ms = ms(value)?,
            "heartbeat.interval.ms" => self.group.heartbeat_interval_ms = ms(value)?,
            "max.poll.interval.ms" => self.group.max_poll_interval_ms = ms(value)?,
            "retry.backoff.ms" => {
                self.group.retry_backoff_ms = ms(value)?;
                self.client.retry_backoff = Duration::from_millis(ms(value)?);
            }
            "retry.backoff.max.ms" => {
                self.group.retry_backoff_max_ms = ms(value)?;
                self.client.retry_backoff_max = Duration::from_millis(ms(value)?);
            }
            "request.timeout.ms" => {
                self.client.connection.request_timeout = Duration::from_millis(ms(value)?)
            }
            "auto.commit.interval.ms" => {
                self.auto_commit_interval = Duration::from_millis(ms(value)?)
            }
            "fetch.max.wait.ms" => self.fetch.max_wait = Duration::from_millis(ms(value)?),
            "enable.auto.commit" => self.group.auto_commit = boolean(key, value)?,
            "lagbalance.capacity.rejoin" => self.group.capacity_rejoin = boolean(key, value)?,
            "auto.offset.reset" => self.fetch.auto_offset_reset = OffsetReset::parse(value)?,
            "max.poll.records" => {
                self.max_poll_records = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| Error::Config(format!("{key} must be a positive number")))?
            }
            "partition.assignment.strategy" => {
                let names: Vec<String> = value
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
                for n in &names {
                    make_assignor(n)?;
                }
                if names.is_empty() {
                    return Err(Error::Config(format!("{key} names no assignor")));
                }
                self.assignors = names;
            }
            k if crate::security::is_security_key(k) => {
                self.client.connection.security.set(k, value)?;
            }
            other => {
                return Err(Error::Config(format!(
                    "unknown consumer property '{other}'"
                )))
            }
        }
        Ok(self)
    }
}

/// Build a built-in assignor by protocol name.
pub fn make_assignor(name: &str) -> Result<Box<dyn Assignor>> {
    Ok(match name {
        "lagbalance" => Box::new(LagBalanceAssignor::default()),
        "cooperative-sticky" => Box::new(CooperativeStickyAssignor),
        "range" => Box::new(RangeAssignor),
        other => {
            return Err(Error::Config(format!(
                "unknown assignor '{other}' (built in: lagbalance, cooperative-sticky, range)"
            )))
        }
    })
}

/// A `true` / `false` property.
fn boolean(key: &str, value: &str) -> Result<bool> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::Config(format!(
            "{key} must be true or false, not '{value}'"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_rejoin_is_on_by_default_and_a_boolean_property() {
        let mut c = ConsumerConfig::new("127.0.0.1:9092", "g");
        assert!(c.group.capacity_rejoin);
        c.set("lagbalance.capacity.rejoin", "false").unwrap();
        assert!(!c.group.capacity_rejoin);
        let e = c.set("lagbalance.capacity.rejoin", "no").unwrap_err();
        assert!(e.to_string().contains("must be true or false"), "{e}");
    }
}
