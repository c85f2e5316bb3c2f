//! SQS helpers shared by the notification pollers and the mesh inbox.

use std::time::Duration;

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, Message, MessageSystemAttributeName};
use tokio::sync::watch;

use super::clients::aws_error;
use crate::metrics::aws_call;

/// Deletes handled messages (one call for up to 10); a failure is logged,
/// since redeliveries are deduplicated by the receivers.
pub async fn delete_handled(sqs: &aws_sdk_sqs::Client, queue_url: &str, handles: Vec<String>) {
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
    let call = sqs
        .delete_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries))
        .send();
    match aws_call("sqs", "DeleteMessageBatch", call).await {
        Ok(out) if out.failed().is_empty() => {}
        Ok(out) => tracing::warn!(
            queue_url,
            failed = out.failed().len(),
            "handled messages not deleted; redeliveries will be deduplicated"
        ),
        Err(e) => {
            tracing::warn!(queue_url, error = %aws_error("sqs", "DeleteMessageBatch")(e), "handled messages not deleted; redeliveries will be deduplicated")
        }
    }
}

/// Long-polls one queue for batches of 10, backing off on errors.
pub struct Poll {
    pub sqs: aws_sdk_sqs::Client,
    pub queue_url: String,
    backoff: Duration,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(200);

impl Poll {
    pub fn new(sqs: aws_sdk_sqs::Client, queue_url: String) -> Poll {
        Poll {
            sqs,
            queue_url,
            backoff: FIRST_BACKOFF,
        }
    }

    /// The next batch (possibly empty), or `None` once `stop` is signalled.
    pub async fn next(&mut self, stop: &mut watch::Receiver<bool>) -> Option<Vec<Message>> {
        if *stop.borrow() {
            return None;
        }
        let receive = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(10)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send();
        let received = tokio::select! {
            _ = stop.changed() => return None,
            r = aws_call("sqs", "ReceiveMessage", receive) => r,
        };
        match received {
            Ok(out) => {
                self.backoff = FIRST_BACKOFF;
                Some(out.messages.unwrap_or_default())
            }
            Err(e) => {
                tracing::warn!(queue_url = %self.queue_url, error = %aws_error("sqs", "ReceiveMessage")(e), "receive failed; backing off");
                tokio::select! {
                    _ = stop.changed() => return None,
                    _ = tokio::time::sleep(self.backoff) => {}
                }
                self.backoff = (self.backoff * 2).min(Duration::from_secs(20));
                Some(Vec::new())
            }
        }
    }

    pub async fn delete(&self, handles: Vec<String>) {
        delete_handled(&self.sqs, &self.queue_url, handles).await;
    }
}
