//! Building blocks of fault drills on a fleet (issue 13's drills, issue 9's fault
//! tests): a [`Population`] of clients, one per user, that reconnect through the
//! balancer when the server drops them (unless told not to come back); an
//! [`Injector`] of numbered notification requests at a steady rate; the presence
//! events a backend receives ([`PresenceWatch`]); and live delivery accounting.
//!
//! Invariant: every connection is its own [`SessionOutcome`] (its own live window),
//! so the run's usual accounting ([`check_deliveries`]) holds across reconnects: a
//! socket that was live for a request's whole window must have received it exactly
//! once; a request sent while a client was reconnecting is owed to nobody.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::cli::{FanoutMode, TokenPlacement};
use crate::fleet::FailureTally;
use crate::notifier::{bench_data, request_body, targets_for, Notifier};
use crate::scenario::fanout::{check_deliveries, DeliveryCheck, SentRequest};
use crate::session::{run_session, LiveCounters, SessionEnd, SessionOutcome, SessionPlan, Sinks};
use crate::target::Target;
use crate::tokens::unix_now;
use crate::ws_client::connect;

/// How the clients of a [`Population`] connect.
#[derive(Debug, Clone)]
pub struct PopulationConfig {
    pub target: Arc<Target>,
    pub placement: TokenPlacement,
    pub ping_interval: Duration,
    pub connect_timeout: Duration,
    /// Pause before a dropped client reconnects (and between failed attempts).
    pub reconnect_delay: Duration,
}

#[derive(Default)]
struct Sessions {
    /// Open sessions: index -> (user, connected at).
    open: HashMap<usize, (usize, Instant)>,
    ended: Vec<SessionOutcome>,
}

struct Shared {
    sessions: Mutex<Sessions>,
    /// User index -> whether its client reconnects after a drop.
    returning: HashMap<usize, AtomicBool>,
    next_index: AtomicUsize,
    failures: Mutex<FailureTally>,
}

/// One client per user, reconnecting after the server drops it.
pub struct Population {
    shared: Arc<Shared>,
    pub live: Arc<LiveCounters>,
    pub sinks: Arc<Sinks>,
    pub run_id: Arc<str>,
    stop_tx: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Population {
    /// Starts one client per (user index, token), `ramp` clients per second.
    pub async fn start(
        config: PopulationConfig,
        tokens: Vec<(usize, Arc<str>)>,
        run_id: Arc<str>,
        ramp: f64,
    ) -> Population {
        let shared = Arc::new(Shared {
            sessions: Mutex::new(Sessions::default()),
            returning: tokens
                .iter()
                .map(|(user, _)| (*user, AtomicBool::new(true)))
                .collect(),
            next_index: AtomicUsize::new(0),
            failures: Mutex::new(FailureTally::default()),
        });
        let live = Arc::new(LiveCounters::default());
        let sinks = Arc::new(Sinks::with_tap());
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let every = Duration::from_secs_f64(1.0 / ramp.max(1.0));
        for (user, token) in tokens {
            tasks.spawn(client(
                user,
                token,
                config.clone(),
                Arc::clone(&shared),
                Arc::clone(&live),
                Arc::clone(&sinks),
                Arc::clone(&run_id),
                stop_rx.clone(),
            ));
            tokio::time::sleep(every).await;
        }
        Population {
            shared,
            live,
            sinks,
            run_id,
            stop_tx,
            tasks,
        }
    }

    /// Open sockets now.
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.shared
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `n` sockets are open; false after `within`.
    pub async fn wait_open(&self, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.open() < n {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// Users whose client is connected now.
    pub fn connected_users(&self) -> Vec<usize> {
        let mut users: Vec<usize> = self.lock().open.values().map(|(u, _)| *u).collect();
        users.sort_unstable();
        users.dedup();
        users
    }

    /// These users' clients do not reconnect once dropped.
    pub fn stop_returning(&self, users: impl IntoIterator<Item = usize>) {
        for u in users {
            if let Some(flag) = self.shared.returning.get(&u) {
                flag.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Sessions that ended so far (dropped by the server, or stopped).
    pub fn ended(&self) -> Vec<SessionOutcome> {
        self.lock().ended.clone()
    }

    /// Every session so far; the open ones as if they ended now, with what they
    /// received so far.
    pub fn snapshot(&self) -> Vec<SessionOutcome> {
        let now = Instant::now();
        let tap = self.sinks.tap.as_ref();
        let sessions = self.lock();
        let mut all = sessions.ended.clone();
        for (&index, &(user, connected_at)) in &sessions.open {
            all.push(SessionOutcome {
                index,
                user,
                connected_at,
                ended_at: now,
                end: SessionEnd::Stopped,
                seen: tap.map(|t| t.seen(index)).unwrap_or_default(),
                duplicates: 0,
                foreign: 0,
                pongs: 0,
                published: 0,
                acked: 0,
                unknown_acks: 0,
                unacked: 0,
                error_frames: Default::default(),
                last_delivery: None,
            });
        }
        all
    }

    /// Failed connection attempts so far (during drills some are expected: a node
    /// that is draining answers 503, a killed one resets).
    pub fn connect_failures(&self) -> FailureTally {
        self.shared
            .failures
            .lock()
            .map(|f| f.clone())
            .unwrap_or_default()
    }

    /// Waits until every request accepted so far reached every socket that was live
    /// for its whole window, or `within` passed. Returns the accounting at that moment.
    pub async fn await_deliveries(
        &self,
        requests: &[SentRequest],
        settle: Duration,
        within: Duration,
    ) -> DeliveryCheck {
        let deadline = Instant::now() + within;
        loop {
            let check = check_deliveries(requests, &self.snapshot(), settle);
            if check.lost == 0 || Instant::now() >= deadline {
                return check;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Closes every client and returns every session (open ones end now).
    pub async fn stop(mut self, deadline: Duration) -> Vec<SessionOutcome> {
        let _ = self.stop_tx.send(true);
        let until = tokio::time::Instant::now() + deadline;
        while let Ok(Some(_)) = tokio::time::timeout_at(until, self.tasks.join_next()).await {}
        self.tasks.abort_all();
        let mut sessions = self.lock();
        let mut all = std::mem::take(&mut sessions.ended);
        all.sort_by_key(|o| o.index);
        all
    }
}

#[allow(clippy::too_many_arguments)]
async fn client(
    user: usize,
    token: Arc<str>,
    config: PopulationConfig,
    shared: Arc<Shared>,
    live: Arc<LiveCounters>,
    sinks: Arc<Sinks>,
    run_id: Arc<str>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        live.attempted.fetch_add(1, Ordering::Relaxed);
        match connect(
            &config.target,
            &token,
            config.placement,
            None,
            config.connect_timeout,
        )
        .await
        {
            Ok((ws, latency)) => {
                let connected_at = Instant::now();
                let index = shared.next_index.fetch_add(1, Ordering::Relaxed);
                sinks
                    .connect
                    .record_batch(index, &[latency.as_micros() as u64]);
                live.connected.fetch_add(1, Ordering::Relaxed);
                shared
                    .sessions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .open
                    .insert(index, (user, connected_at));
                let plan = SessionPlan {
                    index,
                    user,
                    ping_interval: config.ping_interval,
                    close_at: None,
                    publish: None,
                };
                let outcome = run_session(
                    ws,
                    connected_at,
                    plan,
                    Arc::clone(&run_id),
                    Arc::clone(&live),
                    Arc::clone(&sinks),
                    stop.clone(),
                )
                .await;
                let stopped = outcome.end == SessionEnd::Stopped;
                {
                    let mut sessions = shared.sessions.lock().unwrap_or_else(|e| e.into_inner());
                    sessions.open.remove(&index);
                    sessions.ended.push(outcome);
                }
                let returning = shared
                    .returning
                    .get(&user)
                    .is_some_and(|r| r.load(Ordering::Relaxed));
                if stopped || !returning {
                    return;
                }
            }
            Err(error) => {
                live.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut f) = shared.failures.lock() {
                    f.add(&error);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.reconnect_delay) => {}
            _ = stop.changed() => return,
        }
    }
}

/// What an [`Injector`] sends.
#[derive(Debug, Clone)]
pub struct InjectorConfig {
    pub mode: FanoutMode,
    /// Users per multicast.
    pub k: usize,
    /// Users `0..users` (named `prefix{i}`).
    pub users: usize,
    pub prefix: String,
    /// Requests per second.
    pub rate: f64,
    /// Most requests in flight.
    pub inflight: usize,
    pub run_id: Arc<str>,
    /// The first request's sequence number (a second injector of the same run
    /// continues where the first stopped).
    pub first_seq: u64,
}

/// Sends numbered notification requests at a steady rate until stopped.
pub struct Injector {
    stop_tx: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Vec<SentRequest>>,
    pub sent: Arc<AtomicU64>,
}

impl Injector {
    pub fn start(notifier: Arc<Notifier>, config: InjectorConfig) -> Injector {
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let sent = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&sent);
        let task = tokio::spawn(async move {
            let interval = Duration::from_secs_f64(1.0 / config.rate.max(0.01));
            let inflight = Arc::new(Semaphore::new(config.inflight.max(1)));
            let mut sends: JoinSet<SentRequest> = JoinSet::new();
            let mut next = tokio::time::Instant::now();
            let mut seq = config.first_seq;
            let mut done = Vec::new();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    _ = stop_rx.changed() => break,
                }
                next += interval;
                let Ok(permit) = Arc::clone(&inflight).acquire_owned().await else {
                    break;
                };
                let users = targets_for(seq, config.mode, config.k, config.users).map(|mut u| {
                    u.sort_unstable();
                    u.dedup();
                    u
                });
                let this_seq = seq;
                seq += 1;
                let notifier = Arc::clone(&notifier);
                let run_id = Arc::clone(&config.run_id);
                let prefix = config.prefix.clone();
                let counter = Arc::clone(&counter);
                sends.spawn(async move {
                    let started = Instant::now();
                    let data = bench_data(&run_id, this_seq, unix_now().as_micros() as u64, 0);
                    let result = notifier
                        .send(request_body(users.as_deref(), &prefix, &data))
                        .await;
                    drop(permit);
                    counter.fetch_add(1, Ordering::Relaxed);
                    let mut request = SentRequest {
                        seq: this_seq,
                        users,
                        started,
                        accepted: None,
                        server_deliveries: None,
                        error: None,
                    };
                    match result {
                        Ok(reported) => {
                            request.accepted = Some(Instant::now());
                            request.server_deliveries = reported;
                        }
                        Err(e) => request.error = Some((e.kind_name(), e.to_string())),
                    }
                    request
                });
                while let Some(r) = sends.try_join_next() {
                    if let Ok(r) = r {
                        done.push(r);
                    }
                }
            }
            // The sends still in flight finish (each is bounded by the client timeouts).
            while let Some(r) = sends.join_next().await {
                if let Ok(r) = r {
                    done.push(r);
                }
            }
            done
        });
        Injector {
            stop_tx,
            task,
            sent,
        }
    }

    /// Stops sending; returns every request sent, by sequence number.
    pub async fn stop(self) -> Vec<SentRequest> {
        let _ = self.stop_tx.send(true);
        let mut requests = self.task.await.unwrap_or_default();
        requests.sort_by_key(|r| r.seq);
        requests
    }
}

/// One presence event as a backend receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEvent {
    pub user: String,
    pub status: String,
    pub received: Instant,
}

/// Collects presence events (`source` = `lambda.presence.watchdog`) from a queue
/// (the messages queue with `--presence-source queue`, or a backend queue subscribed
/// to the messages topic), deleting what it read.
pub struct PresenceWatch {
    events: Arc<Mutex<Vec<PresenceEvent>>>,
    stop_tx: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The presence event in a message body, if it is one: (user, status).
pub fn parse_presence(body: &str) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    if v.get("type")?.as_str()? != "presence" {
        return None;
    }
    let m = v.get("message")?;
    Some((
        m.get("user_id")?.as_str()?.to_string(),
        m.get("status")?.as_str()?.to_string(),
    ))
}

impl PresenceWatch {
    pub fn start(sqs: aws_sdk_sqs::Client, queue_url: String) -> PresenceWatch {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let receive = sqs
                    .receive_message()
                    .queue_url(&queue_url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .message_attribute_names("All")
                    .send();
                let out = tokio::select! {
                    out = receive => out,
                    _ = stop_rx.changed() => return,
                };
                let Ok(out) = out else {
                    // The emulator may be frozen by the drill: try again.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let received = Instant::now();
                let mut handles = Vec::new();
                for m in out.messages.unwrap_or_default() {
                    let source = m
                        .message_attributes()
                        .and_then(|a| a.get("source"))
                        .and_then(|v| v.string_value())
                        .unwrap_or_default()
                        .to_string();
                    if source == "lambda.presence.watchdog" {
                        if let Some((user, status)) = m.body().and_then(parse_presence) {
                            sink.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(PresenceEvent {
                                    user,
                                    status,
                                    received,
                                });
                        }
                    }
                    if let Some(h) = m.receipt_handle() {
                        handles.push(h.to_string());
                    }
                }
                for h in handles {
                    let _ = sqs
                        .delete_message()
                        .queue_url(&queue_url)
                        .receipt_handle(h)
                        .send()
                        .await;
                }
            }
        });
        PresenceWatch {
            events,
            stop_tx,
            task,
        }
    }

    /// Every event so far, in arrival order.
    pub fn events(&self) -> Vec<PresenceEvent> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Events of `user` with `status` so far.
    pub fn count(&self, user: &str, status: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| e.user == user && e.status == status)
            .count()
    }

    pub async fn stop(self) -> Vec<PresenceEvent> {
        let _ = self.stop_tx.send(true);
        let _ = self.task.await;
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Deliveries slower than `bound` (from the population's tap), and the slowest.
pub fn late_deliveries(sinks: &Sinks, bound: Duration) -> (u64, Duration) {
    let Some(tap) = &sinks.tap else {
        return (0, Duration::ZERO);
    };
    let bound = bound.as_micros() as u64;
    let mut late = 0;
    let mut max = 0;
    for (_, _, latency) in tap.all() {
        max = max.max(latency);
        if latency > bound {
            late += 1;
        }
    }
    (late, Duration::from_micros(max))
}

/// Close codes of the sessions the server ended, with counts (`None` = no close frame).
pub fn server_close_codes(sessions: &[SessionOutcome]) -> HashMap<Option<u16>, usize> {
    let mut codes = HashMap::new();
    for s in sessions {
        if let SessionEnd::ServerClosed(code) = s.end {
            *codes.entry(code).or_insert(0) += 1;
        } else if let SessionEnd::Error(_) = s.end {
            *codes.entry(None).or_insert(0) += 1;
        }
    }
    codes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_bodies() {
        assert_eq!(
            parse_presence(
                r#"{"type":"presence","message":{"user_id":"u1","status":"OFFLINE","timestamp":1}}"#
            ),
            Some(("u1".into(), "OFFLINE".into()))
        );
        assert_eq!(parse_presence(r#"{"type":"bench","message":{}}"#), None);
        assert_eq!(parse_presence("nope"), None);
    }

    #[test]
    fn close_codes_count_server_ends_only() {
        let t = Instant::now();
        let mk = |end| SessionOutcome {
            index: 0,
            user: 0,
            connected_at: t,
            ended_at: t,
            end,
            seen: Default::default(),
            duplicates: 0,
            foreign: 0,
            pongs: 0,
            published: 0,
            acked: 0,
            unknown_acks: 0,
            unacked: 0,
            error_frames: Default::default(),
            last_delivery: None,
        };
        let codes = server_close_codes(&[
            mk(SessionEnd::ServerClosed(Some(1012))),
            mk(SessionEnd::ServerClosed(Some(1012))),
            mk(SessionEnd::ServerClosed(None)),
            mk(SessionEnd::Error("reset".into())),
            mk(SessionEnd::Stopped),
        ]);
        assert_eq!(codes[&Some(1012)], 2);
        assert_eq!(codes[&None], 2);
        assert_eq!(codes.len(), 2);
    }
}
