//! Which notification sequence numbers one socket received (a growable bitset), so the
//! run can tell lost deliveries and duplicates apart.

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqSet {
    words: Vec<u64>,
    len: usize,
}

/// Highest sequence number accepted (guards memory against a hostile or buggy server).
pub const MAX_SEQ: u64 = 1 << 26;

impl SeqSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts `seq`; returns false when it was already present (a duplicate) or out of range.
    pub fn insert(&mut self, seq: u64) -> bool {
        if seq >= MAX_SEQ {
            return false;
        }
        let word = (seq / 64) as usize;
        let bit = 1u64 << (seq % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        if self.words[word] & bit != 0 {
            return false;
        }
        self.words[word] |= bit;
        self.len += 1;
        true
    }

    pub fn contains(&self, seq: u64) -> bool {
        let word = (seq / 64) as usize;
        self.words
            .get(word)
            .is_some_and(|w| w & (1u64 << (seq % 64)) != 0)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            (0..64u64).filter_map(move |b| (w & (1 << b) != 0).then_some(i as u64 * 64 + b))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_contains_duplicates() {
        let mut s = SeqSet::new();
        assert!(s.insert(0));
        assert!(s.insert(64));
        assert!(s.insert(1000));
        assert!(!s.insert(64));
        assert!(s.contains(1000));
        assert!(!s.contains(999));
        assert!(!s.contains(1_000_000));
        assert_eq!(s.len(), 3);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 64, 1000]);
        assert!(!s.insert(MAX_SEQ));
    }
}
