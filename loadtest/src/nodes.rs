//! The nodes of a fleet as the load tester sees them, each through its own HTTP port
//! (not the balancer): which users it holds (`GET /api/users`, API key), its open
//! sockets and the AWS calls it made (`GET /metrics`). Nothing here needs a node change.
//!
//! Invariant: every request has a timeout; a node that does not answer is an error for
//! that node only, never a hang.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("GET {url} failed: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("GET {url}: unexpected body: {source}")]
    Body {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The figures of one node's `/metrics` the load tester uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeMetrics {
    /// `sumu_connections`: open sockets.
    pub connections: u64,
    /// `sumu_deliveries_total`.
    pub deliveries: u64,
    /// `sumu_aws_calls_total` by `service.Operation`.
    pub aws_calls: BTreeMap<String, u64>,
    /// The routing histograms' cumulative buckets: `path=local`, `hop=lookup`, ...
    /// (`sumu_route_seconds{path}`, `sumu_route_hop_seconds{hop}`) -> upper bound in
    /// microseconds (`u64::MAX` for +Inf) -> count.
    pub route: BTreeMap<String, BTreeMap<u64, u64>>,
}

/// Count and quantiles of one routing histogram over a run, estimated from its
/// buckets (linear inside a bucket, as Prometheus' `histogram_quantile`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RouteQuantiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The `q` quantile (0..1) of cumulative `buckets` (upper bound in us -> count), in ms;
/// a quantile in the +Inf bucket reads as the highest finite bound.
pub fn bucket_quantile(buckets: &BTreeMap<u64, u64>, q: f64) -> f64 {
    let total = buckets.values().copied().max().unwrap_or(0);
    if total == 0 {
        return 0.0;
    }
    let rank = q * total as f64;
    let (mut lower_bound, mut lower_count) = (0u64, 0u64);
    for (&bound, &count) in buckets {
        if count as f64 >= rank {
            if bound == u64::MAX {
                return lower_bound as f64 / 1000.0;
            }
            let in_bucket = (count - lower_count).max(1) as f64;
            let share = (rank - lower_count as f64) / in_bucket;
            return (lower_bound as f64 + share * (bound - lower_bound) as f64) / 1000.0;
        }
        (lower_bound, lower_count) = (bound, count);
    }
    lower_bound as f64 / 1000.0
}

impl NodeMetrics {
    /// Adds another node's counters (a fleet's sum).
    pub fn add(&mut self, other: &NodeMetrics) {
        self.connections += other.connections;
        self.deliveries += other.deliveries;
        for (op, n) in &other.aws_calls {
            *self.aws_calls.entry(op.clone()).or_insert(0) += n;
        }
        for (series, buckets) in &other.route {
            let mine = self.route.entry(series.clone()).or_default();
            for (le, n) in buckets {
                *mine.entry(*le).or_insert(0) += n;
            }
        }
    }

    /// The routing histograms over the run between `before` and `self`, summarised.
    pub fn route_since(&self, before: &NodeMetrics) -> BTreeMap<String, RouteQuantiles> {
        self.route
            .iter()
            .filter_map(|(series, buckets)| {
                let old = before.route.get(series);
                let diff: BTreeMap<u64, u64> = buckets
                    .iter()
                    .map(|(le, n)| {
                        let was = old.and_then(|o| o.get(le)).copied().unwrap_or(0);
                        (*le, n.saturating_sub(was))
                    })
                    .collect();
                let count = diff.values().copied().max().unwrap_or(0);
                (count > 0).then(|| {
                    (
                        series.clone(),
                        RouteQuantiles {
                            count,
                            p50_ms: bucket_quantile(&diff, 0.5),
                            p99_ms: bucket_quantile(&diff, 0.99),
                        },
                    )
                })
            })
            .collect()
    }

    /// AWS calls made between `before` and `self`, per operation (only those that grew).
    pub fn aws_calls_since(&self, before: &NodeMetrics) -> BTreeMap<String, u64> {
        self.aws_calls
            .iter()
            .filter_map(|(op, n)| {
                let d = n.saturating_sub(before.aws_calls.get(op).copied().unwrap_or(0));
                (d > 0).then(|| (op.clone(), d))
            })
            .collect()
    }
}

fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    labels.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

/// Parses the Prometheus text of a node's `/metrics`.
pub fn parse_metrics(text: &str) -> NodeMetrics {
    let mut m = NodeMetrics::default();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let value = value.max(0.0) as u64;
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        match name {
            "sumu_connections" => m.connections = value,
            "sumu_deliveries_total" => m.deliveries = value,
            "sumu_route_seconds_bucket" | "sumu_route_hop_seconds_bucket" => {
                let key = label(labels, "path")
                    .map(|p| format!("path={p}"))
                    .or_else(|| label(labels, "hop").map(|h| format!("hop={h}")));
                let le = label(labels, "le").and_then(|le| {
                    if le == "+Inf" {
                        Some(u64::MAX)
                    } else {
                        le.parse::<f64>().ok().map(|s| (s * 1e6).round() as u64)
                    }
                });
                if let (Some(key), Some(le)) = (key, le) {
                    *m.route.entry(key).or_default().entry(le).or_insert(0) += value;
                }
            }
            "sumu_aws_calls_total" => {
                if let (Some(service), Some(op)) =
                    (label(labels, "service"), label(labels, "operation"))
                {
                    *m.aws_calls.entry(format!("{service}.{op}")).or_insert(0) += value;
                }
            }
            _ => {}
        }
    }
    m
}

#[derive(Deserialize)]
struct Users {
    users: Vec<String>,
}

/// Talks to the nodes of a fleet directly.
#[derive(Debug, Clone)]
pub struct Nodes {
    client: reqwest::Client,
    pub urls: Vec<String>,
    api_key: String,
}

impl Nodes {
    pub fn new(urls: Vec<String>, api_key: &str) -> Result<Self, NodeError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|source| NodeError::Transport {
                url: String::new(),
                source,
            })?;
        Ok(Nodes {
            client,
            urls: urls
                .into_iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            api_key: api_key.to_string(),
        })
    }

    async fn get(&self, url: String, key: bool) -> Result<String, NodeError> {
        let mut request = self.client.get(&url);
        if key {
            request = request.bearer_auth(&self.api_key);
        }
        let response = request
            .send()
            .await
            .map_err(|source| NodeError::Transport {
                url: url.clone(),
                source,
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(NodeError::Status {
                url,
                status: status.as_u16(),
            });
        }
        response
            .text()
            .await
            .map_err(|source| NodeError::Transport { url, source })
    }

    /// `/metrics` of node `i`.
    pub async fn metrics(&self, i: usize) -> Result<NodeMetrics, NodeError> {
        let text = self.get(format!("{}/metrics", self.urls[i]), false).await?;
        Ok(parse_metrics(&text))
    }

    /// `/metrics` of every node (an error for a node that did not answer).
    pub async fn all_metrics(&self) -> Vec<Result<NodeMetrics, NodeError>> {
        let calls = (0..self.urls.len()).map(|i| self.metrics(i));
        futures_util::future::join_all(calls).await
    }

    /// The users connected to node `i`.
    pub async fn users(&self, i: usize) -> Result<Vec<String>, NodeError> {
        let url = format!("{}/api/users", self.urls[i]);
        let text = self.get(url.clone(), true).await?;
        serde_json::from_str::<Users>(&text)
            .map(|u| u.users)
            .map_err(|source| NodeError::Body { url, source })
    }

    /// Which node holds each user: user -> node index, for users found on exactly one
    /// node (a user with sockets on several nodes is left out). Nodes that did not
    /// answer are skipped.
    pub async fn user_locations(&self) -> HashMap<String, usize> {
        let calls = (0..self.urls.len()).map(|i| self.users(i));
        let answers = futures_util::future::join_all(calls).await;
        let mut seen: HashMap<String, Option<usize>> = HashMap::new();
        for (i, answer) in answers.into_iter().enumerate() {
            for user in answer.unwrap_or_default() {
                seen.entry(user)
                    .and_modify(|at| *at = None)
                    .or_insert(Some(i));
            }
        }
        seen.into_iter()
            .filter_map(|(user, at)| at.map(|i| (user, i)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"# HELP sumu_connections Open sockets
# TYPE sumu_connections gauge
sumu_connections 42
sumu_deliveries_total 7
sumu_aws_calls_total{operation="PutItem",service="dynamodb"} 10
sumu_aws_calls_total{operation="ReceiveMessage",service="sqs"} 3
sumu_aws_calls_total{service="sqs",operation="ReceiveMessage"} 2
sumu_aws_call_seconds_bucket{operation="PutItem",service="dynamodb",le="0.005"} 9
"#;

    #[test]
    fn parses_node_metrics() {
        let m = parse_metrics(SAMPLE);
        assert_eq!(m.connections, 42);
        assert_eq!(m.deliveries, 7);
        assert_eq!(m.aws_calls["dynamodb.PutItem"], 10);
        assert_eq!(m.aws_calls["sqs.ReceiveMessage"], 5);
        assert_eq!(m.aws_calls.len(), 2);
    }

    #[test]
    fn routing_histograms_become_quantiles_of_the_run() {
        let text = |n: [u64; 4]| {
            format!(
                "sumu_route_hop_seconds_bucket{{hop=\"inbox_wait\",le=\"0.01\"}} {}\n\
                 sumu_route_hop_seconds_bucket{{hop=\"inbox_wait\",le=\"0.05\"}} {}\n\
                 sumu_route_hop_seconds_bucket{{hop=\"inbox_wait\",le=\"0.1\"}} {}\n\
                 sumu_route_hop_seconds_bucket{{hop=\"inbox_wait\",le=\"+Inf\"}} {}\n",
                n[0], n[1], n[2], n[3]
            )
        };
        let before = parse_metrics(&text([5, 5, 5, 5]));
        // 100 more: 10 under 10 ms, 80 in 10-50 ms, 10 in 50-100 ms.
        let after = parse_metrics(&text([15, 95, 105, 105]));
        let q = &after.route_since(&before)["hop=inbox_wait"];
        assert_eq!(q.count, 100);
        // The 50th of 100 is the 40th of the 80 in (10, 50] ms: 10 + 40/80 * 40 = 30 ms.
        assert!((q.p50_ms - 30.0).abs() < 1e-9, "{q:?}");
        // The 99th is the 9th of the 10 in (50, 100]: 50 + 9/10 * 50 = 95 ms.
        assert!((q.p99_ms - 95.0).abs() < 1e-9, "{q:?}");
        assert!(before.route_since(&before).is_empty());
        let mut inf = BTreeMap::new();
        inf.insert(10_000, 0);
        inf.insert(u64::MAX, 4);
        assert_eq!(bucket_quantile(&inf, 0.5), 10.0);
    }

    #[test]
    fn sums_and_differences() {
        let before = parse_metrics(SAMPLE);
        let mut after = before.clone();
        after.add(&parse_metrics(
            "sumu_aws_calls_total{operation=\"Publish\",service=\"sns\"} 4\nsumu_connections 1",
        ));
        assert_eq!(after.connections, 43);
        let d = after.aws_calls_since(&before);
        assert_eq!(d.len(), 1);
        assert_eq!(d["sns.Publish"], 4);
    }
}
