//! The cluster table's `node#<id>` rows: where each node's inbox is, and
//! whether it is alive.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;

use super::clients::call;
use crate::clock::now_ms;
use crate::engine::EngineError;

/// How long a looked-up inbox URL is trusted.
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
    inboxes: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

fn pk(node_id: &str) -> AttributeValue {
    AttributeValue::S(format!("node#{node_id}"))
}

impl Cluster {
    pub(crate) fn new(client: aws_sdk_dynamodb::Client, table: String) -> Cluster {
        Cluster {
            client,
            table,
            inboxes: Mutex::new(HashMap::new()),
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
        call("dynamodb", "PutItem", request).await?;
        Ok(())
    }

    pub(crate) async fn delete(&self, node_id: &str) -> Result<(), EngineError> {
        let request = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", pk(node_id))
            .send();
        call("dynamodb", "DeleteItem", request).await?;
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
                return Ok(url.clone());
            }
        }
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", pk(node_id))
            .consistent_read(true)
            .send();
        let out = call("dynamodb", "GetItem", request).await?;
        let url = out
            .item()
            .and_then(|i| i.get("inbox_url"))
            .and_then(|v| v.as_s().ok())
            .cloned();
        self.inboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node_id.to_string(), (url.clone(), Instant::now()));
        Ok(url)
    }

    /// Forget a cached inbox (after a send to it failed).
    pub(crate) fn forget(&self, node_id: &str) {
        self.inboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node_id);
    }
}
