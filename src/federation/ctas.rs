//! `CREATE TABLE … AS <query>` over a tiered table (a dbt table model, an
//! extract): Postgres creates the table from the query `WITH NO DATA`, so
//! its columns, types, privileges and errors are Postgres's, and the
//! query's rows over the whole history, computed federated, are copied
//! into it, in the same transaction.

use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::link::PgLink;
use super::matview::rows::copy_in;
use super::{Federation, Out, SessionSettings, kept, refuse};
use crate::frontend::cancel::SessionCancel;
use crate::protocol::ErrorFields;

/// A `CREATE TABLE … AS query` statement, as written.
#[derive(Debug)]
pub(crate) struct CreateAs<'a> {
    /// The statement `WITH NO DATA`.
    create: String,
    /// The table, as the statement names it.
    table: String,
    /// The query.
    query: &'a str,
}

/// Reads a `CREATE TABLE … AS query` statement. `Ok(None)`: it is not one.
pub(crate) fn parse(sql: &str) -> Result<Option<CreateAs<'_>>, ErrorFields> {
    if !super::copy::first_word(sql).eq_ignore_ascii_case("create") {
        return Ok(None);
    }
    let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return Ok(None);
    };
    let [Statement::CreateTable(t)] = statements.as_slice() else {
        return Ok(None);
    };
    if t.query.is_none() {
        return Ok(None);
    }
    if t.if_not_exists {
        return Err(ErrorFields::error(
            "0A000",
            "CREATE TABLE IF NOT EXISTS … AS over the history of a tiered table is not supported \
             yet: write it without IF NOT EXISTS",
        ));
    }
    let Some(layout) = super::copy::layout(sql, "as") else {
        return Ok(None);
    };
    let query = sql[layout.to + 2..].trim();
    let query = query.strip_suffix(';').unwrap_or(query).trim_end();
    Ok(Some(CreateAs {
        create: format!("{} {query} WITH NO DATA", &sql[..layout.to + 2]),
        table: t.name.to_string(),
        query,
    }))
}

/// Creates the table and copies the query's rows into it. Returns the
/// link, or `None` when the connection to Postgres was lost.
pub(crate) async fn create(
    link: PgLink,
    out: &mut Out<'_>,
    c: CreateAs<'_>,
    federation: &Federation,
    settings: &SessionSettings,
    cancel: &SessionCancel,
) -> Option<PgLink> {
    let _slot = match federation.limits.federated_slot(cancel).await {
        Ok(slot) => slot,
        Err(e) => return refuse(link, out, e).await,
    };
    // Outside a transaction block, the rows are read in one snapshot and
    // the table made in a transaction of the statement's own.
    let computed = match kept::compute(link, out, c.query, federation, settings, cancel).await {
        Ok(c) => c,
        Err(link) => return link,
    };
    let mut link = computed.link;
    let made = async {
        link.simple(&c.create).await?;
        copy_in(&mut link, &c.table, &computed.rows).await
    }
    .await
    .map(|n| format!("SELECT {n}"));
    kept::end(link, out, computed.own, made, |e| e.encode()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_table_and_its_query() {
        let c = parse(
            "CREATE TEMP TABLE \"Big\" AS SELECT id AS \"as\" FROM orders WHERE note = 'as';",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            c.create,
            "CREATE TEMP TABLE \"Big\" AS SELECT id AS \"as\" FROM orders WHERE note = 'as' WITH NO DATA"
        );
        assert_eq!(c.table, "\"Big\"");
        assert_eq!(c.query, "SELECT id AS \"as\" FROM orders WHERE note = 'as'");
        assert!(parse("CREATE TABLE t (id int)").unwrap().is_none());
        assert!(parse("SELECT 1").unwrap().is_none());
        assert_eq!(
            parse("CREATE TABLE IF NOT EXISTS t AS SELECT 1")
                .unwrap_err()
                .code,
            "0A000"
        );
    }
}
