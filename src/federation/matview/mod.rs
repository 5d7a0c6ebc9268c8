//! Materialized views over tiered tables.
//!
//! `CREATE MATERIALIZED VIEW v AS <query>` over a tiered table is computed
//! over the whole history (hot and cold rows, as any federated read) and
//! stored in an ordinary Postgres table `v`: catalog tools list it, indexes
//! can be built on it, and reads of it are plain relays. Its definition is
//! kept in `thermocline.materialized_views`, in the same database, so every
//! thermocline in front of it shares it.
//!
//! `REFRESH MATERIALIZED VIEW [CONCURRENTLY] v` recomputes it in one
//! transaction (DELETE, then COPY of the new rows): readers see the old
//! rows until it commits and are never blocked. A view that groups by
//! `date_trunc('<unit>', <time column>)` of its tiered table, reading no
//! other table, is refreshed incrementally: only buckets written since its
//! last refresh are recomputed. Each refresh keeps its Postgres snapshot;
//! the next reads the writes recorded since (the triggers of
//! [`super::hotcache`]) and the lake partitions whose recorded checksum
//! changed. Where the recorded writes cannot be relied on, the buckets from
//! the earliest time that may have changed on are recomputed: the least of
//! the earliest hot row then and now, and the start of every lake
//! partition changed.
//!
//! A view bucketed by a week or longer whose columns are group keys and
//! `count`/`sum`/`min`/`max` is also kept in parts, per day, or per hour
//! when it has no other group key (then a daily view too)
//! ([`parts::Parts`]): a refresh recomputes the parts written, then
//! merges the buckets that hold them from their parts. Parts at or after
//! the lake's watermark are recomputed by Postgres alone.
//!
//! `WITH (thermocline.refresh_interval = '5 minutes')` has the server
//! refresh a view on that interval ([`schedule::refresh_due`]).
//!
//! `DROP MATERIALIZED VIEW v` drops the table and its definition. Views
//! over no tiered table are left to Postgres unchanged.
//!
//! Here: the commands themselves. [`parse`] reads them, [`incremental`]
//! finds what a refresh must recompute, [`rows`] computes a view's rows
//! and writes them, [`schedule`] refreshes views on their interval.

/// The value of a link result; on an error, ends the command with it (a
/// lost link as `None`).
macro_rules! on_link {
    ($link:ident, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(LinkError::Gone) => return (None, Err(Failure::Link(LinkError::Gone))),
            Err(e) => return (Some($link), Err(Failure::Link(e))),
        }
    };
}

mod calendar;
mod incremental;
mod parse;
mod parts;
pub(super) mod rows;
pub(crate) mod schedule;

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::link::{self, LinkError, PgLink, quote_literal};
use super::{Failure, Federation, Out, SessionSettings, finish, refuse, relay_query, undo};
use crate::frontend::cancel::SessionCancel;
use crate::protocol::ErrorFields;
use crate::tiering::TieredTable;
use incremental::{analyze, changed_since, lake_changes, recompute, recorded, with_condition};
use parse::{Command, Create, parse, split_top_level};
pub(crate) use parse::{is_create, may_be_command};
use rows::{copy_in, rows_of};

/// Where definitions live.
const DEFINITIONS: &str = "thermocline.materialized_views";

const CREATE_DEFINITIONS: &str = "CREATE SCHEMA IF NOT EXISTS thermocline;
CREATE TABLE IF NOT EXISTS thermocline.materialized_views (
    view_schema text NOT NULL,
    view_name text NOT NULL,
    definition text NOT NULL,
    tiered_table text NOT NULL,
    time_zone text NOT NULL,
    bucket_column text,
    bucket_unit text,
    time_column text,
    refresh_interval interval,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_refresh timestamptz,
    last_refresh_kind text,
    last_refresh_ms double precision,
    last_refresh_rows bigint,
    hot_min text,
    lake_checksums text,
    hot_snapshot text,
    hot_signature text,
    parts_table text,
    parts_grain text,
    PRIMARY KEY (view_schema, view_name)
);
ALTER TABLE thermocline.materialized_views ADD COLUMN IF NOT EXISTS parts_table text;
ALTER TABLE thermocline.materialized_views ADD COLUMN IF NOT EXISTS parts_grain text";

/// Answers a materialized-view command.
pub(super) async fn answer(
    mut link: PgLink,
    out: &mut Out<'_>,
    sql: &str,
    federation: &Federation,
    settings: &SessionSettings,
    cancel: &SessionCancel,
) -> Option<PgLink> {
    let command = match parse(sql) {
        Ok(c) => c,
        Err(message) => {
            // A form this parser does not know, over a tiered table: refused,
            // rather than left to Postgres, which would see hot rows only.
            let lower = sql.to_lowercase();
            if lower.trim_start().starts_with("create")
                && federation
                    .tables
                    .iter()
                    .any(|t| lower.contains(&t.def.table.to_lowercase()))
            {
                return refuse(
                    link,
                    out,
                    ErrorFields::error(
                        "0A000",
                        format!(
                            "{message}: a materialized view over a tiered table is written \
                             CREATE MATERIALIZED VIEW [IF NOT EXISTS] name [(columns)] \
                             [WITH (options)] AS query [WITH [NO] DATA]"
                        ),
                    ),
                )
                .await;
            }
            // Postgres reports the syntax error.
            return relay_query(link, out, sql).await;
        }
    };
    let own_transaction = link.txn_status == b'I';
    // A refresh in a transaction of its own begins it here, and takes the
    // view's lock before the snapshot (LOCK takes none): one refresh of a
    // view at a time, the next one seeing what this one wrote; readers are
    // not blocked. Its definition is then read once, in the snapshot; in
    // the same round trip where the database was seen to keep definitions
    // (the read fails otherwise).
    let mut begun: Option<Definition> = None;
    // Ours only when it concerns a tiered table or a view kept here.
    let ours = match &command {
        Command::Create(c) => analyze(&c.query, &federation.tables).is_some(),
        Command::Refresh { name, .. } if own_transaction => {
            let keeps = &federation.keeps_views;
            let seen = keeps.load(Ordering::Relaxed);
            let begin = format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ; LOCK TABLE {name} IN EXCLUSIVE MODE"
            );
            // With the writes since the last refresh, where that can be
            // read; as a definitions table of an earlier version may lack
            // the columns, or the function that reads them be missing, a
            // failure is tried again without them.
            let read = if seen {
                match link
                    .rows(&format!("{begin}; {}", definition_and_writes_sql(name)))
                    .await
                {
                    Err(LinkError::Postgres(_)) => match link.simple("ROLLBACK").await {
                        Ok(_) => None,
                        Err(e) => Some(Err(e)),
                    },
                    other => Some(other.map(Definition::from_rows)),
                }
            } else {
                None
            };
            let found = if let Some(found) = read {
                found
            } else {
                match link.simple(&begin).await {
                    Ok(_) => definition(&mut link, name).await,
                    Err(e) => Err(e),
                }
            };
            match found {
                Ok(Some(d)) => {
                    keeps.store(true, Ordering::Relaxed);
                    begun = Some(d);
                    true
                }
                Err(LinkError::Gone) => return None,
                // Not kept here, not a table, or one this role may not
                // lock (nor refresh): Postgres answers.
                other => {
                    if other.is_err() {
                        keeps.store(false, Ordering::Relaxed);
                    }
                    link.simple("ROLLBACK").await.ok()?;
                    false
                }
            }
        }
        Command::Refresh { name, .. } => match definition(&mut link, name).await {
            Ok(d) => d.is_some(),
            Err(LinkError::Gone) => return None,
            Err(_) => false,
        },
        Command::Drop { names, .. } => {
            let mut any = false;
            for name in names {
                match definition(&mut link, name).await {
                    Ok(d) => any |= d.is_some(),
                    Err(LinkError::Gone) => return None,
                    Err(_) => {}
                }
            }
            any
        }
    };
    if !ours {
        return relay_query(link, out, sql).await;
    }
    let _slot = match federation.limits.federated_slot(cancel).await {
        Ok(slot) => slot,
        Err(e) => {
            if begun.is_some() {
                link.simple("ROLLBACK").await.ok()?;
            }
            return refuse(link, out, e).await;
        }
    };
    // One snapshot for every query of the command, as for a read.
    if own_transaction
        && begun.is_none()
        && link
            .simple("BEGIN ISOLATION LEVEL REPEATABLE READ")
            .await
            .is_err()
    {
        return None;
    }
    // The refresh's lock, in a client's transaction.
    if let Command::Refresh { name, .. } = &command
        && begun.is_none()
        && let Err(e) = link
            .simple(&format!("LOCK TABLE {name} IN EXCLUSIVE MODE"))
            .await
    {
        if matches!(e, LinkError::Gone) {
            return None;
        }
        out.error(Failure::Link(e).encode());
        undo(&mut link, own_transaction).await?;
        finish(&mut link, out);
        return Some(link);
    }
    let (link, outcome) = match command {
        Command::Create(c) => create(link, c, federation, settings, cancel, own_transaction).await,
        Command::Refresh { name, with_data } => {
            refresh(
                link,
                &name,
                begun,
                with_data,
                federation,
                settings,
                cancel,
                own_transaction,
            )
            .await
        }
        Command::Drop {
            names,
            if_exists,
            cascade,
        } => drop_views(link, &names, if_exists, cascade).await,
    };
    let mut link = link?;
    match outcome {
        Ok(tag) => {
            let mut tag = tag.into_bytes();
            tag.push(0);
            crate::protocol::put_message(&mut out.buf, b'C', &tag);
            // Unless the command committed already.
            if own_transaction && link.txn_status != b'I' {
                match link.simple("COMMIT").await {
                    Ok(_) => {}
                    Err(LinkError::Postgres(e)) => out.error(e.encode()),
                    Err(_) => return None,
                }
            }
        }
        Err(error) => {
            if matches!(&error, Failure::Link(LinkError::Gone)) {
                return None;
            }
            out.error(error.encode());
            // A COMMIT that failed ended the transaction already.
            if !(own_transaction && link.txn_status == b'I') {
                undo(&mut link, own_transaction).await?;
            }
        }
    }
    finish(&mut link, out);
    Some(link)
}

/// A kept definition.
#[derive(Debug)]
struct Definition {
    /// `schema.name`, quoted.
    qualified: String,
    schema: String,
    name: String,
    query: String,
    time_zone: String,
    bucket_column: Option<String>,
    hot_min: Option<String>,
    lake_checksums: Option<String>,
    /// The snapshot of the last refresh, and what the tiered table's
    /// recorded writes relied on then (see [`incremental::recorded`]).
    hot_snapshot: Option<String>,
    hot_signature: Option<String>,
    /// Whether the definitions table has those two columns (it was
    /// created by an earlier version otherwise).
    keeps_snapshots: bool,
    /// The table of its parts, when it is kept in parts (see
    /// [`parts::Parts`]).
    parts_table: Option<String>,
    /// What each of its parts covers.
    parts_grain: parts::Grain,
    /// The tiered table it was created over.
    tiered_table: Option<String>,
    /// Read with the definition (see [`definition_and_writes_sql`]): the
    /// command's snapshot, its transaction's id, and the writes to the
    /// tiered table since the last refresh.
    writes_read: Option<Vec<Option<String>>>,
}

/// The definition kept for the relation `name` resolves to, if any.
async fn definition(link: &mut PgLink, name: &str) -> Result<Option<Definition>, LinkError> {
    let kept = link
        .rows(&format!(
            "SELECT pg_catalog.to_regclass({}) IS NOT NULL",
            quote_literal(DEFINITIONS)
        ))
        .await?;
    if kept.first().and_then(|r| r[0].as_deref()) != Some("t") {
        return Ok(None);
    }
    Ok(Definition::from_rows(
        link.rows(&definition_sql(name)).await?,
    ))
}

/// The query reading the definition kept for `name`; it fails where the
/// database keeps no definitions.
fn definition_sql(name: &str) -> String {
    // The row as JSON: a table made by an earlier version lacks the later
    // columns.
    format!(
        "SELECT pg_catalog.row_to_json(d)::text FROM {DEFINITIONS} d \
         WHERE pg_catalog.to_regclass(pg_catalog.format('%I.%I', d.view_schema, d.view_name)) \
             = pg_catalog.to_regclass({})",
        quote_literal(name)
    )
}

/// [`definition_sql`] with, in the same snapshot, what a refresh asks
/// next where it relies on the writes recorded (see
/// [`incremental::recorded`]): the snapshot, the transaction's id, and
/// the writes to the tiered table since the last refresh. It fails where
/// the definitions table, or what records the writes, is not as this
/// version makes it.
fn definition_and_writes_sql(name: &str) -> String {
    definition_sql(name).replacen(
        "::text FROM",
        "::text, pg_catalog.pg_current_snapshot()::text, \
         pg_catalog.pg_current_xact_id_if_assigned()::text, \
         CASE WHEN d.hot_snapshot IS NOT NULL THEN thermocline.written_since(d.tiered_table::regclass, \
             pg_catalog.pg_snapshot_xmin(d.hot_snapshot::pg_snapshot), d.hot_snapshot::pg_snapshot)::text END \
         FROM",
        1,
    )
}

impl Definition {
    /// The definition [`definition_sql`] or [`definition_and_writes_sql`]
    /// read, if any.
    fn from_rows(rows: Vec<Vec<Option<String>>>) -> Option<Self> {
        let mut row = rows.into_iter().next()?.into_iter();
        let json = row.next()??;
        let writes: Vec<Option<String>> = row.collect();
        let row = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&json).ok()?;
        let get = |key: &str| row.get(key).and_then(|v| v.as_str()).map(str::to_string);
        let (schema, name) = (
            get("view_schema").unwrap_or_default(),
            get("view_name").unwrap_or_default(),
        );
        Some(Definition {
            qualified: format!(
                "{}.{}",
                crate::catalog::quote_ident(&schema),
                crate::catalog::quote_ident(&name)
            ),
            schema,
            name,
            query: get("definition").unwrap_or_default(),
            time_zone: get("time_zone").unwrap_or_else(|| "UTC".into()),
            bucket_column: get("bucket_column"),
            hot_min: get("hot_min"),
            lake_checksums: get("lake_checksums"),
            hot_snapshot: get("hot_snapshot"),
            hot_signature: get("hot_signature"),
            keeps_snapshots: row.contains_key("hot_snapshot"),
            parts_table: get("parts_table"),
            parts_grain: parts::Grain::recorded(get("parts_grain").as_deref()),
            tiered_table: get("tiered_table"),
            writes_read: (!writes.is_empty()).then_some(writes),
        })
    }
}

type Outcome = (Option<PgLink>, Result<String, Failure>);

async fn create(
    mut link: PgLink,
    c: Create,
    federation: &Federation,
    settings: &SessionSettings,
    cancel: &SessionCancel,
    own_snapshot: bool,
) -> Outcome {
    let Some((tiered, buckets)) = analyze(&c.query, &federation.tables) else {
        return (Some(link), Err(internal("not a view over a tiered table")));
    };
    on_link!(link, link.simple(CREATE_DEFINITIONS).await);
    let exists = on_link!(
        link,
        link.rows(&format!(
            "SELECT pg_catalog.to_regclass({}) IS NOT NULL",
            quote_literal(&c.name)
        ))
        .await
    );
    if c.if_not_exists && exists.first().and_then(|r| r[0].as_deref()) == Some("t") {
        let mut notice = ErrorFields::error(
            "42P07",
            format!("relation \"{}\" already exists, skipping", c.name),
        );
        notice.severity = "NOTICE";
        let m = notice.encode();
        link.deferred.push(link::BackendMessage {
            tag: b'N',
            body: bytes::Bytes::copy_from_slice(&m[5..]),
        });
        return (Some(link), Ok("CREATE MATERIALIZED VIEW".into()));
    }
    let with = if c.storage.is_empty() {
        String::new()
    } else {
        format!(" WITH ({})", c.storage.join(", "))
    };
    on_link!(
        link,
        link.simple(&format!(
            "CREATE TABLE {}{} {with} AS {} WITH NO DATA",
            c.name,
            if c.columns.is_empty() {
                String::new()
            } else {
                format!(" {}", c.columns)
            },
            c.query
        ))
        .await
    );
    // Where it landed and what its bucket column is called.
    let place = on_link!(
        link,
        link.rows(&format!(
                "SELECT n.nspname, c.relname, c.oid::text, \
                        (SELECT array_agg(a.attname ORDER BY a.attnum)::text[] FROM pg_catalog.pg_attribute a \
                          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)::text \
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.oid = pg_catalog.to_regclass({})",
                quote_literal(&c.name)
            )
        )
        .await
    );
    let Some(place) = place.into_iter().next() else {
        return (
            Some(link),
            Err(internal("the view's table was not created")),
        );
    };
    let (schema, name) = (
        place[0].clone().unwrap_or_default(),
        place[1].clone().unwrap_or_default(),
    );
    let columns = column_names(place[3].as_deref().unwrap_or("{}"));
    let bucket_column = buckets
        .as_ref()
        .and_then(|b| columns.get(b.position).cloned());
    let nullable = |v: Option<&String>| v.map_or("NULL".to_string(), |s| quote_literal(s));
    // A definition left by a table dropped with DROP TABLE goes first,
    // with its parts.
    let left = on_link!(
        link,
        link.rows(&format!(
            "DELETE FROM {DEFINITIONS} WHERE view_schema = {} AND view_name = {} RETURNING parts_table",
            quote_literal(&schema),
            quote_literal(&name)
        ))
        .await
    );
    for parts in left
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
    {
        on_link!(
            link,
            link.simple(&format!("DROP TABLE IF EXISTS {parts}")).await
        );
    }
    // Kept in parts when it can be: their table is made as the view's is.
    // By the day where the time column is a date.
    let days = (time_type(tiered) == "date").then_some(parts::Grain::Day);
    let parts = buckets
        .as_ref()
        .and_then(|b| parts::parts(&c.query, b, days))
        .map(|p| {
            (
                format!(
                    "thermocline.parts_{}",
                    place[2].as_deref().unwrap_or_default()
                ),
                p,
            )
        });
    if let Some((table, p)) = &parts {
        on_link!(
            link,
            link.simple(&format!(
                "CREATE TABLE {table} AS {} WITH NO DATA; CREATE INDEX ON {table} (part)",
                p.query
            ))
            .await
        );
    }
    on_link!(
        link,
        link.simple(&format!(
            "INSERT INTO {DEFINITIONS} (view_schema, view_name, definition, tiered_table, time_zone, \
                 bucket_column, bucket_unit, time_column, refresh_interval, parts_table, parts_grain) \
             VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}::interval, {}, {})",
            quote_literal(&schema),
            quote_literal(&name),
            quote_literal(&c.query),
            quote_literal(&tiered.def.qualified()),
            quote_literal(&settings.time_zone),
            nullable(bucket_column.as_ref()),
            nullable(buckets.as_ref().map(|b| &b.unit)),
            nullable(buckets.as_ref().map(|b| b.time.to_string()).as_ref()),
            nullable(c.refresh_interval.as_ref()),
            nullable(parts.as_ref().map(|(t, _)| t)),
            nullable(parts.as_ref().map(|(_, p)| p.grain.unit().to_string()).as_ref()),
        ))
        .await
    );
    if !c.with_data {
        return (Some(link), Ok("CREATE MATERIALIZED VIEW".into()));
    }
    let Some(definition) = on_link!(link, definition(&mut link, &c.name).await) else {
        return (
            Some(link),
            Err(internal("the view's definition was not kept")),
        );
    };
    let (link, outcome) = fill(
        link,
        &definition,
        tiered,
        buckets.as_ref(),
        federation,
        settings,
        cancel,
        own_snapshot,
    )
    .await;
    (link, outcome.map(|(rows, _)| format!("SELECT {rows}")))
}

/// `{a,"b c"}` as Postgres writes a text array: its elements.
fn column_names(array: &str) -> Vec<String> {
    let inner = array.trim_start_matches('{').trim_end_matches('}');
    split_top_level(&inner.replace('"', "'"))
        .into_iter()
        .map(|s| s.trim().trim_matches('\'').to_string())
        .collect()
}

/// Refreshes view `name`, whose definition is `begun` when already read
/// (in the command's snapshot).
#[allow(clippy::too_many_arguments)]
async fn refresh(
    mut link: PgLink,
    name: &str,
    begun: Option<Definition>,
    with_data: bool,
    federation: &Federation,
    settings: &SessionSettings,
    cancel: &SessionCancel,
    own_snapshot: bool,
) -> Outcome {
    let d = match begun {
        Some(d) => Some(d),
        None => on_link!(link, definition(&mut link, name).await),
    };
    let Some(d) = d else {
        return (Some(link), Err(internal("no such materialized view")));
    };
    let Some((tiered, buckets)) = analyze(&d.query, &federation.tables) else {
        return (
            Some(link),
            Err(Failure::Ours(ErrorFields::error(
                "0A000",
                format!(
                    "materialized view {} no longer reads a tiered table of this server",
                    d.qualified
                ),
            ))),
        );
    };
    if !with_data {
        // Emptied: the next refresh computes it whole.
        let parts = d
            .parts_table
            .as_ref()
            .map_or(String::new(), |t| format!("DELETE FROM {t}; "));
        on_link!(
            link,
            link.simple(&format!(
                "DELETE FROM {}; {parts}UPDATE {DEFINITIONS} SET lake_checksums = NULL \
                 WHERE view_schema = {} AND view_name = {}",
                d.qualified,
                quote_literal(&d.schema),
                quote_literal(&d.name)
            ))
            .await
        );
        return (Some(link), Ok("REFRESH MATERIALIZED VIEW".into()));
    }
    let (link, outcome) = fill(
        link,
        &d,
        tiered,
        buckets.as_ref(),
        federation,
        settings,
        cancel,
        own_snapshot,
    )
    .await;
    (link, outcome.map(|_| "REFRESH MATERIALIZED VIEW".into()))
}

async fn drop_views(mut link: PgLink, names: &[String], if_exists: bool, cascade: bool) -> Outcome {
    let cascade = if cascade { " CASCADE" } else { "" };
    let if_exists = if if_exists { " IF EXISTS" } else { "" };
    for name in names {
        match on_link!(link, definition(&mut link, name).await) {
            Some(d) => {
                on_link!(
                    link,
                    link.simple(&format!("DROP TABLE {}{cascade}", d.qualified))
                        .await
                );
                if let Some(parts) = &d.parts_table {
                    on_link!(
                        link,
                        link.simple(&format!("DROP TABLE IF EXISTS {parts}")).await
                    );
                }
                on_link!(
                    link,
                    link.simple(&format!(
                        "DELETE FROM {DEFINITIONS} WHERE view_schema = {} AND view_name = {}",
                        quote_literal(&d.schema),
                        quote_literal(&d.name)
                    ))
                    .await
                );
            }
            None => {
                on_link!(
                    link,
                    link.simple(&format!(
                        "DROP MATERIALIZED VIEW{if_exists} {name}{cascade}"
                    ))
                    .await
                );
            }
        }
    }
    (Some(link), Ok("DROP MATERIALIZED VIEW".into()))
}

fn internal(message: &str) -> Failure {
    Failure::Ours(ErrorFields::error("XX000", message))
}

/// Computes the view (incrementally by `buckets` when given and the
/// changes can be told) and writes its rows; records the refresh. Returns
/// the rows written and how it was refreshed. `own_snapshot`: the command
/// runs in a REPEATABLE READ transaction of its own.
#[allow(clippy::too_many_arguments)]
async fn fill(
    mut link: PgLink,
    d: &Definition,
    tiered: &TieredTable,
    buckets: Option<&incremental::Buckets>,
    federation: &Federation,
    settings: &SessionSettings,
    cancel: &SessionCancel,
    own_snapshot: bool,
) -> (Option<PgLink>, Result<(u64, &'static str), Failure>) {
    let started = Instant::now();
    // The view is computed in the time zone it was created in.
    let session_zone = settings.time_zone.clone();
    let mut settings = settings.clone();
    let zone_changed = settings.time_zone != d.time_zone;
    if zone_changed {
        on_link!(
            link,
            link.simple(&format!(
                "SET LOCAL TimeZone = {}",
                quote_literal(&d.time_zone)
            ))
            .await
        );
        settings.time_zone = d.time_zone.clone();
    }
    // What the lake holds before the view is computed: a change after this
    // is seen by the next refresh. Its watermark: rows from it on are all
    // in Postgres, in this command's snapshot (taken before). Read while
    // Postgres tells the writes since the last refresh, where they were
    // recorded.
    let warm = own_snapshot.then(|| federation.catalog.client()).flatten();
    let (loaded, recorded) = tokio::join!(
        federation.lake.load(tiered),
        recorded(&mut link, d, tiered, warm.as_deref())
    );
    let (checksums, watermark) = match loaded {
        Ok(Some(table)) => (
            crate::tiering::verify::recorded_checksums(&table)
                .map(|c| crate::tiering::verify::encode_checksums(&c)),
            crate::lake::watermark(&table),
        ),
        _ => (None, None),
    };
    let time = crate::catalog::quote_ident(&tiered.time_column().name);
    let recorded = on_link!(link, recorded);
    let parts = match (buckets, &d.parts_table) {
        (Some(b), Some(table)) => {
            parts::parts(&d.query, b, Some(d.parts_grain)).map(|p| (p, table.as_str()))
        }
        _ => None,
    };
    let lake = lake_changes(
        d.lake_checksums.as_deref(),
        checksums.as_deref(),
        tiered.def.partition_by,
    );
    let mut plan = Plan::Full;
    if let (Some(buckets), Some(column)) = (buckets, &d.bucket_column) {
        // Only the buckets written since, in either tier, where the writes
        // were recorded; else the buckets from the earliest time that may
        // have changed on. Neither when the lake's changes are unknown.
        let ranges = match (&recorded.written, &lake) {
            (Some(written), Some(lake)) => {
                let mut ranges = written.clone();
                ranges.extend(lake.iter().map(|(a, b)| (Some(*a), Some(*b))));
                Some(ranges)
            }
            (None, Some(lake)) => Some(on_link!(
                link,
                changed_since(&mut link, d, tiered, lake, &time).await
            )),
            (_, None) => None,
        };
        if let Some(ranges) = ranges {
            let time = buckets.time.to_string();
            plan = match on_link!(
                link,
                recompute(
                    &mut link,
                    ranges,
                    &buckets.unit,
                    &time,
                    tiered,
                    column,
                    parts.as_ref().map(|(p, _)| p.grain),
                    watermark,
                    &d.time_zone,
                )
                .await
            ) {
                None => Plan::Unchanged,
                Some(r) => Plan::Incremental(r),
            };
        }
    }
    let kind = match plan {
        Plan::Full => "full",
        Plan::Unchanged => "unchanged",
        Plan::Incremental(_) => "incremental",
    };
    // What is recomputed from rows, and where it goes: the view's query
    // into the view, or its parts' into the parts.
    let (source, target) = match &parts {
        Some((p, table)) => (&p.query, *table),
        None => (&d.query, d.qualified.as_str()),
    };
    // That query kept to the times recomputed, with the rows it replaces;
    // and whether Postgres alone holds those rows (it computes them then,
    // as the command's snapshot is its own).
    let (query, replaced, in_postgres) = match &plan {
        Plan::Unchanged => (None, String::new(), false),
        Plan::Full => (Some(source.clone()), String::new(), false),
        Plan::Incremental(r) => {
            let in_postgres = r.in_postgres && own_snapshot;
            let on = if parts.is_some() {
                &r.on_part
            } else {
                &r.on_bucket
            };
            let bounded = match (&parts, &r.parts, in_postgres) {
                (Some((p, _)), Some(ranges), true) => Some(p.of_ranges(ranges, &r.on_time)),
                _ => with_condition(source, &r.on_time),
            };
            let Some(bounded) = bounded else {
                return (Some(link), Err(internal("cannot bound the view's query")));
            };
            (Some(bounded), format!(" WHERE {on}"), in_postgres)
        }
    };
    let mut written = 0;
    // What is sent last, at once: the rows replaced, the view's rows
    // (merged from the parts), the refresh's record, and the session's
    // zone back.
    let mut statements = Vec::new();
    if let Some(query) = query {
        statements.push(format!("DELETE FROM {target}{replaced}"));
        if in_postgres {
            statements.push(format!("INSERT INTO {target} {query}"));
        } else {
            let (back, computed) =
                rows_of(link, &query, federation, &settings, cancel, own_snapshot).await;
            let Some(back) = back else {
                return (None, Err(Failure::Link(LinkError::Gone)));
            };
            link = back;
            let tuples = match computed {
                Ok((_, t)) => t,
                Err(e) => return (Some(link), Err(e)),
            };
            on_link!(link, link.simple(&statements.join("; ")).await);
            written = on_link!(link, copy_in(&mut link, target, tuples).await);
            statements.clear();
        }
        if let Some((p, table)) = &parts {
            let (view_rows, merged) = match &plan {
                Plan::Incremental(r) => (
                    format!(" WHERE {}", r.on_bucket),
                    Some(r.on_part_bucket.as_str()),
                ),
                _ => (String::new(), None),
            };
            statements.push(format!("DELETE FROM {}{view_rows}", d.qualified));
            statements.push(format!(
                "INSERT INTO {} {}",
                d.qualified,
                p.merge(table, merged)
            ));
        }
    }
    let nullable = |v: Option<&String>| v.map_or("NULL".to_string(), |s| quote_literal(s));
    let snapshot = if d.keeps_snapshots {
        format!(
            ", hot_snapshot = {}, hot_signature = {}",
            nullable(recorded.snapshot.as_ref()),
            quote_literal(&recorded.signature)
        )
    } else {
        String::new()
    };
    // The refresh recorded, with `rows` written (SQL), and the time taken
    // to this statement.
    let record = |rows: &str| {
        format!(
            "UPDATE {DEFINITIONS} SET last_refresh = now(), last_refresh_kind = {}, \
                 last_refresh_ms = {} + 1000 * extract(epoch FROM \
                     pg_catalog.clock_timestamp() - pg_catalog.statement_timestamp()), \
                 last_refresh_rows = {rows}, \
                 hot_min = (SELECT min({time})::text FROM {}), lake_checksums = {}{snapshot} \
             WHERE view_schema = {} AND view_name = {} RETURNING last_refresh_rows::text",
            quote_literal(kind),
            started.elapsed().as_secs_f64() * 1000.0,
            tiered.def.qualified(),
            nullable(checksums.as_ref()),
            quote_literal(&d.schema),
            quote_literal(&d.name),
        )
    };
    // Where rows are written here, the last statement is the INSERT into
    // the view: the rows it writes are counted in the record.
    match statements.pop() {
        Some(last) => statements.push(format!(
            "WITH thermocline_written AS ({last} RETURNING 1) {}",
            record("(SELECT count(*) FROM thermocline_written)")
        )),
        None => statements.push(record(&written.to_string())),
    }
    if zone_changed {
        statements.push(format!(
            "SET LOCAL TimeZone = {}",
            quote_literal(&session_zone)
        ));
    }
    // A command in a transaction of its own commits with it.
    if own_snapshot {
        statements.push("COMMIT".into());
    }
    let done = on_link!(link, link.rows(&statements.join("; ")).await);
    if let Some(rows) = done.first().and_then(|r| r.first().cloned().flatten()) {
        written = rows.parse().unwrap_or(written);
    }
    (Some(link), Ok((written, kind)))
}

/// How a refresh recomputes a view.
enum Plan {
    Full,
    Unchanged,
    Incremental(incremental::Recompute),
}

/// The SQL type of a tiered table's time column.
fn time_type(t: &TieredTable) -> &'static str {
    match t.time_column().pg_type {
        crate::pgtypes::PgType::Date => "date",
        crate::pgtypes::PgType::Timestamp => "timestamp",
        _ => "timestamptz",
    }
}
