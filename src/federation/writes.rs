//! `UPDATE … FROM`, `DELETE … USING`, `MERGE … USING` and the subqueries
//! of writes to a table that is not tiered, reading a tiered table (a
//! customer's lifetime total set from history, rows deleted that no order
//! names any more): each read of history is computed federated and kept in
//! a temporary table, and Postgres runs the write as written, with those
//! tables in place of the reads. Triggers, constraints, `RETURNING`, the
//! command tag and the errors are then Postgres's own.
//!
//! A subquery that stands alone (Postgres parses it by itself: it names
//! nothing of the statement around it) is kept whole. A tiered table read
//! anywhere else (a table the write joins, or one in a correlated
//! subquery) is kept as the rows of it that the conditions beside it on
//! its own columns select.
//!
//! A write to a tiered table is relayed (the router does not send it
//! here).

use std::ops::{ControlFlow, Range};

use datafusion::sql::sqlparser::ast::{
    Expr, JoinOperator, ObjectName, ObjectNamePart, Query, SetExpr, Spanned, Statement,
    TableFactor, TableWithJoins, UpdateTableFromKind, Value, Visit, Visitor, visit_expressions,
    visit_relations,
};
use datafusion::sql::sqlparser::tokenizer::Location;

use super::link::{BackendMessage, FieldDescription, LinkError, PgLink, frontend};
use super::sqltext::{Piece, top_level};
use super::{Federation, Out, SessionSettings, kept, relay_query};
use crate::frontend::cancel::SessionCancel;
use crate::router::{fold, split_and};

/// A write that reads tiered tables, as written.
#[derive(Debug)]
pub(crate) struct Write<'a> {
    sql: &'a str,
    /// UPDATE, DELETE or MERGE.
    verb: &'static str,
    /// Its reads of history, each with the reads inside it.
    reads: Vec<Read>,
    /// Every tiered table it names was found in its text (not so for a
    /// `TABLE orders` query, or a name the parser gives no place).
    complete: bool,
}

/// A read of history within a write.
#[derive(Debug, Clone)]
struct Read {
    /// A subquery's text inside its parentheses, or a tiered table's name.
    at: Range<usize>,
    kind: Kind,
    /// Reads inside a subquery: kept instead when it does not stand alone.
    inner: Vec<Read>,
}

#[derive(Debug, Clone)]
enum Kind {
    /// A subquery; it orders its rows.
    Subquery { ordered: bool },
    /// A tiered table: the query of its rows that are kept, and the alias
    /// written after it when it has none (its name, for the statement's
    /// references to it).
    Table {
        query: String,
        alias: Option<String>,
    },
}

/// Reads a single UPDATE, DELETE or MERGE (perhaps after CTEs) that reads
/// a table `tiered` tells is tiered and writes to one that is not. `None`:
/// it is not one, or its reads cannot be found in its text.
pub(crate) fn parse<'a>(sql: &'a str, tiered: impl Fn(&ObjectName) -> bool) -> Option<Write<'a>> {
    let first = super::sqltext::first_word(sql).to_ascii_lowercase();
    if !matches!(first.as_str(), "update" | "delete" | "merge" | "with") {
        return None;
    }
    let statements = super::sqltext::parse(sql).ok()?;
    let [statement] = statements.as_slice() else {
        return None;
    };
    let write = match statement {
        Statement::Query(q) => match q.body.as_ref() {
            SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) if !ctes_write(q) => s,
            _ => return None,
        },
        s => s,
    };
    if target(write).is_none_or(&tiered) {
        return None;
    }
    let lines = line_starts(sql);
    let mut finder = Finder {
        sql,
        lines: &lines,
        tiered: &tiered,
        top: match statement {
            Statement::Query(q) => Some(q.as_ref() as *const Query),
            _ => None,
        },
        subqueries: Vec::new(),
        tables: Vec::new(),
        filters: Vec::new(),
    };
    let _ = statement.visit(&mut finder);
    let mut named = 0;
    let _ = visit_relations(statement, |name: &ObjectName| {
        named += usize::from(tiered(name));
        ControlFlow::<()>::Continue(())
    });
    let Finder {
        subqueries,
        tables,
        filters,
        ..
    } = finder;
    let complete = named == tables.len();
    if tables.is_empty() && complete {
        return None;
    }
    let mut all: Vec<Read> = tables
        .into_iter()
        .map(|(at, table)| {
            let conditions: Vec<String> = filters
                .iter()
                .filter(|(start, _)| *start == at.start)
                .map(|(_, c)| c.clone())
                .collect();
            let mut query = format!("SELECT * FROM {} AS {}", &sql[at.clone()], table.alias);
            if !conditions.is_empty() {
                query = format!("{query} WHERE {}", conditions.join(" AND "));
            }
            Read {
                at,
                kind: Kind::Table {
                    query,
                    alias: table.added.then_some(table.alias),
                },
                inner: Vec::new(),
            }
        })
        .collect();
    // Only the subqueries that read a tiered table.
    all.extend(
        subqueries
            .into_iter()
            .filter(|(at, _)| {
                all.iter()
                    .any(|r| at.start <= r.at.start && r.at.end <= at.end)
            })
            .map(|(at, ordered)| Read {
                at,
                kind: Kind::Subquery { ordered },
                inner: Vec::new(),
            })
            .collect::<Vec<_>>(),
    );
    let verb = match write {
        Statement::Update(_) => "UPDATE",
        Statement::Delete(_) => "DELETE",
        _ => "MERGE",
    };
    Some(Write {
        sql,
        verb,
        reads: nest(all),
        complete,
    })
}

/// Whether a query's CTEs write (`WITH d AS (DELETE … RETURNING …)`):
/// such a statement is Postgres's to run.
pub(crate) fn ctes_write(query: &Query) -> bool {
    query.with.as_ref().is_some_and(|with| {
        with.cte_tables.iter().any(|c| {
            matches!(
                c.query.body.as_ref(),
                SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
            )
        })
    })
}

/// The table an UPDATE, DELETE or MERGE writes to.
pub(crate) fn target(write: &Statement) -> Option<&ObjectName> {
    let factor = match write {
        Statement::Update(u) => &u.table.relation,
        Statement::Delete(d) => match &d.from {
            datafusion::sql::sqlparser::ast::FromTable::WithFromKeyword(t)
            | datafusion::sql::sqlparser::ast::FromTable::WithoutKeyword(t) => &t.first()?.relation,
        },
        Statement::Merge(m) => &m.table,
        _ => return None,
    };
    match factor {
        TableFactor::Table { name, .. } => Some(name),
        _ => None,
    }
}

/// Nests reads by where they are in the text, outermost first.
fn nest(mut all: Vec<Read>) -> Vec<Read> {
    all.sort_by(|a, b| a.at.start.cmp(&b.at.start).then(b.at.end.cmp(&a.at.end)));
    fn take(all: &mut std::iter::Peekable<std::vec::IntoIter<Read>>, end: usize) -> Vec<Read> {
        let mut out = Vec::new();
        while let Some(next) = all.peek() {
            if next.at.start >= end {
                break;
            }
            let mut read = all.next().expect("peeked");
            read.inner = take(all, read.at.end);
            out.push(read);
        }
        out
    }
    take(&mut all.into_iter().peekable(), usize::MAX)
}

/// A tiered table's reference: its qualifier, and whether the statement
/// gave it none (its name is then written as its alias).
struct Qualifier {
    alias: String,
    added: bool,
}

struct Finder<'a, F> {
    sql: &'a str,
    lines: &'a [usize],
    tiered: &'a F,
    /// The statement itself, when it is a query (`WITH … UPDATE`).
    top: Option<*const Query>,
    /// Subqueries: the text inside their parentheses, and whether they
    /// order their rows.
    subqueries: Vec<(Range<usize>, bool)>,
    /// Tiered tables: where their names are, and their qualifiers.
    tables: Vec<(Range<usize>, Qualifier)>,
    /// Conditions on a tiered table's own columns, by where its name
    /// begins.
    filters: Vec<(usize, String)>,
}

impl<F: Fn(&ObjectName) -> bool> Finder<'_, F> {
    fn range(&self, span: datafusion::sql::sqlparser::tokenizer::Span) -> Option<Range<usize>> {
        Some(offset(self.sql, self.lines, span.start)?..offset(self.sql, self.lines, span.end)?)
    }

    /// Notes the conditions of `condition` (a WHERE or ON beside `from`)
    /// that read only the columns of one of `from`'s tiered tables.
    fn scope(&mut self, from: &[TableWithJoins], condition: Option<&Expr>) {
        let Some(condition) = condition else {
            return;
        };
        let mut conjuncts = Vec::new();
        split_and(condition, &mut conjuncts);
        // Not a table an outer join may extend with NULLs: there a
        // condition (`o.id IS NULL`) also keeps the rows no row of it
        // matched.
        let inner = |t: &&TableWithJoins| {
            t.joins.iter().all(|j| {
                matches!(
                    j.join_operator,
                    JoinOperator::Join(_) | JoinOperator::Inner(_) | JoinOperator::CrossJoin(_)
                )
            })
        };
        let factors = from
            .iter()
            .filter(inner)
            .flat_map(|t| std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)));
        for factor in factors {
            self.scope_factor(factor, &conjuncts);
        }
    }

    fn scope_factor(&mut self, factor: &TableFactor, conjuncts: &[&Expr]) {
        let TableFactor::Table { name, alias, .. } = factor else {
            return;
        };
        if !(self.tiered)(name) {
            return;
        }
        let Some(at) = self.range(name.span()) else {
            return;
        };
        let qualifier = match alias {
            Some(a) => fold(&a.name),
            None => match name.0.last() {
                Some(ObjectNamePart::Identifier(i)) => fold(i),
                _ => return,
            },
        };
        for c in conjuncts {
            if own_columns_only(c, &qualifier) {
                self.filters.push((at.start, c.to_string()));
            }
        }
    }
}

impl<F: Fn(&ObjectName) -> bool> Visitor for Finder<'_, F> {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if self.top != Some(query as *const Query)
            && let Some(start) = offset(self.sql, self.lines, query.span().start)
            && let Some(inside) = parenthesized(self.sql, start)
        {
            self.subqueries.push((inside, query.order_by.is_some()));
        }
        let mut bodies = vec![query.body.as_ref()];
        while let Some(body) = bodies.pop() {
            match body {
                SetExpr::Select(s) => self.scope(&s.from, s.selection.as_ref()),
                SetExpr::SetOperation { left, right, .. } => {
                    bodies.push(left);
                    bodies.push(right);
                }
                _ => {}
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        match statement {
            Statement::Update(u) => {
                if let Some(
                    UpdateTableFromKind::AfterSet(from) | UpdateTableFromKind::BeforeSet(from),
                ) = &u.from
                {
                    self.scope(from, u.selection.as_ref());
                }
            }
            Statement::Delete(d) => {
                if let Some(using) = &d.using {
                    self.scope(using, d.selection.as_ref());
                }
            }
            // A MERGE's source rows that its ON condition does not match
            // are still its rows (WHEN NOT MATCHED): none are left out.
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } = factor
            && (self.tiered)(name)
            && let Some(at) = self.range(name.span())
        {
            let qualifier = match alias {
                Some(a) => Qualifier {
                    alias: a.to_string().trim_start_matches("AS ").to_string(),
                    added: false,
                },
                None => match name.0.last() {
                    Some(ObjectNamePart::Identifier(i)) => Qualifier {
                        alias: i.to_string(),
                        added: true,
                    },
                    _ => return ControlFlow::Continue(()),
                },
            };
            self.tables.push((at, qualifier));
        }
        ControlFlow::Continue(())
    }
}

/// True when a condition reads columns of the table qualified `qualifier`
/// only (each named with it), and no subquery or parameter.
fn own_columns_only(e: &Expr, qualifier: &str) -> bool {
    let mut only = true;
    let _ = visit_expressions(e, |e: &Expr| {
        only &= match e {
            Expr::Identifier(_)
            | Expr::Subquery(_)
            | Expr::Exists { .. }
            | Expr::InSubquery { .. }
            | Expr::CompoundFieldAccess { .. }
            | Expr::QualifiedWildcard(..)
            | Expr::Wildcard(_) => false,
            Expr::CompoundIdentifier(parts) => {
                matches!(parts.as_slice(), [q, _] if fold(q) == qualifier)
            }
            Expr::Value(v) => !matches!(v.value, Value::Placeholder(_)),
            _ => true,
        };
        ControlFlow::<()>::Continue(())
    });
    only
}

/// Where each line of `sql` begins.
fn line_starts(sql: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(sql.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

/// The byte offset of a parser location (line and column from 1, the
/// column in characters).
fn offset(sql: &str, lines: &[usize], at: Location) -> Option<usize> {
    let start = *lines.get((at.line as usize).checked_sub(1)?)?;
    let column = (at.column as usize).checked_sub(1)?;
    let line = &sql[start..];
    match line.char_indices().nth(column) {
        Some((i, _)) => Some(start + i),
        None => (line.chars().count() == column).then_some(sql.len()),
    }
}

/// The text inside the parentheses that open just before `start` (a
/// subquery's first word): `None` when no parenthesis does.
fn parenthesized(sql: &str, start: usize) -> Option<Range<usize>> {
    let open = sql[..start].trim_end().strip_suffix('(')?.len();
    match top_level(&sql[open..])?.first()? {
        Piece::Parens(inside) => Some(open + inside.start..open + inside.end),
        Piece::Word(_) => None,
    }
}

/// A read chosen to be kept: its place, its query, and how its rows are
/// read back.
struct Chosen<'r> {
    read: &'r Read,
    query: String,
}

/// Chooses the reads to keep: each subquery that stands alone whole, and
/// otherwise the reads inside it.
async fn choose<'r>(
    link: &mut PgLink,
    sql: &str,
    reads: &'r [Read],
    chosen: &mut Vec<Chosen<'r>>,
) -> Result<(), LinkError> {
    for read in reads {
        match &read.kind {
            Kind::Table { query, .. } => chosen.push(Chosen {
                read,
                query: query.clone(),
            }),
            Kind::Subquery { .. } => {
                let query = &sql[read.at.clone()];
                if stands_alone(link, query).await? {
                    chosen.push(Chosen {
                        read,
                        query: query.to_string(),
                    });
                } else {
                    Box::pin(choose(link, sql, &read.inner, chosen)).await?;
                }
            }
        }
    }
    Ok(())
}

/// Whether Postgres parses `query` by itself. Within a transaction block,
/// under a savepoint, so that its failure leaves the client's transaction
/// as it was.
async fn stands_alone(link: &mut PgLink, query: &str) -> Result<bool, LinkError> {
    const SAVEPOINT: &str = "thermocline_alone";
    let block = link.txn_status != b'I';
    if block {
        link.simple(&format!("SAVEPOINT {SAVEPOINT}")).await?;
    }
    let mut msgs = Vec::new();
    frontend::parse(&mut msgs, "", query);
    let parsed = link.extended_sync(&msgs).await;
    if block {
        link.simple(&format!(
            "ROLLBACK TO SAVEPOINT {SAVEPOINT}; RELEASE SAVEPOINT {SAVEPOINT}"
        ))
        .await?;
    }
    match parsed {
        Ok(_) => Ok(true),
        Err(LinkError::Postgres(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// What stands in a read's place: its kept rows, under the names of its
/// columns.
fn replacement(read: &Read, table: &str, fields: &[FieldDescription]) -> String {
    let columns = kept::named_columns(fields);
    match &read.kind {
        Kind::Subquery { ordered } => {
            let order = if *ordered { " ORDER BY ctid" } else { "" };
            format!("SELECT {columns} FROM {table}{order}")
        }
        Kind::Table { alias, .. } => {
            let alias = alias
                .as_ref()
                .map(|a| format!(" AS {a}"))
                .unwrap_or_default();
            format!("(SELECT {columns} FROM {table}){alias}")
        }
    }
}

/// An error of the write as Postgres ran it (see [`kept::named`]), without
/// the position in its text (which is not the client's).
fn error_of(verb: &str) -> impl Fn(&BackendMessage) -> Vec<u8> + '_ {
    let named = kept::named(verb);
    move |e| match e.field(b'C').as_deref() {
        Some("25006") => named(e),
        _ => without_position(e),
    }
}

fn without_position(e: &BackendMessage) -> Vec<u8> {
    let mut body = Vec::new();
    let mut rest = &e.body[..];
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        if code != b'P' {
            body.push(code);
            body.extend_from_slice(&tail[..=end.min(tail.len() - 1)]);
        }
        rest = tail.get(end + 1..).unwrap_or_default();
    }
    body.push(0);
    crate::protocol::message(b'E', &body)
}

/// The error for a write whose reads of a tiered table cannot all be
/// placed in its text: run by Postgres, it would read the hot rows only.
fn unplaced(verb: &str) -> crate::protocol::ErrorFields {
    crate::protocol::ErrorFields::error(
        "0A000",
        format!(
            "this {verb} reads a tiered table in a form thermocline cannot yet answer over its \
             whole history; name the table in a FROM clause (not TABLE t)"
        ),
    )
}

/// Runs the write over its reads of history computed federated. Returns
/// the link, or `None` when the connection to Postgres was lost.
pub(crate) async fn write(
    mut link: PgLink,
    out: &mut Out<'_>,
    w: Write<'_>,
    federation: &Federation,
    settings: &SessionSettings,
    cancel: &SessionCancel,
) -> Option<PgLink> {
    if !w.complete {
        return super::refuse(link, out, unplaced(w.verb)).await;
    }
    let mut chosen = Vec::new();
    choose(&mut link, w.sql, &w.reads, &mut chosen).await.ok()?;
    if chosen.is_empty() {
        return relay_query(link, out, w.sql).await;
    }
    let own = link.txn_status == b'I';
    let mut places = Vec::new();
    let mut tables = Vec::new();
    for c in &chosen {
        let computed =
            match kept::compute_within(link, out, &c.query, (federation, settings, cancel), own)
                .await
            {
                Ok(computed) => computed,
                Err(link) => return link,
            };
        link = computed.link;
        let table = kept::temp_table("write");
        let keep = kept::Keep {
            before: None,
            table: &table,
            on_commit: " ON COMMIT DROP",
        };
        if let Err(e) = keep
            .simple(&mut link, &c.query, computed.fields.len(), computed.rows)
            .await
        {
            return kept::end(link, out, own, Err(e), error_of(w.verb)).await;
        }
        places.push((
            c.read.at.clone(),
            replacement(c.read, &table, &computed.fields),
        ));
        tables.push(table);
    }
    let run = format!(
        "{}; DROP TABLE {}",
        rewritten(w.sql, places),
        tables.join(", ")
    );
    let done = link.simple(&run).await.map(|mut replies| {
        // The write's replies, without the DROP's.
        replies.pop();
        replies.iter().flat_map(|m| m.encode()).collect()
    });
    kept::end(link, out, own, done, error_of(w.verb)).await
}

impl Write<'_> {
    /// Every tiered table it reads, wherever it is.
    fn tables(&self) -> Vec<&Read> {
        fn walk<'r>(reads: &'r [Read], out: &mut Vec<&'r Read>) {
            for r in reads {
                match r.kind {
                    Kind::Table { .. } => out.push(r),
                    Kind::Subquery { .. } => walk(&r.inner, out),
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.reads, &mut out);
        out
    }
}

/// Runs a prepared write within the client's extended-protocol exchange,
/// where no Sync may be sent. A subquery cannot be tried by itself there
/// (its failure would end the exchange), so each tiered table is kept as
/// its rows the conditions beside it select, and the write is run with
/// the client's parameters (its Bind re-sent) over them.
pub(crate) async fn write_extended(
    mut link: PgLink,
    out: &mut Out<'_>,
    (job, suspended): (
        &super::extended::ExecuteJob,
        &mut super::extended::Suspended,
    ),
    w: Write<'_>,
    (federation, settings, cancel): (&Federation, &SessionSettings, &SessionCancel),
) -> Option<PgLink> {
    use super::Failure;
    use kept::NAME;
    if !w.complete {
        return super::extended::fail_raw(link, out, unplaced(w.verb).encode()).await;
    }
    // The parameter types of the client's statement.
    let mut msgs = Vec::new();
    frontend::describe(&mut msgs, b'S', &job.statement);
    let types = match link.extended(&msgs, 1).await {
        Ok(replies) => replies
            .iter()
            .find(|m| m.tag == b't')
            .map(|m| m.body.to_vec())
            .unwrap_or_else(|| vec![0, 0]),
        Err(LinkError::Postgres(e)) => {
            out.error(e.encode());
            return Some(link);
        }
        Err(_) => return None,
    };
    let mut places = Vec::new();
    let mut tables = Vec::new();
    for read in w.tables() {
        let Kind::Table { query, .. } = &read.kind else {
            continue;
        };
        let (back, computed) =
            super::extended::rows_within(link, query, federation, settings, cancel).await?;
        link = back;
        let (fields, rows) = match computed {
            Ok(c) => c,
            Err(Failure::Link(LinkError::Postgres(e))) => {
                out.error(e.encode());
                return Some(link);
            }
            Err(Failure::Link(_)) => return None,
            Err(other) => return super::extended::fail_raw(link, out, other.encode()).await,
        };
        let table = kept::temp_table("write");
        let keep = kept::Keep {
            before: None,
            table: &table,
            on_commit: " ON COMMIT DROP",
        };
        if let Err(e) = keep.extended(&mut link, &fields, rows).await {
            return match e {
                LinkError::Postgres(e) => {
                    out.error(error_of(w.verb)(&e));
                    Some(link)
                }
                _ => None,
            };
        }
        places.push((read.at.clone(), replacement(read, &table, &fields)));
        tables.push(table);
    }
    let mut msgs = Vec::new();
    frontend::parse_typed(&mut msgs, NAME, &rewritten(w.sql, places), &types);
    frontend::rebind(&mut msgs, NAME, NAME, &job.bind);
    // Whether it returns rows (RowDescription or NoData).
    frontend::describe(&mut msgs, b'P', NAME);
    frontend::execute(&mut msgs, NAME, 0);
    frontend::close_both(&mut msgs, NAME);
    frontend::run_closed(
        &mut msgs,
        NAME,
        &format!("DROP TABLE {}", tables.join(", ")),
    );
    match link.extended(&msgs, 11).await {
        Ok(replies) => {
            // Past ParseComplete and BindComplete, up to the write's tag.
            let done = replies.iter().position(|m| m.tag == b'C').unwrap_or(0);
            super::extended::answer_written(out, suspended, job, &replies[..=done]);
        }
        Err(LinkError::Postgres(e)) => out.error(error_of(w.verb)(&e)),
        Err(_) => return None,
    }
    for m in link.deferred.drain(..) {
        out.buf.extend(m.encode());
    }
    Some(link)
}

/// The write's text with its reads replaced (`places`: where, and by what).
fn rewritten(sql: &str, mut places: Vec<(Range<usize>, String)>) -> String {
    places.sort_by_key(|(at, _)| std::cmp::Reverse(at.start));
    let mut sql = sql.trim_end().to_string();
    for (at, text) in places {
        sql.replace_range(at, &text);
    }
    let sql = sql.trim_end();
    sql.strip_suffix(';').unwrap_or(sql).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orders(name: &ObjectName) -> bool {
        matches!(name.0.last(), Some(ObjectNamePart::Identifier(i)) if fold(i) == "orders")
    }

    fn shape(reads: &[Read], sql: &str) -> Vec<String> {
        reads
            .iter()
            .map(|r| {
                let inner = shape(&r.inner, sql);
                match &r.kind {
                    Kind::Table { query, alias } => {
                        format!("table {} [{query}] {alias:?}", &sql[r.at.clone()])
                    }
                    Kind::Subquery { ordered } => {
                        format!("sub [{}] {ordered} {inner:?}", &sql[r.at.clone()])
                    }
                }
            })
            .collect()
    }

    fn reads_of(sql: &str) -> Vec<String> {
        shape(&parse(sql, orders).expect(sql).reads, sql)
    }

    #[test]
    fn finds_the_reads_of_history_in_a_write() {
        let sql = "UPDATE customers c SET total = s.total\nFROM (SELECT customer_id, sum(amount) AS total FROM orders GROUP BY 1) s WHERE c.id = s.customer_id";
        assert_eq!(
            reads_of(sql),
            [
                "sub [SELECT customer_id, sum(amount) AS total FROM orders GROUP BY 1] false [\"table orders [SELECT * FROM orders AS orders] Some(\\\"orders\\\")\"]"
            ]
        );
        let sql = "DELETE FROM stale t USING public.orders AS o\n  WHERE t.id = o.id AND o.created_at < '2024-01-01' AND (o.amount > 5 OR t.x) AND o.status = 'é'";
        assert_eq!(
            reads_of(sql),
            [
                "table public.orders [SELECT * FROM public.orders AS o WHERE o.created_at < '2024-01-01' AND o.status = 'é'] None"
            ]
        );
        let sql = "delete from c where not exists (select 1 from \"orders\" where \"orders\".customer_id = c.id and \"orders\".amount > 0) returning *;";
        assert_eq!(
            reads_of(sql),
            [
                "sub [select 1 from \"orders\" where \"orders\".customer_id = c.id and \"orders\".amount > 0] false [\"table \\\"orders\\\" [SELECT * FROM \\\"orders\\\" AS \\\"orders\\\" WHERE \\\"orders\\\".amount > 0] Some(\\\"\\\\\\\"orders\\\\\\\"\\\")\"]"
            ]
        );
        let sql = "MERGE INTO summary s USING orders o ON s.id = o.id AND o.amount > 1 WHEN MATCHED THEN UPDATE SET n = o.amount";
        assert_eq!(
            reads_of(sql),
            ["table orders [SELECT * FROM orders AS o] None"]
        );
        // Nor the conditions of a table an outer join extends.
        let sql = "DELETE FROM t USING c LEFT JOIN orders o ON o.customer_id = c.id WHERE c.id = t.id AND o.id IS NULL";
        assert_eq!(
            reads_of(sql),
            ["table orders [SELECT * FROM orders AS o] None"]
        );
        let sql = "WITH w AS (SELECT id FROM orders ORDER BY id) UPDATE t SET x = 1 WHERE id IN (SELECT id FROM w)";
        assert_eq!(
            reads_of(sql),
            [
                "sub [SELECT id FROM orders ORDER BY id] true [\"table orders [SELECT * FROM orders AS orders] Some(\\\"orders\\\")\"]"
            ]
        );
        // Writes to the tiered table, and writes that read none, are not.
        assert!(
            parse(
                "UPDATE orders SET amount = 1 FROM c WHERE c.id = orders.id",
                orders
            )
            .is_none()
        );
        assert!(parse("DELETE FROM t USING c WHERE c.id = t.id", orders).is_none());
        assert!(parse("SELECT * FROM orders", orders).is_none());
        assert!(parse(sql, orders).unwrap().complete);
    }

    #[test]
    fn offsets_count_characters() {
        let sql = "é\nab";
        let lines = line_starts(sql);
        assert_eq!(
            offset(sql, &lines, Location { line: 2, column: 2 }),
            Some(4)
        );
        assert_eq!(
            offset(sql, &lines, Location { line: 1, column: 2 }),
            Some(2)
        );
        assert_eq!(
            offset(sql, &lines, Location { line: 2, column: 3 }),
            Some(5)
        );
    }

    #[test]
    fn error_positions_are_left_out() {
        let mut body = Vec::new();
        for (code, value) in [(b'S', "ERROR"), (b'C', "23505"), (b'P', "42"), (b'M', "x")] {
            body.push(code);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        let e = BackendMessage {
            tag: b'E',
            body: body.into(),
        };
        let written = without_position(&e);
        assert!(!written.windows(3).any(|w| w == b"P42"));
        assert!(written.windows(6).any(|w| w == b"C23505"));
        assert_eq!(*written.last().unwrap(), 0);
    }
}
