//! Signing test tokens (any algorithm and key the node accepts).

use std::time::{SystemTime, UNIX_EPOCH};

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

/// A one-file HTTP server on a run-time port (for JWKS URIs).
pub fn serve_file(body: String, cache_control: &'static str) -> std::net::SocketAddr {
    serve_file_counted(body, cache_control).0
}

/// [`serve_file`], also counting the requests it answered.
pub fn serve_file_counted(
    body: String,
    cache_control: &'static str,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
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
