//! Who is in the mesh. A node's `node#` row names its inbox; its heartbeat
//! refreshes that row only while the row still names that inbox and no
//! leader has marked it for reaping. A node that finds its row gone or
//! marked, or its inbox gone (the leader is reaping it, or reaped it, while
//! it was frozen or cut off from AWS), is not ready until it has rejoined:
//! a new inbox and subscription, its row (which ends the leader's hold on
//! it), then the rows of every socket it still holds (presence sees them
//! ONLINE again).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use futures_util::StreamExt;
use sumu_shared::mesh::{MeshEnvelope, MeshTarget};
use tokio_util::sync::CancellationToken;

use super::Mesh;
use crate::clock::now_ms;
use crate::engine::aws::clients::call;
use crate::engine::aws::cluster::NodeRow;
use crate::engine::aws::periodic::pause;
use crate::engine::aws::resources::{create_queue, sns_to_sqs_policy};
use crate::engine::{AwsErrorKind, ConnectionRecord, ConnectionStore, EngineError};
use crate::logging::chain;

/// Concurrent connection-row writes while rejoining.
const REJOIN_WRITES: usize = 64;
const REJOIN_FIRST_BACKOFF: Duration = Duration::from_secs(1);
const REJOIN_MAX_BACKOFF: Duration = Duration::from_secs(10);

impl Mesh {
    /// Creates the inbox, subscribes it raw to the mesh topic, writes the
    /// node's row.
    pub(crate) async fn join(&self) -> Result<NodeRow, EngineError> {
        self.join_as(&self.settings.inbox_name, now_ms()).await
    }

    async fn join_as(&self, inbox_name: &str, started_at: u64) -> Result<NodeRow, EngineError> {
        let (url, arn) = create_queue(
            &self.metrics,
            &self.sqs,
            inbox_name,
            HashMap::from([
                (QueueAttributeName::SqsManagedSseEnabled, "true".to_string()),
                (
                    QueueAttributeName::MessageRetentionPeriod,
                    "3600".to_string(),
                ),
            ]),
        )
        .await?;
        let request = self
            .sqs
            .set_queue_attributes()
            .queue_url(&url)
            .attributes(
                QueueAttributeName::Policy,
                sns_to_sqs_policy(&arn, &self.settings.topic_arn),
            )
            .send();
        call(&self.metrics, "sqs", "SetQueueAttributes", request).await?;
        let request = self
            .sns
            .subscribe()
            .topic_arn(&self.settings.topic_arn)
            .protocol("sqs")
            .endpoint(&arn)
            .attributes("RawMessageDelivery", "true")
            .return_subscription_arn(true)
            .send();
        let subscription_arn = call(&self.metrics, "sns", "Subscribe", request)
            .await?
            .subscription_arn()
            .unwrap_or_default()
            .to_string();
        let row = NodeRow {
            node_id: self.settings.node_id.clone(),
            inbox_url: url,
            subscription_arn,
            address: self.settings.address.clone(),
            started_at,
            heartbeat_at: now_ms(),
            status: "active".into(),
        };
        self.cluster.put(&row).await?;
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = Some(row.clone());
        self.inbox_changed.notify_one();
        self.announce(&row).await;
        tracing::info!(inbox = %row.inbox_url, "joined the mesh");
        Ok(row)
    }

    /// Tells every node (mesh topic) that this node's inbox is `row`'s now,
    /// before its sockets' rows lead routers here: a router that cached an
    /// older inbox of it (real SQS may accept messages into a deleted queue
    /// for a while, losing them silently) looks it up again. Best effort: a
    /// router that missed it finds the new inbox when its cache expires.
    async fn announce(&self, row: &NodeRow) {
        let env = MeshEnvelope {
            request_id: format!("join#{}#{}", row.node_id, row.heartbeat_at),
            from_node: self.settings.node_id.clone(),
            routed_at: None,
            target: MeshTarget::Joined {
                inbox_url: row.inbox_url.clone(),
            },
            data: serde_json::value::RawValue::from_string("null".into()).expect("null is JSON"),
            history: None,
        };
        let request = self
            .sns
            .publish()
            .topic_arn(&self.settings.topic_arn)
            .message(serde_json::to_string(&env).unwrap_or_default())
            .send();
        if let Err(e) = call(&self.metrics, "sns", "Publish", request).await {
            tracing::warn!(error = %chain(&e), "new inbox not announced; routers find it when their cache expires");
        }
    }

    /// Graceful leave: unsubscribe first (a publish to a deleted queue's
    /// subscription fails on some implementations), then the queue, then
    /// the row.
    pub(crate) async fn leave(&self) {
        let Some(row) = self.state.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        self.remove_inbox(&row).await;
        if let Err(e) = self.cluster.delete(&self.settings.node_id).await {
            tracing::warn!(error = %chain(&e), "node row not deleted");
        }
        tracing::info!("left the mesh");
    }

    /// Unsubscribes `row`'s inbox from the mesh topic, then deletes it (a
    /// publish to a deleted queue's subscription fails on some
    /// implementations). Failures are logged: one that finds nothing (the
    /// reaper was first) quietly.
    async fn remove_inbox(&self, row: &NodeRow) {
        let log = |what: &str, e: &crate::engine::AwsError| {
            if e.kind == AwsErrorKind::NotFound {
                tracing::debug!(error = %chain(e), "{what}: already gone");
            } else {
                tracing::warn!(error = %chain(e), "{what} failed");
            }
        };
        let request = self
            .sns
            .unsubscribe()
            .subscription_arn(&row.subscription_arn)
            .send();
        if let Err(e) = call(&self.metrics, "sns", "Unsubscribe", request).await {
            log("unsubscribing the inbox", &e);
        }
        let request = self.sqs.delete_queue().queue_url(&row.inbox_url).send();
        if let Err(e) = call(&self.metrics, "sqs", "DeleteQueue", request).await {
            log("deleting the inbox", &e);
        }
    }

    /// Refreshes this node's row every heartbeat period; rejoins when the
    /// row is gone or marked for reaping, or (as the inbox poller tells)
    /// the inbox is gone, whatever the row says. A failed heartbeat marks
    /// the node not ready until one succeeds.
    pub(crate) async fn heartbeat(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.reaped.notified() => {}
                () = tokio::time::sleep(self.settings.heartbeat_every) => {}
            }
            let Some(row) = self.row() else { return };
            let lost = self
                .lost_inbox
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if lost.as_deref() == Some(row.inbox_url.as_str()) {
                self.rejoin(&stop, "its inbox is gone").await;
                continue;
            }
            let beat = tokio::time::timeout(self.settings.write_timeout, self.cluster.beat(&row));
            match beat.await {
                Ok(Ok(true)) => self.health.store_ok(),
                Ok(Ok(false)) => {
                    self.rejoin(&stop, "its cluster row is gone or being reaped")
                        .await
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %chain(&e), "heartbeat failed");
                    self.health.store_failed();
                }
                Err(_) => {
                    tracing::warn!(within = ?self.settings.write_timeout, "heartbeat not written in time");
                    self.health.store_failed();
                }
            }
        }
    }

    /// Back into the mesh, retrying with backoff until it works (or the
    /// node stops); not ready meanwhile.
    async fn rejoin(&self, stop: &CancellationToken, why: &'static str) {
        self.health.set_in_mesh(false);
        self.metrics
            .errors
            .with_label_values(&["node_rejoin"])
            .inc();
        tracing::warn!(
            why,
            "this node is out of the mesh: the leader reaped it (frozen or cut off from AWS \
             longer than the node timeout); not ready until it has rejoined"
        );
        let mut backoff = REJOIN_FIRST_BACKOFF;
        loop {
            match self.rejoin_once().await {
                Ok(rows) => {
                    self.health.set_in_mesh(true);
                    self.health.store_ok();
                    tracing::info!(rows, "rejoined the mesh: ready again");
                    // Deliveries routed while it was out did not reach it:
                    // its recovering sockets read them from history.
                    match self.local.catch_up().await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(sockets = n, "recovering sockets catch up"),
                        Err(e) => tracing::warn!(error = %chain(&e), "catch-up not started"),
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "rejoin failed; retrying");
                    if !pause(stop, backoff).await {
                        return;
                    }
                    backoff = (backoff * 2).min(REJOIN_MAX_BACKOFF);
                }
            }
        }
    }

    /// One attempt: a new inbox, subscription and row, then the rows of
    /// every socket this node holds. Answers how many rows were written.
    async fn rejoin_once(&self) -> Result<usize, EngineError> {
        let old = self.row();
        if let Some(old) = &old {
            // The reaper removes both; a reaper stopped half-way (or an
            // operator's delete of the row) may not have.
            self.remove_inbox(old).await;
        }
        let n = self.rejoins.fetch_add(1, Ordering::Relaxed) + 1;
        let name = format!("{}-r{n}", self.settings.inbox_name);
        let started_at = old.map_or_else(now_ms, |r| r.started_at);
        // The node row first: a router that finds connection rows of a node
        // with no row prunes them.
        self.join_as(&name, started_at).await?;
        let sockets = self.local.connections().await?;
        let now = now_ms();
        let delete_at = now / 1000 + self.settings.row_ttl.as_secs();
        let records: Vec<ConnectionRecord> = sockets
            .iter()
            .map(|(user_id, connection_id)| ConnectionRecord {
                user_id: user_id.to_string(),
                connection_id: connection_id.to_string(),
                node_id: self.settings.node_id.clone(),
                connected_at: now,
                delete_at,
            })
            .collect();
        let store = self.store.clone();
        let writes = futures_util::stream::iter(records)
            .map(move |record| {
                let store = store.clone();
                async move { store.register(&record).await }
            })
            .buffer_unordered(REJOIN_WRITES);
        let written: Vec<Result<(), EngineError>> = writes.collect().await;
        if let Some(Err(e)) = written.into_iter().find(Result::is_err) {
            return Err(e);
        }
        // A socket that closed while its row was rewritten: its own delete
        // may have run first.
        let ids = sockets.iter().map(|(_, c)| c.to_string()).collect();
        let gone: std::collections::HashSet<String> =
            self.local.missing(ids).await?.into_iter().collect();
        self.store.prune(
            sockets
                .iter()
                .filter(|(_, c)| gone.contains(&**c))
                .map(|(u, c)| (u.to_string(), c.to_string()))
                .collect(),
        );
        Ok(sockets.len())
    }
}
