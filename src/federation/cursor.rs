//! `DECLARE … CURSOR FOR <query>` over a tiered table (psql's
//! `FETCH_COUNT`, psycopg's named cursors, ODBC's declare/fetch): the
//! query's rows over the whole history, computed federated and kept in a
//! temporary table of the session, over which Postgres declares the
//! cursor as it was written. FETCH, MOVE and CLOSE are then Postgres's own,
//! and so are the cursor's lifetime (a cursor without HOLD ends with its
//! transaction, and its table is dropped at commit) and `pg_cursors`.
//!
//! A read-only transaction (`default_transaction_read_only`, a standby)
//! can make no table: there the rows go with the cursor's query itself,
//! each column as an array parameter that the query unnests, up to
//! [`READ_ONLY_ROWS`].

use datafusion::sql::sqlparser::ast::{DeclareType, Statement};

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
    let statements = super::sqltext::parse(sql).ok()?;
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
        if let Some(types) = read_only_types(&mut link, &fields, false).await? {
            return over_arrays(&mut link, &d, &fields, &types, computed.rows, false).await;
        }
        let keep = kept::Keep {
            before: Some(DROP_CLOSED),
            table: &table,
            on_commit,
        };
        keep.simple(&mut link, d.query, fields.len(), computed.rows)
            .await?;
        link.simple(&select_over(&d, &fields, &table))
            .await
            .map(drop)
    }
    .await
    .map(|()| kept::completed("DECLARE CURSOR"));
    kept::end(link, out, computed.own, declared, BackendMessage::encode).await
}

/// Most bytes of rows a cursor holds in a read-only transaction: they go
/// to Postgres in one message, built in thermocline's memory.
pub(super) const READ_ONLY_ROWS: usize = 64 << 20;

/// In a read-only transaction, the SQL type of each of `fields` and its
/// array type; `None` in a transaction that may write. Within a client's
/// exchange (`extended`) no Sync is sent.
async fn read_only_types(
    link: &mut PgLink,
    fields: &[FieldDescription],
    extended: bool,
) -> Result<Option<Vec<(String, u32)>>, LinkError> {
    let mut sql = String::from("SELECT pg_catalog.current_setting('transaction_read_only')");
    for f in fields {
        sql.push_str(&format!(
            ", pg_catalog.format_type({oid}, {typmod}), \
             (SELECT t.typarray FROM pg_catalog.pg_type t WHERE t.oid = {oid})::pg_catalog.text",
            oid = f.type_oid,
            typmod = f.typmod
        ));
    }
    let row: Vec<Option<String>> = if extended {
        let mut msgs = Vec::new();
        frontend::run_closed(&mut msgs, kept::NAME, &sql);
        let replies = link.extended(&msgs, 5).await?;
        let text = |f: Option<&[u8]>| f.map(|b| String::from_utf8_lossy(b).into_owned());
        replies
            .iter()
            .find(|m| m.tag == b'D')
            .and_then(|m| super::link::data_row_fields(&m.body))
            .map(|fields| fields.into_iter().map(text).collect())
            .unwrap_or_default()
    } else {
        link.rows(&sql)
            .await?
            .into_iter()
            .next()
            .unwrap_or_default()
    };
    if row.first().cloned().flatten().as_deref() != Some("on") {
        return Ok(None);
    }
    Ok(Some(
        row[1..]
            .chunks(2)
            .map(|c| {
                let name = c.first().cloned().flatten().unwrap_or_default();
                let array = c.get(1).cloned().flatten().and_then(|a| a.parse().ok());
                (name, array.unwrap_or(0))
            })
            .collect(),
    ))
}

/// Declares the cursor over `rows` sent with its query, each column as an
/// array (of `types`: each column's SQL type and array type) that the
/// query unnests.
async fn over_arrays(
    link: &mut PgLink,
    d: &Declare<'_>,
    fields: &[FieldDescription],
    types: &[(String, u32)],
    rows: KeptRows,
    extended: bool,
) -> Result<(), LinkError> {
    if let Some((name, _)) = types.iter().find(|(_, array)| *array == 0) {
        let message = format!(
            "a cursor over the history of a tiered table cannot hold a column of type {name} \
             in a read-only transaction yet"
        );
        return Err(refused(link, extended, "0A000", message).await);
    }
    let elements: Vec<u32> = fields.iter().map(|f| f.type_oid).collect();
    let Some((arrays, n)) =
        super::matview::rows::column_arrays(rows, &elements, READ_ONLY_ROWS).await?
    else {
        let message = format!(
            "a cursor over the history of a tiered table holds at most {} MB of rows in a \
             read-only transaction, and this query's rows are more; declare it in a \
             transaction that may write, or narrow the query",
            READ_ONLY_ROWS >> 20
        );
        return Err(refused(link, extended, "54000", message).await);
    };
    let mut param_types = (types.len() as i16).to_be_bytes().to_vec();
    for (_, array) in types {
        param_types.extend_from_slice(&array.to_be_bytes());
    }
    let mut msgs = Vec::new();
    // Left open by an earlier statement of the session that failed after
    // its Parse (Postgres then skips the Close).
    frontend::close_both(&mut msgs, kept::NAME);
    frontend::parse_typed(
        &mut msgs,
        kept::NAME,
        &unnesting(d, fields, types, n),
        &param_types,
    );
    frontend::bind_params(&mut msgs, kept::NAME, kept::NAME, &arrays);
    drop(arrays);
    frontend::execute(&mut msgs, kept::NAME, 0);
    frontend::close_both(&mut msgs, kept::NAME);
    match extended {
        true => link.extended(&msgs, 7).await.map(drop),
        false => link.extended_synced(msgs).await.map(drop),
    }
}

/// The DECLARE refused by thermocline, as Postgres's failure: within a
/// client's exchange (`extended`), Postgres is made to fail too, so that it
/// skips to the client's Sync and the transaction fails as the client is
/// told.
async fn refused(
    link: &mut PgLink,
    extended: bool,
    code: &'static str,
    message: String,
) -> LinkError {
    if extended && let Err(e) = super::extended::fail_exchange(link).await {
        return e;
    }
    let e = ErrorFields::error(code, message).encode();
    LinkError::Postgres(BackendMessage {
        tag: b'E',
        body: bytes::Bytes::copy_from_slice(&e[5..]),
    })
}

/// The DECLARE as written, over its `n` rows given as one array parameter
/// per column, read back in the columns' types under the query's names.
fn unnesting(
    d: &Declare<'_>,
    fields: &[FieldDescription],
    types: &[(String, u32)],
    n: i32,
) -> String {
    if fields.is_empty() {
        return format!("{} SELECT FROM pg_catalog.generate_series(1, {n})", d.head);
    }
    let columns = fields
        .iter()
        .zip(types)
        .enumerate()
        .map(|(i, (f, (ty, _)))| {
            format!("u.c{}::{ty} AS \"{}\"", i + 1, f.name.replace('"', "\"\""))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let params = (1..=fields.len())
        .map(|i| format!("pg_catalog.unnest(${i})"))
        .collect::<Vec<_>>()
        .join(", ");
    let names = (1..=fields.len())
        .map(|i| format!("c{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{} SELECT {columns} FROM ROWS FROM ({params}) AS u({names})",
        d.head
    )
}

/// Declares the cursor over `rows` (DataRows of binary cells) within a
/// client's extended-protocol exchange, where no Sync may be sent.
pub(crate) async fn declare_extended(
    link: &mut PgLink,
    d: &Declare<'_>,
    fields: &[FieldDescription],
    rows: KeptRows,
) -> Result<(), LinkError> {
    if let Some(types) = read_only_types(link, fields, true).await? {
        return over_arrays(link, d, fields, &types, rows, true).await;
    }
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
