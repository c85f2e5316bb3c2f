//! The reaper (leader only): a node is dead when the leader itself watched
//! its heartbeat not advance for the node timeout, measured on the leader's
//! own monotonic clock. The heartbeat's value is only compared with the
//! previous one (never with this node's wall clock), and any gap in the
//! leader's own view of AWS (a scan that failed, was late or took long)
//! restarts the observation of every node: a stall of AWS, or of the
//! leader, never makes live nodes look dead.
//!
//! Fence first. A dead node's `node#` row is marked (`reaped_by`, only if
//! it still holds the heartbeat and inbox judged stale); its connection rows
//! are then deleted only while that mark stands (each transaction checks
//! it; the stream turns the deletes into OFFLINE events), then its
//! subscription, its inbox, and the marked row. A node that resumes during
//! its reap cannot heartbeat a marked row: it rejoins (`mesh/membership.rs`), its
//! rejoin replaces the row, and from then on the reap deletes nothing of
//! it, not even the rows it writes again for the sockets it kept.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::clients::call;
use super::cluster::{ClusterTable, NodeSeen};
use super::periodic::pause;
use super::store::DynamoStore;
use crate::engine::EngineError;
use crate::logging::chain;
use crate::metrics::Metrics;

pub(crate) struct Reaper {
    pub(crate) sqs: aws_sdk_sqs::Client,
    pub(crate) sns: aws_sdk_sns::Client,
    pub(crate) cluster: ClusterTable,
    pub(crate) store: DynamoStore,
    pub(crate) node_id: String,
    /// A heartbeat that did not advance for this long means the node is dead.
    pub(crate) timeout: Duration,
    pub(crate) every: Duration,
    pub(crate) metrics: Arc<Metrics>,
    /// Drills only (`--reap-step-pause-ms`): a pause between the steps of
    /// a reap, so a drill can resume the node in the middle of one.
    pub(crate) step_pause: Duration,
}

/// What the leader has watched of each node's heartbeat. Pure: instants are
/// given, so the judgement is unit-tested without clocks or AWS.
#[derive(Debug)]
pub(crate) struct Observer {
    timeout: Duration,
    /// A longer gap between scans (or a longer scan) restarts every
    /// observation.
    max_gap: Duration,
    last_scan_end: Option<Instant>,
    /// Node → (heartbeat value, when the leader first saw that value).
    seen: HashMap<String, (u64, Instant)>,
}

impl Observer {
    pub(crate) fn new(timeout: Duration, every: Duration) -> Observer {
        Observer {
            timeout,
            max_gap: every + timeout / 2,
            last_scan_end: None,
            seen: HashMap::new(),
        }
    }

    /// Records a scan sent at `start` and answered at `end`, which saw the
    /// heartbeats `rows`; answers the nodes judged dead.
    pub(crate) fn observe(
        &mut self,
        start: Instant,
        end: Instant,
        rows: &[(&str, u64)],
    ) -> Vec<String> {
        let gap = match self.last_scan_end {
            None => true,
            Some(prev) => start.saturating_duration_since(prev) > self.max_gap,
        } || end.saturating_duration_since(start) > self.max_gap;
        self.last_scan_end = Some(end);
        let mut dead = Vec::new();
        let mut seen = HashMap::with_capacity(rows.len());
        for &(node, heartbeat) in rows {
            let since = match self.seen.get(node) {
                Some(&(value, since)) if value == heartbeat && !gap => {
                    // Unchanged since `since` (the end of the scan that first
                    // saw it) until at least `start`.
                    if start.saturating_duration_since(since) >= self.timeout {
                        dead.push(node.to_string());
                    }
                    since
                }
                // New, changed, or after a gap: watch from now on.
                _ => end,
            };
            seen.insert(node.to_string(), (heartbeat, since));
        }
        self.seen = seen;
        dead
    }

    /// Forget a node (reaped, or gone).
    fn forget(&mut self, node: &str) {
        self.seen.remove(node);
    }
}

impl Reaper {
    pub(crate) async fn run(self: Arc<Self>, stop: CancellationToken) {
        // One observer per term: a new leader watches for a full timeout
        // before it judges anyone.
        let mut observer = Observer::new(self.timeout, self.every);
        loop {
            match self.reap_once(&mut observer).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(nodes = n, "reaped dead nodes"),
                Err(e) => tracing::warn!(error = %chain(&e), "reaper pass failed"),
            }
            if !pause(&stop, self.every).await {
                return;
            }
        }
    }

    pub(crate) async fn reap_once(&self, observer: &mut Observer) -> Result<usize, EngineError> {
        let start = Instant::now();
        let nodes = self.cluster.scan_nodes(&self.node_id).await?;
        let end = Instant::now();
        let heartbeats: Vec<(&str, u64)> = nodes
            .iter()
            .map(|n| (n.node_id.as_str(), n.heartbeat_at))
            .collect();
        let dead = observer.observe(start, end, &heartbeats);
        let mut reaped = 0;
        for node in nodes.iter().filter(|n| dead.contains(&n.node_id)) {
            if self.reap(node).await? {
                reaped += 1;
            }
            observer.forget(&node.node_id);
        }
        Ok(reaped)
    }

    /// Reaps one node judged dead, fence first: its row is marked (only if
    /// it still holds the heartbeat and inbox judged stale), then its rows
    /// go only while that mark stands, then its subscription and inbox, then
    /// the marked row. A node that resumes meanwhile finds its row marked,
    /// rejoins, and its rejoin replaces the row: from then on the reap
    /// touches nothing of it. Answers false when the node came back.
    async fn reap(&self, node: &NodeSeen) -> Result<bool, EngineError> {
        let id = node.node_id.as_str();
        if !self.cluster.mark_reaping(node, &self.node_id).await? {
            tracing::info!(node_id = %id, "node came back before its reap: kept");
            return Ok(false);
        }
        tracing::warn!(node_id = %id, timeout = ?self.timeout, "node heartbeat did not advance: reaping");
        self.between_steps().await;
        let rows = self.store.connections_on(id).await?;
        let n = rows.len();
        if let Err(e) = self
            .store
            .delete_fenced(&rows, &self.cluster.reap_fence(node, &self.node_id)?)
            .await
        {
            if !self.cluster.still_marked(node, &self.node_id).await? {
                tracing::info!(node_id = %id, "node came back during its reap and rejoined: reap stopped");
                return Ok(false);
            }
            return Err(e);
        }
        self.between_steps().await;
        if let Some(arn) = &node.subscription_arn {
            let request = self.sns.unsubscribe().subscription_arn(arn).send();
            if let Err(e) = call(&self.metrics, "sns", "Unsubscribe", request).await {
                tracing::warn!(error = %chain(&e), "dead node's subscription not removed");
            }
        }
        self.between_steps().await;
        if let Some(url) = &node.inbox_url {
            let request = self.sqs.delete_queue().queue_url(url).send();
            if let Err(e) = call(&self.metrics, "sqs", "DeleteQueue", request).await {
                tracing::warn!(error = %chain(&e), "dead node's inbox not deleted");
            }
        }
        self.between_steps().await;
        // Only the marked row: a node that rejoined meanwhile keeps its new one.
        if !self.cluster.delete_marked(node, &self.node_id).await? {
            tracing::info!(node_id = %id, "node rejoined at the end of its reap: its new row kept");
            return Ok(false);
        }
        self.metrics
            .errors
            .with_label_values(&["node_reaped"])
            .inc();
        tracing::info!(node_id = %id, rows = n, "dead node reaped");
        Ok(true)
    }
}

impl Reaper {
    async fn between_steps(&self) {
        if !self.step_pause.is_zero() {
            tokio::time::sleep(self.step_pause).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(6);
    const EVERY: Duration = Duration::from_secs(2);

    /// Scans every `EVERY` (each taking 10 ms) from `t0 + from`; `beat(i)`
    /// is node "a"'s heartbeat at scan i. Answers the scans that judged "a"
    /// dead.
    fn run(
        obs: &mut Observer,
        t0: Instant,
        scans: std::ops::Range<u32>,
        beat: impl Fn(u32) -> u64,
    ) -> Vec<u32> {
        let mut dead_at = Vec::new();
        for i in scans {
            let start = t0 + EVERY * i;
            let end = start + Duration::from_millis(10);
            if !obs
                .observe(start, end, &[("a", beat(i)), ("b", u64::from(i))])
                .is_empty()
            {
                dead_at.push(i);
            }
        }
        dead_at
    }

    #[test]
    fn a_heartbeat_that_advances_is_alive() {
        let mut obs = Observer::new(TIMEOUT, EVERY);
        assert!(run(&mut obs, Instant::now(), 0..50, u64::from).is_empty());
    }

    #[test]
    fn a_heartbeat_stuck_for_the_timeout_is_dead_after_a_full_observation() {
        let mut obs = Observer::new(TIMEOUT, EVERY);
        // Stuck from the start: first seen at scan 0 (end = 10 ms), judged
        // once a scan starts 6 s after that: scan 4 (8 s).
        let dead = run(&mut obs, Instant::now(), 0..6, |_| 7);
        assert_eq!(dead.first(), Some(&4));
        // Node "b" advanced all along: never dead.
        let t0 = Instant::now();
        let mut obs = Observer::new(TIMEOUT, EVERY);
        for i in 0..10 {
            let start = t0 + EVERY * i;
            let dead = obs.observe(start, start, &[("b", u64::from(i))]);
            assert!(dead.is_empty());
        }
    }

    #[test]
    fn a_stall_between_scans_restarts_the_observation() {
        let t0 = Instant::now();
        let mut obs = Observer::new(TIMEOUT, EVERY);
        // Heartbeats advance until scan 3, then AWS freezes 20 s: no scan
        // answers. The first scan after the freeze sees every heartbeat as
        // it was before the freeze (the others have not written yet).
        assert!(run(&mut obs, t0, 0..3, u64::from).is_empty());
        let after = t0 + EVERY * 2 + Duration::from_secs(20);
        assert!(obs.observe(after, after, &[("a", 2), ("b", 2)]).is_empty());
        // Their next heartbeats land within a period or two: alive.
        let next = after + EVERY;
        assert!(obs.observe(next, next, &[("a", 2), ("b", 2)]).is_empty());
        let next = next + EVERY;
        assert!(obs.observe(next, next, &[("a", 3), ("b", 3)]).is_empty());
    }

    #[test]
    fn a_scan_that_took_long_restarts_the_observation() {
        let t0 = Instant::now();
        let mut obs = Observer::new(TIMEOUT, EVERY);
        assert!(obs.observe(t0, t0, &[("a", 1)]).is_empty());
        let start = t0 + EVERY;
        // Sent before the freeze, answered 20 s later with stale values.
        assert!(obs
            .observe(start, start + Duration::from_secs(20), &[("a", 1)])
            .is_empty());
        let next = start + Duration::from_secs(20) + EVERY;
        assert!(
            obs.observe(next, next, &[("a", 1)]).is_empty(),
            "watched 2 s only"
        );
    }

    #[test]
    fn a_node_that_stays_stuck_after_a_stall_is_dead_a_timeout_later() {
        let t0 = Instant::now();
        let mut obs = Observer::new(TIMEOUT, EVERY);
        assert!(obs.observe(t0, t0, &[("a", 1)]).is_empty());
        let resumed = t0 + Duration::from_secs(30);
        assert!(obs.observe(resumed, resumed, &[("a", 1)]).is_empty());
        let mut t = resumed;
        let mut judged = None;
        for _ in 0..5 {
            t += EVERY;
            if !obs.observe(t, t, &[("a", 1)]).is_empty() {
                judged = Some(t - resumed);
                break;
            }
        }
        assert_eq!(judged, Some(TIMEOUT));
    }

    #[test]
    fn a_node_whose_row_vanished_is_forgotten() {
        let t0 = Instant::now();
        let mut obs = Observer::new(TIMEOUT, EVERY);
        obs.observe(t0, t0, &[("a", 1)]);
        let t = t0 + EVERY;
        obs.observe(t, t, &[]);
        assert!(obs.seen.is_empty());
    }
}
