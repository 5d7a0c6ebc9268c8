//! What the server is doing: its sessions and their recent statements, for
//! the `thermocline.sessions` and `thermocline.statements` views, the
//! per-statement log lines and the latency figures of `/metrics`.
//!
//! Statement texts are kept as sent (up to [`MAX_TEXT`] bytes) but only
//! ever shown or logged with their literals masked ([`mask_literals`]), so
//! values and secrets written into statements stay out of logs and views.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::metrics::{METRICS, RouteLabel};

/// Statements kept for `thermocline.statements`.
pub const RECENT: usize = 1000;
/// The recent statements are kept in this many parts, by session, so
/// sessions finishing statements at once rarely wait for each other.
const SHARDS: usize = 16;
/// The longest statement text kept, in bytes.
pub const MAX_TEXT: usize = 1024;

/// The server's sessions and recent statements.
#[derive(Default)]
pub struct Activity {
    sessions: Mutex<BTreeMap<u64, Arc<SessionInfo>>>,
    recent: [Mutex<VecDeque<StatementRecord>>; SHARDS],
}

/// One client session, as the views show it.
pub struct SessionInfo {
    pub conn_id: u64,
    pub user: Arc<str>,
    pub database: Arc<str>,
    pub application_name: String,
    pub client_addr: String,
    pub tls: bool,
    pub connected_at: SystemTime,
    /// The pid of the session's Postgres backend, once known.
    pub backend_pid: AtomicI32,
    /// The transaction status of the last ReadyForQuery (`I`, `T`, `E`).
    pub txn_status: AtomicU8,
    /// Statements sent and not yet answered, oldest first.
    running: Mutex<VecDeque<Running>>,
}

/// A statement on its way.
#[derive(Clone)]
pub struct Running {
    pub started: Instant,
    pub started_at: SystemTime,
    pub route: RouteLabel,
    pub text: Arc<str>,
}

/// A finished statement.
#[derive(Clone)]
pub struct StatementRecord {
    pub conn_id: u64,
    pub user: Arc<str>,
    pub database: Arc<str>,
    pub started_at: SystemTime,
    pub duration: Duration,
    pub route: RouteLabel,
    /// The SQLSTATE of its error, if it failed.
    pub sqlstate: Option<String>,
    pub text: Arc<str>,
}

/// The text kept for a statement: at most [`MAX_TEXT`] bytes, cut on a
/// character boundary.
pub fn statement_text(sql: &str) -> Arc<str> {
    if sql.len() <= MAX_TEXT {
        return sql.into();
    }
    let mut end = MAX_TEXT;
    while !sql.is_char_boundary(end) {
        end -= 1;
    }
    sql[..end].into()
}

impl Default for SessionInfo {
    fn default() -> Self {
        SessionInfo {
            conn_id: 0,
            user: "".into(),
            database: "".into(),
            application_name: String::new(),
            client_addr: String::new(),
            tls: false,
            connected_at: SystemTime::now(),
            backend_pid: AtomicI32::new(0),
            txn_status: AtomicU8::new(b'I'),
            running: Mutex::new(VecDeque::new()),
        }
    }
}

impl SessionInfo {
    pub fn new(
        conn_id: u64,
        user: &str,
        database: &str,
        application_name: &str,
        client_addr: String,
        tls: bool,
    ) -> Self {
        SessionInfo {
            conn_id,
            user: user.into(),
            database: database.into(),
            application_name: application_name.into(),
            client_addr,
            tls,
            ..Default::default()
        }
    }

    /// A statement was sent on.
    pub fn begin(&self, route: RouteLabel, text: Arc<str>) {
        let r = Running {
            started: Instant::now(),
            started_at: SystemTime::now(),
            route,
            text,
        };
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(r);
    }

    /// The newest statement on its way turned out to be answered by `route`
    /// (an extended-protocol exchange, known once its Sync is sent).
    pub fn settle(&self, route: RouteLabel) {
        if let Some(r) = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .back_mut()
        {
            r.route = route;
        }
    }

    /// The oldest statement on its way was answered.
    pub fn end(&self) -> Option<Running> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }

    /// The statement being answered now, if any.
    pub fn current(&self) -> Option<Running> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .front()
            .cloned()
    }

    /// As `pg_stat_activity.state` words it.
    pub fn state(&self) -> &'static str {
        if self.running.lock().map(|r| !r.is_empty()).unwrap_or(false) {
            return "active";
        }
        match self.txn_status.load(Relaxed) {
            b'T' => "idle in transaction",
            b'E' => "idle in transaction (aborted)",
            _ => "idle",
        }
    }
}

impl Activity {
    /// Adds a session; it is removed when the returned guard drops.
    pub fn register(self: &Arc<Self>, info: Arc<SessionInfo>) -> Registered {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(info.conn_id, info.clone());
        Registered {
            activity: self.clone(),
            conn_id: info.conn_id,
        }
    }

    pub fn sessions(&self) -> Vec<Arc<SessionInfo>> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The most recent statements (about [`RECENT`]), oldest first.
    pub fn recent(&self) -> Vec<StatementRecord> {
        let mut all: Vec<StatementRecord> = self
            .recent
            .iter()
            .flat_map(|shard| {
                shard
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort_by_key(|r| r.started_at);
        let keep = all.len().saturating_sub(RECENT);
        all.drain(..keep);
        all
    }

    /// A statement of `session` ended: counted, timed, kept, and logged
    /// (at debug level, or at warn level above `slow`).
    pub fn finished(
        &self,
        session: &SessionInfo,
        running: Running,
        sqlstate: Option<String>,
        slow: Option<Duration>,
    ) {
        let duration = running.started.elapsed();
        METRICS.statement(running.route, duration, sqlstate.is_some());
        let is_slow = slow.is_some_and(|s| duration >= s);
        if is_slow {
            METRICS.slow_statements.fetch_add(1, Relaxed);
            let span = tracing::info_span!(
                "statement",
                route = running.route.as_str(),
                duration_ms = duration.as_secs_f64() * 1e3,
                sqlstate = sqlstate.as_deref().unwrap_or(""),
            );
            span.in_scope(
                || tracing::warn!(statement = %mask_literals(&running.text), "slow statement"),
            );
        } else {
            let span = tracing::debug_span!(
                "statement",
                route = running.route.as_str(),
                duration_ms = duration.as_secs_f64() * 1e3,
                sqlstate = sqlstate.as_deref().unwrap_or(""),
            );
            span.in_scope(|| tracing::debug!("statement done"));
        }
        let record = StatementRecord {
            conn_id: session.conn_id,
            user: session.user.clone(),
            database: session.database.clone(),
            started_at: running.started_at,
            duration,
            route: running.route,
            sqlstate,
            text: running.text,
        };
        let mut recent = self.recent[session.conn_id as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if recent.len() >= RECENT {
            recent.pop_front();
        }
        recent.push_back(record);
    }
}

/// Removes its session from the registry when dropped.
pub struct Registered {
    activity: Arc<Activity>,
    conn_id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.activity
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.conn_id);
    }
}

/// The statement with every literal replaced by `?`: quoted strings
/// (`'…'`, `E'…'`, `$tag$…$tag$`) and numbers. Identifiers, keywords,
/// comments' absence and `$n` parameters are kept, so the shape of the
/// statement stays readable.
pub fn mask_literals(sql: &str) -> String {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    // Whether the previous byte continues an identifier (so digits in
    // `t1` are not a number).
    let mut in_word = false;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' => {
                // An E/B/X/U& prefix was already copied; drop it.
                if in_word
                    && matches!(
                        out.as_bytes().last(),
                        Some(b'E' | b'e' | b'B' | b'b' | b'X' | b'x')
                    )
                {
                    let word_start = out
                        .bytes()
                        .rev()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
                        .count();
                    if word_start == 1 {
                        out.pop();
                    }
                }
                let backslashes = i > 0 && matches!(b[i - 1], b'E' | b'e');
                i += 1;
                while i < b.len() {
                    if backslashes && b[i] == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b[i] == b'\'' {
                        if b.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                i += 1;
                out.push('?');
                in_word = false;
            }
            b'"' => {
                // A quoted identifier: kept.
                let start = i;
                i += 1;
                while i < b.len() && !(b[i] == b'"' && b.get(i + 1) != Some(&b'"')) {
                    i += if b[i] == b'"' { 2 } else { 1 };
                }
                i = (i + 1).min(b.len());
                out.push_str(&sql[start..i]);
                in_word = false;
            }
            b'$' if !in_word => {
                // $n stays; $tag$…$tag$ is a string.
                let rest = &sql[i + 1..];
                let tag_len = rest
                    .bytes()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
                    .count();
                let is_param = tag_len > 0 && rest[..tag_len].bytes().all(|c| c.is_ascii_digit());
                if !is_param && rest.as_bytes().get(tag_len) == Some(&b'$') {
                    let tag = &sql[i..i + tag_len + 2];
                    let body_start = i + tag.len();
                    i = match sql[body_start..].find(tag) {
                        Some(at) => body_start + at + tag.len(),
                        None => b.len(),
                    };
                    out.push('?');
                } else {
                    out.push('$');
                    out.push_str(&rest[..tag_len]);
                    i += 1 + tag_len;
                }
                in_word = false;
            }
            b'0'..=b'9' if !in_word => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_')
                {
                    let exponent_sign =
                        matches!(b[i], b'e' | b'E') && matches!(b.get(i + 1), Some(b'+' | b'-'));
                    i += if exponent_sign { 2 } else { 1 };
                }
                out.push('?');
                in_word = false;
            }
            b'.' if !in_word && b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                i += 1;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push('?');
            }
            _ => {
                let ch = sql[i..].chars().next().unwrap_or(' ');
                out.push(ch);
                in_word = ch.is_alphanumeric() || ch == '_' || ch == '$';
                i += ch.len_utf8();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_masked() {
        assert_eq!(
            mask_literals("SELECT * FROM t1 WHERE a = 'x''y' AND b > 3.5 AND c = $1"),
            "SELECT * FROM t1 WHERE a = ? AND b > ? AND c = $1"
        );
        assert_eq!(
            mask_literals("ALTER ROLE bob PASSWORD 'hunter2'"),
            "ALTER ROLE bob PASSWORD ?"
        );
        assert_eq!(
            mask_literals("select E'a\\'b', $$x$y$$, $f$ secret $f$, \"Col 1\" from t"),
            "select ?, ?, ?, \"Col 1\" from t"
        );
        assert_eq!(
            mask_literals("SELECT .5e3, 1e-2, 2 - 1"),
            "SELECT ?, ?, ? - ?"
        );
        assert_eq!(mask_literals("SELECT 'é', 'ü'"), "SELECT ?, ?");
    }

    #[test]
    fn masking_never_panics() {
        use rand::{Rng, SeedableRng};
        let pieces = [
            "'", "\"", "$", "$1", "$a$", "E'", "\\", "é", "日本", "1", ".5", "e-", "x", " ", "''",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let n = rng.random_range(0..12);
            let text: String = (0..n)
                .map(|_| pieces[rng.random_range(0..pieces.len())])
                .collect();
            let _ = mask_literals(&text);
        }
    }
}
