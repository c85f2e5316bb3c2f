//! Command-line interface: every subcommand and flag of `sumu-loadtest`.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::duration_arg::parse_duration;

#[derive(Parser, Debug)]
#[command(
    name = "sumu-loadtest",
    version,
    about = "Load tester for sumu (and any server with the same /push + POST /api/notify contract)",
    long_about = "Load tester for sumu. Every run is bounded in count and time and stops by itself. \
                  Only loopback targets are accepted unless --allow-remote is given."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Open and hold N sockets at a ramp rate with ping keepalive; report connect latency,
    /// failures, sockets held and (with --server-pid) server memory per socket.
    Connect(ConnectArgs),
    /// Hold N receivers and inject notification requests (broadcast, multicast, unicast)
    /// over HTTP or SQS; measure per-delivery latency and losses.
    Fanout(FanoutArgs),
    /// Like fanout, while extra sockets connect and disconnect at a rate; checks that no
    /// socket that was live for a whole notification missed it.
    Churn(ChurnArgs),
    /// Clients publish (or send) frames with an id at a rate; measure the latency until the
    /// matching ack frame.
    Publish(PublishArgs),
    /// The bare SQS hop, the floor of the fleet's mesh: send to a scratch queue at a
    /// rate while one long poll (10 s, batches of 10, as a node's inbox) receives;
    /// measure send start -> received.
    SqsHop(SqsHopArgs),
    /// Write the markdown comparison table of a bench run (used by bench/run.sh).
    BenchReport(BenchReportArgs),
    /// Print one minted token for --sub (e.g. for a browser on a local cluster:
    /// `token --sub alice` with SUMU_HS256_SECRET from `infra/local/cluster up`).
    Token(TokenCmdArgs),
}

#[derive(Args, Debug, Clone)]
pub struct TokenCmdArgs {
    /// The token's subject (the user id).
    #[arg(long)]
    pub sub: String,
    #[command(flatten)]
    pub tokens: TokenArgs,
}

/// Where the server is.
#[derive(Args, Debug, Clone)]
pub struct TargetArgs {
    /// Base HTTP URL of the server; the socket URL is derived from it (ws://HOST:PORT/push).
    #[arg(long, env = "SUMU_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Path of the WebSocket endpoint.
    #[arg(long, default_value = "/push")]
    pub ws_path: String,
    /// Allow a target that is not a loopback address (127.0.0.0/8, ::1, localhost).
    #[arg(long)]
    pub allow_remote: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// The nodes of a fleet, each by its own base URL, comma-separated (`infra/local/cluster up`
    /// prints them as SUMU_CLUSTER_NODE_URLS). fanout/churn then report how the sockets spread
    /// over them and the AWS calls they made, and with --via http post request i to node
    /// i mod N, which splits delivery latency into same-node and cross-node.
    #[arg(long, env = "SUMU_CLUSTER_NODE_URLS", value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Open the sockets directly on the --nodes, round-robin, instead of through --url.
    #[arg(long, requires = "nodes")]
    pub direct: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    #[value(name = "RS256", alias = "rs256")]
    Rs256,
    #[value(name = "ES256", alias = "es256")]
    Es256,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPlacement {
    /// `?authorization=<JWT>` in the URL (what browsers do).
    Query,
    /// `Authorization: Bearer <JWT>` header.
    Header,
}

/// How the sockets authenticate and which users they are.
#[derive(Args, Debug, Clone)]
pub struct TokenArgs {
    /// Fetch tokens from the node's dev issuer (GET /dev/token?sub=NAME).
    #[arg(long, conflicts_with_all = ["hs256_secret", "private_key"])]
    pub dev: bool,
    /// Mint HS256 tokens with this shared secret.
    #[arg(long, env = "SUMU_HS256_SECRET", conflicts_with = "private_key")]
    pub hs256_secret: Option<String>,
    /// Mint RS256 or ES256 tokens with this private key (PEM: RSA as PKCS#1 or PKCS#8, EC P-256 as
    /// PKCS#8; convert a SEC1 EC key with `openssl pkcs8 -topk8 -nocrypt`).
    #[arg(long)]
    pub private_key: Option<PathBuf>,
    /// Algorithm of --private-key; guessed from the PEM when absent.
    #[arg(long, value_enum)]
    pub alg: Option<KeyAlgorithm>,
    /// `aud` claim of minted tokens.
    #[arg(long)]
    pub aud: Option<String>,
    /// `iss` claim of minted tokens.
    #[arg(long)]
    pub iss: Option<String>,
    /// `kid` header of minted tokens.
    #[arg(long)]
    pub kid: Option<String>,
    /// Lifetime of minted tokens.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub token_ttl: Duration,
    /// Prefix of the `sub` of each user: users are PREFIX0 .. PREFIX(U-1).
    #[arg(long, default_value = "user-")]
    pub user_prefix: String,
    /// Number of distinct users U; socket i belongs to user i mod U (default: one user per socket).
    #[arg(long)]
    pub users: Option<usize>,
    /// Where the token goes in the upgrade request.
    #[arg(long, value_enum, default_value = "query")]
    pub token_in: TokenPlacement,
}

/// The socket population.
#[derive(Args, Debug, Clone)]
pub struct FleetArgs {
    /// Number of sockets to open.
    #[arg(long, short = 'n', default_value_t = 100)]
    pub sockets: usize,
    /// Connection attempts started per second.
    #[arg(long, default_value_t = 1000.0)]
    pub ramp: f64,
    /// Most connection attempts in flight at once.
    #[arg(long, default_value_t = 256)]
    pub max_inflight: usize,
    /// Stop starting new connection attempts after this many failures in a row (0 = never):
    /// a server or machine at its limit then ends the ramp instead of timing out forever.
    #[arg(long, default_value_t = 500)]
    pub stop_after_failures: u64,
    /// Give up on one connection attempt (TCP + upgrade) after this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Send `{"action":"ping"}` on each socket this often (0 = never).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ping_interval: Duration,
    /// Number of 127.0.0.x source addresses to spread sockets over (0 = let the kernel
    /// choose; default: one per 20000 sockets, loopback targets only).
    #[arg(long)]
    pub source_ips: Option<usize>,
    /// First source address of the spread.
    #[arg(long, default_value = "127.0.0.1")]
    pub source_base: Ipv4Addr,
}

/// Where results go.
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// Write the run report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a latency percentile plot (SVG) to this file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Never draw the progress bar (it is hidden anyway when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
    /// Do not print the summary table.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub tokens: TokenArgs,
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Hold the sockets this long after the ramp.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub hold: Duration,
    /// PID of the server process on this machine: report its RSS before and after the ramp
    /// (VmRSS from /proc/PID/status) and the RSS per socket.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Wait this long after the ramp before reading the server RSS.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub rss_settle: Duration,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanoutMode {
    /// `users` absent: every socket.
    Broadcast,
    /// `users` = K users per request (rotating through all users).
    Multicast,
    /// `users` = one user per request (rotating).
    Unicast,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyVia {
    /// POST /api/notify with the API key.
    Http,
    /// SendMessage to the notifications SQS queue.
    Sqs,
}

/// How notification requests are injected.
#[derive(Args, Debug, Clone)]
pub struct NotifyArgs {
    /// Kind of notification request.
    #[arg(long, value_enum, default_value = "broadcast")]
    pub mode: FanoutMode,
    /// Users per multicast request.
    #[arg(long, short = 'k', default_value_t = 10)]
    pub k: usize,
    /// Notification requests per second.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Number of notification requests (the run stops at --count or --duration, whichever first).
    #[arg(long, default_value_t = 100)]
    pub count: u64,
    /// Longest time spent sending notification requests.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Channel of the notification requests.
    #[arg(long, value_enum, default_value = "http")]
    pub via: NotifyVia,
    /// API key for POST /api/notify.
    #[arg(long, env = "SUMU_API_KEY", default_value = "dev")]
    pub api_key: String,
    /// Notifications queue URL (--via sqs).
    #[arg(long, env = "SUMU_NOTIFICATIONS_QUEUE_URL")]
    pub queue_url: Option<String>,
    /// AWS endpoint override, e.g. the local emulator http://127.0.0.1:4566 (--via sqs).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub aws_endpoint: Option<String>,
    /// AWS region (--via sqs).
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub aws_region: String,
    /// Most notification requests in flight at once.
    #[arg(long, default_value_t = 8)]
    pub inflight: usize,
    /// Extra bytes of padding inside each notification's data.
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
    /// After the last request, wait at most this long for the deliveries still expected.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// A socket counts as a target of a request only if it connected at least this long
    /// before the request was sent and stayed open at least this long after it was accepted.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub settle: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub tokens: TokenArgs,
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[command(flatten)]
    pub notify: NotifyArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// PID of the server process on this machine: report the CPU time it and the load tester
    /// spent per delivery, from the first request until the last expected delivery (utime +
    /// stime from /proc). Server and load tester share the cores, so deliveries/s is bounded by
    /// both; the server's CPU per delivery is its own cost.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

#[derive(Args, Debug, Clone)]
pub struct ChurnArgs {
    #[command(flatten)]
    pub fanout: FanoutArgs,
    /// Extra sockets connected per second while notifications run (each closes after --churn-life).
    #[arg(long, default_value_t = 50.0)]
    pub churn_rate: f64,
    /// How long each churning socket stays open.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub churn_life: Duration,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishAction {
    Publish,
    Send,
}

#[derive(Args, Debug, Clone)]
pub struct PublishArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub tokens: TokenArgs,
    #[command(flatten)]
    pub fleet: FleetArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Client action of each frame.
    #[arg(long, value_enum, default_value = "publish")]
    pub action: PublishAction,
    /// Frames per second per socket.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// How long the sockets publish.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Server's per-connection rate limit in frames/s (sumu default 50); --rate above it is
    /// refused unless --exceed-rate-limit.
    #[arg(long, default_value_t = 50.0)]
    pub server_rate_limit: f64,
    /// Knowingly publish faster than --server-rate-limit (expect error frames and closes).
    #[arg(long)]
    pub exceed_rate_limit: bool,
    /// Extra bytes of padding in each published message.
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
    /// After the last frame, wait at most this long for outstanding acks.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub ack_timeout: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct SqsHopArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    /// AWS endpoint override, e.g. the local emulator http://127.0.0.1:4566.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    pub aws_endpoint: Option<String>,
    /// AWS region.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub aws_region: String,
    /// Name of the scratch queue (created, then deleted); a random suffix is added.
    #[arg(long, default_value = "SumuHop")]
    pub queue_prefix: String,
    /// Messages per second.
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Messages sent.
    #[arg(long, default_value_t = 200)]
    pub count: u64,
    /// After the last send, wait at most this long for the messages still expected.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
}

#[derive(Args, Debug, Clone)]
pub struct BenchReportArgs {
    /// Directory holding PEER/SCENARIO.json files.
    #[arg(long)]
    pub dir: PathBuf,
    /// Peers in column order; the first is the one the ratios are computed for.
    #[arg(long, value_delimiter = ',', default_value = "sumu,ws-node,peer-min")]
    pub peers: Vec<String>,
    /// Markdown file to write.
    #[arg(long)]
    pub output: PathBuf,
    /// Free text put under the title (machine, command, versions).
    #[arg(long, default_value = "")]
    pub preamble: String,
}

/// wss: TLS on the sockets (and on the HTTP calls unless --http-url says otherwise).
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Connect the sockets with TLS (wss://HOST:PORT/push; an https:// or wss:// --url implies
    /// it). TLS 1.2/1.3, ALPN http/1.1, no session resumption (every socket is a full
    /// handshake, like distinct clients).
    #[arg(long)]
    pub tls: bool,
    /// Trust only the CA certificate(s) of this PEM file for wss (implies --tls); without it
    /// the system's root certificates are trusted.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Base URL of the HTTP calls (dev tokens, POST /api/notify) when it is not --url, e.g.
    /// the node's plain listener beside its TLS one: --url https://127.0.0.1:8443 --http-url
    /// http://127.0.0.1:8080. These calls trust the system's roots, not --ca-file.
    #[arg(long, value_name = "URL")]
    pub http_url: Option<String>,
}
