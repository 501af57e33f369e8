//! SCRAM client (RFC 5802, with SHA-256 / SHA-512 as RFC 7677 and Kafka's KIP-84 use them),
//! sans I/O: feed it the server's messages, send what it returns.
//!
//! Every server message is hostile until checked: a missing attribute, a nonce that does not
//! extend ours, an unusable salt or iteration count, or a server signature that does not match
//! what the password implies are errors, never panics. The iteration count must lie in
//! [`MIN_ITERATIONS`]..=[`MAX_ITERATIONS`]: below, a server (or someone in the middle of a
//! SASL_PLAINTEXT connection) could make the client hand out a proof that is cheap to attack
//! offline; above, a hostile server could make the client hash for hours.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::{digest, hmac, pbkdf2};
use std::num::NonZeroU32;

use crate::error::{Error, Result};

/// Lowest iteration count we accept: RFC 7677's minimum, and the one Kafka's Java client
/// enforces (`ScramMechanism.minIterations`). Kafka brokers never store fewer.
pub const MIN_ITERATIONS: u32 = 4_096;

/// Highest iteration count we agree to compute (Kafka brokers store at most 16 384; the
/// margin is for other SCRAM servers).
pub const MAX_ITERATIONS: u32 = 1_000_000;

/// The hash a SCRAM mechanism is built on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramHash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramHash::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }
    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramHash::Sha256 => hmac::HMAC_SHA256,
            ScramHash::Sha512 => hmac::HMAC_SHA512,
        }
    }
    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramHash::Sha256 => &digest::SHA256,
            ScramHash::Sha512 => &digest::SHA512,
        }
    }
    fn len(self) -> usize {
        self.digest().output_len()
    }
    fn name(self) -> &'static str {
        match self {
            ScramHash::Sha256 => "SCRAM-SHA-256",
            ScramHash::Sha512 => "SCRAM-SHA-512",
        }
    }
}

fn bad(hash: ScramHash, detail: impl Into<String>) -> Error {
    Error::malformed(format!("{} server message", hash.name()), detail.into())
}

/// `saslname` escaping (RFC 5802 §5.1): `=` → `=3D`, `,` → `=2C`.
fn escape_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// A fresh client nonce: 24 random bytes, base64 (printable, no comma).
pub fn fresh_nonce() -> Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 24];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Config("no system random source for the SCRAM nonce".into()))?;
    Ok(B64.encode(bytes))
}

/// The client side of one SCRAM exchange.
pub struct ScramClient {
    hash: ScramHash,
    password: String,
    client_nonce: String,
    client_first_bare: String,
    /// Set once the server-first message was accepted: the key that signs the server's final.
    server_key: Option<hmac::Key>,
    auth_message: String,
}

/// Parse `a=value,b=value,…` into its attributes in order; values may contain `=`.
fn attributes(hash: ScramHash, msg: &str) -> Result<Vec<(char, &str)>> {
    msg.split(',')
        .map(|part| {
            let mut chars = part.chars();
            match (chars.next(), chars.next()) {
                (Some(k), Some('=')) if k.is_ascii_alphabetic() => Ok((k, &part[2..])),
                _ => Err(bad(
                    hash,
                    format!("attribute '{part}' is not of the form a=value"),
                )),
            }
        })
        .collect()
}

impl ScramClient {
    /// A client for `username` / `password` with a given nonce (tests use a fixed one).
    pub fn with_nonce(hash: ScramHash, username: &str, password: &str, nonce: &str) -> Self {
        let client_first_bare = format!("n={},r={nonce}", escape_name(username));
        ScramClient {
            hash,
            password: password.to_owned(),
            client_nonce: nonce.to_owned(),
            client_first_bare,
            server_key: None,
            auth_message: String::new(),
        }
    }

    /// A client with a fresh random nonce.
    pub fn new(hash: ScramHash, username: &str, password: &str) -> Result<Self> {
        Ok(Self::with_nonce(hash, username, password, &fresh_nonce()?))
    }

    /// The client-first message (no channel binding, no authzid).
    pub fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// Check the server-first message and answer with the client-final message (with proof).
    /// This is where the password is hashed (`iterations` rounds of PBKDF2).
    pub fn client_final(&mut self, server_first: &[u8]) -> Result<String> {
        let hash = self.hash;
        let server_first = std::str::from_utf8(server_first)
            .map_err(|_| bad(hash, "server-first message is not UTF-8"))?;
        let attrs = attributes(hash, server_first)?;
        if let Some(('m', _)) = attrs.first() {
            return Err(bad(hash, "server requires an unsupported extension (m=)"));
        }
        if let Some(('e', e)) = attrs.first() {
            return Err(Error::Authentication {
                mechanism: hash.name().into(),
                detail: format!("server refused the client-first message: {e}"),
            });
        }
        let get = |key: char, what: &str| {
            attrs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| *v)
                .ok_or_else(|| bad(hash, format!("server-first message has no {what} ({key}=)")))
        };
        let nonce = get('r', "nonce")?;
        let salt = get('s', "salt")?;
        let iterations = get('i', "iteration count")?;
        if !nonce.starts_with(&self.client_nonce) || nonce.len() <= self.client_nonce.len() {
            return Err(bad(hash, "server nonce does not extend the client nonce"));
        }
        if !nonce.chars().all(|c| c.is_ascii_graphic() && c != ',') {
            return Err(bad(hash, "server nonce has unprintable characters"));
        }
        let salt = B64
            .decode(salt)
            .map_err(|e| bad(hash, format!("salt is not base64: {e}")))?;
        if salt.is_empty() {
            return Err(bad(hash, "salt is empty"));
        }
        let iterations: u32 = iterations.parse().map_err(|_| {
            bad(
                hash,
                format!("iteration count '{iterations}' is not a number"),
            )
        })?;
        let iterations =
            NonZeroU32::new(iterations).ok_or_else(|| bad(hash, "iteration count is 0"))?;
        if iterations.get() < MIN_ITERATIONS {
            return Err(bad(
                hash,
                format!(
                    "iteration count {iterations} is below the minimum of {MIN_ITERATIONS} \
                     (RFC 7677; Kafka's clients refuse it too)"
                ),
            ));
        }
        if iterations.get() > MAX_ITERATIONS {
            return Err(bad(
                hash,
                format!("iteration count {iterations} is above the limit of {MAX_ITERATIONS}"),
            ));
        }

        let mut salted = vec![0u8; hash.len()];
        pbkdf2::derive(
            hash.pbkdf2(),
            iterations,
            &salt,
            self.password.as_bytes(),
            &mut salted,
        );
        let salted_key = hmac::Key::new(hash.hmac(), &salted);
        let client_key = hmac::sign(&salted_key, b"Client Key");
        let stored_key = digest::digest(hash.digest(), client_key.as_ref());
        let server_key = hmac::sign(&salted_key, b"Server Key");

        let without_proof = format!("c=biws,r={nonce}");
        self.auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = hmac::sign(
            &hmac::Key::new(hash.hmac(), stored_key.as_ref()),
            self.auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(client_signature.as_ref())
            .map(|(a, b)| a ^ b)
            .collect();
        self.server_key = Some(hmac::Key::new(hash.hmac(), server_key.as_ref()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)))
    }

    /// Check the server-final message: the server must prove it knows the password too.
    pub fn verify_server_final(&self, server_final: &[u8]) -> Result<()> {
        let hash = self.hash;
        let key = self
            .server_key
            .as_ref()
            .ok_or_else(|| bad(hash, "server-final message before server-first"))?;
        let server_final = std::str::from_utf8(server_final)
            .map_err(|_| bad(hash, "server-final message is not UTF-8"))?;
        let attrs = attributes(hash, server_final)?;
        match attrs.first() {
            Some(('e', e)) => Err(Error::Authentication {
                mechanism: hash.name().into(),
                detail: format!("server rejected the proof: {e}"),
            }),
            Some(('v', v)) => {
                let signature = B64
                    .decode(v)
                    .map_err(|e| bad(hash, format!("server signature is not base64: {e}")))?;
                hmac::verify(key, self.auth_message.as_bytes(), &signature).map_err(|_| {
                    Error::Authentication {
                        mechanism: hash.name().into(),
                        detail: "the server's signature is wrong: it does not know this \
                                 user's credentials (or the exchange was tampered with)"
                            .into(),
                    }
                })
            }
            _ => Err(bad(hash, "server-final message has neither v= nor e=")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 §3.
    const NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_client() -> ScramClient {
        ScramClient::with_nonce(ScramHash::Sha256, "user", "pencil", NONCE)
    }

    #[test]
    fn rfc7677_sha256_vector() {
        let mut c = rfc_client();
        assert_eq!(c.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        assert_eq!(
            c.client_final(SERVER_FIRST.as_bytes()).unwrap(),
            CLIENT_FINAL
        );
        c.verify_server_final(SERVER_FINAL.as_bytes()).unwrap();
    }

    #[test]
    fn wrong_server_signature_fails() {
        let mut c = rfc_client();
        c.client_final(SERVER_FIRST.as_bytes()).unwrap();
        let forged = "v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
        let e = c.verify_server_final(forged.as_bytes()).unwrap_err();
        assert!(matches!(e, Error::Authentication { .. }), "{e}");
        assert!(e.to_string().contains("signature"), "{e}");
        assert!(!e.is_retriable());
        // A server that never proves anything is no better.
        for msg in ["", "x=1", "v=", "v=!!!notbase64", "e=invalid-proof"] {
            assert!(c.verify_server_final(msg.as_bytes()).is_err(), "{msg}");
        }
        // Nor is a final message before the first.
        assert!(rfc_client()
            .verify_server_final(SERVER_FINAL.as_bytes())
            .is_err());
    }

    #[test]
    fn hostile_server_first_messages_are_clear_errors() {
        let cases: &[(&str, &str)] = &[
            ("", "not of the form"),
            ("garbage", "not of the form"),
            ("s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "no nonce"),
            ("r=rOprNGfwEbeRWgbNEkqOabc,i=4096", "no salt"),
            (
                "r=rOprNGfwEbeRWgbNEkqOabc,s=W22ZaJ0SNY7soEsUEjb6gQ==",
                "no iteration count",
            ),
            (
                "r=someoneelse,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
                "does not extend",
            ),
            (
                "r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
                "does not extend",
            ),
            ("r=rOprNGfwEbeRWgbNEkqOx,s=%%%,i=4096", "not base64"),
            ("r=rOprNGfwEbeRWgbNEkqOx,s=,i=4096", "salt is empty"),
            (
                "r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
                "is 0",
            ),
            (
                "r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1",
                "below the minimum",
            ),
            (
                "r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4095",
                "below the minimum",
            ),
            (
                "r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-1",
                "not a number",
            ),
            (
                "r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4294967295",
                "above the limit",
            ),
            (
                "r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999999",
                "not a number",
            ),
            (
                "m=ext,r=rOprNGfwEbeRWgbNEkqOx,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
                "extension",
            ),
            ("e=unknown-user", "refused"),
        ];
        for (msg, want) in cases {
            let e = rfc_client().client_final(msg.as_bytes()).unwrap_err();
            assert!(e.to_string().contains(want), "{msg:?}: {e}");
            assert!(!e.is_retriable(), "{msg:?}");
        }
        let e = rfc_client().client_final(&[0xff, 0xfe]).unwrap_err();
        assert!(e.to_string().contains("UTF-8"), "{e}");
    }

    #[test]
    fn sha512_round_trip_against_a_reference_server_computation() {
        // The server's side computed independently from the stored credentials.
        let (user, password) = ("al=i,ce", "s3cr3t");
        let mut c = ScramClient::with_nonce(ScramHash::Sha512, user, password, "abc");
        assert_eq!(c.client_first(), "n,,n=al=3Di=2Cce,r=abc");
        let salt = b"0123456789abcdef";
        let server_first = format!("r=abcdef,s={},i=4096", B64.encode(salt));
        let client_final = c.client_final(server_first.as_bytes()).unwrap();

        let mut salted = [0u8; 64];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA512,
            NonZeroU32::new(4096).unwrap(),
            salt,
            password.as_bytes(),
            &mut salted,
        );
        let k = hmac::Key::new(hmac::HMAC_SHA512, &salted);
        let stored_key = digest::digest(&digest::SHA512, hmac::sign(&k, b"Client Key").as_ref());
        let server_key = hmac::Key::new(hmac::HMAC_SHA512, hmac::sign(&k, b"Server Key").as_ref());
        let (without_proof, proof) = client_final.rsplit_once(",p=").unwrap();
        let auth = format!("n=al=3Di=2Cce,r=abc,{server_first},{without_proof}");
        let sig = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA512, stored_key.as_ref()),
            auth.as_bytes(),
        );
        let client_key: Vec<u8> = B64
            .decode(proof)
            .unwrap()
            .iter()
            .zip(sig.as_ref())
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(
            digest::digest(&digest::SHA512, &client_key).as_ref(),
            stored_key.as_ref(),
            "the proof shows knowledge of the password"
        );
        let server_final = format!("v={}", B64.encode(hmac::sign(&server_key, auth.as_bytes())));
        c.verify_server_final(server_final.as_bytes()).unwrap();
    }

    #[test]
    fn iteration_counts_below_4096_are_refused_and_4096_is_accepted() {
        let first = |i: u32| format!("r={NONCE}x,s=W22ZaJ0SNY7soEsUEjb6gQ==,i={i}");
        for i in [1, 2, 1000, MIN_ITERATIONS - 1] {
            let e = rfc_client().client_final(first(i).as_bytes()).unwrap_err();
            assert!(matches!(e, Error::Malformed { .. }), "{i}: {e}");
            assert!(e.to_string().contains("below the minimum of 4096"), "{e}");
            assert!(!e.is_retriable());
        }
        assert_eq!(MIN_ITERATIONS, 4096);
        rfc_client()
            .client_final(first(MIN_ITERATIONS).as_bytes())
            .expect("4096 is Kafka's minimum and allowed");
    }

    #[test]
    fn nonces_are_fresh() {
        let a = fresh_nonce().unwrap();
        let b = fresh_nonce().unwrap();
        assert_ne!(a, b);
        assert!(!a.contains(','));
        assert_eq!(a.len(), 32);
    }
}
