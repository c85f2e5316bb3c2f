//! The hub: this node's open sockets, by connection id and by user, and
//! delivery to them with one shared frame (serialized and encoded once per
//! request, never per connection).
//!
//! The hub knows a plain socket only as its [`Outbound`] queue: it queues
//! frames there, which the socket's response stream writes without waking
//! the session actor, and [`ToSession`] messages (the drain's close), which
//! the session takes in the same order. It never imports the session, so
//! dependencies point one way (hub → engine → session), and holds no actor
//! address per plain socket: an entry is the user id and the queue.
//!
//! The hub also sweeps its sockets once a sweep period (a tenth of the
//! shortest timer, 1-10 s: [`FrozenRule::sweep_period`]): a socket whose
//! session has not run for longer than its timers allow (its writes block,
//! so its actor is never polled) is killed for that timer
//! ([`crate::outbound::frozen_due`]); one pass over the map, no timer per
//! socket.
//!
//! Sockets that opted into the recovery window are kept in a second map,
//! `recovering`: a plain socket's entry, and the broadcast loop over the
//! plain ones, are exactly what they were without the feature. A recovering
//! socket is delivered to through its `Resumer` actor ([`ToResumer`]
//! messages), which puts the finished frames into the socket's queue in
//! order. It is told, with each payload, where it sits in its stream
//! ([`ToResumer::Positioned`], from the request's [`Stamp`]); a broadcast
//! that excludes its user still tells it the position, without a payload,
//! so it never waits for a message it will not get.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytestring::ByteString;
use sumu_shared::recovery::Position;
use sumu_shared::NotificationRequest;
use tokio::sync::watch;

use crate::close::CloseReason;
use crate::metrics::Metrics;
use crate::outbound::{mono_ms, text_frame, FrozenRule, Outbound, ToSession};

/// What the hub tells a recovering socket's `Resumer` (an actor message;
/// plain sockets get frames in their queue instead).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) enum ToResumer {
    /// A notification payload with no position (its router recorded
    /// nothing), already reserved in the outbound bound with its mailbox
    /// cost (the Resumer releases that when it takes it).
    Deliver(ByteString),
    /// Close the socket for this reason (the node is draining).
    Close(CloseReason),
    /// A payload (or a skip) with its place in the recovery history.
    /// Boxed, so `ToResumer` (and the mailbox cost of an unpositioned
    /// delivery) stays the size of `Deliver`.
    Positioned(Box<Positioned>),
    /// Read history up to the heads now: deliveries may have been lost (the
    /// node was reaped and rejoined). Only recovering sockets get it.
    CatchUp,
}

/// Which of a user's two streams a position is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum StreamKind {
    /// The user's own stream: multicasts and unicasts listing the user.
    User,
    /// The one broadcast stream.
    Broadcast,
}

/// A delivery to a recovering socket.
#[derive(Debug)]
pub(crate) struct Positioned {
    pub(crate) stream: StreamKind,
    /// The request's position in `stream`.
    pub(crate) position: Position,
    /// `None`: a broadcast that excludes this socket's user (the position
    /// advances, nothing is sent).
    pub(crate) payload: Option<ByteString>,
}

/// Where a routed request sits in the recovery history: its position in
/// the broadcast stream, or in each target user's stream. One per request,
/// shared by every socket it reaches.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) broadcast: Option<Position>,
    pub(crate) users: HashMap<String, Position>,
}

/// What one positioned delivery waiting in a mailbox costs beyond a plain
/// one: the boxed [`Positioned`] (64 B, an 80 B glibc chunk). Measured by
/// `positioned_message_cost_is_charged_and_plain_ones_unchanged`.
pub(crate) const POSITIONED_EXTRA_COST: usize = 80;

/// Why the hub could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HubError {
    #[error("the node is draining")]
    Draining,
    #[error("the hub is not running")]
    Stopped(#[from] MailboxError),
}

/// What the hub holds per plain socket.
struct Entry {
    user_id: Arc<str>,
    outbound: Arc<Outbound>,
}

/// What the hub holds per recovering socket: its entry, and the `Resumer`
/// it delivers to.
struct Recovering {
    entry: Entry,
    resumer: Recipient<ToResumer>,
}

impl Recovering {
    /// Sends `payload` to the Resumer unless that would pass the socket's
    /// outbound cap, in which case the slow reader is cut off (counted in
    /// `metrics`).
    fn deliver(&self, payload: &ByteString, metrics: &Metrics) -> bool {
        if !self.entry.outbound.reserve_message(payload.len(), metrics) {
            return false;
        }
        self.resumer.do_send(ToResumer::Deliver(payload.clone()));
        true
    }

    /// Queues a delivery to a recovering socket: positioned when the
    /// request was recorded, plain otherwise (its recipient wraps it).
    /// `payload` `None` is a skip (an excluded broadcast).
    fn deliver_at(
        &self,
        payload: Option<&ByteString>,
        stream: StreamKind,
        position: Option<Position>,
        metrics: &Metrics,
    ) -> bool {
        let Some(position) = position else {
            return match payload {
                Some(p) => self.deliver(p, metrics),
                None => true,
            };
        };
        let len = payload.map_or(0, |p| p.len());
        if !self
            .entry
            .outbound
            .reserve_message_with(len, POSITIONED_EXTRA_COST, metrics)
        {
            return false;
        }
        self.resumer
            .do_send(ToResumer::Positioned(Box::new(Positioned {
                stream,
                position,
                payload: payload.cloned(),
            })));
        true
    }
}

pub(crate) struct Hub {
    /// Plain sockets.
    connections: HashMap<Arc<str>, Entry>,
    /// Sockets that opted into the recovery window.
    recovering: HashMap<Arc<str>, Recovering>,
    /// The sockets of each user, of both kinds.
    users: HashMap<Arc<str>, Vec<Arc<str>>>,
    draining: bool,
    /// The number of open sockets, for whoever waits for the node to empty.
    count: watch::Sender<usize>,
    metrics: Arc<Metrics>,
}

impl Hub {
    fn new(metrics: Arc<Metrics>) -> Hub {
        Hub {
            connections: HashMap::new(),
            recovering: HashMap::new(),
            users: HashMap::new(),
            draining: false,
            count: watch::channel(0).0,
            metrics,
        }
    }
}

impl Actor for Hub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(usize::MAX);
    }
}

#[derive(Message)]
#[rtype(result = "Result<(), HubError>")]
pub(crate) struct Register {
    pub(crate) connection_id: Arc<str>,
    pub(crate) user_id: Arc<str>,
    pub(crate) outbound: Arc<Outbound>,
    /// The socket opted into the recovery window: it is delivered to
    /// through this `Resumer` ([`ToResumer::Positioned`] deliveries).
    pub(crate) resumer: Option<Recipient<ToResumer>>,
}

#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Unregister {
    pub(crate) connection_id: Arc<str>,
}

/// Deliver to every connection of these users.
#[derive(Message)]
#[rtype(result = "usize")]
struct DeliverToUsers {
    users: Vec<String>,
    payload: ByteString,
    stamp: Option<Arc<Stamp>>,
}

/// Deliver to these connections; answers which ones this node does not hold.
#[derive(Message)]
#[rtype(result = "ConnectionsReport")]
struct DeliverToConnections {
    connection_ids: Vec<String>,
    payload: ByteString,
    stamp: Option<Arc<Stamp>>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ConnectionsReport {
    pub(crate) delivered: usize,
    pub(crate) missing: Vec<String>,
}

/// Deliver to every local connection except the excluded users'.
#[derive(Message)]
#[rtype(result = "usize")]
struct Broadcast {
    exclude_users: Vec<String>,
    payload: ByteString,
    stamp: Option<Arc<Stamp>>,
}

/// The users with at least one socket here.
#[derive(Message)]
#[rtype(result = "Vec<String>")]
struct ConnectedUsers;

/// Every socket this node holds, as (user id, connection id).
#[derive(Message)]
#[rtype(result = "Vec<(Arc<str>, Arc<str>)>")]
struct Connections;

/// Which of these connection ids this node does not hold.
#[derive(Message)]
#[rtype(result = "Vec<String>")]
struct Missing(Vec<String>);

/// Sweep for frozen sessions once a [`FrozenRule::sweep_period`] from now on.
#[derive(Message)]
#[rtype(result = "()")]
struct StartSweep(FrozenRule);

/// Tell every recovering socket to catch up with history.
#[derive(Message)]
#[rtype(result = "usize")]
struct CatchUpAll;

/// Stop accepting registrations and hand back every socket, for the
/// shutdown waves.
#[derive(Message)]
#[rtype(result = "Vec<Closer>")]
struct Drain;

/// Who closes a socket when the node drains.
enum Closer {
    /// A plain socket: its session, through its queue (after the frames
    /// already queued).
    Queue(Arc<Outbound>),
    /// A recovering socket: its `Resumer`, which stops and queues the close
    /// after the frames it already finished.
    Resumer(Recipient<ToResumer>),
}

impl Closer {
    fn close(&self, reason: CloseReason) {
        match self {
            Closer::Queue(outbound) => outbound.push_session(ToSession::Close(reason)),
            Closer::Resumer(resumer) => resumer.do_send(ToResumer::Close(reason)),
        }
    }
}

impl Hub {
    fn remove(&mut self, connection_id: &str) {
        let entry = match self.connections.remove(connection_id) {
            Some(e) => Some(e),
            None => self.recovering.remove(connection_id).map(|r| r.entry),
        };
        if let Some(entry) = entry {
            if let Some(list) = self.users.get_mut(&entry.user_id) {
                list.retain(|c| &**c != connection_id);
                if list.is_empty() {
                    self.users.remove(&entry.user_id);
                }
            }
        }
    }

    fn counted(&self) {
        let n = self.connections.len() + self.recovering.len();
        self.metrics.connections.set(n as i64);
        self.count.send_replace(n);
    }

    fn deliver_to(
        &mut self,
        ids: &[Arc<str>],
        payload: &ByteString,
        stamp: Option<&Stamp>,
    ) -> usize {
        let mut delivered = 0;
        let mut dead = Vec::new();
        // Encoded once, shared by every plain socket (none: never encoded).
        let mut frame = None;
        for id in ids {
            let ok = if let Some(entry) = self.connections.get(id) {
                let frame = frame.get_or_insert_with(|| text_frame(payload));
                entry.outbound.push_frame(frame, &self.metrics)
            } else if let Some(r) = self.recovering.get(id) {
                let position = stamp.and_then(|s| s.users.get(&*r.entry.user_id).copied());
                r.deliver_at(Some(payload), StreamKind::User, position, &self.metrics)
            } else {
                continue;
            };
            if ok {
                delivered += 1;
            } else {
                dead.push(id.clone());
            }
        }
        self.forget_dead(dead);
        self.metrics.deliveries.inc_by(delivered as u64);
        delivered
    }

    /// Kills the sockets whose sessions have not run for longer than their
    /// timers allow, and forgets them.
    fn sweep(&mut self, rule: &FrozenRule) {
        let now = mono_ms();
        let mut dead = Vec::new();
        let recovering = self.recovering.iter().map(|(id, r)| (id, &r.entry));
        for (id, entry) in self.connections.iter().chain(recovering) {
            if let Some(reason) = entry.outbound.overdue(now, rule) {
                tracing::debug!(connection_id = %id, reason = reason.label(), "frozen socket killed");
                entry.outbound.kill(reason, &self.metrics);
                dead.push(id.clone());
            }
        }
        self.forget_dead(dead);
    }

    /// Forgets sockets cut off (their outbound cap tripped, or swept).
    fn forget_dead(&mut self, dead: Vec<Arc<str>>) {
        if dead.is_empty() {
            return;
        }
        for id in &dead {
            self.remove(id);
        }
        self.counted();
    }
}

impl Handler<Register> for Hub {
    type Result = Result<(), HubError>;

    fn handle(&mut self, msg: Register, _: &mut Self::Context) -> Self::Result {
        if self.draining {
            return Err(HubError::Draining);
        }
        self.users
            .entry(msg.user_id.clone())
            .or_default()
            .push(msg.connection_id.clone());
        let entry = Entry {
            user_id: msg.user_id,
            outbound: msg.outbound,
        };
        match msg.resumer {
            Some(resumer) => {
                self.recovering
                    .insert(msg.connection_id, Recovering { entry, resumer });
            }
            None => {
                self.connections.insert(msg.connection_id, entry);
            }
        }
        self.counted();
        Ok(())
    }
}

impl Handler<Unregister> for Hub {
    type Result = ();

    fn handle(&mut self, msg: Unregister, _: &mut Self::Context) {
        self.remove(&msg.connection_id);
        self.counted();
    }
}

impl Handler<DeliverToUsers> for Hub {
    type Result = usize;

    fn handle(&mut self, msg: DeliverToUsers, _: &mut Self::Context) -> usize {
        let mut ids = Vec::new();
        for user in &msg.users {
            if let Some(list) = self.users.get(user.as_str()) {
                ids.extend(list.iter().cloned());
            }
        }
        self.deliver_to(&ids, &msg.payload, msg.stamp.as_deref())
    }
}

impl Handler<DeliverToConnections> for Hub {
    type Result = MessageResult<DeliverToConnections>;

    fn handle(&mut self, msg: DeliverToConnections, _: &mut Self::Context) -> Self::Result {
        let mut report = ConnectionsReport::default();
        let mut ids = Vec::with_capacity(msg.connection_ids.len());
        for id in msg.connection_ids {
            let key = match self.connections.get_key_value(id.as_str()) {
                Some((key, _)) => Some(key),
                None => self.recovering.get_key_value(id.as_str()).map(|(k, _)| k),
            };
            match key {
                Some(key) => ids.push(key.clone()),
                None => report.missing.push(id),
            }
        }
        report.delivered = self.deliver_to(&ids, &msg.payload, msg.stamp.as_deref());
        MessageResult(report)
    }
}

impl Handler<Broadcast> for Hub {
    type Result = usize;

    fn handle(&mut self, msg: Broadcast, _: &mut Self::Context) -> usize {
        let exclude: HashSet<&str> = msg.exclude_users.iter().map(String::as_str).collect();
        let mut delivered = 0;
        let mut dead = Vec::new();
        let frame = text_frame(&msg.payload);
        for (id, entry) in &self.connections {
            if exclude.contains(&*entry.user_id) {
                continue;
            }
            if entry.outbound.push_frame(&frame, &self.metrics) {
                delivered += 1;
            } else {
                dead.push(id.clone());
            }
        }
        if !self.recovering.is_empty() {
            let position = msg.stamp.as_ref().and_then(|s| s.broadcast);
            for (id, r) in &self.recovering {
                let excluded = exclude.contains(&*r.entry.user_id);
                let payload = (!excluded).then_some(&msg.payload);
                if r.deliver_at(payload, StreamKind::Broadcast, position, &self.metrics) {
                    delivered += usize::from(!excluded);
                } else {
                    dead.push(id.clone());
                }
            }
        }
        self.forget_dead(dead);
        self.metrics.deliveries.inc_by(delivered as u64);
        delivered
    }
}

impl Handler<CatchUpAll> for Hub {
    type Result = usize;

    fn handle(&mut self, _: CatchUpAll, _: &mut Self::Context) -> usize {
        for r in self.recovering.values() {
            r.resumer.do_send(ToResumer::CatchUp);
        }
        self.recovering.len()
    }
}

impl Handler<StartSweep> for Hub {
    type Result = ();

    fn handle(&mut self, msg: StartSweep, ctx: &mut Self::Context) {
        let rule = msg.0;
        ctx.run_interval(rule.sweep_period(), move |hub, _| hub.sweep(&rule));
    }
}

impl Handler<ConnectedUsers> for Hub {
    type Result = MessageResult<ConnectedUsers>;

    fn handle(&mut self, _: ConnectedUsers, _: &mut Self::Context) -> Self::Result {
        let mut users: Vec<String> = self.users.keys().map(|u| u.to_string()).collect();
        users.sort();
        MessageResult(users)
    }
}

impl Handler<Connections> for Hub {
    type Result = MessageResult<Connections>;

    fn handle(&mut self, _: Connections, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            self.connections
                .iter()
                .chain(self.recovering.iter().map(|(id, r)| (id, &r.entry)))
                .map(|(id, e)| (e.user_id.clone(), id.clone()))
                .collect(),
        )
    }
}

impl Handler<Missing> for Hub {
    type Result = MessageResult<Missing>;

    fn handle(&mut self, msg: Missing, _: &mut Self::Context) -> Self::Result {
        MessageResult(
            msg.0
                .into_iter()
                .filter(|id| {
                    !self.connections.contains_key(id.as_str())
                        && !self.recovering.contains_key(id.as_str())
                })
                .collect(),
        )
    }
}

impl Handler<Drain> for Hub {
    type Result = MessageResult<Drain>;

    fn handle(&mut self, _: Drain, _: &mut Self::Context) -> Self::Result {
        self.draining = true;
        MessageResult(
            self.connections
                .values()
                .map(|e| Closer::Queue(e.outbound.clone()))
                .chain(
                    self.recovering
                        .values()
                        .map(|r| Closer::Resumer(r.resumer.clone())),
                )
                .collect(),
        )
    }
}

/// A cloneable handle for delivering to this node's sockets: what the
/// engines and the HTTP layer are given. Cloning it is a reference count
/// (every socket's registration guard holds one).
#[derive(Clone)]
pub(crate) struct LocalDelivery(Arc<Local>);

struct Local {
    hub: Addr<Hub>,
    count: watch::Receiver<usize>,
}

impl LocalDelivery {
    /// Starts the node's hub, which keeps `metrics`' socket gauge and
    /// delivery counter.
    pub(crate) fn start(metrics: Arc<Metrics>) -> LocalDelivery {
        let hub = Hub::new(metrics);
        let count = hub.count.subscribe();
        LocalDelivery(Arc::new(Local {
            hub: hub.start(),
            count,
        }))
    }

    /// Delivers a request to the local sockets it targets; `stamp`: its
    /// positions in the recovery history, when it was recorded. The payload
    /// is copied once from the request, and encoded once into the frame
    /// every plain socket shares.
    pub(crate) async fn deliver_request_stamped(
        &self,
        request: &NotificationRequest,
        stamp: Option<Arc<Stamp>>,
    ) -> Result<usize, HubError> {
        let payload = ByteString::from(request.data.get());
        if request.is_broadcast() {
            self.broadcast_stamped(request.exclude_users.clone(), payload, stamp)
                .await
        } else {
            let users = request.targets().cloned().collect();
            Ok(self
                .0
                .hub
                .send(DeliverToUsers {
                    users,
                    payload,
                    stamp,
                })
                .await?)
        }
    }

    pub(crate) async fn broadcast_stamped(
        &self,
        exclude_users: Vec<String>,
        payload: ByteString,
        stamp: Option<Arc<Stamp>>,
    ) -> Result<usize, HubError> {
        Ok(self
            .0
            .hub
            .send(Broadcast {
                exclude_users,
                payload,
                stamp,
            })
            .await?)
    }

    pub(crate) async fn to_connections_stamped(
        &self,
        connection_ids: Vec<String>,
        payload: ByteString,
        stamp: Option<Arc<Stamp>>,
    ) -> Result<ConnectionsReport, HubError> {
        Ok(self
            .0
            .hub
            .send(DeliverToConnections {
                connection_ids,
                payload,
                stamp,
            })
            .await?)
    }

    /// Tells every recovering socket to catch up with history (after a
    /// rejoin: what was routed meanwhile did not reach this node). Answers
    /// how many were told.
    pub(crate) async fn catch_up(&self) -> Result<usize, HubError> {
        Ok(self.0.hub.send(CatchUpAll).await?)
    }

    /// Starts the sweep for sockets whose sessions cannot run.
    pub(crate) fn sweep(&self, rule: FrozenRule) {
        self.0.hub.do_send(StartSweep(rule));
    }

    pub(crate) async fn connected_users(&self) -> Result<Vec<String>, HubError> {
        Ok(self.0.hub.send(ConnectedUsers).await?)
    }

    /// Every socket this node holds, as (user id, connection id).
    pub(crate) async fn connections(&self) -> Result<Vec<(Arc<str>, Arc<str>)>, HubError> {
        Ok(self.0.hub.send(Connections).await?)
    }

    pub(crate) async fn missing(
        &self,
        connection_ids: Vec<String>,
    ) -> Result<Vec<String>, HubError> {
        Ok(self.0.hub.send(Missing(connection_ids)).await?)
    }

    pub(crate) async fn register(&self, msg: Register) -> Result<(), HubError> {
        self.0.hub.send(msg).await?
    }

    /// Forgets a socket (fire and forget: safe from `Drop`).
    pub(crate) fn unregister(&self, connection_id: Arc<str>) {
        self.0.hub.do_send(Unregister { connection_id });
    }

    /// Stops registrations and closes every socket with `reason`, spread
    /// over `over` in waves (with jitter), so clients do not reconnect at
    /// once. Answers how many sockets were told to close.
    pub(crate) async fn drain(
        &self,
        over: Duration,
        reason: CloseReason,
    ) -> Result<usize, HubError> {
        let sockets = self.0.hub.send(Drain).await?;
        let total = sockets.len();
        if total == 0 {
            return Ok(0);
        }
        let waves = (over.as_millis() / 100).clamp(1, 100) as usize;
        let per_wave = total.div_ceil(waves);
        let pause = over / waves as u32;
        for chunk in sockets.chunks(per_wave) {
            for socket in chunk {
                socket.close(reason);
            }
            let jitter =
                pause.mul_f64(0.5 + (uuid::Uuid::new_v4().as_u128() % 1000) as f64 / 1000.0);
            tokio::time::sleep(jitter).await;
        }
        Ok(total)
    }

    /// Resolves once no socket is open (or at once if none is).
    pub(crate) async fn emptied(&self) {
        let mut count = self.0.count.clone();
        // An error means the hub is gone: nothing is open either.
        let _ = count.wait_for(|n| *n == 0).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::MAILBOX_MESSAGE_COST;
    use crate::sys::counting_alloc::held;

    struct Sink;

    impl Actor for Sink {
        type Context = Context<Self>;
    }

    impl Handler<ToResumer> for Sink {
        type Result = ();

        fn handle(&mut self, _: ToResumer, _: &mut Self::Context) {}
    }

    /// What the hub charges per message to a Resumer is what one really
    /// costs (through the same `Recipient` the hub holds; the actor is not
    /// polled in between).
    #[test]
    fn mailbox_message_cost_is_charged() {
        actix::System::new().block_on(async {
            let recipient = Sink.start().recipient::<ToResumer>();
            let payload = ByteString::from("x");
            let n = 10_000;
            let before = held();
            for _ in 0..n {
                recipient.do_send(ToResumer::Deliver(payload.clone()));
            }
            let per = (held() - before) / n;
            assert!(per > 0, "nothing measured");
            assert_eq!(
                MAILBOX_MESSAGE_COST as isize, per,
                "measured {per} B per message"
            );
        });
    }

    /// A positioned delivery costs its box beyond an unpositioned one:
    /// `ToResumer` is no larger than its `Deliver` variant.
    #[test]
    fn positioned_message_cost_is_charged_and_plain_ones_unchanged() {
        assert_eq!(
            std::mem::size_of::<ToResumer>(),
            std::mem::size_of::<ByteString>() + 8
        );
        actix::System::new().block_on(async {
            let recipient = Sink.start().recipient::<ToResumer>();
            let payload = ByteString::from("x");
            let n = 10_000;
            let before = held();
            for seq in 0..n {
                recipient.do_send(ToResumer::Positioned(Box::new(Positioned {
                    stream: StreamKind::User,
                    position: Position {
                        epoch: 1,
                        seq: seq as u64,
                        at_ms: 0,
                    },
                    payload: Some(payload.clone()),
                })));
            }
            let per = (held() - before) / n;
            assert_eq!(
                (MAILBOX_MESSAGE_COST + POSITIONED_EXTRA_COST) as isize,
                per,
                "measured {per} B per message"
            );
        });
    }

    /// Records what one socket is sent.
    struct Recorder(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

    impl Actor for Recorder {
        type Context = Context<Self>;
    }

    impl Handler<ToResumer> for Recorder {
        type Result = ();

        fn handle(&mut self, msg: ToResumer, _: &mut Self::Context) {
            let line = match msg {
                ToResumer::Deliver(p) => format!("plain {p}"),
                ToResumer::Positioned(p) => format!(
                    "{:?} {} {}",
                    p.stream,
                    p.position.seq,
                    p.payload.as_deref().unwrap_or("skip")
                ),
                ToResumer::Close(_) => "close".into(),
                ToResumer::CatchUp => "catch up".into(),
            };
            self.0.lock().unwrap().push(line);
        }
    }

    #[test]
    fn recovering_sockets_get_positions_plain_ones_the_frame() {
        actix::System::new().block_on(async {
            let local = LocalDelivery::start(Default::default());
            let mut logs = Vec::new();
            let mut queues = Vec::new();
            for (conn, user, recovering) in [
                ("c1", "alice", false),
                ("c2", "alice", true),
                ("c3", "bob", true),
            ] {
                let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
                let resumer = recovering.then(|| Recorder(log.clone()).start().recipient());
                let outbound = Arc::new(Outbound::new(1 << 20, None));
                local
                    .register(Register {
                        connection_id: conn.into(),
                        user_id: user.into(),
                        outbound: outbound.clone(),
                        resumer,
                    })
                    .await
                    .unwrap();
                logs.push(log);
                queues.push(outbound);
            }
            let at = |seq| Position {
                epoch: 9,
                seq,
                at_ms: 0,
            };
            let broadcast = Stamp {
                broadcast: Some(at(4)),
                users: HashMap::new(),
            };
            let n = local
                .broadcast_stamped(vec!["bob".into()], "b".into(), Some(Arc::new(broadcast)))
                .await
                .unwrap();
            assert_eq!(n, 2, "bob's skip is not a delivery");
            let multicast = Stamp {
                broadcast: None,
                users: HashMap::from([("alice".to_string(), at(7))]),
            };
            let request = NotificationRequest::parse(br#"{"users":["alice"],"data":"m"}"#).unwrap();
            let n = local
                .deliver_request_stamped(&request, Some(Arc::new(multicast)))
                .await
                .unwrap();
            assert_eq!(n, 2);
            assert_eq!(local.catch_up().await.unwrap(), 2);
            // The drain closes both kinds: a plain socket through its
            // queue, after its frames; a recovering one through its Resumer.
            let closing = CloseReason::ServerShutdown;
            assert_eq!(local.drain(Duration::ZERO, closing).await.unwrap(), 3);
            tokio::time::sleep(Duration::from_millis(50)).await;
            let got: Vec<Vec<String>> = logs.iter().map(|l| l.lock().unwrap().clone()).collect();
            assert!(got[0].is_empty(), "a plain socket has no Resumer");
            assert_eq!(queues[0].described(), ["frame b", "frame \"m\"", "close"]);
            assert_eq!(
                got[1],
                ["Broadcast 4 b", "User 7 \"m\"", "catch up", "close"]
            );
            assert_eq!(got[2], ["Broadcast 4 skip", "catch up", "close"]);
            // Nothing reached a recovering socket's queue but through its
            // Resumer (this one records, it queues nothing).
            assert!(queues[1].described().is_empty());
            assert!(queues[2].described().is_empty());
        });
    }
}
