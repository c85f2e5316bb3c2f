//! Configuration: a TOML file, `SUMU_*` environment variables and CLI flags,
//! in rising order of precedence, resolved into a validated [`Config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::close::CloseReason;

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

/// The longest `sub` (user id) accepted by default, in bytes. It becomes a
/// DynamoDB hash key (at most 2048 bytes) and is copied into every row,
/// message attribute and presence event of the user; 256 bytes hold any
/// e-mail address (RFC 5321: at most 254), UUIDs and provider-prefixed ids.
pub(crate) const DEFAULT_MAX_SUBJECT_BYTES: usize = 256;

/// The shortest time a fetched JWKS is kept, whatever its `Cache-Control`
/// says: an identity provider answering `max-age=0` would otherwise turn
/// every handshake into a key fetch.
pub(crate) const DEFAULT_JWKS_MIN_CACHE: Duration = Duration::from_secs(60);

/// Where the node's keys come from.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub jwks_uri: Option<String>,
    pub jwks_file: Option<PathBuf>,
    pub hs256_secret: Option<String>,
    pub audiences: Vec<String>,
    pub issuer: Option<String>,
    pub verify_expiration: bool,
    pub leeway: Duration,
    pub cache_ttl: Duration,
    pub refetch_interval: Duration,
    /// The floor under a JWKS response's `max-age`.
    pub jwks_min_cache: Duration,
    /// The longest `sub` accepted, in bytes.
    pub max_user_id_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub idle_timeout: Duration,
    pub max_connection: Duration,
    pub ping_interval: Duration,
    pub max_frame_bytes: usize,
    pub max_message_bytes: usize,
    /// Deepest nesting of a client frame (its own object is level 1).
    pub max_json_depth: usize,
    pub rate_per_sec: f64,
    pub rate_burst: f64,
    pub rate_strikes: u32,
    pub outbound_buffer_bytes: usize,
    /// Publish/send frames of one socket waiting for the engine at once.
    pub max_messages_in_flight: usize,
    /// The close code of the drain.
    pub drain_close_code: u16,
    /// The close code at the max connection duration.
    pub max_duration_close_code: u16,
}

/// Close codes a server may send (RFC 6455 §7.4: the registered ones an
/// endpoint sends, and the 3000-4999 ranges).
fn sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fn default_code(reason: CloseReason) -> u16 {
    reason.code().map_or(1000, u16::from)
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            idle_timeout: Duration::from_secs(600),
            max_connection: Duration::from_secs(7200),
            ping_interval: Duration::from_secs(30),
            max_frame_bytes: 32 * 1024,
            max_message_bytes: 128 * 1024,
            max_json_depth: sumu_shared::DEFAULT_MAX_JSON_DEPTH,
            rate_per_sec: 50.0,
            rate_burst: 100.0,
            rate_strikes: 20,
            outbound_buffer_bytes: 4 * 1024 * 1024,
            max_messages_in_flight: 16,
            drain_close_code: default_code(CloseReason::ServerShutdown),
            max_duration_close_code: default_code(CloseReason::MaxDuration),
        }
    }
}

/// What a node admits: sockets in all, per user, per client address
/// (count and connect rate). Checked at the upgrade by `limits`.
#[derive(Debug, Clone)]
pub struct SocketLimits {
    /// Most sockets of this node; `None` until resolved from the
    /// descriptor limit at start (`--max-sockets 0`).
    pub max_sockets: Option<usize>,
    pub max_per_user: usize,
    pub max_per_address: usize,
    pub connects_per_sec: f64,
    pub connect_burst: f64,
    /// Most TLS connections of one address that have not finished their
    /// handshake.
    pub max_handshakes_per_address: usize,
    /// Client networks the per-address limits skip.
    pub exempt: Vec<Network>,
}

/// The default networks the per-address limits skip: loopback (a proxy on
/// the same host, the load tester, the tests).
pub const DEFAULT_ADDRESS_LIMITS_EXEMPT: &str = "127.0.0.0/8,::1/128";

impl Default for SocketLimits {
    fn default() -> Self {
        SocketLimits {
            max_sockets: None,
            max_per_user: 100,
            max_per_address: 4096,
            connects_per_sec: 64.0,
            connect_burst: 512.0,
            max_handshakes_per_address: 256,
            exempt: DEFAULT_ADDRESS_LIMITS_EXEMPT
                .split(',')
                .filter_map(|n| n.parse().ok())
                .collect(),
        }
    }
}

/// An IP network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`; a bare
/// address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl Network {
    /// Whether `ip` is in the network (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let mask = |bits: u32, prefix: u8| -> u128 {
            if prefix == 0 {
                0
            } else {
                (u128::MAX << (bits - u32::from(prefix))) & (u128::MAX >> (128 - bits))
            }
        };
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let m = mask(32, self.prefix);
                u128::from(u32::from(net)) & m == u128::from(u32::from(ip)) & m
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let m = mask(128, self.prefix);
                u128::from(net) & m == u128::from(ip) & m
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Network, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("not an IP network: {s:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("bad prefix length in {s:?}"))?,
            None => max,
        };
        Ok(Network { addr, prefix })
    }
}

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

/// The recovery window's defaults, each written once.
pub const DEFAULT_RECOVERY_WINDOW_MEMORY: Duration = Duration::from_secs(120);
/// Off on aws: recording costs DynamoDB writes (README states how many).
pub const DEFAULT_RECOVERY_WINDOW_AWS: Duration = Duration::ZERO;
pub const DEFAULT_RECOVERY_MAX_MESSAGES: usize = 1000;
pub const DEFAULT_RECOVERY_MAX_BYTES: usize = 1024 * 1024;

/// The recovery window (`--recovery-window-secs` and its limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// How long a routed request is kept at least; zero: recovery is off.
    pub window: Duration,
    /// Most positions one resume or gap fill catches up.
    pub max_messages: usize,
    /// Most bytes of `data` one resume or gap fill replays.
    pub max_bytes: usize,
}

impl RecoveryConfig {
    pub fn enabled(&self) -> bool {
        !self.window.is_zero()
    }
}

/// The resolved configuration of a node.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The TLS listener, if any.
    pub tls: Option<TlsListen>,
    pub path: String,
    pub engine: EngineKind,
    pub node_id: String,
    pub workers: usize,
    pub dev: bool,
    /// SUMU's demo backend runs in process (`--dev`, memory engine).
    pub demo_backend: bool,
    pub api_key: Option<String>,
    pub log_format: LogFormat,
    pub log: String,
    pub auth: AuthConfig,
    pub limits: Limits,
    pub sockets: SocketLimits,
    /// Connections start with a PROXY protocol v2 header.
    pub proxy_protocol: bool,
    pub allowed_origins: Vec<String>,
    pub drain: Duration,
    pub presence_source: PresenceSource,
    pub recovery: RecoveryConfig,
    pub aws: AwsConfig,
}

/// The TLS listener (`--tls-listen`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListen {
    pub listen: SocketAddr,
    pub source: TlsSource,
    /// How often the files are polled for changes; zero: on SIGHUP only.
    pub watch: Duration,
}

/// Where the TLS listener's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// `--tls-cert` / `--tls-key`.
    Files { cert: PathBuf, key: PathBuf },
    /// `--dev-tls`: generated at start.
    Dev,
}

/// Where `--dev-tls` listens when `--tls-listen` is not given.
pub const DEV_TLS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8443);

/// The TLS listener of `o`, validated: a listener needs a certificate (files or
/// `--dev-tls`), files need a listener, `--dev-tls` stays on loopback unless forced.
fn resolve_tls(o: &Options) -> Result<Option<TlsListen>, ConfigError> {
    let invalid = |m: &str| Err(ConfigError::Invalid(m.to_string()));
    let dev_tls = o.dev_tls.unwrap_or(false);
    let watch = secs(o.tls_watch_secs, Duration::from_secs(5));
    let source = match (dev_tls, o.tls_cert.clone(), o.tls_key.clone()) {
        (true, None, None) => TlsSource::Dev,
        (true, _, _) => {
            return invalid("--dev-tls generates its own certificate: drop --tls-cert/--tls-key")
        }
        (false, Some(cert), Some(key)) => TlsSource::Files { cert, key },
        (false, None, None) => {
            return match o.tls_listen {
                Some(_) => invalid("--tls-listen needs --tls-cert and --tls-key (or --dev-tls)"),
                None => Ok(None),
            }
        }
        (false, _, _) => return invalid("--tls-cert and --tls-key go together"),
    };
    let listen = match (o.tls_listen, &source) {
        (Some(listen), _) => listen,
        (None, TlsSource::Dev) => DEV_TLS_LISTEN,
        (None, TlsSource::Files { .. }) => {
            return invalid("--tls-cert/--tls-key need --tls-listen (the TLS listener's address)")
        }
    };
    if source == TlsSource::Dev
        && !listen.ip().is_loopback()
        && !o.dev_allow_remote.unwrap_or(false)
    {
        return Err(ConfigError::Invalid(format!(
            "--dev-tls serves a certificate from a throwaway CA: refusing to listen on \
             non-loopback {listen}; pass --dev-allow-remote to force it"
        )));
    }
    Ok(Some(TlsListen {
        listen,
        source,
        watch,
    }))
}

/// Bytes of client messages a node lets wait for AWS at once by default:
/// 512 messages of the largest default size (128 KiB), far more small ones.
pub const DEFAULT_MAX_OUTPUT_BYTES_IN_FLIGHT: usize = 64 << 20;

/// The key `--dev` uses for the API when no --api-key is given.
pub const DEV_API_KEY: &str = "dev";

impl Config {
    /// Reads the file named by `--config`/`SUMU_CONFIG` (if any) under the
    /// flags and environment, then resolves and validates.
    pub fn load(cli_config: Option<&Path>, options: Options) -> Result<Config, ConfigError> {
        let merged = match cli_config {
            Some(path) => options.over(Options::from_file(path)?),
            None => options,
        };
        Config::resolve(merged)
    }

    pub fn resolve(o: Options) -> Result<Config, ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let listen = o
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let dev = o.dev.unwrap_or(false);
        let tls = resolve_tls(&o)?;
        if tls.is_some() && o.proxy_protocol.unwrap_or(false) {
            return invalid(
                "--proxy-protocol with --tls-listen is not supported yet (the PROXY header would \
                 have to be read before the TLS handshake): end TLS at the balancer, or use \
                 instance targets (the NLB then keeps client IPv4 addresses without PROXY)"
                    .into(),
            );
        }
        // `/dev/token` is served on every listener, the TLS one included.
        let public = std::iter::once(listen)
            .chain(tls.as_ref().map(|t| t.listen))
            .find(|a| !a.ip().is_loopback());
        if let (true, Some(addr), false) = (dev, public, o.dev_allow_remote.unwrap_or(false)) {
            return invalid(format!(
                "--dev exposes a token issuer that signs any user: refusing to listen on \
                 non-loopback {addr}; pass --dev-allow-remote to force it"
            ));
        }
        if let Some(id) = &o.node_id {
            let ok = !id.is_empty()
                && id.len() <= 40
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return invalid(format!(
                    "--node-id must be 1-40 of [A-Za-z0-9_-] (it names the node's SQS inbox): {id:?}"
                ));
            }
        }
        let path = o.path.unwrap_or_else(|| "/push".to_string());
        if !path.starts_with('/') || path.len() < 2 {
            return invalid(format!(
                "--path must start with '/' and name a route: {path:?}"
            ));
        }
        let d = Limits::default();
        let limits = Limits {
            idle_timeout: secs(o.idle_timeout_secs, d.idle_timeout),
            max_connection: secs(o.max_connection_secs, d.max_connection),
            ping_interval: secs(o.ping_interval_secs, d.ping_interval),
            max_frame_bytes: o.max_frame_bytes.unwrap_or(d.max_frame_bytes),
            max_message_bytes: o.max_message_bytes.unwrap_or(d.max_message_bytes),
            max_json_depth: o.max_json_depth.unwrap_or(d.max_json_depth),
            rate_per_sec: o.rate_limit_per_sec.unwrap_or(d.rate_per_sec),
            rate_burst: o.rate_limit_burst.unwrap_or(d.rate_burst),
            rate_strikes: o.rate_limit_strikes.unwrap_or(d.rate_strikes),
            outbound_buffer_bytes: o.outbound_buffer_bytes.unwrap_or(d.outbound_buffer_bytes),
            max_messages_in_flight: o.max_messages_in_flight.unwrap_or(d.max_messages_in_flight),
            drain_close_code: o.drain_close_code.unwrap_or(d.drain_close_code),
            max_duration_close_code: o
                .max_duration_close_code
                .unwrap_or(d.max_duration_close_code),
        };
        for code in [limits.drain_close_code, limits.max_duration_close_code] {
            if !sendable_close_code(code) {
                return invalid(format!(
                    "close code {code} cannot be sent by a server (use 1000-1003, 1007-1014 or 3000-4999)"
                ));
            }
        }
        if limits.max_frame_bytes == 0 || limits.max_frame_bytes > 65536 {
            return invalid("--max-frame-bytes must be within 1..=65536".into());
        }
        if limits.max_json_depth == 0 || limits.max_json_depth > 1000 {
            return invalid(
                "--max-json-depth must be within 1..=1000 (SUMU's Python backends fail past ~1000)"
                    .into(),
            );
        }
        if limits.max_message_bytes < limits.max_frame_bytes {
            return invalid("--max-message-bytes must be at least --max-frame-bytes".into());
        }
        if limits.idle_timeout.is_zero()
            || limits.max_connection.is_zero()
            || limits.ping_interval.is_zero()
        {
            return invalid("timeouts and the ping interval must be positive".into());
        }
        if limits.rate_per_sec <= 0.0 || limits.rate_burst < 1.0 || limits.rate_strikes == 0 {
            return invalid("rate limit: per-sec > 0, burst >= 1, strikes >= 1".into());
        }
        if limits.outbound_buffer_bytes < limits.max_message_bytes {
            return invalid("--outbound-buffer-bytes must hold at least one max message".into());
        }
        if limits.max_messages_in_flight == 0 {
            return invalid("--max-messages-in-flight must be >= 1".into());
        }
        let ds = SocketLimits::default();
        let sockets = SocketLimits {
            max_sockets: o.max_sockets.filter(|n| *n > 0),
            max_per_user: o.max_sockets_per_user.unwrap_or(ds.max_per_user),
            max_per_address: o.max_sockets_per_address.unwrap_or(ds.max_per_address),
            connects_per_sec: o
                .max_connects_per_address_per_sec
                .unwrap_or(ds.connects_per_sec),
            connect_burst: o.max_connects_per_address_burst.unwrap_or(ds.connect_burst),
            max_handshakes_per_address: o
                .max_tls_handshakes_per_address
                .unwrap_or(ds.max_handshakes_per_address),
            exempt: match o.address_limits_exempt {
                None => ds.exempt,
                Some(list) => clean_list(Some(list))
                    .iter()
                    .map(|n| n.parse())
                    .collect::<Result<_, _>>()
                    .map_err(|e| ConfigError::Invalid(format!("--address-limits-exempt: {e}")))?,
            },
        };
        if sockets.max_per_user == 0
            || sockets.max_per_address == 0
            || sockets.max_handshakes_per_address == 0
        {
            return invalid(
                "--max-sockets-per-user, --max-sockets-per-address and \
                 --max-tls-handshakes-per-address must be >= 1"
                    .into(),
            );
        }
        let (rate, burst) = (sockets.connects_per_sec, sockets.connect_burst);
        if rate.is_nan() || rate <= 0.0 || burst.is_nan() || burst < 1.0 {
            return invalid(
                "--max-connects-per-address-per-sec must be > 0 and its burst >= 1".into(),
            );
        }
        let mut api_key = o.api_key.filter(|k| !k.is_empty());
        if dev && api_key.is_none() {
            api_key = Some(DEV_API_KEY.to_string());
        }
        let auth = AuthConfig {
            jwks_uri: o.jwks_uri.filter(|s| !s.is_empty()),
            jwks_file: o.jwks_file,
            hs256_secret: o.hs256_secret.filter(|s| !s.is_empty()),
            audiences: clean_list(o.jwt_audiences),
            issuer: o.jwt_issuer.filter(|s| !s.is_empty()),
            verify_expiration: o.verify_token_expiration.unwrap_or(true),
            leeway: secs(o.jwt_leeway_secs, Duration::from_secs(10)),
            cache_ttl: secs(o.jwks_cache_secs, Duration::from_secs(3600)),
            refetch_interval: secs(o.jwks_refetch_secs, Duration::from_secs(30)),
            jwks_min_cache: secs(o.jwks_min_cache_secs, DEFAULT_JWKS_MIN_CACHE),
            max_user_id_bytes: o.max_user_id_bytes.unwrap_or(DEFAULT_MAX_SUBJECT_BYTES),
        };
        if auth.max_user_id_bytes == 0 || auth.max_user_id_bytes > 1024 {
            return invalid(
                "--max-user-id-bytes must be within 1..=1024 (DynamoDB keys hold 2048 bytes)"
                    .into(),
            );
        }
        let prefix = o.name_prefix.unwrap_or_else(|| "Sumu".to_string());
        let service_endpoints =
            ServiceEndpoints::parse(o.aws_service_endpoints.unwrap_or_default())
                .map_err(ConfigError::Invalid)?;
        let aws = AwsConfig {
            endpoint: o.aws_endpoint.filter(|s| !s.is_empty()),
            service_endpoints,
            region: o.aws_region.filter(|s| !s.is_empty()),
            connections_table: o
                .connections_table
                .unwrap_or_else(|| format!("{prefix}Connections")),
            cluster_table: o
                .cluster_table
                .unwrap_or_else(|| format!("{prefix}Cluster")),
            history_table: o
                .history_table
                .unwrap_or_else(|| format!("{prefix}History")),
            name_prefix: prefix,
            messages_topic_arn: o.messages_topic_arn,
            messages_queue_url: o.messages_queue_url,
            notifications_queue_url: o.notifications_queue_url,
            mesh_topic_arn: o.mesh_topic_arn,
            heartbeat: secs(o.heartbeat_secs, Duration::from_secs(10)),
            node_timeout: secs(o.node_timeout_secs, Duration::from_secs(30)),
            metrics_namespace: match o.metrics_namespace {
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
        let engine = o.engine.unwrap_or(EngineKind::Memory);
        let recovery = RecoveryConfig {
            window: o.recovery_window_secs.map_or(
                match engine {
                    EngineKind::Memory => DEFAULT_RECOVERY_WINDOW_MEMORY,
                    EngineKind::Aws => DEFAULT_RECOVERY_WINDOW_AWS,
                },
                Duration::from_secs,
            ),
            max_messages: o
                .recovery_max_messages
                .unwrap_or(DEFAULT_RECOVERY_MAX_MESSAGES),
            // Not given: the default, or half the outbound cap when that is
            // smaller (a replay must fit beside live traffic), so a node with a
            // small `--outbound-buffer-bytes` still starts.
            max_bytes: o
                .recovery_max_bytes
                .unwrap_or(DEFAULT_RECOVERY_MAX_BYTES.min(limits.outbound_buffer_bytes / 2)),
        };
        if recovery.window > Duration::from_secs(7 * 24 * 3600) {
            return invalid("--recovery-window-secs must be at most 604800 (7 days)".into());
        }
        if recovery.max_messages == 0 || recovery.max_bytes == 0 {
            return invalid("--recovery-max-messages and --recovery-max-bytes must be >= 1".into());
        }
        if recovery.max_bytes > limits.outbound_buffer_bytes / 2 {
            return invalid(
                "--recovery-max-bytes must be at most half of --outbound-buffer-bytes (a replay must \
                 fit beside live traffic under the socket's outbound cap)"
                    .into(),
            );
        }
        Ok(Config {
            listen,
            tls,
            path,
            engine,
            demo_backend: dev && engine == EngineKind::Memory && o.demo_backend.unwrap_or(true),
            node_id: o.node_id.unwrap_or_else(random_node_id),
            workers: o
                .workers
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
                .max(1),
            dev,
            api_key,
            log_format: o.log_format.unwrap_or(LogFormat::Text),
            log: o.log.unwrap_or_else(|| "info".to_string()),
            auth,
            limits,
            sockets,
            proxy_protocol: o.proxy_protocol.unwrap_or(false),
            allowed_origins: clean_list(o.allowed_origins),
            drain: secs(o.drain_secs, Duration::from_secs(10)),
            presence_source: o.presence_source.unwrap_or(PresenceSource::Topic),
            recovery,
            aws,
        })
    }
}

impl Config {
    /// Serving needs a key source; `bootstrap` does not.
    pub fn require_keys(&self) -> Result<(), ConfigError> {
        let a = &self.auth;
        if !self.dev && a.jwks_uri.is_none() && a.jwks_file.is_none() && a.hs256_secret.is_none() {
            return Err(ConfigError::Invalid(
                "no token keys: give --jwks-uri, --jwks-file or --hs256-secret (or --dev)".into(),
            ));
        }
        Ok(())
    }
}

fn secs(v: Option<u64>, default: Duration) -> Duration {
    v.map(Duration::from_secs).unwrap_or(default)
}

fn clean_list(v: Option<Vec<String>>) -> Vec<String> {
    v.unwrap_or_default()
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn random_node_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("n-{}", &id[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> Options {
        Options {
            dev: Some(true),
            ..Options::default()
        }
    }

    #[test]
    fn defaults_follow_api_gateway() {
        let c = Config::resolve(dev()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.path, "/push");
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(600));
        assert_eq!(c.limits.max_connection, Duration::from_secs(7200));
        assert_eq!(c.limits.max_frame_bytes, 32768);
        assert_eq!(c.limits.max_message_bytes, 131072);
        assert_eq!(c.api_key.as_deref(), Some(DEV_API_KEY));
        assert_eq!(c.aws.connections_table, "SumuConnections");
        assert_eq!(c.aws.cluster_table, "SumuCluster");
        assert!(c.auth.verify_expiration);
    }

    #[test]
    fn flags_beat_file_values() {
        let file: Options = toml::from_str(
            "listen = \"127.0.0.1:9000\"\nidle_timeout_secs = 5\njwt_audiences = [\"a\", \"b\"]\n",
        )
        .unwrap();
        let cli = Options {
            idle_timeout_secs: Some(7),
            ..dev()
        };
        let c = Config::resolve(cli.over(file)).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(7));
        assert_eq!(c.auth.audiences, vec!["a", "b"]);
    }

    #[test]
    fn close_codes_default_to_reconnectable_ones_and_refuse_reserved() {
        let c = Config::resolve(dev()).unwrap();
        assert_eq!(c.limits.drain_close_code, 1012);
        assert_eq!(c.limits.max_duration_close_code, 4000);
        for bad in [1004, 1005, 1006, 1015, 999, 2000, 5000] {
            let o = Options {
                drain_close_code: Some(bad),
                ..dev()
            };
            assert!(Config::resolve(o).is_err(), "{bad} accepted");
        }
        let o = Options {
            max_duration_close_code: Some(1001),
            ..dev()
        };
        assert_eq!(
            Config::resolve(o).unwrap().limits.max_duration_close_code,
            1001
        );
    }

    #[test]
    fn recovery_defaults_depend_on_the_engine_and_limits_are_checked() {
        let c = Config::resolve(dev()).unwrap();
        assert_eq!(c.recovery.window, DEFAULT_RECOVERY_WINDOW_MEMORY);
        assert!(c.recovery.enabled());
        assert_eq!(c.aws.history_table, "SumuHistory");
        let aws = Options {
            engine: Some(EngineKind::Aws),
            ..dev()
        };
        assert!(!Config::resolve(aws.clone()).unwrap().recovery.enabled());
        let on = Options {
            recovery_window_secs: Some(30),
            ..aws
        };
        assert_eq!(
            Config::resolve(on).unwrap().recovery.window,
            Duration::from_secs(30)
        );
        // A small outbound cap without --recovery-max-bytes: the default
        // follows it (half the cap), the node starts.
        let small = Config::resolve(Options {
            outbound_buffer_bytes: Some(512 * 1024),
            ..dev()
        })
        .unwrap();
        assert_eq!(small.recovery.max_bytes, 256 * 1024);
        for bad in [
            Options {
                recovery_max_bytes: Some(3 * 1024 * 1024),
                ..dev()
            },
            Options {
                outbound_buffer_bytes: Some(512 * 1024),
                recovery_max_bytes: Some(512 * 1024),
                ..dev()
            },
            Options {
                recovery_max_messages: Some(0),
                ..dev()
            },
        ] {
            assert!(Config::resolve(bad).is_err());
        }
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        assert!(toml::from_str::<Options>("listne = \"x\"").is_err());
    }

    #[test]
    fn refuses_dev_on_public_address_unless_forced() {
        let o = Options {
            listen: Some("0.0.0.0:8080".parse().unwrap()),
            ..dev()
        };
        assert!(Config::resolve(o.clone()).is_err());
        let o = Options {
            dev_allow_remote: Some(true),
            ..o
        };
        assert!(Config::resolve(o).is_ok());
    }

    #[test]
    fn refuses_missing_keys_and_bad_limits() {
        assert!(Config::resolve(Options::default())
            .unwrap()
            .require_keys()
            .is_err());
        let o = Options {
            max_frame_bytes: Some(70000),
            ..dev()
        };
        assert!(Config::resolve(o).is_err());
        let o = Options {
            hs256_secret: Some("s".into()),
            ..Options::default()
        };
        assert!(Config::resolve(o).unwrap().require_keys().is_ok());
    }

    #[test]
    fn socket_limits_default_generous_and_exempt_loopback() {
        let c = Config::resolve(dev()).unwrap();
        assert_eq!(c.sockets.max_sockets, None);
        assert_eq!(c.sockets.max_per_user, 100);
        let loopback = |ip: &str| {
            c.sockets
                .exempt
                .iter()
                .any(|n| n.contains(ip.parse().unwrap()))
        };
        assert!(loopback("127.0.0.1") && loopback("127.9.8.7") && loopback("::1"));
        assert!(loopback("::ffff:127.0.0.1"));
        assert!(!loopback("192.0.2.1") && !loopback("2001:db8::1"));
        let cli =
            Cli::try_parse_from(["sumu-node", "--dev", "--address-limits-exempt", ""]).unwrap();
        assert!(Config::resolve(cli.options)
            .unwrap()
            .sockets
            .exempt
            .is_empty());
        let o = Options {
            address_limits_exempt: Some(vec!["10.0.0.0/33".into()]),
            ..dev()
        };
        assert!(Config::resolve(o).is_err());
    }

    #[test]
    fn networks_parse_and_match_by_prefix() {
        let n: Network = "10.1.0.0/16".parse().unwrap();
        assert!(n.contains("10.1.255.3".parse().unwrap()));
        assert!(!n.contains("10.2.0.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let n: Network = "2001:db8::/32".parse().unwrap();
        assert!(n.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!n.contains("2001:db9::1".parse().unwrap()));
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let one: Network = "192.0.2.7".parse().unwrap();
        assert!(one.contains("192.0.2.7".parse().unwrap()));
        assert!(!one.contains("192.0.2.8".parse().unwrap()));
        assert!("nope/8".parse::<Network>().is_err());
        assert!("::/129".parse::<Network>().is_err());
    }

    #[test]
    fn tls_options_are_validated() {
        assert_eq!(Config::resolve(dev()).unwrap().tls, None);
        let files = Options {
            tls_listen: Some("127.0.0.1:9443".parse().unwrap()),
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            ..dev()
        };
        let tls = Config::resolve(files.clone()).unwrap().tls.unwrap();
        assert_eq!(tls.listen.port(), 9443);
        assert_eq!(tls.watch, Duration::from_secs(5));
        assert_eq!(
            tls.source,
            TlsSource::Files {
                cert: "c.pem".into(),
                key: "k.pem".into()
            }
        );
        let refused = [
            Options {
                tls_key: None,
                ..files.clone()
            },
            Options {
                tls_listen: None,
                ..files.clone()
            },
            Options {
                dev_tls: Some(true),
                ..files.clone()
            },
            Options {
                tls_cert: None,
                tls_key: None,
                ..files.clone()
            },
            Options {
                dev_tls: Some(true),
                tls_listen: Some("0.0.0.0:8443".parse().unwrap()),
                ..dev()
            },
        ];
        for o in refused {
            assert!(
                matches!(Config::resolve(o.clone()), Err(ConfigError::Invalid(_))),
                "accepted {o:?}"
            );
        }
        let d = Config::resolve(Options {
            dev_tls: Some(true),
            tls_watch_secs: Some(0),
            ..dev()
        })
        .unwrap()
        .tls
        .unwrap();
        assert_eq!(
            (d.listen, d.source, d.watch),
            (DEV_TLS_LISTEN, TlsSource::Dev, Duration::ZERO)
        );
        let forced = Options {
            dev_tls: Some(true),
            dev_allow_remote: Some(true),
            tls_listen: Some("0.0.0.0:8443".parse().unwrap()),
            ..dev()
        };
        assert!(Config::resolve(forced).is_ok());
    }

    #[test]
    fn refuses_dev_on_a_public_tls_listener_with_real_files_unless_forced() {
        let public = Options {
            tls_listen: Some("0.0.0.0:8443".parse().unwrap()),
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            ..dev()
        };
        let refused = Config::resolve(public.clone()).unwrap_err().to_string();
        assert!(refused.contains("0.0.0.0:8443"), "{refused}");
        assert!(refused.contains("--dev-allow-remote"), "{refused}");
        // Without --dev nothing signs tokens: a public listener is fine.
        assert!(Config::resolve(Options {
            dev: None,
            ..public.clone()
        })
        .is_ok());
        assert!(Config::resolve(Options {
            dev_allow_remote: Some(true),
            ..public
        })
        .is_ok());
    }

    #[test]
    fn env_and_flags_parse() {
        let cli = Cli::try_parse_from([
            "sumu-node",
            "--dev",
            "--jwt-audiences",
            "x,y",
            "--verify-token-expiration=false",
        ])
        .unwrap();
        let c = Config::resolve(cli.options).unwrap();
        assert_eq!(c.auth.audiences, vec!["x", "y"]);
        assert!(!c.auth.verify_expiration);
        assert!(c.dev);
    }

    #[test]
    fn service_endpoints_parse_and_refuse_unknown_services() {
        let cli = Cli::try_parse_from([
            "sumu-node",
            "--dev",
            "--aws-endpoint",
            "http://127.0.0.1:1",
            "--aws-service-endpoints",
            "dynamodb=http://127.0.0.1:2, dynamodbstreams=http://127.0.0.1:2",
        ])
        .unwrap();
        let c = Config::resolve(cli.options).unwrap();
        assert_eq!(c.aws.endpoint.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(
            c.aws.service_endpoints,
            ServiceEndpoints {
                dynamodb: Some("http://127.0.0.1:2".into()),
                dynamodbstreams: Some("http://127.0.0.1:2".into()),
                ..ServiceEndpoints::default()
            }
        );
        for bad in ["s3=http://x", "sqs", "sqs=", "sqs=http://a,sqs=http://b"] {
            let o = Options {
                aws_service_endpoints: Some(bad.split(',').map(str::to_string).collect()),
                ..dev()
            };
            assert!(Config::resolve(o).is_err(), "{bad} must be refused");
        }
    }
}
