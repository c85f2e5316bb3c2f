//! The memory engine's in-process bus: what SUMU's backends would receive
//! from SNS/SQS (`publish`, `send`, presence), fanned out to whoever
//! subscribes (the `/api/events` stream, the in-process demo backend). Only
//! the engine emits; everyone else subscribes. It is a leaf of the engine:
//! `engine` names it in [`super::Engine`] and `memory` emits on it, so it
//! imports neither.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

/// One message on the bus, shaped like what a SUMU backend receives from
/// SNS/SQS: the body plus the message attributes.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BusMessage {
    /// `apigw.route.publish`, `apigw.route.send` or `lambda.presence.watchdog`.
    pub(crate) source: &'static str,
    /// `topic` (the SNS messages topic) or `queue` (the SQS messages queue).
    pub(crate) destination: &'static str,
    pub(crate) user_id: String,
    pub(crate) timestamp: u64,
    /// The message body (JSON text).
    pub(crate) message: String,
}

/// In-process fan-out of [`BusMessage`]s to any number of subscribers. A
/// subscriber that falls behind by more than the capacity loses the oldest
/// messages (and is told how many).
#[derive(Clone)]
pub(crate) struct Bus {
    tx: broadcast::Sender<Arc<BusMessage>>,
}

impl Bus {
    pub(crate) fn new(capacity: usize) -> Bus {
        Bus {
            tx: broadcast::channel(capacity).0,
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<BusMessage>> {
        self.tx.subscribe()
    }

    /// Only the engine puts messages on the bus.
    pub(super) fn emit(&self, msg: BusMessage) {
        // No subscriber is fine: like a topic nobody subscribed to.
        let _ = self.tx.send(Arc::new(msg));
    }
}
