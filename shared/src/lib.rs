//! Wire types of sumu, the SUMU-compatible WebSocket gateway.
//!
//! Everything that crosses a process boundary lives here so that the node,
//! the load tester and the tests agree on one definition: client frames,
//! server frames, notification requests, presence events, mesh envelopes,
//! message attributes, JWT claims, and the recovery window's frames and
//! cursor.

pub mod attributes;
pub mod claims;
pub mod client;
pub mod depth;
pub mod mesh;
pub mod notification;
pub mod presence;
mod raw;
pub mod recovery;
pub mod server;

pub use client::{ClientAction, ClientFrame, FrameError};
pub use depth::{json_depth, DEFAULT_MAX_JSON_DEPTH};
pub use notification::{NotificationError, NotificationRequest};
pub use presence::{PresenceEvent, PresenceStatus};
pub use server::ServerFrame;
