//! What this node has delivered, per notification request: one record per
//! node, shared by the router's own local delivery, the mesh inbox's
//! deliveries and the notification pollers, so a socket that stays
//! connected gets each request once however often, and by however many
//! routers, the request is routed: redelivered after its delete failed,
//! taken by a second node while the first one's visibility extension was
//! late, retried after a partial routing, routed again after its router
//! crashed half-way.
//!
//! A broadcast is recorded by request id (every socket here had it once);
//! a multicast per connection, since other routers' shares of the same
//! request differ (other chunks, other rows). Deliveries are claimed before
//! they are handed to the hub, under one lock, so two shares racing on this
//! node deliver once; a delivery that failed gives its claims back.
//!
//! Bounded in time and memory: a request is remembered for
//! [`Limits::window`] after its first claim, and at most
//! [`Limits::max_requests`] requests and [`Limits::max_connections`]
//! connection entries are kept (the oldest requests go first). A connection
//! id is kept as 128 bits: sumu's ids are 128-bit UUIDs in hex, held
//! exactly; any other id by a 128-bit hash.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How much the record keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// A request is remembered this long after its first claim: longer than
    /// any redelivery (visibility timeouts, the 30 s retry, the DLQ's
    /// receive count).
    pub(crate) window: Duration,
    pub(crate) max_requests: usize,
    pub(crate) max_connections: usize,
}

/// What README states: 15 minutes, 100,000 requests, 1,000,000
/// connection entries: 41 MB with both caps full (24 B per connection
/// entry, 170 B per request, measured by `memory_per_entry`).
pub(crate) const LIMITS: Limits = Limits {
    window: Duration::from_secs(900),
    max_requests: 100_000,
    max_connections: 1_000_000,
};

/// One request's deliveries on this node.
#[derive(Debug)]
struct Entry {
    first: Instant,
    /// A broadcast reached every socket here.
    everyone: bool,
    /// This node routed the request completely (its own delivery and every
    /// other node's share).
    routed: bool,
    /// A multicast's connections. Boxed on purpose: a broadcast's entry
    /// then holds 8 bytes here instead of 48 (170 B per request measured,
    /// 235 B unboxed), and a multicast pays one small allocation.
    #[allow(clippy::box_collection)]
    connections: Option<Box<HashSet<u128>>>,
}

impl Entry {
    fn connection_count(&self) -> usize {
        self.connections.as_ref().map_or(0, |c| c.len())
    }
}

#[derive(Debug)]
struct Record {
    limits: Limits,
    entries: HashMap<Arc<str>, Entry>,
    /// Requests by first claim, oldest first.
    order: VecDeque<Arc<str>>,
    connections: usize,
}

/// The node's record of deliveries (cheap to share: one lock, short holds).
pub(crate) struct Delivered {
    record: Mutex<Record>,
}

/// A connection id as 128 bits: a 32-digit hex id exactly, else a hash.
fn connection_key(id: &str) -> u128 {
    if id.len() == 32 {
        if let Ok(n) = u128::from_str_radix(id, 16) {
            return n;
        }
    }
    let half = |salt: u8| {
        let mut h = std::hash::DefaultHasher::new();
        salt.hash(&mut h);
        id.hash(&mut h);
        h.finish()
    };
    (u128::from(half(1)) << 64) | u128::from(half(2))
}

impl Record {
    fn new(limits: Limits) -> Record {
        Record {
            limits,
            entries: HashMap::new(),
            order: VecDeque::new(),
            connections: 0,
        }
    }

    /// Forgets requests past the window, then the oldest while over a cap.
    fn trim(&mut self, now: Instant) {
        while let Some(oldest) = self.order.front() {
            let expired = self
                .entries
                .get(oldest)
                .is_none_or(|e| now.saturating_duration_since(e.first) >= self.limits.window);
            let over = self.order.len() > self.limits.max_requests
                || self.connections > self.limits.max_connections;
            if !expired && !over {
                return;
            }
            if let Some(id) = self.order.pop_front() {
                if let Some(e) = self.entries.remove(&id) {
                    self.connections -= e.connection_count();
                }
            }
        }
    }

    fn entry(&mut self, request: &str, now: Instant) -> &mut Entry {
        self.trim(now);
        if !self.entries.contains_key(request) {
            let id: Arc<str> = Arc::from(request);
            self.order.push_back(id.clone());
            self.entries.insert(
                id,
                Entry {
                    first: now,
                    everyone: false,
                    routed: false,
                    connections: None,
                },
            );
        }
        self.entries
            .get_mut(request)
            .expect("inserted above, under the same lock")
    }

    fn get(&mut self, request: &str, now: Instant) -> Option<&Entry> {
        self.trim(now);
        self.entries.get(request)
    }

    fn claim_everyone(&mut self, request: &str, now: Instant) -> bool {
        let entry = self.entry(request, now);
        !std::mem::replace(&mut entry.everyone, true)
    }

    fn claim(&mut self, request: &str, ids: Vec<String>, now: Instant) -> Vec<String> {
        let entry = self.entry(request, now);
        if entry.everyone {
            return Vec::new();
        }
        let set = entry.connections.get_or_insert_with(Box::default);
        let claimed: Vec<String> = ids
            .into_iter()
            .filter(|id| set.insert(connection_key(id)))
            .collect();
        self.connections += claimed.len();
        claimed
    }

    fn release(&mut self, request: &str, ids: &[String]) {
        if let Some(set) = self
            .entries
            .get_mut(request)
            .and_then(|e| e.connections.as_mut())
        {
            let before = set.len();
            for id in ids {
                set.remove(&connection_key(id));
            }
            self.connections -= before - set.len();
        }
    }
}

impl Delivered {
    pub(crate) fn new(limits: Limits) -> Delivered {
        Delivered {
            record: Mutex::new(Record::new(limits)),
        }
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims a broadcast's delivery to every socket here: true the first
    /// time (the caller delivers), false once claimed.
    pub(crate) fn claim_everyone(&self, request: &str) -> bool {
        self.record().claim_everyone(request, Instant::now())
    }

    /// Gives a broadcast's claim back (its delivery failed).
    pub(crate) fn release_everyone(&self, request: &str) {
        if let Some(entry) = self.record().entries.get_mut(request) {
            entry.everyone = false;
        }
    }

    /// Of `connections`, those that have not had `request` yet: the caller
    /// delivers to them; they count as delivered from now on.
    pub(crate) fn claim(&self, request: &str, connections: Vec<String>) -> Vec<String> {
        self.record().claim(request, connections, Instant::now())
    }

    /// Gives claims back (their delivery failed, a retry must deliver).
    pub(crate) fn release(&self, request: &str, connections: &[String]) {
        self.record().release(request, connections);
    }

    /// This node routed `request` completely.
    pub(crate) fn routed(&self, request: &str) {
        self.record().entry(request, Instant::now()).routed = true;
    }

    /// Whether this node routed `request` completely (within the window).
    pub(crate) fn was_routed(&self, request: &str) -> bool {
        self.record()
            .get(request, Instant::now())
            .is_some_and(|e| e.routed)
    }
}

/// The request id of a mesh share: `<request id>#<chunk>` (`mesh/delivery.rs`
/// numbers a multicast's chunks per router; the request is the same).
pub(crate) fn request_of_share(share_id: &str) -> &str {
    share_id
        .rsplit_once('#')
        .map_or(share_id, |(request, _)| request)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limits = Limits {
        window: Duration::from_secs(60),
        max_requests: 3,
        max_connections: 5,
    };

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_connection_gets_a_request_once_whichever_share_brings_it() {
        let t = Instant::now();
        let mut r = Record::new(LIMITS);
        // The router's own delivery, then another router's share of the same
        // request (after a failed delete, a late visibility extension, a crash).
        assert_eq!(r.claim("q", ids(&["a", "b"]), t), ids(&["a", "b"]));
        assert_eq!(r.claim("q", ids(&["b", "c", "a"]), t), ids(&["c"]));
        // Two shares of one request from two routers, split differently.
        assert_eq!(r.claim("q", ids(&["c", "d"]), t), ids(&["d"]));
        // Another request is another record.
        assert_eq!(r.claim("other", ids(&["a"]), t), ids(&["a"]));
        assert_eq!(r.connections, 5);
    }

    #[test]
    fn a_failed_delivery_gives_its_claims_back() {
        let t = Instant::now();
        let mut r = Record::new(LIMITS);
        assert_eq!(r.claim("q", ids(&["a", "b"]), t), ids(&["a", "b"]));
        r.release("q", &ids(&["b"]));
        assert_eq!(r.connections, 1);
        // The retry after a partial routing delivers what did not arrive.
        assert_eq!(r.claim("q", ids(&["a", "b"]), t), ids(&["b"]));
    }

    #[test]
    fn a_broadcast_is_delivered_once_per_node() {
        let d = Delivered::new(LIMITS);
        assert!(d.claim_everyone("b1"));
        assert!(
            !d.claim_everyone("b1"),
            "the mesh copy after the router's own"
        );
        d.release_everyone("b1");
        assert!(d.claim_everyone("b1"), "a failed delivery is retried");
        assert!(d.claim("b1", ids(&["a"])).is_empty());
    }

    #[test]
    fn routed_requests_are_remembered_for_the_pollers() {
        let d = Delivered::new(LIMITS);
        assert!(!d.was_routed("m"));
        let _ = d.claim("m", ids(&["a"]));
        assert!(!d.was_routed("m"), "delivered here is not routed");
        d.routed("m");
        assert!(d.was_routed("m"));
    }

    #[test]
    fn requests_are_forgotten_after_the_window() {
        let t = Instant::now();
        let mut r = Record::new(SMALL);
        assert_eq!(r.claim("q", ids(&["a"]), t), ids(&["a"]));
        let later = t + SMALL.window;
        assert!(r.get("q", later).is_none());
        assert_eq!(r.connections, 0);
        assert_eq!(r.claim("q", ids(&["a"]), later), ids(&["a"]));
    }

    #[test]
    fn the_oldest_requests_go_first_over_a_cap() {
        let t = Instant::now();
        let mut r = Record::new(SMALL);
        for q in ["q1", "q2", "q3", "q4"] {
            r.claim_everyone(q, t);
        }
        r.trim(t);
        assert!(r.get("q1", t).is_none(), "over max_requests");
        assert!(r.get("q4", t).is_some());
        // Connection entries: 4 + 4 > 5 drops the older request.
        r.claim("m1", ids(&["a", "b", "c", "d"]), t);
        r.claim("m2", ids(&["a", "b", "c", "d"]), t);
        r.trim(t);
        assert!(r.get("m1", t).is_none());
        assert_eq!(r.connections, 4);
    }

    #[test]
    fn connection_ids_are_held_exactly_or_hashed() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(connection_key(id), 0x0123456789abcdef0123456789abcdef);
        assert_ne!(connection_key("stale-1"), connection_key("stale-2"));
        assert_eq!(connection_key("z1"), connection_key("z1"));
    }

    #[test]
    fn share_ids_name_their_request() {
        assert_eq!(request_of_share("abc#0"), "abc");
        assert_eq!(request_of_share("a#b#12"), "a#b");
        assert_eq!(request_of_share("plain"), "plain");
    }

    /// What README states the record costs at its caps: bytes per
    /// connection entry and per request, as the allocator sees them.
    #[test]
    fn memory_per_entry() {
        use crate::sys::counting_alloc::held;
        let t = Instant::now();
        let mut r = Record::new(LIMITS);
        let conns: Vec<String> = (0..10_000u128).map(|i| format!("{i:032x}")).collect();
        let before = held();
        for chunk in 0..100 {
            let share = conns[chunk * 100..(chunk + 1) * 100].to_vec();
            r.claim(&format!("{:032x}", chunk), share, t);
        }
        let per_connection = (held() - before) as f64 / 10_000.0;
        let before = held();
        for q in 0..10_000u32 {
            r.claim_everyone(&format!("{q:08x}-0000-0000-0000-000000000000"), t);
        }
        let per_request = (held() - before) as f64 / 10_000.0;
        println!("delivered record: {per_connection:.1} B per connection entry (100 per request), {per_request:.1} B per broadcast request");
        assert!(per_connection < 32.0, "{per_connection}");
        assert!(per_request < 200.0, "{per_request}");
    }
}
