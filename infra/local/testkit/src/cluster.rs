//! A local fleet for tests: `infra/local/cluster` (the ministack emulator, N
//! `sumu-node --engine aws` nodes and HAProxy in front of them) driven from
//! Rust, in a temporary state directory of its own so tests can run several
//! clusters at once.
//!
//! Invariant: every process the script starts is stopped by `down` when the
//! [`Cluster`] is dropped, also when the test panics. The state directory
//! (logs, haproxy.cfg) is removed after a passing test and kept, with its path
//! printed, after a failing one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// `infra/local/cluster`.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cluster")
}

/// The `sumu-node` the cluster runs: `$SUMU_NODE_BIN`, else
/// `<target>/release/sumu-node` beside the running test binary
/// (`<target>/release/deps/<test>`), else the script's default.
pub fn node_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("SUMU_NODE_BIN") {
        return Some(PathBuf::from(bin));
    }
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("sumu-node");
    bin.exists().then_some(bin)
}

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub nodes: usize,
    /// Extra flags of every node (kept for `start`).
    pub node_args: Vec<String>,
    /// The node binary; None = [`node_binary`].
    pub node_bin: Option<PathBuf>,
}

/// A running local fleet; `down` on drop.
pub struct Cluster {
    dir: PathBuf,
    node_bin: Option<PathBuf>,
    vars: BTreeMap<String, String>,
    nodes: Vec<String>,
    node_urls: Vec<String>,
    up: bool,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn fresh_dir() -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!(
        "sumu-cluster-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// `KEY=VALUE` lines into a map (other lines are ignored).
pub fn parse_vars(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Cluster {
    /// `nodes` nodes with `extra_node_args` each (e.g. `["--heartbeat-secs", "2"]`).
    pub fn up(nodes: usize, extra_node_args: &[&str]) -> Cluster {
        Cluster::up_with(ClusterOptions {
            nodes,
            node_args: extra_node_args.iter().map(|s| s.to_string()).collect(),
            node_bin: None,
        })
    }

    pub fn up_with(options: ClusterOptions) -> Cluster {
        let dir = fresh_dir();
        std::fs::create_dir_all(&dir).expect("create the cluster state dir");
        let mut cluster = Cluster {
            dir,
            node_bin: options.node_bin.or_else(node_binary),
            vars: BTreeMap::new(),
            nodes: Vec::new(),
            node_urls: Vec::new(),
            up: true,
        };
        let mut args = vec![
            "up".to_string(),
            "--nodes".into(),
            options.nodes.to_string(),
        ];
        if !options.node_args.is_empty() {
            args.push("--".into());
            args.extend(options.node_args);
        }
        let out = cluster.run(&args);
        if !out.status.success() {
            // Drop runs `down` for whatever did start.
            panic!(
                "infra/local/cluster up failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cluster.vars = parse_vars(&String::from_utf8_lossy(&out.stdout));
        let list = |key: &str| -> Vec<String> {
            cluster
                .vars
                .get(key)
                .map(|v| v.split(',').map(str::to_string).collect())
                .unwrap_or_default()
        };
        cluster.nodes = list("SUMU_CLUSTER_NODES");
        cluster.node_urls = list("SUMU_CLUSTER_NODE_URLS");
        assert_eq!(
            cluster.nodes.len(),
            options.nodes,
            "cluster up printed {:?}",
            cluster.vars
        );
        cluster
    }

    fn command(&self, args: &[String]) -> Command {
        crate::may_start("the local fleet (infra/local/cluster)");
        let mut cmd = Command::new(script());
        cmd.args(args)
            .env("SUMU_CLUSTER_DIR", &self.dir)
            .env_remove("SUMU_CLUSTER_NODE_ARGS")
            .stdin(Stdio::null());
        if let Some(bin) = &self.node_bin {
            cmd.env("SUMU_NODE_BIN", bin);
        }
        cmd
    }

    fn run(&self, args: &[String]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script().display()))
    }

    /// Runs `cluster ARGS...`, panicking with its stderr when it fails.
    pub fn control(&self, args: &[&str]) -> String {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = self.run(&args);
        assert!(
            out.status.success(),
            "infra/local/cluster {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGKILL (a crash); returns once the process is gone.
    pub fn kill(&self, node: &str) {
        self.control(&["kill", node]);
    }

    /// SIGTERM (a graceful drain); returns once the process exited.
    pub fn stop(&self, node: &str) {
        self.control(&["stop", node]);
    }

    /// SIGTERM without waiting for the drain to finish.
    pub fn stop_no_wait(&self, node: &str) {
        self.control(&["stop", node, "--no-wait"]);
    }

    /// Restarts `node` with the same id, port and flags; returns once it is ready and
    /// the balancer routes to it.
    pub fn start(&self, node: &str) {
        self.control(&["start", node]);
    }

    /// SIGSTOP of a node.
    pub fn freeze(&self, node: &str) {
        self.control(&["freeze", node]);
    }

    /// SIGCONT of a node.
    pub fn thaw(&self, node: &str) {
        self.control(&["thaw", node]);
    }

    /// SIGSTOP of the emulator (every AWS call stalls).
    pub fn freeze_emulator(&self) {
        self.control(&["freeze", "emulator"]);
    }

    pub fn thaw_emulator(&self) {
        self.control(&["thaw", "emulator"]);
    }

    /// The log of a node (or `emulator`, `balancer`).
    pub fn logs(&self, node: &str) -> String {
        self.control(&["logs", node])
    }

    /// `cluster status` (processes, the balancer's view, readyz).
    pub fn status(&self) -> String {
        let out = self.run(&["status".to_string()]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The balancer's base URL (`SUMU_URL`).
    pub fn url(&self) -> &str {
        self.var("SUMU_URL")
    }

    /// The balancer's WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("{}/push", self.url().replacen("http://", "ws://", 1))
    }

    /// Node ids, `n1`..`nN`.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// A node's own base URL (bypassing the balancer).
    pub fn node_url(&self, node: &str) -> &str {
        let i = self
            .nodes
            .iter()
            .position(|n| n == node)
            .unwrap_or_else(|| panic!("no node {node} in {:?}", self.nodes));
        &self.node_urls[i]
    }

    pub fn node_urls(&self) -> &[String] {
        &self.node_urls
    }

    /// One of the printed `KEY=VALUE` variables.
    pub fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("cluster up printed no {key}: {:?}", self.vars))
    }

    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.vars
    }

    pub fn aws_endpoint(&self) -> &str {
        self.var("SUMU_AWS_ENDPOINT")
    }

    pub fn name_prefix(&self) -> &str {
        self.var("SUMU_NAME_PREFIX")
    }

    /// The shared HS256 secret every node accepts tokens of.
    pub fn hs256_secret(&self) -> &str {
        self.var("SUMU_HS256_SECRET")
    }

    /// What a backend needs to send notification requests to the queue (and what
    /// `sumu-loadtest --via sqs` reads): AWS client settings of the emulator and
    /// `SUMU_NOTIFICATIONS_QUEUE_URL`.
    pub fn backend_env(&self) -> Vec<(String, String)> {
        [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION",
            "AWS_ENDPOINT_URL",
            "SUMU_NOTIFICATIONS_QUEUE_URL",
            "SUMU_MESSAGES_QUEUE_URL",
            "SUMU_MESSAGES_TOPIC_ARN",
        ]
        .iter()
        .map(|k| (k.to_string(), self.var(k).to_string()))
        .collect()
    }

    /// The state directory (logs, haproxy.cfg, pids).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops everything (idempotent; also what drop does).
    pub fn down(&mut self) {
        if !self.up {
            return;
        }
        self.up = false;
        // Never panics: it runs from drop, also while a failed test unwinds.
        match self.command(&["down".to_string()]).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "infra/local/cluster down failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("cannot run {}: {e}", script().display()),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.down();
        if std::thread::panicking() {
            eprintln!(
                "cluster state and logs kept in {} (SUMU_CLUSTER_DIR={0} infra/local/cluster logs n1)",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_key_value_lines() {
        let vars = parse_vars("SUMU_URL=http://127.0.0.1:1\nnoise\nA_B=x=y\n=z\nbad key=1\n");
        assert_eq!(vars.len(), 2);
        assert_eq!(vars["SUMU_URL"], "http://127.0.0.1:1");
        assert_eq!(vars["A_B"], "x=y");
    }

    #[test]
    fn fresh_dirs_differ() {
        assert_ne!(fresh_dir(), fresh_dir());
    }
}
