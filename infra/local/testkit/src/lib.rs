//! The one set of test helpers every sumu crate's integration tests use:
//! a node on a run-time port, served in this process ([`in_process`], the
//! fast tier's) or as a real `sumu-node` process ([`node`]), both reached
//! through one client ([`client`]); a WebSocket client ([`ws`]), token
//! signing ([`tokens`]), waiting for a condition with a deadline
//! ([`eventually`]), a ministack AWS emulator (installed into
//! `infra/local/.venv` by `infra/local/emulator install`, which
//! `infra/local/test-all` runs) on a loopback port chosen at run time, and
//! [`tls`], a run-time test PKI and a `wss://` client trusting one CA;
//! [`cluster`], a local fleet (emulator, nodes, HAProxy) driven through
//! `infra/local/cluster`; [`server`], a reference peer process, and
//! [`loadtest`], the load tester run as a process with its report read
//! back. Every process a helper starts dies with its value.
//!
//! The fast tier (`infra/local/test-fast`) starts no process: it sets
//! `SUMU_TEST_TIER=fast`, and every helper that would start one panics
//! instead, naming it, so a test that needs a process cannot slip into it.

pub mod client;
pub mod cluster;
pub mod in_process;
pub mod loadtest;
pub mod node;
pub mod proxy;
pub mod server;
pub mod sys;
pub mod tls;
pub mod tokens;
pub mod ws;

pub use client::NodeClient;
pub use in_process::InProcessNode;
pub use node::{scratch, workspace_binary, Node};

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable that names the test tier being run; `fast`
/// forbids starting processes.
pub const TIER_ENV: &str = "SUMU_TEST_TIER";

/// Panics in the fast tier (`SUMU_TEST_TIER=fast`), which starts no
/// process; every helper that starts `what` calls it first.
pub(crate) fn may_start(what: &str) {
    if starts_no_process(std::env::var(TIER_ENV).ok().as_deref()) {
        panic!(
            "the fast tier starts no process, and this test starts {what}: \
             serve the node in process (sumu_testkit::InProcessNode), or move the \
             test out of the fast set (node/tests/it/fast/)"
        );
    }
}

/// Whether the tier named by `SUMU_TEST_TIER` (if set) starts no process.
fn starts_no_process(tier: Option<&str>) -> bool {
    tier == Some("fast")
}

/// A free loopback TCP port (small race until it is bound again).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The status of `GET path` on a loopback port, if anything answered.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    http_status_after(port, path, &[])
}

/// [`http_status`] with `preamble` sent first (a PROXY v2 header, for a
/// node started with `--proxy-protocol`).
pub fn http_status_after(port: u16, path: &str, preamble: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(preamble).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split_whitespace().nth(1)?.parse().ok()
}

/// A ministack emulator on a run-time port; killed on drop.
pub struct Emulator {
    child: Child,
    pub endpoint: String,
}

impl Emulator {
    pub fn start() -> Emulator {
        may_start("the ministack emulator");
        let exe = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/ministack");
        assert!(
            exe.exists(),
            "ministack is not installed: run `infra/local/emulator install`"
        );
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&exe)
                .env("BIND_HOST", "127.0.0.1")
                .env("GATEWAY_PORT", port.to_string())
                .env("IOT_MTLS_ENABLED", "0")
                .env("SFTP_ENABLED", "0")
                .env("LOG_LEVEL", "WARNING")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn ministack");
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // port taken meanwhile: try another
                }
                if http_status(port, "/_ministack/health") == Some(200) {
                    return Emulator {
                        child,
                        endpoint: format!("http://127.0.0.1:{port}"),
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("ministack did not start");
    }

    /// Sends `sig` to the emulator: `libc::SIGSTOP` stalls every AWS call
    /// (an outage that answers nothing), `libc::SIGCONT` ends it.
    pub fn signal(&self, sig: i32) {
        sys::signal(self.child.id(), sig);
    }

    /// SIGSTOP: every AWS call stalls (as in an AWS outage) until [`Emulator::thaw`].
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`Emulator::freeze`].
    pub fn thaw(&self) {
        self.signal(libc::SIGCONT);
    }

    /// The environment a node (or `bootstrap`) needs to use this emulator.
    pub fn env(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            ("SUMU_ENGINE".into(), "aws".into()),
            ("SUMU_AWS_ENDPOINT".into(), self.endpoint.clone()),
            ("SUMU_AWS_REGION".into(), "us-east-1".into()),
            ("SUMU_NAME_PREFIX".into(), prefix.into()),
            ("AWS_ACCESS_KEY_ID".into(), "test".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
        ]
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // A stopped process dies of SIGKILL too; continue it anyway so no
        // test leaves a stopped emulator behind if the kill fails.
        sys::signal(self.child.id(), libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `check` answers true, polling every 100 ms; panics with
/// `what` once `within` has passed.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SDK configuration for the emulator (what a backend would use locally).
pub async fn sdk(emulator: &Emulator) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&emulator.endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .load()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_fast_tier_forbids_processes() {
        assert!(starts_no_process(Some("fast")));
        for other in [None, Some(""), Some("full"), Some("FAST ")] {
            assert!(!starts_no_process(other), "{other:?}");
        }
    }
}
