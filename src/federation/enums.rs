//! Enum columns over both tiers. The executor holds an enum value as its
//! label; Postgres orders enum values by their position in the type, not
//! by their labels. Sorts and `<`/`>` comparisons of an enum column are
//! planned over each label's position, and what cannot be (`min`, `max`,
//! a window's ORDER BY) is refused.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int32Builder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, Result, exec_err};
use datafusion::logical_expr::expr::{AggregateFunction, ScalarFunction, WindowFunction};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, LogicalPlan, Operator, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};

/// Field metadata holding an enum's labels, in order, as a JSON array.
const LABELS: &str = "thermocline.enum_labels";

/// The field metadata of an enum column with these labels.
pub(crate) fn metadata(labels: &[String]) -> HashMap<String, String> {
    let mut m = super::json::pg_type("enum");
    m.insert(
        LABELS.to_string(),
        serde_json::to_string(labels).unwrap_or_default(),
    );
    m
}

/// The labels of the enum `e` is a column of.
fn labels_of(e: &Expr, schema: &DFSchema) -> Option<Vec<String>> {
    match e {
        Expr::Column(c) => {
            let (_, field) = schema.qualified_field_from_column(c).ok()?;
            serde_json::from_str(field.metadata().get(LABELS)?).ok()
        }
        Expr::Alias(a) => labels_of(&a.expr, schema),
        _ => None,
    }
}

fn labels_in(e: &Expr, schemas: &[&DFSchema]) -> Option<Vec<String>> {
    schemas.iter().find_map(|s| labels_of(e, s))
}

/// A label's position in its enum.
#[derive(Debug, PartialEq, Eq, Hash)]
struct LabelPosition {
    labels: Vec<String>,
    signature: Signature,
}

fn position(labels: Vec<String>, e: Expr) -> Expr {
    let udf = ScalarUDF::new_from_impl(LabelPosition {
        labels,
        signature: Signature::any(1, Volatility::Immutable),
    });
    Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(udf), vec![e]))
}

impl ScalarUDFImpl for LabelPosition {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        "enum_position"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let values = cast(&args.args[0].to_array(args.number_rows)?, &DataType::Utf8)?;
        let values = values.as_string::<i32>();
        let at: HashMap<&str, i32> = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| (l.as_str(), i as i32))
            .collect();
        let mut out = Int32Builder::with_capacity(values.len());
        for i in 0..values.len() {
            if values.is_null(i) {
                out.append_null();
                continue;
            }
            match at.get(values.value(i)) {
                Some(p) => out.append_value(*p),
                None => {
                    return exec_err!("invalid input value for enum: \"{}\"", values.value(i));
                }
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// An enum value cast to a string type: its label, as plain text, ordered
/// and compared as text (a cast keeps a field's metadata otherwise).
#[derive(Debug, PartialEq, Eq, Hash)]
struct AsText {
    signature: Signature,
}

fn as_text(e: Expr) -> Expr {
    let udf = ScalarUDF::new_from_impl(AsText {
        signature: Signature::any(1, Volatility::Immutable),
    });
    Expr::ScalarFunction(ScalarFunction::new_udf(Arc::new(udf), vec![e]))
}

impl ScalarUDFImpl for AsText {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn name(&self) -> &str {
        "enum_label"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(args.first().cloned().unwrap_or(DataType::Utf8))
    }

    fn invoke_with_args(&self, mut args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(args.args.swap_remove(0))
    }
}

/// Whether a table the plan reads has an enum column.
fn reads_an_enum(plan: &LogicalPlan) -> bool {
    plan.exists(|node| {
        Ok(matches!(node, LogicalPlan::TableScan(scan)
            if scan.source.schema().fields().iter().any(|f| f.metadata().contains_key(LABELS))))
    })
    .unwrap_or(false)
}

/// The plan with sorts and order comparisons of enum columns made over
/// their labels' positions. Names of the rewritten expressions are kept,
/// so nodes above still find their columns.
pub(crate) fn in_label_order(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    if !reads_an_enum(&plan) {
        return Ok(Transformed::no(plan));
    }
    super::exactness::rewrite_plan(
        plan,
        |e, schema| labels_of(e, schema).map(|labels| position(labels, e.clone())),
        |x, schemas| match x {
            Expr::Cast(c) if labels_in(&c.expr, schemas).is_some() => {
                Ok(Transformed::yes(as_text(Expr::Cast(c))))
            }
            Expr::BinaryExpr(b)
                if matches!(
                    b.op,
                    Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
                ) =>
            {
                match labels_in(&b.left, schemas).or_else(|| labels_in(&b.right, schemas)) {
                    Some(labels) => Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr::new(
                        Box::new(position(labels.clone(), *b.left)),
                        b.op,
                        Box::new(position(labels, *b.right)),
                    )))),
                    None => Ok(Transformed::no(Expr::BinaryExpr(b))),
                }
            }
            x => Ok(Transformed::no(x)),
        },
    )
}

/// Why the plan cannot be answered exactly, if it takes the `min` or `max`
/// of an enum column or orders a window by one.
pub(crate) fn refusal(plan: &LogicalPlan) -> Option<String> {
    if !reads_an_enum(plan) {
        return None;
    }
    super::exactness::first_refusal(
        plan,
        |_, _| None,
        |x, inputs| match x {
            Expr::AggregateFunction(AggregateFunction { func, params })
                if matches!(func.name(), "min" | "max")
                    && params.args.iter().any(|a| labels_in(a, inputs).is_some()) =>
            {
                Some(format!("{}() of an enum column", func.name()))
            }
            Expr::WindowFunction(w) => {
                let WindowFunction { params, .. } = w.as_ref();
                params
                    .order_by
                    .iter()
                    .any(|s| labels_in(&s.expr, inputs).is_some())
                    .then(|| "a window ordered by an enum column".to_string())
            }
            _ => None,
        },
    )
}
