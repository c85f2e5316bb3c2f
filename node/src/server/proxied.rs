//! The plain listener behind a proxy that speaks PROXY protocol v2
//! (`--proxy-protocol`): every accepted connection must first send a valid
//! v2 header within [`READ_TIMEOUT`], else it is closed without a word; the
//! address in the header becomes the connection's peer address, so the
//! per-address limits and the logs see the client, not the proxy.
//!
//! actix-web's `HttpServer` has no hook before HTTP, so this listener is
//! built from the same parts it uses (actix-server, actix-http's
//! `HttpService`, the app) with a header-reading step in front; its
//! settings are the ones `server.rs` gives `HttpServer` ([`Settings`]), handed
//! in, so this file imports nothing from its parent.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use actix_http::body::MessageBody;
use actix_http::error::DispatchError;
use actix_http::{Extensions, HttpService, Protocol, Request, Response};
use actix_service::ServiceFactoryExt;
use actix_service::{fn_service, map_config, IntoServiceFactory, Service, ServiceFactory};
use actix_web::dev::{AppConfig, Server};
use actix_web::rt::net::TcpStream;

use crate::metrics::Metrics;
use crate::proxy_protocol::{self, Proxied, READ_TIMEOUT};

/// The connection settings of the node's listeners (the same for both).
pub(super) struct Settings {
    /// Worker threads.
    pub(super) workers: usize,
    /// Connections a worker serves at once.
    pub(super) max_connections: usize,
    /// How long a new connection may take to send its request head.
    pub(super) client_request_timeout: std::time::Duration,
    /// The node's metrics (a connection refused for its header is counted).
    pub(super) metrics: Arc<Metrics>,
}

/// Serves the app made by `factory` on `listener` behind PROXY v2, with
/// `settings`; `on_connect` runs for each accepted connection.
pub(super) fn run<F, I, S, B>(
    listener: std::net::TcpListener,
    settings: &Settings,
    factory: F,
    on_connect: fn(&TcpStream, &mut Extensions),
) -> io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let addr = listener.local_addr()?;
    let client_request_timeout = settings.client_request_timeout;
    let metrics = settings.metrics.clone();
    let server = Server::build()
        .workers(settings.workers)
        .max_concurrent_connections(settings.max_connections)
        .disable_signals()
        .listen(format!("sumu-proxied-{addr}"), listener, move || {
            let app = factory()
                .into_factory()
                .map_err(|err| err.into().error_response());
            let http = HttpService::build()
                .client_request_timeout(client_request_timeout)
                .client_disconnect_timeout(std::time::Duration::ZERO)
                .local_addr(addr)
                .on_connect_ext(on_connect)
                .finish(map_config(app, |_| AppConfig::default()));
            let metrics = metrics.clone();
            fn_service(move |io| accept(io, metrics.clone())).and_then(http)
        })?
        .run();
    Ok(server)
}

/// Reads the connection's PROXY v2 header: the client it names becomes the
/// peer (`LOCAL`, the proxy's own health check, keeps the TCP peer).
async fn accept(
    mut io: TcpStream,
    metrics: Arc<Metrics>,
) -> Result<(TcpStream, Protocol, Option<SocketAddr>), DispatchError> {
    match proxy_protocol::read(&mut io, READ_TIMEOUT).await {
        Ok(Proxied::Client(client)) => Ok((io, Protocol::Http1, Some(client))),
        Ok(Proxied::Local) => {
            let peer = io.peer_addr().ok();
            Ok((io, Protocol::Http1, peer))
        }
        Err(e) => {
            metrics.errors.with_label_values(&["proxy_header"]).inc();
            tracing::debug!(error = %crate::logging::chain(&e), peer = ?io.peer_addr().ok(), "connection without a valid PROXY v2 header closed");
            Err(DispatchError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                e,
            )))
        }
    }
}
