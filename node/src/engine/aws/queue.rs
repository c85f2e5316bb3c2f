//! SQS helpers shared by the notification pollers and the mesh inbox.

use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;

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
