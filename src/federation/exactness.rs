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

use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode};
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

/// Functions whose results equal Postgres's for the column types a tiered
/// table holds. Anything else is refused (for example `avg`, which Postgres
/// computes in numeric; `round`, whose ties differ for float8; `to_char`
/// and `to_timestamp`, whose format strings differ).
const FUNCTIONS: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "bool_and",
    "bool_or",
    "every",
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
    "lag",
    "lead",
    "first_value",
    "last_value",
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

fn refuse(message: String) -> Result<(), String> {
    Err(format!(
        "{message} is not supported yet in reads of the history of a tiered table"
    ))
}

/// Checks a statement about to be federated. `Err` carries the message of
/// a 0A000 error.
pub(crate) fn check(statement: &Statement, fields: &[FieldDescription]) -> Result<(), String> {
    let mut verdict = Ok(());
    let _ = visit_expressions(statement, |e: &Expr| {
        let v = match e {
            Expr::Function(f) => {
                let name = f
                    .name
                    .0
                    .last()
                    .map(|p| p.to_string().trim_matches('"').to_lowercase())
                    .unwrap_or_default();
                if FUNCTIONS.contains(&name.as_str()) {
                    Ok(())
                } else {
                    refuse(format!("function {name}()"))
                }
            }
            Expr::Extract { field, .. } if !integral_field(field) => {
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
    for (i, f) in fields.iter().enumerate() {
        if f.type_oid == oid::NUMERIC && f.typmod < 0 && !plain_numeric(statement, i) {
            return refuse(format!("a computed numeric column ({:?})", f.name));
        }
    }
    Ok(())
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
            matches!(name.as_str(), "sum" | "min" | "max")
                && args.args.len() == 1
                && matches!(&args.args[0], FunctionArg::Unnamed(FunctionArgExpr::Expr(a)) if plain(a))
        }
        _ => false,
    }
}

/// Plans `sql`. Postgres allows two output columns of the same name
/// (`SELECT id, id`, `count(*), count(*)`); the executor does not. When it
/// refuses one for that, the later columns of a name are renamed (the
/// client sees Postgres's names, from its RowDescription) and it plans
/// again.
pub(super) async fn plan_sql(
    session: &datafusion::prelude::SessionContext,
    sql: &str,
) -> datafusion::common::Result<datafusion::prelude::DataFrame> {
    let uncast = super::json::without_operand_casts(sql);
    let sql = uncast.as_deref().unwrap_or(sql);
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

/// `sql` with each output column whose name an earlier one has given an
/// alias of its own; `None` when it has no such column.
fn unique_output_names(sql: &str) -> Option<String> {
    use datafusion::sql::sqlparser::ast::{Ident, Query};
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

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
                    if seen.insert(k) {
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
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
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
