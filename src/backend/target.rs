//! `postgres_url`: where the Postgres behind thermocline listens, in libpq's
//! URL form (<https://www.postgresql.org/docs/15/libpq-connect.html#LIBPQ-CONNSTRING>).
//!
//! Clients bring their own user and database; a user and password in the URL
//! are only for thermocline's own service work (readiness checks).

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Tcp(String),
    /// A directory holding the Unix socket `.s.PGSQL.<port>`.
    Unix(PathBuf),
}

/// TLS toward Postgres, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// TLS if Postgres offers it, without checking its certificate.
    Prefer,
    /// TLS or no connection, without checking the certificate.
    Require,
    /// TLS with the certificate checked against `sslrootcert` (or the
    /// public web roots) and the host name.
    VerifyFull,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendTarget {
    pub host: Host,
    pub port: u16,
    pub dbname: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("expected a URL such as postgres://host:5432/dbname, got {0:?}")]
    Scheme(String),
    #[error("invalid URL: {0}")]
    Url(#[from] url::ParseError),
    #[error("invalid port {0:?}")]
    Port(String),
    #[error("sslmode {0:?} is not supported (use disable, prefer, require or verify-full)")]
    SslMode(String),
    #[error(
        "unknown parameter {0:?} (known: host, port, dbname, user, password, sslmode, sslrootcert)"
    )]
    Param(String),
}

impl BackendTarget {
    pub fn parse(text: &str) -> Result<Self, TargetError> {
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err(TargetError::Scheme(text.into()));
        }
        let url = url::Url::parse(text)?;
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let mut host = url.host_str().filter(|h| !h.is_empty()).map(|h| {
            // IPv6 literals come back bracketed.
            h.trim_start_matches('[').trim_end_matches(']').to_string()
        });
        let mut port = url.port();
        let mut dbname = Some(decode(url.path().trim_start_matches('/'))).filter(|d| !d.is_empty());
        let mut user = Some(decode(url.username())).filter(|u| !u.is_empty());
        let mut password = url.password().map(decode);
        let mut sslmode = SslMode::Prefer;
        let mut sslrootcert = None;
        for (key, value) in url.query_pairs() {
            let value = value.into_owned();
            match key.as_ref() {
                "host" => host = Some(value),
                "port" => {
                    port = Some(
                        value
                            .parse()
                            .map_err(|_| TargetError::Port(value.clone()))?,
                    )
                }
                "dbname" => dbname = Some(value),
                "user" => user = Some(value),
                "password" => password = Some(value),
                "sslmode" => {
                    sslmode = match value.as_str() {
                        "disable" => SslMode::Disable,
                        "prefer" | "allow" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-full" => SslMode::VerifyFull,
                        _ => return Err(TargetError::SslMode(value)),
                    }
                }
                "sslrootcert" => sslrootcert = Some(PathBuf::from(value)),
                // Accepted for compatibility with libpq URLs; they change nothing here.
                "connect_timeout" | "application_name" => {}
                other => return Err(TargetError::Param(other.into())),
            }
        }
        let host = match host {
            Some(h) if h.starts_with('/') => Host::Unix(PathBuf::from(h)),
            Some(h) => Host::Tcp(h),
            None => Host::Tcp("localhost".into()),
        };
        Ok(Self {
            host,
            port: port.unwrap_or(5432),
            dbname,
            user,
            password,
            sslmode,
            sslrootcert,
        })
    }

    /// A libpq-style connection string for thermocline's own connections.
    pub fn service_config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        match &self.host {
            Host::Tcp(h) => c.host(h),
            Host::Unix(p) => c.host_path(p),
        };
        c.port(self.port);
        c.user(self.user.as_deref().unwrap_or("postgres"));
        if let Some(p) = &self.password {
            c.password(p);
        }
        c.dbname(self.dbname.as_deref().unwrap_or("postgres"));
        c.application_name("thermocline");
        c
    }
}

impl std::fmt::Display for BackendTarget {
    /// Where the backend is, without credentials: safe for logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Host::Tcp(h) if h.contains(':') => write!(f, "[{h}]:{}", self.port),
            Host::Tcp(h) => write!(f, "{h}:{}", self.port),
            Host::Unix(p) => write!(f, "{}/.s.PGSQL.{}", p.display(), self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libpq_urls() {
        let t = BackendTarget::parse("postgres://svc:p%40ss@db.internal:6543/app?sslmode=require")
            .unwrap();
        assert_eq!(t.host, Host::Tcp("db.internal".into()));
        assert_eq!(t.port, 6543);
        assert_eq!(t.dbname.as_deref(), Some("app"));
        assert_eq!(t.user.as_deref(), Some("svc"));
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        assert_eq!(t.sslmode, SslMode::Require);
        assert_eq!(t.to_string(), "db.internal:6543");

        let t =
            BackendTarget::parse("postgresql:///shop?host=/var/run/postgresql&port=5433").unwrap();
        assert_eq!(t.host, Host::Unix("/var/run/postgresql".into()));
        assert_eq!(t.port, 5433);
        assert_eq!(t.sslmode, SslMode::Prefer);

        let t = BackendTarget::parse("postgres://[::1]:5432/x?sslmode=disable").unwrap();
        assert_eq!(t.host, Host::Tcp("::1".into()));
    }

    #[test]
    fn rejects_what_it_cannot_honour() {
        assert!(matches!(
            BackendTarget::parse("mysql://x"),
            Err(TargetError::Scheme(_))
        ));
        assert!(matches!(
            BackendTarget::parse("postgres://x/?sslmode=verify-ca"),
            Err(TargetError::SslMode(_))
        ));
        assert!(matches!(
            BackendTarget::parse("postgres://x/?gssencmode=x"),
            Err(TargetError::Param(_))
        ));
    }
}
