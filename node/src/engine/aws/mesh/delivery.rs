//! Node ↔ node delivery: a multicast's router sends one message per other
//! node to its inbox (looked up in its `node#` row, looked up again once
//! when the cached one is gone); a broadcast is one publish to the mesh
//! topic; this node's inbox poller delivers each envelope to the sockets
//! here that have not had its request yet (the per-node delivered record),
//! and hands only what was delivered to the inbox's deleter (the rest
//! comes back), receiving again at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use sumu_shared::mesh::{MeshConnection, MeshEnvelope, MeshHistory, MeshTarget};
use sumu_shared::recovery::Position;
use tokio_util::sync::CancellationToken;

use super::Mesh;
use crate::clock::now_ms;
use crate::engine::aws::batcher::Batcher;
use crate::engine::aws::clients::call;
use crate::engine::aws::deleter::{linger_for, Deleter};
use crate::engine::aws::delivered::{request_of_share, Delivered};
use crate::engine::aws::output::{send_bodies, SQS_BATCH};
use crate::engine::aws::periodic::pause;
use crate::engine::aws::queue::{sent_at, Poll};
use crate::engine::EngineError;
use crate::hub::{LocalDelivery, Stamp};
use crate::logging::chain;
use crate::metrics::{ms_between, Hop, RoutePath};

/// Envelopes stay under SNS's and SQS's 256 KiB with room for attributes.
pub(crate) const MAX_ENVELOPE: usize = 250 * 1024;

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

/// How often the inbox poller looks for the new inbox after losing its own.
const NEW_INBOX_CHECK: Duration = Duration::from_millis(200);

impl Mesh {
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
        loop {
            let Some(inbox) = self.cluster.inbox_of(node_id).await? else {
                tracing::info!(
                    node_id,
                    rows = rows.len(),
                    "rows of a node with no cluster row: pruning"
                );
                self.drop_inbox_sender(node_id);
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
            // Every envelope at once: the ones for one node share a batch
            // call (with other requests' envelopes for that node in flight).
            let sender = self.inbox_sender(node_id, &inbox);
            let sent =
                futures_util::future::join_all(bodies.iter().map(|b| sender.submit(b.clone())))
                    .await;
            match sent.into_iter().find_map(Result::err) {
                None => {
                    self.metrics.hop(Hop::InboxSend, started.elapsed());
                    return Ok(true);
                }
                Some(e) => {
                    self.cluster.forget(node_id);
                    self.drop_inbox_sender(node_id);
                    if !e.not_found() {
                        return Err(e);
                    }
                    tried = Some(inbox);
                }
            }
        }
    }

    /// The batcher of `node_id`'s inbox at `inbox` (a new one when the node's
    /// inbox changed): its envelopes go in `SendMessageBatch` calls, sent at
    /// once when no call to that inbox is in flight, else lingering up to
    /// `--batch-linger-ms` for companions.
    fn inbox_sender(&self, node_id: &str, inbox: &str) -> Batcher<String, ()> {
        let mut senders = self.inbox_senders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((url, sender)) = senders.get(node_id) {
            if url == inbox {
                return sender.clone();
            }
        }
        let (sqs, url, metrics) = (self.sqs.clone(), inbox.to_string(), self.metrics.clone());
        let sender = Batcher::spawn_sized(
            "inbox sends",
            SQS_BATCH,
            self.settings.batch_linger,
            self.inbox_budget.clone(),
            String::len,
            move |bodies| {
                let (sqs, url, metrics) = (sqs.clone(), url.clone(), metrics.clone());
                async move { send_bodies(&metrics, &sqs, &url, bodies).await }
            },
        );
        senders.insert(node_id.to_string(), (inbox.to_string(), sender.clone()));
        sender
    }

    /// Forgets a node's inbox batcher (its task ends once its last call is
    /// answered).
    fn drop_inbox_sender(&self, node_id: &str) {
        self.inbox_senders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(node_id);
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
            let (deleter, deleting) = Deleter::start(
                self.sqs.clone(),
                url.clone(),
                linger_for(self.settings.receive_visibility),
                self.metrics.clone(),
            );
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
                deleter.delete(done);
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
            // This inbox's last deletes are sent before the next one is polled.
            drop(deleter);
            let _ = deleting.await;
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
