//! Helpers of the end-to-end tests: start a server process on a free loopback port, wait
//! for readiness, run `sumu-loadtest` as a process and read its JSON report.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A server child process, killed on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub use sumu_testkit::{scratch, workspace_binary};

/// Starts `program args...` (with `{port}` replaced) and waits until GET /readyz is 200.
pub fn start_server(program: &Path, args: &[&str], name: &str) -> Server {
    let port = free_port();
    let log = scratch(name).join("server.log");
    let log_file = std::fs::File::create(&log).expect("create log");
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{port}", &port.to_string()))
        .collect();
    let child = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("clone log"))
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    wait_ready(Server { child, port, log }, program)
}

/// Runs `sumu-loadtest args... --json FILE --no-progress` and returns (exit code, report).
pub fn loadtest(args: &[&str], json: &Path) -> (i32, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_sumu-loadtest"))
        .args(args)
        .arg("--json")
        .arg(json)
        .arg("--no-progress")
        .stdin(Stdio::null())
        .output()
        .expect("run sumu-loadtest");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let text = std::fs::read_to_string(json)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stdout:\n{stdout}\nstderr:\n{stderr}"));
    let report: Value = serde_json::from_str(&text).expect("valid JSON report");
    println!("{stdout}");
    (output.status.code().unwrap_or(-1), report)
}

pub fn counter(report: &Value, name: &str) -> u64 {
    report["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("counter {name} missing in {report:#}"))
}

pub fn assert_no_errors(report: &Value) {
    let errors = report["errors"].as_object().expect("errors object");
    assert!(errors.is_empty(), "errors: {:#}", report["errors"]);
}

pub fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
        .display()
        .to_string()
}

#[allow(unused_imports)] // only the SQS test uses it
pub use sumu_testkit::Emulator;
use sumu_testkit::{free_port, http_status};

/// Like [`start_server`], with extra environment variables.
pub fn start_server_with_env(
    program: &Path,
    args: &[&str],
    env: &[(String, String)],
    name: &str,
) -> Server {
    let port = free_port();
    let log = scratch(name).join("server.log");
    let log_file = std::fs::File::create(&log).expect("create log");
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{port}", &port.to_string()))
        .collect();
    let child = Command::new(program)
        .args(&args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("clone log"))
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    wait_ready(Server { child, port, log }, program)
}

fn wait_ready(mut server: Server, program: &Path) -> Server {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if http_status(server.port, "/readyz") == Some(200) {
            return server;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!(
                "{} exited with {status}: {}",
                program.display(),
                std::fs::read_to_string(&server.log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{} not ready within 30 s: {}",
        program.display(),
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
}

/// Like [`loadtest`], with extra environment variables.
pub fn loadtest_with_env(args: &[&str], env: &[(String, String)], json: &Path) -> (i32, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_sumu-loadtest"))
        .args(args)
        .arg("--json")
        .arg(json)
        .arg("--no-progress")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .output()
        .expect("run sumu-loadtest");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let text = std::fs::read_to_string(json)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stdout:\n{stdout}\nstderr:\n{stderr}"));
    println!("{stdout}");
    (
        output.status.code().unwrap_or(-1),
        serde_json::from_str(&text).expect("valid JSON report"),
    )
}
