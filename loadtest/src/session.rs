//! The task that owns one client socket: keepalive pings, bench deliveries (latency,
//! sequence numbers, duplicates), optional publishing with ack tracking, and closing
//! at the planned time or when the run stops.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::PublishAction;
use crate::latency::{LocalRecorder, ShardedHistogram};
use crate::notifier::{classify_frame, Incoming};
use crate::seq_set::SeqSet;
use crate::tokens::unix_now;
use crate::ws_client::WsStream;

/// Counters read by the progress bar while the run goes on.
#[derive(Debug, Default)]
pub struct LiveCounters {
    pub attempted: AtomicU64,
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    pub closed: AtomicU64,
    pub deliveries: AtomicU64,
    /// Deliveries to sockets that are not planned to close early (non-churning).
    pub deliveries_stable: AtomicU64,
    pub published: AtomicU64,
    pub acked: AtomicU64,
    pub error_frames: AtomicU64,
    pub notifications: AtomicU64,
}

impl LiveCounters {
    pub fn open(&self) -> u64 {
        self.connected
            .load(Ordering::Relaxed)
            .saturating_sub(self.closed.load(Ordering::Relaxed))
    }
}

/// Every first delivery of a request to a socket, readable while the run goes on (a
/// session's own [`SeqSet`] is handed back only when it ends): fleet drills wait on it,
/// and the cross-node split of `fanout --nodes` needs each delivery's socket and latency.
#[derive(Debug, Default)]
pub struct DeliveryTap {
    /// Session index -> (seq, latency in microseconds) in arrival order.
    by_session: Mutex<HashMap<usize, Vec<(u64, u64)>>>,
}

impl DeliveryTap {
    pub fn record(&self, session: usize, seq: u64, latency_micros: u64) {
        self.by_session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(session)
            .or_default()
            .push((seq, latency_micros));
    }

    /// The requests session `session` received so far.
    pub fn seen(&self, session: usize) -> SeqSet {
        let mut set = SeqSet::new();
        if let Some(list) = self
            .by_session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&session)
        {
            for (seq, _) in list {
                set.insert(*seq);
            }
        }
        set
    }

    /// Every (session, seq, latency) so far.
    pub fn all(&self) -> Vec<(usize, u64, u64)> {
        let map = self.by_session.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .flat_map(|(s, list)| list.iter().map(move |(seq, lat)| (*s, *seq, *lat)))
            .collect()
    }
}

/// Latency sinks shared by all sessions.
#[derive(Debug)]
pub struct Sinks {
    pub connect: ShardedHistogram,
    pub delivery: ShardedHistogram,
    pub pong: ShardedHistogram,
    pub ack: ShardedHistogram,
    /// Off unless a run needs deliveries as they happen ([`Sinks::with_tap`]).
    pub tap: Option<DeliveryTap>,
}

impl Sinks {
    pub fn new() -> Self {
        let shards = crate::sys_limits::cpu_count() * 4;
        Sinks {
            connect: ShardedHistogram::new(shards),
            delivery: ShardedHistogram::new(shards),
            pong: ShardedHistogram::new(shards),
            ack: ShardedHistogram::new(shards),
            tap: None,
        }
    }

    /// Sinks that also keep every delivery in a [`DeliveryTap`].
    pub fn with_tap() -> Self {
        Sinks {
            tap: Some(DeliveryTap::default()),
            ..Sinks::new()
        }
    }
}

impl Default for Sinks {
    fn default() -> Self {
        Self::new()
    }
}

/// Publishing behaviour of a session.
#[derive(Debug, Clone)]
pub struct PublishPlan {
    pub action: PublishAction,
    pub interval: Duration,
    /// Publish for this long from the moment the socket connected.
    pub duration: Duration,
    pub payload_bytes: usize,
}

/// What one session does.
#[derive(Debug, Clone)]
pub struct SessionPlan {
    pub index: usize,
    pub user: usize,
    pub ping_interval: Duration,
    /// Close the socket at this time (churning sockets).
    pub close_at: Option<Instant>,
    pub publish: Option<PublishPlan>,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The run ended and we closed it.
    Stopped,
    /// Closed by us at its planned time (churn).
    Planned,
    /// The server closed it (close frame or EOF), with the close code if any.
    ServerClosed(Option<u16>),
    /// A read or write error.
    Error(String),
}

/// What a session saw.
#[derive(Debug, Clone)]
pub struct SessionOutcome {
    pub index: usize,
    pub user: usize,
    pub connected_at: Instant,
    pub ended_at: Instant,
    pub end: SessionEnd,
    pub seen: SeqSet,
    pub duplicates: u64,
    pub foreign: u64,
    pub pongs: u64,
    pub published: u64,
    pub acked: u64,
    pub unknown_acks: u64,
    /// Published frames still without an ack when the session ended.
    pub unacked: u64,
    pub error_frames: BTreeMap<u16, u64>,
    pub last_delivery: Option<Instant>,
}

/// Runs one session until the plan or `stop` ends it.
pub async fn run_session(
    mut ws: WsStream,
    connected_at: Instant,
    plan: SessionPlan,
    run_id: Arc<str>,
    live: Arc<LiveCounters>,
    sinks: Arc<Sinks>,
    mut stop: watch::Receiver<bool>,
) -> SessionOutcome {
    let mut outcome = SessionOutcome {
        index: plan.index,
        user: plan.user,
        connected_at,
        ended_at: connected_at,
        end: SessionEnd::Stopped,
        seen: SeqSet::new(),
        duplicates: 0,
        foreign: 0,
        pongs: 0,
        published: 0,
        acked: 0,
        unknown_acks: 0,
        unacked: 0,
        error_frames: BTreeMap::new(),
        last_delivery: None,
    };
    let mut delivery_rec = LocalRecorder::new(plan.index);
    let mut pong_rec = LocalRecorder::new(plan.index);
    let mut ack_rec = LocalRecorder::new(plan.index);

    let far = Duration::from_secs(365 * 24 * 3600);
    let ping_every = if plan.ping_interval.is_zero() {
        far
    } else {
        plan.ping_interval
    };
    // Spread keepalives over the interval so sockets do not ping in lockstep.
    let phase =
        Duration::from_millis((plan.index as u64 * 7919) % ping_every.as_millis().max(1) as u64);
    let mut ping_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + ping_every.min(far) + phase.min(ping_every),
        ping_every,
    );
    ping_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut pings_in_flight: VecDeque<Instant> = VecDeque::new();

    let publish_every = plan.publish.as_ref().map(|p| p.interval).unwrap_or(far);
    let publish_phase = Duration::from_micros(
        (plan.index as u64 * 104_729) % publish_every.as_micros().clamp(1, u64::MAX as u128) as u64,
    );
    let mut publish_tick = tokio::time::interval_at(
        tokio::time::Instant::now() + publish_phase.min(far),
        publish_every,
    );
    publish_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let publish_until = plan.publish.as_ref().map(|p| connected_at + p.duration);
    let mut pending_acks: HashMap<String, Instant> = HashMap::new();
    let mut next_id: u64 = 0;

    let close_sleep = tokio::time::sleep_until(
        plan.close_at
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + far),
    );
    tokio::pin!(close_sleep);

    if *stop.borrow() {
        close_quietly(&mut ws).await;
        outcome.ended_at = Instant::now();
        live.closed.fetch_add(1, Ordering::Relaxed);
        return outcome;
    }
    let end = loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let received = Instant::now();
                    match classify_frame(text.as_str(), &run_id) {
                        Incoming::Delivery { seq, sent_micros } => {
                            let now_micros = unix_now().as_micros() as u64;
                            let latency = now_micros.saturating_sub(sent_micros);
                            delivery_rec.record(&sinks.delivery, latency);
                            if outcome.seen.insert(seq) {
                                if let Some(tap) = &sinks.tap {
                                    tap.record(plan.index, seq, latency);
                                }
                                live.deliveries.fetch_add(1, Ordering::Relaxed);
                                if plan.close_at.is_none() {
                                    live.deliveries_stable.fetch_add(1, Ordering::Relaxed);
                                }
                            } else {
                                outcome.duplicates += 1;
                            }
                            outcome.last_delivery = Some(received);
                        }
                        Incoming::Foreign => outcome.foreign += 1,
                        Incoming::Pong => {
                            outcome.pongs += 1;
                            if let Some(sent) = pings_in_flight.pop_front() {
                                pong_rec.record(&sinks.pong, received.duration_since(sent).as_micros() as u64);
                            }
                        }
                        Incoming::Ack { id } => match pending_acks.remove(&id) {
                            Some(sent) => {
                                outcome.acked += 1;
                                live.acked.fetch_add(1, Ordering::Relaxed);
                                ack_rec.record(&sinks.ack, received.duration_since(sent).as_micros() as u64);
                            }
                            None => outcome.unknown_acks += 1,
                        },
                        Incoming::Error { status, id, .. } => {
                            // A rejected publish is answered, not outstanding.
                            if let Some(id) = id {
                                pending_acks.remove(&id);
                            }
                            *outcome.error_frames.entry(status).or_insert(0) += 1;
                            live.error_frames.fetch_add(1, Ordering::Relaxed);
                        }
                        Incoming::Other => {}
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    break SessionEnd::ServerClosed(frame.map(|f| u16::from(f.code)));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break SessionEnd::Error(e.to_string()),
                None => break SessionEnd::ServerClosed(None),
            },
            _ = ping_tick.tick(), if !plan.ping_interval.is_zero() => {
                pings_in_flight.push_back(Instant::now());
                if pings_in_flight.len() > 64 {
                    pings_in_flight.pop_front();
                }
                if let Err(e) = ws.send(Message::text(r#"{"action":"ping"}"#)).await {
                    break SessionEnd::Error(e.to_string());
                }
            }
            _ = publish_tick.tick(), if publish_until.is_some_and(|until| Instant::now() < until) => {
                let Some(publish) = plan.publish.as_ref() else { continue };
                // The guard was checked when select! started; the tick may come later.
                if publish_until.is_some_and(|until| Instant::now() >= until) {
                    continue;
                }
                let id = next_id.to_string();
                next_id += 1;
                let action = match publish.action {
                    PublishAction::Publish => "publish",
                    PublishAction::Send => "send",
                };
                let frame = format!(
                    r#"{{"action":"{action}","id":"{id}","message":{{"type":"bench","t":{},"pad":"{}"}}}}"#,
                    unix_now().as_micros(),
                    "x".repeat(publish.payload_bytes)
                );
                pending_acks.insert(id, Instant::now());
                outcome.published += 1;
                live.published.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = ws.send(Message::text(frame)).await {
                    break SessionEnd::Error(e.to_string());
                }
            }
            _ = &mut close_sleep, if plan.close_at.is_some() => {
                close_quietly(&mut ws).await;
                break SessionEnd::Planned;
            }
            changed = stop.changed() => {
                // A dropped sender also means stop.
                let _ = changed;
                close_quietly(&mut ws).await;
                break SessionEnd::Stopped;
            }
        }
    };
    delivery_rec.flush(&sinks.delivery);
    pong_rec.flush(&sinks.pong);
    ack_rec.flush(&sinks.ack);
    outcome.ended_at = Instant::now();
    outcome.end = end;
    outcome.unacked = pending_acks.len() as u64;
    live.closed.fetch_add(1, Ordering::Relaxed);
    outcome
}

async fn close_quietly(ws: &mut WsStream) {
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
}

/// Counts of session ends by reason, for reports.
pub fn end_counts(outcomes: &[SessionOutcome]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for o in outcomes {
        let key = match &o.end {
            SessionEnd::Stopped => "closed_at_end".to_string(),
            SessionEnd::Planned => "closed_as_planned".to_string(),
            SessionEnd::ServerClosed(Some(code)) => format!("server_closed_{code}"),
            SessionEnd::ServerClosed(None) => "server_closed".to_string(),
            SessionEnd::Error(_) => "socket_error".to_string(),
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}
