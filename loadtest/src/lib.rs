//! sumu-loadtest: the bundled load tester of the sumu WebSocket gateway.
//!
//! The binary (`src/main.rs`) is a thin edge over these modules:
//! - [`cli`]: command-line flags of every subcommand;
//! - [`target`]: the server address and the loopback-only guard;
//! - [`tokens`]: JWT minting (HS256/RS256/ES256) and dev-issuer tokens;
//! - [`source_addrs`]: spreading client sockets over 127.0.0.x source addresses;
//! - [`sys_limits`]: file limit, machine-limit error classes, CPU and RSS sampling;
//! - [`latency`]: hdrhistogram wrappers and percentile summaries;
//! - [`seq_set`]: which notification sequence numbers a socket received;
//! - [`ws_client`]: connecting one WebSocket from a chosen source address;
//! - [`session`]: the task that owns one socket (keepalive, deliveries, acks);
//! - [`notifier`]: notification requests over HTTP or SQS and their payload;
//! - [`fleet`]: ramping up and tearing down a population of sockets;
//! - [`nodes`]: each node of a fleet seen through its own port (users, sockets, AWS calls);
//! - [`drill`]: fault drills on a fleet: reconnecting clients, a request injector, presence;
//! - [`scenario`]: the `connect`, `fanout`/`churn` and `publish` runs;
//! - [`report`]: the run report (JSON), the summary table and [`plot`] (SVG);
//! - [`progress`]: the live progress bar;
//! - [`bench_report`]: the markdown comparison of peers written by `bench/run.sh`.

pub mod bench_report;
pub mod cli;
pub mod cpu_monitor;
pub mod drill;
pub mod duration_arg;
pub mod fleet;
pub mod latency;
pub mod nodes;
pub mod notifier;
pub mod peer_min;
pub mod plot;
pub mod progress;
pub mod report;
pub mod scenario;
pub mod seq_set;
pub mod session;
pub mod source_addrs;
pub mod sys_limits;
pub mod target;
pub mod tokens;
pub mod ws_client;
