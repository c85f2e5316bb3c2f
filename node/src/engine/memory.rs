//! The `memory` engine: one node, everything in-process. `publish`/`send`
//! and presence events go to the in-process [`Bus`] that the HTTP API
//! streams at `/api/events`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sumu_shared::{NotificationRequest, PresenceEvent, PresenceStatus};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::bus::{Bus, BusMessage};
use super::history::{record_first, History};
use super::memory_history::MemoryHistory;
use super::{
    Background, ClientMessage, ClientOutput, ConnectionRecord, ConnectionStore, Engine,
    EngineError, RouteOutcome, Router,
};
use crate::clock::now_ms;
use crate::config::{PresenceSource, RecoveryConfig};
use crate::hub::LocalDelivery;

/// Counts live connections per user to produce ONLINE on 0→1 and OFFLINE
/// on 1→0.
pub(crate) struct MemoryStore {
    per_user: Mutex<HashMap<String, usize>>,
    bus: Bus,
    presence: PresenceSource,
}

#[async_trait]
impl ConnectionStore for MemoryStore {
    async fn register(&self, record: &ConnectionRecord) -> Result<(), EngineError> {
        let first = {
            let mut map = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
            let n = map.entry(record.user_id.clone()).or_insert(0);
            *n += 1;
            *n == 1
        };
        if first {
            self.presence(&record.user_id, PresenceStatus::Online);
        }
        Ok(())
    }

    async fn unregister(&self, user_id: &str, _connection_id: &str) -> Result<(), EngineError> {
        let last = {
            let mut map = self.per_user.lock().unwrap_or_else(|e| e.into_inner());
            match map.get_mut(user_id) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    map.remove(user_id);
                    true
                }
                None => false,
            }
        };
        if last {
            self.presence(user_id, PresenceStatus::Offline);
        }
        Ok(())
    }
}

impl MemoryStore {
    fn presence(&self, user_id: &str, status: PresenceStatus) {
        let destination = match self.presence {
            PresenceSource::Topic => "topic",
            PresenceSource::Queue => "queue",
            PresenceSource::None => return,
        };
        let timestamp = now_ms();
        self.bus.emit(BusMessage {
            source: sumu_shared::attributes::SOURCE_PRESENCE,
            destination,
            user_id: user_id.to_string(),
            timestamp,
            message: PresenceEvent::new(user_id, status, timestamp).to_json(),
        });
    }
}

pub(crate) struct MemoryOutput {
    bus: Bus,
}

#[async_trait]
impl ClientOutput for MemoryOutput {
    async fn emit(&self, m: ClientMessage) -> Result<(), EngineError> {
        self.bus.emit(BusMessage {
            source: m.source,
            destination: match m.route {
                super::OutputRoute::Publish => "topic",
                super::OutputRoute::Send => "queue",
            },
            user_id: m.user_id,
            timestamp: m.timestamp,
            message: m.body,
        });
        Ok(())
    }
}

/// Routes every request to this node's own sockets, recorded first in the
/// history when the recovery window is on.
pub(crate) struct MemoryRouter {
    local: LocalDelivery,
    history: Option<Arc<MemoryHistory>>,
    metrics: Arc<crate::metrics::Metrics>,
}

#[async_trait]
impl Router for MemoryRouter {
    async fn route(
        &self,
        request_id: &str,
        request: NotificationRequest,
    ) -> Result<RouteOutcome, EngineError> {
        let stamp =
            record_first(self.history.as_deref(), request_id, &request, &self.metrics).await?;
        let local_deliveries = self.local.deliver_request_stamped(&request, stamp).await?;
        Ok(RouteOutcome {
            local_deliveries,
            mesh_messages: 0,
        })
    }
}

/// One node has no fleet to join and nothing to run in the background.
struct NoBackground;

#[async_trait]
impl Background for NoBackground {
    async fn start(&self, _: &TaskTracker, _: CancellationToken) -> Result<(), EngineError> {
        Ok(())
    }

    async fn leave(&self) {}
}

/// The memory engine, delivering through `local`.
pub(crate) fn engine(
    presence: PresenceSource,
    recovery: RecoveryConfig,
    local: LocalDelivery,
    metrics: Arc<crate::metrics::Metrics>,
) -> Engine {
    let bus = Bus::new(4096);
    let history = recovery
        .enabled()
        .then(|| Arc::new(MemoryHistory::new(recovery.window)));
    Engine {
        store: Arc::new(MemoryStore {
            per_user: Mutex::new(HashMap::new()),
            bus: bus.clone(),
            presence,
        }),
        output: Arc::new(MemoryOutput { bus: bus.clone() }),
        router: Arc::new(MemoryRouter {
            local,
            history: history.clone(),
            metrics,
        }),
        background: Arc::new(NoBackground),
        bus: Some(bus),
        health: Arc::default(),
        history: history.map(|h| h as Arc<dyn History>),
    }
}

#[cfg(test)]
const RECOVERY_OFF: RecoveryConfig = RecoveryConfig {
    window: std::time::Duration::ZERO,
    max_messages: 1,
    max_bytes: 1,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(user: &str, conn: &str) -> ConnectionRecord {
        ConnectionRecord {
            user_id: user.into(),
            connection_id: conn.into(),
            node_id: "n".into(),
            connected_at: 0,
            delete_at: 0,
        }
    }

    #[actix::test]
    async fn presence_on_first_and_last_connection_only() {
        let e = engine(
            PresenceSource::Queue,
            RECOVERY_OFF,
            LocalDelivery::start(Default::default()),
            Default::default(),
        );
        let mut rx = e.bus.as_ref().unwrap().subscribe();
        e.store.register(&rec("u", "c1")).await.unwrap();
        e.store.register(&rec("u", "c2")).await.unwrap();
        e.store.unregister("u", "c1").await.unwrap();
        e.store.unregister("u", "c2").await.unwrap();
        let first = rx.recv().await.unwrap();
        assert!(first.message.contains("\"ONLINE\""));
        assert_eq!(first.destination, "queue");
        let second = rx.recv().await.unwrap();
        assert!(second.message.contains("\"OFFLINE\""));
        assert!(rx.try_recv().is_err());
    }
}

#[cfg(test)]
mod presence_off {
    use super::*;

    #[actix::test]
    async fn no_presence_events_when_off() {
        let e = engine(
            PresenceSource::None,
            RECOVERY_OFF,
            LocalDelivery::start(Default::default()),
            Default::default(),
        );
        let mut rx = e.bus.as_ref().unwrap().subscribe();
        let rec = ConnectionRecord {
            user_id: "u".into(),
            connection_id: "c".into(),
            node_id: "n".into(),
            connected_at: 0,
            delete_at: 0,
        };
        e.store.register(&rec).await.unwrap();
        e.store.unregister("u", "c").await.unwrap();
        assert!(rx.try_recv().is_err());
    }
}
