//! The node removes rows of its own closed or expired connections (a
//! failed delete, a crash before this start): TTL deletes make no stream
//! records, so sumu never waits for TTL.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::periodic::pause;
use super::store::DynamoStore;
use crate::clock::now_ms;
use crate::engine::EngineError;
use crate::hub::LocalDelivery;
use crate::logging::chain;

/// Rows younger than this may belong to a socket still being opened.
const GRACE_MS: u64 = 30_000;

pub(crate) struct Sweeper {
    pub(crate) store: DynamoStore,
    pub(crate) node_id: String,
    pub(crate) local: LocalDelivery,
    pub(crate) every: Duration,
}

impl Sweeper {
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut wait = Duration::from_secs(2).min(self.every);
        while pause(&stop, wait).await {
            wait = self.every;
            if let Err(e) = self.sweep_once().await {
                tracing::warn!(error = %chain(&e), "sweep failed");
            }
        }
    }

    pub(crate) async fn sweep_once(&self) -> Result<usize, EngineError> {
        let rows = self.store.connections_on(&self.node_id).await?;
        let now = now_ms();
        let candidates: Vec<String> = rows
            .iter()
            .filter(|r| r.connected_at + GRACE_MS < now || r.delete_at * 1000 < now)
            .map(|r| r.connection_id.clone())
            .collect();
        let missing: std::collections::HashSet<String> =
            self.local.missing(candidates).await?.into_iter().collect();
        let stale: Vec<(String, String)> = rows
            .into_iter()
            .filter(|r| missing.contains(&r.connection_id))
            .map(|r| (r.user_id, r.connection_id))
            .collect();
        let n = stale.len();
        if n > 0 {
            tracing::info!(rows = n, "sweeping rows of closed connections");
        }
        self.store.prune(stale);
        Ok(n)
    }
}
