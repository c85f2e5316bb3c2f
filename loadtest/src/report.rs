//! The run report: what a scenario measured, as JSON for scripts and as a summary table
//! for people.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cpu_monitor::CpuReport;
use crate::latency::LatencySummary;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serialize the report: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// Server memory measured around the ramp (`connect --server-pid`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerMemory {
    pub pid: u32,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub sockets: u64,
    /// (after - before) / sockets, in bytes; 0 when no socket was held.
    pub rss_per_socket_bytes: f64,
    /// Open descriptors of the server after the ramp, and its soft limit (0 = unknown).
    #[serde(default)]
    pub fds: u64,
    #[serde(default)]
    pub fd_limit: u64,
    /// (open descriptors after − before) / sockets; 0 when unknown.
    #[serde(default)]
    pub fds_per_socket: f64,
}

impl ServerMemory {
    pub fn new(pid: u32, before_kib: u64, after_kib: u64, sockets: u64) -> Self {
        let per = if sockets > 0 {
            (after_kib.saturating_sub(before_kib) as f64 * 1024.0) / sockets as f64
        } else {
            0.0
        };
        ServerMemory {
            pid,
            rss_before_kib: before_kib,
            rss_after_kib: after_kib,
            sockets,
            rss_per_socket_bytes: per,
            fds: 0,
            fd_limit: 0,
            fds_per_socket: 0.0,
        }
    }

    /// Records the descriptors open before and after the ramp, and the limit.
    pub fn set_fds(&mut self, before: u64, after: u64, limit: u64) {
        self.fds = after;
        self.fd_limit = limit;
        self.fds_per_socket = if self.sockets > 0 {
            after.saturating_sub(before) as f64 / self.sockets as f64
        } else {
            0.0
        };
    }

    /// True when the server had (nearly) used up its open-file limit.
    pub fn at_fd_limit(&self) -> bool {
        self.fd_limit > 0 && self.fds + 16 >= self.fd_limit
    }
}

/// The load generator's machine during the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MachineReport {
    pub nofile_soft: u64,
    pub nofile_hard: u64,
    pub source_addrs: usize,
    pub cpu: CpuReport,
    /// True when something on this machine, not the server, limited the run.
    pub limited_by_machine: bool,
    /// Why, in words.
    pub limits: Vec<String>,
}

/// A fleet's view of the run (`--nodes`): how sockets spread over the nodes, and the
/// AWS calls every node made during the notification phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetReport {
    /// Node URL -> open sockets (`sumu_connections`) after the ramp.
    pub sockets_per_node: BTreeMap<String, u64>,
    /// Sockets whose node was identified (its user on exactly one node, `/api/users`).
    pub sockets_located: u64,
    /// `service.Operation` -> AWS calls of all nodes during the notification phase
    /// (background work included: long polls, heartbeats, the leader's stream reads).
    pub aws_calls: BTreeMap<String, u64>,
    /// Per accepted request and per delivery, summed over operations.
    pub aws_calls_per_request: f64,
    pub aws_calls_per_delivery: f64,
    /// Deliveries whose routing node was known (`--via http` rotates requests over the
    /// nodes), split by whether the socket was on that node.
    pub deliveries_same_node: u64,
    pub deliveries_cross_node: u64,
    /// The nodes' own routing histograms over the notification phase, all nodes
    /// summed: `path=local` / `path=mesh` (`sumu_route_seconds`) and `hop=...`
    /// (`sumu_route_hop_seconds`), each with its count and estimated p50/p99.
    #[serde(default)]
    pub route: BTreeMap<String, crate::nodes::RouteQuantiles>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub tool_version: String,
    pub scenario: String,
    pub target: String,
    pub run_id: String,
    pub started_unix_ms: u64,
    pub elapsed_s: f64,
    /// The settings of the run (flags), for reproducing it.
    pub config: BTreeMap<String, serde_json::Value>,
    /// Latency series by name: connect, delivery, pong, ack.
    pub latencies: BTreeMap<String, LatencySummary>,
    pub counters: BTreeMap<String, u64>,
    pub rates: BTreeMap<String, f64>,
    /// Errors by kind (connect failures, notify failures, lost deliveries, ...).
    pub errors: BTreeMap<String, u64>,
    /// One example message per error kind.
    pub error_samples: BTreeMap<String, String>,
    pub server: Option<ServerMemory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetReport>,
    pub machine: MachineReport,
}

impl RunReport {
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn write_json(&self, path: &Path) -> Result<(), ReportError> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").map_err(|source| ReportError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    /// The human summary: latency table, counters, rates, errors, machine limits.
    pub fn summary_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "sumu-loadtest {} -> {}  ({:.1} s, run {})",
            self.scenario, self.target, self.elapsed_s, self.run_id
        );
        if !self.latencies.is_empty() {
            // Wide enough for `delivery_cross_node`.
            let _ = writeln!(
                out,
                "\n{:<19} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "latency", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
            );
            for (name, s) in &self.latencies {
                let _ = writeln!(
                    out,
                    "{:<19} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
                    name,
                    s.count,
                    ms(s.p50_us),
                    ms(s.p90_us),
                    ms(s.p99_us),
                    ms(s.p999_us),
                    ms(s.max_us)
                );
            }
        }
        if !self.counters.is_empty() {
            let _ = writeln!(out, "\ncounts");
            for (name, value) in &self.counters {
                let _ = writeln!(out, "  {name:<28} {value:>12}");
            }
        }
        if !self.rates.is_empty() {
            let _ = writeln!(out, "\nrates");
            for (name, value) in &self.rates {
                let _ = writeln!(out, "  {name:<28} {value:>12.1}");
            }
        }
        if let Some(server) = &self.server {
            let _ = writeln!(
                out,
                "\nserver pid {}: RSS {} KiB -> {} KiB for {} sockets = {:.0} bytes/socket; \
                 {} of {} file descriptors open ({:.2} per socket)",
                server.pid,
                server.rss_before_kib,
                server.rss_after_kib,
                server.sockets,
                server.rss_per_socket_bytes,
                server.fds,
                server.fd_limit,
                server.fds_per_socket
            );
        }
        if let Some(fleet) = &self.fleet {
            let _ = writeln!(
                out,
                "\nfleet: sockets per node {:?} ({} located)",
                fleet.sockets_per_node, fleet.sockets_located
            );
            let _ = writeln!(
                out,
                "  deliveries same-node {}, cross-node {}; AWS calls {:.2} per request, {:.3} per delivery",
                fleet.deliveries_same_node,
                fleet.deliveries_cross_node,
                fleet.aws_calls_per_request,
                fleet.aws_calls_per_delivery
            );
            for (op, n) in &fleet.aws_calls {
                let _ = writeln!(out, "  {op:<28} {n:>12}");
            }
            if !fleet.route.is_empty() {
                let _ = writeln!(out, "  routing (the nodes' histograms): count, p50, p99 ms");
            }
            for (series, q) in &fleet.route {
                let _ = writeln!(
                    out,
                    "  {series:<28} {:>12} {:>9.1} {:>9.1}",
                    q.count, q.p50_ms, q.p99_ms
                );
            }
        }
        if self.errors.is_empty() {
            let _ = writeln!(out, "\nerrors: none");
        } else {
            let _ = writeln!(out, "\nerrors: {}", self.error_total());
            for (name, value) in &self.errors {
                let sample = self
                    .error_samples
                    .get(name)
                    .map(|s| format!("  e.g. {s}"))
                    .unwrap_or_default();
                let _ = writeln!(out, "  {name:<28} {value:>12}{sample}");
            }
        }
        let cpu = &self.machine.cpu;
        // A run without sockets (sqs-hop) samples no machine figures.
        if cpu.cpus > 0 {
            let _ = writeln!(
                out,
                "\nmachine: {} cpus, load tester {:.2} cores avg ({:.2} max), machine busy {:.0}% avg, \
                 nofile {}, {} source addresses",
                cpu.cpus,
                cpu.own_cores_mean,
                cpu.own_cores_max,
                cpu.machine_busy_pct_mean,
                self.machine.nofile_soft,
                self.machine.source_addrs.max(1)
            );
        }
        if self.machine.limited_by_machine {
            let _ = writeln!(out, "LIMITED BY THIS MACHINE, not the server:");
        }
        for note in &self.machine.limits {
            let _ = writeln!(out, "  - {note}");
        }
        out
    }
}

/// Microseconds as milliseconds with 2 decimals.
pub fn ms(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RunReport {
        let mut r = RunReport {
            scenario: "fanout".into(),
            target: "ws://127.0.0.1:1/push".into(),
            run_id: "r1".into(),
            elapsed_s: 3.25,
            ..Default::default()
        };
        r.latencies.insert(
            "delivery".into(),
            LatencySummary {
                count: 5000,
                min_us: 90,
                mean_us: 900.0,
                p50_us: 1234,
                p90_us: 2000,
                p99_us: 15_500,
                p999_us: 20_000,
                max_us: 21_000,
            },
        );
        r.counters.insert("deliveries".into(), 5000);
        r.rates.insert("deliveries_per_s".into(), 2500.0);
        r
    }

    #[test]
    fn table_has_percentiles_counts_and_rates() {
        let text = sample().summary_table();
        assert!(text.contains("fanout -> ws://127.0.0.1:1/push"), "{text}");
        let row = text.lines().find(|l| l.starts_with("delivery")).unwrap();
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            ["delivery", "5000", "1.23", "2.00", "15.50", "20.00", "21.00"]
        );
        assert!(text.contains("deliveries_per_s"));
        assert!(text.contains("2500.0"));
        assert!(text.contains("errors: none"));
        assert!(!text.contains("LIMITED"));
    }

    #[test]
    fn table_lists_errors_and_machine_limits() {
        let mut r = sample();
        r.errors.insert("EADDRNOTAVAIL".into(), 7);
        r.error_samples
            .insert("EADDRNOTAVAIL".into(), "bind: cannot assign".into());
        r.machine.limited_by_machine = true;
        r.machine.limits.push("out of ports".into());
        let text = r.summary_table();
        assert!(text.contains("errors: 7"));
        assert!(text.contains("e.g. bind: cannot assign"));
        assert!(text.contains("LIMITED BY THIS MACHINE"));
        assert!(text.contains("- out of ports"));
        assert_eq!(r.error_total(), 7);
    }

    #[test]
    fn json_round_trip() {
        let r = sample();
        let dir = std::env::temp_dir().join(format!("sumu-lt-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.json");
        r.write_json(&path).unwrap();
        let back: RunReport =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back, r);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn fd_limit_detection() {
        let mut m = ServerMemory::new(1, 0, 0, 0);
        assert!(!m.at_fd_limit());
        m.fd_limit = 20_000;
        m.fds = 19_990;
        assert!(m.at_fd_limit());
        m.fds = 10_000;
        assert!(!m.at_fd_limit());
        let mut m = ServerMemory::new(1, 0, 0, 1000);
        m.set_fds(20, 2020, 4096);
        assert_eq!((m.fds, m.fd_limit), (2020, 4096));
        assert!((m.fds_per_socket - 2.0).abs() < 1e-9);
    }

    #[test]
    fn rss_per_socket() {
        let m = ServerMemory::new(1, 10_000, 30_000, 10_000);
        assert!((m.rss_per_socket_bytes - 2048.0).abs() < 1e-9);
        assert_eq!(ServerMemory::new(1, 10, 5, 0).rss_per_socket_bytes, 0.0);
        assert_eq!(ServerMemory::new(1, 10, 5, 3).rss_per_socket_bytes, 0.0);
    }
}
