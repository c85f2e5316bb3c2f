//! Which new sockets a node admits: at most `max_sockets` in all, at most
//! `max_per_user` per user, and per client address (an IPv4 address, or
//! an IPv6 /64: one subscriber's usual allocation) at most
//! `max_per_address` sockets and a token bucket of connects. Counted on
//! this node only: a user's sockets on other nodes are unknown here without
//! a store call per upgrade.
//!
//! Invariant: every count is held by a [`Permit`] and given back when the
//! permit drops (with the socket, or with a refused upgrade), so counts are
//! exact and the state is bounded and O(1) per connect: a user's entry
//! exists while the user has sockets here; an address's while it has
//! sockets or its connect bucket is refilling (at most two refill windows,
//! `burst / rate` seconds each, after its last socket went).
//!
//! [`Handshakes`] counts, the same way, the TLS connections of each address
//! that have not finished their handshake (a [`HandshakePermit`] each): one
//! address cannot hold more than `max_handshakes_per_address` descriptors
//! with connections that never send their ClientHello.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::SocketLimits;

/// Why an upgrade was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("node is full, try another")]
    NodeFull,
    #[error("too many sockets for this user")]
    UserSockets,
    #[error("too many sockets from this address")]
    AddressSockets,
    #[error("too many connects from this address, retry later")]
    AddressRate,
}

impl Refusal {
    /// The stable reason of the refusal body, and its metric label.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refusal::NodeFull => "node_full",
            Refusal::UserSockets => "too_many_sockets_for_user",
            Refusal::AddressSockets => "too_many_sockets_for_address",
            Refusal::AddressRate => "connect_rate_exceeded",
        }
    }
}

/// The limits and the counts of one node.
pub(crate) struct Admission {
    max_sockets: usize,
    limits: SocketLimits,
    /// How long an empty bucket takes to fill (`burst / rate`).
    refill: Duration,
    sockets: AtomicUsize,
    users: Mutex<HashMap<Arc<str>, usize>>,
    addresses: Mutex<Addresses>,
}

#[derive(Default)]
struct Addresses {
    entries: HashMap<IpAddr, AddressEntry>,
    /// Entries whose last socket went, oldest first, with when to look at
    /// them again (`went + refill`, so the queue stays sorted).
    idle: VecDeque<(Instant, IpAddr)>,
}

struct AddressEntry {
    sockets: usize,
    tokens: f64,
    last: Instant,
    queued: bool,
}

impl AddressEntry {
    fn refill(&mut self, now: Instant, limits: &SocketLimits) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limits.connects_per_sec).min(limits.connect_burst);
        self.last = now;
    }
}

/// The per-address key: IPv4 (IPv4-mapped IPv6 included) by address, IPv6
/// by its /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

impl Admission {
    pub(crate) fn new(limits: SocketLimits, max_sockets: usize) -> Arc<Admission> {
        Arc::new(Admission {
            max_sockets,
            refill: Duration::from_secs_f64(limits.connect_burst / limits.connects_per_sec),
            limits,
            sockets: AtomicUsize::new(0),
            users: Mutex::default(),
            addresses: Mutex::default(),
        })
    }

    /// The most sockets this node admits.
    pub(crate) fn max_sockets(&self) -> usize {
        self.max_sockets
    }

    /// Whether the node holds its maximum (it is then not ready for more).
    pub(crate) fn full(&self) -> bool {
        self.sockets.load(Ordering::Acquire) >= self.max_sockets
    }

    /// Admits one more socket on this node, or refuses with `NodeFull`.
    pub(crate) fn open(self: &Arc<Self>) -> Result<Permit, Refusal> {
        let taken = self
            .sockets
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_sockets).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(Permit {
                admission: self.clone(),
                address: None,
                user: None,
            }),
            Err(_) => Err(Refusal::NodeFull),
        }
    }

    /// Addresses with state (sockets, or a bucket still refilling).
    #[cfg(test)]
    fn tracked_addresses(&self) -> usize {
        self.lock_addresses().entries.len()
    }

    fn lock_addresses(&self) -> std::sync::MutexGuard<'_, Addresses> {
        self.addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_users(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, usize>> {
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets addresses that have no socket and a full bucket again.
    fn sweep(&self, table: &mut Addresses, now: Instant) {
        while let Some(&(due, key)) = table.idle.front() {
            if due > now {
                break;
            }
            table.idle.pop_front();
            let Some(entry) = table.entries.get_mut(&key) else {
                continue;
            };
            entry.queued = false;
            if entry.sockets > 0 {
                continue;
            }
            entry.refill(now, &self.limits);
            if entry.tokens >= self.limits.connect_burst {
                table.entries.remove(&key);
            } else {
                entry.queued = true;
                table.idle.push_back((now + self.refill, key));
            }
        }
    }

    fn exempt(&self, ip: IpAddr) -> bool {
        self.limits.exempt.iter().any(|n| n.contains(ip))
    }
}

/// One admitted socket's share of the counts, given back on drop.
pub(crate) struct Permit {
    admission: Arc<Admission>,
    address: Option<IpAddr>,
    user: Option<Arc<str>>,
}

impl Permit {
    /// Counts the socket against its client address `ip` (unless exempt):
    /// one connect token, and one of the address's sockets.
    pub(crate) fn address(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        let adm = &*self.admission;
        if self.address.is_some() || adm.exempt(ip) {
            return Ok(());
        }
        let key = address_key(ip);
        let mut table = adm.lock_addresses();
        adm.sweep(&mut table, now);
        let entry = table.entries.entry(key).or_insert(AddressEntry {
            sockets: 0,
            tokens: adm.limits.connect_burst,
            last: now,
            queued: false,
        });
        entry.refill(now, &adm.limits);
        if entry.tokens < 1.0 {
            return Err(Refusal::AddressRate);
        }
        entry.tokens -= 1.0;
        if entry.sockets >= adm.limits.max_per_address {
            return Err(Refusal::AddressSockets);
        }
        entry.sockets += 1;
        self.address = Some(key);
        Ok(())
    }

    /// Counts the socket against its user.
    pub(crate) fn user(&mut self, user: &Arc<str>) -> Result<(), Refusal> {
        if self.user.is_some() {
            return Ok(());
        }
        let adm = &*self.admission;
        let mut users = adm.lock_users();
        let count = users.entry(user.clone()).or_insert(0);
        if *count >= adm.limits.max_per_user {
            return Err(Refusal::UserSockets);
        }
        *count += 1;
        self.user = Some(user.clone());
        Ok(())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let adm = &*self.admission;
        adm.sockets.fetch_sub(1, Ordering::AcqRel);
        if let Some(user) = self.user.take() {
            let mut users = adm.lock_users();
            if let Some(count) = users.get_mut(&user) {
                *count -= 1;
                if *count == 0 {
                    users.remove(&user);
                }
            }
        }
        if let Some(key) = self.address.take() {
            let now = Instant::now();
            let mut table = adm.lock_addresses();
            if let Some(entry) = table.entries.get_mut(&key) {
                entry.sockets -= 1;
                if entry.sockets == 0 && !entry.queued {
                    entry.queued = true;
                    table.idle.push_back((now + adm.refill, key));
                }
            }
            adm.sweep(&mut table, now);
        }
    }
}

/// The TLS connections of each client address that have not finished their
/// handshake (IPv6: per /64, and the exempt networks uncounted).
pub(crate) struct Handshakes {
    max_per_address: usize,
    exempt: Vec<crate::config::Network>,
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl Handshakes {
    pub(crate) fn new(limits: &SocketLimits) -> Arc<Handshakes> {
        Arc::new(Handshakes {
            max_per_address: limits.max_handshakes_per_address,
            exempt: limits.exempt.clone(),
            counts: Mutex::default(),
        })
    }

    /// One more unfinished handshake from `ip`, or `None` when its address
    /// holds its maximum already.
    pub(crate) fn start(self: &Arc<Self>, ip: IpAddr) -> Option<HandshakePermit> {
        if self.exempt.iter().any(|n| n.contains(ip)) {
            return Some(HandshakePermit {
                owner: self.clone(),
                key: None,
            });
        }
        let key = address_key(ip);
        let mut counts = self.lock();
        let count = counts.entry(key).or_insert(0);
        if *count >= self.max_per_address {
            if *count == 0 {
                counts.remove(&key);
            }
            return None;
        }
        *count += 1;
        Some(HandshakePermit {
            owner: self.clone(),
            key: Some(key),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Addresses with an unfinished handshake.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().len()
    }
}

/// One unfinished TLS handshake's share of its address's count.
pub(crate) struct HandshakePermit {
    owner: Arc<Handshakes>,
    key: Option<IpAddr>,
}

impl Drop for HandshakePermit {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let mut counts = self.owner.lock();
            if let Some(count) = counts.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_user: usize, per_address: usize, rate: f64, burst: f64) -> SocketLimits {
        SocketLimits {
            max_sockets: None,
            max_per_user: per_user,
            max_per_address: per_address,
            connects_per_sec: rate,
            connect_burst: burst,
            max_handshakes_per_address: per_address,
            exempt: vec!["127.0.0.0/8".parse().unwrap()],
        }
    }

    #[test]
    fn unfinished_handshakes_are_capped_per_address_and_given_back() {
        let hs = Handshakes::new(&limits(1, 2, 1.0, 1.0));
        let a = hs.start(ip("192.0.2.1")).unwrap();
        let b = hs.start(ip("192.0.2.1")).unwrap();
        assert!(hs.start(ip("192.0.2.1")).is_none());
        // Another address, its /64 for IPv6, and an exempt one.
        let c = hs.start(ip("192.0.2.2")).unwrap();
        let d = hs.start(ip("2001:db8::1")).unwrap();
        let e = hs.start(ip("2001:db8::2")).unwrap();
        assert!(hs.start(ip("2001:db8::ffff")).is_none());
        let lo: Vec<_> = (0..10)
            .map(|_| hs.start(ip("127.0.0.1")).unwrap())
            .collect();
        drop(a);
        let a = hs.start(ip("192.0.2.1")).unwrap();
        drop((a, b, c, d, e, lo));
        assert_eq!(hs.tracked(), 0, "entries go with their last handshake");
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn node_maximum_is_exact_and_given_back() {
        let adm = Admission::new(limits(10, 10, 10.0, 10.0), 2);
        let a = adm.open().unwrap();
        let b = adm.open().unwrap();
        assert!(adm.full());
        assert_eq!(adm.open().err(), Some(Refusal::NodeFull));
        drop(a);
        assert!(!adm.full());
        let _c = adm.open().unwrap();
        drop(b);
    }

    #[test]
    fn per_user_count_is_exact_and_entries_go_at_zero() {
        let adm = Admission::new(limits(2, 100, 100.0, 100.0), 100);
        let alice: Arc<str> = "alice".into();
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut p = adm.open().unwrap();
            p.user(&alice).unwrap();
            held.push(p);
        }
        let mut p = adm.open().unwrap();
        assert_eq!(p.user(&alice), Err(Refusal::UserSockets));
        drop(p);
        // Bob is not alice.
        let mut bob = adm.open().unwrap();
        bob.user(&"bob".into()).unwrap();
        held.pop();
        let mut p = adm.open().unwrap();
        p.user(&alice).unwrap();
        drop((p, held, bob));
        assert!(adm.lock_users().is_empty());
        assert!(!adm.full());
    }

    #[test]
    fn per_address_count_and_rate() {
        let adm = Admission::new(limits(100, 3, 1.0, 5.0), 100);
        let now = Instant::now();
        let addr = ip("192.0.2.1");
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut p = adm.open().unwrap();
            p.address(addr, now).unwrap();
            held.push(p);
        }
        let mut p = adm.open().unwrap();
        assert_eq!(p.address(addr, now), Err(Refusal::AddressSockets));
        // Another address, and an exempt one, are not affected.
        p.address(ip("192.0.2.2"), now).unwrap();
        let mut lo = adm.open().unwrap();
        lo.address(ip("127.0.0.1"), now).unwrap();
        drop((p, lo));
        held.clear();
        // 5 tokens, 4 spent (3 sockets + the refused one): one more connect.
        let mut p = adm.open().unwrap();
        p.address(addr, now).unwrap();
        let mut q = adm.open().unwrap();
        assert_eq!(q.address(addr, now), Err(Refusal::AddressRate));
        // One second later, one token more.
        q.address(addr, now + Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn ipv6_is_counted_per_64() {
        let adm = Admission::new(limits(100, 1, 100.0, 100.0), 100);
        let now = Instant::now();
        let mut a = adm.open().unwrap();
        a.address(ip("2001:db8:1:2::1"), now).unwrap();
        let mut b = adm.open().unwrap();
        assert_eq!(
            b.address(ip("2001:db8:1:2:ffff::9"), now),
            Err(Refusal::AddressSockets)
        );
        b.address(ip("2001:db8:1:3::1"), now).unwrap();
        // IPv4-mapped IPv6 is the IPv4 address (and loopback stays exempt).
        let mut c = adm.open().unwrap();
        c.address(ip("::ffff:192.0.2.9"), now).unwrap();
        let mut d = adm.open().unwrap();
        assert_eq!(
            d.address(ip("192.0.2.9"), now),
            Err(Refusal::AddressSockets)
        );
        d.address(ip("::ffff:127.0.0.1"), now).unwrap();
    }

    #[test]
    fn address_state_is_forgotten_once_idle_and_refilled() {
        // Refill window: 2 tokens at 100/s = 20 ms.
        let adm = Admission::new(limits(100, 10, 100.0, 2.0), 100_000);
        let start = Instant::now();
        for i in 0..1000u32 {
            let mut p = adm.open().unwrap();
            let addr = std::net::Ipv4Addr::from(0xC000_0200u32 + i);
            p.address(IpAddr::V4(addr), start).unwrap();
        }
        // All dropped (sockets gone) but their buckets are refilling.
        assert!(adm.tracked_addresses() > 0);
        std::thread::sleep(Duration::from_millis(60));
        // The next connect sweeps what has refilled.
        let mut p = adm.open().unwrap();
        p.address(ip("198.51.100.1"), Instant::now()).unwrap();
        assert_eq!(adm.tracked_addresses(), 1);
        drop(p);
    }
}
