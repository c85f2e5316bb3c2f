//! What one socket may do (frame and message sizes, rates, timeouts, close
//! codes: [`Limits`]) and which sockets a node admits (in all, per user, per
//! client address: [`SocketLimits`], with the [`Network`]s they skip).
//! Invariant: the close codes are ones a server may send, and every limit
//! leaves room for one largest message.

use std::time::Duration;

use super::options::{clean_list, secs, ConfigError, Options};
use crate::close::CloseReason;

#[derive(Debug, Clone)]
pub struct Limits {
    pub idle_timeout: Duration,
    pub max_connection: Duration,
    pub ping_interval: Duration,
    pub max_frame_bytes: usize,
    pub max_message_bytes: usize,
    /// Deepest nesting of a client frame (its own object is level 1).
    pub max_json_depth: usize,
    pub rate_per_sec: f64,
    pub rate_burst: f64,
    pub rate_strikes: u32,
    pub outbound_buffer_bytes: usize,
    /// Publish/send frames of one socket waiting for the engine at once.
    pub max_messages_in_flight: usize,
    /// The close code of the drain.
    pub drain_close_code: u16,
    /// The close code at the max connection duration.
    pub max_duration_close_code: u16,
}

/// Close codes a server may send (RFC 6455 §7.4: the registered ones an
/// endpoint sends, and the 3000-4999 ranges).
fn sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fn default_code(reason: CloseReason) -> u16 {
    reason.code().map_or(1000, u16::from)
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            idle_timeout: Duration::from_secs(600),
            max_connection: Duration::from_secs(7200),
            ping_interval: Duration::from_secs(30),
            max_frame_bytes: 32 * 1024,
            max_message_bytes: 128 * 1024,
            max_json_depth: sumu_shared::DEFAULT_MAX_JSON_DEPTH,
            rate_per_sec: 50.0,
            rate_burst: 100.0,
            rate_strikes: 20,
            outbound_buffer_bytes: 4 * 1024 * 1024,
            max_messages_in_flight: 16,
            drain_close_code: default_code(CloseReason::ServerShutdown),
            max_duration_close_code: default_code(CloseReason::MaxDuration),
        }
    }
}

/// What a node admits: sockets in all, per user, per client address
/// (count and connect rate). Checked at the upgrade by `limits`.
#[derive(Debug, Clone)]
pub struct SocketLimits {
    /// Most sockets of this node; `None` until resolved from the
    /// descriptor limit at start (`--max-sockets 0`).
    pub max_sockets: Option<usize>,
    pub max_per_user: usize,
    pub max_per_address: usize,
    pub connects_per_sec: f64,
    pub connect_burst: f64,
    /// Most TLS connections of one address that have not finished their
    /// handshake.
    pub max_handshakes_per_address: usize,
    /// Client networks the per-address limits skip.
    pub exempt: Vec<Network>,
}

/// The default networks the per-address limits skip: loopback (a proxy on
/// the same host, the load tester, the tests).
pub const DEFAULT_ADDRESS_LIMITS_EXEMPT: &str = "127.0.0.0/8,::1/128";

impl Default for SocketLimits {
    fn default() -> Self {
        SocketLimits {
            max_sockets: None,
            max_per_user: 100,
            max_per_address: 4096,
            connects_per_sec: 64.0,
            connect_burst: 512.0,
            max_handshakes_per_address: 256,
            exempt: DEFAULT_ADDRESS_LIMITS_EXEMPT
                .split(',')
                .filter_map(|n| n.parse().ok())
                .collect(),
        }
    }
}

/// An IP network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`; a bare
/// address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl Network {
    /// Whether `ip` is in the network (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let mask = |bits: u32, prefix: u8| -> u128 {
            if prefix == 0 {
                0
            } else {
                (u128::MAX << (bits - u32::from(prefix))) & (u128::MAX >> (128 - bits))
            }
        };
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let m = mask(32, self.prefix);
                u128::from(u32::from(net)) & m == u128::from(u32::from(ip)) & m
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let m = mask(128, self.prefix);
                u128::from(net) & m == u128::from(ip) & m
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Network, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("not an IP network: {s:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("bad prefix length in {s:?}"))?,
            None => max,
        };
        Ok(Network { addr, prefix })
    }
}

/// The per-socket limits of `o`, checked.
pub(super) fn resolve_limits(o: &Options) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let limits = Limits {
        idle_timeout: secs(o.idle_timeout_secs, d.idle_timeout),
        max_connection: secs(o.max_connection_secs, d.max_connection),
        ping_interval: secs(o.ping_interval_secs, d.ping_interval),
        max_frame_bytes: o.max_frame_bytes.unwrap_or(d.max_frame_bytes),
        max_message_bytes: o.max_message_bytes.unwrap_or(d.max_message_bytes),
        max_json_depth: o.max_json_depth.unwrap_or(d.max_json_depth),
        rate_per_sec: o.rate_limit_per_sec.unwrap_or(d.rate_per_sec),
        rate_burst: o.rate_limit_burst.unwrap_or(d.rate_burst),
        rate_strikes: o.rate_limit_strikes.unwrap_or(d.rate_strikes),
        outbound_buffer_bytes: o.outbound_buffer_bytes.unwrap_or(d.outbound_buffer_bytes),
        max_messages_in_flight: o.max_messages_in_flight.unwrap_or(d.max_messages_in_flight),
        drain_close_code: o.drain_close_code.unwrap_or(d.drain_close_code),
        max_duration_close_code: o
            .max_duration_close_code
            .unwrap_or(d.max_duration_close_code),
    };
    check_limits(&limits)?;
    Ok(limits)
}

/// The per-socket limits' rules: sendable close codes, sizes that nest, positive timeouts and rates.
fn check_limits(limits: &Limits) -> Result<(), ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    for code in [limits.drain_close_code, limits.max_duration_close_code] {
        if !sendable_close_code(code) {
            return invalid(format!(
                    "close code {code} cannot be sent by a server (use 1000-1003, 1007-1014 or 3000-4999)"
                ));
        }
    }
    if limits.max_frame_bytes == 0 || limits.max_frame_bytes > 65536 {
        return invalid("--max-frame-bytes must be within 1..=65536".into());
    }
    if limits.max_json_depth == 0 || limits.max_json_depth > 1000 {
        return invalid(
            "--max-json-depth must be within 1..=1000 (SUMU's Python backends fail past ~1000)"
                .into(),
        );
    }
    if limits.max_message_bytes < limits.max_frame_bytes {
        return invalid("--max-message-bytes must be at least --max-frame-bytes".into());
    }
    if limits.idle_timeout.is_zero()
        || limits.max_connection.is_zero()
        || limits.ping_interval.is_zero()
    {
        return invalid("timeouts and the ping interval must be positive".into());
    }
    if limits.rate_per_sec <= 0.0 || limits.rate_burst < 1.0 || limits.rate_strikes == 0 {
        return invalid("rate limit: per-sec > 0, burst >= 1, strikes >= 1".into());
    }
    if limits.outbound_buffer_bytes < limits.max_message_bytes {
        return invalid("--outbound-buffer-bytes must hold at least one max message".into());
    }
    if limits.max_messages_in_flight == 0 {
        return invalid("--max-messages-in-flight must be >= 1".into());
    }
    Ok(())
}

/// The node's admission limits of `o`, checked.
pub(super) fn resolve_sockets(o: &Options) -> Result<SocketLimits, ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    let ds = SocketLimits::default();
    let sockets = SocketLimits {
        max_sockets: o.max_sockets.filter(|n| *n > 0),
        max_per_user: o.max_sockets_per_user.unwrap_or(ds.max_per_user),
        max_per_address: o.max_sockets_per_address.unwrap_or(ds.max_per_address),
        connects_per_sec: o
            .max_connects_per_address_per_sec
            .unwrap_or(ds.connects_per_sec),
        connect_burst: o.max_connects_per_address_burst.unwrap_or(ds.connect_burst),
        max_handshakes_per_address: o
            .max_tls_handshakes_per_address
            .unwrap_or(ds.max_handshakes_per_address),
        exempt: match o.address_limits_exempt.clone() {
            None => ds.exempt,
            Some(list) => clean_list(Some(list))
                .iter()
                .map(|n| n.parse())
                .collect::<Result<_, _>>()
                .map_err(|e| ConfigError::Invalid(format!("--address-limits-exempt: {e}")))?,
        },
    };
    if sockets.max_per_user == 0
        || sockets.max_per_address == 0
        || sockets.max_handshakes_per_address == 0
    {
        return invalid(
            "--max-sockets-per-user, --max-sockets-per-address and \
                 --max-tls-handshakes-per-address must be >= 1"
                .into(),
        );
    }
    let (rate, burst) = (sockets.connects_per_sec, sockets.connect_burst);
    if rate.is_nan() || rate <= 0.0 || burst.is_nan() || burst < 1.0 {
        return invalid("--max-connects-per-address-per-sec must be > 0 and its burst >= 1".into());
    }
    Ok(sockets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_and_match_by_prefix() {
        let n: Network = "10.1.0.0/16".parse().unwrap();
        assert!(n.contains("10.1.255.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let n: Network = "2001:db8::/32".parse().unwrap();
        assert!(n.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!n.contains("2001:db9::1".parse().unwrap()));
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let one: Network = "192.0.2.7".parse().unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        assert!("nope/8".parse::<Network>().is_err());
        assert!("::/129".parse::<Network>().is_err());
    }
}
