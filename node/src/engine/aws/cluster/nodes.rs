//! The `node#<id>` rows: a node's own writes (join, heartbeat, leave), the
//! inbox lookup of routers, and the leader's scan and fenced reap steps.
//!
//! Invariant: the heartbeat lands only on a row that still names the
//! node's inbox and carries no `reaped_by`; every reap step after the mark
//! holds only while the row is still the one this leader marked.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck};

use super::{held, n, node_key, s, ClusterTable, NodeRow, NodeSeen, REAPING};
use crate::clock::now_ms;
use crate::engine::aws::clients::call;
use crate::engine::EngineError;

/// TTL of a node row nobody removed (long after the reaper would have).
const ROW_TTL_SECS: u64 = 86_400;

/// The condition "the row names the inbox the scan saw", with its value.
fn same_inbox(node: &NodeSeen) -> (&'static str, HashMap<String, AttributeValue>) {
    match &node.inbox_url {
        Some(url) => (
            "inbox_url = :inbox",
            HashMap::from([(":inbox".to_string(), AttributeValue::S(url.clone()))]),
        ),
        None => ("attribute_not_exists(inbox_url)", HashMap::new()),
    }
}

/// The condition "the row is still the one leader `me` marked".
fn marked_condition(node: &NodeSeen, me: &str) -> (String, HashMap<String, AttributeValue>) {
    let (inbox_condition, mut values) = same_inbox(node);
    values.insert(":me".into(), AttributeValue::S(me.to_string()));
    (format!("reaped_by = :me AND {inbox_condition}"), values)
}

impl ClusterTable {
    /// Writes (or refreshes) a node's row. `delete_at` lets TTL clear a
    /// row nobody removed, long after the reaper would have.
    pub(crate) async fn put_node(&self, row: &NodeRow) -> Result<(), EngineError> {
        let now = now_ms();
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", node_key(&row.node_id))
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
                AttributeValue::N((now / 1000 + ROW_TTL_SECS).to_string()),
            )
            .send();
        call(&self.metrics, "dynamodb", "PutItem", request).await?;
        Ok(())
    }

    /// Refreshes the heartbeat of `row`, only if the table still holds that
    /// row (same inbox) and no leader has marked it; `Ok(false)` when not.
    pub(crate) async fn beat_node(&self, row: &NodeRow) -> Result<bool, EngineError> {
        let now = now_ms();
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", node_key(&row.node_id))
            .update_expression("SET heartbeat_at = :now, delete_at = :d")
            .condition_expression("inbox_url = :inbox AND attribute_not_exists(reaped_by)")
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(
                ":d",
                AttributeValue::N((now / 1000 + ROW_TTL_SECS).to_string()),
            )
            .expression_attribute_values(":inbox", AttributeValue::S(row.inbox_url.clone()))
            .send();
        held(call(&self.metrics, "dynamodb", "UpdateItem", request).await)
    }

    /// Removes a node's row (graceful leave).
    pub(crate) async fn delete_node(&self, node_id: &str) -> Result<(), EngineError> {
        let request = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", node_key(node_id))
            .send();
        call(&self.metrics, "dynamodb", "DeleteItem", request).await?;
        Ok(())
    }

    /// The inbox a node's row names; `None` when it has no row.
    pub(crate) async fn node_inbox(&self, node_id: &str) -> Result<Option<String>, EngineError> {
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", node_key(node_id))
            .consistent_read(true)
            .send();
        let out = call(&self.metrics, "dynamodb", "GetItem", request).await?;
        Ok(out.item().and_then(|i| s(i, "inbox_url")))
    }

    /// Every node row but `except`'s (consistent scan, all pages).
    pub(crate) async fn scan_nodes(&self, except: &str) -> Result<Vec<NodeSeen>, EngineError> {
        let mut nodes = Vec::new();
        for item in &self.scan_items(true).await? {
            let Some(node_id) = s(item, "node_id") else {
                continue;
            };
            if node_id != except {
                nodes.push(NodeSeen {
                    node_id,
                    heartbeat_at: n(item, "heartbeat_at").unwrap_or(0),
                    inbox_url: s(item, "inbox_url"),
                    subscription_arn: s(item, "subscription_arn"),
                });
            }
        }
        Ok(nodes)
    }

    /// Marks the row as being reaped by leader `me`, only if it still holds
    /// what was judged stale (the heartbeat and the inbox). False: it does
    /// not (the node beat or rejoined since the scan, or its row is gone).
    pub(crate) async fn mark_reaping(
        &self,
        node: &NodeSeen,
        me: &str,
    ) -> Result<bool, EngineError> {
        let (inbox_condition, mut values) = same_inbox(node);
        values.insert(":me".into(), AttributeValue::S(me.to_string()));
        values.insert(":now".into(), AttributeValue::N(now_ms().to_string()));
        values.insert(":reaping".into(), AttributeValue::S(REAPING.into()));
        values.insert(
            ":seen".into(),
            AttributeValue::N(node.heartbeat_at.to_string()),
        );
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", node_key(&node.node_id))
            .update_expression("SET reaped_by = :me, reaped_at = :now, #status = :reaping")
            .condition_expression(format!("heartbeat_at = :seen AND {inbox_condition}"))
            .expression_attribute_names("#status", "status")
            .set_expression_attribute_values(Some(values))
            .send();
        held(call(&self.metrics, "dynamodb", "UpdateItem", request).await)
    }

    /// The check every transaction deleting a reaped node's rows carries:
    /// its row is still the one leader `me` marked.
    pub(crate) fn reap_fence(
        &self,
        node: &NodeSeen,
        me: &str,
    ) -> Result<ConditionCheck, EngineError> {
        let (condition, values) = marked_condition(node, me);
        ConditionCheck::builder()
            .table_name(&self.table)
            .key("pk", node_key(&node.node_id))
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .build()
            .map_err(|source| EngineError::Build {
                what: "TransactWriteItems",
                source,
            })
    }

    /// Whether the node's row is still the one leader `me` marked (after a
    /// fenced delete was refused: the node rejoined, or a transient error).
    pub(crate) async fn still_marked(
        &self,
        node: &NodeSeen,
        me: &str,
    ) -> Result<bool, EngineError> {
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", node_key(&node.node_id))
            .consistent_read(true)
            .send();
        let out = call(&self.metrics, "dynamodb", "GetItem", request).await?;
        Ok(out.item().is_some_and(|item| {
            s(item, "reaped_by").as_deref() == Some(me) && s(item, "inbox_url") == node.inbox_url
        }))
    }

    /// Deletes the row leader `me` marked, only that one: a node that
    /// rejoined meanwhile keeps its new row (`Ok(false)`).
    pub(crate) async fn delete_marked(
        &self,
        node: &NodeSeen,
        me: &str,
    ) -> Result<bool, EngineError> {
        let (condition, values) = marked_condition(node, me);
        let request = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", node_key(&node.node_id))
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .send();
        held(call(&self.metrics, "dynamodb", "DeleteItem", request).await)
    }
}
