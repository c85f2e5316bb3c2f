//! Wiring and lifecycle of a node: engine, registry, HTTP server, signals,
//! graceful drain.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use actix_web::{web, App, HttpServer};

use crate::auth::dev::{DevIssuer, DEV_KID};
use crate::auth::keys::KeyError;
use crate::auth::Authenticator;
use crate::config::{Config, EngineKind};
use crate::engine::{self, Engine, EngineError};
use crate::http::push::SocketFd;
use crate::http::{self, AppState};
use crate::registry::{LocalDelivery, Registry};
use crate::session::SessionEnv;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Server(std::io::Error),
}

async fn build_engine(config: &Config) -> Result<Engine, NodeError> {
    match config.engine {
        EngineKind::Memory => Ok(engine::memory::engine(config.presence_source)),
        EngineKind::Aws => Ok(engine::aws::engine(config).await?),
    }
}

/// Runs a node until SIGTERM/SIGINT, then drains and returns.
pub async fn run(config: Config) -> Result<(), NodeError> {
    let config = Arc::new(config);
    let engine = build_engine(&config).await?;
    let registry = Registry::default().start();
    let local = LocalDelivery::new(registry);
    engine.background.start(local.clone()).await?;

    let dev = config.dev.then(|| {
        Arc::new(DevIssuer::new(
            config.auth.audiences.first().cloned(),
            config.auth.issuer.clone(),
        ))
    });
    let auth = Authenticator::new(
        config.auth.clone(),
        dev.as_ref()
            .map(|d| (DEV_KID.to_string(), d.verification_key())),
    )?;
    auth.warm_up().await;
    let ready = Arc::new(AtomicBool::new(false));
    let state = web::Data::new(AppState {
        config: config.clone(),
        auth: Arc::new(auth),
        dev,
        engine: engine.clone(),
        local: local.clone(),
        session_env: Arc::new(SessionEnv {
            limits: config.limits.clone(),
            output: engine.output.clone(),
        }),
        ready: ready.clone(),
    });

    let app_state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(app_state.clone())
            .configure(|c| http::configure(c, &app_state))
    })
    .workers(config.workers)
    .backlog(4096)
    .max_connections(1_000_000)
    .client_request_timeout(Duration::from_secs(10))
    .disable_signals()
    .on_connect(|conn, ext| {
        if let Some(tcp) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
            let _ = tcp.set_nodelay(true);
            ext.insert(SocketFd(tcp.as_raw_fd()));
        }
    })
    .bind(config.listen)
    .map_err(|source| NodeError::Bind {
        addr: config.listen,
        source,
    })?;
    let addrs = server.addrs();
    let server = server.run();
    let handle = server.handle();
    for addr in &addrs {
        // One plain line on stdout for scripts and tests: the bound address.
        println!("sumu-node listening on {addr}");
        tracing::info!(%addr, node_id = %config.node_id, engine = ?config.engine, dev = config.dev, "listening");
    }
    if config.dev {
        if let Some(addr) = addrs.first() {
            tracing::info!(
                "demo page: http://{addr}/  (API key: {})",
                config.api_key.as_deref().unwrap_or("")
            );
        }
    }
    ready.store(true, Ordering::Release);

    let server_task = actix_web::rt::spawn(server);
    wait_for_signal().await;
    tracing::info!("shutting down: draining sockets");
    ready.store(false, Ordering::Release);
    match local.drain(config.drain).await {
        Ok(n) => tracing::info!(closed = n, "sockets told to close"),
        Err(e) => tracing::warn!(error = %e, "drain failed"),
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if local.count().await.unwrap_or(0) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    engine.background.stop().await;
    handle.stop(true).await;
    match server_task.await {
        Ok(Ok(())) | Err(_) => Ok(()),
        Ok(Err(e)) => Err(NodeError::Server(e)),
    }
}

async fn wait_for_signal() {
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
