//! The listeners: the plain one (`--listen`), the TLS one (`--tls-listen`
//! with files or `--dev-tls`) and what may stand before them (PROXY
//! protocol). Invariant: `--dev`'s token issuer and `--dev-tls`'s throwaway
//! CA stay on loopback unless `--dev-allow-remote` forces them out.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::options::{secs, ConfigError, Options};

/// Where the node listens, resolved: the plain listener and the TLS one.
pub(super) struct Listeners {
    pub(super) listen: SocketAddr,
    pub(super) tls: Option<TlsListen>,
}

/// The listeners of `o`, checked: PROXY protocol only without TLS, `--dev`
/// only on loopback (its `/dev/token` is served on every listener).
pub(super) fn resolve_listeners(o: &Options, dev: bool) -> Result<Listeners, ConfigError> {
    let invalid = |m: String| Err(ConfigError::Invalid(m));
    let listen = o
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
    let tls = resolve_tls(o)?;
    if tls.is_some() && o.proxy_protocol.unwrap_or(false) {
        return invalid(
            "--proxy-protocol with --tls-listen is not supported yet (the PROXY header would \
                 have to be read before the TLS handshake): end TLS at the balancer, or use \
                 instance targets (the NLB then keeps client IPv4 addresses without PROXY)"
                .into(),
        );
    }
    // `/dev/token` is served on every listener, the TLS one included.
    let public = std::iter::once(listen)
        .chain(tls.as_ref().map(|t| t.listen))
        .find(|a| !a.ip().is_loopback());
    if let (true, Some(addr), false) = (dev, public, o.dev_allow_remote.unwrap_or(false)) {
        return invalid(format!(
            "--dev exposes a token issuer that signs any user: refusing to listen on \
                 non-loopback {addr}; pass --dev-allow-remote to force it"
        ));
    }
    Ok(Listeners { listen, tls })
}

/// The TLS listener (`--tls-listen`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsListen {
    pub listen: SocketAddr,
    pub source: TlsSource,
    /// How often the files are polled for changes; zero: on SIGHUP only.
    pub watch: Duration,
}

/// Where the TLS listener's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// `--tls-cert` / `--tls-key`.
    Files { cert: PathBuf, key: PathBuf },
    /// `--dev-tls`: generated at start.
    Dev,
}

/// Where `--dev-tls` listens when `--tls-listen` is not given.
pub const DEV_TLS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8443);

/// The TLS listener of `o`, validated: a listener needs a certificate (files or
/// `--dev-tls`), files need a listener, `--dev-tls` stays on loopback unless forced.
fn resolve_tls(o: &Options) -> Result<Option<TlsListen>, ConfigError> {
    let invalid = |m: &str| Err(ConfigError::Invalid(m.to_string()));
    let dev_tls = o.dev_tls.unwrap_or(false);
    let watch = secs(o.tls_watch_secs, Duration::from_secs(5));
    let source = match (dev_tls, o.tls_cert.clone(), o.tls_key.clone()) {
        (true, None, None) => TlsSource::Dev,
        (true, _, _) => {
            return invalid("--dev-tls generates its own certificate: drop --tls-cert/--tls-key")
        }
        (false, Some(cert), Some(key)) => TlsSource::Files { cert, key },
        (false, None, None) => {
            return match o.tls_listen {
                Some(_) => invalid("--tls-listen needs --tls-cert and --tls-key (or --dev-tls)"),
                None => Ok(None),
            }
        }
        (false, _, _) => return invalid("--tls-cert and --tls-key go together"),
    };
    let listen = match (o.tls_listen, &source) {
        (Some(listen), _) => listen,
        (None, TlsSource::Dev) => DEV_TLS_LISTEN,
        (None, TlsSource::Files { .. }) => {
            return invalid("--tls-cert/--tls-key need --tls-listen (the TLS listener's address)")
        }
    };
    if source == TlsSource::Dev
        && !listen.ip().is_loopback()
        && !o.dev_allow_remote.unwrap_or(false)
    {
        return Err(ConfigError::Invalid(format!(
            "--dev-tls serves a certificate from a throwaway CA: refusing to listen on \
             non-loopback {listen}; pass --dev-allow-remote to force it"
        )));
    }
    Ok(Some(TlsListen {
        listen,
        source,
        watch,
    }))
}
