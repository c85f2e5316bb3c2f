//! A recovering socket's companion actor ([`Resumer`]): the hub delivers to
//! it instead of to the session; it keeps the socket's positions, replays
//! what the socket missed, merges the replay with live deliveries, fills
//! gaps, and puts the finished frames into the socket's queue
//! ([`Outbound::push_frame`], in the order it finishes them), which the
//! socket's response stream writes as it writes a plain socket's. The
//! session actor is the same for every socket, so a plain socket carries
//! nothing of this.
//!
//! Invariants:
//! - exactly once per position: a delivery at or before the socket's
//!   position is dropped (a request routed twice has one position); one
//!   after it waits in order ([`Track`]);
//! - the seam: the hub registration happens before the history is read, so
//!   what was recorded after the read arrives live, and what was recorded
//!   before it is in the replay; duplicates across the seam are dropped by
//!   position;
//! - a gap that is still open [`GAP_WAIT`] after it appeared (routers race,
//!   so order of arrival is not order of position) is filled from history;
//!   a gap that cannot be filled, or a stream reset, closes the socket with
//!   [`CloseReason::RecoveryInterrupted`] (1013) so the client resumes and
//!   is told honestly; nothing is skipped silently;
//! - it never waits on I/O: history reads are spawned futures whose answers
//!   come back to the actor; every frame it queues is reserved in the
//!   socket's outbound bound first, and what it holds is too;
//! - its close (an interruption, or the drain's) is queued after the frames
//!   it already finished, so they go out before the close frame.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytestring::ByteString;
use sumu_shared::recovery::{self as wire, Cursor, Position, RecoveryCode, Since};
use tokio::sync::Semaphore;

use crate::close::CloseReason;
use crate::engine::history::{
    self, Budget, Content, Heads, History, ReadError, ResumeFailed, Resumed, Slot, StreamKind,
};
use crate::hub::{Positioned, ToResumer, POSITIONED_EXTRA_COST};
use crate::logging::chain;
use crate::metrics::Metrics;
use crate::outbound::{frame_len, text_frame, Outbound, ToSession, MAILBOX_MESSAGE_COST};

/// How long a gap in a live stream may stay open before it is filled from
/// history.
pub(crate) const GAP_WAIT: Duration = Duration::from_secs(1);
/// History reads (resumes, gap fills, catch-ups) at once on one node.
pub(crate) const MAX_CONCURRENT_READS: usize = 64;
/// What a delivery held in a [`Track`] costs beside its frame bytes.
const PENDING_COST: usize = 64;

/// What every recovering socket of a node shares.
pub(crate) struct RecoveryEnv {
    /// `None`: this node keeps no history (`disabled`).
    pub(crate) history: Option<Arc<dyn History>>,
    pub(crate) budget: Budget,
    pub(crate) reads: Arc<Semaphore>,
    /// The node's metrics (recoveries, replays, gap fills, duplicates).
    pub(crate) metrics: Arc<Metrics>,
}

impl RecoveryEnv {
    pub(crate) fn new(
        history: Option<Arc<dyn History>>,
        budget: Budget,
        metrics: Arc<Metrics>,
    ) -> RecoveryEnv {
        RecoveryEnv {
            history,
            budget,
            reads: Arc::new(Semaphore::new(MAX_CONCURRENT_READS)),
            metrics,
        }
    }
}

/// A delivery waiting for its turn.
#[derive(Debug)]
struct Item {
    epoch: u64,
    at_ms: u64,
    payload: Option<ByteString>,
    /// Bytes it holds in the outbound bound (0 for what came from history).
    reserved: usize,
}

/// What became of an offered delivery.
#[derive(Debug, PartialEq, Eq)]
enum Offer {
    /// Waiting for its turn (or its turn is now).
    Held,
    /// At or before the position, or already held: dropped. Carries the
    /// bytes it held.
    Duplicate(usize),
    /// Another epoch: the stream was reset under the socket.
    Reset,
}

/// One stream of a recovering socket: its position and what arrived ahead
/// of it. Pure: the actor drives it, tests drive it directly.
#[derive(Debug, Default)]
struct Track {
    pos: Position,
    pending: BTreeMap<u64, Item>,
    /// A history read for this stream is running.
    filling: bool,
    gap_timer: Option<SpawnHandle>,
}

impl Track {
    /// Offers the delivery at `position`. Before the position is known
    /// (`pos` is none) everything is held.
    fn offer(&mut self, position: Position, item: Item) -> Offer {
        if self.pos.is_some() {
            if position.epoch != self.pos.epoch {
                return Offer::Reset;
            }
            if position.seq <= self.pos.seq {
                return Offer::Duplicate(item.reserved);
            }
        }
        if self.pending.contains_key(&position.seq) {
            return Offer::Duplicate(item.reserved);
        }
        self.pending.insert(position.seq, item);
        Offer::Held
    }

    /// The position is known now: drops what it already covers. Answers
    /// the bytes released and how many were dropped, or `None` on a reset.
    fn settle(&mut self, pos: Position) -> Option<(usize, u64)> {
        self.pos = pos;
        if self.pending.values().any(|i| i.epoch != pos.epoch) {
            return None;
        }
        let keep = self.pending.split_off(&(pos.seq + 1));
        let dropped = std::mem::replace(&mut self.pending, keep);
        Some((
            dropped.values().map(|i| i.reserved).sum(),
            dropped.len() as u64,
        ))
    }

    /// The next delivery in order, if it is here; the position advances.
    fn pop_ready(&mut self) -> Option<Item> {
        let next = self.pos.seq + 1;
        let item = self.pending.remove(&next)?;
        self.pos.seq = next;
        self.pos.at_ms = self.pos.at_ms.max(item.at_ms);
        Some(item)
    }

    /// The last position of the open gap (what a fill must read up to).
    fn gap(&self) -> Option<u64> {
        let (&first, _) = self.pending.first_key_value()?;
        (first > self.pos.seq + 1).then_some(first - 1)
    }
}

/// Starts the recovery once the socket is registered (hub and store).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Begin;

/// Where the resume stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for [`Begin`] or the resume's answer: deliveries are held.
    Resuming,
    Live,
    /// Closing: nothing more is sent.
    Closed,
}

pub(crate) struct Resumer {
    user_id: Arc<str>,
    tag: u64,
    since: Since,
    /// The socket's queue: the finished frames go there, and the close.
    outbound: Arc<Outbound>,
    env: Arc<RecoveryEnv>,
    phase: Phase,
    user: Track,
    broadcast: Track,
    /// Plain deliveries (from a router that recorded nothing) held during
    /// the resume.
    unpositioned: Vec<ByteString>,
    catching_up: bool,
}

impl Resumer {
    pub(crate) fn new(
        user_id: Arc<str>,
        since: Since,
        outbound: Arc<Outbound>,
        env: Arc<RecoveryEnv>,
    ) -> Resumer {
        Resumer {
            tag: wire::user_tag(&user_id),
            user_id,
            since,
            outbound,
            env,
            phase: Phase::Resuming,
            user: Track::default(),
            broadcast: Track::default(),
            unpositioned: Vec::new(),
            catching_up: false,
        }
    }

    fn track(&mut self, stream: StreamKind) -> &mut Track {
        match stream {
            StreamKind::User => &mut self.user,
            StreamKind::Broadcast => &mut self.broadcast,
        }
    }

    fn cursor(&self) -> String {
        Cursor {
            user_tag: self.tag,
            user: self.user.pos,
            broadcast: self.broadcast.pos,
        }
        .encode()
    }

    /// Queues a frame on the socket; false (and this actor stops) when the
    /// socket's outbound cap is passed (the slow reader is cut off).
    fn emit(&mut self, ctx: &mut Context<Self>, text: String) -> bool {
        if self.phase == Phase::Closed
            || !self
                .outbound
                .push_frame(&text_frame(&text), &self.env.metrics)
        {
            self.phase = Phase::Closed;
            ctx.stop();
            return false;
        }
        true
    }

    /// Closes the socket for `reason` after the frames already queued, and
    /// stops: nothing more is sent.
    fn close(&mut self, ctx: &mut Context<Self>, reason: CloseReason) {
        self.phase = Phase::Closed;
        self.outbound.push_session(ToSession::Close(reason));
        ctx.stop();
    }

    fn notify(&mut self, ctx: &mut Context<Self>, data: &str) -> bool {
        let frame = wire::notification(&self.cursor(), data);
        self.emit(ctx, frame)
    }

    /// Ends the socket with 1013: the client resumes from its last cursor.
    fn interrupt(&mut self, ctx: &mut Context<Self>, why: &str) {
        if self.phase == Phase::Closed {
            return;
        }
        tracing::info!(user_id = %self.user_id, why, "recovering socket interrupted; the client resumes");
        self.close(ctx, CloseReason::RecoveryInterrupted);
    }

    fn begin(&mut self, ctx: &mut Context<Self>) {
        let Some(history) = self.env.history.clone() else {
            // No history here: the socket gets envelopes with no position.
            self.report_failure(ctx, RecoveryCode::Disabled);
            self.go_live(ctx);
            return;
        };
        let (since, invalid) = match self.since {
            Since::Start => (None, false),
            Since::Cursor(c) if c.belongs_to(&self.user_id) => (Some((c.user, c.broadcast)), false),
            Since::Cursor(_) | Since::Invalid(_) => (None, true),
        };
        let user = self.user_id.clone();
        let budget = self.env.budget;
        let reads = self.env.reads.clone();
        let read = async move {
            let _permit = reads.acquire_owned().await;
            history::resume(&*history, &user, since, budget).await
        };
        ctx.spawn(
            read.into_actor(self)
                .map(move |result, act, ctx| act.resumed(ctx, result, invalid)),
        );
    }

    fn resumed(
        &mut self,
        ctx: &mut Context<Self>,
        result: Result<Resumed, ResumeFailed>,
        invalid: bool,
    ) {
        if self.phase != Phase::Resuming {
            return;
        }
        match result {
            Ok(r) if !invalid => {
                // Every frame of the replay carries a cursor that is valid
                // on both streams: the one not replayed yet stays where the
                // client's cursor put it (or at its head on a first connect).
                let since = match self.since {
                    Since::Cursor(c) => [c.user, c.broadcast],
                    Since::Start | Since::Invalid(_) => [Position::NONE; 2],
                };
                for (stream, from) in [StreamKind::User, StreamKind::Broadcast]
                    .into_iter()
                    .zip(since)
                {
                    self.track(stream).pos = if from.is_some() {
                        from
                    } else {
                        r.heads.of(stream)
                    };
                }
                let mut replayed = 0;
                for (stream, slot) in r.slots {
                    let track = self.track(stream);
                    track.pos.seq = slot.seq;
                    track.pos.at_ms = track.pos.at_ms.max(slot.at_ms);
                    if let Content::Message(data) = slot.content {
                        if !self.notify(ctx, &data) {
                            return;
                        }
                        replayed += 1;
                    }
                }
                if !self.settle(ctx, r.heads) {
                    return;
                }
                self.env
                    .metrics
                    .recoveries
                    .with_label_values(&["recovered", "none"])
                    .inc();
                self.env
                    .metrics
                    .recovery_replayed
                    .with_label_values(&["resume"])
                    .inc_by(replayed);
                let frame = wire::recovered(&self.cursor(), replayed);
                if !self.emit(ctx, frame) {
                    return;
                }
            }
            Ok(r) => {
                if !self.settle(ctx, r.heads) {
                    return;
                }
                self.report_failure(ctx, RecoveryCode::InvalidCursor);
            }
            Err(ResumeFailed {
                code,
                heads: Some(heads),
                cause,
            }) => {
                if let Some(e) = cause {
                    tracing::debug!(user_id = %self.user_id, error = %chain(&e), "resume failed");
                }
                if !self.settle(ctx, heads) {
                    return;
                }
                self.report_failure(ctx, code);
            }
            Err(ResumeFailed {
                code, heads: None, ..
            }) => {
                // Nothing is known: the client keeps the cursor it came with
                // and resumes later; the node does not guess.
                if let Since::Cursor(c) = self.since {
                    if c.belongs_to(&self.user_id) {
                        self.user.pos = c.user;
                        self.broadcast.pos = c.broadcast;
                    }
                }
                self.report_failure(ctx, code);
                self.interrupt(ctx, "history could not be read");
                return;
            }
        }
        self.go_live(ctx);
    }

    /// Takes the heads as the positions (keeping any later time already
    /// known) and drops held deliveries they cover; false on a reset.
    fn settle(&mut self, ctx: &mut Context<Self>, heads: Heads) -> bool {
        for stream in [StreamKind::User, StreamKind::Broadcast] {
            let head = heads.of(stream);
            let track = self.track(stream);
            let at_ms = track.pos.at_ms.max(head.at_ms);
            match track.settle(Position { at_ms, ..head }) {
                Some((bytes, dropped)) => {
                    self.outbound.released(bytes);
                    self.env.metrics.recovery_duplicates.inc_by(dropped);
                }
                None => {
                    self.interrupt(ctx, "stream reset during the resume");
                    return false;
                }
            }
        }
        true
    }

    fn report_failure(&mut self, ctx: &mut Context<Self>, code: RecoveryCode) {
        self.env
            .metrics
            .recoveries
            .with_label_values(&["failed", code.as_str()])
            .inc();
        let frame = wire::recovery_failed(code, &self.cursor());
        self.emit(ctx, frame);
    }

    fn go_live(&mut self, ctx: &mut Context<Self>) {
        if self.phase != Phase::Resuming {
            return;
        }
        self.phase = Phase::Live;
        for payload in std::mem::take(&mut self.unpositioned) {
            self.outbound.released(frame_len(payload.len()));
            if !self.notify(ctx, &payload) {
                return;
            }
        }
        self.flush(ctx, StreamKind::User);
        self.flush(ctx, StreamKind::Broadcast);
    }

    /// Sends what is in order, then watches a remaining gap.
    fn flush(&mut self, ctx: &mut Context<Self>, stream: StreamKind) {
        if self.phase != Phase::Live {
            return;
        }
        while let Some(item) = self.track(stream).pop_ready() {
            self.outbound.released(item.reserved);
            if let Some(payload) = item.payload {
                if !self.notify(ctx, &payload) {
                    return;
                }
            }
        }
        let track = self.track(stream);
        if track.gap().is_some() && !track.filling && track.gap_timer.is_none() {
            let handle = ctx.run_later(GAP_WAIT, move |act, ctx| {
                act.track(stream).gap_timer = None;
                act.fill(ctx, stream);
            });
            self.track(stream).gap_timer = Some(handle);
        }
    }

    /// Reads the open gap of `stream` from history.
    fn fill(&mut self, ctx: &mut Context<Self>, stream: StreamKind) {
        let Some(history) = self.env.history.clone() else {
            return;
        };
        let track = self.track(stream);
        let Some(upto) = track.gap() else { return };
        if track.filling {
            return;
        }
        track.filling = true;
        let after = track.pos;
        let user = self.user_id.clone();
        let mut budget = self.env.budget;
        let reads = self.env.reads.clone();
        let read = async move {
            let _permit = reads.acquire_owned().await;
            history.read(&user, stream, after, upto, &mut budget).await
        };
        ctx.spawn(read.into_actor(self).map(move |result, act, ctx| {
            act.track(stream).filling = false;
            match result {
                Ok(slots) => {
                    act.env
                        .metrics
                        .recovery_gap_fills
                        .with_label_values(&["filled"])
                        .inc();
                    act.apply(ctx, stream, after.epoch, slots, "gap");
                }
                Err(e) => {
                    act.env
                        .metrics
                        .recovery_gap_fills
                        .with_label_values(&["failed"])
                        .inc();
                    act.read_failed(ctx, &e);
                }
            }
        }));
    }

    /// Offers slots read from history, then sends what is in order.
    fn apply(
        &mut self,
        ctx: &mut Context<Self>,
        stream: StreamKind,
        epoch: u64,
        slots: Vec<Slot>,
        phase: &'static str,
    ) {
        let mut replayed = 0;
        for slot in slots {
            let message = matches!(slot.content, Content::Message(_));
            let item = Item {
                epoch,
                at_ms: slot.at_ms,
                payload: match slot.content {
                    Content::Message(d) => Some(d),
                    Content::Skip => None,
                },
                reserved: 0,
            };
            let position = Position {
                epoch,
                seq: slot.seq,
                at_ms: slot.at_ms,
            };
            match self.track(stream).offer(position, item) {
                Offer::Held => replayed += u64::from(message),
                Offer::Duplicate(_) => {}
                Offer::Reset => return self.interrupt(ctx, "stream reset"),
            }
        }
        self.env
            .metrics
            .recovery_replayed
            .with_label_values(&[phase])
            .inc_by(replayed);
        self.flush(ctx, stream);
    }

    fn read_failed(&mut self, ctx: &mut Context<Self>, e: &ReadError) {
        tracing::info!(user_id = %self.user_id, error = %chain(e), "history read failed");
        self.interrupt(ctx, e.code().as_str());
    }

    /// Reads both streams up to their heads now (after a rejoin).
    fn catch_up(&mut self, ctx: &mut Context<Self>) {
        let Some(history) = self.env.history.clone() else {
            return;
        };
        if self.phase != Phase::Live || self.catching_up {
            return;
        }
        self.catching_up = true;
        let user = self.user_id.clone();
        let from = [
            (StreamKind::User, self.user.pos),
            (StreamKind::Broadcast, self.broadcast.pos),
        ];
        let mut budget = self.env.budget;
        let reads = self.env.reads.clone();
        let read = async move {
            let _permit = reads.acquire_owned().await;
            let heads = history.heads(&user).await.map_err(ReadError::Unavailable)?;
            let mut out = Vec::new();
            for (stream, after) in from {
                let head = heads.of(stream);
                if head.epoch != after.epoch || head.seq < after.seq {
                    return Err(ReadError::Expired);
                }
                if head.seq > after.seq {
                    let slots = history
                        .read(&user, stream, after, head.seq, &mut budget)
                        .await?;
                    out.push((stream, after.epoch, slots));
                }
            }
            Ok(out)
        };
        ctx.spawn(read.into_actor(self).map(|result, act, ctx| {
            act.catching_up = false;
            match result {
                Ok(streams) => {
                    for (stream, epoch, slots) in streams {
                        act.apply(ctx, stream, epoch, slots, "catch_up");
                    }
                }
                Err(e) => act.read_failed(ctx, &e),
            }
        }));
    }

    fn positioned(&mut self, ctx: &mut Context<Self>, p: Positioned) {
        let reserved = frame_len(p.payload.as_ref().map_or(0, |d| d.len())) + PENDING_COST;
        if self.phase == Phase::Closed {
            return;
        }
        if self.env.history.is_none() {
            // A router recorded it, this node keeps no history: deliver as is.
            self.outbound.released(reserved);
            if let Some(payload) = p.payload {
                self.notify(ctx, &payload);
            }
            return;
        }
        let item = Item {
            epoch: p.position.epoch,
            at_ms: p.position.at_ms,
            payload: p.payload,
            reserved,
        };
        match self.track(p.stream).offer(p.position, item) {
            Offer::Held => self.flush(ctx, p.stream),
            Offer::Duplicate(bytes) => {
                self.outbound.released(bytes);
                self.env.metrics.recovery_duplicates.inc();
            }
            Offer::Reset => self.interrupt(ctx, "stream reset"),
        }
    }
}

impl Actor for Resumer {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(usize::MAX);
    }
}

impl Handler<Begin> for Resumer {
    type Result = ();

    fn handle(&mut self, _: Begin, ctx: &mut Self::Context) {
        self.begin(ctx);
    }
}

impl Handler<ToResumer> for Resumer {
    type Result = ();

    fn handle(&mut self, msg: ToResumer, ctx: &mut Self::Context) {
        match msg {
            ToResumer::Deliver(payload) => {
                // A router that recorded nothing (recovery off there).
                self.outbound.taken();
                match self.phase {
                    Phase::Resuming => self.unpositioned.push(payload),
                    Phase::Live => {
                        self.outbound.released(frame_len(payload.len()));
                        self.notify(ctx, &payload);
                    }
                    Phase::Closed => {}
                }
            }
            ToResumer::Positioned(p) => {
                // Out of the mailbox: what it holds from now on is its
                // frame and its place in the track.
                self.outbound
                    .released(MAILBOX_MESSAGE_COST + POSITIONED_EXTRA_COST - PENDING_COST);
                self.positioned(ctx, *p);
            }
            ToResumer::Close(reason) => self.close(ctx, reason),
            ToResumer::CatchUp => self.catch_up(ctx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(seq: u64) -> Position {
        Position {
            epoch: 7,
            seq,
            at_ms: seq * 10,
        }
    }

    fn item(seq: u64, reserved: usize) -> Item {
        Item {
            epoch: 7,
            at_ms: seq * 10,
            payload: Some(ByteString::from(seq.to_string())),
            reserved,
        }
    }

    fn drain(t: &mut Track) -> Vec<u64> {
        let mut out = Vec::new();
        while t.pop_ready().is_some() {
            out.push(t.pos.seq);
        }
        out
    }

    #[test]
    fn deliveries_go_out_in_order_once() {
        let mut t = Track::default();
        assert_eq!(t.settle(pos(4)), Some((0, 0)));
        assert_eq!(t.offer(pos(6), item(6, 10)), Offer::Held);
        assert!(drain(&mut t).is_empty());
        assert_eq!(t.gap(), Some(5));
        assert_eq!(t.offer(pos(5), item(5, 10)), Offer::Held);
        assert_eq!(drain(&mut t), [5, 6]);
        assert_eq!(t.gap(), None);
        // A second copy (a request routed twice) is dropped.
        assert_eq!(t.offer(pos(6), item(6, 10)), Offer::Duplicate(10));
        assert_eq!(t.offer(pos(3), item(3, 1)), Offer::Duplicate(1));
        assert_eq!(t.pos.at_ms, 60);
        let mut other = pos(9);
        other.epoch = 8;
        assert_eq!(t.offer(other, item(9, 0)), Offer::Reset);
    }

    #[test]
    fn what_arrived_during_the_resume_is_settled_against_the_heads() {
        let mut t = Track::default();
        for seq in [3, 5, 6, 9] {
            assert_eq!(t.offer(pos(seq), item(seq, 100)), Offer::Held);
        }
        assert_eq!(t.offer(pos(5), item(5, 100)), Offer::Duplicate(100));
        // The replay ended at 5: 3 and 5 came with it.
        assert_eq!(t.settle(pos(5)), Some((200, 2)));
        assert_eq!(drain(&mut t), [6]);
        assert_eq!(t.gap(), Some(8));
        let mut reset = Track::default();
        let mut other = item(2, 0);
        other.epoch = 1;
        reset.offer(pos(2), other);
        assert_eq!(reset.settle(pos(1)), None);
    }
}
