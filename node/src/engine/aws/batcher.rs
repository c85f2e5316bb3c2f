//! Turns single calls into batch calls under load, with no added latency
//! when idle: a batch is flushed at once if nothing is in flight, and
//! otherwise waits up to the linger for companions.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::engine::EngineError;

type Reply<R> = oneshot::Sender<Result<R, EngineError>>;

pub(crate) struct Batcher<T, R> {
    name: &'static str,
    tx: mpsc::Sender<(T, Reply<R>)>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Batcher {
            name: self.name,
            tx: self.tx.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// `flush` gets up to `max` items and answers one result per item, in
    /// order.
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
        let (tx, mut rx) = mpsc::channel::<(T, Reply<R>)>(max * 256);
        let flush = Arc::new(flush);
        let in_flight = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < max {
                    match rx.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
                if batch.len() < max && in_flight.load(Ordering::Acquire) > 0 {
                    let deadline = tokio::time::Instant::now() + linger;
                    while batch.len() < max {
                        match tokio::time::timeout_at(deadline, rx.recv()).await {
                            Ok(Some(item)) => batch.push(item),
                            _ => break,
                        }
                    }
                }
                let (items, replies): (Vec<T>, Vec<Reply<R>>) = batch.into_iter().unzip();
                let flush = flush.clone();
                let in_flight = in_flight.clone();
                in_flight.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(async move {
                    let mut results = flush(items).await.into_iter();
                    for reply in replies {
                        let r = results.next().unwrap_or(Err(EngineError::BatchShort(name)));
                        let _ = reply.send(r);
                    }
                    in_flight.fetch_sub(1, Ordering::AcqRel);
                });
            }
        });
        Batcher { name, tx }
    }

    pub(crate) async fn submit(&self, item: T) -> Result<R, EngineError> {
        let (reply, rx) = oneshot::channel();
        let stopped = || EngineError::BatcherStopped(self.name);
        self.tx.send((item, reply)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
