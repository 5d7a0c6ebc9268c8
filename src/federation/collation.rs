//! Strings ordered by a collation that is not byte order.
//!
//! Postgres orders and compares strings by their collation (`en_US.UTF-8`
//! in many databases, an ICU collation on a column); the executor byte by
//! byte, as the `C` collation does. When a statement reads a string column
//! whose collation is not byte order (see `planning::register_tables`), whatever
//! orders or compares strings by size in it — ORDER BY, `min`/`max`, `<`,
//! `BETWEEN`, `greatest`/`least`, a window's order — is refused with 0A000
//! rather than answered in another order. Equality, grouping and DISTINCT
//! are the same in both and are answered.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::DFSchema;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::expr::{AggregateFunction, WindowFunction};
use datafusion::logical_expr::{Between, BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator};

fn stringy(e: &Expr, schema: &DFSchema) -> bool {
    match e.get_type(schema) {
        Ok(t) => is_string(&t),
        Err(_) => false,
    }
}

fn is_string(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => true,
        DataType::Dictionary(_, v) => is_string(v),
        // Arrays of strings order by their elements.
        DataType::List(f) | DataType::LargeList(f) => is_string(f.data_type()),
        _ => false,
    }
}

/// What in `e` orders strings, if anything.
fn ordering(e: &Expr, schema: &DFSchema) -> Option<&'static str> {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(
                op,
                Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
            ) && (stringy(left, schema) || stringy(right, schema)) =>
        {
            Some("a comparison of strings by size")
        }
        Expr::Between(Between { expr, .. }) if stringy(expr, schema) => {
            Some("BETWEEN over strings")
        }
        Expr::ScalarFunction(f)
            if matches!(f.func.name(), "greatest" | "least") && stringy(e, schema) =>
        {
            Some("greatest or least of strings")
        }
        Expr::AggregateFunction(AggregateFunction { func, params }) => {
            if matches!(func.name(), "min" | "max")
                && params.args.iter().any(|a| stringy(a, schema))
                || params.order_by.iter().any(|s| stringy(&s.expr, schema))
            {
                Some("min, max or an aggregate ordered over strings")
            } else {
                None
            }
        }
        Expr::WindowFunction(w) => {
            let WindowFunction { fun, params } = w.as_ref();
            if params.order_by.iter().any(|s| stringy(&s.expr, schema))
                || matches!(fun.name(), "min" | "max")
                    && params.args.iter().any(|a| stringy(a, schema))
            {
                Some("a window ordered over strings")
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The first thing in `plan` that orders strings, as a 0A000 message.
pub(crate) fn refusal(plan: &LogicalPlan) -> Option<String> {
    let mut found = None;
    let _ = plan.apply_with_subqueries(|node| {
        let schema = super::casts::merged_input_schema(node);
        if let LogicalPlan::Sort(sort) = node
            && sort.expr.iter().any(|s| stringy(&s.expr, &schema))
        {
            found = Some("ORDER BY a string");
            return Ok(TreeNodeRecursion::Stop);
        }
        node.apply_expressions(|e| {
            e.apply(|x| {
                Ok(match ordering(x, &schema) {
                    Some(what) => {
                        found = Some(what);
                        TreeNodeRecursion::Stop
                    }
                    None => TreeNodeRecursion::Continue,
                })
            })
        })?;
        Ok(if found.is_some() {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found.map(|what| format!("{what}, under a collation that is not byte order,"))
}
