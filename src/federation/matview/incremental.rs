//! What an incremental refresh recomputes: the time buckets of a view
//! from the earliest time whose rows may have changed.

use std::sync::Arc;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, SelectItem,
    SetExpr, Statement, TableFactor, Value, visit_relations,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::{Definition, rows, time_type};
use crate::federation::link::{LinkError, PgLink, quote_literal};
use crate::tiering::TieredTable;

/// How a view is refreshed incrementally: by its bucket column, holding
/// `date_trunc(unit, time column)`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Buckets {
    /// The bucket's position among the view's columns.
    pub position: usize,
    pub unit: String,
    /// The time column as the query writes it.
    pub time: Expr,
}

/// The tiered table a query reads, and its buckets when it can be refreshed
/// incrementally.
pub(super) fn analyze<'t>(
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
pub(super) fn from_bound(query: &str, time: &Expr, bound: &str) -> Option<String> {
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

/// The earliest time whose rows may have changed since the view's last
/// refresh: `None` inside when nothing changed; `None` outside when it
/// cannot be told (a full refresh is needed).
pub(super) async fn changed_since(
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

#[cfg(test)]
mod tests {
    use super::*;

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
