//! The executor's session for one federated statement, and the tables it
//! names registered in it: tiered tables as hot ∪ cold, views by their
//! definitions, other tables as Postgres scans.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, TableReference};
use datafusion::datasource::TableProvider;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::prelude::{SessionConfig, SessionContext};

use super::link::quote_literal;
use super::names::Resolved;
use super::scan::{FederatedTable, NUMERIC_TEXT, ScanContext, scan_columns};
use super::{
    Failure, Federation, arrays, average, casts, datetrunc, exactness, intervals, joins, json,
    memory, tochar,
};
use crate::protocol::ErrorFields;

/// A DataFusion session for one statement: Postgres's SQL dialect, the
/// session's time zone, and a catalog of its own. Started from a clone of
/// the database's [`base_state`] (built once: the executor's several
/// hundred functions are registered once, not per statement).
pub(super) fn plan_session(ctx: &ScanContext, federation: &Federation) -> SessionContext {
    use datafusion::catalog::{CatalogProvider, CatalogProviderList};
    use datafusion::execution::FunctionRegistry;
    let mut state = federation
        .planner
        .get_or_init(|| base_state(federation))
        .clone();
    let config = state.config_mut();
    let options = config.options_mut();
    options.execution.time_zone = Some(ctx.time_zone.to_string());
    // Sorts set memory aside for merging their spill files: a part of the
    // statement's share, not DataFusion's fixed 10 MB.
    options.execution.sort_spill_reservation_bytes =
        (federation.limits.statement_memory() / 8).min(10 << 20);
    // Functions that read the configuration (`now()` in the session's
    // zone) are made again for this one.
    let updated: Vec<_> = state
        .scalar_functions()
        .values()
        .filter_map(|f| f.inner().with_updated_config(state.config_options()))
        .collect();
    for f in updated {
        let _ = state.register_udf(Arc::new(f));
    }
    // Nothing of the base's: its own catalog, and aliases numbered from one.
    let catalogs = datafusion::catalog::MemoryCatalogProviderList::new();
    let catalog = datafusion::catalog::MemoryCatalogProvider::new();
    let defaults = state.config_options().catalog.clone();
    let _ = catalog.register_schema(
        &defaults.default_schema,
        Arc::new(MemorySchemaProvider::new()),
    );
    catalogs.register_catalog(defaults.default_catalog, Arc::new(catalog));
    state.register_catalog_list(Arc::new(catalogs));
    *state.execution_props_mut() = datafusion::execution::context::ExecutionProps::new();
    let session = SessionContext::new_with_state(state);
    session.register_udf(tochar::ToChar::udf(&ctx.time_zone));
    session.register_udf(casts::AtTimeZone::udf(&ctx.time_zone));
    session
}

/// What every statement's session starts from: the executor's functions
/// and planners with thermocline's own, and its rules.
fn base_state(federation: &Federation) -> datafusion::execution::SessionState {
    use datafusion::execution::FunctionRegistry;
    let config = SessionConfig::new()
        .with_target_partitions(2)
        .with_information_schema(false)
        .set_str("datafusion.sql_parser.dialect", "PostgreSQL")
        // `0.5` is a numeric in Postgres, not a float.
        .set_bool("datafusion.sql_parser.parse_float_as_decimal", true);
    // Joins are turned to build on their smaller side before the
    // executor chooses how to run them.
    let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
    let at = rules
        .iter()
        .position(|r| r.name() == "join_selection")
        .unwrap_or(0);
    rules.insert(at, Arc::new(joins::SmallerBuildSide));
    let state = datafusion::execution::SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(federation.runtime.clone())
        .with_default_features()
        // Before the executor's own, which would plan `@>` over arrays
        // its way.
        .with_expr_planners(
            std::iter::once(Arc::new(arrays::ArrayPlanner) as _)
                .chain(datafusion::execution::SessionStateDefaults::default_expr_planners())
                .collect(),
        )
        .with_physical_optimizer_rules(rules)
        .build();
    let mut session = SessionContext::new_with_state(state);
    for udaf in intervals::sums() {
        session.register_udaf(udaf);
    }
    for udf in intervals::scalings() {
        session.register_udf(udf);
    }
    session.register_udf(datetrunc::BucketedDateTrunc::udf());
    session.register_udf(super::subqueries::Single::udf());
    for udf in average::Average::all() {
        session.register_udf(udf);
    }
    for f in json::functions() {
        session.register_udf(f);
    }
    let _ = session.register_expr_planner(Arc::new(json::JsonPlanner));
    session.state()
}

/// The context a statement's plan runs in: its share of the server's
/// memory pool.
pub(super) fn task_context(
    df: &datafusion::prelude::DataFrame,
    federation: &Federation,
) -> Arc<datafusion::execution::TaskContext> {
    let shared = &federation.runtime;
    let pool = Arc::new(memory::StatementPool::new(
        shared.memory_pool.clone(),
        federation.limits.statement_memory(),
    ));
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::from_runtime_env(shared)
        .with_memory_pool(pool)
        .build_arc()
        .unwrap_or_else(|_| shared.clone());
    Arc::new(df.task_ctx().with_runtime(runtime))
}

/// Registers every table the statement names: tiered tables as hot ∪ cold,
/// others as Postgres scans. Names are resolved by Postgres against the
/// session's search_path.
pub(super) async fn register_tables(
    sql: &str,
    ctx: &Arc<ScanContext>,
    federation: &Federation,
    session: &SessionContext,
) -> Result<(), Failure> {
    register_tables_at(sql, ctx, federation, session, 0).await
}

/// `depth`: how many views deep `sql` is (a view's definition names tables
/// and views of its own).
async fn register_tables_at(
    sql: &str,
    ctx: &Arc<ScanContext>,
    federation: &Federation,
    session: &SessionContext,
    depth: usize,
) -> Result<(), Failure> {
    if depth > 8 {
        return Err(Failure::Ours(ErrorFields::error(
            "0A000",
            "views nested more than 8 deep over a tiered table are not supported",
        )));
    }
    let statements = super::sqltext::parse(sql).map_err(|e| {
        // Postgres accepted it (it described it first).
        Failure::Ours(ErrorFields::error(
            "0A000",
            format!("this statement over the history of a tiered table is not supported yet: {e}"),
        ))
    })?;
    if depth > 0
        && let [statement] = statements.as_slice()
    {
        exactness::check(statement, &[])
            .map_err(|m| Failure::Ours(ErrorFields::error("0A000", m)))?;
    }
    // As the session was asked about them (see `names`).
    let names = super::names::relation_names(&statements);
    let written: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    // The statement's own names may have been resolved by the session
    // already: their columns are then read on the warm connection.
    let resolved = match depth {
        0 => ctx.resolved.lock().ok().and_then(|r| r.clone()),
        _ => None,
    };
    let ahead = match depth {
        0 => ctx.columns_ahead.lock().ok().and_then(|mut a| a.take()),
        _ => None,
    };
    let read_ahead = match ahead {
        Some(ahead) if ahead.written == written => ahead.columns().await,
        _ => None,
    };
    let catalog = match read_ahead {
        Some(attributes) => attributes,
        None => {
            // Not read ahead, or the read failed.
            let warm = resolved.and_then(|r| Some((r, federation.catalog.client()?)));
            let mut link = ctx.link.lock().await;
            let warm = warm.as_ref().map(|(r, c)| (r, c.as_ref()));
            relations(
                &mut link,
                &written,
                warm,
                &federation.byte_ordered_collation,
            )
            .await?
        }
    };
    for (index, name) in names.into_iter().enumerate() {
        let mut columns = Vec::new();
        let mut place = None;
        let mut view_def = None;
        let mut pg_rows = None;
        for a in catalog.iter().filter(|a| a.index == index) {
            place = Some((a.schema.clone(), a.table.clone()));
            // Strings (the column's, or computed ones in the database's
            // collation) in an order other than the executor's: see
            // `collation`.
            if !a.byte_ordered {
                ctx.collated
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            if a.column.1 == crate::pgtypes::oid::INTERVAL
                && let Ok(mut names) = ctx.interval_columns.lock()
            {
                names.push(a.column.0.clone());
            }
            view_def = a.view.clone();
            pg_rows = a.reltuples;
            columns.push(a.column.clone());
        }
        // A CTE or a name Postgres does not know: nothing to register
        // (Postgres already accepted the statement, so it is a CTE).
        let Some((schema, table)) = place else {
            continue;
        };
        let tiered = federation
            .tables
            .iter()
            .find(|t| t.def.schema == schema && t.def.table == table)
            .cloned();
        let qualified = format!(
            "{}.{}",
            crate::catalog::quote_ident(&schema),
            crate::catalog::quote_ident(&table)
        );
        let provider: Arc<dyn TableProvider> = match view_def {
            // A view: its definition, planned over the same providers, so
            // a view over a tiered table reads both tiers too.
            Some(def) => {
                let def = def.trim().trim_end_matches(';').to_string();
                Box::pin(register_tables_at(
                    &def,
                    ctx,
                    federation,
                    session,
                    depth + 1,
                ))
                .await?;
                let plan = exactness::plan_sql(session, &def, &interval_columns(ctx))
                    .await
                    .map_err(|e| unreadable(ctx, e, &def))?
                    .into_unoptimized_plan();
                Arc::new(datafusion::catalog::view::ViewTable::new(plan, Some(def)))
            }
            None => {
                let (columns, attnums, left_out) = scan_columns(&columns, tiered.is_none());
                if let Ok(mut all) = ctx.left_out.lock() {
                    all.extend(
                        left_out
                            .into_iter()
                            .map(|(column, ty)| (qualified.clone(), column, ty)),
                    );
                }
                if let Ok(mut all) = ctx.numeric_text.lock() {
                    all.extend(
                        columns
                            .iter()
                            .filter(|c| c.pg_type == NUMERIC_TEXT)
                            .map(|c| (qualified.clone(), c.name.clone())),
                    );
                }
                // The definition with the columns as they are now: one
                // renamed, retyped, added or dropped since it was loaded.
                let tiered = tiered.map(|t| {
                    let live =
                        columns
                            .iter()
                            .zip(attnums)
                            .map(|(c, attnum)| crate::tiering::Column {
                                name: c.name.clone(),
                                attnum,
                                pg_type: c.pg_type,
                                not_null: false,
                            });
                    let now = t.with_columns(live.collect()).map(Arc::new);
                    (now.unwrap_or(t), federation.lake.clone())
                });
                Arc::new(FederatedTable::new(
                    ctx.clone(),
                    qualified,
                    columns,
                    tiered,
                    pg_rows,
                ))
            }
        };
        let parts: Vec<String> = name
            .0
            .iter()
            .map(|p| match p.as_ident() {
                Some(i) if i.quote_style.is_some() => i.value.clone(),
                Some(i) => i.value.to_lowercase(),
                None => p.to_string(),
            })
            .collect();
        let reference = match parts.as_slice() {
            [t] => TableReference::partial("public", t.as_str()),
            [s, t] | [_, s, t] => TableReference::partial(s.as_str(), t.as_str()),
            _ => continue,
        };
        if let Some(s) = reference.schema()
            && session
                .catalog("datafusion")
                .and_then(|c| c.schema(s))
                .is_none()
            && let Some(c) = session.catalog("datafusion")
        {
            c.register_schema(s, Arc::new(MemorySchemaProvider::new()))?;
        }
        let _ = session.deregister_table(reference.clone());
        session.register_table(reference, provider)?;
    }
    Ok(())
}

/// The Postgres type OIDs below this are built in (`FirstNormalObjectId`):
/// no enum among them.
const FIRST_NORMAL_OID: u32 = 16384;

/// Collations that compare as the executor does: none (0), C and POSIX.
const C_COLLATIONS: [u32; 3] = [0, 950, 951];

/// The database's collation, checked on its own.
const DEFAULT_COLLATION: u32 = 100;

/// A column of a relation a statement names, as the catalog describes it.
#[derive(Debug)]
struct Attribute {
    /// The position of the relation's name among those looked up.
    index: usize,
    schema: String,
    table: String,
    /// A view's definition.
    view: Option<String>,
    /// Name, type OID, typmod, type as SQL, attnum and an enum's labels,
    /// as [`scan_columns`] takes them.
    column: (String, u32, i32, String, i16, Option<Vec<String>>),
    /// Whether strings in the column (and computed ones) order as in the
    /// executor: byte by byte.
    byte_ordered: bool,
    /// `reltuples`, where the table was analyzed.
    reltuples: Option<u64>,
    /// The relation's OID.
    relation: u32,
}

/// The columns of the relations `written` names, resolved against the
/// session's search_path, in one query. Enum labels and non-default
/// collations, which a new backend would pay to look up for every
/// statement, are looked up only for columns that have them. With `warm`
/// (where the session resolved the names, and the catalog connection), the
/// catalogs are read on that connection; on the session's when it fails.
async fn relations(
    link: &mut super::link::PgLink,
    written: &[String],
    warm: Option<(&Resolved, &tokio_postgres::Client)>,
    database_collation: &std::sync::OnceLock<bool>,
) -> Result<Vec<Attribute>, Failure> {
    if written.is_empty() {
        return Ok(Vec::new());
    }
    let oids = warm.and_then(|(resolved, _)| oids_of(written, resolved));
    if let (Some(oids), Some((resolved, client))) = (oids, warm) {
        let mut source = Catalogs::Warm(client, &resolved.schemas);
        match columns_of(&mut source, written, Some(&oids), database_collation).await {
            Ok(attributes) => return Ok(attributes),
            Err(e) => {
                tracing::debug!(error = %e, "the catalog connection failed; reading the catalogs on the session's");
            }
        }
    }
    columns_of(
        &mut Catalogs::Session(link),
        written,
        None,
        database_collation,
    )
    .await
    .map_err(|e| match e {
        CatalogError::Session(e) => e.into(),
        CatalogError::Warm(e) => Failure::Ours(ErrorFields::error("XX000", e.to_string())),
    })
}

/// The relation each name resolved to, where the session resolved them
/// all.
fn oids_of(written: &[String], resolved: &Resolved) -> Option<Vec<Option<u32>>> {
    written
        .iter()
        .map(|w| {
            resolved
                .names
                .iter()
                .find(|(name, _)| name == w)
                .map(|(_, oid)| *oid)
        })
        .collect()
}

/// The columns of a statement's relations, being read on the catalog
/// connection (see `ahead`).
#[derive(Debug)]
pub(super) struct ColumnsAhead {
    /// The relations' names as written.
    written: Vec<String>,
    check: Check,
    read: tokio::task::JoinHandle<Result<Vec<Attribute>, CatalogError>>,
}

/// What a [`ColumnsAhead`] read must pass to be taken.
#[derive(Debug)]
enum Check {
    /// Nothing: the names were read as the relations the session found.
    None,
    /// Begun before the session resolved the names, against this search
    /// path: the session's must be the same.
    Path(Vec<String>),
    /// Confirmed: each name must have been found as this relation.
    Relations(Vec<Option<u32>>),
}

impl ColumnsAhead {
    /// Begins reading the columns of the relations `written` names, where
    /// the session resolved them all and the catalog connection is open.
    pub(super) fn read(
        written: &[String],
        resolved: &Resolved,
        federation: &Federation,
    ) -> Option<Self> {
        let oids = oids_of(written, resolved)?;
        Self::begin(written, &resolved.schemas, Some(oids), federation)
    }

    /// Begins reading the columns of the relations `written` names as
    /// resolved against `schemas`, the search path the session is expected
    /// to have, while the session itself resolves them: see [`Self::confirm`].
    pub(super) fn assume(
        written: &[String],
        schemas: &[String],
        federation: &Federation,
    ) -> Option<Self> {
        let mut ahead = Self::begin(written, schemas, None, federation)?;
        ahead.check = Check::Path(schemas.to_vec());
        Some(ahead)
    }

    fn begin(
        written: &[String],
        schemas: &[String],
        oids: Option<Vec<Option<u32>>>,
        federation: &Federation,
    ) -> Option<Self> {
        let client = federation.catalog.client()?;
        let (names, schemas) = (written.to_vec(), schemas.to_vec());
        let collation = federation.byte_ordered_collation.clone();
        let read = tokio::spawn(async move {
            let mut source = Catalogs::Warm(&client, &schemas);
            columns_of(&mut source, &names, oids.as_deref(), &collation).await
        });
        Some(Self {
            written: written.to_vec(),
            check: Check::None,
            read,
        })
    }

    /// The read, if it serves the names as the session `resolved` them:
    /// begun by [`Self::read`], or by [`Self::assume`] under the search path
    /// the session has. Each name must then be found as the same relation,
    /// which [`Self::columns`] checks.
    pub(super) fn confirm(mut self, resolved: &Resolved) -> Option<Self> {
        if let Check::Path(assumed) = &self.check {
            if *assumed != resolved.schemas {
                return None;
            }
            self.check = Check::Relations(oids_of(&self.written, resolved)?);
        }
        Some(self)
    }

    /// The columns read; `None` when the read failed, or found a name as
    /// another relation than the session did.
    async fn columns(mut self) -> Option<Vec<Attribute>> {
        let attributes = match (&mut self.read).await {
            Ok(Ok(attributes)) => attributes,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "the catalog connection failed; reading the catalogs on the session's");
                return None;
            }
            Err(_) => return None,
        };
        let taken = match &self.check {
            Check::None => true,
            Check::Path(_) => false,
            Check::Relations(expected) => expected.iter().enumerate().all(|(i, oid)| {
                attributes.iter().find(|a| a.index == i).map(|a| a.relation) == *oid
            }),
        };
        taken.then_some(attributes)
    }
}

impl Drop for ColumnsAhead {
    fn drop(&mut self) {
        // The statement ended first.
        self.read.abort();
    }
}

/// Where [`columns_of`] reads the catalogs.
enum Catalogs<'a> {
    /// The session's backend, its search_path in effect.
    Session(&'a mut super::link::PgLink),
    /// thermocline's own connection, with the session's search path.
    Warm(&'a tokio_postgres::Client, &'a [String]),
}

#[derive(Debug, thiserror::Error)]
enum CatalogError {
    #[error(transparent)]
    Session(super::link::LinkError),
    #[error(transparent)]
    Warm(tokio_postgres::Error),
}

impl Catalogs<'_> {
    async fn rows(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, CatalogError> {
        match self {
            Self::Session(link) => link.rows(sql).await.map_err(CatalogError::Session),
            Self::Warm(client, schemas) => super::names::rows_in(client, schemas, sql)
                .await
                .map_err(CatalogError::Warm),
        }
    }
}

/// [`relations`], from `source`: each name found by the relation it
/// resolved to (`oids`), or by resolving it there.
async fn columns_of(
    source: &mut Catalogs<'_>,
    written: &[String],
    oids: Option<&[Option<u32>]>,
    database_collation: &std::sync::OnceLock<bool>,
) -> Result<Vec<Attribute>, CatalogError> {
    // One branch per name, each finding its relation by the index on
    // pg_class's oid: cheaper for a new backend than joining a list of
    // names (most statements name one relation).
    let branches = written
        .iter()
        .enumerate()
        .filter_map(|(i, w)| {
            let relation = match oids {
                Some(oids) => format!("'{}'::pg_catalog.oid", oids[i]?),
                None => format!("pg_catalog.to_regclass({})", quote_literal(w)),
            };
            Some(format!(
                "SELECT {i}, (SELECT n.nspname FROM pg_catalog.pg_namespace n WHERE n.oid = c.relnamespace), \
                        c.relname, a.attname, a.atttypid, a.atttypmod, \
                        pg_catalog.format_type(a.atttypid, a.atttypmod), \
                        CASE WHEN c.relkind = 'v' THEN pg_catalog.pg_get_viewdef(c.oid, true) END, a.attnum, \
                        a.attcollation, c.reltuples, c.oid \
                 FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                 WHERE c.oid = {relation}"
            ))
        })
        .collect::<Vec<_>>();
    let rows = match branches.is_empty() {
        true => Vec::new(),
        false => {
            source
                .rows(&format!("{} ORDER BY 1, 9", branches.join(" UNION ALL ")))
                .await?
        }
    };
    // Whether the database's collation orders strings byte by byte: asked
    // once per database (it cannot be changed).
    let database_byte_ordered = match database_collation.get() {
        Some(known) => *known,
        None => {
            let rows = source
                .rows(
                    "SELECT coalesce(pg_catalog.to_jsonb(d) ->> 'datlocprovider', 'c') = 'c' \
                            AND d.datcollate IN ('C', 'POSIX', 'C.UTF-8', 'C.utf8') \
                     FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()",
                )
                .await?;
            let known = rows.first().and_then(|r| r.first().cloned().flatten()) == Some("t".into());
            let _ = database_collation.set(known);
            known
        }
    };
    let text = |r: &[Option<String>], i: usize| r.get(i).cloned().flatten().unwrap_or_default();
    let oid = |r: &[Option<String>], i: usize| text(r, i).parse::<u32>().unwrap_or(0);
    let types: BTreeSet<u32> = rows
        .iter()
        .map(|r| oid(r, 4))
        .filter(|t| *t >= FIRST_NORMAL_OID)
        .collect();
    let collations: BTreeSet<u32> = rows
        .iter()
        .map(|r| oid(r, 9))
        .filter(|c| *c != DEFAULT_COLLATION && !C_COLLATIONS.contains(c))
        .collect();
    let list = |oids: &BTreeSet<u32>| {
        oids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut lookups = Vec::new();
    if !types.is_empty() {
        lookups.push(format!(
            "SELECT 'e', e.enumtypid::text, pg_catalog.json_agg(e.enumlabel ORDER BY e.enumsortorder)::text \
             FROM pg_catalog.pg_enum e WHERE e.enumtypid IN ({}) GROUP BY e.enumtypid",
            list(&types)
        ));
    }
    if !collations.is_empty() {
        lookups.push(format!(
            "SELECT 'c', co.oid::text, \
                    (co.collprovider = 'c' AND co.collcollate IN ('C', 'POSIX', 'C.UTF-8', 'C.utf8'))::text \
             FROM pg_catalog.pg_collation co WHERE co.oid IN ({})",
            list(&collations)
        ));
    }
    let found = if lookups.is_empty() {
        Vec::new()
    } else {
        source.rows(&lookups.join(" UNION ALL ")).await?
    };
    let lookup = |kind: &str, key: u32| {
        found
            .iter()
            .find(|f| text(f, 0) == kind && oid(f, 1) == key)
            .map(|f| text(f, 2))
    };
    Ok(rows
        .iter()
        .map(|r| {
            let (atttypid, collation) = (oid(r, 4), oid(r, 9));
            let labels = if atttypid >= FIRST_NORMAL_OID {
                lookup("e", atttypid).and_then(|l| serde_json::from_str::<Vec<String>>(&l).ok())
            } else {
                None
            };
            let column_c = collation == DEFAULT_COLLATION
                || C_COLLATIONS.contains(&collation)
                || lookup("c", collation).as_deref() == Some("true");
            Attribute {
                index: oid(r, 0) as usize,
                schema: text(r, 1),
                table: text(r, 2),
                view: r.get(7).cloned().flatten(),
                column: (
                    text(r, 3),
                    atttypid,
                    text(r, 5).parse::<i32>().unwrap_or(-1),
                    text(r, 6),
                    text(r, 8).parse::<i16>().unwrap_or(0),
                    labels,
                ),
                byte_ordered: database_byte_ordered && column_c,
                // Never analyzed: -1.
                reltuples: text(r, 10)
                    .parse::<f64>()
                    .ok()
                    .filter(|n| *n >= 0.0)
                    .map(|n| n as u64),
                relation: oid(r, 11),
            }
        })
        .collect())
}

/// The names of the interval columns of the tables registered so far.
pub(super) fn interval_columns(ctx: &ScanContext) -> Vec<String> {
    ctx.interval_columns
        .lock()
        .map(|names| names.clone())
        .unwrap_or_default()
}

/// A planning error that names a column the scans left out, said as such:
/// the executor cannot carry the column's type.
pub(super) fn unreadable(ctx: &ScanContext, e: DataFusionError, sql: &str) -> Failure {
    // Types that do not go together, with a numeric read as text among
    // them (see `numeric_text_refusal`).
    if e.find_root().to_string().contains("Utf8")
        && let Ok(carried) = ctx.numeric_text.lock()
        && let Some((table, column)) = carried.iter().find(|(_, c)| sql.contains(c.as_str()))
    {
        return Failure::Ours(ErrorFields::error(
            "0A000",
            numeric_text_message(table, column),
        ));
    }
    let DataFusionError::SchemaError(schema_error, _) = e.find_root() else {
        return Failure::DataFusion(e);
    };
    let datafusion::common::SchemaError::FieldNotFound { field, .. } = schema_error.as_ref() else {
        return Failure::DataFusion(e);
    };
    let left_out = ctx.left_out.lock().map(|l| l.clone()).unwrap_or_default();
    let Some((table, column, ty)) = left_out.iter().find(|(_, c, _)| *c == field.name) else {
        return Failure::DataFusion(e);
    };
    Failure::Ours(ErrorFields::error(
        "0A000",
        unreadable_message(table, column, ty),
    ))
}

/// For an output column (of those Postgres described) that is a table's
/// column the scans left out: why it cannot be read.
pub(super) fn left_out_among(
    ctx: &ScanContext,
    fields: &[super::link::FieldDescription],
) -> Option<String> {
    let left_out = ctx.left_out.lock().ok()?;
    fields
        .iter()
        .filter(|f| f.table_oid != 0)
        .find_map(|f| left_out.iter().find(|(_, c, _)| *c == f.name))
        .map(|(table, column, ty)| unreadable_message(table, column, ty))
}

/// Why column `column` of `table`, of type `ty`, cannot be read in a
/// statement over a tiered table's history.
pub(super) fn unreadable_message(table: &str, column: &str, ty: &str) -> String {
    let hint = if ty == "numeric" || ty.starts_with("numeric(") {
        "; declare it as numeric(p, s) with p <= 38"
    } else {
        ""
    };
    let ty = if ty == "numeric" {
        "numeric without a precision"
    } else {
        ty
    };
    format!(
        "column \"{column}\" of table {table} has type {ty}, which a statement over the history of a tiered table cannot read yet{hint}"
    )
}

/// Why the statement cannot run as planned (`plan`), when it computes
/// with a numeric column without a precision of a plain table: such a
/// column is read as its text, which it may return, under any name, but
/// not compare, sort, group, deduplicate or compute with.
pub(super) fn numeric_text_refusal(plan: &LogicalPlan, ctx: &ScanContext) -> Option<String> {
    let carried = ctx.numeric_text.lock().ok()?.clone();
    if carried.is_empty() {
        return None;
    }
    // The names the columns go by, under the aliases given to them.
    let mut names: HashSet<String> = carried.iter().map(|(_, c)| c.clone()).collect();
    loop {
        let before = names.len();
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::Projection(p) = node {
                for e in &p.expr {
                    if let Expr::Alias(a) = e
                        && let Expr::Column(c) = a.expr.as_ref()
                        && names.contains(&c.name)
                    {
                        names.insert(a.name.clone());
                    }
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        if names.len() == before {
            break;
        }
    }
    // A use of the column other than asking whether it is NULL (`IS
    // [NOT] NULL`, `count(x)`), which its text tells as its value would.
    let used = |e: &Expr| {
        let mut found = None;
        let _ = e.apply(|x| {
            let null_test = match x {
                Expr::IsNull(inner) | Expr::IsNotNull(inner) => Some(inner.as_ref()),
                Expr::AggregateFunction(f)
                    if f.func.name() == "count"
                        && f.params.args.len() == 1
                        && !f.params.distinct =>
                {
                    f.params.args.first()
                }
                _ => None,
            };
            if matches!(null_test, Some(Expr::Column(_))) {
                return Ok(TreeNodeRecursion::Jump);
            }
            if let Expr::Column(c) = x
                && names.contains(&c.name)
            {
                found = Some(c.name.clone());
                return Ok(TreeNodeRecursion::Stop);
            }
            Ok(TreeNodeRecursion::Continue)
        });
        found
    };
    let mut found = None;
    let _ = plan.apply_with_subqueries(|node| {
        found = match node {
            LogicalPlan::Projection(p) => p
                .expr
                .iter()
                .filter(|e| {
                    let inner = match e {
                        Expr::Alias(a) => a.expr.as_ref(),
                        e => e,
                    };
                    !matches!(inner, Expr::Column(_))
                })
                .find_map(used),
            LogicalPlan::Distinct(_) | LogicalPlan::Union(_) => node
                .schema()
                .fields()
                .iter()
                .find(|f| names.contains(f.name()))
                .map(|f| f.name().clone()),
            _ => node.expressions().iter().find_map(used),
        };
        Ok(match found {
            Some(_) => TreeNodeRecursion::Stop,
            None => TreeNodeRecursion::Continue,
        })
    });
    let name = found?;
    // The column by its own name, else the first such column.
    let (table, column) = carried
        .iter()
        .find(|(_, c)| *c == name)
        .unwrap_or(&carried[0]);
    Some(numeric_text_message(table, column))
}

fn numeric_text_message(table: &str, column: &str) -> String {
    format!(
        "column \"{column}\" of table {table} has type numeric without a precision, which a \
         statement over the history of a tiered table may return but cannot compute with yet; \
         declare it as numeric(p, s) with p <= 38"
    )
}

/// Whether output column `f` is a plain table's numeric without a
/// precision, returned as Postgres wrote it (see [`numeric_text_refusal`]).
pub(super) fn returned_as_text(ctx: &ScanContext, f: &super::link::FieldDescription) -> bool {
    f.table_oid != 0
        && ctx
            .numeric_text
            .lock()
            .is_ok_and(|all| all.iter().any(|(_, c)| *c == f.name))
}
