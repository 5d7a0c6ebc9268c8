//! Partial aggregates of the hot tier, computed by Postgres.
//!
//! Below a partial aggregate over a tiered scan, the hot half's rows at or
//! after the watermark W need no straggler check: Postgres can aggregate
//! them itself and send one row per group, in the partial states DataFusion
//! merges (counts, sums, minima, maxima). Hot rows before W (stragglers)
//! still go through the executor, which drops those the lake holds.
//!
//! The aggregate's query runs after the lake was read. A statement in its
//! own REPEATABLE READ transaction sees the snapshot taken before; any
//! other checks afterwards that the lake did not change meanwhile (see
//! `scan::LateCheck`), or fails with 40001.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema, TimeUnit};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CastExpr, Column, InListExpr, IsNotNullExpr, IsNullExpr, Literal, NotExpr,
};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::Partitioning;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::streaming::StreamingTableExec;

use super::pushdown::{literal_sql, operator_sql};
use super::scan::ScanColumn;
use crate::catalog::quote_ident;
use crate::pgtypes::PgType;

/// A partial aggregate as Postgres computes it.
#[derive(Debug)]
pub(crate) struct HotAggregate {
    /// `g1, g2, count(*)::int8, …`
    pub select: String,
    /// Conditions of the operators between the aggregate and the scan.
    pub filters: Vec<String>,
    /// How many leading columns are groups.
    pub groups: usize,
    /// The result's columns, typed to decode Postgres's binary rows.
    pub columns: Vec<ScanColumn>,
    /// The partial aggregate's output schema.
    pub schema: Arc<Schema>,
}

/// `agg` (a partial aggregate over row-by-row operators over a tiered
/// scan) in Postgres's SQL, when every expression translates exactly.
pub(crate) fn translate(agg: &AggregateExec) -> Option<HotAggregate> {
    let group = agg.group_expr();
    if !group.is_single() {
        return None;
    }
    let (sql, filters) = chain(agg.input())?;
    let input_schema = agg.input().schema();
    let columns = Input {
        sql: &sql,
        schema: &input_schema,
    };
    let schema = agg.schema();
    let ngroups = group.expr().len();
    if schema.fields().len() != ngroups + agg.aggr_expr().len() {
        return None;
    }
    let mut select = Vec::new();
    let mut out = Vec::new();
    for (i, (e, _)) in group.expr().iter().enumerate() {
        let field = schema.field(i);
        let (pg, cast) = pg_type(field.data_type())?;
        select.push(format!("({})::{cast}", expr(e, &columns)?));
        out.push(ScanColumn {
            name: format!("g{i}"),
            pg_type: pg,
            labels: None,
        });
    }
    for (i, a) in agg.aggr_expr().iter().enumerate() {
        if a.is_distinct() || !a.order_bys().is_empty() {
            return None;
        }
        let field = schema.field(ngroups + i);
        let (pg, cast) = pg_type(field.data_type())?;
        let args = a.expressions();
        let name = a.fun().name().to_ascii_lowercase();
        let call = match (name.as_str(), args.as_slice()) {
            ("count", [e]) => match e.as_any().downcast_ref::<Literal>() {
                Some(l) if !l.value().is_null() => "count(*)".to_string(),
                _ => format!("count({})", expr(e, &columns)?),
            },
            ("sum", [e]) => format!("sum({})", expr(e, &columns)?),
            // Compared byte by byte, as the executor merges them.
            ("min" | "max", [e]) if matches!(pg, PgType::Text(_)) => {
                format!("{name}(({}) COLLATE \"C\")", expr(e, &columns)?)
            }
            ("min" | "max", [e]) => format!("{name}({})", expr(e, &columns)?),
            _ => return None,
        };
        let filter = match agg.filter_expr().get(i) {
            Some(Some(f)) => format!(" FILTER (WHERE {})", expr(f, &columns)?),
            _ => String::new(),
        };
        select.push(format!("({call}{filter})::{cast}"));
        out.push(ScanColumn {
            name: format!("a{i}"),
            pg_type: pg,
            labels: None,
        });
    }
    Some(HotAggregate {
        select: select.join(", "),
        filters,
        groups: ngroups,
        columns: out,
        schema,
    })
}

/// The SQL of each output column of a row-by-row chain over a tiered scan,
/// and the conditions the chain applies.
pub(crate) fn chain(plan: &Arc<dyn ExecutionPlan>) -> Option<(Vec<String>, Vec<String>)> {
    let any = plan.as_any();
    if let Some(s) = any.downcast_ref::<StreamingTableExec>() {
        let schema = s.partition_schema();
        let names: Vec<String> = match s.projection() {
            Some(p) => p
                .iter()
                .map(|&i| quote_ident(schema.field(i).name()))
                .collect(),
            None => schema
                .fields()
                .iter()
                .map(|f| quote_ident(f.name()))
                .collect(),
        };
        return s.limit().is_none().then_some((names, Vec::new()));
    }
    if let Some(f) = any.downcast_ref::<FilterExec>() {
        let (columns, mut filters) = chain(f.input())?;
        let schema = f.input().schema();
        let input = Input {
            sql: &columns,
            schema: &schema,
        };
        filters.push(expr(f.predicate(), &input)?);
        let columns = match f.projection() {
            Some(p) => p
                .iter()
                .map(|&i| columns.get(i).cloned())
                .collect::<Option<_>>()?,
            None => columns,
        };
        return Some((columns, filters));
    }
    if let Some(p) = any.downcast_ref::<ProjectionExec>() {
        let (columns, filters) = chain(p.input())?;
        let schema = p.input().schema();
        let input = Input {
            sql: &columns,
            schema: &schema,
        };
        let out = p
            .expr()
            .iter()
            .map(|e| expr(&e.expr, &input))
            .collect::<Option<_>>()?;
        return Some((out, filters));
    }
    if let Some(r) = any.downcast_ref::<RepartitionExec>()
        && matches!(r.partitioning(), Partitioning::RoundRobinBatch(_))
    {
        return chain(r.input());
    }
    None
}

/// `e`, over columns whose SQL is `columns` and schema `schema`, in
/// Postgres's SQL when it means the same there.
pub(crate) fn sql_of(
    e: &Arc<dyn PhysicalExpr>,
    columns: &[String],
    schema: &Schema,
) -> Option<String> {
    expr(
        e,
        &Input {
            sql: columns,
            schema,
        },
    )
}

/// The columns an expression reads: their SQL, and their schema.
struct Input<'a> {
    sql: &'a [String],
    schema: &'a Schema,
}

/// An expression in Postgres's SQL, for the forms that mean the same in
/// both (comparisons, boolean logic, IN lists, NULL tests, date_trunc and
/// widening casts).
fn expr(e: &Arc<dyn PhysicalExpr>, columns: &Input<'_>) -> Option<String> {
    let any = e.as_any();
    if let Some(c) = any.downcast_ref::<Column>() {
        return columns.sql.get(c.index()).cloned();
    }
    if let Some(l) = any.downcast_ref::<Literal>() {
        return if l.value().is_null() {
            Some("NULL".into())
        } else {
            literal_sql(l.value())
        };
    }
    if let Some(b) = any.downcast_ref::<BinaryExpr>() {
        let op = operator_sql(b.op())?;
        // Postgres orders strings by the column's collation; the
        // executor, byte by byte.
        let ordering = matches!(
            b.op(),
            Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq
        );
        let text = |e: &Arc<dyn PhysicalExpr>| {
            e.data_type(columns.schema).map_or(true, |t| {
                matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8)
            })
        };
        if ordering && (text(b.left()) || text(b.right())) {
            return None;
        }
        return Some(format!(
            "({} {op} {})",
            expr(b.left(), columns)?,
            expr(b.right(), columns)?
        ));
    }
    if let Some(n) = any.downcast_ref::<IsNullExpr>() {
        return Some(format!("({} IS NULL)", expr(n.arg(), columns)?));
    }
    if let Some(n) = any.downcast_ref::<IsNotNullExpr>() {
        return Some(format!("({} IS NOT NULL)", expr(n.arg(), columns)?));
    }
    if let Some(n) = any.downcast_ref::<NotExpr>() {
        return Some(format!("(NOT {})", expr(n.arg(), columns)?));
    }
    if let Some(i) = any.downcast_ref::<InListExpr>() {
        let list = i
            .list()
            .iter()
            .map(|v| expr(v, columns))
            .collect::<Option<Vec<_>>>()?;
        return Some(format!(
            "({} {}IN ({}))",
            expr(i.expr(), columns)?,
            if i.negated() { "NOT " } else { "" },
            list.join(", ")
        ));
    }
    if let Some(f) = any.downcast_ref::<ScalarFunctionExpr>() {
        if f.name() != "date_trunc" {
            return None;
        }
        let [unit, time] = f.args() else {
            return None;
        };
        let unit = unit.as_any().downcast_ref::<Literal>()?;
        let unit = match unit.value() {
            datafusion::common::ScalarValue::Utf8(Some(u))
            | datafusion::common::ScalarValue::Utf8View(Some(u))
            | datafusion::common::ScalarValue::LargeUtf8(Some(u)) => u.to_ascii_lowercase(),
            _ => return None,
        };
        if !matches!(
            unit.as_str(),
            "second" | "minute" | "hour" | "day" | "week" | "month" | "quarter" | "year"
        ) {
            return None;
        }
        return Some(format!("date_trunc('{unit}', {})", expr(time, columns)?));
    }
    if let Some(c) = any.downcast_ref::<CastExpr>() {
        // Widening casts only, which lose nothing in either.
        let to = c.cast_type();
        let widening = matches!(
            to,
            DataType::Int64 | DataType::Float64 | DataType::Decimal128(_, _)
        ) || matches!(
            to,
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
        );
        if !widening {
            return None;
        }
        let (_, cast) = pg_type(to)?;
        return Some(format!("({})::{cast}", expr(c.expr(), columns)?));
    }
    None
}

/// The Postgres type that carries an Arrow type exactly, and its SQL name.
fn pg_type(t: &DataType) -> Option<(PgType, String)> {
    use crate::pgtypes::oid;
    Some(match t {
        DataType::Boolean => (PgType::Bool, "bool".into()),
        DataType::Int16 => (PgType::Int2, "int2".into()),
        DataType::Int32 => (PgType::Int4, "int4".into()),
        DataType::Int64 => (PgType::Int8, "int8".into()),
        DataType::Float32 => (PgType::Float4, "float4".into()),
        DataType::Float64 => (PgType::Float8, "float8".into()),
        DataType::Decimal128(p, s) if *p <= 38 && *s >= 0 => {
            (PgType::Numeric(*p, *s), format!("numeric({p},{s})"))
        }
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => {
            (PgType::Text(oid::TEXT), "text".into())
        }
        DataType::Date32 => (PgType::Date, "date".into()),
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => {
            (PgType::Timestamptz, "timestamptz".into())
        }
        DataType::Timestamp(TimeUnit::Microsecond, None) => (PgType::Timestamp, "timestamp".into()),
        _ => return None,
    })
}
