//! Delivery reports: one shared slot per batch instead of a channel per record.
//!
//! Every record of a batch learns the same outcome (the batch's base offset, or the error the
//! batch failed with), so the batch owns one [`Outcome`] and each record's [`DeliveryFuture`]
//! holds a reference to it and the record's index in the batch. Sending a record allocates
//! nothing for its report, settling a batch is one store, and only futures somebody is waiting
//! on are woken.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use crate::error::{Error, Result};

/// Where a record was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordMetadata {
    pub topic: String,
    pub partition: i32,
    /// Offset in the partition; -1 with `acks=0`, and -1 when an idempotent retry was
    /// answered DUPLICATE_SEQUENCE_NUMBER without the first write's offset (the records are in
    /// the log exactly once, at an offset the broker no longer remembers).
    pub offset: i64,
}

/// The outcome of one batch: its base offset, or why it failed. Settled once.
pub(crate) struct Outcome {
    topic: String,
    partition: i32,
    result: OnceLock<Result<i64>>,
    waiting: Mutex<Vec<Waker>>,
}

impl Outcome {
    pub(crate) fn new(topic: String, partition: i32) -> Arc<Outcome> {
        Arc::new(Outcome {
            topic,
            partition,
            result: OnceLock::new(),
            waiting: Mutex::new(Vec::new()),
        })
    }

    /// Settle the batch; a batch settles once, later calls change nothing.
    pub(crate) fn resolve(&self, result: Result<i64>) {
        if self.result.set(result).is_err() {
            return;
        }
        // Set before taking the wakers: a poll that registers after this sees the result.
        let wakers = match self.waiting.lock() {
            Ok(mut w) => std::mem::take(&mut *w),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// The report of the record at `index` in the batch.
    pub(crate) fn future(self: &Arc<Self>, index: usize) -> DeliveryFuture {
        DeliveryFuture {
            outcome: self.clone(),
            index,
        }
    }

    fn report(&self, index: usize) -> Option<Result<RecordMetadata>> {
        let result = self.result.get()?;
        Some(match result {
            Ok(base) => Ok(RecordMetadata {
                topic: self.topic.clone(),
                partition: self.partition,
                offset: offset_of(*base, index),
            }),
            Err(e) => Err(e.clone()),
        })
    }
}

/// The offset of the record at `index` of a batch written at `base`: -1 when the base is
/// unknown (negative), and -1 rather than an overflow when a hostile base is near `i64::MAX`.
fn offset_of(base: i64, index: usize) -> i64 {
    if base < 0 {
        return -1;
    }
    i64::try_from(index)
        .ok()
        .and_then(|i| base.checked_add(i))
        .unwrap_or(-1)
}

/// Resolves when the record is acknowledged (or definitely failed).
pub struct DeliveryFuture {
    outcome: Arc<Outcome>,
    index: usize,
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.outcome.report(self.index) {
            return Poll::Ready(r);
        }
        let Ok(mut waiting) = self.outcome.waiting.lock() else {
            return Poll::Ready(Err(Error::Shutdown));
        };
        // Checked again under the lock `resolve` takes after setting the result.
        if let Some(r) = self.outcome.report(self.index) {
            return Poll::Ready(r);
        }
        if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
            waiting.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(f: &mut DeliveryFuture, waker: &Waker) -> Poll<Result<RecordMetadata>> {
        Pin::new(f).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn every_record_of_a_batch_gets_its_own_offset_and_a_waiting_one_is_woken_once() {
        let outcome = Outcome::new("t".into(), 3);
        let mut first = outcome.future(0);
        let mut third = outcome.future(2);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        assert!(poll(&mut third, &waker).is_pending());
        assert!(
            poll(&mut third, &waker).is_pending(),
            "polled twice, registered once"
        );
        outcome.resolve(Ok(100));
        outcome.resolve(Err(Error::Shutdown));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        let at = |p: Poll<Result<RecordMetadata>>| match p {
            Poll::Ready(Ok(m)) => (m.topic, m.partition, m.offset),
            other => panic!("expected an offset, got {other:?}"),
        };
        assert_eq!(at(poll(&mut third, &waker)), ("t".into(), 3, 102));
        assert_eq!(at(poll(&mut first, &waker)), ("t".into(), 3, 100));
    }

    #[test]
    fn a_failed_batch_fails_every_record() {
        let outcome = Outcome::new("t".into(), 0);
        let mut f = outcome.future(1);
        outcome.resolve(Err(Error::Shutdown));
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        assert!(matches!(
            poll(&mut f, &waker),
            Poll::Ready(Err(Error::Shutdown))
        ));
    }

    #[test]
    fn unknown_or_hostile_base_offsets_give_minus_one() {
        assert_eq!(offset_of(-1, 5), -1);
        assert_eq!(offset_of(i64::MAX - 1, 1), i64::MAX);
        assert_eq!(offset_of(i64::MAX, 1), -1);
        assert_eq!(offset_of(7, 0), 7);
    }
}
