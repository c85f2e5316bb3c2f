//! Routing a notification request in the cluster: look the target users up
//! in the connections table, hand other nodes their share through the mesh,
//! deliver what this node holds, prune rows no node holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytestring::ByteString;
use futures_util::{StreamExt, TryStreamExt};
use sumu_shared::NotificationRequest;

use super::mesh::Mesh;
use super::store::{DynamoStore, Row};
use crate::engine::{EngineError, RouteOutcome, Router};
use crate::metrics::METRICS;
use crate::registry::LocalDelivery;
use sumu_shared::mesh::MeshConnection;

/// Concurrent Queries per request.
const QUERY_CONCURRENCY: usize = 16;

pub struct AwsRouter {
    node_id: String,
    store: DynamoStore,
    mesh: Arc<Mesh>,
    local: Mutex<Option<LocalDelivery>>,
}

impl AwsRouter {
    pub fn new(node_id: String, store: DynamoStore, mesh: Arc<Mesh>) -> AwsRouter {
        AwsRouter {
            node_id,
            store,
            mesh,
            local: Mutex::new(None),
        }
    }

    pub fn attach(&self, local: LocalDelivery) {
        *self.local.lock().unwrap_or_else(|e| e.into_inner()) = Some(local);
    }

    fn local(&self) -> Result<LocalDelivery, EngineError> {
        self.local
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| EngineError::Unavailable("node is starting".into()))
    }

    /// Rows of the target users; fails as a whole (before any delivery) so
    /// that a retried request does not deliver twice.
    async fn lookup(&self, users: Vec<String>) -> Result<Vec<Row>, EngineError> {
        let per_user: Vec<Vec<Row>> = futures_util::stream::iter(users)
            .map(|u| {
                let store = self.store.clone();
                async move { store.connections_of(&u).await }
            })
            .buffer_unordered(QUERY_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(per_user.into_iter().flatten().collect())
    }
}

#[async_trait]
impl Router for AwsRouter {
    async fn route(
        &self,
        request_id: &str,
        request: NotificationRequest,
    ) -> Result<RouteOutcome, EngineError> {
        let local = self.local()?;
        if request.is_broadcast() {
            // Other nodes first: if the publish fails nothing was delivered
            // and the request is retried whole.
            self.mesh
                .broadcast(request_id, request.exclude_users.clone(), &request.data)
                .await?;
            let n = local.deliver_request(&request).await?;
            return Ok(RouteOutcome {
                local_deliveries: n,
                mesh_messages: 1,
            });
        }
        let users: Vec<String> = request.targets().cloned().collect();
        let rows = self.lookup(users).await?;
        let mut by_node: HashMap<&str, Vec<&Row>> = HashMap::new();
        for row in &rows {
            by_node.entry(row.node_id.as_str()).or_default().push(row);
        }
        let mine = by_node.remove(self.node_id.as_str());
        // Remote shares first; a retry after a partial failure is
        // deduplicated by the receivers (same request id).
        let sends = by_node.iter().map(|(node, rows)| {
            let conns = rows
                .iter()
                .map(|r| MeshConnection {
                    user_id: r.user_id.clone(),
                    connection_id: r.connection_id.clone(),
                })
                .collect();
            self.mesh.send_to(node, request_id, conns, &request.data)
        });
        let sent = futures_util::future::try_join_all(sends).await?;
        let mut outcome = RouteOutcome {
            local_deliveries: 0,
            mesh_messages: sent.iter().filter(|ok| **ok).count(),
        };
        if let Some(mine) = mine {
            let payload = ByteString::from(request.data.get());
            let ids = mine.iter().map(|r| r.connection_id.clone()).collect();
            let report = local.to_connections(ids, payload).await?;
            outcome.local_deliveries = report.delivered;
            if !report.missing.is_empty() {
                let stale: Vec<(String, String)> = mine
                    .iter()
                    .filter(|r| report.missing.contains(&r.connection_id))
                    .map(|r| (r.user_id.clone(), r.connection_id.clone()))
                    .collect();
                prune(self.store.clone(), stale);
            }
        }
        Ok(outcome)
    }
}

/// Deletes rows of connections no node holds (the seed's GoneException
/// pruning), in the background.
pub fn prune(store: DynamoStore, stale: Vec<(String, String)>) {
    if stale.is_empty() {
        return;
    }
    METRICS
        .errors
        .with_label_values(&["stale_rows"])
        .inc_by(stale.len() as u64);
    tokio::spawn(async move {
        for (user_id, connection_id) in stale {
            if let Err(e) = store.delete(&user_id, &connection_id).await {
                tracing::warn!(error = %e, %connection_id, "stale row not deleted");
            }
        }
    });
}
