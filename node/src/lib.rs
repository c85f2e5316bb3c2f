//! sumu-node: a self-hosted, horizontally scaled WebSocket gateway that
//! speaks SUMU's contract. See the repository's README.md and DESIGN.md.

pub mod auth;
pub mod config;
pub mod engine;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod registry;
pub mod server;
pub mod session;
