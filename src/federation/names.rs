//! Where the names of a federated statement resolve, and a warm connection
//! to read their columns from.
//!
//! Reading a relation's columns from the catalogs costs a new backend
//! 1.5–2 ms (its catalog caches are cold), more than the rest of a
//! primary-key lookup. So the session's own backend only resolves the
//! names, against its search_path and temporary schema, in the round trip
//! that describes the statement; the columns of the relations found are
//! read on a connection of thermocline's own, kept open per database,
//! whose caches are warm. Only a statement outside a transaction block
//! does so: inside one, the client may have changed a table it has not
//! committed, which only its own backend sees.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::sql::sqlparser::ast::{ObjectName, Statement, visit_relations};

use super::link::quote_literal;
use crate::backend::target::BackendTarget;

/// The relations the statements in `sql` name, as written, each once.
pub(super) fn written_names(sql: &str) -> Vec<String> {
    let Ok(statements) = super::sqltext::parse(sql) else {
        return Vec::new();
    };
    relation_names(&statements)
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// The relations `statements` name, each once, in the order named.
pub(super) fn relation_names(statements: &[Statement]) -> Vec<ObjectName> {
    let mut names: Vec<ObjectName> = Vec::new();
    for s in statements {
        let _ = visit_relations(s, |n: &ObjectName| {
            if !names.contains(n) {
                names.push(n.clone());
            }
            ControlFlow::<()>::Continue(())
        });
    }
    names
}

/// The session's answers to [`ask`]: where the statement's names resolve.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resolved {
    /// The schemas of the session's search_path in effect, in order,
    /// `pg_catalog` included where it is.
    pub schemas: Vec<String>,
    /// Each name as written and the OID of the relation it names, if any.
    pub names: Vec<(String, Option<u32>)>,
}

/// The query, run by the session's backend with its statement, that asks
/// its statement_timeout (first column) and, for `names`, its search path
/// and the relation each name resolves to. Its results are binary: the
/// first column is text, the second an array of `name`, the others
/// `regclass` (an OID). No casts: each costs a new backend catalog reads.
pub(super) fn ask(names: &[String]) -> String {
    let mut sql = String::from("SELECT pg_catalog.current_setting('statement_timeout')");
    if !names.is_empty() {
        sql.push_str(", pg_catalog.current_schemas(true)");
        for name in names {
            sql.push_str(&format!(
                ", pg_catalog.to_regclass({})",
                quote_literal(name)
            ));
        }
    }
    sql
}

/// Reads the answer to [`ask`] for `names` from its row's fields.
pub(super) fn resolved(fields: &[Option<&[u8]>], names: &[String]) -> Option<Resolved> {
    if names.is_empty() || fields.len() != names.len() + 2 {
        return None;
    }
    let schemas = name_array(fields[1]?)?;
    // A session with temporary objects: its temporary schema, first in
    // its path, is its own. Its catalogs are read on its own backend.
    if schemas.iter().any(|s| s.starts_with("pg_temp")) {
        return None;
    }
    let names = names
        .iter()
        .zip(&fields[2..])
        .map(|(name, oid)| {
            let oid = oid.and_then(|o| Some(u32::from_be_bytes(o.try_into().ok()?)));
            (name.clone(), oid)
        })
        .collect();
    Some(Resolved { schemas, names })
}

/// A one-dimensional array of `name` (or text) in Postgres's binary form.
fn name_array(bytes: &[u8]) -> Option<Vec<String>> {
    let int = |at: usize| Some(i32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    int(8)?;
    let mut at = 12;
    let n = match int(0)? {
        0 => 0,
        1 => {
            at += 8;
            usize::try_from(int(12)?).ok()?
        }
        _ => return None,
    };
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = usize::try_from(int(at)?).ok()?;
        at += 4;
        out.push(String::from_utf8(bytes.get(at..at + len)?.to_vec()).ok()?);
        at += len;
    }
    Some(out)
}

/// The catalog connection's `application_name`.
const APPLICATION_NAME: &str = "thermocline catalog";

/// How long after a failed attempt the connection is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// thermocline's own connection to one database, for catalog reads. It is
/// never waited for: while it is down (or being opened), statements read
/// the catalogs on their session's backend as before.
pub struct CatalogLink {
    target: BackendTarget,
    database: String,
    state: std::sync::Mutex<Connection>,
}

/// Where a [`CatalogLink`]'s connection stands.
enum Connection {
    /// Not open, nor being opened.
    Closed,
    Opening,
    Open(Arc<tokio_postgres::Client>),
    /// The last attempt failed, at that instant.
    Failed(Instant),
}

impl std::fmt::Debug for CatalogLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogLink")
            .field("database", &self.database)
            .finish()
    }
}

impl CatalogLink {
    /// The link for `database`, opened by [`Self::connect`] or at its
    /// first use.
    pub fn new(target: BackendTarget, database: String) -> Arc<Self> {
        Arc::new(Self {
            target,
            database,
            state: std::sync::Mutex::new(Connection::Closed),
        })
    }

    /// Opens the connection in the background, unless it is open.
    pub fn connect(self: &Arc<Self>) {
        let _ = self.client();
    }

    /// The open connection, if there is one. A closed one is dropped and
    /// a new one opened in the background (at most one attempt at a time,
    /// and none within [`RETRY_AFTER`] of a failed one).
    pub(super) fn client(self: &Arc<Self>) -> Option<Arc<tokio_postgres::Client>> {
        let mut state = self.state.lock().ok()?;
        match &*state {
            Connection::Open(client) if !client.is_closed() => return Some(client.clone()),
            Connection::Opening => return None,
            Connection::Failed(at) if at.elapsed() < RETRY_AFTER => return None,
            _ => *state = Connection::Opening,
        }
        let this = self.clone();
        tokio::spawn(async move {
            let opened = crate::tiering::service_connection_as(
                &this.target,
                &this.database,
                APPLICATION_NAME,
            )
            .await;
            let next = match opened {
                Ok(client) => Connection::Open(Arc::new(client)),
                Err(e) => {
                    tracing::debug!(database = %this.database, error = %e, "cannot open the catalog connection");
                    Connection::Failed(Instant::now())
                }
            };
            if let Ok(mut state) = this.state.lock() {
                *state = next;
            }
        });
        None
    }
}

/// Runs `sql` on `client` with the search path `schemas` (so that names in
/// view definitions and types are written as the session would see them),
/// and returns its rows, each field as text. One message: another
/// statement's query on the same connection cannot come between.
pub(super) async fn rows_in(
    client: &tokio_postgres::Client,
    schemas: &[String],
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
    let path = schemas
        .iter()
        .map(|s| crate::catalog::quote_ident(s))
        .collect::<Vec<_>>()
        .join(", ");
    let messages = client
        .simple_query(&format!(
            "SELECT pg_catalog.set_config('search_path', {}, false); {sql}",
            quote_literal(&path)
        ))
        .await?;
    // The rows after the first statement's.
    let mut statement = 0;
    let mut rows = Vec::new();
    for m in messages {
        match m {
            tokio_postgres::SimpleQueryMessage::CommandComplete(_) => statement += 1,
            tokio_postgres::SimpleQueryMessage::Row(r) if statement > 0 => {
                rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => {}
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `names` as Postgres sends a `name[]` in binary.
    fn binary_names(names: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for v in [1, 0, 19, names.len() as i32, 1] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        for n in names {
            out.extend_from_slice(&(n.len() as i32).to_be_bytes());
            out.extend_from_slice(n.as_bytes());
        }
        out
    }

    #[test]
    fn an_empty_array_is_no_schemas() {
        let empty = [0i32, 0, 19]
            .iter()
            .flat_map(|v| v.to_be_bytes())
            .collect::<Vec<u8>>();
        assert_eq!(name_array(&empty), Some(Vec::new()));
        assert_eq!(name_array(&empty[..8]), None);
        let two = binary_names(&["a", "b"]);
        assert_eq!(name_array(&two[..two.len() - 1]), None);
    }

    #[test]
    fn names_are_asked_as_written_and_read_back_in_order() {
        let names = written_names(
            "WITH w AS (SELECT 1) SELECT * FROM public.orders o JOIN \"Customers\" c ON true, w, orders",
        );
        assert_eq!(names, ["public.orders", "\"Customers\"", "w", "orders"]);
        let sql = ask(&names);
        assert!(sql.contains("to_regclass('\"Customers\"')"), "{sql}");
        assert!(!sql.contains("::"), "no casts: {sql}");
        assert_eq!(
            ask(&[]),
            "SELECT pg_catalog.current_setting('statement_timeout')"
        );
        let schemas = binary_names(&["pg_catalog", "my schema", "public"]);
        let oid = |n: u32| n.to_be_bytes();
        let (a, b) = (oid(16384), oid(16390));
        let row: Vec<Option<&[u8]>> = vec![
            Some(b"0"),
            Some(&schemas),
            Some(&a),
            Some(&b),
            None,
            Some(&a),
        ];
        let r = resolved(&row, &names).expect("read");
        assert_eq!(r.schemas, ["pg_catalog", "my schema", "public"]);
        assert_eq!(
            r.names,
            [
                ("public.orders".to_string(), Some(16384)),
                ("\"Customers\"".to_string(), Some(16390)),
                ("w".to_string(), None),
                ("orders".to_string(), Some(16384)),
            ]
        );
        // A row of another shape is not read.
        assert_eq!(resolved(&row[..3], &names), None);
        // Nor the names of a session with temporary objects.
        let mut temp = row.clone();
        let with_temp = binary_names(&["pg_temp_3", "pg_catalog", "public"]);
        temp[1] = Some(&with_temp);
        assert_eq!(resolved(&temp, &names), None);
    }
}
