//! The raw options: the command line (clap), `SUMU_*` variables and the
//! TOML file, all optional, merged field by field (flag > environment >
//! file) before [`super::Config::resolve`] applies defaults and checks them.
//! Every option is declared once here, with its help text and its default as
//! `--help` shows it; the default's value lives in the area module that
//! resolves it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// One node, everything in-process (no AWS).
    Memory,
    /// A cluster on DynamoDB, DynamoDB Streams, SNS and SQS.
    Aws,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceSource {
    /// Presence events are published to the messages topic.
    Topic,
    /// Presence events are sent to the messages queue.
    Queue,
    /// No presence events.
    None,
}

#[derive(Debug, Parser)]
#[command(
    name = "sumu-node",
    version,
    about = "sumu: a self-hosted, horizontally scaled WebSocket gateway (SUMU-compatible)",
    long_about = "sumu: a self-hosted, horizontally scaled WebSocket gateway (SUMU-compatible).\n\n\
Every option can also be given as a SUMU_* environment variable or in the TOML \
file named by --config (keys are the long flag names with '_' for '-'). \
Precedence: flag > environment > file > default."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML configuration file.
    #[arg(long, env = "SUMU_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub options: Options,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Create the AWS resources (tables, stream, TTL, topics, queues, DLQs,
    /// subscriptions) idempotently, for local use and users without Terraform.
    Bootstrap,
    /// The fleet (aws engine): `sumu-node cluster status [--json]`.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

/// Operators' commands on a running fleet, configured like a node.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Every node (status, address, heartbeat age, sockets), the leader and
    /// its lease, the presence stream's checkpoint lag, and the depths of the
    /// notifications and messages queues and their DLQs.
    Status {
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// Every option, all optional: unset ones fall back to the file, then to the
/// defaults shown in `--help`.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "SUMU_LISTEN", global = true)]
    pub listen: Option<SocketAddr>,
    /// WebSocket path [default: /push]
    #[arg(long, env = "SUMU_PATH", global = true)]
    pub path: Option<String>,
    /// Engine [default: memory]
    #[arg(long, env = "SUMU_ENGINE", value_enum, global = true)]
    pub engine: Option<EngineKind>,
    /// This node's id [default: random]
    #[arg(long, env = "SUMU_NODE_ID", global = true)]
    pub node_id: Option<String>,
    /// HTTP worker threads [default: number of CPUs]
    #[arg(long, env = "SUMU_WORKERS", global = true)]
    pub workers: Option<usize>,
    /// Development mode: dev token issuer at /dev/token, demo page at /, API key `dev` unless --api-key [default: false]
    #[arg(long, env = "SUMU_DEV", num_args = 0..=1, default_missing_value = "true", global = true)]
    pub dev: Option<bool>,
    /// With --dev on the memory engine, run SUMU's demo backend in process (chat echoes, presence re-broadcast, connected users) [default: true]
    #[arg(long, env = "SUMU_DEMO_BACKEND", num_args = 0..=1, default_missing_value = "true", global = true)]
    pub demo_backend: Option<bool>,
    /// Allow --dev on a non-loopback listen address [default: false]
    #[arg(long, env = "SUMU_DEV_ALLOW_REMOTE", num_args = 0..=1, default_missing_value = "true", global = true)]
    pub dev_allow_remote: Option<bool>,
    /// API key for /api/* (sent as `Authorization: Bearer KEY`); without one the API is off
    #[arg(long, env = "SUMU_API_KEY", global = true, hide_env_values = true)]
    pub api_key: Option<String>,
    /// Address of the TLS (wss://, https://) listener, beside --listen; `:0` picks a free port [default: none, or 127.0.0.1:8443 with --dev-tls]
    #[arg(long, env = "SUMU_TLS_LISTEN", global = true)]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain of the TLS listener, leaf first (full chain); reloaded on SIGHUP and when the file changes
    #[arg(long, env = "SUMU_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, RSA or EC)
    #[arg(long, env = "SUMU_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,
    /// How often the TLS certificate and key files are checked for changes, seconds; 0 = on SIGHUP only [default: 5]
    #[arg(long, env = "SUMU_TLS_WATCH_SECS", global = true)]
    pub tls_watch_secs: Option<u64>,
    /// Serve TLS with a throwaway development CA and certificate for localhost, 127.0.0.1 and ::1, generated at start into <temp dir>/sumu-dev-tls-<pid> (the CA is dev-ca.pem); not with --tls-cert/--tls-key [default: false]
    #[arg(long, env = "SUMU_DEV_TLS", num_args = 0..=1, default_missing_value = "true", global = true)]
    pub dev_tls: Option<bool>,
    /// Log format [default: text]
    #[arg(long, env = "SUMU_LOG_FORMAT", value_enum, global = true)]
    pub log_format: Option<LogFormat>,
    /// Log filter, tracing syntax [default: info]
    #[arg(long, env = "SUMU_LOG", global = true)]
    pub log: Option<String>,

    /// JWKS URI (a standard {"keys":[...]} document or Firebase's {kid: PEM certificate} map)
    #[arg(long, env = "SUMU_JWKS_URI", global = true)]
    pub jwks_uri: Option<String>,
    /// Local key file: JWKS JSON, Firebase x509 JSON, or a PEM public key/certificate
    #[arg(long, env = "SUMU_JWKS_FILE", global = true)]
    pub jwks_file: Option<PathBuf>,
    /// HS256 shared secret
    #[arg(long, env = "SUMU_HS256_SECRET", global = true, hide_env_values = true)]
    pub hs256_secret: Option<String>,
    /// Accepted audiences, comma separated, matched against `aud` or `client_id` [default: any]
    #[arg(long, env = "SUMU_JWT_AUDIENCES", value_delimiter = ',', global = true)]
    pub jwt_audiences: Option<Vec<String>>,
    /// Required issuer (`iss`) [default: any]
    #[arg(long, env = "SUMU_JWT_ISSUER", global = true)]
    pub jwt_issuer: Option<String>,
    /// Reject expired tokens [default: true]
    #[arg(long, env = "SUMU_VERIFY_TOKEN_EXPIRATION", num_args = 0..=1, default_missing_value = "true", global = true)]
    pub verify_token_expiration: Option<bool>,
    /// Clock leeway for exp/nbf in seconds [default: 10]
    #[arg(long, env = "SUMU_JWT_LEEWAY_SECS", global = true)]
    pub jwt_leeway_secs: Option<u64>,
    /// Shortest time fetched keys are cached, whatever the JWKS response's Cache-Control says, seconds [default: 60]
    #[arg(long, env = "SUMU_JWKS_MIN_CACHE_SECS", global = true)]
    pub jwks_min_cache_secs: Option<u64>,
    /// Longest accepted user id (the token's `sub`), in bytes; control characters are always refused [default: 256]
    #[arg(long, env = "SUMU_MAX_USER_ID_BYTES", global = true)]
    pub max_user_id_bytes: Option<usize>,
    /// Key cache lifetime when the JWKS response has no Cache-Control max-age, seconds [default: 3600]
    #[arg(long, env = "SUMU_JWKS_CACHE_SECS", global = true)]
    pub jwks_cache_secs: Option<u64>,
    /// Minimum seconds between refetches caused by an unknown `kid` [default: 30]
    #[arg(long, env = "SUMU_JWKS_REFETCH_SECS", global = true)]
    pub jwks_refetch_secs: Option<u64>,

    /// Close a socket with no client data frame for this long, seconds [default: 600]
    #[arg(long, env = "SUMU_IDLE_TIMEOUT_SECS", global = true)]
    pub idle_timeout_secs: Option<u64>,
    /// Close any socket after this long (code 1001), seconds [default: 7200]
    #[arg(long, env = "SUMU_MAX_CONNECTION_SECS", global = true)]
    pub max_connection_secs: Option<u64>,
    /// Server WebSocket ping interval; no pong for two intervals closes the socket, seconds [default: 30]
    #[arg(long, env = "SUMU_PING_INTERVAL_SECS", global = true)]
    pub ping_interval_secs: Option<u64>,
    /// Largest client frame in bytes, at most 65536 (close 1009 above) [default: 32768]
    #[arg(long, env = "SUMU_MAX_FRAME_BYTES", global = true)]
    pub max_frame_bytes: Option<usize>,
    /// Largest client message (fragments joined) in bytes (close 1009 above) [default: 131072]
    #[arg(long, env = "SUMU_MAX_MESSAGE_BYTES", global = true)]
    pub max_message_bytes: Option<usize>,
    /// Deepest nesting of arrays and objects in a client frame, its own object being level 1 (error 400 above) [default: 64]
    #[arg(long, env = "SUMU_MAX_JSON_DEPTH", global = true)]
    pub max_json_depth: Option<usize>,
    /// Client frames per second per connection (token bucket refill) [default: 50]
    #[arg(long, env = "SUMU_RATE_LIMIT_PER_SEC", global = true)]
    pub rate_limit_per_sec: Option<f64>,
    /// Token bucket size [default: 100]
    #[arg(long, env = "SUMU_RATE_LIMIT_BURST", global = true)]
    pub rate_limit_burst: Option<f64>,
    /// Rate-limited frames in a row that close the socket with 1008 [default: 20]
    #[arg(long, env = "SUMU_RATE_LIMIT_STRIKES", global = true)]
    pub rate_limit_strikes: Option<u32>,
    /// Client publish/send frames of one socket that may wait for AWS at once; more get an error frame with status 429 [default: 16]
    #[arg(long, env = "SUMU_MAX_MESSAGES_IN_FLIGHT", global = true)]
    pub max_messages_in_flight: Option<usize>,
    /// aws: bytes of client messages the node lets wait for AWS at once (all sockets, publish and send); more get an error frame with status 503 [default: 67108864]
    #[arg(long, env = "SUMU_MAX_OUTPUT_BYTES_IN_FLIGHT", global = true)]
    pub max_output_bytes_in_flight: Option<usize>,
    /// Bytes queued to one socket beyond which the slow reader is disconnected [default: 4194304]
    #[arg(long, env = "SUMU_OUTBOUND_BUFFER_BYTES", global = true)]
    pub outbound_buffer_bytes: Option<usize>,
    /// Most sockets this node holds; beyond it upgrades get 503 and /readyz turns 503; 0 = the descriptor limit minus a reserve (5%, at least 64) [default: 0]
    #[arg(long, env = "SUMU_MAX_SOCKETS", global = true)]
    pub max_sockets: Option<usize>,
    /// Most sockets one user (token `sub`) holds on this node; more get 429 [default: 100]
    #[arg(long, env = "SUMU_MAX_SOCKETS_PER_USER", global = true)]
    pub max_sockets_per_user: Option<usize>,
    /// Most sockets one client address (IPv6: one /64) holds on this node; more get 429 [default: 4096]
    #[arg(long, env = "SUMU_MAX_SOCKETS_PER_ADDRESS", global = true)]
    pub max_sockets_per_address: Option<usize>,
    /// Upgrades per second one client address may start (token bucket refill); more get 429 [default: 64]
    #[arg(long, env = "SUMU_MAX_CONNECTS_PER_ADDRESS_PER_SEC", global = true)]
    pub max_connects_per_address_per_sec: Option<f64>,
    /// Upgrades one client address may start at once (token bucket size) [default: 512]
    #[arg(long, env = "SUMU_MAX_CONNECTS_PER_ADDRESS_BURST", global = true)]
    pub max_connects_per_address_burst: Option<f64>,
    /// Most TLS connections one client address (IPv6: one /64) may have open before their handshake is done; more are closed at accept [default: 256]
    #[arg(long, env = "SUMU_MAX_TLS_HANDSHAKES_PER_ADDRESS", global = true)]
    pub max_tls_handshakes_per_address: Option<usize>,
    /// Client networks the per-address limits skip, comma separated CIDRs; "" for none [default: 127.0.0.0/8,::1/128]
    #[arg(
        long,
        env = "SUMU_ADDRESS_LIMITS_EXEMPT",
        value_delimiter = ',',
        global = true
    )]
    pub address_limits_exempt: Option<Vec<String>>,
    /// Every connection on the listener starts with a PROXY protocol v2 header (HAProxy send-proxy-v2, AWS NLB); its source address is the client's; connections without one are closed [default: false]
    #[arg(long, env = "SUMU_PROXY_PROTOCOL", num_args = 0..=1, default_missing_value = "true", global = true)]
    pub proxy_protocol: Option<bool>,
    /// Allowed Origin headers, comma separated; requests without Origin are allowed [default: any]
    #[arg(
        long,
        env = "SUMU_ALLOWED_ORIGINS",
        value_delimiter = ',',
        global = true
    )]
    pub allowed_origins: Option<Vec<String>>,
    /// Close code of the drain (SIGTERM): 1012 "service restart" makes common clients reconnect [default: 1012]
    #[arg(long, env = "SUMU_DRAIN_CLOSE_CODE", global = true)]
    pub drain_close_code: Option<u16>,
    /// Close code at the max connection duration; 1001 is API Gateway's, which sockette never reconnects on [default: 4000]
    #[arg(long, env = "SUMU_MAX_DURATION_CLOSE_CODE", global = true)]
    pub max_duration_close_code: Option<u16>,
    /// On SIGTERM, spread closing the sockets over this many seconds [default: 10]
    #[arg(long, env = "SUMU_DRAIN_SECS", global = true)]
    pub drain_secs: Option<u64>,

    /// AWS endpoint override, e.g. http://127.0.0.1:4566 for the local emulator [default: AWS]
    #[arg(long, env = "SUMU_AWS_ENDPOINT", global = true)]
    pub aws_endpoint: Option<String>,
    /// Per-service endpoint overrides, SERVICE=URL comma separated; SERVICE is one of dynamodb, dynamodbstreams, sns, sqs, cloudwatch; each wins over --aws-endpoint for its service (e.g. one local emulator process per service) [default: none]
    #[arg(
        long,
        env = "SUMU_AWS_SERVICE_ENDPOINTS",
        value_delimiter = ',',
        global = true
    )]
    pub aws_service_endpoints: Option<Vec<String>>,
    /// AWS region [default: from the AWS environment, else us-east-1]
    #[arg(long, env = "SUMU_AWS_REGION", global = true)]
    pub aws_region: Option<String>,
    /// Prefix of every AWS resource name [default: Sumu]
    #[arg(long, env = "SUMU_NAME_PREFIX", global = true)]
    pub name_prefix: Option<String>,
    /// Connections table [default: <prefix>Connections]
    #[arg(long, env = "SUMU_CONNECTIONS_TABLE", global = true)]
    pub connections_table: Option<String>,
    /// Cluster table [default: <prefix>Cluster]
    #[arg(long, env = "SUMU_CLUSTER_TABLE", global = true)]
    pub cluster_table: Option<String>,
    /// Messages SNS topic ARN (client `publish`) [default: looked up as <prefix>Messages]
    #[arg(long, env = "SUMU_MESSAGES_TOPIC_ARN", global = true)]
    pub messages_topic_arn: Option<String>,
    /// Messages SQS queue URL (client `send`) [default: looked up as <prefix>Messages]
    #[arg(long, env = "SUMU_MESSAGES_QUEUE_URL", global = true)]
    pub messages_queue_url: Option<String>,
    /// Notifications SQS queue URL [default: looked up as <prefix>Notifications]
    #[arg(long, env = "SUMU_NOTIFICATIONS_QUEUE_URL", global = true)]
    pub notifications_queue_url: Option<String>,
    /// Mesh SNS topic ARN [default: looked up as <prefix>Mesh]
    #[arg(long, env = "SUMU_MESH_TOPIC_ARN", global = true)]
    pub mesh_topic_arn: Option<String>,
    /// How often a node refreshes its cluster row (aws engine), seconds [default: 10]
    #[arg(long, env = "SUMU_HEARTBEAT_SECS", global = true)]
    pub heartbeat_secs: Option<u64>,
    /// A node whose heartbeat is older than this is reaped by the leader, seconds [default: 30]
    #[arg(long, env = "SUMU_NODE_TIMEOUT_SECS", global = true)]
    pub node_timeout_secs: Option<u64>,
    /// CloudWatch namespace of the node's metrics (every node's Sockets, the leader's PresenceStreamIteratorAge); empty disables them [default: Sumu]
    #[arg(long, env = "SUMU_METRICS_NAMESPACE", global = true)]
    pub metrics_namespace: Option<String>,
    /// How often a node publishes its Sockets metric to CloudWatch (one PutMetricData of 6 samples), seconds; 1 to 3600 [default: 60]
    #[arg(long, env = "SUMU_METRICS_INTERVAL_SECS", global = true)]
    pub metrics_interval_secs: Option<u64>,
    /// Where presence events go: the messages topic, the messages queue, or nowhere [default: topic]
    #[arg(long, env = "SUMU_PRESENCE_SOURCE", value_enum, global = true)]
    pub presence_source: Option<PresenceSource>,
    /// Concurrent long-pollers of the notifications queue [default: 2]
    #[arg(long, env = "SUMU_NOTIFICATION_POLLERS", global = true)]
    pub notification_pollers: Option<usize>,
    /// Receives before a notification request goes to the DLQ (bootstrap's redrive policy) [default: 5]
    #[arg(long, env = "SUMU_MAX_RECEIVE_COUNT", global = true)]
    pub max_receive_count: Option<u32>,
    /// Linger before a batch of connection writes / publishes is flushed, milliseconds [default: 5]
    #[arg(long, env = "SUMU_BATCH_LINGER_MS", global = true)]
    pub batch_linger_ms: Option<u64>,
    /// A socket whose connection row is not written within this is refused (503 register_failed) and the node reports not ready until AWS answers again, milliseconds [default: 3000]
    #[arg(long, env = "SUMU_REGISTER_TIMEOUT_MS", global = true)]
    pub register_timeout_ms: Option<u64>,
    /// How long a received notification request stays invisible to other nodes; extended while it is routed, so it bounds the delay of requests a crashed node had received, seconds [default: 5]
    #[arg(long, env = "SUMU_NOTIFICATION_VISIBILITY_SECS", global = true)]
    pub notification_visibility_secs: Option<u64>,
    /// How long the leader lease lasts unless renewed: the longest a crashed leader's duties (presence, reaper) wait for a successor, seconds [default: 15]
    #[arg(long, env = "SUMU_LEADER_LEASE_SECS", global = true)]
    pub leader_lease_secs: Option<u64>,
    /// How often the leader renews its lease and the others try to take it, seconds; less than half the lease [default: 5]
    #[arg(long, env = "SUMU_LEADER_RENEW_SECS", global = true)]
    pub leader_renew_secs: Option<u64>,

    /// Recovery window: every routed notification request is kept at least this long, so `recover=1` sockets get what they missed; 0 = off [default: 120 on the memory engine, 0 on aws]
    #[arg(long, env = "SUMU_RECOVERY_WINDOW_SECS", global = true)]
    pub recovery_window_secs: Option<u64>,
    /// Most positions one resume (or gap fill) catches up; beyond it, `recovery_failed` `too_far_behind` [default: 1000]
    #[arg(long, env = "SUMU_RECOVERY_MAX_MESSAGES", global = true)]
    pub recovery_max_messages: Option<usize>,
    /// Most bytes of `data` one resume (or gap fill) replays; beyond it, `too_far_behind`; at most half of --outbound-buffer-bytes [default: 1048576]
    #[arg(long, env = "SUMU_RECOVERY_MAX_BYTES", global = true)]
    pub recovery_max_bytes: Option<usize>,
    /// History table of the recovery window (aws engine) [default: <prefix>History]
    #[arg(long, env = "SUMU_HISTORY_TABLE", global = true)]
    pub history_table: Option<String>,
    /// For fault drills only: the leader pauses this long between the steps of reaping a node (mark, rows, subscription, inbox, row), so a drill can resume the node in the middle of its reap, milliseconds [default: 0]
    #[arg(long, env = "SUMU_REAP_STEP_PAUSE_MS", global = true)]
    pub reap_step_pause_ms: Option<u64>,
}

macro_rules! prefer {
    ($hi:expr, $lo:expr; $($field:ident),* $(,)?) => {
        Options { $($field: $hi.$field.or($lo.$field),)* }
    };
}

impl Options {
    /// `self` wins over `lower` field by field.
    pub fn over(self, lower: Options) -> Options {
        prefer!(self, lower;
            listen, path, engine, node_id, workers, dev, demo_backend, dev_allow_remote, api_key,
            tls_listen, tls_cert, tls_key, tls_watch_secs, dev_tls,
            log_format, log, jwks_uri, jwks_file, hs256_secret, jwt_audiences, jwt_issuer,
            verify_token_expiration, jwt_leeway_secs, jwks_cache_secs, jwks_refetch_secs,
            jwks_min_cache_secs, max_user_id_bytes,
            idle_timeout_secs, max_connection_secs, ping_interval_secs, max_frame_bytes,
            max_message_bytes, max_json_depth, rate_limit_per_sec, rate_limit_burst, rate_limit_strikes,
            outbound_buffer_bytes, max_messages_in_flight, max_output_bytes_in_flight, max_sockets, max_sockets_per_user, max_sockets_per_address,
            max_connects_per_address_per_sec, max_connects_per_address_burst,
            max_tls_handshakes_per_address, address_limits_exempt, proxy_protocol, allowed_origins, drain_secs, drain_close_code,
            max_duration_close_code, aws_endpoint, aws_service_endpoints, aws_region,
            name_prefix, connections_table, cluster_table, messages_topic_arn,
            messages_queue_url, notifications_queue_url, mesh_topic_arn, heartbeat_secs,
            node_timeout_secs, metrics_namespace, metrics_interval_secs, presence_source,
            notification_pollers, max_receive_count, batch_linger_ms,
            register_timeout_ms, notification_visibility_secs, leader_lease_secs,
            leader_renew_secs, reap_step_pause_ms, recovery_window_secs, recovery_max_messages,
            recovery_max_bytes, history_table,
        )
    }

    pub fn from_file(path: &Path) -> Result<Options, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// `v` seconds, or `default` when unset.
pub(super) fn secs(v: Option<u64>, default: Duration) -> Duration {
    v.map(Duration::from_secs).unwrap_or(default)
}

/// The non-empty, trimmed items of a list option.
pub(super) fn clean_list(v: Option<Vec<String>>) -> Vec<String> {
    v.unwrap_or_default()
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_file_keys_are_errors() {
        assert!(toml::from_str::<Options>("listne = \"x\"").is_err());
    }
}
