//! Authentication is relayed (trust, password, md5, SCRAM-SHA-256) and TLS
//! works on both legs: clients to thermocline, thermocline to Postgres.
//! This binary runs its own Postgres with TLS on.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use thermocline::backend::embedded::{EmbeddedOptions, EmbeddedPostgres};
use thermocline::backend::target::BackendTarget;
use thermocline::config::TlsFiles;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Setup {
    pg: EmbeddedPostgres,
    certs: PathBuf,
    _dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for localhost/127.0.0.1 signed by it, and a
/// second CA that signed nothing.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=other-ca",
            "-keyout",
            "other.key",
            "-out",
            "other.crt",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
    );
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().to_path_buf();
        make_certs(&certs);
        // Postgres reads its key as its own OS user, and wants it private.
        let pg_dir = certs.join("pg");
        std::fs::create_dir(&pg_dir).unwrap();
        for f in ["server.crt", "server.key"] {
            std::fs::copy(certs.join(f), pg_dir.join(f)).unwrap();
        }
        Command::new("chmod")
            .args(["0600", pg_dir.join("server.key").to_str().unwrap()])
            .status()
            .unwrap();
        if unsafe_is_root() {
            Command::new("chown")
                .args(["-R", "postgres:", pg_dir.to_str().unwrap()])
                .status()
                .unwrap();
            Command::new("chmod")
                .args(["a+rx", certs.to_str().unwrap()])
                .status()
                .unwrap();
        }
        let settings = vec![
            "ssl=on".into(),
            format!("ssl_cert_file={}", pg_dir.join("server.crt").display()),
            format!("ssl_key_file={}", pg_dir.join("server.key").display()),
        ];
        let pg = EmbeddedPostgres::start(EmbeddedOptions {
            no_fsync: true,
            settings,
            ..Default::default()
        })
        .expect("start Postgres with TLS");
        // Password methods for three roles; everything else stays trust.
        let hba = pg.data_dir().join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).unwrap();
        let lines = "host all pw_user 127.0.0.1/32 password\n\
                     host all md5_user 127.0.0.1/32 md5\n\
                     host all scram_user 127.0.0.1/32 scram-sha-256\n";
        std::fs::write(&hba, format!("{lines}{old}")).unwrap();
        let port = pg.port();
        let psql = |sql: &str| {
            let out = Command::new("psql")
                .args([
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-c",
                    sql,
                ])
                .env("PGSSLMODE", "disable")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        psql("CREATE ROLE pw_user LOGIN PASSWORD 'pw secret'");
        psql("SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN PASSWORD 'md5 secret'");
        psql("CREATE ROLE scram_user LOGIN PASSWORD 'scram secret'");
        psql("SELECT pg_reload_conf()");
        Setup {
            pg,
            certs,
            _dir: dir,
        }
    })
}

fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

async fn start_proxy(sslmode: &str, extra: &str, client_tls: bool) -> common::Proxy {
    let s = setup();
    let url = format!(
        "postgres://127.0.0.1:{}/postgres?sslmode={sslmode}{extra}",
        s.pg.port()
    );
    let certs = s.certs.clone();
    common::Proxy::start_with(move |c| {
        c.postgres = Some(BackendTarget::parse(&url).unwrap());
        if client_tls {
            c.tls = Some(TlsFiles {
                cert: certs.join("server.crt"),
                key: certs.join("server.key"),
            });
        }
    })
    .await
}

async fn try_connect(
    port: u16,
    user: &str,
    password: &str,
) -> Result<String, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname("postgres")
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(conn);
    let row = client.query_one("SELECT current_user::text", &[]).await?;
    Ok(row.get(0))
}

#[tokio::test]
async fn password_methods_are_relayed() {
    let proxy = start_proxy("disable", "", false).await;
    let direct = setup().pg.port();
    for (user, password) in [
        ("pw_user", "pw secret"),
        ("md5_user", "md5 secret"),
        ("scram_user", "scram secret"),
        ("postgres", ""),
    ] {
        assert_eq!(
            try_connect(proxy.port(), user, password).await.unwrap(),
            user
        );
        // A wrong password fails exactly as it does against Postgres.
        if !password.is_empty() {
            let through = try_connect(proxy.port(), user, "wrong").await.unwrap_err();
            let straight = try_connect(direct, user, "wrong").await.unwrap_err();
            let (t, s) = (
                through.as_db_error().unwrap(),
                straight.as_db_error().unwrap(),
            );
            assert_eq!(t.code(), s.code());
            assert_eq!(t.message(), s.message());
            assert_eq!(t.code(), &tokio_postgres::error::SqlState::INVALID_PASSWORD);
        }
    }
}

#[tokio::test]
async fn tls_toward_postgres_per_sslmode() {
    let ca = setup().certs.join("ca.crt");
    let other = setup().certs.join("other.crt");
    for (mode, extra) in [
        ("require", String::new()),
        ("prefer", String::new()),
        ("verify-full", format!("&sslrootcert={}", ca.display())),
    ] {
        let proxy = start_proxy(mode, &extra, false).await;
        let client = common::client(proxy.port(), "postgres", "postgres").await;
        let ssl: bool = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(ssl, "sslmode={mode}: the link to Postgres is encrypted");
        // SCRAM over an encrypted backend link, plain client link.
        assert_eq!(
            try_connect(proxy.port(), "scram_user", "scram secret")
                .await
                .unwrap(),
            "scram_user"
        );
    }
    let proxy = start_proxy("disable", "", false).await;
    let client = common::client(proxy.port(), "postgres", "postgres").await;
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!ssl);

    // A certificate from an unknown CA is refused, and the client is told why.
    let proxy = start_proxy(
        "verify-full",
        &format!("&sslrootcert={}", other.display()),
        false,
    )
    .await;
    let err = try_connect(proxy.port(), "postgres", "").await.unwrap_err();
    let db = err.as_db_error().expect("a Postgres-style error");
    assert_eq!(db.code().code(), "08006");
    assert!(db.message().contains("TLS"), "{}", db.message());
}

#[tokio::test]
async fn clients_can_use_tls_and_scram() {
    let proxy = start_proxy("disable", "", true).await;
    let ca = setup().certs.join("ca.crt");
    // Asynchronously: the server runs on this test's runtime.
    let out = tokio::process::Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT current_user",
            "-c",
            "\\conninfo",
        ])
        .env("PGHOST", "localhost")
        .env("PGPORT", proxy.port().to_string())
        .env("PGUSER", "scram_user")
        .env("PGPASSWORD", "scram secret")
        .env("PGDATABASE", "postgres")
        .env("PGSSLMODE", "verify-full")
        .env("PGSSLROOTCERT", &ca)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("scram_user\n"), "{stdout}");
    assert!(stdout.contains("SSL connection"), "{stdout}");

    // Without TLS configured, SSLRequest is answered 'N'; GSSENCRequest always is.
    let plain = start_proxy("disable", "", false).await;
    for (port, code, want) in [
        (plain.port(), 80_877_103u32, b'N'),
        (proxy.port(), 80_877_104, b'N'),
    ] {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut req = 8u32.to_be_bytes().to_vec();
        req.extend(code.to_be_bytes());
        s.write_all(&req).await.unwrap();
        assert_eq!(s.read_u8().await.unwrap(), want);
    }
}

#[tokio::test]
async fn scram_plus_is_not_offered_over_tls() {
    // Postgres offers SCRAM-SHA-256-PLUS on its TLS link; the client must see
    // only SCRAM-SHA-256.
    let proxy = start_proxy("require", "", false).await;
    let mut s = common::wire::RawConn {
        stream: tokio::net::TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .unwrap(),
    };
    s.send(&common::wire::startup(&[
        ("user", "scram_user"),
        ("database", "postgres"),
    ]))
    .await;
    let auth = s.recv().await.unwrap();
    assert_eq!(auth.tag, b'R');
    assert_eq!(&auth.body[..4], &10u32.to_be_bytes());
    assert_eq!(&auth.body[4..], b"SCRAM-SHA-256\0\0");
}
