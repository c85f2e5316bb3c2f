//! A bounded memory of recently seen ids: each is kept for a window after it
//! was last inserted, and at most `capacity` of them (the oldest go first).
//! The presence consumer remembers with it whom it reported offline.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub(crate) struct RecentIds {
    /// Id → when it was last inserted.
    seen: HashMap<String, Instant>,
    /// Inserts in order; an entry whose time differs from `seen`'s was
    /// superseded by a later insert of its id.
    order: VecDeque<(String, Instant)>,
    capacity: usize,
    window: Duration,
}

impl RecentIds {
    pub(crate) fn new(capacity: usize, window: Duration) -> RecentIds {
        RecentIds {
            seen: HashMap::new(),
            order: VecDeque::new(),
            capacity,
            window,
        }
    }

    pub(crate) fn contains(&mut self, id: &str) -> bool {
        self.contains_at(id, Instant::now())
    }

    pub(crate) fn insert(&mut self, id: String) {
        self.insert_at(id, Instant::now());
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }

    fn contains_at(&mut self, id: &str, now: Instant) -> bool {
        self.trim(now);
        self.seen.contains_key(id)
    }

    fn insert_at(&mut self, id: String, now: Instant) {
        self.seen.insert(id.clone(), now);
        self.order.push_back((id, now));
        self.trim(now);
    }

    /// Drops what is past the window, superseded, or over a cap.
    fn trim(&mut self, now: Instant) {
        while let Some((id, at)) = self.order.front() {
            let current = self.seen.get(id) == Some(at);
            let expired = now.saturating_duration_since(*at) >= self.window;
            let over =
                self.seen.len() > self.capacity || self.order.len() > 2 * self.capacity.max(1);
            if current && !expired && !over {
                return;
            }
            if let Some((id, _)) = self.order.pop_front() {
                if current {
                    self.seen.remove(&id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_capacity_and_window() {
        let t = Instant::now();
        let mut r = RecentIds::new(2, Duration::from_secs(60));
        r.insert_at("a".into(), t);
        r.insert_at("b".into(), t);
        assert!(r.contains_at("a", t));
        r.insert_at("c".into(), t);
        assert!(!r.contains_at("a", t));
        assert!(r.contains_at("b", t) && r.contains_at("c", t));
        assert!(!r.contains_at("b", t + Duration::from_secs(60)));
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn an_id_inserted_again_is_kept_from_its_last_insert() {
        let t = Instant::now();
        let mut r = RecentIds::new(10, Duration::from_secs(60));
        r.insert_at("a".into(), t);
        r.insert_at("b".into(), t + Duration::from_secs(1));
        r.insert_at("a".into(), t + Duration::from_secs(30));
        // b expires on time, behind a's superseded first entry.
        let later = t + Duration::from_secs(61);
        assert!(!r.contains_at("b", later));
        assert!(r.contains_at("a", later));
        assert!(!r.contains_at("a", t + Duration::from_secs(90)));
        // Flapping ids do not grow the queue without bound.
        let t2 = t + Duration::from_secs(100);
        for i in 0..1000 {
            r.insert_at("f".into(), t2 + Duration::from_millis(i));
        }
        assert!(r.order.len() <= 20, "{}", r.order.len());
        assert!(r.contains_at("f", t2 + Duration::from_secs(1)));
    }
}
