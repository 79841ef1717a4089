//! TLS for both listeners, with rustls: the certificate and key (PEM) are read again when their
//! files change, so a renewed certificate is served to new connections without a restart and
//! without dropping the open ones; ALPN offers `h2` and `http/1.1`; optionally, clients must show a
//! certificate signed by a given CA (mTLS).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Where the host's certificate, key and (for mTLS) client CA are.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients must present a certificate this CA signed.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("the key in {path} does not fit its certificate or is not usable: {message}")]
    Key { path: PathBuf, message: String },
    #[error("client CA {path}: {message}")]
    ClientCa { path: PathBuf, message: String },
}

/// How often the files are checked for a change.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// The TLS side of the listeners.
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    certificate: Arc<ReloadingCertificate>,
}

impl Tls {
    /// Loads the files (an error names the file and what is wrong with it) and, on a tokio
    /// runtime, starts watching them.
    pub fn load(files: &TlsFiles) -> Result<Arc<Tls>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certificate = Arc::new(ReloadingCertificate {
            current: arc_swap::ArcSwap::from_pointee(load_certified_key(files, &provider)?),
            files: files.clone(),
            provider: provider.clone(),
            loaded_at: std::sync::Mutex::new(modified(files)),
        });
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions");
        let builder = match &files.client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certs(ca)? {
                    roots.add(cert).map_err(|e| TlsError::ClientCa {
                        path: ca.clone(),
                        message: e.to_string(),
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| TlsError::ClientCa {
                            path: ca.clone(),
                            message: e.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(certificate.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let tls = Arc::new(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            certificate,
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(watch(Arc::downgrade(&tls.certificate)));
        }
        Ok(tls)
    }

    /// Reads the files again now if they changed (the watcher does this every second).
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        self.certificate.reload_if_changed()
    }
}

/// The certificate the server presents, swapped whole when the files change.
struct ReloadingCertificate {
    current: arc_swap::ArcSwap<CertifiedKey>,
    files: TlsFiles,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// The files' modification times when last loaded.
    loaded_at: std::sync::Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl std::fmt::Debug for ReloadingCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCertificate")
            .field("files", &self.files)
            .finish()
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl ReloadingCertificate {
    fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = modified(&self.files);
        let mut loaded_at = self.loaded_at.lock().expect("tls lock");
        if *loaded_at == now {
            return Ok(false);
        }
        // A renewal writes two files: a pair that does not fit yet is tried again next time.
        let key = load_certified_key(&self.files, &self.provider)?;
        self.current.store(Arc::new(key));
        *loaded_at = now;
        Ok(true)
    }
}

async fn watch(certificate: std::sync::Weak<ReloadingCertificate>) {
    let mut last_error = None;
    loop {
        tokio::time::sleep(RELOAD_EVERY).await;
        let Some(certificate) = certificate.upgrade() else {
            return;
        };
        match certificate.reload_if_changed() {
            Ok(true) => {
                tracing::info!(cert = %certificate.files.cert.display(), "TLS certificate reloaded");
                last_error = None;
            }
            Ok(false) => {}
            Err(e) => {
                let message = e.to_string();
                if last_error.as_ref() != Some(&message) {
                    tracing::warn!(
                        "TLS certificate not reloaded, the previous one stays: {message}"
                    );
                    last_error = Some(message);
                }
            }
        }
    }
}

fn modified(files: &TlsFiles) -> (Option<SystemTime>, Option<SystemTime>) {
    let time = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    (time(&files.cert), time(&files.key))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            message: "no PEM certificate (-----BEGIN CERTIFICATE-----) in the file".into(),
        });
    }
    Ok(certs)
}

fn load_certified_key(
    files: &TlsFiles,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let certs = read_certs(&files.cert)?;
    let bytes = std::fs::read(&files.key).map_err(|source| TlsError::Read {
        path: files.key.clone(),
        source,
    })?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: files.key.clone(),
        message: format!("no usable PEM private key: {e}"),
    })?;
    let key_error = |message: String| TlsError::Key {
        path: files.key.clone(),
        message,
    };
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| key_error(e.to_string()))?;
    let certified = CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .map_err(|e| key_error(e.to_string()))?;
    Ok(certified)
}
