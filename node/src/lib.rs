//! sumu-node: a self-hosted, horizontally scaled WebSocket gateway that
//! speaks SUMU's contract. See the repository's README.md and DESIGN.md.
//!
//! Layers, lowest first; a module uses only modules of its own layer or
//! below (`node/tests/it/layers.rs` fails on an import that points up, or on
//! any cycle):
//!
//! 1. leaves: `sys` (the only `unsafe`: raw libc calls), `clock`,
//!    `config`, `logging`, `metrics`, `close` (why a socket closed),
//!    `outbound` (one socket's queue: what it may have queued, the frames
//!    its response stream writes, the messages for its session, and
//!    cutting it off),
//!    `auth` (tokens), `limits` (which new sockets a node admits),
//!    `proxy_protocol` (the PROXY v2 header a proxy puts before a
//!    connection's bytes), `tls` (the TLS listener's certificate, its
//!    rotation, `--dev-tls`).
//! 2. `hub`: this node's sockets, by connection and by user; it knows a
//!    plain socket only as its queue (`outbound`'s `Outbound`: frames, and
//!    `ToSession` messages for the session), a recovering one also as the
//!    messages it sends its `Resumer` ([`hub`]'s `ToResumer`).
//! 3. `engine`: the fleet behind the traits (`memory` or `aws`); engines are
//!    handed the hub's delivery handle when they are built.
//! 4. `session`: the actor of one socket; it uses the engine's client
//!    output and registers with the hub. `demo`: SUMU's demo backend, its
//!    pure logic (`demo::logic`, also run by the `sumu-demo-backend`
//!    binary) and its in-process runner (`--dev` on the memory engine), a
//!    client of the engine.
//! 5. `http`: the upgrade, the backend API, health and dev pages.
//! 6. `server`: wiring and lifecycle; `main.rs` only parses the command
//!    line and wires the shutdown to signals.

mod auth;
mod clock;
mod close;
pub mod config;
pub mod demo;
mod engine;
mod http;
mod hub;
mod limits;
mod logging;
mod metrics;
mod outbound;
mod proxy_protocol;
pub mod server;
mod session;
mod sys;
pub mod tls;

/// Sets up logging (text or JSON on stderr).
pub fn init_logging(format: config::LogFormat, filter: &str) {
    logging::init(format, filter);
}

/// Lifts the soft descriptor limit to the hard one (one per socket).
pub fn raise_file_limit() {
    sys::raise_file_limit();
}
