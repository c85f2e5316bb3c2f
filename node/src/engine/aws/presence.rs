//! Presence from the connections table's stream (leader only): ONLINE when
//! a user goes from 0 to 1+ connections, OFFLINE when the last one goes,
//! from any node. Shards are read parents first and checkpointed in the
//! cluster table, so a new leader resumes where the old one stopped
//! (duplicates possible, nothing lost).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodbstreams::types::{OperationType, Record, ShardIteratorType};
use futures_util::{StreamExt, TryStreamExt};
use sumu_shared::{PresenceEvent, PresenceStatus};
use tokio_util::sync::CancellationToken;

use super::clients::call;
use super::cluster::ClusterTable;
use super::dedup::RecentIds;
use super::periodic::pause;
use super::store::DynamoStore;
use crate::clock::now_ms;
use crate::config::PresenceSource;
use crate::engine::{ClientMessage, ClientOutput, EngineError, OutputRoute};
use crate::logging::chain;
use crate::metrics::Metrics;

/// Users whose records are handled at once.
const USER_CONCURRENCY: usize = 32;
/// The pause after a round of reads that found nothing; it doubles with
/// each idle round up to [`IDLE_MAX_PAUSE`], and a round that finds a record
/// brings it back (and reads again at once). Idle, the leader makes ~1
/// GetRecords per shard a second instead of 4: presence of the first
/// connect after a quiet spell comes up to ~1 s later.
const IDLE_PAUSE: Duration = Duration::from_millis(250);
const IDLE_MAX_PAUSE: Duration = Duration::from_secs(1);

/// The pause after each round of reads. Pure, unit-tested.
#[derive(Debug)]
struct IdleBackoff {
    next: Duration,
}

impl IdleBackoff {
    fn new() -> IdleBackoff {
        IdleBackoff { next: IDLE_PAUSE }
    }

    /// How long to pause after a round (None: read again at once).
    fn after_round(&mut self, got_any: bool) -> Option<Duration> {
        if got_any {
            self.next = IDLE_PAUSE;
            return None;
        }
        let pause = self.next;
        self.next = (self.next * 2).min(IDLE_MAX_PAUSE);
        Some(pause)
    }
}
const RESCAN_EVERY: Duration = Duration::from_secs(10);

pub(crate) struct PresenceConsumer {
    pub(crate) ddb: aws_sdk_dynamodb::Client,
    pub(crate) streams: aws_sdk_dynamodbstreams::Client,
    pub(crate) connections_table: String,
    pub(crate) cluster: ClusterTable,
    pub(crate) store: DynamoStore,
    pub(crate) output: Arc<dyn ClientOutput>,
    pub(crate) source: PresenceSource,
    /// Where the lag metric goes (None: Prometheus only).
    pub(crate) lag_metric: Option<LagMetric>,
    pub(crate) metrics: Arc<Metrics>,
}

/// The CloudWatch metric the stream-lag alarm watches
/// (`infra/terraform/alarms.tf`).
pub(crate) struct LagMetric {
    pub(crate) cloudwatch: aws_sdk_cloudwatch::Client,
    pub(crate) namespace: String,
    pub(crate) metrics: Arc<Metrics>,
}

const PUBLISH_LAG_EVERY: Duration = Duration::from_secs(60);

impl LagMetric {
    fn publish(&self, table: &str, lag_ms: u64) {
        use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
        let datum = MetricDatum::builder()
            .metric_name("PresenceStreamIteratorAge")
            .dimensions(Dimension::builder().name("TableName").value(table).build())
            .unit(StandardUnit::Milliseconds)
            .value(lag_ms as f64)
            .build();
        let request = self
            .cloudwatch
            .put_metric_data()
            .namespace(&self.namespace)
            .metric_data(datum)
            .send();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = call(&metrics, "cloudwatch", "PutMetricData", request).await {
                tracing::warn!(error = %chain(&e), "stream lag metric not published");
            }
        });
    }
}

/// Users reported offline that the consumer remembers (each for
/// [`OFFLINE_MEMORY`]): a REMOVE of a user gone longer ago repeats one
/// OFFLINE at worst.
const RECENTLY_OFFLINE: usize = 100_000;
const OFFLINE_MEMORY: Duration = Duration::from_secs(600);

/// What the consumer believes of the users it has seen, bounded: the users
/// online (as many as are online now), and the users it reported offline
/// lately (at most [`RECENTLY_OFFLINE`], for [`OFFLINE_MEMORY`]). A belief
/// is recorded only once its event was sent, so an event whose send failed
/// is decided again, and sent, when its record is read again.
pub(crate) struct PresenceState {
    online: HashSet<String>,
    offline: RecentIds,
}

impl Default for PresenceState {
    fn default() -> PresenceState {
        PresenceState {
            online: HashSet::new(),
            offline: RecentIds::new(RECENTLY_OFFLINE, OFFLINE_MEMORY),
        }
    }
}

impl PresenceState {
    /// The event a record calls for, given the user's live connection count
    /// now (nothing is recorded: see [`PresenceState::sent`]). An INSERT
    /// whose connection is already gone emits nothing (its REMOVE follows);
    /// a REMOVE of a user not known to be offline emits OFFLINE (a
    /// duplicate at worst, never a lost OFFLINE).
    pub(crate) fn decide(
        &mut self,
        user: &str,
        inserted: bool,
        live: usize,
    ) -> Option<PresenceStatus> {
        let online = self.online.contains(user);
        if inserted {
            (live > 0 && !online).then_some(PresenceStatus::Online)
        } else {
            let offline = !online && self.offline.contains(user);
            (live == 0 && !offline).then_some(PresenceStatus::Offline)
        }
    }

    /// `status` of `user` was sent: believe it from now on.
    pub(crate) fn sent(&mut self, user: &str, status: PresenceStatus) {
        match status {
            PresenceStatus::Online => {
                self.online.insert(user.to_string());
            }
            PresenceStatus::Offline => {
                self.online.remove(user);
                self.offline.insert(user.to_string());
            }
        }
    }
}

fn user_of(record: &Record) -> Option<String> {
    let d = record.dynamodb()?;
    d.keys()
        .or(d.old_image())
        .or(d.new_image())
        .and_then(|m| m.get("user_id"))
        .and_then(|v| v.as_s().ok())
        .cloned()
}

/// A stream record's creation time, ms since the epoch (now if it has none).
pub(crate) fn millis_of(record: &Record) -> u64 {
    record
        .dynamodb()
        .and_then(|d| d.approximate_creation_date_time())
        .map(|t| (t.secs().max(0) as u64) * 1000 + u64::from(t.subsec_nanos() / 1_000_000))
        .unwrap_or_else(now_ms)
}

/// Reading the connections table's stream and the leader's checkpoints:
/// shared by the presence consumer and `sumu-node cluster status`.
pub(crate) struct StreamReader<'a> {
    pub(crate) ddb: &'a aws_sdk_dynamodb::Client,
    pub(crate) streams: &'a aws_sdk_dynamodbstreams::Client,
    pub(crate) connections_table: &'a str,
    pub(crate) cluster: &'a ClusterTable,
    pub(crate) metrics: &'a Metrics,
}

impl StreamReader<'_> {
    pub(crate) async fn stream_arn(&self) -> Result<String, EngineError> {
        let request = self
            .ddb
            .describe_table()
            .table_name(self.connections_table)
            .send();
        let out = call(self.metrics, "dynamodb", "DescribeTable", request).await?;
        out.table()
            .and_then(|t| t.latest_stream_arn())
            .map(str::to_string)
            .ok_or_else(|| EngineError::Missing {
                what: "stream of table",
                name: self.connections_table.to_string(),
            })
    }

    /// Every shard: (id, parent).
    pub(crate) async fn shards(
        &self,
        stream_arn: &str,
    ) -> Result<Vec<(String, Option<String>)>, EngineError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let request = self
                .streams
                .describe_stream()
                .stream_arn(stream_arn)
                .set_exclusive_start_shard_id(start)
                .send();
            let d = call(self.metrics, "dynamodbstreams", "DescribeStream", request).await?;
            let Some(desc) = d.stream_description() else {
                return Ok(out);
            };
            for s in desc.shards() {
                if let Some(id) = s.shard_id() {
                    out.push((id.to_string(), s.parent_shard_id().map(str::to_string)));
                }
            }
            start = desc.last_evaluated_shard_id().map(str::to_string);
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    /// An iterator at the first record after the checkpoint (or at the trim
    /// horizon when there is none or it is unusable).
    pub(crate) async fn iterator(
        &self,
        stream_arn: &str,
        shard: &str,
    ) -> Result<Option<String>, EngineError> {
        let after = self.cluster.checkpoint(stream_arn, shard).await?;
        if let Some(seq) = &after {
            let request = self
                .streams
                .get_shard_iterator()
                .stream_arn(stream_arn)
                .shard_id(shard)
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(seq)
                .send();
            match call(self.metrics, "dynamodbstreams", "GetShardIterator", request).await {
                Ok(out) => return Ok(out.shard_iterator().map(str::to_string)),
                // Trimmed (older than 24 h) or from another stream: start over.
                Err(e) => {
                    tracing::warn!(shard, error = %chain(&e), "checkpoint unusable; reading from the trim horizon")
                }
            }
        }
        let request = self
            .streams
            .get_shard_iterator()
            .stream_arn(stream_arn)
            .shard_id(shard)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send();
        let out = call(self.metrics, "dynamodbstreams", "GetShardIterator", request).await?;
        Ok(out.shard_iterator().map(str::to_string))
    }
}

impl PresenceConsumer {
    fn reader(&self) -> StreamReader<'_> {
        StreamReader {
            ddb: &self.ddb,
            streams: &self.streams,
            connections_table: &self.connections_table,
            cluster: &self.cluster,
            metrics: &self.metrics,
        }
    }

    async fn emit(&self, user: &str, status: PresenceStatus, at: u64) -> Result<(), EngineError> {
        let route = match self.source {
            PresenceSource::Topic => OutputRoute::Publish,
            PresenceSource::Queue => OutputRoute::Send,
            PresenceSource::None => return Ok(()),
        };
        self.output
            .emit(ClientMessage {
                route,
                source: sumu_shared::attributes::SOURCE_PRESENCE,
                user_id: user.to_string(),
                timestamp: at,
                body: PresenceEvent::new(user, status, at).to_json(),
            })
            .await
    }

    /// Handles one GetRecords batch: each user's records in order, users
    /// concurrently (so the Queries overlap and the events batch).
    async fn handle_batch(
        &self,
        state: &mut PresenceState,
        records: &[Record],
    ) -> Result<(), EngineError> {
        let mut per_user: Vec<(String, Vec<(bool, u64)>)> = Vec::new();
        for record in records {
            let inserted = match record.event_name() {
                Some(OperationType::Insert) => true,
                Some(OperationType::Remove) => false,
                _ => continue,
            };
            let Some(user) = user_of(record) else {
                continue;
            };
            let event = (inserted, millis_of(record));
            match per_user.iter_mut().find(|(u, _)| *u == user) {
                Some((_, events)) => events.push(event),
                None => per_user.push((user, vec![event])),
            }
        }
        let shared = std::sync::Mutex::new(std::mem::take(state));
        let chains = per_user.into_iter().map(|(user, events)| {
            let shared = &shared;
            async move {
                for (inserted, at) in events {
                    let live = self.store.connections_of(&user).await?.len();
                    let status = shared
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .decide(&user, inserted, live);
                    if let Some(status) = status {
                        // Believed only once sent: a failed send fails the
                        // batch, which is read again from its checkpoint.
                        self.emit(&user, status, at).await?;
                        shared
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .sent(&user, status);
                        self.metrics
                            .notifications
                            .with_label_values(&[
                                "presence",
                                if inserted { "online" } else { "offline" },
                            ])
                            .inc();
                    }
                }
                Ok::<(), EngineError>(())
            }
        });
        let result: Result<Vec<()>, EngineError> = futures_util::stream::iter(chains)
            .buffer_unordered(USER_CONCURRENCY)
            .try_collect()
            .await;
        *state = shared.into_inner().unwrap_or_else(|e| e.into_inner());
        result.map(|_| ())
    }

    /// Reads every shard until told to stop.
    pub(crate) async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut state = PresenceState::default();
        while !stop.is_cancelled() {
            if let Err(e) = self.consume(&mut state, &stop).await {
                tracing::warn!(error = %chain(&e), "presence consumer failed; restarting");
                if !pause(&stop, Duration::from_secs(1)).await {
                    return;
                }
            }
        }
    }

    async fn consume(
        &self,
        state: &mut PresenceState,
        stop: &CancellationToken,
    ) -> Result<(), EngineError> {
        let reader = self.reader();
        let stream_arn = reader.stream_arn().await?;
        // Shard id → its next iterator (None: the shard is closed and read).
        let mut cursors: HashMap<String, Option<String>> = HashMap::new();
        let mut finished: HashSet<String> = HashSet::new();
        let mut scanned = tokio::time::Instant::now() - RESCAN_EVERY;
        let mut known: Vec<(String, Option<String>)> = Vec::new();
        let mut lag_published = tokio::time::Instant::now() - PUBLISH_LAG_EVERY;
        let mut idle = IdleBackoff::new();
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            if scanned.elapsed() >= RESCAN_EVERY {
                known = reader.shards(&stream_arn).await?;
                scanned = tokio::time::Instant::now();
            }
            let ids: HashSet<&str> = known.iter().map(|(id, _)| id.as_str()).collect();
            let mut got_any = false;
            let mut lag_ms = 0u64;
            for (shard, parent) in &known {
                if finished.contains(shard) {
                    continue;
                }
                // Parents before children (a parent no longer listed is trimmed).
                if let Some(p) = parent {
                    if ids.contains(p.as_str()) && !finished.contains(p) {
                        continue;
                    }
                }
                if !cursors.contains_key(shard) {
                    let iterator = reader.iterator(&stream_arn, shard).await?;
                    cursors.insert(shard.clone(), iterator);
                }
                let Some(cursor) = cursors.get_mut(shard) else {
                    continue;
                };
                let Some(iterator) = cursor.clone() else {
                    finished.insert(shard.clone());
                    continue;
                };
                let request = self
                    .streams
                    .get_records()
                    .shard_iterator(iterator)
                    .limit(1000)
                    .send();
                let out = match call(&self.metrics, "dynamodbstreams", "GetRecords", request).await
                {
                    Ok(out) => out,
                    Err(e) => {
                        // An expired iterator: get a fresh one from the checkpoint.
                        tracing::debug!(shard, error = %chain(&e), "re-reading shard from checkpoint");
                        cursors.remove(shard);
                        continue;
                    }
                };
                let records = out.records();
                self.handle_batch(state, records).await?;
                if let Some(last) = records.last() {
                    lag_ms = lag_ms.max(now_ms().saturating_sub(millis_of(last)));
                }
                if let Some(seq) = records
                    .last()
                    .and_then(|r| r.dynamodb())
                    .and_then(|d| d.sequence_number())
                {
                    self.cluster
                        .save_checkpoint(&stream_arn, shard, seq)
                        .await?;
                    got_any = true;
                }
                *cursor = out.next_shard_iterator().map(str::to_string);
                if cursor.is_none() {
                    finished.insert(shard.clone());
                }
            }
            self.metrics.presence_lag_ms.set(lag_ms as i64);
            if lag_published.elapsed() >= PUBLISH_LAG_EVERY {
                if let Some(metric) = &self.lag_metric {
                    metric.publish(&self.connections_table, lag_ms);
                }
                lag_published = tokio::time::Instant::now();
            }
            if let Some(wait) = idle.after_round(got_any) {
                if !pause(stop, wait).await {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decides, and records the event as sent (what the consumer does when
    /// the send succeeds).
    fn step(
        s: &mut PresenceState,
        user: &str,
        inserted: bool,
        live: usize,
    ) -> Option<PresenceStatus> {
        let status = s.decide(user, inserted, live);
        if let Some(status) = status {
            s.sent(user, status);
        }
        status
    }

    #[test]
    fn idle_reads_back_off_to_a_second_and_a_record_resets_them() {
        let ms = Duration::from_millis;
        let mut b = IdleBackoff::new();
        let idle: Vec<Option<Duration>> = (0..5).map(|_| b.after_round(false)).collect();
        assert_eq!(
            idle,
            [
                Some(ms(250)),
                Some(ms(500)),
                Some(ms(1000)),
                Some(ms(1000)),
                Some(ms(1000))
            ]
        );
        assert_eq!(b.after_round(true), None, "a record: read again at once");
        assert_eq!(
            b.after_round(false),
            Some(ms(250)),
            "and quick again after it"
        );
    }

    #[test]
    fn users_who_left_are_forgotten() {
        let mut s = PresenceState {
            online: HashSet::new(),
            offline: RecentIds::new(100, OFFLINE_MEMORY),
        };
        for i in 0..1000 {
            let u = format!("u{i}");
            assert_eq!(step(&mut s, &u, true, 1), Some(PresenceStatus::Online));
            assert_eq!(step(&mut s, &u, false, 0), Some(PresenceStatus::Offline));
        }
        let tracked = s.online.len() + s.offline.len();
        assert!(tracked <= 100, "{tracked} users remembered");
        // The ones still remembered get no second OFFLINE; older ones one at worst.
        assert_eq!(step(&mut s, "u999", false, 0), None);
    }

    #[test]
    fn an_event_whose_send_failed_is_decided_again() {
        let mut s = PresenceState::default();
        assert_eq!(s.decide("u", true, 1), Some(PresenceStatus::Online));
        // The send failed: nothing believed, the record read again decides again.
        assert_eq!(s.decide("u", true, 1), Some(PresenceStatus::Online));
        s.sent("u", PresenceStatus::Online);
        assert_eq!(s.decide("u", true, 2), None);
        assert_eq!(s.decide("u", false, 0), Some(PresenceStatus::Offline));
        assert_eq!(s.decide("u", false, 0), Some(PresenceStatus::Offline));
        s.sent("u", PresenceStatus::Offline);
        assert_eq!(s.decide("u", false, 0), None);
    }

    #[test]
    fn online_on_first_offline_on_last_no_repeats() {
        let mut s = PresenceState::default();
        assert_eq!(step(&mut s, "u", true, 1), Some(PresenceStatus::Online));
        assert_eq!(step(&mut s, "u", true, 2), None);
        assert_eq!(step(&mut s, "u", false, 1), None);
        assert_eq!(step(&mut s, "u", false, 0), Some(PresenceStatus::Offline));
        assert_eq!(step(&mut s, "u", false, 0), None);
        // A connection gone before its INSERT was read: its REMOVE decides.
        assert_eq!(step(&mut s, "v", true, 0), None);
        assert_eq!(step(&mut s, "v", false, 0), Some(PresenceStatus::Offline));
        // A new leader that never saw the user still reports the OFFLINE.
        let mut fresh = PresenceState::default();
        assert_eq!(
            step(&mut fresh, "w", false, 0),
            Some(PresenceStatus::Offline)
        );
    }
}
