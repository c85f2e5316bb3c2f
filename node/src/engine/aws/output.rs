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

fn failed(op: &'static str, service: &'static str, why: String) -> EngineError {
    EngineError::Aws {
        service,
        operation: op,
        message: why,
    }
}

async fn publish_batch(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    messages: Vec<ClientMessage>,
) -> Vec<Result<(), EngineError>> {
    use aws_sdk_sns::types::{MessageAttributeValue as A, PublishBatchRequestEntry};
    let attr = |t: &str, v: String| A::builder().data_type(t).string_value(v).build().ok();
    let entries: Vec<PublishBatchRequestEntry> = messages
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            PublishBatchRequestEntry::builder()
                .id(i.to_string())
                .message(&m.body)
                .set_message_attributes(Some(
                    [
                        (USER_ID, attr("String", m.user_id.clone())),
                        (TIMESTAMP, attr("Number", m.timestamp.to_string())),
                        (SOURCE, attr("String", m.source.to_string())),
                    ]
                    .into_iter()
                    .filter_map(|(k, v)| Some((k.to_string(), v?)))
                    .collect(),
                ))
                .build()
                .ok()
        })
        .collect();
    let call = sns
        .publish_batch()
        .topic_arn(topic_arn)
        .set_publish_batch_request_entries(Some(entries))
        .send();
    match aws_call("sns", "PublishBatch", call).await {
        Ok(out) => {
            let mut results: Vec<Result<(), EngineError>> =
                (0..messages.len()).map(|_| Ok(())).collect();
            for f in out.failed() {
                if let Ok(i) = f.id().parse::<usize>() {
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Err(failed(
                            "PublishBatch",
                            "sns",
                            format!("{}: {}", f.code(), f.message().unwrap_or("")),
                        ));
                    }
                }
            }
            results
        }
        Err(e) => {
            let e = aws_error("sns", "PublishBatch")(e).to_string();
            messages
                .iter()
                .map(|_| Err(failed("PublishBatch", "sns", e.clone())))
                .collect()
        }
    }
}

async fn send_batch(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    messages: Vec<ClientMessage>,
) -> Vec<Result<(), EngineError>> {
    use aws_sdk_sqs::types::{MessageAttributeValue as A, SendMessageBatchRequestEntry};
    let attr = |t: &str, v: String| A::builder().data_type(t).string_value(v).build().ok();
    let entries: Vec<SendMessageBatchRequestEntry> = messages
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(&m.body)
                .set_message_attributes(Some(
                    [
                        (USER_ID, attr("String", m.user_id.clone())),
                        (TIMESTAMP, attr("Number", m.timestamp.to_string())),
                        (SOURCE, attr("String", m.source.to_string())),
                    ]
                    .into_iter()
                    .filter_map(|(k, v)| Some((k.to_string(), v?)))
                    .collect(),
                ))
                .build()
                .ok()
        })
        .collect();
    let call = sqs
        .send_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries))
        .send();
    match aws_call("sqs", "SendMessageBatch", call).await {
        Ok(out) => {
            let mut results: Vec<Result<(), EngineError>> =
                (0..messages.len()).map(|_| Ok(())).collect();
            for f in out.failed() {
                if let Ok(i) = f.id().parse::<usize>() {
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Err(failed(
                            "SendMessageBatch",
                            "sqs",
                            format!("{}: {}", f.code(), f.message().unwrap_or("")),
                        ));
                    }
                }
            }
            results
        }
        Err(e) => {
            let e = aws_error("sqs", "SendMessageBatch")(e).to_string();
            messages
                .iter()
                .map(|_| Err(failed("SendMessageBatch", "sqs", e.clone())))
                .collect()
        }
    }
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
