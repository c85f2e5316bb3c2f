//! A node served in this process: the same `sumu_node::server::serve` the
//! binary runs, on `127.0.0.1:0`, with a `Config` built from command-line
//! arguments exactly as `sumu-node` builds it, on its own actix System
//! thread; the test holds its shutdown. No child process, so it starts in
//! milliseconds and many run at once in one test binary: the fast tier
//! (`infra/local/test-fast`).
//!
//! Nodes in one process share nothing that changes what a test sees: each
//! has its own metrics registry, hub, engine and dev-token key (`serve`
//! builds them all). What they do share is the process: its descriptor
//! limit (raised once here, as the binary does), its log subscriber (set
//! once, `SUMU_LOG` or `warn`, on stderr) and its signals, so a test of a
//! signal, an exit code, memory (RSS) or TLS files (`--dev-tls` writes to a
//! per-process directory) uses a process node ([`crate::node::Node`]).

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::mpsc;
use std::sync::Once;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Parser;
use sumu_node::config::{Cli, Config, LogFormat};
use sumu_node::server::{self, NodeError};
use tokio::sync::oneshot;

use crate::client::NodeClient;

/// How long a node may take to answer `/readyz` with 200 after `serve` starts.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long a killed node's thread may take to end (its runtime dropped).
const KILLED_WITHIN: Duration = Duration::from_secs(10);

/// A node served in this process; killed (its runtime dropped, its sockets
/// gone at once, like a SIGKILL) on drop, or drained by [`shutdown`].
///
/// [`shutdown`]: InProcessNode::shutdown
pub struct InProcessNode {
    client: NodeClient,
    /// Resolves the shutdown future `serve` was given: the graceful drain.
    drain: Option<oneshot::Sender<()>>,
    /// Drops `serve` and its runtime.
    kill: Option<oneshot::Sender<()>>,
    /// `serve`'s result, once its thread ends.
    done: mpsc::Receiver<Result<(), NodeError>>,
    /// Sent before each readiness probe: a PROXY v2 `LOCAL` header (a
    /// proxy's own health check) when the node takes `--proxy-protocol`.
    probe_preamble: Vec<u8>,
    thread: Option<JoinHandle<()>>,
}

impl Deref for InProcessNode {
    type Target = NodeClient;

    fn deref(&self) -> &NodeClient {
        &self.client
    }
}

/// Why an in-process node did not start.
#[derive(Debug)]
pub enum StartError {
    /// The arguments were refused (as `sumu-node` would refuse them).
    Config(String),
    /// `serve` returned an error before the node was ready.
    Serve(NodeError),
}

impl InProcessNode {
    /// A `--dev` node with extra flags; the in-process demo backend is off
    /// (`--demo-backend=false`), so a test sees exactly the frames it
    /// caused. The same as [`crate::node::Node::dev`].
    pub fn dev(extra: &[&str]) -> InProcessNode {
        let mut args = vec!["--dev", "--demo-backend=false"];
        args.extend_from_slice(extra);
        InProcessNode::start(&args, "dev")
    }

    /// Serves `sumu-node --listen 127.0.0.1:0 ARGS`; `api_key` is what the
    /// client sends to the backend API. Panics if it cannot start.
    pub fn start(args: &[&str], api_key: &str) -> InProcessNode {
        InProcessNode::try_start(args, api_key)
            .unwrap_or_else(|e| panic!("in-process node did not start: {e:?}"))
    }

    /// [`InProcessNode::start`], answering why it could not start.
    pub fn try_start(args: &[&str], api_key: &str) -> Result<InProcessNode, StartError> {
        process_setup();
        let argv = ["sumu-node", "--listen", "127.0.0.1:0"]
            .into_iter()
            .chain(args.iter().copied());
        let cli = Cli::try_parse_from(argv).map_err(|e| StartError::Config(e.to_string()))?;
        let config = Config::load(cli.config.as_deref(), cli.options)
            .map_err(|e| StartError::Config(chain(&e)))?;
        config
            .require_keys()
            .map_err(|e| StartError::Config(chain(&e)))?;
        if config.tls.is_some() {
            // Its address would stay unknown here, and `--dev-tls` writes files
            // per process, which two nodes in one process would share.
            return Err(StartError::Config(
                "a TLS listener needs a process node: sumu_testkit::Node::tls".into(),
            ));
        }
        let probe_preamble = if config.proxy_protocol {
            crate::proxy::v2_local()
        } else {
            Vec::new()
        };
        let listener = server::bind(config.listen).map_err(StartError::Serve)?;
        let addr = listener.local_addr().expect("bound address");
        let (drain, drained) = oneshot::channel::<()>();
        let (kill, killed) = oneshot::channel::<()>();
        let (result, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("sumu-node {addr}"))
            .spawn(move || {
                let system = actix_web::rt::System::new();
                let served = system.block_on(async move {
                    let shutdown = async {
                        let _ = drained.await;
                    };
                    tokio::select! {
                        served = server::serve(config, listener, shutdown) => served,
                        _ = killed => Ok(()),
                    }
                });
                // Dropping the system drops what `serve` spawned on it
                // (the HTTP server, whose workers stop, the hub, the engine).
                drop(system);
                let _ = result.send(served);
            })
            .expect("spawn the node's thread");
        let mut node = InProcessNode {
            client: NodeClient {
                addr,
                tls_addr: None,
                api_key: api_key.to_string(),
            },
            drain: Some(drain),
            kill: Some(kill),
            done,
            probe_preamble,
            thread: Some(thread),
        };
        node.ready()?;
        Ok(node)
    }

    /// Waits for `/readyz` 200; `serve`'s error if it ended first.
    fn ready(&mut self) -> Result<(), StartError> {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let port = self.client.addr.port();
            if crate::http_status_after(port, "/readyz", &self.probe_preamble) == Some(200) {
                return Ok(());
            }
            match self.done.try_recv() {
                Ok(Err(e)) => return Err(StartError::Serve(e)),
                Ok(Ok(())) => panic!("in-process node on {} stopped at start", self.addr),
                Err(mpsc::TryRecvError::Disconnected) => {
                    panic!("in-process node on {} panicked at start", self.addr)
                }
                Err(mpsc::TryRecvError::Empty) => {}
            }
            assert!(
                Instant::now() < deadline,
                "in-process node on {} not ready within {READY_WITHIN:?}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The node's address (also through the client: `node.addr`).
    pub fn addr(&self) -> SocketAddr {
        self.client.addr
    }

    /// Resolves the shutdown `serve` was given (what SIGTERM does to the
    /// binary) and waits, up to `within`, for `serve` to return: the drain
    /// (`/readyz` 503, sockets closed with the drain code in waves over
    /// `--drain-secs`, background tasks stopped). Answers `serve`'s result;
    /// panics if it did not return in time.
    pub fn shutdown(mut self, within: Duration) -> Result<(), NodeError> {
        if let Some(drain) = self.drain.take() {
            let _ = drain.send(());
        }
        let served = self
            .done
            .recv_timeout(within)
            .unwrap_or_else(|e| panic!("serve did not return within {within:?}: {e}"));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        served
    }
}

impl Drop for InProcessNode {
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        // Bounded: a node that does not end in time is left to the process's
        // exit rather than hanging the test that dropped it.
        if self.done.recv_timeout(KILLED_WITHIN).is_ok() {
            let _ = thread.join();
        } else {
            eprintln!(
                "in-process node on {} did not stop within {KILLED_WITHIN:?}",
                self.client.addr
            );
        }
    }
}

/// What the binary does once per process before serving: logging (text on
/// stderr, `SUMU_LOG` or `warn`, as the process nodes of the tests run)
/// and the descriptor limit lifted to the hard one.
fn process_setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = std::env::var("SUMU_LOG").unwrap_or_else(|_| "warn".to_string());
        sumu_node::init_logging(LogFormat::Text, &filter);
        sumu_node::raise_file_limit();
    });
}

/// `e` and its causes on one line: `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}
