//! Tiered tables as Postgres describes them, and the mover that takes aged
//! rows from Postgres to Iceberg.
//!
//! A definition from `catalog/` becomes a [`TieredTable`] only after
//! Postgres confirms it: the table exists, its time column has a time type,
//! it has a primary key (stragglers are deduplicated by it) and every column
//! type can be held exactly in the cold tier.

pub mod backfill;
pub mod maintain;
pub mod mover;
pub mod rewrite;
pub mod verify;

use std::sync::Arc;

use crate::backend::target::BackendTarget;
use crate::backend::{UpstreamTls, connect};
use crate::catalog::TierDef;
use crate::pgtypes::{PgType, TypeError};

/// A column of a tiered table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// Postgres's number for the column: it survives a rename or a type
    /// change, and a column dropped and added again gets a new one.
    pub attnum: i16,
    pub pg_type: PgType,
    pub not_null: bool,
}

/// A tier definition checked against Postgres.
#[derive(Debug, Clone)]
pub struct TieredTable {
    pub def: TierDef,
    /// The table's columns in attnum order (dropped ones left out).
    pub columns: Vec<Column>,
    /// Index of the time column in `columns`.
    pub time_index: usize,
    /// Indexes of the primary key's columns in `columns`.
    pub key: Vec<usize>,
    /// Views that read the table, directly or through other views, as
    /// (schema, name): reads of them are federated too.
    pub views: Vec<(String, String)>,
}

impl TieredTable {
    pub fn time_column(&self) -> &Column {
        &self.columns[self.time_index]
    }

    /// The table with `columns` as Postgres has them now (a column may have
    /// been renamed, retyped, added or dropped since the definition was
    /// checked), its time and key columns found by column number. `None`
    /// when one of those is gone.
    pub fn with_columns(&self, columns: Vec<Column>) -> Option<TieredTable> {
        let find = |i: usize| {
            let attnum = self.columns[i].attnum;
            columns.iter().position(|c| c.attnum == attnum)
        };
        let time_index = find(self.time_index)?;
        let key = self
            .key
            .iter()
            .map(|&k| find(k))
            .collect::<Option<Vec<_>>>()?;
        Some(TieredTable {
            def: self.def.clone(),
            columns,
            time_index,
            key,
            views: self.views.clone(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TieringError {
    #[error("{file}: key `table`: table {table} does not exist in database {database:?}")]
    NoTable {
        file: String,
        table: String,
        database: String,
    },
    #[error("{file}: key `time_column`: {message}")]
    TimeColumn { file: String, message: String },
    #[error(
        "{file}: key `table`: {table} has no primary key; tiered tables need one (stragglers are matched by it)"
    )]
    NoKey { file: String, table: String },
    #[error("{file}: key `table`: column {column:?} of {table}: {source}")]
    ColumnType {
        file: String,
        table: String,
        column: String,
        source: TypeError,
    },
    #[error("Postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("cannot connect to Postgres: {0}")]
    Connect(String),
    #[error(transparent)]
    Lake(#[from] crate::lake::LakeError),
    #[error("Iceberg: {0}")]
    Iceberg(#[from] iceberg::Error),
    #[error("{0}")]
    Data(String),
    #[error(
        "{table}: {change}; moving stops until the lake's table matches Postgres again (reads of both tiers go on)"
    )]
    SchemaChange { table: String, change: String },
}

/// `batch` (a lake batch holding `columns`, in order) with the hot side's
/// Arrow types, so its values compare equal to those read from Postgres.
pub(crate) fn with_hot_types(
    batch: &datafusion::arrow::array::RecordBatch,
    columns: &[&Column],
) -> Result<datafusion::arrow::array::RecordBatch, TieringError> {
    use datafusion::arrow::datatypes::{Field, Schema};
    let data = |e: datafusion::arrow::error::ArrowError| TieringError::Data(e.to_string());
    let arrays = batch
        .columns()
        .iter()
        .zip(columns)
        .map(|(a, c)| datafusion::arrow::compute::cast(a, &c.pg_type.arrow()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(data)?;
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| Field::new(&c.name, c.pg_type.arrow(), true))
        .collect();
    datafusion::arrow::array::RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(data)
}

/// The user, password and database of thermocline's own connections, as
/// `postgres_url` gives them.
pub(crate) fn service_config(
    target: &BackendTarget,
    database: &str,
    application_name: &str,
) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .user(target.user.as_deref().unwrap_or("postgres"))
        .dbname(database)
        .application_name(application_name);
    if let Some(p) = &target.password {
        config.password(p);
    }
    config
}

/// Opens a service connection (thermocline's own work: describing tables,
/// moving rows) with the user and password of `postgres_url`.
pub async fn service_connection(
    target: &BackendTarget,
    database: &str,
) -> Result<tokio_postgres::Client, TieringError> {
    service_connection_as(target, database, "thermocline").await
}

/// [`service_connection`], shown in `pg_stat_activity` as
/// `application_name`.
pub(crate) async fn service_connection_as(
    target: &BackendTarget,
    database: &str,
    application_name: &str,
) -> Result<tokio_postgres::Client, TieringError> {
    let tls = UpstreamTls::new(target).map_err(|e| TieringError::Connect(e.to_string()))?;
    let stream = connect(target, &tls, std::time::Duration::from_secs(10))
        .await
        .map_err(|e| TieringError::Connect(e.to_string()))?;
    let (client, conn) = service_config(target, database, application_name)
        .connect_raw(stream, tokio_postgres::NoTls)
        .await
        .map_err(|e| TieringError::Connect(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "service connection closed");
        }
    });
    Ok(client)
}

/// Checks a definition against Postgres and reads its columns.
pub async fn describe(
    client: &tokio_postgres::Client,
    def: &TierDef,
    database: &str,
) -> Result<TieredTable, TieringError> {
    let file = def.file.display().to_string();
    let qualified = def.qualified();
    let rows = client
        .query(
            "SELECT a.attname, a.atttypid::int8, a.atttypmod, a.attnotnull, \
                    pg_catalog.format_type(a.atttypid, a.atttypmod), \
                    coalesce(a.attnum = ANY (i.indkey::int2[]), false), a.attnum, \
                    (SELECT t.typtype = 'e' FROM pg_catalog.pg_type t WHERE t.oid = a.atttypid) \
             FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
             LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid AND i.indisprimary \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p') \
             ORDER BY a.attnum",
            &[&def.schema, &def.table],
        )
        .await?;
    if rows.is_empty() {
        return Err(TieringError::NoTable {
            file,
            table: qualified,
            database: database.to_string(),
        });
    }
    let mut columns = Vec::with_capacity(rows.len());
    let mut key = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let name: String = row.get(0);
        let type_oid: i64 = row.get(1);
        let typmod: i32 = row.get(2);
        let type_name: String = row.get(4);
        let is_enum: bool = row.get(7);
        let pg_type =
            PgType::of_column(type_oid as u32, typmod, &type_name, is_enum).map_err(|source| {
                TieringError::ColumnType {
                    file: file.clone(),
                    table: qualified.clone(),
                    column: name.clone(),
                    source,
                }
            })?;
        if row.get::<_, bool>(5) {
            key.push(i);
        }
        columns.push(Column {
            name,
            attnum: row.get(6),
            pg_type,
            not_null: row.get(3),
        });
    }
    let time_index = columns
        .iter()
        .position(|c| c.name == def.time_column)
        .ok_or_else(|| TieringError::TimeColumn {
            file: file.clone(),
            message: format!("{qualified} has no column {:?}", def.time_column),
        })?;
    if !matches!(
        columns[time_index].pg_type,
        PgType::Timestamptz | PgType::Timestamp | PgType::Date
    ) {
        return Err(TieringError::TimeColumn {
            file,
            message: format!(
                "column {:?} must be timestamptz, timestamp or date",
                def.time_column
            ),
        });
    }
    if key.is_empty() {
        return Err(TieringError::NoKey {
            file,
            table: qualified,
        });
    }
    let views = client
        .query(
            "WITH RECURSIVE dependents(oid) AS ( \
                 SELECT c.oid FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2 \
               UNION \
                 SELECT r.ev_class FROM pg_catalog.pg_depend d \
                 JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid \
                 JOIN dependents p ON d.refobjid = p.oid \
                 WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass AND r.ev_class <> p.oid) \
             SELECT n.nspname, c.relname FROM dependents x \
             JOIN pg_catalog.pg_class c ON c.oid = x.oid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'v' ORDER BY 1, 2",
            &[&def.schema, &def.table],
        )
        .await?
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
        .collect();
    Ok(TieredTable {
        def: def.clone(),
        columns,
        time_index,
        key,
        views,
    })
}

/// The tiered tables of one server, by database.
#[derive(Debug, Default)]
pub struct Tiers {
    pub tables: Vec<Arc<TieredTable>>,
    /// The database a definition without `database` applies to.
    pub default_database: String,
}

impl Tiers {
    pub fn for_database<'a>(&'a self, db: &'a str) -> impl Iterator<Item = &'a Arc<TieredTable>> {
        self.tables
            .iter()
            .filter(move |t| t.def.database_or(&self.default_database) == db)
    }
}
