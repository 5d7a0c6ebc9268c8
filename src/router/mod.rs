//! Decides, for every Query and Parse message, where the statement goes.
//!
//! Every statement the session forwards passes through [`Router::route`]
//! first. A statement that cannot name a tiered table (a substring check on
//! its text) is relayed without being parsed, so sessions of databases with
//! no tiered tables, and statements that touch none, pay nothing more.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{
    Ident, ObjectName, ObjectNamePart, SetExpr, Statement, visit_relations,
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
        let Some(sql) = sql else {
            return Route::Relay;
        };
        if !self.may_name_tiered(sql) {
            return Route::Relay;
        }
        match self.classify(sql) {
            Some(_) => Route::Federate,
            None => Route::Relay,
        }
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

    /// The tiered tables a read statement needs, or `None` when it should be
    /// relayed: not a plain read, a locking read, or no tiered table named.
    pub(crate) fn classify(&self, sql: &str) -> Option<Vec<TieredName>> {
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
        let mut found = Vec::new();
        for statement in &statements {
            let Statement::Query(query) = statement else {
                continue;
            };
            // SELECT … FOR UPDATE/SHARE needs Postgres's row locks; SELECT
            // INTO creates a table. Both stay with Postgres.
            if !query.locks.is_empty()
                || matches!(query.body.as_ref(), SetExpr::Select(s) if s.into.is_some())
            {
                return None;
            }
            let _ = visit_relations(statement, |name: &ObjectName| {
                if let Some(t) = self.match_name(name) {
                    if !found
                        .iter()
                        .any(|f: &TieredName| f.schema == t.schema && f.table == t.table)
                    {
                        found.push(t.clone());
                    }
                }
                ControlFlow::<()>::Continue(())
            });
        }
        if found.is_empty() { None } else { Some(found) }
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

/// An identifier as Postgres reads it: unquoted names fold to lower case.
fn fold(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
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
    }

    #[test]
    fn relays_what_postgres_must_answer() {
        let r = router();
        for sql in [
            "SELECT * FROM orders_archive",
            "SELECT * FROM \"Orders\"",
            "SELECT * FROM other.orders",
            "SELECT * FROM orders WHERE id = 1 FOR UPDATE",
            "SELECT * INTO copy FROM orders",
            "INSERT INTO orders VALUES (1)",
            "DELETE FROM orders",
            "SELECT 'orders'",
            "SELEC * FROM orders",
        ] {
            assert_eq!(r.route(&q(sql)), Route::Relay, "{sql}");
        }
    }
}
