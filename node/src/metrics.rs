//! Prometheus metrics, served at `/metrics`: one set per node, each metric
//! registered once in the node's own registry under the names node/README.md's
//! metrics table lists. `serve` makes the set and hands it to whatever
//! counts (hub, sessions, HTTP, engine): nothing reaches a process-wide
//! registry, so nodes served in one process (the in-process tests) count
//! apart, exactly as separate processes do.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub(crate) struct Metrics {
    registry: Registry,
    pub(crate) connections: IntGauge,
    pub(crate) connections_opened: IntCounter,
    pub(crate) connections_closed: IntCounterVec,
    pub(crate) frames_in: IntCounterVec,
    pub(crate) deliveries: IntCounter,
    pub(crate) notifications: IntCounterVec,
    pub(crate) auth_failures: IntCounterVec,
    pub(crate) limited: IntCounterVec,
    /// TLS connections closed before their handshake was done.
    pub(crate) tls_refused: IntCounterVec,
    /// Client `publish`/`send` frames answered with an error frame.
    pub(crate) client_refused: IntCounterVec,
    pub(crate) errors: IntCounterVec,
    pub(crate) aws_calls: IntCounterVec,
    pub(crate) aws_errors: IntCounterVec,
    pub(crate) aws_latency: HistogramVec,
    pub(crate) presence_lag_ms: IntGauge,
    pub(crate) recoveries: IntCounterVec,
    pub(crate) recovery_replayed: IntCounterVec,
    pub(crate) recovery_duplicates: IntCounter,
    pub(crate) recovery_gap_fills: IntCounterVec,
    pub(crate) history_write_failures: IntCounter,
    /// Routing start at the router -> payload handed to this node's
    /// sockets, by path (`local`: at the router; `mesh`: on the receiver).
    pub(crate) route_seconds: HistogramVec,
    /// One hop of a notification request's path (see [`Hop`]).
    pub(crate) route_hop_seconds: HistogramVec,
}

/// The hops of a notification request through the fleet, the labels of
/// `sumu_route_hop_seconds` (node/README.md's metrics table says what each spans).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Hop {
    /// SentTimestamp of the request -> received from the notifications queue.
    QueueWait,
    /// The Queries of the target users' connection rows.
    Lookup,
    /// One node's share sent to its inbox (SendMessage).
    InboxSend,
    /// A broadcast's publish to the mesh topic.
    MeshPublish,
    /// SentTimestamp of a mesh message -> received from this node's inbox.
    InboxWait,
    /// Handing the payload to the router's own sockets.
    DeliverLocal,
    /// Handing a mesh message's payload to this node's sockets.
    DeliverMesh,
}

impl Hop {
    fn label(self) -> &'static str {
        match self {
            Hop::QueueWait => "queue_wait",
            Hop::Lookup => "lookup",
            Hop::InboxSend => "inbox_send",
            Hop::MeshPublish => "mesh_publish",
            Hop::InboxWait => "inbox_wait",
            Hop::DeliverLocal => "deliver_local",
            Hop::DeliverMesh => "deliver_mesh",
        }
    }
}

/// The two paths a notification takes to a socket.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RoutePath {
    /// Delivered by the node that routed the request.
    Local,
    /// Delivered by another node, from its inbox.
    Mesh,
}

/// Buckets of the routing histograms: fine where one SQS hop sits (AWS:
/// ~10 ms; the emulator: 0-100 ms), coarse up to a retried request.
const ROUTE_BUCKETS: [f64; 21] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5,
    2.0, 3.0, 5.0, 10.0, 20.0,
];

impl Metrics {
    pub(crate) fn hop(&self, hop: Hop, took: std::time::Duration) {
        self.route_hop_seconds
            .with_label_values(&[hop.label()])
            .observe(took.as_secs_f64());
    }

    /// A hop measured between two wall-clock stamps in ms (SQS's
    /// SentTimestamp, the router's `routed_at`); a clock step back counts 0.
    pub(crate) fn hop_since_ms(&self, hop: Hop, since_ms: u64, now_ms: u64) {
        self.hop(hop, ms_between(since_ms, now_ms));
    }

    pub(crate) fn route(&self, path: RoutePath, took: std::time::Duration) {
        let label = match path {
            RoutePath::Local => "local",
            RoutePath::Mesh => "mesh",
        };
        self.route_seconds
            .with_label_values(&[label])
            .observe(took.as_secs_f64());
    }
}

/// `now_ms - since_ms`, 0 when the clocks disagree the other way.
pub(crate) fn ms_between(since_ms: u64, now_ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(now_ms.saturating_sub(since_ms))
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

impl Metrics {
    /// A fresh set, all zero, in a registry of its own.
    pub(crate) fn new() -> Metrics {
        let registry = Registry::new();
        let connections =
            IntGauge::new("sumu_connections", "Open WebSocket connections").expect("valid metric");
        registry
            .register(Box::new(connections.clone()))
            .expect("unique metric");
        let connections_opened =
            IntCounter::new("sumu_connections_opened_total", "Sockets accepted")
                .expect("valid metric");
        registry
            .register(Box::new(connections_opened.clone()))
            .expect("unique metric");
        let deliveries = IntCounter::new(
            "sumu_deliveries_total",
            "Notification payloads handed to local sockets",
        )
        .expect("valid metric");
        registry
            .register(Box::new(deliveries.clone()))
            .expect("unique metric");
        let aws_latency = HistogramVec::new(
            HistogramOpts::new("sumu_aws_call_seconds", "Latency of AWS calls").buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 20.0,
            ]),
            &["service", "operation"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(aws_latency.clone()))
            .expect("unique metric");
        let presence_lag_ms = IntGauge::new(
            "sumu_presence_stream_lag_ms",
            "Leader only: age of the newest stream record read (0 when caught up)",
        )
        .expect("valid metric");
        registry
            .register(Box::new(presence_lag_ms.clone()))
            .expect("unique metric");
        let recovery_duplicates = IntCounter::new(
            "sumu_recovery_duplicates_dropped_total",
            "Live copies a recovering socket already had (a request routed twice), dropped by position",
        )
        .expect("valid metric");
        registry
            .register(Box::new(recovery_duplicates.clone()))
            .expect("unique metric");
        let history_write_failures = IntCounter::new(
            "sumu_history_write_failures_total",
            "Notification requests whose recording in the recovery history failed (their routing failed and is retried)",
        )
        .expect("valid metric");
        registry
            .register(Box::new(history_write_failures.clone()))
            .expect("unique metric");
        let route_seconds = HistogramVec::new(
            HistogramOpts::new(
                "sumu_route_seconds",
                "Notification routing start at the router -> payload handed to this node's sockets, by path",
            )
            .buckets(ROUTE_BUCKETS.to_vec()),
            &["path"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(route_seconds.clone()))
            .expect("unique metric");
        let route_hop_seconds = HistogramVec::new(
            HistogramOpts::new(
                "sumu_route_hop_seconds",
                "One hop of a notification request through the fleet",
            )
            .buckets(ROUTE_BUCKETS.to_vec()),
            &["hop"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(route_hop_seconds.clone()))
            .expect("unique metric");
        Metrics {
            route_seconds,
            route_hop_seconds,
            recoveries: counter_vec(
                &registry,
                "sumu_recoveries_total",
                "Recovering sockets' resumes, by outcome and failure code",
                &["outcome", "code"],
            ),
            recovery_replayed: counter_vec(
                &registry,
                "sumu_recovery_replayed_total",
                "Notifications replayed from history, by phase",
                &["phase"],
            ),
            recovery_duplicates,
            recovery_gap_fills: counter_vec(
                &registry,
                "sumu_recovery_gap_fills_total",
                "Gaps in a recovering socket's live stream filled from history, by outcome",
                &["outcome"],
            ),
            history_write_failures,
            presence_lag_ms,
            connections,
            connections_opened,
            connections_closed: counter_vec(
                &registry,
                "sumu_connections_closed_total",
                "Sockets closed, by reason",
                &["reason"],
            ),
            frames_in: counter_vec(
                &registry,
                "sumu_frames_in_total",
                "Client frames received, by route",
                &["route"],
            ),
            deliveries,
            notifications: counter_vec(
                &registry,
                "sumu_notifications_total",
                "Notification requests, by source and outcome",
                &["source", "outcome"],
            ),
            auth_failures: counter_vec(
                &registry,
                "sumu_auth_failures_total",
                "Refused upgrades, by reason",
                &["reason"],
            ),
            limited: counter_vec(
                &registry,
                "sumu_upgrades_limited_total",
                "Upgrades refused by a socket limit, by reason",
                &["reason"],
            ),
            tls_refused: counter_vec(
                &registry,
                "sumu_tls_refused_total",
                "TLS connections closed before their handshake was done, by reason",
                &["reason"],
            ),
            client_refused: counter_vec(
                &registry,
                "sumu_client_messages_refused_total",
                "Client publish/send frames answered with an error frame, by reason",
                &["reason"],
            ),
            errors: counter_vec(&registry, "sumu_errors_total", "Errors, by kind", &["kind"]),
            aws_calls: counter_vec(
                &registry,
                "sumu_aws_calls_total",
                "AWS calls",
                &["service", "operation"],
            ),
            aws_errors: counter_vec(
                &registry,
                "sumu_aws_errors_total",
                "Failed AWS calls",
                &["service", "operation"],
            ),
            aws_latency,
            registry,
        }
    }

    /// The node's metrics in Prometheus' text format.
    pub(crate) fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::new();
        metrics.auth_failures.with_label_values(&["expired"]).inc();
        let text = metrics.render();
        assert!(text.contains("sumu_auth_failures_total{reason=\"expired\"}"));
        assert!(text.contains("sumu_connections "));
    }

    #[test]
    fn hops_and_paths_are_labelled_and_clamped() {
        let metrics = Metrics::new();
        metrics.hop_since_ms(Hop::InboxWait, 1_000, 1_040);
        metrics.hop_since_ms(Hop::QueueWait, 2_000, 1_000);
        metrics.route(RoutePath::Mesh, std::time::Duration::from_millis(3));
        let text = metrics.render();
        assert!(text.contains("sumu_route_hop_seconds_bucket{hop=\"inbox_wait\",le=\"0.05\"} 1"));
        assert!(text.contains("sumu_route_hop_seconds_bucket{hop=\"queue_wait\",le=\"0.001\"} 1"));
        assert!(text.contains("sumu_route_seconds_count{path=\"mesh\"} 1"));
        assert_eq!(ms_between(5, 3), std::time::Duration::ZERO);
    }

    #[test]
    fn two_sets_count_apart() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.connections.set(3);
        a.connections_closed.with_label_values(&["client"]).inc();
        let (a, b) = (a.render(), b.render());
        assert!(a.contains("sumu_connections 3"), "{a}");
        assert!(b.contains("sumu_connections 0"), "{b}");
        assert!(!b.contains("reason=\"client\""), "{b}");
    }
}
