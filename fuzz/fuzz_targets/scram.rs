//! The SCRAM client's handling of the server's two messages (`security::scram`), the only
//! SASL bytes the client parses (PLAIN has no server message; the SaslHandshake and
//! SaslAuthenticate frames around them are covered by the `response` target).
//!
//! Input = `[hash selector, server-first, 0x00, server-final]`. Checks: never a panic; a
//! server-first the client accepts has a nonce that extends ours, a decodable non-empty salt
//! and an iteration count within `MIN_ITERATIONS..=MAX_ITERATIONS`, and the client-final
//! message echoes that nonce with a proof of the hash's length; the server-final message is
//! accepted exactly when it carries the signature computed independently here from the
//! password, the salt and the count (and the fuzzed one is also tried with its first signature
//! byte flipped, which must fail).
#![no_main]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use lagbalance::security::scram::{ScramClient, ScramHash, MAX_ITERATIONS, MIN_ITERATIONS};
use lagbalance_fuzz::scram::{server_signature, NONCE, PASSWORD, USER};
use libfuzzer_sys::fuzz_target;

/// The server's attribute `key` from `a=value,…` (first occurrence), as the client reads it.
fn attr<'a>(msg: &'a str, key: char) -> Option<&'a str> {
    msg.split(',').find_map(|p| {
        let mut c = p.chars();
        (c.next() == Some(key) && c.next() == Some('=')).then(|| &p[2..])
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let hash = if selector & 1 == 0 {
        ScramHash::Sha256
    } else {
        ScramHash::Sha512
    };
    let split = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    let (server_first, server_final) = (&rest[..split], rest.get(split + 1..).unwrap_or(&[]));

    let mut client = ScramClient::with_nonce(hash, USER, PASSWORD, NONCE);
    assert!(client.client_first().starts_with("n,,n=alice,r="));
    // Before a server-first message there is no key to check a server-final one with.
    assert!(client.verify_server_final(server_final).is_err());
    let Ok(client_final) = client.client_final(server_first) else {
        return;
    };

    // Accepted: the server-first message must have been well-formed and within the limits.
    let first = std::str::from_utf8(server_first).expect("accepted => UTF-8");
    let nonce = attr(first, 'r').expect("accepted => nonce");
    assert!(
        nonce.starts_with(NONCE) && nonce.len() > NONCE.len(),
        "{first}"
    );
    let salt = B64
        .decode(attr(first, 's').expect("accepted => salt"))
        .expect("salt is base64");
    assert!(!salt.is_empty());
    let iterations: u32 = attr(first, 'i')
        .expect("count")
        .parse()
        .expect("count is a number");
    assert!(
        (MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations),
        "{iterations}"
    );

    // The client-final message: channel binding "n,,", our nonce, and a proof of hash length.
    let without_proof = format!("c=biws,r={nonce}");
    let proof = client_final
        .strip_prefix(&format!("{without_proof},p="))
        .unwrap_or_else(|| panic!("client-final {client_final:?} does not echo the nonce"));
    let proof_len = B64.decode(proof).expect("proof is base64").len();
    assert_eq!(proof_len, if hash == ScramHash::Sha256 { 32 } else { 64 });

    // Only the server that knows the password can finish the exchange.
    let auth = format!("n={USER},r={NONCE},{first},{without_proof}");
    let good = server_signature(hash, &salt, iterations, &auth);
    let good_final = format!("v={}", B64.encode(&good));
    assert!(client.verify_server_final(good_final.as_bytes()).is_ok());
    let mut wrong = good.clone();
    wrong[0] ^= 1;
    let wrong_final = format!("v={}", B64.encode(&wrong));
    assert!(client.verify_server_final(wrong_final.as_bytes()).is_err());
    // The fuzzed server-final message is accepted only if it is, in effect, the right one.
    if client.verify_server_final(server_final).is_ok() {
        let text = std::str::from_utf8(server_final).expect("accepted => UTF-8");
        let v = text.strip_prefix("v=").expect("accepted => v= first");
        let v = v.split(',').next().unwrap_or_default();
        assert_eq!(B64.decode(v).ok().as_deref(), Some(&good[..]), "{text}");
    }
});
