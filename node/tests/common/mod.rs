//! Shared helpers of the node's integration tests: a real `sumu-node`
//! process on a run-time port, WebSocket clients, token minting.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A running node; killed on drop.
pub struct Node {
    pub child: Child,
    pub addr: SocketAddr,
    pub api_key: String,
}

impl Node {
    /// `--dev` node on 127.0.0.1:0 with extra flags.
    pub fn dev(extra: &[&str]) -> Node {
        let mut args = vec!["--dev"];
        args.extend_from_slice(extra);
        Node::start(&args, "dev")
    }

    pub fn start(args: &[&str], api_key: &str) -> Node {
        Node::start_with_env(args, api_key, &[])
    }

    pub fn start_with_env(args: &[&str], api_key: &str, env: &[(&str, &str)]) -> Node {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sumu-node"));
        cmd.args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("SUMU_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn sumu-node");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("node exited before listening")
                .expect("read stdout");
            if let Some(rest) = line.strip_prefix("sumu-node listening on ") {
                break rest.trim().parse().expect("address");
            }
        };
        // Keep draining stdout so the node never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Node {
            child,
            addr,
            api_key: api_key.to_string(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/push?authorization={}", self.addr, token)
    }

    pub async fn dev_token(&self, sub: &str) -> String {
        let v: serde_json::Value = reqwest::get(self.url(&format!("/dev/token?sub={sub}")))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["token"].as_str().unwrap().to_string()
    }

    /// A `--dev` socket for `sub`.
    pub async fn connect(&self, sub: &str) -> Ws {
        let token = self.dev_token(sub).await;
        let (ws, _) = tokio_tungstenite::connect_async(self.ws_url(&token))
            .await
            .expect("connect");
        ws
    }

    /// POST /api/notify; returns (status, body).
    pub async fn notify(&self, body: &str) -> (u16, serde_json::Value) {
        let r = reqwest::Client::new()
            .post(self.url("/api/notify"))
            .header("authorization", format!("Bearer {}", self.api_key))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Next text frame within `within`, skipping pings/pongs.
pub async fn next_text(ws: &mut Ws, within: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.ok()??;
        match msg {
            Ok(Message::Text(t)) => return Some(t.to_string()),
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => continue,
            _ => return None,
        }
    }
}

/// Waits for the close frame; returns its code (None: closed without one, or timeout).
pub async fn close_code(ws: &mut Ws, within: Duration) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(CloseFrame { code, .. }))))) => {
                return Some(u16::from(code))
            }
            Ok(Some(Ok(Message::Close(None)))) | Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(_))) => continue,
            Err(_) => return None,
        }
    }
}

pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_string()))
        .await
        .expect("send");
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Signs `claims` with `alg` and the PEM/secret `key`, with an optional kid.
pub fn sign(
    alg: jsonwebtoken::Algorithm,
    key: &[u8],
    kid: Option<&str>,
    claims: serde_json::Value,
) -> String {
    use jsonwebtoken::{EncodingKey, Header};
    let enc = match alg {
        jsonwebtoken::Algorithm::HS256 => EncodingKey::from_secret(key),
        jsonwebtoken::Algorithm::ES256 => EncodingKey::from_ec_pem(key).unwrap(),
        _ => EncodingKey::from_rsa_pem(key).unwrap(),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, &claims, &enc).unwrap()
}

/// The HTTP status of a refused upgrade and its JSON body.
pub async fn refused(url: &str) -> (u16, String) {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => (101, String::new()),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).to_string())
                .unwrap_or_default();
            (resp.status().as_u16(), body)
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// A one-file HTTP server on a run-time port (for JWKS URIs).
pub fn serve_file(body: String, cache_control: &'static str) -> SocketAddr {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: {cache_control}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes());
        }
    });
    addr
}

pub use sumu_testkit::Emulator;

/// SDK configuration for the emulator (what a backend would use locally).
pub async fn sdk(emulator: &Emulator) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&emulator.endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .load()
        .await
}

/// Like [`serve_file`], and counts the requests served (to see how often a
/// node fetches its JWKS).
pub fn serve_file_counted(
    body: String,
    cache_control: &'static str,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let count = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            counter.fetch_add(1, Ordering::SeqCst);
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: {cache_control}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes());
        }
    });
    (addr, count)
}
