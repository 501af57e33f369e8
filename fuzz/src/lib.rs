//! Helpers shared by the fuzz targets: checksum fix-ups (so mutated inputs get past the CRC
//! checks and reach the parsers behind them), the API selector of the `response` target, and
//! invariant checks on decoded data.

use kafka_protocol::messages::ApiKey;
use lagbalance::wire::versions::client_range;

/// Every API whose responses the client decodes, in a fixed order (the `response` target's
/// first input byte indexes this list). Kept in step with the client by construction: an API
/// is here iff `client_range` names it, which `response.rs` asserts at start-up.
pub const CLIENT_APIS: [ApiKey; 19] = [
    ApiKey::ApiVersions,
    ApiKey::Metadata,
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::FindCoordinator,
    ApiKey::JoinGroup,
    ApiKey::SyncGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::DescribeGroups,
    ApiKey::ListGroups,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    // Appended (not inserted) so the seeds' first bytes still select the same APIs.
    ApiKey::SaslHandshake,
    ApiKey::SaslAuthenticate,
    ApiKey::InitProducerId,
];

/// The `response` target's input layout: `[api index, version byte, frame…]`. Returns the API,
/// the version (within the client's range for it) and the frame (correlation id onwards, i.e.
/// what `split_frame` hands to `decode_response`).
pub fn select(data: &[u8]) -> Option<(ApiKey, i16, &[u8])> {
    let (&a, rest) = data.split_first()?;
    let (&v, frame) = rest.split_first()?;
    let api = CLIENT_APIS[a as usize % CLIENT_APIS.len()];
    let (lo, hi) = client_range(api)?;
    let version = lo + (v as i16) % (hi - lo + 1);
    Some((api, version, frame))
}

/// The selector bytes that make [`select`] pick `api` at `version` (for seeds).
pub fn selector(api: ApiKey, version: i16) -> [u8; 2] {
    let idx = CLIENT_APIS
        .iter()
        .position(|&a| a == api)
        .expect("client API");
    let (lo, _) = client_range(api).expect("client API");
    [idx as u8, (version - lo) as u8]
}

/// CRC-32C (Castagnoli) of record batches: rewrite the CRC field of every v2 batch found by
/// walking the batch lengths, so that mutated batches reach the record decoder. Batches are
/// `base_offset i64, batch_length i32, leader_epoch i32, magic i8, crc u32, …` and the CRC
/// covers everything after itself up to the batch end.
pub fn fix_batch_crcs(bytes: &mut [u8]) {
    let mut at = 0usize;
    while bytes.len() - at >= 21 {
        let len = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().expect("4 bytes"));
        if len < 9 {
            return;
        }
        let end = (at + 12).saturating_add(len as usize).min(bytes.len());
        let crc = crc32c::crc32c(&bytes[at + 21..end]);
        bytes[at + 17..at + 21].copy_from_slice(&crc.to_be_bytes());
        at = end;
    }
}

/// Rewrite the CRC-32 (IEEE) of a lagbalance user data blob (`i16 version, u32 crc, body`).
pub fn fix_userdata_crc(bytes: &mut [u8]) {
    if bytes.len() >= 6 {
        let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&bytes[6..]);
        bytes[2..6].copy_from_slice(&crc.to_be_bytes());
    }
}

/// `a == b`, treating NaN as equal to NaN (sanitised user data uses NaN for "unusable").
pub fn same_f64(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// The `scram` target's fixed client side, and the server's half of the exchange computed
/// independently of the client under test (for its checks and for the seeds).
pub mod scram {
    use lagbalance::security::scram::ScramHash;
    use ring::{hmac, pbkdf2};
    use std::num::NonZeroU32;

    pub const USER: &str = "alice";
    pub const PASSWORD: &str = "alice-secret";
    pub const NONCE: &str = "fuzznonce";

    /// ServerSignature = HMAC(HMAC(SaltedPassword, "Server Key"), AuthMessage) (RFC 5802 §3),
    /// for [`PASSWORD`]; `iterations` must be non-zero.
    pub fn server_signature(hash: ScramHash, salt: &[u8], iterations: u32, auth: &str) -> Vec<u8> {
        let (alg, mac, len) = match hash {
            ScramHash::Sha256 => (pbkdf2::PBKDF2_HMAC_SHA256, hmac::HMAC_SHA256, 32),
            ScramHash::Sha512 => (pbkdf2::PBKDF2_HMAC_SHA512, hmac::HMAC_SHA512, 64),
        };
        let mut salted = vec![0u8; len];
        let n = NonZeroU32::new(iterations).expect("a non-zero iteration count");
        pbkdf2::derive(alg, n, salt, PASSWORD.as_bytes(), &mut salted);
        let server_key = hmac::sign(&hmac::Key::new(mac, &salted), b"Server Key");
        hmac::sign(&hmac::Key::new(mac, server_key.as_ref()), auth.as_bytes())
            .as_ref()
            .to_vec()
    }
}
