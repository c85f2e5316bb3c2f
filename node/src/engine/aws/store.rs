//! The DynamoDB connections table: one row per socket, written before the
//! socket is announced open, removed when it closes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, DeleteRequest, PutRequest, TransactWriteItem,
    WriteRequest,
};

use super::batcher::Batcher;
use super::clients::call;
use crate::engine::{ConnectionRecord, ConnectionStore, EngineError};
use crate::metrics::Metrics;

/// BatchWriteItem takes at most 25 requests.
const BATCH_MAX: usize = 25;
/// TransactWriteItems takes at most 100 actions: the fence's check and 99
/// deletes.
const FENCED_MAX: usize = 99;
const ATTEMPTS: u32 = 5;

/// A connection row as read back (Query).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) user_id: String,
    pub(crate) connection_id: String,
    pub(crate) node_id: String,
    pub(crate) connected_at: u64,
    pub(crate) delete_at: u64,
}

#[derive(Clone)]
pub(crate) struct DynamoStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    puts: Batcher<ConnectionRecord, ()>,
    deletes: Batcher<(String, String), ()>,
    /// Woken when a row could not be deleted: the sweeper removes it soon
    /// instead of at its next periodic pass.
    failed_deletes: Arc<tokio::sync::Notify>,
    metrics: Arc<Metrics>,
}

fn item(r: &ConnectionRecord) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("user_id".to_string(), AttributeValue::S(r.user_id.clone())),
        (
            "connection_id".to_string(),
            AttributeValue::S(r.connection_id.clone()),
        ),
        ("node_id".to_string(), AttributeValue::S(r.node_id.clone())),
        (
            "connected_at".to_string(),
            AttributeValue::N(r.connected_at.to_string()),
        ),
        (
            "delete_at".to_string(),
            AttributeValue::N(r.delete_at.to_string()),
        ),
    ])
}

fn key(user_id: &str, connection_id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            "user_id".to_string(),
            AttributeValue::S(user_id.to_string()),
        ),
        (
            "connection_id".to_string(),
            AttributeValue::S(connection_id.to_string()),
        ),
    ])
}

fn key_of(req: &WriteRequest) -> Option<(String, String)> {
    let map = req
        .put_request()
        .map(|p| p.item())
        .or_else(|| req.delete_request().map(|d| d.key()))?;
    let s = |k: &str| map.get(k).and_then(|v| v.as_s().ok()).cloned();
    Some((s("user_id")?, s("connection_id")?))
}

fn row(map: &HashMap<String, AttributeValue>) -> Option<Row> {
    let s = |k: &str| map.get(k).and_then(|v| v.as_s().ok()).cloned();
    let n = |k: &str| {
        map.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(Row {
        user_id: s("user_id")?,
        connection_id: s("connection_id")?,
        node_id: s("node_id").unwrap_or_default(),
        connected_at: n("connected_at"),
        delete_at: n("delete_at"),
    })
}

/// Writes `requests` with BatchWriteItem, retrying unprocessed items with
/// backoff; answers per request whether it was written.
async fn batch_write(
    metrics: &Metrics,
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    requests: Vec<WriteRequest>,
) -> Vec<Result<(), EngineError>> {
    let keys: Vec<Option<(String, String)>> = requests.iter().map(key_of).collect();
    let mut pending = requests;
    let mut last_error = None;
    for attempt in 0..ATTEMPTS {
        if pending.is_empty() {
            break;
        }
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
        }
        let request = client
            .batch_write_item()
            .request_items(table, pending.clone())
            .send();
        match call(metrics, "dynamodb", "BatchWriteItem", request).await {
            Ok(out) => {
                pending = out
                    .unprocessed_items()
                    .and_then(|m| m.get(table))
                    .cloned()
                    .unwrap_or_default();
            }
            Err(e) => last_error = Some(std::sync::Arc::new(e)),
        }
    }
    let failed: Vec<Option<(String, String)>> = pending.iter().map(key_of).collect();
    keys.into_iter()
        .map(|k| {
            if !failed.contains(&k) {
                return Ok(());
            }
            Err(match &last_error {
                Some(source) => EngineError::Batch {
                    service: "dynamodb",
                    operation: "BatchWriteItem",
                    source: source.clone(),
                },
                None => EngineError::Unprocessed { attempts: ATTEMPTS },
            })
        })
        .collect()
}

impl DynamoStore {
    pub(crate) fn new(
        client: aws_sdk_dynamodb::Client,
        table: String,
        linger: Duration,
        metrics: Arc<Metrics>,
    ) -> DynamoStore {
        let (c, t, m) = (client.clone(), table.clone(), metrics.clone());
        let puts = Batcher::spawn(
            "connection puts",
            BATCH_MAX,
            linger,
            move |records: Vec<ConnectionRecord>| {
                let (c, t, m) = (c.clone(), t.clone(), m.clone());
                async move {
                    let requests = records
                        .iter()
                        .filter_map(|r| {
                            let put = PutRequest::builder().set_item(Some(item(r))).build().ok()?;
                            Some(WriteRequest::builder().put_request(put).build())
                        })
                        .collect();
                    batch_write(&m, &c, &t, requests).await
                }
            },
        );
        let (c, t, m) = (client.clone(), table.clone(), metrics.clone());
        let deletes = Batcher::spawn(
            "connection deletes",
            BATCH_MAX,
            linger,
            move |keys: Vec<(String, String)>| {
                let (c, t, m) = (c.clone(), t.clone(), m.clone());
                async move {
                    // A batch may not name one key twice.
                    let mut unique: Vec<(String, String)> = Vec::with_capacity(keys.len());
                    for k in &keys {
                        if !unique.contains(k) {
                            unique.push(k.clone());
                        }
                    }
                    let requests = unique
                        .iter()
                        .filter_map(|(u, c)| {
                            let del = DeleteRequest::builder()
                                .set_key(Some(key(u, c)))
                                .build()
                                .ok()?;
                            Some(WriteRequest::builder().delete_request(del).build())
                        })
                        .collect();
                    let results = batch_write(&m, &c, &t, requests).await;
                    let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
                    let mut results: Vec<Option<Result<(), EngineError>>> =
                        results.into_iter().map(Some).collect();
                    // A key named twice shares one request: the first asker
                    // gets its result, repeats the same outcome.
                    keys.iter()
                        .map(|k| {
                            let i = unique.iter().position(|u| u == k).unwrap_or(0);
                            match results.get_mut(i).and_then(Option::take) {
                                Some(first) => first,
                                None if ok.get(i).copied().unwrap_or(false) => Ok(()),
                                None => Err(EngineError::Unprocessed { attempts: ATTEMPTS }),
                            }
                        })
                        .collect()
                }
            },
        );
        DynamoStore {
            client,
            table,
            puts,
            deletes,
            failed_deletes: Arc::new(tokio::sync::Notify::new()),
            metrics,
        }
    }

    /// Notified (one stored permit) each time a row could not be deleted.
    pub(crate) fn failed_deletes(&self) -> Arc<tokio::sync::Notify> {
        self.failed_deletes.clone()
    }

    /// Every connection of one user (strongly consistent).
    pub(crate) async fn connections_of(&self, user_id: &str) -> Result<Vec<Row>, EngineError> {
        self.query_all(None, "user_id", user_id).await
    }

    /// Every row that names `node_id` (GSI `by_node`).
    pub(crate) async fn connections_on(&self, node_id: &str) -> Result<Vec<Row>, EngineError> {
        self.query_all(Some("by_node"), "node_id", node_id).await
    }

    /// All pages of `key = value`, on the table (consistent) or an index.
    async fn query_all(
        &self,
        index: Option<&str>,
        key: &str,
        value: &str,
    ) -> Result<Vec<Row>, EngineError> {
        let mut rows = Vec::new();
        let mut start = None;
        loop {
            let request = self
                .client
                .query()
                .table_name(&self.table)
                .set_index_name(index.map(str::to_string))
                .key_condition_expression("#k = :v")
                .expression_attribute_names("#k", key)
                .expression_attribute_values(":v", AttributeValue::S(value.to_string()))
                .consistent_read(index.is_none())
                .set_exclusive_start_key(start)
                .send();
            let out = call(&self.metrics, "dynamodb", "Query", request).await?;
            rows.extend(out.items().iter().filter_map(row));
            start = out.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(rows);
            }
        }
    }

    pub(crate) async fn delete(
        &self,
        user_id: &str,
        connection_id: &str,
    ) -> Result<(), EngineError> {
        let deleted = self
            .deletes
            .submit((user_id.to_string(), connection_id.to_string()))
            .await;
        if deleted.is_err() {
            self.failed_deletes.notify_one();
        }
        deleted
    }

    /// Deletes `rows` only while `fence` holds: in transactions of 99
    /// deletes and the fence's condition check, one after the other (a
    /// concurrent transaction on the same checked item would conflict).
    /// Stops at the first transaction refused; what was deleted before it
    /// stays deleted.
    pub(crate) async fn delete_fenced(
        &self,
        rows: &[Row],
        fence: &ConditionCheck,
    ) -> Result<(), EngineError> {
        for chunk in rows.chunks(FENCED_MAX) {
            let mut items = vec![TransactWriteItem::builder()
                .condition_check(fence.clone())
                .build()];
            for r in chunk {
                let delete = Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(&r.user_id, &r.connection_id)))
                    .build()
                    .map_err(|source| EngineError::Build {
                        what: "TransactWriteItems",
                        source,
                    })?;
                items.push(TransactWriteItem::builder().delete(delete).build());
            }
            let request = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send();
            call(&self.metrics, "dynamodb", "TransactWriteItems", request).await?;
        }
        Ok(())
    }

    /// Deletes, in the background, rows of connections no node holds (the
    /// seed's GoneException pruning).
    pub(crate) fn prune(&self, stale: Vec<(String, String)>) {
        if stale.is_empty() {
            return;
        }
        self.metrics
            .errors
            .with_label_values(&["stale_rows"])
            .inc_by(stale.len() as u64);
        let store = self.clone();
        tokio::spawn(async move {
            for (user_id, connection_id) in stale {
                if let Err(e) = store.delete(&user_id, &connection_id).await {
                    tracing::warn!(error = %crate::logging::chain(&e), %connection_id, "stale row not deleted");
                }
            }
        });
    }
}

#[async_trait]
impl ConnectionStore for DynamoStore {
    async fn register(&self, record: &ConnectionRecord) -> Result<(), EngineError> {
        self.puts.submit(record.clone()).await
    }

    async fn unregister(&self, user_id: &str, connection_id: &str) -> Result<(), EngineError> {
        self.delete(user_id, connection_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_has_numeric_ttl_and_round_trips() {
        let r = ConnectionRecord {
            user_id: "u".into(),
            connection_id: "c".into(),
            node_id: "n".into(),
            connected_at: 1_700_000_000_000,
            delete_at: 1_700_010_000,
        };
        let it = item(&r);
        assert!(matches!(it["delete_at"], AttributeValue::N(_)));
        assert!(matches!(it["connected_at"], AttributeValue::N(_)));
        let back = row(&it).unwrap();
        assert_eq!(back.delete_at, r.delete_at);
        assert_eq!(back.node_id, "n");
    }
}
