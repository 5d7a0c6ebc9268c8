//! `CREATE TABLE … AS <query>` and `SELECT … INTO` over a tiered table
//! (a dbt table model, an extract): Postgres creates the table from the
//! query `WITH NO DATA`, so its columns, types, privileges and errors are
//! Postgres's, and the query's rows over the whole history, computed
//! federated, are copied into it, in the same transaction.

use datafusion::sql::sqlparser::ast::{SetExpr, Statement};

use super::link::{LinkError, PgLink, frontend};
use super::matview::rows::KeptRows;
use super::matview::rows::{copy_in, copy_in_extended};
use super::sqltext::{Piece, first_word, layout, name_end, top_level};
use super::{Federation, Out, SessionSettings, kept};
use crate::frontend::cancel::SessionCancel;

/// A `CREATE TABLE … AS query` or `SELECT … INTO` statement, as written.
#[derive(Debug)]
pub(crate) struct CreateAs {
    /// The statement `WITH NO DATA`.
    create: String,
    /// The table, as the statement names it.
    table: String,
    /// The query.
    pub query: String,
    /// The statement, as Postgres's errors name it.
    pub verb: &'static str,
    /// `CREATE TABLE IF NOT EXISTS … AS`.
    pub if_not_exists: bool,
}

/// Reads a `CREATE TABLE … AS query` or `SELECT … INTO` statement.
/// `None`: it is not one.
pub(crate) fn parse(sql: &str) -> Option<CreateAs> {
    let first = first_word(sql);
    if first.eq_ignore_ascii_case("select") || first.eq_ignore_ascii_case("with") {
        return select_into(sql);
    }
    if !first.eq_ignore_ascii_case("create") {
        return None;
    }
    let Ok(statements) = super::sqltext::parse(sql) else {
        return None;
    };
    let [Statement::CreateTable(t)] = statements.as_slice() else {
        return None;
    };
    if t.query.is_none() {
        return None;
    }
    let Some(layout) = layout(sql, "as") else {
        return None;
    };
    let query = sql[layout.to + 2..].trim();
    let query = query.strip_suffix(';').unwrap_or(query).trim_end();
    Some(CreateAs {
        create: format!("{} {query} WITH NO DATA", &sql[..layout.to + 2]),
        table: t.name.to_string(),
        query: query.to_string(),
        verb: "CREATE TABLE AS",
        if_not_exists: t.if_not_exists,
    })
}

/// `SELECT … INTO [TEMPORARY | UNLOGGED] [TABLE] name …`, read as the
/// `CREATE TABLE … AS` it is. Only a statement with INTO outside
/// parentheses is parsed.
fn select_into(sql: &str) -> Option<CreateAs> {
    let pieces = top_level(sql)?;
    let at = pieces
        .iter()
        .position(|p| matches!(p, Piece::Word(r) if sql[r.clone()].eq_ignore_ascii_case("into")))?;
    let statements = super::sqltext::parse(sql).ok()?;
    let [Statement::Query(q)] = statements.as_slice() else {
        return None;
    };
    let mut body = q.body.as_ref();
    let into = loop {
        match body {
            SetExpr::Select(s) => break s.into.as_ref()?,
            SetExpr::SetOperation { left, .. } => body = left,
            _ => return None,
        }
    };
    // Past INTO and the words before the name.
    let skipped = usize::from(into.temporary || into.unlogged) + usize::from(into.table);
    let (Piece::Word(into_word), Some(Piece::Word(last))) = (&pieces[at], pieces.get(at + skipped))
    else {
        return None;
    };
    let name_from = if skipped == 0 {
        into_word.end
    } else {
        last.end
    };
    let name_to = name_end(sql, name_from)?;
    let table = sql[name_from..name_to].trim().to_string();
    let query = format!("{} {}", &sql[..into_word.start], &sql[name_to..]);
    let query = query.trim();
    let query = query.strip_suffix(';').unwrap_or(query).trim_end();
    let kind = match (into.temporary, into.unlogged) {
        (true, _) => "TEMPORARY ",
        (false, true) => "UNLOGGED ",
        _ => "",
    };
    Some(CreateAs {
        create: format!("CREATE {kind}TABLE {table} AS {query} WITH NO DATA"),
        table,
        query: query.to_string(),
        verb: "SELECT INTO",
        if_not_exists: false,
    })
}

/// Creates the table and copies the query's rows into it. Returns the
/// link, or `None` when the connection to Postgres was lost.
pub(crate) async fn create(
    link: PgLink,
    out: &mut Out<'_>,
    c: CreateAs,
    federation: &Federation,
    settings: &SessionSettings,
    cancel: &SessionCancel,
) -> Option<PgLink> {
    // Outside a transaction block, the rows are read in one snapshot and
    // the table made in a transaction of the statement's own.
    let computed = match kept::compute(link, out, &c.query, federation, settings, cancel).await {
        Ok(c) => c,
        Err(link) => return link,
    };
    let mut link = computed.link;
    let made = async {
        // IF NOT EXISTS: a table already there is left as it is, with
        // Postgres's notice and tag.
        link.notices = c.if_not_exists.then(Vec::new);
        let created = link.simple(&c.create).await;
        let notices = link.notices.take().unwrap_or_default();
        let mut replies: Vec<u8> = notices.iter().flat_map(|n| n.encode()).collect();
        let created = created?;
        if notices
            .iter()
            .any(|n| n.field(b'C').as_deref() == Some("42P07"))
        {
            if let Some(tag) = created.iter().find(|m| m.tag == b'C') {
                replies.extend(tag.encode());
            }
            return Ok(replies);
        }
        let n = copy_in(&mut link, &c.table, computed.rows).await?;
        replies.extend(kept::completed(&format!("SELECT {n}")));
        Ok(replies)
    }
    .await;
    kept::end(link, out, computed.own, made, kept::named(c.verb)).await
}

/// Creates the table and copies `rows` (DataRows of binary cells) into it
/// within a client's extended-protocol exchange, where no Sync may be
/// sent: the statement is parsed with the client's parameter types
/// (`types`, as a Parse holds them) and bound with the client's Bind.
/// Returns its CommandComplete.
pub(crate) async fn create_extended(
    link: &mut PgLink,
    c: &CreateAs,
    rows: KeptRows,
    types: &[u8],
    bind: &[u8],
) -> Result<Vec<u8>, LinkError> {
    use kept::NAME;
    let mut msgs = Vec::new();
    frontend::parse_typed(&mut msgs, NAME, &c.create, types);
    frontend::rebind(&mut msgs, NAME, NAME, bind);
    frontend::execute(&mut msgs, NAME, 0);
    frontend::close_both(&mut msgs, NAME);
    link.extended(&msgs, 5).await?;
    let n = copy_in_extended(link, NAME, &c.table, rows).await?;
    Ok(kept::completed(&format!("SELECT {n}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_table_and_its_query() {
        let c = parse(
            "CREATE TEMP TABLE \"Big\" AS SELECT id AS \"as\" FROM orders WHERE note = 'as';",
        )
        .unwrap();
        assert_eq!(
            c.create,
            "CREATE TEMP TABLE \"Big\" AS SELECT id AS \"as\" FROM orders WHERE note = 'as' WITH NO DATA"
        );
        assert_eq!(c.table, "\"Big\"");
        assert_eq!(c.query, "SELECT id AS \"as\" FROM orders WHERE note = 'as'");
        assert!(parse("CREATE TABLE t (id int)").is_none());
        assert!(parse("SELECT 1").is_none());
        let c = parse("CREATE TABLE IF NOT EXISTS t AS SELECT 1").unwrap();
        assert!(c.if_not_exists);
        assert_eq!(
            c.create,
            "CREATE TABLE IF NOT EXISTS t AS SELECT 1 WITH NO DATA"
        );
    }

    #[test]
    fn reads_select_into_as_create_table_as() {
        let c = parse(
            "SELECT id, 'into' AS t INTO TEMP TABLE s.\"In to\" FROM orders o WHERE id IN (SELECT 1) UNION SELECT 2, 'x';",
        )
        .unwrap();
        assert_eq!(c.table, "s.\"In to\"");
        assert_eq!(
            c.query,
            "SELECT id, 'into' AS t   FROM orders o WHERE id IN (SELECT 1) UNION SELECT 2, 'x'"
        );
        assert_eq!(
            c.create,
            format!(
                "CREATE TEMPORARY TABLE s.\"In to\" AS {} WITH NO DATA",
                c.query
            )
        );
        let c = parse("WITH w AS (SELECT 1 AS a) SELECT a INTO UNLOGGED t FROM w").unwrap();
        assert_eq!(
            c.create,
            "CREATE UNLOGGED TABLE t AS WITH w AS (SELECT 1 AS a) SELECT a   FROM w WITH NO DATA"
        );
        let c = parse("select * into t2 from orders").unwrap();
        assert_eq!(
            (c.table.as_str(), c.query.as_str()),
            ("t2", "select *   from orders")
        );
        assert!(parse("WITH w AS (SELECT 1) INSERT INTO t SELECT * FROM w").is_none());
        assert!(parse("SELECT x FROM (SELECT 1 INTO y) q").is_none());
    }
}
