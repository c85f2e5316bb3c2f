//! The engine traits: everything a node shares with the rest of the fleet
//! goes through these, so the `memory` (one node) and `aws` (a cluster)
//! engines are interchangeable.

pub(crate) mod aws;
pub(crate) mod bus;
mod error;
mod health;
pub(crate) mod history;
pub(crate) mod memory;
mod memory_history;

use std::sync::Arc;

use async_trait::async_trait;
use sumu_shared::NotificationRequest;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use error::{kind_of_code as error_kind_of_code, AwsError, AwsErrorKind, EngineError};
pub(crate) use health::Health;

/// A connection as the shared store records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectionRecord {
    pub(crate) user_id: String,
    pub(crate) connection_id: String,
    pub(crate) node_id: String,
    /// Milliseconds since the Unix epoch.
    pub(crate) connected_at: u64,
    /// Epoch seconds after which the row is garbage (the TTL attribute).
    pub(crate) delete_at: u64,
}

/// Where connections are recorded for the fleet (and presence derives from).
#[async_trait]
pub(crate) trait ConnectionStore: Send + Sync {
    /// Records a connection; called before its socket is announced open.
    async fn register(&self, record: &ConnectionRecord) -> Result<(), EngineError>;
    /// Forgets a connection; called when its socket closed.
    async fn unregister(&self, user_id: &str, connection_id: &str) -> Result<(), EngineError>;
}

/// The SUMU routes a client frame can take out of the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputRoute {
    /// SNS messages topic.
    Publish,
    /// SQS messages queue.
    Send,
}

impl OutputRoute {
    pub(crate) fn source(self) -> &'static str {
        match self {
            OutputRoute::Publish => sumu_shared::attributes::SOURCE_PUBLISH,
            OutputRoute::Send => sumu_shared::attributes::SOURCE_SEND,
        }
    }
}

/// A message for the backends (a client's `publish`/`send`, or a presence
/// event), with the trusted attributes.
#[derive(Debug, Clone)]
pub(crate) struct ClientMessage {
    pub(crate) route: OutputRoute,
    /// The `source` attribute.
    pub(crate) source: &'static str,
    /// From the verified token.
    pub(crate) user_id: String,
    /// The node's clock, ms since the epoch.
    pub(crate) timestamp: u64,
    /// The client's `message`, as the raw JSON text it sent.
    pub(crate) body: String,
}

/// Where client `publish`/`send` frames go.
#[async_trait]
pub(crate) trait ClientOutput: Send + Sync {
    async fn emit(&self, message: ClientMessage) -> Result<(), EngineError>;
}

/// The result of routing one notification request.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RouteOutcome {
    /// Sockets on this node that were handed the payload.
    pub(crate) local_deliveries: usize,
    /// Mesh messages sent: one per other node holding targets (multicast),
    /// or the one mesh-topic publish (broadcast).
    pub(crate) mesh_messages: usize,
}

/// Routes notification requests to their connections, wherever they are.
#[async_trait]
pub(crate) trait Router: Send + Sync {
    async fn route(
        &self,
        request_id: &str,
        request: NotificationRequest,
    ) -> Result<RouteOutcome, EngineError>;
}

/// Background work an engine runs (notification pollers, presence, mesh
/// inbox, heartbeats).
#[async_trait]
pub(crate) trait Background: Send + Sync {
    /// Joins the fleet and spawns the engine's tasks on `tasks`; each stops
    /// once `stop` is cancelled. The caller awaits them as one set.
    async fn start(&self, tasks: &TaskTracker, stop: CancellationToken) -> Result<(), EngineError>;
    /// First step of a drain: stop taking new work from shared queues (the
    /// in-flight receives finish and what they bring is handled), while the
    /// node's sockets are still served. Returns once that is done.
    async fn stop_intake(&self) {}
    /// Graceful leave, once the tasks ended: deregister the node.
    async fn leave(&self);
}

/// One engine: the trait objects the node is wired with.
#[derive(Clone)]
pub(crate) struct Engine {
    pub(crate) store: Arc<dyn ConnectionStore>,
    pub(crate) output: Arc<dyn ClientOutput>,
    pub(crate) router: Arc<dyn Router>,
    pub(crate) background: Arc<dyn Background>,
    /// The memory engine's in-process bus (None for `aws`).
    pub(crate) bus: Option<bus::Bus>,
    /// Whether new sockets can be registered now (`/readyz`).
    pub(crate) health: Arc<Health>,
    /// The recovery window's history (`None`: recovery is off).
    pub(crate) history: Option<Arc<dyn history::History>>,
}
