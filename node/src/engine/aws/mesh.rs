//! The mesh: node ↔ node delivery. Each node has an SQS inbox subscribed
//! (raw) to the mesh SNS topic. A multicast's router sends one message per
//! other node to its inbox; a broadcast is one publish to the topic.
//!
//! Membership: a node's `node#` row names its inbox; its heartbeat refreshes
//! that row only while the row still names that inbox and no leader has
//! marked it for reaping. A node that finds its row gone or marked, or its
//! inbox gone (the leader is reaping it, or reaped it, while it was frozen
//! or cut off from AWS), is not ready until it has rejoined: a new inbox
//! and subscription, its row (which ends the leader's hold on it), then the
//! rows of every socket it still holds (presence sees them ONLINE again).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use bytestring::ByteString;
use futures_util::StreamExt;
use sumu_shared::mesh::{MeshConnection, MeshEnvelope, MeshHistory, MeshTarget};
use sumu_shared::recovery::Position;
use tokio_util::sync::CancellationToken;

use super::clients::{call, Clients};
use super::cluster::{Cluster, NodeRow};
use super::delivered::{request_of_share, Delivered};
use super::periodic::pause;
use super::queue::{sent_at, Poll};
use super::resources::{create_queue, sns_to_sqs_policy};
use super::store::DynamoStore;
use crate::clock::now_ms;
use crate::engine::{AwsErrorKind, ConnectionRecord, ConnectionStore, EngineError, Health};
use crate::hub::{LocalDelivery, Stamp};
use crate::logging::chain;
use crate::metrics::{ms_between, Hop, Metrics, RoutePath};

/// Envelopes stay under SNS's and SQS's 256 KiB with room for attributes.
pub(crate) const MAX_ENVELOPE: usize = 250 * 1024;

/// Who this node is in the mesh.
pub(crate) struct MeshSettings {
    pub(crate) node_id: String,
    /// The address written to the node's row (for operators).
    pub(crate) address: String,
    pub(crate) topic_arn: String,
    /// `<prefix>Inbox-<node id>`.
    pub(crate) inbox_name: String,
    pub(crate) heartbeat_every: Duration,
    /// How long a connection row written on rejoin lives (its TTL).
    pub(crate) row_ttl: Duration,
    /// A heartbeat not written within this counts as failed
    /// (`--register-timeout-ms`: the same bound as a socket's row).
    pub(crate) write_timeout: Duration,
    /// The visibility timeout asked for on each inbox receive: a process of
    /// this node that died with a receive in flight (then restarted with the
    /// same id, on the same inbox) delays those envelopes only this long.
    pub(crate) receive_visibility: Duration,
}

/// Concurrent connection-row writes while rejoining.
const REJOIN_WRITES: usize = 64;
const REJOIN_FIRST_BACKOFF: Duration = Duration::from_secs(1);
const REJOIN_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often the inbox poller looks for the new inbox after losing its own.
const NEW_INBOX_CHECK: Duration = Duration::from_millis(200);

pub(crate) struct Mesh {
    settings: MeshSettings,
    sqs: aws_sdk_sqs::Client,
    sns: aws_sdk_sns::Client,
    cluster: Arc<Cluster>,
    store: DynamoStore,
    local: LocalDelivery,
    health: Arc<Health>,
    state: Mutex<Option<NodeRow>>,
    /// The inbox the poller found gone (it wakes the heartbeat, which
    /// rejoins whatever the row says: a row that survived its inbox is no
    /// membership).
    lost_inbox: Mutex<Option<String>>,
    reaped: tokio::sync::Notify,
    /// Wakes the inbox poller when a (re)join installed an inbox.
    inbox_changed: tokio::sync::Notify,
    /// Rejoins so far (each gets a fresh inbox name: SQS refuses to create
    /// a queue with the name of one deleted less than 60 s ago).
    rejoins: AtomicU32,
    metrics: Arc<Metrics>,
}

/// Splits a multicast for one node into envelopes under `max` bytes; each
/// carries the history positions (`stamp`) of the users it names.
pub(crate) fn envelopes(
    request_id: &str,
    from_node: &str,
    connections: Vec<MeshConnection>,
    data: &serde_json::value::RawValue,
    routed_at: u64,
    max: usize,
    stamp: Option<&Stamp>,
) -> Vec<String> {
    let overhead = request_id.len() + from_node.len() + data.get().len() + 160;
    let budget = max.saturating_sub(overhead).max(1);
    let mut out = Vec::new();
    let mut chunk: Vec<MeshConnection> = Vec::new();
    let mut size = 0;
    let flush = |chunk: &mut Vec<MeshConnection>, out: &mut Vec<String>| {
        if chunk.is_empty() {
            return;
        }
        let connections = std::mem::take(chunk);
        let history = stamp.map(|s| MeshHistory {
            broadcast: None,
            users: connections
                .iter()
                .filter_map(|c| {
                    let p = s.users.get(&c.user_id)?;
                    Some((c.user_id.clone(), MeshHistory::pack(*p)))
                })
                .collect(),
        });
        let env = MeshEnvelope {
            request_id: format!("{request_id}#{}", out.len()),
            from_node: from_node.to_string(),
            routed_at: Some(routed_at),
            target: MeshTarget::Connections { connections },
            data: data.to_owned(),
            history,
        };
        out.push(serde_json::to_string(&env).unwrap_or_default());
    };
    // A user's position costs its id again and three numbers.
    let positioned = if stamp.is_some() { 80 } else { 0 };
    for c in connections {
        let n = c.user_id.len() * 2 + c.connection_id.len() + 40 + positioned;
        if size + n > budget {
            flush(&mut chunk, &mut out);
            size = 0;
        }
        size += n;
        chunk.push(c);
    }
    flush(&mut chunk, &mut out);
    out
}

impl Mesh {
    pub(crate) fn new(
        settings: MeshSettings,
        clients: &Clients,
        cluster: Arc<Cluster>,
        store: DynamoStore,
        local: LocalDelivery,
        health: Arc<Health>,
    ) -> Mesh {
        Mesh {
            settings,
            sqs: clients.sqs.clone(),
            sns: clients.sns.clone(),
            cluster,
            store,
            local,
            health,
            state: Mutex::new(None),
            lost_inbox: Mutex::new(None),
            reaped: tokio::sync::Notify::new(),
            inbox_changed: tokio::sync::Notify::new(),
            rejoins: AtomicU32::new(0),
            metrics: clients.metrics.clone(),
        }
    }

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

    fn row(&self) -> Option<NodeRow> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
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

    /// Sends a multicast's share to another node. `Ok(false)`: that node is
    /// gone (no row); its rows were pruned.
    pub(crate) async fn send_to(
        &self,
        node_id: &str,
        request_id: &str,
        rows: Vec<MeshConnection>,
        data: &serde_json::value::RawValue,
        routed_at: u64,
        stamp: Option<&Stamp>,
    ) -> Result<bool, EngineError> {
        let started = std::time::Instant::now();
        let bodies = envelopes(
            request_id,
            &self.settings.node_id,
            rows.clone(),
            data,
            routed_at,
            MAX_ENVELOPE,
            stamp,
        );
        // A cached inbox may be stale (the node restarted or rejoined with a
        // new one): on "no such queue", look it up once more.
        let mut tried: Option<String> = None;
        'lookup: loop {
            let Some(inbox) = self.cluster.inbox_of(node_id).await? else {
                tracing::info!(
                    node_id,
                    rows = rows.len(),
                    "rows of a node with no cluster row: pruning"
                );
                self.store.prune(
                    rows.into_iter()
                        .map(|r| (r.user_id, r.connection_id))
                        .collect(),
                );
                return Ok(false);
            };
            if tried.as_deref() == Some(inbox.as_str()) {
                tracing::info!(node_id, "inbox gone: node left");
                return Ok(false);
            }
            for body in &bodies {
                let request = self
                    .sqs
                    .send_message()
                    .queue_url(&inbox)
                    .message_body(body.clone())
                    .send();
                if let Err(e) = call(&self.metrics, "sqs", "SendMessage", request).await {
                    self.cluster.forget(node_id);
                    if e.kind == AwsErrorKind::NotFound {
                        tried = Some(inbox);
                        continue 'lookup;
                    }
                    return Err(e.into());
                }
            }
            self.metrics.hop(Hop::InboxSend, started.elapsed());
            return Ok(true);
        }
    }

    /// One publish to the mesh topic: every node delivers to its sockets
    /// but the excluded users' (this node skips its own; it delivered
    /// directly).
    pub(crate) async fn broadcast(
        &self,
        request_id: &str,
        exclude_users: Vec<String>,
        data: &serde_json::value::RawValue,
        position: Option<Position>,
        routed_at: u64,
    ) -> Result<(), EngineError> {
        let env = MeshEnvelope {
            request_id: request_id.to_string(),
            from_node: self.settings.node_id.clone(),
            routed_at: Some(routed_at),
            target: MeshTarget::Broadcast { exclude_users },
            data: data.to_owned(),
            history: position.map(|p| MeshHistory {
                broadcast: Some(MeshHistory::pack(p)),
                users: Default::default(),
            }),
        };
        let body = serde_json::to_string(&env).unwrap_or_default();
        let request = self
            .sns
            .publish()
            .topic_arn(&self.settings.topic_arn)
            .message(body)
            .send();
        call(&self.metrics, "sns", "Publish", request).await?;
        Ok(())
    }

    fn inbox_url(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|r| r.inbox_url.clone())
    }

    /// Long-polls this node's inbox and delivers what it is told to; when
    /// the inbox is gone, wakes the heartbeat (which rejoins) and polls the
    /// new inbox once there is one; when a rejoin installed a new inbox,
    /// switches to it at once.
    pub(crate) async fn poll_inbox(
        self: Arc<Self>,
        local: LocalDelivery,
        delivered: Arc<Delivered>,
        stop: CancellationToken,
    ) {
        while let Some(url) = self.inbox_url() {
            let mut poll = Poll::new(self.sqs.clone(), url.clone(), self.metrics.clone())
                .with_visibility(self.settings.receive_visibility);
            loop {
                let next = tokio::select! {
                    biased;
                    // A (re)join installed another inbox: leave this one at
                    // once, not after a long poll (up to 10 s) ends.
                    () = self.inbox_changed.notified() => {
                        if self.inbox_url().as_deref() == Some(url.as_str()) {
                            continue;
                        }
                        break;
                    }
                    next = poll.next(&stop) => next,
                };
                let Some(messages) = next else { break };
                let mut done = Vec::new();
                let received_at = now_ms();
                for sent in messages.iter().filter_map(sent_at) {
                    self.metrics.hop_since_ms(Hop::InboxWait, sent, received_at);
                }
                for m in &messages {
                    let ok =
                        match serde_json::from_str::<MeshEnvelope>(m.body().unwrap_or_default()) {
                            Ok(env) => self.deliver(&local, &delivered, env).await,
                            Err(e) => {
                                tracing::warn!(error = %e, "unreadable mesh message dropped");
                                self.metrics
                                    .errors
                                    .with_label_values(&["mesh_unreadable"])
                                    .inc();
                                true
                            }
                        };
                    if ok {
                        if let Some(h) = m.receipt_handle() {
                            done.push(h.to_string());
                        }
                    }
                }
                poll.delete(done).await;
                if poll.gone() {
                    tracing::warn!(inbox = %url, "this node's inbox is gone");
                    *self.lost_inbox.lock().unwrap_or_else(|e| e.into_inner()) = Some(url.clone());
                    self.reaped.notify_one();
                    break;
                }
                if self.inbox_url().as_deref() != Some(url.as_str()) {
                    break;
                }
            }
            while self.inbox_url().as_deref() == Some(url.as_str()) {
                if !pause(&stop, NEW_INBOX_CHECK).await {
                    return;
                }
            }
            if stop.is_cancelled() {
                return;
            }
        }
    }

    /// Delivers one envelope to the sockets here that have not had its
    /// request yet (this node's record: its own routing, other routers'
    /// shares); false when it should be retried.
    async fn deliver(
        &self,
        local: &LocalDelivery,
        delivered: &Delivered,
        env: MeshEnvelope,
    ) -> bool {
        if env.from_node == self.settings.node_id
            && matches!(
                env.target,
                MeshTarget::Broadcast { .. } | MeshTarget::Joined { .. }
            )
        {
            return true;
        }
        let payload = ByteString::from(env.data.get());
        let stamp = env.history.map(|h| {
            Arc::new(Stamp {
                broadcast: h.broadcast.map(MeshHistory::unpack),
                users: h
                    .users
                    .into_iter()
                    .map(|(u, p)| (u, MeshHistory::unpack(p)))
                    .collect(),
            })
        });
        let delivering = std::time::Instant::now();
        let result = match env.target {
            MeshTarget::Joined { inbox_url } => {
                tracing::debug!(node_id = %env.from_node, %inbox_url, "node joined: its inbox is looked up again");
                self.cluster.forget(&env.from_node);
                return true;
            }
            MeshTarget::Broadcast { exclude_users } => {
                if !delivered.claim_everyone(&env.request_id) {
                    return self.duplicate();
                }
                let sent = local.broadcast_stamped(exclude_users, payload, stamp).await;
                if sent.is_err() {
                    delivered.release_everyone(&env.request_id);
                }
                sent.map(|_| ())
            }
            MeshTarget::Connections { connections } => {
                let request = request_of_share(&env.request_id);
                let by_id: HashMap<String, String> = connections
                    .into_iter()
                    .map(|c| (c.connection_id, c.user_id))
                    .collect();
                let ids = delivered.claim(request, by_id.keys().cloned().collect());
                if ids.is_empty() {
                    return self.duplicate();
                }
                match local
                    .to_connections_stamped(ids.clone(), payload, stamp)
                    .await
                {
                    Ok(report) => {
                        let stale = report
                            .missing
                            .into_iter()
                            .filter_map(|id| Some((by_id.get(&id)?.clone(), id)))
                            .collect();
                        self.store.prune(stale);
                        Ok(())
                    }
                    Err(e) => {
                        delivered.release(request, &ids);
                        Err(e)
                    }
                }
            }
        };
        match result {
            Ok(()) => {
                self.metrics.hop(Hop::DeliverMesh, delivering.elapsed());
                if let Some(routed_at) = env.routed_at {
                    self.metrics
                        .route(RoutePath::Mesh, ms_between(routed_at, now_ms()));
                }
                self.metrics
                    .notifications
                    .with_label_values(&["mesh", "routed"])
                    .inc();
                true
            }
            Err(e) => {
                tracing::warn!(error = %chain(&e), "mesh delivery failed; will retry");
                false
            }
        }
    }

    /// An envelope whose every socket here already had its request.
    fn duplicate(&self) -> bool {
        self.metrics
            .notifications
            .with_label_values(&["mesh", "duplicate"])
            .inc();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_large_multicasts_under_the_limit() {
        let data = serde_json::value::RawValue::from_string("{\"x\":1}".into()).unwrap();
        let conns: Vec<MeshConnection> = (0..5000)
            .map(|i| MeshConnection {
                user_id: format!("user-{i}"),
                connection_id: format!("{i:032}"),
            })
            .collect();
        let out = envelopes("r", "n1", conns, &data, 1_700_000_000_000, 64 * 1024, None);
        assert!(out.len() > 1);
        let mut total = 0;
        let mut ids = std::collections::HashSet::new();
        for text in &out {
            assert!(text.len() <= 64 * 1024, "{}", text.len());
            let env: MeshEnvelope = serde_json::from_str(text).unwrap();
            assert!(ids.insert(env.request_id.clone()), "chunk ids must differ");
            if let MeshTarget::Connections { connections } = env.target {
                total += connections.len();
            }
        }
        assert_eq!(total, 5000);
    }
}
