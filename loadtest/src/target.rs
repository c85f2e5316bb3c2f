//! The server under test: its address, its URLs, and the loopback-only guard.

use std::net::{IpAddr, SocketAddr};

use reqwest::Url;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("invalid --url {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error(
        "{host} resolves to {addr}, which is not a loopback address; pass --allow-remote to load-test a remote server"
    )]
    NotLoopback { host: String, addr: IpAddr },
}

/// A resolved target.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port` without a trailing slash.
    pub http_base: String,
    /// `ws://host:port/push` (no query).
    pub ws_url: String,
    /// The socket address connections go to.
    pub addr: SocketAddr,
    /// Host as written in the URL (used for the Host header).
    pub host: String,
}

/// Splits `--url` into scheme-neutral host, port and base URLs.
pub fn parse_url(url: &str, ws_path: &str) -> Result<(String, u16, String, String), TargetError> {
    let bad = |reason: &str| TargetError::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let parsed = Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    let (http_scheme, ws_scheme) = match parsed.scheme() {
        "http" | "ws" => ("http", "ws"),
        "https" | "wss" => {
            return Err(bad("TLS is not supported; test the server over plain HTTP"))
        }
        _ => return Err(bad("scheme must be http or ws")),
    };
    let host = parsed.host_str().ok_or_else(|| bad("no host"))?.to_string();
    let port = parsed.port_or_known_default().unwrap_or(80);
    let path = if ws_path.starts_with('/') {
        ws_path.to_string()
    } else {
        format!("/{ws_path}")
    };
    let http_base = format!("{http_scheme}://{host}:{port}");
    let ws_url = format!("{ws_scheme}://{host}:{port}{path}");
    Ok((host, port, http_base, ws_url))
}

/// Refuses any non-loopback address unless `allow_remote`.
pub fn check_loopback(host: &str, addrs: &[IpAddr], allow_remote: bool) -> Result<(), TargetError> {
    if addrs.is_empty() {
        return Err(TargetError::NoAddress {
            host: host.to_string(),
        });
    }
    if allow_remote {
        return Ok(());
    }
    match addrs.iter().find(|a| !a.is_loopback()) {
        Some(addr) => Err(TargetError::NotLoopback {
            host: host.to_string(),
            addr: *addr,
        }),
        None => Ok(()),
    }
}

impl Target {
    /// Parses and resolves `url`, applying the loopback guard to every resolved address.
    pub async fn resolve(
        url: &str,
        ws_path: &str,
        allow_remote: bool,
    ) -> Result<Self, TargetError> {
        let (host, port, http_base, ws_url) = parse_url(url, ws_path)?;
        let lookup_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((lookup_host.as_str(), port))
            .await
            .map_err(|source| TargetError::Resolve {
                host: host.clone(),
                source,
            })?
            .collect();
        let ips: Vec<IpAddr> = addrs.iter().map(|a| a.ip()).collect();
        check_loopback(&host, &ips, allow_remote)?;
        // Prefer IPv4 (more loopback source addresses to spread over).
        let addr = addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
            .ok_or_else(|| TargetError::NoAddress { host: host.clone() })?;
        Ok(Target {
            http_base,
            ws_url,
            addr,
            host,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_urls() {
        let (host, port, http, ws) = parse_url("http://127.0.0.1:9000/", "/push").unwrap();
        assert_eq!(host, "127.0.0.1");
        assert_eq!(port, 9000);
        assert_eq!(http, "http://127.0.0.1:9000");
        assert_eq!(ws, "ws://127.0.0.1:9000/push");
        let (_, port, http, ws) = parse_url("ws://localhost", "socket").unwrap();
        assert_eq!(port, 80);
        assert_eq!(http, "http://localhost:80");
        assert_eq!(ws, "ws://localhost:80/socket");
    }

    #[test]
    fn refuses_tls_and_garbage() {
        assert!(parse_url("https://127.0.0.1", "/push").is_err());
        assert!(parse_url("ftp://127.0.0.1", "/push").is_err());
        assert!(parse_url("not a url", "/push").is_err());
    }

    #[test]
    fn loopback_guard() {
        let v4: IpAddr = "127.3.4.5".parse().unwrap();
        let v6: IpAddr = "::1".parse().unwrap();
        let remote: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(check_loopback("h", &[v4, v6], false).is_ok());
        assert!(matches!(
            check_loopback("h", &[v4, remote], false),
            Err(TargetError::NotLoopback { .. })
        ));
        assert!(check_loopback("h", &[remote], true).is_ok());
        assert!(matches!(
            check_loopback("h", &[], true),
            Err(TargetError::NoAddress { .. })
        ));
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback() {
        let t = Target::resolve("http://localhost:1", "/push", false)
            .await
            .unwrap();
        assert!(t.addr.ip().is_loopback());
    }
}
