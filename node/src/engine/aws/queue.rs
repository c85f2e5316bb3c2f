//! SQS helpers shared by the notification pollers and the mesh inbox: one
//! long-poll loop that stops on the node's cancellation token, and
//! visibility changes (deletes: `deleter.rs`).
//!
//! A receive that is cut off is not cancelled on the queue's side: SQS (and
//! the emulator) may still hand it messages, which then stay invisible for
//! their visibility timeout. So a poller that must not delay anything
//! (`finish_on_stop`) lets its in-flight receive finish on stop and hands
//! back what it brought.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, Message, MessageSystemAttributeName,
};
use tokio_util::sync::CancellationToken;

use super::clients::{call, long_poll_timeouts};
use super::periodic::pause;
use crate::engine::AwsErrorKind;
use crate::logging::chain;
use crate::metrics::Metrics;

/// How long one receive waits for messages.
pub(crate) const WAIT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Sets the visibility timeout of received messages (0: visible again at
/// once); one call per 10. A failure is logged: the queue's own timeout
/// then applies.
pub(crate) async fn set_visibility(
    metrics: &Metrics,
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    handles: &[String],
    visibility: Duration,
) {
    for chunk in handles.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(h)
                    .visibility_timeout(visibility.as_secs() as i32)
                    .build()
                    .ok()
            })
            .collect();
        let request = sqs
            .change_message_visibility_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send();
        match call(metrics, "sqs", "ChangeMessageVisibilityBatch", request).await {
            Ok(out) if out.failed().is_empty() => {}
            Ok(out) => tracing::debug!(
                queue_url,
                failed = out.failed().len(),
                "visibility not changed for some messages"
            ),
            Err(e) => tracing::debug!(queue_url, error = %chain(&e), "visibility not changed"),
        }
    }
}

/// When SQS accepted `m` (its `SentTimestamp`, ms since the epoch), if the
/// receive asked for it.
pub(crate) fn sent_at(m: &Message) -> Option<u64> {
    m.attributes()?
        .get(&MessageSystemAttributeName::SentTimestamp)?
        .parse()
        .ok()
}

/// Long-polls one queue for batches of 10, backing off on errors.
pub(crate) struct Poll {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    backoff: Duration,
    /// The visibility timeout asked for on each receive (None: the queue's).
    visibility: Option<Duration>,
    /// On stop, let the in-flight receive finish and hand its messages back.
    finish_on_stop: bool,
    /// The last receive answered with the final batch of a stop.
    finished: bool,
    /// The queue does not exist (deleted under us).
    gone: bool,
    metrics: Arc<Metrics>,
}

impl Poll {
    pub(crate) fn new(sqs: aws_sdk_sqs::Client, queue_url: String, metrics: Arc<Metrics>) -> Poll {
        Poll {
            sqs,
            queue_url,
            backoff: FIRST_BACKOFF,
            visibility: None,
            finish_on_stop: false,
            finished: false,
            gone: false,
            metrics,
        }
    }

    /// Received messages stay invisible for `visibility` (not the queue's
    /// timeout).
    pub(crate) fn with_visibility(mut self, visibility: Duration) -> Poll {
        self.visibility = Some(visibility);
        self
    }

    /// On stop, the in-flight receive finishes (bounded) and its messages
    /// are the last batch, instead of being left invisible on the queue.
    pub(crate) fn finishing_on_stop(mut self) -> Poll {
        self.finish_on_stop = true;
        self
    }

    /// The last receive found no queue (it was deleted).
    pub(crate) fn gone(&self) -> bool {
        self.gone
    }

    /// The next batch (possibly empty), or `None` once `stop` is cancelled
    /// (after the final batch, when finishing on stop).
    pub(crate) async fn next(&mut self, stop: &CancellationToken) -> Option<Vec<Message>> {
        if stop.is_cancelled() || self.finished {
            return None;
        }
        let receive = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(WAIT.as_secs() as i32)
            .set_visibility_timeout(self.visibility.map(|v| v.as_secs() as i32))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .customize()
            .config_override(
                aws_sdk_sqs::config::Builder::default().timeout_config(long_poll_timeouts(WAIT)),
            )
            .send();
        let receive = call(&self.metrics, "sqs", "ReceiveMessage", receive);
        tokio::pin!(receive);
        let received = tokio::select! {
            r = &mut receive => r,
            _ = stop.cancelled() => {
                if !self.finish_on_stop {
                    return None;
                }
                self.finished = true;
                // Bounded by the long poll's own wait and timeouts.
                return match receive.await {
                    Ok(out) => Some(out.messages.unwrap_or_default()),
                    Err(_) => None,
                };
            }
        };
        match received {
            Ok(out) => {
                self.backoff = FIRST_BACKOFF;
                self.gone = false;
                Some(out.messages.unwrap_or_default())
            }
            Err(e) => {
                self.gone = e.kind == AwsErrorKind::NotFound;
                tracing::warn!(queue_url = %self.queue_url, error = %chain(&e), "receive failed; backing off");
                if !pause(stop, self.backoff).await {
                    return None;
                }
                self.backoff = (self.backoff * 2).min(Duration::from_secs(20));
                Some(Vec::new())
            }
        }
    }
}
