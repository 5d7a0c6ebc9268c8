//! What the executor may answer: a federated statement runs only when its
//! answer is certain to equal Postgres's, and is refused with 0A000
//! otherwise — never answered differently.
//!
//! Two checks, before anything runs: every function is one whose results
//! match Postgres's for the types involved, and every `numeric` column whose
//! scale Postgres picks per value (typmod -1) is a plain column or a
//! sum/min/max of one (whose scale is the column's).

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;

use datafusion::sql::sqlparser::ast::{
    DateTimeField, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, SelectItem, SetExpr,
    Statement, visit_expressions,
};

use super::link::FieldDescription;
use crate::pgtypes::oid;

/// The aggregates among [`FUNCTIONS`] (`array_agg` too).
pub(super) const AGGREGATES: &[&str] = &[
    "avg",
    "count",
    "sum",
    "min",
    "max",
    "bool_and",
    "bool_or",
    "every",
    "array_agg",
];

/// Functions whose results equal Postgres's for the column types a tiered
/// table holds (`avg` through [`super::average`]), besides
/// [`AGGREGATES`]. Anything else is refused (for example `round`, whose
/// ties differ for float8). `to_char` is [`super::tochar`]'s, which
/// refuses what it does not write.
const FUNCTIONS: &[&str] = &[
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "upper",
    "lower",
    "length",
    "char_length",
    "character_length",
    "abs",
    "date_trunc",
    "to_char",
    "now",
    "current_date",
    "current_timestamp",
    "left",
    "right",
    "btrim",
    "ltrim",
    "rtrim",
    "replace",
    "strpos",
    "concat",
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "cardinality",
    "array_length",
    "array_to_string",
    "array_position",
    "unnest",
    "array_cat",
    "array_append",
    "array_prepend",
    "array_replace",
];

/// `extract` fields whose Postgres result (numeric) is always integral.
fn integral_field(field: &DateTimeField) -> bool {
    matches!(
        field,
        DateTimeField::Year
            | DateTimeField::Month
            | DateTimeField::Day
            | DateTimeField::Hour
            | DateTimeField::Minute
            | DateTimeField::Quarter
            | DateTimeField::Dow
            | DateTimeField::Doy
            | DateTimeField::Isodow
    )
}

/// A function's name, without its schema, as [`FUNCTIONS`] and
/// [`AGGREGATES`] list it.
pub(super) fn function_name(f: &datafusion::sql::sqlparser::ast::Function) -> String {
    f.name
        .0
        .last()
        .map(|p| p.to_string().trim_matches('"').to_lowercase())
        .unwrap_or_default()
}

fn refuse(message: String) -> Result<(), String> {
    Err(format!(
        "{message} is not supported yet in reads of the history of a tiered table"
    ))
}

/// Checks a statement about to be federated; gives the output columns
/// computed in numeric (to be written at Postgres's scale per value, see
/// `numeric`). `Err` carries the message of a 0A000 error.
pub(crate) fn check(
    statement: &Statement,
    fields: &[FieldDescription],
) -> Result<Vec<usize>, String> {
    let mut verdict = Ok(());
    let _ = visit_expressions(statement, |e: &Expr| {
        let v = match e {
            Expr::Function(f) => {
                let name = function_name(f);
                if FUNCTIONS.contains(&name.as_str())
                    || AGGREGATES.contains(&name.as_str())
                    || super::json::FUNCTION_NAMES.contains(&name.as_str())
                    || (name == "round" && super::numeric::round_form(f))
                    || (name == "ntile" && ntile_of(f).is_some())
                {
                    Ok(())
                } else {
                    refuse(format!("function {name}()"))
                }
            }
            Expr::Extract { field, .. }
                if !integral_field(field) && *field != DateTimeField::Epoch =>
            {
                refuse(format!("extract({field} from …)"))
            }
            _ => Ok(()),
        };
        match v {
            Ok(()) => ControlFlow::Continue(()),
            Err(m) => {
                verdict = Err(m);
                ControlFlow::Break(())
            }
        }
    });
    verdict?;
    if let Some(what) = super::arrays::subscript_refusal(statement) {
        return refuse(what).map(|()| Vec::new());
    }
    Ok(fields
        .iter()
        .enumerate()
        .filter(|(i, f)| {
            f.type_oid == oid::NUMERIC && f.typmod < 0 && !plain_numeric(statement, *i)
        })
        .map(|(i, _)| i)
        .collect())
}

/// The 0A000 message for a computed numeric column not written exactly.
pub(crate) fn computed_numeric(f: &FieldDescription) -> String {
    format!(
        "a computed numeric column ({:?}) is not supported yet in reads of the history of a tiered table",
        f.name
    )
}

/// True when output column `i` of the statement is a column reference or a
/// sum/min/max of one.
fn plain_numeric(statement: &Statement, i: usize) -> bool {
    let query = match statement {
        Statement::Query(q) => q,
        Statement::Explain { .. } => return true,
        _ => return false,
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    if select.projection.iter().any(|p| {
        matches!(
            p,
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
        )
    }) {
        return false;
    }
    let expr = match select.projection.get(i) {
        Some(SelectItem::UnnamedExpr(e)) | Some(SelectItem::ExprWithAlias { expr: e, .. }) => e,
        _ => return false,
    };
    plain(expr)
}

/// A column reference, or sum/min/max (windowed too) of a plain expression:
/// its numeric scale is the column's.
fn plain(e: &Expr) -> bool {
    match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => true,
        Expr::Nested(inner) => plain(inner),
        Expr::Function(f) => {
            let name = f.name.to_string().to_lowercase();
            let FunctionArguments::List(args) = &f.args else {
                return false;
            };
            matches!(name.as_str(), "sum" | "min" | "max" | "avg")
                && args.args.len() == 1
                && matches!(&args.args[0], FunctionArg::Unnamed(FunctionArgExpr::Expr(a)) if plain(a))
        }
        _ => false,
    }
}

/// The first reason a planned statement cannot be answered exactly, from
/// `sort_key` (each key of each sort) or `expr` (every expression of every
/// node, nested ones too), each given the schemas of the node's inputs.
pub(super) fn first_refusal(
    plan: &datafusion::logical_expr::LogicalPlan,
    sort_key: impl Fn(&datafusion::logical_expr::Expr, &[&DFSchema]) -> Option<String>,
    expr: impl Fn(&datafusion::logical_expr::Expr, &[&DFSchema]) -> Option<String>,
) -> Option<String> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::LogicalPlan;
    let mut found = None;
    // Subqueries' plans too: what they compute flows into the statement.
    let _ = plan.apply_with_subqueries(|node| {
        let inputs: Vec<&DFSchema> = node.inputs().iter().map(|i| i.schema().as_ref()).collect();
        if let LogicalPlan::Sort(sort) = node {
            found = sort.expr.iter().find_map(|s| sort_key(&s.expr, &inputs));
        }
        for e in node.expressions() {
            if found.is_some() {
                break;
            }
            let _ = e.apply(|x| {
                found = expr(x, &inputs);
                Ok(if found.is_some() {
                    TreeNodeRecursion::Stop
                } else {
                    TreeNodeRecursion::Continue
                })
            });
        }
        Ok(if found.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

/// Plans `sql`. Postgres allows two output columns of the same name
/// (`SELECT id, id`, `count(*), count(*)`); the executor does not. When it
/// refuses one for that, the later columns of a name are renamed (the
/// client sees Postgres's names, from its RowDescription) and it plans
/// again.
pub(super) async fn plan_sql(
    session: &datafusion::prelude::SessionContext,
    sql: &str,
    interval_columns: &[String],
) -> datafusion::common::Result<datafusion::prelude::DataFrame> {
    let rewritten = executor_sql(sql);
    let sql = rewritten.as_deref().unwrap_or(sql);
    let summed = super::intervals::columns_as_postgres(sql, interval_columns);
    let sql = summed.as_deref().unwrap_or(sql);
    match session.sql(sql).await {
        Err(e)
            if e.to_string()
                .contains("Projections require unique expression names") =>
        {
            match unique_output_names(sql) {
                Some(renamed) => session.sql(&renamed).await,
                None => Err(e),
            }
        }
        planned => planned,
    }
}

/// `sql` as the executor plans it, when that differs: casts to json taken
/// off the JSON operators' operands, interval literals written with a
/// time of day (`'1 day 04:05:06.5'`) spelled with units instead,
/// `avg` computed as Postgres does, `AT TIME ZONE` as Postgres means it,
/// and `IS [NOT] DISTINCT FROM` read with Postgres's precedence (and
/// `IS [NOT] DISTINCT FROM NULL` as `IS [NOT] NULL`).
fn executor_sql(sql: &str) -> Option<String> {
    let lower = sql.to_ascii_lowercase();
    if ![
        "json",
        "interval",
        "avg",
        "epoch",
        "floor",
        "round",
        "zone",
        "array_length",
        "distinct",
        "ntile",
    ]
    .iter()
    .any(|w| lower.contains(w))
        && lower.matches("select").nth(1).is_none()
    {
        return None;
    }
    let mut statements = super::sqltext::parse(sql).ok()?;
    // First: the others rewrite what it collects.
    let single = super::subqueries::rewrite(&mut statements);
    let exists = super::subqueries::exists_in_select_lists(&mut statements);
    let json = super::json::strip_operand_casts(&mut statements);
    let intervals = interval_literals_with_units(&mut statements);
    let averages = super::average::rewrite(&mut statements);
    let numerics = super::numeric::rewrite(&mut statements);
    let zones = super::casts::at_time_zone_calls(&mut statements);
    let arrays = super::arrays::rewrite(&mut statements);
    let distinct = distinct_from_precedence(&mut statements);
    let nulls = distinct_from_null(&mut statements);
    let tiles = ntiles(&mut statements);
    (single
        || exists
        || json
        || intervals
        || averages
        || numerics
        || zones
        || arrays
        || distinct
        || nulls
        || tiles)
        .then(|| {
            statements
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        })
}

/// `ntile(n) OVER (...)` as Postgres fills its buckets, when `n` is a
/// positive whole number and the window is written in place: the
/// executor's own fills them in another order (10 rows in 4: 3, 2, 3, 2
/// rows, where Postgres puts 3, 3, 2, 2).
fn ntile_of(f: &datafusion::sql::sqlparser::ast::Function) -> Option<Expr> {
    use datafusion::sql::sqlparser::ast::{Value, WindowType};
    let Some(WindowType::WindowSpec(spec)) = &f.over else {
        return None;
    };
    if spec.window_name.is_some() || f.filter.is_some() {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    let [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))] = list.args.as_slice() else {
        return None;
    };
    let Value::Number(n, _) = &v.value else {
        return None;
    };
    let n: i64 = n.parse().ok().filter(|n| *n > 0)?;
    let partition = if spec.partition_by.is_empty() {
        String::new()
    } else {
        let p: Vec<String> = spec.partition_by.iter().map(|e| e.to_string()).collect();
        format!("PARTITION BY {}", p.join(", "))
    };
    let order = if spec.order_by.is_empty() {
        String::new()
    } else {
        let o: Vec<String> = spec.order_by.iter().map(|e| e.to_string()).collect();
        format!(" ORDER BY {}", o.join(", "))
    };
    // Row k of N: the first N % n buckets hold N / n + 1 rows, the others
    // N / n.
    let k = format!("CAST(row_number() OVER ({partition}{order}) AS BIGINT)");
    let total = format!("CAST(count(*) OVER ({partition}) AS BIGINT)");
    let (q, r) = (format!("({total} / {n})"), format!("({total} % {n})"));
    let sql = format!(
        "CAST(CASE WHEN {k} <= {r} * ({q} + 1) THEN ({k} - 1) / ({q} + 1) + 1 \
         ELSE {r} + ({k} - 1 - {r} * ({q} + 1)) / nullif({q}, 0) + 1 END AS INTEGER)"
    );
    parse_expr(&sql)
}

/// `sql`, one expression in Postgres's syntax, as the SQL parser reads it.
pub(super) fn parse_expr(sql: &str) -> Option<Expr> {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .ok()
}

/// Rewrites each `ntile` as [`ntile_of`] does; true when it rewrote any.
fn ntiles(statements: &mut Vec<Statement>) -> bool {
    use datafusion::sql::sqlparser::ast::visit_expressions_mut;
    let mut changed = false;
    let _ = visit_expressions_mut(statements, |e: &mut Expr| {
        if let Expr::Function(f) = e
            && function_name(f) == "ntile"
            && let Some(rewritten) = ntile_of(f)
        {
            *e = Expr::Nested(Box::new(rewritten));
            changed = true;
        }
        ControlFlow::<()>::Continue(())
    });
    changed
}

/// The executor's parser reads `a IS DISTINCT FROM b AND c` as
/// `a IS DISTINCT FROM (b AND c)`: the right operand of `IS [NOT]
/// DISTINCT FROM` takes in what follows. In Postgres `IS` binds tighter
/// than `AND`, `OR` and itself, and is left-associative. Rewrites each
/// such reading as Postgres's, the comparison in parentheses (which the
/// executor reads as written); true when it rewrote any.
fn distinct_from_precedence(statements: &mut Vec<Statement>) -> bool {
    use datafusion::sql::sqlparser::ast::{BinaryOperator, visit_expressions_mut};
    /// `left IS [NOT] DISTINCT FROM right`, with what `right` took in
    /// beyond its own operand put back outside.
    fn regroup(not: bool, left: Box<Expr>, right: Expr, changed: &mut bool) -> Expr {
        let outer = |operand: Expr, changed: &mut bool| {
            *changed = true;
            Box::new(Expr::Nested(Box::new(regroup(
                not,
                left.clone(),
                operand,
                changed,
            ))))
        };
        match right {
            Expr::BinaryOp {
                left: l,
                op: op @ (BinaryOperator::And | BinaryOperator::Or),
                right: r,
            } => Expr::BinaryOp {
                left: outer(*l, changed),
                op,
                right: r,
            },
            Expr::IsDistinctFrom(l, r) => Expr::IsDistinctFrom(outer(*l, changed), r),
            Expr::IsNotDistinctFrom(l, r) => Expr::IsNotDistinctFrom(outer(*l, changed), r),
            Expr::IsNull(e) => Expr::IsNull(outer(*e, changed)),
            Expr::IsNotNull(e) => Expr::IsNotNull(outer(*e, changed)),
            Expr::IsTrue(e) => Expr::IsTrue(outer(*e, changed)),
            Expr::IsNotTrue(e) => Expr::IsNotTrue(outer(*e, changed)),
            Expr::IsFalse(e) => Expr::IsFalse(outer(*e, changed)),
            Expr::IsNotFalse(e) => Expr::IsNotFalse(outer(*e, changed)),
            Expr::IsUnknown(e) => Expr::IsUnknown(outer(*e, changed)),
            Expr::IsNotUnknown(e) => Expr::IsNotUnknown(outer(*e, changed)),
            operand if not => Expr::IsNotDistinctFrom(left, Box::new(operand)),
            operand => Expr::IsDistinctFrom(left, Box::new(operand)),
        }
    }
    let mut changed = false;
    let _ = visit_expressions_mut(statements, |e: &mut Expr| {
        let taken = std::mem::replace(
            e,
            Expr::Value(datafusion::sql::sqlparser::ast::Value::Null.into()),
        );
        *e = match taken {
            Expr::IsDistinctFrom(l, r) => regroup(false, l, *r, &mut changed),
            Expr::IsNotDistinctFrom(l, r) => regroup(true, l, *r, &mut changed),
            other => other,
        };
        ControlFlow::<()>::Continue(())
    });
    changed
}

/// Rewrites `x IS [NOT] DISTINCT FROM NULL` (either way round) as
/// `x IS [NOT] NULL`, which it is; the executor cannot type the NULL
/// there. True when it rewrote any.
fn distinct_from_null(statements: &mut Vec<Statement>) -> bool {
    use datafusion::sql::sqlparser::ast::{Value, visit_expressions_mut};
    let null = |e: &Expr| matches!(e, Expr::Value(v) if v.value == Value::Null);
    let mut changed = false;
    let _ = visit_expressions_mut(statements, |e: &mut Expr| {
        let (Expr::IsDistinctFrom(a, b) | Expr::IsNotDistinctFrom(a, b)) = e else {
            return ControlFlow::<()>::Continue(());
        };
        let other = match (null(a), null(b)) {
            (false, true) => a.clone(),
            (true, false) => b.clone(),
            _ => return ControlFlow::Continue(()),
        };
        *e = match e {
            Expr::IsDistinctFrom(..) => Expr::IsNotNull(other),
            _ => Expr::IsNull(other),
        };
        changed = true;
        ControlFlow::Continue(())
    });
    changed
}

/// Rewrites interval literals with a time of day into units; true when
/// it rewrote any.
fn interval_literals_with_units(statements: &mut Vec<Statement>) -> bool {
    use datafusion::sql::sqlparser::ast::{DataType, Value, visit_expressions_mut};
    let mut changed = false;
    let mut rewrite = |text: &mut String| {
        if let Some(units) = time_as_units(text) {
            *text = units;
            changed = true;
        }
    };
    let _ = visit_expressions_mut(statements, |e: &mut Expr| {
        let literal = match e {
            Expr::Interval(iv) if iv.leading_field.is_none() => Some(iv.value.as_mut()),
            Expr::Cast {
                expr,
                data_type: DataType::Interval { .. },
                ..
            } => Some(expr.as_mut()),
            _ => None,
        };
        if let Some(Expr::Value(v)) = literal
            && let Value::SingleQuotedString(text) = &mut v.value
        {
            rewrite(text);
        }
        ControlFlow::<()>::Continue(())
    });
    changed
}

/// `'1 day -04:05:06.5'` as `'1 day -4 hours -5 minutes -6.5 seconds'`;
/// `None` when the text has no `h:m[:s]` part (or starts with `@`, or says
/// `ago`, which are left as they are).
fn time_as_units(text: &str) -> Option<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if !words.iter().any(|w| w.contains(':')) || words.iter().any(|w| w.eq_ignore_ascii_case("ago"))
    {
        return None;
    }
    let mut out = Vec::new();
    for w in words {
        // The executor's reader takes no `+`.
        let w = w.strip_prefix('+').unwrap_or(w);
        if !w.contains(':') {
            out.push(w.to_string());
            continue;
        }
        let (sign, rest) = match w.strip_prefix('-') {
            Some(r) => ("-", r),
            None => ("", w),
        };
        let whole = |p: &str| -> Option<u64> {
            if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let (h, m, s) = match parts.as_slice() {
            [h, m] => (whole(h)?, whole(m)?, None),
            [h, m, s] => (whole(h)?, whole(m)?, Some(*s)),
            _ => return None,
        };
        let mut time = vec![format!("{sign}{h} hours"), format!("{sign}{m} minutes")];
        if let Some(s) = s {
            let (int, frac) = s.split_once('.').unwrap_or((s, ""));
            if !frac.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let int = whole(int)?;
            time.push(if frac.is_empty() {
                format!("{sign}{int} seconds")
            } else {
                format!("{sign}{int}.{frac} seconds")
            });
        }
        out.extend(time);
    }
    Some(out.join(" "))
}

/// `sql` with an alias of its own for each output column whose name an
/// earlier one has, and for each computed one (the executor names some
/// alike: a scalar subquery after the column it returns); `None` when it
/// has no such column.
fn unique_output_names(sql: &str) -> Option<String> {
    use datafusion::sql::sqlparser::ast::{Ident, Query};

    fn key(item: &SelectItem) -> Option<String> {
        Some(match item {
            SelectItem::ExprWithAlias { alias, .. } => alias.value.to_lowercase(),
            SelectItem::UnnamedExpr(Expr::Identifier(i)) => i.value.to_lowercase(),
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => {
                parts.last()?.value.to_lowercase()
            }
            SelectItem::UnnamedExpr(e) => e.to_string().to_lowercase(),
            _ => return None,
        })
    }
    fn rename(body: &mut SetExpr, changed: &mut bool) {
        match body {
            SetExpr::Select(select) => {
                let mut seen = std::collections::HashSet::new();
                for (i, item) in select.projection.iter_mut().enumerate() {
                    let Some(k) = key(item) else { continue };
                    let computed = matches!(
                        item,
                        SelectItem::UnnamedExpr(e)
                            if !matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
                    );
                    if seen.insert(k) && !computed {
                        continue;
                    }
                    let alias = Ident::with_quote('"', format!("thermocline_column_{}", i + 1));
                    *item = match std::mem::replace(item, SelectItem::Wildcard(Default::default()))
                    {
                        SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => {
                            SelectItem::ExprWithAlias { expr, alias }
                        }
                        other => other,
                    };
                    *changed = true;
                }
            }
            SetExpr::SetOperation { left, right, .. } => {
                rename(left, changed);
                rename(right, changed);
            }
            SetExpr::Query(q) => rename(&mut q.body, changed),
            _ => {}
        }
    }
    let mut statements = super::sqltext::parse(sql).ok()?;
    let [Statement::Query(query)] = statements.as_mut_slice() else {
        return None;
    };
    let query: &mut Query = query;
    let mut changed = false;
    rename(&mut query.body, &mut changed);
    changed.then(|| query.to_string())
}

/// The physical plan with every aggregate's FILTER condition made
/// `IS NOT DISTINCT FROM true`: a row whose condition is NULL is left out,
/// as in Postgres. The executor's grouped aggregates read only the
/// condition's value bits, so a NULL whose (meaningless) bit was set
/// counted, as Parquet readers may leave it.
pub(super) fn null_filters_exclude(
    plan: Arc<dyn ExecutionPlan>,
) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(agg) = node.as_any().downcast_ref::<AggregateExec>() else {
            return Ok(Transformed::no(node));
        };
        if agg.filter_expr().iter().all(Option::is_none) {
            return Ok(Transformed::no(node));
        }
        let filters = agg
            .filter_expr()
            .iter()
            .map(|f| {
                f.clone().map(|f| {
                    Arc::new(BinaryExpr::new(
                        f,
                        Operator::IsNotDistinctFrom,
                        Arc::new(Literal::new(ScalarValue::Boolean(Some(true)))),
                    )) as Arc<dyn PhysicalExpr>
                })
            })
            .collect();
        let rebuilt = AggregateExec::try_new(
            *agg.mode(),
            agg.group_expr().clone(),
            agg.aggr_expr().to_vec(),
            filters,
            agg.input().clone(),
            agg.input_schema(),
        )?
        .with_limit_options(agg.limit_options());
        Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>))
    })
    .map(|t| t.data)
}

/// `plan` rewritten bottom up: each sort key `key` gives a replacement
/// for (given the sort's input schema), and every expression of every
/// node through `expr` (given the node's input schemas). Rewritten
/// expressions keep their names, so nodes above still find their
/// columns; schemas are recomputed up the tree.
pub(super) fn rewrite_plan(
    plan: datafusion::logical_expr::LogicalPlan,
    key: impl Fn(&datafusion::logical_expr::Expr, &DFSchema) -> Option<datafusion::logical_expr::Expr>,
    expr: impl Fn(
        datafusion::logical_expr::Expr,
        &[&DFSchema],
    ) -> datafusion::common::Result<
        datafusion::common::tree_node::Transformed<datafusion::logical_expr::Expr>,
    >,
) -> datafusion::common::Result<
    datafusion::common::tree_node::Transformed<datafusion::logical_expr::LogicalPlan>,
> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::logical_expr::LogicalPlan;
    use datafusion::logical_expr::expr_rewriter::NamePreserver;
    plan.transform_up_with_subqueries(|node| {
        // Its inputs may have been rewritten: their fields, and so this
        // node's, may have changed.
        let node = node.recompute_schema()?;
        if let LogicalPlan::Sort(mut sort) = node {
            let mut changed = false;
            for s in sort.expr.iter_mut() {
                if let Some(e) = key(&s.expr, sort.input.schema()) {
                    s.expr = e;
                    changed = true;
                }
            }
            return Ok(Transformed::new_transformed(
                LogicalPlan::Sort(sort),
                changed,
            ));
        }
        let inputs: Vec<std::sync::Arc<DFSchema>> =
            node.inputs().iter().map(|i| i.schema().clone()).collect();
        let schemas: Vec<&DFSchema> = inputs.iter().map(|s| s.as_ref()).collect();
        let names = NamePreserver::new(&node);
        let rewritten = node.map_expressions(|e| {
            let saved = names.save(&e);
            let t = e.transform_up(|x| expr(x, &schemas))?;
            Ok(if t.transformed {
                Transformed::yes(saved.restore(t.data))
            } else {
                t
            })
        })?;
        if rewritten.transformed {
            rewritten.map_data(|p| p.recompute_schema())
        } else {
            Ok(rewritten)
        }
    })
}
