//! Leader election: one node at a time holds `lease#leader` in the cluster
//! table (conditional writes) and runs the leader duties: presence from the
//! connections table's stream, and the reaper of dead nodes. The duties run
//! only while the lease is held; losing a renewal stops them at once.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cluster::ClusterTable;
use super::periodic::pause;
use super::presence::PresenceConsumer;
use super::reaper::Reaper;
use crate::engine::EngineError;
use crate::logging::chain;

/// How long stopping duties may take before they are abandoned.
const DUTIES_GRACE: Duration = Duration::from_secs(5);

/// This node's claim on the `lease#leader` row (`cluster/lease.rs`).
pub(crate) struct Lease {
    pub(crate) table: ClusterTable,
    pub(crate) node_id: String,
    /// A lease lasts this long unless renewed (`--leader-lease-secs`).
    pub(crate) length: Duration,
}

impl Lease {
    /// Takes or renews the lease; `Ok(false)` when another node holds it.
    pub(crate) async fn acquire(&self) -> Result<bool, EngineError> {
        self.table.acquire_lease(&self.node_id, self.length).await
    }

    /// Gives the lease up (graceful shutdown), if still ours.
    pub(crate) async fn release(&self) {
        if let Err(e) = self.table.release_lease(&self.node_id).await {
            tracing::warn!(error = %chain(&e), "leader lease not released; it will expire")
        }
    }
}

pub(crate) struct Leader {
    pub(crate) lease: Lease,
    pub(crate) presence: Arc<PresenceConsumer>,
    pub(crate) reaper: Arc<Reaper>,
    /// The holder renews (and others retry) this often (`--leader-renew-secs`).
    pub(crate) renew_every: Duration,
}

/// The duties of one term as leader: stopped by their own token.
struct Term {
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Term {
    async fn end(self) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(DUTIES_GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("leader duties did not stop in time");
        }
    }
}

impl Leader {
    /// Campaigns until `stop` is cancelled; while the lease is ours, runs
    /// the duties.
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut term: Option<Term> = None;
        loop {
            let held = match self.lease.acquire().await {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "leader lease call failed");
                    false
                }
            };
            match (held, term.is_some()) {
                (true, false) => {
                    tracing::info!(node_id = %self.lease.node_id, "became leader");
                    let duties = Term {
                        stop: stop.child_token(),
                        tasks: TaskTracker::new(),
                    };
                    duties
                        .tasks
                        .spawn(self.presence.clone().run(duties.stop.clone()));
                    duties
                        .tasks
                        .spawn(self.reaper.clone().run(duties.stop.clone()));
                    term = Some(duties);
                }
                (false, true) => {
                    tracing::warn!("lost the leader lease: stopping leader duties");
                    if let Some(t) = term.take() {
                        t.end().await;
                    }
                }
                _ => {}
            }
            if !pause(&stop, self.renew_every).await {
                break;
            }
        }
        if let Some(t) = term.take() {
            t.end().await;
            self.lease.release().await;
        }
    }
}
