//! A raw protocol client: sends frontend messages exactly as given and
//! records every backend message, so the same script can be replayed
//! against Postgres and against thermocline and the replies compared.

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Clone, PartialEq, Eq)]
pub struct Msg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?}",
            self.tag as char,
            String::from_utf8_lossy(&self.body)
        )
    }
}

impl Msg {
    /// A field of an ErrorResponse/NoticeResponse.
    pub fn field(&self, code: u8) -> Option<String> {
        self.body
            .split(|b| *b == 0)
            .find(|f| f.first() == Some(&code))
            .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
    }
}

pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(((body.len() + 4) as u32).to_be_bytes());
    out.extend(body);
    out
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend(s.as_bytes());
    out.push(0);
}

pub fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (k, v) in params {
        cstr(&mut body, k);
        cstr(&mut body, v);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

pub fn query(sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, sql);
    message(b'Q', &b)
}

pub fn parse(name: &str, sql: &str, types: &[u32]) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, name);
    cstr(&mut b, sql);
    b.extend((types.len() as u16).to_be_bytes());
    for t in types {
        b.extend(t.to_be_bytes());
    }
    message(b'P', &b)
}

/// Bind with per-parameter formats, values (None = NULL) and result formats.
pub fn bind(
    portal: &str,
    stmt: &str,
    param_formats: &[i16],
    params: &[Option<&[u8]>],
    result_formats: &[i16],
) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal);
    cstr(&mut b, stmt);
    b.extend((param_formats.len() as u16).to_be_bytes());
    for f in param_formats {
        b.extend(f.to_be_bytes());
    }
    b.extend((params.len() as u16).to_be_bytes());
    for p in params {
        match p {
            None => b.extend((-1i32).to_be_bytes()),
            Some(v) => {
                b.extend((v.len() as i32).to_be_bytes());
                b.extend(*v);
            }
        }
    }
    b.extend((result_formats.len() as u16).to_be_bytes());
    for f in result_formats {
        b.extend(f.to_be_bytes());
    }
    message(b'B', &b)
}

pub fn describe(kind: u8, name: &str) -> Vec<u8> {
    let mut b = vec![kind];
    cstr(&mut b, name);
    message(b'D', &b)
}

pub fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, portal);
    b.extend(max_rows.to_be_bytes());
    message(b'E', &b)
}

pub fn close(kind: u8, name: &str) -> Vec<u8> {
    let mut b = vec![kind];
    cstr(&mut b, name);
    message(b'C', &b)
}

pub fn sync() -> Vec<u8> {
    message(b'S', &[])
}

pub fn flush() -> Vec<u8> {
    message(b'H', &[])
}

pub fn copy_data(data: &[u8]) -> Vec<u8> {
    message(b'd', data)
}

pub fn copy_done() -> Vec<u8> {
    message(b'c', &[])
}

pub fn copy_fail(reason: &str) -> Vec<u8> {
    let mut b = Vec::new();
    cstr(&mut b, reason);
    message(b'f', &b)
}

pub fn terminate() -> Vec<u8> {
    message(b'X', &[])
}

pub struct RawConn {
    pub stream: TcpStream,
}

impl RawConn {
    /// Connects and completes startup (trust auth), returning the messages
    /// up to the first ReadyForQuery.
    pub async fn connect(port: u16, user: &str, dbname: &str) -> (RawConn, Vec<Msg>) {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        stream.set_nodelay(true).unwrap();
        let mut conn = RawConn { stream };
        conn.send(&startup(&[
            ("user", user),
            ("database", dbname),
            ("application_name", "wire-test"),
        ]))
        .await;
        let msgs = conn.until_ready(1).await;
        (conn, msgs)
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// Reads one message; `None` on EOF.
    pub async fn recv(&mut self) -> Option<Msg> {
        let tag = self.stream.read_u8().await.ok()?;
        let len = self.stream.read_u32().await.ok()? as usize;
        let mut body = vec![0; len.checked_sub(4)?];
        self.stream.read_exact(&mut body).await.ok()?;
        Some(Msg { tag, body })
    }

    /// Reads until `n` ReadyForQuery messages have arrived (or EOF).
    pub async fn until_ready(&mut self, n: usize) -> Vec<Msg> {
        let mut out = Vec::new();
        let mut seen = 0;
        while seen < n {
            let msg = tokio::time::timeout(Duration::from_secs(30), self.recv())
                .await
                .expect("reply within 30 s");
            let Some(msg) = msg else { break };
            if msg.tag == b'Z' {
                seen += 1;
            }
            out.push(msg);
        }
        out
    }

    /// Reads whatever arrives within `wait`.
    pub async fn drain(&mut self, wait: Duration) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Ok(Some(msg)) = tokio::time::timeout(wait, self.recv()).await {
            out.push(msg);
        }
        out
    }
}

/// Replaces what legitimately differs between two connections: the cancel
/// key, notifying pids, the OIDs of user objects (each run creates its
/// own), and where in its source Postgres raised an error (file, line,
/// function). User OIDs are renumbered in order of first appearance.
pub fn normalize(msgs: &[Msg]) -> Vec<Msg> {
    let mut oids: HashMap<u32, u32> = HashMap::new();
    let mut map = |oid: u32| -> u32 {
        if oid < 16_384 {
            return oid;
        }
        let next = 16_384 + oids.len() as u32;
        *oids.entry(oid).or_insert(next)
    };
    let mut out = Vec::new();
    for m in msgs {
        let mut m = m.clone();
        match m.tag {
            b'K' => m.body = vec![],
            b'A' => m.body[..4].copy_from_slice(&[0; 4]),
            b'T' => {
                let n = u16::from_be_bytes([m.body[0], m.body[1]]) as usize;
                let mut pos = 2;
                for _ in 0..n {
                    pos += m.body[pos..].iter().position(|b| *b == 0).unwrap() + 1;
                    for offset in [0usize, 6] {
                        let at = pos + offset;
                        let oid = u32::from_be_bytes(m.body[at..at + 4].try_into().unwrap());
                        m.body[at..at + 4].copy_from_slice(&map(oid).to_be_bytes());
                    }
                    pos += 18;
                }
            }
            b't' => {
                let n = u16::from_be_bytes([m.body[0], m.body[1]]) as usize;
                for i in 0..n {
                    let at = 2 + 4 * i;
                    let oid = u32::from_be_bytes(m.body[at..at + 4].try_into().unwrap());
                    m.body[at..at + 4].copy_from_slice(&map(oid).to_be_bytes());
                }
            }
            b'E' | b'N' => {
                // Where in Postgres's source the error was raised.
                let fields = m
                    .body
                    .split(|b| *b == 0)
                    .filter(|f| !f.is_empty() && !matches!(f[0], b'F' | b'L' | b'R'));
                let mut body = Vec::new();
                for f in fields {
                    body.extend_from_slice(f);
                    body.push(0);
                }
                body.push(0);
                m.body = body;
            }
            _ => {}
        }
        out.push(m);
    }
    out
}
