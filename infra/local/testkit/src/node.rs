//! A real `sumu-node` process on a loopback port chosen at run time (it
//! binds `127.0.0.1:0` and prints the address), killed on drop; tests talk
//! to it through [`NodeClient`] (it dereferences to one). With
//! `--tls-listen 127.0.0.1:0` among its arguments ([`Node::tls`]) it also
//! waits for the TLS listener's line (`sumu-node listening on ADDR (tls)`)
//! and keeps that address. For what needs no process (no signal, exit
//! code, RSS or TLS file), [`crate::in_process::InProcessNode`] is faster.

use std::io::{BufRead, BufReader};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::NodeClient;

/// `<target>/release/<name>`, found from the running test binary
/// (`<target>/release/deps/<test>`), or `SUMU_NODE_BIN` for `sumu-node`.
pub fn workspace_binary(name: &str) -> PathBuf {
    if name == "sumu-node" {
        if let Some(bin) = std::env::var_os("SUMU_NODE_BIN") {
            return PathBuf::from(bin);
        }
    }
    let exe = std::env::current_exe().expect("current_exe");
    let release = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/release/deps");
    let path = release.join(name);
    assert!(
        path.exists(),
        "{} not found: build the whole workspace first (cargo build --release --workspace)",
        path.display()
    );
    path
}

/// A scratch directory for one test, under the system's temp dir.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sumu-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A running node; killed on drop.
pub struct Node {
    pub child: Child,
    client: NodeClient,
}

impl Deref for Node {
    type Target = NodeClient;

    fn deref(&self) -> &NodeClient {
        &self.client
    }
}

/// How a node that was expected to fail at start ended: its exit code
/// (`None`: still running at the deadline, then killed) and its stderr.
#[derive(Debug)]
pub struct Exited {
    pub code: Option<i32>,
    pub stderr: String,
}

impl Node {
    /// `--dev` node on 127.0.0.1:0 with extra flags. The in-process demo
    /// backend is off (`--demo-backend=false`), so a test sees exactly the
    /// frames it caused; tests of the demo start the node themselves.
    pub fn dev(extra: &[&str]) -> Node {
        let mut args = vec!["--dev", "--demo-backend=false"];
        args.extend_from_slice(extra);
        Node::start(&args, "dev")
    }

    /// A node with a TLS listener on a run-time port beside the plain one
    /// (`--tls-listen 127.0.0.1:0`); `args` name the certificate
    /// (`--tls-cert F --tls-key F`, or `--dev-tls`) and anything else.
    pub fn tls(args: &[&str], api_key: &str) -> Node {
        let mut all = vec!["--tls-listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Node::start(&all, api_key)
    }

    /// Runs `sumu-node --listen 127.0.0.1:0 ARGS` expecting it to stop by
    /// itself (a refused configuration); killed after `within`.
    pub fn run_to_exit(args: &[&str], within: Duration) -> Exited {
        Node::run_to_exit_with_env(args, &[], within)
    }

    /// [`Node::run_to_exit`] with extra environment variables (e.g. an
    /// emulator's, for a node that must fail before it joins).
    pub fn run_to_exit_with_env(args: &[&str], env: &[(&str, &str)], within: Duration) -> Exited {
        crate::may_start("a sumu-node process");
        let mut child = Command::new(workspace_binary("sumu-node"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("SUMU_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sumu-node");
        let deadline = Instant::now() + within;
        let code = loop {
            match child.try_wait().expect("wait") {
                Some(status) => break status.code(),
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            use std::io::Read;
            let _ = pipe.read_to_string(&mut stderr);
        }
        Exited { code, stderr }
    }

    pub fn start(args: &[&str], api_key: &str) -> Node {
        Node::start_with_env(args, api_key, &[])
    }

    pub fn start_with_env(args: &[&str], api_key: &str, env: &[(&str, &str)]) -> Node {
        crate::may_start("a sumu-node process");
        let mut cmd = Command::new(workspace_binary("sumu-node"));
        cmd.args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("SUMU_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn sumu-node");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let wants_tls = args.contains(&"--tls-listen");
        let (mut addr, mut tls_addr) = (None, None);
        while addr.is_none() || (wants_tls && tls_addr.is_none()) {
            let line = lines
                .next()
                .expect("node exited before listening")
                .expect("read stdout");
            if let Some(rest) = line.strip_prefix("sumu-node listening on ") {
                match rest.trim().strip_suffix(" (tls)") {
                    Some(tls) => tls_addr = Some(tls.parse().expect("TLS address")),
                    None => addr = Some(rest.trim().parse().expect("address")),
                }
            }
        }
        let addr = addr.expect("plain address");
        // Keep draining stdout so the node never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Node {
            child,
            client: NodeClient {
                addr,
                tls_addr,
                api_key: api_key.to_string(),
            },
        }
    }

    /// Sends `sig` (e.g. `libc::SIGTERM`) to the node.
    pub fn signal(&self, sig: i32) {
        crate::sys::signal(self.child.id(), sig);
    }

    /// The node's resident set size in bytes (VmRSS of /proc/PID/status).
    pub fn rss_bytes(&self) -> usize {
        rss_bytes(self.child.id())
    }

    /// Stops the node with SIGTERM and waits for it to exit (its drain), at
    /// most `within`; panics if it is still running then.
    pub fn stop(mut self, within: Duration) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + within;
        while self.child.try_wait().expect("wait").is_none() {
            assert!(
                Instant::now() < deadline,
                "the node did not stop within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The resident set size of process `pid` in bytes (VmRSS of /proc/PID/status).
pub fn rss_bytes(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let kib: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
