//! The markdown comparison written at the end of `bench/run.sh`: absolute figures of each
//! peer per scenario (read from `DIR/PEER/SCENARIO.json` run reports) and the ratio of the
//! first peer (sumu) to each other peer.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum BenchReportError {
    #[error("no peer given")]
    NoPeers,
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// One row of the table: where the figure is in which scenario's report.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub label: &'static str,
    /// Scenario file stem (`connect-small` reads `PEER/connect-small.json`). `{n}` in the
    /// label becomes the run's socket count (`config.sockets` of the first peer's report).
    pub scenario: &'static str,
    /// JSON pointer into the report; a trailing `/*` sums the values of that object.
    pub pointer: &'static str,
    pub scale: f64,
    pub decimals: usize,
    pub better: Better,
}

const fn metric(
    label: &'static str,
    scenario: &'static str,
    pointer: &'static str,
    scale: f64,
    decimals: usize,
    better: Better,
) -> Metric {
    Metric {
        label,
        scenario,
        pointer,
        scale,
        decimals,
        better,
    }
}

/// The rows of the bench report, in order.
pub const METRICS: &[Metric] = &[
    metric(
        "connect {n}: held",
        "connect-small",
        "/counters/held_at_end",
        1.0,
        0,
        Better::Higher,
    ),
    metric(
        "connect {n}: server RSS per socket (KiB)",
        "connect-small",
        "/server/rss_per_socket_bytes",
        1.0 / 1024.0,
        1,
        Better::Lower,
    ),
    metric(
        "connect {n}: server descriptors per socket",
        "connect-small",
        "/server/fds_per_socket",
        1.0,
        2,
        Better::Lower,
    ),
    metric(
        "connect {n}: connects/s",
        "connect-small",
        "/rates/connects_per_s",
        1.0,
        0,
        Better::Higher,
    ),
    metric(
        "connect {n}: connect p50 (ms)",
        "connect-small",
        "/latencies/connect/p50_us",
        0.001,
        2,
        Better::Lower,
    ),
    metric(
        "connect {n}: connect p99 (ms)",
        "connect-small",
        "/latencies/connect/p99_us",
        0.001,
        2,
        Better::Lower,
    ),
    metric(
        "connect {n}: held",
        "connect-large",
        "/counters/held_at_end",
        1.0,
        0,
        Better::Higher,
    ),
    metric(
        "connect {n}: server RSS per socket (KiB)",
        "connect-large",
        "/server/rss_per_socket_bytes",
        1.0 / 1024.0,
        1,
        Better::Lower,
    ),
    metric(
        "connect {n}: server RSS total (MiB)",
        "connect-large",
        "/server/rss_after_kib",
        1.0 / 1024.0,
        0,
        Better::Lower,
    ),
    metric(
        "broadcast to {n}: delivery p50 (ms)",
        "broadcast",
        "/latencies/delivery/p50_us",
        0.001,
        2,
        Better::Lower,
    ),
    metric(
        "broadcast to {n}: delivery p99 (ms)",
        "broadcast",
        "/latencies/delivery/p99_us",
        0.001,
        2,
        Better::Lower,
    ),
    metric(
        "broadcast to {n}: delivery max (ms)",
        "broadcast",
        "/latencies/delivery/max_us",
        0.001,
        2,
        Better::Lower,
    ),
    metric(
        "broadcast to {n}: lost deliveries",
        "broadcast",
        "/counters/lost",
        1.0,
        0,
        Better::Lower,
    ),
    metric(
        "broadcast burst to {n}: deliveries/s",
        "broadcast-burst",
        "/rates/deliveries_per_s",
        1.0,
        0,
        Better::Higher,
    ),
    metric(
        "broadcast burst to {n}: server CPU per delivery (µs)",
        "broadcast-burst",
        "/rates/server_cpu_us_per_delivery",
        1.0,
        2,
        Better::Lower,
    ),
    metric(
        "broadcast burst to {n}: of which in the kernel (µs)",
        "broadcast-burst",
        "/rates/server_sys_cpu_us_per_delivery",
        1.0,
        2,
        Better::Lower,
    ),
    metric(
        "broadcast burst to {n}: deliveries per server CPU-second",
        "broadcast-burst",
        "/rates/deliveries_per_server_cpu_s",
        1.0,
        0,
        Better::Higher,
    ),
    metric(
        "broadcast burst to {n}: load tester CPU per delivery (µs)",
        "broadcast-burst",
        "/rates/loadtest_cpu_us_per_delivery",
        1.0,
        2,
        Better::Lower,
    ),
    metric(
        "broadcast burst to {n}: delivery p50 (ms)",
        "broadcast-burst",
        "/latencies/delivery/p50_us",
        0.001,
        2,
        Better::Lower,
    ),
    metric(
        "broadcast burst to {n}: delivery p99 (ms)",
        "broadcast-burst",
        "/latencies/delivery/p99_us",
        0.001,
        2,
        Better::Lower,
    ),
    metric(
        "broadcast burst to {n}: lost deliveries",
        "broadcast-burst",
        "/counters/lost",
        1.0,
        0,
        Better::Lower,
    ),
    metric(
        "RS256 connect {n}: connects/s",
        "connect-rs256",
        "/rates/connects_per_s",
        1.0,
        0,
        Better::Higher,
    ),
    metric(
        "RS256 connect {n}: connect p99 (ms)",
        "connect-rs256",
        "/latencies/connect/p99_us",
        0.001,
        2,
        Better::Lower,
    ),
];

/// Scenario stems read by the report (for the error and limit notes).
pub const SCENARIOS: &[&str] = &[
    "connect-small",
    "connect-large",
    "broadcast",
    "broadcast-burst",
    "connect-rs256",
];

/// Reads one figure from a report.
pub fn extract(report: &Value, pointer: &str) -> Option<f64> {
    if let Some(object) = pointer.strip_suffix("/*") {
        let map = report.pointer(object)?.as_object()?;
        return Some(map.values().filter_map(Value::as_f64).sum());
    }
    report.pointer(pointer)?.as_f64()
}

fn load(dir: &Path, peer: &str, scenario: &str) -> Option<Value> {
    let text = std::fs::read_to_string(dir.join(peer).join(format!("{scenario}.json"))).ok()?;
    serde_json::from_str(&text).ok()
}

fn format_value(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) => format!("{v:.decimals$}"),
        None => "n/a".into(),
    }
}

/// `a / b` as `1.23×`, or n/a.
pub fn format_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => format!("{:.2}×", a / b),
        (Some(a), Some(b)) if a == 0.0 && b == 0.0 => "=".into(),
        _ => "n/a".into(),
    }
}

/// Renders the markdown report from the run reports under `dir`.
pub fn render(dir: &Path, peers: &[String], preamble: &str) -> Result<String, BenchReportError> {
    let first = peers.first().ok_or(BenchReportError::NoPeers)?;
    let mut out = String::new();
    let _ = writeln!(out, "# sumu benchmark: {}\n", peers.join(" vs "));
    if !preamble.is_empty() {
        let _ = writeln!(out, "{preamble}\n");
    }
    let _ = write!(out, "| metric | better |");
    for p in peers {
        let _ = write!(out, " {p} |");
    }
    for p in &peers[1..] {
        let _ = write!(out, " {first} ÷ {p} |");
    }
    let _ = write!(out, "\n|---|:-:|");
    for _ in 0..(peers.len() * 2 - 1) {
        let _ = write!(out, "---:|");
    }
    out.push('\n');
    for m in METRICS {
        let values: Vec<Option<f64>> = peers
            .iter()
            .map(|p| {
                load(dir, p, m.scenario)
                    .and_then(|r| extract(&r, m.pointer))
                    .map(|v| v * m.scale)
            })
            .collect();
        let sockets = peers
            .iter()
            .find_map(|p| {
                load(dir, p, m.scenario)
                    .and_then(|r| r.pointer("/config/sockets").and_then(Value::as_u64))
            })
            .map(|n| format!("{n} sockets"))
            .unwrap_or_else(|| m.scenario.to_string());
        let label = m.label.replace("{n}", &sockets);
        let arrow = match m.better {
            Better::Higher => "↑",
            Better::Lower => "↓",
        };
        let _ = write!(out, "| {label} | {arrow} |");
        for v in &values {
            let _ = write!(out, " {} |", format_value(*v, m.decimals));
        }
        for v in &values[1..] {
            let _ = write!(out, " {} |", format_ratio(values[0], *v));
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "\n↑ higher is better, ↓ lower is better; a ratio column is {first}'s figure divided by the peer's."
    );

    let mut notes = Vec::new();
    for p in peers {
        for s in SCENARIOS {
            let Some(r) = load(dir, p, s) else {
                notes.push(format!(
                    "- {p} / {s}: no result (run failed or skipped; see the logs in out/)"
                ));
                continue;
            };
            if let Some(errors) = r.pointer("/errors").and_then(Value::as_object) {
                if !errors.is_empty() {
                    let list: Vec<String> =
                        errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    notes.push(format!("- {p} / {s}: errors {}", list.join(", ")));
                }
            }
            if let Some(limits) = r.pointer("/machine/limits").and_then(Value::as_array) {
                for l in limits.iter().filter_map(Value::as_str) {
                    notes.push(format!("- {p} / {s}: machine limit: {l}"));
                }
            }
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "\n## Errors and machine limits\n");
        for n in notes {
            let _ = writeln!(out, "{n}");
        }
    }
    Ok(out)
}

pub fn write(
    dir: &Path,
    peers: &[String],
    preamble: &str,
    output: &Path,
) -> Result<(), BenchReportError> {
    let text = render(dir, peers, preamble)?;
    std::fs::write(output, text).map_err(|source| BenchReportError::Write {
        path: output.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extracts_pointers_and_sums() {
        let r = json!({"rates": {"connects_per_s": 1500.5}, "errors": {"a": 2, "b": 3}});
        assert_eq!(extract(&r, "/rates/connects_per_s"), Some(1500.5));
        assert_eq!(extract(&r, "/errors/*"), Some(5.0));
        assert_eq!(extract(&r, "/nope"), None);
    }

    #[test]
    fn ratios() {
        assert_eq!(format_ratio(Some(3.0), Some(2.0)), "1.50×");
        assert_eq!(format_ratio(Some(3.0), None), "n/a");
        assert_eq!(format_ratio(Some(3.0), Some(0.0)), "n/a");
        assert_eq!(format_ratio(Some(0.0), Some(0.0)), "=");
    }

    #[test]
    fn renders_table_with_ratios_and_missing_runs() {
        let dir = std::env::temp_dir().join(format!("sumu-lt-bench-{}", std::process::id()));
        for (peer, rate, p50) in [("sumu", 4000.0, 2000), ("ws-node", 2000.0, 4000)] {
            std::fs::create_dir_all(dir.join(peer)).unwrap();
            let report = json!({
                "rates": {"deliveries_per_s": rate},
                "latencies": {"delivery": {"p50_us": p50, "p99_us": p50 * 3, "max_us": p50 * 5}},
                "counters": {"lost": 0},
                "config": {"sockets": 10000},
                "errors": {},
                "machine": {"limits": ["cpu saturated"]}
            });
            for scenario in ["broadcast", "broadcast-burst"] {
                std::fs::write(
                    dir.join(peer).join(format!("{scenario}.json")),
                    report.to_string(),
                )
                .unwrap();
            }
        }
        let peers = vec![
            "sumu".to_string(),
            "ws-node".to_string(),
            "peer-min".to_string(),
        ];
        let md = render(&dir, &peers, "machine: test").unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let row = md
            .lines()
            .find(|l| l.starts_with("| broadcast burst to 10000 sockets: deliveries/s"))
            .unwrap();
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // | label | arrow | sumu | ws-node | peer-min | sumu÷ws-node | sumu÷peer-min |
        assert_eq!(
            &cells[1..8],
            [
                "broadcast burst to 10000 sockets: deliveries/s",
                "↑",
                "4000",
                "2000",
                "n/a",
                "2.00×",
                "n/a"
            ]
        );
        let p50 = md
            .lines()
            .find(|l| l.starts_with("| broadcast to 10000 sockets: delivery p50"))
            .unwrap();
        assert!(
            p50.contains("| 2.00 | 4.00 |") && p50.contains("0.50×"),
            "{p50}"
        );
        assert!(md.contains("machine: test"));
        // No report of the scenario at all: the label names the scenario instead.
        assert!(md.contains("| connect connect-small: held |"), "{md}");
        assert!(md.contains("peer-min / broadcast: no result"));
        assert!(md.contains("sumu / broadcast: machine limit: cpu saturated"));
        assert!(md.contains(
            "| metric | better | sumu | ws-node | peer-min | sumu ÷ ws-node | sumu ÷ peer-min |"
        ));
    }
}
