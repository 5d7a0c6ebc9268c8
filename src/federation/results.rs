//! Whole answers for sessions that accept them up to an age
//! (`thermocline.result_cache_ttl`, or the server's `result_cache_ttl`).

use std::sync::Arc;

use tokio::sync::Mutex;

use super::link::{self, LinkError, PgLink};
use super::{Federation, Out, SessionSettings, cache, finish, put_row_description, undo};

/// How old a whole cached answer may be for this session: its
/// `thermocline.result_cache_ttl`, else the server's `result_cache_ttl`.
/// `Err`: the connection to Postgres was lost.
pub(super) async fn ttl(
    shared: &Arc<Mutex<PgLink>>,
    settings: &SessionSettings,
    federation: &Federation,
) -> Result<Option<std::time::Duration>, ()> {
    if !settings.result_cache_set {
        return Ok(federation.limits.result_cache_ttl());
    }
    let mut link = shared.lock().await;
    let rows = match link
        .simple("SELECT pg_catalog.current_setting('thermocline.result_cache_ttl', true)")
        .await
    {
        Ok(rows) => rows,
        Err(LinkError::Gone) => return Err(()),
        Err(_) => return Ok(federation.limits.result_cache_ttl()),
    };
    let value = rows
        .iter()
        .find(|m| m.tag == b'D')
        .and_then(|m| link::data_row_fields(&m.body))
        .and_then(|f| f.first().copied().flatten())
        .map(|v| String::from_utf8_lossy(v).trim().to_lowercase());
    Ok(match value.as_deref() {
        None | Some("") => federation.limits.result_cache_ttl(),
        Some("off" | "0") => None,
        Some(v) => crate::config::parse_interval(v),
    })
}

/// What a whole answer is keyed by: the role, the statement and the
/// settings its text depends on.
pub(super) fn key(sql: &str, settings: &SessionSettings) -> String {
    let normalized = match super::sqltext::parse(sql).as_deref() {
        Ok([statement]) => statement.to_string(),
        _ => sql.trim().to_string(),
    };
    format!(
        "{}\n{}\n{}\n{}\n{normalized}",
        settings.user, settings.time_zone, settings.date_style, settings.extra_float_digits
    )
}

/// Sends a cached answer, once the reader's privileges on what it was
/// computed from are checked again (or the check's error), and ends the
/// statement's transaction.
pub(super) async fn answer(
    mut link: PgLink,
    out: &mut Out<'_>,
    hit: &cache::CachedResult,
    fields: &[link::FieldDescription],
    own_transaction: bool,
) -> Option<PgLink> {
    let checked = if hit.checks.is_empty() {
        Ok(())
    } else {
        link.simple(&hit.checks.join("; ")).await.map(|_| ())
    };
    match checked {
        Ok(()) => {
            put_row_description(&mut out.buf, fields);
            out.buf.extend_from_slice(&hit.data);
            let mut tag = format!("SELECT {}", hit.rows).into_bytes();
            tag.push(0);
            crate::protocol::put_message(&mut out.buf, b'C', &tag);
            if own_transaction && link.simple("COMMIT").await.is_err() {
                return None;
            }
        }
        Err(LinkError::Postgres(e)) => {
            out.error(e.encode());
            undo(&mut link, own_transaction).await?;
        }
        Err(_) => return None,
    }
    finish(&mut link, out);
    Some(link)
}
