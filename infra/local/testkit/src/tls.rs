//! TLS for tests: a throwaway PKI made with rcgen at run time (a CA and a
//! leaf it signed, ECDSA P-256 or RSA 2048, written as PEM files), and a
//! `wss://` client that trusts exactly one CA, sends the SNI a test picks and
//! reports the leaf certificate the server presented.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio_tungstenite::{Connector, MaybeTlsStream};

use crate::ws::Ws;

/// Key algorithm of a test certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlg {
    EcdsaP256,
    Rsa2048,
}

/// A CA and one leaf it signed, as files: `ca` (the CA certificate),
/// `cert` (leaf then CA: a full chain) and `key` (the leaf's PKCS#8 key).
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The leaf certificate, DER.
    pub leaf: Vec<u8>,
}

impl Pki {
    /// A new CA and a leaf for `names` (DNS names or IP addresses), written
    /// into `dir` (created) as `ca.pem`, `fullchain.pem`, `key.pem`.
    pub fn generate(dir: &Path, names: &[&str], alg: KeyAlg) -> Pki {
        std::fs::create_dir_all(dir).expect("create PKI dir");
        let key_pair = || {
            match alg {
                KeyAlg::EcdsaP256 => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
                KeyAlg::Rsa2048 => rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256),
            }
            .expect("generate key")
        };
        let ca_params = || {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
            p.distinguished_name
                .push(rcgen::DnType::CommonName, "sumu test CA");
            p
        };
        let ca_key = key_pair();
        let ca_cert = ca_params().self_signed(&ca_key).expect("CA certificate");
        let issuer = rcgen::Issuer::new(ca_params(), ca_key);
        let leaf_key = key_pair();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let leaf = rcgen::CertificateParams::new(names)
            .expect("leaf names")
            .signed_by(&leaf_key, &issuer)
            .expect("leaf certificate");
        let pki = Pki {
            ca: dir.join("ca.pem"),
            cert: dir.join("fullchain.pem"),
            key: dir.join("key.pem"),
            leaf: leaf.der().to_vec(),
        };
        std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
        std::fs::write(&pki.cert, format!("{}{}", leaf.pem(), ca_cert.pem())).unwrap();
        std::fs::write(&pki.key, leaf_key.serialize_pem()).unwrap();
        pki
    }

    /// Copies this pair over `to`'s files (key first, so a watcher that
    /// sees the new certificate never pairs it with the old key for long).
    pub fn install_over(&self, to: &Pki) {
        let tmp = to.cert.with_extension("tmp");
        std::fs::copy(&self.key, &tmp).unwrap();
        std::fs::rename(&tmp, &to.key).unwrap();
        std::fs::copy(&self.cert, &tmp).unwrap();
        std::fs::rename(&tmp, &to.cert).unwrap();
    }
}

/// A rustls client configuration trusting only the CA in `ca_file`,
/// offering ALPN `http/1.1`.
pub fn client_config(ca_file: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).expect("read CA file") {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Why a `wss://` connect failed (the test decides what it expected).
#[derive(Debug)]
pub enum WssError {
    /// No answer within the deadline.
    Timeout,
    /// The TLS handshake failed (bad CA, wrong name, ...).
    Tls(String),
    /// TCP or the HTTP upgrade failed.
    Other(String),
}

/// Connects to `addr` over TLS with SNI `server_name`, trusting `ca_file`,
/// and upgrades `path_and_query` (e.g. `/push?authorization=T`); bounded by
/// `within`. Answers the socket and the leaf certificate the server sent.
pub async fn connect_wss(
    addr: SocketAddr,
    server_name: &str,
    path_and_query: &str,
    ca_file: &Path,
    within: Duration,
) -> Result<(Ws, Vec<u8>), WssError> {
    let url = format!("wss://{server_name}:{}{path_and_query}", addr.port());
    let connector = Connector::Rustls(client_config(ca_file));
    let attempt = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| WssError::Other(e.to_string()))?;
        tokio_tungstenite::client_async_tls_with_config(url, tcp, None, Some(connector))
            .await
            .map_err(|e| match e {
                tokio_tungstenite::tungstenite::Error::Tls(t) => WssError::Tls(t.to_string()),
                tokio_tungstenite::tungstenite::Error::Io(io)
                    if io
                        .get_ref()
                        .is_some_and(|inner| inner.is::<rustls::Error>()) =>
                {
                    WssError::Tls(io.to_string())
                }
                other => WssError::Other(other.to_string()),
            })
    };
    let (ws, _) = tokio::time::timeout(within, attempt)
        .await
        .map_err(|_| WssError::Timeout)??;
    let leaf = match ws.get_ref() {
        MaybeTlsStream::Rustls(tls) => tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    Ok((ws, leaf))
}
