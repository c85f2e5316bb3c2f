//! The reaper (leader only): a node whose heartbeat is older than the
//! timeout is dead. Its connection rows are deleted (the stream turns them
//! into OFFLINE events), then its subscription, inbox and `node#` row.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use tokio_util::sync::CancellationToken;

use super::clients::call;
use super::periodic::pause;
use super::store::DynamoStore;
use crate::clock::now_ms;
use crate::engine::EngineError;
use crate::logging::chain;
use crate::metrics::METRICS;

pub(crate) struct Reaper {
    pub(crate) ddb: aws_sdk_dynamodb::Client,
    pub(crate) sqs: aws_sdk_sqs::Client,
    pub(crate) sns: aws_sdk_sns::Client,
    pub(crate) cluster_table: String,
    pub(crate) store: DynamoStore,
    pub(crate) node_id: String,
    /// A heartbeat older than this means the node is dead.
    pub(crate) timeout: Duration,
    pub(crate) every: Duration,
}

struct DeadNode {
    node_id: String,
    inbox_url: Option<String>,
    subscription_arn: Option<String>,
}

impl Reaper {
    pub(crate) async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            match self.reap_once().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(nodes = n, "reaped dead nodes"),
                Err(e) => tracing::warn!(error = %chain(&e), "reaper pass failed"),
            }
            if !pause(&stop, self.every).await {
                return;
            }
        }
    }

    async fn dead_nodes(&self) -> Result<Vec<DeadNode>, EngineError> {
        let cutoff = now_ms().saturating_sub(self.timeout.as_millis() as u64);
        let mut dead = Vec::new();
        let mut start = None;
        loop {
            let request = self
                .ddb
                .scan()
                .table_name(&self.cluster_table)
                .filter_expression("begins_with(pk, :p) AND heartbeat_at < :cutoff")
                .expression_attribute_values(":p", AttributeValue::S("node#".into()))
                .expression_attribute_values(":cutoff", AttributeValue::N(cutoff.to_string()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send();
            let out = call("dynamodb", "Scan", request).await?;
            for item in out.items() {
                let s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
                let Some(node_id) = s("node_id") else {
                    continue;
                };
                if node_id != self.node_id {
                    dead.push(DeadNode {
                        node_id,
                        inbox_url: s("inbox_url"),
                        subscription_arn: s("subscription_arn"),
                    });
                }
            }
            start = out.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(dead);
            }
        }
    }

    pub(crate) async fn reap_once(&self) -> Result<usize, EngineError> {
        let dead = self.dead_nodes().await?;
        for node in &dead {
            tracing::warn!(node_id = %node.node_id, "node heartbeat expired: reaping");
            let rows = self.store.connections_on(&node.node_id).await?;
            let n = rows.len();
            let deletes = rows
                .iter()
                .map(|r| self.store.delete(&r.user_id, &r.connection_id));
            futures_util::future::try_join_all(deletes).await?;
            if let Some(arn) = &node.subscription_arn {
                let request = self.sns.unsubscribe().subscription_arn(arn).send();
                if let Err(e) = call("sns", "Unsubscribe", request).await {
                    tracing::warn!(error = %chain(&e), "dead node's subscription not removed");
                }
            }
            if let Some(url) = &node.inbox_url {
                let request = self.sqs.delete_queue().queue_url(url).send();
                if let Err(e) = call("sqs", "DeleteQueue", request).await {
                    tracing::warn!(error = %chain(&e), "dead node's inbox not deleted");
                }
            }
            let request = self
                .ddb
                .delete_item()
                .table_name(&self.cluster_table)
                .key("pk", AttributeValue::S(format!("node#{}", node.node_id)))
                .send();
            call("dynamodb", "DeleteItem", request).await?;
            METRICS.errors.with_label_values(&["node_reaped"]).inc();
            tracing::info!(node_id = %node.node_id, rows = n, "dead node reaped");
        }
        Ok(dead.len())
    }
}
