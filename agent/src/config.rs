//! Settings: every one an environment variable `LAGBALANCE_*` with a matching `--flag`
//! (the flag wins). Pure: parsing takes the environment and arguments as values. Values are
//! read by the shared parser of `lagbalance::settings`, the partitioner's too.
//!
//! A bad value is an error naming the variable, the flag, the value and what is allowed; the
//! binary prints it and exits with code 2.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use lagbalance::security::SecurityConfig;
use lagbalance::settings::{SettingError, SettingSource};

/// What the agent asks its consumer to do when its member is the elected outlier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Voluntary unsubscribe: LeaveGroup, cool down, rejoin.
    Leave,
    /// Rejoin with fresh capacity and lag data (triggers a cooperative rebalance).
    Rejoin,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Leave => "leave",
            Mode::Rejoin => "rejoin",
        })
    }
}

/// One setting: its variable, flag, default and meaning (the docs table is generated from
/// these by `lagbalance-agent --help`).
pub struct Spec {
    pub var: &'static str,
    pub flag: &'static str,
    /// `None` = required.
    pub default: Option<&'static str>,
    pub help: &'static str,
}

pub const SPECS: &[Spec] = &[
    Spec { var: "LAGBALANCE_BOOTSTRAP", flag: "--bootstrap", default: None, help: "Kafka bootstrap servers, host:port[,host:port…]" },
    Spec { var: "LAGBALANCE_SECURITY_PROTOCOL", flag: "--security-protocol", default: Some("PLAINTEXT"), help: "Kafka security.protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (docs/security.md)" },
    Spec { var: "LAGBALANCE_SSL_CA_LOCATION", flag: "--ssl-ca-location", default: Some(""), help: "PEM file of the CA(s) that signed the brokers' certificates; empty = the system trust store" },
    Spec { var: "LAGBALANCE_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM", flag: "--ssl-endpoint-identification-algorithm", default: Some("https"), help: "https (the certificate must name the broker host) or none (skip only the name check)" },
    Spec { var: "LAGBALANCE_SSL_CERTIFICATE_LOCATION", flag: "--ssl-certificate-location", default: Some(""), help: "PEM client certificate for mutual TLS (with LAGBALANCE_SSL_KEY_LOCATION)" },
    Spec { var: "LAGBALANCE_SSL_KEY_LOCATION", flag: "--ssl-key-location", default: Some(""), help: "PEM private key of the client certificate, unencrypted" },
    Spec { var: "LAGBALANCE_SASL_MECHANISM", flag: "--sasl-mechanism", default: Some("PLAIN"), help: "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512" },
    Spec { var: "LAGBALANCE_SASL_USERNAME", flag: "--sasl-username", default: Some(""), help: "SASL user (required with SASL_*)" },
    Spec { var: "LAGBALANCE_SASL_PASSWORD", flag: "--sasl-password", default: Some(""), help: "SASL password (required with SASL_*); prefer the variable, a flag shows in the process list; never logged" },
    Spec { var: "LAGBALANCE_SASL_PASSWORD_FILE", flag: "--sasl-password-file", default: Some(""), help: "file holding the SASL password (e.g. a mounted Kubernetes Secret; one trailing newline ignored), instead of LAGBALANCE_SASL_PASSWORD" },
    Spec { var: "LAGBALANCE_GROUP", flag: "--group", default: None, help: "consumer group to watch" },
    Spec { var: "LAGBALANCE_INTERVAL", flag: "--interval", default: Some("5s"), help: "poll interval (100ms..=1h)" },
    Spec { var: "LAGBALANCE_MODE", flag: "--mode", default: Some("rejoin"), help: "action when this member is the elected outlier: leave or rejoin" },
    Spec { var: "LAGBALANCE_LAG_FLOOR", flag: "--lag-floor", default: Some("1000"), help: "absolute lag (records) the member must exceed; integer ≥ 0" },
    Spec { var: "LAGBALANCE_LAG_RATIO", flag: "--lag-ratio", default: Some("3"), help: "member lag must be ≥ this × the median lag of its peers; number ≥ 1" },
    Spec { var: "LAGBALANCE_ZSCORE", flag: "--zscore", default: Some("3.5"), help: "member lag must also have a robust z-score (MAD of peers) ≥ this; number ≥ 0 (0 disables)" },
    Spec { var: "LAGBALANCE_SUSTAIN", flag: "--sustain", default: Some("3"), help: "consecutive intervals the rule must hold before acting; integer 1..=1000" },
    Spec { var: "LAGBALANCE_DRAIN_OK", flag: "--drain-ok", default: Some("60s"), help: "not an outlier while its lag shrinks fast enough to drain within this; 0s disables" },
    Spec { var: "LAGBALANCE_COOLDOWN", flag: "--cooldown", default: Some("2m"), help: "no action until this long after any rebalance observed in the group" },
    Spec { var: "LAGBALANCE_BUDGET_PER_HOUR", flag: "--budget-per-hour", default: Some("4"), help: "most actions this agent takes in any rolling hour; integer 0..=3600 (0 = never act)" },
    Spec { var: "LAGBALANCE_LEAVE_COOLDOWN", flag: "--leave-cooldown", default: Some("30s"), help: "mode leave: how long the consumer stays out before rejoining (≤ 10m)" },
    Spec { var: "LAGBALANCE_EWMA_WINDOW", flag: "--ewma-window", default: Some("30s"), help: "smoothing window of rates and lag trend (0s = no smoothing)" },
    Spec { var: "LAGBALANCE_CONTROL_ADDR", flag: "--control-addr", default: Some("127.0.0.1:9470"), help: "the consumer's control listener; loopback ip:port only" },
    Spec { var: "LAGBALANCE_CONTROL_TOKEN", flag: "--control-token", default: Some(""), help: "shared token for the control channel (empty = none)" },
    Spec { var: "LAGBALANCE_HTTP_ADDR", flag: "--http-addr", default: Some("127.0.0.1:9471"), help: "/metrics, /healthz, /readyz listener ip:port (0.0.0.0:9471 to let Prometheus scrape from outside the pod)" },
    Spec { var: "LAGBALANCE_CGROUP_DIR", flag: "--cgroup-dir", default: Some("/sys/fs/cgroup"), help: "cgroup directory whose CPU limit and usage describe the pod" },
    Spec { var: "LAGBALANCE_CPU_LIMIT", flag: "--cpu-limit", default: Some(""), help: "CPU limit of the app in cores (2, 0.5 or 500m), overriding cgroup detection, e.g. the app container's limits.cpu through the downward API; empty = detect" },
    Spec { var: "LAGBALANCE_CPU_LIMIT_MILLICORES", flag: "--cpu-limit-millicores", default: Some(""), help: "the same limit in millicores, for the downward API with divisor 1m (LAGBALANCE_CPU_LIMIT wins if both are set); integer > 0, empty = unset" },
    Spec { var: "LAGBALANCE_DRY_RUN", flag: "--dry-run", default: Some("false"), help: "detect and log, never act: true or false" },
    Spec { var: "LAGBALANCE_LOG", flag: "--log", default: Some("info"), help: "tracing filter (e.g. info, lagbalance_agent=debug)" },
];

/// The agent's Kafka security settings: each variable sets the Kafka property next to it,
/// parsed by `lagbalance::security::SecurityConfig` (one table and one parser, shared with
/// the consumer and the example worker).
pub use lagbalance::security::ENV_VARS as SECURITY_VARS;

/// Validated settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub bootstrap: String,
    /// TLS / SASL towards Kafka (`Debug` redacts the password).
    pub security: SecurityConfig,
    pub group: String,
    pub interval: Duration,
    pub mode: Mode,
    pub lag_floor: u64,
    pub lag_ratio: f64,
    pub zscore: f64,
    pub sustain: u32,
    pub drain_ok: Duration,
    pub cooldown: Duration,
    pub budget_per_hour: u32,
    pub leave_cooldown: Duration,
    pub ewma_window: Duration,
    pub control_addr: SocketAddr,
    pub control_token: Option<String>,
    pub http_addr: SocketAddr,
    pub cgroup_dir: String,
    pub cpu_limit: Option<f64>,
    pub dry_run: bool,
    pub log: String,
}

/// A setting that could not be accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub var: String,
    pub flag: String,
    pub value: String,
    pub allowed: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.var.is_empty() {
            write!(f, "{}: {}", self.value, self.allowed)
        } else {
            write!(
                f,
                "invalid {} ({}) value {:?}: {}",
                self.var, self.flag, self.value, self.allowed
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Durations are written as everywhere in lagbalance: `250ms`, `5s`, `2m`, `1h`, or a bare
/// number of seconds (one parser, [`lagbalance::settings`]).
pub use lagbalance::settings::parse_duration;

struct Source<'a> {
    env: &'a BTreeMap<String, String>,
    flags: BTreeMap<&'static str, String>,
}

impl Source<'_> {
    fn spec(var: &str) -> &'static Spec {
        SPECS.iter().find(|s| s.var == var).unwrap_or(&SPECS[0])
    }

    /// The raw value of `var`: flag, else env, else default; `None` if required and missing.
    fn raw(&self, var: &'static str) -> Option<String> {
        let spec = Self::spec(var);
        self.flags
            .get(var)
            .cloned()
            .or_else(|| self.env.get(var).cloned())
            .or_else(|| spec.default.map(str::to_owned))
    }

    fn err(&self, var: &'static str, value: &str, allowed: impl Into<String>) -> ConfigError {
        ConfigError {
            var: var.into(),
            flag: Self::spec(var).flag.into(),
            value: value.into(),
            allowed: allowed.into(),
        }
    }
}

/// The shared parser's error, with the flag that sets the variable added.
impl From<SettingError> for ConfigError {
    fn from(e: SettingError) -> Self {
        ConfigError {
            flag: Source::spec(&e.var).flag.into(),
            var: e.var,
            value: e.value,
            allowed: e.allowed,
        }
    }
}

impl SettingSource for Source<'_> {
    type Error = ConfigError;

    fn text(&self, var: &'static str) -> String {
        self.raw(var).unwrap_or_default()
    }
}

/// Turn `--flag value` / `--flag=value` arguments into a map by variable name.
/// `--dry-run` alone means `true`.
pub fn parse_flags(args: &[String]) -> Result<BTreeMap<&'static str, String>, ConfigError> {
    let mut out = BTreeMap::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (arg.as_str(), None),
        };
        let Some(spec) = SPECS.iter().find(|s| s.flag == name) else {
            return Err(ConfigError {
                var: String::new(),
                flag: String::new(),
                value: format!("unknown argument {arg:?}"),
                allowed: "see `lagbalance-agent --help`".into(),
            });
        };
        let value = match inline {
            Some(v) => v,
            None if spec.var == "LAGBALANCE_DRY_RUN"
                && args.get(i + 1).is_none_or(|n| n.starts_with("--")) =>
            {
                "true".into()
            }
            None => {
                i += 1;
                args.get(i).cloned().ok_or_else(|| ConfigError {
                    var: spec.var.into(),
                    flag: spec.flag.into(),
                    value: String::new(),
                    allowed: "the flag needs a value".into(),
                })?
            }
        };
        out.insert(spec.var, value);
        i += 1;
    }
    Ok(out)
}

/// Upper bound of the day-scale durations: the drain horizon, the cooldown and the EWMA window.
const DAY: Duration = Duration::from_secs(86400);

impl Config {
    /// Validate settings from `env` (only `LAGBALANCE_*` entries matter) and `args` (flags).
    pub fn from_sources(
        env: &BTreeMap<String, String>,
        args: &[String],
    ) -> Result<Config, ConfigError> {
        let src = Source {
            env,
            flags: parse_flags(args)?,
        };
        Self::from_source(&src)
    }

    fn from_source(src: &Source<'_>) -> Result<Config, ConfigError> {
        let mode = match src.text("LAGBALANCE_MODE").trim() {
            "leave" => Mode::Leave,
            "rejoin" => Mode::Rejoin,
            other => return Err(src.err("LAGBALANCE_MODE", other, "one of: leave, rejoin")),
        };
        let dry_run = src.boolean("LAGBALANCE_DRY_RUN")?;
        let cpu_limit = {
            let v = src.text("LAGBALANCE_CPU_LIMIT");
            if v.trim().is_empty() {
                None
            } else {
                // Accept Kubernetes millicores too ("500m").
                let parsed = match v.trim().strip_suffix('m') {
                    Some(milli) => milli.parse::<f64>().map(|m| m / 1000.0),
                    None => v.trim().parse::<f64>(),
                };
                match parsed {
                    Ok(c) if c.is_finite() && c > 0.0 && c <= 4096.0 => Some(c),
                    _ => {
                        return Err(src.err(
                            "LAGBALANCE_CPU_LIMIT",
                            &v,
                            "cores > 0 such as 2, 0.5 or 500m, or empty to detect",
                        ))
                    }
                }
            }
        };
        let cpu_limit = match cpu_limit {
            Some(c) => Some(c),
            None => {
                let v = src.text("LAGBALANCE_CPU_LIMIT_MILLICORES");
                if v.trim().is_empty() {
                    None
                } else {
                    match v.trim().parse::<u64>() {
                        Ok(m) if (1..=4_096_000).contains(&m) => Some(m as f64 / 1000.0),
                        _ => {
                            return Err(src.err(
                                "LAGBALANCE_CPU_LIMIT_MILLICORES",
                                &v,
                                "an integer from 1 to 4096000, or empty",
                            ))
                        }
                    }
                }
            }
        };
        let log = src.text("LAGBALANCE_LOG");
        if tracing_subscriber::EnvFilter::try_new(&log).is_err() {
            return Err(src.err(
                "LAGBALANCE_LOG",
                &log,
                "a tracing filter such as info, warn or lagbalance_agent=debug",
            ));
        }
        let token = src.text("LAGBALANCE_CONTROL_TOKEN");
        Ok(Config {
            bootstrap: src.required("LAGBALANCE_BOOTSTRAP")?,
            security: security(src)?,
            group: src.required("LAGBALANCE_GROUP")?,
            interval: src.duration(
                "LAGBALANCE_INTERVAL",
                Duration::from_millis(100),
                Duration::from_secs(3600),
            )?,
            mode,
            lag_floor: src.integer("LAGBALANCE_LAG_FLOOR", 0, i64::MAX as u64)?,
            lag_ratio: src.number("LAGBALANCE_LAG_RATIO", 1.0, 1e6, true)?,
            zscore: src.number("LAGBALANCE_ZSCORE", 0.0, 1e6, true)?,
            sustain: src.integer("LAGBALANCE_SUSTAIN", 1, 1000)? as u32,
            drain_ok: src.duration("LAGBALANCE_DRAIN_OK", Duration::ZERO, DAY)?,
            cooldown: src.duration("LAGBALANCE_COOLDOWN", Duration::ZERO, DAY)?,
            budget_per_hour: src.integer("LAGBALANCE_BUDGET_PER_HOUR", 0, 3600)? as u32,
            leave_cooldown: src.duration(
                "LAGBALANCE_LEAVE_COOLDOWN",
                Duration::ZERO,
                Duration::from_secs(600),
            )?,
            ewma_window: src.duration("LAGBALANCE_EWMA_WINDOW", Duration::ZERO, DAY)?,
            control_addr: src.socket_addr("LAGBALANCE_CONTROL_ADDR", true)?,
            control_token: (!token.is_empty()).then_some(token),
            http_addr: src.socket_addr("LAGBALANCE_HTTP_ADDR", false)?,
            cgroup_dir: src.text("LAGBALANCE_CGROUP_DIR"),
            cpu_limit,
            dry_run,
            log,
        })
    }
}

/// The security settings from `env` alone (for `lagbalance-agent status`).
pub fn security_from_env(env: &BTreeMap<String, String>) -> Result<SecurityConfig, ConfigError> {
    security(&Source {
        env,
        flags: BTreeMap::new(),
    })
}

/// The variable naming a file to read the SASL password from (a mounted Secret), so the
/// password need not sit in the environment.
const PASSWORD_FILE: &str = "LAGBALANCE_SASL_PASSWORD_FILE";

/// Build and check the security settings. Empty means unset (the library's default). The
/// PEM files are read here, so a wrong path stops the agent at start, not at its first poll.
/// A refused password is never echoed in the error.
fn security(src: &Source<'_>) -> Result<SecurityConfig, ConfigError> {
    let mut sec = SecurityConfig::new();
    for (var, key) in SECURITY_VARS {
        let value = src.text(var);
        if value.trim().is_empty() {
            continue;
        }
        sec.set(key, &value).map_err(|e| {
            let shown = if *key == "sasl.password" {
                "<redacted>"
            } else {
                value.as_str()
            };
            src.err(var, shown, e.to_string())
        })?;
    }
    let file = src.text(PASSWORD_FILE);
    if !file.trim().is_empty() {
        if !src.text("LAGBALANCE_SASL_PASSWORD").trim().is_empty() {
            return Err(src.err(
                PASSWORD_FILE,
                &file,
                "unset while LAGBALANCE_SASL_PASSWORD is set (one source of the password)",
            ));
        }
        let text = std::fs::read_to_string(file.trim())
            .map_err(|e| src.err(PASSWORD_FILE, &file, format!("a readable file ({e})")))?;
        let password = text
            .strip_suffix('\n')
            .map(|p| p.strip_suffix('\r').unwrap_or(p))
            .unwrap_or(&text);
        if password.is_empty() {
            return Err(src.err(
                PASSWORD_FILE,
                &file,
                "a file holding the password, not empty",
            ));
        }
        sec.set("sasl.password", password)
            .map_err(|e| src.err(PASSWORD_FILE, &file, e.to_string()))?;
    }
    sec.validate().map_err(|e| ConfigError {
        var: String::new(),
        flag: String::new(),
        value: "Kafka security settings (LAGBALANCE_SECURITY_PROTOCOL, LAGBALANCE_SSL_*, LAGBALANCE_SASL_*)".into(),
        allowed: e.to_string(),
    })?;
    Ok(sec)
}

/// The reference table (Markdown), as in `docs/agent.md`.
pub fn reference_table() -> String {
    let mut s = String::from("| variable | flag | default | meaning |\n|---|---|---|---|\n");
    for spec in SPECS {
        let default = match spec.default {
            None => "*(required)*".to_owned(),
            Some("") => "*(empty)*".to_owned(),
            Some(d) => format!("`{d}`"),
        };
        s.push_str(&format!(
            "| `{}` | `{}` | {} | {} |\n",
            spec.var, spec.flag, default, spec.help
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut m: BTreeMap<String, String> = [
            ("LAGBALANCE_BOOTSTRAP", "127.0.0.1:9092"),
            ("LAGBALANCE_GROUP", "g"),
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
        Config::from_sources(&env(pairs), &[]).expect_err("must be rejected")
    }

    #[test]
    fn kafka_security_settings() {
        use lagbalance::security::{SaslMechanism, SecurityProtocol};
        let cfg = Config::from_sources(&env(&[]), &[]).unwrap();
        assert_eq!(cfg.security, SecurityConfig::new(), "PLAINTEXT by default");

        let cfg = Config::from_sources(
            &env(&[
                ("LAGBALANCE_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
                ("LAGBALANCE_SASL_MECHANISM", "SCRAM-SHA-512"),
                ("LAGBALANCE_SASL_USERNAME", "alice"),
                ("LAGBALANCE_SASL_PASSWORD", "alice-secret"),
            ]),
            &[
                "--ssl-endpoint-identification-algorithm".into(),
                "none".into(),
            ],
        )
        .unwrap();
        assert_eq!(cfg.security.protocol, SecurityProtocol::SaslPlaintext);
        assert_eq!(cfg.security.sasl_mechanism, SaslMechanism::ScramSha512);
        assert_eq!(cfg.security.username.as_deref(), Some("alice"));
        assert_eq!(cfg.security.password.as_deref(), Some("alice-secret"));
        assert!(!cfg.security.verify_hostname);
        assert!(
            !format!("{cfg:?}").contains("alice-secret"),
            "Debug redacts"
        );

        // The password from a file (a mounted Secret): one trailing newline is not part of it.
        let dir = std::env::temp_dir().join(format!("lagbalance-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("password");
        std::fs::write(&file, "from-a-file\n").unwrap();
        let file = file.to_str().unwrap();
        let secured = [
            ("LAGBALANCE_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
            ("LAGBALANCE_SASL_USERNAME", "alice"),
        ];
        let mut vars = secured.to_vec();
        vars.push(("LAGBALANCE_SASL_PASSWORD_FILE", file));
        let cfg = Config::from_sources(&env(&vars), &[]).unwrap();
        assert_eq!(cfg.security.password.as_deref(), Some("from-a-file"));
        assert!(!format!("{cfg:?}").contains("from-a-file"), "Debug redacts");
        vars.push(("LAGBALANCE_SASL_PASSWORD", "alice-secret"));
        let e = err(&vars);
        assert_eq!(e.var, "LAGBALANCE_SASL_PASSWORD_FILE");
        assert!(!e.to_string().contains("alice-secret"), "{e}");
        let mut vars = secured.to_vec();
        vars.push(("LAGBALANCE_SASL_PASSWORD_FILE", "/nonexistent/password"));
        let e = err(&vars);
        assert!(e.to_string().contains("a readable file"), "{e}");
        std::fs::write(dir.join("empty"), "\n").unwrap();
        let empty = dir.join("empty");
        let mut vars = secured.to_vec();
        vars.push(("LAGBALANCE_SASL_PASSWORD_FILE", empty.to_str().unwrap()));
        assert!(err(&vars).to_string().contains("not empty"));
        std::fs::remove_dir_all(&dir).unwrap();

        // A bad value names the variable.
        let e = err(&[("LAGBALANCE_SECURITY_PROTOCOL", "TLS")]);
        assert_eq!(e.var, "LAGBALANCE_SECURITY_PROTOCOL");
        assert!(e.to_string().contains("PLAINTEXT, SSL"), "{e}");
        let e = err(&[("LAGBALANCE_SASL_MECHANISM", "GSSAPI")]);
        assert_eq!(e.var, "LAGBALANCE_SASL_MECHANISM");
        // Settings that do not fit together, or files that do not load, stop the start.
        let e = err(&[("LAGBALANCE_SECURITY_PROTOCOL", "SASL_SSL")]);
        assert!(e.to_string().contains("sasl.username"), "{e}");
        let e = err(&[
            ("LAGBALANCE_SECURITY_PROTOCOL", "SSL"),
            ("LAGBALANCE_SSL_CA_LOCATION", "/nonexistent/ca.pem"),
        ]);
        assert!(e.to_string().contains("ssl.ca.location"), "{e}");
        // The password never appears in an error.
        let e = err(&[
            ("LAGBALANCE_SECURITY_PROTOCOL", "SASL_SSL"),
            ("LAGBALANCE_SSL_CA_LOCATION", "/nonexistent/ca.pem"),
            ("LAGBALANCE_SASL_USERNAME", "alice"),
            ("LAGBALANCE_SASL_PASSWORD", "hunter2"),
        ]);
        assert!(!e.to_string().contains("hunter2"), "{e}");
        // `status` reads the same variables.
        let sec = security_from_env(&env(&[("LAGBALANCE_SECURITY_PROTOCOL", "ssl")])).unwrap();
        assert_eq!(sec.protocol, SecurityProtocol::Ssl);
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_sources(&env(&[]), &[]).unwrap();
        assert_eq!(c.interval, Duration::from_secs(5));
        assert_eq!(c.mode, Mode::Rejoin);
        assert_eq!(c.lag_ratio, 3.0);
        assert_eq!(c.sustain, 3);
        assert_eq!(c.control_token, None);
        assert!(c.control_addr.ip().is_loopback());
        assert!(c.http_addr.ip().is_loopback());
    }

    #[test]
    fn negative_interval_names_the_variable() {
        let e = err(&[("LAGBALANCE_INTERVAL", "-5s")]);
        assert_eq!(e.var, "LAGBALANCE_INTERVAL");
        let msg = e.to_string();
        assert!(
            msg.contains("LAGBALANCE_INTERVAL") && msg.contains("-5s"),
            "{msg}"
        );
        assert!(msg.contains("duration"), "says what is allowed: {msg}");
        assert_eq!(
            err(&[("LAGBALANCE_INTERVAL", "0s")]).var,
            "LAGBALANCE_INTERVAL"
        );
    }

    #[test]
    fn ratio_below_one_is_rejected() {
        let e = err(&[("LAGBALANCE_LAG_RATIO", "0.5")]);
        assert_eq!(e.var, "LAGBALANCE_LAG_RATIO");
        assert!(e.to_string().contains("from 1"));
        for bad in ["NaN", "inf", "three", ""] {
            assert_eq!(
                err(&[("LAGBALANCE_LAG_RATIO", bad)]).var,
                "LAGBALANCE_LAG_RATIO"
            );
        }
    }

    #[test]
    fn unparsable_duration_is_rejected() {
        for bad in ["soon", "5 parsecs", "5x", "", "1e400s", "s"] {
            let e = err(&[("LAGBALANCE_COOLDOWN", bad)]);
            assert_eq!(e.var, "LAGBALANCE_COOLDOWN", "{bad}");
        }
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
    }

    #[test]
    fn unknown_mode_is_rejected() {
        let e = err(&[("LAGBALANCE_MODE", "explode")]);
        assert_eq!(e.var, "LAGBALANCE_MODE");
        assert!(e.to_string().contains("leave, rejoin"));
        let c = Config::from_sources(&env(&[("LAGBALANCE_MODE", "leave")]), &[]).unwrap();
        assert_eq!(c.mode, Mode::Leave);
    }

    #[test]
    fn other_validation() {
        assert_eq!(
            Config::from_sources(&BTreeMap::new(), &[]).unwrap_err().var,
            "LAGBALANCE_BOOTSTRAP"
        );
        assert_eq!(
            err(&[("LAGBALANCE_SUSTAIN", "0")]).var,
            "LAGBALANCE_SUSTAIN"
        );
        assert_eq!(
            err(&[("LAGBALANCE_LAG_FLOOR", "-1")]).var,
            "LAGBALANCE_LAG_FLOOR"
        );
        assert_eq!(
            err(&[("LAGBALANCE_CONTROL_ADDR", "10.0.0.1:9470")]).var,
            "LAGBALANCE_CONTROL_ADDR"
        );
        assert_eq!(
            err(&[("LAGBALANCE_CPU_LIMIT", "0")]).var,
            "LAGBALANCE_CPU_LIMIT"
        );
        assert_eq!(
            err(&[("LAGBALANCE_DRY_RUN", "maybe")]).var,
            "LAGBALANCE_DRY_RUN"
        );
        assert_eq!(err(&[("LAGBALANCE_LOG", "info,[[[")]).var, "LAGBALANCE_LOG");
        let c = Config::from_sources(&env(&[("LAGBALANCE_CPU_LIMIT", "500m")]), &[]).unwrap();
        assert_eq!(c.cpu_limit, Some(0.5));
        let c = Config::from_sources(&env(&[("LAGBALANCE_CPU_LIMIT_MILLICORES", "1500")]), &[])
            .unwrap();
        assert_eq!(c.cpu_limit, Some(1.5));
        assert_eq!(
            err(&[("LAGBALANCE_CPU_LIMIT_MILLICORES", "1.5")]).var,
            "LAGBALANCE_CPU_LIMIT_MILLICORES"
        );
    }

    #[test]
    fn flags_override_env() {
        let args: Vec<String> = ["--interval", "2s", "--mode=leave", "--dry-run"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let c = Config::from_sources(&env(&[("LAGBALANCE_INTERVAL", "9s")]), &args).unwrap();
        assert_eq!(c.interval, Duration::from_secs(2));
        assert_eq!(c.mode, Mode::Leave);
        assert!(c.dry_run);
        let bad: Vec<String> = vec!["--lag-ratio".into(), "0.9".into()];
        let e = Config::from_sources(&env(&[]), &bad).unwrap_err();
        assert_eq!(e.var, "LAGBALANCE_LAG_RATIO");
        assert!(e.to_string().contains("--lag-ratio"));
        assert!(Config::from_sources(&env(&[]), &["--bogus".into()]).is_err());
        assert!(Config::from_sources(&env(&[]), &["--interval".into()]).is_err());
    }

    #[test]
    fn every_spec_has_a_unique_var_and_flag() {
        let mut vars: Vec<_> = SPECS.iter().map(|s| s.var).collect();
        let mut flags: Vec<_> = SPECS.iter().map(|s| s.flag).collect();
        vars.sort();
        vars.dedup();
        flags.sort();
        flags.dedup();
        assert_eq!(vars.len(), SPECS.len());
        assert_eq!(flags.len(), SPECS.len());
        assert!(reference_table().contains("LAGBALANCE_MODE"));
    }

    #[test]
    fn docs_list_every_variable() {
        let docs = include_str!("../../docs/agent.md");
        for spec in SPECS {
            assert!(
                docs.contains(&format!("`{}`", spec.var)),
                "docs/agent.md misses {}",
                spec.var
            );
            assert!(
                docs.contains(&format!("`{}`", spec.flag)),
                "docs/agent.md misses {}",
                spec.flag
            );
        }
    }
}
