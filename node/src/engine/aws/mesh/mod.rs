//! The mesh: node ↔ node. Each node has an SQS inbox subscribed (raw) to
//! the mesh SNS topic. This file holds the [`Mesh`] and what both halves
//! share (its settings, the node's current row); the halves are
//! `membership.rs` (who is in the mesh: join, heartbeat, rejoin, leave)
//! and `delivery.rs` (sending to other nodes' inboxes, the topic, and
//! receiving from this node's inbox).
//!
//! Invariant: the node's current row (`state`) is written only by
//! membership; delivery reads it (the inbox to poll) and tells membership
//! through `lost_inbox` + `reaped` when the inbox is gone.

use std::collections::HashMap;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::batcher::{Batcher, Budget};
use super::clients::Clients;
use super::cluster::{Cluster, NodeRow};
use super::store::DynamoStore;
use crate::engine::Health;
use crate::hub::LocalDelivery;
use crate::metrics::Metrics;

mod delivery;
mod membership;

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
    /// How long an inbox send waits for companions while another call to
    /// the same inbox is in flight (`--batch-linger-ms`).
    pub(crate) batch_linger: Duration,
}

/// Another node's inbox URL and the batcher of sends to it.
type InboxSender = (String, Batcher<String, ()>);

/// Bytes of envelopes that may wait for (or be in) inbox sends at once, all
/// inboxes together: past it a send is refused at once (`Overloaded`) and
/// its request comes back from the queue later.
const INBOX_SEND_BUDGET: usize = 32 << 20;

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
    /// Per other node: its inbox's URL and the batcher of sends to it.
    inbox_senders: Mutex<HashMap<String, InboxSender>>,
    inbox_budget: Arc<Budget>,
    metrics: Arc<Metrics>,
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
            inbox_senders: Mutex::new(HashMap::new()),
            inbox_budget: Budget::new(INBOX_SEND_BUDGET),
            metrics: clients.metrics.clone(),
        }
    }

    fn row(&self) -> Option<NodeRow> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn inbox_url(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|r| r.inbox_url.clone())
    }
}
