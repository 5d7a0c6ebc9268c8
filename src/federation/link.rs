//! The session's own Postgres connection, borrowed from the relay while a
//! federated statement runs: thermocline speaks to Postgres as a client
//! here (simple queries, binary cursors), inside the client's transaction.
//!
//! Messages Postgres sends on its own (NOTIFY, ParameterStatus) while the
//! link is borrowed are kept and handed to the client afterwards.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::stream::{ReadHalf, WriteHalf};

/// One backend message: its tag and body.
#[derive(Debug, Clone)]
pub(crate) struct BackendMessage {
    pub tag: u8,
    pub body: bytes::Bytes,
}

impl BackendMessage {
    /// The message as it travels on the wire.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 5);
        crate::protocol::put_message(&mut out, self.tag, &self.body);
        out
    }

    /// A field of an ErrorResponse or NoticeResponse.
    pub(crate) fn field(&self, code: u8) -> Option<String> {
        let mut rest = &self.body[..];
        while let Some((&c, tail)) = rest.split_first() {
            if c == 0 {
                break;
            }
            let end = tail.iter().position(|b| *b == 0)?;
            if c == code {
                return Some(String::from_utf8_lossy(&tail[..end]).into_owned());
            }
            rest = &tail[end + 1..];
        }
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// Postgres answered with an error; its message is relayed as it is.
    #[error("Postgres: {}", .0.field(b'M').unwrap_or_default())]
    Postgres(BackendMessage),
    #[error("lost the connection to Postgres")]
    Gone,
    /// An error earlier in the client's pipeline: Postgres skips every
    /// extended-protocol message until the Sync, so none was sent.
    #[error("Postgres is skipping messages until Sync")]
    Skipped,
}

/// The relay's two halves of the Postgres connection, and what was read
/// ahead of the last message handled.
pub(crate) struct PgLink {
    pub(crate) r: ReadHalf,
    pub(crate) w: WriteHalf,
    pub(crate) buf: BytesMut,
    /// Asynchronous messages to hand to the client later.
    pub(crate) deferred: Vec<BackendMessage>,
    /// The transaction status of the last ReadyForQuery.
    pub(crate) txn_status: u8,
    /// Replies still owed for a request whose reader was dropped midway
    /// (a cancelled statement): read and discarded by [`PgLink::recover`].
    owed: Owed,
    /// An ErrorResponse arrived in the extended protocol: Postgres skips
    /// messages until the next Sync.
    skipping: bool,
    /// The statement answered on this link ended with an error (metrics).
    pub(crate) statement_failed: Option<String>,
    /// When set, the NoticeResponses read until ReadyForQuery are kept
    /// here (otherwise they are dropped).
    pub(crate) notices: Option<Vec<BackendMessage>>,
    /// The first ErrorResponse since it was last cleared: the failure at
    /// the root of those that follow it in a failed transaction (25P02).
    pub(crate) first_error: Option<BackendMessage>,
    /// The session's backend has planned no federated statement yet: its
    /// caches of the catalogs are cold (see [`warm_up`]).
    pub(crate) fresh: bool,
    /// A warm-up was sent whose replies are still to be read: they are
    /// read before the next request goes out.
    warming: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    Nothing,
    /// Everything up to ReadyForQuery.
    UntilReady,
    /// This many completed extended-protocol replies (or an error).
    Terminals(usize),
}

impl PgLink {
    pub(crate) fn new(r: ReadHalf, w: WriteHalf, buf: BytesMut, txn_status: u8) -> Self {
        Self {
            r,
            w,
            buf,
            deferred: Vec::new(),
            txn_status,
            owed: Owed::Nothing,
            skipping: false,
            statement_failed: None,
            notices: None,
            first_error: None,
            fresh: false,
            warming: false,
        }
    }

    /// Reads and drops what Postgres still owes for a request whose reader
    /// went away, so the link is at a message boundary again.
    pub(crate) async fn recover(&mut self) -> Result<(), LinkError> {
        match self.owed {
            Owed::Nothing => Ok(()),
            Owed::UntilReady => match self.until_ready().await {
                Ok(_) | Err(LinkError::Postgres(_)) => Ok(()),
                Err(e) => Err(e),
            },
            Owed::Terminals(n) => match self.read_terminals(n).await {
                Ok(_) | Err(LinkError::Postgres(_)) => Ok(()),
                Err(e) => Err(e),
            },
        }
    }

    pub(crate) async fn send(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        if self.warming {
            self.settle_warm_up().await?;
        }
        self.write(bytes).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        self.w.write_all(bytes).await.map_err(|_| LinkError::Gone)?;
        self.w.flush().await.map_err(|_| LinkError::Gone)
    }

    /// The warm-up appended (see [`warm_up`]) to what was sent last comes
    /// after the replies being read now: those of the warm-up are read
    /// before the next request.
    pub(crate) fn warming_up(&mut self) {
        self.warming = true;
    }

    /// Reads the replies of a warm-up; where it failed, rolls back to the
    /// savepoint it ran in, so the transaction is as it was. Its errors
    /// are not the statement's.
    pub(crate) async fn settle_warm_up(&mut self) -> Result<(), LinkError> {
        if !self.warming {
            return Ok(());
        }
        let (owed, first_error) = (self.owed, self.first_error.clone());
        self.warming = false;
        self.owed = Owed::UntilReady;
        let failed = match self.until_ready().await {
            Ok(_) => false,
            Err(LinkError::Postgres(_)) => true,
            Err(e) => return Err(e),
        };
        if failed {
            let mut q = Vec::new();
            frontend::query(
                &mut q,
                &format!("ROLLBACK TO SAVEPOINT {WARM_UP}; RELEASE SAVEPOINT {WARM_UP}"),
            );
            self.owed = Owed::UntilReady;
            self.write(&q).await?;
            match self.until_ready().await {
                // A transaction that had failed before (the warm-up then
                // failed as it began) is rolled back by its owner.
                Ok(_) | Err(LinkError::Postgres(_)) => {}
                Err(e) => return Err(e),
            }
        }
        (self.owed, self.first_error) = (owed, first_error);
        Ok(())
    }

    /// The next complete message.
    pub(crate) async fn recv(&mut self) -> Result<BackendMessage, LinkError> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]])
                    as usize;
                if len < 4 {
                    return Err(LinkError::Gone);
                }
                if self.buf.len() > len {
                    let tag = self.buf[0];
                    self.buf.advance(5);
                    let body = self.buf.split_to(len - 4).freeze();
                    return Ok(BackendMessage { tag, body });
                }
                self.buf.reserve(len + 1 - self.buf.len());
            } else {
                self.buf.reserve(8 * 1024);
            }
            match self.r.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return Err(LinkError::Gone),
                Ok(_) => {}
            }
        }
    }

    /// Runs one simple query and returns its messages up to (not including)
    /// ReadyForQuery. An ErrorResponse is returned as `LinkError::Postgres`
    /// once Postgres is ready again.
    pub(crate) async fn simple(&mut self, sql: &str) -> Result<Vec<BackendMessage>, LinkError> {
        let mut q = Vec::with_capacity(sql.len() + 6);
        frontend::query(&mut q, sql);
        self.owed = Owed::UntilReady;
        self.send(&q).await?;
        self.until_ready().await
    }

    /// The rows `sql` returns through [`Self::simple`], each field as text.
    pub(crate) async fn rows(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, LinkError> {
        Ok(self.row_sets(sql).await?.into_iter().flatten().collect())
    }

    /// The rows of each statement of `sql` that returns rows, through
    /// [`Self::simple`], each field as text.
    pub(crate) async fn row_sets(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Vec<Option<String>>>>, LinkError> {
        let messages = self.simple(sql).await?;
        let mut sets: Vec<Vec<Vec<Option<String>>>> = Vec::new();
        for m in &messages {
            match m.tag {
                b'T' => sets.push(Vec::new()),
                b'D' => {
                    if let (Some(set), Some(fields)) = (sets.last_mut(), data_row_fields(&m.body)) {
                        set.push(
                            fields
                                .into_iter()
                                .map(|f| f.map(|v| String::from_utf8_lossy(v).into_owned()))
                                .collect(),
                        );
                    }
                }
                _ => {}
            }
        }
        Ok(sets)
    }

    /// Sends extended-protocol messages and a Sync, and returns the replies
    /// up to ReadyForQuery (an ErrorResponse as `LinkError::Postgres`).
    /// Only outside a client's extended-protocol exchange: the Sync ends
    /// it.
    pub(crate) async fn extended_sync(
        &mut self,
        messages: &[u8],
    ) -> Result<Vec<BackendMessage>, LinkError> {
        self.extended_synced(messages.to_vec()).await
    }

    /// [`Self::extended_sync`], taking the messages (a large Bind is not
    /// copied).
    pub(crate) async fn extended_synced(
        &mut self,
        mut bytes: Vec<u8>,
    ) -> Result<Vec<BackendMessage>, LinkError> {
        crate::protocol::put_message(&mut bytes, b'S', b"");
        self.owed = Owed::UntilReady;
        self.send(&bytes).await?;
        self.until_ready().await
    }

    /// After an ErrorResponse within a client's extended-protocol
    /// exchange: Postgres skips what follows until the client's Sync.
    pub(crate) fn skip_to_sync(&mut self) {
        self.owed = Owed::Nothing;
        self.skipping = true;
    }

    /// Sends extended-protocol messages and a Flush, then reads replies
    /// until `terminals` of them have completed (ParseComplete,
    /// BindComplete, CloseComplete, NoData, RowDescription,
    /// CommandComplete, EmptyQueryResponse, PortalSuspended). An
    /// ErrorResponse ends it early: Postgres then skips what follows until
    /// the client's Sync.
    pub(crate) async fn extended(
        &mut self,
        messages: &[u8],
        terminals: usize,
    ) -> Result<Vec<BackendMessage>, LinkError> {
        if self.skipping {
            return Err(LinkError::Skipped);
        }
        let mut bytes = messages.to_vec();
        crate::protocol::put_message(&mut bytes, b'H', b"");
        self.owed = Owed::Terminals(terminals);
        self.send(&bytes).await?;
        self.read_terminals(terminals).await
    }

    async fn read_terminals(&mut self, terminals: usize) -> Result<Vec<BackendMessage>, LinkError> {
        let mut out = Vec::new();
        let mut done = 0;
        while done < terminals {
            self.owed = Owed::Terminals(terminals - done);
            let m = self.recv().await?;
            match m.tag {
                b'E' => {
                    self.skip_to_sync();
                    self.first_error.get_or_insert_with(|| m.clone());
                    return Err(LinkError::Postgres(m));
                }
                b'A' | b'S' => self.deferred.push(m),
                b'N' => {}
                t => {
                    if matches!(t, b'1' | b'2' | b'3' | b'n' | b'T' | b'C' | b'I' | b's') {
                        done += 1;
                    }
                    out.push(m);
                }
            }
        }
        self.owed = Owed::Nothing;
        Ok(out)
    }

    /// Reads replies until ReadyForQuery.
    pub(crate) async fn until_ready(&mut self) -> Result<Vec<BackendMessage>, LinkError> {
        self.until_ready_noting(0, &mut || {}).await
    }

    /// As [`Self::until_ready`], calling `seen` as the first message tagged
    /// `tag` arrives.
    pub(crate) async fn until_ready_noting(
        &mut self,
        mut tag: u8,
        seen: &mut (dyn FnMut() + Send),
    ) -> Result<Vec<BackendMessage>, LinkError> {
        let mut out = Vec::new();
        let mut error = None;
        loop {
            let m = self.recv().await?;
            if tag != 0 && m.tag == tag {
                tag = 0;
                seen();
            }
            match m.tag {
                b'Z' => {
                    self.owed = Owed::Nothing;
                    self.skipping = false;
                    self.txn_status = m.body.first().copied().unwrap_or(b'I');
                    return match error {
                        Some(e) => Err(LinkError::Postgres(e)),
                        None => Ok(out),
                    };
                }
                b'E' => {
                    self.first_error.get_or_insert_with(|| m.clone());
                    if error.is_none() {
                        error = Some(m)
                    }
                }
                b'A' | b'S' => self.deferred.push(m),
                b'N' => {
                    if let Some(notices) = &mut self.notices {
                        notices.push(m);
                    }
                }
                _ => out.push(m),
            }
        }
    }
}

/// The savepoint a warm-up runs in.
const WARM_UP: &str = "thermocline_warm_up";

/// Appends a warm-up for `sql`, a statement Postgres has just been asked
/// to describe in a transaction of the statement's own: Postgres plans it
/// (EXPLAIN, which does not run it) in a savepoint. A backend that has
/// planned nothing over the statement's tables yet loads their indexes,
/// statistics and operators as it plans; that is most of the time it takes
/// to plan a query over them. Sent after the describe, it runs while the
/// executor plans the statement, and the queries the statement's scans
/// send then are planned as in a warm backend. Its replies are read by
/// [`PgLink::settle_warm_up`].
pub(crate) fn warm_up(msgs: &mut Vec<u8>, sql: &str) {
    frontend::query(
        msgs,
        &format!(
            // A line comment ending the statement ends with its line.
            "SAVEPOINT {WARM_UP}; EXPLAIN (COSTS OFF) {sql}\n; RELEASE SAVEPOINT {WARM_UP}"
        ),
    );
}

/// A DataRow's fields: `None` for NULL.
pub(crate) fn data_row_fields(body: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let n = i16::from_be_bytes(body.get(0..2)?.try_into().ok()?) as usize;
    let mut fields = Vec::with_capacity(n);
    let mut pos = 2;
    for _ in 0..n {
        let len = i32::from_be_bytes(body.get(pos..pos + 4)?.try_into().ok()?);
        pos += 4;
        if len < 0 {
            fields.push(None);
        } else {
            let end = pos + len as usize;
            fields.push(Some(body.get(pos..end)?));
            pos = end;
        }
    }
    Some(fields)
}

/// A RowDescription's columns.
#[derive(Debug, Clone)]
pub(crate) struct FieldDescription {
    pub name: String,
    pub table_oid: u32,
    pub column: i16,
    pub type_oid: u32,
    pub type_size: i16,
    pub typmod: i32,
}

pub(crate) fn row_description(body: &[u8]) -> Option<Vec<FieldDescription>> {
    let n = i16::from_be_bytes(body.get(0..2)?.try_into().ok()?) as usize;
    let mut out = Vec::with_capacity(n);
    let mut pos = 2;
    for _ in 0..n {
        let end = pos + body.get(pos..)?.iter().position(|b| *b == 0)?;
        let name = String::from_utf8_lossy(&body[pos..end]).into_owned();
        pos = end + 1;
        let f = body.get(pos..pos + 18)?;
        out.push(FieldDescription {
            name,
            table_oid: u32::from_be_bytes(f[0..4].try_into().ok()?),
            column: i16::from_be_bytes(f[4..6].try_into().ok()?),
            type_oid: u32::from_be_bytes(f[6..10].try_into().ok()?),
            type_size: i16::from_be_bytes(f[10..12].try_into().ok()?),
            typmod: i32::from_be_bytes(f[12..16].try_into().ok()?),
        });
        pos += 18;
    }
    Some(out)
}

/// Quotes a string as a SQL literal that reads the same whatever
/// standard_conforming_strings is (`E'…'` when it holds a backslash).
pub(crate) fn quote_literal(s: &str) -> String {
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// Frontend messages thermocline sends on its own.
pub(crate) mod frontend {
    use crate::protocol::put_message;

    pub(crate) fn query(out: &mut Vec<u8>, sql: &str) {
        let mut body = Vec::with_capacity(sql.len() + 1);
        body.extend_from_slice(sql.as_bytes());
        body.push(0);
        put_message(out, b'Q', &body);
    }

    /// Parse with no parameter types given.
    pub(crate) fn parse(out: &mut Vec<u8>, name: &str, sql: &str) {
        parse_typed(out, name, sql, &[0, 0]);
    }

    /// Parse with `types` as a Parse body holds them: a count, then OIDs.
    pub(crate) fn parse_typed(out: &mut Vec<u8>, name: &str, sql: &str, types: &[u8]) {
        let mut body = Vec::with_capacity(sql.len() + name.len() + types.len() + 2);
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(sql.as_bytes());
        body.push(0);
        body.extend_from_slice(types);
        put_message(out, b'P', &body);
    }

    /// Bind without parameters, every result column in binary.
    pub(crate) fn bind_binary(out: &mut Vec<u8>, portal: &str, statement: &str) {
        let mut body = Vec::new();
        body.extend_from_slice(portal.as_bytes());
        body.push(0);
        body.extend_from_slice(statement.as_bytes());
        body.push(0);
        body.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 1]);
        put_message(out, b'B', &body);
    }

    /// Bind with `params`, every one binary, and results in text.
    pub(crate) fn bind_params(
        out: &mut Vec<u8>,
        portal: &str,
        statement: &str,
        params: &[Vec<u8>],
    ) {
        let size: usize = params.iter().map(|p| p.len() + 4).sum();
        let mut body = Vec::with_capacity(portal.len() + statement.len() + size + 12);
        body.extend_from_slice(portal.as_bytes());
        body.push(0);
        body.extend_from_slice(statement.as_bytes());
        body.push(0);
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&(params.len() as i16).to_be_bytes());
        for p in params {
            body.extend_from_slice(&(p.len() as i32).to_be_bytes());
            body.extend_from_slice(p);
        }
        body.extend_from_slice(&0i16.to_be_bytes());
        put_message(out, b'B', &body);
    }

    /// The client's Bind (`body`: its parameters and result formats) for
    /// thermocline's own `portal` and `statement`.
    pub(crate) fn rebind(out: &mut Vec<u8>, portal: &str, statement: &str, body: &[u8]) {
        let names = body
            .iter()
            .position(|b| *b == 0)
            .and_then(|p| Some(p + 2 + body[p + 1..].iter().position(|b| *b == 0)?))
            .unwrap_or(body.len());
        let mut bind = Vec::with_capacity(body.len() + portal.len() + statement.len());
        bind.extend_from_slice(portal.as_bytes());
        bind.push(0);
        bind.extend_from_slice(statement.as_bytes());
        bind.push(0);
        bind.extend_from_slice(&body[names..]);
        put_message(out, b'B', &bind);
    }

    pub(crate) fn execute(out: &mut Vec<u8>, portal: &str, max_rows: i32) {
        let mut body = portal.as_bytes().to_vec();
        body.push(0);
        body.extend_from_slice(&max_rows.to_be_bytes());
        put_message(out, b'E', &body);
    }

    pub(crate) fn describe(out: &mut Vec<u8>, kind: u8, name: &str) {
        let mut body = vec![kind];
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        put_message(out, b'D', &body);
    }

    /// `sql` parsed, bound (results in binary) and executed under `name`,
    /// then its portal and statement closed: five replies complete it.
    pub(crate) fn run_closed(out: &mut Vec<u8>, name: &str, sql: &str) {
        parse(out, name, sql);
        bind_binary(out, name, name);
        execute(out, name, 0);
        close_both(out, name);
    }

    /// The portal and the statement `name` closed.
    pub(crate) fn close_both(out: &mut Vec<u8>, name: &str) {
        close(out, b'P', name);
        close(out, b'S', name);
    }

    pub(crate) fn close(out: &mut Vec<u8>, kind: u8, name: &str) {
        let mut body = vec![kind];
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        put_message(out, b'C', &body);
    }
}

/// A Bind message, decoded.
#[derive(Debug, Clone, Default)]
pub(crate) struct Bind {
    /// Format of each parameter (0 text, 1 binary), expanded to one per value.
    pub param_formats: Vec<i16>,
    pub params: Vec<Option<Vec<u8>>>,
    /// Result format codes as sent: none (all text), one (for all), or one per column.
    pub result_formats: Vec<i16>,
}

impl Bind {
    /// Decodes a Bind body (after tag and length).
    pub(crate) fn decode(body: &[u8]) -> Option<Bind> {
        let mut pos = 0;
        let cstr = |pos: &mut usize| -> Option<String> {
            let end = *pos + body.get(*pos..)?.iter().position(|b| *b == 0)?;
            let s = String::from_utf8_lossy(&body[*pos..end]).into_owned();
            *pos = end + 1;
            Some(s)
        };
        let i16_at = |pos: &mut usize| -> Option<i16> {
            let v = i16::from_be_bytes(body.get(*pos..*pos + 2)?.try_into().ok()?);
            *pos += 2;
            Some(v)
        };
        // Portal and statement names: the session tracks those itself.
        cstr(&mut pos)?;
        cstr(&mut pos)?;
        let nfmt = i16_at(&mut pos)? as usize;
        let mut formats = Vec::with_capacity(nfmt);
        for _ in 0..nfmt {
            formats.push(i16_at(&mut pos)?);
        }
        let nparams = i16_at(&mut pos)? as usize;
        let mut params = Vec::with_capacity(nparams);
        for _ in 0..nparams {
            let len = i32::from_be_bytes(body.get(pos..pos + 4)?.try_into().ok()?);
            pos += 4;
            if len < 0 {
                params.push(None);
            } else {
                params.push(Some(body.get(pos..pos + len as usize)?.to_vec()));
                pos += len as usize;
            }
        }
        let param_formats = (0..nparams)
            .map(|i| match formats.len() {
                0 => 0,
                1 => formats[0],
                _ => formats.get(i).copied().unwrap_or(0),
            })
            .collect();
        let nres = i16_at(&mut pos)? as usize;
        let mut result_formats = Vec::with_capacity(nres);
        for _ in 0..nres {
            result_formats.push(i16_at(&mut pos)?);
        }
        Some(Bind {
            param_formats,
            params,
            result_formats,
        })
    }

    /// The format of result column `i`.
    pub(crate) fn result_format(&self, i: usize) -> i16 {
        match self.result_formats.len() {
            0 => 0,
            1 => self.result_formats[0],
            _ => self.result_formats.get(i).copied().unwrap_or(0),
        }
    }
}

/// A NUL-terminated string at the start of `body`, and the rest.
pub(crate) fn cstr(body: &[u8]) -> Option<(&str, &[u8])> {
    let end = body.iter().position(|b| *b == 0)?;
    Some((std::str::from_utf8(&body[..end]).ok()?, &body[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_read_the_same_whatever_standard_conforming_strings_is() {
        assert_eq!(quote_literal("a'b\\c"), "E'a''b\\\\c'");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    /// A link to a throwaway Postgres, its startup done.
    async fn connected(pg: &crate::backend::embedded::EmbeddedPostgres) -> PgLink {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", pg.port()))
            .await
            .unwrap();
        let (r, w) = stream.into_split();
        let mut startup = Vec::new();
        startup.extend_from_slice(&196_608i32.to_be_bytes());
        for s in ["user", "postgres", "database", "postgres", ""] {
            startup.extend_from_slice(s.as_bytes());
            startup.push(0);
        }
        let mut message = ((startup.len() + 4) as i32).to_be_bytes().to_vec();
        message.extend_from_slice(&startup);
        let mut link = PgLink::new(Box::new(r), Box::new(w), BytesMut::new(), b'I');
        link.send(&message).await.unwrap();
        link.until_ready().await.unwrap();
        link
    }

    #[tokio::test]
    async fn a_failed_warm_up_leaves_the_transaction_as_it_was() {
        let pg = crate::backend::embedded::EmbeddedPostgres::start(
            crate::backend::embedded::EmbeddedOptions {
                no_fsync: true,
                ..Default::default()
            },
        )
        .unwrap();
        let mut link = connected(&pg).await;
        for statement in ["SELECT 1/0", "SELECT 1"] {
            link.simple("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .await
                .unwrap();
            let mut msgs = Vec::new();
            frontend::query(&mut msgs, "SELECT 2");
            warm_up(&mut msgs, statement);
            link.send(&msgs).await.unwrap();
            link.until_ready().await.unwrap();
            link.warming_up();
            // Read before the next request goes out: the transaction
            // still works, and no error of the warm-up is the statement's.
            let rows = link.rows("SELECT 3").await.unwrap();
            assert_eq!(rows, vec![vec![Some("3".to_string())]], "{statement}");
            assert_eq!(link.txn_status, b'T', "{statement}");
            assert!(link.first_error.is_none(), "{statement}");
            link.simple("COMMIT").await.unwrap();
            assert_eq!(link.txn_status, b'I', "{statement}");
        }
        // A transaction that had failed before: the warm-up fails as it
        // begins, and the owner's ROLLBACK ends it.
        link.simple("BEGIN").await.unwrap();
        let mut msgs = Vec::new();
        frontend::query(&mut msgs, "SELECT no_such_column FROM pg_catalog.pg_class");
        warm_up(&mut msgs, "SELECT 1");
        link.send(&msgs).await.unwrap();
        assert!(matches!(
            link.until_ready().await,
            Err(LinkError::Postgres(_))
        ));
        link.warming_up();
        link.simple("ROLLBACK").await.unwrap();
        assert_eq!(link.txn_status, b'I');
        let rows = link.rows("SELECT 4").await.unwrap();
        assert_eq!(rows, vec![vec![Some("4".to_string())]]);
    }
}
