//! The cluster table, one module for all its rows: `node#<id>` (where each
//! node's inbox is, whether it is alive, whether a leader is reaping it),
//! `lease#leader` (who leads), and `checkpoint#<stream>#<shard>` (how far
//! the leader's presence consumer has read the connections table's stream).
//! Key formats, attribute names and every request on the table live here
//! (`nodes.rs`, `lease.rs`, `checkpoints.rs`); the rest of the engine calls
//! typed functions on [`ClusterTable`].
//!
//! Invariant: a row the leader is reaping carries `reaped_by` (see
//! `reaper.rs`): no heartbeat lands on it, so its node rejoins; every step
//! of the reap is conditional on that mark.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;

use super::clients::call;
use crate::engine::{AwsError, AwsErrorKind, EngineError};
use crate::metrics::Metrics;

mod checkpoints;
mod lease;
mod nodes;

/// How long a looked-up inbox URL is trusted. A node that rejoins with a
/// new inbox announces it on the mesh topic and the entry is dropped at
/// once (`mesh/`); this bound is for an announcement that was lost. A
/// node with no row is never cached: it may be rejoining, and its rows must
/// not be pruned meanwhile.
const CACHE_FOR: Duration = Duration::from_secs(60);

/// The `status` of a row being reaped (`cluster status` shows it).
const REAPING: &str = "reaping";

/// The leader's lease row.
const LEASE_KEY: &str = "lease#leader";

fn node_key(node_id: &str) -> AttributeValue {
    AttributeValue::S(format!("node#{node_id}"))
}

fn checkpoint_key(stream_arn: &str, shard: &str) -> AttributeValue {
    AttributeValue::S(format!("checkpoint#{stream_arn}#{shard}"))
}

/// The cluster table and the client that reaches it.
#[derive(Clone)]
pub(crate) struct ClusterTable {
    client: aws_sdk_dynamodb::Client,
    table: String,
    metrics: Arc<Metrics>,
}

/// A node's row as this node writes it.
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

/// A node's row as one scan saw it (the reaper judges and fences on it).
#[derive(Debug, Clone)]
pub(crate) struct NodeSeen {
    pub(crate) node_id: String,
    pub(crate) heartbeat_at: u64,
    pub(crate) inbox_url: Option<String>,
    pub(crate) subscription_arn: Option<String>,
}

/// A row of the table as `cluster status` shows it.
#[derive(Debug, Clone)]
pub(crate) enum StatusRow {
    Node {
        node_id: String,
        status: String,
        address: String,
        heartbeat_at: u64,
        started_at: u64,
    },
    Lease {
        owner: String,
        expires_at: u64,
    },
}

type Item = HashMap<String, AttributeValue>;

/// The outcome of a conditional write: `Ok(false)` when its condition did
/// not hold (someone else's lease, a row that changed or went).
fn held<T>(result: Result<T, AwsError>) -> Result<bool, EngineError> {
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.kind == AwsErrorKind::ConditionFailed => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn s(item: &Item, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

fn n(item: &Item, k: &str) -> Option<u64> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
}

impl ClusterTable {
    pub(crate) fn new(
        client: aws_sdk_dynamodb::Client,
        table: String,
        metrics: Arc<Metrics>,
    ) -> ClusterTable {
        ClusterTable {
            client,
            table,
            metrics,
        }
    }

    /// Every item of the table, or only its `node#` rows (filtered by
    /// DynamoDB): one consistent scan, all pages.
    pub(crate) async fn scan_items(
        &self,
        node_rows_only: bool,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, EngineError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let mut request = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start);
            if node_rows_only {
                request = request
                    .filter_expression("begins_with(pk, :p)")
                    .expression_attribute_values(":p", AttributeValue::S("node#".into()));
            }
            let out = call(&self.metrics, "dynamodb", "Scan", request.send()).await?;
            items.extend(out.items().iter().cloned());
            start = out.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// Every node row and the lease (one consistent scan, all pages).
    pub(crate) async fn status_rows(&self) -> Result<Vec<StatusRow>, EngineError> {
        let mut rows = Vec::new();
        for item in &self.scan_items(false).await? {
            let pk = s(item, "pk").unwrap_or_default();
            let text = |k| s(item, k).unwrap_or_default();
            let num = |k| n(item, k).unwrap_or(0);
            if pk.starts_with("node#") {
                rows.push(StatusRow::Node {
                    node_id: text("node_id"),
                    status: text("status"),
                    address: text("address"),
                    heartbeat_at: num("heartbeat_at"),
                    started_at: num("started_at"),
                });
            } else if pk == LEASE_KEY {
                rows.push(StatusRow::Lease {
                    owner: text("owner"),
                    expires_at: num("expires_at"),
                });
            }
        }
        Ok(rows)
    }
}

/// This node's view of the mesh's `node#` rows: its own row's writes, and
/// the other nodes' inboxes (cached).
pub(crate) struct Cluster {
    table: ClusterTable,
    inboxes: Mutex<HashMap<String, (String, Instant)>>,
}

impl Cluster {
    pub(crate) fn new(table: ClusterTable) -> Cluster {
        Cluster {
            table,
            inboxes: Mutex::new(HashMap::new()),
        }
    }

    /// Writes (or refreshes) this node's row.
    pub(crate) async fn put(&self, row: &NodeRow) -> Result<(), EngineError> {
        self.table.put_node(row).await
    }

    /// Refreshes the heartbeat of `row`, only if the table still holds that
    /// row (same inbox) and no leader has marked it for reaping.
    /// `Ok(false)`: it does not: the leader is reaping (or reaped) this
    /// node, or an operator removed it, and the node must rejoin.
    pub(crate) async fn beat(&self, row: &NodeRow) -> Result<bool, EngineError> {
        self.table.beat_node(row).await
    }

    pub(crate) async fn delete(&self, node_id: &str) -> Result<(), EngineError> {
        self.table.delete_node(node_id).await
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
        let url = self.table.node_inbox(node_id).await?;
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
