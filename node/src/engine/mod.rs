//! The engine traits: everything a node shares with the rest of the fleet
//! goes through these, so the `memory` (one node) and `aws` (a cluster)
//! engines are interchangeable.

pub mod aws;
pub mod memory;

use std::sync::Arc;

use async_trait::async_trait;
use sumu_shared::NotificationRequest;

use crate::registry::LocalDelivery;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{service} {operation} failed: {message}")]
    Aws {
        service: &'static str,
        operation: &'static str,
        message: String,
    },
    #[error("engine unavailable: {0}")]
    Unavailable(String),
}

/// A connection as the shared store records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    pub user_id: String,
    pub connection_id: String,
    pub node_id: String,
    /// Milliseconds since the Unix epoch.
    pub connected_at: u64,
    /// Epoch seconds after which the row is garbage (the TTL attribute).
    pub delete_at: u64,
}

/// Where connections are recorded for the fleet (and presence derives from).
#[async_trait]
pub trait ConnectionStore: Send + Sync {
    /// Records a connection; called before its socket is announced open.
    async fn register(&self, record: &ConnectionRecord) -> Result<(), EngineError>;
    /// Forgets a connection; called when its socket closed.
    async fn unregister(&self, user_id: &str, connection_id: &str) -> Result<(), EngineError>;
}

/// The SUMU routes a client frame can take out of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputRoute {
    /// SNS messages topic.
    Publish,
    /// SQS messages queue.
    Send,
}

impl OutputRoute {
    pub fn source(self) -> &'static str {
        match self {
            OutputRoute::Publish => sumu_shared::attributes::SOURCE_PUBLISH,
            OutputRoute::Send => sumu_shared::attributes::SOURCE_SEND,
        }
    }
}

/// A message for the backends (a client's `publish`/`send`, or a presence
/// event), with the trusted attributes.
#[derive(Debug, Clone)]
pub struct ClientMessage {
    pub route: OutputRoute,
    /// The `source` attribute.
    pub source: &'static str,
    /// From the verified token.
    pub user_id: String,
    /// The node's clock, ms since the epoch.
    pub timestamp: u64,
    /// The client's `message`, as the raw JSON text it sent.
    pub body: String,
}

/// Where client `publish`/`send` frames go.
#[async_trait]
pub trait ClientOutput: Send + Sync {
    async fn emit(&self, message: ClientMessage) -> Result<(), EngineError>;
}

/// The result of routing one notification request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RouteOutcome {
    /// Sockets on this node that were handed the payload.
    pub local_deliveries: usize,
    /// Mesh messages sent: one per other node holding targets (multicast),
    /// or the one mesh-topic publish (broadcast).
    pub mesh_messages: usize,
}

/// Routes notification requests to their connections, wherever they are.
#[async_trait]
pub trait Router: Send + Sync {
    async fn route(
        &self,
        request_id: &str,
        request: NotificationRequest,
    ) -> Result<RouteOutcome, EngineError>;
}

/// Background work an engine runs (notification pollers, presence, mesh
/// inbox, heartbeats), started once the node can deliver locally.
#[async_trait]
pub trait Background: Send + Sync {
    async fn start(&self, local: LocalDelivery) -> Result<(), EngineError>;
    /// Graceful shutdown: stop pollers, deregister the node.
    async fn stop(&self);
}

/// One engine: the trait objects the node is wired with.
#[derive(Clone)]
pub struct Engine {
    pub store: Arc<dyn ConnectionStore>,
    pub output: Arc<dyn ClientOutput>,
    pub router: Arc<dyn Router>,
    pub background: Arc<dyn Background>,
    /// The memory engine's in-process bus (None for `aws`).
    pub bus: Option<memory::Bus>,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
