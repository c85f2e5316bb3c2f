//! The node's integration tests: one binary (linked once), a module per area.
//! Helpers come from the workspace's one set of test helpers (`sumu-testkit`).
//! `fast` holds the tests that start no process (the fast tier,
//! `infra/local/test-fast`); the other modules start real processes.

#![allow(dead_code, unused_imports, unreachable_pub)]

mod common;

mod aws;
mod aws_output;
mod demo_backend;
mod fast;
mod fleet_faults;
mod gateway;
mod hostile;
mod layers;
mod limits;
mod recovery;
mod tls;
mod vendored;
