//! Prometheus metrics, served at `/metrics`.

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub connections: IntGauge,
    pub connections_opened: IntCounter,
    pub connections_closed: IntCounterVec,
    pub frames_in: IntCounterVec,
    pub frames_out: IntCounter,
    pub deliveries: IntCounter,
    pub notifications: IntCounterVec,
    pub auth_failures: IntCounterVec,
    pub errors: IntCounterVec,
    pub aws_calls: IntCounterVec,
    pub aws_errors: IntCounterVec,
    pub aws_latency: HistogramVec,
    pub presence_lag_ms: IntGauge,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

impl Metrics {
    fn new() -> Metrics {
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
        let frames_out = IntCounter::new("sumu_frames_out_total", "Text frames sent to clients")
            .expect("valid metric");
        registry
            .register(Box::new(frames_out.clone()))
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
        Metrics {
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
            frames_out,
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

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Times one AWS call and counts it, its errors and its latency.
pub async fn aws_call<T, E, F>(
    service: &'static str,
    operation: &'static str,
    fut: F,
) -> Result<T, E>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    let m = &*METRICS;
    let start = std::time::Instant::now();
    let result = fut.await;
    m.aws_calls.with_label_values(&[service, operation]).inc();
    m.aws_latency
        .with_label_values(&[service, operation])
        .observe(start.elapsed().as_secs_f64());
    if result.is_err() {
        m.aws_errors.with_label_values(&[service, operation]).inc();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        METRICS.auth_failures.with_label_values(&["expired"]).inc();
        let text = METRICS.render();
        assert!(text.contains("sumu_auth_failures_total{reason=\"expired\"}"));
        assert!(text.contains("sumu_connections "));
    }
}
