//! Materialized views over tiered tables.
//!
//! `CREATE MATERIALIZED VIEW v AS <query>` over a tiered table is computed
//! over the whole history (hot and cold rows, as any federated read) and
//! stored in an ordinary Postgres table `v`: catalog tools list it, indexes
//! can be built on it, and reads of it are plain relays. Its definition is
//! kept in `thermocline.materialized_views`, in the same database, so every
//! thermocline in front of it shares it.
//!
//! `REFRESH MATERIALIZED VIEW [CONCURRENTLY] v` recomputes it in one
//! transaction (DELETE, then COPY of the new rows): readers see the old
//! rows until it commits and are never blocked. A view that groups by
//! `date_trunc('<unit>', <time column>)` of its tiered table, reading no
//! other table, is refreshed incrementally: only buckets from the earliest
//! time that may have changed since its last refresh are recomputed. That
//! time is the least of the earliest hot row then and now, and the start of
//! every lake partition whose recorded checksum changed.
//!
//! `WITH (thermocline.refresh_interval = '5 minutes')` has the server
//! refresh a view on that interval ([`refresh_due`]).
//!
//! `DROP MATERIALIZED VIEW v` drops the table and its definition. Views
//! over no tiered table are left to Postgres unchanged.

use std::sync::Arc;
use std::time::Instant;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, SelectItem,
    SetExpr, Statement, TableFactor, Value, visit_relations,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use tokio::sync::Mutex;

use super::link::{self, LinkError, PgLink, quote_literal};
use super::scan::ScanContext;
use super::{
    Failure, Federation, Out, Run, SessionSettings, cancelled, close_cursors, execute, finish,
    refuse, relay_query, take_back, undo,
};
use crate::frontend::cancel::SessionCancel;
use crate::pgtypes::TextSettings;
use crate::protocol::ErrorFields;
use crate::tiering::TieredTable;

/// Where definitions live.
const DEFINITIONS: &str = "thermocline.materialized_views";

const CREATE_DEFINITIONS: &str = "CREATE SCHEMA IF NOT EXISTS thermocline;
CREATE TABLE IF NOT EXISTS thermocline.materialized_views (
    view_schema text NOT NULL,
    view_name text NOT NULL,
    definition text NOT NULL,
    tiered_table text NOT NULL,
    time_zone text NOT NULL,
    bucket_column text,
    bucket_unit text,
    time_column text,
    refresh_interval interval,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_refresh timestamptz,
    last_refresh_kind text,
    last_refresh_ms double precision,
    last_refresh_rows bigint,
    hot_min text,
    lake_checksums text,
    PRIMARY KEY (view_schema, view_name)
)";

/// A materialized-view command, as written.
#[derive(Debug, PartialEq)]
pub(crate) enum Command {
    Create(Create),
    Refresh {
        name: String,
        with_data: bool,
    },
    Drop {
        names: Vec<String>,
        if_exists: bool,
        cascade: bool,
    },
}

#[derive(Debug, PartialEq)]
pub(crate) struct Create {
    pub name: String,
    pub if_not_exists: bool,
    /// `(a, b)` as written, or empty.
    pub columns: String,
    /// Storage parameters for the table (`fillfactor = 70`).
    pub storage: Vec<String>,
    /// `thermocline.refresh_interval`, as written.
    pub refresh_interval: Option<String>,
    pub query: String,
    pub with_data: bool,
}

/// A cheap check, before any parsing: might this be a materialized-view
/// command?
pub(crate) fn may_be_command(sql: &str) -> bool {
    let head: String = strip_comments(sql)
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase();
    head.starts_with("create materialized view")
        || head.starts_with("refresh materialized view")
        || head.starts_with("drop materialized view")
}

/// Does `sql` (a materialized-view command) create one?
pub(crate) fn is_create(sql: &str) -> bool {
    strip_comments(sql)
        .get(..6)
        .is_some_and(|w| w.eq_ignore_ascii_case("create"))
}

fn strip_comments(sql: &str) -> &str {
    let mut s = sql.trim_start();
    loop {
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, r)| r).trim_start();
        } else if let Some(rest) = s.strip_prefix("/*") {
            s = rest.split_once("*/").map_or("", |(_, r)| r).trim_start();
        } else {
            return s;
        }
    }
}

/// The command `sql` holds; `Err`: a syntax error, as Postgres would report.
pub(crate) fn parse(sql: &str) -> Result<Command, String> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .map_err(|e| e.to_string())?;
    let mut p = Tokens { tokens, at: 0 };
    let verb = p.word().ok_or("expected a command")?;
    p.expect_words(&["materialized", "view"])?;
    match verb.as_str() {
        "create" => {
            let if_not_exists = p.eat_words(&["if", "not", "exists"]);
            let name = p.name()?;
            let columns = if p.peek() == Some(&Token::LParen) {
                p.parenthesized()?
            } else {
                String::new()
            };
            let mut storage = Vec::new();
            let mut refresh_interval = None;
            if p.eat_words(&["with"]) {
                let options = p.parenthesized()?;
                for option in split_top_level(&options[1..options.len() - 1]) {
                    let (key, value) = option
                        .split_once('=')
                        .map(|(k, v)| (k.trim(), v.trim()))
                        .unwrap_or((option.trim(), ""));
                    if key.eq_ignore_ascii_case("thermocline.refresh_interval") {
                        let value = value.trim_matches('\'').to_string();
                        refresh_interval = Some(value);
                    } else {
                        storage.push(option.trim().to_string());
                    }
                }
            }
            p.expect_words(&["as"])?;
            let mut rest: Vec<Token> = p.tokens[p.at..].to_vec();
            while matches!(rest.last(), Some(Token::Whitespace(_) | Token::SemiColon)) {
                rest.pop();
            }
            let mut with_data = true;
            let words: Vec<String> = rest
                .iter()
                .filter(|t| !matches!(t, Token::Whitespace(_)))
                .rev()
                .take(3)
                .map(|t| t.to_string().to_ascii_lowercase())
                .collect();
            let cut = match words.as_slice() {
                [d, n, w, ..] if d == "data" && n == "no" && w == "with" => 3,
                [d, w, ..] if d == "data" && w == "with" => 2,
                _ => 0,
            };
            if cut > 0 {
                with_data = cut == 2;
                let mut left = cut;
                while left > 0 {
                    if !matches!(rest.pop(), Some(Token::Whitespace(_))) {
                        left -= 1;
                    }
                }
            }
            let query: String = rest.iter().map(ToString::to_string).collect();
            Ok(Command::Create(Create {
                name,
                if_not_exists,
                columns,
                storage,
                refresh_interval,
                query: query.trim().to_string(),
                with_data,
            }))
        }
        "refresh" => {
            p.eat_words(&["concurrently"]);
            let name = p.name()?;
            let with_data = if p.eat_words(&["with", "no", "data"]) {
                false
            } else {
                p.eat_words(&["with", "data"]);
                true
            };
            p.end()?;
            Ok(Command::Refresh { name, with_data })
        }
        "drop" => {
            let if_exists = p.eat_words(&["if", "exists"]);
            let mut names = vec![p.name()?];
            while p.peek() == Some(&Token::Comma) {
                p.next();
                names.push(p.name()?);
            }
            let cascade = p.eat_words(&["cascade"]);
            if !cascade {
                p.eat_words(&["restrict"]);
            }
            p.end()?;
            Ok(Command::Drop {
                names,
                if_exists,
                cascade,
            })
        }
        _ => Err("expected CREATE, REFRESH or DROP".into()),
    }
}

/// Splits `a = 1, b = 'x, y'` at its top-level commas.
fn split_top_level(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth, mut quoted) = (Vec::new(), String::new(), 0, false);
    for c in s.chars() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            ',' if !quoted && depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

/// A walk over a statement's tokens, whitespace skipped.
struct Tokens {
    tokens: Vec<Token>,
    at: usize,
}

impl Tokens {
    fn skip_space(&mut self) {
        while matches!(self.tokens.get(self.at), Some(Token::Whitespace(_))) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<&Token> {
        self.skip_space();
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        self.skip_space();
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    /// The next token as an unquoted word, lower-cased.
    fn word(&mut self) -> Option<String> {
        match self.peek() {
            Some(Token::Word(w)) if w.quote_style.is_none() => {
                let v = w.value.to_ascii_lowercase();
                self.at += 1;
                Some(v)
            }
            _ => None,
        }
    }

    /// Consumes `words` if they come next.
    fn eat_words(&mut self, words: &[&str]) -> bool {
        let start = self.at;
        for w in words {
            if self.word().as_deref() != Some(*w) {
                self.at = start;
                return false;
            }
        }
        true
    }

    fn expect_words(&mut self, words: &[&str]) -> Result<(), String> {
        if self.eat_words(words) {
            Ok(())
        } else {
            Err(format!(
                "syntax error: expected {}",
                words.join(" ").to_uppercase()
            ))
        }
    }

    /// A possibly qualified name, as written.
    fn name(&mut self) -> Result<String, String> {
        let mut out = String::new();
        loop {
            match self.next() {
                Some(Token::Word(w)) => out.push_str(&Token::Word(w).to_string()),
                _ => return Err("syntax error: expected a name".into()),
            }
            if self.tokens.get(self.at) == Some(&Token::Period) {
                self.at += 1;
                out.push('.');
            } else {
                return Ok(out);
            }
        }
    }

    /// `( … )` as written, parentheses included.
    fn parenthesized(&mut self) -> Result<String, String> {
        if self.next() != Some(Token::LParen) {
            return Err("syntax error: expected (".into());
        }
        let (mut depth, mut out) = (1, String::from("("));
        while depth > 0 {
            let t = self
                .tokens
                .get(self.at)
                .cloned()
                .ok_or("syntax error: unbalanced parentheses")?;
            self.at += 1;
            match t {
                Token::LParen => depth += 1,
                Token::RParen => depth -= 1,
                _ => {}
            }
            out.push_str(&t.to_string());
        }
        Ok(out)
    }

    fn end(&mut self) -> Result<(), String> {
        match self.next() {
            None | Some(Token::SemiColon) | Some(Token::EOF) => Ok(()),
            Some(t) => Err(format!("syntax error at or near \"{t}\"")),
        }
    }
}

/// How a view is refreshed incrementally: by its bucket column, holding
/// `date_trunc(unit, time column)`.
#[derive(Debug, Clone, PartialEq)]
struct Buckets {
    /// The bucket's position among the view's columns.
    position: usize,
    unit: String,
    /// The time column as the query writes it.
    time: Expr,
}

/// The tiered table a query reads, and its buckets when it can be refreshed
/// incrementally.
fn analyze<'t>(
    query: &str,
    tables: &'t [Arc<TieredTable>],
) -> Option<(&'t Arc<TieredTable>, Option<Buckets>)> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, query).ok()?;
    let [statement] = statements.as_slice() else {
        return None;
    };
    let mut names = Vec::new();
    let _ = visit_relations(statement, |n| {
        names.push(n.clone());
        std::ops::ControlFlow::<()>::Continue(())
    });
    let last = |n: &datafusion::sql::sqlparser::ast::ObjectName| {
        n.0.last()
            .and_then(|p| p.as_ident())
            .map(|i| i.value.to_lowercase())
    };
    let tiered = names.iter().find_map(|n| {
        let table = last(n)?;
        tables.iter().find(|t| t.def.table == table)
    })?;
    Some((tiered, buckets(statement, tiered, names.len())))
}

fn buckets(statement: &Statement, t: &TieredTable, relations: usize) -> Option<Buckets> {
    let Statement::Query(q) = statement else {
        return None;
    };
    if relations != 1 || q.limit_clause.is_some() || q.fetch.is_some() || q.with.is_some() {
        return None;
    }
    let SetExpr::Select(select) = q.body.as_ref() else {
        return None;
    };
    let [from] = select.from.as_slice() else {
        return None;
    };
    if !from.joins.is_empty() || !matches!(from.relation, TableFactor::Table { .. }) {
        return None;
    }
    let text = statement.to_string().to_lowercase();
    if text.contains(" over ") || text.contains(" over(") {
        return None;
    }
    let GroupByExpr::Expressions(group, _) = &select.group_by else {
        return None;
    };
    let exprs: Vec<Option<&Expr>> = select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
            _ => None,
        })
        .collect();
    for g in group {
        // GROUP BY n names the n-th output column.
        let (expr, position) = match g {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => {
                    let i = n.parse::<usize>().ok()?.checked_sub(1)?;
                    ((*exprs.get(i)?)?, i)
                }
                _ => continue,
            },
            e => match exprs.iter().position(|p| *p == Some(e)) {
                Some(i) => (e, i),
                None => continue,
            },
        };
        if let Some((unit, time)) = date_trunc_of(expr, &t.time_column().name) {
            return Some(Buckets {
                position,
                unit,
                time,
            });
        }
    }
    None
}

/// `date_trunc('unit', <time column>)`: its unit and column expression.
fn date_trunc_of(e: &Expr, time_column: &str) -> Option<(String, Expr)> {
    let Expr::Function(f) = e else {
        return None;
    };
    let name = f.name.0.last()?.as_ident()?.value.to_lowercase();
    if name != "date_trunc" || f.over.is_some() || f.filter.is_some() {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let [
        FunctionArg::Unnamed(FunctionArgExpr::Expr(unit)),
        FunctionArg::Unnamed(FunctionArgExpr::Expr(time)),
    ] = list.args.as_slice()
    else {
        return None;
    };
    let unit = match unit {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => s.to_lowercase(),
            _ => return None,
        },
        _ => return None,
    };
    let column = match time {
        Expr::Identifier(i) => i.value.to_lowercase(),
        Expr::CompoundIdentifier(parts) => parts.last()?.value.to_lowercase(),
        _ => return None,
    };
    (column == time_column.to_lowercase()).then(|| (unit, time.clone()))
}

/// `query` with `time >= bound` added to its WHERE clause.
fn from_bound(query: &str, time: &Expr, bound: &str) -> Option<String> {
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, query).ok()?;
    let Some(Statement::Query(q)) = statements.first_mut() else {
        return None;
    };
    let SetExpr::Select(select) = q.body.as_mut() else {
        return None;
    };
    let bound = Parser::new(&PostgreSqlDialect {})
        .try_with_sql(bound)
        .ok()?
        .parse_expr()
        .ok()?;
    let condition = Expr::BinaryOp {
        left: Box::new(time.clone()),
        op: BinaryOperator::GtEq,
        right: Box::new(bound),
    };
    select.selection = Some(match select.selection.take() {
        Some(existing) => Expr::BinaryOp {
            left: Box::new(Expr::Nested(Box::new(existing))),
            op: BinaryOperator::And,
            right: Box::new(condition),
        },
        None => condition,
    });
    Some(statements[0].to_string())
}

/// Answers a materialized-view command.
pub(super) async fn answer(
    mut link: PgLink,
    out: &mut Out<'_>,
    sql: &str,
    federation: &Federation,
    settings: &SessionSettings,
    cancel: &SessionCancel,
) -> Option<PgLink> {
    let command = match parse(sql) {
        Ok(c) => c,
        Err(message) => {
            // A form this parser does not know, over a tiered table: refused,
            // rather than left to Postgres, which would see hot rows only.
            let lower = sql.to_lowercase();
            if lower.trim_start().starts_with("create")
                && federation
                    .tables
                    .iter()
                    .any(|t| lower.contains(&t.def.table.to_lowercase()))
            {
                return refuse(
                    link,
                    out,
                    ErrorFields::error(
                        "0A000",
                        format!(
                            "{message}: a materialized view over a tiered table is written \
                             CREATE MATERIALIZED VIEW [IF NOT EXISTS] name [(columns)] \
                             [WITH (options)] AS query [WITH [NO] DATA]"
                        ),
                    ),
                )
                .await;
            }
            // Postgres reports the syntax error.
            return relay_query(link, out, sql).await;
        }
    };
    // Ours only when it concerns a tiered table or a view kept here.
    let ours = match &command {
        Command::Create(c) => analyze(&c.query, &federation.tables).is_some(),
        Command::Refresh { name, .. } => match definition(&mut link, name).await {
            Ok(d) => d.is_some(),
            Err(LinkError::Gone) => return None,
            Err(_) => false,
        },
        Command::Drop { names, .. } => {
            let mut any = false;
            for name in names {
                match definition(&mut link, name).await {
                    Ok(d) => any |= d.is_some(),
                    Err(LinkError::Gone) => return None,
                    Err(_) => {}
                }
            }
            any
        }
    };
    if !ours {
        return relay_query(link, out, sql).await;
    }
    let _slot = match federation.limits.federated_slot(cancel).await {
        Ok(slot) => slot,
        Err(e) => return refuse(link, out, e).await,
    };
    let own_transaction = link.txn_status == b'I';
    // One snapshot for every query of the command, as for a read.
    if own_transaction
        && link
            .simple("BEGIN ISOLATION LEVEL REPEATABLE READ")
            .await
            .is_err()
    {
        return None;
    }
    let (link, outcome) = match command {
        Command::Create(c) => create(link, c, federation, settings, cancel, own_transaction).await,
        Command::Refresh { name, with_data } => {
            refresh(
                link,
                &name,
                with_data,
                federation,
                settings,
                cancel,
                own_transaction,
            )
            .await
        }
        Command::Drop {
            names,
            if_exists,
            cascade,
        } => drop_views(link, &names, if_exists, cascade).await,
    };
    let mut link = link?;
    match outcome {
        Ok(tag) => {
            let mut tag = tag.into_bytes();
            tag.push(0);
            crate::protocol::put_message(&mut out.buf, b'C', &tag);
            if own_transaction {
                match link.simple("COMMIT").await {
                    Ok(_) => {}
                    Err(LinkError::Postgres(e)) => out.error(e.encode()),
                    Err(_) => return None,
                }
            }
        }
        Err(error) => {
            if matches!(&error, Failure::Link(LinkError::Gone)) {
                return None;
            }
            out.error(error.encode());
            undo(&mut link, own_transaction).await?;
        }
    }
    finish(&mut link, out);
    Some(link)
}

/// A kept definition.
#[derive(Debug)]
struct Definition {
    /// `schema.name`, quoted.
    qualified: String,
    schema: String,
    name: String,
    query: String,
    time_zone: String,
    bucket_column: Option<String>,
    bucket_unit: Option<String>,
    hot_min: Option<String>,
    lake_checksums: Option<String>,
}

/// Runs a query and returns its rows' text cells (errors as `LinkError`).
async fn rows(link: &mut PgLink, sql: &str) -> Result<Vec<Vec<Option<String>>>, LinkError> {
    let messages = link.simple(sql).await?;
    Ok(messages
        .iter()
        .filter(|m| m.tag == b'D')
        .filter_map(|m| link::data_row_fields(&m.body))
        .map(|fields| {
            fields
                .into_iter()
                .map(|f| f.map(|v| String::from_utf8_lossy(v).into_owned()))
                .collect()
        })
        .collect())
}

/// The definition kept for the relation `name` resolves to, if any.
async fn definition(link: &mut PgLink, name: &str) -> Result<Option<Definition>, LinkError> {
    let kept = rows(
        link,
        &format!(
            "SELECT pg_catalog.to_regclass({}) IS NOT NULL",
            quote_literal(DEFINITIONS)
        ),
    )
    .await?;
    if kept.first().and_then(|r| r[0].as_deref()) != Some("t") {
        return Ok(None);
    }
    let found = rows(
        link,
        &format!(
            "SELECT d.view_schema, d.view_name, d.definition, d.time_zone, d.bucket_column, \
                    d.bucket_unit, d.hot_min, d.lake_checksums \
             FROM {DEFINITIONS} d \
             JOIN pg_catalog.pg_class c ON c.relname = d.view_name \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace AND n.nspname = d.view_schema \
             WHERE c.oid = pg_catalog.to_regclass({})",
            quote_literal(name)
        ),
    )
    .await?;
    Ok(found.into_iter().next().map(|r| {
        let get = |i: usize| r.get(i).cloned().flatten();
        let (schema, name) = (get(0).unwrap_or_default(), get(1).unwrap_or_default());
        Definition {
            qualified: format!(
                "{}.{}",
                crate::catalog::quote_ident(&schema),
                crate::catalog::quote_ident(&name)
            ),
            schema,
            name,
            query: get(2).unwrap_or_default(),
            time_zone: get(3).unwrap_or_else(|| "UTC".into()),
            bucket_column: get(4),
            bucket_unit: get(5),
            hot_min: get(6),
            lake_checksums: get(7),
        }
    }))
}

type Outcome = (Option<PgLink>, Result<String, Failure>);

/// Runs `f` on the link, turning a lost link into `None`.
macro_rules! on_link {
    ($link:ident, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(LinkError::Gone) => return (None, Err(Failure::Link(LinkError::Gone))),
            Err(e) => return (Some($link), Err(Failure::Link(e))),
        }
    };
}

async fn create(
    mut link: PgLink,
    c: Create,
    federation: &Federation,
    settings: &SessionSettings,
    cancel: &SessionCancel,
    own_snapshot: bool,
) -> Outcome {
    let Some((tiered, buckets)) = analyze(&c.query, &federation.tables) else {
        return (Some(link), Err(internal("not a view over a tiered table")));
    };
    on_link!(link, link.simple(CREATE_DEFINITIONS).await);
    let exists = on_link!(
        link,
        rows(
            &mut link,
            &format!(
                "SELECT pg_catalog.to_regclass({}) IS NOT NULL",
                quote_literal(&c.name)
            )
        )
        .await
    );
    if c.if_not_exists && exists.first().and_then(|r| r[0].as_deref()) == Some("t") {
        let mut notice = ErrorFields::error(
            "42P07",
            format!("relation \"{}\" already exists, skipping", c.name),
        );
        notice.severity = "NOTICE";
        let mut m = notice.encode();
        m[0] = b'N';
        link.deferred.push(link::BackendMessage {
            tag: b'N',
            body: bytes::Bytes::copy_from_slice(&m[5..]),
        });
        return (Some(link), Ok("CREATE MATERIALIZED VIEW".into()));
    }
    let with = if c.storage.is_empty() {
        String::new()
    } else {
        format!(" WITH ({})", c.storage.join(", "))
    };
    on_link!(
        link,
        link.simple(&format!(
            "CREATE TABLE {}{} {with} AS {} WITH NO DATA",
            c.name,
            if c.columns.is_empty() {
                String::new()
            } else {
                format!(" {}", c.columns)
            },
            c.query
        ))
        .await
    );
    // Where it landed and what its bucket column is called.
    let place = on_link!(
        link,
        rows(
            &mut link,
            &format!(
                "SELECT n.nspname, c.relname, \
                        (SELECT array_agg(a.attname ORDER BY a.attnum)::text[] FROM pg_catalog.pg_attribute a \
                          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)::text \
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.oid = pg_catalog.to_regclass({})",
                quote_literal(&c.name)
            )
        )
        .await
    );
    let Some(place) = place.into_iter().next() else {
        return (
            Some(link),
            Err(internal("the view's table was not created")),
        );
    };
    let (schema, name) = (
        place[0].clone().unwrap_or_default(),
        place[1].clone().unwrap_or_default(),
    );
    let columns = column_names(place[2].as_deref().unwrap_or("{}"));
    let bucket_column = buckets
        .as_ref()
        .and_then(|b| columns.get(b.position).cloned());
    let definition = Definition {
        qualified: format!(
            "{}.{}",
            crate::catalog::quote_ident(&schema),
            crate::catalog::quote_ident(&name)
        ),
        schema: schema.clone(),
        name: name.clone(),
        query: c.query.clone(),
        time_zone: settings.time_zone.clone(),
        bucket_column: bucket_column.clone(),
        bucket_unit: buckets.as_ref().map(|b| b.unit.clone()),
        hot_min: None,
        lake_checksums: None,
    };
    let nullable = |v: Option<&String>| v.map_or("NULL".to_string(), |s| quote_literal(s));
    // A definition left by a table dropped with DROP TABLE goes first.
    on_link!(
        link,
        link.simple(&format!(
            "DELETE FROM {DEFINITIONS} WHERE view_schema = {} AND view_name = {}",
            quote_literal(&schema),
            quote_literal(&name)
        ))
        .await
    );
    on_link!(
        link,
        link.simple(&format!(
            "INSERT INTO {DEFINITIONS} (view_schema, view_name, definition, tiered_table, time_zone, \
                 bucket_column, bucket_unit, time_column, refresh_interval) \
             VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}::interval)",
            quote_literal(&schema),
            quote_literal(&name),
            quote_literal(&c.query),
            quote_literal(&tiered.def.qualified()),
            quote_literal(&settings.time_zone),
            nullable(bucket_column.as_ref()),
            nullable(buckets.as_ref().map(|b| &b.unit)),
            nullable(buckets.as_ref().map(|b| b.time.to_string()).as_ref()),
            nullable(c.refresh_interval.as_ref()),
        ))
        .await
    );
    if !c.with_data {
        return (Some(link), Ok("CREATE MATERIALIZED VIEW".into()));
    }
    let (link, outcome) = fill(
        link,
        &definition,
        tiered,
        false,
        federation,
        settings,
        cancel,
        own_snapshot,
    )
    .await;
    (link, outcome.map(|(rows, _)| format!("SELECT {rows}")))
}

/// `{a,"b c"}` as Postgres writes a text array: its elements.
fn column_names(array: &str) -> Vec<String> {
    let inner = array.trim_start_matches('{').trim_end_matches('}');
    split_top_level(&inner.replace('"', "'"))
        .into_iter()
        .map(|s| s.trim().trim_matches('\'').to_string())
        .collect()
}

async fn refresh(
    mut link: PgLink,
    name: &str,
    with_data: bool,
    federation: &Federation,
    settings: &SessionSettings,
    cancel: &SessionCancel,
    own_snapshot: bool,
) -> Outcome {
    let Some(d) = on_link!(link, definition(&mut link, name).await) else {
        return (Some(link), Err(internal("no such materialized view")));
    };
    let Some((tiered, _)) = analyze(&d.query, &federation.tables) else {
        return (
            Some(link),
            Err(Failure::Ours(ErrorFields::error(
                "0A000",
                format!(
                    "materialized view {} no longer reads a tiered table of this server",
                    d.qualified
                ),
            ))),
        );
    };
    if !with_data {
        on_link!(
            link,
            link.simple(&format!("DELETE FROM {}", d.qualified)).await
        );
        return (Some(link), Ok("REFRESH MATERIALIZED VIEW".into()));
    }
    let (link, outcome) = fill(
        link,
        &d,
        tiered,
        true,
        federation,
        settings,
        cancel,
        own_snapshot,
    )
    .await;
    (link, outcome.map(|_| "REFRESH MATERIALIZED VIEW".into()))
}

async fn drop_views(mut link: PgLink, names: &[String], if_exists: bool, cascade: bool) -> Outcome {
    let cascade = if cascade { " CASCADE" } else { "" };
    let if_exists = if if_exists { " IF EXISTS" } else { "" };
    for name in names {
        match on_link!(link, definition(&mut link, name).await) {
            Some(d) => {
                on_link!(
                    link,
                    link.simple(&format!("DROP TABLE {}{cascade}", d.qualified))
                        .await
                );
                on_link!(
                    link,
                    link.simple(&format!(
                        "DELETE FROM {DEFINITIONS} WHERE view_schema = {} AND view_name = {}",
                        quote_literal(&d.schema),
                        quote_literal(&d.name)
                    ))
                    .await
                );
            }
            None => {
                on_link!(
                    link,
                    link.simple(&format!(
                        "DROP MATERIALIZED VIEW{if_exists} {name}{cascade}"
                    ))
                    .await
                );
            }
        }
    }
    (Some(link), Ok("DROP MATERIALIZED VIEW".into()))
}

fn internal(message: &str) -> Failure {
    Failure::Ours(ErrorFields::error("XX000", message))
}

/// Computes the view (incrementally when `incremental` and it can be) and
/// writes its rows; records the refresh. Returns the rows written and
/// whether it was incremental. `own_snapshot`: the command runs in a
/// REPEATABLE READ transaction of its own.
#[allow(clippy::too_many_arguments)]
async fn fill(
    mut link: PgLink,
    d: &Definition,
    tiered: &TieredTable,
    incremental: bool,
    federation: &Federation,
    settings: &SessionSettings,
    cancel: &SessionCancel,
    own_snapshot: bool,
) -> (Option<PgLink>, Result<(u64, &'static str), Failure>) {
    let started = Instant::now();
    // The view is computed in the time zone it was created in.
    let session_zone = settings.time_zone.clone();
    let mut settings = settings.clone();
    let zone_changed = settings.time_zone != d.time_zone;
    if zone_changed {
        on_link!(
            link,
            link.simple(&format!(
                "SET LOCAL TimeZone = {}",
                quote_literal(&d.time_zone)
            ))
            .await
        );
        settings.time_zone = d.time_zone.clone();
    }
    // What the lake holds before the view is computed: a change after this
    // is seen by the next refresh.
    let checksums = match federation.lake.load(tiered).await {
        Ok(Some(table)) => crate::tiering::verify::recorded_checksums(&table)
            .map(|c| crate::tiering::verify::encode_checksums(&c)),
        _ => None,
    };
    let time = crate::catalog::quote_ident(&tiered.time_column().name);
    let mut query = d.query.clone();
    let mut kind = "full";
    let mut delete = format!("DELETE FROM {}", d.qualified);
    if incremental
        && let (Some(column), Some(unit)) = (&d.bucket_column, &d.bucket_unit)
        && let Some(from) = changed_since(&mut link, d, tiered, checksums.as_deref(), &time).await
    {
        let from = match from {
            Ok(from) => from,
            Err(e) => return (None, Err(Failure::Link(e))),
        };
        let Some((_, Some(buckets))) = analyze(&d.query, &federation.tables) else {
            return (Some(link), Err(internal("the view's buckets changed")));
        };
        match from {
            // Nothing changed since the last refresh.
            None => {
                query.clear();
                kind = "unchanged";
            }
            Some(from) => {
                let bound = on_link!(
                    link,
                    rows(
                        &mut link,
                        &format!(
                            "SELECT pg_catalog.date_trunc({}, {}::{})::text, \
                                    pg_catalog.pg_typeof(pg_catalog.date_trunc({}, {}::{}))::text",
                            quote_literal(unit),
                            quote_literal(&from),
                            time_type(tiered),
                            quote_literal(unit),
                            quote_literal(&from),
                            time_type(tiered)
                        )
                    )
                    .await
                );
                let (Some(b), Some(t)) = (
                    bound.first().and_then(|r| r[0].clone()),
                    bound.first().and_then(|r| r[1].clone()),
                ) else {
                    return (Some(link), Err(internal("no bucket bound")));
                };
                let literal = format!("{}::{t}", quote_literal(&b));
                let Some(bounded) = from_bound(&d.query, &buckets.time, &literal) else {
                    return (Some(link), Err(internal("cannot bound the view's query")));
                };
                query = bounded;
                delete = format!(
                    "DELETE FROM {} WHERE {} >= {literal}",
                    d.qualified,
                    crate::catalog::quote_ident(column)
                );
                kind = "incremental";
            }
        }
    }
    let mut written = 0;
    if !query.is_empty() {
        let (back, computed) =
            rows_of(link, &query, federation, &settings, cancel, own_snapshot).await;
        let Some(back) = back else {
            return (None, Err(Failure::Link(LinkError::Gone)));
        };
        link = back;
        let tuples = match computed {
            Ok(t) => t,
            Err(e) => return (Some(link), Err(e)),
        };
        on_link!(link, link.simple(&delete).await);
        written = on_link!(link, copy_in(&mut link, &d.qualified, &tuples).await);
    }
    let hot_min = on_link!(
        link,
        rows(
            &mut link,
            &format!("SELECT min({time})::text FROM {}", tiered.def.qualified())
        )
        .await
    );
    let hot_min = hot_min.first().and_then(|r| r[0].clone());
    let nullable = |v: Option<&String>| v.map_or("NULL".to_string(), |s| quote_literal(s));
    on_link!(
        link,
        link.simple(&format!(
            "UPDATE {DEFINITIONS} SET last_refresh = now(), last_refresh_kind = {}, \
                 last_refresh_ms = {}, last_refresh_rows = {written}, hot_min = {}, lake_checksums = {} \
             WHERE view_schema = {} AND view_name = {}",
            quote_literal(kind),
            started.elapsed().as_secs_f64() * 1000.0,
            nullable(hot_min.as_ref()),
            nullable(checksums.as_ref()),
            quote_literal(&d.schema),
            quote_literal(&d.name),
        ))
        .await
    );
    if zone_changed {
        on_link!(
            link,
            link.simple(&format!(
                "SET LOCAL TimeZone = {}",
                quote_literal(&session_zone)
            ))
            .await
        );
    }
    (Some(link), Ok((written, kind)))
}

/// The SQL type of a tiered table's time column.
fn time_type(t: &TieredTable) -> &'static str {
    match t.time_column().pg_type {
        crate::pgtypes::PgType::Date => "date",
        crate::pgtypes::PgType::Timestamp => "timestamp",
        _ => "timestamptz",
    }
}

/// The earliest time whose rows may have changed since the view's last
/// refresh: `None` inside when nothing changed; `None` outside when it
/// cannot be told (a full refresh is needed).
async fn changed_since(
    link: &mut PgLink,
    d: &Definition,
    tiered: &TieredTable,
    checksums: Option<&str>,
    time: &str,
) -> Option<Result<Option<String>, LinkError>> {
    let (before, now) = (d.lake_checksums.as_deref()?, checksums?);
    let (before, now) = (parse_checksums(before), parse_checksums(now));
    let by = tiered.def.partition_by;
    let mut earliest: Option<i64> = None;
    for (p, tally) in &now {
        if before.get(p) != Some(tally) {
            let start = crate::tiering::verify::partition_start(by, *p);
            earliest = Some(earliest.map_or(start, |e| e.min(start)));
        }
    }
    for p in before.keys() {
        if !now.contains_key(p) {
            let start = crate::tiering::verify::partition_start(by, *p);
            earliest = Some(earliest.map_or(start, |e| e.min(start)));
        }
    }
    // Hot rows: the earliest now, and the earliest at the last refresh.
    let ty = time_type(tiered);
    let lake = earliest
        .map(|us| {
            let instant = format!("pg_catalog.to_timestamp({})", us as f64 / 1_000_000.0);
            match ty {
                "timestamptz" => instant,
                // The lake keeps dates and timestamps without zone as if
                // they were UTC.
                _ => format!("({instant} AT TIME ZONE 'UTC')::{ty}"),
            }
        })
        .unwrap_or_else(|| "NULL".into());
    let before_hot = d.hot_min.as_ref().map_or("NULL".to_string(), |v| {
        format!("{}::{ty}", quote_literal(v))
    });
    let least = rows(
        link,
        &format!(
            "SELECT LEAST((SELECT min({time}) FROM {}), {before_hot}, {lake})::text",
            tiered.def.qualified()
        ),
    )
    .await;
    Some(least.map(|r| r.into_iter().next().and_then(|r| r[0].clone())))
}

fn parse_checksums(text: &str) -> std::collections::BTreeMap<i64, String> {
    text.split(';')
        .filter_map(|p| p.split_once('='))
        .filter_map(|(p, t)| Some((p.parse().ok()?, t.to_string())))
        .collect()
}

/// Runs `sql` federated and returns its rows as COPY binary tuples.
async fn rows_of(
    mut link: PgLink,
    sql: &str,
    federation: &Federation,
    settings: &SessionSettings,
    cancel: &SessionCancel,
    own_snapshot: bool,
) -> (Option<PgLink>, Result<Vec<u8>, Failure>) {
    let mut msgs = Vec::new();
    link::frontend::parse(&mut msgs, "", sql);
    link::frontend::describe(&mut msgs, b'S', "");
    crate::protocol::put_message(&mut msgs, b'S', b"");
    if link.send(&msgs).await.is_err() {
        return (None, Err(Failure::Link(LinkError::Gone)));
    }
    let described = on_link!(link, link.until_ready().await);
    let Some(fields) = described
        .iter()
        .find(|m| m.tag == b'T')
        .and_then(|m| link::row_description(&m.body))
    else {
        return (
            Some(link),
            Err(internal("the view's query returns no rows")),
        );
    };
    let tz = match settings.zone() {
        Ok(tz) => tz,
        Err(e) => return (Some(link), Err(Failure::Ours(e))),
    };
    let fixed_snapshot = link.txn_status == b'T' && own_snapshot;
    let shared = Arc::new(Mutex::new(link));
    let mut ctx = ScanContext::new(shared.clone(), crate::pgtypes::executor_zone(tz));
    ctx.fixed_snapshot = fixed_snapshot;
    let ctx = Arc::new(ctx);
    let text = TextSettings {
        time_zone: tz,
        extra_float_digits: settings.extra_float_digits,
    };
    let run = Run {
        sql,
        fields: &fields,
        formats: vec![1; fields.len()],
        params: Vec::new(),
        row_description: false,
        limit: None,
        user: &settings.user,
    };
    let sink = Collect::default();
    let mut w: crate::stream::WriteHalf = Box::new(sink.clone());
    let mut o = Out::new(&mut w);
    let seen = cancel.count();
    let outcome = tokio::select! {
        r = execute(&run, &ctx, federation, &text, &mut o) => r,
        () = cancel.after(seen) => Err(cancelled()),
    };
    o.flush().await;
    drop(ctx);
    let Some(mut link) = take_back(shared).await else {
        return (None, Err(Failure::Link(LinkError::Gone)));
    };
    if link.recover().await.is_err() || close_cursors(&mut link).await.is_none() {
        return (None, Err(Failure::Link(LinkError::Gone)));
    }
    if let Err(e) = outcome {
        return (Some(link), Err(e));
    }
    let data_rows = std::mem::take(&mut *sink.0.lock().unwrap_or_else(|e| e.into_inner()));
    (Some(link), Ok(data_rows))
}

/// Writes DataRow messages (binary cells) into `table` by COPY; returns
/// the rows written.
async fn copy_in(link: &mut PgLink, table: &str, data_rows: &[u8]) -> Result<u64, LinkError> {
    let mut q = Vec::new();
    link::frontend::query(&mut q, &format!("COPY {table} FROM STDIN (FORMAT binary)"));
    link.send(&q).await?;
    loop {
        let m = link.recv().await?;
        match m.tag {
            b'G' => break,
            b'E' => {
                link.until_ready().await?;
                return Err(LinkError::Postgres(m));
            }
            b'N' => {}
            _ => link.deferred.push(m),
        }
    }
    // COPY's binary format: a header, then each row as a DataRow's body.
    let mut data = Vec::with_capacity(data_rows.len() + 64);
    data.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    data.extend_from_slice(&0i32.to_be_bytes());
    data.extend_from_slice(&0i32.to_be_bytes());
    let mut at = 0;
    let mut rows = 0u64;
    while at + 5 <= data_rows.len() {
        let len = u32::from_be_bytes([
            data_rows[at + 1],
            data_rows[at + 2],
            data_rows[at + 3],
            data_rows[at + 4],
        ]) as usize;
        data.extend_from_slice(&data_rows[at + 5..at + 1 + len]);
        at += 1 + len;
        rows += 1;
    }
    data.extend_from_slice(&(-1i16).to_be_bytes());
    let mut out = Vec::with_capacity(data.len() + 64);
    for chunk in data.chunks(1 << 20) {
        crate::protocol::put_message(&mut out, b'd', chunk);
        if out.len() >= 4 << 20 {
            link.send(&out).await?;
            out.clear();
        }
    }
    crate::protocol::put_message(&mut out, b'c', b"");
    link.send(&out).await?;
    link.until_ready().await?;
    Ok(rows)
}

/// An in-memory writer for a statement's DataRows.
#[derive(Clone, Default)]
struct Collect(Arc<std::sync::Mutex<Vec<u8>>>);

impl tokio::io::AsyncWrite for Collect {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Refreshes the views of `database` whose `thermocline.refresh_interval`
/// has passed since their last refresh (found on `service`, a service
/// connection to that database), through the server listening at `addr`,
/// each as its owner. Returns how many were refreshed. With
/// several servers in front of one database, each view is refreshed by
/// one of them at a time (a transaction-level advisory lock on the view).
pub(crate) async fn refresh_due(
    target: &crate::backend::target::BackendTarget,
    service: &tokio_postgres::Client,
    database: &str,
    addr: std::net::SocketAddr,
) -> Result<usize, String> {
    const DUE: &str = "SELECT pg_catalog.format('%I.%I', d.view_schema, d.view_name), \
                pg_catalog.pg_get_userbyid(c.relowner) \
         FROM thermocline.materialized_views d \
         JOIN pg_catalog.pg_namespace n ON n.nspname = d.view_schema \
         JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = d.view_name \
         WHERE d.refresh_interval IS NOT NULL \
           AND (d.last_refresh IS NULL OR d.last_refresh + d.refresh_interval <= now())";
    let due = match service
        .query(
            "SELECT pg_catalog.to_regclass('thermocline.materialized_views') IS NOT NULL",
            &[],
        )
        .await
    {
        Ok(r) if r.first().is_some_and(|r| r.get::<_, bool>(0)) => {
            service.query(DUE, &[]).await.map_err(|e| e.to_string())?
        }
        Ok(_) => return Ok(0),
        Err(e) => return Err(e.to_string()),
    };
    let mut refreshed = 0;
    for row in due {
        let (view, owner): (String, String) = (row.get(0), row.get(1));
        let mut config = tokio_postgres::Config::new();
        config
            .host(addr.ip().to_string())
            .port(addr.port())
            .user(target.user.as_deref().unwrap_or("postgres"))
            .dbname(database)
            .application_name("thermocline refresh");
        if let Some(p) = &target.password {
            config.password(p);
        }
        let (client, conn) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        let conn = tokio::spawn(conn);
        let result = async {
            client
                .batch_execute(&format!(
                    "SET ROLE {}; BEGIN",
                    crate::catalog::quote_ident(&owner)
                ))
                .await?;
            let go = client
                .query_one(
                    &format!(
                        "SELECT pg_catalog.pg_try_advisory_xact_lock(pg_catalog.to_regclass($1)::oid::bigint) \
                            AND EXISTS ({DUE} AND pg_catalog.format('%I.%I', d.view_schema, d.view_name) = $1)"
                    ),
                    &[&view],
                )
                .await?
                .get::<_, bool>(0);
            if go {
                client
                    .batch_execute(&format!("REFRESH MATERIALIZED VIEW {view}"))
                    .await?;
            }
            client.batch_execute("COMMIT").await?;
            Ok::<bool, tokio_postgres::Error>(go)
        }
        .await;
        drop(client);
        let _ = conn.await;
        match result {
            Ok(true) => {
                refreshed += 1;
                tracing::info!(view = %view, database, "refreshed a materialized view");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(view = %view, database, error = %e, "refreshing a materialized view failed")
            }
        }
    }
    Ok(refreshed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        let Command::Create(c) = parse(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS s.\"Monthly\" (m, n) \
             WITH (thermocline.refresh_interval = '5 minutes', fillfactor = 70) AS \
             SELECT date_trunc('month', t) AS m, count(*) FROM orders GROUP BY 1 WITH NO DATA;",
        )
        .unwrap() else {
            panic!("not a create")
        };
        assert_eq!(c.name, "s.\"Monthly\"");
        assert!(c.if_not_exists && !c.with_data);
        assert_eq!(c.columns, "(m, n)");
        assert_eq!(c.refresh_interval.as_deref(), Some("5 minutes"));
        assert_eq!(c.storage, vec!["fillfactor = 70"]);
        assert_eq!(
            c.query,
            "SELECT date_trunc('month', t) AS m, count(*) FROM orders GROUP BY 1"
        );
        assert_eq!(
            parse("refresh materialized view concurrently v with no data").unwrap(),
            Command::Refresh {
                name: "v".into(),
                with_data: false
            }
        );
        assert_eq!(
            parse("DROP MATERIALIZED VIEW IF EXISTS a, b.c CASCADE").unwrap(),
            Command::Drop {
                names: vec!["a".into(), "b.c".into()],
                if_exists: true,
                cascade: true
            }
        );
        assert!(parse("REFRESH MATERIALIZED VIEW v junk").is_err());
        assert!(may_be_command("-- x\n  Refresh  Materialized View v"));
        assert!(!may_be_command("SELECT 1"));
    }

    #[test]
    fn bounds_are_added_to_the_where_clause() {
        let time = Expr::Identifier("created_at".into());
        assert_eq!(
            from_bound(
                "SELECT date_trunc('month', created_at), count(*) FROM orders WHERE status = 'paid' GROUP BY 1",
                &time,
                "'2026-01-01'::timestamptz"
            )
            .unwrap(),
            "SELECT date_trunc('month', created_at), count(*) FROM orders WHERE (status = 'paid') AND created_at >= '2026-01-01'::TIMESTAMPTZ GROUP BY 1"
        );
    }
}
