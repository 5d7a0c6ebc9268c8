//! Decides, for every Query and Parse message, where the statement goes.
//!
//! Every statement the session forwards passes through [`Router::route`]
//! first. A statement that cannot name a tiered table (a substring check on
//! its text) is relayed without being parsed, so sessions of databases with
//! no tiered tables, and statements that touch none, pay nothing more.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, CopySource, Expr, Ident, Insert, ObjectName, ObjectNamePart, SetExpr,
    Statement, TableFactor, TableObject, visit_relations,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Where a statement is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Forward the message to the session's Postgres as it is.
    Relay,
    /// A read that needs the cold tier: thermocline answers it.
    Federate,
}

/// A tiered table as the router matches it.
#[derive(Debug, Clone)]
pub(crate) struct TieredName {
    pub schema: String,
    pub table: String,
    /// The time column and hot window, for the fast path: a read bounded
    /// to the hot window needs no cold rows.
    pub time_column: String,
    pub hot_window: std::time::Duration,
}

/// The routing rules of one session: the tiered tables of its database.
#[derive(Debug, Default, Clone)]
pub(crate) struct Router {
    tiered: Arc<Vec<TieredName>>,
    /// The table names, lower-cased, for the substring pre-check.
    needles: Arc<Vec<String>>,
}

impl Router {
    pub(crate) fn new(tiered: Vec<TieredName>) -> Self {
        let needles = tiered.iter().map(|t| t.table.to_lowercase()).collect();
        Self {
            tiered: Arc::new(tiered),
            needles: Arc::new(needles),
        }
    }

    /// Routes one complete frontend message (`Q` or `P`, tag and length included).
    #[inline]
    pub(crate) fn route(&self, message: &[u8]) -> Route {
        if self.needles.is_empty() {
            return Route::Relay;
        }
        self.route_slow(message)
    }

    fn route_slow(&self, message: &[u8]) -> Route {
        let sql = match message.first() {
            Some(&b'Q') => sql_of(message),
            Some(&b'P') => parse_sql_of(message),
            _ => None,
        };
        match sql {
            Some(sql) => self.route_sql(message[0], sql),
            None => Route::Relay,
        }
    }

    /// The route of `sql`, sent in a message tagged `kind` (`Q` or `P`).
    fn route_sql(&self, kind: u8, sql: &str) -> Route {
        // Materialized views are looked at whatever they name: a refresh
        // names the view only.
        if crate::federation::matview::may_be_command(sql)
            && (kind == b'Q'
                || crate::federation::matview::is_create(sql) && self.may_name_tiered(sql))
        {
            // Prepared, one over a tiered table is refused at its Execute.
            return Route::Federate;
        }
        if !self.may_name_tiered(sql) {
            return Route::Relay;
        }
        // A query string of several statements: each on its own (the
        // parser would read what follows `COPY … FROM STDIN` as its data).
        if kind == b'Q'
            && sql.trim_end().trim_end_matches(';').contains(';')
            && let Some(each) = crate::federation::statements(sql)
            && each.len() > 1
        {
            let federates = each
                .iter()
                .any(|s| matches!(self.route_query(s), Route::Federate));
            return if federates {
                Route::Federate
            } else {
                Route::Relay
            };
        }
        // Parsed once. A statement the parser cannot read is relayed,
        // unless it is a read: relayed, Postgres would answer it from the
        // hot rows alone. Federated, Postgres still reports what it
        // rejects, and what it accepts but cannot be planned is refused.
        let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
            return if reads_only(sql) {
                Route::Federate
            } else {
                Route::Relay
            };
        };
        // EXPLAIN is answered for simple queries only; prepared, it is
        // Postgres's plan of the hot tier.
        if kind == b'P' && matches!(statements.as_slice(), [Statement::Explain { .. }]) {
            return Route::Relay;
        }
        if self.reads_tiered(&statements) && !self.inside_hot_window(&statements) {
            Route::Federate
        } else {
            Route::Relay
        }
    }

    /// The route of one statement, as if sent alone in a simple Query.
    pub(crate) fn route_query(&self, sql: &str) -> Route {
        if self.needles.is_empty() {
            return Route::Relay;
        }
        self.route_sql(b'Q', sql)
    }

    /// True when this session has tiered tables: only then are extended-
    /// protocol messages looked at.
    pub(crate) fn active(&self) -> bool {
        !self.needles.is_empty()
    }

    fn may_name_tiered(&self, sql: &str) -> bool {
        let lower = sql.to_lowercase();
        self.needles.iter().any(|n| lower.contains(n.as_str()))
    }

    /// True when the statements read a tiered table: reads, and the
    /// statements that keep what a read returns (COPY TO, CREATE TABLE …
    /// AS, SELECT … INTO, INSERT … query into a table that is not tiered,
    /// DECLARE), and UPDATE, DELETE and MERGE of a table that is not
    /// tiered. A locking `SELECT … FOR UPDATE/SHARE` needs Postgres's row
    /// locks and stays with Postgres; so do writes to a tiered table (they
    /// see its hot rows only). EXPLAIN of a read is answered with the
    /// federated plan.
    fn reads_tiered(&self, statements: &[Statement]) -> bool {
        let mut found = false;
        for statement in statements {
            let query = match statement {
                // A CTE that writes to a tiered table makes the statement a
                // write to it.
                Statement::Query(query) if self.ctes_write_tiered(query) => return false,
                // A statement that writes after its CTEs reads as the
                // write does.
                Statement::Query(query) => match query.body.as_ref() {
                    SetExpr::Insert(Statement::Insert(insert)) if !self.into_tiered(insert) => {
                        query
                    }
                    SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
                        if crate::federation::ctes_write(query) =>
                    {
                        continue;
                    }
                    SetExpr::Update(w) | SetExpr::Delete(w) | SetExpr::Merge(w) => {
                        found |= self.write_reads_tiered(statement, w);
                        continue;
                    }
                    SetExpr::Insert(_) => continue,
                    _ => query,
                },
                // `COPY … TO` reads; `COPY … FROM` writes.
                Statement::Copy {
                    source, to: true, ..
                } => match source {
                    CopySource::Query(query) => query,
                    CopySource::Table { table_name, .. } => {
                        found |= self.match_name(table_name).is_some();
                        continue;
                    }
                },
                // So does CREATE TABLE … AS.
                Statement::CreateTable(t) => match &t.query {
                    Some(query) => query,
                    None => continue,
                },
                // So does INSERT … query, unless it writes to a tiered table.
                Statement::Insert(insert) => match &insert.source {
                    Some(query) if !self.into_tiered(insert) => query,
                    _ => continue,
                },
                // A cursor reads its query.
                Statement::Declare { stmts } => match stmts.as_slice() {
                    [d] => match &d.for_query {
                        Some(query) => query,
                        None => continue,
                    },
                    _ => continue,
                },
                // So do UPDATE … FROM, DELETE … USING and MERGE … USING
                // into a table that is not tiered.
                Statement::Update(_) | Statement::Delete(_) | Statement::Merge(_) => {
                    found |= self.write_reads_tiered(statement, statement);
                    continue;
                }
                Statement::Explain {
                    statement: inner,
                    analyze,
                    options,
                    ..
                } => match inner.as_ref() {
                    Statement::Query(query) => query,
                    // EXPLAIN ANALYZE runs what it explains: a write that
                    // reads a tiered table is not run over its hot rows
                    // (the federation refuses it).
                    _ if *analyze || options.as_deref().is_some_and(analyzes) => {
                        found |= self.reads_tiered(std::slice::from_ref(inner));
                        continue;
                    }
                    _ => continue,
                },
                _ => continue,
            };
            if !query.locks.is_empty() {
                return false;
            }
            let _ = visit_relations(statement, |name: &ObjectName| {
                found |= self.match_name(name).is_some();
                ControlFlow::<()>::Continue(())
            });
        }
        found
    }

    /// True when `write` (an UPDATE, DELETE or MERGE: `statement`, or
    /// within it after its CTEs) writes to a table that is not tiered,
    /// and the statement reads a tiered table.
    fn write_reads_tiered(&self, statement: &Statement, write: &Statement) -> bool {
        if crate::federation::written_table(write).is_none_or(|t| self.match_name(t).is_some()) {
            return false;
        }
        let mut found = false;
        let _ = visit_relations(statement, |name: &ObjectName| {
            found |= self.match_name(name).is_some();
            ControlFlow::<()>::Continue(())
        });
        found
    }

    /// True when a CTE of `query` writes to a tiered table (or to a table
    /// the router cannot name).
    fn ctes_write_tiered(&self, query: &datafusion::sql::sqlparser::ast::Query) -> bool {
        query.with.as_ref().is_some_and(|with| {
            with.cte_tables.iter().any(|c| match c.query.body.as_ref() {
                SetExpr::Insert(Statement::Insert(insert)) => self.into_tiered(insert),
                SetExpr::Update(w) | SetExpr::Delete(w) | SetExpr::Merge(w) => {
                    crate::federation::written_table(w).is_none_or(|t| self.match_name(t).is_some())
                }
                _ => false,
            })
        })
    }

    /// True when an INSERT writes to a tiered table (or to a table the
    /// router cannot name).
    fn into_tiered(&self, insert: &Insert) -> bool {
        match &insert.table {
            TableObject::TableName(name) => self.match_name(name).is_some(),
            _ => true,
        }
    }

    /// The fast path: a single-table read of a tiered table whose WHERE
    /// requires `time >= now() - interval '…'` (or `>`, or BETWEEN) with an
    /// interval shorter than the hot window. Every row it can return is
    /// still in Postgres (the mover only takes rows older than
    /// `now() - hot_window`), so it is relayed untouched.
    fn inside_hot_window(&self, statements: &[Statement]) -> bool {
        let [statement @ Statement::Query(query)] = statements else {
            return false;
        };
        if query.with.is_some() {
            return false;
        }
        let SetExpr::Select(select) = query.body.as_ref() else {
            return false;
        };
        let [from] = select.from.as_slice() else {
            return false;
        };
        if !from.joins.is_empty() {
            return false;
        }
        let TableFactor::Table { name, alias, .. } = &from.relation else {
            return false;
        };
        let Some(table) = self.match_name(name) else {
            return false;
        };
        // The tiered table must be the statement's only reference to a
        // tiered table (none in subqueries).
        let mut refs = 0;
        let _ = visit_relations(statement, |n: &ObjectName| {
            if self.match_name(n).is_some() {
                refs += 1;
            }
            ControlFlow::<()>::Continue(())
        });
        if refs != 1 {
            return false;
        }
        let qualifier = alias
            .as_ref()
            .map(|a| fold(&a.name))
            .unwrap_or_else(|| table.table.clone());
        let is_time = |e: &Expr| match e {
            Expr::Identifier(i) => fold(i) == table.time_column,
            Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [q, c] => fold(q) == qualifier && fold(c) == table.time_column,
                _ => false,
            },
            _ => false,
        };
        let recent = |e: &Expr| recent_bound(e).is_some_and(|d| d < table.hot_window);
        let mut conjuncts = Vec::new();
        if let Some(w) = &select.selection {
            split_and(w, &mut conjuncts);
        }
        conjuncts.iter().any(|c| match c {
            Expr::BinaryOp { left, op, right } => match op {
                BinaryOperator::Gt | BinaryOperator::GtEq => is_time(left) && recent(right),
                BinaryOperator::Lt | BinaryOperator::LtEq => recent(left) && is_time(right),
                _ => false,
            },
            Expr::Between {
                expr,
                negated: false,
                low,
                ..
            } => is_time(expr) && recent(low),
            _ => false,
        })
    }

    /// The tiered table a name in a statement may refer to. An unqualified
    /// name matches a tiered table of any schema; the executor resolves it
    /// against the session's `search_path` and relays it if it is not one.
    fn match_name(&self, name: &ObjectName) -> Option<&TieredName> {
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| match p {
                ObjectNamePart::Identifier(i) => fold(i),
                other => other.to_string(),
            })
            .collect();
        let (schema, table) = match parts.as_slice() {
            [table] => (None, table),
            [schema, table] => (Some(schema), table),
            [_db, schema, table] => (Some(schema), table),
            _ => return None,
        };
        self.tiered
            .iter()
            .find(|t| &t.table == table && schema.is_none_or(|s| *s == t.schema))
    }
}

/// Whether EXPLAIN's options (`(ANALYZE)`, `(ANALYZE true)`) run the
/// statement.
fn analyzes(options: &[datafusion::sql::sqlparser::ast::UtilityOption]) -> bool {
    options.iter().any(|o| {
        o.name.value.eq_ignore_ascii_case("analyze")
            && o.arg.as_ref().is_none_or(|a| {
                !matches!(
                    a.to_string().to_ascii_lowercase().trim_matches('\''),
                    "false" | "off" | "0" | "no"
                )
            })
    })
}

/// The top-level AND terms of a condition.
pub(crate) fn split_and<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            split_and(left, out);
            split_and(right, out);
        }
        Expr::Nested(inner) => split_and(inner, out),
        other => out.push(other),
    }
}

/// For `now() - interval '7 days'` (also `current_timestamp`, and
/// `'7 days'::interval`), how far back it reaches.
fn recent_bound(e: &Expr) -> Option<std::time::Duration> {
    let Expr::BinaryOp {
        left,
        op: BinaryOperator::Minus,
        right,
    } = e
    else {
        return None;
    };
    let now = left.to_string().to_ascii_lowercase();
    if !matches!(
        now.as_str(),
        "now()" | "current_timestamp" | "pg_catalog.now()"
    ) {
        return None;
    }
    let text = match right.as_ref() {
        Expr::Interval(i) => {
            let Expr::Value(v) = i.value.as_ref() else {
                return None;
            };
            let s = v.value.clone().into_string()?;
            match &i.leading_field {
                Some(unit) => format!("{s} {unit}"),
                None => s,
            }
        }
        Expr::Cast {
            expr, data_type, ..
        } if data_type.to_string().eq_ignore_ascii_case("interval") => {
            let Expr::Value(v) = expr.as_ref() else {
                return None;
            };
            v.value.clone().into_string()?
        }
        _ => return None,
    };
    crate::catalog::parse_window(&text.to_ascii_lowercase()).ok()
}

/// An identifier as Postgres reads it: unquoted names fold to lower case.
pub(crate) fn fold(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// Whether a statement the parser cannot read is a read, by its words:
/// it begins with SELECT, TABLE or VALUES, or with WITH and writes
/// nothing, or it is a `COPY … TO`.
fn reads_only(sql: &str) -> bool {
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return false;
    };
    let mut words = tokens.iter().filter_map(|t| match t {
        Token::Word(w) => Some(w.keyword),
        _ => None,
    });
    let first = tokens
        .iter()
        .find(|t| !matches!(t, Token::Whitespace(_) | Token::LParen));
    match first {
        Some(Token::Word(w)) => match w.keyword {
            Keyword::SELECT | Keyword::TABLE | Keyword::VALUES => true,
            Keyword::COPY => crate::federation::copies_out(sql),
            Keyword::WITH => !words.any(|k| {
                matches!(
                    k,
                    Keyword::INSERT | Keyword::UPDATE | Keyword::DELETE | Keyword::MERGE
                )
            }),
            _ => false,
        },
        _ => false,
    }
}

/// The SQL text of a Parse message (name, then query).
pub(crate) fn parse_sql_of(message: &[u8]) -> Option<&str> {
    let body = message.get(5..)?;
    let name_end = body.iter().position(|b| *b == 0)?;
    let rest = &body[name_end + 1..];
    let sql_end = rest.iter().position(|b| *b == 0)?;
    std::str::from_utf8(&rest[..sql_end]).ok()
}

/// The SQL text of a Query message.
pub(crate) fn sql_of(message: &[u8]) -> Option<&str> {
    let body = message.get(5..)?;
    let body = body.strip_suffix(&[0]).unwrap_or(body);
    std::str::from_utf8(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(sql: &str) -> Vec<u8> {
        let mut m = Vec::new();
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        crate::protocol::put_message(&mut m, b'Q', &body);
        m
    }

    fn router() -> Router {
        Router::new(vec![TieredName {
            schema: "public".into(),
            table: "orders".into(),
            time_column: "created_at".into(),
            hot_window: std::time::Duration::from_secs(30 * 86_400),
        }])
    }

    #[test]
    fn relays_everything_without_tiered_tables() {
        assert_eq!(Router::default().route(&q("SELECT 1")), Route::Relay);
    }

    #[test]
    fn federates_reads_of_tiered_tables() {
        let r = router();
        for sql in [
            "SELECT count(*) FROM orders",
            "-- Metabase:: userID: 1\nSELECT * FROM \"public\".\"orders\" LIMIT 10",
            "WITH x AS (SELECT * FROM Orders) SELECT * FROM x",
            "SELECT * FROM customers c JOIN public.orders o ON o.customer_id = c.id",
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM orders)",
            "SELECT * FROM other UNION ALL SELECT * FROM orders",
            "EXPLAIN SELECT count(*) FROM orders",
            "EXPLAIN (ANALYZE, COSTS OFF) SELECT count(*) FROM orders",
            "COPY orders TO STDOUT",
            "COPY  public.orders (id, note) TO STDOUT csv header",
            "COPY (SELECT * FROM customers c JOIN orders o ON o.customer_id = c.id) TO STDOUT (FORMAT binary)",
            "COPY orders TO '/tmp/orders.csv'",
            "DECLARE c CURSOR FOR SELECT * FROM orders",
            "CREATE TEMP TABLE recent AS SELECT * FROM orders WHERE status = 'paid'",
            "DECLARE \"SQL_CUR0x1\" CURSOR WITH HOLD FOR SELECT o.id FROM customers c JOIN orders o ON o.customer_id = c.id",
        ] {
            assert_eq!(r.route(&q(sql)), Route::Federate, "{sql}");
        }
    }

    #[test]
    fn relays_reads_bounded_to_the_hot_window() {
        let r = router();
        for sql in [
            "SELECT count(*) FROM orders WHERE created_at >= now() - interval '7 days'",
            "SELECT * FROM orders o WHERE o.status = 'new' AND o.created_at > now() - '1 day'::interval",
            "SELECT * FROM public.orders WHERE (created_at BETWEEN current_timestamp - interval '29 days' AND now())",
            "SELECT id FROM orders WHERE now() - interval '2 hours' < created_at ORDER BY id",
        ] {
            assert_eq!(r.route(&q(sql)), Route::Relay, "{sql}");
        }
        for sql in [
            // Longer than the hot window, or not a bound on the time column.
            "SELECT count(*) FROM orders WHERE created_at >= now() - interval '31 days'",
            "SELECT count(*) FROM orders WHERE created_at >= now() - interval '30 days'",
            "SELECT count(*) FROM orders WHERE created_at <= now() - interval '7 days'",
            "SELECT count(*) FROM orders WHERE created_at >= now() - interval '7 days' OR id = 1",
            "SELECT count(*) FROM orders o JOIN orders p ON p.id = o.id WHERE o.created_at >= now() - interval '1 day'",
            "SELECT count(*) FROM orders WHERE id IN (SELECT id FROM orders) AND created_at >= now() - interval '1 day'",
            "SELECT count(*) FROM orders o WHERE x.created_at >= now() - interval '1 day'",
        ] {
            assert_eq!(r.route(&q(sql)), Route::Federate, "{sql}");
        }
    }

    #[test]
    fn federates_prepared_reads() {
        let mut m = Vec::new();
        crate::protocol::put_message(
            &mut m,
            b'P',
            b"s1\0SELECT * FROM orders WHERE id = $1\0\0\0",
        );
        assert_eq!(router().route(&m), Route::Federate);
        let mut m = Vec::new();
        crate::protocol::put_message(&mut m, b'P', b"\0INSERT INTO orders VALUES ($1)\0\0\0");
        assert_eq!(router().route(&m), Route::Relay);
        for sql in [
            "INSERT INTO summary (n, code) SELECT count(*), $1 FROM orders WHERE customer_id > $1",
            "DECLARE hq CURSOR WITH HOLD FOR SELECT count(*) FROM orders WHERE customer_id > $1",
        ] {
            let mut m = Vec::new();
            crate::protocol::put_message(&mut m, b'P', format!("s1\0{sql}\0\0\0").as_bytes());
            assert_eq!(router().route(&m), Route::Federate, "{sql}");
        }
    }

    #[test]
    fn relays_what_postgres_must_answer() {
        let r = router();
        for sql in [
            "SELECT * FROM orders_archive",
            "SELECT * FROM \"Orders\"",
            "SELECT * FROM other.orders",
            "SELECT * FROM orders WHERE id = 1 FOR UPDATE",
            "INSERT INTO orders VALUES (1)",
            // A write to a tiered table sees its hot rows only.
            "INSERT INTO orders SELECT * FROM orders WHERE id = 1",
            "INSERT INTO summary SELECT * FROM customers",
            "WITH o AS (SELECT * FROM orders) INSERT INTO orders SELECT * FROM o",
            "DELETE FROM orders",
            "UPDATE orders o SET amount = 0 FROM customers c WHERE c.id = o.customer_id",
            "DELETE FROM orders WHERE id IN (SELECT id FROM orders WHERE amount < 0)",
            "MERGE INTO orders o USING customers c ON c.id = o.customer_id WHEN MATCHED THEN DELETE",
            "UPDATE summary SET n = 0 FROM customers c WHERE c.id = summary.id",
            "EXPLAIN UPDATE summary s SET n = o.amount FROM orders o WHERE o.id = s.id",
            "EXPLAIN (ANALYZE false) INSERT INTO summary SELECT count(*) FROM orders",
            "EXPLAIN ANALYZE UPDATE orders SET amount = 0",
            "WITH d AS (DELETE FROM orders WHERE id = 1 RETURNING id) UPDATE summary SET n = 0 FROM d",
            "WITH d AS (DELETE FROM orders WHERE id < 5 RETURNING id) SELECT count(*) FROM d",
            "WITH u AS (UPDATE orders SET note = 'x' WHERE id = 1 RETURNING *) SELECT * FROM u JOIN orders o USING (id)",
            "COPY orders FROM STDIN",
            "COPY orders (id) FROM STDIN (FORMAT csv)",
            "COPY orders_archive TO STDOUT",
            "DECLARE c CURSOR FOR SELECT * FROM orders FOR UPDATE",
            "DECLARE c CURSOR FOR SELECT * FROM customers",
            "CREATE TABLE orders_copy (LIKE orders)",
            "FETCH FORWARD 100 FROM orders",
            "SELECT 'orders'",
            "SELEC * FROM orders",
            // Not read by the parser, and not reads.
            "WITH d AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM d WHERE id BETWEEN SYMMETRIC 2 AND 1",
            "CREATE STATISTICS s ON (id BETWEEN SYMMETRIC 1 AND 2) FROM orders",
        ] {
            assert_eq!(r.route(&q(sql)), Route::Relay, "{sql}");
        }
    }

    #[test]
    fn federates_writes_that_read_tiered_tables() {
        let r = router();
        for sql in [
            "SELECT * INTO copy FROM orders",
            "INSERT INTO summary SELECT customer_id, count(*) FROM orders GROUP BY 1",
            "INSERT INTO summary (n) SELECT count(*) FROM public.orders RETURNING *",
            "WITH o AS (SELECT * FROM orders) INSERT INTO summary SELECT count(*) FROM o",
            "WITH o AS (SELECT * FROM orders) UPDATE summary SET n = (SELECT count(*) FROM o)",
            "UPDATE summary s SET n = o.amount FROM orders o WHERE o.id = s.id",
            "EXPLAIN ANALYZE UPDATE summary s SET n = o.amount FROM orders o WHERE o.id = s.id",
            "EXPLAIN (ANALYZE, BUFFERS) INSERT INTO summary SELECT count(*) FROM orders",
            "DELETE FROM summary WHERE NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = summary.id)",
            "DELETE FROM summary s USING public.orders o WHERE o.id = s.id",
            "MERGE INTO summary s USING (SELECT customer_id, count(*) AS n FROM orders GROUP BY 1) o \
             ON o.customer_id = s.id WHEN MATCHED THEN UPDATE SET n = o.n",
        ] {
            assert_eq!(r.route(&q(sql)), Route::Federate, "{sql}");
        }
        // Prepared, too.
        let mut m = Vec::new();
        crate::protocol::put_message(
            &mut m,
            b'P',
            b"\0UPDATE summary s SET n = o.amount FROM orders o WHERE o.id = s.id AND o.status = $1\0\0\0",
        );
        assert_eq!(r.route(&m), Route::Federate);
    }

    #[test]
    fn federates_reads_the_parser_cannot_read() {
        // Relayed, they would be answered from the hot rows alone.
        let r = router();
        for sql in [
            "SELECT count(*) FROM orders WHERE customer_id BETWEEN SYMMETRIC 10 AND 5",
            "/* dashboard */ (SELECT count(*) FROM orders WHERE id BETWEEN SYMMETRIC 2 AND 1)",
            "WITH o AS (SELECT * FROM orders) SELECT count(*) FROM o WHERE id BETWEEN SYMMETRIC 2 AND 1",
            "COPY orders TO STDOUT (FORMAT csv, FORCE_QUOTE *)",
        ] {
            assert_eq!(r.route(&q(sql)), Route::Federate, "{sql}");
        }
    }
}
