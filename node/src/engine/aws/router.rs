//! Routing a notification request in the cluster: record it in the recovery
//! history (when the window is on), look the target users up in the
//! connections table, hand other nodes their share through the mesh (with
//! the request's history positions), deliver what this node holds, prune
//! rows no node holds. This node's own deliveries are claimed in its
//! [`Delivered`] record, the one its mesh inbox claims in too, so a request
//! routed again (here or by another node) reaches each of its sockets once.
//!
//! The record comes first, before the look-up: a socket that registered
//! after the history's heads were read for it is then found by the look-up
//! of every request recorded after that read (see `engine/history.rs`). A
//! request routed again gets the positions it got the first time (the
//! history claims each request once), so a recovering socket that had it
//! live drops the second copy by position even where no record saw both.
//!
//! Each hop is timed (`sumu_route_hop_seconds`), and the local path end to
//! end (`sumu_route_seconds{path="local"}`); mesh envelopes carry the
//! routing start so the receiver times the mesh path.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytestring::ByteString;
use futures_util::{StreamExt, TryStreamExt};
use sumu_shared::NotificationRequest;

use super::delivered::Delivered;
use super::mesh::Mesh;
use super::store::{DynamoStore, Row};
use crate::clock::now_ms;
use crate::engine::history::{record_first, History};
use crate::engine::{EngineError, RouteOutcome, Router};
use crate::hub::LocalDelivery;
use crate::metrics::{Hop, Metrics, RoutePath};
use sumu_shared::mesh::MeshConnection;

/// Concurrent Queries per request.
const QUERY_CONCURRENCY: usize = 16;

pub(crate) struct AwsRouter {
    node_id: String,
    store: DynamoStore,
    mesh: Arc<Mesh>,
    local: LocalDelivery,
    delivered: Arc<Delivered>,
    history: Option<Arc<dyn History>>,
    metrics: Arc<Metrics>,
}

impl AwsRouter {
    pub(crate) fn new(
        node_id: String,
        store: DynamoStore,
        mesh: Arc<Mesh>,
        local: LocalDelivery,
        delivered: Arc<Delivered>,
        history: Option<Arc<dyn History>>,
        metrics: Arc<Metrics>,
    ) -> AwsRouter {
        AwsRouter {
            node_id,
            store,
            mesh,
            local,
            delivered,
            history,
            metrics,
        }
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
        let local = &self.local;
        let started = Instant::now();
        let routed_at = now_ms();
        // Recorded before anything else: a request that cannot be recorded
        // is delivered nowhere (and retried), so a recovering socket never
        // gets a message its resume could not replay.
        let stamp =
            record_first(self.history.as_deref(), request_id, &request, &self.metrics).await?;
        // The hops are timed from here: the record is not one of them (it
        // shows in the route's total).
        let recorded = Instant::now();
        if request.is_broadcast() {
            // Other nodes first: if the publish fails nothing was delivered
            // and the request is retried whole.
            let position = stamp.as_ref().and_then(|s| s.broadcast);
            self.mesh
                .broadcast(
                    request_id,
                    request.exclude_users.clone(),
                    &request.data,
                    position,
                    routed_at,
                )
                .await?;
            self.metrics.hop(Hop::MeshPublish, recorded.elapsed());
            let delivering = Instant::now();
            let mut n = 0;
            if self.delivered.claim_everyone(request_id) {
                n = local
                    .deliver_request_stamped(&request, stamp)
                    .await
                    .inspect_err(|_| {
                        self.delivered.release_everyone(request_id);
                    })?;
            }
            self.metrics.hop(Hop::DeliverLocal, delivering.elapsed());
            self.metrics.route(RoutePath::Local, started.elapsed());
            return Ok(RouteOutcome {
                local_deliveries: n,
                mesh_messages: 1,
            });
        }
        let users: Vec<String> = request.targets().cloned().collect();
        let rows = self.lookup(users).await?;
        self.metrics.hop(Hop::Lookup, recorded.elapsed());
        let mut by_node: HashMap<&str, Vec<&Row>> = HashMap::new();
        for row in &rows {
            by_node.entry(row.node_id.as_str()).or_default().push(row);
        }
        let mine = by_node.remove(self.node_id.as_str());
        // Remote shares first; a retry after a partial failure (or another
        // router's) is filtered by the receivers' records.
        let sends = by_node.iter().map(|(node, rows)| {
            let conns = rows
                .iter()
                .map(|r| MeshConnection {
                    user_id: r.user_id.clone(),
                    connection_id: r.connection_id.clone(),
                })
                .collect();
            self.mesh.send_to(
                node,
                request_id,
                conns,
                &request.data,
                routed_at,
                stamp.as_deref(),
            )
        });
        let sent = futures_util::future::try_join_all(sends).await?;
        let mut outcome = RouteOutcome {
            local_deliveries: 0,
            mesh_messages: sent.iter().filter(|ok| **ok).count(),
        };
        if let Some(mine) = mine {
            let payload = ByteString::from(request.data.get());
            let ids = mine.iter().map(|r| r.connection_id.clone()).collect();
            let ids = self.delivered.claim(request_id, ids);
            let delivering = Instant::now();
            let report = match local
                .to_connections_stamped(ids.clone(), payload, stamp)
                .await
            {
                Ok(report) => report,
                Err(e) => {
                    self.delivered.release(request_id, &ids);
                    return Err(e.into());
                }
            };
            self.metrics.hop(Hop::DeliverLocal, delivering.elapsed());
            self.metrics.route(RoutePath::Local, started.elapsed());
            outcome.local_deliveries = report.delivered;
            if !report.missing.is_empty() {
                let missing: std::collections::HashSet<&str> =
                    report.missing.iter().map(String::as_str).collect();
                let stale: Vec<(String, String)> = mine
                    .iter()
                    .filter(|r| missing.contains(r.connection_id.as_str()))
                    .map(|r| (r.user_id.clone(), r.connection_id.clone()))
                    .collect();
                self.store.prune(stale);
            }
        }
        Ok(outcome)
    }
}
