//! What cursors, `CREATE TABLE … AS` and `INSERT … SELECT` over tiered
//! tables share: the query's rows computed federated (outside a
//! transaction block, in a transaction of the statement's own), then kept
//! in Postgres, and the statement ended.

use super::link::{BackendMessage, FieldDescription, LinkError, PgLink, frontend};
use super::matview::rows::{KeptRows, copy_in, copy_in_extended, rows_of};
use super::{
    Federation, Out, SessionSettings, abort_transaction, finish, refuse, roll_back_own, undo,
};
use crate::frontend::cancel::SessionCancel;
use crate::limits::FederatedSlot;

/// A new temporary table for a statement's rows:
/// `pg_temp.thermocline_{kind}_N`.
pub(super) fn temp_table(kind: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("pg_temp.thermocline_{kind}_{n}")
}

/// The name of thermocline's own statements and portals for kept rows.
pub(super) const NAME: &str = "thermocline_kept";

/// A temporary table that keeps a query's rows for a statement, its
/// columns `c1`… of the query's types.
pub(super) struct Keep<'a> {
    /// SQL run first, in the same round trip.
    pub before: Option<&'a str>,
    pub table: &'a str,
    /// `" ON COMMIT DROP"`, or empty.
    pub on_commit: &'a str,
}

impl Keep<'_> {
    /// Makes the table from `query`'s columns (`WITH NO DATA`: planned,
    /// not run) and copies `rows` (DataRows of binary cells) into it.
    pub async fn simple(
        &self,
        link: &mut PgLink,
        query: &str,
        columns: usize,
        rows: KeptRows,
    ) -> Result<u64, LinkError> {
        let columns: Vec<String> = (1..=columns).map(|i| format!("c{i}")).collect();
        let before = self.before.map(|b| format!("{b}; ")).unwrap_or_default();
        let (table, on_commit) = (self.table, self.on_commit);
        link.simple(&format!(
            "{before}CREATE TEMPORARY TABLE {table} ({}){on_commit} AS SELECT * FROM ({query}) AS q WITH NO DATA",
            columns.join(", ")
        ))
        .await?;
        copy_in(link, table, rows).await
    }

    /// [`Self::simple`] within a client's extended-protocol exchange,
    /// where no Sync may be sent: the columns' types are those of
    /// `fields`, as Postgres writes them.
    pub async fn extended(
        &self,
        link: &mut PgLink,
        fields: &[FieldDescription],
        rows: KeptRows,
    ) -> Result<u64, LinkError> {
        let types = fields
            .iter()
            .map(|f| format!("pg_catalog.format_type({}, {})", f.type_oid, f.typmod))
            .collect::<Vec<_>>()
            .join(", ");
        let mut msgs = Vec::new();
        if let Some(before) = self.before {
            frontend::run_closed(&mut msgs, NAME, before);
        }
        frontend::run_closed(&mut msgs, NAME, &format!("SELECT {types}"));
        let replies = link
            .extended(&msgs, if self.before.is_some() { 10 } else { 5 })
            .await?;
        let written = replies
            .iter()
            .find(|m| m.tag == b'D')
            .and_then(|m| super::link::data_row_fields(&m.body))
            .unwrap_or_default();
        let columns = written
            .iter()
            .enumerate()
            .map(|(i, t)| {
                format!(
                    "c{} {}",
                    i + 1,
                    String::from_utf8_lossy(t.unwrap_or_default())
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let (table, on_commit) = (self.table, self.on_commit);
        let mut msgs = Vec::new();
        frontend::run_closed(
            &mut msgs,
            NAME,
            &format!("CREATE TEMPORARY TABLE {table} ({columns}){on_commit}"),
        );
        link.extended(&msgs, 5).await?;
        copy_in_extended(link, NAME, table, rows).await
    }
}

/// A kept table's columns `c1`… read back under the names of `fields`:
/// `c1 AS "id", …`.
pub(super) fn named_columns(fields: &[FieldDescription]) -> String {
    fields
        .iter()
        .enumerate()
        .map(|(i, f)| format!("c{} AS \"{}\"", i + 1, f.name.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A query's rows, computed for a statement that keeps them.
pub(super) struct Computed<'f> {
    pub link: PgLink,
    /// One of max_federated_statements, held until the statement ends.
    pub _slot: FederatedSlot<'f>,
    /// The statement began a transaction of its own.
    pub own: bool,
    pub fields: Vec<FieldDescription>,
    /// DataRow messages of binary cells.
    pub rows: KeptRows,
}

/// Computes `query`'s rows, in one of max_federated_statements; outside a
/// transaction block, in a REPEATABLE READ transaction begun for the
/// statement. `Err`: the statement is over (its error written, its
/// transaction undone), with the link for the session, or `None` when the
/// connection to Postgres was lost.
pub(super) async fn compute<'f>(
    link: PgLink,
    out: &mut Out<'_>,
    query: &str,
    federation: &'f Federation,
    settings: &SessionSettings,
    cancel: &SessionCancel,
) -> Result<Computed<'f>, Option<PgLink>> {
    let own = link.txn_status == b'I';
    compute_within(link, out, query, (federation, settings, cancel), own).await
}

/// [`compute`], for a statement that keeps more than one query's rows:
/// `own` tells whether the transaction is the statement's own (begun here
/// when the link is idle, or by the statement's first query).
pub(super) async fn compute_within<'f>(
    mut link: PgLink,
    out: &mut Out<'_>,
    query: &str,
    (federation, settings, cancel): (&'f Federation, &SessionSettings, &SessionCancel),
    own: bool,
) -> Result<Computed<'f>, Option<PgLink>> {
    let _slot = match federation.limits.federated_slot(cancel).await {
        Ok(slot) => slot,
        Err(e) => {
            // The statement's own transaction, begun by an earlier query.
            let begun = own && link.txn_status == b'T';
            roll_back_own(&mut link, begun).await.ok_or(None)?;
            return Err(refuse(link, out, e).await);
        }
    };
    if link.txn_status == b'I'
        && link
            .simple("BEGIN ISOLATION LEVEL REPEATABLE READ")
            .await
            .is_err()
    {
        return Err(None);
    }
    let (back, computed) = rows_of(link, query, federation, settings, cancel, own).await;
    let mut link = back.ok_or(None)?;
    match computed {
        Ok((fields, rows)) => Ok(Computed {
            link,
            _slot,
            own,
            fields,
            rows,
        }),
        Err(e) => {
            out.error(e.encode());
            undo(&mut link, own).await.ok_or(None)?;
            finish(&mut link, out);
            Err(Some(link))
        }
    }
}

/// Postgres's error for a statement that keeps rows, as Postgres would
/// give it to the statement itself (`verb`, as its errors name it): in a
/// read-only transaction, the temporary table that keeps them cannot be
/// made.
pub(super) fn named(verb: &str) -> impl Fn(&BackendMessage) -> Vec<u8> + '_ {
    move |e| match e.field(b'C').as_deref() {
        Some("25006") => crate::protocol::ErrorFields::error(
            "25006",
            format!("cannot execute {verb} in a read-only transaction"),
        )
        .encode(),
        _ => e.encode(),
    }
}

/// A CommandComplete message tagged `tag`.
pub(super) fn completed(tag: &str) -> Vec<u8> {
    let mut body = tag.as_bytes().to_vec();
    body.push(0);
    crate::protocol::message(b'C', &body)
}

/// Ends the statement: its replies (see [`completed`]) after its own
/// transaction is committed, or Postgres's error (as `error_of` writes it)
/// and the transaction undone. `None`: the connection to Postgres was lost.
pub(super) async fn end(
    mut link: PgLink,
    out: &mut Out<'_>,
    own: bool,
    done: Result<Vec<u8>, LinkError>,
    error_of: impl Fn(&BackendMessage) -> Vec<u8>,
) -> Option<PgLink> {
    match done {
        Ok(replies) => {
            if own && link.simple("COMMIT").await.is_err() {
                return None;
            }
            out.buf.extend(replies);
        }
        Err(LinkError::Postgres(e)) => {
            out.error(error_of(&e));
            if own {
                link.simple("ROLLBACK").await.ok()?;
            } else if link.txn_status != b'E' {
                abort_transaction(&mut link).await?;
            }
        }
        Err(_) => return None,
    }
    finish(&mut link, out);
    Some(link)
}
