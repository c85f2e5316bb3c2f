//! `sumu-peer-min`: a minimal tokio-tungstenite broadcaster, the near-physical-limit
//! reference of the benchmarks. It speaks the same contract as sumu for what the load
//! tester uses: `GET /push` (user from `?user=`, or the `sub` of the JWT in
//! `?authorization=` / `Authorization: Bearer`, decoded WITHOUT verifying the signature),
//! `{"action":"ping"}` → pong, `publish`/`send` with `id` → ack (nothing is forwarded),
//! `POST /api/notify` broadcast / multicast / exclude_users with one pre-built frame shared
//! by all targets, server WebSocket pings, `GET /readyz`, `GET /api/users`. It is a
//! benchmark reference, not a server to deploy: no token verification, no limits but a
//! bounded per-socket queue (a slow reader is dropped).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use sumu_shared::server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// Largest request head or body accepted.
const MAX_REQUEST: usize = 1 << 20;
/// Frames queued per socket before it counts as a slow reader and is dropped.
const QUEUE: usize = 1024;

#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub api_key: String,
    pub ping_interval: Duration,
}

struct Conn {
    user: Arc<str>,
    tx: mpsc::Sender<Message>,
}

/// All sockets of the process.
#[derive(Default)]
pub struct Registry {
    conns: Mutex<HashMap<u64, Conn>>,
    next_id: AtomicU64,
    requests: AtomicU64,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Conn>> {
        match self.conns.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Sends `frame` to the targets; returns the number of sockets it was queued for.
    pub fn deliver(&self, users: &[String], exclude: &[String], frame: &Message) -> u64 {
        let mut conns = self.lock();
        let wanted: HashSet<&str> = users.iter().map(String::as_str).collect();
        let excluded: HashSet<&str> = exclude.iter().map(String::as_str).collect();
        let mut delivered = 0;
        let mut slow = Vec::new();
        for (id, conn) in conns.iter() {
            let user = conn.user.as_ref();
            let target = if wanted.is_empty() {
                !excluded.contains(user)
            } else {
                wanted.contains(user) && !excluded.contains(user)
            };
            if !target {
                continue;
            }
            match conn.tx.try_send(frame.clone()) {
                Ok(()) => delivered += 1,
                Err(_) => slow.push(*id),
            }
        }
        for id in slow {
            conns.remove(&id);
        }
        delivered
    }

    pub fn users(&self) -> Vec<String> {
        let mut users: Vec<String> = self.lock().values().map(|c| c.user.to_string()).collect();
        users.sort();
        users.dedup();
        users
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A parsed HTTP request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
    pub query: String,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| percent_decode(v))
        })
    }
}

/// Parses the head (everything before the blank line).
pub fn parse_head(head: &str) -> Option<RequestHead> {
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(RequestHead {
        method,
        path: path.to_string(),
        query: query.to_string(),
        headers,
    })
}

pub fn percent_decode(text: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => match (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi * 16 + lo);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        bits = (bits << 6) | v as u32;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    Some(out)
}

/// `sub` of a JWT, read WITHOUT verifying it (benchmark peers only).
pub fn jwt_subject_unverified(token: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Sub {
        sub: String,
    }
    let token = token.strip_prefix("Bearer ").unwrap_or(token).trim();
    let payload = token.split('.').nth(1)?;
    let bytes = base64url_decode(payload)?;
    serde_json::from_slice::<Sub>(&bytes).ok().map(|s| s.sub)
}

/// The user of an upgrade request: `?user=`, else the unverified `sub` of the token.
pub fn user_of(head: &RequestHead) -> Option<String> {
    if let Some(user) = head.query_param("user").filter(|u| !u.is_empty()) {
        return Some(user);
    }
    let token = head
        .query_param("authorization")
        .or_else(|| head.header("authorization").map(str::to_string))?;
    jwt_subject_unverified(&token)
}

#[derive(Deserialize)]
struct NotifyRequest<'a> {
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    exclude_users: Vec<String>,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct ClientFrame {
    action: Option<String>,
    id: Option<Box<RawValue>>,
    message: Option<Box<RawValue>>,
}

/// The reply to one client text frame, in sumu's exact frame format
/// (`sumu_shared::server`).
pub fn reply_to(text: &str, connection_id: u64) -> Option<String> {
    let Ok(frame) = serde_json::from_str::<ClientFrame>(text) else {
        return Some(server::error(400, "bad JSON", None));
    };
    match frame.action.as_deref() {
        Some("ping") => Some(server::pong(&connection_id.to_string())),
        Some("publish") | Some("send") if frame.message.is_some() => {
            frame.id.map(|id| server::ack(&id))
        }
        Some("publish") | Some("send") => {
            Some(server::error(400, "missing message", frame.id.as_deref()))
        }
        _ => Some(server::error(400, "unknown action", frame.id.as_deref())),
    }
}

/// Accepts connections forever.
pub async fn serve(listener: TcpListener, config: PeerConfig) -> std::io::Result<()> {
    let registry = Arc::new(Registry::default());
    let config = Arc::new(config);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let registry = Arc::clone(&registry);
        let config = Arc::clone(&config);
        tokio::spawn(async move {
            let _ = handle(stream, registry, config).await;
        });
    }
}

async fn respond(stream: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let text = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(text.as_bytes()).await?;
    stream.shutdown().await
}

async fn handle(
    mut stream: TcpStream,
    registry: Arc<Registry>,
    config: Arc<PeerConfig>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "slow request"))??;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > MAX_REQUEST {
            return respond(&mut stream, "431 Request Header Fields Too Large", "{}").await;
        }
    };
    let Some(head) = parse_head(&String::from_utf8_lossy(&buf[..head_end])) else {
        return respond(&mut stream, "400 Bad Request", "{}").await;
    };
    let mut body = buf[head_end + 4..].to_vec();
    match (head.method.as_str(), head.path.as_str()) {
        ("GET", "/readyz") | ("GET", "/healthz") => {
            respond(&mut stream, "200 OK", r#"{"status":"ok"}"#).await
        }
        ("GET", "/push") => upgrade(stream, head, registry, config).await,
        ("GET", "/api/users") => {
            if !authorized(&head, &config) {
                return respond(
                    &mut stream,
                    "401 Unauthorized",
                    r#"{"error":"bad api key"}"#,
                )
                .await;
            }
            let users = serde_json::to_string(&registry.users()).unwrap_or_else(|_| "[]".into());
            respond(&mut stream, "200 OK", &users).await
        }
        ("POST", "/api/notify") => {
            if !authorized(&head, &config) {
                return respond(
                    &mut stream,
                    "401 Unauthorized",
                    r#"{"error":"bad api key"}"#,
                )
                .await;
            }
            let length: usize = head
                .header("content-length")
                .and_then(|l| l.parse().ok())
                .unwrap_or(0);
            if length > MAX_REQUEST {
                return respond(&mut stream, "413 Payload Too Large", "{}").await;
            }
            while body.len() < length {
                let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "slow body")
                    })??;
                if n == 0 {
                    return Ok(());
                }
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(length);
            let Ok(request) = serde_json::from_slice::<NotifyRequest>(&body) else {
                return respond(
                    &mut stream,
                    "400 Bad Request",
                    r#"{"error":"bad notification request"}"#,
                )
                .await;
            };
            // One frame for every target: the raw `data` bytes, built once.
            let frame = Message::Text(Utf8Bytes::from(request.data.get().to_string()));
            let delivered = registry.deliver(&request.users, &request.exclude_users, &frame);
            let id = registry.requests.fetch_add(1, Ordering::Relaxed);
            respond(
                &mut stream,
                "202 Accepted",
                &format!(r#"{{"request_id":"{id}","deliveries":{delivered}}}"#),
            )
            .await
        }
        _ => respond(&mut stream, "404 Not Found", r#"{"error":"not found"}"#).await,
    }
}

fn authorized(head: &RequestHead, config: &PeerConfig) -> bool {
    head.header("authorization")
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v) == config.api_key)
        .unwrap_or(false)
}

async fn upgrade(
    mut stream: TcpStream,
    head: RequestHead,
    registry: Arc<Registry>,
    config: Arc<PeerConfig>,
) -> std::io::Result<()> {
    let Some(key) = head.header("sec-websocket-key").map(str::to_string) else {
        return respond(
            &mut stream,
            "400 Bad Request",
            r#"{"error":"not a websocket upgrade"}"#,
        )
        .await;
    };
    let Some(user) = user_of(&head) else {
        return respond(&mut stream, "401 Unauthorized", r#"{"error":"no user"}"#).await;
    };
    let accept = derive_accept_key(key.as_bytes());
    stream
        .write_all(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let mut ws = WebSocketStream::from_raw_socket(stream, Role::Server, Some(ws_config)).await;
    let id = registry.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel(QUEUE);
    registry.lock().insert(
        id,
        Conn {
            user: Arc::from(user),
            tx,
        },
    );
    let mut ping = tokio::time::interval(config.ping_interval);
    ping.tick().await;
    loop {
        tokio::select! {
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    if let Some(reply) = reply_to(text.as_str(), id) {
                        if ws.send(Message::text(reply)).await.is_err() {
                            break;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            out = rx.recv() => match out {
                Some(message) => {
                    if ws.send(message).await.is_err() {
                        break;
                    }
                }
                // Dropped from the registry (slow reader).
                None => break,
            },
            _ = ping.tick() => {
                if ws.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    registry.lock().remove(&id);
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_head_and_query() {
        let head =
            parse_head("GET /push?user=a%20b&x=1 HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: k")
                .unwrap();
        assert_eq!(head.method, "GET");
        assert_eq!(head.path, "/push");
        assert_eq!(head.query_param("user").as_deref(), Some("a b"));
        assert_eq!(head.header("sec-websocket-key"), Some("k"));
        assert_eq!(head.query_param("nope"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%A9+x"), "é x");
        assert!(parse_head("").is_none());
    }

    #[test]
    fn reads_sub_without_verifying() {
        // {"alg":"HS256"} . {"sub":"user-9","exp":1} . junk
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTkiLCJleHAiOjF9.sig";
        assert_eq!(jwt_subject_unverified(token).as_deref(), Some("user-9"));
        assert_eq!(
            jwt_subject_unverified(&format!("Bearer {token}")).as_deref(),
            Some("user-9")
        );
        assert_eq!(jwt_subject_unverified("garbage"), None);
        assert_eq!(jwt_subject_unverified("a.!!!.c"), None);
    }

    #[test]
    fn replies_like_sumu() {
        assert_eq!(
            reply_to(r#"{"action":"ping"}"#, 5).unwrap(),
            r#"{"type":"pong","statusCode":200,"connectionId":"5"}"#
        );
        assert_eq!(
            reply_to(r#"{"action":"publish","id":"x1","message":{}}"#, 5).unwrap(),
            r#"{"type":"ack","statusCode":200,"id":"x1"}"#
        );
        assert_eq!(
            reply_to(r#"{"action":"send","id":7,"message":{}}"#, 5).unwrap(),
            r#"{"type":"ack","statusCode":200,"id":7}"#
        );
        assert_eq!(reply_to(r#"{"action":"send","message":{}}"#, 5), None);
        assert!(reply_to(r#"{"action":"publish"}"#, 5)
            .unwrap()
            .contains("400"));
        assert!(reply_to("nope", 5).unwrap().contains("400"));
    }

    #[tokio::test]
    async fn delivers_broadcast_multicast_and_excludes() {
        let registry = Registry::default();
        let mut receivers = Vec::new();
        for (id, user) in ["a", "a", "b", "c"].iter().enumerate() {
            let (tx, rx) = mpsc::channel(4);
            registry.lock().insert(
                id as u64,
                Conn {
                    user: Arc::from(*user),
                    tx,
                },
            );
            receivers.push(rx);
        }
        let frame = Message::text("{}");
        assert_eq!(registry.deliver(&[], &[], &frame), 4);
        assert_eq!(registry.deliver(&[], &["a".into()], &frame), 2);
        assert_eq!(registry.deliver(&["a".into(), "c".into()], &[], &frame), 3);
        assert_eq!(registry.deliver(&["a".into()], &["a".into()], &frame), 0);
        assert_eq!(registry.users(), vec!["a", "b", "c"]);
    }
}
