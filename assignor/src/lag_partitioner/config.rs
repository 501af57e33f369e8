//! Settings of the lag-aware partitioner: a typed struct with defaults, and
//! [`LagPartitionerConfig::from_env`] reading `LAGBALANCE_PARTITIONER_*` variables through the
//! shared parser of [`crate::settings`], as the agent reads its `LAGBALANCE_*` ones (an error
//! names the variable, the value and what is allowed).

use std::collections::BTreeMap;
use std::time::Duration;

use super::machine::MachineSettings;
use crate::settings::SettingSource;

/// One setting: its variable, default and meaning (the table in `docs/partitioner.md` lists
/// the same; a test keeps them in step).
pub struct Spec {
    pub var: &'static str,
    /// `None` = required.
    pub default: Option<&'static str>,
    pub help: &'static str,
}

pub const SPECS: &[Spec] = &[
    Spec { var: "LAGBALANCE_PARTITIONER_GROUP", default: None, help: "consumer group whose lag steers the partitioner" },
    Spec { var: "LAGBALANCE_PARTITIONER_TOPIC", default: None, help: "topic the partitioner routes (other topics keep the default partitioning)" },
    Spec { var: "LAGBALANCE_PARTITIONER_INTERVAL", default: Some("2s"), help: "lag refresh interval (100ms..=1h); each refresh is one OffsetFetch and one ListOffsets per partition leader" },
    Spec { var: "LAGBALANCE_PARTITIONER_FETCH_TIMEOUT", default: Some("1s"), help: "a refresh that takes longer is abandoned and counts as failed (10ms..=1h, at most the interval)" },
    Spec { var: "LAGBALANCE_PARTITIONER_SLOW_LAG", default: Some("1000"), help: "lag (records) above which a partition is closed (Slow); integer ≥ 1" },
    Spec { var: "LAGBALANCE_PARTITIONER_OBSERVE", default: Some("10s"), help: "least time a partition stays Slow before it is probed (OK); it must also have drained to half the threshold (0s..=1h)" },
    Spec { var: "LAGBALANCE_PARTITIONER_PROBE_SHARE", default: Some("0.1"), help: "records an OK partition receives relative to a Good one; number in (0, 1]" },
    Spec { var: "LAGBALANCE_PARTITIONER_PROBE_PERIOD", default: Some("10s"), help: "how long an OK partition is probed before it is promoted to Good or sent back to Slow (0s..=1h)" },
    Spec { var: "LAGBALANCE_PARTITIONER_MAX_CLOSED_RATIO", default: Some("0.5"), help: "most partitions (fraction of the topic) Slow or OK at once; at least one always stays Good; number in [0, 1]" },
    Spec { var: "LAGBALANCE_PARTITIONER_STALE_AFTER", default: Some("30s"), help: "when lag cannot be read, keep the last states this long, then fail open to even spread (0s..=1h)" },
    Spec { var: "LAGBALANCE_PARTITIONER_KEYED", default: Some("false"), help: "route keyed records lag-aware too (moves keys off closed partitions: breaks per-key ordering across moves); true or false" },
];

/// Validated settings.
#[derive(Clone, Debug, PartialEq)]
pub struct LagPartitionerConfig {
    pub group: String,
    pub topic: String,
    pub interval: Duration,
    pub fetch_timeout: Duration,
    pub slow_lag: u64,
    pub observe: Duration,
    pub probe_share: f64,
    pub probe_period: Duration,
    pub max_closed_ratio: f64,
    pub stale_after: Duration,
    /// Route keyed records by lag too (see `docs/partitioner.md` on ordering).
    pub route_keyed: bool,
}

/// A setting that could not be accepted (the shared settings error: it names the variable,
/// the value and what is allowed).
pub use crate::settings::SettingError as ConfigError;

impl LagPartitionerConfig {
    /// Defaults for `group` and `topic`.
    pub fn new(group: impl Into<String>, topic: impl Into<String>) -> Self {
        LagPartitionerConfig {
            group: group.into(),
            topic: topic.into(),
            interval: Duration::from_secs(2),
            fetch_timeout: Duration::from_secs(1),
            slow_lag: 1000,
            observe: Duration::from_secs(10),
            probe_share: 0.1,
            probe_period: Duration::from_secs(10),
            max_closed_ratio: 0.5,
            stale_after: Duration::from_secs(30),
            route_keyed: false,
        }
    }

    /// Read the `LAGBALANCE_PARTITIONER_*` environment variables.
    pub fn from_env() -> Result<Self, ConfigError> {
        let vars: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("LAGBALANCE_PARTITIONER_"))
            .collect();
        Self::from_vars(&vars)
    }

    /// Validate settings given as variables (unset ones take their default).
    pub fn from_vars(vars: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let src = Source { vars };
        let cfg = LagPartitionerConfig {
            group: src.required("LAGBALANCE_PARTITIONER_GROUP")?,
            topic: src.required("LAGBALANCE_PARTITIONER_TOPIC")?,
            interval: src.duration(
                "LAGBALANCE_PARTITIONER_INTERVAL",
                Duration::from_millis(100),
                HOUR,
            )?,
            fetch_timeout: src.duration(
                "LAGBALANCE_PARTITIONER_FETCH_TIMEOUT",
                Duration::from_millis(10),
                HOUR,
            )?,
            slow_lag: src.integer("LAGBALANCE_PARTITIONER_SLOW_LAG", 1, i64::MAX as u64)?,
            observe: src.duration("LAGBALANCE_PARTITIONER_OBSERVE", Duration::ZERO, HOUR)?,
            probe_share: src.number("LAGBALANCE_PARTITIONER_PROBE_SHARE", 0.0, 1.0, false)?,
            probe_period: src.duration(
                "LAGBALANCE_PARTITIONER_PROBE_PERIOD",
                Duration::ZERO,
                HOUR,
            )?,
            max_closed_ratio: src.number(
                "LAGBALANCE_PARTITIONER_MAX_CLOSED_RATIO",
                0.0,
                1.0,
                true,
            )?,
            stale_after: src.duration(
                "LAGBALANCE_PARTITIONER_STALE_AFTER",
                Duration::ZERO,
                HOUR,
            )?,
            route_keyed: src.boolean("LAGBALANCE_PARTITIONER_KEYED")?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check a config built in code the same way `from_env` checks variables.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |var: &str, value: String, allowed: &str| ConfigError {
            var: var.into(),
            value,
            allowed: allowed.into(),
        };
        if self.group.trim().is_empty() {
            return Err(err(
                "LAGBALANCE_PARTITIONER_GROUP",
                self.group.clone(),
                "required, must not be empty",
            ));
        }
        if self.topic.trim().is_empty() {
            return Err(err(
                "LAGBALANCE_PARTITIONER_TOPIC",
                self.topic.clone(),
                "required, must not be empty",
            ));
        }
        let dur = |d: Duration| format!("{d:?}");
        if self.interval < Duration::from_millis(100) || self.interval > HOUR {
            return Err(err(
                "LAGBALANCE_PARTITIONER_INTERVAL",
                dur(self.interval),
                "a duration from 100ms to 1h",
            ));
        }
        if self.fetch_timeout < Duration::from_millis(10) || self.fetch_timeout > self.interval {
            return Err(err(
                "LAGBALANCE_PARTITIONER_FETCH_TIMEOUT",
                dur(self.fetch_timeout),
                "a duration from 10ms up to LAGBALANCE_PARTITIONER_INTERVAL (one refresh at a time bounds the cost)",
            ));
        }
        if self.slow_lag == 0 || self.slow_lag > i64::MAX as u64 {
            return Err(err(
                "LAGBALANCE_PARTITIONER_SLOW_LAG",
                self.slow_lag.to_string(),
                "an integer from 1 to 9223372036854775807",
            ));
        }
        for (var, d) in [
            ("LAGBALANCE_PARTITIONER_OBSERVE", self.observe),
            ("LAGBALANCE_PARTITIONER_PROBE_PERIOD", self.probe_period),
            ("LAGBALANCE_PARTITIONER_STALE_AFTER", self.stale_after),
        ] {
            if d > HOUR {
                return Err(err(var, dur(d), "a duration from 0s to 1h"));
            }
        }
        if !(self.probe_share > 0.0 && self.probe_share <= 1.0) {
            return Err(err(
                "LAGBALANCE_PARTITIONER_PROBE_SHARE",
                self.probe_share.to_string(),
                "a number greater than 0 and at most 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.max_closed_ratio) {
            return Err(err(
                "LAGBALANCE_PARTITIONER_MAX_CLOSED_RATIO",
                self.max_closed_ratio.to_string(),
                "a number from 0 to 1",
            ));
        }
        Ok(())
    }

    /// The state machine's part of the settings.
    pub fn machine(&self) -> MachineSettings {
        MachineSettings {
            slow_lag: self.slow_lag,
            observe_ms: self.observe.as_millis().min(u64::MAX as u128) as u64,
            probe_period_ms: self.probe_period.as_millis().min(u64::MAX as u128) as u64,
            probe_share: self.probe_share,
            max_closed_ratio: self.max_closed_ratio,
            stale_after_ms: self.stale_after.as_millis().min(u64::MAX as u128) as u64,
        }
    }
}

const HOUR: Duration = Duration::from_secs(3600);

/// Durations are written as everywhere in lagbalance (one parser, [`crate::settings`]).
pub use crate::settings::parse_duration;

struct Source<'a> {
    vars: &'a BTreeMap<String, String>,
}

impl SettingSource for Source<'_> {
    type Error = ConfigError;

    fn text(&self, var: &'static str) -> String {
        self.vars
            .get(var)
            .cloned()
            .or_else(|| {
                SPECS
                    .iter()
                    .find(|s| s.var == var)
                    .and_then(|s| s.default.map(str::to_owned))
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut m: BTreeMap<String, String> = [
            ("LAGBALANCE_PARTITIONER_GROUP", "g"),
            ("LAGBALANCE_PARTITIONER_TOPIC", "t"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in pairs {
            m.insert(k.to_string(), v.to_string());
        }
        m
    }

    fn err(pairs: &[(&str, &str)]) -> ConfigError {
        LagPartitionerConfig::from_vars(&vars(pairs)).expect_err("must be rejected")
    }

    #[test]
    fn defaults_match_new_and_the_spec_table() {
        let c = LagPartitionerConfig::from_vars(&vars(&[])).unwrap();
        assert_eq!(c, LagPartitionerConfig::new("g", "t"));
        assert!(c.validate().is_ok());
        assert_eq!(c.machine(), MachineSettings::default());
    }

    #[test]
    fn bad_values_name_the_variable_the_value_and_what_is_allowed() {
        let e = err(&[("LAGBALANCE_PARTITIONER_INTERVAL", "-5s")]);
        let msg = e.to_string();
        assert!(
            msg.contains("LAGBALANCE_PARTITIONER_INTERVAL") && msg.contains("-5s"),
            "{msg}"
        );
        assert!(msg.contains("duration"), "{msg}");
        for (var, bad) in [
            ("LAGBALANCE_PARTITIONER_GROUP", " "),
            ("LAGBALANCE_PARTITIONER_INTERVAL", "50ms"),
            ("LAGBALANCE_PARTITIONER_FETCH_TIMEOUT", "soon"),
            ("LAGBALANCE_PARTITIONER_SLOW_LAG", "0"),
            ("LAGBALANCE_PARTITIONER_SLOW_LAG", "-3"),
            ("LAGBALANCE_PARTITIONER_OBSERVE", "2h"),
            ("LAGBALANCE_PARTITIONER_PROBE_SHARE", "0"),
            ("LAGBALANCE_PARTITIONER_PROBE_SHARE", "1.5"),
            ("LAGBALANCE_PARTITIONER_PROBE_SHARE", "NaN"),
            ("LAGBALANCE_PARTITIONER_MAX_CLOSED_RATIO", "-0.1"),
            ("LAGBALANCE_PARTITIONER_STALE_AFTER", "5 parsecs"),
            ("LAGBALANCE_PARTITIONER_KEYED", "maybe"),
        ] {
            assert_eq!(err(&[(var, bad)]).var, var, "{var}={bad}");
        }
        let e = err(&[("LAGBALANCE_PARTITIONER_FETCH_TIMEOUT", "3s")]);
        assert_eq!(e.var, "LAGBALANCE_PARTITIONER_FETCH_TIMEOUT");
        assert!(e.allowed.contains("INTERVAL"), "{e}");
        let missing = LagPartitionerConfig::from_vars(&BTreeMap::new()).unwrap_err();
        assert_eq!(missing.var, "LAGBALANCE_PARTITIONER_GROUP");
    }

    #[test]
    fn values_are_parsed() {
        let c = LagPartitionerConfig::from_vars(&vars(&[
            ("LAGBALANCE_PARTITIONER_INTERVAL", "500ms"),
            ("LAGBALANCE_PARTITIONER_FETCH_TIMEOUT", "250ms"),
            ("LAGBALANCE_PARTITIONER_SLOW_LAG", "200"),
            ("LAGBALANCE_PARTITIONER_PROBE_SHARE", "1"),
            ("LAGBALANCE_PARTITIONER_MAX_CLOSED_RATIO", "0"),
            ("LAGBALANCE_PARTITIONER_KEYED", "true"),
        ]))
        .unwrap();
        assert_eq!(c.interval, Duration::from_millis(500));
        assert_eq!(c.fetch_timeout, Duration::from_millis(250));
        assert_eq!(c.slow_lag, 200);
        assert_eq!(c.probe_share, 1.0);
        assert_eq!(c.max_closed_ratio, 0.0);
        assert!(c.route_keyed);
    }

    #[test]
    fn validate_catches_configs_built_in_code() {
        let mut c = LagPartitionerConfig::new("g", "t");
        c.probe_share = f64::NAN;
        assert_eq!(
            c.validate().unwrap_err().var,
            "LAGBALANCE_PARTITIONER_PROBE_SHARE"
        );
        let mut c = LagPartitionerConfig::new("g", "t");
        c.fetch_timeout = Duration::from_secs(5);
        assert_eq!(
            c.validate().unwrap_err().var,
            "LAGBALANCE_PARTITIONER_FETCH_TIMEOUT"
        );
        assert!(LagPartitionerConfig::new("", "t").validate().is_err());
    }

    #[test]
    fn docs_list_every_variable_and_default() {
        let docs = include_str!("../../../docs/partitioner.md");
        for spec in SPECS {
            assert!(
                docs.contains(&format!("`{}`", spec.var)),
                "docs/partitioner.md misses {}",
                spec.var
            );
            if let Some(d) = spec.default {
                assert!(
                    docs.contains(&format!("`{d}`")),
                    "docs/partitioner.md misses default {d} of {}",
                    spec.var
                );
            }
        }
    }
}
