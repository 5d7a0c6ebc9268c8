//! `INSERT INTO t … SELECT …` whose query reads a tiered table (a summary
//! table filled from history, a dbt incremental model): the query's rows
//! over the whole history, computed federated, are kept in a temporary
//! table, and Postgres runs the INSERT as written over it. Defaults,
//! triggers, constraints, `ON CONFLICT`, `RETURNING`, the command tag and
//! the errors are then Postgres's own.
//!
//! An INSERT into a tiered table is a write to it and is relayed (the
//! router does not send it here).

use datafusion::sql::sqlparser::ast::{Expr, SelectItem, SetExpr, Statement, Value};

use super::link::{BackendMessage, FieldDescription, LinkError, PgLink, frontend};
use super::matview::rows::KeptRows;
use super::sqltext::{Piece, first_word, top_level};
use super::{Federation, Out, SessionSettings, kept};
use crate::frontend::cancel::SessionCancel;

/// An `INSERT … query` statement, as written.
#[derive(Debug)]
pub(crate) struct InsertSelect<'a> {
    /// The statement before its query: `INSERT INTO t (a, b)`.
    head: &'a str,
    /// The query, after the statement's CTEs if it begins with them.
    pub query: String,
    /// What follows the query: `ON CONFLICT …`, `RETURNING …`.
    tail: &'a str,
    /// Per column of the query, a string literal or NULL written as the
    /// column. Postgres types such a column by the table's column it goes
    /// into, so it is written again in the INSERT rather than read back as
    /// text.
    literals: Vec<Option<String>>,
    /// The query orders its rows: they are inserted in that order (serial
    /// columns are numbered in it).
    ordered: bool,
}

/// The words a query begins with.
const QUERY_WORDS: [&str; 4] = ["select", "with", "values", "table"];

/// Reads an `INSERT … query` statement, or `WITH … INSERT … query` whose
/// CTEs only read (they then go with the query). `None`: it is not one, or
/// its parts cannot be told apart in its text.
pub(crate) fn parse(sql: &str) -> Option<InsertSelect<'_>> {
    let first = first_word(sql);
    if !first.eq_ignore_ascii_case("insert") && !first.eq_ignore_ascii_case("with") {
        return None;
    }
    let pieces = top_level(sql)?;
    let is =
        |p: &Piece, w: &str| matches!(p, Piece::Word(r) if sql[r.clone()].eq_ignore_ascii_case(w));
    // Only a statement with INSERT outside parentheses is parsed.
    let at = pieces.iter().position(|p| is(p, "insert"))?;
    let Piece::Word(insert_word) = &pieces[at] else {
        return None;
    };
    let statements = super::sqltext::parse(sql).ok()?;
    let (insert, with) = match statements.as_slice() {
        [Statement::Insert(insert)] => (insert, None),
        [Statement::Query(q)] => match (q.body.as_ref(), &q.with) {
            (SetExpr::Insert(Statement::Insert(insert)), Some(with)) => (insert, Some(with)),
            _ => return None,
        },
        _ => return None,
    };
    let source = insert.source.as_ref()?;
    // The query is the first part, past INSERT INTO, beginning as a query
    // does, bare or in parentheses (a column list begins with a name).
    let (first, start) = pieces.iter().enumerate().skip(at + 2).find_map(|(i, p)| {
        let (begins, start) = match p {
            Piece::Word(r) => (&sql[r.clone()], r.start),
            Piece::Parens(r) => (first_word(&sql[r.clone()]), r.start - 1),
        };
        QUERY_WORDS
            .contains(&begins.to_ascii_lowercase().as_str())
            .then_some((i, start))
    })?;
    // It ends where ON CONFLICT or RETURNING begins.
    let end = (first + 1..pieces.len())
        .find(|&i| {
            is(&pieces[i], "returning")
                || is(&pieces[i], "on") && pieces.get(i + 1).is_some_and(|p| is(p, "conflict"))
        })
        .map_or(sql.len(), |i| match &pieces[i] {
            Piece::Word(r) | Piece::Parens(r) => r.start,
        });
    let tail = sql[end..].trim();
    let tail = tail.strip_suffix(';').unwrap_or(tail).trim_end();
    // CTEs go with the query when they only read, and only it reads them.
    if let Some(with) = with {
        let lower = tail.to_lowercase();
        let fits = with.cte_tables.iter().all(|c| {
            !matches!(
                c.query.body.as_ref(),
                SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
            ) && !lower.contains(&c.alias.name.value.to_lowercase())
        });
        if !fits {
            return None;
        }
    }
    let literals = match source.body.as_ref() {
        SetExpr::Select(s) => s
            .projection
            .iter()
            .map(|item| match item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                    Some(literal(e))
                }
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default(),
        SetExpr::Values(v) if v.rows.len() == 1 => v.rows[0].iter().map(literal).collect(),
        _ => Vec::new(),
    };
    Some(InsertSelect {
        head: &sql[insert_word.start..start],
        query: format!("{}{}", &sql[..insert_word.start], sql[start..end].trim()),
        tail,
        literals,
        ordered: source.order_by.is_some(),
    })
}

impl InsertSelect<'_> {
    /// The INSERT as written, over the `n` columns of `table` (`c1`…).
    fn over(&self, table: &str, n: usize) -> String {
        let read: Vec<String> = (0..n)
            .map(|c| match self.literals.get(c) {
                Some(Some(literal)) if self.literals.len() == n => literal.clone(),
                _ => format!("c{}", c + 1),
            })
            .collect();
        let order = if self.ordered { " ORDER BY ctid" } else { "" };
        format!(
            "{}SELECT {} FROM {table}{order} {}",
            self.head,
            read.join(", "),
            self.tail
        )
    }
}

/// Runs the INSERT over `rows` (DataRows of binary cells, of `fields`)
/// within a client's extended-protocol exchange, where no Sync may be
/// sent: its statement is parsed with the client's parameter types
/// (`types`, as a Parse holds them) and bound with the client's Bind
/// (`bind`: its parameters, and its result formats for RETURNING).
/// Returns its RowDescription (when it returns rows), DataRows and
/// CommandComplete.
pub(crate) async fn insert_extended(
    link: &mut PgLink,
    i: &InsertSelect<'_>,
    fields: &[FieldDescription],
    rows: KeptRows,
    types: &[u8],
    bind: &[u8],
) -> Result<Vec<BackendMessage>, LinkError> {
    use kept::NAME;
    let table = kept::temp_table("insert");
    let keep = kept::Keep {
        before: None,
        table: &table,
        on_commit: " ON COMMIT DROP",
    };
    keep.extended(link, fields, rows).await?;
    let mut msgs = Vec::new();
    frontend::parse_typed(&mut msgs, NAME, &i.over(&table, fields.len()), types);
    frontend::rebind(&mut msgs, NAME, NAME, bind);
    // Whether it returns rows (RowDescription or NoData).
    frontend::describe(&mut msgs, b'P', NAME);
    frontend::execute(&mut msgs, NAME, 0);
    frontend::close_both(&mut msgs, NAME);
    frontend::run_closed(&mut msgs, NAME, &format!("DROP TABLE {table}"));
    let replies = link.extended(&msgs, 11).await?;
    // Past ParseComplete and BindComplete, up to the INSERT's tag.
    let done = replies.iter().position(|m| m.tag == b'C').unwrap_or(0);
    Ok(replies
        .into_iter()
        .take(done + 1)
        .filter(|m| matches!(m.tag, b'T' | b'D' | b'C'))
        .collect())
}

/// A string literal or NULL, as SQL.
fn literal(e: &Expr) -> Option<String> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(_) | Value::Null => Some(v.value.to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// Runs the INSERT over its query's rows computed federated. Returns the
/// link, or `None` when the connection to Postgres was lost.
pub(crate) async fn insert(
    link: PgLink,
    out: &mut Out<'_>,
    i: InsertSelect<'_>,
    federation: &Federation,
    settings: &SessionSettings,
    cancel: &SessionCancel,
) -> Option<PgLink> {
    let computed = match kept::compute(link, out, &i.query, federation, settings, cancel).await {
        Ok(c) => c,
        Err(link) => return link,
    };
    let (mut link, n) = (computed.link, computed.fields.len());
    let table = kept::temp_table("insert");
    let run = format!("{}; DROP TABLE {table}", i.over(&table, n));
    let inserted = async {
        let keep = kept::Keep {
            before: None,
            table: &table,
            on_commit: " ON COMMIT DROP",
        };
        keep.simple(&mut link, &i.query, n, computed.rows).await?;
        let mut replies = link.simple(&run).await?;
        // The INSERT's replies, without the DROP's.
        replies.pop();
        Ok(replies.iter().flat_map(|m| m.encode()).collect())
    }
    .await;
    kept::end(link, out, computed.own, inserted, kept::named("INSERT")).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_parts_of_an_insert() {
        let i = parse(
            "INSERT INTO s.\"Sum (select\" AS x (day, note, n) SELECT created_at::date, 'on conflict', NULL \
             FROM orders o JOIN c ON c.id = o.id ORDER BY 1 ON CONFLICT (day) DO UPDATE SET n = 1 RETURNING *;",
        )
        .unwrap();
        assert_eq!(i.head, "INSERT INTO s.\"Sum (select\" AS x (day, note, n) ");
        assert_eq!(
            i.query,
            "SELECT created_at::date, 'on conflict', NULL FROM orders o JOIN c ON c.id = o.id ORDER BY 1"
        );
        assert_eq!(i.tail, "ON CONFLICT (day) DO UPDATE SET n = 1 RETURNING *");
        assert_eq!(
            i.literals,
            [
                None,
                Some("'on conflict'".to_string()),
                Some("NULL".to_string())
            ]
        );
        assert!(i.ordered);
        let i = parse("insert into t (select * from orders) returning id").unwrap();
        assert_eq!(
            (i.head, i.query.as_str(), i.tail),
            ("insert into t ", "(select * from orders)", "returning id")
        );
        assert!(i.literals.is_empty() && !i.ordered);
        let i = parse("INSERT INTO t WITH w AS (SELECT 1) SELECT * FROM w").unwrap();
        assert_eq!(
            (i.query.as_str(), i.tail),
            ("WITH w AS (SELECT 1) SELECT * FROM w", "")
        );
        let i = parse(
            "WITH w AS (SELECT 'insert' FROM orders), \"V\" AS (SELECT 2) INSERT INTO t SELECT * FROM w, \"V\" RETURNING 1",
        )
        .unwrap();
        assert_eq!(i.head, "INSERT INTO t ");
        assert_eq!(
            i.query,
            "WITH w AS (SELECT 'insert' FROM orders), \"V\" AS (SELECT 2) SELECT * FROM w, \"V\""
        );
        assert_eq!(i.tail, "RETURNING 1");
        // A CTE that writes, or one RETURNING reads, stays with the INSERT.
        assert!(
            parse("WITH d AS (DELETE FROM x RETURNING *) INSERT INTO t SELECT * FROM d").is_none()
        );
        assert!(parse("WITH w AS (SELECT 1 AS a) INSERT INTO t SELECT a FROM w RETURNING (SELECT a FROM w)").is_none());
        let i =
            parse("INSERT INTO t (n) SELECT count(*) FROM orders WHERE customer_id > $1").unwrap();
        assert_eq!(
            i.query,
            "SELECT count(*) FROM orders WHERE customer_id > $1"
        );
        assert!(parse("INSERT INTO t DEFAULT VALUES").is_none());
        assert!(parse("SELECT 1").is_none());
    }
}
