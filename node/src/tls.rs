//! TLS of the node's second listener (`--tls-listen ADDR --tls-cert FILE --tls-key FILE`):
//! loading a PEM full chain and its key with typed errors that name the file, a rustls
//! [`ServerConfig`] (aws-lc-rs, TLS 1.2 and 1.3, ALPN `http/1.1`), a certificate resolver
//! that is swapped atomically on rotation (SIGHUP, or the files changing), and the
//! self-signed development certificate of `--dev-tls`.
//!
//! Invariant: [`CertResolver`] always holds a chain and key that parsed and matched each
//! other. A reload that fails changes nothing: the error is logged and the previous pair
//! keeps serving. Rotation touches handshakes only, so open connections are never dropped
//! (each keeps the keys it negotiated).
//!
//! Memory per connection (rustls 0.23): an idle connection keeps a 4 KiB deframer read
//! buffer (rustls shrinks it back to 4 KiB after each message; the constant is not
//! configurable; sumu's patched rustls gives it back while the connection is idle) and
//! empty outgoing queues. `ServerConnection::set_buffer_limit` (default 64 KiB each for
//! plaintext and TLS bytes) caps what a slow reader can queue; it is left at its default,
//! because sumu's own outbound queue bounds what is written. What the [`ServerConfig`] can
//! bound is set in [`server_config`]: the session cache size and the TLS 1.3 tickets sent
//! per handshake. The handshake itself (ClientHello first, then a slot) is the listener's:
//! `server/listeners.rs`.

use std::fmt;
use std::future::Future;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

/// The only application protocol: WebSocket upgrades are HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// How often the certificate and key files are checked for changes (modification time,
/// length, inode); a change is loaded once it has been stable for one more interval.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// Server-side TLS sessions kept for resumption (rustls's default size): each entry is a
/// few hundred bytes, so the cache is bounded at well under 1 MiB per node.
pub const SESSION_CACHE_ENTRIES: usize = 256;

/// TLS 1.3 session tickets sent after each full handshake. One is enough for a browser to
/// resume after a short network loss; every ticket costs an encryption and ~200 bytes on
/// the wire per handshake (rustls sends 2 by default).
pub const TLS13_TICKETS: usize = 1;

/// The certificate chain and key files given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the end-entity certificate first, then its intermediates (full chain).
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: PathBuf,
}

/// Why a certificate or key could not be used. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS certificate file {}", path.display())]
    ReadCert {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read TLS key file {}", path.display())]
    ReadKey {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("TLS certificate file {} is not valid PEM", path.display())]
    CertPem {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("TLS certificate file {} holds no CERTIFICATE block", path.display())]
    NoCertificate { path: PathBuf },
    #[error("TLS key file {} holds no private key (PKCS#8, RSA or EC PEM block)", path.display())]
    NoKey {
        path: PathBuf,
        #[source]
        source: pem::Error,
    },
    #[error("TLS key file {} holds a key rustls cannot use", path.display())]
    UnsupportedKey {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error(
        "TLS key file {} does not match the certificate in {} (or the certificate is not valid X.509)",
        key.display(),
        cert.display()
    )]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS configuration")]
    Config(#[source] rustls::Error),
    #[error("cannot generate the development certificate")]
    DevCertificate(#[source] rcgen::Error),
    #[error("cannot write the development certificate file {}", path.display())]
    WriteDev {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The crypto provider of every TLS object of the node (the workspace's aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads and checks a chain + key pair: both parse, the chain is not empty, the key is
/// usable by `provider` and is the key of the first certificate.
pub fn load_certified_key(
    files: &TlsFiles,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let cert_pem = std::fs::read(&files.cert).map_err(|source| TlsError::ReadCert {
        path: files.cert.clone(),
        source,
    })?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::CertPem {
            path: files.cert.clone(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key_pem = std::fs::read(&files.key).map_err(|source| TlsError::ReadKey {
        path: files.key.clone(),
        source,
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| TlsError::NoKey {
        path: files.key.clone(),
        source,
    })?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|source| TlsError::UnsupportedKey {
            path: files.key.clone(),
            source,
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|source| TlsError::KeyMismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })?;
    Ok(certified)
}

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileVersion {
    len: u64,
    modified: Option<SystemTime>,
    dev: u64,
    ino: u64,
}

/// The versions of both files (following symlinks, so an atomic symlink swap counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilesStamp {
    cert: FileVersion,
    key: FileVersion,
}

impl FilesStamp {
    /// The current stamp of `files`; `None` when either cannot be stat'ed.
    pub fn of(files: &TlsFiles) -> Option<Self> {
        let version = |path: &Path| {
            let m = std::fs::metadata(path).ok()?;
            Some(FileVersion {
                len: m.len(),
                modified: m.modified().ok(),
                dev: m.dev(),
                ino: m.ino(),
            })
        };
        Some(FilesStamp {
            cert: version(&files.cert)?,
            key: version(&files.key)?,
        })
    }
}

struct Loaded {
    key: Arc<CertifiedKey>,
    /// The files' stamp read just before they were loaded.
    stamp: Option<FilesStamp>,
}

/// The server's certificate, swapped atomically on reload. Every handshake takes the
/// current pair under a read lock (a pointer copy); a reload builds the new pair first
/// and swaps it in under the write lock.
pub struct CertResolver {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Loaded>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// A reload that succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reloaded {
    /// Certificates in the new chain.
    pub chain_len: usize,
}

impl CertResolver {
    /// Loads `files`; the node refuses to start when this fails.
    pub fn load(files: TlsFiles, provider: Arc<CryptoProvider>) -> Result<Arc<Self>, TlsError> {
        let stamp = FilesStamp::of(&files);
        let key = Arc::new(load_certified_key(&files, &provider)?);
        Ok(Arc::new(CertResolver {
            files,
            provider,
            current: RwLock::new(Loaded { key, stamp }),
        }))
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The pair new handshakes get.
    pub fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .key,
        )
    }

    /// The stamp of the files when the current pair was loaded.
    pub fn loaded_stamp(&self) -> Option<FilesStamp> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .stamp
    }

    /// Re-reads both files; swaps them in only if they load and match. On error the
    /// current pair stays.
    pub fn reload(&self) -> Result<Reloaded, TlsError> {
        let stamp = FilesStamp::of(&self.files);
        let key = Arc::new(load_certified_key(&self.files, &self.provider)?);
        let chain_len = key.cert.len();
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Loaded { key, stamp };
        Ok(Reloaded { chain_len })
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The listener's rustls configuration: aws-lc-rs, TLS 1.3 and 1.2 only, no client
/// certificates, ALPN `http/1.1`, the certificate from `resolver`, a bounded session
/// cache and one TLS 1.3 ticket per handshake.
///
/// The listener (`server/listeners.rs`) uses it as is: a client that offers ALPN must
/// offer `http/1.1` (WebSocket upgrades are HTTP/1.1); one that offers none is served.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(Arc::clone(&resolver.provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    config.send_tls13_tickets = TLS13_TICKETS;
    Ok(config)
}

/// Whether the file watcher should reload now: the files differ from what is loaded,
/// they have not changed since the previous poll (a writer is done), and this exact
/// version has not already been refused (so a bad file is logged once, not every poll).
pub fn should_reload(
    loaded: Option<FilesStamp>,
    previous_poll: Option<FilesStamp>,
    refused: Option<FilesStamp>,
    now: Option<FilesStamp>,
) -> bool {
    match now {
        None => false,
        Some(now) => Some(now) != loaded && Some(now) == previous_poll && Some(now) != refused,
    }
}

/// What asked for a reload (for the log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadTrigger {
    Signal,
    FileChange,
}

impl ReloadTrigger {
    pub fn name(self) -> &'static str {
        match self {
            ReloadTrigger::Signal => "SIGHUP",
            ReloadTrigger::FileChange => "file change",
        }
    }
}

/// The error and its causes on one line: `a: b: c`.
struct Chain<'a>(&'a dyn std::error::Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

/// Reloads and logs the outcome; returns whether the new pair is in use.
pub fn reload_and_log(resolver: &CertResolver, trigger: ReloadTrigger) -> bool {
    let files = resolver.files();
    match resolver.reload() {
        Ok(reloaded) => {
            tracing::info!(
                trigger = trigger.name(),
                cert = %files.cert.display(),
                key = %files.key.display(),
                chain_len = reloaded.chain_len,
                "TLS certificate reloaded: new handshakes use it, open connections are kept"
            );
            true
        }
        Err(e) => {
            tracing::error!(
                trigger = trigger.name(),
                cert = %files.cert.display(),
                key = %files.key.display(),
                error = %Chain(&e),
                "TLS certificate reload refused: the previous certificate stays in use"
            );
            false
        }
    }
}

/// Reloads the certificate on SIGHUP and when its files change (polled every `interval`;
/// zero turns polling off) until `shutdown` completes. Run it as one background task of
/// the node. The SIGHUP handler is installed by this call, not when the future is first
/// polled, so a SIGHUP sent once the node says it listens never kills it. Must be called
/// inside a tokio runtime.
pub fn watch(
    resolver: Arc<CertResolver>,
    interval: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "no SIGHUP handler: the TLS certificate reloads on file changes only");
            None
        }
    };
    watch_loop(resolver, interval, shutdown, hangup)
}

async fn watch_loop(
    resolver: Arc<CertResolver>,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
    mut hangup: Option<tokio::signal::unix::Signal>,
) {
    // A zero interval turns polling off (SIGHUP only); tokio's interval refuses zero.
    let mut ticks = (!interval.is_zero()).then(|| {
        let mut t = tokio::time::interval(interval);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut previous_poll = resolver.loaded_stamp();
    let mut refused: Option<FilesStamp> = None;
    tokio::pin!(shutdown);
    let mut hangup_closed = false;
    loop {
        if hangup_closed {
            hangup = None;
        }
        let hup = async {
            match hangup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let tick = async {
            match ticks.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut shutdown => return,
            signal = hup => {
                if signal.is_none() {
                    // The signal driver is gone (runtime shutting down): stop listening.
                    hangup_closed = true;
                    continue;
                }
                let stamp = FilesStamp::of(resolver.files());
                if !reload_and_log(&resolver, ReloadTrigger::Signal) {
                    refused = stamp;
                }
            }
            () = tick => {
                let now = FilesStamp::of(resolver.files());
                if should_reload(resolver.loaded_stamp(), previous_poll, refused, now)
                    && !reload_and_log(&resolver, ReloadTrigger::FileChange)
                {
                    refused = now;
                }
                previous_poll = now;
            }
        }
    }
}

/// The files of `--dev-tls`: a throwaway CA and a certificate it signed for `localhost`,
/// `127.0.0.1` and `::1` (ECDSA P-256). Clients trust `ca` (e.g. `sumu-loadtest
/// --ca-file`); browsers need it installed or, in tests only, `--ignore-certificate-errors`.
#[derive(Debug, Clone)]
pub struct DevTls {
    pub ca: PathBuf,
    pub files: TlsFiles,
}

/// Generates the `--dev-tls` CA and certificate into `dir` (created if missing; files
/// `dev-ca.pem`, `dev-fullchain.pem`, `dev-key.pem`, the key readable by the owner only).
/// A new pair on every call: nothing of it is meant to outlive a development session.
pub fn generate_dev_tls(dir: &Path) -> Result<DevTls, TlsError> {
    let write = |path: PathBuf, text: &str, mode: u32| -> Result<PathBuf, TlsError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let fail = |source| TlsError::WriteDev {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&path)
            .map_err(fail)?;
        file.write_all(text.as_bytes()).map_err(fail)?;
        Ok(path)
    };
    std::fs::create_dir_all(dir).map_err(|source| TlsError::WriteDev {
        path: dir.to_path_buf(),
        source,
    })?;
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(TlsError::DevCertificate)?;
    let ca_params = || -> Result<rcgen::CertificateParams, TlsError> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(TlsError::DevCertificate)?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sumu development CA (--dev-tls)");
        Ok(params)
    };
    let ca_cert = ca_params()?
        .self_signed(&ca_key)
        .map_err(TlsError::DevCertificate)?;
    let issuer = rcgen::Issuer::new(ca_params()?, ca_key);
    let leaf_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(TlsError::DevCertificate)?;
    let mut leaf_params = rcgen::CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .map_err(TlsError::DevCertificate)?;
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let leaf = leaf_params
        .signed_by(&leaf_key, &issuer)
        .map_err(TlsError::DevCertificate)?;
    let ca = write(dir.join("dev-ca.pem"), &ca_cert.pem(), 0o644)?;
    let cert = write(
        dir.join("dev-fullchain.pem"),
        &format!("{}{}", leaf.pem(), ca_cert.pem()),
        0o644,
    )?;
    let key = write(dir.join("dev-key.pem"), &leaf_key.serialize_pem(), 0o600)?;
    Ok(DevTls {
        ca,
        files: TlsFiles { cert, key },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sumu-tls-unit-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn leaf_der(key: &CertifiedKey) -> Vec<u8> {
        key.cert[0].as_ref().to_vec()
    }

    #[test]
    fn dev_certificate_loads_and_its_key_matches() {
        let dir = scratch("dev");
        let dev = generate_dev_tls(&dir).unwrap();
        let key = load_certified_key(&dev.files, &provider()).unwrap();
        assert_eq!(key.cert.len(), 2, "leaf + CA");
        let mode = std::fs::metadata(&dev.files.key).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(std::fs::read_to_string(&dev.ca)
            .unwrap()
            .contains("BEGIN CERTIFICATE"));
    }

    #[test]
    fn bad_files_are_typed_errors_naming_the_file() {
        let dir = scratch("bad");
        let a = generate_dev_tls(&dir.join("a")).unwrap();
        let b = generate_dev_tls(&dir.join("b")).unwrap();
        let p = provider();
        let missing = dir.join("missing.pem");
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "hello\n").unwrap();
        let broken = dir.join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();

        let files = |cert: &Path, key: &Path| TlsFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        };
        let err = load_certified_key(&files(&missing, &a.files.key), &p).unwrap_err();
        assert!(matches!(&err, TlsError::ReadCert { path, .. } if path == &missing));
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let err = load_certified_key(&files(&a.files.cert, &missing), &p).unwrap_err();
        assert!(matches!(&err, TlsError::ReadKey { path, .. } if path == &missing));
        let err = load_certified_key(&files(&garbage, &a.files.key), &p).unwrap_err();
        assert!(matches!(&err, TlsError::NoCertificate { path } if path == &garbage));
        let err = load_certified_key(&files(&broken, &a.files.key), &p).unwrap_err();
        assert!(
            matches!(
                &err,
                TlsError::CertPem { .. } | TlsError::KeyMismatch { .. }
            ),
            "{err:?}"
        );
        let err = load_certified_key(&files(&a.files.cert, &garbage), &p).unwrap_err();
        assert!(matches!(&err, TlsError::NoKey { path, .. } if path == &garbage));
        // A key file holding a certificate only.
        let err = load_certified_key(&files(&a.files.cert, &a.ca), &p).unwrap_err();
        assert!(matches!(&err, TlsError::NoKey { .. }), "{err:?}");
        let err = load_certified_key(&files(&a.files.cert, &b.files.key), &p).unwrap_err();
        assert!(
            matches!(&err, TlsError::KeyMismatch { cert, key, .. } if cert == &a.files.cert && key == &b.files.key)
        );
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn reload_swaps_a_good_pair_and_keeps_the_old_one_on_error() {
        let dir = scratch("reload");
        let live = generate_dev_tls(&dir.join("live")).unwrap();
        let next = generate_dev_tls(&dir.join("next")).unwrap();
        let other = generate_dev_tls(&dir.join("other")).unwrap();
        let resolver = CertResolver::load(live.files.clone(), provider()).unwrap();
        let first = leaf_der(&resolver.current());

        // A new certificate with the old key: refused, the old pair stays.
        std::fs::copy(&next.files.cert, &live.files.cert).unwrap();
        let err = resolver.reload().unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }));
        assert_eq!(leaf_der(&resolver.current()), first);

        // Truncated key file: refused too.
        std::fs::write(&live.files.key, "").unwrap();
        assert!(matches!(
            resolver.reload().unwrap_err(),
            TlsError::NoKey { .. }
        ));
        assert_eq!(leaf_der(&resolver.current()), first);

        // The matching key arrives: swapped.
        std::fs::copy(&next.files.key, &live.files.key).unwrap();
        let reloaded = resolver.reload().unwrap();
        assert_eq!(reloaded.chain_len, 2);
        let second = leaf_der(&resolver.current());
        assert_ne!(second, first);
        assert_eq!(
            second,
            load_certified_key(&next.files, &provider()).unwrap().cert[0].as_ref()
        );
        assert!(reload_and_log(&resolver, ReloadTrigger::Signal));
        std::fs::copy(&other.files.cert, &live.files.cert).unwrap();
        assert!(!reload_and_log(&resolver, ReloadTrigger::FileChange));
        assert_eq!(leaf_der(&resolver.current()), second);
    }

    fn stamp(len: u64) -> Option<FilesStamp> {
        let v = FileVersion {
            len,
            modified: None,
            dev: 1,
            ino: 1,
        };
        Some(FilesStamp { cert: v, key: v })
    }

    #[test]
    fn watcher_reloads_a_changed_stable_file_once() {
        // Unchanged: nothing to do.
        assert!(!should_reload(stamp(1), stamp(1), None, stamp(1)));
        // Changed since the last poll: wait until it is stable.
        assert!(!should_reload(stamp(1), stamp(1), None, stamp(2)));
        // Stable for one poll: reload.
        assert!(should_reload(stamp(1), stamp(2), None, stamp(2)));
        // That version was refused: do not log it again every poll.
        assert!(!should_reload(stamp(1), stamp(2), stamp(2), stamp(2)));
        // A newer version after a refusal: reload once stable.
        assert!(should_reload(stamp(1), stamp(3), stamp(2), stamp(3)));
        // Files gone: keep what is loaded.
        assert!(!should_reload(stamp(1), None, None, None));
    }

    #[test]
    fn server_config_speaks_tls12_and_tls13_with_alpn_http11() {
        let dir = scratch("config");
        let dev = generate_dev_tls(&dir).unwrap();
        let resolver = CertResolver::load(dev.files, provider()).unwrap();
        let config = server_config(resolver).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert_eq!(config.send_tls13_tickets, TLS13_TICKETS);
        let versions: Vec<_> = config
            .crypto_provider()
            .cipher_suites
            .iter()
            .map(|s| s.version().version)
            .collect();
        assert!(versions.contains(&rustls::ProtocolVersion::TLSv1_3));
        assert!(versions.contains(&rustls::ProtocolVersion::TLSv1_2));
    }
}

/// Real handshakes through tokio-rustls (what the listener uses): ALPN, rotation by file
/// change and by SIGHUP keeping open connections, refusal of a bad pair, and a client
/// with the wrong CA failing fast. Needs `tokio-rustls` as a dev-dependency.
#[cfg(test)]
mod handshake_tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("sumu-tls-rot-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn client(ca: &Path) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
    }

    /// Echo server: one line in, the same line out, for as long as the client stays.
    async fn serve(resolver: Arc<CertResolver>) -> u16 {
        let acceptor = TlsAcceptor::from(Arc::new(server_config(resolver).unwrap()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let (r, mut w) = tokio::io::split(tls);
                    let mut lines = BufReader::new(r).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if w.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        port
    }

    struct Conn {
        lines: tokio::io::Lines<
            BufReader<tokio::io::ReadHalf<tokio_rustls::client::TlsStream<TcpStream>>>,
        >,
        w: tokio::io::WriteHalf<tokio_rustls::client::TlsStream<TcpStream>>,
        leaf: Vec<u8>,
    }

    async fn connect(port: u16, ca: &Path) -> std::io::Result<Conn> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let tls = tokio::time::timeout(Duration::from_secs(5), client(ca).connect(name, tcp))
            .await
            .expect("handshake must not hang")?;
        let (_, conn) = tls.get_ref();
        assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        let leaf = conn.peer_certificates().unwrap()[0].as_ref().to_vec();
        let (r, w) = tokio::io::split(tls);
        Ok(Conn {
            lines: BufReader::new(r).lines(),
            w,
            leaf,
        })
    }

    async fn echo(c: &mut Conn, text: &str) {
        c.w.write_all(format!("{text}\n").as_bytes()).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), c.lines.next_line())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.as_deref(), Some(text));
    }

    fn leaf_of(files: &TlsFiles) -> Vec<u8> {
        load_certified_key(files, &provider()).unwrap().cert[0]
            .as_ref()
            .to_vec()
    }

    async fn wait_for_leaf(resolver: &CertResolver, leaf: &[u8]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while resolver.current().cert[0].as_ref() != leaf {
            assert!(
                Instant::now() < deadline,
                "certificate not reloaded in time"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn install(from: &TlsFiles, to: &TlsFiles) {
        std::fs::copy(&from.cert, &to.cert).unwrap();
        std::fs::copy(&from.key, &to.key).unwrap();
    }

    #[tokio::test]
    async fn rotation_by_file_change_keeps_open_connections() {
        let dir = scratch("file");
        let live = generate_dev_tls(&dir.join("live")).unwrap();
        let next = generate_dev_tls(&dir.join("next")).unwrap();
        let resolver = CertResolver::load(live.files.clone(), provider()).unwrap();
        let port = serve(Arc::clone(&resolver)).await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let watcher = tokio::spawn(watch(
            Arc::clone(&resolver),
            Duration::from_millis(50),
            async {
                let _ = stopped.await;
            },
        ));

        let mut old = connect(port, &live.ca).await.unwrap();
        assert_eq!(old.leaf, leaf_of(&live.files));
        echo(&mut old, "before").await;

        // Rotate: a new pair from another CA lands in the same files.
        install(&next.files, &live.files);
        wait_for_leaf(&resolver, &leaf_of(&next.files)).await;
        echo(&mut old, "still open after rotation").await;
        let mut new = connect(port, &next.ca).await.unwrap();
        assert_eq!(new.leaf, leaf_of(&next.files));
        echo(&mut new, "new").await;
        // A client that only trusts the old CA is refused by the handshake, not left hanging.
        let err = connect(port, &live.ca)
            .await
            .err()
            .expect("old CA must be refused");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");

        // A bad key is refused; the current pair keeps serving.
        std::fs::write(
            &live.files.key,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            resolver.current().cert[0].as_ref(),
            &leaf_of(&next.files)[..]
        );
        let mut after_bad = connect(port, &next.ca).await.unwrap();
        echo(&mut after_bad, "after a refused reload").await;
        echo(&mut old, "old still open").await;

        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn rotation_by_sighup() {
        let dir = scratch("hup");
        let live = generate_dev_tls(&dir.join("live")).unwrap();
        let next = generate_dev_tls(&dir.join("next")).unwrap();
        let resolver = CertResolver::load(live.files.clone(), provider()).unwrap();
        let port = serve(Arc::clone(&resolver)).await;
        // File polling far too slow to matter: only the signal can reload in time.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let watcher = tokio::spawn(watch(
            Arc::clone(&resolver),
            Duration::from_secs(3600),
            async {
                let _ = stopped.await;
            },
        ));
        let mut old = connect(port, &live.ca).await.unwrap();
        let first = old.leaf.clone();
        install(&next.files, &live.files);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            resolver.current().cert[0].as_ref(),
            &first[..],
            "no reload without the signal"
        );
        let status = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        wait_for_leaf(&resolver, &leaf_of(&next.files)).await;
        echo(&mut old, "kept across SIGHUP").await;
        let new = connect(port, &next.ca).await.unwrap();
        assert_eq!(new.leaf, leaf_of(&next.files));
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(5), watcher)
            .await
            .unwrap()
            .unwrap();
    }
}
