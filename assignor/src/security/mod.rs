//! Security settings shared by every component: TLS (rustls) and SASL (PLAIN, SCRAM-SHA-256,
//! SCRAM-SHA-512), under their Kafka property names.
//!
//! [`SecurityConfig::set`] is the one parser for these keys; the consumer's `set`, the agent and
//! anything else that takes Kafka-style properties hand it every key it knows
//! ([`is_security_key`]). The connection ([`crate::wire::Connection`]) applies the settings: TLS
//! right after the TCP connect, SASL right after API version negotiation.

mod sasl;
pub mod scram;
mod tls;

use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};

pub(crate) use sasl::authenticate;
pub(crate) use tls::{server_name, tls_error, TlsSetup};

/// `security.protocol`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(value: &str) -> Result<Self> {
        Ok(match value.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => SecurityProtocol::Plaintext,
            "SSL" => SecurityProtocol::Ssl,
            "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
            "SASL_SSL" => SecurityProtocol::SaslSsl,
            _ => {
                return Err(Error::Config(format!(
                    "security.protocol = '{value}' is not one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
                )))
            }
        })
    }

    /// Whether connections are wrapped in TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether connections authenticate with SASL.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// `sasl.mechanism`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SaslMechanism {
    #[default]
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    pub fn parse(value: &str) -> Result<Self> {
        Ok(match value.trim().to_ascii_uppercase().as_str() {
            "PLAIN" => SaslMechanism::Plain,
            "SCRAM-SHA-256" => SaslMechanism::ScramSha256,
            "SCRAM-SHA-512" => SaslMechanism::ScramSha512,
            _ => {
                return Err(Error::Config(format!(
                    "sasl.mechanism = '{value}' is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 \
                     (GSSAPI and OAUTHBEARER are not supported)"
                )))
            }
        })
    }

    /// The name brokers know the mechanism by.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Every property [`SecurityConfig::set`] understands.
pub const SECURITY_KEYS: &[&str] = &[
    "security.protocol",
    "ssl.ca.location",
    "ssl.endpoint.identification.algorithm",
    "ssl.certificate.location",
    "ssl.key.location",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
];

/// The environment variables that carry the security properties to our binaries (the agent,
/// the example worker), each next to the Kafka property it sets. One table, so an agent and the
/// application it watches are configured with the same names.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("LAGBALANCE_SECURITY_PROTOCOL", "security.protocol"),
    ("LAGBALANCE_SSL_CA_LOCATION", "ssl.ca.location"),
    (
        "LAGBALANCE_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM",
        "ssl.endpoint.identification.algorithm",
    ),
    (
        "LAGBALANCE_SSL_CERTIFICATE_LOCATION",
        "ssl.certificate.location",
    ),
    ("LAGBALANCE_SSL_KEY_LOCATION", "ssl.key.location"),
    ("LAGBALANCE_SASL_MECHANISM", "sasl.mechanism"),
    ("LAGBALANCE_SASL_USERNAME", "sasl.username"),
    ("LAGBALANCE_SASL_PASSWORD", "sasl.password"),
];

/// Whether `key` is a security property (so a config parser should hand it to
/// [`SecurityConfig::set`]).
pub fn is_security_key(key: &str) -> bool {
    SECURITY_KEYS.contains(&key)
}

/// TLS and SASL settings of a client. `Debug` never prints the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SecurityConfig {
    /// `security.protocol` (default PLAINTEXT).
    pub protocol: SecurityProtocol,
    /// `ssl.ca.location`: PEM file of the CA certificate(s) to trust. Unset: the system's
    /// trust store.
    pub ca_location: Option<PathBuf>,
    /// `ssl.endpoint.identification.algorithm`: `https` (default) checks that the broker's
    /// certificate names the host we connected to; `none` checks only that a trusted CA signed
    /// it.
    pub verify_hostname: bool,
    /// `ssl.certificate.location`: PEM client certificate (chain) for mutual TLS.
    pub certificate_location: Option<PathBuf>,
    /// `ssl.key.location`: PEM private key of the client certificate (unencrypted).
    pub key_location: Option<PathBuf>,
    /// `sasl.mechanism` (default PLAIN). librdkafka's `sasl.mechanisms` is accepted too.
    pub sasl_mechanism: SaslMechanism,
    /// `sasl.username`.
    pub username: Option<String>,
    /// `sasl.password`.
    pub password: Option<String>,
}

impl Default for SecurityConfig {
    /// PLAINTEXT; hostname verification on for when TLS is switched on.
    fn default() -> Self {
        SecurityConfig {
            protocol: SecurityProtocol::Plaintext,
            ca_location: None,
            verify_hostname: true,
            certificate_location: None,
            key_location: None,
            sasl_mechanism: SaslMechanism::Plain,
            username: None,
            password: None,
        }
    }
}

impl SecurityConfig {
    /// The defaults: PLAINTEXT, hostname verification on for when TLS is switched on.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set one security property by its Kafka name. `Ok(false)` if `key` is not a security
    /// property (the caller's own parser goes on with it); an invalid value is an error naming
    /// the property.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool> {
        let path = |v: &str| (!v.trim().is_empty()).then(|| PathBuf::from(v.trim()));
        match key {
            "security.protocol" => self.protocol = SecurityProtocol::parse(value)?,
            "ssl.ca.location" => self.ca_location = path(value),
            "ssl.certificate.location" => self.certificate_location = path(value),
            "ssl.key.location" => self.key_location = path(value),
            "ssl.endpoint.identification.algorithm" => {
                self.verify_hostname = match value.trim().to_ascii_lowercase().as_str() {
                    "https" => true,
                    // Java uses the empty string for "off", librdkafka `none`.
                    "none" | "" => false,
                    _ => {
                        return Err(Error::Config(format!(
                            "{key} = '{value}' is not one of https, none"
                        )))
                    }
                }
            }
            "sasl.mechanism" | "sasl.mechanisms" => {
                self.sasl_mechanism = SaslMechanism::parse(value)?
            }
            "sasl.username" => self.username = Some(value.to_owned()),
            "sasl.password" => self.password = Some(value.to_owned()),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Check that the settings fit together and that the TLS files load. Called when a
    /// [`crate::Client`] is created, so a mistake shows up there rather than at the first
    /// connection.
    pub fn validate(&self) -> Result<()> {
        if self.protocol.sasl() {
            if self.username.as_deref().is_none_or(str::is_empty) {
                return Err(Error::Config(format!(
                    "sasl.username is required with security.protocol = {}",
                    self.protocol_name()
                )));
            }
            if self.password.is_none() {
                return Err(Error::Config(format!(
                    "sasl.password is required with security.protocol = {}",
                    self.protocol_name()
                )));
            }
        }
        if self.certificate_location.is_some() != self.key_location.is_some() {
            return Err(Error::Config(
                "ssl.certificate.location and ssl.key.location must be set together".into(),
            ));
        }
        if self.protocol.tls() {
            TlsSetup::build(self)?;
        }
        Ok(())
    }

    fn protocol_name(&self) -> &'static str {
        match self.protocol {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }
}

impl fmt::Debug for SecurityConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecurityConfig")
            .field("protocol", &self.protocol)
            .field("ca_location", &self.ca_location)
            .field("verify_hostname", &self.verify_hostname)
            .field("certificate_location", &self.certificate_location)
            .field("key_location", &self.key_location)
            .field("sasl_mechanism", &self.sasl_mechanism)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kafka_names_and_rejects_bad_values_by_name() {
        let mut c = SecurityConfig::new();
        assert!(c.set("security.protocol", "sasl_ssl").unwrap());
        assert_eq!(c.protocol, SecurityProtocol::SaslSsl);
        assert!(c.set("sasl.mechanism", "SCRAM-SHA-512").unwrap());
        assert_eq!(c.sasl_mechanism, SaslMechanism::ScramSha512);
        assert!(c.set("sasl.mechanisms", "scram-sha-256").unwrap());
        assert_eq!(c.sasl_mechanism, SaslMechanism::ScramSha256);
        assert!(c
            .set("ssl.endpoint.identification.algorithm", "none")
            .unwrap());
        assert!(!c.verify_hostname);
        assert!(c
            .set("ssl.endpoint.identification.algorithm", "HTTPS")
            .unwrap());
        assert!(c.verify_hostname);
        assert!(!c.set("group.id", "g").unwrap());

        for (key, value) in [
            ("security.protocol", "TLS"),
            ("sasl.mechanism", "GSSAPI"),
            ("ssl.endpoint.identification.algorithm", "yes"),
        ] {
            let e = c.set(key, value).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
            assert!(e.contains(value), "{e}");
        }
    }

    #[test]
    fn validate_names_the_missing_property() {
        let mut c = SecurityConfig::new();
        c.set("security.protocol", "SASL_PLAINTEXT").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("sasl.username"), "{e}");
        c.set("sasl.username", "alice").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("sasl.password"), "{e}");
        c.set("sasl.password", "secret").unwrap();
        c.validate().unwrap();

        c.set("ssl.certificate.location", "/nonexistent/cert.pem")
            .unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("ssl.key.location"), "{e}");

        let mut c = SecurityConfig::new();
        c.set("security.protocol", "SSL").unwrap();
        c.set("ssl.ca.location", "/nonexistent/ca.pem").unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("ssl.ca.location"), "{e}");
    }

    #[test]
    fn debug_hides_the_password() {
        let mut c = SecurityConfig::new();
        c.set("sasl.password", "hunter2").unwrap();
        let s = format!("{c:?}");
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("redacted"), "{s}");
    }
}
