//! A node's lifecycle: wiring (hub → engine → auth → HTTP), serving on a
//! listener it is given, and the graceful drain once the shutdown future it
//! is given resolves. Shutdown is injected: the binary wires it to
//! SIGTERM/SIGINT, tests to whatever they like.

#[cfg(test)]
mod footprint;
mod listeners;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Extensions, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::rt::net::TcpStream;
use actix_web::{web, App};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::dev::{DevIssuer, DEV_KID};
use crate::auth::Authenticator;
use crate::close::CloseReason;
use crate::config::{Config, EngineKind, TlsListen, TlsSource};
use crate::engine::history::Budget;
use crate::engine::{self, Engine, EngineError};
use crate::http::{self, AppState};
use crate::hub::LocalDelivery;
use crate::limits::{Admission, Handshakes};
use crate::logging::chain;
use crate::metrics::Metrics;
use crate::session::{RecoveryEnv, SessionEnv};
use crate::tls::{self, CertResolver, TlsError, TlsFiles};

/// How long sockets told to close may take to go, after the drain waves.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long the engine's background tasks may take to stop.
const TASKS_GRACE: Duration = Duration::from_secs(5);
/// Pending connections the kernel keeps for a node under a connect storm.
const BACKLOG: i32 = 4096;

/// Why a node could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A token key source could not be loaded.
    #[error("token keys")]
    Keys(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The engine could not start.
    #[error("engine")]
    Engine(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The TLS listener's certificate or key is unusable (or `--dev-tls` could not
    /// write its files): `main` exits with [`EXIT_TLS`].
    #[error("TLS listener")]
    Tls(#[source] TlsError),
    /// The HTTP server failed.
    #[error("server failed")]
    Server(#[source] std::io::Error),
}

/// Exit code of `sumu-node` when the TLS certificate or key is unusable at start.
pub const EXIT_TLS: i32 = 3;

/// The TLS listener of `tls`: the certificate is loaded first (the node refuses to
/// start without a usable one), then the address is bound. Answers the bound
/// listener, its rustls configuration and the resolver the watcher reloads.
fn tls_listener(
    tls: &TlsListen,
) -> Result<
    (
        std::net::TcpListener,
        Arc<rustls::ServerConfig>,
        Arc<CertResolver>,
    ),
    NodeError,
> {
    let files = match &tls.source {
        TlsSource::Files { cert, key } => TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        },
        TlsSource::Dev => {
            let dir = std::env::temp_dir().join(format!("sumu-dev-tls-{}", std::process::id()));
            let dev = tls::generate_dev_tls(&dir).map_err(NodeError::Tls)?;
            tracing::info!(
                ca = %dev.ca.display(),
                "--dev-tls: trust this CA (sumu-loadtest --ca-file; a browser: install it, or \
                 --ignore-certificate-errors in tests only)"
            );
            dev.files
        }
    };
    let resolver = CertResolver::load(files, tls::provider()).map_err(NodeError::Tls)?;
    let config = tls::server_config(Arc::clone(&resolver)).map_err(NodeError::Tls)?;
    Ok((bind(tls.listen)?, Arc::new(config), resolver))
}

/// Binds `addr` with a deep accept queue (the default 128 drops connects
/// under a storm).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, NodeError> {
    let err = |source| NodeError::Bind { addr, source };
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    let listener = socket.listen(BACKLOG as u32).map_err(err)?;
    listener.into_std().map_err(err)
}

/// `--max-sockets`, or (0) the descriptor limit less a reserve for the
/// listener, AWS connections and files: 5%, at least 64.
fn max_sockets(config: &Config) -> usize {
    config.sockets.max_sockets.unwrap_or_else(|| {
        let files = crate::sys::file_limit().map_or(usize::MAX, |n| n as usize);
        files.saturating_sub((files / 20).max(64)).max(1)
    })
}

/// The engine of `config`, delivering through `local` and counting in
/// `metrics`; `address` is where this node listens (written to its cluster
/// row).
async fn build_engine(
    config: &Config,
    local: LocalDelivery,
    metrics: &Arc<Metrics>,
    address: SocketAddr,
) -> Result<Engine, EngineError> {
    match config.engine {
        EngineKind::Memory => Ok(engine::memory::engine(
            config.presence_source,
            config.recovery,
            local,
            metrics.clone(),
        )),
        EngineKind::Aws => engine::aws::engine(config, local, metrics.clone(), address).await,
    }
}

/// The TLS listener as [`tls_listener`] answers it: the bound listener, its
/// rustls configuration and the resolver the watcher reloads.
type TlsParts = (
    std::net::TcpListener,
    Arc<rustls::ServerConfig>,
    Arc<CertResolver>,
);

/// The engine and what runs beside it, started: the delivery to this
/// node's sockets, the engine with its background tasks (and the in-process
/// demo backend), and the one token that stops them.
struct Running {
    metrics: Arc<Metrics>,
    local: LocalDelivery,
    engine: Engine,
    tasks: TaskTracker,
    stop: CancellationToken,
}

/// A node's parts, wired and started, before it serves: what [`serve`]
/// runs its listeners on.
struct Wired {
    config: Arc<Config>,
    tls: Option<TlsParts>,
    running: Running,
    state: web::Data<AppState>,
    ready: Arc<AtomicBool>,
}

/// Wires the TLS listener (first) → hub → engine (its background tasks
/// started) → auth → the HTTP layer's state; `listen` is where the node
/// will listen.
async fn wire(config: Config, listen: SocketAddr) -> Result<Wired, NodeError> {
    let config = Arc::new(config);
    // The TLS files first: a node that cannot serve them must not have
    // joined the fleet (an inbox, a subscription and a row left behind).
    let tls = config.tls.as_ref().map(tls_listener).transpose()?;
    let running = start_engine(&config, listen).await?;
    let (auth, dev) = authenticator(&config).await?;
    let ready = Arc::new(AtomicBool::new(false));
    let state = app_state(&config, &running, auth, dev, &ready);
    Ok(Wired {
        config,
        tls,
        running,
        state,
        ready,
    })
}

/// Starts the hub's delivery, the engine and its background tasks, and
/// (`--dev`, memory engine) the demo backend beside them.
async fn start_engine(config: &Arc<Config>, listen: SocketAddr) -> Result<Running, NodeError> {
    // This node's own metrics: a process serving two nodes counts them apart.
    let metrics = Arc::new(Metrics::new());
    let local = LocalDelivery::start(metrics.clone());
    local.sweep(crate::outbound::FrozenRule::new(&config.limits));
    let engine = build_engine(config, local.clone(), &metrics, listen)
        .await
        .map_err(|e| NodeError::Engine(e.into()))?;
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    engine
        .background
        .start(&tasks, stop.clone())
        .await
        .map_err(|e| NodeError::Engine(e.into()))?;
    if let (true, Some(bus)) = (config.demo_backend, &engine.bus) {
        crate::demo::spawn(
            &tasks,
            stop.clone(),
            bus,
            engine.router.clone(),
            local.clone(),
            config.node_id.clone(),
        );
    }
    Ok(Running {
        metrics,
        local,
        engine,
        tasks,
        stop,
    })
}

/// The token checker of `config`, its keys fetched once; with `--dev`, the
/// dev issuer whose key it also accepts.
async fn authenticator(
    config: &Config,
) -> Result<(Authenticator, Option<Arc<DevIssuer>>), NodeError> {
    let dev = config.dev.then(|| {
        Arc::new(DevIssuer::new(
            config.auth.audiences.first().cloned(),
            config.auth.issuer.clone(),
            config.auth.hs256_secret.as_deref(),
        ))
    });
    let auth = Authenticator::new(
        config.auth.clone(),
        dev.as_ref()
            .map(|d| (DEV_KID.to_string(), d.verification_key())),
    )
    .map_err(|e| NodeError::Keys(e.into()))?
    .with_max_subject_bytes(config.auth.max_user_id_bytes)
    .with_jwks_min_cache(config.auth.jwks_min_cache);
    auth.warm_up().await;
    Ok((auth, dev))
}

/// The HTTP layer's state: what every request and socket of the node shares.
fn app_state(
    config: &Arc<Config>,
    running: &Running,
    auth: Authenticator,
    dev: Option<Arc<DevIssuer>>,
    ready: &Arc<AtomicBool>,
) -> web::Data<AppState> {
    let Running {
        metrics,
        local,
        engine,
        ..
    } = running;
    let admission = Admission::new(config.sockets.clone(), max_sockets(config));
    tracing::info!(max_sockets = admission.max_sockets(), "socket limits");
    web::Data::new(AppState {
        config: config.clone(),
        auth: Arc::new(auth),
        dev,
        engine: engine.clone(),
        local: local.clone(),
        session_env: Arc::new(SessionEnv {
            limits: config.limits.clone(),
            output: engine.output.clone(),
            metrics: metrics.clone(),
        }),
        recovery: Arc::new(RecoveryEnv::new(
            engine.history.clone(),
            Budget {
                positions: config.recovery.max_messages,
                bytes: config.recovery.max_bytes,
            },
            metrics.clone(),
        )),
        ready: ready.clone(),
        admission,
        metrics: metrics.clone(),
    })
}

/// The node's HTTP app: what every listener serves.
fn app(
    state: &web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state.clone())
        .configure(|c| http::configure(c, state))
}

/// Serves on `listener` until `shutdown` resolves, then drains: `/readyz`
/// turns 503, sockets close in jittered waves, background tasks stop as
/// one set, the node leaves the fleet.
pub async fn serve(
    config: Config,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    let listen = listener.local_addr().unwrap_or(config.listen);
    let mut node = wire(config, listen).await?;
    let Listening {
        server,
        addrs,
        resolver,
    } = start_listeners(&mut node, listener, listen)?;
    handle_reloads(&node, resolver);
    let handle = server.handle();
    announce(&node.config, &addrs);
    node.ready.store(true, Ordering::Release);

    let server_task = actix_web::rt::spawn(server);
    shutdown.await;
    drain(&node).await;
    handle.stop(true).await;
    match server_task.await {
        Ok(Ok(())) | Err(_) => Ok(()),
        Ok(Err(e)) => Err(NodeError::Server(e)),
    }
}

/// The node's listeners, bound and served by one server not yet running:
/// their addresses (TLS marked) and the TLS certificate's resolver, if any.
struct Listening {
    server: actix_web::dev::Server,
    addrs: Vec<(SocketAddr, bool)>,
    resolver: Option<Arc<CertResolver>>,
}

/// Puts the plain `listener` (bound to `listen`) and the wired TLS listener
/// behind one server of the node's app.
fn start_listeners(
    node: &mut Wired,
    listener: std::net::TcpListener,
    listen: SocketAddr,
) -> Result<Listening, NodeError> {
    let config = &node.config;
    let app_state = node.state.clone();
    let app = move || app(&app_state);
    let (tls, resolver) = match node.tls.take() {
        Some((listener, rustls_config, resolver)) => {
            (Some((listener, rustls_config)), Some(resolver))
        }
        None => (None, None),
    };
    let served = listeners::Listeners {
        plain: listener,
        proxy_protocol: config.proxy_protocol,
        tls,
        handshakes: Handshakes::new(&config.sockets),
        metrics: node.running.metrics.clone(),
    };
    let (server, addrs) =
        listeners::run(served, config.workers, app, on_connect).map_err(|source| {
            NodeError::Bind {
                addr: listen,
                source,
            }
        })?;
    Ok(Listening {
        server,
        addrs,
        resolver,
    })
}

/// What SIGHUP does: reload the TLS certificate (also on file changes), or
/// nothing; either way the handler is installed before the node says it
/// listens, and stops with the node.
fn handle_reloads(node: &Wired, resolver: Option<Arc<CertResolver>>) {
    let Running { tasks, stop, .. } = &node.running;
    if let (Some(resolver), Some(t)) = (resolver, &node.config.tls) {
        // Reloads on SIGHUP (handler installed now, before the node says it listens)
        // and on file changes, until the shutdown.
        tasks.spawn(tls::watch(
            resolver,
            t.watch,
            stop.clone().cancelled_owned(),
        ));
    } else {
        // Nothing to reload; a SIGHUP (`systemctl reload`) must not end the node,
        // which is the signal's default action. Installed before "listening".
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                let stop = stop.clone();
                tasks.spawn(async move {
                    while stop
                        .run_until_cancelled(hup.recv())
                        .await
                        .flatten()
                        .is_some()
                    {
                        tracing::info!("SIGHUP: nothing to reload (no --tls-listen)");
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "no SIGHUP handler"),
        }
    }
}

/// Says where the node listens: one plain line on stdout per listener (for
/// scripts and tests), its log line, and with `--dev` the demo page.
fn announce(config: &Config, addrs: &[(SocketAddr, bool)]) {
    for &(addr, tls) in addrs {
        // One plain line on stdout per listener for scripts and tests: the bound
        // address, the TLS one marked (plain first).
        let mark = if tls { " (tls)" } else { "" };
        println!("sumu-node listening on {addr}{mark}");
        tracing::info!(%addr, tls, node_id = %config.node_id, engine = ?config.engine, dev = config.dev, "listening");
    }
    if config.dev {
        // The well-known dev key is named; a key given with --api-key is a
        // secret and never logged.
        let key = match config.api_key.as_deref() {
            Some(crate::config::DEV_API_KEY) => crate::config::DEV_API_KEY,
            Some(_) => "the one given with --api-key",
            None => "none",
        };
        for &(addr, tls) in addrs {
            let scheme = if tls { "https" } else { "http" };
            tracing::info!("demo page: {scheme}://{addr}/  (API key: {key})");
        }
    }
}

/// The graceful drain: `/readyz` turns 503, the sockets close in waves
/// while the engine stops taking requests, background tasks stop as one
/// set within [`TASKS_GRACE`], and the node leaves the fleet.
async fn drain(node: &Wired) {
    let Running {
        local,
        engine,
        tasks,
        stop,
        ..
    } = &node.running;
    tracing::info!("shutting down: draining sockets");
    node.ready.store(false, Ordering::Release);
    // While the sockets go, the node stops taking requests from the shared
    // queue: its last receives finish and are routed, not left invisible.
    let sockets = async {
        match local
            .drain(node.config.drain, CloseReason::ServerShutdown)
            .await
        {
            Ok(n) => tracing::info!(closed = n, "sockets told to close"),
            Err(e) => tracing::warn!(error = %chain(&e), "drain failed"),
        }
        if tokio::time::timeout(CLOSE_GRACE, local.emptied())
            .await
            .is_err()
        {
            tracing::warn!("sockets still open after the drain; stopping anyway");
        }
    };
    tokio::join!(sockets, engine.background.stop_intake());
    stop.cancel();
    tasks.close();
    if tokio::time::timeout(TASKS_GRACE, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop in time");
    }
    engine.background.leave().await;
}

/// Every accepted connection: no Nagle delay, and its descriptor recorded
/// (for cutting off a slow reader from outside its session).
fn on_connect(tcp: &TcpStream, ext: &mut Extensions) {
    let _ = tcp.set_nodelay(true);
    ext.insert(crate::outbound::kill_switch(tcp));
}

/// Resolves on SIGTERM or SIGINT.
pub async fn signalled() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// `sumu-node cluster status`: the fleet's status as a table (or JSON).
pub async fn cluster_status(config: &Config, json: bool) -> Result<String, NodeError> {
    engine::aws::cluster_status(config, json)
        .await
        .map_err(|e| NodeError::Engine(e.into()))
}

/// `sumu-node bootstrap`: creates the AWS resources; answers the
/// `SUMU_*=…` lines that name them.
pub async fn bootstrap(config: &Config) -> Result<String, NodeError> {
    let resources = engine::aws::bootstrap(config)
        .await
        .map_err(|e| NodeError::Engine(e.into()))?;
    Ok(resources.to_env())
}
