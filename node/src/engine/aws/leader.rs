//! Leader election: one node at a time holds `lease#leader` in the cluster
//! table (conditional writes) and runs the leader duties: presence from the
//! connections table's stream, and the reaper of dead nodes. The duties run
//! only while the lease is held; losing a renewal stops them at once.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::clients::call;
use super::periodic::pause;
use super::presence::PresenceConsumer;
use super::reaper::Reaper;
use crate::clock::now_ms;
use crate::engine::{AwsErrorKind, EngineError};
use crate::logging::chain;
use crate::metrics::Metrics;

/// How long stopping duties may take before they are abandoned.
const DUTIES_GRACE: Duration = Duration::from_secs(5);

pub(crate) struct Lease {
    pub(crate) client: aws_sdk_dynamodb::Client,
    pub(crate) table: String,
    pub(crate) node_id: String,
    /// A lease lasts this long unless renewed (`--leader-lease-secs`).
    pub(crate) length: Duration,
    pub(crate) metrics: Arc<Metrics>,
}

impl Lease {
    /// Takes or renews the lease; `Ok(false)` when another node holds it.
    pub(crate) async fn acquire(&self) -> Result<bool, EngineError> {
        let now = now_ms();
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S("lease#leader".into()))
            .item("owner", AttributeValue::S(self.node_id.clone()))
            .item(
                "expires_at",
                AttributeValue::N((now + self.length.as_millis() as u64).to_string()),
            )
            .condition_expression("attribute_not_exists(pk) OR expires_at < :now OR #o = :me")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(":me", AttributeValue::S(self.node_id.clone()))
            .send();
        match call(&self.metrics, "dynamodb", "PutItem", request).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind == AwsErrorKind::ConditionFailed => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the lease up (graceful shutdown), if still ours.
    pub(crate) async fn release(&self) {
        let request = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S("lease#leader".into()))
            .condition_expression("#o = :me")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_values(":me", AttributeValue::S(self.node_id.clone()))
            .send();
        match call(&self.metrics, "dynamodb", "DeleteItem", request).await {
            Ok(_) => {}
            Err(e) if e.kind == AwsErrorKind::ConditionFailed => {}
            Err(e) => {
                tracing::warn!(error = %chain(&e), "leader lease not released; it will expire")
            }
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
