//! Federated statements over the extended query protocol.
//!
//! Parse, Bind, Describe and Close of a federated statement go to Postgres
//! as the client sent them, so Postgres prepares, types and describes it
//! (ParameterDescription, RowDescription with the client's result formats,
//! every error). Only Execute is answered here: the statement runs over
//! both tiers with the portal's parameters, and its rows are written in the
//! portal's result formats. An Execute with a row limit sends that many
//! rows and PortalSuspended; the rest wait for the portal's next Execute.
//! A write (`INSERT … SELECT`, `UPDATE … FROM` over history) runs whole at
//! its first Execute, as Postgres runs one: the rows it returns are then
//! sent under the row limit the same way, and a portal that has run to
//! its end is not run again.
//!
//! No Sync is sent while the client's pipeline is open: hot scans are named
//! portals executed a batch at a time, in the client's (implicit or
//! explicit) transaction.

use std::collections::HashMap;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;

use super::link::{Bind, LinkError, PgLink, frontend, row_description};
use super::scan::ScanContext;
use super::{Failure, Federation, Out, Remainder, Run, SessionSettings, execute};
use crate::frontend::cancel::SessionCancel;
use crate::pgtypes::{PgType, oid};
use crate::protocol::ErrorFields;
use crate::stream::WriteHalf;

/// An Execute of a portal bound to a federated statement.
#[derive(Debug)]
pub(crate) struct ExecuteJob {
    pub portal: String,
    pub max_rows: i32,
    pub statement: String,
    pub sql: String,
    /// The Bind message body that created the portal.
    pub bind: Vec<u8>,
    /// No portal ran before it since the last Sync.
    pub first_in_batch: bool,
}

/// Federated portals executed at least once: what each still holds.
pub(crate) type Suspended = HashMap<String, Held>;

/// What a federated portal holds after its first Execute.
#[derive(Debug)]
pub(crate) struct Held {
    /// DataRows still to send.
    rows: Remainder,
    ends: Ends,
}

/// How a later Execute of a portal ends once its rows are sent.
#[derive(Debug)]
enum Ends {
    /// A read: `SELECT n`, n the rows that Execute sent.
    Select,
    /// A write that returns rows: its own tag, with the rows that Execute
    /// sent (`INSERT 0`, `UPDATE`, … before the count).
    Tag(String),
    /// A command that has run (a write returning no rows, COPY, DECLARE,
    /// CREATE TABLE AS): Postgres refuses to run its portal again.
    Ran,
}

impl Held {
    fn read(rows: Remainder) -> Self {
        Held {
            rows,
            ends: Ends::Select,
        }
    }

    fn ran() -> Self {
        Held {
            rows: Remainder::new(),
            ends: Ends::Ran,
        }
    }
}

/// Answers one Execute. Returns the link, or `None` if Postgres is gone.
pub(crate) async fn answer_execute(
    link: PgLink,
    cw: &mut WriteHalf,
    job: &ExecuteJob,
    federation: &Federation,
    settings: &SessionSettings,
    suspended: &mut Suspended,
    cancel: &SessionCancel,
) -> Option<PgLink> {
    let mut out = Out::new(cw);
    let link = answer(link, &mut out, job, federation, settings, suspended, cancel).await;
    out.finish(link).await
}

/// Sends up to `max_rows` held rows (all of them for 0), then
/// PortalSuspended when the limit was reached (whether rows remain or not,
/// as Postgres does), or CommandComplete.
fn send_rows(out: &mut Out<'_>, held: &mut Held, max_rows: i32) {
    let mut sent = 0u64;
    while max_rows <= 0 || (sent as i64) < max_rows as i64 {
        match held.rows.pop_front() {
            Some(m) => {
                out.buf.extend(m);
                sent += 1;
            }
            None => break,
        }
    }
    if max_rows > 0 && sent == max_rows as u64 {
        crate::protocol::put_message(&mut out.buf, b's', b"");
        return;
    }
    let mut tag = match &held.ends {
        Ends::Tag(verb) => format!("{verb} {sent}"),
        _ => format!("SELECT {sent}"),
    }
    .into_bytes();
    tag.push(0);
    crate::protocol::put_message(&mut out.buf, b'C', &tag);
}

/// Answers the first Execute of a write that thermocline ran whole:
/// `replies`, its RowDescription if it returns rows (`RETURNING`), its
/// DataRows and CommandComplete, are sent under the row limit, and the
/// portal keeps what is left.
pub(super) fn answer_written(
    out: &mut Out<'_>,
    suspended: &mut Suspended,
    job: &ExecuteJob,
    replies: &[super::link::BackendMessage],
) {
    let tag = replies.iter().rev().find(|m| m.tag == b'C');
    let verb = tag.and_then(|m| {
        let text = std::str::from_utf8(&m.body).ok()?;
        let (verb, _count) = text.trim_end_matches('\0').rsplit_once(' ')?;
        Some(verb.to_string())
    });
    match verb {
        Some(verb) if replies.iter().any(|m| m.tag == b'T') => {
            let rows = replies.iter().filter(|m| m.tag == b'D');
            let mut held = Held {
                rows: rows.map(|m| m.encode()).collect(),
                ends: Ends::Tag(verb),
            };
            send_rows(out, &mut held, job.max_rows);
            suspended.insert(job.portal.clone(), held);
        }
        _ => {
            if let Some(m) = tag {
                out.buf.extend(m.encode());
            }
            suspended.insert(job.portal.clone(), Held::ran());
        }
    }
}

async fn answer(
    mut link: PgLink,
    out: &mut Out<'_>,
    job: &ExecuteJob,
    federation: &Federation,
    settings: &SessionSettings,
    suspended: &mut Suspended,
    cancel: &SessionCancel,
) -> Option<PgLink> {
    // The rest of a portal suspended by an earlier Execute.
    // (An empty one has run to completion: Postgres answers "SELECT 0".)
    if let Some(held) = suspended.get_mut(&job.portal) {
        if let Ends::Ran = held.ends {
            let e = ErrorFields::error("55000", format!("portal \"{}\" cannot be run", job.portal));
            return fail(link, out, e).await;
        }
        send_rows(out, held, job.max_rows);
        forward_deferred(&mut link, out);
        return Some(link);
    }
    let Some(bind) = Bind::decode(&job.bind) else {
        return fail(
            link,
            out,
            ErrorFields::error("08P01", "invalid Bind message"),
        )
        .await;
    };
    if super::matview::may_be_command(&job.sql) && super::matview::is_create(&job.sql) {
        // Postgres would build it from the hot rows only.
        return fail(
            link,
            out,
            ErrorFields::error(
                "0A000",
                "materialized views over tiered tables are created through the simple query protocol \
                 (psql, or a driver's simple query or script execution)",
            ),
        )
        .await;
    }
    // `CREATE TABLE … AS query`, `SELECT … INTO`: the query is answered,
    // its rows kept for the table (see `ctas`).
    let create = super::ctas::parse(&job.sql);
    if create.as_ref().is_some_and(|c| c.if_not_exists) {
        let e = ErrorFields::error(
            "0A000",
            "CREATE TABLE IF NOT EXISTS … AS over the history of a tiered table is answered \
             through the simple query protocol only",
        );
        return fail(link, out, e).await;
    }
    // `COPY … TO STDOUT`: Postgres checks the COPY and describes its read,
    // which is then answered as any other.
    let copy = match super::copy::parse(&job.sql) {
        Ok(c) => c,
        Err(e) => return fail(link, out, e).await,
    };
    // `DECLARE … CURSOR FOR query`: the query is answered, its rows kept
    // for the cursor (see `cursor`).
    let cursor = super::cursor::parse(&job.sql);
    // `INSERT … query`: the query is answered, its rows kept for the
    // INSERT (see `insert`).
    let insert = match (&copy, &cursor, &create) {
        (None, None, None) => super::insert::parse(&job.sql),
        _ => None,
    };
    let sql = match (&copy, &cursor, &create, &insert) {
        (Some(c), ..) => c.select.as_str(),
        (None, Some(d), ..) => d.query,
        (None, None, Some(c), _) => c.query.as_str(),
        (None, None, None, Some(i)) => i.query.as_str(),
        (None, None, None, None) => job.sql.as_str(),
    };
    // UPDATE … FROM, DELETE … USING, MERGE … USING a tiered table (see
    // `writes`).
    if let (None, None, None, None) = (&copy, &cursor, &create, &insert)
        && let Some(w) = super::writes::parse(&job.sql, |name| federation.is_tiered(name))
    {
        let within = (federation, settings, cancel);
        return super::writes::write_extended(link, out, (job, suspended), w, within).await;
    }
    // Its rows are kept, not sent.
    let keeps = cursor.is_some() || create.is_some() || insert.is_some();
    // Postgres describes the statement: parameter types and columns. Where
    // the session has changed nothing yet (outside a transaction block, no
    // portal run since the last Sync), it also tells where the statement's
    // names resolve (see `names`).
    let unchanged = job.first_in_batch && link.txn_status == b'I';
    let names = match unchanged {
        true => super::names::written_names(sql),
        false => Vec::new(),
    };
    let mut msgs = Vec::new();
    let mut terminals = 1 + super::SESSION_REPLIES;
    let mut types = None;
    if keeps {
        // The query, with the parameter types of the client's statement.
        let mut describe = Vec::new();
        frontend::describe(&mut describe, b'S', &job.statement);
        types = match link.extended(&describe, 1).await {
            Ok(replies) => replies
                .iter()
                .find(|m| m.tag == b't')
                .map(|m| m.body.to_vec()),
            Err(LinkError::Postgres(e)) => {
                out.error(e.encode());
                return Some(link);
            }
            Err(_) => return None,
        };
        use super::kept::NAME;
        // thermocline's own statement and portal are closed first: an
        // earlier statement of the session that failed while they were
        // open left them so.
        frontend::close_both(&mut msgs, NAME);
        frontend::parse_typed(&mut msgs, NAME, sql, types.as_deref().unwrap_or(&[0, 0]));
        frontend::describe(&mut msgs, b'S', NAME);
        frontend::close(&mut msgs, b'S', NAME);
        terminals += 4;
    }
    match &copy {
        None if keeps => {}
        None => frontend::describe(&mut msgs, b'S', &job.statement),
        Some(c) => {
            // Under a name of thermocline's own, closed at once.
            const NAME: &str = "thermocline_copy";
            frontend::run_closed(&mut msgs, NAME, &c.check);
            frontend::parse(&mut msgs, NAME, &c.select);
            frontend::describe(&mut msgs, b'S', NAME);
            frontend::close(&mut msgs, b'S', NAME);
            terminals += 7;
        }
    }
    super::ask_session(&mut msgs, &super::names::ask(&names));
    // The client's Parse or Bind, in this transaction, holds the
    // statement's relations: their columns are read while Postgres
    // describes it, under the search path the role had last (taken only
    // where the session resolves every name alike, see `ahead`).
    let assumed = match names.is_empty() {
        true => None,
        false => super::planning::ColumnsAhead::assume(
            &names,
            &federation.search_path(&settings.user),
            federation,
        ),
    };
    let described = match link.extended(&msgs, terminals).await {
        Ok(m) => m,
        Err(LinkError::Postgres(e)) => {
            out.error(e.encode());
            return Some(link);
        }
        Err(_) => return None,
    };
    let param_types: Vec<u32> = described
        .iter()
        .find(|m| m.tag == b't')
        .map(|m| {
            m.body
                .get(2..)
                .unwrap_or_default()
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
        .unwrap_or_default();
    let Some(fields) = described
        .iter()
        .find(|m| m.tag == b'T')
        .and_then(|m| row_description(&m.body))
    else {
        // Not a row-returning statement after all: Postgres runs it.
        return relay_execute(link, out, job).await;
    };
    let deadline = super::statement_timeout(&described).map(|t| tokio::time::Instant::now() + t);
    let tz = match settings.zone() {
        Ok(tz) => tz,
        Err(e) => return fail(link, out, e).await,
    };
    // Intervals in text are read by Postgres (their syntax is its own),
    // into its binary form.
    let mut read: Vec<Option<Vec<u8>>> = vec![None; bind.params.len()];
    let texts: Vec<(usize, &[u8])> = bind
        .params
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            param_types.get(*i) == Some(&oid::INTERVAL)
                && bind.param_formats.get(*i).copied().unwrap_or(0) == 0
        })
        .filter_map(|(i, v)| Some((i, v.as_deref()?)))
        .collect();
    if !texts.is_empty() {
        let values: Vec<String> = texts
            .iter()
            .map(|(_, v)| super::intervals::read_by_postgres(&String::from_utf8_lossy(v)))
            .collect();
        let row = match link.rows(&format!("SELECT {}", values.join(", "))).await {
            Ok(rows) => rows.into_iter().next().unwrap_or_default(),
            Err(LinkError::Postgres(e)) => {
                out.error(e.encode());
                return Some(link);
            }
            Err(_) => return None,
        };
        for ((i, _), hex) in texts.iter().zip(row) {
            read[*i] = hex.as_deref().and_then(crate::pgtypes::from_hex);
        }
    }
    let mut params = Vec::with_capacity(bind.params.len());
    for (i, value) in bind.params.iter().enumerate() {
        let type_oid = param_types.get(i).copied().unwrap_or(0);
        let mut format = bind.param_formats.get(i).copied().unwrap_or(0);
        let mut value = value.as_deref();
        if let Some(binary) = &read[i] {
            (format, value) = (1, Some(binary.as_slice()));
        }
        match param_scalar(type_oid, format, value, crate::pgtypes::executor_zone(tz)) {
            Ok(v) => params.push(v),
            Err(message) => {
                return fail(link, out, ErrorFields::error("22P02", message)).await;
            }
        }
    }
    let _slot = match federation.limits.federated_slot(cancel).await {
        Ok(slot) => slot,
        Err(e) => return fail(link, out, e).await,
    };
    let (shared, ctx) = ScanContext::start(link, tz, true, false);
    // The lake is read as soon as each scan is planned (after its hot
    // portal is bound), unless the cache of cold partial results may
    // answer it.
    ctx.read_cold_early.store(
        !federation.cache.keeps_partials(),
        std::sync::atomic::Ordering::Relaxed,
    );
    super::ahead::begin(
        &ctx,
        federation,
        &described,
        &names,
        (assumed, &settings.user),
    );
    let run = Run {
        sql,
        fields: &fields,
        formats: match keeps {
            true => vec![1; fields.len()],
            false => (0..fields.len()).map(|i| bind.result_format(i)).collect(),
        },
        params,
        row_description: false,
        // COPY runs to completion, whatever the row limit.
        limit: (job.max_rows > 0 && copy.is_none() && !keeps).then_some(job.max_rows as usize),
        user: &settings.user,
        copy: copy.as_ref(),
    };
    let text = settings.text(tz);
    let seen = cancel.count();
    let kept = super::matview::rows::Collect::default();
    let mut kept_w: crate::stream::WriteHalf = Box::new(kept.clone());
    let mut kept_out = Out::new(&mut kept_w);
    let work = async {
        match keeps {
            true => execute(&run, &ctx, federation, &text, &mut kept_out).await,
            false => execute(&run, &ctx, federation, &text, out).await,
        }
    };
    let outcome = tokio::select! {
        r = work => r,
        () = cancel.after(seen) => Err(super::cancelled()),
        () = super::expire(deadline) => Err(super::timed_out()),
    };
    let opened: Vec<(String, String)> = std::mem::take(&mut *ctx.portals.lock().ok()?);
    drop(ctx);
    let mut link = super::take_back(shared).await?;
    if link.recover().await.is_err() {
        return None;
    }
    match outcome {
        Ok(_) if keeps => {
            if close_portals(&mut link, &opened).await.is_err() {
                return None;
            }
            kept_out.flush().await;
            let rows = kept.take();
            let types = types.as_deref().unwrap_or(&[0, 0]);
            let done = match (&cursor, &create, &insert) {
                (Some(d), ..) => super::cursor::declare_extended(&mut link, d, &fields, rows)
                    .await
                    .map(|()| super::kept::completed("DECLARE CURSOR")),
                (None, Some(c), _) => {
                    super::ctas::create_extended(&mut link, c, rows, types, &job.bind).await
                }
                (None, None, Some(i)) => {
                    super::insert::insert_extended(&mut link, i, &fields, rows, types, &job.bind)
                        .await
                        .map(|replies| {
                            answer_written(out, suspended, job, &replies);
                            Vec::new()
                        })
                }
                (None, None, None) => Ok(Vec::new()),
            };
            match done {
                Ok(replies) => {
                    out.buf.extend(replies);
                    suspended
                        .entry(job.portal.clone())
                        .or_insert_with(Held::ran);
                }
                Err(LinkError::Postgres(e)) => out.error(match (&create, &insert) {
                    (Some(c), _) => super::kept::named(c.verb)(&e),
                    (None, Some(_)) => super::kept::named("INSERT")(&e),
                    (None, None) => e.encode(),
                }),
                Err(_) => return None,
            }
            forward_deferred(&mut link, out);
            Some(link)
        }
        Ok((rows, mut held)) => {
            if close_portals(&mut link, &opened).await.is_err() {
                return None;
            }
            // Suspended when the limit is reached, even by the last row
            // (Postgres cannot tell it was the last).
            if run.limit.is_some_and(|l| rows == l as u64) {
                crate::protocol::put_message(&mut out.buf, b's', b"");
            } else {
                let verb = if copy.is_some() { "COPY" } else { "SELECT" };
                let mut tag = format!("{verb} {rows}").into_bytes();
                tag.push(0);
                crate::protocol::put_message(&mut out.buf, b'C', &tag);
            }
            // Kept even when empty: the portal has run to its end.
            let held = match copy {
                Some(_) => Held::ran(),
                None => Held::read(std::mem::take(&mut held)),
            };
            suspended.insert(job.portal.clone(), held);
            forward_deferred(&mut link, out);
            Some(link)
        }
        Err(Failure::Link(LinkError::Postgres(e))) => {
            // Postgres failed the statement and now skips to the Sync.
            out.error(e.encode());
            Some(link)
        }
        Err(Failure::Link(_)) => None,
        Err(other) => {
            if close_portals(&mut link, &opened).await.is_err() {
                return None;
            }
            let bytes = other.encode();
            fail_raw(link, out, bytes).await
        }
    }
}

/// The rows of `sql` (no parameters), computed federated within the
/// client's exchange, where no Sync may be sent, as DataRows of binary
/// cells. `Err(Failure::Link(LinkError::Postgres(_)))`: Postgres failed it
/// and skips to the client's Sync; any other failure of ours leaves
/// Postgres as it was. `None`: the connection to Postgres was lost.
pub(super) async fn rows_within(
    mut link: PgLink,
    sql: &str,
    federation: &Federation,
    settings: &SessionSettings,
    cancel: &SessionCancel,
) -> Option<(
    PgLink,
    Result<
        (
            Vec<super::link::FieldDescription>,
            super::matview::rows::KeptRows,
        ),
        Failure,
    >,
)> {
    use super::kept::NAME;
    let mut msgs = Vec::new();
    frontend::close_both(&mut msgs, NAME);
    frontend::parse(&mut msgs, NAME, sql);
    frontend::describe(&mut msgs, b'S', NAME);
    frontend::close(&mut msgs, b'S', NAME);
    let described = match link.extended(&msgs, 5).await {
        Ok(m) => m,
        Err(e @ LinkError::Postgres(_)) => return Some((link, Err(Failure::Link(e)))),
        Err(_) => return None,
    };
    let Some(fields) = described
        .iter()
        .find(|m| m.tag == b'T')
        .and_then(|m| row_description(&m.body))
    else {
        let e = ErrorFields::error("XX000", "a read of history returns no rows");
        return Some((link, Err(Failure::Ours(e))));
    };
    let tz = match settings.zone() {
        Ok(tz) => tz,
        Err(e) => return Some((link, Err(Failure::Ours(e)))),
    };
    let _slot = match federation.limits.federated_slot(cancel).await {
        Ok(slot) => slot,
        Err(e) => return Some((link, Err(Failure::Ours(e)))),
    };
    let (shared, ctx) = ScanContext::start(link, tz, true, false);
    let run = Run::kept(sql, &fields, &settings.user);
    let text = settings.text(tz);
    let kept = super::matview::rows::Collect::default();
    let mut kept_w: crate::stream::WriteHalf = Box::new(kept.clone());
    let mut kept_out = Out::new(&mut kept_w);
    let seen = cancel.count();
    let outcome = tokio::select! {
        r = execute(&run, &ctx, federation, &text, &mut kept_out) => r,
        () = cancel.after(seen) => Err(super::cancelled()),
    };
    kept_out.flush().await;
    let opened: Vec<(String, String)> = std::mem::take(&mut *ctx.portals.lock().ok()?);
    drop(ctx);
    let mut link = super::take_back(shared).await?;
    link.recover().await.ok()?;
    if !matches!(outcome, Err(Failure::Link(LinkError::Postgres(_)))) {
        close_portals(&mut link, &opened).await.ok()?;
    }
    Some((link, outcome.map(|_| (fields, kept.take()))))
}

/// Closes thermocline's own statements and portals of one Execute.
async fn close_portals(link: &mut PgLink, opened: &[(String, String)]) -> Result<(), LinkError> {
    if opened.is_empty() {
        return Ok(());
    }
    let mut msgs = Vec::new();
    for (statement, portal) in opened {
        frontend::close(&mut msgs, b'P', portal);
        frontend::close(&mut msgs, b'S', statement);
    }
    match link.extended(&msgs, opened.len() * 2).await {
        Ok(_) | Err(LinkError::Postgres(_) | LinkError::Skipped) => Ok(()),
        Err(e) => Err(e),
    }
}

fn forward_deferred(link: &mut PgLink, out: &mut Out<'_>) {
    for m in link.deferred.drain(..) {
        out.buf.extend(m.encode());
    }
}

/// Reports an error of ours for this Execute and puts Postgres in the state
/// an error leaves it in: skipping messages until the client's Sync.
async fn fail(link: PgLink, out: &mut Out<'_>, error: ErrorFields) -> Option<PgLink> {
    fail_raw(link, out, error.encode()).await
}

pub(super) async fn fail_raw(
    mut link: PgLink,
    out: &mut Out<'_>,
    error: Vec<u8>,
) -> Option<PgLink> {
    fail_exchange(&mut link).await.ok()?;
    out.error(error);
    forward_deferred(&mut link, out);
    Some(link)
}

/// Makes Postgres fail the client's exchange, which thermocline failed, so
/// that it skips to the client's Sync and fails its transaction as after
/// an error of its own: a named statement that fails to parse (the
/// client's unnamed one stays). `Err`: the link failed otherwise.
pub(super) async fn fail_exchange(link: &mut PgLink) -> Result<(), LinkError> {
    let mut msgs = Vec::new();
    frontend::parse(
        &mut msgs,
        "thermocline_fail",
        "thermocline: statement failed",
    );
    match link.extended(&msgs, 1).await {
        Ok(_) | Err(LinkError::Postgres(_) | LinkError::Skipped) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sends the client's Execute to Postgres and passes its replies on.
async fn relay_execute(mut link: PgLink, out: &mut Out<'_>, job: &ExecuteJob) -> Option<PgLink> {
    let mut msgs = Vec::new();
    frontend::execute(&mut msgs, &job.portal, job.max_rows);
    let mut bytes = msgs;
    crate::protocol::put_message(&mut bytes, b'H', b"");
    link.send(&bytes).await.ok()?;
    loop {
        let m = link.recv().await.ok()?;
        out.buf.extend(m.encode());
        out.flush_if_full().await;
        if matches!(m.tag, b'C' | b'I' | b's' | b'E') {
            return Some(link);
        }
    }
}

/// A bound parameter as a DataFusion value of the type Postgres inferred.
fn param_scalar(
    type_oid: u32,
    format: i16,
    value: Option<&[u8]>,
    tz: &str,
) -> Result<ScalarValue, String> {
    if let Some(element) = crate::pgtypes::array_element(type_oid) {
        return array_param(element, format, value, tz);
    }
    let pg_type = match type_oid {
        oid::NUMERIC => None,
        0 => Some(PgType::Text(oid::TEXT)),
        // A type the executor does not know by its OID is an enum (a
        // column of any other such type is not read): its label, as text.
        t => Some(match PgType::from_oid(t, -1, &format!("type {t}")) {
            Err(crate::pgtypes::TypeError::Unsupported(_)) => PgType::Enum,
            other => other.map_err(|e| format!("parameter of {e}"))?,
        }),
    };
    let target = |t: PgType| match t {
        PgType::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some(tz.into())),
        other => other.arrow(),
    };
    let Some(value) = value else {
        return Ok(match pg_type {
            Some(t) => ScalarValue::try_from(target(t)).map_err(|e| e.to_string())?,
            None => ScalarValue::Decimal128(None, 38, 0),
        });
    };
    if format == 1 {
        let Some(t) = pg_type else {
            // numeric: its display scale is in the value.
            let scale = value
                .get(6..8)
                .map(|b| u16::from_be_bytes([b[0], b[1]]) as i8)
                .ok_or("invalid numeric parameter")?;
            let v = crate::pgtypes::numeric_value(value, scale).map_err(|e| e.to_string())?;
            return Ok(ScalarValue::Decimal128(Some(v), 38, scale));
        };
        let mut b = t.builder(1);
        t.append_binary(b.as_mut(), Some(value))
            .map_err(|e| format!("parameter: {e}"))?;
        let array = b.finish();
        let v = ScalarValue::try_from_array(array.as_ref(), 0).map_err(|e| e.to_string())?;
        return v.cast_to(&target(t)).map_err(|e| e.to_string());
    }
    let text = std::str::from_utf8(value).map_err(|_| "parameter is not valid UTF-8")?;
    let invalid = |what: &str| format!("invalid input syntax for type {what}: \"{text}\"");
    Ok(match pg_type {
        None => {
            let t = text.trim();
            let scale = t.split_once('.').map_or(0, |(_, f)| f.len());
            let digits: String = t.chars().filter(|c| *c != '.').collect();
            let v: i128 = digits.parse().map_err(|_| invalid("numeric"))?;
            ScalarValue::Decimal128(Some(v), 38, scale as i8)
        }
        Some(PgType::Bool) => match text.trim().to_ascii_lowercase().as_str() {
            "t" | "true" | "yes" | "y" | "on" | "1" => ScalarValue::Boolean(Some(true)),
            "f" | "false" | "no" | "n" | "off" | "0" => ScalarValue::Boolean(Some(false)),
            _ => return Err(invalid("boolean")),
        },
        Some(PgType::Int2) => {
            ScalarValue::Int16(Some(text.trim().parse().map_err(|_| invalid("smallint"))?))
        }
        Some(PgType::Int4) => {
            ScalarValue::Int32(Some(text.trim().parse().map_err(|_| invalid("integer"))?))
        }
        Some(PgType::Int8) => {
            ScalarValue::Int64(Some(text.trim().parse().map_err(|_| invalid("bigint"))?))
        }
        Some(PgType::Float4) => {
            ScalarValue::Float32(Some(text.trim().parse().map_err(|_| invalid("real"))?))
        }
        Some(PgType::Float8) => ScalarValue::Float64(Some(
            text.trim()
                .parse()
                .map_err(|_| invalid("double precision"))?,
        )),
        Some(PgType::Text(_) | PgType::Json | PgType::Jsonb | PgType::Enum) => {
            ScalarValue::Utf8(Some(text.to_string()))
        }
        Some(t) => ScalarValue::Utf8(Some(text.to_string()))
            .cast_to(&target(t))
            .map_err(|_| invalid(&format!("{:?}", t).to_lowercase()))?,
    })
}

/// A bound array parameter (one dimension) as a list of its elements,
/// each read as a parameter of the element type.
fn array_param(
    element: u32,
    format: i16,
    value: Option<&[u8]>,
    tz: &str,
) -> Result<ScalarValue, String> {
    let malformed = || "malformed array literal".to_string();
    let items: Vec<Option<Vec<u8>>> = match value {
        None => {
            let t = param_scalar(element, 0, None, tz)?.data_type();
            return ScalarValue::try_from(DataType::new_list(t, true)).map_err(|e| e.to_string());
        }
        Some(v) if format == 1 => match crate::pgtypes::array_elements(v) {
            Ok((_, items)) => items.into_iter().map(|i| i.map(<[u8]>::to_vec)).collect(),
            Err(crate::pgtypes::TypeError::ArrayShape) => {
                return Err("multidimensional array parameters are not supported yet".into());
            }
            Err(_) => return Err(malformed()),
        },
        Some(v) => {
            let text = std::str::from_utf8(v).map_err(|_| "parameter is not valid UTF-8")?;
            crate::pgtypes::array_items(text)
                .ok_or_else(|| format!("malformed array literal: \"{text}\""))?
                .into_iter()
                .map(|i| i.map(String::into_bytes))
                .collect()
        }
    };
    let scalars = items
        .iter()
        .map(|v| param_scalar(element, format, v.as_deref(), tz))
        .collect::<Result<Vec<_>, _>>()?;
    // numeric elements each carry their own scale: the list takes the
    // largest.
    let t = match param_scalar(element, 0, None, tz)?.data_type() {
        DataType::Decimal128(p, _) => DataType::Decimal128(
            p,
            scalars
                .iter()
                .filter_map(|s| match s {
                    ScalarValue::Decimal128(Some(_), _, s) => Some(*s),
                    _ => None,
                })
                .max()
                .unwrap_or(0),
        ),
        t => t,
    };
    let scalars = scalars
        .into_iter()
        .map(|s| s.cast_to(&t))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok(ScalarValue::List(ScalarValue::new_list_nullable(
        &scalars, &t,
    )))
}

/// Takes the statement's SQL and types from a Parse body.
pub(crate) fn parse_message(body: &[u8]) -> Option<(&str, &str)> {
    let (name, rest) = super::link::cstr(body)?;
    let (sql, _) = super::link::cstr(rest)?;
    Some((name, sql))
}

/// Statement and portal names in a Bind body.
pub(crate) fn bind_names(body: &[u8]) -> Option<(&str, &str)> {
    let (portal, rest) = super::link::cstr(body)?;
    let (statement, _) = super::link::cstr(rest)?;
    Some((portal, statement))
}

/// The portal name and row limit of an Execute body.
pub(crate) fn execute_message(body: &[u8]) -> Option<(&str, i32)> {
    let (portal, rest) = super::link::cstr(body)?;
    let max = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    Some((portal, max))
}

/// Kind and name of a Close or Describe body.
pub(crate) fn close_message(body: &[u8]) -> Option<(u8, &str)> {
    let (&kind, rest) = body.split_first()?;
    let (name, _) = super::link::cstr(rest)?;
    Some((kind, name))
}
