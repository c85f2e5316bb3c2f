//! Latency histograms (microseconds, hdrhistogram) and their percentile summaries.
//! Every task records into its own histogram; the run merges them at the end.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest trackable latency: one hour.
const MAX_MICROS: u64 = 3_600_000_000;

/// A latency histogram in microseconds, 3 significant digits.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    inner: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> Self {
        // Bounds and precision are constants known to be valid.
        let inner = Histogram::new_with_bounds(1, MAX_MICROS, 3)
            .unwrap_or_else(|_| Histogram::new(3).expect("3 significant digits is valid"));
        LatencyHistogram { inner }
    }

    /// Records one latency; values beyond the range are clamped (and 0 becomes 1 µs).
    pub fn record_micros(&mut self, micros: u64) {
        self.inner.saturating_record(micros.clamp(1, MAX_MICROS));
    }

    pub fn record(&mut self, latency: Duration) {
        self.record_micros(u64::try_from(latency.as_micros()).unwrap_or(MAX_MICROS));
    }

    /// Adds all samples of `other` (same bounds, so this cannot fail in practice; a
    /// failure would drop the other histogram and is reported as false).
    pub fn merge(&mut self, other: &LatencyHistogram) -> bool {
        self.inner.add(&other.inner).is_ok()
    }

    pub fn len(&self) -> u64 {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    pub fn summary(&self) -> LatencySummary {
        if self.inner.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: self.inner.len(),
            min_us: self.inner.min(),
            mean_us: self.inner.mean(),
            p50_us: self.inner.value_at_quantile(0.50),
            p90_us: self.inner.value_at_quantile(0.90),
            p99_us: self.inner.value_at_quantile(0.99),
            p999_us: self.inner.value_at_quantile(0.999),
            max_us: self.inner.max(),
        }
    }

    /// (quantile, micros) points for plotting, from the median out to the tail.
    pub fn quantile_curve(&self) -> Vec<(f64, u64)> {
        if self.inner.is_empty() {
            return Vec::new();
        }
        let mut points = Vec::new();
        let mut nines = 0.0f64;
        while nines <= 5.0 {
            let q = 1.0 - 10f64.powf(-nines);
            points.push((q, self.inner.value_at_quantile(q)));
            nines += 0.05;
        }
        points.push((1.0, self.inner.max()));
        points
    }
}

/// Percentiles of one latency series, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// Merges many histograms into one.
pub fn merge_all<'a>(parts: impl IntoIterator<Item = &'a LatencyHistogram>) -> LatencyHistogram {
    let mut total = LatencyHistogram::new();
    for part in parts {
        total.merge(part);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        let mut all = LatencyHistogram::new();
        for v in 1..=1000u64 {
            a.record_micros(v);
            all.record_micros(v);
        }
        for v in 5000..=5999u64 {
            b.record_micros(v);
            all.record_micros(v);
        }
        let merged = merge_all([&a, &b]);
        assert_eq!(merged.len(), 2000);
        assert_eq!(merged.summary(), all.summary());
        let s = merged.summary();
        // Half the samples are <= 1000 µs, the other half >= 5000 µs.
        assert!(s.p50_us <= 1001, "{s:?}");
        assert!(s.p90_us >= 5000 && s.p90_us <= 6000, "{s:?}");
        assert!((5990..=6000).contains(&s.max_us), "{s:?}");
        assert_eq!(s.min_us, 1);
    }

    #[test]
    fn empty_summary_is_zero_and_curve_empty() {
        let h = LatencyHistogram::new();
        assert_eq!(h.summary(), LatencySummary::default());
        assert!(h.quantile_curve().is_empty());
    }

    #[test]
    fn clamps_out_of_range() {
        let mut h = LatencyHistogram::new();
        h.record_micros(0);
        h.record(Duration::from_secs(100_000));
        let s = h.summary();
        assert_eq!(s.count, 2);
        assert_eq!(s.min_us, 1);
        assert!(s.max_us >= MAX_MICROS / 2);
    }

    #[test]
    fn curve_is_monotonic() {
        let mut h = LatencyHistogram::new();
        for v in 0..10_000u64 {
            h.record_micros(v * 3 + 1);
        }
        let curve = h.quantile_curve();
        assert!(curve
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(curve.last().unwrap().1, h.summary().max_us);
    }
}

/// A histogram shared by many tasks: a few mutex-guarded shards (one histogram per task
/// would cost ~100 KiB per socket), merged at the end.
#[derive(Debug)]
pub struct ShardedHistogram {
    shards: Vec<std::sync::Mutex<LatencyHistogram>>,
}

impl ShardedHistogram {
    pub fn new(shards: usize) -> Self {
        ShardedHistogram {
            shards: (0..shards.max(1))
                .map(|_| std::sync::Mutex::new(LatencyHistogram::new()))
                .collect(),
        }
    }

    /// Records a batch of samples into shard `hint mod shards`.
    pub fn record_batch(&self, hint: usize, micros: &[u64]) {
        if micros.is_empty() {
            return;
        }
        let shard = &self.shards[hint % self.shards.len()];
        let mut histogram = match shard.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        for &value in micros {
            histogram.record_micros(value);
        }
    }

    /// All shards merged.
    pub fn merged(&self) -> LatencyHistogram {
        let mut total = LatencyHistogram::new();
        for shard in &self.shards {
            let histogram = match shard.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            total.merge(&histogram);
        }
        total
    }
}

/// A task-local buffer of samples flushed into a [`ShardedHistogram`] in batches.
#[derive(Debug)]
pub struct LocalRecorder {
    hint: usize,
    buffer: Vec<u64>,
}

const LOCAL_BATCH: usize = 32;

impl LocalRecorder {
    pub fn new(hint: usize) -> Self {
        LocalRecorder {
            hint,
            buffer: Vec::new(),
        }
    }

    pub fn record(&mut self, sink: &ShardedHistogram, micros: u64) {
        self.buffer.push(micros);
        if self.buffer.len() >= LOCAL_BATCH {
            self.flush(sink);
        }
    }

    pub fn flush(&mut self, sink: &ShardedHistogram) {
        sink.record_batch(self.hint, &self.buffer);
        self.buffer.clear();
    }
}

#[cfg(test)]
mod sharded_tests {
    use super::*;

    #[test]
    fn shards_merge_to_all_samples() {
        let sink = std::sync::Arc::new(ShardedHistogram::new(4));
        let mut handles = Vec::new();
        for task in 0..8usize {
            let sink = std::sync::Arc::clone(&sink);
            handles.push(std::thread::spawn(move || {
                let mut local = LocalRecorder::new(task);
                for v in 0..1000u64 {
                    local.record(&sink, task as u64 * 1000 + v + 1);
                }
                local.flush(&sink);
            }));
        }
        for h in handles {
            h.join().unwrap();
        }
        let merged = sink.merged();
        assert_eq!(merged.len(), 8000);
        let s = merged.summary();
        assert_eq!(s.min_us, 1);
        assert!((7995..=8010).contains(&s.max_us), "{s:?}");
        assert!((3990..=4010).contains(&s.p50_us), "{s:?}");
    }
}
