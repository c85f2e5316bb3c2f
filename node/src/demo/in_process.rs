//! SUMU's demo backend, in process (`--dev` with the memory engine), so the
//! one-command node serves a working chat: it reads what the memory bus
//! carries (client `publish`/`send`, presence) exactly as a backend reads
//! SNS/SQS, and answers with notification requests through the engine's
//! router, as a backend would through the notifications queue. The logic
//! is [`super::logic`], the same the standalone `sumu-demo-backend` runs
//! against AWS.

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::bus::Bus;
use crate::engine::Router;
use crate::hub::LocalDelivery;
use crate::logging::chain;

use super::logic::{self as demo, Inbound, Outcome};

/// Starts the backend on `tasks`; it stops when `stop` is cancelled.
/// It subscribes at once, so no message sent after this call is missed.
pub(crate) fn spawn(
    tasks: &TaskTracker,
    stop: CancellationToken,
    bus: &Bus,
    router: Arc<dyn Router>,
    local: LocalDelivery,
    node_id: String,
) {
    let mut rx = bus.subscribe();
    tasks.spawn(async move {
        let mut seq = 0u64;
        loop {
            let message = tokio::select! {
                _ = stop.cancelled() => return,
                m = rx.recv() => m,
            };
            let m = match message {
                Ok(m) => m,
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "demo backend fell behind the bus");
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            let inbound = Inbound {
                source: m.source,
                user_id: &m.user_id,
                timestamp: m.timestamp,
                body: &m.message,
            };
            let notification = match demo::handle(&inbound) {
                Ok(Outcome::Notify(n)) => n,
                Ok(Outcome::Presence { rebroadcast, .. }) => rebroadcast,
                Ok(Outcome::ConnectedUsers { requester }) => match local.connected_users().await {
                    Ok(users) => demo::connected_users_reply(&requester, users),
                    Err(e) => {
                        tracing::warn!(error = %chain(&e), "demo backend: no user list");
                        continue;
                    }
                },
                Err(why) => {
                    tracing::debug!(%why, "demo backend ignored a message");
                    continue;
                }
            };
            let request = match notification.to_request() {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "demo backend made an invalid request");
                    continue;
                }
            };
            seq += 1;
            if let Err(e) = router
                .route(&format!("{node_id}-demo-{seq}"), request)
                .await
            {
                tracing::warn!(error = %chain(&e), "demo backend: routing failed");
            }
        }
    });
}
