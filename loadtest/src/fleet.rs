//! A population of client sockets: ramping connection attempts at a rate with bounded
//! concurrency, running one [`session`](crate::session) task per socket, and stopping
//! them all at the end with every task joined or aborted within a deadline.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::cli::TokenPlacement;
use crate::session::{run_session, LiveCounters, SessionOutcome, SessionPlan, Sinks};
use crate::source_addrs::SourceAddrs;
use crate::sys_limits::FailureKind;
use crate::target::Target;
use crate::ws_client::{connect, ConnectError};

/// Connection failures by kind, with one sample message per kind.
#[derive(Debug, Default, Clone)]
pub struct FailureTally {
    pub counts: BTreeMap<FailureKind, u64>,
    pub samples: BTreeMap<FailureKind, String>,
}

impl FailureTally {
    pub fn add(&mut self, error: &ConnectError) {
        *self.counts.entry(error.kind).or_insert(0) += 1;
        self.samples
            .entry(error.kind)
            .or_insert_with(|| error.to_string());
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

/// How sockets connect.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub target: Arc<Target>,
    pub placement: TokenPlacement,
    pub sources: SourceAddrs,
    pub connect_timeout: Duration,
    pub max_inflight: usize,
    /// Stop starting attempts after this many failures in a row (0 = never).
    pub stop_after_failures: u64,
    /// When not empty, socket `i` connects to `direct_targets[i mod len]` instead of `target`.
    pub direct_targets: Vec<Arc<Target>>,
}

impl FleetConfig {
    /// Where socket `index` connects.
    pub fn target_for(&self, index: usize) -> &Arc<Target> {
        if self.direct_targets.is_empty() {
            &self.target
        } else {
            &self.direct_targets[index % self.direct_targets.len()]
        }
    }
}

/// Timing of a ramp.
#[derive(Debug, Clone, Copy)]
pub struct RampStats {
    pub started: Instant,
    pub finished: Instant,
    /// When the last socket of the ramp connected (None: none did).
    pub last_connected: Option<Instant>,
    pub established: u64,
    pub failed: u64,
    /// Attempts never started because the ramp stopped after too many failures in a row.
    pub skipped: u64,
}

impl RampStats {
    /// Established sockets per second, from the first attempt to the last success (failed
    /// attempts that wait for their timeout do not dilute the rate).
    pub fn connect_rate(&self) -> f64 {
        let Some(last) = self.last_connected else {
            return 0.0;
        };
        let secs = last.duration_since(self.started).as_secs_f64();
        if secs > 0.0 {
            self.established as f64 / secs
        } else {
            0.0
        }
    }
}

/// What the fleet returns when stopped.
#[derive(Debug, Default)]
pub struct FleetResult {
    pub outcomes: Vec<SessionOutcome>,
    pub failures: FailureTally,
    /// Tasks that did not finish within the stop deadline (aborted).
    pub aborted: u64,
}

pub struct Fleet {
    config: FleetConfig,
    pub run_id: Arc<str>,
    pub live: Arc<LiveCounters>,
    pub sinks: Arc<Sinks>,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    permits: Arc<Semaphore>,
    tasks: JoinSet<Option<SessionOutcome>>,
    failures: Arc<Mutex<FailureTally>>,
    finished: Vec<SessionOutcome>,
    epoch: Instant,
    /// Micros since `epoch` of the latest successful connect (0 = none yet).
    last_connect_us: Arc<AtomicU64>,
    /// Failed attempts since the last success.
    failure_streak: Arc<AtomicU64>,
}

impl Fleet {
    pub fn new(config: FleetConfig, run_id: Arc<str>) -> Self {
        let (stop_tx, stop_rx) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(config.max_inflight.max(1)));
        Fleet {
            config,
            run_id,
            live: Arc::new(LiveCounters::default()),
            sinks: Arc::new(Sinks::new()),
            stop_tx,
            stop_rx,
            permits,
            tasks: JoinSet::new(),
            failures: Arc::new(Mutex::new(FailureTally::default())),
            finished: Vec::new(),
            epoch: Instant::now(),
            last_connect_us: Arc::new(AtomicU64::new(0)),
            failure_streak: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Starts one connection attempt (waits for a free in-flight slot first).
    pub async fn spawn(&mut self, plan: SessionPlan, token: Arc<str>) {
        let Ok(permit) = Arc::clone(&self.permits).acquire_owned().await else {
            return;
        };
        let target = Arc::clone(self.config.target_for(plan.index));
        let placement = self.config.placement;
        let source = self.config.sources.for_socket(plan.index);
        let timeout = self.config.connect_timeout;
        let live = Arc::clone(&self.live);
        let sinks = Arc::clone(&self.sinks);
        let failures = Arc::clone(&self.failures);
        let run_id = Arc::clone(&self.run_id);
        let stop = self.stop_rx.clone();
        let epoch = self.epoch;
        let last_connect_us = Arc::clone(&self.last_connect_us);
        let failure_streak = Arc::clone(&self.failure_streak);
        live.attempted.fetch_add(1, Ordering::Relaxed);
        self.tasks.spawn(async move {
            let result = connect(&target, &token, placement, source, timeout).await;
            // Count before releasing the slot, so a finished ramp sees every attempt.
            match result {
                Ok((ws, latency)) => {
                    let connected_at = Instant::now();
                    sinks
                        .connect
                        .record_batch(plan.index, &[latency.as_micros() as u64]);
                    live.connected.fetch_add(1, Ordering::Relaxed);
                    let since_epoch = connected_at.duration_since(epoch).as_micros() as u64;
                    last_connect_us.fetch_max(since_epoch.max(1), Ordering::Relaxed);
                    failure_streak.store(0, Ordering::Relaxed);
                    drop(permit);
                    Some(run_session(ws, connected_at, plan, run_id, live, sinks, stop).await)
                }
                Err(error) => {
                    live.failed.fetch_add(1, Ordering::Relaxed);
                    failure_streak.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut tally) = failures.lock() {
                        tally.add(&error);
                    }
                    drop(permit);
                    None
                }
            }
        });
        // Reap finished tasks as we go so the set does not grow with churn.
        while let Some(joined) = self.tasks.try_join_next() {
            if let Ok(Some(outcome)) = joined {
                self.finished.push(outcome);
            }
        }
    }

    /// Opens sockets for `plans` at `rate` attempts per second, then waits until every
    /// attempt has connected or failed (each is bounded by the connect timeout).
    pub async fn ramp(&mut self, plans: Vec<(SessionPlan, Arc<str>)>, rate: f64) -> RampStats {
        let started = Instant::now();
        let connected_before = self.live.connected.load(Ordering::Relaxed);
        let failed_before = self.live.failed.load(Ordering::Relaxed);
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        let planned = plans.len() as u64;
        let mut started_attempts = 0u64;
        for (i, (plan, token)) in plans.into_iter().enumerate() {
            if self.streak_exceeded() {
                break;
            }
            started_attempts += 1;
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
            self.spawn(plan, token).await;
        }
        self.wait_connects().await;
        let last_us = self.last_connect_us.load(Ordering::Relaxed);
        let last_connected = Some(self.epoch + Duration::from_micros(last_us))
            .filter(|last| last_us > 0 && *last >= started);
        RampStats {
            started,
            finished: Instant::now(),
            last_connected,
            established: self.live.connected.load(Ordering::Relaxed) - connected_before,
            failed: self.live.failed.load(Ordering::Relaxed) - failed_before,
            skipped: planned - started_attempts,
        }
    }

    /// True when the last `stop_after_failures` attempts all failed.
    pub fn streak_exceeded(&self) -> bool {
        self.config.stop_after_failures > 0
            && self.failure_streak.load(Ordering::Relaxed) >= self.config.stop_after_failures
    }

    /// Waits until no connection attempt is in flight.
    pub async fn wait_connects(&self) {
        let all = self.config.max_inflight.max(1) as u32;
        if let Ok(permits) = self.permits.acquire_many(all).await {
            drop(permits);
        }
    }

    pub fn failures(&self) -> FailureTally {
        self.failures.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Tells every session to close, joins them within `deadline`, aborts the rest.
    pub async fn stop(mut self, deadline: Duration) -> FleetResult {
        let _ = self.stop_tx.send(true);
        let mut outcomes = std::mem::take(&mut self.finished);
        let mut aborted = 0u64;
        let until = tokio::time::Instant::now() + deadline;
        loop {
            match tokio::time::timeout_at(until, self.tasks.join_next()).await {
                Ok(Some(Ok(Some(outcome)))) => outcomes.push(outcome),
                Ok(Some(Ok(None))) => {}
                Ok(Some(Err(_))) => aborted += 1,
                Ok(None) => break,
                Err(_) => {
                    aborted += self.tasks.len() as u64;
                    self.tasks.abort_all();
                    break;
                }
            }
        }
        outcomes.sort_by_key(|o| o.index);
        FleetResult {
            outcomes,
            failures: self.failures(),
            aborted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_rate_ignores_trailing_timeouts() {
        let started = Instant::now();
        let stats = RampStats {
            started,
            finished: started + Duration::from_secs(12),
            last_connected: Some(started + Duration::from_secs(2)),
            established: 1000,
            failed: 3,
            skipped: 0,
        };
        assert!((stats.connect_rate() - 500.0).abs() < 1e-6);
        let none = RampStats {
            last_connected: None,
            established: 0,
            ..stats
        };
        assert_eq!(none.connect_rate(), 0.0);
    }
}
