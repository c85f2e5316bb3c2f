//! The load tester's integration tests use the workspace's one set of test
//! helpers (`sumu-testkit`): the load tester run as a process with its report
//! read back, a node or a reference peer on a run-time port, the emulator;
//! only the fixture paths are this crate's own.

pub use sumu_testkit::loadtest::{assert_no_errors, counter, loadtest, loadtest_with_env};
pub use sumu_testkit::server::Server;
pub use sumu_testkit::{scratch, workspace_binary, Emulator, Node};

/// The path of a file under `loadtest/tests/fixtures/`.
pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}
