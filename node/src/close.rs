//! Why a socket closed: one value per cause, carrying its WebSocket close
//! code and its metric label, used alike by the session, the outbound cap,
//! the drain, the close frame, the log line and
//! `sumu_connections_closed_total{reason}`. Labels are unique and node/README.md's
//! metrics table lists exactly these (a test keeps them equal).

use actix_http::ws::CloseCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// The client sent a Close frame (the server echoes it).
    Client,
    /// No client data frame for the idle timeout.
    IdleTimeout,
    /// The socket reached the maximum connection duration.
    MaxDuration,
    /// No sign of life for two ping intervals: dropped without a frame.
    NoPong,
    /// A frame over the frame limit.
    FrameTooBig,
    /// A fragmented message over the message limit.
    MessageTooBig,
    /// Too many rate-limited frames in a row.
    RateLimitAbuse,
    /// Its outbound queue passed the cap: cut off, unsent data discarded.
    SlowReader,
    /// The node is draining (SIGTERM/SIGINT).
    ServerShutdown,
    /// A WebSocket protocol violation.
    ProtocolError,
    /// A text message that is not UTF-8.
    InvalidUtf8,
    /// A continuation frame with no message to continue.
    UnexpectedContinuation,
    /// A recovering socket's stream could not be kept exact (history
    /// unreadable, a gap not fillable, the stream reset): 1013, so the
    /// client resumes from its last cursor and is told honestly.
    RecoveryInterrupted,
}

impl CloseReason {
    /// Every reason, for tests and documentation.
    #[cfg(test)]
    pub(crate) const ALL: [CloseReason; 13] = [
        CloseReason::Client,
        CloseReason::IdleTimeout,
        CloseReason::MaxDuration,
        CloseReason::NoPong,
        CloseReason::FrameTooBig,
        CloseReason::MessageTooBig,
        CloseReason::RateLimitAbuse,
        CloseReason::SlowReader,
        CloseReason::ServerShutdown,
        CloseReason::ProtocolError,
        CloseReason::InvalidUtf8,
        CloseReason::UnexpectedContinuation,
        CloseReason::RecoveryInterrupted,
    ];

    /// The `reason` label of `sumu_connections_closed_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::MaxDuration => "max_duration",
            CloseReason::NoPong => "no_pong",
            CloseReason::FrameTooBig => "frame_too_big",
            CloseReason::MessageTooBig => "message_too_big",
            CloseReason::RateLimitAbuse => "rate_limit_abuse",
            CloseReason::SlowReader => "slow_reader",
            CloseReason::ServerShutdown => "server_shutdown",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::InvalidUtf8 => "invalid_utf8",
            CloseReason::UnexpectedContinuation => "unexpected_continuation",
            CloseReason::RecoveryInterrupted => "recovery_interrupted",
        }
    }

    /// The close code the server sends by default (`--drain-close-code` and
    /// `--max-duration-close-code` override two of them); `None` when the
    /// socket is dropped without a Close frame of ours (dead peer, cut-off
    /// slow reader) or the client's own Close is echoed.
    ///
    /// A drain closes with 1012 "service restart" and the max duration with
    /// 4000 (private use): clients should come back from both, and common
    /// clients do on these codes, while sockette (SUMU's demo client), for
    /// one, never reconnects after 1000, 1001 or 1005. Idleness is 1001: an
    /// idle client has nothing to come back for.
    pub(crate) fn code(self) -> Option<CloseCode> {
        match self {
            CloseReason::Client | CloseReason::NoPong | CloseReason::SlowReader => None,
            CloseReason::IdleTimeout => Some(CloseCode::Away),
            CloseReason::MaxDuration => Some(CloseCode::Other(4000)),
            CloseReason::ServerShutdown => Some(CloseCode::Restart),
            CloseReason::FrameTooBig | CloseReason::MessageTooBig => Some(CloseCode::Size),
            CloseReason::RateLimitAbuse => Some(CloseCode::Policy),
            CloseReason::ProtocolError | CloseReason::UnexpectedContinuation => {
                Some(CloseCode::Protocol)
            }
            CloseReason::InvalidUtf8 => Some(CloseCode::Invalid),
            CloseReason::RecoveryInterrupted => Some(CloseCode::Again),
        }
    }

    /// The close frame's description: the label in words.
    pub(crate) fn description(self) -> String {
        self.label().replace('_', " ")
    }

    /// Counts one close in `sumu_connections_closed_total{reason}`.
    pub(crate) fn count(self, metrics: &crate::metrics::Metrics) {
        metrics
            .connections_closed
            .with_label_values(&[self.label()])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn labels_are_unique_and_match_readme() {
        let labels: BTreeSet<&str> = CloseReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), CloseReason::ALL.len(), "duplicate label");
        let readme = include_str!("../README.md");
        let row = readme
            .lines()
            .find(|l| l.contains("`sumu_connections_closed_total{reason}`"))
            .expect("node/README.md's metrics table lists sumu_connections_closed_total");
        let documented: BTreeSet<&str> = row
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|w| !w.starts_with("sumu_") && !w.starts_with("--"))
            .collect();
        assert_eq!(
            documented, labels,
            "node/README.md's close reasons differ from the code"
        );
    }

    #[test]
    fn codes_follow_rfc6455() {
        assert_eq!(CloseReason::FrameTooBig.code(), Some(CloseCode::Size));
        assert_eq!(CloseReason::InvalidUtf8.code(), Some(CloseCode::Invalid));
        assert_eq!(CloseReason::RateLimitAbuse.code(), Some(CloseCode::Policy));
        assert_eq!(CloseReason::SlowReader.code(), None);
    }
}
