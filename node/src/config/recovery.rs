//! The recovery window (`--recovery-window-secs` and its limits).
//! Invariant: a replay fits beside live traffic (at most half a socket's
//! outbound cap); the window is on by default only on the memory engine.

use std::time::Duration;

use super::limits::Limits;
use super::options::{ConfigError, EngineKind, Options};

/// The recovery window's defaults, each written once.
pub const DEFAULT_RECOVERY_WINDOW_MEMORY: Duration = Duration::from_secs(120);
/// Off on aws: recording costs DynamoDB writes (README states how many).
pub const DEFAULT_RECOVERY_WINDOW_AWS: Duration = Duration::ZERO;
pub const DEFAULT_RECOVERY_MAX_MESSAGES: usize = 1000;
pub const DEFAULT_RECOVERY_MAX_BYTES: usize = 1024 * 1024;

/// The recovery window (`--recovery-window-secs` and its limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// How long a routed request is kept at least; zero: recovery is off.
    pub window: Duration,
    /// Most positions one resume or gap fill catches up.
    pub max_messages: usize,
    /// Most bytes of `data` one resume or gap fill replays.
    pub max_bytes: usize,
}

impl RecoveryConfig {
    pub fn enabled(&self) -> bool {
        !self.window.is_zero()
    }
}

/// The recovery window of `o` on `engine`, checked against the socket `limits`.
pub(super) fn resolve_recovery(
    o: &Options,
    engine: EngineKind,
    limits: &Limits,
) -> Result<RecoveryConfig, ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    let recovery = RecoveryConfig {
        window: o.recovery_window_secs.map_or(
            match engine {
                EngineKind::Memory => DEFAULT_RECOVERY_WINDOW_MEMORY,
                EngineKind::Aws => DEFAULT_RECOVERY_WINDOW_AWS,
            },
            Duration::from_secs,
        ),
        max_messages: o
            .recovery_max_messages
            .unwrap_or(DEFAULT_RECOVERY_MAX_MESSAGES),
        // Not given: the default, or half the outbound cap when that is
        // smaller (a replay must fit beside live traffic), so a node with a
        // small `--outbound-buffer-bytes` still starts.
        max_bytes: o
            .recovery_max_bytes
            .unwrap_or(DEFAULT_RECOVERY_MAX_BYTES.min(limits.outbound_buffer_bytes / 2)),
    };
    if recovery.window > Duration::from_secs(7 * 24 * 3600) {
        return invalid("--recovery-window-secs must be at most 604800 (7 days)".into());
    }
    if recovery.max_messages == 0 || recovery.max_bytes == 0 {
        return invalid("--recovery-max-messages and --recovery-max-bytes must be >= 1".into());
    }
    if recovery.max_bytes > limits.outbound_buffer_bytes / 2 {
        return invalid(
            "--recovery-max-bytes must be at most half of --outbound-buffer-bytes (a replay must \
                 fit beside live traffic under the socket's outbound cap)"
                .into(),
        );
    }
    Ok(recovery)
}
