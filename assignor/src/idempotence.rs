//! Sequence bookkeeping of the idempotent producer (KIP-98, KIP-360): pure logic, no I/O.
//!
//! The broker keeps, per partition and producer id, the producer's epoch and the sequence
//! numbers of the last batches it wrote. It appends a batch only when the batch's base
//! sequence is the next one it expects, and answers a re-sent copy of a recent batch as a
//! success without writing it again. So:
//!
//! * every batch is *stamped* (producer id, epoch, base sequence) when it is first sent, and
//!   keeps that stamp on every retry — a retry the broker already has is not written twice;
//! * a partition's next sequence advances by the batch's record count only when the batch is
//!   acknowledged (one batch in flight per partition, so stamps are handed out in order);
//! * when the sequence state of a partition is lost or unknowable — a stamped batch finally
//!   failed (its records may or may not be in the log), or the broker reports
//!   OUT_OF_ORDER_SEQUENCE_NUMBER / UNKNOWN_PRODUCER_ID / INVALID_PRODUCER_EPOCH — the
//!   producer moves to a new epoch (or a new producer id). A broker accepts a higher epoch
//!   only at sequence 0, so each partition restarts at 0 with its first batch under the new
//!   identity; batches still in flight under the old one finish under the old one.
//!
//! As Java's idempotent producer does, the epoch is bumped locally when the broker speaks
//! InitProducerId v3+ (KIP-360); otherwise, and when the epoch would overflow, a fresh
//! producer id is requested.

use std::collections::HashMap;

use kafka_protocol::ResponseError;

use crate::error::{BrokerCode, Error};

/// A producer id and epoch, as InitProducerId hands them out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducerIdentity {
    pub id: i64,
    pub epoch: i16,
}

/// The idempotence fields of one record batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub producer: ProducerIdentity,
    pub base_sequence: i32,
}

/// What to do with a stamped batch the broker refused with an idempotence error.
#[derive(Clone, Debug)]
pub enum Verdict {
    /// The broker did not write it: send it again under the new identity, from sequence 0.
    Resend,
    /// An earlier attempt may have been written: resending could duplicate it, so it fails.
    Fail(Error),
}

/// How the producer identity must change before the next batch is stamped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Renewal {
    /// Same id, epoch + 1 (falls back to a new id where that is not possible).
    Bump,
    /// A new producer id from InitProducerId.
    NewId,
}

/// Where a partition's sequence stands: the identity its sequences belong to and the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PartitionSequence {
    producer: ProducerIdentity,
    next: i32,
}

/// The idempotent producer's state: the current identity and each partition's next sequence.
#[derive(Debug, Default)]
pub struct Sequencer {
    current: Option<ProducerIdentity>,
    /// The broker speaks InitProducerId v3+, so it accepts a locally bumped epoch (KIP-360).
    can_bump: bool,
    pending: Option<Renewal>,
    partitions: HashMap<(String, i32), PartitionSequence>,
    /// Some InitProducerId has succeeded (batches may carry stamps from it).
    initialised: bool,
}

/// `seq + count` the way Kafka wraps sequences: past `i32::MAX` they continue at 0.
pub fn increment_sequence(seq: i32, count: i32) -> i32 {
    if seq > i32::MAX - count {
        count - (i32::MAX - seq) - 1
    } else {
        seq + count
    }
}

impl Sequencer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether InitProducerId must run before the next batch can be stamped.
    pub fn needs_producer_id(&mut self) -> bool {
        self.apply_pending();
        self.current.is_none()
    }

    /// The identity InitProducerId returned; `can_bump`: the broker speaks its v3+.
    pub fn set_producer(&mut self, producer: ProducerIdentity, can_bump: bool) {
        self.current = Some(producer);
        self.can_bump = can_bump;
        self.pending = None;
        self.initialised = true;
    }

    /// Whether a producer id was ever set: before that, no batch carries a stamp.
    pub fn initialised(&self) -> bool {
        self.initialised
    }

    pub fn current(&mut self) -> Option<ProducerIdentity> {
        self.apply_pending();
        self.current
    }

    /// Stamp a batch about to be sent for the first time (nothing else of its partition is in
    /// flight). `None` while there is no producer id.
    pub fn stamp(&mut self, topic: &str, partition: i32) -> Option<Stamp> {
        self.apply_pending();
        let current = self.current?;
        let entry = self
            .partitions
            .entry((topic.to_owned(), partition))
            .or_insert(PartitionSequence {
                producer: current,
                next: 0,
            });
        // A partition's first batch under a new identity starts at sequence 0.
        if entry.producer != current {
            *entry = PartitionSequence {
                producer: current,
                next: 0,
            };
        }
        Some(Stamp {
            producer: current,
            base_sequence: entry.next,
        })
    }

    /// The broker wrote the batch stamped `stamp` with `count` records.
    pub fn acknowledged(&mut self, topic: &str, partition: i32, stamp: Stamp, count: i32) {
        if let Some(entry) = self.partitions.get_mut(&(topic.to_owned(), partition)) {
            if entry.producer == stamp.producer && entry.next == stamp.base_sequence {
                entry.next = increment_sequence(stamp.base_sequence, count);
            }
        }
    }

    /// A stamped batch failed for good: whether its records are in the log is unknown, so the
    /// partition's sequence is too. Move to a new epoch; the partition restarts at 0.
    pub fn failed(&mut self, topic: &str, partition: i32, stamp: Stamp) {
        self.forget(topic, partition, stamp, Renewal::Bump);
    }

    /// The broker refused a stamped batch with `code`. `None` if `code` is not an idempotence
    /// error (the caller's usual handling applies). `maybe_written`: an earlier attempt of this
    /// batch went unanswered, so it may be in the log already.
    pub fn on_error(
        &mut self,
        topic: &str,
        partition: i32,
        stamp: Stamp,
        code: BrokerCode,
        maybe_written: bool,
    ) -> Option<Verdict> {
        let renewal = match code.known()? {
            // The broker's sequence state for us is not ours: it lost it (log truncated,
            // producer state expired) or has a gap. Java bumps the epoch and resends.
            ResponseError::OutOfOrderSequenceNumber | ResponseError::UnknownProducerId => {
                Renewal::Bump
            }
            // The broker knows a newer epoch than ours: a bump could land below it.
            ResponseError::InvalidProducerEpoch | ResponseError::ProducerFenced => Renewal::NewId,
            _ => return None,
        };
        self.forget(topic, partition, stamp, renewal);
        Some(if maybe_written {
            Verdict::Fail(Error::broker(
                format!(
                    "produce to {topic}/{partition}: the broker lost this producer's sequence \
                     after an unanswered attempt that may have been written; not resent, to \
                     avoid a duplicate"
                ),
                code.0,
            ))
        } else {
            Verdict::Resend
        })
    }

    /// Drop a partition's sequence and ask for a new identity, unless `stamp` is already from
    /// an older one (then the partition restarts at 0 under the current identity anyway). A
    /// new id is asked for whenever the current one shares the stamp's id: a bumped epoch of
    /// it may still be below the epoch the broker knows.
    fn forget(&mut self, topic: &str, partition: i32, stamp: Stamp, renewal: Renewal) {
        self.partitions.remove(&(topic.to_owned(), partition));
        let same_id = self.current.is_some_and(|c| c.id == stamp.producer.id);
        if self.current == Some(stamp.producer) || (renewal == Renewal::NewId && same_id) {
            self.pending = match (self.pending, renewal) {
                (Some(Renewal::NewId), _) | (_, Renewal::NewId) => Some(Renewal::NewId),
                _ => Some(Renewal::Bump),
            };
        }
    }

    fn apply_pending(&mut self) {
        let Some(renewal) = self.pending.take() else {
            return;
        };
        self.current = match (renewal, self.current) {
            (Renewal::Bump, Some(p)) if self.can_bump && p.epoch < i16::MAX => {
                Some(ProducerIdentity {
                    id: p.id,
                    epoch: p.epoch + 1,
                })
            }
            _ => None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: ProducerIdentity = ProducerIdentity { id: 7, epoch: 0 };

    fn code(e: ResponseError) -> BrokerCode {
        BrokerCode(e.code())
    }

    fn ready(can_bump: bool) -> Sequencer {
        let mut s = Sequencer::new();
        assert!(s.needs_producer_id());
        assert!(!s.initialised());
        assert_eq!(s.stamp("t", 0), None, "no stamp without a producer id");
        s.set_producer(P, can_bump);
        assert!(!s.needs_producer_id());
        assert!(s.initialised());
        s
    }

    #[test]
    fn sequences_start_at_zero_and_advance_on_acknowledgement_only() {
        let mut s = ready(true);
        let a = s.stamp("t", 0).unwrap();
        assert_eq!(
            a,
            Stamp {
                producer: P,
                base_sequence: 0
            }
        );
        // A retry re-uses the stored stamp; asking again before the ack gives the same one.
        assert_eq!(s.stamp("t", 0), Some(a));
        s.acknowledged("t", 0, a, 3);
        assert_eq!(s.stamp("t", 0).unwrap().base_sequence, 3);
        // Partitions count separately.
        assert_eq!(s.stamp("t", 1).unwrap().base_sequence, 0);
        assert_eq!(s.stamp("u", 0).unwrap().base_sequence, 0);
        // A duplicate acknowledgement (stale stamp) does not advance twice.
        s.acknowledged("t", 0, a, 3);
        assert_eq!(s.stamp("t", 0).unwrap().base_sequence, 3);
    }

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(increment_sequence(0, 5), 5);
        assert_eq!(increment_sequence(i32::MAX - 5, 5), i32::MAX);
        assert_eq!(increment_sequence(i32::MAX - 4, 5), 0);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX, 3), 2);
    }

    #[test]
    fn a_failed_batch_bumps_the_epoch_and_restarts_every_partition_at_zero() {
        let mut s = ready(true);
        let a0 = s.stamp("t", 0).unwrap();
        s.acknowledged("t", 0, a0, 10);
        let b0 = s.stamp("t", 1).unwrap();
        s.acknowledged("t", 1, b0, 4);
        // Partition 1's next batch is in flight under epoch 0 when partition 0's batch fails.
        let b1 = s.stamp("t", 1).unwrap();
        assert_eq!(b1.base_sequence, 4);
        let a1 = s.stamp("t", 0).unwrap();
        s.failed("t", 0, a1);
        let bumped = ProducerIdentity { id: 7, epoch: 1 };
        assert_eq!(s.current(), Some(bumped));
        assert!(!s.needs_producer_id(), "a local bump needs no round trip");
        assert_eq!(
            s.stamp("t", 0),
            Some(Stamp {
                producer: bumped,
                base_sequence: 0
            })
        );
        // The in-flight batch finishes under the old epoch; the partition's next batch then
        // starts at 0 under the new one.
        s.acknowledged("t", 1, b1, 2);
        assert_eq!(
            s.stamp("t", 1),
            Some(Stamp {
                producer: bumped,
                base_sequence: 0
            })
        );
    }

    #[test]
    fn failures_of_older_stamps_do_not_bump_twice() {
        let mut s = ready(true);
        let a = s.stamp("t", 0).unwrap();
        let b = s.stamp("t", 1).unwrap();
        s.failed("t", 0, a);
        s.failed("t", 1, b); // before anything was stamped under epoch 1: one bump only
        assert_eq!(s.current().unwrap().epoch, 1);
        let c = s.stamp("t", 0).unwrap();
        s.failed("t", 2, b); // a stamp from epoch 0 after the bump: nothing to do
        assert_eq!(s.current().unwrap().epoch, 1);
        s.failed("t", 0, c);
        assert_eq!(s.current().unwrap().epoch, 2);
    }

    #[test]
    fn without_kip_360_or_at_the_last_epoch_a_new_id_is_needed() {
        let mut s = ready(false);
        let a = s.stamp("t", 0).unwrap();
        s.failed("t", 0, a);
        assert!(s.needs_producer_id());
        assert_eq!(s.stamp("t", 0), None);

        let mut s = Sequencer::new();
        s.set_producer(
            ProducerIdentity {
                id: 1,
                epoch: i16::MAX,
            },
            true,
        );
        let a = s.stamp("t", 0).unwrap();
        s.failed("t", 0, a);
        assert!(s.needs_producer_id(), "the epoch must not overflow");
        s.set_producer(ProducerIdentity { id: 2, epoch: 0 }, true);
        assert_eq!(s.stamp("t", 0).unwrap().base_sequence, 0);
    }

    #[test]
    fn idempotence_errors_resend_unless_an_earlier_attempt_may_be_in_the_log() {
        for e in [
            ResponseError::OutOfOrderSequenceNumber,
            ResponseError::UnknownProducerId,
        ] {
            let mut s = ready(true);
            let a = s.stamp("t", 0).unwrap();
            s.acknowledged("t", 0, a, 5);
            let b = s.stamp("t", 0).unwrap();
            assert!(matches!(
                s.on_error("t", 0, b, code(e), false),
                Some(Verdict::Resend)
            ));
            let resent = s.stamp("t", 0).unwrap();
            assert_eq!(resent.producer.epoch, 1, "{e:?} bumps the epoch");
            assert_eq!(resent.base_sequence, 0);

            match s.on_error("t", 0, resent, code(e), true) {
                Some(Verdict::Fail(err)) => {
                    assert_eq!(err.broker_code(), Some(code(e)));
                    assert!(err.to_string().contains("may have been written"), "{err}");
                }
                other => panic!("{e:?} after an unanswered attempt: {other:?}"),
            }
            assert_eq!(s.stamp("t", 0).unwrap().producer.epoch, 2);
        }
    }

    #[test]
    fn an_epoch_error_asks_for_a_new_producer_id() {
        for e in [
            ResponseError::InvalidProducerEpoch,
            ResponseError::ProducerFenced,
        ] {
            let mut s = ready(true);
            let a = s.stamp("t", 0).unwrap();
            assert!(matches!(
                s.on_error("t", 0, a, code(e), false),
                Some(Verdict::Resend)
            ));
            assert!(s.needs_producer_id(), "{e:?}");
        }
    }

    #[test]
    fn other_errors_are_not_the_sequencers() {
        let mut s = ready(true);
        let a = s.stamp("t", 0).unwrap();
        for c in [
            code(ResponseError::NotLeaderOrFollower),
            code(ResponseError::MessageTooLarge),
            BrokerCode(-30_000),
        ] {
            assert!(s.on_error("t", 0, a, c, false).is_none());
        }
        assert_eq!(s.stamp("t", 0), Some(a), "state untouched");
    }
}
