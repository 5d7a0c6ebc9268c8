//! The packets a client may send before its first message: SSLRequest,
//! GSSENCRequest, CancelRequest and StartupMessage.
//! (<https://www.postgresql.org/docs/15/protocol-flow.html#id-1.10.6.7.3>)

use tokio::io::{AsyncRead, AsyncReadExt};

/// Postgres's own limit on a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
const MAX_STARTUP_LEN: usize = 10_000;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;

#[derive(Debug)]
pub(crate) enum StartupPacket {
    SslRequest,
    GssEncRequest,
    Cancel {
        pid: i32,
        secret: i32,
    },
    /// A StartupMessage, kept as received so Postgres sees exactly what the
    /// client sent (protocol version included), plus its parameters.
    Startup {
        raw: Vec<u8>,
        params: Vec<(String, String)>,
    },
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum StartupError {
    #[error("invalid length of startup packet")]
    Length,
    #[error("invalid startup packet layout: expected terminator as last byte")]
    Layout,
    #[error("connection closed before startup")]
    Closed(#[source] std::io::Error),
}

impl StartupPacket {
    /// The value of a startup parameter, e.g. `user` or `database`.
    pub(crate) fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one startup-phase packet.
pub(crate) async fn read_startup<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<StartupPacket, StartupError> {
    let len = r.read_u32().await.map_err(StartupError::Closed)? as usize;
    if !(8..=MAX_STARTUP_LEN).contains(&len) {
        return Err(StartupError::Length);
    }
    let mut raw = vec![0u8; len];
    raw[..4].copy_from_slice(&(len as u32).to_be_bytes());
    r.read_exact(&mut raw[4..])
        .await
        .map_err(StartupError::Closed)?;
    let code = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
    match code {
        SSL_REQUEST => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST if len == 16 => Ok(StartupPacket::Cancel {
            pid: i32::from_be_bytes([raw[8], raw[9], raw[10], raw[11]]),
            secret: i32::from_be_bytes([raw[12], raw[13], raw[14], raw[15]]),
        }),
        CANCEL_REQUEST => Err(StartupError::Length),
        _ => {
            // Protocol 3.x: key/value pairs. Other versions are passed to
            // Postgres, which answers them as it always does.
            let params = if code >> 16 == 3 {
                parse_params(&raw[8..])?
            } else {
                Vec::new()
            };
            Ok(StartupPacket::Startup { raw, params })
        }
    }
}

fn parse_params(mut body: &[u8]) -> Result<Vec<(String, String)>, StartupError> {
    let mut params = Vec::new();
    loop {
        let key_end = body
            .iter()
            .position(|b| *b == 0)
            .ok_or(StartupError::Layout)?;
        if key_end == 0 {
            return if body.len() == 1 {
                Ok(params)
            } else {
                Err(StartupError::Layout)
            };
        }
        let key = String::from_utf8_lossy(&body[..key_end]).into_owned();
        body = &body[key_end + 1..];
        let value_end = body
            .iter()
            .position(|b| *b == 0)
            .ok_or(StartupError::Layout)?;
        let value = String::from_utf8_lossy(&body[..value_end]).into_owned();
        body = &body[value_end + 1..];
        params.push((key, value));
    }
}

/// Encodes a CancelRequest for a backend.
pub(crate) fn cancel_request(pid: i32, secret: i32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&16u32.to_be_bytes());
    out[4..8].copy_from_slice(&CANCEL_REQUEST.to_be_bytes());
    out[8..12].copy_from_slice(&pid.to_be_bytes());
    out[12..].copy_from_slice(&secret.to_be_bytes());
    out
}

/// The 8-byte SSLRequest, sent to Postgres when the backend link uses TLS.
pub(crate) fn ssl_request() -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&8u32.to_be_bytes());
    out[4..].copy_from_slice(&SSL_REQUEST.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup(params: &[(&str, &str)]) -> Vec<u8> {
        let mut body = 196_608u32.to_be_bytes().to_vec();
        for (k, v) in params {
            body.extend(k.as_bytes());
            body.push(0);
            body.extend(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut out = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        out.extend(body);
        out
    }

    #[tokio::test]
    async fn parses_a_startup_message() {
        let raw = startup(&[("user", "alice"), ("database", "shop")]);
        let packet = read_startup(&mut raw.as_slice()).await.unwrap();
        let StartupPacket::Startup { raw: kept, params } = packet else {
            panic!("not a startup")
        };
        assert_eq!(kept, raw);
        assert_eq!(StartupPacket::param(&params, "user"), Some("alice"));
        assert_eq!(StartupPacket::param(&params, "database"), Some("shop"));
    }

    #[tokio::test]
    async fn rejects_bad_packets() {
        let mut raw = startup(&[("user", "alice")]);
        raw.pop(); // no terminator
        let n = raw.len() as u32;
        raw[..4].copy_from_slice(&n.to_be_bytes());
        assert!(matches!(
            read_startup(&mut raw.as_slice()).await,
            Err(StartupError::Layout)
        ));
        let huge = 1_000_000u32.to_be_bytes();
        assert!(matches!(
            read_startup(&mut huge.as_slice()).await,
            Err(StartupError::Length)
        ));
    }

    #[tokio::test]
    async fn recognises_requests() {
        let ssl = ssl_request();
        assert!(matches!(
            read_startup(&mut ssl.as_slice()).await,
            Ok(StartupPacket::SslRequest)
        ));
        let cancel = cancel_request(42, -7);
        assert!(matches!(
            read_startup(&mut cancel.as_slice()).await,
            Ok(StartupPacket::Cancel {
                pid: 42,
                secret: -7
            })
        ));
    }
}
