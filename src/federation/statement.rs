//! A federated statement on the session's connection: its own
//! transaction, how it ends (its replies, its error, the transaction
//! aborted as Postgres would), the session settings asked alongside its
//! Describe, and the link taken back from its scans.

use std::sync::Arc;

use tokio::sync::Mutex;

use super::link::{self, LinkError, PgLink};
use super::{Failure, Out};
use crate::protocol::ErrorFields;

/// Refuses a statement before any of its work: its error, and the
/// client's transaction (if any) aborted as Postgres would.
pub(super) async fn refuse(mut link: PgLink, out: &mut Out<'_>, e: ErrorFields) -> Option<PgLink> {
    out.error(e.encode());
    if link.txn_status != b'I' {
        abort_transaction(&mut link).await?;
    }
    finish(&mut link, out);
    Some(link)
}

/// Rolls back the transaction a statement began for itself, if it did.
pub(super) async fn roll_back_own(link: &mut PgLink, own_transaction: bool) -> Option<()> {
    if own_transaction {
        link.simple("ROLLBACK").await.ok()?;
    }
    Some(())
}

/// Undoes a failed statement: its own transaction rolled back, or the
/// client's aborted. `None`: the link is gone.
pub(super) async fn undo(link: &mut PgLink, own_transaction: bool) -> Option<()> {
    if own_transaction {
        link.simple("ROLLBACK").await.ok().map(|_| ())
    } else {
        abort_transaction(link).await
    }
}

/// As in Postgres, an error aborts the client's transaction: make
/// Postgres's transaction fail too. `None`: the link is gone.
pub(super) async fn abort_transaction(link: &mut PgLink) -> Option<()> {
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
pub(super) fn ask_session(msgs: &mut Vec<u8>, sql: &str) {
    const NAME: &str = "thermocline_statement_timeout";
    link::frontend::parse(msgs, NAME, sql);
    link::frontend::bind_binary(msgs, NAME, NAME);
    link::frontend::execute(msgs, NAME, 0);
    link::frontend::close(msgs, b'P', NAME);
    link::frontend::close(msgs, b'S', NAME);
}

/// The replies that end what [`ask_session`] sends: ParseComplete,
/// BindComplete, CommandComplete and two CloseCompletes.
pub(super) const SESSION_REPLIES: usize = 5;

/// The fields of the row answering [`ask_session`] (every one text, the
/// first the session's statement_timeout).
pub(super) fn session_answers(replies: &[link::BackendMessage]) -> Option<Vec<Option<&[u8]>>> {
    let row = replies.iter().find(|m| m.tag == b'D')?;
    link::data_row_fields(&row.body)
}

/// The session's statement_timeout, from the replies to [`ask_session`];
/// `None` when it is off. Postgres's own limit applies to each query
/// thermocline sends it; this one bounds the federated statement as a
/// whole, lake reads and the executor included.
pub(super) fn statement_timeout(replies: &[link::BackendMessage]) -> Option<std::time::Duration> {
    let fields = session_answers(replies)?;
    let text = std::str::from_utf8((*fields.first()?)?).ok()?;
    // As Postgres shows it: "0" (off), "250ms", "5s", "2min", "1h", "1d".
    crate::config::parse_interval(text)
}

/// Completes at `deadline`; never without one.
pub(super) async fn expire(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The error of a statement stopped by its statement_timeout, as Postgres
/// words it.
pub(super) fn timed_out() -> Failure {
    Failure::Ours(ErrorFields::error(
        "57014",
        "canceling statement due to statement timeout",
    ))
}

/// The error of a statement stopped by a CancelRequest, as Postgres words it.
pub(super) fn cancelled() -> Failure {
    Failure::Ours(ErrorFields::error(
        "57014",
        "canceling statement due to user request",
    ))
}

/// The link back from the scans of a finished statement. Executor tasks
/// end when their stream is dropped, but an aborted task lets go of the
/// link only when it next runs: wait for them briefly.
pub(super) async fn take_back(shared: Arc<Mutex<PgLink>>) -> Option<PgLink> {
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
pub(super) async fn close_cursors(link: &mut PgLink) -> Option<()> {
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
pub(super) fn finish(link: &mut PgLink, out: &mut Out<'_>) {
    for m in link.deferred.drain(..) {
        if m.tag == b'S' && out.in_sequence {
            // Reported once, when the query string ends.
            out.statuses.push(m.body.to_vec());
            continue;
        }
        out.buf.extend(m.encode());
    }
    if !out.in_sequence {
        crate::protocol::put_message(&mut out.buf, b'Z', &[link.txn_status]);
    }
}

/// Sends the statement to Postgres as the client sent it and passes every
/// reply on.
pub(super) async fn relay_query(link: PgLink, out: &mut Out<'_>, sql: &str) -> Option<PgLink> {
    relay_query_without(link, out, sql, None).await
}

/// [`relay_query`], leaving out the notice with SQLSTATE `notice`, if any.
pub(super) async fn relay_query_without(
    mut link: PgLink,
    out: &mut Out<'_>,
    sql: &str,
    notice: Option<&[u8]>,
) -> Option<PgLink> {
    let mut q = Vec::new();
    link::frontend::query(&mut q, sql);
    link.send(&q).await.ok()?;
    loop {
        let m = link.recv().await.ok()?;
        if m.tag == b'Z' {
            link.txn_status = m.body.first().copied().unwrap_or(b'I');
            if !out.in_sequence {
                out.buf.extend(m.encode());
            }
            return Some(link);
        }
        if m.tag == b'S' && out.in_sequence {
            // Reported once, when the query string ends.
            out.statuses.push(m.body.to_vec());
            continue;
        }
        if m.tag == b'E' && out.in_sequence {
            out.error(m.encode());
            continue;
        }
        if m.tag == b'N' && notice.is_some() && crate::protocol::error_code(&m.body) == notice {
            continue;
        }
        out.buf.extend(m.encode());
        out.flush_if_full().await;
    }
}
