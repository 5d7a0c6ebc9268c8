//! Reads begun as soon as Postgres has described a federated statement,
//! which then run while the executor's session is built and the statement
//! planned rather than one after another as its scans are planned: the
//! columns of the relations it names, on the catalog connection, and, in a
//! statement's own transaction (whose snapshot Postgres has taken by
//! then), the current snapshot of each lake table it may read.

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::link::BackendMessage;
use super::scan::ScanContext;
use super::{Federation, names, planning};

/// Records where the statement's names (`names`, as written) resolve, as
/// the session answered in `described`, and begins the reads this allows.
/// `assumed`: their columns, being read since before the session answered,
/// under the search path its `user` had last (see [`Federation::search_path`]).
pub(super) fn begin(
    ctx: &ScanContext,
    federation: &Federation,
    described: &[BackendMessage],
    names: &[String],
    (assumed, user): (Option<planning::ColumnsAhead>, &str),
) {
    let resolved =
        super::session_answers(described).and_then(|answers| names::resolved(&answers, names));
    if let Some(resolved) = &resolved {
        federation.remember_search_path(user, &resolved.schemas);
        let columns = match assumed.and_then(|a| a.confirm(resolved)) {
            Some(columns) => Some(columns),
            None => planning::ColumnsAhead::read(names, resolved, federation),
        };
        if let Some(columns) = columns
            && let Ok(mut ahead) = ctx.columns_ahead.lock()
        {
            *ahead = Some(columns);
        }
    }
    // Outside a statement's own transaction the lake is read only once its
    // hot scans have taken their snapshot (see `scan`).
    if ctx.fixed_snapshot {
        let dialect = PostgreSqlDialect {};
        for name in names {
            let Ok(object) = Parser::new(&dialect)
                .try_with_sql(name)
                .and_then(|mut p| p.parse_object_name(false))
            else {
                continue;
            };
            for t in federation.tiered_named(&object) {
                ctx.load_lake_ahead(t, &federation.lake);
            }
        }
    }
    if let Ok(mut r) = ctx.resolved.lock() {
        *r = resolved;
    }
}
