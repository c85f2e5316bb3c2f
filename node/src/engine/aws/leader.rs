//! Leader election: one node at a time holds `lease#leader` in the cluster
//! table (conditional writes) and runs the leader duties: presence from the
//! connections table's stream, and the reaper of dead nodes.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use tokio::sync::watch;

use super::clients::{aws_error, error_code};
use super::presence::PresenceConsumer;
use super::reaper::Reaper;
use crate::engine::{now_ms, EngineError};
use crate::metrics::aws_call;

/// A lease lasts this long unless renewed.
pub const LEASE: Duration = Duration::from_secs(15);
/// The holder renews (and others retry) this often.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);

pub struct Lease {
    pub client: aws_sdk_dynamodb::Client,
    pub table: String,
    pub node_id: String,
}

impl Lease {
    /// Takes or renews the lease; `Ok(false)` when another node holds it.
    pub async fn acquire(&self) -> Result<bool, EngineError> {
        let now = now_ms();
        let call = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S("lease#leader".into()))
            .item("owner", AttributeValue::S(self.node_id.clone()))
            .item(
                "expires_at",
                AttributeValue::N((now + LEASE.as_millis() as u64).to_string()),
            )
            .condition_expression("attribute_not_exists(pk) OR expires_at < :now OR #o = :me")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(":me", AttributeValue::S(self.node_id.clone()))
            .send();
        match aws_call("dynamodb", "PutItem", call).await {
            Ok(_) => Ok(true),
            Err(e) if error_code(&e).as_deref() == Some("ConditionalCheckFailedException") => {
                Ok(false)
            }
            Err(e) => Err(aws_error("dynamodb", "PutItem")(e)),
        }
    }

    /// Gives the lease up (graceful shutdown), if still ours.
    pub async fn release(&self) {
        let call = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S("lease#leader".into()))
            .condition_expression("#o = :me")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_values(":me", AttributeValue::S(self.node_id.clone()))
            .send();
        let _ = aws_call("dynamodb", "DeleteItem", call).await;
    }
}

pub struct Leader {
    pub lease: Lease,
    pub presence: Arc<PresenceConsumer>,
    pub reaper: Arc<Reaper>,
}

impl Leader {
    /// Campaigns forever; while the lease is ours, runs the duties. Losing
    /// a renewal stops them at once.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut duties: Option<(watch::Sender<bool>, Vec<tokio::task::JoinHandle<()>>)> = None;
        loop {
            let held = match self.lease.acquire().await {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(error = %e, "leader lease call failed");
                    false
                }
            };
            match (held, duties.is_some()) {
                (true, false) => {
                    tracing::info!(node_id = %self.lease.node_id, "became leader");
                    let (tx, rx) = watch::channel(false);
                    let tasks = vec![
                        tokio::spawn(self.presence.clone().run(rx.clone())),
                        tokio::spawn(self.reaper.clone().run(rx)),
                    ];
                    duties = Some((tx, tasks));
                }
                (false, true) => {
                    tracing::warn!("lost the leader lease: stopping leader duties");
                    if let Some((tx, tasks)) = duties.take() {
                        let _ = tx.send(true);
                        for t in tasks {
                            let _ = t.await;
                        }
                    }
                }
                _ => {}
            }
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(RENEW_EVERY) => {}
            }
        }
        if let Some((tx, tasks)) = duties.take() {
            let _ = tx.send(true);
            for t in tasks {
                let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
            }
            self.lease.release().await;
        }
    }
}
