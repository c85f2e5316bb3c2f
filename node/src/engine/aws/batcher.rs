//! Turns single calls into batch calls under load, with no added latency
//! when idle: a batch is flushed at once if nothing is in flight, and
//! otherwise waits up to the linger for companions.
//!
//! Invariants: a batch holds at most [`BatchLimits::max_items`] items and
//! [`BatchLimits::max_bytes`] bytes as AWS counts them (an item over that
//! alone goes in a batch of its own, for AWS to refuse it alone), in the
//! order they were submitted; at most [`MAX_FLUSHES`] batch calls of one
//! batcher run at once; and what waits for a call or is in one is bounded by
//! a [`Budget`] of bytes: an item it cannot take is refused at once with
//! [`EngineError::Overloaded`], so a slow AWS costs a bounded amount of
//! memory and its callers hear about it instead of waiting.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::engine::EngineError;

/// Batch calls of one batcher running at once. More wait (their items stay
/// queued, within the budget): a stalled AWS holds at most this many calls,
/// and the calls that wait take full batches once one ends.
pub(crate) const MAX_FLUSHES: usize = 32;

/// What an item costs the budget beside its own bytes: its queue slot, its
/// reply channel and its share of the call (so items of no size are bounded
/// too).
const ITEM_OVERHEAD: usize = 256;

/// The budget of a batcher built with [`Batcher::spawn`] (connection rows:
/// about 64 thousand waiting at [`ITEM_OVERHEAD`] each).
const DEFAULT_BUDGET: usize = 16 << 20;

/// What one batch call may carry (AWS's limits of the operation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchLimits {
    /// Entries per call.
    pub(crate) max_items: usize,
    /// Bytes per call, summed over the entries' sizes.
    pub(crate) max_bytes: usize,
}

/// Bytes of items that wait for a batch call or are in one, shared by the
/// batchers it is given to; taken at submit, given back with the answer.
pub(crate) struct Budget {
    bytes: Arc<Semaphore>,
}

impl Budget {
    pub(crate) fn new(bytes: usize) -> Arc<Budget> {
        Arc::new(Budget {
            bytes: Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))),
        })
    }

    /// Takes `bytes`, or `None` if the budget does not have them now.
    fn take(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let n = u32::try_from(bytes).ok()?;
        self.bytes.clone().try_acquire_many_owned(n).ok()
    }
}

type Reply<R> = oneshot::Sender<Result<R, EngineError>>;

/// One submitted item: what it weighs in its batch, its reply, and the
/// budget it holds until it is answered.
struct Pending<T, R> {
    item: T,
    bytes: usize,
    reply: Reply<R>,
    held: OwnedSemaphorePermit,
}

/// Fills one batch within its limits, in order.
#[derive(Debug, Default)]
struct Packer {
    items: usize,
    bytes: usize,
}

impl Packer {
    /// Whether an item of `bytes` joins the batch (it then counts): always
    /// the first, so an item over the limit alone still goes (alone).
    fn admit(&mut self, bytes: usize, limits: BatchLimits) -> bool {
        let fits = self.items == 0
            || (self.items < limits.max_items
                && self.bytes.saturating_add(bytes) <= limits.max_bytes);
        if fits {
            self.items += 1;
            self.bytes = self.bytes.saturating_add(bytes);
        }
        fits
    }

    /// Whether nothing more can join.
    fn full(&self, limits: BatchLimits) -> bool {
        self.items >= limits.max_items || self.bytes >= limits.max_bytes
    }
}

pub(crate) struct Batcher<T, R> {
    name: &'static str,
    tx: mpsc::UnboundedSender<Pending<T, R>>,
    size: fn(&T) -> usize,
    budget: Arc<Budget>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Batcher {
            name: self.name,
            tx: self.tx.clone(),
            size: self.size,
            budget: self.budget.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// A batcher of items AWS does not limit by size (at most `max` per
    /// call), with a budget of its own.
    pub(crate) fn spawn<F, Fut>(
        name: &'static str,
        max: usize,
        linger: Duration,
        flush: F,
    ) -> Batcher<T, R>
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<R, EngineError>>> + Send + 'static,
    {
        let limits = BatchLimits {
            max_items: max,
            max_bytes: usize::MAX,
        };
        Batcher::spawn_sized(
            name,
            limits,
            linger,
            Budget::new(DEFAULT_BUDGET),
            |_| 0,
            flush,
        )
    }

    /// `flush` gets one batch within `limits` (items weighed by `size`) and
    /// answers one result per item, in order. Items hold `budget` from
    /// submit to answer.
    pub(crate) fn spawn_sized<F, Fut>(
        name: &'static str,
        limits: BatchLimits,
        linger: Duration,
        budget: Arc<Budget>,
        size: fn(&T) -> usize,
        flush: F,
    ) -> Batcher<T, R>
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Result<R, EngineError>>> + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel::<Pending<T, R>>();
        tokio::spawn(run(name, limits, linger, rx, flush));
        Batcher {
            name,
            tx,
            size,
            budget,
        }
    }

    /// Sends `item` in the next batch with room, and answers its result;
    /// refused at once with [`EngineError::Overloaded`] when the budget is
    /// spent (AWS is slow or down and enough already waits).
    pub(crate) async fn submit(&self, item: T) -> Result<R, EngineError> {
        let bytes = (self.size)(&item);
        let held = self
            .budget
            .take(bytes.saturating_add(ITEM_OVERHEAD))
            .ok_or(EngineError::Overloaded(self.name))?;
        let (reply, rx) = oneshot::channel();
        let stopped = || EngineError::BatcherStopped(self.name);
        let pending = Pending {
            item,
            bytes,
            reply,
            held,
        };
        self.tx.send(pending).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// The batcher's task: takes a call slot, fills a batch from what is queued
/// (lingering for companions while other calls are in flight), and flushes
/// it on a task of its own that answers every item.
async fn run<T, R, F, Fut>(
    name: &'static str,
    limits: BatchLimits,
    linger: Duration,
    mut rx: mpsc::UnboundedReceiver<Pending<T, R>>,
    flush: F,
) where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<Result<R, EngineError>>> + Send + 'static,
{
    let flush = Arc::new(flush);
    let calls = Arc::new(Semaphore::new(MAX_FLUSHES));
    // An item that did not fit the last batch: it opens the next one.
    let mut carried: Option<Pending<T, R>> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let Ok(slot) = calls.clone().acquire_owned().await else {
            return;
        };
        // Other calls in flight: this one is not urgent, companions may come.
        let busy = calls.available_permits() + 1 < MAX_FLUSHES;
        let mut packer = Packer::default();
        packer.admit(first.bytes, limits);
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + linger;
        while !packer.full(limits) {
            let next = match rx.try_recv() {
                Ok(p) => Some(p),
                // The linger ran out (`Err`) or the senders are gone (`None`).
                Err(_) if busy => tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .unwrap_or_default(),
                Err(_) => None,
            };
            let Some(p) = next else { break };
            if packer.admit(p.bytes, limits) {
                batch.push(p);
            } else {
                carried = Some(p);
                break;
            }
        }
        let flush = flush.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut items = Vec::with_capacity(batch.len());
            let mut answers = Vec::with_capacity(batch.len());
            for p in batch {
                items.push(p.item);
                answers.push((p.reply, p.held));
            }
            let mut results = flush(items).await.into_iter();
            for (reply, held) in answers {
                let r = results.next().unwrap_or(Err(EngineError::BatchShort(name)));
                let _ = reply.send(r);
                drop(held);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[tokio::test]
    async fn batches_under_load_and_answers_each_item() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let b: Batcher<u32, u32> = Batcher::spawn(
            "t",
            10,
            Duration::from_millis(20),
            move |items: Vec<u32>| {
                seen.lock().unwrap().push(items.len());
                async move {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    items
                        .into_iter()
                        .map(|i| {
                            if i == 7 {
                                Err(EngineError::BatchShort("t"))
                            } else {
                                Ok(i * 2)
                            }
                        })
                        .collect()
                }
            },
        );
        let mut handles = Vec::new();
        for i in 0..35u32 {
            let b = b.clone();
            handles.push(tokio::spawn(async move { b.submit(i).await }));
        }
        for (i, h) in handles.into_iter().enumerate() {
            let r = h.await.unwrap();
            if i == 7 {
                assert!(r.is_err());
            } else {
                assert_eq!(r.unwrap(), i as u32 * 2);
            }
        }
        let sizes = sizes.lock().unwrap();
        assert!(sizes.iter().all(|&n| n <= 10));
        assert_eq!(sizes.iter().sum::<usize>(), 35);
        assert!(sizes.len() < 35, "no batching happened: {sizes:?}");
    }

    /// SNS `PublishBatch`'s documented limits.
    const SNS: BatchLimits = BatchLimits {
        max_items: 10,
        max_bytes: 262_144,
    };

    /// Packs `sizes` in order as the batcher does: the batches' sizes.
    fn pack(sizes: &[usize], limits: BatchLimits) -> Vec<Vec<usize>> {
        let (mut batches, mut current) = (Vec::new(), Vec::new());
        let mut packer = Packer::default();
        for &size in sizes {
            if !packer.admit(size, limits) {
                batches.push(std::mem::take(&mut current));
                packer = Packer::default();
                assert!(packer.admit(size, limits), "a first item always joins");
            }
            current.push(size);
        }
        if !current.is_empty() {
            batches.push(current);
        }
        batches
    }

    #[test]
    fn batches_stay_within_count_and_bytes_in_order() {
        // The scenario: 120 KiB publishes among small ones, which
        // made batches of 361-481 KiB in ten.
        let mut sizes = vec![120 * 1024 + 90; 4];
        sizes.splice(1..1, vec![60; 10]);
        sizes.extend(vec![60; 10]);
        let batches = pack(&sizes, SNS);
        for b in &batches {
            assert!(b.len() <= 10, "{batches:?}");
            assert!(b.iter().sum::<usize>() <= 262_144, "{batches:?}");
        }
        let flat: Vec<usize> = batches.concat();
        assert_eq!(flat, sizes, "order kept, nothing lost");
        // Two 120 KiB messages fit one batch, a third does not.
        assert_eq!(pack(&[120 * 1024; 3], SNS).len(), 2);
        // Exactly the limit fits; one byte more does not.
        assert_eq!(pack(&[131_072, 131_072], SNS).len(), 1);
        assert_eq!(pack(&[131_072, 131_073], SNS).len(), 2);
        // An item over the limit alone still goes, alone.
        assert_eq!(
            pack(&[10, 300_000, 10], SNS),
            vec![vec![10], vec![300_000], vec![10]]
        );
        // Count still caps small items.
        assert_eq!(pack(&[1; 25], SNS).len(), 3);
    }

    /// The (items, bytes) of each batch a test batcher called with.
    type Calls = Arc<Mutex<Vec<(usize, usize)>>>;

    /// A batcher whose calls record their batches' byte totals (each item
    /// is its own size) and take `call` to answer.
    fn recording(
        limits: BatchLimits,
        budget: Arc<Budget>,
        call: Duration,
    ) -> (Batcher<usize, usize>, Calls) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let b = Batcher::spawn_sized(
            "t",
            limits,
            Duration::from_millis(20),
            budget,
            |n: &usize| *n,
            move |items: Vec<usize>| {
                record
                    .lock()
                    .unwrap()
                    .push((items.len(), items.iter().sum::<usize>()));
                async move {
                    tokio::time::sleep(call).await;
                    items.into_iter().map(Ok).collect()
                }
            },
        );
        (b, seen)
    }

    #[tokio::test]
    async fn big_and_small_items_submitted_at_once_split_by_bytes() {
        let (b, seen) = recording(SNS, Budget::new(64 << 20), Duration::from_millis(10));
        let mut handles = Vec::new();
        // Four 120 KiB items among twenty small ones, queued together.
        for i in 0..24usize {
            let b = b.clone();
            let size = if (2..6).contains(&i) { 120 * 1024 } else { 50 };
            handles.push(tokio::spawn(async move { (size, b.submit(size).await) }));
        }
        for h in handles {
            let (size, r) = h.await.unwrap();
            assert_eq!(r.unwrap(), size);
        }
        let seen = seen.lock().unwrap();
        assert!(
            seen.iter().all(|&(n, bytes)| n <= 10 && bytes <= 262_144),
            "{seen:?}"
        );
        assert_eq!(seen.iter().map(|&(n, _)| n).sum::<usize>(), 24);
    }

    #[tokio::test]
    async fn calls_in_flight_and_bytes_waiting_are_bounded() {
        let limits = BatchLimits {
            max_items: 1,
            max_bytes: usize::MAX,
        };
        // A call that never ends while the gate is closed (a stalled AWS).
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (calls, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (g, c, p) = (gate.clone(), calls.clone(), peak.clone());
        let budget = Budget::new(100 * (1000 + ITEM_OVERHEAD));
        let b: Batcher<usize, ()> = Batcher::spawn_sized(
            "t",
            limits,
            Duration::ZERO,
            budget,
            |n: &usize| *n,
            move |items: Vec<usize>| {
                let (g, c, p) = (g.clone(), c.clone(), p.clone());
                async move {
                    let now = c.fetch_add(1, Ordering::SeqCst) + 1;
                    p.fetch_max(now, Ordering::SeqCst);
                    let _ = g.acquire().await;
                    c.fetch_sub(1, Ordering::SeqCst);
                    items.into_iter().map(|_| Ok(())).collect()
                }
            },
        );
        let mut waiting = Vec::new();
        for _ in 0..100 {
            let b = b.clone();
            waiting.push(tokio::spawn(async move { b.submit(1000).await }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(peak.load(Ordering::SeqCst), MAX_FLUSHES, "calls at once");
        // The budget is spent: the next item is refused at once.
        let refused = tokio::time::timeout(Duration::from_secs(1), b.submit(1000)).await;
        assert!(matches!(refused, Ok(Err(EngineError::Overloaded("t")))));
        // AWS answers: everything that waited is answered, and the budget
        // is whole again.
        gate.add_permits(1000);
        for w in waiting {
            w.await.unwrap().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), MAX_FLUSHES);
        b.submit(1000).await.unwrap();
    }

    #[tokio::test]
    async fn a_lone_item_is_flushed_without_waiting() {
        let b: Batcher<u32, u32> = Batcher::spawn(
            "t",
            10,
            Duration::from_secs(5),
            |items: Vec<u32>| async move { items.into_iter().map(Ok).collect() },
        );
        let r = tokio::time::timeout(Duration::from_secs(1), b.submit(3)).await;
        assert_eq!(r.unwrap().unwrap(), 3);
    }
}
