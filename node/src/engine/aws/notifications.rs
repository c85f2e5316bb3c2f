//! Notification input: long-poll the notifications queue (competing
//! consumers), route each request, delete it only once routed (its handle
//! goes to the queue's deleter, `deleter.rs`). A malformed
//! request is made visible again at once so SQS's redrive moves it to the
//! DLQ; it never holds up the rest of its batch.
//!
//! A received request is invisible to the other nodes for a short time
//! (`--notification-visibility-secs`, asked for on each receive, whatever
//! the queue's own timeout), extended every half of it while its batch is
//! being routed. So a request that a crashed node had received is routed by
//! another node at most that long after: the bound README states. A request
//! whose routing failed is retried after [`RETRY_AFTER`], so a request still
//! reaches the DLQ only after `--max-receive-count` of those.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use sumu_shared::NotificationRequest;
use tokio_util::sync::CancellationToken;

use super::clients::call;
use super::deleter::Deleter;
use super::delivered::Delivered;
use super::queue::{sent_at, set_visibility, Poll};
use crate::clock::now_ms;
use crate::engine::Router;
use crate::logging::chain;
use crate::metrics::{Hop, Metrics};

pub(crate) struct Poller {
    pub(crate) sqs: aws_sdk_sqs::Client,
    pub(crate) queue_url: String,
    pub(crate) router: Arc<dyn Router>,
    /// This node's record: a request it routed completely is not routed
    /// again when it comes back (its delete failed).
    pub(crate) delivered: Arc<Delivered>,
    /// The queue's deleter (shared by the node's pollers): handles of
    /// routed requests go there, and the poller receives again at once.
    pub(crate) deleter: Deleter,
    /// How long a received request stays invisible to others (extended
    /// while it is routed).
    pub(crate) visibility: Duration,
    pub(crate) metrics: Arc<Metrics>,
}

/// How long a request whose routing failed waits before it is retried.
const RETRY_AFTER: Duration = Duration::from_secs(30);

enum Outcome {
    /// Routed (or a duplicate): delete it.
    Done,
    /// Malformed: back to the queue now, on its way to the DLQ.
    Poison,
    /// Routing failed: leave it invisible; it comes back after the timeout.
    Retry,
}

/// The request text: the SQS body, or the `Message` of an SNS envelope
/// when the notifications topic's subscription is not raw.
pub(crate) fn request_text(body: &str) -> std::borrow::Cow<'_, str> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(rename = "Type")]
        kind: String,
        #[serde(rename = "Message")]
        message: String,
        #[serde(rename = "TopicArn")]
        _topic_arn: String,
    }
    match serde_json::from_str::<Envelope>(body) {
        Ok(env) if env.kind == "Notification" => std::borrow::Cow::Owned(env.message),
        _ => std::borrow::Cow::Borrowed(body),
    }
}

impl Poller {
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut poll = Poll::new(
            self.sqs.clone(),
            self.queue_url.clone(),
            self.metrics.clone(),
        )
        .with_visibility(self.visibility)
        .finishing_on_stop();
        // The final batch of a stop is routed like any other: the node still
        // serves its sockets while it drains.
        while let Some(messages) = poll.next(&stop).await {
            if messages.is_empty() {
                continue;
            }
            let received_at = now_ms();
            for sent in messages.iter().filter_map(sent_at) {
                self.metrics.hop_since_ms(Hop::QueueWait, sent, received_at);
            }
            let handles: Vec<String> = messages
                .iter()
                .filter_map(|m| m.receipt_handle().map(str::to_string))
                .collect();
            let routing = futures_util::future::join_all(messages.iter().map(|m| self.process(m)));
            let outcomes = self.extending(&handles, routing).await;
            let mut done = Vec::new();
            let mut retry = Vec::new();
            for (m, outcome) in messages.iter().zip(outcomes) {
                let Some(handle) = m.receipt_handle() else {
                    continue;
                };
                match outcome {
                    Outcome::Done => done.push(handle.to_string()),
                    Outcome::Poison => self.release(handle).await,
                    Outcome::Retry => retry.push(handle.to_string()),
                }
            }
            set_visibility(
                &self.metrics,
                &self.sqs,
                &self.queue_url,
                &retry,
                RETRY_AFTER,
            )
            .await;
            self.deleter.delete(done);
        }
    }

    /// Runs `work` while keeping `handles` invisible to other nodes: every
    /// half visibility timeout, one more.
    async fn extending<T>(
        &self,
        handles: &[String],
        work: impl std::future::Future<Output = T>,
    ) -> T {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                () = tokio::time::sleep(self.visibility / 2) => {}
            }
            let extend = set_visibility(
                &self.metrics,
                &self.sqs,
                &self.queue_url,
                handles,
                self.visibility,
            );
            tokio::select! {
                out = &mut work => return out,
                () = extend => {}
            }
        }
    }

    async fn process(&self, m: &Message) -> Outcome {
        let id = m.message_id().unwrap_or_default().to_string();
        let body = m.body().unwrap_or_default();
        let request = match NotificationRequest::parse(request_text(body).as_bytes()) {
            Ok(r) => r,
            Err(e) => {
                let receives = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .map(String::as_str)
                    .unwrap_or("?");
                self.metrics
                    .notifications
                    .with_label_values(&["sqs", "invalid"])
                    .inc();
                tracing::warn!(message_id = %id, receives, error = %e, "malformed notification request; it will go to the DLQ");
                return Outcome::Poison;
            }
        };
        if self.delivered.was_routed(&id) {
            self.metrics
                .notifications
                .with_label_values(&["sqs", "duplicate"])
                .inc();
            return Outcome::Done;
        }
        match self.router.route(&id, request).await {
            Ok(_) => {
                self.delivered.routed(&id);
                self.metrics
                    .notifications
                    .with_label_values(&["sqs", "routed"])
                    .inc();
                Outcome::Done
            }
            Err(e) => {
                self.metrics
                    .notifications
                    .with_label_values(&["sqs", "failed"])
                    .inc();
                tracing::warn!(message_id = %id, error = %chain(&e), "routing failed; the request will be retried");
                Outcome::Retry
            }
        }
    }

    async fn release(&self, handle: &str) {
        let request = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(handle)
            .visibility_timeout(0)
            .send();
        if let Err(e) = call(&self.metrics, "sqs", "ChangeMessageVisibility", request).await {
            tracing::debug!(error = %chain(&e), "release failed; the visibility timeout will do");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwraps_sns_envelopes_only() {
        let raw = r#"{"users":["a"],"data":1}"#;
        assert_eq!(request_text(raw), raw);
        let env = serde_json::json!({
            "Type": "Notification", "MessageId": "m", "TopicArn": "arn:t",
            "Message": raw, "Timestamp": "2026-01-01T00:00:00.000Z"
        })
        .to_string();
        assert_eq!(request_text(&env), raw);
    }
}
