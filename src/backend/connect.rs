//! Opening a link to Postgres: TCP or Unix socket, then TLS per `sslmode`.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::target::{BackendTarget, Host, SslMode};
use crate::protocol::startup::ssl_request;
use crate::stream::Stream;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("could not connect to Postgres at {target}: {source}")]
    Io {
        target: String,
        source: std::io::Error,
    },
    #[error("could not connect to Postgres at {target}: timed out after {after:?}")]
    Timeout { target: String, after: Duration },
    #[error("Postgres at {0} does not accept TLS, but sslmode requires it")]
    NoTls(String),
    #[error("TLS handshake with Postgres at {target} failed: {source}")]
    Tls {
        target: String,
        source: std::io::Error,
    },
    #[error("invalid TLS setting for Postgres: {0}")]
    TlsSetup(String),
}

/// TLS settings toward Postgres, built once from `postgres_url`.
#[derive(Clone)]
pub(crate) struct UpstreamTls {
    mode: SslMode,
    connector: Option<tokio_rustls::TlsConnector>,
}

impl UpstreamTls {
    pub(crate) fn new(target: &BackendTarget) -> Result<Self, ConnectError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConnectError::TlsSetup(e.to_string()))?;
        let config = match target.sslmode {
            SslMode::Disable => {
                return Ok(Self {
                    mode: SslMode::Disable,
                    connector: None,
                });
            }
            SslMode::Prefer | SslMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
                .with_no_client_auth(),
            SslMode::VerifyFull => {
                let mut roots = rustls::RootCertStore::empty();
                match &target.sslrootcert {
                    Some(path) => {
                        let pem = std::fs::read(path).map_err(|e| {
                            ConnectError::TlsSetup(format!("sslrootcert {}: {e}", path.display()))
                        })?;
                        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                            let cert = cert
                                .map_err(|e| ConnectError::TlsSetup(format!("sslrootcert: {e}")))?;
                            roots
                                .add(cert)
                                .map_err(|e| ConnectError::TlsSetup(format!("sslrootcert: {e}")))?;
                        }
                    }
                    None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        Ok(Self {
            mode: target.sslmode,
            connector: Some(tokio_rustls::TlsConnector::from(Arc::new(config))),
        })
    }
}

/// Opens a link to Postgres, ready for a StartupMessage.
pub(crate) async fn connect(
    target: &BackendTarget,
    tls: &UpstreamTls,
    timeout: Duration,
) -> Result<Stream, ConnectError> {
    let name = target.to_string();
    match tokio::time::timeout(timeout, connect_inner(target, tls)).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Timeout {
            target: name,
            after: timeout,
        }),
    }
}

async fn connect_inner(target: &BackendTarget, tls: &UpstreamTls) -> Result<Stream, ConnectError> {
    let io_err = |source| ConnectError::Io {
        target: target.to_string(),
        source,
    };
    let host = match &target.host {
        Host::Unix(dir) => {
            let path = dir.join(format!(".s.PGSQL.{}", target.port));
            // Postgres offers no TLS on Unix sockets; libpq skips it too.
            return UnixStream::connect(path)
                .await
                .map(Stream::Unix)
                .map_err(io_err);
        }
        Host::Tcp(host) => host,
    };
    let mut tcp = TcpStream::connect((host.as_str(), target.port))
        .await
        .map_err(io_err)?;
    tcp.set_nodelay(true).map_err(io_err)?;
    let Some(connector) = &tls.connector else {
        return Ok(Stream::Tcp(tcp));
    };
    tcp.write_all(&ssl_request()).await.map_err(io_err)?;
    match tcp.read_u8().await.map_err(io_err)? {
        b'S' => {}
        b'N' if tls.mode == SslMode::Prefer => return Ok(Stream::Tcp(tcp)),
        _ => return Err(ConnectError::NoTls(target.to_string())),
    }
    let server_name = ServerName::try_from(host.clone())
        .map_err(|e| ConnectError::TlsSetup(format!("host {host:?}: {e}")))?;
    let stream = connector
        .connect(server_name, tcp)
        .await
        .map_err(|source| ConnectError::Tls {
            target: target.to_string(),
            source,
        })?;
    Ok(Stream::ClientTls(Box::new(stream)))
}

/// `sslmode=require`/`prefer`: encrypt, but accept any certificate, as libpq
/// does. Handshake signatures are still checked.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
