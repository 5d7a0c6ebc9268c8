//! TLS toward clients (rustls), from a PEM certificate chain and key.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::PrivateKeyDer;

use crate::config::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert {path}: {message}")]
    Cert { path: String, message: String },
    #[error("tls.key {path}: {message}")]
    Key { path: String, message: String },
    #[error("tls: {0}")]
    Config(String),
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| e.to_string())
}

/// Builds the acceptor used for clients that send SSLRequest.
pub fn acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let cert_path = files.cert.display().to_string();
    let key_path = files.key.display().to_string();
    let pem = read(&files.cert).map_err(|message| TlsError::Cert {
        path: cert_path.clone(),
        message,
    })?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Cert {
            path: cert_path.clone(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cert_path,
            message: "no PEM certificate found".into(),
        });
    }
    let pem = read(&files.key).map_err(|message| TlsError::Key {
        path: key_path.clone(),
        message,
    })?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| TlsError::Key {
            path: key_path.clone(),
            message: e.to_string(),
        })?
        .ok_or_else(|| TlsError::Key {
            path: key_path.clone(),
            message: "no PEM private key found".into(),
        })?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| TlsError::Config(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| TlsError::Key {
        path: key_path,
        message: e.to_string(),
    })?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
