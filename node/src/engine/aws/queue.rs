//! SQS helpers shared by the notification pollers and the mesh inbox: one
//! long-poll loop that stops on the node's cancellation token, and batch
//! deletion of handled messages.

use std::time::Duration;

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use tokio_util::sync::CancellationToken;

use super::clients::{call, long_poll_timeouts};
use super::periodic::pause;
use crate::logging::chain;

/// How long one receive waits for messages.
const WAIT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Deletes handled messages (one call for up to 10); a failure is logged,
/// since redeliveries are deduplicated by the receivers.
pub(crate) async fn delete_handled(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    handles: Vec<String>,
) {
    if handles.is_empty() {
        return;
    }
    let entries = handles
        .iter()
        .enumerate()
        .filter_map(|(i, h)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(h)
                .build()
                .ok()
        })
        .collect();
    let request = sqs
        .delete_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries))
        .send();
    match call("sqs", "DeleteMessageBatch", request).await {
        Ok(out) if out.failed().is_empty() => {}
        Ok(out) => tracing::warn!(
            queue_url,
            failed = out.failed().len(),
            "handled messages not deleted; redeliveries will be deduplicated"
        ),
        Err(e) => {
            tracing::warn!(queue_url, error = %chain(&e), "handled messages not deleted; redeliveries will be deduplicated")
        }
    }
}

/// Long-polls one queue for batches of 10, backing off on errors.
pub(crate) struct Poll {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    backoff: Duration,
}

impl Poll {
    pub(crate) fn new(sqs: aws_sdk_sqs::Client, queue_url: String) -> Poll {
        Poll {
            sqs,
            queue_url,
            backoff: FIRST_BACKOFF,
        }
    }

    /// The next batch (possibly empty), or `None` once `stop` is cancelled.
    pub(crate) async fn next(&mut self, stop: &CancellationToken) -> Option<Vec<Message>> {
        if stop.is_cancelled() {
            return None;
        }
        let receive = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(WAIT.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .customize()
            .config_override(
                aws_sdk_sqs::config::Builder::default().timeout_config(long_poll_timeouts(WAIT)),
            )
            .send();
        let received = stop
            .run_until_cancelled(call("sqs", "ReceiveMessage", receive))
            .await?;
        match received {
            Ok(out) => {
                self.backoff = FIRST_BACKOFF;
                Some(out.messages.unwrap_or_default())
            }
            Err(e) => {
                tracing::warn!(queue_url = %self.queue_url, error = %chain(&e), "receive failed; backing off");
                if !pause(stop, self.backoff).await {
                    return None;
                }
                self.backoff = (self.backoff * 2).min(Duration::from_secs(20));
                Some(Vec::new())
            }
        }
    }

    pub(crate) async fn delete(&self, handles: Vec<String>) {
        delete_handled(&self.sqs, &self.queue_url, handles).await;
    }
}
