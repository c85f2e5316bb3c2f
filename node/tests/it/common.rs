//! The node's integration tests use the workspace's one set of test
//! helpers (`sumu-testkit`); only the fixture paths are this crate's own.

pub use sumu_testkit::node::Node;
pub use sumu_testkit::tokens::{now_secs, serve_file, serve_file_counted, sign};
pub use sumu_testkit::ws::{close_code, next_text, refused, send_fragmented, send_text, Ws};
pub use sumu_testkit::{eventually, sdk, Emulator, InProcessNode, NodeClient};

/// The path of a file under `node/tests/fixtures/`.
pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}
