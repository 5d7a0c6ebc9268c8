//! Tier definitions: one TOML file per tiered table in the catalog directory
//! (`catalog_dir`), read at start and on SIGHUP.
//!
//! A definition is checked twice: its keys when read ([`load_dir`]), and
//! against Postgres before use ([`crate::tiering::describe`]), so a table
//! that does not exist or a time column of the wrong type is reported with
//! the file and key at fault.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How the cold tier partitions a table by its time column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionBy {
    Hour,
    Day,
    Month,
    Year,
}

impl PartitionBy {
    pub fn as_str(self) -> &'static str {
        match self {
            PartitionBy::Hour => "hour",
            PartitionBy::Day => "day",
            PartitionBy::Month => "month",
            PartitionBy::Year => "year",
        }
    }
}

/// One tiered table, as its file defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierDef {
    /// The file it came from, for error messages.
    pub file: PathBuf,
    /// The database holding the table (default: the database of `postgres_url`).
    pub database: Option<String>,
    /// The Postgres table (the hot tier): schema and name, as Postgres
    /// stores them (unquoted names folded to lower case).
    pub schema: String,
    pub table: String,
    /// Its time column: `timestamptz`, `timestamp` or `date`.
    pub time_column: String,
    /// Rows newer than `now() - hot_window` stay in Postgres.
    pub hot_window: Duration,
    /// Rows older than `now() - cold_retention` leave the lake.
    pub cold_retention: Duration,
    /// The Iceberg namespace and table.
    pub lake_namespace: String,
    pub lake_table: String,
    pub partition_by: PartitionBy,
}

impl TierDef {
    /// `schema.table`, quoted where Postgres would need it.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }

    /// The database this definition applies to.
    pub fn database_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.database.as_deref().unwrap_or(default)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read catalog directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tier definition {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("tier definition {path}: key `{key}`: {message}")]
    Key {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

/// Reads every `*.toml` file of `dir`, in name order.
pub fn load_dir(dir: &Path) -> Result<Vec<TierDef>, CatalogError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CatalogError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut defs: Vec<TierDef> = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| CatalogError::File {
            path: file.clone(),
            message: e.to_string(),
        })?;
        let def = parse(&file, &text)?;
        if let Some(other) = defs
            .iter()
            .find(|d| d.database == def.database && d.schema == def.schema && d.table == def.table)
        {
            return Err(CatalogError::Key {
                path: file,
                key: "table",
                message: format!(
                    "{} is already defined in {}",
                    def.qualified(),
                    other.file.display()
                ),
            });
        }
        defs.push(def);
    }
    Ok(defs)
}

/// Parses one tier definition.
pub fn parse(path: &Path, text: &str) -> Result<TierDef, CatalogError> {
    let mut t: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| CatalogError::File {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
    let key_err = |key: &'static str, message: String| CatalogError::Key {
        path: path.to_path_buf(),
        key,
        message,
    };
    let mut string = |key: &'static str| -> Result<Option<String>, CatalogError> {
        match t.remove(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(key_err(
                key,
                format!("expected a string, found {}", other.type_str()),
            )),
        }
    };
    let table = string("table")?.ok_or_else(|| key_err("table", "missing".into()))?;
    let (schema, table) =
        split_qualified(&table).map_err(|m| key_err("table", format!("{m} in {table:?}")))?;
    let time_column =
        string("time_column")?.ok_or_else(|| key_err("time_column", "missing".into()))?;
    let time_column = fold_ident(&time_column)
        .map_err(|m| key_err("time_column", format!("{m} in {time_column:?}")))?;
    let hot_window = match string("hot_window")? {
        None => return Err(key_err("hot_window", "missing".into())),
        Some(s) => parse_window(&s).map_err(|m| key_err("hot_window", m))?,
    };
    let cold_retention = match string("cold_retention")? {
        None => Duration::from_secs(730 * 86_400),
        Some(s) => parse_window(&s).map_err(|m| key_err("cold_retention", m))?,
    };
    if cold_retention <= hot_window {
        return Err(key_err(
            "cold_retention",
            "must be longer than hot_window".into(),
        ));
    }
    let (lake_namespace, lake_table) = match string("lake_table")? {
        None => (schema.clone(), table.clone()),
        Some(s) => {
            split_qualified(&s).map_err(|m| key_err("lake_table", format!("{m} in {s:?}")))?
        }
    };
    let partition_by = match string("partition_by")?.as_deref() {
        None | Some("day") => PartitionBy::Day,
        Some("hour") => PartitionBy::Hour,
        Some("month") => PartitionBy::Month,
        Some("year") => PartitionBy::Year,
        Some(other) => {
            return Err(key_err(
                "partition_by",
                format!("expected hour, day, month or year, found {other:?}"),
            ));
        }
    };
    let database = string("database")?;
    if let Some(key) = t.keys().next() {
        return Err(CatalogError::File {
            path: path.to_path_buf(),
            message: format!(
                "unknown key `{key}` (known: table, time_column, hot_window, cold_retention, \
                 lake_table, partition_by, database)"
            ),
        });
    }
    Ok(TierDef {
        file: path.to_path_buf(),
        database,
        schema,
        table,
        time_column,
        hot_window,
        cold_retention,
        lake_namespace,
        lake_table,
        partition_by,
    })
}

/// `"30 days"`, `"12 hours"`, `"2 weeks"`, or anything humantime reads
/// (`"30d"`, `"1h 30m"`).
pub fn parse_window(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = (t[..split].trim(), t[split..].trim().to_ascii_lowercase());
    let secs = match unit.as_str() {
        "second" | "seconds" | "sec" | "secs" | "s" => Some(1),
        "minute" | "minutes" | "min" | "mins" => Some(60),
        "hour" | "hours" | "h" => Some(3_600),
        "day" | "days" | "d" => Some(86_400),
        "week" | "weeks" | "w" => Some(7 * 86_400),
        _ => None,
    };
    let d = match (num.parse::<u64>(), secs) {
        (Ok(n), Some(s)) => Duration::from_secs(n.saturating_mul(s)),
        _ => humantime::parse_duration(t).map_err(|_| {
            format!("expected a duration such as \"30 days\" or \"12 hours\", found {text:?}")
        })?,
    };
    if d.is_zero() {
        return Err(format!("must be longer than zero, found {text:?}"));
    }
    Ok(d)
}

/// Splits `schema.table` (each part optionally double-quoted); the schema
/// defaults to `public`.
fn split_qualified(name: &str) -> Result<(String, String), String> {
    let parts = split_idents(name)?;
    match parts.as_slice() {
        [table] => Ok(("public".into(), table.clone())),
        [schema, table] => Ok((schema.clone(), table.clone())),
        _ => Err("expected table or schema.table".into()),
    }
}

fn fold_ident(name: &str) -> Result<String, String> {
    match split_idents(name)?.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err("expected one column name".into()),
    }
}

/// Identifiers as Postgres reads them: unquoted ones folded to lower case,
/// quoted ones kept, `""` inside quotes meaning one `"`.
fn split_idents(name: &str) -> Result<Vec<String>, String> {
    let mut parts = Vec::new();
    let mut chars = name.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err("unterminated quoted identifier".into()),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                part.push(c.to_ascii_lowercase());
                chars.next();
            }
            part = part.trim().to_string();
        }
        if part.is_empty() {
            return Err("empty name".into());
        }
        parts.push(part);
        match chars.next() {
            None => return Ok(parts),
            Some('.') => {}
            Some(c) => return Err(format!("unexpected {c:?}")),
        }
    }
}

/// Quotes an identifier when Postgres would need it to read it back as is.
pub fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain && !is_reserved(name) {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

fn is_reserved(name: &str) -> bool {
    // Postgres's reserved key words that could name a column or table.
    const RESERVED: &[&str] = &[
        "all",
        "analyse",
        "analyze",
        "and",
        "any",
        "array",
        "as",
        "asc",
        "asymmetric",
        "both",
        "case",
        "cast",
        "check",
        "collate",
        "column",
        "constraint",
        "create",
        "current_catalog",
        "current_date",
        "current_role",
        "current_time",
        "current_timestamp",
        "current_user",
        "default",
        "deferrable",
        "desc",
        "distinct",
        "do",
        "else",
        "end",
        "except",
        "false",
        "fetch",
        "for",
        "foreign",
        "from",
        "grant",
        "group",
        "having",
        "in",
        "initially",
        "intersect",
        "into",
        "lateral",
        "leading",
        "limit",
        "localtime",
        "localtimestamp",
        "not",
        "null",
        "offset",
        "on",
        "only",
        "or",
        "order",
        "placing",
        "primary",
        "references",
        "returning",
        "select",
        "session_user",
        "some",
        "symmetric",
        "table",
        "then",
        "to",
        "trailing",
        "true",
        "union",
        "unique",
        "user",
        "using",
        "variadic",
        "when",
        "where",
        "window",
        "with",
    ];
    RESERVED.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(text: &str) -> Result<TierDef, CatalogError> {
        parse(Path::new("orders.toml"), text)
    }

    #[test]
    fn reads_the_documented_keys() {
        let d = def(r#"
            table = "public.orders"
            time_column = "created_at"
            hot_window = "30 days"
            cold_retention = "730 days"
            lake_table = "public.orders"
            partition_by = "day"
        "#)
        .unwrap();
        assert_eq!((d.schema.as_str(), d.table.as_str()), ("public", "orders"));
        assert_eq!(d.hot_window, Duration::from_secs(30 * 86_400));
        assert_eq!(d.cold_retention, Duration::from_secs(730 * 86_400));
        assert_eq!(d.partition_by, PartitionBy::Day);
    }

    #[test]
    fn names_fold_like_postgres() {
        let d = def(r#"
            table = 'Sales."Order Lines"'
            time_column = '"At"'
            hot_window = "12h"
        "#)
        .unwrap();
        assert_eq!(
            (d.schema.as_str(), d.table.as_str()),
            ("sales", "Order Lines")
        );
        assert_eq!(d.time_column, "At");
        assert_eq!(d.qualified(), "sales.\"Order Lines\"");
        assert_eq!(
            (d.lake_namespace.as_str(), d.lake_table.as_str()),
            ("sales", "Order Lines")
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = def("table = 'orders'\ntime_column = 'ts'\nhot_window = 'soon'").unwrap_err();
        assert!(e.to_string().contains("key `hot_window`"), "{e}");
        let e = def(
            "table = 'orders'\ntime_column = 'ts'\nhot_window = '1 day'\npartition_by = 'minute'",
        )
        .unwrap_err();
        assert!(e.to_string().contains("key `partition_by`"), "{e}");
        let e = def("table = 'orders'\nhot_window = '1 day'").unwrap_err();
        assert!(e.to_string().contains("key `time_column`: missing"), "{e}");
        let e = def("table = 'orders'\ntime_column = 'ts'\nhot_window = '1 day'\nwindow = 1")
            .unwrap_err();
        assert!(e.to_string().contains("unknown key `window`"), "{e}");
    }
}
