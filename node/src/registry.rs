//! The registry actor: this node's connections, by connection id and by
//! user, and delivery to them with one shared, pre-serialized payload.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use actix::prelude::*;
use bytestring::ByteString;
use sumu_shared::NotificationRequest;

use crate::engine::EngineError;
use crate::metrics::METRICS;
use crate::session::outbound::Outbound;
use crate::session::{Deliver, Session, Shutdown};

/// What the registry holds per socket.
#[derive(Clone)]
pub struct SessionHandle {
    pub addr: Addr<Session>,
    pub outbound: Arc<Outbound>,
}

impl SessionHandle {
    /// Queues `payload` unless that would pass the socket's outbound cap,
    /// in which case the slow reader is cut off.
    fn deliver(&self, payload: &ByteString) -> bool {
        if !self.outbound.reserve(payload.len()) {
            return false;
        }
        self.addr.do_send(Deliver(payload.clone()));
        true
    }
}

struct Entry {
    user_id: Arc<str>,
    handle: SessionHandle,
}

#[derive(Default)]
pub struct Registry {
    connections: HashMap<Arc<str>, Entry>,
    users: HashMap<Arc<str>, Vec<Arc<str>>>,
    draining: bool,
}

impl Actor for Registry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(usize::MAX);
    }
}

#[derive(Message)]
#[rtype(result = "Result<(), EngineError>")]
pub struct Register {
    pub connection_id: Arc<str>,
    pub user_id: Arc<str>,
    pub handle: SessionHandle,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister {
    pub connection_id: Arc<str>,
}

/// Deliver to every connection of these users.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct DeliverToUsers {
    pub users: Vec<String>,
    pub payload: ByteString,
}

/// Deliver to these connections; answers which ones this node does not hold.
#[derive(Message)]
#[rtype(result = "ConnectionsReport")]
pub struct DeliverToConnections {
    pub connection_ids: Vec<String>,
    pub payload: ByteString,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConnectionsReport {
    pub delivered: usize,
    pub missing: Vec<String>,
}

/// Deliver to every local connection except the excluded users'.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Broadcast {
    pub exclude_users: Vec<String>,
    pub payload: ByteString,
}

/// The users with at least one socket here.
#[derive(Message)]
#[rtype(result = "Vec<String>")]
pub struct ConnectedUsers;

#[derive(Message)]
#[rtype(result = "usize")]
pub struct Count;

/// Which of these connection ids this node does not hold.
#[derive(Message)]
#[rtype(result = "Vec<String>")]
pub struct Missing(pub Vec<String>);

/// Stop accepting registrations and hand back every session, for the
/// shutdown waves.
#[derive(Message)]
#[rtype(result = "Vec<Addr<Session>>")]
pub struct Drain;

impl Registry {
    fn remove(&mut self, connection_id: &str) {
        if let Some(entry) = self.connections.remove(connection_id) {
            if let Some(list) = self.users.get_mut(&entry.user_id) {
                list.retain(|c| &**c != connection_id);
                if list.is_empty() {
                    self.users.remove(&entry.user_id);
                }
            }
        }
    }

    fn deliver_to(&mut self, ids: &[Arc<str>], payload: &ByteString) -> usize {
        let mut delivered = 0;
        let mut dead = Vec::new();
        for id in ids {
            if let Some(entry) = self.connections.get(id) {
                if entry.handle.deliver(payload) {
                    delivered += 1;
                } else {
                    dead.push(id.clone());
                }
            }
        }
        for id in dead {
            self.remove(&id);
        }
        delivered
    }
}

impl Handler<Register> for Registry {
    type Result = Result<(), EngineError>;

    fn handle(&mut self, msg: Register, _: &mut Self::Context) -> Self::Result {
        if self.draining {
            return Err(EngineError::Unavailable("node is draining".into()));
        }
        self.users
            .entry(msg.user_id.clone())
            .or_default()
            .push(msg.connection_id.clone());
        self.connections.insert(
            msg.connection_id,
            Entry {
                user_id: msg.user_id,
                handle: msg.handle,
            },
        );
        METRICS.connections.set(self.connections.len() as i64);
        Ok(())
    }
}

impl Handler<Unregister> for Registry {
    type Result = ();

    fn handle(&mut self, msg: Unregister, _: &mut Self::Context) {
        self.remove(&msg.connection_id);
        METRICS.connections.set(self.connections.len() as i64);
    }
}

impl Handler<DeliverToUsers> for Registry {
    type Result = usize;

    fn handle(&mut self, msg: DeliverToUsers, _: &mut Self::Context) -> usize {
        let mut ids = Vec::new();
        for user in &msg.users {
            if let Some(list) = self.users.get(user.as_str()) {
                ids.extend(list.iter().cloned());
            }
        }
        let n = self.deliver_to(&ids, &msg.payload);
        METRICS.deliveries.inc_by(n as u64);
        n
    }
}

impl Handler<DeliverToConnections> for Registry {
    type Result = MessageResult<DeliverToConnections>;

    fn handle(&mut self, msg: DeliverToConnections, _: &mut Self::Context) -> Self::Result {
        let mut report = ConnectionsReport::default();
        let mut ids = Vec::with_capacity(msg.connection_ids.len());
        for id in msg.connection_ids {
            match self.connections.get_key_value(id.as_str()) {
                Some((key, _)) => ids.push(key.clone()),
                None => report.missing.push(id),
            }
        }
        report.delivered = self.deliver_to(&ids, &msg.payload);
        METRICS.deliveries.inc_by(report.delivered as u64);
        MessageResult(report)
    }
}

impl Handler<Broadcast> for Registry {
    type Result = usize;

    fn handle(&mut self, msg: Broadcast, _: &mut Self::Context) -> usize {
        let exclude: HashSet<&str> = msg.exclude_users.iter().map(String::as_str).collect();
        let mut delivered = 0;
        let mut dead = Vec::new();
        for (id, entry) in &self.connections {
            if exclude.contains(&*entry.user_id) {
                continue;
            }
            if entry.handle.deliver(&msg.payload) {
                delivered += 1;
            } else {
                dead.push(id.clone());
            }
        }
        for id in dead {
            self.remove(&id);
        }
        METRICS.deliveries.inc_by(delivered as u64);
        delivered
    }
}

impl Handler<ConnectedUsers> for Registry {
    type Result = MessageResult<ConnectedUsers>;

    fn handle(&mut self, _: ConnectedUsers, _: &mut Self::Context) -> Self::Result {
        let mut users: Vec<String> = self.users.keys().map(|u| u.to_string()).collect();
        users.sort();
        MessageResult(users)
    }
}

impl Handler<Count> for Registry {
    type Result = usize;

    fn handle(&mut self, _: Count, _: &mut Self::Context) -> usize {
        self.connections.len()
    }
}

impl Handler<Missing> for Registry {
    type Result = MessageResult<Missing>;

    fn handle(&mut self, msg: Missing, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            msg.0
                .into_iter()
                .filter(|id| !self.connections.contains_key(id.as_str()))
                .collect(),
        )
    }
}

impl Handler<Drain> for Registry {
    type Result = MessageResult<Drain>;

    fn handle(&mut self, _: Drain, _: &mut Self::Context) -> Self::Result {
        self.draining = true;
        MessageResult(
            self.connections
                .values()
                .map(|e| e.handle.addr.clone())
                .collect(),
        )
    }
}

/// A cloneable handle for delivering to this node's sockets.
#[derive(Clone)]
pub struct LocalDelivery {
    registry: Addr<Registry>,
}

fn mailbox(e: MailboxError) -> EngineError {
    EngineError::Unavailable(format!("registry: {e}"))
}

impl LocalDelivery {
    pub fn new(registry: Addr<Registry>) -> LocalDelivery {
        LocalDelivery { registry }
    }

    /// Delivers a request to the local sockets it targets. The payload is
    /// copied once from the request; every socket shares that copy.
    pub async fn deliver_request(
        &self,
        request: &NotificationRequest,
    ) -> Result<usize, EngineError> {
        let payload = ByteString::from(request.data.get());
        if request.is_broadcast() {
            self.broadcast(request.exclude_users.clone(), payload).await
        } else {
            let users = request.targets().cloned().collect();
            self.registry
                .send(DeliverToUsers { users, payload })
                .await
                .map_err(mailbox)
        }
    }

    pub async fn broadcast(
        &self,
        exclude_users: Vec<String>,
        payload: ByteString,
    ) -> Result<usize, EngineError> {
        self.registry
            .send(Broadcast {
                exclude_users,
                payload,
            })
            .await
            .map_err(mailbox)
    }

    pub async fn to_connections(
        &self,
        connection_ids: Vec<String>,
        payload: ByteString,
    ) -> Result<ConnectionsReport, EngineError> {
        self.registry
            .send(DeliverToConnections {
                connection_ids,
                payload,
            })
            .await
            .map_err(mailbox)
    }

    pub async fn connected_users(&self) -> Result<Vec<String>, EngineError> {
        self.registry.send(ConnectedUsers).await.map_err(mailbox)
    }

    pub async fn missing(&self, connection_ids: Vec<String>) -> Result<Vec<String>, EngineError> {
        self.registry
            .send(Missing(connection_ids))
            .await
            .map_err(mailbox)
    }

    pub async fn count(&self) -> Result<usize, EngineError> {
        self.registry.send(Count).await.map_err(mailbox)
    }

    /// Stops registrations and closes every socket with 1001, spread over
    /// `over` in waves (with jitter), so clients do not reconnect at once.
    pub async fn drain(&self, over: std::time::Duration) -> Result<usize, EngineError> {
        let sessions = self.registry.send(Drain).await.map_err(mailbox)?;
        let total = sessions.len();
        if total == 0 {
            return Ok(0);
        }
        let waves = (over.as_millis() / 100).clamp(1, 100) as usize;
        let per_wave = total.div_ceil(waves);
        let pause = over / waves as u32;
        for chunk in sessions.chunks(per_wave) {
            for addr in chunk {
                addr.do_send(Shutdown);
            }
            let jitter =
                pause.mul_f64(0.5 + (uuid::Uuid::new_v4().as_u128() % 1000) as f64 / 1000.0);
            tokio::time::sleep(jitter).await;
        }
        Ok(total)
    }

    pub fn registry(&self) -> &Addr<Registry> {
        &self.registry
    }
}
