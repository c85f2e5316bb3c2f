//! The one client tests use to talk to a node, whichever way it runs (a
//! process, [`crate::node::Node`], or in this process,
//! [`crate::in_process::InProcessNode`]; both dereference to it): its URLs,
//! a `--dev` token and socket, the backend API and the metrics. Every call
//! goes over loopback HTTP/WebSocket, exactly as a backend or a browser
//! would reach a node.

use std::net::SocketAddr;

use crate::ws::Ws;

/// Where a node listens, and its API key.
#[derive(Debug, Clone)]
pub struct NodeClient {
    pub addr: SocketAddr,
    /// The TLS listener's address, when the node has one.
    pub tls_addr: Option<SocketAddr>,
    pub api_key: String,
}

impl NodeClient {
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

    /// POST /api/notify `n` times with one HTTP client, `concurrency` at a
    /// time; panics unless every one is accepted (202).
    pub async fn notify_many(&self, body: &str, n: usize, concurrency: usize) {
        use futures_util::StreamExt;
        let client = reqwest::Client::new();
        let url = self.url("/api/notify");
        let auth = format!("Bearer {}", self.api_key);
        let mut sent = futures_util::stream::iter(0..n)
            .map(|_| {
                client
                    .post(&url)
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
            })
            .buffer_unordered(concurrency.max(1));
        while let Some(r) = sent.next().await {
            assert_eq!(r.expect("notify").status().as_u16(), 202);
        }
    }

    /// The users with a socket on this node (GET /api/users).
    pub async fn users(&self) -> Vec<String> {
        let v: serde_json::Value = reqwest::Client::new()
            .get(self.url("/api/users"))
            .header("authorization", format!("Bearer {}", self.api_key))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        serde_json::from_value(v["users"].clone()).expect("users")
    }

    /// The value of one metric sample (`name{labels}` exactly as exposed),
    /// 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find_map(|l| {
                l.strip_prefix(sample)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}
