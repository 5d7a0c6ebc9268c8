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
mod subqueries;
mod tochar;
mod topk;
mod writes;

use std::sync::Arc;

use datafusion::common::DataFusionError;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use crate::frontend::cancel::SessionCancel;
use crate::lake::Lake;
use crate::pgtypes::TextSettings;
use crate::protocol::ErrorFields;
use crate::stream::WriteHalf;
use crate::tiering::TieredTable;
use crate::tiering::mover::KeySet;
pub use cold::row_key;
pub(crate) use copy::copies_out;
use explain::{explain, explain_of};
use link::{LinkError, PgLink, row_description};
pub use names::CatalogLink;
use planning::{plan_session, register_tables};
use scan::ScanContext;
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
}

impl Federation {
    /// Whether `name` may name a tiered table, or a view over one (a name
    /// without a schema: in any schema).
    pub(crate) fn is_tiered(&self, name: &datafusion::sql::sqlparser::ast::ObjectName) -> bool {
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
            [table] => (None, table),
            [schema, table] | [_, schema, table] => (Some(schema), table),
            _ => return false,
        };
        let is = |s: &String, t: &String| t == table && schema.is_none_or(|schema| schema == s);
        self.tables
            .iter()
            .any(|t| is(&t.def.schema, &t.def.table) || t.views.iter().any(|(s, v)| is(s, v)))
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
        self.buf.extend(message);
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
    let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
    match datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, sql).as_deref() {
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
    federation: &Federation,
    settings: &SessionSettings,
    cancel: &SessionCancel,
) -> Option<PgLink> {
    let mut out = Out::new(cw);
    let link = answer(link, &mut out, sql, federation, settings, cancel).await;
    out.finish(link).await
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
    link::frontend::describe(&mut msgs, b'S', "");
    ask_session(&mut msgs, &names::ask(&names));
    crate::protocol::put_message(&mut msgs, b'S', b"");
    if link.send(&msgs).await.is_err() {
        return None;
    }
    let begun = match own_transaction {
        true => link.until_ready().await,
        false => Ok(Vec::new()),
    };
    let described = match begun.and(link.until_ready().await) {
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
    if let Some(fields) = session_answers(&described)
        && let Ok(mut resolved) = ctx.resolved.lock()
    {
        *resolved = names::resolved(&fields, &names);
    }
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
    let explained = explain_of(sql);
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
            out.error(error.encode());
            if gone {
                return None;
            }
            undo(&mut link, own_transaction).await?;
        }
    }
    finish(&mut link, out);
    Some(link)
}

/// Refuses a statement before any of its work: its error, and the
/// client's transaction (if any) aborted as Postgres would.
async fn refuse(mut link: PgLink, out: &mut Out<'_>, e: ErrorFields) -> Option<PgLink> {
    out.error(e.encode());
    if link.txn_status != b'I' {
        abort_transaction(&mut link).await?;
    }
    finish(&mut link, out);
    Some(link)
}

/// Rolls back the transaction a statement began for itself, if it did.
async fn roll_back_own(link: &mut PgLink, own_transaction: bool) -> Option<()> {
    if own_transaction {
        link.simple("ROLLBACK").await.ok()?;
    }
    Some(())
}

/// Undoes a failed statement: its own transaction rolled back, or the
/// client's aborted. `None`: the link is gone.
async fn undo(link: &mut PgLink, own_transaction: bool) -> Option<()> {
    if own_transaction {
        link.simple("ROLLBACK").await.ok().map(|_| ())
    } else {
        abort_transaction(link).await
    }
}

/// As in Postgres, an error aborts the client's transaction: make
/// Postgres's transaction fail too. `None`: the link is gone.
async fn abort_transaction(link: &mut PgLink) -> Option<()> {
    match link
        .simple("DO $thermocline$BEGIN RAISE EXCEPTION 'statement failed'; END$thermocline$")
        .await
    {
        Err(LinkError::Gone) => None,
        _ => Some(()),
    }
}

/// Runs `sql` (see [`names::ask`]: the session's statement_timeout, and
/// where the statement's names resolve) alongside a statement's Describe,
/// through a statement and portal of thermocline's own, closed again (the
/// client's unnamed ones are left alone).
fn ask_session(msgs: &mut Vec<u8>, sql: &str) {
    const NAME: &str = "thermocline_statement_timeout";
    link::frontend::parse(msgs, NAME, sql);
    link::frontend::bind_binary(msgs, NAME, NAME);
    link::frontend::execute(msgs, NAME, 0);
    link::frontend::close(msgs, b'P', NAME);
    link::frontend::close(msgs, b'S', NAME);
}

/// The replies that end what [`ask_session`] sends: ParseComplete,
/// BindComplete, CommandComplete and two CloseCompletes.
const SESSION_REPLIES: usize = 5;

/// The fields of the row answering [`ask_session`] (every one text, the
/// first the session's statement_timeout).
fn session_answers(replies: &[link::BackendMessage]) -> Option<Vec<Option<&[u8]>>> {
    let row = replies.iter().find(|m| m.tag == b'D')?;
    link::data_row_fields(&row.body)
}

/// The session's statement_timeout, from the replies to [`ask_session`];
/// `None` when it is off. Postgres's own limit applies to each query
/// thermocline sends it; this one bounds the federated statement as a
/// whole, lake reads and the executor included.
fn statement_timeout(replies: &[link::BackendMessage]) -> Option<std::time::Duration> {
    let fields = session_answers(replies)?;
    let text = std::str::from_utf8((*fields.first()?)?).ok()?;
    // As Postgres shows it: "0" (off), "250ms", "5s", "2min", "1h", "1d".
    crate::config::parse_interval(text)
}

/// Completes at `deadline`; never without one.
async fn expire(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The error of a statement stopped by its statement_timeout, as Postgres
/// words it.
fn timed_out() -> Failure {
    Failure::Ours(ErrorFields::error(
        "57014",
        "canceling statement due to statement timeout",
    ))
}

/// The error of a statement stopped by a CancelRequest, as Postgres words it.
fn cancelled() -> Failure {
    Failure::Ours(ErrorFields::error(
        "57014",
        "canceling statement due to user request",
    ))
}

/// The link back from the scans of a finished statement. Executor tasks
/// end when their stream is dropped, but an aborted task lets go of the
/// link only when it next runs: wait for them briefly.
async fn take_back(shared: Arc<Mutex<PgLink>>) -> Option<PgLink> {
    let mut shared = shared;
    for _ in 0..5_000 {
        match Arc::try_unwrap(shared) {
            Ok(m) => return Some(m.into_inner()),
            Err(still_shared) => {
                shared = still_shared;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        }
    }
    tracing::error!("a federated scan outlived its statement");
    None
}

/// Closes the cursors a statement opened inside the client's transaction.
async fn close_cursors(link: &mut PgLink) -> Option<()> {
    match link
        .simple("SELECT name FROM pg_catalog.pg_cursors WHERE name LIKE 'thermocline\\_c%'")
        .await
    {
        Ok(rows) => {
            for m in rows.iter().filter(|m| m.tag == b'D') {
                if let Some(fields) = link::data_row_fields(&m.body)
                    && let Some(Some(name)) = fields.first()
                {
                    let name = String::from_utf8_lossy(name).into_owned();
                    if link.simple(&format!("CLOSE {name}")).await.is_err() {
                        return None;
                    }
                }
            }
            Some(())
        }
        Err(LinkError::Gone) => None,
        Err(_) => Some(()),
    }
}

/// Ends the client's statement: messages Postgres sent meanwhile, then
/// ReadyForQuery with the transaction status Postgres reports.
fn finish(link: &mut PgLink, out: &mut Out<'_>) {
    for m in link.deferred.drain(..) {
        out.buf.extend(m.encode());
    }
    crate::protocol::put_message(&mut out.buf, b'Z', &[link.txn_status]);
}

/// Sends the statement to Postgres as the client sent it and passes every
/// reply on.
async fn relay_query(mut link: PgLink, out: &mut Out<'_>, sql: &str) -> Option<PgLink> {
    let mut q = Vec::new();
    link::frontend::query(&mut q, sql);
    link.send(&q).await.ok()?;
    loop {
        let m = link.recv().await.ok()?;
        out.buf.extend(m.encode());
        out.flush_if_full().await;
        if m.tag == b'Z' {
            link.txn_status = m.body.first().copied().unwrap_or(b'I');
            return Some(link);
        }
    }
}

/// Why a federated statement failed.
enum Failure {
    Link(LinkError),
    DataFusion(DataFusionError),
    Ours(ErrorFields),
}

impl Failure {
    fn encode(&self) -> Vec<u8> {
        match self {
            Failure::Link(LinkError::Postgres(m)) => m.encode(),
            Failure::Link(e) => ErrorFields::error("08006", e.to_string()).encode(),
            Failure::Ours(e) => e.encode(),
            Failure::DataFusion(e) => {
                if let Some(m) = scan::postgres_error(e) {
                    return m.encode();
                }
                let root = e.find_root();
                if let DataFusionError::External(inner) = root {
                    if let Some(e) = inner.downcast_ref::<json::DataError>() {
                        return ErrorFields::error(e.code, e.message.clone()).encode();
                    }
                    if let Some(e) = inner.downcast_ref::<scan::LakeMoved>() {
                        return ErrorFields::error("40001", e.to_string()).encode();
                    }
                    if let Some(e) = inner.downcast_ref::<cold::ColdTierUnavailable>() {
                        // As a foreign-data wrapper reports a server it cannot reach.
                        tracing::warn!(error = %e, "cold tier unavailable");
                        return ErrorFields::error("HV00N", e.to_string()).encode();
                    }
                }
                let (code, message) = match root {
                    DataFusionError::ResourcesExhausted(m) => {
                        ("53200", format!("out of memory: {m}"))
                    }
                    DataFusionError::SchemaError(e, _) => (
                        "0A000",
                        format!(
                            "this statement over the history of a tiered table is not supported yet: {e}"
                        ),
                    ),
                    DataFusionError::NotImplemented(m) | DataFusionError::Plan(m) => (
                        "0A000",
                        format!(
                            "this statement over the history of a tiered table is not supported yet: {m}"
                        ),
                    ),
                    DataFusionError::ArrowError(e, _) => match e.as_ref() {
                        datafusion::arrow::error::ArrowError::DivideByZero => {
                            ("22012", "division by zero".to_string())
                        }
                        // An interval added to a time (see `intervals`).
                        datafusion::arrow::error::ArrowError::ComputeError(m)
                            if m == "Timestamp out of range" =>
                        {
                            ("22008", "timestamp out of range".to_string())
                        }
                        other => ("22000", other.to_string()),
                    },
                    other => ("XX000", other.to_string()),
                };
                tracing::debug!(error = %e, "federated statement failed");
                ErrorFields::error(code, message).encode()
            }
        }
    }
}

impl From<DataFusionError> for Failure {
    fn from(e: DataFusionError) -> Self {
        Failure::DataFusion(e)
    }
}

impl From<LinkError> for Failure {
    fn from(e: LinkError) -> Self {
        Failure::Link(e)
    }
}

/// What to run and how to answer.
pub(crate) struct Run<'a> {
    pub sql: &'a str,
    /// The columns as Postgres described them.
    pub fields: &'a [link::FieldDescription],
    /// Per column: 0 text, 1 binary.
    pub formats: Vec<i16>,
    /// `$n` values, typed as Postgres inferred them.
    pub params: Vec<datafusion::common::ScalarValue>,
    /// Send RowDescription first (simple protocol).
    pub row_description: bool,
    /// Rows to send now (Execute's row limit); the rest are returned.
    pub limit: Option<usize>,
    /// The session's role, shown with the cache entries it computed.
    pub user: &'a str,
    /// Rows written as the data of this `COPY … TO STDOUT` instead.
    pub copy: Option<&'a copy::CopyTo>,
}

impl<'a> Run<'a> {
    /// A run whose rows are kept, not sent: every column in binary, no
    /// parameters, no row limit.
    pub(crate) fn kept(sql: &'a str, fields: &'a [link::FieldDescription], user: &'a str) -> Self {
        Run {
            sql,
            fields,
            formats: vec![1; fields.len()],
            params: Vec::new(),
            row_description: false,
            limit: None,
            user,
            copy: None,
        }
    }
}

/// Rows a statement produced beyond an Execute's row limit, as DataRow
/// messages, kept for the portal's next Execute.
pub(crate) type Remainder = std::collections::VecDeque<Vec<u8>>;

/// Plans and runs the statement; writes RowDescription (if asked) and
/// DataRows. Returns the rows sent and those held back by the limit.
/// The executor's plan of `sql`, rewritten to mean what Postgres means:
/// dates and times read as Postgres reads them (ISO 8601), averages and
/// enums ordered and compared by value, times cast and truncated in the
/// session's zone, `= ANY` with Postgres's NULLs. What still differs is
/// refused by the caller.
async fn executor_plan(
    session: &datafusion::prelude::SessionContext,
    ctx: &Arc<ScanContext>,
    sql: &str,
    text: &TextSettings,
) -> Result<datafusion::prelude::DataFrame, Failure> {
    let interval_columns = planning::interval_columns(ctx);
    let mut df = exactness::plan_sql(session, sql, &interval_columns)
        .await
        .map_err(|e| planning::unreadable(ctx, e, sql))?;
    if let Some(m) = planning::numeric_text_refusal(df.logical_plan(), ctx) {
        return Err(Failure::Ours(ErrorFields::error("0A000", m)));
    }
    let read = literals::read_by_postgres(df.logical_plan().clone(), ctx).await?;
    if read.transformed {
        df = datafusion::prelude::DataFrame::new(session.state(), read.data);
    }
    let zone = ctx.time_zone.clone();
    let in_zone = move |plan| casts::rewrite(plan, &zone);
    // `= ANY` (or `= SOME`) is the only source of what `any_as_postgres`
    // rewrites.
    let reads_intervals = !interval_columns.is_empty();
    let lower = sql.to_ascii_lowercase();
    let any = lower.contains("any") || lower.contains("some");
    // A value becomes text only through a cast, `||` or `concat`.
    let becomes_text = ["text", "char", "cast", "::", "||", "concat"]
        .iter()
        .any(|w| lower.contains(w));
    let rewrites: [&dyn Fn(_) -> _; 6] = [
        &average::in_value_order,
        &|plan| intervals::as_postgres(plan, sql, reads_intervals),
        &enums::in_label_order,
        &in_zone,
        &|plan| {
            if any {
                arrays::any_as_postgres(plan)
            } else {
                Ok(datafusion::common::tree_node::Transformed::no(plan))
            }
        },
        &|plan| {
            if becomes_text {
                casts::as_postgres_text(plan, text)
            } else {
                Ok(datafusion::common::tree_node::Transformed::no(plan))
            }
        },
    ];
    for rewrite in rewrites {
        let t = rewrite(df.logical_plan().clone())?;
        if t.transformed {
            df = datafusion::prelude::DataFrame::new(session.state(), t.data);
        }
    }
    Ok(df)
}

async fn execute(
    run: &Run<'_>,
    ctx: &Arc<ScanContext>,
    federation: &Federation,
    text: &TextSettings,
    out: &mut Out<'_>,
) -> Result<(u64, Remainder), Failure> {
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, run.sql);
    // Constant calls to Postgres's formatting functions, as values.
    let folded = match statements.as_deref() {
        Ok([statement]) => constants::fold(statement, ctx).await?,
        _ => None,
    };
    if let Some(f) = &folded {
        statements = Parser::parse_sql(&PostgreSqlDialect {}, f);
    }
    let (sql, fields) = (folded.as_deref().unwrap_or(run.sql), run.fields);
    let mut normalized = None;
    let mut computed = Vec::new();
    if let Ok([statement]) = statements.as_deref() {
        computed = exactness::check(statement, fields)
            .map_err(|m| Failure::Ours(ErrorFields::error("0A000", m)))?;
        normalized = Some(statement.to_string());
    }
    let session = plan_session(ctx, federation);
    register_tables(sql, ctx, federation, &session).await?;
    // A plain table's numeric without a precision, returned as Postgres
    // wrote it, is exact as it is.
    computed.retain(|&i| !planning::returned_as_text(ctx, &fields[i]));
    let mut df = executor_plan(&session, ctx, sql, text).await?;
    if let Some(what) = json::refusal(df.logical_plan())
        .or_else(|| enums::refusal(df.logical_plan()))
        .or_else(|| average::refusal(df.logical_plan()))
        .or_else(|| casts::refusal(df.logical_plan()))
        .or_else(|| arrays::refusal(df.logical_plan()))
        .or_else(|| {
            intervals::refusal(
                df.logical_plan(),
                !planning::interval_columns(ctx).is_empty(),
                *ctx.time_zone == *crate::pgtypes::executor_zone(chrono_tz::UTC),
            )
        })
        .or_else(|| {
            ctx.collated
                .load(std::sync::atomic::Ordering::Relaxed)
                .then(|| collation::refusal(df.logical_plan()))
                .flatten()
        })
    {
        return Err(Failure::Ours(ErrorFields::error(
            "0A000",
            format!("{what} is not supported yet in reads of the history of a tiered table"),
        )));
    }
    if !computed.is_empty() {
        let scaled =
            numeric::at_postgres_scale(df.logical_plan().clone(), &computed).map_err(|i| {
                Failure::Ours(ErrorFields::error(
                    "0A000",
                    planning::left_out_among(ctx, fields)
                        .unwrap_or_else(|| exactness::computed_numeric(&fields[i])),
                ))
            })?;
        df = datafusion::prelude::DataFrame::new(session.state(), scaled);
    }
    if !run.params.is_empty() {
        let inferred = df.logical_plan().get_parameter_types()?;
        let mut values = Vec::with_capacity(run.params.len());
        for (i, v) in run.params.iter().enumerate() {
            let v = match inferred.get(&format!("${}", i + 1)) {
                Some(Some(t)) if t != &v.data_type() => v.cast_to(t)?,
                _ => v.clone(),
            };
            values.push(v);
        }
        df = df.with_param_values(values)?;
    }
    let schema = df.schema().inner().clone();
    if schema.fields().len() != fields.len() {
        // A wildcard over a table with columns left out, or a bug.
        return Err(Failure::Ours(match planning::left_out_among(ctx, fields) {
            Some(m) => ErrorFields::error("0A000", m),
            None => ErrorFields::error(
                "XX000",
                "the federated plan does not have the columns Postgres described",
            ),
        }));
    }
    check_numeric_scales(&schema, fields)?;
    let task = Arc::new(df.task_ctx());
    let plan = physical_plan(
        df,
        &task,
        ctx,
        federation,
        &cache::Statement {
            sql: normalized.as_deref().unwrap_or(sql),
            params: &run.params,
            output: text,
            user: run.user,
        },
    )
    .await?;
    let mut stream = datafusion::physical_plan::execute_stream(plan, task)?;
    if let Some(c) = run.copy {
        return copy_out(c, &mut stream, fields, text, out).await;
    }
    if run.row_description {
        let mut row_desc = Vec::new();
        put_row_description(&mut row_desc, fields);
        out.buf.extend(row_desc);
    }
    let mut rows = 0u64;
    let mut held = Remainder::new();
    let mut row_buf = Vec::with_capacity(256);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        for r in 0..batch.num_rows() {
            row_buf.clear();
            row_buf.extend_from_slice(&(fields.len() as i16).to_be_bytes());
            for (i, (c, f)) in batch.columns().iter().zip(fields).enumerate() {
                let len_at = row_buf.len();
                row_buf.extend_from_slice(&[0, 0, 0, 0]);
                let written = if run.formats.get(i) == Some(&1) {
                    crate::pgtypes::write_binary(&mut row_buf, c.as_ref(), r, f.type_oid)
                } else {
                    crate::pgtypes::write_text(&mut row_buf, c.as_ref(), r, f.type_oid, text)
                };
                let present = written
                    .map_err(|e| Failure::Ours(ErrorFields::error("0A000", e.to_string())))?;
                let len: i32 = if present {
                    (row_buf.len() - len_at - 4) as i32
                } else {
                    -1
                };
                row_buf[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
            }
            if run.limit.is_some_and(|l| rows as usize >= l) {
                let mut m = Vec::with_capacity(row_buf.len() + 5);
                crate::protocol::put_message(&mut m, b'D', &row_buf);
                held.push_back(m);
            } else {
                out.row(&row_buf);
                rows += 1;
            }
        }
        out.flush_if_full().await;
        if !out.ok {
            break;
        }
    }
    Ok((rows, held))
}

/// Writes the rows of a `COPY … TO STDOUT` as its data. Returns the rows
/// copied.
async fn copy_out(
    c: &copy::CopyTo,
    stream: &mut datafusion::execution::SendableRecordBatchStream,
    fields: &[link::FieldDescription],
    text: &TextSettings,
    out: &mut Out<'_>,
) -> Result<(u64, Remainder), Failure> {
    let mut encoder = copy::Encoder::new(c, fields);
    encoder.begin(&mut out.buf, fields);
    let mut rows = 0u64;
    let mut line = Vec::with_capacity(256);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        for r in 0..batch.num_rows() {
            encoder
                .row(&mut line, batch.columns(), r, fields, text)
                .map_err(|e| Failure::Ours(ErrorFields::error("0A000", e.to_string())))?;
            crate::protocol::put_message(&mut out.buf, b'd', &line);
            rows += 1;
        }
        out.flush_if_full().await;
        if !out.ok {
            break;
        }
    }
    encoder.end(&mut out.buf);
    Ok((rows, Remainder::new()))
}

/// The physical plan of a federated statement: the executor's, with
/// aggregate FILTERs that leave NULL conditions out, hot top-k and partial
/// aggregates computed by Postgres, and cold halves read through the cache
/// of cold partial results. `sql`: the statement as the SQL parser writes
/// it back.
async fn physical_plan(
    df: datafusion::prelude::DataFrame,
    task: &Arc<datafusion::execution::TaskContext>,
    ctx: &Arc<ScanContext>,
    federation: &Federation,
    statement: &cache::Statement<'_>,
) -> Result<Arc<dyn datafusion::physical_plan::ExecutionPlan>, DataFusionError> {
    let plan = df.create_physical_plan().await?;
    let plan = exactness::null_filters_exclude(plan)?;
    let plan = topk::rewrite(plan, ctx, task).await?;
    let leaves = ctx.leaves.lock().map(|l| l.clone()).unwrap_or_default();
    cache::rewrite(plan, ctx, &leaves, &federation.cache, statement)
}

/// Refuses a numeric column of declared scale that would come out with
/// another scale.
fn check_numeric_scales(
    schema: &datafusion::arrow::datatypes::Schema,
    fields: &[link::FieldDescription],
) -> Result<(), Failure> {
    use datafusion::arrow::datatypes::DataType;
    for (f, field) in fields.iter().zip(schema.fields()) {
        if f.type_oid != crate::pgtypes::oid::NUMERIC || f.typmod < 4 {
            continue;
        }
        let declared = ((f.typmod - 4) & 0x7ff) as i8;
        if let DataType::Decimal128(_, scale) = field.data_type()
            && declared != *scale
        {
            return Err(Failure::Ours(ErrorFields::error(
                "0A000",
                format!(
                    "column {:?}: numeric({}) results computed over the history of a tiered table are not supported yet",
                    f.name, declared
                ),
            )));
        }
    }
    Ok(())
}

fn put_row_description(out: &mut Vec<u8>, fields: &[link::FieldDescription]) {
    let mut body = Vec::new();
    body.extend_from_slice(&(fields.len() as i16).to_be_bytes());
    for f in fields {
        body.extend_from_slice(f.name.as_bytes());
        body.push(0);
        body.extend_from_slice(&f.table_oid.to_be_bytes());
        body.extend_from_slice(&f.column.to_be_bytes());
        body.extend_from_slice(&f.type_oid.to_be_bytes());
        body.extend_from_slice(&f.type_size.to_be_bytes());
        body.extend_from_slice(&f.typmod.to_be_bytes());
        body.extend_from_slice(&0i16.to_be_bytes());
    }
    crate::protocol::put_message(out, b'T', &body);
}
