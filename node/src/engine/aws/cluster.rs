//! The cluster table's `node#<id>` rows: where each node's inbox is, and
//! whether it is alive.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;

use super::clients::aws_error;
use crate::engine::{now_ms, EngineError};
use crate::metrics::aws_call;

/// How long a looked-up inbox URL is trusted.
const CACHE_FOR: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub node_id: String,
    pub inbox_url: String,
    pub subscription_arn: String,
    pub address: String,
    pub started_at: u64,
    pub heartbeat_at: u64,
    pub status: String,
}

pub struct Cluster {
    client: aws_sdk_dynamodb::Client,
    table: String,
    inboxes: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

fn pk(node_id: &str) -> AttributeValue {
    AttributeValue::S(format!("node#{node_id}"))
}

impl Cluster {
    pub fn new(client: aws_sdk_dynamodb::Client, table: String) -> Cluster {
        Cluster {
            client,
            table,
            inboxes: Mutex::new(HashMap::new()),
        }
    }

    /// Writes (or refreshes) this node's row. `delete_at` lets TTL clear a
    /// row nobody removed, long after the reaper would have.
    pub async fn put(&self, row: &NodeRow) -> Result<(), EngineError> {
        let now = now_ms();
        let call = self
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
        aws_call("dynamodb", "PutItem", call)
            .await
            .map_err(aws_error("dynamodb", "PutItem"))?;
        Ok(())
    }

    pub async fn delete(&self, node_id: &str) -> Result<(), EngineError> {
        let call = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", pk(node_id))
            .send();
        aws_call("dynamodb", "DeleteItem", call)
            .await
            .map_err(aws_error("dynamodb", "DeleteItem"))?;
        Ok(())
    }

    /// The inbox of a node; `None` when it has no row (gone).
    pub async fn inbox_of(&self, node_id: &str) -> Result<Option<String>, EngineError> {
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
        let call = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", pk(node_id))
            .consistent_read(true)
            .send();
        let out = aws_call("dynamodb", "GetItem", call)
            .await
            .map_err(aws_error("dynamodb", "GetItem"))?;
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
    pub fn forget(&self, node_id: &str) {
        self.inboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node_id);
    }
}
