//! The server under test: its address, its URLs, the loopback-only guard, and (wss) the
//! TLS client configuration its sockets use. Invariant: `tls` is `Some` exactly when
//! `ws_url` is `wss://`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use reqwest::Url;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::cli::TlsArgs;

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
    #[error("--ca-file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("--ca-file {path}: {source}")]
    CaFileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS client configuration: {0}")]
    TlsConfig(#[source] rustls::Error),
    #[error("invalid --http-url {url:?}: {reason}")]
    BadHttpUrl { url: String, reason: String },
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
    /// `wss://`: the rustls client configuration of every socket (trust, ALPN, no resumption).
    pub tls: Option<Arc<rustls::ClientConfig>>,
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
        "https" | "wss" => ("https", "wss"),
        _ => return Err(bad("scheme must be http, ws, https or wss")),
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
        let tls = if ws_url.starts_with("wss://") {
            Some(tls_client_config(None)?)
        } else {
            None
        };
        Ok(Target {
            http_base,
            ws_url,
            addr,
            host,
            tls,
        })
    }

    /// Applies `--tls`, `--ca-file` and `--http-url`: with `--tls` (or `--ca-file`) the
    /// sockets use `wss://` on the same host and port, trusting only the CA file when given
    /// (else the system's roots). `--http-url` moves the HTTP calls (dev tokens,
    /// POST /api/notify) elsewhere, e.g. to the plain listener beside the TLS one.
    pub fn with_tls(mut self, args: &TlsArgs) -> Result<Self, TargetError> {
        let wants_tls = args.tls || args.ca_file.is_some() || self.tls.is_some();
        if wants_tls {
            self.tls = Some(tls_client_config(args.ca_file.as_deref())?);
            if let Some(rest) = self.ws_url.strip_prefix("ws://") {
                self.ws_url = format!("wss://{rest}");
            }
            if let Some(rest) = self.http_base.strip_prefix("http://") {
                self.http_base = format!("https://{rest}");
            }
        }
        if let Some(url) = &args.http_url {
            let bad = |reason: String| TargetError::BadHttpUrl {
                url: url.clone(),
                reason,
            };
            let parsed = Url::parse(url).map_err(|e| bad(e.to_string()))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(bad("scheme must be http or https".into()));
            }
            let host = parsed.host_str().ok_or_else(|| bad("no host".into()))?;
            let port = parsed
                .port_or_known_default()
                .ok_or_else(|| bad("no port".into()))?;
            self.http_base = format!("{}://{host}:{port}", parsed.scheme());
        }
        Ok(self)
    }
}

/// Reads every certificate of a PEM file (a CA bundle).
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, TargetError> {
    let pem = std::fs::read(path).map_err(|source| TargetError::CaFileRead {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TargetError::CaFile {
            path: path.to_path_buf(),
            reason: format!("not PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TargetError::CaFile {
            path: path.to_path_buf(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// The rustls client configuration of `wss://` sockets: aws-lc-rs, TLS 1.2 and 1.3, ALPN
/// `http/1.1`; trusting only the certificates of `ca_file` when given, else the system's
/// roots. Session resumption is off: each load-test socket stands for a distinct client,
/// so every connection costs the server a full handshake, as a reconnect storm would.
pub fn tls_client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TargetError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in read_ca_file(path)? {
                roots.add(cert).map_err(|e| TargetError::CaFile {
                    path: path.to_path_buf(),
                    reason: format!("not a usable CA certificate: {e}"),
                })?;
            }
        }
        None => {
            // Unreadable system certificates are skipped; an empty store fails every
            // handshake with a clear "unknown issuer" error per socket.
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TargetError::TlsConfig)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
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
    fn tls_schemes_and_garbage() {
        let (_, port, http, ws) = parse_url("https://127.0.0.1", "/push").unwrap();
        assert_eq!(port, 443);
        assert_eq!(http, "https://127.0.0.1:443");
        assert_eq!(ws, "wss://127.0.0.1:443/push");
        let (_, _, http, ws) = parse_url("wss://localhost:8443", "/push").unwrap();
        assert_eq!(
            (http.as_str(), ws.as_str()),
            ("https://localhost:8443", "wss://localhost:8443/push")
        );
        assert!(parse_url("ftp://127.0.0.1", "/push").is_err());
        assert!(parse_url("not a url", "/push").is_err());
    }

    fn tls_args(tls: bool, ca_file: Option<PathBuf>, http_url: Option<&str>) -> TlsArgs {
        TlsArgs {
            tls,
            ca_file,
            http_url: http_url.map(str::to_string),
        }
    }

    fn test_ca(dir: &Path) -> PathBuf {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, cert.pem()).unwrap();
        path
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sumu-lt-target-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn tls_flag_switches_sockets_and_http_to_tls() {
        let dir = scratch_dir("flag");
        let ca = test_ca(&dir);
        let plain = Target::resolve("http://127.0.0.1:8443", "/push", false)
            .await
            .unwrap();
        assert!(plain.tls.is_none());
        let t = plain
            .clone()
            .with_tls(&tls_args(false, None, None))
            .unwrap();
        assert!(t.tls.is_none() && t.ws_url == "ws://127.0.0.1:8443/push");
        let t = plain
            .clone()
            .with_tls(&tls_args(true, Some(ca.clone()), None))
            .unwrap();
        assert_eq!(t.ws_url, "wss://127.0.0.1:8443/push");
        assert_eq!(t.http_base, "https://127.0.0.1:8443");
        let config = t.tls.expect("tls config");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        // --ca-file alone implies TLS; --http-url keeps the HTTP calls on the plain port.
        let t = plain
            .with_tls(&tls_args(false, Some(ca), Some("http://127.0.0.1:8080/")))
            .unwrap();
        assert_eq!(t.ws_url, "wss://127.0.0.1:8443/push");
        assert_eq!(t.http_base, "http://127.0.0.1:8080");
        let wss = Target::resolve("wss://127.0.0.1:9", "/push", false)
            .await
            .unwrap();
        assert!(wss.tls.is_some(), "a wss:// URL needs no --tls");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn bad_ca_files_are_typed_errors_naming_the_file() {
        let dir = scratch_dir("badca");
        let missing = dir.join("missing.pem");
        let err = tls_client_config(Some(&missing)).unwrap_err();
        assert!(matches!(&err, TargetError::CaFileRead { path, .. } if path == &missing));
        assert!(err.to_string().contains("missing.pem"));
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no pem here\n").unwrap();
        assert!(matches!(
            tls_client_config(Some(&empty)).unwrap_err(),
            TargetError::CaFile { .. }
        ));
        let garbage = dir.join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(matches!(
            tls_client_config(Some(&garbage)).unwrap_err(),
            TargetError::CaFile { .. } | TargetError::CaFileRead { .. }
        ));
        let err = Target {
            http_base: "http://127.0.0.1:1".into(),
            ws_url: "ws://127.0.0.1:1/push".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 1)),
            host: "127.0.0.1".into(),
            tls: None,
        }
        .with_tls(&tls_args(false, None, Some("ftp://x")))
        .unwrap_err();
        assert!(matches!(err, TargetError::BadHttpUrl { .. }));
        let _ = std::fs::remove_dir_all(dir);
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
