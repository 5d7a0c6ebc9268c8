//! Scalar subqueries that may return more than one row.
//!
//! In Postgres, `(SELECT x FROM t WHERE …)` used as a value is an error
//! (21000) when it returns more than one row for the row it is evaluated
//! for. The executor joins an uncorrelated one to every row, so that each
//! row would come out once per row of the subquery; a correlated one it
//! refuses unless it aggregates.
//!
//! So each such subquery collects its rows, and a function takes the one
//! value out: `thermocline_single((SELECT array_agg(x) FROM t WHERE …))`.
//! No row gives NULL, one row its value, more than one row the error, and
//! only for the rows that use it: a correlated subquery becomes an
//! aggregate by its correlation keys, joined to the rows that match.
//!
//! `EXISTS` in a select list, which the executor answers only in WHERE,
//! becomes a count of the subquery's rows compared with zero.

use std::any::Any;
use std::ops::ControlFlow;

use datafusion::arrow::array::{Array, AsArray, new_null_array};
use datafusion::arrow::compute::concat;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::sql::sqlparser::ast::{
    Distinct, Expr, GroupByExpr, Query, Select, SelectItem, SetExpr, Statement, visit_expressions,
    visit_expressions_mut,
};

use super::exactness::parse_expr;

const NAME: &str = "thermocline_single";

/// Rewrites the scalar subqueries of `statements` that may return more
/// than one row (see the module's documentation); true when it rewrote
/// any.
pub(super) fn rewrite(statements: &mut Vec<Statement>) -> bool {
    let mut changed = false;
    let _ = visit_expressions_mut(statements, |e: &mut Expr| {
        if let Expr::Subquery(q) = e
            && let Some(collected) = collected(q)
            && let Some(call) = parse_expr(&format!("{NAME}(({collected}))"))
        {
            *e = call;
            changed = true;
        }
        ControlFlow::<()>::Continue(())
    });
    changed
}

/// Rewrites each `[NOT] EXISTS (…)` in a select list (the executor
/// answers EXISTS only in WHERE) as a count of the subquery's rows
/// compared with zero, when the subquery is a plain SELECT: a correlated
/// count becomes an aggregate by the correlation keys, 0 where none
/// match. True when it rewrote any.
pub(super) fn exists_in_select_lists(statements: &mut [Statement]) -> bool {
    fn body(set: &mut SetExpr, changed: &mut bool) {
        match set {
            SetExpr::Select(select) => {
                for item in select.projection.iter_mut() {
                    let (SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }) =
                        item
                    else {
                        continue;
                    };
                    let _ = visit_expressions_mut(e, |x: &mut Expr| {
                        if let Expr::Exists { subquery, negated } = x
                            && let Some(counted) = counted(subquery)
                            && let Some(compared) = parse_expr(&format!(
                                "(({counted}) {} 0)",
                                if *negated { "=" } else { ">" }
                            ))
                        {
                            *x = compared;
                            *changed = true;
                        }
                        ControlFlow::<()>::Continue(())
                    });
                }
            }
            SetExpr::Query(q) => query(q, changed),
            SetExpr::SetOperation { left, right, .. } => {
                body(left, changed);
                body(right, changed);
            }
            _ => {}
        }
    }
    fn query(q: &mut Query, changed: &mut bool) {
        if let Some(with) = &mut q.with {
            for cte in with.cte_tables.iter_mut() {
                query(&mut cte.query, changed);
            }
        }
        body(&mut q.body, changed);
    }
    let mut changed = false;
    for statement in statements.iter_mut() {
        if let Statement::Query(q) = statement {
            query(q, &mut changed);
        }
    }
    changed
}

/// The subquery counting its rows, when it is a plain SELECT.
fn counted(q: &Query) -> Option<Query> {
    let select = plain(q)?;
    if select.distinct.is_some() {
        return None;
    }
    Some(with_column(q, select, parse_expr("count(*)")?))
}

/// The subquery with its one column collected into an array, when it is
/// a plain SELECT of one column that may return more than one row.
fn collected(q: &Query) -> Option<Query> {
    let select = plain(q)?;
    let [item] = select.projection.as_slice() else {
        return None;
    };
    let (SelectItem::UnnamedExpr(value) | SelectItem::ExprWithAlias { expr: value, .. }) = item
    else {
        return None;
    };
    if aggregates(value) {
        return None;
    }
    let distinct = match &select.distinct {
        None => "",
        Some(Distinct::Distinct) => "DISTINCT ",
        Some(_) => return None,
    };
    Some(with_column(
        q,
        select,
        parse_expr(&format!("array_agg({distinct}{value})"))?,
    ))
}

/// The SELECT of `q`, when `q` is one with no WITH, LIMIT, FETCH or
/// locking, and no grouping, HAVING, QUALIFY, windows, TOP or INTO.
fn plain(q: &Query) -> Option<&Select> {
    if q.with.is_some() || q.limit_clause.is_some() || q.fetch.is_some() || !q.locks.is_empty() {
        return None;
    }
    let SetExpr::Select(select) = q.body.as_ref() else {
        return None;
    };
    let grouped = match &select.group_by {
        GroupByExpr::All(_) => true,
        GroupByExpr::Expressions(keys, _) => !keys.is_empty(),
    };
    let plain = !(grouped
        || select.having.is_some()
        || select.qualify.is_some()
        || !select.named_window.is_empty()
        || select.top.is_some()
        || select.into.is_some());
    plain.then_some(select.as_ref())
}

/// `q` selecting `column` alone, without DISTINCT or ORDER BY (it returns
/// one value, or an error, in any order).
fn with_column(q: &Query, select: &Select, column: Expr) -> Query {
    let mut select = select.clone();
    select.distinct = None;
    select.projection = vec![SelectItem::UnnamedExpr(column)];
    let mut q = q.clone();
    q.order_by = None;
    q.body = Box::new(SetExpr::Select(Box::new(select)));
    q
}

/// True when `value` computes an aggregate or a window function, or a
/// subquery inside it does (such a value is left as it is).
fn aggregates(value: &Expr) -> bool {
    let mut found = false;
    let _ = visit_expressions(value, |e: &Expr| {
        if let Expr::Function(f) = e {
            found |= f.over.is_some()
                || f.filter.is_some()
                || super::exactness::AGGREGATES
                    .contains(&super::exactness::function_name(f).as_str());
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

/// `thermocline_single(array)`: the array's one element; NULL for no
/// array or an empty one; more than one element is Postgres's 21000.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct Single {
    signature: Signature,
}

impl Single {
    pub(crate) fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Self {
            signature: Signature::any(1, Volatility::Immutable),
        })
    }
}

impl ScalarUDFImpl for Single {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _)] => {
                Ok(f.data_type().clone())
            }
            [DataType::Null] => Ok(DataType::Null),
            other => exec_err!("{NAME} takes an array, not {other:?}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let lists = args.args[0].to_array(rows)?;
        let element = args.return_field.data_type().clone();
        if matches!(lists.data_type(), DataType::Null) {
            return Ok(ColumnarValue::Array(new_null_array(&element, rows)));
        }
        let lists = lists.as_list::<i32>();
        let null = new_null_array(&element, 1);
        let mut values: Vec<std::sync::Arc<dyn Array>> = Vec::with_capacity(rows);
        for i in 0..rows {
            if lists.is_null(i) {
                values.push(null.clone());
                continue;
            }
            let list = lists.value(i);
            match list.len() {
                0 => values.push(null.clone()),
                1 => values.push(list),
                _ => {
                    return super::json::data_error(
                        "21000",
                        "more than one row returned by a subquery used as an expression",
                    );
                }
            }
        }
        let parts: Vec<&dyn Array> = values.iter().map(|a| a.as_ref()).collect();
        Ok(ColumnarValue::Array(match parts.is_empty() {
            true => new_null_array(&element, 0),
            false => concat(&parts)?,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn rewritten(sql: &str) -> String {
        let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        rewrite(&mut statements);
        statements[0].to_string()
    }

    #[test]
    fn subqueries_that_may_return_rows_collect_them() {
        assert_eq!(
            rewritten("SELECT id, (SELECT name FROM c WHERE c.id = o.cid ORDER BY 1) AS n FROM o"),
            "SELECT id, thermocline_single((SELECT array_agg(name) FROM c WHERE c.id = o.cid)) AS n FROM o"
        );
        assert_eq!(
            rewritten("SELECT (SELECT DISTINCT region FROM c) FROM o"),
            "SELECT thermocline_single((SELECT array_agg(DISTINCT region) FROM c)) FROM o"
        );
        assert_eq!(
            rewritten("SELECT * FROM o WHERE o.cid = (SELECT id FROM c WHERE name = 'x')"),
            "SELECT * FROM o WHERE o.cid = thermocline_single((SELECT array_agg(id) FROM c WHERE name = 'x'))"
        );
        // One row at most already, or not a plain SELECT of one column.
        for sql in [
            "SELECT (SELECT max(name) FROM c) FROM o",
            "SELECT (SELECT count(*) + 1 FROM c) FROM o",
            "SELECT (SELECT name FROM c LIMIT 1) FROM o",
            "SELECT (SELECT name FROM c GROUP BY name) FROM o",
            "SELECT (SELECT row_number() OVER () FROM c) FROM o",
            "SELECT (SELECT name FROM c UNION SELECT name FROM d) FROM o",
            "SELECT (WITH w AS (SELECT 1 AS a) SELECT a FROM w) FROM o",
            "SELECT * FROM o WHERE cid IN (SELECT id FROM c)",
            "SELECT * FROM o WHERE EXISTS (SELECT id FROM c)",
        ] {
            assert_eq!(rewritten(sql), sql, "{sql}");
        }
    }

    #[test]
    fn exists_in_a_select_list_is_a_count() {
        let rewritten = |sql: &str| {
            let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
            exists_in_select_lists(&mut statements);
            statements[0].to_string()
        };
        assert_eq!(
            rewritten(
                "SELECT id, EXISTS (SELECT 1 FROM c WHERE c.id = o.cid) AS e, NOT EXISTS (SELECT 1 FROM c) FROM o WHERE EXISTS (SELECT 1 FROM d)"
            ),
            "SELECT id, ((SELECT count(*) FROM c WHERE c.id = o.cid) > 0) AS e, ((SELECT count(*) FROM c) = 0) FROM o WHERE EXISTS (SELECT 1 FROM d)"
        );
        // Not a plain SELECT: left as it is.
        let limited = "SELECT EXISTS (SELECT 1 FROM c LIMIT 1) FROM o";
        assert_eq!(rewritten(limited), limited);
    }
}
