//! Client `publish` → SNS messages topic, `send` → SQS messages queue, with
//! SUMU's message attributes, batched (10 per call) under load.

use std::time::Duration;

use async_trait::async_trait;
use sumu_shared::attributes::{SOURCE, TIMESTAMP, USER_ID};

use super::batcher::Batcher;
use super::clients::aws_error;
use crate::engine::{ClientMessage, ClientOutput, EngineError, OutputRoute};
use crate::metrics::aws_call;

const BATCH_MAX: usize = 10;

#[derive(Clone)]
pub struct SnsSqsOutput {
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
/// lists (id, why) of the refused entries.
fn batch_results<E: std::error::Error>(
    n: usize,
    service: &'static str,
    operation: &'static str,
    outcome: Result<Vec<(String, String)>, E>,
) -> Vec<Result<(), EngineError>> {
    let error = |message: String| EngineError::Aws {
        service,
        operation,
        message,
    };
    match outcome {
        Ok(failed) => {
            let mut results: Vec<Result<(), EngineError>> = (0..n).map(|_| Ok(())).collect();
            for (id, why) in failed {
                if let Some(slot) = id.parse::<usize>().ok().and_then(|i| results.get_mut(i)) {
                    *slot = Err(error(why));
                }
            }
            results
        }
        Err(e) => {
            let why = aws_error(service, operation)(e).to_string();
            (0..n).map(|_| Err(error(why.clone()))).collect()
        }
    }
}

async fn publish_batch(
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
    let call = sns
        .publish_batch()
        .topic_arn(topic_arn)
        .set_publish_batch_request_entries(Some(entries.collect()))
        .send();
    let outcome = aws_call("sns", "PublishBatch", call).await.map(|out| {
        out.failed()
            .iter()
            .map(|f| {
                (
                    f.id().to_string(),
                    format!("{}: {}", f.code(), f.message().unwrap_or("")),
                )
            })
            .collect()
    });
    batch_results(messages.len(), "sns", "PublishBatch", outcome)
}

async fn send_batch(
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
    let call = sqs
        .send_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries.collect()))
        .send();
    let outcome = aws_call("sqs", "SendMessageBatch", call).await.map(|out| {
        out.failed()
            .iter()
            .map(|f| {
                (
                    f.id().to_string(),
                    format!("{}: {}", f.code(), f.message().unwrap_or("")),
                )
            })
            .collect()
    });
    batch_results(messages.len(), "sqs", "SendMessageBatch", outcome)
}

impl SnsSqsOutput {
    pub fn new(
        sns: aws_sdk_sns::Client,
        sqs: aws_sdk_sqs::Client,
        topic_arn: String,
        queue_url: String,
        linger: Duration,
    ) -> SnsSqsOutput {
        let publishes = Batcher::spawn("publishes", BATCH_MAX, linger, move |batch| {
            let (sns, topic_arn) = (sns.clone(), topic_arn.clone());
            async move { publish_batch(&sns, &topic_arn, batch).await }
        });
        let sends = Batcher::spawn("sends", BATCH_MAX, linger, move |batch| {
            let (sqs, queue_url) = (sqs.clone(), queue_url.clone());
            async move { send_batch(&sqs, &queue_url, batch).await }
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
        let r =
            batch_results::<std::io::Error>(3, "sqs", "Op", Ok(vec![("1".into(), "nope".into())]));
        assert!(r[0].is_ok() && r[1].is_err() && r[2].is_ok());
        let r = batch_results(2, "sqs", "Op", Err(std::io::Error::other("down")));
        assert!(r.iter().all(|x| x.is_err()));
    }
}
