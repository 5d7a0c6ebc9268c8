//! The PostgreSQL v3 wire format at the level a relay needs: message framing,
//! the startup packet, and the few messages thermocline writes itself.
//!
//! The relay never decodes rows; it only walks message headers (one tag byte
//! and a length) so it knows where each message ends.

pub mod frame;
pub(crate) mod startup;

pub use frame::{FrameScanner, Step};

/// Message tags the relay looks at (see
/// <https://www.postgresql.org/docs/15/protocol-message-formats.html>).
pub(crate) mod tag {
    // Frontend.
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const SYNC: u8 = b'S';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const TERMINATE: u8 = b'X';
    pub const BIND: u8 = b'B';
    pub const EXECUTE: u8 = b'E';
    pub const CLOSE: u8 = b'C';
    pub const DESCRIBE: u8 = b'D';
    // Backend.
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const PARAMETER_STATUS: u8 = b'S';
}

/// Appends a complete message: tag, length, body.
pub fn put_message(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(body);
}

/// A complete message: tag, length, body.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    put_message(&mut out, tag, body);
    out
}

/// The SQLSTATE (`C` field) of an ErrorResponse, given whole (tag and
/// length included) or as its body.
pub(crate) fn error_code(message: &[u8]) -> Option<&[u8]> {
    let mut fields = match message.first() {
        Some(b'E') if message.len() > 5 => &message[5..],
        _ => message,
    };
    while let Some((&kind, rest)) = fields.split_first() {
        if kind == 0 {
            return None;
        }
        let end = rest.iter().position(|b| *b == 0)?;
        if kind == b'C' {
            return Some(&rest[..end]);
        }
        fields = &rest[end + 1..];
    }
    None
}

/// An ErrorResponse (given whole) whose position in the statement's text
/// (`P` field, in characters) is moved `by` characters on: the statement
/// stood that far into the query string the client sent.
pub(crate) fn shift_position(error: &[u8], by: usize) -> Vec<u8> {
    let (Some(b'E'), Some(mut rest)) = (error.first(), error.get(5..)) else {
        return error.to_vec();
    };
    let mut body = Vec::with_capacity(rest.len() + 4);
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        body.push(kind);
        let value = &tail[..end];
        match std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            Some(at) if kind == b'P' => body.extend_from_slice((at + by).to_string().as_bytes()),
            _ => body.extend_from_slice(value),
        }
        body.push(0);
        rest = tail.get(end + 1..).unwrap_or_default();
    }
    body.push(0);
    message(b'E', &body)
}

/// An ErrorResponse (or NoticeResponse) written by thermocline itself.
///
/// Errors that come from Postgres are never rebuilt: their bytes are relayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ErrorFields {
    pub severity: &'static str,
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ErrorFields {
    pub(crate) fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: "FATAL",
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// An ERROR: the statement fails, the session goes on.
    pub(crate) fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: "ERROR",
            code,
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// A WARNING: a NoticeResponse, the statement goes on.
    pub(crate) fn warning(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: "WARNING",
            ..Self::error(code, message)
        }
    }

    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Encodes the message: an ErrorResponse (`E`), or a NoticeResponse
    /// (`N`) for a severity below ERROR.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(64 + self.message.len());
        let mut field = |code: u8, value: &str| {
            body.push(code);
            // A NUL inside a field would end it early on the client side.
            body.extend(value.bytes().filter(|b| *b != 0));
            body.push(0);
        };
        field(b'S', self.severity);
        field(b'V', self.severity);
        field(b'C', self.code);
        field(b'M', &self.message);
        if let Some(detail) = &self.detail {
            field(b'D', detail);
        }
        if let Some(hint) = &self.hint {
            field(b'H', hint);
        }
        body.push(0);
        let mut out = Vec::with_capacity(body.len() + 5);
        let tag = match self.severity {
            "ERROR" | "FATAL" | "PANIC" => tag::ERROR_RESPONSE,
            _ => tag::NOTICE_RESPONSE,
        };
        put_message(&mut out, tag, &body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_round_trips_its_code() {
        let bytes = ErrorFields::fatal("57P01", "terminating connection")
            .with_hint("retry")
            .encode();
        assert_eq!(bytes[0], b'E');
        let len = u32::from_be_bytes(bytes[1..5].try_into().unwrap()) as usize;
        assert_eq!(len + 1, bytes.len());
        assert!(bytes.windows(7).any(|w| w == b"C57P01\0"));
    }

    #[test]
    fn nul_bytes_in_fields_are_dropped() {
        let bytes = ErrorFields::fatal("XX000", "a\0b").encode();
        let body = &bytes[5..];
        assert!(body.windows(3).any(|w| w == b"Mab"));
    }
}
