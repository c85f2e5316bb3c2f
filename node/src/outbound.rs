//! What one socket has queued but not yet written, bounded, and the
//! cut-off of a socket whose session cannot run.
//!
//! A socket's [`Outbound`] is its queue: the hub puts notifications there
//! as frames encoded once for every socket they go to ([`text_frame`]), and
//! messages for the session actor ([`ToSession`]), in one order. The
//! socket's response stream ([`Metered`]) writes the frames itself, with no
//! actor message and no copy per socket, and the session takes the messages
//! meant for it from the head of the queue ([`SessionInbox`]): a frame
//! queued before a message goes out before the session sees the message
//! (so before the close frame of a drain), and none goes out after the
//! session closed. The stream polls the session only when something woke
//! it (its socket, its timer, its mailbox, a message queued for it): the
//! session is woken through its own waker, which marks it and wakes the
//! socket's task; a frame alone wakes only the task.
//!
//! The session actor runs inside its socket's response stream, so while a
//! slow reader's socket is full the actor is not polled at all: it cannot
//! police itself (neither its queue nor its timers). So:
//! - everyone who queues a frame for a socket reserves here first what it
//!   really costs: the encoded frame, plus [`QUEUED_COST`] while it waits
//!   in the queue (the response stream releases both when the HTTP layer
//!   takes the frame). The session reserves what it writes itself the same
//!   way, and so does the hub for what it sends a recovering socket's
//!   `Resumer` through its mailbox (plus [`MAILBOX_MESSAGE_COST`] until the
//!   Resumer takes it). A reservation over the cap kills the socket;
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

use std::collections::VecDeque;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use actix_http::ws::{OpCode, Parser};
use actix_http::KillSwitch;
use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use futures_util::Stream;

use crate::close::CloseReason;
use crate::config::Limits;
use crate::metrics::Metrics;

/// What one message waiting in an actor's mailbox costs beyond its frame
/// bytes (the payload itself is shared by every recipient): only a
/// recovering socket's `Resumer` is sent such messages. Measured from the
/// real types by `hub::tests::mailbox_message_cost_is_charged`: actix's
/// boxed envelope (48 B) and its queue node (24 B), each a glibc chunk of 64
/// and 32 B with headers; 96 B in all.
pub(crate) const MAILBOX_MESSAGE_COST: usize = 96;

/// What the hub tells a session (through the socket's queue, in order with
/// the frames queued for it).
#[derive(Debug)]
pub(crate) enum ToSession {
    /// Close the socket for this reason (the node is draining).
    Close(CloseReason),
}

/// One entry of a socket's queue.
enum Queued {
    /// A frame, encoded once and shared by every socket it goes to.
    Frame(Bytes),
    /// A message for the session actor.
    Session(ToSession),
}

/// What is at the head of a socket's queue.
enum Head {
    Frame(Bytes),
    /// A message the session has yet to take.
    Session,
    Empty,
}

/// What one entry waiting in a socket's queue costs beyond its frame bytes
/// (the frame itself is shared by every socket it goes to): its slot, twice
/// over because the queue grows by doubling. Checked against the real
/// allocation by `tests::a_queued_entry_costs_at_most_its_charge`.
pub(crate) const QUEUED_COST: usize = 2 * std::mem::size_of::<Queued>();

/// A text frame carrying `payload` as a server sends it (unmasked, final):
/// encoded once, then shared by every socket it is queued for.
pub(crate) fn text_frame(payload: &str) -> Bytes {
    let mut frame = BytesMut::with_capacity(frame_len(payload.len()));
    Parser::write_message(&mut frame, payload, OpCode::Text, true, false);
    frame.freeze()
}

/// How long the sweep lets a session be late on a timer before it acts for
/// it (so a session that can run always closes its socket itself first).
pub(crate) const SWEEP_SLACK: Duration = Duration::from_secs(1);

/// How often, at the most, the hub's sweep looks for sessions that cannot
/// run (see [`FrozenRule::sweep_period`]).
pub(crate) const SWEEP_PERIOD: Duration = Duration::from_secs(1);

/// How long the hub's sweep may wait between two passes, at the longest.
pub(crate) const MAX_SWEEP_PERIOD: Duration = Duration::from_secs(10);

pub(crate) struct Outbound {
    /// Bytes reserved and not yet taken by the HTTP layer.
    queued: AtomicUsize,
    cap: usize,
    killed: AtomicBool,
    /// The session closed the socket: no frame may follow its close frame.
    closing: AtomicBool,
    /// The session has something to do (it was woken, or a message waits
    /// for it); the response stream polls it only then.
    session_due: AtomicBool,
    /// The connection's kill switch (`None` off a real connection).
    switch: Option<KillSwitch>,
    /// When the socket opened, on [`mono_ms`].
    opened: u64,
    /// When its session last ran (its response stream was polled).
    polled: AtomicU64,
    /// Frames and session messages, in the order queued. Emptied, its
    /// allocation goes too: an idle socket holds none.
    entries: Mutex<VecDeque<Queued>>,
    /// The socket's task (the HTTP layer's, which runs the session).
    task: AtomicWaker,
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

/// Now in milliseconds on a monotonic clock (the kernel's coarse one: every
/// poll of every socket's stream reads it).
pub(crate) fn mono_ms() -> u64 {
    crate::sys::coarse_mono_ms()
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
        let now = mono_ms();
        Outbound {
            queued: AtomicUsize::new(0),
            cap,
            killed: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            // The session starts on the stream's first poll.
            session_due: AtomicBool::new(true),
            switch,
            opened: now,
            polled: AtomicU64::new(now),
            entries: Mutex::new(VecDeque::new()),
            task: AtomicWaker::new(),
        }
    }

    /// Reserves `n` bytes; false (and the socket killed, counted in
    /// `metrics`) when that would pass the cap.
    fn reserve_bytes(&self, n: usize, metrics: &Metrics) -> bool {
        if self.is_killed() {
            return false;
        }
        let before = self.queued.fetch_add(n, Ordering::AcqRel);
        if before + n > self.cap {
            self.kill(CloseReason::SlowReader, metrics);
            return false;
        }
        true
    }

    /// Reserves a text frame of `payload` bytes the session writes itself.
    pub(crate) fn reserve(&self, payload: usize, metrics: &Metrics) -> bool {
        self.reserve_bytes(frame_len(payload), metrics)
    }

    /// Reserves a frame sent to a recovering socket's `Resumer` through its
    /// mailbox; it calls [`Outbound::taken`] when it handles the message.
    pub(crate) fn reserve_message(&self, payload: usize, metrics: &Metrics) -> bool {
        self.reserve_message_with(payload, 0, metrics)
    }

    /// Reserves a frame sent through a mailbox in a message that costs
    /// `extra` more than a plain one (a positioned delivery; the Resumer
    /// releases the mailbox part when it takes it).
    pub(crate) fn reserve_message_with(
        &self,
        payload: usize,
        extra: usize,
        metrics: &Metrics,
    ) -> bool {
        self.reserve_bytes(frame_len(payload) + MAILBOX_MESSAGE_COST + extra, metrics)
    }

    /// The `Resumer` took a message from its mailbox.
    pub(crate) fn taken(&self) {
        self.released(MAILBOX_MESSAGE_COST);
    }

    fn entries(&self) -> MutexGuard<'_, VecDeque<Queued>> {
        // A panic while holding the lock leaves a queue that is still whole.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an encoded frame (see [`text_frame`]) unless that would pass
    /// the cap, in which case the slow reader is cut off (false, counted in
    /// `metrics`).
    pub(crate) fn push_frame(&self, frame: &Bytes, metrics: &Metrics) -> bool {
        if !self.reserve_bytes(frame.len() + QUEUED_COST, metrics) {
            return false;
        }
        self.entries().push_back(Queued::Frame(frame.clone()));
        self.task.wake();
        true
    }

    /// Queues a message for the session, after the frames already queued.
    pub(crate) fn push_session(&self, msg: ToSession) {
        self.entries().push_back(Queued::Session(msg));
        self.wake_session();
    }

    /// Takes the frame at the head of the queue (its bytes and its slot stay
    /// reserved until the HTTP layer takes it); says what is there instead
    /// when it is not a frame. Nothing once the session closed.
    fn pop_frame(&self) -> Head {
        if self.closing.load(Ordering::Acquire) {
            return Head::Empty;
        }
        let mut entries = self.entries();
        let frame = match entries.front() {
            Some(Queued::Frame(_)) => match entries.pop_front() {
                Some(Queued::Frame(frame)) => frame,
                _ => unreachable!("the head was a frame"),
            },
            Some(Queued::Session(_)) => return Head::Session,
            None => return Head::Empty,
        };
        match entries.front() {
            None => *entries = VecDeque::new(),
            // A message for the session reached the head: it may take it now.
            Some(Queued::Session(_)) => self.session_due.store(true, Ordering::Release),
            Some(Queued::Frame(_)) => {}
        }
        Head::Frame(frame)
    }

    /// Takes the session message at the head of the queue.
    fn pop_session(&self) -> Option<ToSession> {
        let mut entries = self.entries();
        if !matches!(entries.front(), Some(Queued::Session(_))) {
            return None;
        }
        let Some(Queued::Session(msg)) = entries.pop_front() else {
            return None;
        };
        if entries.is_empty() {
            *entries = VecDeque::new();
        }
        Some(msg)
    }

    /// The session sent its close frame: nothing queued may follow it.
    pub(crate) fn closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    fn wake_session(&self) {
        self.session_due.store(true, Ordering::Release);
        self.task.wake();
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

    /// The queue, in order, for tests: `frame <payload>` (short frames) or
    /// the session message.
    #[cfg(test)]
    pub(crate) fn described(&self) -> Vec<String> {
        self.entries()
            .iter()
            .map(|e| match e {
                Queued::Frame(f) => format!("frame {}", String::from_utf8_lossy(&f[2..])),
                Queued::Session(ToSession::Close(_)) => "close".into(),
            })
            .collect()
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
        // Nothing queued will be written: give the shared frames back now.
        *self.entries() = VecDeque::new();
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

    /// How often the hub sweeps: a tenth of the shortest deadline a frozen
    /// session can run out (idle timeout, two ping intervals, max
    /// duration), between [`SWEEP_PERIOD`] and [`MAX_SWEEP_PERIOD`]. A pass
    /// visits every socket, so at the defaults (pings every 30 s: 6 s) an
    /// idle node pays a sixth of a once-a-second sweep, and a frozen socket
    /// is still cut off within a tenth of its timer after the deadline.
    pub(crate) fn sweep_period(&self) -> Duration {
        let shortest = self
            .idle_timeout
            .min(2 * self.ping_interval)
            .min(self.max_connection);
        (shortest / 10).clamp(SWEEP_PERIOD, MAX_SWEEP_PERIOD)
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

/// The session's waker: marks the session due and wakes the socket's task.
impl Wake for Outbound {
    fn wake(self: Arc<Self>) {
        self.wake_session();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_session();
    }
}

/// A socket's response stream: the session's own output (`inner`, polled
/// only when the session is due) and the frames queued for the socket. It
/// records when the session runs, releases bytes as the HTTP layer takes
/// them, and ends once the socket was killed.
pub(crate) struct Metered<S> {
    inner: S,
    outbound: Arc<Outbound>,
    /// The waker the session is polled with ([`Outbound`]'s).
    session: Waker,
}

impl<S> Metered<S> {
    pub(crate) fn new(inner: S, outbound: Arc<Outbound>) -> Metered<S> {
        let session = Waker::from(outbound.clone());
        Metered {
            inner,
            outbound,
            session,
        }
    }
}

impl<S, E> Stream for Metered<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let out = &*this.outbound;
        if out.is_killed() {
            return Poll::Ready(None);
        }
        out.ran(mono_ms());
        // Registered before the queue is looked at, so no push is missed.
        out.task.register(cx.waker());
        loop {
            // The session first when it is due, so a flood of frames cannot
            // starve it (its socket's reads, its pongs, its close).
            if out.session_due.swap(false, Ordering::AcqRel) {
                let mut session_cx = Context::from_waker(&this.session);
                match Pin::new(&mut this.inner).poll_next(&mut session_cx) {
                    Poll::Ready(Some(Ok(bytes))) => {
                        // It may have more: poll it again next time.
                        out.session_due.store(true, Ordering::Release);
                        out.released(bytes.len());
                        return Poll::Ready(Some(Ok(bytes)));
                    }
                    Poll::Ready(other) => return Poll::Ready(other),
                    Poll::Pending => {}
                }
            }
            match out.pop_frame() {
                Head::Frame(frame) => {
                    out.released(frame.len() + QUEUED_COST);
                    return Poll::Ready(Some(Ok(frame)));
                }
                // The session was woken meanwhile (it may also take a
                // message at the head, letting the frames behind it go).
                _ if out.session_due.load(Ordering::Acquire) => continue,
                // A message at the head waits for the session: it was
                // polled since the message got there, and did not take it
                // (it waits on a future of its own, which will wake it).
                Head::Session | Head::Empty => return Poll::Pending,
            }
        }
    }
}

/// The messages queued for a session, as a stream its actor adds to its
/// context: it yields the one at the head of the socket's queue, if any.
/// It needs no waker of its own: a push marks the session due and wakes
/// the socket's task, whose stream then polls the session.
pub(crate) struct SessionInbox(pub(crate) Arc<Outbound>);

impl Stream for SessionInbox {
    type Item = ToSession;

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<ToSession>> {
        match self.0.pop_session() {
            Some(msg) => Poll::Ready(Some(msg)),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_period_is_a_tenth_of_the_shortest_timer_within_1_to_10_s() {
        let rule = |idle, max, ping| FrozenRule {
            idle_timeout: Duration::from_secs(idle),
            max_connection: Duration::from_secs(max),
            ping_interval: Duration::from_secs(ping),
            slack: SWEEP_SLACK,
        };
        // The defaults: pings every 30 s, so two intervals (60 s) are the shortest.
        assert_eq!(rule(600, 7200, 30).sweep_period(), Duration::from_secs(6));
        assert_eq!(rule(40, 7200, 30).sweep_period(), Duration::from_secs(4));
        assert_eq!(rule(600, 7200, 1).sweep_period(), SWEEP_PERIOD);
        assert_eq!(rule(3, 7200, 30).sweep_period(), SWEEP_PERIOD);
        assert_eq!(rule(86_400, 86_400, 3600).sweep_period(), MAX_SWEEP_PERIOD);
    }
    use crate::sys::counting_alloc::held;

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
    fn a_queued_frame_costs_its_slot_until_written() {
        let (o, m) = (Outbound::new(10_000, None), Metrics::new());
        let frame = text_frame("x");
        assert_eq!(frame.len(), 3);
        assert!(o.push_frame(&frame, &m));
        assert_eq!(o.queued(), 3 + QUEUED_COST);
        assert!(matches!(o.pop_frame(), Head::Frame(f) if f == frame));
        o.released(3 + QUEUED_COST);
        assert_eq!(o.queued(), 0);
        // Tiny frames trip the cap by their real cost, not their 3 bytes.
        let fits = 10_000 / (3 + QUEUED_COST);
        for _ in 0..fits {
            assert!(o.push_frame(&frame, &m));
        }
        assert!(!o.push_frame(&frame, &m));
        assert!(o.is_killed());
        // A killed socket's queue is dropped at once.
        assert!(matches!(o.pop_frame(), Head::Empty));
    }

    /// What the queue really allocates per entry stays within the charge
    /// (the frames themselves are shared, not copied), and an emptied queue
    /// gives its allocation back.
    #[test]
    fn a_queued_entry_costs_at_most_its_charge() {
        let frame = text_frame(r#"{"type":"x"}"#);
        // Its first clone gives the frame its shared header (32 B, once per
        // frame, whatever the sockets): not the queue's.
        drop(frame.clone());
        let m = Metrics::new();
        for n in [1usize, 4, 5, 100, 1000, 1025, 5000] {
            let o = Outbound::new(usize::MAX, None);
            let before = held();
            for _ in 0..n {
                assert!(o.push_frame(&frame, &m));
            }
            let cost = (held() - before) as usize;
            // The first allocation is four slots, whatever n.
            assert!(
                cost <= n.max(4) * QUEUED_COST,
                "{n} entries hold {cost} B, charged {QUEUED_COST} B each"
            );
            for _ in 0..n {
                assert!(matches!(o.pop_frame(), Head::Frame(_)));
            }
            assert_eq!(held(), before, "an emptied queue keeps no allocation");
        }
    }

    /// A stand-in for the session: it takes what the hub queued for it
    /// and answers a close with a close frame, as the session does.
    struct FakeSession {
        inbox: SessionInbox,
        polls: Arc<AtomicUsize>,
    }

    impl Stream for FakeSession {
        type Item = Result<Bytes, ()>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            match Pin::new(&mut self.inbox).poll_next(cx) {
                Poll::Ready(Some(ToSession::Close(_))) => {
                    self.inbox.0.closing();
                    Poll::Ready(Some(Ok(Bytes::from_static(b"close"))))
                }
                _ => Poll::Pending,
            }
        }
    }

    fn metered() -> (Arc<Outbound>, Metered<FakeSession>, Arc<AtomicUsize>) {
        let o = Arc::new(Outbound::new(10_000, None));
        let polls = Arc::new(AtomicUsize::new(0));
        let session = FakeSession {
            inbox: SessionInbox(o.clone()),
            polls: polls.clone(),
        };
        (o.clone(), Metered::new(session, o), polls)
    }

    /// Everything the stream yields until it is pending.
    fn drain(m: &mut Metered<FakeSession>) -> Vec<Bytes> {
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        while let Poll::Ready(Some(Ok(b))) = Pin::new(&mut *m).poll_next(&mut cx) {
            out.push(b);
        }
        out
    }

    #[test]
    fn frames_queued_before_a_close_go_first_and_none_after_it() {
        let (o, mut s, _) = metered();
        let m = Metrics::new();
        let (f1, f2, f3) = (text_frame("1"), text_frame("2"), text_frame("3"));
        assert!(o.push_frame(&f1, &m));
        assert!(o.push_frame(&f2, &m));
        o.push_session(ToSession::Close(CloseReason::ServerShutdown));
        assert!(o.push_frame(&f3, &m));
        assert_eq!(drain(&mut s), vec![f1, f2, Bytes::from_static(b"close")]);
        assert!(drain(&mut s).is_empty());
    }

    #[test]
    fn frames_go_out_without_polling_the_session() {
        let (o, mut s, polls) = metered();
        let m = Metrics::new();
        assert!(drain(&mut s).is_empty());
        // The first poll started the session.
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        let frame = text_frame("n");
        for _ in 0..3 {
            assert!(o.push_frame(&frame, &m));
        }
        assert_eq!(drain(&mut s).len(), 3);
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        assert_eq!(o.queued(), 0, "every byte released as it was taken");
        // Its own waker (its socket, its timer) makes it due again.
        Waker::from(o.clone()).wake();
        assert!(drain(&mut s).is_empty());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
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
