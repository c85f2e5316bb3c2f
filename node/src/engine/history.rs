//! The recovery window's history: what an engine keeps of the requests it
//! routes, so a socket that comes back gets what it missed ([`resume`]),
//! and a live socket can fill a gap in what reached it.
//!
//! Two kinds of stream: one per user (every multicast or unicast listing
//! the user) and one broadcast stream (every broadcast, with its
//! exclusions). A stream has an epoch and a dense sequence: every request
//! recorded in it takes the next number. Invariants every engine keeps:
//! - a request is recorded (its positions taken) before any of its
//!   deliveries, and before its router looks up where its users are;
//! - a request routed twice has ONE position per stream (recording is
//!   idempotent per request id), so a recovering socket drops the second
//!   copy by position;
//! - [`History::read`] resolves every slot it covers: a message, or a skip
//!   (a void slot, or a broadcast that excludes the user). A slot that
//!   cannot be proven either fails the read; a hole is never papered over.

use std::sync::Arc;

use async_trait::async_trait;
use bytestring::ByteString;
use sumu_shared::recovery::{Position, RecoveryCode};
use sumu_shared::NotificationRequest;

use super::error::EngineError;
pub(crate) use crate::hub::{Stamp, StreamKind};
use crate::metrics::Metrics;

/// How long after the window an entry is kept: more than the fleet's clock
/// skew plus the longest call that takes a position (12 s with its retries:
/// an entry's time is taken before that call), so no entry after a fresh
/// cursor (one younger than the window) can be gone; a slot missing there
/// is in flight or an orphan, never an expired message.
pub(crate) const GRACE_MS: u64 = 60_000;

/// One resolved slot of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) seq: u64,
    /// When its request was routed (ms since the epoch).
    pub(crate) at_ms: u64,
    /// Orders slots of different streams of one engine by when they were
    /// recorded (the memory engine: a count; aws: the routing time).
    pub(crate) rank: u64,
    pub(crate) content: Content,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Content {
    /// The request's `data`, for the socket to receive.
    Message(ByteString),
    /// Nothing for this user: a void slot (its request went elsewhere), or
    /// a broadcast that excludes the user. The position still advances.
    Skip,
}

/// The heads of a user's two streams, read at `at_ms` (every later entry
/// was recorded after that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Heads {
    pub(crate) user: Position,
    pub(crate) broadcast: Position,
}

impl Heads {
    pub(crate) fn of(&self, stream: StreamKind) -> Position {
        match stream {
            StreamKind::User => self.user,
            StreamKind::Broadcast => self.broadcast,
        }
    }
}

/// What one resume (or gap fill, or catch-up) may replay: positions (every
/// slot counts, skips too) and bytes of `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    pub(crate) positions: usize,
    pub(crate) bytes: usize,
}

impl Budget {
    /// Takes one slot of `len` bytes; false once the budget is spent.
    pub(crate) fn take(&mut self, len: usize) -> bool {
        if self.positions == 0 || self.bytes < len {
            return false;
        }
        self.positions -= 1;
        self.bytes -= len;
        true
    }
}

/// Why a read of history could not be completed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// Entries after the position may be gone (older than the window, or
    /// evicted), or the stream was reset (another epoch).
    #[error("the position is older than the history kept")]
    Expired,
    /// More to replay than the budget.
    #[error("more to replay than the limit")]
    TooFar,
    /// History could not be read.
    #[error("history could not be read")]
    Unavailable(#[source] EngineError),
}

impl ReadError {
    pub(crate) fn code(&self) -> RecoveryCode {
        match self {
            ReadError::Expired => RecoveryCode::PositionExpired,
            ReadError::TooFar => RecoveryCode::TooFarBehind,
            ReadError::Unavailable(_) => RecoveryCode::Unavailable,
        }
    }
}

/// What every router does first when its node keeps a history: records
/// `request` and answers its positions (`None` without a history). A failed
/// record is counted and returned, so nothing is delivered and the request
/// is retried: a recovering socket never gets what its resume could not
/// replay.
pub(crate) async fn record_first<H: History + ?Sized>(
    history: Option<&H>,
    request_id: &str,
    request: &NotificationRequest,
    metrics: &Metrics,
) -> Result<Option<Arc<Stamp>>, EngineError> {
    let Some(history) = history else {
        return Ok(None);
    };
    match history.record(request_id, request).await {
        Ok(stamp) => Ok(Some(Arc::new(stamp))),
        Err(e) => {
            metrics.history_write_failures.inc();
            Err(e)
        }
    }
}

/// An engine's history.
#[async_trait]
pub(crate) trait History: Send + Sync {
    /// Records `request` under `request_id` before it is delivered and
    /// answers the positions its deliveries carry. Idempotent: the same
    /// request id and content answers the same positions.
    async fn record(
        &self,
        request_id: &str,
        request: &NotificationRequest,
    ) -> Result<Stamp, EngineError>;

    /// The heads of `user_id`'s streams now.
    async fn heads(&self, user_id: &str) -> Result<Heads, EngineError>;

    /// Every slot of `user_id`'s `stream` after `after` up to `upto`
    /// (inclusive), in order, each resolved; taken from `budget`.
    async fn read(
        &self,
        user_id: &str,
        stream: StreamKind,
        after: Position,
        upto: u64,
        budget: &mut Budget,
    ) -> Result<Vec<Slot>, ReadError>;
}

/// A completed resume: the slots after the cursor in the order they were
/// routed (per stream in sequence order), and the heads they lead to.
#[derive(Debug)]
pub(crate) struct Resumed {
    pub(crate) slots: Vec<(StreamKind, Slot)>,
    pub(crate) heads: Heads,
}

/// A failed resume: why, and the heads if they could be read (the socket
/// goes on from there, so it holds a valid cursor).
#[derive(Debug)]
pub(crate) struct ResumeFailed {
    pub(crate) code: RecoveryCode,
    pub(crate) heads: Option<Heads>,
    pub(crate) cause: Option<ReadError>,
}

/// Reads what `user_id` missed since `since` (its user and broadcast
/// positions; `None`: a first connect, only the heads). A stream whose
/// position is `Position::NONE` starts at its head.
pub(crate) async fn resume(
    history: &dyn History,
    user_id: &str,
    since: Option<(Position, Position)>,
    mut budget: Budget,
) -> Result<Resumed, ResumeFailed> {
    let heads = history.heads(user_id).await.map_err(|e| ResumeFailed {
        code: RecoveryCode::Unavailable,
        heads: None,
        cause: Some(ReadError::Unavailable(e)),
    })?;
    let Some((user, broadcast)) = since else {
        return Ok(Resumed {
            slots: Vec::new(),
            heads,
        });
    };
    let fail = |e: ReadError| ResumeFailed {
        code: e.code(),
        heads: Some(heads),
        cause: Some(e),
    };
    let mut per_stream = Vec::with_capacity(2);
    for (stream, from) in [(StreamKind::User, user), (StreamKind::Broadcast, broadcast)] {
        let head = heads.of(stream);
        if !from.is_some() {
            continue;
        }
        if from.epoch != head.epoch || from.seq > head.seq {
            return Err(fail(ReadError::Expired));
        }
        if head.seq - from.seq > budget.positions as u64 {
            return Err(fail(ReadError::TooFar));
        }
        if head.seq > from.seq {
            let slots = history
                .read(user_id, stream, from, head.seq, &mut budget)
                .await
                .map_err(fail)?;
            per_stream.push((stream, slots));
        }
    }
    Ok(Resumed {
        slots: merge_by_time(per_stream),
        heads,
    })
}

/// Interleaves streams by when they were recorded, keeping each stream's
/// own order.
fn merge_by_time(streams: Vec<(StreamKind, Vec<Slot>)>) -> Vec<(StreamKind, Slot)> {
    let mut iters: Vec<(StreamKind, std::iter::Peekable<std::vec::IntoIter<Slot>>)> = streams
        .into_iter()
        .map(|(k, v)| (k, v.into_iter().peekable()))
        .collect();
    let mut out = Vec::new();
    loop {
        let next = iters
            .iter_mut()
            .enumerate()
            .filter_map(|(i, (_, it))| it.peek().map(|s| (s.rank, i)))
            .min();
        let Some((_, i)) = next else { break };
        let (kind, it) = &mut iters[i];
        if let Some(slot) = it.next() {
            out.push((*kind, slot));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(seq: u64, rank: u64) -> Slot {
        Slot {
            seq,
            at_ms: 0,
            rank,
            content: Content::Skip,
        }
    }

    #[test]
    fn merge_keeps_each_streams_order_and_interleaves_by_time() {
        // The user stream's slot 2 was stamped before slot 1 (two routers):
        // the stream's order still wins.
        let merged = merge_by_time(vec![
            (StreamKind::User, vec![slot(1, 10), slot(2, 5), slot(3, 40)]),
            (StreamKind::Broadcast, vec![slot(7, 20), slot(8, 30)]),
        ]);
        let order: Vec<(StreamKind, u64)> = merged.iter().map(|(k, s)| (*k, s.seq)).collect();
        assert_eq!(
            order,
            vec![
                (StreamKind::User, 1),
                (StreamKind::User, 2),
                (StreamKind::Broadcast, 7),
                (StreamKind::Broadcast, 8),
                (StreamKind::User, 3),
            ]
        );
    }

    #[test]
    fn budget_counts_positions_and_bytes() {
        let mut b = Budget {
            positions: 2,
            bytes: 10,
        };
        assert!(b.take(4));
        assert!(!b.take(7));
        assert!(b.take(6));
        assert!(!b.take(0));
    }
}
