//! `DECLARE … CURSOR FOR <query>` over a tiered table (psql's
//! `FETCH_COUNT`, psycopg's named cursors, ODBC's declare/fetch): the
//! query's rows over the whole history, computed federated and kept in a
//! temporary table of the session, over which Postgres declares the
//! cursor as it was written. FETCH, MOVE and CLOSE are then Postgres's own,
//! and so are the cursor's lifetime (a cursor without HOLD ends with its
//! transaction, and its table is dropped at commit) and `pg_cursors`.

use datafusion::sql::sqlparser::ast::{DeclareType, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::link::{BackendMessage, FieldDescription, LinkError, PgLink, frontend};
use super::matview::rows::KeptRows;
use super::{Federation, Out, SessionSettings, kept, refuse};
use crate::frontend::cancel::SessionCancel;
use crate::protocol::ErrorFields;

/// A `DECLARE … CURSOR … FOR query` statement, as written.
#[derive(Debug)]
pub(crate) struct Declare<'a> {
    /// The statement up to its query: `DECLARE c NO SCROLL CURSOR FOR`.
    head: &'a str,
    /// The query.
    pub query: &'a str,
    /// WITH HOLD: the cursor outlives its transaction.
    hold: bool,
}

/// Reads a `DECLARE … CURSOR … FOR query` statement. `None`: it is not one.
pub(crate) fn parse(sql: &str) -> Option<Declare<'_>> {
    if !super::sqltext::first_word(sql).eq_ignore_ascii_case("declare") {
        return None;
    }
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let [Statement::Declare { stmts }] = statements.as_slice() else {
        return None;
    };
    let [d] = stmts.as_slice() else {
        return None;
    };
    if d.declare_type != Some(DeclareType::Cursor) || d.for_query.is_none() {
        return None;
    }
    if d.names.len() != 1 {
        return None;
    }
    let at = super::sqltext::layout(sql, "for")?.to;
    let query = sql[at + 3..].trim();
    Some(Declare {
        head: &sql[..at + 3],
        query: query.strip_suffix(';').unwrap_or(query).trim_end(),
        hold: d.hold == Some(true),
    })
}

/// Drops the tables of cursors WITH HOLD that have been closed (a cursor
/// without HOLD takes its table with it at commit): a table is in use
/// while a cursor's statement names it.
const DROP_CLOSED: &str = "DO $thermocline$DECLARE r record; BEGIN \
    FOR r IN SELECT c.relname FROM pg_catalog.pg_class c \
      WHERE c.relnamespace = pg_catalog.pg_my_temp_schema() \
        AND c.relname LIKE 'thermocline\\_cursor\\_%' \
        AND NOT EXISTS (SELECT FROM pg_catalog.pg_cursors p \
                        WHERE pg_catalog.strpos(p.statement, c.relname) > 0) \
    LOOP EXECUTE pg_catalog.format('DROP TABLE pg_temp.%I', r.relname); END LOOP; \
    END$thermocline$";

/// Declares the cursor over its rows computed federated. Returns the link,
/// or `None` when the connection to Postgres was lost.
pub(crate) async fn declare(
    link: PgLink,
    out: &mut Out<'_>,
    d: Declare<'_>,
    federation: &Federation,
    settings: &SessionSettings,
    cancel: &SessionCancel,
) -> Option<PgLink> {
    if !d.hold && link.txn_status == b'I' {
        return refuse(
            link,
            out,
            ErrorFields::error(
                "25P01",
                "DECLARE CURSOR can only be used in transaction blocks",
            ),
        )
        .await;
    }
    // A cursor WITH HOLD declared outside a transaction block: its rows
    // are read in one snapshot, and its table made, in a transaction of
    // its own.
    let computed = match kept::compute(link, out, d.query, federation, settings, cancel).await {
        Ok(c) => c,
        Err(link) => return link,
    };
    let (mut link, fields) = (computed.link, computed.fields);
    // The table takes the query's columns and types from Postgres
    // (`WITH NO DATA`: planned, not run), under names of its own; the
    // cursor reads them back under the query's names.
    let table = kept::temp_table("cursor");
    let on_commit = if d.hold { "" } else { " ON COMMIT DROP" };
    let declared = async {
        let keep = kept::Keep {
            before: Some(DROP_CLOSED),
            table: &table,
            on_commit,
        };
        keep.simple(&mut link, d.query, fields.len(), computed.rows)
            .await?;
        link.simple(&select_over(&d, &fields, &table)).await
    }
    .await
    .map(|_| kept::completed("DECLARE CURSOR"));
    kept::end(link, out, computed.own, declared, error_of).await
}

/// Postgres's error for a DECLARE: Postgres declares a cursor in a
/// read-only transaction, but the table that keeps its rows cannot be made
/// there.
pub(super) fn error_of(e: &BackendMessage) -> Vec<u8> {
    match crate::protocol::error_code(&e.encode()) {
        Some(b"25006") => ErrorFields::error(
            "0A000",
            "a cursor over the history of a tiered table cannot be declared in a \
             read-only transaction yet",
        )
        .encode(),
        _ => e.encode(),
    }
}

/// Declares the cursor over `rows` (DataRows of binary cells) within a
/// client's extended-protocol exchange, where no Sync may be sent.
pub(crate) async fn declare_extended(
    link: &mut PgLink,
    d: &Declare<'_>,
    fields: &[FieldDescription],
    rows: KeptRows,
) -> Result<(), LinkError> {
    let table = kept::temp_table("cursor");
    let keep = kept::Keep {
        before: Some(DROP_CLOSED),
        table: &table,
        on_commit: if d.hold { "" } else { " ON COMMIT DROP" },
    };
    keep.extended(link, fields, rows).await?;
    let mut msgs = Vec::new();
    frontend::run_closed(&mut msgs, kept::NAME, &select_over(d, fields, &table));
    link.extended(&msgs, 5).await?;
    Ok(())
}

/// The DECLARE as written, over the table's columns under the query's
/// names.
fn select_over(d: &Declare<'_>, fields: &[FieldDescription], table: &str) -> String {
    format!(
        "{} SELECT {} FROM {table}",
        d.head,
        kept::named_columns(fields)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_cursor_and_its_query() {
        let d = parse(
            "DECLARE \"Big\" BINARY NO SCROLL CURSOR WITH HOLD FOR SELECT * FROM orders WHERE note = 'for';",
        )
        .unwrap();
        assert_eq!(
            d.head,
            "DECLARE \"Big\" BINARY NO SCROLL CURSOR WITH HOLD FOR"
        );
        assert_eq!(d.query, "SELECT * FROM orders WHERE note = 'for'");
        assert!(d.hold);
        let d = parse("declare _psql_cursor no scroll cursor for\nselect 1").unwrap();
        assert_eq!(
            (d.head, d.query, d.hold),
            (
                "declare _psql_cursor no scroll cursor for",
                "select 1",
                false
            )
        );
        let d = parse("DECLARE c CURSOR FOR SELECT id FROM orders WHERE customer_id > $1").unwrap();
        assert_eq!(d.query, "SELECT id FROM orders WHERE customer_id > $1");
        assert!(parse("SELECT 1").is_none());
        assert_ne!(kept::temp_table("cursor"), kept::temp_table("cursor"));
    }
}
