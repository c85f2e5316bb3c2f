//! The memory engine's history: every stream in process, under one lock.
//! A message older than the window is not replayed (`Expired`).
//!
//! Positions are taken and entries stored in the same critical section, so
//! a stream never has a hole: a read resolves every slot at once. Entries
//! go, oldest first, after the window plus [`GRACE_MS`], or sooner when the
//! history passes [`MAX_BYTES`]; a stream remembers up to where it lost
//! entries, so a read from before that is `Expired`, never a silent skip.
//! Each stream's epoch is random, drawn when the stream is first named; a
//! stream dropped to stay under [`MAX_STREAMS`] comes back with another
//! epoch, so positions in the old one are expired, not misread.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytestring::ByteString;
use sumu_shared::recovery::Position;
use sumu_shared::NotificationRequest;

use super::history::{
    Budget, Content, Heads, History, ReadError, Slot, Stamp, StreamKind, GRACE_MS,
};
use super::EngineError;
use crate::clock::now_ms;

/// The most bytes of `data` (and exclusions) the history holds.
pub(crate) const MAX_BYTES: usize = 64 * 1024 * 1024;
/// The most user streams kept; beyond it, streams without entries go.
pub(crate) const MAX_STREAMS: usize = 200_000;
/// What one entry costs beside its request's bytes.
const ENTRY_COST: usize = 48;

/// One recorded request, shared by its entries.
struct Recorded {
    data: ByteString,
    /// Sorted, for a binary search per replayed broadcast.
    exclude: Vec<String>,
}

struct Entry {
    seq: u64,
    at_ms: u64,
    /// The count of entries recorded before it (orders streams in a replay).
    rank: u64,
    request: Arc<Recorded>,
}

struct StreamLog {
    epoch: u64,
    head: u64,
    entries: VecDeque<Entry>,
    /// Every slot up to this one has been dropped.
    dropped: u64,
}

impl StreamLog {
    fn new() -> StreamLog {
        StreamLog {
            epoch: random_epoch(),
            head: 0,
            entries: VecDeque::new(),
            dropped: 0,
        }
    }

    fn position(&self, at_ms: u64) -> Position {
        Position {
            epoch: self.epoch,
            seq: self.head,
            at_ms,
        }
    }
}

/// A random non-zero epoch (0 means "no position").
pub(crate) fn random_epoch() -> u64 {
    (uuid::Uuid::new_v4().as_u128() as u64).max(1)
}

/// Which stream an entry of the eviction queue is in (`None`: broadcast).
struct Queued {
    user: Option<Arc<str>>,
    at_ms: u64,
    bytes: usize,
}

struct Log {
    broadcast: StreamLog,
    users: HashMap<Arc<str>, StreamLog>,
    /// Every entry in the order it was recorded, for eviction.
    order: VecDeque<Queued>,
    bytes: usize,
    recorded: u64,
}

pub(crate) struct MemoryHistory {
    window_ms: u64,
    keep_ms: u64,
    max_bytes: usize,
    log: Mutex<Log>,
}

impl MemoryHistory {
    pub(crate) fn new(window: Duration) -> MemoryHistory {
        MemoryHistory::with_max_bytes(window, MAX_BYTES)
    }

    fn with_max_bytes(window: Duration, max_bytes: usize) -> MemoryHistory {
        MemoryHistory {
            window_ms: window.as_millis() as u64,
            keep_ms: window.as_millis() as u64 + GRACE_MS,
            max_bytes,
            log: Mutex::new(Log {
                broadcast: StreamLog::new(),
                users: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
                recorded: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Log {
    /// Drops entries past their time, then the oldest while over `max_bytes`.
    fn evict(&mut self, now: u64, keep_ms: u64, max_bytes: usize) {
        while let Some(front) = self.order.front() {
            if front.at_ms + keep_ms > now && self.bytes <= max_bytes {
                break;
            }
            let Some(q) = self.order.pop_front() else {
                break;
            };
            self.bytes -= q.bytes;
            let log = match &q.user {
                None => Some(&mut self.broadcast),
                Some(u) => self.users.get_mut(u),
            };
            if let Some(log) = log {
                if let Some(e) = log.entries.pop_front() {
                    log.dropped = e.seq;
                }
            }
        }
    }

    fn user(&mut self, user: &str) -> &mut StreamLog {
        if !self.users.contains_key(user) {
            if self.users.len() >= MAX_STREAMS {
                self.users.retain(|_, l| !l.entries.is_empty());
            }
            self.users.insert(Arc::from(user), StreamLog::new());
        }
        self.users.get_mut(user).expect("inserted above")
    }

    fn append(
        &mut self,
        user: Option<&str>,
        request: &Arc<Recorded>,
        now: u64,
        bytes: usize,
    ) -> Position {
        self.recorded += 1;
        let rank = self.recorded;
        let (key, log) = match user {
            None => (None, &mut self.broadcast),
            Some(u) => {
                let log = self.user(u);
                (Some(u), log)
            }
        };
        log.head += 1;
        let seq = log.head;
        log.entries.push_back(Entry {
            seq,
            at_ms: now,
            rank,
            request: request.clone(),
        });
        let position = log.position(now);
        self.order.push_back(Queued {
            user: key.map(Arc::from),
            at_ms: now,
            bytes,
        });
        self.bytes += bytes;
        position
    }
}

#[async_trait]
impl History for MemoryHistory {
    async fn record(
        &self,
        _request_id: &str,
        request: &NotificationRequest,
    ) -> Result<Stamp, EngineError> {
        let mut exclude = request.exclude_users.clone();
        exclude.sort_unstable();
        let request_bytes =
            request.data.get().len() + exclude.iter().map(String::len).sum::<usize>();
        let recorded = Arc::new(Recorded {
            data: ByteString::from(request.data.get()),
            exclude,
        });
        let now = now_ms();
        let mut log = self.lock();
        log.evict(now, self.keep_ms, self.max_bytes);
        let mut stamp = Stamp::default();
        // The request's bytes are counted with its first entry.
        let mut bytes = request_bytes + ENTRY_COST;
        if request.is_broadcast() {
            stamp.broadcast = Some(log.append(None, &recorded, now, bytes));
        } else {
            for user in request.targets() {
                let position = log.append(Some(user), &recorded, now, bytes);
                stamp.users.insert(user.clone(), position);
                bytes = ENTRY_COST;
            }
        }
        log.evict(now, self.keep_ms, self.max_bytes);
        Ok(stamp)
    }

    async fn heads(&self, user_id: &str) -> Result<Heads, EngineError> {
        let now = now_ms();
        let mut log = self.lock();
        log.evict(now, self.keep_ms, self.max_bytes);
        let broadcast = log.broadcast.position(now);
        let user = log.user(user_id).position(now);
        Ok(Heads { user, broadcast })
    }

    async fn read(
        &self,
        user_id: &str,
        stream: StreamKind,
        after: Position,
        upto: u64,
        budget: &mut Budget,
    ) -> Result<Vec<Slot>, ReadError> {
        let now = now_ms();
        let mut log = self.lock();
        log.evict(now, self.keep_ms, self.max_bytes);
        let log = match stream {
            StreamKind::Broadcast => &log.broadcast,
            StreamKind::User => match log.users.get(user_id) {
                Some(l) => l,
                None => return Err(ReadError::Expired),
            },
        };
        if log.epoch != after.epoch || after.seq < log.dropped || upto > log.head {
            return Err(ReadError::Expired);
        }
        let first = log.entries.front().map_or(log.head + 1, |e| e.seq);
        let oldest = now.saturating_sub(self.window_ms);
        let mut out = Vec::new();
        for seq in after.seq + 1..=upto {
            // No holes: slot `seq` is at a fixed offset.
            let Some(entry) = seq
                .checked_sub(first)
                .and_then(|i| log.entries.get(i as usize))
            else {
                return Err(ReadError::Expired);
            };
            debug_assert_eq!(entry.seq, seq);
            let r = &entry.request;
            let content = if stream == StreamKind::Broadcast
                && r.exclude
                    .binary_search_by(|u| u.as_str().cmp(user_id))
                    .is_ok()
            {
                Content::Skip
            } else if entry.at_ms < oldest {
                // Older than the window: not replayed, not skipped.
                return Err(ReadError::Expired);
            } else {
                Content::Message(r.data.clone())
            };
            let len = match &content {
                Content::Message(d) => d.len(),
                Content::Skip => 0,
            };
            if !budget.take(len) {
                return Err(ReadError::TooFar);
            }
            out.push(Slot {
                seq,
                at_ms: entry.at_ms,
                rank: entry.rank,
                content,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::history::{resume, ResumeFailed};
    use sumu_shared::recovery::RecoveryCode;

    fn req(body: &str) -> NotificationRequest {
        NotificationRequest::parse(body.as_bytes()).unwrap()
    }

    const BIG: Budget = Budget {
        positions: 1000,
        bytes: 1 << 20,
    };

    fn messages(slots: &[(StreamKind, Slot)]) -> Vec<String> {
        slots
            .iter()
            .filter_map(|(_, s)| match &s.content {
                Content::Message(d) => Some(d.to_string()),
                Content::Skip => None,
            })
            .collect()
    }

    #[actix::test]
    async fn a_resume_gets_exactly_what_targeted_the_user_in_order() {
        let h = MemoryHistory::new(Duration::from_secs(120));
        let start = h.heads("a").await.unwrap();
        h.record("1", &req(r#"{"users":["a","b"],"data":1}"#))
            .await
            .unwrap();
        h.record("2", &req(r#"{"users":["b"],"data":2}"#))
            .await
            .unwrap();
        h.record("3", &req(r#"{"data":3}"#)).await.unwrap();
        h.record("4", &req(r#"{"exclude_users":["a"],"data":4}"#))
            .await
            .unwrap();
        h.record(
            "5",
            &req(r#"{"users":["a"],"exclude_users":["a"],"data":5}"#),
        )
        .await
        .unwrap();
        let stamp = h
            .record("6", &req(r#"{"users":["a"],"data":6}"#))
            .await
            .unwrap();
        let r = resume(&h, "a", Some((start.user, start.broadcast)), BIG)
            .await
            .unwrap();
        assert_eq!(messages(&r.slots), ["1", "3", "6"]);
        // The excluded broadcast is a skip: the position still passes it.
        assert_eq!(r.slots.len(), 4);
        assert_eq!(r.heads.broadcast.seq, 2);
        assert_eq!(
            r.heads.user,
            Position {
                at_ms: r.heads.user.at_ms,
                ..stamp.users["a"]
            }
        );
        // From the heads: nothing more.
        let again = resume(&h, "a", Some((r.heads.user, r.heads.broadcast)), BIG)
            .await
            .unwrap();
        assert!(again.slots.is_empty());
        // A first connect gets the heads only.
        let first = resume(&h, "a", None, BIG).await.unwrap();
        assert!(first.slots.is_empty());
        assert_eq!(first.heads.user.seq, 2);
    }

    #[actix::test]
    async fn limits_expiry_and_resets_fail_with_their_codes() {
        let h = MemoryHistory::with_max_bytes(Duration::from_secs(120), 300);
        let start = h.heads("a").await.unwrap();
        for i in 0..3 {
            h.record(
                &i.to_string(),
                &req(r#"{"users":["a"],"data":"0123456789"}"#),
            )
            .await
            .unwrap();
        }
        let code = |r: Result<_, ResumeFailed>| r.map(|_| ()).unwrap_err().code;
        let small = Budget {
            positions: 2,
            bytes: 1 << 20,
        };
        let since = Some((start.user, start.broadcast));
        assert_eq!(
            code(resume(&h, "a", since, small).await),
            RecoveryCode::TooFarBehind
        );
        let few_bytes = Budget {
            positions: 10,
            bytes: 25,
        };
        assert_eq!(
            code(resume(&h, "a", since, few_bytes).await),
            RecoveryCode::TooFarBehind
        );
        // Past the byte cap the oldest entries go: a resume from before them
        // is expired, never a partial replay.
        for i in 3..10 {
            h.record(
                &i.to_string(),
                &req(r#"{"users":["a"],"data":"0123456789"}"#),
            )
            .await
            .unwrap();
        }
        assert_eq!(
            code(resume(&h, "a", since, BIG).await),
            RecoveryCode::PositionExpired
        );
        // Another epoch (a stream that was reset) is expired too.
        let mut other = start.user;
        other.epoch ^= 1;
        assert_eq!(
            code(resume(&h, "a", Some((other, start.broadcast)), BIG).await),
            RecoveryCode::PositionExpired
        );
    }

    #[actix::test]
    async fn messages_older_than_the_window_are_expired_then_dropped() {
        let h = MemoryHistory::new(Duration::from_millis(300));
        let start = h.heads("a").await.unwrap();
        let since = Some((start.user, start.broadcast));
        h.record("1", &req(r#"{"users":["a"],"data":1}"#))
            .await
            .unwrap();
        assert_eq!(
            messages(&resume(&h, "a", since, BIG).await.unwrap().slots),
            ["1"]
        );
        // Older than the window: not replayed, and not skipped either.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let r = resume(&h, "a", since, BIG).await;
        assert_eq!(r.unwrap_err().code, RecoveryCode::PositionExpired);
        // Past the grace too: dropped from memory; still expired.
        h.lock().order[0].at_ms -= GRACE_MS;
        assert_eq!(h.heads("a").await.unwrap().user.seq, 1);
        assert!(h.lock().order.is_empty());
        let r = resume(&h, "a", since, BIG).await;
        assert_eq!(r.unwrap_err().code, RecoveryCode::PositionExpired);
    }
}
