//! Opening one client WebSocket: optional source-address bind, TCP connect, TLS handshake
//! (wss, with the target's rustls configuration), upgrade with the token, all under one
//! timeout; failures carry a [`FailureKind`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::cli::TokenPlacement;
use crate::sys_limits::FailureKind;
use crate::target::Target;
use crate::tokens::encode_query_value;

pub type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Debug, thiserror::Error)]
#[error("{} ({stage}): {message}", kind.name())]
pub struct ConnectError {
    pub kind: FailureKind,
    pub stage: &'static str,
    pub message: String,
}

impl ConnectError {
    fn io(stage: &'static str, error: std::io::Error) -> Self {
        ConnectError {
            kind: FailureKind::from_io(&error),
            stage,
            message: error.to_string(),
        }
    }

    fn ws(error: WsError) -> Self {
        let (kind, message) = match error {
            // tokio-rustls reports a failed handshake as an io::Error wrapping rustls's.
            WsError::Io(e) if rustls_error(&e).is_some() => (FailureKind::Tls, e.to_string()),
            WsError::Io(e) => (FailureKind::from_io(&e), e.to_string()),
            WsError::Tls(e) => (FailureKind::Tls, e.to_string()),
            WsError::Http(response) => {
                let status = response.status();
                let body = response
                    .body()
                    .as_deref()
                    .map(|b| String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned())
                    .unwrap_or_default();
                (
                    FailureKind::HttpStatus(status.as_u16()),
                    format!("HTTP {status} {body}"),
                )
            }
            WsError::ConnectionClosed | WsError::AlreadyClosed => {
                (FailureKind::ConnectionReset, "closed during upgrade".into())
            }
            other => (FailureKind::Protocol, other.to_string()),
        };
        ConnectError {
            kind,
            stage: "upgrade",
            message,
        }
    }
}

/// The rustls error inside an I/O error of the TLS handshake, if that is what it is.
fn rustls_error(error: &std::io::Error) -> Option<&rustls::Error> {
    error.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Small buffers: a load generator holds tens of thousands of sockets that receive small
/// frames (tungstenite's default read buffer is 128 KiB per socket).
pub fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
}

/// The upgrade URL of `target` for `token`.
pub fn socket_url(target: &Target, token: &str, placement: TokenPlacement) -> String {
    match placement {
        TokenPlacement::Query => format!(
            "{}?authorization={}",
            target.ws_url,
            encode_query_value(token)
        ),
        TokenPlacement::Header => target.ws_url.clone(),
    }
}

/// Connects one socket; returns it and the time from the first syscall to the end of the
/// upgrade.
pub async fn connect(
    target: &Target,
    token: &str,
    placement: TokenPlacement,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Result<(WsStream, Duration), ConnectError> {
    let started = Instant::now();
    let attempt = async {
        let socket = if target.addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| ConnectError::io("socket", e))?;
        if let Some(source) = source {
            socket
                .bind(SocketAddr::new(source, 0))
                .map_err(|e| ConnectError::io("bind", e))?;
        }
        let stream = socket
            .connect(target.addr)
            .await
            .map_err(|e| ConnectError::io("connect", e))?;
        // Frames are small and latency is what we measure.
        let _ = stream.set_nodelay(true);
        let mut request = socket_url(target, token, placement)
            .into_client_request()
            .map_err(ConnectError::ws)?;
        if placement == TokenPlacement::Header {
            let value =
                HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| ConnectError {
                    kind: FailureKind::Protocol,
                    stage: "request",
                    message: e.to_string(),
                })?;
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        // wss: the handshake uses the URL's host as SNI / the name to verify.
        let connector = target
            .tls
            .as_ref()
            .map(|config| Connector::Rustls(Arc::clone(config)))
            .unwrap_or(Connector::Plain);
        let (ws, _response) = tokio_tungstenite::client_async_tls_with_config(
            request,
            stream,
            Some(client_config()),
            Some(connector),
        )
        .await
        .map_err(ConnectError::ws)?;
        Ok(ws)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(ws)) => Ok((ws, started.elapsed())),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ConnectError {
            kind: FailureKind::TimedOut,
            stage: "connect+upgrade",
            message: format!("no upgrade within {timeout:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(port: u16) -> Target {
        Target {
            http_base: format!("http://127.0.0.1:{port}"),
            ws_url: format!("ws://127.0.0.1:{port}/push"),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            host: "127.0.0.1".into(),
            tls: None,
        }
    }

    #[test]
    fn url_carries_encoded_token_only_in_query_mode() {
        let t = target(9);
        assert_eq!(
            socket_url(&t, "a.b+c", TokenPlacement::Query),
            "ws://127.0.0.1:9/push?authorization=a.b%2Bc"
        );
        assert_eq!(
            socket_url(&t, "a.b", TokenPlacement::Header),
            "ws://127.0.0.1:9/push"
        );
    }

    #[tokio::test]
    async fn refused_port_is_a_server_side_failure() {
        // Bind then drop a listener to get a port nobody listens on.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = connect(
            &target(port),
            "t",
            TokenPlacement::Query,
            Some("127.0.0.2".parse().unwrap()),
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind, FailureKind::ConnectionRefused);
    }

    #[tokio::test]
    async fn http_error_status_is_reported() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf).await;
            let body = r#"{"error":"bad token"}"#;
            let _ = s
                .write_all(
                    format!(
                        "HTTP/1.1 401 Unauthorized\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
        });
        let err = connect(
            &target(port),
            "t",
            TokenPlacement::Header,
            None,
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
        assert_eq!(err.kind, FailureKind::HttpStatus(401));
    }
}
