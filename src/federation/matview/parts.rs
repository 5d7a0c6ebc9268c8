//! How a view is kept in parts: the partial states of its aggregates per
//! hour or day, from which a refresh merges the buckets written.

use datafusion::sql::sqlparser::ast::{
    DuplicateTreatment, Expr, FunctionArguments, GroupByExpr, SelectItem, SetExpr, Statement, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::incremental::Buckets;

/// Units whose buckets are whole days, in any time zone.
const WHOLE_DAYS: [&str; 7] = [
    "week",
    "month",
    "quarter",
    "year",
    "decade",
    "century",
    "millennium",
];

/// What each of a view's parts covers: an hour or a day of its time
/// column, in the view's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Grain {
    Hour,
    Day,
}

impl Grain {
    /// Hours for a view with no group key but its bucket, as its parts
    /// are few however short: a refresh then recomputes only the hours
    /// written. Days otherwise, as a view's parts are a part per group.
    fn for_keys(keys: usize) -> Self {
        if keys == 0 { Grain::Hour } else { Grain::Day }
    }

    /// The grain recorded with a view's definition; a view kept in parts
    /// before the grain was recorded has days.
    pub fn recorded(text: Option<&str>) -> Self {
        match text {
            Some("hour") => Grain::Hour,
            _ => Grain::Day,
        }
    }

    /// Its unit, as `date_trunc` names it.
    pub fn unit(self) -> &'static str {
        match self {
            Grain::Hour => "hour",
            Grain::Day => "day",
        }
    }

    pub(super) fn step(self) -> &'static str {
        match self {
            Grain::Hour => "1 hour",
            Grain::Day => "1 day",
        }
    }

    /// The fewest microseconds a part holds (a day of a change to
    /// daylight saving time has 23 hours).
    pub(super) fn shortest(self) -> i64 {
        match self {
            Grain::Hour => 3_600_000_000,
            Grain::Day => 23 * 3_600_000_000,
        }
    }
}

/// How a view is kept in parts: for each hour or day of its time column
/// ([`Grain`]) and each group of the view, the partial state of each
/// aggregate (`count`, `sum`, `min`, `max`). A refresh recomputes the
/// parts written and merges the buckets that hold them from their parts,
/// rather than recomputing whole buckets from rows. A bucket is whole
/// parts, so the parts hold no bucket: it is the bucket of their start.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Parts {
    /// The parts, computed from the view's rows: `part` (its start), `k1`…
    /// (the view's other group keys), `a1`… (the aggregates' states).
    pub query: String,
    pub grain: Grain,
    /// The query's FROM and WHERE, and its columns after `part`.
    from: String,
    selection: Option<String>,
    items: Vec<String>,
    /// The time column as the query writes it.
    time: String,
    /// The bucket of a part.
    bucket: String,
    /// The view's columns, from the parts.
    columns: Vec<String>,
    keys: usize,
}

impl Parts {
    /// The parts starting at the times `ranges` give (literals of their
    /// starts, ascending, and of where each ends), of the rows `condition`
    /// keeps: each part from the rows of its range of times, rather than
    /// from each row's `date_trunc`, which works out the calendar for
    /// every row at more cost than the rest of the query.
    pub fn of_ranges(&self, ranges: &[(String, String)], condition: &str) -> String {
        // A name for the ranges the query's own names do not hold.
        let text = format!(
            "{} {} {} {} {condition}",
            self.from,
            self.items.join(" "),
            self.selection.as_deref().unwrap_or_default(),
            self.time
        )
        .to_lowercase();
        let alias = (0..)
            .map(|i| {
                format!(
                    "thermocline_part{}",
                    if i == 0 { String::new() } else { i.to_string() }
                )
            })
            .find(|a| !text.contains(a.as_str()))
            .unwrap_or_default();
        let values: Vec<String> = ranges.iter().map(|(s, e)| format!("({s}, {e})")).collect();
        let selection = self
            .selection
            .as_ref()
            .map_or(String::new(), |w| format!("({w}) AND "));
        let group: Vec<String> = (1..=self.keys + 1).map(|i| i.to_string()).collect();
        format!(
            "SELECT {alias}.{alias}_start AS part, {} FROM (VALUES {}) {alias}({alias}_start, {alias}_end), {} \
             WHERE {selection}({condition}) AND {time} >= {alias}.{alias}_start AND {time} < {alias}.{alias}_end \
             GROUP BY {}",
            self.items.join(", "),
            values.join(", "),
            self.from,
            group.join(", "),
            time = self.time,
        )
    }

    /// The view's rows from the parts in `table`, those `condition` (on
    /// `part`) keeps.
    pub fn merge(&self, table: &str, condition: Option<&str>) -> String {
        let mut group = vec![self.bucket.clone()];
        group.extend((1..=self.keys).map(|i| format!("k{i}")));
        format!(
            "SELECT {} FROM {table}{} GROUP BY {}",
            self.columns.join(", "),
            condition.map_or(String::new(), |c| format!(" WHERE {c}")),
            group.join(", ")
        )
    }
}

/// How `query`, refreshed by `buckets`, is kept in parts of `grain` (of
/// the grain for its keys when `None`); `None` when its buckets are not
/// whole parts or it computes more than group keys and `count`, `sum`,
/// `min` and `max` of them.
pub(super) fn parts(query: &str, buckets: &Buckets, grain: Option<Grain>) -> Option<Parts> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, query).ok()?;
    let [Statement::Query(q)] = statements.as_slice() else {
        return None;
    };
    let SetExpr::Select(select) = q.body.as_ref() else {
        return None;
    };
    if select.distinct.is_some()
        || select.having.is_some()
        || select.qualify.is_some()
        || !select.named_window.is_empty()
        || select.into.is_some()
    {
        return None;
    }
    let GroupByExpr::Expressions(group, modifiers) = &select.group_by else {
        return None;
    };
    if !modifiers.is_empty() {
        return None;
    }
    let items: Vec<(&Expr, Option<&str>)> = select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::UnnamedExpr(e) => Some((e, None)),
            SelectItem::ExprWithAlias { expr, alias } => Some((expr, Some(alias.value.as_str()))),
            _ => None,
        })
        .collect::<Option<_>>()?;
    let bucket_expr = items.get(buckets.position)?.0;
    // The other group keys, as expressions of the table's columns.
    let mut keys: Vec<&Expr> = Vec::new();
    for g in group {
        let key = match g {
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => items.get(n.parse::<usize>().ok()?.checked_sub(1)?)?.0,
                _ => return None,
            },
            // A name that may be an output column's: not told apart here.
            Expr::Identifier(i)
                if items
                    .iter()
                    .any(|(e, a)| *a == Some(i.value.as_str()) && *e != g) =>
            {
                return None;
            }
            Expr::Rollup(_) | Expr::Cube(_) | Expr::GroupingSets(_) => return None,
            e => e,
        };
        if key != bucket_expr && !keys.contains(&key) {
            keys.push(key);
        }
    }
    let grain = grain.unwrap_or(Grain::for_keys(keys.len()));
    let unit = buckets.unit.as_str();
    if !(WHOLE_DAYS.contains(&unit) || grain == Grain::Hour && unit == "day") {
        return None;
    }
    let bucket = format!("date_trunc('{}', part)", buckets.unit);
    let mut states = Vec::new();
    let mut columns = Vec::new();
    for (e, _) in &items {
        if *e == bucket_expr {
            columns.push(bucket.clone());
        } else if let Some(i) = keys.iter().position(|k| k == e) {
            columns.push(format!("k{}", i + 1));
        } else {
            let merge = mergeable(e)?;
            states.push(e.to_string());
            columns.push(format!("{merge}(a{})", states.len()));
        }
    }
    let mut selected: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{k} AS k{}", i + 1))
        .collect();
    selected.extend(
        states
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s} AS a{}", i + 1)),
    );
    let group: Vec<String> = (1..=keys.len() + 1).map(|i| i.to_string()).collect();
    let from: Vec<String> = select.from.iter().map(|f| f.to_string()).collect();
    let (from, selection) = (
        from.join(", "),
        select.selection.as_ref().map(|w| w.to_string()),
    );
    let query = format!(
        "SELECT date_trunc('{}', {}) AS part, {} FROM {from}{} GROUP BY {}",
        grain.unit(),
        buckets.time,
        selected.join(", "),
        selection
            .as_ref()
            .map_or(String::new(), |w| format!(" WHERE {w}")),
        group.join(", ")
    );
    Some(Parts {
        query,
        grain,
        from,
        selection,
        items: selected,
        time: buckets.time.to_string(),
        bucket,
        columns,
        keys: keys.len(),
    })
}

/// For an aggregate whose partial states merge: the aggregate merging them
/// (`count`'s counts are summed).
fn mergeable(e: &Expr) -> Option<&'static str> {
    let Expr::Function(f) = e else {
        return None;
    };
    if f.over.is_some()
        || !f.within_group.is_empty()
        || f.null_treatment.is_some()
        || !matches!(f.parameters, FunctionArguments::None)
    {
        return None;
    }
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    if !list.clauses.is_empty()
        || list.args.len() != 1
        || matches!(list.duplicate_treatment, Some(DuplicateTreatment::Distinct))
    {
        return None;
    }
    match f.name.0.as_slice() {
        [name] => match name.as_ident()?.value.to_lowercase().as_str() {
            "count" | "sum" => Some("sum"),
            "min" => Some("min"),
            "max" => Some("max"),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::matview::incremental::date_trunc_of;

    #[test]
    fn views_of_mergeable_aggregates_are_kept_in_parts() {
        let buckets = |query: &str| {
            let statements = Parser::parse_sql(&PostgreSqlDialect {}, query).unwrap();
            let Statement::Query(q) = &statements[0] else {
                unreachable!()
            };
            let SetExpr::Select(select) = q.body.as_ref() else {
                unreachable!()
            };
            let position = select
                .projection
                .iter()
                .position(|p| p.to_string().starts_with("date_trunc"))
                .unwrap();
            let (SelectItem::ExprWithAlias { expr, .. } | SelectItem::UnnamedExpr(expr)) =
                &select.projection[position]
            else {
                unreachable!()
            };
            let (unit, time) = date_trunc_of(expr, "created_at").unwrap();
            Buckets {
                position,
                unit,
                time,
            }
        };
        let query = "SELECT status, date_trunc('month', created_at) AS month, count(*) AS n, \
                     sum(amount) FILTER (WHERE flag) AS total, max(score) \
                     FROM orders WHERE customer_id > 3 GROUP BY 2, status";
        let p = parts(query, &buckets(query), None).unwrap();
        assert_eq!(p.grain, Grain::Day);
        assert_eq!(
            p.query,
            "SELECT date_trunc('day', created_at) AS part, status AS k1, count(*) AS a1, \
             sum(amount) FILTER (WHERE flag) AS a2, max(score) AS a3 \
             FROM orders WHERE customer_id > 3 GROUP BY 1, 2"
        );
        assert_eq!(
            p.merge("t", Some("part >= x")),
            "SELECT k1, date_trunc('month', part), sum(a1), sum(a2), max(a3) FROM t \
             WHERE part >= x GROUP BY date_trunc('month', part), k1"
        );
        assert_eq!(
            p.of_ranges(
                &[("'a'".into(), "'b'".into()), ("'b'".into(), "'c'".into())],
                "c"
            ),
            "SELECT thermocline_part.thermocline_part_start AS part, status AS k1, count(*) AS a1, \
             sum(amount) FILTER (WHERE flag) AS a2, max(score) AS a3 \
             FROM (VALUES ('a', 'b'), ('b', 'c')) thermocline_part(thermocline_part_start, thermocline_part_end), orders \
             WHERE (customer_id > 3) AND (c) AND created_at >= thermocline_part.thermocline_part_start \
             AND created_at < thermocline_part.thermocline_part_end GROUP BY 1, 2"
        );
        // With no other group key: by the hour, and daily views too; the
        // ranges named apart from the query's own names.
        for query in [
            "SELECT date_trunc('month', created_at), count(*), min(thermocline_part) FROM orders GROUP BY 1",
            "SELECT date_trunc('day', created_at), count(*), min(thermocline_part) FROM orders GROUP BY 1",
        ] {
            let p = parts(query, &buckets(query), None).unwrap();
            assert_eq!(p.grain, Grain::Hour, "{query}");
            assert!(
                p.query
                    .starts_with("SELECT date_trunc('hour', created_at) AS part")
            );
            assert!(
                p.of_ranges(&[("'a'".into(), "'b'".into())], "true")
                    .starts_with(
                        "SELECT thermocline_part1.thermocline_part1_start AS part, count(*) AS a1"
                    ),
                "{query}"
            );
        }
        // Kept by the day, as recorded by an earlier version: not a daily
        // view.
        let monthly = "SELECT date_trunc('month', created_at), count(*) FROM orders GROUP BY 1";
        assert_eq!(
            parts(monthly, &buckets(monthly), Some(Grain::Day))
                .unwrap()
                .grain,
            Grain::Day
        );
        let daily = "SELECT date_trunc('day', created_at), count(*) FROM orders GROUP BY 1";
        assert_eq!(parts(daily, &buckets(daily), Some(Grain::Day)), None);
        // Not kept in parts: aggregates whose parts do not merge, buckets
        // shorter than a day, a daily view with other group keys, or rows
        // filtered after grouping.
        for query in [
            "SELECT date_trunc('month', created_at), avg(amount) FROM orders GROUP BY 1",
            "SELECT date_trunc('month', created_at), count(DISTINCT status) FROM orders GROUP BY 1",
            "SELECT date_trunc('month', created_at), upper(status), count(*) FROM orders GROUP BY 1, status",
            "SELECT date_trunc('hour', created_at), count(*) FROM orders GROUP BY 1",
            "SELECT date_trunc('day', created_at), status, count(*) FROM orders GROUP BY 1, 2",
            "SELECT date_trunc('month', created_at), count(*) FROM orders GROUP BY 1 HAVING count(*) > 1",
            "SELECT DISTINCT date_trunc('month', created_at), count(*) FROM orders GROUP BY 1",
            "SELECT date_trunc('month', created_at) AS m, count(*) FROM orders GROUP BY ROLLUP (1)",
        ] {
            assert_eq!(parts(query, &buckets(query), None), None, "{query}");
        }
    }
}
