//! Client `publish` → SNS messages topic, `send` → SQS messages queue, with
//! SUMU's message attributes, batched (10 per call) under load.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sumu_shared::attributes::{SOURCE, TIMESTAMP, USER_ID};

use super::batcher::Batcher;
use super::clients::call;
use crate::engine::{AwsError, ClientMessage, ClientOutput, EngineError, OutputRoute};
use crate::metrics::Metrics;

const BATCH_MAX: usize = 10;

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
    let request = sqs
        .send_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries.collect()))
        .send();
    let outcome = call(metrics, "sqs", "SendMessageBatch", request)
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
    batch_results(messages.len(), "sqs", "SendMessageBatch", outcome)
}

impl SnsSqsOutput {
    pub(crate) fn new(
        sns: aws_sdk_sns::Client,
        sqs: aws_sdk_sqs::Client,
        topic_arn: String,
        queue_url: String,
        linger: Duration,
        metrics: Arc<Metrics>,
    ) -> SnsSqsOutput {
        let publish_metrics = metrics.clone();
        let publishes = Batcher::spawn("publishes", BATCH_MAX, linger, move |batch| {
            let (sns, topic_arn) = (sns.clone(), topic_arn.clone());
            let metrics = publish_metrics.clone();
            async move { publish_batch(&metrics, &sns, &topic_arn, batch).await }
        });
        let sends = Batcher::spawn("sends", BATCH_MAX, linger, move |batch| {
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
