//! The time decisions of one socket, as pure functions of instants: when
//! the next timer must fire and what is due then (close for max duration,
//! close for idleness, drop for a missing pong, or send a ping). The
//! session actor only asks; tests drive them with synthetic instants.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::close::CloseReason;

/// Every socket's timer fires on one grid of this step: the sockets due
/// within a step wake together (one turn of the timer wheel, one burst of
/// pings, their pongs back in a burst), instead of one wake of the node per
/// socket. A timer fires at most this much after its deadline.
pub(crate) const TICK_GRID: Duration = Duration::from_millis(100);

/// The first grid point at or after `at`, on a grid of `step` from `base`.
pub(crate) fn on_grid(at: Instant, base: Instant, step: Duration) -> Instant {
    let step_ns = step.as_nanos().max(1);
    let since = at.saturating_duration_since(base).as_nanos();
    let steps = since.div_ceil(step_ns);
    let ns = u64::try_from(steps * step_ns).unwrap_or(u64::MAX);
    base + Duration::from_nanos(ns)
}

/// The grid's origin: one for the whole process.
fn grid_base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// The three lifetimes that apply to every socket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifetimes {
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connection: Duration,
    pub(crate) ping_interval: Duration,
}

/// What a socket's timer finds when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// End the socket for this reason.
    Close(CloseReason),
    /// Send a server ping; the next one is due a ping interval later.
    Ping,
    /// Nothing yet.
    Nothing,
}

/// A socket's clock readings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timers {
    pub(crate) opened: Instant,
    /// The last client data frame.
    pub(crate) last_data: Instant,
    /// The last anything from the client (data, control, pong).
    pub(crate) last_seen: Instant,
    pub(crate) next_ping: Instant,
}

impl Timers {
    pub(crate) fn new(now: Instant, life: &Lifetimes) -> Timers {
        Timers {
            opened: now,
            last_data: now,
            last_seen: now,
            next_ping: now + life.ping_interval,
        }
    }

    /// When the timer must fire next: the earliest deadline.
    pub(crate) fn next_wake(&self, life: &Lifetimes) -> Instant {
        self.next_ping
            .min(self.last_data + life.idle_timeout)
            .min(self.opened + life.max_connection)
    }

    /// When the socket's timer is set to fire: [`Timers::next_wake`] on the
    /// process's [`TICK_GRID`].
    pub(crate) fn wake_at(&self, life: &Lifetimes) -> Instant {
        on_grid(self.next_wake(life), grid_base(), TICK_GRID)
    }

    /// What is due at `now`. Max duration wins over idleness, idleness over
    /// liveness; a ping is due only for a socket that is still alive.
    pub(crate) fn due(&self, now: Instant, life: &Lifetimes) -> Due {
        if now >= self.opened + life.max_connection {
            return Due::Close(CloseReason::MaxDuration);
        }
        if now >= self.last_data + life.idle_timeout {
            return Due::Close(CloseReason::IdleTimeout);
        }
        if now >= self.next_ping {
            if now.saturating_duration_since(self.last_seen) > life.ping_interval * 2 {
                return Due::Close(CloseReason::NoPong);
            }
            return Due::Ping;
        }
        Due::Nothing
    }

    /// A ping was sent at `now`.
    pub(crate) fn pinged(&mut self, now: Instant, life: &Lifetimes) {
        self.next_ping = now + life.ping_interval;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_on_a_shared_grid_never_before_their_deadline() {
        let base = Instant::now();
        let step = Duration::from_millis(100);
        let ms = |n| base + Duration::from_millis(n);
        assert_eq!(on_grid(ms(0), base, step), ms(0));
        assert_eq!(on_grid(ms(1), base, step), ms(100));
        assert_eq!(on_grid(ms(100), base, step), ms(100));
        assert_eq!(on_grid(ms(30_050), base, step), ms(30_100));
        // Two sockets due 40 ms apart within one step wake at the same instant.
        assert_eq!(
            on_grid(ms(1_210), base, step),
            on_grid(ms(1_250), base, step)
        );
        // A deadline before the grid's origin fires at the origin (at once).
        assert_eq!(on_grid(base, ms(5), step), ms(5));
        let life = Lifetimes {
            idle_timeout: Duration::from_secs(600),
            max_connection: Duration::from_secs(7200),
            ping_interval: Duration::from_secs(30),
        };
        let t = Timers::new(Instant::now(), &life);
        let wake = t.wake_at(&life);
        assert!(wake >= t.next_wake(&life) && wake < t.next_wake(&life) + TICK_GRID);
    }

    const LIFE: Lifetimes = Lifetimes {
        idle_timeout: Duration::from_secs(600),
        max_connection: Duration::from_secs(7200),
        ping_interval: Duration::from_secs(30),
    };

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn pings_at_each_interval_while_the_client_answers() {
        let t0 = Instant::now();
        let mut t = Timers::new(t0, &LIFE);
        assert_eq!(t.next_wake(&LIFE), t0 + secs(30));
        assert_eq!(t.due(t0 + secs(29), &LIFE), Due::Nothing);
        assert_eq!(t.due(t0 + secs(30), &LIFE), Due::Ping);
        t.pinged(t0 + secs(30), &LIFE);
        t.last_seen = t0 + secs(31); // the pong
        assert_eq!(t.due(t0 + secs(60), &LIFE), Due::Ping);
    }

    #[test]
    fn a_silent_client_is_dropped_after_two_intervals() {
        let t0 = Instant::now();
        let mut t = Timers::new(t0, &LIFE);
        t.pinged(t0 + secs(30), &LIFE);
        // 60 s of silence is exactly two intervals: still alive.
        assert_eq!(t.due(t0 + secs(60), &LIFE), Due::Ping);
        t.pinged(t0 + secs(60), &LIFE);
        assert_eq!(t.due(t0 + secs(90), &LIFE), Due::Close(CloseReason::NoPong));
    }

    #[test]
    fn idle_timeout_counts_from_the_last_data_frame() {
        let t0 = Instant::now();
        let mut t = Timers::new(t0, &LIFE);
        t.last_data = t0 + secs(100);
        t.last_seen = t0 + secs(690);
        t.next_ping = t0 + secs(720);
        assert_eq!(t.next_wake(&LIFE), t0 + secs(700));
        assert_eq!(t.due(t0 + secs(699), &LIFE), Due::Nothing);
        assert_eq!(
            t.due(t0 + secs(700), &LIFE),
            Due::Close(CloseReason::IdleTimeout)
        );
    }

    #[test]
    fn max_duration_wins_over_everything() {
        let t0 = Instant::now();
        let mut t = Timers::new(t0, &LIFE);
        let end = t0 + secs(7200);
        t.last_data = end - secs(1);
        t.last_seen = end;
        t.next_ping = end;
        assert_eq!(t.next_wake(&LIFE), end);
        assert_eq!(t.due(end, &LIFE), Due::Close(CloseReason::MaxDuration));
    }
}
