//! PROXY protocol v2 for tests: the header a proxy writes before a
//! client's bytes, written by hand (so a test can name any client
//! address), and HAProxy in front of a node with `send-proxy-v2`.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, scratch};

/// The 12 bytes every v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 `PROXY` header for a TCP connection from `source` to `dest`
/// (both IPv4 or both IPv6).
pub fn v2_header(source: SocketAddr, dest: SocketAddr) -> Vec<u8> {
    let mut body = Vec::new();
    let family = match (source, dest) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            body.extend_from_slice(&s.ip().octets());
            body.extend_from_slice(&d.ip().octets());
            0x11
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            body.extend_from_slice(&s.ip().octets());
            body.extend_from_slice(&d.ip().octets());
            0x21
        }
        _ => panic!("source and destination of one family"),
    };
    body.extend_from_slice(&source.port().to_be_bytes());
    body.extend_from_slice(&dest.port().to_be_bytes());
    let mut h = SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, family]);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(&body);
    h
}

/// The v2 `LOCAL` header (a proxy's own health check: no client).
pub fn v2_local() -> Vec<u8> {
    let mut h = SIGNATURE.to_vec();
    h.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    h
}

/// HAProxy in TCP mode on a loopback port, forwarding to `backend` with a
/// PROXY v2 header; killed on drop. Needs `haproxy` on the PATH
/// (`infra/local/cluster install`, which `infra/local/test-all` runs).
pub struct Haproxy {
    child: Child,
    pub addr: SocketAddr,
}

impl Haproxy {
    pub fn send_proxy_v2(backend: SocketAddr) -> Haproxy {
        crate::may_start("HAProxy");
        let port = free_port();
        let dir = scratch(&format!("haproxy-{port}"));
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  maxconn 1000\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
                 timeout client 60s\n  timeout server 60s\nfrontend fe\n  bind 127.0.0.1:{port}\n  \
                 default_backend be\nbackend be\n  server node {backend} send-proxy-v2\n"
            ),
        )
        .expect("write haproxy.cfg");
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("haproxy on the PATH (infra/local/cluster install)");
        let haproxy = Haproxy {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(haproxy.addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "haproxy did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        haproxy
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
