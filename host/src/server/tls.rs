//! Serving over TLS (rustls, ring): the certificate chain and key from
//! PEM files. Each handshake runs on its connection's own task, with a
//! deadline and within the connection cap (`listen`).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

/// Why TLS cannot be set up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// The server's TLS settings from PEM files.
pub fn config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect)
        .map_err(|e| {
            TlsError(format!(
                "cannot read certificates from `{}`: {e}",
                cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "`{}` holds no certificate",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        TlsError(format!(
            "cannot read the private key from `{}`: {e}",
            key.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            TlsError(format!(
                "the certificate and key do not make a TLS setup: {e}"
            ))
        })?;
    Ok(Arc::new(config))
}
