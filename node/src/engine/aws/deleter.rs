//! One deleter per queue (the notifications queue, a node's inbox): the
//! pollers hand it the receipt handles of the messages they are done with
//! and receive again at once; it deletes them with one DeleteMessageBatch
//! per 10, at once when 10 are waiting, else at most its linger
//! ([`linger_for`] the receive's visibility timeout: a fifth of it, at most
//! [`MAX_LINGER`]) after the first one came. Deletes cost ~0.1 call per
//! message under load, and at moderate rates about one call per queue per
//! linger, instead of one call per receive; no poller waits for them, and
//! no delivery waits for a delete (a message is deleted after it was
//! routed or delivered).
//!
//! The linger's one cost: a node that crashes holds its last linger's
//! handles undeleted, so those requests come back after their visibility
//! timeout and are routed again. Every live node's delivered record keeps
//! its sockets from getting them twice; a socket of the crashed node that
//! reconnected elsewhere in between may get such a request again (a
//! recovering one drops it by position). A drain deletes at once.
//!
//! Invariant: every handle handed over is in a delete request before the
//! deleter ends (it ends once every poller let go of it, after a last
//! flush); a handle whose delete failed (a `Failed` entry, or the whole
//! call) is logged and left to redelivery, where the per-node delivered
//! record (and the pollers' dedup) keeps it from being delivered twice.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::operation::delete_message_batch::DeleteMessageBatchOutput;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::clients::call;
use crate::logging::chain;
use crate::metrics::Metrics;

/// SQS's limit of entries per DeleteMessageBatch.
pub(crate) const MAX_BATCH: usize = 10;
/// The longest a handle waits for company.
pub(crate) const MAX_LINGER: Duration = Duration::from_secs(1);

/// How long a handle may wait for company, for messages received with
/// `visibility`: a fifth of it (far inside it, so a message is not received
/// again because its delete lingered; the smallest visibility sumu asks for
/// is 2 s), at most [`MAX_LINGER`].
pub(crate) fn linger_for(visibility: Duration) -> Duration {
    (visibility / 5).min(MAX_LINGER)
}

/// Handles waiting for their delete. Pure (instants are given), so the
/// batching is unit-tested without clocks or AWS.
#[derive(Debug)]
pub(crate) struct Pending {
    handles: Vec<String>,
    /// When the oldest waiting handle came.
    since: Option<Instant>,
    linger: Duration,
}

impl Pending {
    pub(crate) fn new(linger: Duration) -> Pending {
        Pending {
            handles: Vec::new(),
            since: None,
            linger,
        }
    }

    /// Adds a handle; answers a full batch to delete now.
    pub(crate) fn push(&mut self, handle: String, now: Instant) -> Option<Vec<String>> {
        self.since.get_or_insert(now);
        self.handles.push(handle);
        (self.handles.len() >= MAX_BATCH).then(|| self.take())
    }

    /// When the waiting handles must go (None: nothing waits).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.since.map(|s| s + self.linger)
    }

    /// Everything waiting (at most one batch: `push` hands full ones out).
    pub(crate) fn take(&mut self) -> Vec<String> {
        self.since = None;
        std::mem::take(&mut self.handles)
    }
}

/// The entries of one DeleteMessageBatch: ids are the handles' positions.
fn entries(batch: &[String]) -> Vec<DeleteMessageBatchRequestEntry> {
    batch
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(h)
                .build()
                .ok()
        })
        .collect()
}

/// The handles of `batch` that SQS reports as not deleted, with its code.
pub(crate) fn failed<'a>(
    batch: &'a [String],
    out: &DeleteMessageBatchOutput,
) -> Vec<(&'a str, String)> {
    out.failed()
        .iter()
        .filter_map(|f| {
            let handle = batch.get(f.id().parse::<usize>().ok()?)?;
            Some((handle.as_str(), f.code().to_string()))
        })
        .collect()
}

/// The sending side: pollers hand handles over here.
#[derive(Clone)]
pub(crate) struct Deleter {
    tx: mpsc::UnboundedSender<String>,
}

impl Deleter {
    /// Starts the deleter of `queue_url`. The task ends (after deleting
    /// what it holds) once every clone of the answered [`Deleter`] is
    /// dropped; await the handle to know the last delete was sent.
    pub(crate) fn start(
        sqs: aws_sdk_sqs::Client,
        queue_url: String,
        linger: Duration,
        metrics: Arc<Metrics>,
    ) -> (Deleter, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(sqs, queue_url, linger, metrics, rx));
        (Deleter { tx }, task)
    }

    /// Hands over the handles of messages that are done with.
    pub(crate) fn delete(&self, handles: impl IntoIterator<Item = String>) {
        for h in handles {
            // The task outlives every sender: a send cannot fail.
            let _ = self.tx.send(h);
        }
    }
}

async fn run(
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    linger: Duration,
    metrics: Arc<Metrics>,
    rx: mpsc::UnboundedReceiver<String>,
) {
    batches(rx, linger, |batch| send(&metrics, &sqs, &queue_url, batch)).await;
}

/// Groups what `rx` brings into batches for `send`: a full one at once,
/// the rest `linger` after its first handle, and what is left when every
/// sender is gone.
async fn batches<F, Fut>(mut rx: mpsc::UnboundedReceiver<String>, linger: Duration, mut send: F)
where
    F: FnMut(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut pending = Pending::new(linger);
    loop {
        let next = match pending.deadline() {
            Some(at) => tokio::select! {
                h = rx.recv() => h,
                () = tokio::time::sleep_until(at) => {
                    send(pending.take()).await;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(handle) = next else {
            let rest = pending.take();
            if !rest.is_empty() {
                send(rest).await;
            }
            return;
        };
        if let Some(batch) = pending.push(handle, Instant::now()) {
            send(batch).await;
        }
    }
}

/// One DeleteMessageBatch; failures are logged (redelivery is deduplicated).
async fn send(metrics: &Metrics, sqs: &aws_sdk_sqs::Client, queue_url: &str, batch: Vec<String>) {
    if batch.is_empty() {
        return;
    }
    let request = sqs
        .delete_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries(&batch)))
        .send();
    match call(metrics, "sqs", "DeleteMessageBatch", request).await {
        Ok(out) => {
            let failed = failed(&batch, &out);
            if let Some((_, code)) = failed.first() {
                tracing::warn!(
                    queue_url,
                    failed = failed.len(),
                    code = %code,
                    "handled messages not deleted; redeliveries will be deduplicated"
                );
            }
        }
        Err(e) => {
            tracing::warn!(queue_url, error = %chain(&e), "handled messages not deleted; redeliveries will be deduplicated")
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_sqs::types::{BatchResultErrorEntry, DeleteMessageBatchResultEntry};

    use super::*;

    fn handles(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("h{i}")).collect()
    }

    const LINGER: Duration = Duration::from_millis(100);

    #[test]
    fn the_linger_is_a_fifth_of_the_visibility_at_most_a_second() {
        assert_eq!(linger_for(Duration::from_secs(5)), Duration::from_secs(1));
        assert_eq!(
            linger_for(Duration::from_secs(2)),
            Duration::from_millis(400)
        );
        assert_eq!(linger_for(Duration::from_secs(30)), MAX_LINGER);
        assert_eq!(linger_for(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn a_full_batch_goes_at_once_and_the_rest_waits_its_linger() {
        let t0 = Instant::now();
        let mut p = Pending::new(LINGER);
        assert_eq!(p.deadline(), None);
        let mut out = Vec::new();
        for (i, h) in handles(23).into_iter().enumerate() {
            let now = t0 + Duration::from_millis(i as u64);
            if let Some(batch) = p.push(h, now) {
                out.push(batch);
            }
        }
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], handles(10));
        assert_eq!(out[1], handles(20)[10..].to_vec());
        // The three left wait from the first of them (the 21st, at 20 ms).
        assert_eq!(p.deadline(), Some(t0 + Duration::from_millis(20) + LINGER));
        assert_eq!(p.take(), vec!["h20", "h21", "h22"]);
        assert_eq!(p.deadline(), None);
        assert!(p.take().is_empty());
    }

    /// The task: 10 go as one batch at once, 3 more after the linger, and
    /// what is left when the pollers let go.
    #[tokio::test]
    async fn batches_go_when_full_after_the_linger_and_at_the_end() {
        let (tx, rx) = mpsc::unbounded_channel();
        let (out_tx, mut out) = mpsc::unbounded_channel();
        let task = tokio::spawn(batches(rx, LINGER, move |b| {
            let out_tx = out_tx.clone();
            async move {
                let _ = out_tx.send((b, std::time::Instant::now()));
            }
        }));
        for h in handles(13) {
            tx.send(h).unwrap();
        }
        let sent = std::time::Instant::now();
        let (first, _) = out.recv().await.unwrap();
        assert_eq!(first, handles(10));
        let (second, at) = out.recv().await.unwrap();
        assert_eq!(second, handles(13)[10..].to_vec());
        // Not before the linger (a loaded machine may make it later).
        assert!(at.duration_since(sent) >= LINGER - Duration::from_millis(5));
        tx.send("last".into()).unwrap();
        drop(tx);
        let (last, _) = out.recv().await.unwrap();
        assert_eq!(last, vec!["last"]);
        task.await.unwrap();
        assert!(out.recv().await.is_none(), "no empty batch at the end");
    }

    #[test]
    fn a_partial_failure_names_only_the_failed_handles() {
        let batch = handles(4);
        let out = DeleteMessageBatchOutput::builder()
            .successful(
                DeleteMessageBatchResultEntry::builder()
                    .id("0")
                    .build()
                    .unwrap(),
            )
            .successful(
                DeleteMessageBatchResultEntry::builder()
                    .id("2")
                    .build()
                    .unwrap(),
            )
            .failed(
                BatchResultErrorEntry::builder()
                    .id("1")
                    .code("ReceiptHandleIsInvalid")
                    .sender_fault(true)
                    .build()
                    .unwrap(),
            )
            .failed(
                BatchResultErrorEntry::builder()
                    .id("3")
                    .code("InternalError")
                    .sender_fault(false)
                    .build()
                    .unwrap(),
            )
            // An id that names no entry of the batch is ignored.
            .failed(
                BatchResultErrorEntry::builder()
                    .id("9")
                    .code("InternalError")
                    .sender_fault(false)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert_eq!(
            failed(&batch, &out),
            vec![
                ("h1", "ReceiptHandleIsInvalid".to_string()),
                ("h3", "InternalError".to_string())
            ]
        );
        let ids: Vec<String> = entries(&batch).iter().map(|e| e.id().to_string()).collect();
        assert_eq!(ids, ["0", "1", "2", "3"]);
    }
}
