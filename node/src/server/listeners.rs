//! The node's listeners, served by one actix-server: the plain listener
//! (`--listen`; with `--proxy-protocol` every connection first sends a PROXY
//! v2 header within [`READ_TIMEOUT`], whose address becomes the peer's) and
//! the TLS listener (`--tls-listen`). Both end in the same actix-http
//! service and app; only the step in front of HTTP differs.
//!
//! actix-web's `HttpServer` has no hook before HTTP, so the server is built
//! from the parts it uses (actix-server, actix-http's `HttpService`, the
//! app), with the settings stated here.
//!
//! The TLS step keeps a connection that has not sent its ClientHello from
//! holding anything scarce (issue 17 item 11). It reads the ClientHello
//! first, within [`CLIENT_HELLO_TIMEOUT`], holding only its descriptor and
//! a share of its address's cap of unfinished handshakes; only then does it
//! take one of its worker's [`HANDSHAKES_PER_WORKER`] slots for the
//! handshake proper (the cryptography), bounded by the handshake timeout.
//! actix-tls's acceptor took the slot at accept: a thousand connections
//! sending nothing (or half a ClientHello) held every slot, and real
//! handshakes waited in the kernel's accept queue for seconds.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_http::body::MessageBody;
use actix_http::error::DispatchError;
use actix_http::{Extensions, HttpService, Protocol, Request, Response};
use actix_service::ServiceFactoryExt;
use actix_service::{fn_service, map_config, IntoServiceFactory, Service, ServiceFactory};
use actix_web::dev::{AppConfig, Server};
use actix_web::rt::net::TcpStream;
use futures_util::future::Either;
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

use crate::limits::Handshakes;
use crate::metrics::Metrics;
use crate::proxy_protocol::{self, Proxied, READ_TIMEOUT};

/// Connections a worker serves at once (the socket limits bound them).
const MAX_CONNECTIONS: usize = 1_000_000;
/// How long a new connection may take to send its request head.
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a TLS client may take to complete its handshake once its
/// ClientHello is in (actix's default): it holds a handshake slot this long.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a TLS connection may take to send its whole ClientHello. A
/// client sends it right after the TCP handshake, in one or two packets;
/// the time allows for a lost packet's retransmission.
pub(crate) const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(2);

/// TLS handshakes one worker runs at once once their ClientHello is in
/// (actix-tls's default): under a reconnect storm the others wait for a
/// slot instead of starving the open sockets of CPU.
pub(crate) const HANDSHAKES_PER_WORKER: usize = 256;

/// What is served.
pub(super) struct Listeners {
    /// The plain listener.
    pub(super) plain: std::net::TcpListener,
    /// Its connections start with a PROXY v2 header.
    pub(super) proxy_protocol: bool,
    /// The TLS listener and its rustls configuration.
    pub(super) tls: Option<(std::net::TcpListener, Arc<rustls::ServerConfig>)>,
    /// Unfinished TLS handshakes per client address.
    pub(super) handshakes: Arc<Handshakes>,
    /// The node's metrics (refused PROXY headers and TLS handshakes).
    pub(super) metrics: Arc<Metrics>,
}

/// Serves the app made by `factory` on `listeners` with `workers` threads;
/// `on_connect` runs for each connection, on its TCP stream. Answers the
/// server and the bound addresses, each marked true if it is the TLS one,
/// the plain one first.
pub(super) fn run<F, I, S, B>(
    listeners: Listeners,
    workers: usize,
    factory: F,
    on_connect: fn(&TcpStream, &mut Extensions),
) -> io::Result<(Server, Vec<(SocketAddr, bool)>)>
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
    let Listeners {
        plain,
        proxy_protocol,
        tls,
        handshakes,
        metrics,
    } = listeners;
    let mut builder = Server::build()
        .workers(workers)
        .max_concurrent_connections(MAX_CONNECTIONS)
        .disable_signals();
    let shutdown = builder.graceful_shutdown_signal();
    let plain_addr = plain.local_addr()?;
    let mut addrs = vec![(plain_addr, false)];
    let (app, stop, plain_metrics) = (factory.clone(), shutdown.clone(), metrics.clone());
    builder = builder.listen(format!("sumu-{plain_addr}"), plain, move || {
        let plain = Plain {
            addr: plain_addr,
            proxy_protocol,
            request_timeout: CLIENT_REQUEST_TIMEOUT,
            shutdown: stop.clone(),
            metrics: plain_metrics.clone(),
        };
        plain_service(&app, plain, on_connect)
    })?;
    if let Some((listener, config)) = tls {
        let addr = listener.local_addr()?;
        addrs.push((addr, true));
        builder = builder.listen(format!("sumu-tls-{addr}"), listener, move || {
            let on_tls = move |io: &TlsStream<TcpStream>, ext: &mut Extensions| {
                on_connect(io.get_ref().0, ext)
            };
            let http = http(
                &factory,
                addr,
                CLIENT_REQUEST_TIMEOUT,
                shutdown.clone(),
                on_tls,
            );
            // Per worker: the worker's own handshakes share its slots.
            let slots = Arc::new(Semaphore::new(HANDSHAKES_PER_WORKER));
            let (config, handshakes) = (config.clone(), handshakes.clone());
            let metrics = metrics.clone();
            fn_service(move |io: TcpStream| {
                let step = TlsStep {
                    config: config.clone(),
                    slots: slots.clone(),
                    handshakes: handshakes.clone(),
                    metrics: metrics.clone(),
                };
                // Boxed: see `plain_service`.
                Box::pin(tls_accept(io, step))
            })
            .and_then(http)
        })?;
    }
    Ok((builder.run(), addrs))
}

/// What the plain listener's connection service needs besides the app.
pub(super) struct Plain {
    /// The listener's address.
    pub(super) addr: SocketAddr,
    /// Its connections start with a PROXY v2 header.
    pub(super) proxy_protocol: bool,
    /// How long a new connection may take to send its request head
    /// ([`CLIENT_REQUEST_TIMEOUT`]; the footprint test's connections wait
    /// longer, on the same timer).
    pub(super) request_timeout: Duration,
    /// The server's graceful-shutdown signal.
    pub(super) shutdown: actix_server::GracefulShutdownSignal,
    /// The node's metrics (refused PROXY headers).
    pub(super) metrics: Arc<Metrics>,
}

/// The plain listener's connection service (one per worker): the PROXY
/// step if asked, then HTTP. The footprint test serves this very service.
pub(super) fn plain_service<F, I, S, B>(
    factory: &F,
    plain: Plain,
    on_connect: fn(&TcpStream, &mut Extensions),
) -> impl ServiceFactory<TcpStream, Config = (), Response = (), Error = DispatchError, InitError = ()>
where
    F: Fn() -> I,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let Plain {
        addr,
        proxy_protocol,
        request_timeout,
        shutdown,
        metrics,
    } = plain;
    let http = http(factory, addr, request_timeout, shutdown, on_connect);
    fn_service(move |io: TcpStream| {
        // The step's future is inline in the connection's future, which
        // actix-server's task holds twice for the connection's life (in
        // 128-byte steps): the PROXY read, a few hundred bytes, is boxed so
        // it costs only while it runs (inline it added 800 bytes to every
        // socket, measured by the footprint test).
        if proxy_protocol {
            let metrics = metrics.clone();
            Either::Right(Box::pin(
                async move { read_proxy_header(io, &metrics).await },
            ))
        } else {
            // Holds only the stream (as actix-http's own `tcp()` step).
            Either::Left(async move {
                let peer = io.peer_addr().ok();
                Ok((io, Protocol::Http1, peer))
            })
        }
    })
    .and_then(http)
}

/// The HTTP service over streams of type `T`, with the node's settings.
fn http<T, F, I, S, B>(
    factory: &F,
    addr: SocketAddr,
    request_timeout: Duration,
    shutdown: actix_server::GracefulShutdownSignal,
    on_connect: impl Fn(&T, &mut Extensions) + 'static,
) -> impl ServiceFactory<
    (T, Protocol, Option<SocketAddr>),
    Config = (),
    Response = (),
    Error = DispatchError,
    InitError = (),
>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
    F: Fn() -> I,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let app = factory()
        .into_factory()
        .map_err(|err| err.into().error_response());
    HttpService::build()
        .client_request_timeout(request_timeout)
        // Drop a connection as soon as its response (or socket) is done instead
        // of waiting for the client to close first: RFC 6455 §7.1.1 has the
        // server close TCP right after the closing handshake, and under churn
        // the wait only holds descriptors.
        .client_disconnect_timeout(Duration::ZERO)
        .local_addr(addr)
        // A graceful stop also ends idle keep-alive connections (as
        // actix-web's `HttpServer` does).
        .graceful_shutdown_signal(move || {
            let shutdown = shutdown.clone();
            async move { shutdown.notified().await }
        })
        .on_connect_ext(on_connect)
        .finish(map_config(app, |_| AppConfig::default()))
}

/// Reads the connection's PROXY v2 header: the client it names becomes the
/// peer (`LOCAL`, the proxy's own health check, keeps the TCP peer).
async fn read_proxy_header(
    mut io: TcpStream,
    metrics: &Metrics,
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

/// Why a TLS connection was closed before its handshake was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum Refused {
    #[error("too many unfinished TLS handshakes from this address")]
    TooManyFromAddress,
    #[error("no whole ClientHello within {CLIENT_HELLO_TIMEOUT:?}")]
    ClientHelloTimeout,
    #[error("TLS handshake not done within {TLS_HANDSHAKE_TIMEOUT:?}")]
    HandshakeTimeout,
}

impl Refused {
    /// The label of `sumu_tls_refused_total`.
    fn reason(self) -> &'static str {
        match self {
            Refused::TooManyFromAddress => "too_many_from_address",
            Refused::ClientHelloTimeout => "client_hello_timeout",
            Refused::HandshakeTimeout => "handshake_timeout",
        }
    }

    /// Counts the refusal; the error ends the connection.
    fn into_error(self, metrics: &Metrics) -> DispatchError {
        metrics
            .tls_refused
            .with_label_values(&[self.reason()])
            .inc();
        let kind = match self {
            Refused::TooManyFromAddress => io::ErrorKind::ConnectionRefused,
            Refused::ClientHelloTimeout | Refused::HandshakeTimeout => io::ErrorKind::TimedOut,
        };
        DispatchError::Io(io::Error::new(kind, self))
    }
}

/// What the TLS step of one connection uses.
struct TlsStep {
    config: Arc<rustls::ServerConfig>,
    /// The worker's handshake slots.
    slots: Arc<Semaphore>,
    handshakes: Arc<Handshakes>,
    metrics: Arc<Metrics>,
}

/// The TLS step: the address's cap, the ClientHello (no slot held), then
/// the handshake in one of the worker's slots.
async fn tls_accept(
    io: TcpStream,
    step: TlsStep,
) -> Result<(TlsStream<TcpStream>, Protocol, Option<SocketAddr>), DispatchError> {
    let TlsStep {
        config,
        slots,
        handshakes,
        metrics,
    } = step;
    let peer = io.peer_addr().ok();
    // Held until the handshake is done (or the connection dropped).
    let _unfinished = match peer {
        Some(p) => Some(
            handshakes
                .start(p.ip())
                .ok_or_else(|| Refused::TooManyFromAddress.into_error(&metrics))?,
        ),
        None => None,
    };
    let hello = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let start = match tokio::time::timeout(CLIENT_HELLO_TIMEOUT, hello).await {
        Err(_) => return Err(Refused::ClientHelloTimeout.into_error(&metrics)),
        Ok(Err(e)) => return Err(handshake_failed(e, &metrics)),
        Ok(Ok(start)) => start,
    };
    let handshake = async {
        let _slot = slots.acquire().await;
        start.into_stream(config).await
    };
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
        Err(_) => Err(Refused::HandshakeTimeout.into_error(&metrics)),
        Ok(Err(e)) => Err(handshake_failed(e, &metrics)),
        Ok(Ok(tls)) => Ok((tls, Protocol::Http1, peer)),
    }
}

/// A handshake the client broke off or got wrong (a bad ClientHello, a
/// certificate it refused): counted, not logged above debug.
fn handshake_failed(e: io::Error, metrics: &Metrics) -> DispatchError {
    metrics
        .tls_refused
        .with_label_values(&["handshake_failed"])
        .inc();
    tracing::debug!(error = %e, "TLS handshake failed");
    DispatchError::Io(e)
}
