//! `sumu-peer-min --listen 127.0.0.1:PORT [--api-key dev] [--ping-interval 30s]`:
//! the minimal tokio-tungstenite reference peer of the benchmarks (see
//! `sumu_loadtest::peer_min`). It does not verify tokens.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use sumu_loadtest::duration_arg::parse_duration;
use sumu_loadtest::peer_min::{serve, PeerConfig};

#[derive(Parser, Debug)]
#[command(
    name = "sumu-peer-min",
    version,
    about = "Minimal tokio-tungstenite broadcaster (benchmark reference; verifies no token)"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// API key for POST /api/notify and GET /api/users.
    #[arg(long, default_value = "dev")]
    api_key: String,
    /// Server WebSocket ping interval.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    ping_interval: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = sumu_loadtest::sys_limits::raise_nofile(1 << 20);
    // A deep accept queue (the kernel caps it at net.core.somaxconn): connect storms
    // should measure the server, not SYN retransmits.
    let socket = if args.listen.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }?;
    socket.set_reuseaddr(true)?;
    socket
        .bind(args.listen)
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let listener = socket.listen(8192)?;
    eprintln!("sumu-peer-min listening on {}", listener.local_addr()?);
    serve(
        listener,
        PeerConfig {
            api_key: args.api_key,
            ping_interval: args.ping_interval.max(Duration::from_millis(100)),
        },
    )
    .await?;
    Ok(())
}
