//! The cold tier: an Iceberg catalog (the SQL catalog on SQLite, or a REST
//! catalog; data files in a local warehouse directory or in S3), the
//! Iceberg form of each tiered table, and the watermark each snapshot the
//! mover commits records.
//!
//! Invariant: a snapshot written by the mover carries `thermocline.watermark`
//! (microseconds since 1970, UTC): every row older than it had been moved
//! when the snapshot was committed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use iceberg::io::{LocalFsStorageFactory, StorageFactory};
use iceberg::spec::{
    ListType, NestedField, NullOrder, PrimitiveType, Schema, SortDirection, SortField, SortOrder,
    StructType, Transform, Type, UnboundPartitionSpec,
};
use iceberg::table::Table;
use iceberg::{
    Catalog, CatalogBuilder, ErrorKind, NamespaceIdent, TableCreation, TableIdent,
    TableRequirement, TableUpdate,
};
use iceberg_catalog_rest::{
    REST_CATALOG_PROP_URI, REST_CATALOG_PROP_WAREHOUSE, RestCatalogBuilder,
};
use iceberg_catalog_sql::{
    SQL_CATALOG_PROP_BIND_STYLE, SQL_CATALOG_PROP_URI, SQL_CATALOG_PROP_WAREHOUSE, SqlBindStyle,
    SqlCatalogBuilder,
};

mod rest;
pub use rest::RestConfig;

use crate::catalog::PartitionBy;
use crate::pgtypes::PgType;
use crate::tiering::TieredTable;

/// Where the lake is: the warehouse (a directory or `s3://bucket/prefix`;
/// for a REST catalog, whatever it calls a warehouse, or nothing), the SQL
/// catalog's SQLite file or the REST catalog's address, and Iceberg's S3
/// properties.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LakeConfig {
    pub warehouse: String,
    /// Default for a local warehouse: `catalog.db` in it.
    pub catalog_db: Option<PathBuf>,
    /// A REST catalog instead of the SQL one.
    pub rest: Option<RestConfig>,
    /// `s3.endpoint`, `s3.region`, `s3.access-key-id`, … as Iceberg names them.
    pub s3: std::collections::BTreeMap<String, String>,
}

/// Whether a warehouse is an S3 location.
pub fn is_s3(warehouse: &str) -> bool {
    warehouse.starts_with("s3://")
}

/// How long a table loaded again unchanged is served from the one loaded
/// before (with its manifests read).
const REUSE_LOADED_TABLE: std::time::Duration = std::time::Duration::from_secs(300);

/// The catalog's name in its SQL tables (other engines must use it too).
pub const CATALOG_NAME: &str = "thermocline";

/// Snapshot summary key: the watermark W, microseconds since 1970 (UTC).
pub const WATERMARK_KEY: &str = "thermocline.watermark";
/// Snapshot summary key: the id of the move that wrote the snapshot.
pub const BATCH_KEY: &str = "thermocline.batch";
/// Snapshot summary key: per partition, the rows the pass wrote and their
/// checksum (`tier verify` compares them with what the lake holds).
pub const CHECKSUMS_KEY: &str = "thermocline.checksums";

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("cannot create the lake directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Iceberg: {0}")]
    Iceberg(#[from] iceberg::Error),
    #[error("reading the lake's catalog: {0}")]
    Pointer(String),
    #[error(
        "a warehouse in S3 needs a local file for the lake's catalog: set lake.uri (THERMOCLINE_LAKE_URI), e.g. /var/lib/thermocline/catalog.db"
    )]
    NoCatalogDb,
}

/// The lake: one Iceberg catalog.
#[derive(Clone)]
pub struct Lake {
    catalog: Arc<dyn Catalog>,
    backing: Backing,
    /// Tables as last loaded, by identifier. A cached table keeps its
    /// manifests in memory, so reading a snapshot again reads no metadata.
    tables: Arc<std::sync::Mutex<HashMap<TableIdent, (Table, std::time::Instant)>>>,
}

/// What commits of whole metadata, and the cheap check of a table's
/// current metadata file, go through.
#[derive(Clone)]
enum Backing {
    Sql {
        /// The catalog database, read directly to see whether a table's
        /// current metadata file is still the one cached.
        pointers: sqlx::SqlitePool,
        /// The SQL catalog's SQLite file.
        catalog_db: PathBuf,
    },
    Rest(Arc<rest::Commits>),
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lake")
    }
}

impl Lake {
    /// Opens (creating on first use) the lake the configuration names: its
    /// SQL catalog and the warehouse its data files are written under.
    pub async fn open(config: &LakeConfig) -> Result<Self, LakeError> {
        if let Some(rest) = &config.rest {
            return Self::open_rest(config, rest).await;
        }
        let s3 = is_s3(&config.warehouse);
        let (warehouse, db) = if s3 {
            let db = config.catalog_db.clone().ok_or(LakeError::NoCatalogDb)?;
            (config.warehouse.trim_end_matches('/').to_string(), db)
        } else {
            let dir = Path::new(&config.warehouse);
            std::fs::create_dir_all(dir).map_err(|source| LakeError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
            let dir = dir.canonicalize().map_err(|source| LakeError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
            let db = config
                .catalog_db
                .clone()
                .unwrap_or_else(|| dir.join("catalog.db"));
            (dir.display().to_string(), db)
        };
        if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| LakeError::Dir {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let mut props = HashMap::from([
            (
                SQL_CATALOG_PROP_URI.to_string(),
                format!("sqlite://{}?mode=rwc", db.display()),
            ),
            (SQL_CATALOG_PROP_WAREHOUSE.to_string(), warehouse),
            (
                SQL_CATALOG_PROP_BIND_STYLE.to_string(),
                SqlBindStyle::QMark.to_string(),
            ),
        ]);
        let builder = SqlCatalogBuilder::default();
        let builder = if s3 {
            props.extend(config.s3.iter().map(|(k, v)| (k.clone(), v.clone())));
            builder.with_storage_factory(Arc::new(
                iceberg_storage_opendal::OpenDalStorageFactory::S3 {
                    customized_credential_load: None,
                },
            ))
        } else {
            builder.with_storage_factory(Arc::new(LocalFsStorageFactory))
        };
        let catalog = builder.load(CATALOG_NAME, props).await?;
        let pointers = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&db)
                    .read_only(true),
            )
            .await
            .map_err(|e| LakeError::Pointer(e.to_string()))?;
        Ok(Self {
            catalog: Arc::new(catalog),
            backing: Backing::Sql {
                pointers,
                catalog_db: db.clone(),
            },
            tables: Default::default(),
        })
    }

    /// Opens a lake whose catalog is a REST catalog. Opening asks nothing
    /// of the catalog; its tables are loaded (and, at the server's start,
    /// created when missing) as they are needed.
    async fn open_rest(config: &LakeConfig, rest: &RestConfig) -> Result<Self, LakeError> {
        let mut props = HashMap::from([(REST_CATALOG_PROP_URI.to_string(), rest.uri.clone())]);
        if !config.warehouse.is_empty() {
            props.insert(
                REST_CATALOG_PROP_WAREHOUSE.to_string(),
                config.warehouse.clone(),
            );
        }
        if let Some(token) = &rest.token {
            props.insert("token".into(), token.clone());
        }
        props.extend(config.s3.iter().map(|(k, v)| (k.clone(), v.clone())));
        // The catalog says where each table's files are; S3 properties,
        // or a warehouse in S3, say they are in S3.
        let storage: Arc<dyn StorageFactory> = if is_s3(&config.warehouse) || !config.s3.is_empty()
        {
            Arc::new(iceberg_storage_opendal::OpenDalStorageFactory::S3 {
                customized_credential_load: None,
            })
        } else {
            Arc::new(LocalFsStorageFactory)
        };
        let catalog = RestCatalogBuilder::default()
            .with_storage_factory(storage)
            .load(CATALOG_NAME, props)
            .await?;
        Ok(Self {
            catalog: Arc::new(catalog),
            backing: Backing::Rest(Arc::new(rest::Commits::new(rest, &config.warehouse))),
            tables: Default::default(),
        })
    }

    pub fn catalog(&self) -> &dyn Catalog {
        self.catalog.as_ref()
    }

    fn ident(t: &TieredTable) -> TableIdent {
        TableIdent::new(
            NamespaceIdent::new(t.def.lake_namespace.clone()),
            t.def.lake_table.clone(),
        )
    }

    /// The Iceberg table of `t`, created when missing, with the columns
    /// Postgres describes, partitioned and sorted by the time column.
    pub async fn ensure_table(&self, t: &TieredTable) -> Result<Table, LakeError> {
        let ident = Self::ident(t);
        if self.catalog.table_exists(&ident).await? {
            // Columns added in Postgres since are added by the next pass
            // of the mover (which refuses other changes); reads of the
            // lake give NULL for them meanwhile.
            return Ok(self.catalog.load_table(&ident).await?);
        }
        let ns = ident.namespace().clone();
        if !self.catalog.namespace_exists(&ns).await? {
            // Another thermocline (a replica starting, the mover) may
            // create it at the same moment; the SQL catalog reports that
            // as a constraint violation rather than as "already exists".
            if let Err(e) = self.catalog.create_namespace(&ns, HashMap::new()).await {
                if e.kind() != ErrorKind::NamespaceAlreadyExists
                    && !self.catalog.namespace_exists(&ns).await?
                {
                    return Err(e.into());
                }
            }
        }
        // Nested fields (an array's element, an interval's parts) are
        // numbered after the columns, as Iceberg numbers them.
        let mut last_id = t.columns.len() as i32;
        let fields = t
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let ty = iceberg_type(c.pg_type, last_id + 1)?;
                last_id += nested_fields(c.pg_type);
                let id = i as i32 + 1;
                Ok(if c.not_null {
                    NestedField::required(id, &c.name, ty)
                } else {
                    NestedField::optional(id, &c.name, ty)
                }
                .with_doc(attnum_doc(c.attnum))
                .into())
            })
            .collect::<Result<Vec<_>, iceberg::Error>>()?;
        let schema = Schema::builder()
            .with_schema_id(0)
            .with_fields(fields)
            .build()?;
        let time_id = t.time_index as i32 + 1;
        let transform = match t.def.partition_by {
            PartitionBy::Hour => Transform::Hour,
            PartitionBy::Day => Transform::Day,
            PartitionBy::Month => Transform::Month,
            PartitionBy::Year => Transform::Year,
        };
        let spec = UnboundPartitionSpec::builder()
            .add_partition_field(
                time_id,
                format!("{}_{}", t.def.time_column, t.def.partition_by.as_str()),
                transform,
            )?
            .build();
        let order = SortOrder::builder()
            .with_sort_field(
                SortField::builder()
                    .source_id(time_id)
                    .transform(Transform::Identity)
                    .direction(SortDirection::Ascending)
                    .null_order(NullOrder::First)
                    .build(),
            )
            .build_unbound()?;
        let creation = TableCreation::builder()
            .name(t.def.lake_table.clone())
            .schema(schema)
            .partition_spec(spec)
            .sort_order(order)
            .properties([(
                "write.parquet.compression-codec".to_string(),
                "zstd".to_string(),
            )])
            .build();
        match self.catalog.create_table(&ns, creation).await {
            Ok(table) => Ok(table),
            // Created meanwhile by another thermocline: its table is the one.
            Err(e)
                if e.kind() == ErrorKind::TableAlreadyExists
                    || self.catalog.table_exists(&ident).await? =>
            {
                Ok(self.catalog.load_table(&ident).await?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The table as the catalog holds it now: the cached one while the
    /// catalog still points at its metadata file.
    pub async fn load(&self, t: &TieredTable) -> Result<Option<Table>, LakeError> {
        let ident = Self::ident(t);
        // Busy or unreadable: the catalog itself decides below.
        let current = self.pointer(&ident).await;
        if let Some(location) = &current {
            let cached = self
                .tables
                .lock()
                .ok()
                .and_then(|c| c.get(&ident).map(|(t, _)| t.clone()));
            if let Some(table) = cached
                && table.metadata_location() == Some(location.as_str())
            {
                return Ok(Some(table));
            }
        }
        match self.catalog.load_table(&ident).await {
            Ok(table) => {
                if let Ok(mut c) = self.tables.lock() {
                    // Loaded again but unchanged (a REST catalog is asked
                    // every time): the cached table keeps its manifests.
                    // For a few minutes only: the storage credentials a
                    // REST catalog hands out with a table expire.
                    if let Some((cached, at)) = c.get(&ident)
                        && cached.metadata_location().is_some()
                        && cached.metadata_location() == table.metadata_location()
                        && at.elapsed() < REUSE_LOADED_TABLE
                    {
                        return Ok(Some(cached.clone()));
                    }
                    c.insert(ident, (table.clone(), std::time::Instant::now()));
                }
                Ok(Some(table))
            }
            Err(e)
                if e.kind() == ErrorKind::TableNotFound
                    || e.kind() == ErrorKind::NamespaceNotFound =>
            {
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }
}

impl Lake {
    /// The metadata file the catalog points at for `ident`, read directly
    /// (`None` for a REST catalog: its tables are loaded to tell).
    async fn pointer(&self, ident: &TableIdent) -> Option<String> {
        let Backing::Sql { pointers, .. } = &self.backing else {
            return None;
        };
        sqlx::query_scalar(
            "SELECT metadata_location FROM iceberg_tables \
             WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?",
        )
        .bind(CATALOG_NAME)
        .bind(ident.namespace().join("."))
        .bind(ident.name())
        .fetch_optional(pointers)
        .await
        .ok()
        .flatten()
    }

    /// The metadata file `t`'s lake table is at now (`None`: no table).
    pub async fn current_location(&self, t: &TieredTable) -> Result<Option<String>, LakeError> {
        if let Some(location) = self.pointer(&Self::ident(t)).await {
            return Ok(Some(location));
        }
        Ok(self
            .load(t)
            .await?
            .and_then(|table| table.metadata_location().map(str::to_string)))
    }
}

/// Makes `schema` the table's current schema. Iceberg's own schema
/// update only adds and deletes fields; renaming and widening need the
/// schema given whole, so the commit is made here.
pub async fn set_schema(lake: &Lake, table: &Table, schema: Schema) -> Result<Table, LakeError> {
    lake.commit(
        table,
        vec![
            TableUpdate::AddSchema { schema },
            TableUpdate::SetCurrentSchema { schema_id: -1 },
        ],
    )
    .await
}

impl Lake {
    /// Commits `updates` to `table` only if no other commit came after the
    /// one `table` was loaded at: a commit made meanwhile makes this one
    /// fail instead of being lost or applied to what it was not made for.
    pub(crate) async fn commit(
        &self,
        table: &Table,
        updates: Vec<TableUpdate>,
    ) -> Result<Table, LakeError> {
        let metadata = table.metadata();
        let requirements = vec![
            TableRequirement::UuidMatch {
                uuid: metadata.uuid(),
            },
            TableRequirement::RefSnapshotIdMatch {
                r#ref: iceberg::spec::MAIN_BRANCH.to_string(),
                snapshot_id: metadata.current_snapshot_id(),
            },
            TableRequirement::CurrentSchemaIdMatch {
                current_schema_id: metadata.current_schema_id(),
            },
            TableRequirement::LastAssignedFieldIdMatch {
                last_assigned_field_id: metadata.last_column_id(),
            },
        ];
        match &self.backing {
            Backing::Rest(rest) => {
                rest.commit(table.identifier(), &requirements, &updates)
                    .await?;
                Ok(self.catalog.load_table(table.identifier()).await?)
            }
            Backing::Sql { catalog_db, .. } => {
                let location = table.metadata_location().map(str::to_string);
                let mut builder = metadata.clone().into_builder(location);
                for update in updates {
                    builder = update.apply(builder)?;
                }
                let metadata = builder.build()?.metadata;
                self.swap_metadata(catalog_db, table, metadata).await
            }
        }
    }

    /// Commits `metadata`, built from `table`'s, to the SQL catalog: writes
    /// it as the next metadata file, then moves the catalog's pointer to it
    /// only if the pointer is still `table`'s, as the SQL catalog's own
    /// commits do.
    async fn swap_metadata(
        &self,
        catalog_db: &Path,
        table: &Table,
        metadata: iceberg::spec::TableMetadata,
    ) -> Result<Table, LakeError> {
        use std::str::FromStr;
        let current = table.metadata_location_result()?.to_string();
        let next = iceberg::MetadataLocation::from_str(&current)?
            .with_next_version()
            .with_new_metadata(&metadata);
        metadata.write_to(table.file_io(), &next).await?;
        let next = next.to_string();
        let ident = table.identifier();
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(catalog_db)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pointer = |e: sqlx::Error| LakeError::Pointer(e.to_string());
        let mut conn = sqlx::ConnectOptions::connect(&options)
            .await
            .map_err(pointer)?;
        let mut txn = sqlx::Connection::begin(&mut conn).await.map_err(pointer)?;
        let moved = sqlx::query(
            "UPDATE iceberg_tables SET metadata_location = ?, previous_metadata_location = ? \
             WHERE catalog_name = ? AND table_namespace = ? AND table_name = ? \
               AND (iceberg_type = 'TABLE' OR iceberg_type IS NULL) AND metadata_location = ?",
        )
        .bind(&next)
        .bind(&current)
        .bind(CATALOG_NAME)
        .bind(ident.namespace().join("."))
        .bind(ident.name())
        .bind(&current)
        .execute(&mut *txn)
        .await
        .map_err(pointer)?
        .rows_affected();
        txn.commit().await.map_err(pointer)?;
        sqlx::Connection::close(conn).await.map_err(pointer)?;
        if moved != 1 {
            let _ = table.file_io().delete(&next).await;
            return Err(LakeError::Iceberg(iceberg::Error::new(
                ErrorKind::CatalogCommitConflicts,
                format!("{ident} was changed by another commit; try again"),
            )));
        }
        Ok(self.catalog.load_table(ident).await?)
    }
}

/// The watermark of the table's current snapshot: the newest one a move
/// recorded, walking back over snapshots that record none. `None`: nothing
/// was ever moved.
pub fn watermark(table: &Table) -> Option<i64> {
    newest_recorded(table, WATERMARK_KEY)?.parse().ok()
}

/// The newest value of a snapshot summary key, from the current snapshot
/// back over its ancestors.
fn newest_recorded(table: &Table, key: &str) -> Option<String> {
    let metadata = table.metadata();
    let mut current = metadata.current_snapshot().cloned();
    while let Some(s) = current {
        if let Some(v) = s.summary().additional_properties.get(key) {
            return Some(v.clone());
        }
        current = s
            .parent_snapshot_id()
            .and_then(|p| metadata.snapshot_by_id(p).cloned());
    }
    None
}

/// The doc of a lake field: the Postgres column it holds, by number, so
/// that a column renamed or retyped in Postgres is still found, and one
/// dropped and added again is not mistaken for the old one.
pub fn attnum_doc(attnum: i16) -> String {
    format!("{ATTNUM_DOC_PREFIX}{attnum}")
}

const ATTNUM_DOC_PREFIX: &str = "Postgres attnum ";

/// The Postgres column number a lake field's doc records.
pub fn field_attnum(field: &NestedField) -> Option<i16> {
    field
        .doc
        .as_deref()?
        .strip_prefix(ATTNUM_DOC_PREFIX)?
        .parse()
        .ok()
}

/// The field of `schema` that holds Postgres column `attnum` (named
/// `name`). A lake written before its fields recorded column numbers has
/// none, and its fields are found by name.
pub fn field_of<'a>(schema: &'a Schema, attnum: i16, name: &str) -> Option<&'a NestedField> {
    let fields = schema.as_struct().fields();
    if fields.iter().any(|f| field_attnum(f).is_some()) {
        fields
            .iter()
            .find(|f| field_attnum(f) == Some(attnum))
            .map(|f| f.as_ref())
    } else {
        fields.iter().find(|f| f.name == name).map(|f| f.as_ref())
    }
}

/// Whether field `id` has the same type in every schema of the table's
/// history: only then do all data files hold it (and record its bounds)
/// as the current schema types it.
pub fn never_retyped(metadata: &iceberg::spec::TableMetadata, id: i32) -> bool {
    let mut types = metadata
        .schemas_iter()
        .filter_map(|s| s.field_by_id(id).map(|f| f.field_type.clone()));
    match types.next() {
        Some(first) => types.all(|t| t == first),
        None => false,
    }
}

/// The batch id of the last move the table's current snapshot records
/// (maintenance snapshots carry their parent's forward): it changes with
/// every pass of the mover, and only then.
pub fn last_move(table: &Table) -> Option<String> {
    newest_recorded(table, BATCH_KEY)
}

/// How many nested fields [`iceberg_type`] gives a type.
pub fn nested_fields(t: PgType) -> i32 {
    match t {
        PgType::Array(_) => 1,
        PgType::Interval => INTERVAL_PARTS.len() as i32,
        _ => 0,
    }
}

/// The fields of an interval in the lake, in order: Postgres keeps the
/// three apart (a month is not a number of days, nor a day a number of
/// hours), and so does the lake.
pub const INTERVAL_PARTS: [&str; 3] = ["months", "days", "microseconds"];

/// The id of the first nested field of a lake field's type (0: none).
pub fn first_nested_id(t: &Type) -> i32 {
    match t {
        Type::List(l) => l.element_field.id,
        Type::Struct(s) => s.fields().first().map_or(0, |f| f.id),
        _ => 0,
    }
}

/// The Iceberg type that holds a Postgres type exactly; its nested fields
/// (see [`nested_fields`]) are numbered from `nested_id`.
pub fn iceberg_type(t: PgType, nested_id: i32) -> Result<Type, iceberg::Error> {
    let p = |t| Ok(Type::Primitive(t));
    match t {
        PgType::Bool => p(PrimitiveType::Boolean),
        PgType::Int2 | PgType::Int4 => p(PrimitiveType::Int),
        PgType::Int8 => p(PrimitiveType::Long),
        PgType::Float4 => p(PrimitiveType::Float),
        PgType::Float8 => p(PrimitiveType::Double),
        PgType::Numeric(precision, scale) => Type::decimal(precision as u32, scale as u32),
        PgType::Text(_) | PgType::Json | PgType::Jsonb | PgType::Enum => p(PrimitiveType::String),
        PgType::Bytea => p(PrimitiveType::Binary),
        PgType::Uuid => p(PrimitiveType::Uuid),
        PgType::Date => p(PrimitiveType::Date),
        PgType::Time => p(PrimitiveType::Time),
        PgType::Timestamp => p(PrimitiveType::Timestamp),
        PgType::Timestamptz => p(PrimitiveType::Timestamptz),
        PgType::Interval => Ok(Type::Struct(StructType::new(
            INTERVAL_PARTS
                .iter()
                .zip(nested_id..)
                .map(|(name, id)| {
                    let ty = if *name == "microseconds" {
                        PrimitiveType::Long
                    } else {
                        PrimitiveType::Int
                    };
                    NestedField::required(id, *name, Type::Primitive(ty)).into()
                })
                .collect(),
        ))),
        PgType::Array(of) => Ok(Type::List(ListType::new(
            NestedField::list_element(nested_id, iceberg_type(of.element(), 0)?, false).into(),
        ))),
    }
}

/// `array` in type `to`, between the executor's types and the lake's: an
/// interval becomes the lake's struct of its parts and back; anything
/// else is Arrow's cast.
pub fn convert(
    array: &datafusion::arrow::array::ArrayRef,
    to: &datafusion::arrow::datatypes::DataType,
) -> Result<datafusion::arrow::array::ArrayRef, datafusion::arrow::error::ArrowError> {
    use datafusion::arrow::array::{
        Array, AsArray, Int32Array, Int64Array, IntervalMonthDayNanoArray, StructArray,
    };
    use datafusion::arrow::datatypes::{
        DataType, Int32Type, Int64Type, IntervalMonthDayNano, IntervalMonthDayNanoType,
        IntervalUnit,
    };
    use datafusion::arrow::error::ArrowError;
    match (array.data_type(), to) {
        (DataType::Interval(IntervalUnit::MonthDayNano), DataType::Struct(fields)) => {
            let values = array.as_primitive::<IntervalMonthDayNanoType>();
            let part = |v: Option<IntervalMonthDayNano>| v.unwrap_or(IntervalMonthDayNano::ZERO);
            let months: Int32Array = values.iter().map(|v| Some(part(v).months)).collect();
            let days: Int32Array = values.iter().map(|v| Some(part(v).days)).collect();
            let micros: Int64Array = values
                .iter()
                .map(|v| {
                    let nanos = part(v).nanoseconds;
                    (nanos % 1000 == 0).then_some(nanos / 1000)
                })
                .collect();
            if micros.null_count() > 0 {
                return Err(ArrowError::CastError(
                    "an interval finer than a microsecond".into(),
                ));
            }
            Ok(Arc::new(StructArray::try_new(
                fields.clone(),
                vec![Arc::new(months), Arc::new(days), Arc::new(micros)],
                values.nulls().cloned(),
            )?))
        }
        (DataType::Struct(_), DataType::Interval(IntervalUnit::MonthDayNano)) => {
            let parts = array.as_struct();
            let part = |name: &str| {
                parts
                    .column_by_name(name)
                    .ok_or_else(|| ArrowError::CastError(format!("an interval without {name}")))
            };
            let months = part(INTERVAL_PARTS[0])?.as_primitive::<Int32Type>();
            let days = part(INTERVAL_PARTS[1])?.as_primitive::<Int32Type>();
            let micros = part(INTERVAL_PARTS[2])?.as_primitive::<Int64Type>();
            let values: IntervalMonthDayNanoArray = (0..parts.len())
                .map(|r| {
                    if parts.is_null(r) {
                        return Ok(None);
                    }
                    let nanos = micros.value(r).checked_mul(1000).ok_or_else(|| {
                        ArrowError::CastError(crate::pgtypes::TypeError::IntervalRange.to_string())
                    })?;
                    Ok(Some(IntervalMonthDayNano::new(
                        months.value(r),
                        days.value(r),
                        nanos,
                    )))
                })
                .collect::<Result<_, ArrowError>>()?;
            Ok(Arc::new(values))
        }
        _ => datafusion::arrow::compute::cast(array, to),
    }
}
