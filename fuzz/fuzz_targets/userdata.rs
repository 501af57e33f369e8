//! lagbalance user data (what a member tells the leader about its capacity): any bytes decode
//! to `Ok` or `Err`, never a panic, and never allocate beyond the input; what decodes is
//! sanitised (no NaN/infinite/negative capacity or CPU figures, valid topic names, strictly
//! ascending non-negative partition ids); it re-encodes at the current version and decodes to
//! the same values; and member stats built from the input survive `from_stats` → encode →
//! decode up to f32 rounding and the decoder's sanitising.
//!
//! Each input is decoded twice: as is (checksum failures are the expected common case) and with
//! its checksum rewritten, so mutations reach the body parser behind the CRC.
#![no_main]

use lagbalance_assign::model::{MemberStats, PartitionLoad};
use lagbalance_assign::userdata::{MemberUserData, USER_DATA_VERSION};
use lagbalance_fuzz::{fix_userdata_crc, same_f64};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    processed_rate: f64,
    backlogged: bool,
    cpu_used: Option<f64>,
    cpu_limit: Option<f64>,
    /// `(topic, partition, lag, rate)`, each a [`PartitionLoad`].
    partitions: Vec<(String, i32, f64, f64)>,
    measured_at_ms: u64,
    capacity: Option<f64>,
    seq: u32,
}

fn same(a: &MemberUserData, b: &MemberUserData) -> bool {
    let opt = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => same_f64(x, y),
        (None, None) => true,
        _ => false,
    };
    a.version == b.version
        && opt(a.capacity, b.capacity)
        && same_f64(a.observed_rate, b.observed_rate)
        && a.backlogged == b.backlogged
        && opt(a.cpu_used_cores, b.cpu_used_cores)
        && opt(a.cpu_limit_cores, b.cpu_limit_cores)
        && a.measured_at_ms == b.measured_at_ms
        && a.seq == b.seq
        && a.topics.len() == b.topics.len()
        && a.topics.iter().zip(&b.topics).all(|(x, y)| {
            x.name == y.name
                && x.partitions.len() == y.partitions.len()
                && x.partitions.iter().zip(&y.partitions).all(|(p, q)| {
                    p.partition == q.partition && same_f64(p.rate, q.rate) && same_f64(p.lag, q.lag)
                })
        })
}

fn check_sanitised(d: &MemberUserData) {
    assert!(d.version >= 0);
    assert!(d.capacity.is_none_or(|c| c.is_finite() && c > 0.0), "{d:?}");
    assert!(
        d.observed_rate.is_finite() && d.observed_rate >= 0.0,
        "{d:?}"
    );
    assert!(
        d.cpu_used_cores.is_none_or(|c| c.is_finite() && c >= 0.0),
        "{d:?}"
    );
    assert!(
        d.cpu_limit_cores.is_none_or(|c| c.is_finite() && c > 0.0),
        "{d:?}"
    );
    if d.version == 0 {
        assert!(d.topics.is_empty() && d.seq == 0);
    }
    for t in &d.topics {
        assert!(!t.name.is_empty() && t.name.len() <= 249, "{:?}", t.name);
        let mut prev = -1i64;
        for p in &t.partitions {
            assert!(i64::from(p.partition) > prev, "ids strictly ascend: {t:?}");
            prev = p.partition.into();
            assert!(p.rate.is_nan() || (p.rate.is_finite() && p.rate >= 0.0));
            assert!(p.lag.is_nan() || (p.lag.is_finite() && p.lag >= 0.0));
        }
    }
}

/// Decoded user data re-encodes at the current version and decodes to the same values.
fn check_decoded(d: &MemberUserData) {
    check_sanitised(d);
    let again = MemberUserData::decode(&d.encode()).expect("our own encoding decodes");
    let want = MemberUserData {
        version: USER_DATA_VERSION,
        ..d.clone()
    };
    assert!(same(&again, &want), "{again:?} != {want:?}");
}

/// What the wire does to a value we encode: f32 rounding, then the decoder's sanitising.
fn wire(x: f64) -> f64 {
    f64::from(x as f32)
}

fn expected_after_wire(d: &MemberUserData) -> MemberUserData {
    let pos = |x: f64| Some(wire(x)).filter(|x| x.is_finite() && *x > 0.0);
    let nonneg = |x: f64| Some(wire(x)).filter(|x| x.is_finite() && *x >= 0.0);
    let mut e = d.clone();
    e.capacity = d.capacity.and_then(pos);
    e.observed_rate = nonneg(d.observed_rate).unwrap_or(0.0);
    e.cpu_used_cores = d.cpu_used_cores.and_then(nonneg);
    e.cpu_limit_cores = d.cpu_limit_cores.and_then(pos);
    for t in &mut e.topics {
        for p in &mut t.partitions {
            p.rate = nonneg(p.rate).unwrap_or(f64::NAN);
            p.lag = nonneg(p.lag).unwrap_or(f64::NAN);
        }
    }
    e
}

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = MemberUserData::decode(data) {
        check_decoded(&d);
    }
    let mut fixed = data.to_vec();
    fix_userdata_crc(&mut fixed);
    if let Ok(d) = MemberUserData::decode(&fixed) {
        check_decoded(&d);
    }

    if let Ok(input) = Input::arbitrary(&mut Unstructured::new(data)) {
        let stats = MemberStats {
            processed_rate: input.processed_rate,
            backlogged: input.backlogged,
            cpu_used_cores: input.cpu_used,
            cpu_limit_cores: input.cpu_limit,
            // Not carried in the user data (it feeds the member's own capacity estimate).
            busy_fraction: None,
            partitions: input
                .partitions
                .into_iter()
                .map(|(topic, partition, lag, rate)| PartitionLoad {
                    topic,
                    partition,
                    lag,
                    rate,
                })
                .collect(),
            measured_at_ms: input.measured_at_ms,
        };
        let built = MemberUserData::from_stats(&stats, input.capacity, input.seq);
        let back = MemberUserData::decode(&built.encode()).expect("our own encoding decodes");
        check_sanitised(&back);
        let want = expected_after_wire(&built);
        assert!(same(&back, &want), "{back:?} != {want:?}");
        // Every valid input partition is present (first entry of a duplicate wins).
        let count: usize = back.topics.iter().map(|t| t.partitions.len()).sum();
        let mut valid: Vec<(&str, i32)> = stats
            .partitions
            .iter()
            .filter(|p| p.partition >= 0 && !p.topic.is_empty() && p.topic.len() <= 249)
            .map(|p| (p.topic.as_str(), p.partition))
            .collect();
        valid.sort();
        valid.dedup();
        assert_eq!(count, valid.len());
    }
});
