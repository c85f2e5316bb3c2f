//! The bound on what one socket may have queued but not yet written, and
//! the cut-off of a socket whose session cannot run.
//!
//! A session actor runs inside its socket's response stream, so while a slow
//! reader's socket is full the actor is not polled at all: it cannot police
//! itself (neither its queue nor its timers). So:
//! - everyone who queues a frame for a session reserves here first what it
//!   really costs: the encoded frame, plus [`MAILBOX_MESSAGE_COST`] while it
//!   waits in the session's mailbox (the session releases that part when it
//!   takes the message, the response stream the frame bytes as the HTTP
//!   layer takes them). A reservation over the cap kills the socket;
//! - the response stream records when it was last polled, and the hub's
//!   sweep ([`frozen_due`]) kills a socket whose session has not run for
//!   longer than its timers allow (idle timeout, max duration, ping
//!   liveness), so those timers hold even for a socket whose writes block.
//!
//! Killing acts on the socket's own connection only: it throws the
//! connection's [`KillSwitch`], which wakes the connection's dispatcher (in
//! the vendored actix-http) and lets it drop the socket it owns, with a zero
//! linger (RST, unsent data discarded). No descriptor number is kept here, so
//! a kill can never reach a descriptor the kernel has given to someone else.

use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_http::KillSwitch;
use bytes::Bytes;
use futures_util::Stream;

use crate::close::CloseReason;
use crate::config::Limits;
use crate::metrics::Metrics;

/// What one message waiting in a session's mailbox costs beyond its frame
/// bytes (the payload itself is shared by every recipient). Measured from
/// the real types by `hub::tests::mailbox_message_cost_is_charged`: actix's
/// boxed envelope (48 B) and its queue node (24 B), each a glibc chunk of 64
/// and 32 B with headers; 96 B in all.
pub(crate) const MAILBOX_MESSAGE_COST: usize = 96;

/// How long the sweep lets a session be late on a timer before it acts for
/// it (so a session that can run always closes its socket itself first).
pub(crate) const SWEEP_SLACK: Duration = Duration::from_secs(1);

/// How often the hub's sweep looks for sessions that cannot run.
pub(crate) const SWEEP_PERIOD: Duration = Duration::from_secs(1);

pub(crate) struct Outbound {
    queued: AtomicUsize,
    cap: usize,
    killed: AtomicBool,
    /// The connection's kill switch (`None` off a real connection).
    switch: Option<KillSwitch>,
    /// When the socket opened, on [`mono_ms`].
    opened: u64,
    /// When its session last ran (its response stream was polled).
    polled: AtomicU64,
}

/// Size of an unmasked server frame carrying `payload` bytes.
pub(crate) fn frame_len(payload: usize) -> usize {
    let header = match payload {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    };
    payload + header
}

/// Milliseconds on a monotonic clock that starts with the process.
pub(crate) fn mono_ms(at: Instant) -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    at.saturating_duration_since(start).as_millis() as u64
}

/// The kill switch of an accepted TCP connection: a kill sets a zero linger
/// on it (run by the connection's dispatcher while it still owns the
/// socket, right before dropping it), so the peer gets a RST and the kernel
/// frees what was unsent.
pub(crate) fn kill_switch(tcp: &tokio::net::TcpStream) -> KillSwitch {
    let fd = tcp.as_raw_fd();
    KillSwitch::with_abort(move || crate::sys::set_zero_linger(fd))
}

impl Outbound {
    pub(crate) fn new(cap: usize, switch: Option<KillSwitch>) -> Outbound {
        let now = mono_ms(Instant::now());
        Outbound {
            queued: AtomicUsize::new(0),
            cap,
            killed: AtomicBool::new(false),
            switch,
            opened: now,
            polled: AtomicU64::new(now),
        }
    }

    /// Reserves room for a text frame of `payload` bytes (plus `extra`);
    /// false (and the socket killed, counted in `metrics`) when that would
    /// pass the cap.
    fn reserve_with(&self, payload: usize, extra: usize, metrics: &Metrics) -> bool {
        if self.is_killed() {
            return false;
        }
        let n = frame_len(payload) + extra;
        let before = self.queued.fetch_add(n, Ordering::AcqRel);
        if before + n > self.cap {
            self.kill(CloseReason::SlowReader, metrics);
            return false;
        }
        true
    }

    /// Reserves a frame the session writes itself (no mailbox on the way).
    pub(crate) fn reserve(&self, payload: usize, metrics: &Metrics) -> bool {
        self.reserve_with(payload, 0, metrics)
    }

    /// Reserves a frame sent to the session through its mailbox; the
    /// session calls [`Outbound::taken`] when it handles the message.
    pub(crate) fn reserve_message(&self, payload: usize, metrics: &Metrics) -> bool {
        self.reserve_with(payload, MAILBOX_MESSAGE_COST, metrics)
    }

    /// Reserves a frame sent through a mailbox in a message that costs
    /// `extra` more than a plain one (a recovering socket's positioned
    /// delivery); released with [`Outbound::taken_with`].
    pub(crate) fn reserve_message_with(
        &self,
        payload: usize,
        extra: usize,
        metrics: &Metrics,
    ) -> bool {
        self.reserve_with(payload, MAILBOX_MESSAGE_COST + extra, metrics)
    }

    /// The session took a message from its mailbox.
    pub(crate) fn taken(&self) {
        self.released(MAILBOX_MESSAGE_COST);
    }

    /// A message reserved with [`Outbound::reserve_message_with`] was taken.
    pub(crate) fn taken_with(&self, extra: usize) {
        self.released(MAILBOX_MESSAGE_COST + extra);
    }

    /// Bytes the HTTP layer took.
    pub(crate) fn released(&self, n: usize) {
        let _ = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                Some(q.saturating_sub(n))
            });
    }

    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    pub(crate) fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// Drops the connection now, discarding unsent data, and counts
    /// `reason` in `metrics`. Idempotent (the first reason is the one
    /// counted); does nothing to any other connection, even once this one
    /// is gone.
    pub(crate) fn kill(&self, reason: CloseReason, metrics: &Metrics) {
        if self.killed.swap(true, Ordering::AcqRel) {
            return;
        }
        reason.count(metrics);
        if let Some(switch) = &self.switch {
            switch.kill();
        }
    }

    /// What the sweep must do for this socket at `now`: a reason to kill it
    /// when its session has not run in time (see [`frozen_due`]).
    pub(crate) fn overdue(&self, now: u64, rule: &FrozenRule) -> Option<CloseReason> {
        if self.is_killed() {
            return None;
        }
        frozen_due(self.opened, self.polled.load(Ordering::Acquire), now, rule)
    }

    fn ran(&self, now: u64) {
        self.polled.store(now, Ordering::Release);
    }
}

/// The lifetimes the sweep enforces for a session that cannot run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FrozenRule {
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connection: Duration,
    pub(crate) ping_interval: Duration,
    pub(crate) slack: Duration,
}

impl FrozenRule {
    pub(crate) fn new(limits: &Limits) -> FrozenRule {
        FrozenRule {
            idle_timeout: limits.idle_timeout,
            max_connection: limits.max_connection,
            ping_interval: limits.ping_interval,
            slack: SWEEP_SLACK,
        }
    }
}

/// The timers of a session whose response stream was last polled at
/// `polled` (all on [`mono_ms`]). A session that can run is polled at
/// least once a ping interval (its ping timer wakes it), and closes its
/// socket itself on time; so a session not polled for longer than a timer
/// allows (plus `slack`) is frozen, its socket write-blocked, and the
/// sweep closes it for that timer:
/// - max duration: the deadline passed while it was frozen;
/// - idle timeout: its last data frame is no later than its last poll;
/// - ping liveness: nothing was heard (its last poll) for over two ping
///   intervals, as the session's own rule says.
///
/// Never earlier than the session itself would have (each condition
/// implies the session's own), at most `slack` plus a sweep period later.
pub(crate) fn frozen_due(
    opened: u64,
    polled: u64,
    now: u64,
    rule: &FrozenRule,
) -> Option<CloseReason> {
    let ms = |d: Duration| d.as_millis() as u64;
    let slack = ms(rule.slack);
    let end = opened.saturating_add(ms(rule.max_connection));
    if polled < end && now >= end.saturating_add(slack) {
        return Some(CloseReason::MaxDuration);
    }
    if now >= polled.saturating_add(ms(rule.idle_timeout) + slack) {
        return Some(CloseReason::IdleTimeout);
    }
    if now > polled.saturating_add(2 * ms(rule.ping_interval) + slack) {
        return Some(CloseReason::NoPong);
    }
    None
}

/// Wraps a session's response stream: records when the session runs,
/// releases bytes as they are taken, and ends the stream once the socket
/// was killed.
pub(crate) struct Metered<S> {
    inner: S,
    outbound: Arc<Outbound>,
}

impl<S> Metered<S> {
    pub(crate) fn new(inner: S, outbound: Arc<Outbound>) -> Metered<S> {
        Metered { inner, outbound }
    }
}

impl<S, E> Stream for Metered<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.outbound.is_killed() {
            return Poll::Ready(None);
        }
        self.outbound.ran(mono_ms(Instant::now()));
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(bytes))) = &polled {
            self.outbound.released(bytes.len());
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_sizes_match_rfc6455_headers() {
        assert_eq!(frame_len(0), 2);
        assert_eq!(frame_len(125), 127);
        assert_eq!(frame_len(126), 130);
        assert_eq!(frame_len(65535), 65539);
        assert_eq!(frame_len(65536), 65546);
    }

    #[test]
    fn reservation_over_cap_kills_and_release_frees() {
        let (o, m) = (Outbound::new(100, None), Metrics::new());
        assert!(o.reserve(50, &m)); // 52
        o.released(52);
        assert_eq!(o.queued(), 0);
        assert!(o.reserve(90, &m)); // 92
        assert!(!o.reserve(10, &m)); // 104 > 100
        assert!(o.is_killed());
        assert!(!o.reserve(1, &m));
        assert_eq!(
            m.connections_closed
                .with_label_values(&["slow_reader"])
                .get(),
            1
        );
    }

    #[test]
    fn a_queued_message_costs_its_mailbox_slot_until_taken() {
        let (o, m) = (Outbound::new(10_000, None), Metrics::new());
        assert!(o.reserve_message(1, &m));
        assert_eq!(o.queued(), 3 + MAILBOX_MESSAGE_COST);
        o.taken();
        assert_eq!(o.queued(), 3);
        o.released(3);
        assert_eq!(o.queued(), 0);
        // Tiny messages trip the cap by their real cost, not their 3 bytes.
        let per = 3 + MAILBOX_MESSAGE_COST;
        let fits = 10_000 / per;
        for _ in 0..fits {
            assert!(o.reserve_message(1, &m));
        }
        assert!(!o.reserve_message(1, &m));
        assert!(o.is_killed());
    }

    #[test]
    fn a_kill_throws_the_connection_switch_once() {
        let switch = KillSwitch::new();
        let o = Outbound::new(100, Some(switch.clone()));
        assert!(!switch.is_killed());
        o.kill(CloseReason::NoPong, &Metrics::new());
        assert!(switch.is_killed());
        assert!(o.is_killed());
        assert_eq!(o.overdue(u64::MAX, &rule()), None);
    }

    fn rule() -> FrozenRule {
        FrozenRule {
            idle_timeout: Duration::from_secs(600),
            max_connection: Duration::from_secs(7200),
            ping_interval: Duration::from_secs(30),
            slack: Duration::from_secs(1),
        }
    }

    const S: u64 = 1000;

    #[test]
    fn a_session_polled_every_ping_interval_is_never_due() {
        let r = rule();
        // Polled 30 s ago (its last ping): alive, whatever else.
        for now in [30 * S, 61 * S, 600 * S, 7000 * S] {
            assert_eq!(frozen_due(0, now - 30 * S, now, &r), None, "{now}");
        }
    }

    #[test]
    fn a_frozen_session_fails_liveness_after_two_intervals_and_the_slack() {
        let r = rule();
        assert_eq!(frozen_due(0, 100 * S, 161 * S, &r), None);
        assert_eq!(
            frozen_due(0, 100 * S, 161 * S + 1, &r),
            Some(CloseReason::NoPong)
        );
    }

    #[test]
    fn a_frozen_session_is_idle_when_the_idle_timeout_is_shorter() {
        let r = FrozenRule {
            idle_timeout: Duration::from_secs(20),
            ..rule()
        };
        assert_eq!(frozen_due(0, 100 * S, 120 * S, &r), None);
        assert_eq!(
            frozen_due(0, 100 * S, 121 * S, &r),
            Some(CloseReason::IdleTimeout)
        );
    }

    #[test]
    fn max_duration_only_for_a_session_frozen_at_its_deadline() {
        let r = rule();
        let end = 7200 * S;
        // Frozen 10 s before the end: closed for max duration just after it.
        assert_eq!(frozen_due(0, end - 10 * S, end, &r), None);
        assert_eq!(
            frozen_due(0, end - 10 * S, end + S, &r),
            Some(CloseReason::MaxDuration)
        );
        // Polled at or after the deadline: the session handled it itself.
        assert_eq!(frozen_due(0, end, end + 5 * S, &r), None);
    }
}
