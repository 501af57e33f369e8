//! One lag reading: how a partition's log end and lag are read from a broker's answer, a
//! position in the log and what was known before. The consumer ([`crate::Consumer::lag`],
//! [`crate::fetcher::PartitionState::lag`]), its background lag sampler, the lag-aware
//! partitioner ([`crate::lag_partitioner::LagReader`]), the admin client
//! ([`crate::admin::PartitionOffsets::reading`]) and the agent's view all read lag here, so
//! one partition shows the same lag wherever it is looked at.
//!
//! The rules, each applied by [`read`]:
//!
//! 1. **A negative offset is no offset.** Kafka answers −1 for "no committed offset" and for a
//!    log end it cannot tell; taking −1 as a number would make lag out of nothing
//!    ([`offset`]).
//! 2. **The log end is the largest lower bound we have:** `max(answer, position, known log
//!    end, 0)`. tansu 0.6.0 answers ListOffsets(latest) with the newest batch's base offset
//!    plus one, under-reporting the log end by up to one batch (docs/tansu-quirks.md); a
//!    consumer cannot commit or fetch past the log end; and the log end never moves back. Each
//!    term is therefore a lower bound of the true log end and the max is the best one.
//! 3. **Lag is log end − position, never negative:** the position is one of the lower bounds,
//!    so a position beyond an under-reported answer reads lag 0, not a negative number.
//! 4. **Lag does not flicker on a stale answer:** the caller hands back the previous reading's
//!    log end, so an answer older than the one before cannot move the log end, or the lag,
//!    back. Lag may be under-estimated by less than one batch on tansu, never over-estimated.
//! 5. **No position, no lag:** without a committed offset (or fetch position) where the group
//!    starts depends on its `auto.offset.reset`, which a reader cannot see; the lag is `None`
//!    and the caller decides what unknown means (the partitioner keeps the partition's state,
//!    the agent and the leader's sample count it as 0). The log end is still read, so the next
//!    reading keeps its bound.

/// `raw` as an offset: `None` for Kafka's −1 ("none") or any other negative value (rule 1).
pub fn offset(raw: i64) -> Option<i64> {
    (raw >= 0).then_some(raw)
}

/// One partition's log end and lag, as [`read`] reads them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LagReading {
    /// The best lower bound of the log end; hand it to the next [`read`] of the partition.
    pub log_end: i64,
    /// Records from the position to the log end, ≥ 0; `None` without a position.
    pub lag: Option<i64>,
}

/// Read one partition's lag.
///
/// - `answer`: the broker's log end (ListOffsets(latest), or a Fetch high watermark); `None`
///   when it did not answer for the partition.
/// - `position`: where the reader stands in the log: the group's committed offset, or the
///   next offset the consumer will hand out; `None` when there is none.
/// - `known_log_end`: a log end known before this answer: the previous reading's
///   [`LagReading::log_end`], or the offset records were already fetched up to.
///
/// Negative values count as absent (rule 1 of the module docs).
pub fn read(answer: Option<i64>, position: Option<i64>, known_log_end: Option<i64>) -> LagReading {
    let position = position.and_then(offset);
    let log_end = [answer, position, known_log_end]
        .into_iter()
        .flatten()
        .fold(0, i64::max);
    LagReading {
        log_end,
        // `log_end ≥ position ≥ 0`: neither negative nor an overflow.
        lag: position.map(|p| log_end - p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(log_end: i64, lag: Option<i64>) -> LagReading {
        LagReading { log_end, lag }
    }

    #[test]
    fn lag_is_log_end_minus_position() {
        assert_eq!(read(Some(10), Some(4), None), reading(10, Some(6)));
        assert_eq!(read(Some(10), Some(10), Some(7)), reading(10, Some(0)));
        assert_eq!(read(Some(0), Some(0), None), reading(0, Some(0)));
    }

    #[test]
    fn no_position_no_lag_but_the_log_end_is_kept() {
        assert_eq!(read(Some(10), None, None), reading(10, None));
        assert_eq!(read(Some(3), None, Some(10)), reading(10, None));
        // Kafka's "no committed offset".
        assert_eq!(read(Some(10), Some(-1), None), reading(10, None));
    }

    #[test]
    fn a_position_beyond_an_under_reported_log_end_reads_lag_zero() {
        // tansu: ListOffsets says 1 (newest batch's base + 1) while 10 are committed.
        assert_eq!(read(Some(1), Some(10), None), reading(10, Some(0)));
    }

    #[test]
    fn a_log_end_that_goes_backwards_neither_moves_nor_makes_lag_flicker() {
        let first = read(Some(10), Some(4), None);
        assert_eq!(first, reading(10, Some(6)));
        let second = read(Some(5), Some(8), Some(first.log_end));
        assert_eq!(second, reading(10, Some(2)));
        // The log end grows past the bound again: the new answer counts.
        let third = read(Some(12), Some(8), Some(second.log_end));
        assert_eq!(third, reading(12, Some(4)));
    }

    #[test]
    fn missing_or_negative_answers_count_as_nothing_known() {
        assert_eq!(read(None, Some(4), None), reading(4, Some(0)));
        assert_eq!(read(None, Some(4), Some(9)), reading(9, Some(5)));
        assert_eq!(read(Some(-1), Some(4), None), reading(4, Some(0)));
        assert_eq!(read(Some(-1), None, Some(-5)), reading(0, None));
        assert_eq!(read(None, None, None), reading(0, None));
    }

    #[test]
    fn extreme_offsets_do_not_overflow() {
        assert_eq!(
            read(Some(i64::MAX), Some(0), None),
            reading(i64::MAX, Some(i64::MAX))
        );
        assert_eq!(
            read(Some(0), Some(i64::MAX), None),
            reading(i64::MAX, Some(0))
        );
        assert_eq!(
            read(Some(i64::MIN), Some(i64::MIN), Some(i64::MIN)),
            reading(0, None)
        );
    }

    #[test]
    fn offset_rejects_negatives() {
        assert_eq!(offset(0), Some(0));
        assert_eq!(offset(42), Some(42));
        assert_eq!(offset(-1), None);
        assert_eq!(offset(i64::MIN), None);
    }
}
