//! The node's open sockets as a CloudWatch metric, what the fleet scales on
//! (the target-tracking policy on sockets per node in
//! `infra/terraform/fleet.tf`). The count is sampled [`SAMPLES`] times a
//! period and published once a period as one statistic set: one
//! `PutMetricData` call per node per period (a minute by default), whatever
//! the number of sockets. Every node reports under the same dimension
//! (`Fleet` = the name prefix), so the metric's `Average` over a period is
//! the mean number of sockets per node, which is what target tracking needs.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit, StatisticSet};
use tokio_util::sync::CancellationToken;

use super::clients::call;
use super::periodic::pause;
use crate::logging::chain;
use crate::metrics::Metrics;

/// The metric's name (Terraform's policy names it too).
pub(crate) const METRIC_NAME: &str = "Sockets";
/// The dimension every node reports under; its value is the name prefix.
pub(crate) const DIMENSION: &str = "Fleet";
/// Samples of the socket count per published datum.
pub(crate) const SAMPLES: u32 = 6;

/// Samples of one period, summarised as CloudWatch's statistic set.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Samples {
    count: u32,
    sum: f64,
    min: f64,
    max: f64,
}

impl Samples {
    pub(crate) fn add(&mut self, value: f64) {
        if self.count == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.count += 1;
        self.sum += value;
    }

    /// The statistic set of the samples so far (none without samples),
    /// leaving the summary empty for the next period.
    pub(crate) fn take(&mut self) -> Option<StatisticSet> {
        let s = std::mem::take(self);
        (s.count > 0).then(|| {
            StatisticSet::builder()
                .sample_count(f64::from(s.count))
                .sum(s.sum)
                .minimum(s.min)
                .maximum(s.max)
                .build()
        })
    }
}

pub(crate) struct SocketsMetric {
    pub(crate) cloudwatch: aws_sdk_cloudwatch::Client,
    /// The node's metrics: its open sockets are sampled from them.
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) namespace: String,
    /// The `Fleet` dimension's value: the name prefix.
    pub(crate) fleet: String,
    /// How often one datum is published.
    pub(crate) every: Duration,
}

impl SocketsMetric {
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut samples = Samples::default();
        let step = self.every / SAMPLES;
        loop {
            for _ in 0..SAMPLES {
                if !pause(&stop, step).await {
                    return;
                }
                samples.add(self.metrics.connections.get() as f64);
            }
            if let Some(set) = samples.take() {
                self.publish(set).await;
            }
        }
    }

    /// One `PutMetricData`; a failure is logged (the next period tries
    /// again, and target tracking treats missing data as no change).
    async fn publish(&self, set: StatisticSet) {
        let datum = MetricDatum::builder()
            .metric_name(METRIC_NAME)
            .dimensions(
                Dimension::builder()
                    .name(DIMENSION)
                    .value(&self.fleet)
                    .build(),
            )
            .unit(StandardUnit::Count)
            .statistic_values(set)
            .build();
        let request = self
            .cloudwatch
            .put_metric_data()
            .namespace(&self.namespace)
            .metric_data(datum)
            .send();
        if let Err(e) = call(&self.metrics, "cloudwatch", "PutMetricData", request).await {
            tracing::warn!(error = %chain(&e), "sockets metric not published");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_becomes_one_statistic_set() {
        let mut s = Samples::default();
        assert!(s.take().is_none(), "no samples, no datum");
        for v in [3.0, 1.0, 8.0] {
            s.add(v);
        }
        let set = s.take().unwrap();
        assert_eq!(
            (set.sample_count(), set.sum(), set.minimum(), set.maximum()),
            (Some(3.0), Some(12.0), Some(1.0), Some(8.0))
        );
        assert!(s.take().is_none(), "taking empties the period");
        s.add(0.0);
        let set = s.take().unwrap();
        assert_eq!((set.minimum(), set.maximum()), (Some(0.0), Some(0.0)));
    }
}
