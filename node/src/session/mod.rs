//! The session actor: one per socket. It owns the socket's heartbeats, idle
//! and lifetime limits, frame limits, rate limit and outbound bound, routes
//! client frames, and never waits on I/O (engine calls run as spawned
//! futures whose answers come back as frames). Every way it ends is a
//! [`CloseReason`], counted once. At most `max_messages_in_flight` of its
//! publish/send frames wait for the engine at once: what a slow AWS can
//! make one socket hold is bounded, and the client hears at once (429).

mod rate;
mod recovery;
mod registration;
mod timers;

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use actix_web_actors::ws;
use bytes::BytesMut;
use sumu_shared::{server, ClientAction, ClientFrame};

use crate::clock::now_ms;
use crate::close::CloseReason;
use crate::config::Limits;
use crate::engine::{ClientMessage, ClientOutput, EngineError, OutputRoute};
use crate::logging::chain;
use crate::metrics::Metrics;
use crate::outbound::{Outbound, SessionInbox, ToSession};
use rate::TokenBucket;
pub(crate) use recovery::{Begin, RecoveryEnv, Resumer};
pub(crate) use registration::Registration;
use timers::{Due, Lifetimes, Timers};

/// What every session of a node shares.
pub(crate) struct SessionEnv {
    pub(crate) limits: Limits,
    pub(crate) output: Arc<dyn ClientOutput>,
    /// The node's metrics.
    pub(crate) metrics: Arc<Metrics>,
}

impl SessionEnv {
    /// The code a close for `reason` carries: the configured one for a
    /// drain and the max duration, else the reason's own.
    fn close_code(&self, reason: CloseReason) -> Option<ws::CloseCode> {
        match reason {
            CloseReason::ServerShutdown => Some(self.limits.drain_close_code.into()),
            CloseReason::MaxDuration => Some(self.limits.max_duration_close_code.into()),
            other => other.code(),
        }
    }

    fn lifetimes(&self) -> Lifetimes {
        Lifetimes {
            idle_timeout: self.limits.idle_timeout,
            max_connection: self.limits.max_connection,
            ping_interval: self.limits.ping_interval,
        }
    }
}

pub(crate) struct Session {
    connection_id: Arc<str>,
    user_id: Arc<str>,
    env: Arc<SessionEnv>,
    outbound: Arc<Outbound>,
    bucket: TokenBucket,
    strikes: u32,
    timers: Timers,
    /// A fragmented message being assembled (is it text, its bytes): boxed,
    /// as almost no socket has one (inline it was 40 bytes in every socket).
    fragments: Option<Box<(bool, BytesMut)>>,
    registration: Option<Registration>,
    /// Publish/send frames handed to the engine and not answered yet.
    in_flight: usize,
}

/// The registrations to undo when the socket goes (sent once the
/// connection is recorded; dropped with the mailbox if it never opens).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Arm(pub(crate) Registration);

impl Session {
    pub(crate) fn new(
        connection_id: Arc<str>,
        user_id: Arc<str>,
        env: Arc<SessionEnv>,
        outbound: Arc<Outbound>,
    ) -> Session {
        let timers = Timers::new(Instant::now(), &env.lifetimes());
        Session {
            bucket: TokenBucket::new(env.limits.rate_per_sec, env.limits.rate_burst),
            connection_id,
            user_id,
            env,
            outbound,
            strikes: 0,
            timers,
            fragments: None,
            registration: None,
            in_flight: 0,
        }
    }

    fn send(&self, ctx: &mut ws::WebsocketContext<Self>, text: String) {
        if self.outbound.reserve(text.len(), &self.env.metrics) {
            ctx.text(text);
        } else {
            ctx.stop();
        }
    }

    /// Ends the socket: counts the reason, sends its close frame (if it has
    /// a code), stops the actor.
    fn close(&mut self, ctx: &mut ws::WebsocketContext<Self>, reason: CloseReason) {
        reason.count(&self.env.metrics);
        self.outbound.closing();
        if let Some(code) = self.env.close_code(reason) {
            ctx.close(Some(ws::CloseReason {
                code,
                description: Some(reason.description()),
            }));
        }
        ctx.stop();
    }

    /// One timer per socket: it fires at the earliest deadline (on the
    /// process's tick grid, so sockets due together wake the node once),
    /// handles what is due, and re-arms itself.
    fn schedule_tick(&self, ctx: &mut ws::WebsocketContext<Self>) {
        let next = self.timers.wake_at(&self.env.lifetimes());
        ctx.run_later(
            next.saturating_duration_since(Instant::now()),
            |act, ctx| act.tick(ctx),
        );
    }

    fn tick(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let life = self.env.lifetimes();
        let now = Instant::now();
        match self.timers.due(now, &life) {
            Due::Close(reason) => return self.close(ctx, reason),
            Due::Ping => {
                if !self.outbound.reserve(0, &self.env.metrics) {
                    return ctx.stop();
                }
                ctx.ping(b"");
                self.timers.pinged(now, &life);
            }
            Due::Nothing => {}
        }
        self.schedule_tick(ctx);
    }

    /// The rate limit, over every frame a client sends (data, binary,
    /// continuation and control frames alike): false (an error frame, or a
    /// 1008 close on abuse) when the frame is over the limit.
    /// The 429 echoes the `id` of a refused text frame, so a client's
    /// pending request fails at once instead of at its ack timeout.
    fn admit(&mut self, ctx: &mut ws::WebsocketContext<Self>, msg: &ws::Message) -> bool {
        if self.bucket.take() {
            self.strikes = 0;
            return true;
        }
        self.strikes += 1;
        self.env
            .metrics
            .errors
            .with_label_values(&["rate_limited"])
            .inc();
        if self.strikes >= self.env.limits.rate_strikes {
            self.close(ctx, CloseReason::RateLimitAbuse);
        } else {
            let id = match msg {
                ws::Message::Text(text) => ClientFrame::peek_id(text),
                _ => None,
            };
            self.send(
                ctx,
                server::error(429, "rate limit exceeded", id.as_deref()),
            );
        }
        false
    }

    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        let frame = match ClientFrame::parse_within(text, self.env.limits.max_json_depth) {
            Ok(f) => f,
            Err(e) => {
                self.env
                    .metrics
                    .frames_in
                    .with_label_values(&["invalid"])
                    .inc();
                let id = ClientFrame::peek_id(text);
                self.send(ctx, server::error(400, &e.to_string(), id.as_deref()));
                return;
            }
        };
        let route = match frame.action {
            ClientAction::Ping => {
                self.env
                    .metrics
                    .frames_in
                    .with_label_values(&["ping"])
                    .inc();
                self.send(ctx, server::pong(&self.connection_id));
                return;
            }
            ClientAction::Publish => OutputRoute::Publish,
            ClientAction::Send => OutputRoute::Send,
        };
        self.env
            .metrics
            .frames_in
            .with_label_values(&[match route {
                OutputRoute::Publish => "publish",
                OutputRoute::Send => "send",
            }])
            .inc();
        if self.in_flight >= self.env.limits.max_messages_in_flight {
            self.env
                .metrics
                .client_refused
                .with_label_values(&["too_many_in_flight"])
                .inc();
            let error = server::error(
                429,
                "too many messages waiting for their ack on this socket, send after one",
                frame.id.as_deref(),
            );
            return self.send(ctx, error);
        }
        self.in_flight += 1;
        let message = ClientMessage {
            route,
            source: route.source(),
            user_id: self.user_id.to_string(),
            timestamp: now_ms(),
            body: frame
                .message
                .map(|m| m.get().to_string())
                .unwrap_or_default(),
        };
        let output = self.env.output.clone();
        let id = frame.id;
        let fut = async move { output.emit(message).await };
        ctx.spawn(fut.into_actor(self).map(move |result, act, ctx| {
            act.in_flight -= 1;
            let (status, message, reason) = match result {
                Ok(()) => {
                    if let Some(id) = &id {
                        act.send(ctx, server::ack(id));
                    }
                    return;
                }
                // Not a failure of this message: the node is at its bound
                // of what may wait for AWS (AWS is slow or down).
                Err(EngineError::Overloaded(_)) => (
                    503,
                    "the gateway is overloaded, try again later",
                    "overloaded",
                ),
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "client output failed");
                    act.env
                        .metrics
                        .errors
                        .with_label_values(&["client_output"])
                        .inc();
                    (502, "message not accepted, try again", "failed")
                }
            };
            act.env
                .metrics
                .client_refused
                .with_label_values(&[reason])
                .inc();
            act.send(ctx, server::error(status, message, id.as_deref()));
        }));
    }

    fn on_fragment(&mut self, item: actix_http::ws::Item, ctx: &mut ws::WebsocketContext<Self>) {
        let max = self.env.limits.max_message_bytes;
        let (first, chunk, last) = match item {
            actix_http::ws::Item::FirstText(b) => (Some(true), b, false),
            actix_http::ws::Item::FirstBinary(b) => (Some(false), b, false),
            actix_http::ws::Item::Continue(b) => (None, b, false),
            actix_http::ws::Item::Last(b) => (None, b, true),
        };
        if chunk.len() > self.env.limits.max_frame_bytes {
            return self.close(ctx, CloseReason::FrameTooBig);
        }
        if let Some(is_text) = first {
            self.fragments = Some(Box::new((is_text, BytesMut::from(&chunk[..]))));
        } else if let Some(fragments) = &mut self.fragments {
            fragments.1.extend_from_slice(&chunk);
        } else {
            return self.close(ctx, CloseReason::UnexpectedContinuation);
        }
        if self.fragments.as_ref().is_some_and(|f| f.1.len() > max) {
            self.fragments = None;
            return self.close(ctx, CloseReason::MessageTooBig);
        }
        if last {
            if let Some((is_text, buf)) = self.fragments.take().map(|f| *f) {
                match (is_text, std::str::from_utf8(&buf)) {
                    (true, Ok(text)) => self.on_text(text, ctx),
                    (true, Err(_)) => self.close(ctx, CloseReason::InvalidUtf8),
                    (false, _) => self.on_binary(ctx),
                }
            }
        }
    }

    fn on_binary(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        self.env
            .metrics
            .frames_in
            .with_label_values(&["binary"])
            .inc();
        self.send(
            ctx,
            server::error(400, "binary frames are not supported; send JSON text", None),
        );
    }
}

impl Actor for Session {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(usize::MAX);
        self.env.metrics.connections_opened.inc();
        // What the hub queues for this session (the drain's close).
        ctx.add_stream(SessionInbox(self.outbound.clone()));
        self.schedule_tick(ctx);
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Session {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        let now = Instant::now();
        self.timers.last_seen = now;
        let msg = match item {
            Ok(m) => m,
            Err(ws::ProtocolError::Overflow) => {
                return self.close(ctx, CloseReason::FrameTooBig);
            }
            // The codec reports a text frame that is not UTF-8 as an I/O
            // error whose cause is the `Utf8Error` (RFC 6455: close 1007).
            Err(ws::ProtocolError::Io(e))
                if e.get_ref().is_some_and(|c| c.is::<std::str::Utf8Error>()) =>
            {
                return self.close(ctx, CloseReason::InvalidUtf8);
            }
            Err(e) => {
                tracing::debug!(error = %e, "protocol error");
                return self.close(ctx, CloseReason::ProtocolError);
            }
        };
        if !matches!(msg, ws::Message::Close(_) | ws::Message::Nop) && !self.admit(ctx, &msg) {
            return;
        }
        match msg {
            ws::Message::Text(text) => {
                self.timers.last_data = now;
                if text.len() > self.env.limits.max_frame_bytes {
                    return self.close(ctx, CloseReason::FrameTooBig);
                }
                self.on_text(&text, ctx);
            }
            ws::Message::Binary(b) => {
                self.timers.last_data = now;
                if b.len() > self.env.limits.max_frame_bytes {
                    return self.close(ctx, CloseReason::FrameTooBig);
                }
                self.on_binary(ctx);
            }
            ws::Message::Continuation(item) => {
                self.timers.last_data = now;
                self.on_fragment(item, ctx);
            }
            // A client's ping proves it is alive, not that it is in use: it
            // does not hold an idle socket open (only data frames do).
            ws::Message::Ping(p) => {
                if self.outbound.reserve(p.len(), &self.env.metrics) {
                    ctx.pong(&p);
                }
            }
            ws::Message::Pong(_) | ws::Message::Nop => {}
            ws::Message::Close(reason) => {
                CloseReason::Client.count(&self.env.metrics);
                self.outbound.closing();
                ctx.close(reason);
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// What the hub queued for this session (notifications do not come here:
/// the socket's response stream writes them without the actor).
impl StreamHandler<ToSession> for Session {
    fn handle(&mut self, msg: ToSession, ctx: &mut Self::Context) {
        match msg {
            ToSession::Close(reason) => self.close(ctx, reason),
        }
    }
}

impl Handler<Arm> for Session {
    type Result = ();

    fn handle(&mut self, msg: Arm, _: &mut Self::Context) {
        self.registration = Some(msg.0);
    }
}
