//! The one parser of settings for lagbalance's binaries and examples: typed readers of
//! `LAGBALANCE_*` values (from the environment or a flag), and the `--help` rule.
//!
//! Every reader takes the variable's name and its raw text and either returns the value or a
//! [`SettingError`] naming the variable, the text and what is allowed, so an operator can fix
//! the setting from the message alone. Nothing here panics on input.

use std::net::SocketAddr;
use std::time::Duration;

/// A setting that could not be accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {var} value {value:?}: {allowed}")]
pub struct SettingError {
    pub var: String,
    pub value: String,
    pub allowed: String,
}

impl From<SettingError> for crate::Error {
    fn from(e: SettingError) -> Self {
        crate::Error::Config(e.to_string())
    }
}

fn invalid(var: &str, value: &str, allowed: impl Into<String>) -> SettingError {
    SettingError {
        var: var.into(),
        value: value.into(),
        allowed: allowed.into(),
    }
}

/// Whether `args` ask for help: an argument that is exactly `--help` or `-h`, wherever it
/// stands. Checked before any other parsing, so help works next to flags that are missing or
/// wrong; a value that really is `-h` can be given as `--flag=-h`.
pub fn wants_help(args: &[String]) -> bool {
    args.iter().any(|a| a == "--help" || a == "-h")
}

/// Parse a duration: `250ms`, `5s`, `2m`, `1h`, or a bare number of seconds; fractions allowed
/// (`1.5s`); at most a year. The error says what is wrong with the text.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("unknown unit {unit:?}")),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{num:?} is not a number"))?;
    if !n.is_finite() || n < 0.0 {
        return Err("must not be negative".into());
    }
    let secs = n * scale;
    if secs > 365.0 * 86400.0 {
        return Err("longer than a year".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A non-empty value, trimmed.
pub fn required(var: &str, value: &str) -> Result<String, SettingError> {
    match value.trim() {
        "" => Err(invalid(var, value, "required, must not be empty")),
        v => Ok(v.to_owned()),
    }
}

/// A duration (see [`parse_duration`]) from `min` to `max`.
pub fn duration(
    var: &str,
    value: &str,
    min: Duration,
    max: Duration,
) -> Result<Duration, SettingError> {
    let allowed = format!("a duration from {min:?} to {max:?}, such as 500ms, 5s, 2m or 1h");
    let d = parse_duration(value)
        .map_err(|e| invalid(var, value, format!("{e}; expected {allowed}")))?;
    if d < min || d > max {
        return Err(invalid(
            var,
            value,
            format!("out of range; expected {allowed}"),
        ));
    }
    Ok(d)
}

/// A finite number from `min` to `max` (above `min` when `min_inclusive` is false).
pub fn number(
    var: &str,
    value: &str,
    min: f64,
    max: f64,
    min_inclusive: bool,
) -> Result<f64, SettingError> {
    let above_min = |n: f64| if min_inclusive { n >= min } else { n > min };
    match value.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && above_min(n) && n <= max => Ok(n),
        _ => Err(invalid(
            var,
            value,
            if min_inclusive {
                format!("a number from {min} to {max}")
            } else {
                format!("a number greater than {min} and at most {max}")
            },
        )),
    }
}

/// A whole number from `min` to `max`.
pub fn integer(var: &str, value: &str, min: u64, max: u64) -> Result<u64, SettingError> {
    match value.trim().parse::<u64>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(invalid(
            var,
            value,
            format!("an integer from {min} to {max}"),
        )),
    }
}

/// An `ip:port` address; with `loopback_only`, only 127.0.0.0/8 or `[::1]`.
pub fn socket_addr(
    var: &str,
    value: &str,
    loopback_only: bool,
) -> Result<SocketAddr, SettingError> {
    let a: SocketAddr = value
        .trim()
        .parse()
        .map_err(|_| invalid(var, value, "an ip:port such as 127.0.0.1:9470"))?;
    if loopback_only && !a.ip().is_loopback() {
        return Err(invalid(
            var,
            value,
            "a loopback address (127.0.0.1 or [::1])",
        ));
    }
    Ok(a)
}

/// `true`/`1`/`yes` or `false`/`0`/`no`; empty is false.
pub fn boolean(var: &str, value: &str) -> Result<bool, SettingError> {
    match value.trim() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        _ => Err(invalid(var, value, "true or false")),
    }
}

/// A set of settings read by variable name: the typed readers above over whatever resolves a
/// variable to its text (flag, environment, default). A binary implements [`SettingSource::text`]
/// and picks its error type; every reader is then the same code for every binary.
pub trait SettingSource {
    type Error: From<SettingError>;

    /// The text of `var` after flags, environment and defaults; empty when unset.
    fn text(&self, var: &'static str) -> String;

    fn required(&self, var: &'static str) -> Result<String, Self::Error> {
        Ok(required(var, &self.text(var))?)
    }

    fn duration(
        &self,
        var: &'static str,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, Self::Error> {
        Ok(duration(var, &self.text(var), min, max)?)
    }

    fn number(
        &self,
        var: &'static str,
        min: f64,
        max: f64,
        min_inclusive: bool,
    ) -> Result<f64, Self::Error> {
        Ok(number(var, &self.text(var), min, max, min_inclusive)?)
    }

    fn integer(&self, var: &'static str, min: u64, max: u64) -> Result<u64, Self::Error> {
        Ok(integer(var, &self.text(var), min, max)?)
    }

    fn boolean(&self, var: &'static str) -> Result<bool, Self::Error> {
        Ok(boolean(var, &self.text(var))?)
    }

    fn socket_addr(
        &self,
        var: &'static str,
        loopback_only: bool,
    ) -> Result<SocketAddr, Self::Error> {
        Ok(socket_addr(var, &self.text(var), loopback_only)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: &str = "LAGBALANCE_X";

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn help_is_asked_by_an_exact_argument_anywhere() {
        assert!(wants_help(&args(&["--help"])));
        assert!(wants_help(&args(&["status", "--group", "g", "-h"])));
        assert!(wants_help(&args(&["--group", "--help"])));
        assert!(!wants_help(&args(&[])));
        assert!(!wants_help(&args(&["--group=-h", "--helpful"])));
    }

    #[test]
    fn values_are_parsed() {
        assert_eq!(required(V, "  g "), Ok("g".into()));
        assert_eq!(
            duration(V, "250ms", Duration::ZERO, Duration::from_secs(1)),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            duration(V, "1.5", Duration::ZERO, Duration::from_secs(60)),
            Ok(Duration::from_millis(1500))
        );
        assert_eq!(number(V, "0.5", 0.0, 1.0, false), Ok(0.5));
        assert_eq!(number(V, "0", 0.0, 1.0, true), Ok(0.0));
        assert_eq!(integer(V, " 7 ", 1, 10), Ok(7));
        assert_eq!(boolean(V, "yes"), Ok(true));
        assert_eq!(boolean(V, ""), Ok(false));
        assert_eq!(
            socket_addr(V, " [::1]:9470 ", true),
            Ok("[::1]:9470".parse().unwrap())
        );
        assert_eq!(
            socket_addr(V, "0.0.0.0:9471", false),
            Ok("0.0.0.0:9471".parse().unwrap())
        );
    }

    #[test]
    fn invalid_values_are_errors_naming_the_variable_and_the_value() {
        let day = Duration::from_secs(86400);
        let errors = [
            required(V, " ").unwrap_err(),
            duration(V, "5 parsecs", Duration::ZERO, day).unwrap_err(),
            duration(V, "-1s", Duration::ZERO, day).unwrap_err(),
            duration(V, "NaN", Duration::ZERO, day).unwrap_err(),
            duration(V, "1e300h", Duration::ZERO, day).unwrap_err(),
            duration(V, "2h", Duration::ZERO, Duration::from_secs(3600)).unwrap_err(),
            duration(V, "ümlaut", Duration::ZERO, day).unwrap_err(),
            number(V, "inf", 0.0, 1.0, true).unwrap_err(),
            number(V, "0", 0.0, 1.0, false).unwrap_err(),
            number(V, "half", 0.0, 1.0, true).unwrap_err(),
            integer(V, "-3", 0, 10).unwrap_err(),
            integer(V, "11", 0, 10).unwrap_err(),
            integer(V, "99999999999999999999999", 0, u64::MAX).unwrap_err(),
            boolean(V, "maybe").unwrap_err(),
            socket_addr(V, "localhost", false).unwrap_err(),
            socket_addr(V, "127.0.0.1:70000", false).unwrap_err(),
            socket_addr(V, "10.0.0.1:9470", true).unwrap_err(),
        ];
        for e in errors {
            let msg = e.to_string();
            assert!(msg.starts_with("invalid LAGBALANCE_X value "), "{msg}");
            assert!(msg.contains(&format!("{:?}", e.value)), "{msg}");
            assert!(!e.allowed.is_empty(), "{msg}");
        }
        let e = duration(V, "2h", Duration::ZERO, Duration::from_secs(3600)).unwrap_err();
        assert!(e.allowed.contains("out of range"), "{e}");
        let e = number(V, "0", 0.0, 1.0, false).unwrap_err();
        assert_eq!(e.allowed, "a number greater than 0 and at most 1");
    }
}
