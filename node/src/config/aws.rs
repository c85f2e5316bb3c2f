//! The aws engine's settings: endpoints, region, resource names, the
//! cluster's timing (heartbeat, node timeout, leader lease), batching and
//! CloudWatch metrics. Invariant: every timing leaves room for a missed
//! beat (lease and node timeout more than twice their periods), and the
//! node-wide output budget holds one largest message.

use std::time::Duration;

use super::limits::Limits;
use super::options::{secs, ConfigError, Options};

/// Endpoint overrides of single AWS services (`--aws-service-endpoints`):
/// each wins over [`AwsConfig::endpoint`] for its service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceEndpoints {
    pub dynamodb: Option<String>,
    pub dynamodbstreams: Option<String>,
    pub sns: Option<String>,
    pub sqs: Option<String>,
    pub cloudwatch: Option<String>,
}

impl ServiceEndpoints {
    /// Parses `SERVICE=URL` items; an unknown service, a repeated one or an
    /// item without `=` is an error.
    fn parse(items: Vec<String>) -> Result<ServiceEndpoints, String> {
        let mut out = ServiceEndpoints::default();
        for item in items {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let Some((service, url)) = item.split_once('=') else {
                return Err(format!(
                    "--aws-service-endpoints: {item:?} is not SERVICE=URL"
                ));
            };
            let (service, url) = (service.trim(), url.trim());
            if url.is_empty() {
                return Err(format!("--aws-service-endpoints: no URL for {service}"));
            }
            let slot = match service {
                "dynamodb" => &mut out.dynamodb,
                "dynamodbstreams" => &mut out.dynamodbstreams,
                "sns" => &mut out.sns,
                "sqs" => &mut out.sqs,
                "cloudwatch" => &mut out.cloudwatch,
                other => {
                    return Err(format!(
                        "--aws-service-endpoints: unknown service {other:?} (dynamodb, dynamodbstreams, sns, sqs, cloudwatch)"
                    ))
                }
            };
            if slot.replace(url.to_string()).is_some() {
                return Err(format!("--aws-service-endpoints: {service} given twice"));
            }
        }
        Ok(out)
    }
}

#[derive(Debug, Clone)]
pub struct AwsConfig {
    pub endpoint: Option<String>,
    pub service_endpoints: ServiceEndpoints,
    pub region: Option<String>,
    pub name_prefix: String,
    pub connections_table: String,
    pub cluster_table: String,
    pub messages_topic_arn: Option<String>,
    pub messages_queue_url: Option<String>,
    pub notifications_queue_url: Option<String>,
    pub mesh_topic_arn: Option<String>,
    pub heartbeat: Duration,
    pub node_timeout: Duration,
    /// None: no CloudWatch metric.
    pub metrics_namespace: Option<String>,
    /// How often the Sockets metric is published.
    pub metrics_interval: Duration,
    pub notification_pollers: usize,
    pub max_receive_count: u32,
    pub batch_linger: Duration,
    /// Bytes of client messages waiting for AWS at once, node-wide.
    pub max_output_bytes_in_flight: usize,
    /// How long a socket's connection row may take to be written.
    pub register_timeout: Duration,
    /// The visibility timeout of a received notification request.
    pub notification_visibility: Duration,
    /// The leader lease's length and renewal period.
    pub leader_lease: Duration,
    pub leader_renew: Duration,
    /// The recovery window's history table.
    pub history_table: String,
    /// Drills only: the pause between the steps of a reap.
    pub reap_step_pause: Duration,
}

/// Bytes of client messages a node lets wait for AWS at once by default:
/// 512 messages of the largest default size (128 KiB), far more small ones.
pub const DEFAULT_MAX_OUTPUT_BYTES_IN_FLIGHT: usize = 64 << 20;

/// The aws engine's settings of `o`, checked against the socket `limits`.
pub(super) fn resolve_aws(o: &Options, limits: &Limits) -> Result<AwsConfig, ConfigError> {
    let prefix = o.name_prefix.clone().unwrap_or_else(|| "Sumu".to_string());
    let service_endpoints =
        ServiceEndpoints::parse(o.aws_service_endpoints.clone().unwrap_or_default())
            .map_err(ConfigError::Invalid)?;
    let aws = AwsConfig {
        endpoint: o.aws_endpoint.clone().filter(|s| !s.is_empty()),
        service_endpoints,
        region: o.aws_region.clone().filter(|s| !s.is_empty()),
        connections_table: o
            .connections_table
            .clone()
            .unwrap_or_else(|| format!("{prefix}Connections")),
        cluster_table: o
            .cluster_table
            .clone()
            .unwrap_or_else(|| format!("{prefix}Cluster")),
        history_table: o
            .history_table
            .clone()
            .unwrap_or_else(|| format!("{prefix}History")),
        name_prefix: prefix,
        messages_topic_arn: o.messages_topic_arn.clone(),
        messages_queue_url: o.messages_queue_url.clone(),
        notifications_queue_url: o.notifications_queue_url.clone(),
        mesh_topic_arn: o.mesh_topic_arn.clone(),
        heartbeat: secs(o.heartbeat_secs, Duration::from_secs(10)),
        node_timeout: secs(o.node_timeout_secs, Duration::from_secs(30)),
        metrics_namespace: match o.metrics_namespace.clone() {
            Some(n) if n.is_empty() => None,
            Some(n) => Some(n),
            None => Some("Sumu".to_string()),
        },
        metrics_interval: secs(o.metrics_interval_secs, Duration::from_secs(60)),
        notification_pollers: o.notification_pollers.unwrap_or(2).max(1),
        max_receive_count: o.max_receive_count.unwrap_or(5).max(1),
        batch_linger: Duration::from_millis(o.batch_linger_ms.unwrap_or(5)),
        max_output_bytes_in_flight: o
            .max_output_bytes_in_flight
            .unwrap_or(DEFAULT_MAX_OUTPUT_BYTES_IN_FLIGHT),
        register_timeout: Duration::from_millis(o.register_timeout_ms.unwrap_or(3000)),
        notification_visibility: secs(o.notification_visibility_secs, Duration::from_secs(5)),
        leader_lease: secs(o.leader_lease_secs, Duration::from_secs(15)),
        leader_renew: secs(o.leader_renew_secs, Duration::from_secs(5)),
        reap_step_pause: Duration::from_millis(o.reap_step_pause_ms.unwrap_or(0)),
    };
    check_aws(&aws, limits)?;
    Ok(aws)
}

/// The aws settings' rules: periods leave room for a missed beat, the output budget holds one max message.
fn check_aws(aws: &AwsConfig, limits: &Limits) -> Result<(), ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    if !(1..=3600).contains(&aws.metrics_interval.as_secs()) {
        return invalid("--metrics-interval-secs must be within 1..=3600".into());
    }
    // Room for one largest message, its attributes and its bookkeeping.
    if aws.max_output_bytes_in_flight < limits.max_message_bytes + 4096 {
        return invalid(format!(
            "--max-output-bytes-in-flight must hold one max message (at least {})",
            limits.max_message_bytes + 4096
        ));
    }
    if aws.register_timeout.is_zero() {
        return invalid("--register-timeout-ms must be positive".into());
    }
    if !(2..=43_200).contains(&aws.notification_visibility.as_secs()) {
        return invalid(
                "--notification-visibility-secs must be within 2..=43200 (SQS's range; 2 leaves time to extend it)"
                    .into(),
            );
    }
    if aws.leader_renew.is_zero() || aws.leader_lease <= aws.leader_renew * 2 {
        return invalid(
            "--leader-lease-secs must be more than twice --leader-renew-secs (and both positive)"
                .into(),
        );
    }
    if aws.heartbeat.is_zero() || aws.node_timeout <= aws.heartbeat * 2 {
        return invalid(
            "--node-timeout-secs must be more than twice --heartbeat-secs (and both positive)"
                .into(),
        );
    }
    Ok(())
}
