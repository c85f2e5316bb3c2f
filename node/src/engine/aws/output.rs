//! Client `publish` → SNS messages topic, `send` → SQS messages queue, with
//! SUMU's message attributes, batched under load within AWS's limits per
//! call (entries and bytes, [`SNS_BATCH`] and [`SQS_BATCH`]). Both routes
//! share one budget of bytes waiting for AWS: past it a message is refused
//! at once (`EngineError::Overloaded`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sumu_shared::attributes::{SOURCE, TIMESTAMP, USER_ID};

use super::batcher::{BatchLimits, Batcher, Budget};
use super::clients::call;
use crate::engine::{AwsError, ClientMessage, ClientOutput, EngineError, OutputRoute};
use crate::metrics::Metrics;

/// SNS `PublishBatch`: 10 entries and 256 KiB in all, bodies and attributes
/// counted (the topic's default `MaximumMessageSize`).
pub(crate) const SNS_BATCH: BatchLimits = BatchLimits {
    max_items: 10,
    max_bytes: 262_144,
};

/// SQS `SendMessageBatch`: 10 entries and 1 MiB in all, bodies and
/// attributes counted.
pub(crate) const SQS_BATCH: BatchLimits = BatchLimits {
    max_items: 10,
    max_bytes: 1_048_576,
};

#[derive(Clone)]
pub(crate) struct SnsSqsOutput {
    publishes: Batcher<ClientMessage, ()>,
    sends: Batcher<ClientMessage, ()>,
}

/// The three SUMU attributes of a message, as (name, data type, value).
fn attributes(m: &ClientMessage) -> [(&'static str, &'static str, String); 3] {
    [
        (USER_ID, "String", m.user_id.clone()),
        (TIMESTAMP, "Number", m.timestamp.to_string()),
        (SOURCE, "String", m.source.to_string()),
    ]
}

/// A message's size as SNS and SQS count it against their limits: its body,
/// and each attribute's name, data type and value.
fn aws_size(m: &ClientMessage) -> usize {
    m.body.len()
        + attributes(m)
            .iter()
            .map(|(name, kind, value)| name.len() + kind.len() + value.len())
            .sum::<usize>()
}

/// Per-entry results of a batch call: entry ids are the indexes; `failed`
/// lists (id, code, message) of the refused entries.
fn batch_results(
    n: usize,
    service: &'static str,
    operation: &'static str,
    outcome: Result<Vec<(String, String, String)>, AwsError>,
) -> Vec<Result<(), EngineError>> {
    match outcome {
        Ok(failed) => {
            let mut results: Vec<Result<(), EngineError>> = (0..n).map(|_| Ok(())).collect();
            for (id, code, message) in failed {
                if let Some(slot) = id.parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
                    *slot = Err(EngineError::EntryRefused {
                        service,
                        operation,
                        code,
                        message,
                    });
                }
            }
            results
        }
        Err(e) => {
            let source = Arc::new(e);
            (0..n)
                .map(|_| {
                    Err(EngineError::Batch {
                        service,
                        operation,
                        source: source.clone(),
                    })
                })
                .collect()
        }
    }
}

async fn publish_batch(
    metrics: &Metrics,
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    messages: Vec<ClientMessage>,
) -> Vec<Result<(), EngineError>> {
    use aws_sdk_sns::types::{MessageAttributeValue as A, PublishBatchRequestEntry as E};
    let entries = messages.iter().enumerate().filter_map(|(i, m)| {
        let attrs = attributes(m).into_iter().filter_map(|(k, t, v)| {
            Some((
                k.to_string(),
                A::builder().data_type(t).string_value(v).build().ok()?,
            ))
        });
        E::builder()
            .id(i.to_string())
            .message(&m.body)
            .set_message_attributes(Some(attrs.collect()))
            .build()
            .ok()
    });
    let request = sns
        .publish_batch()
        .topic_arn(topic_arn)
        .set_publish_batch_request_entries(Some(entries.collect()))
        .send();
    let outcome = call(metrics, "sns", "PublishBatch", request)
        .await
        .map(|out| {
            out.failed()
                .iter()
                .map(|f| {
                    let message = f.message().unwrap_or_default().to_string();
                    (f.id().to_string(), f.code().to_string(), message)
                })
                .collect()
        });
    batch_results(messages.len(), "sns", "PublishBatch", outcome)
}

async fn send_batch(
    metrics: &Metrics,
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    messages: Vec<ClientMessage>,
) -> Vec<Result<(), EngineError>> {
    use aws_sdk_sqs::types::{MessageAttributeValue as A, SendMessageBatchRequestEntry as E};
    let entries = messages.iter().enumerate().filter_map(|(i, m)| {
        let attrs = attributes(m).into_iter().filter_map(|(k, t, v)| {
            Some((
                k.to_string(),
                A::builder().data_type(t).string_value(v).build().ok()?,
            ))
        });
        E::builder()
            .id(i.to_string())
            .message_body(&m.body)
            .set_message_attributes(Some(attrs.collect()))
            .build()
            .ok()
    });
    sqs_send_batch(metrics, sqs, queue_url, messages.len(), entries.collect()).await
}

/// Sends plain bodies (no attributes) to a queue in one `SendMessageBatch`
/// (at most [`SQS_BATCH`]), one result per body, in order: the mesh's
/// envelopes to another node's inbox.
pub(crate) async fn send_bodies(
    metrics: &Metrics,
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    bodies: Vec<String>,
) -> Vec<Result<(), EngineError>> {
    use aws_sdk_sqs::types::SendMessageBatchRequestEntry as E;
    let n = bodies.len();
    let entries = bodies.into_iter().enumerate().filter_map(|(i, body)| {
        E::builder()
            .id(i.to_string())
            .message_body(body)
            .build()
            .ok()
    });
    sqs_send_batch(metrics, sqs, queue_url, n, entries.collect()).await
}

/// One `SendMessageBatch` of `entries` (ids are the indexes of `n` items; an
/// entry that could not be built is missing, and its item is answered as
/// refused by AWS would be: never as sent).
async fn sqs_send_batch(
    metrics: &Metrics,
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    n: usize,
    entries: Vec<aws_sdk_sqs::types::SendMessageBatchRequestEntry>,
) -> Vec<Result<(), EngineError>> {
    let built: std::collections::HashSet<String> =
        entries.iter().map(|e| e.id().to_string()).collect();
    let request = sqs
        .send_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries))
        .send();
    let outcome = call(metrics, "sqs", "SendMessageBatch", request)
        .await
        .map(|out| {
            let unbuilt = (0..n)
                .map(|i| i.to_string())
                .filter(|id| !built.contains(id))
                .map(|id| {
                    (
                        id,
                        "Unbuilt".to_string(),
                        "entry could not be built".to_string(),
                    )
                });
            out.failed()
                .iter()
                .map(|f| {
                    let message = f.message().unwrap_or_default().to_string();
                    (f.id().to_string(), f.code().to_string(), message)
                })
                .chain(unbuilt)
                .collect()
        });
    batch_results(n, "sqs", "SendMessageBatch", outcome)
}

impl SnsSqsOutput {
    /// `max_bytes_in_flight`: the bytes of messages that may wait for AWS
    /// (or be in a call) at once, both routes together.
    pub(crate) fn new(
        sns: aws_sdk_sns::Client,
        sqs: aws_sdk_sqs::Client,
        topic_arn: String,
        queue_url: String,
        linger: Duration,
        max_bytes_in_flight: usize,
        metrics: Arc<Metrics>,
    ) -> SnsSqsOutput {
        let budget = Budget::new(max_bytes_in_flight);
        let publish_metrics = metrics.clone();
        let publishes = Batcher::spawn_sized(
            "publishes",
            SNS_BATCH,
            linger,
            budget.clone(),
            aws_size,
            move |batch| {
                let (sns, topic_arn) = (sns.clone(), topic_arn.clone());
                let metrics = publish_metrics.clone();
                async move { publish_batch(&metrics, &sns, &topic_arn, batch).await }
            },
        );
        let sends =
            Batcher::spawn_sized("sends", SQS_BATCH, linger, budget, aws_size, move |batch| {
                let (sqs, queue_url) = (sqs.clone(), queue_url.clone());
                let metrics = metrics.clone();
                async move { send_batch(&metrics, &sqs, &queue_url, batch).await }
            });
        SnsSqsOutput { publishes, sends }
    }
}

#[async_trait]
impl ClientOutput for SnsSqsOutput {
    async fn emit(&self, message: ClientMessage) -> Result<(), EngineError> {
        match message.route {
            OutputRoute::Publish => self.publishes.submit(message).await,
            OutputRoute::Send => self.sends.submit(message).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_count_the_body_and_every_attribute() {
        let m = ClientMessage {
            route: OutputRoute::Publish,
            source: OutputRoute::Publish.source(),
            user_id: "alice".into(),
            timestamp: 1_700_000_000_000,
            body: "x".repeat(1000),
        };
        // user_id String alice, timestamp Number 13 digits, source String apigw.route.publish
        let attrs = (7 + 6 + 5) + (9 + 6 + 13) + (6 + 6 + 19);
        assert_eq!(aws_size(&m), 1000 + attrs);
    }

    #[test]
    fn the_limits_are_aws_documented_ones() {
        assert_eq!((SNS_BATCH.max_items, SNS_BATCH.max_bytes), (10, 256 * 1024));
        assert_eq!(
            (SQS_BATCH.max_items, SQS_BATCH.max_bytes),
            (10, 1024 * 1024)
        );
    }

    #[test]
    fn batch_results_map_failed_ids_to_their_entries() {
        let refused = ("1".into(), "Throttled".into(), "nope".into());
        let r = batch_results(3, "sqs", "Op", Ok(vec![refused]));
        assert!(r[0].is_ok() && r[1].is_err() && r[2].is_ok());
        let down = AwsError {
            service: "sqs",
            operation: "Op",
            kind: crate::engine::AwsErrorKind::Unreachable,
            source: None,
        };
        let r = batch_results(2, "sqs", "Op", Err(down));
        assert!(r.iter().all(|x| x.is_err()));
    }
}

/// Against the real emulator (the full gate; the fast tier skips
/// `emulator_tests::`): what one `SendMessageBatch` of the mesh's envelopes
/// answers per body, for a batch that goes through, one that AWS refuses
/// in part, and one whose queue is gone.
#[cfg(test)]
mod emulator_tests {
    use super::*;
    use crate::engine::aws::clients::Clients;

    async fn received(sqs: &aws_sdk_sqs::Client, url: &str, want: usize) -> Vec<String> {
        let mut bodies = Vec::new();
        for _ in 0..20 {
            let out = sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .send()
                .await
                .unwrap();
            bodies.extend(
                out.messages()
                    .iter()
                    .filter_map(|m| m.body().map(str::to_string)),
            );
            if bodies.len() >= want {
                break;
            }
        }
        bodies.sort();
        bodies
    }

    #[actix::test]
    async fn emulator_answers_each_envelope_of_a_batch() {
        let emulator = sumu_testkit::Emulator::start();
        let (_, c) = Clients::for_emulator(&emulator).await;
        let url = c
            .sqs
            .create_queue()
            .queue_name("TestInbox")
            .send()
            .await
            .unwrap()
            .queue_url()
            .unwrap()
            .to_string();
        let bodies: Vec<String> = (0..10).map(|i| format!("envelope {i}")).collect();
        let r = send_bodies(&c.metrics, &c.sqs, &url, bodies.clone()).await;
        assert!(r.iter().all(|x| x.is_ok()), "{r:?}");
        assert_eq!(received(&c.sqs, &url, 10).await, bodies);

        // A body SQS does not accept (U+0000 is outside its character set)
        // is refused alone: the others are sent, and answered as sent.
        let mixed = vec![
            "first".to_string(),
            "bad \u{0} body".to_string(),
            "third".to_string(),
        ];
        let r = send_bodies(&c.metrics, &c.sqs, &url, mixed).await;
        assert!(r[0].is_ok() && r[2].is_ok(), "{r:?}");
        assert!(
            matches!(r[1], Err(EngineError::EntryRefused { .. })),
            "{:?}",
            r[1]
        );
        assert_eq!(received(&c.sqs, &url, 2).await, vec!["first", "third"]);

        // The queue gone (the node left): every body fails, as "not found",
        // which sends the mesh back to the node's row for its new inbox.
        c.sqs.delete_queue().queue_url(&url).send().await.unwrap();
        let r = send_bodies(&c.metrics, &c.sqs, &url, vec!["a".into(), "b".into()]).await;
        assert_eq!(r.len(), 2);
        for x in &r {
            let e = x.as_ref().unwrap_err();
            assert!(e.not_found(), "{e:?}");
        }
    }
}
