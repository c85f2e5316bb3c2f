//! The recovery window's wire: what a socket that opted in
//! (`GET /push?...&recover=1[&since=<cursor>]`) is sent, and the cursor it
//! resumes from.
//!
//! Invariants: a cursor is always [`CURSOR_LEN`] characters of base64url
//! (opaque, URL-safe, no padding), versioned, and carries a check value, so
//! garbage and truncation are refused as [`CursorError`] and never read as a
//! position; a `notification` frame is always exactly
//! [`NOTIFICATION_OVERHEAD`] bytes longer than its `data`, so the node can
//! reserve its outbound cost before building it. Frames without `recover`
//! are not here: a socket that did not opt in sees today's frames.

use std::fmt;

/// Where a socket is in one stream: the stream's `epoch` (it changes only
/// when the stream's identity is lost), the last `seq` the socket has
/// (delivered or skipped), and `at_ms`, a time at or before which every
/// later entry of the stream was allocated (for telling an expired entry
/// from a late one). `epoch` 0 means "no position in this stream".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// The stream's identity; never 0 for a real stream.
    pub epoch: u64,
    /// The last sequence number the socket has.
    pub seq: u64,
    /// Milliseconds since the Unix epoch (48 bits are kept).
    pub at_ms: u64,
}

impl Position {
    /// No position (a node with recovery off, or history unreadable).
    pub const NONE: Position = Position {
        epoch: 0,
        seq: 0,
        at_ms: 0,
    };

    /// Whether this names a real stream position.
    pub fn is_some(&self) -> bool {
        self.epoch != 0
    }
}

/// What a recovering socket holds: its position in its user's stream and in
/// the broadcast stream, and a tag of the user it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// A 48-bit hash of the user id: a cursor of another user is refused.
    pub user_tag: u64,
    /// The position in the user's own stream (multicasts and unicasts).
    pub user: Position,
    /// The position in the broadcast stream.
    pub broadcast: Position,
}

/// Why a `since` value is not a cursor (`invalid_cursor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// Not [`CURSOR_LEN`] characters.
    #[error("a cursor is {CURSOR_LEN} characters")]
    Length,
    /// A character outside base64url.
    #[error("a cursor is base64url")]
    Alphabet,
    /// A version this build does not read.
    #[error("unknown cursor version")]
    Version,
    /// The check value does not match: damaged or made up.
    #[error("damaged cursor")]
    Check,
}

/// The version byte of the cursors this build writes.
pub const CURSOR_VERSION: u8 = 1;
/// Bytes of a cursor before base64url.
const CURSOR_BYTES: usize = 54;
/// Characters of every cursor.
pub const CURSOR_LEN: usize = CURSOR_BYTES / 3 * 4;
/// Bytes kept of `at_ms` (enough until the year 10889).
const AT_BYTES: usize = 6;
const MASK48: u64 = (1 << 48) - 1;

/// FNV-1a, 64 bits: stable across builds and machines (a cursor made by one
/// node is read by any other).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The 48-bit tag of a user id that a cursor carries.
pub fn user_tag(user_id: &str) -> u64 {
    fnv1a(user_id.as_bytes()) & MASK48
}

impl Cursor {
    /// The cursor of `user_id` at these positions.
    pub fn new(user_id: &str, user: Position, broadcast: Position) -> Cursor {
        Cursor {
            user_tag: user_tag(user_id),
            user,
            broadcast,
        }
    }

    /// Whether the cursor was made for `user_id`.
    pub fn belongs_to(&self, user_id: &str) -> bool {
        self.user_tag == user_tag(user_id)
    }

    fn to_bytes(self) -> [u8; CURSOR_BYTES] {
        let mut out = [0u8; CURSOR_BYTES];
        out[0] = CURSOR_VERSION;
        out[1..7].copy_from_slice(&self.user_tag.to_be_bytes()[2..]);
        let mut i = 7;
        for p in [self.user, self.broadcast] {
            out[i..i + 8].copy_from_slice(&p.epoch.to_be_bytes());
            out[i + 8..i + 16].copy_from_slice(&p.seq.to_be_bytes());
            out[i + 16..i + 16 + AT_BYTES]
                .copy_from_slice(&(p.at_ms & MASK48).to_be_bytes()[8 - AT_BYTES..]);
            i += 16 + AT_BYTES;
        }
        let check = fnv1a(&out[..i]).to_be_bytes();
        out[i..].copy_from_slice(&check[..CURSOR_BYTES - i]);
        out
    }

    /// The cursor as [`CURSOR_LEN`] characters of base64url.
    pub fn encode(&self) -> String {
        let bytes = self.to_bytes();
        let mut out = String::with_capacity(CURSOR_LEN);
        for chunk in bytes.chunks(3) {
            let n = u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8 | u32::from(chunk[2]);
            for shift in [18, 12, 6, 0] {
                out.push(ALPHABET[(n >> shift & 63) as usize] as char);
            }
        }
        out
    }

    /// Reads a cursor made by [`Cursor::encode`].
    pub fn decode(text: &str) -> Result<Cursor, CursorError> {
        let text = text.as_bytes();
        if text.len() != CURSOR_LEN {
            return Err(CursorError::Length);
        }
        let mut bytes = [0u8; CURSOR_BYTES];
        for (i, quad) in text.chunks(4).enumerate() {
            let mut n = 0u32;
            for c in quad {
                n = n << 6 | u32::from(sextet(*c).ok_or(CursorError::Alphabet)?);
            }
            bytes[i * 3..i * 3 + 3].copy_from_slice(&n.to_be_bytes()[1..]);
        }
        if bytes[0] != CURSOR_VERSION {
            return Err(CursorError::Version);
        }
        let body = CURSOR_BYTES - 3;
        if fnv1a(&bytes[..body]).to_be_bytes()[..3] != bytes[body..] {
            return Err(CursorError::Check);
        }
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[i..i + 8]);
            u64::from_be_bytes(b)
        };
        let at_at = |i: usize| {
            let mut b = [0u8; 8];
            b[8 - AT_BYTES..].copy_from_slice(&bytes[i..i + AT_BYTES]);
            u64::from_be_bytes(b)
        };
        let position = |i: usize| Position {
            epoch: u64_at(i),
            seq: u64_at(i + 8),
            at_ms: at_at(i + 16),
        };
        let mut tag = [0u8; 8];
        tag[2..].copy_from_slice(&bytes[1..7]);
        Ok(Cursor {
            user_tag: u64::from_be_bytes(tag),
            user: position(7),
            broadcast: position(7 + 16 + AT_BYTES),
        })
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// Why a recovery failed: the `code` of `recovery_failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecoveryCode {
    /// The cursor is older than the window (what followed it may be gone),
    /// or its stream was reset.
    PositionExpired,
    /// More to replay than the node's stated limit (count or bytes).
    TooFarBehind,
    /// `since` is not a cursor, or another user's.
    InvalidCursor,
    /// History could not be read; the node does not guess.
    Unavailable,
    /// This node keeps no history (`--recovery-window-secs 0`).
    Disabled,
}

impl RecoveryCode {
    /// Every code, for tests and documentation.
    pub const ALL: [RecoveryCode; 5] = [
        RecoveryCode::PositionExpired,
        RecoveryCode::TooFarBehind,
        RecoveryCode::InvalidCursor,
        RecoveryCode::Unavailable,
        RecoveryCode::Disabled,
    ];

    /// The code as the frame (and the metric label) spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RecoveryCode::PositionExpired => "position_expired",
            RecoveryCode::TooFarBehind => "too_far_behind",
            RecoveryCode::InvalidCursor => "invalid_cursor",
            RecoveryCode::Unavailable => "unavailable",
            RecoveryCode::Disabled => "disabled",
        }
    }
}

impl fmt::Display for RecoveryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const NOTIFICATION_HEAD: &str = r#"{"type":"notification","cursor":""#;
const NOTIFICATION_MID: &str = r#"","data":"#;

/// How many bytes a `notification` frame adds to its `data`.
pub const NOTIFICATION_OVERHEAD: usize =
    NOTIFICATION_HEAD.len() + CURSOR_LEN + NOTIFICATION_MID.len() + 1;

/// `{"type":"notification","cursor":"<c>","data":<data>}`: `data` is the
/// backend's raw JSON, copied byte for byte.
pub fn notification(cursor: &str, data: &str) -> String {
    let mut out = String::with_capacity(
        NOTIFICATION_HEAD.len() + cursor.len() + NOTIFICATION_MID.len() + data.len() + 1,
    );
    out.push_str(NOTIFICATION_HEAD);
    out.push_str(cursor);
    out.push_str(NOTIFICATION_MID);
    out.push_str(data);
    out.push('}');
    out
}

/// `{"type":"recovered","cursor":"<c>","replayed":<n>}`.
pub fn recovered(cursor: &str, replayed: u64) -> String {
    format!(r#"{{"type":"recovered","cursor":"{cursor}","replayed":{replayed}}}"#)
}

/// `{"type":"recovery_failed","code":"<code>","cursor":"<c>"}`.
pub fn recovery_failed(code: RecoveryCode, cursor: &str) -> String {
    format!(
        r#"{{"type":"recovery_failed","code":"{}","cursor":"{cursor}"}}"#,
        code.as_str()
    )
}

/// What the `since` query parameter held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// No `since`: a first connect (the socket is given the heads).
    Start,
    /// A cursor to resume from.
    Cursor(Cursor),
    /// A `since` that is not a cursor (or given twice).
    Invalid(CursorError),
}

/// A socket's opt-in to recovery, from the upgrade's query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeRequest {
    /// Where to resume from.
    pub since: Since,
}

impl ResumeRequest {
    /// `recover=1` (or `true`) opts in; `since=<cursor>` resumes. Without
    /// `recover`, `since` is ignored: the socket is a plain one.
    pub fn from_query(query: &str) -> Option<ResumeRequest> {
        let mut recover = false;
        let mut since: Option<&str> = None;
        let mut twice = false;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "recover" => recover = matches!(value, "1" | "true"),
                "since" => {
                    twice |= since.is_some();
                    since = Some(value);
                }
                _ => {}
            }
        }
        if !recover {
            return None;
        }
        let since = match since {
            None => Since::Start,
            Some(_) if twice => Since::Invalid(CursorError::Length),
            Some(text) => match Cursor::decode(text) {
                Ok(c) => Since::Cursor(c),
                Err(e) => Since::Invalid(e),
            },
        };
        Some(ResumeRequest { since })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(epoch: u64, seq: u64, at_ms: u64) -> Position {
        Position { epoch, seq, at_ms }
    }

    #[test]
    fn cursors_round_trip_and_are_url_safe() {
        let c = Cursor::new(
            "alice",
            pos(0xdead_beef_0123_4567, 42, 1_767_225_600_123),
            pos(u64::MAX, u64::MAX - 1, MASK48),
        );
        let text = c.encode();
        assert_eq!(text.len(), CURSOR_LEN);
        assert_eq!(CURSOR_LEN, 72);
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(Cursor::decode(&text), Ok(c));
        assert!(c.belongs_to("alice"));
        assert!(!c.belongs_to("bob"));
        let none = Cursor::new("u", Position::NONE, Position::NONE);
        assert_eq!(Cursor::decode(&none.encode()), Ok(none));
        assert!(!none.user.is_some());
    }

    /// The bytes of a cursor are pinned: nodes of different builds read
    /// each other's cursors.
    #[test]
    fn cursor_encoding_is_pinned() {
        // FNV-1a 64's published test vector.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let c = Cursor::new("alice", pos(7, 3, 1_700_000_000_000), pos(9, 0, 0));
        assert_eq!(
            c.encode(),
            "ASq7ZaA5BwAAAAAAAAAHAAAAAAAAAAMBi8_laAAAAAAAAAAACQAAAAAAAAAAAAAAAAAAboGy"
        );
    }

    #[test]
    fn garbage_and_damage_are_refused() {
        let good = Cursor::new("u", pos(1, 2, 3), pos(4, 5, 6)).encode();
        assert_eq!(Cursor::decode(""), Err(CursorError::Length));
        assert_eq!(Cursor::decode(&good[1..]), Err(CursorError::Length));
        assert_eq!(Cursor::decode(&"!".repeat(72)), Err(CursorError::Alphabet));
        // One character changed anywhere in the body: the check catches it.
        for i in 4..CURSOR_LEN - 4 {
            let mut bad = good.clone().into_bytes();
            bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
            let bad = String::from_utf8(bad).unwrap();
            assert_eq!(Cursor::decode(&bad), Err(CursorError::Check), "at {i}");
        }
        // A future version is not guessed at.
        let mut bytes = Cursor::new("u", pos(1, 2, 3), pos(4, 5, 6)).to_bytes();
        bytes[0] = 2;
        let mut text = String::new();
        for chunk in bytes.chunks(3) {
            let n = u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8 | u32::from(chunk[2]);
            for shift in [18, 12, 6, 0] {
                text.push(ALPHABET[(n >> shift & 63) as usize] as char);
            }
        }
        assert_eq!(Cursor::decode(&text), Err(CursorError::Version));
    }

    #[test]
    fn frames_are_byte_exact() {
        let c = "C".repeat(CURSOR_LEN);
        let data = r#"{"type":"t", "message":{"z":[1, 2]}}"#;
        let frame = notification(&c, data);
        assert_eq!(
            frame,
            format!(r#"{{"type":"notification","cursor":"{c}","data":{data}}}"#)
        );
        assert_eq!(frame.len(), data.len() + NOTIFICATION_OVERHEAD);
        assert_eq!(NOTIFICATION_OVERHEAD, 115);
        assert_eq!(
            recovered("abc", 3),
            r#"{"type":"recovered","cursor":"abc","replayed":3}"#
        );
        assert_eq!(
            recovery_failed(RecoveryCode::TooFarBehind, "abc"),
            r#"{"type":"recovery_failed","code":"too_far_behind","cursor":"abc"}"#
        );
        let labels: Vec<&str> = RecoveryCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            labels,
            [
                "position_expired",
                "too_far_behind",
                "invalid_cursor",
                "unavailable",
                "disabled"
            ]
        );
    }

    #[test]
    fn resume_requests_come_from_the_query() {
        let c = Cursor::new("u", pos(1, 2, 3), pos(4, 5, 6));
        let text = c.encode();
        assert_eq!(ResumeRequest::from_query("authorization=x"), None);
        assert_eq!(ResumeRequest::from_query("recover=0"), None);
        assert_eq!(ResumeRequest::from_query(&format!("since={text}")), None);
        assert_eq!(
            ResumeRequest::from_query("authorization=x&recover=1"),
            Some(ResumeRequest {
                since: Since::Start
            })
        );
        assert_eq!(
            ResumeRequest::from_query(&format!("recover=true&since={text}&authorization=x")),
            Some(ResumeRequest {
                since: Since::Cursor(c)
            })
        );
        assert_eq!(
            ResumeRequest::from_query("recover=1&since=garbage"),
            Some(ResumeRequest {
                since: Since::Invalid(CursorError::Length)
            })
        );
        assert!(matches!(
            ResumeRequest::from_query(&format!("recover=1&since={text}&since={text}")),
            Some(ResumeRequest {
                since: Since::Invalid(_)
            })
        ));
    }
}
