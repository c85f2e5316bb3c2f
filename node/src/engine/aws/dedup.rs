//! A bounded memory of recently routed request ids, so a redelivered
//! request (routed, but its delete failed) is not delivered twice.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub(crate) struct RecentIds {
    seen: HashMap<String, Instant>,
    order: VecDeque<String>,
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
        self.expire();
        self.seen.contains_key(id)
    }

    pub(crate) fn insert(&mut self, id: String) {
        self.expire();
        if self.seen.insert(id.clone(), Instant::now()).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }

    fn expire(&mut self) {
        while let Some(front) = self.order.front() {
            match self.seen.get(front) {
                Some(t) if t.elapsed() < self.window => break,
                _ => {
                    if let Some(old) = self.order.pop_front() {
                        self.seen.remove(&old);
                    }
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
        let mut r = RecentIds::new(2, Duration::from_secs(60));
        r.insert("a".into());
        r.insert("b".into());
        assert!(r.contains("a"));
        r.insert("c".into());
        assert!(!r.contains("a"));
        assert!(r.contains("b") && r.contains("c"));
        let mut r = RecentIds::new(10, Duration::from_millis(0));
        r.insert("x".into());
        assert!(!r.contains("x"));
    }
}
