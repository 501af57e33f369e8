//! TLS client configuration (rustls with the `ring` provider).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use super::SecurityConfig;
use crate::error::{Error, Result};

/// A ready TLS client configuration.
#[derive(Clone)]
pub(crate) struct TlsSetup {
    pub config: Arc<ClientConfig>,
}

fn load_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| {
            Error::Config(format!(
                "{key} = '{}': cannot read PEM certificates: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "{key} = '{}' holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

impl TlsSetup {
    /// Build the rustls client configuration `cfg` describes, reading its PEM files.
    pub fn build(cfg: &SecurityConfig) -> Result<TlsSetup> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        match &cfg.ca_location {
            Some(path) => {
                for cert in load_certs("ssl.ca.location", path)? {
                    roots.add(cert).map_err(|e| {
                        Error::Config(format!(
                            "ssl.ca.location = '{}': unusable CA certificate: {e}",
                            path.display()
                        ))
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(Error::Config(format!(
                        "ssl.ca.location is not set and no system CA certificate was found ({} errors); \
                         set ssl.ca.location to the CA that signed the brokers' certificates",
                        found.errors.len()
                    )));
                }
            }
        }
        let roots = Arc::new(roots);
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS setup: {e}")))?;
        let builder = if cfg.verify_hostname {
            builder.with_root_certificates(roots)
        } else {
            let inner = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| Error::Config(format!("ssl.ca.location: {e}")))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoHostnameCheck { inner }))
        };
        let config = match (&cfg.certificate_location, &cfg.key_location) {
            (Some(cert), Some(key)) => {
                let chain = load_certs("ssl.certificate.location", cert)?;
                let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    Error::Config(format!(
                        "ssl.key.location = '{}': cannot read a PEM private key: {e}",
                        key.display()
                    ))
                })?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| {
                        Error::Config(format!(
                            "ssl.certificate.location / ssl.key.location do not make a client certificate: {e}"
                        ))
                    })?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(Error::Config(
                    "ssl.certificate.location and ssl.key.location must be set together".into(),
                ))
            }
        };
        Ok(TlsSetup {
            config: Arc::new(config),
        })
    }
}

/// The TLS server name for `addr` (`host:port`, `[v6]:port`): a DNS name or an IP address.
pub(crate) fn server_name(addr: &str) -> Result<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((h, port)) if port.parse::<u16>().is_ok() => h,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|e| {
        Error::Config(format!(
            "broker address '{addr}' is no TLS server name: {e}"
        ))
    })
}

/// An I/O error from a TLS handshake: certificate and protocol failures become
/// [`Error::Tls`] (not retriable: trying again meets the same certificate), the rest stay I/O
/// errors (a broker restarting mid-handshake).
pub(crate) fn tls_error(addr: &str, e: std::io::Error) -> Error {
    let is_tls = e
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
    if is_tls {
        Error::Tls {
            addr: addr.to_owned(),
            detail: e.to_string(),
        }
    } else {
        Error::Io {
            addr: addr.to_owned(),
            source: Arc::new(e),
        }
    }
}

/// `ssl.endpoint.identification.algorithm = none`: the chain must still lead to a trusted CA
/// and be valid now; only the "does it name this host" check is skipped.
#[derive(Debug)]
struct NoHostnameCheck {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for NoHostnameCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            // webpki checks the chain (and validity period) before the name, so this error
            // means everything but the name passed.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        assert!(matches!(
            server_name("127.0.0.1:9092").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:9092").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("broker-1.example.com:9093").unwrap(),
            ServerName::DnsName(_)
        ));
    }
}
