//! Samples this process's and the machine's CPU use once a second during a run, to tell
//! when the load generator or the machine (not the server) was the bottleneck.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sys_limits::{clock_ticks_per_second, cpu_count, read_cpu_ticks, CpuTicks};

/// Share of all cores above which the machine counts as saturated.
pub const SATURATED_PCT: f64 = 95.0;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuReport {
    pub cpus: usize,
    pub samples: usize,
    /// Cores used by the load tester (1.0 = one full core).
    pub own_cores_mean: f64,
    pub own_cores_max: f64,
    /// Busy share of all cores of the machine, percent.
    pub machine_busy_pct_mean: f64,
    pub machine_busy_pct_max: f64,
    /// Share of samples with the machine above [`SATURATED_PCT`], percent.
    pub saturated_samples_pct: f64,
}

impl CpuReport {
    /// Summarizes (own cores, machine busy %) samples.
    pub fn from_samples(cpus: usize, samples: &[(f64, f64)]) -> Self {
        if samples.is_empty() {
            return CpuReport {
                cpus,
                ..Default::default()
            };
        }
        let n = samples.len() as f64;
        let saturated = samples.iter().filter(|s| s.1 >= SATURATED_PCT).count() as f64;
        CpuReport {
            cpus,
            samples: samples.len(),
            own_cores_mean: samples.iter().map(|s| s.0).sum::<f64>() / n,
            own_cores_max: samples.iter().map(|s| s.0).fold(0.0, f64::max),
            machine_busy_pct_mean: samples.iter().map(|s| s.1).sum::<f64>() / n,
            machine_busy_pct_max: samples.iter().map(|s| s.1).fold(0.0, f64::max),
            saturated_samples_pct: 100.0 * saturated / n,
        }
    }

    /// Notes when CPU, not the server, limited the run.
    pub fn limits(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.samples == 0 {
            return notes;
        }
        if self.own_cores_mean >= 0.9 * self.cpus as f64 {
            notes.push(format!(
                "the load tester itself saturated the CPU ({:.1} of {} cores on average)",
                self.own_cores_mean, self.cpus
            ));
        }
        if self.saturated_samples_pct >= 50.0 {
            notes.push(format!(
                "the machine's CPU was saturated in {:.0}% of the samples (load tester {:.1} cores, \
                 server and others the rest of {}): figures are bounded by this machine",
                self.saturated_samples_pct, self.own_cores_mean, self.cpus
            ));
        }
        notes
    }
}

fn sample_between(a: CpuTicks, b: CpuTicks, wall: Duration, hz: f64) -> (f64, f64) {
    let own = (b.own.saturating_sub(a.own)) as f64 / hz / wall.as_secs_f64().max(1e-3);
    let total = b.total.saturating_sub(a.total) as f64;
    let busy = b.busy.saturating_sub(a.busy) as f64;
    let pct = if total > 0.0 {
        100.0 * busy / total
    } else {
        0.0
    };
    (own, pct)
}

/// A running monitor; [`CpuMonitor::finish`] stops it and summarizes.
pub struct CpuMonitor {
    samples: Arc<Mutex<Vec<(f64, f64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CpuMonitor {
    pub fn start() -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&samples);
        let task = tokio::spawn(async move {
            let hz = clock_ticks_per_second();
            let Some(mut last) = read_cpu_ticks() else {
                return;
            };
            let mut last_at = std::time::Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            // Bounded: at most one day of samples; the run aborts the task at its end.
            for _ in 0..86_400 {
                tick.tick().await;
                let Some(now) = read_cpu_ticks() else { return };
                let at = std::time::Instant::now();
                let sample = sample_between(last, now, at - last_at, hz);
                if let Ok(mut s) = sink.lock() {
                    s.push(sample);
                }
                last = now;
                last_at = at;
            }
        });
        CpuMonitor { samples, task }
    }

    pub fn finish(self) -> CpuReport {
        self.task.abort();
        let samples = match self.samples.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        };
        CpuReport::from_samples(cpu_count(), &samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarizes_and_flags_saturation() {
        let r = CpuReport::from_samples(2, &[(1.9, 99.0), (1.8, 97.0), (1.9, 60.0)]);
        assert_eq!(r.samples, 3);
        assert!((r.own_cores_mean - 1.8667).abs() < 0.01);
        assert_eq!(r.machine_busy_pct_max, 99.0);
        assert!((r.saturated_samples_pct - 66.67).abs() < 0.1);
        let notes = r.limits();
        assert_eq!(notes.len(), 2, "{notes:?}");
        let calm = CpuReport::from_samples(2, &[(0.2, 20.0)]);
        assert!(calm.limits().is_empty());
        assert!(CpuReport::from_samples(2, &[]).limits().is_empty());
    }

    #[test]
    fn computes_rates_from_ticks() {
        let a = CpuTicks {
            own: 0,
            busy: 0,
            total: 0,
        };
        let b = CpuTicks {
            own: 100,
            busy: 150,
            total: 200,
        };
        let (own, pct) = sample_between(a, b, Duration::from_secs(1), 100.0);
        assert!((own - 1.0).abs() < 1e-9);
        assert!((pct - 75.0).abs() < 1e-9);
    }
}
