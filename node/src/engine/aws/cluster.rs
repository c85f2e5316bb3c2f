//! The cluster table's `node#<id>` rows: where each node's inbox is, and
//! whether it is alive. A row the leader is reaping carries `reaped_by`
//! (`reaper.rs`): no heartbeat lands on it, so its node rejoins.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;

use super::clients::call;
use crate::clock::now_ms;
use crate::engine::{AwsErrorKind, EngineError};
use crate::metrics::Metrics;

/// How long a looked-up inbox URL is trusted. A node that rejoins with a
/// new inbox announces it on the mesh topic and the entry is dropped at
/// once (`mesh.rs`); this bound is for an announcement that was lost. A
/// node with no row is never cached: it may be rejoining, and its rows must
/// not be pruned meanwhile.
const CACHE_FOR: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeRow {
    pub(crate) node_id: String,
    pub(crate) inbox_url: String,
    pub(crate) subscription_arn: String,
    pub(crate) address: String,
    pub(crate) started_at: u64,
    pub(crate) heartbeat_at: u64,
    pub(crate) status: String,
}

pub(crate) struct Cluster {
    client: aws_sdk_dynamodb::Client,
    table: String,
    inboxes: Mutex<HashMap<String, (String, Instant)>>,
    metrics: Arc<Metrics>,
}

fn pk(node_id: &str) -> AttributeValue {
    AttributeValue::S(format!("node#{node_id}"))
}

impl Cluster {
    pub(crate) fn new(
        client: aws_sdk_dynamodb::Client,
        table: String,
        metrics: Arc<Metrics>,
    ) -> Cluster {
        Cluster {
            client,
            table,
            inboxes: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// Writes (or refreshes) this node's row. `delete_at` lets TTL clear a
    /// row nobody removed, long after the reaper would have.
    pub(crate) async fn put(&self, row: &NodeRow) -> Result<(), EngineError> {
        let now = now_ms();
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", pk(&row.node_id))
            .item("node_id", AttributeValue::S(row.node_id.clone()))
            .item("inbox_url", AttributeValue::S(row.inbox_url.clone()))
            .item(
                "subscription_arn",
                AttributeValue::S(row.subscription_arn.clone()),
            )
            .item("address", AttributeValue::S(row.address.clone()))
            .item("started_at", AttributeValue::N(row.started_at.to_string()))
            .item("heartbeat_at", AttributeValue::N(now.to_string()))
            .item("status", AttributeValue::S(row.status.clone()))
            .item(
                "delete_at",
                AttributeValue::N((now / 1000 + 86_400).to_string()),
            )
            .send();
        call(&self.metrics, "dynamodb", "PutItem", request).await?;
        Ok(())
    }

    /// Refreshes the heartbeat of `row`, only if the table still holds that
    /// row (same inbox) and no leader has marked it for reaping.
    /// `Ok(false)`: it does not: the leader is reaping (or reaped) this
    /// node, or an operator removed it, and the node must rejoin.
    pub(crate) async fn beat(&self, row: &NodeRow) -> Result<bool, EngineError> {
        let now = now_ms();
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", pk(&row.node_id))
            .update_expression("SET heartbeat_at = :now, delete_at = :d")
            .condition_expression("inbox_url = :inbox AND attribute_not_exists(reaped_by)")
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(":d", AttributeValue::N((now / 1000 + 86_400).to_string()))
            .expression_attribute_values(":inbox", AttributeValue::S(row.inbox_url.clone()))
            .send();
        match call(&self.metrics, "dynamodb", "UpdateItem", request).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind == AwsErrorKind::ConditionFailed => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) async fn delete(&self, node_id: &str) -> Result<(), EngineError> {
        let request = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", pk(node_id))
            .send();
        call(&self.metrics, "dynamodb", "DeleteItem", request).await?;
        Ok(())
    }

    /// The inbox of a node; `None` when it has no row (gone).
    pub(crate) async fn inbox_of(&self, node_id: &str) -> Result<Option<String>, EngineError> {
        if let Some((url, at)) = self
            .inboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node_id)
        {
            if at.elapsed() < CACHE_FOR {
                return Ok(Some(url.clone()));
            }
        }
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", pk(node_id))
            .consistent_read(true)
            .send();
        let out = call(&self.metrics, "dynamodb", "GetItem", request).await?;
        let url = out
            .item()
            .and_then(|i| i.get("inbox_url"))
            .and_then(|v| v.as_s().ok())
            .cloned();
        let mut inboxes = self.inboxes.lock().unwrap_or_else(|e| e.into_inner());
        match &url {
            Some(u) => {
                inboxes.insert(node_id.to_string(), (u.clone(), Instant::now()));
            }
            None => {
                inboxes.remove(node_id);
            }
        }
        Ok(url)
    }

    /// Forget a cached inbox (a send to it failed, or its node announced a
    /// new one).
    pub(crate) fn forget(&self, node_id: &str) {
        self.inboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node_id);
    }
}
