//! The session actor: one per socket. It owns the socket's heartbeats, idle
//! and lifetime limits, frame limits, rate limit and outbound bound, routes
//! client frames, and never waits on I/O (engine calls run as spawned
//! futures whose answers come back as frames).

pub mod outbound;
pub mod rate;
pub mod registration;

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use actix_web_actors::ws::{self, CloseCode, CloseReason};
use bytes::BytesMut;
use bytestring::ByteString;
use sumu_shared::{server, ClientAction, ClientFrame};

use crate::config::Limits;
use crate::engine::{now_ms, ClientMessage, ClientOutput, OutputRoute};
use crate::metrics::METRICS;
use outbound::Outbound;
use rate::TokenBucket;
use registration::Registration;

/// What every session of a node shares.
pub struct SessionEnv {
    pub limits: Limits,
    pub output: Arc<dyn ClientOutput>,
}

pub struct Session {
    connection_id: Arc<str>,
    user_id: Arc<str>,
    env: Arc<SessionEnv>,
    outbound: Arc<Outbound>,
    bucket: TokenBucket,
    strikes: u32,
    last_data: Instant,
    last_seen: Instant,
    opened: Instant,
    next_ping: Instant,
    fragments: Option<(bool, BytesMut)>,
    registration: Option<Registration>,
}

/// A notification payload, already reserved in the outbound bound.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver(pub ByteString);

/// The registrations to undo when the socket goes (sent once the
/// connection is recorded; dropped with the mailbox if it never opens).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Arm(pub Registration);

/// Node shutdown: close with 1001.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Session {
    pub fn new(
        connection_id: Arc<str>,
        user_id: Arc<str>,
        env: Arc<SessionEnv>,
        outbound: Arc<Outbound>,
    ) -> Session {
        let now = Instant::now();
        let next_ping = now + env.limits.ping_interval;
        Session {
            bucket: TokenBucket::new(env.limits.rate_per_sec, env.limits.rate_burst),
            connection_id,
            user_id,
            env,
            outbound,
            strikes: 0,
            last_data: now,
            last_seen: now,
            opened: now,
            next_ping,
            fragments: None,
            registration: None,
        }
    }

    fn send(&self, ctx: &mut ws::WebsocketContext<Self>, text: String) {
        if self.outbound.reserve(text.len()) {
            ctx.text(text);
        } else {
            ctx.stop();
        }
    }

    fn close(&mut self, ctx: &mut ws::WebsocketContext<Self>, code: CloseCode, why: &'static str) {
        METRICS.connections_closed.with_label_values(&[why]).inc();
        ctx.close(Some(CloseReason {
            code,
            description: Some(why.replace('_', " ")),
        }));
        ctx.stop();
    }

    /// One timer per socket: it fires at the earliest of the next ping,
    /// the idle deadline and the max-duration deadline, handles what is
    /// due, and re-arms itself.
    fn schedule_tick(&self, ctx: &mut ws::WebsocketContext<Self>) {
        let limits = &self.env.limits;
        let now = Instant::now();
        let next = (self.next_ping)
            .min(self.last_data + limits.idle_timeout)
            .min(self.opened + limits.max_connection);
        ctx.run_later(next.saturating_duration_since(now), |act, ctx| {
            act.tick(ctx)
        });
    }

    fn tick(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let limits = &self.env.limits;
        let now = Instant::now();
        if now >= self.opened + limits.max_connection {
            return self.close(ctx, CloseCode::Away, "max_duration");
        }
        if now >= self.last_data + limits.idle_timeout {
            return self.close(ctx, CloseCode::Away, "idle_timeout");
        }
        if now >= self.next_ping {
            if self.last_seen.elapsed() > limits.ping_interval * 2 {
                METRICS
                    .connections_closed
                    .with_label_values(&["no_pong"])
                    .inc();
                return ctx.stop();
            }
            if !self.outbound.reserve(0) {
                return ctx.stop();
            }
            ctx.ping(b"");
            self.next_ping = now + limits.ping_interval;
        }
        self.schedule_tick(ctx);
    }

    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        if !self.bucket.take() {
            self.strikes += 1;
            METRICS.errors.with_label_values(&["rate_limited"]).inc();
            if self.strikes >= self.env.limits.rate_strikes {
                self.close(ctx, CloseCode::Policy, "rate_limit_abuse");
            } else {
                self.send(ctx, server::error(429, "rate limit exceeded", None));
            }
            return;
        }
        self.strikes = 0;
        let frame = match ClientFrame::parse(text) {
            Ok(f) => f,
            Err(e) => {
                METRICS.frames_in.with_label_values(&["invalid"]).inc();
                self.send(ctx, server::error(400, &e.to_string(), None));
                return;
            }
        };
        let route = match frame.action {
            ClientAction::Ping => {
                METRICS.frames_in.with_label_values(&["ping"]).inc();
                self.send(ctx, server::pong(&self.connection_id));
                return;
            }
            ClientAction::Publish => OutputRoute::Publish,
            ClientAction::Send => OutputRoute::Send,
        };
        METRICS
            .frames_in
            .with_label_values(&[match route {
                OutputRoute::Publish => "publish",
                OutputRoute::Send => "send",
            }])
            .inc();
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
        ctx.spawn(
            fut.into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(()) => {
                        if let Some(id) = &id {
                            act.send(ctx, server::ack(id));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "client output failed");
                        METRICS.errors.with_label_values(&["client_output"]).inc();
                        act.send(
                            ctx,
                            server::error(502, "message not accepted, try again", id.as_deref()),
                        );
                    }
                }),
        );
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
            return self.close(ctx, CloseCode::Size, "frame_too_big");
        }
        if let Some(is_text) = first {
            self.fragments = Some((is_text, BytesMut::from(&chunk[..])));
        } else if let Some((_, buf)) = &mut self.fragments {
            buf.extend_from_slice(&chunk);
        } else {
            return self.close(ctx, CloseCode::Protocol, "unexpected_continuation");
        }
        if self.fragments.as_ref().is_some_and(|(_, b)| b.len() > max) {
            self.fragments = None;
            return self.close(ctx, CloseCode::Size, "message_too_big");
        }
        if last {
            if let Some((is_text, buf)) = self.fragments.take() {
                match (is_text, std::str::from_utf8(&buf)) {
                    (true, Ok(text)) => self.on_text(text, ctx),
                    (true, Err(_)) => self.close(ctx, CloseCode::Invalid, "invalid_utf8"),
                    (false, _) => self.on_binary(ctx),
                }
            }
        }
    }

    fn on_binary(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        METRICS.frames_in.with_label_values(&["binary"]).inc();
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
        METRICS.connections_opened.inc();
        self.schedule_tick(ctx);
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Session {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_seen = Instant::now();
        let msg = match item {
            Ok(m) => m,
            Err(ws::ProtocolError::Overflow) => {
                return self.close(ctx, CloseCode::Size, "frame_too_big");
            }
            Err(e) => {
                tracing::debug!(error = %e, "protocol error");
                return self.close(ctx, CloseCode::Protocol, "protocol_error");
            }
        };
        match msg {
            ws::Message::Text(text) => {
                self.last_data = Instant::now();
                if text.len() > self.env.limits.max_frame_bytes {
                    return self.close(ctx, CloseCode::Size, "frame_too_big");
                }
                self.on_text(&text, ctx);
            }
            ws::Message::Binary(b) => {
                self.last_data = Instant::now();
                if b.len() > self.env.limits.max_frame_bytes {
                    return self.close(ctx, CloseCode::Size, "frame_too_big");
                }
                self.on_binary(ctx);
            }
            ws::Message::Continuation(item) => {
                self.last_data = Instant::now();
                self.on_fragment(item, ctx);
            }
            ws::Message::Ping(p) => {
                self.last_data = Instant::now();
                if self.outbound.reserve(p.len()) {
                    ctx.pong(&p);
                }
            }
            ws::Message::Pong(_) | ws::Message::Nop => {}
            ws::Message::Close(reason) => {
                METRICS
                    .connections_closed
                    .with_label_values(&["client"])
                    .inc();
                ctx.close(reason);
                ctx.stop();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<Deliver> for Session {
    type Result = ();

    fn handle(&mut self, msg: Deliver, ctx: &mut Self::Context) {
        ctx.text(msg.0);
    }
}

impl Handler<Arm> for Session {
    type Result = ();

    fn handle(&mut self, msg: Arm, _: &mut Self::Context) {
        self.registration = Some(msg.0);
    }
}

impl Handler<Shutdown> for Session {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        self.close(ctx, CloseCode::Away, "server_shutdown");
    }
}
