//! The node removes rows of its own closed or expired connections (a
//! failed delete, a crash before this start): TTL deletes make no stream
//! records, so sumu never waits for TTL.
//!
//! A pass reads every row of the node (its `by_node` index), so it costs
//! read units in proportion to the node's sockets: it runs 2 s after the
//! start (a crash and restart under the same id), then [`GRACE_MS`] plus a
//! second after any delete failed (the rows it left are past their grace
//! by then), again soon while a pass fails, and otherwise only once a
//! `every` (10 min: a safety net).

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

/// How long after a failed delete the sweeper passes: the row it left is
/// past [`GRACE_MS`] by then.
pub(crate) const AFTER_FAILED_DELETE: Duration = Duration::from_millis(GRACE_MS + 1_000);

/// How soon a pass that failed (AWS down) is tried again.
const RETRY: Duration = Duration::from_secs(10);

pub(crate) struct Sweeper {
    pub(crate) store: DynamoStore,
    pub(crate) node_id: String,
    pub(crate) local: LocalDelivery,
    /// The safety net's period.
    pub(crate) every: Duration,
    /// [`AFTER_FAILED_DELETE`] (shorter in tests).
    pub(crate) after_failed_delete: Duration,
}

impl Sweeper {
    pub(crate) async fn run(self, stop: CancellationToken) {
        let failed_deletes = self.store.failed_deletes();
        let mut wait = Duration::from_secs(2).min(self.every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = failed_deletes.notified() => {
                    if !pause(&stop, self.after_failed_delete).await {
                        return;
                    }
                }
            }
            wait = match self.sweep_once().await {
                Ok(_) => self.every,
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "sweep failed");
                    RETRY.min(self.every)
                }
            };
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

/// Against the real emulator (the full gate; the fast tier skips
/// `emulator_tests::`): a failed delete wakes the sweeper, which then
/// removes the rows of sockets the node no longer holds, long before its
/// periodic pass.
#[cfg(test)]
mod emulator_tests {
    use std::sync::Arc;

    use aws_sdk_dynamodb::types::AttributeValue;

    use super::*;
    use crate::engine::aws::clients::Clients;
    use crate::engine::aws::resources::bootstrap;
    use crate::metrics::Metrics;

    async fn rows(c: &aws_sdk_dynamodb::Client, table: &str) -> usize {
        c.scan()
            .table_name(table)
            .send()
            .await
            .unwrap()
            .items()
            .len()
    }

    #[actix::test]
    async fn emulator_a_failed_delete_wakes_the_sweeper() {
        let emulator = sumu_testkit::Emulator::start();
        let (config, clients) = Clients::for_emulator(&emulator).await;
        bootstrap(&clients, &config.aws).await.unwrap();
        let table = config.aws.connections_table.clone();
        let metrics = Arc::new(Metrics::new());
        let store = DynamoStore::new(
            clients.dynamodb.clone(),
            table.clone(),
            Duration::from_millis(5),
            metrics.clone(),
        );

        // A delete that fails (no such table) wakes whoever waits on the store.
        let broken = DynamoStore::new(
            clients.dynamodb.clone(),
            "NoSuchTable".into(),
            Duration::from_millis(5),
            metrics.clone(),
        );
        assert!(broken.delete("u", "c").await.is_err());
        tokio::time::timeout(
            Duration::from_millis(100),
            broken.failed_deletes().notified(),
        )
        .await
        .expect("a failed delete notifies");

        let sweeper = Sweeper {
            store: store.clone(),
            node_id: "n1".into(),
            local: LocalDelivery::start(metrics),
            every: Duration::from_secs(600),
            after_failed_delete: Duration::from_millis(300),
        };
        let stop = CancellationToken::new();
        let running = tokio::spawn(sweeper.run(stop.clone()));
        // Past the pass at the start (2 s), a row of a socket this node does
        // not hold, older than the grace: only the periodic pass (10 min)
        // would find it now.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let old = (now_ms() - 2 * GRACE_MS).to_string();
        clients
            .dynamodb
            .put_item()
            .table_name(&table)
            .item("user_id", AttributeValue::S("gone".into()))
            .item("connection_id", AttributeValue::S("c-gone".into()))
            .item("node_id", AttributeValue::S("n1".into()))
            .item("connected_at", AttributeValue::N(old))
            .item("delete_at", AttributeValue::N("9999999999".into()))
            .send()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert_eq!(rows(&clients.dynamodb, &table).await, 1, "no pass yet");
        // A delete of this store failed: the sweeper passes 300 ms later.
        store.failed_deletes().notify_one();
        let mut left = 1;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            left = rows(&clients.dynamodb, &table).await;
            if left == 0 {
                break;
            }
        }
        assert_eq!(
            left, 0,
            "the row of a socket the node does not hold is swept"
        );
        stop.cancel();
        running.await.unwrap();
    }
}
