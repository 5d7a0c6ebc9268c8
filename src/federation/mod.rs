//! Federated statements: reads that need the cold tier, answered by
//! thermocline on the session's own Postgres connection.
//!
//! Postgres describes, DataFusion executes: the statement is first parsed
//! and described by Postgres (so syntax errors, privileges, column names,
//! types and table OIDs are Postgres's own), then run by DataFusion over
//! hot ∪ cold scans, and its rows written in Postgres's text format for the
//! types Postgres described. Outside a transaction it runs in a read-only
//! REPEATABLE READ transaction of its own, so all its hot scans share one
//! snapshot.

mod ahead;
mod arrays;
mod average;
pub(crate) mod cache;
mod casts;
mod cold;
mod collation;
mod constants;
mod copy;
mod ctas;
mod cursor;
mod datetrunc;
mod enums;
pub(crate) mod exactness;
mod execute;
mod explain;
pub(crate) mod extended;
mod hotagg;
pub(crate) mod hotcache;
mod insert;
mod intervals;
mod joins;
mod json;
mod kept;
pub(crate) mod link;
mod literals;
pub(crate) mod matview;
mod memory;
mod names;
mod numeric;
mod planning;
mod pushdown;
mod recipe;
mod results;
pub(crate) mod scan;
mod sqltext;
mod statement;
mod subqueries;
mod tochar;
mod topk;
mod writes;

use std::sync::Arc;

use tokio::io::AsyncWriteExt;

use crate::frontend::cancel::SessionCancel;
use crate::lake::Lake;
use crate::pgtypes::TextSettings;
use crate::protocol::ErrorFields;
use crate::stream::WriteHalf;
use crate::tiering::TieredTable;
use crate::tiering::mover::KeySet;
pub use cold::row_key;
pub(crate) use copy::copies_out;
use execute::{Failure, execute, executor_plan, physical_plan, put_row_description};
pub(crate) use execute::{Remainder, Run};
use explain::{explain, explain_of};
use link::{LinkError, PgLink, row_description};
pub use names::CatalogLink;
use planning::{plan_session, register_tables};
use scan::ScanContext;
pub(crate) use sqltext::statements;
use statement::{
    SESSION_REPLIES, abort_transaction, ask_session, cancelled, close_cursors, expire, finish,
    refuse, relay_query, relay_query_without, roll_back_own, session_answers, statement_timeout,
    take_back, timed_out, undo,
};
pub(crate) use writes::{ctes_write, target as written_table};

/// The tiered tables of one database and the lake holding their history.
#[derive(Clone)]
pub struct Federation {
    pub lake: Lake,
    pub tables: Vec<Arc<TieredTable>>,
    /// The executor's memory pool and spill files, shared by every
    /// federated statement of the server.
    pub runtime: Arc<datafusion::execution::runtime_env::RuntimeEnv>,
    /// The server's limits: how many federated statements run at once.
    pub limits: Arc<crate::limits::Limits>,
    /// Cold partial results, shared by every database of the server.
    pub cache: Arc<cache::ColdCache>,
    /// Whether the database's collation orders strings byte by byte, once
    /// a statement has asked.
    pub byte_ordered_collation: Arc<std::sync::OnceLock<bool>>,
    /// thermocline's own connection to the database, for catalog reads.
    pub catalog: Arc<CatalogLink>,
    /// Whether the database keeps definitions of materialized views, as
    /// last seen (a refresh then reads its view's in its first round trip).
    pub keeps_views: Arc<std::sync::atomic::AtomicBool>,
    /// What every federated statement's executor session starts from,
    /// once built.
    pub planner: Arc<std::sync::OnceLock<datafusion::execution::SessionState>>,
    /// The search path (`current_schemas(true)`) each role's sessions had
    /// in their last federated statement.
    pub search_paths: Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>>,
}

/// How many roles' search paths a database's [`Federation`] remembers.
const SEARCH_PATHS_KEPT: usize = 1024;

impl Federation {
    /// The search path `user`'s next statement is expected to resolve its
    /// names against: that of the role's last, or Postgres's default for
    /// a role without a schema of its own.
    fn search_path(&self, user: &str) -> Vec<String> {
        self.search_paths
            .lock()
            .ok()
            .and_then(|paths| paths.get(user).cloned())
            .unwrap_or_else(|| vec!["pg_catalog".into(), "public".into()])
    }

    fn remember_search_path(&self, user: &str, schemas: &[String]) {
        let Ok(mut paths) = self.search_paths.lock() else {
            return;
        };
        if paths.get(user).is_some_and(|p| p == schemas) {
            return;
        }
        if paths.len() >= SEARCH_PATHS_KEPT {
            paths.clear();
        }
        paths.insert(user.to_string(), schemas.to_vec());
    }

    /// Whether `name` may name a tiered table, or a view over one (a name
    /// without a schema: in any schema).
    pub(crate) fn is_tiered(&self, name: &datafusion::sql::sqlparser::ast::ObjectName) -> bool {
        self.tiered_named(name).next().is_some()
    }

    /// The tiered tables `name` may name, or read through a view it may
    /// name (a name without a schema: in any schema).
    fn tiered_named<'a>(
        &'a self,
        name: &datafusion::sql::sqlparser::ast::ObjectName,
    ) -> impl Iterator<Item = &'a Arc<TieredTable>> + 'a {
        use datafusion::sql::sqlparser::ast::ObjectNamePart;
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| match p {
                ObjectNamePart::Identifier(i) if i.quote_style.is_some() => i.value.clone(),
                ObjectNamePart::Identifier(i) => i.value.to_lowercase(),
                other => other.to_string(),
            })
            .collect();
        let (schema, table) = match parts.as_slice() {
            [table] => (None, Some(table.clone())),
            [schema, table] | [_, schema, table] => (Some(schema.clone()), Some(table.clone())),
            _ => (None, None),
        };
        self.tables.iter().filter(move |t| {
            let Some(table) = &table else { return false };
            let is = |s: &String, n: &String| n == table && schema.as_ref().is_none_or(|x| x == s);
            is(&t.def.schema, &t.def.table) || t.views.iter().any(|(s, v)| is(s, v))
        })
    }
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation")
            .field("tables", &self.tables.len())
            .finish()
    }
}

/// The keys among `rows` of `batch` (a batch with all of `t`'s columns in
/// order) that the cold tier already holds.
pub async fn cold_keys(
    table: &iceberg::table::Table,
    t: &TieredTable,
    batch: &datafusion::arrow::array::RecordBatch,
    rows: &[usize],
) -> Result<KeySet, crate::tiering::TieringError> {
    cold::cold_keys_at(table, t, batch, &t.key, rows).await
}

/// The setting a ParameterStatus body reports.
fn setting_name(status: &[u8]) -> &[u8] {
    status.split(|b| *b == 0).next().unwrap_or_default()
}

/// Session settings a federated statement needs, as Postgres reported them.
#[derive(Debug, Clone)]
pub(crate) struct SessionSettings {
    pub time_zone: String,
    pub date_style: String,
    pub interval_style: String,
    pub extra_float_digits: i32,
    /// The session's role (`session_authorization`).
    pub user: String,
    /// The session has mentioned `thermocline.result_cache_ttl`: its
    /// value is asked of Postgres before each federated read.
    pub result_cache_set: bool,
    /// Every ParameterStatus the client was told, its body, the last for
    /// each setting.
    pub reported: Vec<Vec<u8>>,
}

impl SessionSettings {
    /// The session's time zone, when the executor can write Postgres's text
    /// for these settings: a named TimeZone.
    pub(crate) fn zone(&self) -> Result<chrono_tz::Tz, ErrorFields> {
        crate::pgtypes::resolve_time_zone(&self.time_zone).ok_or_else(|| {
            ErrorFields::error(
                "0A000",
                format!(
                    "reading the history of tiered tables needs a named time zone, not TimeZone {:?}",
                    self.time_zone
                ),
            )
        })
    }
}

impl SessionSettings {
    /// Keeps what a ParameterStatus (its body) reports of these settings.
    pub(crate) fn remember(&mut self, status: &[u8]) {
        let mut parts = status.split(|b| *b == 0);
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            return;
        };
        match self.reported.iter_mut().find(|r| setting_name(r) == name) {
            Some(r) => *r = status.to_vec(),
            None => self.reported.push(status.to_vec()),
        }
        let value = String::from_utf8_lossy(value).into_owned();
        match name {
            b"TimeZone" => self.time_zone = value,
            b"DateStyle" => self.date_style = value,
            b"IntervalStyle" => self.interval_style = value,
            b"session_authorization" => self.user = value,
            _ => {}
        }
    }

    /// How the session writes values as text, in zone `tz`.
    pub(crate) fn text(&self, tz: chrono_tz::Tz) -> TextSettings {
        TextSettings {
            time_zone: tz,
            extra_float_digits: self.extra_float_digits,
            interval_style: crate::pgtypes::IntervalStyle::from_setting(&self.interval_style),
            date_style: crate::pgtypes::DateStyle::from_setting(&self.date_style),
        }
    }
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            time_zone: "UTC".into(),
            date_style: "ISO, MDY".into(),
            interval_style: "postgres".into(),
            extra_float_digits: 1,
            user: String::new(),
            result_cache_set: false,
            reported: Vec::new(),
        }
    }
}

/// Output toward the client, written in large pieces.
struct Out<'a> {
    w: &'a mut WriteHalf,
    buf: Vec<u8>,
    ok: bool,
    /// The SQLSTATE of the ErrorResponse written, if one was.
    failed: Option<String>,
    /// DataRows sent, kept for the result cache (up to a size).
    capture: Option<Vec<u8>>,
    capture_limit: usize,
    /// One statement of several in a query string: its ReadyForQuery is
    /// left to the last.
    in_sequence: bool,
    /// How many characters into the client's query string the statement
    /// stands: the positions of its errors are moved on by as many.
    position_offset: usize,
    /// ParameterStatus bodies relayed in a sequence, for the statements
    /// after them.
    statuses: Vec<Vec<u8>>,
}

impl<'a> Out<'a> {
    fn new(w: &'a mut WriteHalf) -> Self {
        Out {
            w,
            buf: Vec::with_capacity(64 * 1024),
            ok: true,
            failed: None,
            capture: None,
            capture_limit: 0,
            in_sequence: false,
            position_offset: 0,
            statuses: Vec::new(),
        }
    }

    /// Writes a DataRow, keeping a copy when capturing.
    fn row(&mut self, body: &[u8]) {
        let at = self.buf.len();
        crate::protocol::put_message(&mut self.buf, b'D', body);
        if let Some(c) = &mut self.capture {
            if c.len() + (self.buf.len() - at) > self.capture_limit {
                self.capture = None;
            } else {
                c.extend_from_slice(&self.buf[at..]);
            }
        }
    }

    fn error(&mut self, message: Vec<u8>) {
        let code = crate::protocol::error_code(&message).unwrap_or(b"XX000");
        crate::admin::metrics::METRICS.error_sent(code);
        self.failed = Some(String::from_utf8_lossy(code).into_owned());
        match self.position_offset {
            0 => self.buf.extend(message),
            by => self
                .buf
                .extend(crate::protocol::shift_position(&message, by)),
        }
    }

    async fn flush_if_full(&mut self) {
        if self.buf.len() >= 64 * 1024 {
            self.flush().await;
        }
    }

    /// Writes what is left and records on the link whether the statement
    /// failed.
    async fn finish(mut self, link: Option<PgLink>) -> Option<PgLink> {
        self.flush().await;
        let mut link = link?;
        // The session's traffic goes on from a message boundary.
        link.settle_warm_up().await.ok()?;
        link.statement_failed = self.failed.take();
        Some(link)
    }

    async fn flush(&mut self) {
        if self.ok && !self.buf.is_empty() {
            crate::admin::metrics::METRICS
                .bytes_to_clients
                .fetch_add(self.buf.len() as u64, std::sync::atomic::Ordering::Relaxed);
            self.ok = self.w.write_all(&self.buf).await.is_ok() && self.w.flush().await.is_ok();
        }
        self.buf.clear();
    }
}

/// Whether `sql` is an EXPLAIN of a statement that is not a query (the
/// router sends one here only when it runs it: EXPLAIN ANALYZE).
fn explains_a_write(sql: &str) -> bool {
    use datafusion::sql::sqlparser::ast::Statement;
    if !sqltext::first_word(sql).eq_ignore_ascii_case("explain") {
        return false;
    }
    match sqltext::parse(sql).as_deref() {
        Ok([Statement::Explain { statement, .. }]) => {
            !matches!(statement.as_ref(), Statement::Query(_))
        }
        _ => false,
    }
}

/// Answers one simple-protocol statement. Returns the link for the relay to
/// take back, or `None` when the connection to Postgres was lost.
pub(crate) async fn answer_query(
    link: PgLink,
    cw: &mut WriteHalf,
    sql: &str,
    (federation, router): (&Federation, &crate::router::Router),
    settings: &SessionSettings,
    cancel: &SessionCancel,
    remember: &(dyn Fn(&[u8]) + Sync),
) -> Option<PgLink> {
    let mut out = Out::new(cw);
    let link = match sqltext::statements(sql) {
        Some(statements) if statements.len() > 1 && copies_in(&statements) => {
            let e = ErrorFields::error(
                "0A000",
                "COPY FROM STDIN in a query string with a statement over a tiered table is not \
                 supported: send the COPY on its own",
            );
            refuse(link, &mut out, e).await
        }
        Some(statements) if statements.len() > 1 => {
            let context = (federation, router, cancel, remember);
            answer_each(link, &mut out, (sql, &statements), settings, context).await
        }
        _ => answer(link, &mut out, sql, federation, settings, cancel).await,
    };
    out.finish(link).await
}

/// Whether one of `statements` may be a `COPY … FROM STDIN`, whose data
/// only the client's connection carries.
fn copies_in(statements: &[&str]) -> bool {
    statements.iter().any(|s| {
        sqltext::first_word(s).eq_ignore_ascii_case("copy") && s.to_lowercase().contains("stdin")
    })
}

/// A query string of several statements, one of them over a tiered table:
/// each is answered in turn, federated or by Postgres as the router says,
/// until one fails; one ReadyForQuery ends them all.
///
/// Outside a transaction block Postgres runs such a string in one
/// transaction of its own, its implicit block, and so does thermocline,
/// opening a block for it. A BEGIN among the statements makes the block the
/// client's, with the statements before it; a COMMIT or ROLLBACK ends it,
/// with Postgres's warning that no transaction was in progress, and the
/// statements after it run in a new one; savepoints and `AND CHAIN` are
/// refused in it, as Postgres refuses them.
async fn answer_each(
    mut link: PgLink,
    out: &mut Out<'_>,
    (whole, statements): (&str, &[&str]),
    before: &SessionSettings,
    (federation, router, cancel, remember): (
        &Federation,
        &crate::router::Router,
        &SessionCancel,
        &(dyn Fn(&[u8]) + Sync),
    ),
) -> Option<PgLink> {
    // A statement may change what the next ones are answered in (`SET
    // TimeZone`): kept here, and for the session.
    let mut settings = before.clone();
    // The transaction open is one thermocline began: the implicit block.
    let mut implicit = false;
    // Settings Postgres reported changed: told the client as the string
    // ends, as Postgres tells them.
    let mut changed: Vec<Vec<u8>> = Vec::new();
    if let Some(error) = syntax_error(&mut link, whole).await? {
        // Nothing of the string runs; a client's block is aborted.
        out.error(error);
        if link.txn_status == b'T' {
            abort_transaction(&mut link).await?;
        }
        finish(&mut link, out);
        return Some(link);
    }
    out.in_sequence = true;
    for sql in statements {
        // Each statement is a part of the client's string.
        let at = (sql.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
        out.position_offset = whole.get(..at).map_or(0, |before| before.chars().count());
        if link.txn_status == b'I' {
            link.simple("BEGIN").await.ok()?;
            implicit = true;
        }
        link = match control(sql).filter(|_| implicit) {
            Some(Control::Begin) => {
                // Postgres warns that a transaction is already in progress:
                // left out, as the block was Postgres's implicit one.
                let link = relay_query_without(link, out, sql, Some(b"25001")).await?;
                implicit = out.failed.is_some();
                link
            }
            Some(Control::End) => {
                // Postgres warns, then ends its block as the statement says.
                let warning = ErrorFields::warning("25P01", "there is no transaction in progress");
                out.buf.extend(warning.encode());
                relay_query(link, out, sql).await?
            }
            Some(Control::Refused(what)) => {
                let message = format!("{what} can only be used in transaction blocks");
                out.error(ErrorFields::error("25P01", message).encode());
                link
            }
            None => match router.route_query(sql) {
                crate::router::Route::Federate => {
                    answer(link, out, sql, federation, &settings, cancel).await?
                }
                crate::router::Route::Relay => relay_query(link, out, sql).await?,
            },
        };
        for status in out.statuses.drain(..) {
            settings.remember(&status);
            remember(&status);
            changed.push(status);
        }
        if out.failed.is_some() {
            break;
        }
    }
    out.position_offset = 0;
    if implicit && link.txn_status != b'I' {
        // A failure undoes the whole block.
        let end = if out.failed.is_some() {
            "ROLLBACK"
        } else {
            "COMMIT"
        };
        link.simple(end).await.ok()?;
    }
    // What Postgres sent meanwhile, with the settings the block's end
    // changed back; ReadyForQuery once they are told.
    finish(&mut link, out);
    for status in out.statuses.drain(..) {
        remember(&status);
        changed.push(status);
    }
    out.in_sequence = false;
    // Each setting whose last value is not the one the client knows, once.
    for (i, status) in changed.iter().enumerate() {
        let last = !changed[i + 1..]
            .iter()
            .any(|later| setting_name(later) == setting_name(status));
        if last && !before.reported.contains(status) {
            crate::protocol::put_message(&mut out.buf, b'S', status);
        }
    }
    finish(&mut link, out);
    Some(link)
}

/// Postgres parses a whole query string before it runs any of it, so a
/// syntax error anywhere in it fails the string whole: the error `sql` has,
/// as Postgres reports it, found by preparing it as a statement of
/// thermocline's own. Postgres refuses to prepare several commands once it
/// has parsed them, with an error that points at no position; a syntax
/// error always points at one. In a client's block, inside a savepoint, so
/// the block is not aborted (one already aborted stays so). `None`: the
/// connection to Postgres was lost.
async fn syntax_error(link: &mut PgLink, sql: &str) -> Option<Option<Vec<u8>>> {
    const NAME: &str = "thermocline_syntax";
    let block = link.txn_status == b'T';
    if block {
        link.simple(&format!("SAVEPOINT {NAME}")).await.ok()?;
    }
    let mut msgs = Vec::new();
    link::frontend::parse(&mut msgs, NAME, sql);
    link::frontend::close(&mut msgs, b'S', NAME);
    // The refusal expected is no statement's failure.
    let first_error = link.first_error.clone();
    let parsed = link.extended_sync(&msgs).await;
    link.first_error = first_error;
    if block {
        link.simple(&format!(
            "ROLLBACK TO SAVEPOINT {NAME}; RELEASE SAVEPOINT {NAME}"
        ))
        .await
        .ok()?;
    }
    match parsed {
        Err(LinkError::Postgres(e)) if e.field(b'P').is_some() => Some(Some(e.encode())),
        Err(LinkError::Gone) => None,
        _ => Some(None),
    }
}

/// What a statement of a query string does to the implicit block it runs in.
#[derive(Debug, PartialEq, Eq)]
enum Control {
    /// BEGIN, START TRANSACTION: the block becomes the client's.
    Begin,
    /// COMMIT, END, ROLLBACK, ABORT, PREPARE TRANSACTION: the block ends so.
    End,
    /// A command Postgres refuses in an implicit block, by the name its
    /// error gives it.
    Refused(&'static str),
}

/// What `sql` does to an implicit block; `None`: nothing of its own.
fn control(sql: &str) -> Option<Control> {
    let words: Vec<String> = sqltext::top_level(sql)?
        .into_iter()
        .filter_map(|piece| match piece {
            sqltext::Piece::Word(r) => Some(sql[r].to_ascii_lowercase()),
            sqltext::Piece::Parens(_) => None,
        })
        .collect();
    let has = |word: &str| words.iter().skip(1).any(|w| w == word);
    let chained = words.windows(2).any(|w| w[0] == "and" && w[1] == "chain");
    let second = words.get(1).map(String::as_str);
    match words.first()?.as_str() {
        "begin" | "start" => Some(Control::Begin),
        // COMMIT PREPARED and ROLLBACK PREPARED end no block of their own.
        "commit" | "end" | "rollback" | "abort" if second == Some("prepared") => None,
        "rollback" | "abort" if has("to") => Some(Control::Refused("ROLLBACK TO SAVEPOINT")),
        "commit" | "end" if chained => Some(Control::Refused("COMMIT AND CHAIN")),
        "rollback" | "abort" if chained => Some(Control::Refused("ROLLBACK AND CHAIN")),
        "commit" | "end" | "rollback" | "abort" => Some(Control::End),
        "prepare" if second == Some("transaction") => Some(Control::End),
        "savepoint" => Some(Control::Refused("SAVEPOINT")),
        "release" => Some(Control::Refused("RELEASE SAVEPOINT")),
        _ => None,
    }
}

/// The error to report for a statement that failed with `error`: where
/// that is 25P02 (a query sent after another of the statement's had failed,
/// as its scans run side by side), the first failure on `link`.
fn root_cause(error: Vec<u8>, link: &PgLink) -> Vec<u8> {
    let code = |m: &[u8]| crate::protocol::error_code(m).map(<[u8]>::to_vec);
    match &link.first_error {
        Some(first)
            if code(&error).as_deref() == Some(b"25P02")
                && code(&first.body).as_deref() != Some(b"25P02") =>
        {
            first.encode()
        }
        _ => error,
    }
}

async fn answer(
    mut link: PgLink,
    out: &mut Out<'_>,
    sql: &str,
    federation: &Federation,
    settings: &SessionSettings,
    cancel: &SessionCancel,
) -> Option<PgLink> {
    if link.txn_status == b'E' {
        // Postgres answers 25P02 itself.
        return relay_query(link, out, sql).await;
    }
    if matview::may_be_command(sql) {
        return matview::answer(link, out, sql, federation, settings, cancel).await;
    }
    if explains_a_write(sql) {
        let e = ErrorFields::error(
            "0A000",
            "EXPLAIN ANALYZE of a statement that writes what it reads from a tiered table is \
             not supported: it would run over the hot rows only (EXPLAIN without ANALYZE shows \
             Postgres's plan)",
        );
        return refuse(link, out, e).await;
    }
    if let Some(d) = cursor::parse(sql) {
        return cursor::declare(link, out, d, federation, settings, cancel).await;
    }
    if let Some(c) = ctas::parse(sql) {
        return ctas::create(link, out, c, federation, settings, cancel).await;
    }
    if let Some(i) = insert::parse(sql) {
        return insert::insert(link, out, i, federation, settings, cancel).await;
    }
    if let Some(w) = writes::parse(sql, |name| federation.is_tiered(name)) {
        return writes::write(link, out, w, federation, settings, cancel).await;
    }
    // `COPY … TO STDOUT`: its read, answered as any other, once Postgres
    // has checked the COPY itself.
    let copy = match copy::parse(sql) {
        Ok(c) => c,
        Err(e) => return refuse(link, out, e).await,
    };
    let original = sql;
    let sql = copy.as_ref().map_or(sql, |c| c.select.as_str());
    if let Some(c) = &copy {
        match link.simple(&c.check).await {
            Ok(_) => {}
            Err(LinkError::Postgres(e)) => {
                out.error(e.encode());
                finish(&mut link, out);
                return Some(link);
            }
            Err(_) => return None,
        }
    }
    // One of max_federated_statements, for all of the statement's work.
    let _slot = match federation.limits.federated_slot(cancel).await {
        Ok(slot) => slot,
        Err(e) => return refuse(link, out, e).await,
    };
    // Outside a transaction block, the statement runs in a read-only
    // REPEATABLE READ transaction of its own, begun in the same round
    // trip as Postgres describes the statement. Its snapshot is taken as
    // Postgres parses the statement, before the lake is read.
    let own_transaction = link.txn_status == b'I';
    link.first_error = None;
    let mut msgs = Vec::new();
    if own_transaction {
        link::frontend::query(
            &mut msgs,
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        );
    }
    // Outside a transaction block, the session also tells where the
    // statement's names resolve (see `names`).
    let names = match own_transaction {
        true => names::written_names(sql),
        false => Vec::new(),
    };
    link::frontend::parse(&mut msgs, "", sql);
    // Parsed, the statement holds its relations: their columns can no
    // longer change until it ends. They are read from then on, while
    // Postgres describes it, under the search path the session is
    // expected to have (checked once it answered).
    let parsed = match names.is_empty() {
        true => 0,
        false => {
            crate::protocol::put_message(&mut msgs, b'H', b"");
            b'1'
        }
    };
    link::frontend::describe(&mut msgs, b'S', "");
    ask_session(&mut msgs, &names::ask(&names));
    crate::protocol::put_message(&mut msgs, b'S', b"");
    let explained = explain_of(sql);
    let warm_up = own_transaction && link.fresh && explained.is_none() && copy.is_none();
    if warm_up {
        link::warm_up(&mut msgs, sql);
    }
    if link.send(&msgs).await.is_err() {
        return None;
    }
    let begun = match own_transaction {
        true => link.until_ready().await,
        false => Ok(Vec::new()),
    };
    let mut assumed = None;
    let mut read_columns = || {
        let path = federation.search_path(&settings.user);
        assumed = planning::ColumnsAhead::assume(&names, &path, federation);
    };
    let described = begun.and(link.until_ready_noting(parsed, &mut read_columns).await);
    if warm_up {
        link.warming_up();
    }
    let described = match described {
        Ok(m) => m,
        Err(LinkError::Postgres(e)) => {
            // The client's own transaction, if any, failed in Postgres.
            out.error(e.encode());
            roll_back_own(&mut link, own_transaction).await?;
            finish(&mut link, out);
            return Some(link);
        }
        Err(_) => return None,
    };
    let Some(row_desc) = described.iter().find(|m| m.tag == b'T').cloned() else {
        roll_back_own(&mut link, own_transaction).await?;
        return relay_query(link, out, original).await;
    };
    let tz = match settings.zone() {
        Ok(tz) => tz,
        Err(e) => {
            roll_back_own(&mut link, own_transaction).await?;
            return refuse(link, out, e).await;
        }
    };
    let fields = row_description(&row_desc.body)?;
    let deadline = statement_timeout(&described).map(|t| tokio::time::Instant::now() + t);
    let (shared, ctx) = ScanContext::start(link, tz, false, own_transaction);
    ctx.read_cold_early.store(
        explained.is_none() && !federation.cache.keeps_partials(),
        std::sync::atomic::Ordering::Relaxed,
    );
    ctx.declare_hot_early
        .store(explained.is_none(), std::sync::atomic::Ordering::Relaxed);
    ahead::begin(
        &ctx,
        federation,
        &described,
        &names,
        (assumed, &settings.user),
    );
    let text = settings.text(tz);
    let run = Run {
        sql,
        fields: &fields,
        formats: Vec::new(),
        params: Vec::new(),
        row_description: true,
        limit: None,
        user: &settings.user,
        copy: copy.as_ref(),
    };
    // A whole answer from the result cache, for a session that accepts one.
    let result_key = match explained.is_some() || copy.is_some() {
        true => None,
        false => match results::ttl(&shared, settings, federation).await {
            Err(()) => return None,
            Ok(ttl) => ttl.map(|ttl| (ttl, results::key(sql, settings))),
        },
    };
    if let Some((ttl, key)) = &result_key
        && let Some(hit) = federation.cache.result(key, *ttl).await
    {
        drop(ctx);
        let link = take_back(shared).await?;
        return results::answer(link, out, &hit, &fields, own_transaction).await;
    }
    if result_key.is_some() {
        out.capture = Some(Vec::new());
        out.capture_limit = federation.cache.max_result();
    }
    let computing = std::time::Instant::now();
    let seen = cancel.count();
    let work = async {
        match &explained {
            Some((inner, analyze)) => {
                explain(
                    inner,
                    *analyze,
                    &ctx,
                    federation,
                    &fields,
                    (&settings.user, &text),
                    out,
                )
                .await
            }
            None => execute(&run, &ctx, federation, &text, out)
                .await
                .map(|(rows, _)| rows),
        }
    };
    let outcome = tokio::select! {
        r = work => r,
        () = cancel.after(seen) => Err(cancelled()),
        () = expire(deadline) => Err(timed_out()),
    };
    // The scans are done with the link; take it back.
    let ctx_reads = ctx.reads.lock().map(|r| r.clone()).unwrap_or_default();
    drop(ctx);
    let mut link = take_back(shared).await?;
    if link.recover().await.is_err() {
        return None;
    }
    match outcome {
        Ok(rows) => {
            if let (Some((_, key)), Some(data)) = (result_key, out.capture.take()) {
                let checks = ctx_reads.clone();
                federation
                    .cache
                    .keep_result(
                        key,
                        cache::CachedResult {
                            data,
                            rows,
                            checks,
                            statement: crate::admin::activity::mask_literals(sql),
                            user: settings.user.clone(),
                            computed: computing,
                            created: std::time::SystemTime::now(),
                            compute: computing.elapsed(),
                            hits: Default::default(),
                        },
                    )
                    .await;
            }
            let verb = if explained.is_some() {
                "EXPLAIN".to_string()
            } else if copy.is_some() {
                format!("COPY {rows}")
            } else {
                format!("SELECT {rows}")
            };
            let mut tag = verb.into_bytes();
            tag.push(0);
            crate::protocol::put_message(&mut out.buf, b'C', &tag);
            if own_transaction {
                if link.simple("COMMIT").await.is_err() {
                    return None;
                }
            } else {
                close_cursors(&mut link).await?;
            }
        }
        Err(error) => {
            let gone = matches!(&error, Failure::Link(LinkError::Gone));
            out.error(root_cause(error.encode(), &link));
            if gone {
                return None;
            }
            undo(&mut link, own_transaction).await?;
        }
    }
    finish(&mut link, out);
    Some(link)
}

#[cfg(test)]
mod tests {
    use super::{Control, control};

    #[test]
    fn statements_that_begin_end_or_are_refused_in_an_implicit_block() {
        let cases = [
            ("BEGIN", Some(Control::Begin)),
            ("begin isolation level serializable", Some(Control::Begin)),
            ("/* c */ START TRANSACTION READ ONLY", Some(Control::Begin)),
            ("COMMIT", Some(Control::End)),
            ("end work", Some(Control::End)),
            ("ROLLBACK", Some(Control::End)),
            ("abort", Some(Control::End)),
            ("COMMIT AND NO CHAIN", Some(Control::End)),
            ("PREPARE TRANSACTION 'x'", Some(Control::End)),
            (
                "COMMIT AND CHAIN",
                Some(Control::Refused("COMMIT AND CHAIN")),
            ),
            ("end and chain", Some(Control::Refused("COMMIT AND CHAIN"))),
            (
                "ABORT AND CHAIN",
                Some(Control::Refused("ROLLBACK AND CHAIN")),
            ),
            (
                "ROLLBACK TO a",
                Some(Control::Refused("ROLLBACK TO SAVEPOINT")),
            ),
            (
                "rollback work to savepoint a",
                Some(Control::Refused("ROLLBACK TO SAVEPOINT")),
            ),
            ("SAVEPOINT a", Some(Control::Refused("SAVEPOINT"))),
            (
                "RELEASE SAVEPOINT a",
                Some(Control::Refused("RELEASE SAVEPOINT")),
            ),
            ("COMMIT PREPARED 'x'", None),
            ("ROLLBACK PREPARED 'x'", None),
            ("PREPARE q AS SELECT 1", None),
            ("SELECT 'begin'", None),
            ("\"begin\"", None),
        ];
        for (sql, want) in cases {
            assert_eq!(control(sql), want, "{sql}");
        }
    }
}
