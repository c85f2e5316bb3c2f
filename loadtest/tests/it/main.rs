//! The load tester's integration tests: one binary (linked once), a module per
//! area: end-to-end runs against real servers, and the fleet drills.

#![allow(dead_code, unused_imports, unreachable_pub)]

mod common;

mod e2e_node;
mod e2e_node_sqs;
mod e2e_peer_min;
mod e2e_tls;
mod fleet_drills;
mod fleet_recovery;
