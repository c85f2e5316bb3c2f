//! Running the load tester as its users do: the `sumu-loadtest` binary as a
//! process, with `--json FILE --no-progress`, and its JSON report read back
//! (exit code and report); and the checks tests make on a report.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::workspace_binary;

/// Runs `sumu-loadtest args... --json FILE --no-progress`; answers its exit
/// code and report (and prints its stdout, for the test's log).
pub fn loadtest(args: &[&str], json: &Path) -> (i32, Value) {
    loadtest_with_env(args, &[], json)
}

/// [`loadtest`] with extra environment variables.
pub fn loadtest_with_env(args: &[&str], env: &[(String, String)], json: &Path) -> (i32, Value) {
    crate::may_start("a sumu-loadtest process");
    let output = Command::new(workspace_binary("sumu-loadtest"))
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
    let report: Value = serde_json::from_str(&text).expect("valid JSON report");
    println!("{stdout}");
    (output.status.code().unwrap_or(-1), report)
}

/// One counter of a report; panics (showing the report) when it is missing.
pub fn counter(report: &Value, name: &str) -> u64 {
    report["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("counter {name} missing in {report:#}"))
}

pub fn assert_no_errors(report: &Value) {
    let errors = report["errors"].as_object().expect("errors object");
    assert!(errors.is_empty(), "errors: {:#}", report["errors"]);
}
