//! `sumu-node cluster status`: the operators' view of a running fleet, read
//! from AWS alone (the cluster table, the connections table's `by_node`
//! index, the stream, the queues), so it works the same against a local
//! cluster and a fleet on AWS. A handful of calls per node and shard: fast
//! enough to run in a loop.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use aws_sdk_dynamodb::types::{AttributeValue, Select};
use aws_sdk_sqs::types::QueueAttributeName;
use serde::Serialize;

use super::clients::{call, Clients};
use super::cluster::{ClusterTable, StatusRow};
use super::presence::{millis_of, StreamReader};
use super::resources::{queue_url, Names};
use crate::clock::now_ms;
use crate::config::AwsConfig;
use crate::engine::EngineError;

/// One node as its cluster row and the connections table see it.
#[derive(Debug, Serialize)]
pub(crate) struct NodeStatus {
    pub(crate) node_id: String,
    /// `active`, `draining`, or `reaping` (the leader is reaping it).
    pub(crate) status: String,
    pub(crate) address: String,
    /// Rows of its sockets in the connections table.
    pub(crate) connections: u64,
    /// Milliseconds since its last heartbeat.
    pub(crate) heartbeat_age_ms: u64,
    pub(crate) started_at: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct LeaderStatus {
    pub(crate) node_id: String,
    /// Milliseconds until the lease expires (negative: expired).
    pub(crate) expires_in_ms: i64,
}

#[derive(Debug, Serialize)]
pub(crate) struct PresenceStatus {
    /// Age of the oldest record no leader has processed yet (0: caught up).
    pub(crate) checkpoint_lag_ms: u64,
    pub(crate) shards: usize,
}

#[derive(Debug, Serialize)]
pub(crate) struct QueueStatus {
    pub(crate) name: String,
    /// Visible messages (approximate, as SQS counts).
    pub(crate) messages: u64,
    /// Received but not yet deleted.
    pub(crate) in_flight: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct ClusterStatus {
    pub(crate) nodes: Vec<NodeStatus>,
    pub(crate) leader: Option<LeaderStatus>,
    pub(crate) presence: PresenceStatus,
    pub(crate) queues: Vec<QueueStatus>,
}

/// Reads the whole status of the fleet named by `cfg`.
pub(crate) async fn status(
    clients: &Clients,
    cfg: &AwsConfig,
) -> Result<ClusterStatus, EngineError> {
    let now = now_ms();
    let mut nodes = BTreeMap::new();
    let mut leader = None;
    let cluster = ClusterTable::new(
        clients.dynamodb.clone(),
        cfg.cluster_table.clone(),
        clients.metrics.clone(),
    );
    for row in cluster.status_rows().await? {
        match row {
            StatusRow::Node {
                node_id,
                status,
                address,
                heartbeat_at,
                started_at,
            } => {
                nodes.insert(
                    node_id.clone(),
                    NodeStatus {
                        node_id,
                        status,
                        address,
                        connections: 0,
                        heartbeat_age_ms: now.saturating_sub(heartbeat_at),
                        started_at,
                    },
                );
            }
            StatusRow::Lease { owner, expires_at } => {
                leader = Some(LeaderStatus {
                    node_id: owner,
                    expires_in_ms: expires_at as i64 - now as i64,
                });
            }
        }
    }
    for node in nodes.values_mut() {
        node.connections = count_rows(clients, &cfg.connections_table, &node.node_id).await?;
    }
    Ok(ClusterStatus {
        nodes: nodes.into_values().collect(),
        leader,
        presence: presence_lag(clients, cfg, &cluster, now).await?,
        queues: queues(clients, cfg).await?,
    })
}

/// The number of rows `by_node` holds for a node (Select COUNT, all pages).
async fn count_rows(clients: &Clients, table: &str, node_id: &str) -> Result<u64, EngineError> {
    let mut total = 0u64;
    let mut start = None;
    loop {
        let request = clients
            .dynamodb
            .query()
            .table_name(table)
            .index_name("by_node")
            .key_condition_expression("node_id = :n")
            .expression_attribute_values(":n", AttributeValue::S(node_id.to_string()))
            .select(Select::Count)
            .set_exclusive_start_key(start)
            .send();
        let out = call(&clients.metrics, "dynamodb", "Query", request).await?;
        total += out.count().max(0) as u64;
        start = out.last_evaluated_key().cloned();
        if start.is_none() {
            return Ok(total);
        }
    }
}

/// How far presence is behind: the age of the first unprocessed record of
/// each shard, at most.
async fn presence_lag(
    clients: &Clients,
    cfg: &AwsConfig,
    cluster: &ClusterTable,
    now: u64,
) -> Result<PresenceStatus, EngineError> {
    let reader = StreamReader {
        ddb: &clients.dynamodb,
        streams: &clients.streams,
        connections_table: &cfg.connections_table,
        cluster,
        metrics: &clients.metrics,
    };
    let arn = reader.stream_arn().await?;
    let shards = reader.shards(&arn).await?;
    let mut lag = 0u64;
    for (shard, _) in &shards {
        let Some(iterator) = reader.iterator(&arn, shard).await? else {
            continue;
        };
        let request = clients
            .streams
            .get_records()
            .shard_iterator(iterator)
            .limit(1)
            .send();
        let out = call(&clients.metrics, "dynamodbstreams", "GetRecords", request).await?;
        if let Some(first) = out.records().first() {
            lag = lag.max(now.saturating_sub(millis_of(first)));
        }
    }
    Ok(PresenceStatus {
        checkpoint_lag_ms: lag,
        shards: shards.len(),
    })
}

/// Depths of the notifications and messages queues and their DLQs.
async fn queues(clients: &Clients, cfg: &AwsConfig) -> Result<Vec<QueueStatus>, EngineError> {
    let names = Names::of(cfg);
    let mut out = Vec::new();
    for (name, configured) in [
        (names.notifications, cfg.notifications_queue_url.clone()),
        (names.notifications_dlq, None),
        (names.messages, cfg.messages_queue_url.clone()),
        (names.messages_dlq, None),
    ] {
        let url = match configured {
            Some(url) => url,
            None => queue_url(&clients.metrics, &clients.sqs, &name).await?,
        };
        let request = clients
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send();
        let attrs = call(&clients.metrics, "sqs", "GetQueueAttributes", request).await?;
        let get = |k: &QueueAttributeName| {
            attrs
                .attributes()
                .and_then(|a| a.get(k))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        out.push(QueueStatus {
            name,
            messages: get(&QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: get(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        });
    }
    Ok(out)
}

impl ClusterStatus {
    /// The readable table.
    pub(crate) fn table(&self) -> String {
        let mut t = String::new();
        let leader = self.leader.as_ref().map(|l| l.node_id.as_str());
        let _ = writeln!(
            t,
            "{:<24} {:<9} {:<22} {:>10} {:>12}  LEADER",
            "NODE", "STATUS", "ADDRESS", "HEARTBEAT", "CONNECTIONS"
        );
        for n in &self.nodes {
            let _ = writeln!(
                t,
                "{:<24} {:<9} {:<22} {:>9.1}s {:>12}  {}",
                n.node_id,
                n.status,
                n.address,
                n.heartbeat_age_ms as f64 / 1000.0,
                n.connections,
                if leader == Some(n.node_id.as_str()) {
                    "*"
                } else {
                    ""
                }
            );
        }
        if self.nodes.is_empty() {
            let _ = writeln!(t, "(no nodes)");
        }
        match &self.leader {
            Some(l) => {
                let _ = writeln!(
                    t,
                    "\nleader: {} (lease expires in {:.1} s)",
                    l.node_id,
                    l.expires_in_ms as f64 / 1000.0
                );
            }
            None => {
                let _ = writeln!(t, "\nleader: none");
            }
        }
        let _ = writeln!(
            t,
            "presence: checkpoint lag {} ms over {} shard(s)",
            self.presence.checkpoint_lag_ms, self.presence.shards
        );
        for q in &self.queues {
            let _ = writeln!(
                t,
                "queue {:<28} {:>8} waiting {:>8} in flight",
                q.name, q.messages, q.in_flight
            );
        }
        t
    }
}
