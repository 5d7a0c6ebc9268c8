//! The relay: one client and its own Postgres connection, two directions
//! driven concurrently, bytes forwarded as they arrive.
//!
//! Only message headers are read on the way; the few messages thermocline
//! must see (Query, Parse, Sync, Terminate one way; authentication,
//! BackendKeyData, ErrorResponse, ReadyForQuery the other) are held until
//! complete. Both directions run at once so neither side can stall the other
//! (a pipelining client and a busy Postgres never deadlock through us).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use crate::admin::activity::{SessionInfo, statement_text};
use crate::admin::metrics::{METRICS, RouteLabel};
use crate::admin::views;
use crate::federation::extended::{self, ExecuteJob, Suspended};
use crate::federation::link::{PgLink, frontend};
use crate::federation::{Federation, SessionSettings};
use crate::frontend::cancel::SessionCancel;
use crate::protocol::{ErrorFields, FrameScanner, Step, tag};
use crate::router::{Route, Router};
use crate::server::{Phase, Shared};
use crate::stream::{ReadHalf, Stream, WriteHalf};

/// What a session tracks about its own traffic, shared by both directions.
#[derive(Default)]
struct State {
    /// Queries, Syncs and function calls sent minus ReadyForQuery received:
    /// above zero while Postgres owes the client an answer. Starts at one
    /// for the startup exchange.
    outstanding: AtomicI64,
    /// Extended-protocol messages were sent since the last Sync.
    unsynced: AtomicBool,
    /// Part of a client message is buffered here.
    client_partial: AtomicBool,
    /// The first ReadyForQuery was seen: authentication is over.
    ready: AtomicBool,
    /// The last ErrorResponse from Postgres was FATAL or PANIC.
    backend_said_fatal: AtomicBool,
    /// No message toward the client is half written: one of ours may go next.
    client_at_boundary: AtomicBool,
    /// Likewise toward Postgres.
    backend_at_boundary: AtomicBool,
    /// Postgres's secret for this session, once known (the pid is in `info`).
    backend_secret: AtomicI64,
    /// The secret thermocline gave the client in place of Postgres's.
    client_secret: AtomicI64,
    /// TimeZone and DateStyle as Postgres last reported them.
    settings: std::sync::Mutex<SessionSettings>,
    /// Replies Postgres owes to extended-protocol messages sent on, by
    /// exchange (tracked only in sessions with tiered tables).
    owed: Owed,
    /// A query over a tiered table was answered in this session before.
    federated_before: AtomicBool,
    /// Rows of federated portals suspended by a row limit.
    suspended: std::sync::Mutex<Suspended>,
    /// Set by a CancelRequest for this session.
    cancel: Arc<SessionCancel>,
    /// What the system views show of this session; its running statements.
    info: Arc<SessionInfo>,
    /// The SQLSTATE of the first error of the statement now answered.
    error_code: std::sync::Mutex<Option<String>>,
    /// When either side last said something (ms after [`EPOCH`]), for
    /// `idle_session_timeout`.
    last_active_ms: std::sync::atomic::AtomicU64,
}

/// Replies Postgres owes to the extended-protocol messages sent on, one
/// count for each exchange it has not yet ended with ReadyForQuery, oldest
/// first (kept beside `State::outstanding`, one more: the last is the
/// exchange the client is sending now). Postgres answers in order, so a
/// reply or an error belongs to the oldest; a count of its own keeps each
/// exchange's replies apart from those of the exchanges after it, which a
/// pipelining client sends before the first is answered.
struct Owed(std::sync::Mutex<std::collections::VecDeque<Exchange>>);

#[derive(Default, Clone, Copy)]
struct Exchange {
    replies: i64,
    /// It failed: Postgres skips the rest of it, answering nothing.
    failed: bool,
}

impl Default for Owed {
    fn default() -> Self {
        // The startup exchange, then the client's first.
        Owed(std::sync::Mutex::new(vec![Exchange::default(); 2].into()))
    }
}

impl Owed {
    fn with<R>(&self, f: impl FnOnce(&mut std::collections::VecDeque<Exchange>) -> R) -> R {
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if q.is_empty() {
            q.push_back(Exchange::default());
        }
        f(&mut q)
    }

    /// A message of the exchange the client is sending was sent on.
    fn expect(&self) {
        self.with(|q| {
            let now = q.back_mut().expect("never empty");
            if !now.failed {
                now.replies += 1;
            }
        })
    }

    /// The client's exchange ended (Sync, Query or FunctionCall sent on):
    /// what follows is the next one.
    fn next(&self) {
        self.with(|q| q.push_back(Exchange::default()))
    }

    /// One of the oldest exchange's replies came.
    fn replied(&self) {
        self.with(|q| {
            let first = q.front_mut().expect("never empty");
            first.replies = (first.replies - 1).max(0);
        })
    }

    /// The oldest exchange failed (`first`), or the one the client is
    /// sending did (a federated Execute failed it).
    fn failed(&self, first: bool) {
        self.with(|q| {
            let e = match first {
                true => q.front_mut(),
                false => q.back_mut(),
            };
            *e.expect("never empty") = Exchange {
                replies: 0,
                failed: true,
            };
        })
    }

    /// ReadyForQuery: the oldest exchange was answered.
    fn answered(&self) {
        self.with(|q| {
            q.pop_front();
        })
    }

    /// The exchange the client is sending failed: Postgres skips what
    /// follows until its Sync.
    fn failing(&self) -> bool {
        self.with(|q| q.back().expect("never empty").failed)
    }

    /// Replies owed in all.
    fn total(&self) -> i64 {
        self.with(|q| q.iter().map(|e| e.replies).sum())
    }
}

/// The origin of the sessions' activity clocks.
static EPOCH: std::sync::LazyLock<std::time::Instant> =
    std::sync::LazyLock::new(std::time::Instant::now);

impl State {
    fn new(info: Arc<SessionInfo>) -> Self {
        let s = State {
            info,
            ..Default::default()
        };
        s.outstanding.store(1, Relaxed);
        s.client_at_boundary.store(true, Relaxed);
        s.backend_at_boundary.store(true, Relaxed);
        s.touch();
        s
    }

    /// Nothing is in flight: the session sits between statements.
    fn idle(&self) -> bool {
        self.ready.load(Relaxed)
            && self.outstanding.load(Relaxed) <= 0
            && !self.unsynced.load(Relaxed)
            && !self.client_partial.load(Relaxed)
    }

    /// A portal was bound anew or closed: its held rows are stale.
    fn forget_portal(&self, portal: &str) {
        if let Ok(mut s) = self.suspended.lock() {
            s.remove(portal);
        }
    }

    /// Something was sent or answered just now.
    fn touch(&self) {
        self.last_active_ms
            .store(EPOCH.elapsed().as_millis() as u64, Relaxed);
    }

    /// How long since either side last said something.
    fn quiet_for(&self) -> Duration {
        EPOCH
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last_active_ms.load(Relaxed)))
    }

    fn busy(&self) -> bool {
        self.ready.load(Relaxed) && self.outstanding.load(Relaxed) > 0
    }
}

/// Why a session ends.
#[derive(Debug)]
enum End {
    /// The client said Terminate; it was passed on.
    ClientTerminated,
    /// The client closed its connection or it broke.
    ClientGone,
    /// The client broke the protocol in a way Postgres cannot be shown.
    ClientInvalid(ErrorFields),
    /// Postgres closed the connection or it broke.
    BackendGone,
    /// thermocline is shutting down.
    Shutdown,
    /// The session sat idle outside a transaction for `idle_session_timeout`.
    IdleTimeout,
}

/// A federated statement handed from the client side to the backend side,
/// which owns the reading half of the Postgres connection. The writing half
/// travels with it and comes back in `done`.
struct Job {
    work: Work,
    bw: WriteHalf,
    done: oneshot::Sender<WriteHalf>,
}

enum Work {
    /// A simple Query.
    Query(String),
    /// An Execute of a portal of a federated statement.
    Execute(ExecuteJob),
}

/// What a session is given at its start.
pub(crate) struct Session {
    pub router: Router,
    pub federation: Option<Federation>,
    pub info: Arc<SessionInfo>,
}

/// Relays one session until either side ends it.
pub(crate) async fn run(client: Stream, backend: Stream, shared: Arc<Shared>, session: Session) {
    let Session {
        router,
        federation,
        info,
    } = session;
    let (mut cr, mut cw) = client.split();
    let (mut br, mut bw) = backend.split();
    let state = State::new(info);
    let mut phase = shared.phase();
    let (jobs_tx, mut jobs_rx) = mpsc::channel::<Job>(1);
    let end = tokio::select! {
        end = client_to_backend(&mut cr, &mut bw, &state, &shared, &router, &jobs_tx) => end,
        end = backend_to_client(&mut br, &mut cw, &state, &shared, &mut phase, &mut jobs_rx, federation.as_ref().map(|f| (f, &router))) => end,
    };
    tracing::debug!(?end, "session ends");
    let finish = finish(&end, &mut cw, &mut bw, &state, &shared);
    if tokio::time::timeout(Duration::from_secs(5), finish)
        .await
        .is_err()
    {
        tracing::debug!("closing writes timed out");
    }
    let (pid, secret) = (
        state.info.backend_pid.load(Relaxed),
        state.client_secret.load(Relaxed),
    );
    if pid != 0 {
        shared.cancel_keys.remove(pid, secret as i32);
    }
}

/// The last words to each side, where they can still be said cleanly.
async fn finish(end: &End, cw: &mut WriteHalf, bw: &mut WriteHalf, state: &State, shared: &Shared) {
    let to_client = match end {
        End::ClientTerminated | End::ClientGone => None,
        End::ClientInvalid(e) => Some(e.clone()),
        End::BackendGone if state.backend_said_fatal.load(Relaxed) => None,
        End::BackendGone => Some(
            ErrorFields::fatal(
                "08006",
                "lost the connection to Postgres: server closed the connection unexpectedly",
            )
            .with_hint(
                "Postgres may have terminated abnormally or been restarted; reconnect to continue.",
            ),
        ),
        End::Shutdown => Some(ErrorFields::fatal(
            "57P01",
            "terminating connection because thermocline is shutting down",
        )),
        End::IdleTimeout => Some(ErrorFields::fatal(
            "57P05",
            "terminating connection due to idle-session timeout",
        )),
    };
    // A statement still running for a client that is gone is cancelled, so
    // it stops using Postgres.
    let backend_alive = !matches!(end, End::BackendGone | End::ClientTerminated);
    if backend_alive && state.busy() {
        let (pid, secret) = (
            state.info.backend_pid.load(Relaxed),
            state.backend_secret.load(Relaxed),
        );
        shared.cancel_backend(pid, secret as i32).await;
    }
    if let Some(error) = to_client
        && state.client_at_boundary.load(Relaxed)
    {
        let _ = cw.write_all(&error.encode()).await;
        let _ = cw.flush().await;
    }
    let _ = cw.shutdown().await;
    if backend_alive && state.backend_at_boundary.load(Relaxed) {
        let _ = bw.write_all(&[tag::TERMINATE, 0, 0, 0, 4]).await;
        let _ = bw.flush().await;
    }
    let _ = bw.shutdown().await;
}

/// Room to read into: at least `min_free`, or the whole of a message that
/// must be held complete.
fn reserve_for(buf: &mut BytesMut, min_free: usize) {
    let mut want = min_free;
    if buf.len() >= 5 {
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize + 1;
        want = want.max(len.saturating_sub(buf.len()));
    }
    if buf.capacity() - buf.len() < want {
        buf.reserve(want);
    }
}

async fn write_through(
    w: &mut WriteHalf,
    bytes: &[u8],
    at_boundary: &AtomicBool,
    ends_at_boundary: bool,
) -> bool {
    at_boundary.store(false, Relaxed);
    if w.write_all(bytes).await.is_err() || w.flush().await.is_err() {
        return false;
    }
    at_boundary.store(ends_at_boundary, Relaxed);
    true
}

async fn client_to_backend(
    cr: &mut ReadHalf,
    bw: &mut WriteHalf,
    state: &State,
    shared: &Shared,
    router: &Router,
    jobs: &mpsc::Sender<Job>,
) -> End {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut scanner = FrameScanner::new(shared.config.max_message_size);
    // With tiered tables, extended-protocol messages are followed too:
    // which statements and portals are federated, and how many replies
    // Postgres owes before a federated Execute may run.
    let tracking = router.active();
    let held = |t: u8| {
        matches!(
            t,
            tag::QUERY | tag::PARSE | tag::SYNC | tag::FUNCTION_CALL | tag::TERMINATE
        ) || (tracking && matches!(t, tag::BIND | tag::EXECUTE | tag::CLOSE | tag::DESCRIBE))
    };
    // Federated statements (name → SQL) and portals (name → statement, Bind body).
    let mut statements: HashMap<String, String> = HashMap::new();
    let mut portals: HashMap<String, (String, Vec<u8>)> = HashMap::new();
    // The extended-protocol exchange since the last Sync: whether it is
    // recorded as running yet, and where it is answered.
    let mut batch_begun = false;
    let mut batch_route = RouteLabel::Relay;
    // Whether a portal ran since the last Sync.
    let mut batch_executed = false;
    // A statement naming a system view, to rewrite before it goes on. Kept
    // across scans: the scanner hands a message over only after forwarding
    // what preceded it.
    let mut local: Option<crate::admin::views::ViewQuery> = None;
    loop {
        loop {
            let step = scanner.scan(&buf, held, |m| {
                let body = &m[5..];
                match m[0] {
                    tag::QUERY => {
                        let sql = crate::router::sql_of(m).unwrap_or("");
                        // Only sessions that may federate read it.
                        if tracking
                            && sql.contains("result_cache_ttl")
                            && let Ok(mut s) = state.settings.lock()
                        {
                            s.result_cache_set = true;
                        }
                        if views::may_name_view(sql)
                            && let Some(q) = views::find(sql)
                        {
                            local = Some(q);
                            return false;
                        }
                        match router.route(m) {
                            Route::Relay => {
                                state.info.begin(RouteLabel::Relay, statement_text(sql));
                                state.outstanding.fetch_add(1, Relaxed);
                                state.owed.next();
                                state.unsynced.store(false, Relaxed);
                                // A simple query drops the unnamed statement and portal.
                                statements.remove("");
                                portals.remove("");
                                true
                            }
                            // Handed over: answered by thermocline.
                            Route::Federate => false,
                        }
                    }
                    tag::PARSE => {
                        state.unsynced.store(true, Relaxed);
                        if tracking {
                            state.owed.expect();
                        }
                        let Some((name, sql)) = extended::parse_message(body) else {
                            return true;
                        };
                        if !batch_begun {
                            // The exchange is under way from its first Parse.
                            state.info.begin(RouteLabel::Relay, statement_text(sql));
                            batch_begun = true;
                        }
                        if views::may_name_view(sql)
                            && let Some(q) = views::find(sql)
                        {
                            statements.remove(name);
                            batch_route = RouteLabel::Local;
                            state.info.settle(RouteLabel::Local);
                            local = Some(q);
                            return false;
                        }
                        if tracking {
                            match router.route(m) {
                                Route::Federate => {
                                    statements.insert(name.to_string(), sql.to_string());
                                }
                                Route::Relay => {
                                    statements.remove(name);
                                }
                            }
                        }
                        true
                    }
                    tag::BIND => {
                        state.unsynced.store(true, Relaxed);
                        state.owed.expect();
                        if let Some((portal, statement)) = extended::bind_names(body) {
                            state.forget_portal(portal);
                            if statements.contains_key(statement) {
                                portals.insert(
                                    portal.to_string(),
                                    (statement.to_string(), body.to_vec()),
                                );
                            } else {
                                portals.remove(portal);
                            }
                        }
                        true
                    }
                    tag::EXECUTE => {
                        state.unsynced.store(true, Relaxed);
                        let federated = extended::execute_message(body)
                            .is_some_and(|(portal, _)| portals.contains_key(portal));
                        if federated {
                            batch_route = RouteLabel::Federated;
                        } else {
                            // (A federated one counts once it is handed over.)
                            batch_executed = true;
                            state.owed.expect();
                        }
                        !federated
                    }
                    tag::CLOSE | tag::DESCRIBE => {
                        state.unsynced.store(true, Relaxed);
                        state.owed.expect();
                        if m[0] == tag::CLOSE
                            && let Some((kind, name)) = extended::close_message(body)
                        {
                            if kind == b'S' {
                                statements.remove(name);
                            } else {
                                portals.remove(name);
                                state.forget_portal(name);
                            }
                        }
                        true
                    }
                    tag::SYNC | tag::FUNCTION_CALL => {
                        batch_executed = false;
                        let route = std::mem::replace(&mut batch_route, RouteLabel::Relay);
                        if m[0] == tag::FUNCTION_CALL {
                            state
                                .info
                                .begin(RouteLabel::Relay, "<function call>".into());
                        } else if std::mem::take(&mut batch_begun) {
                            state.info.settle(route);
                        } else {
                            state.info.begin(route, "".into());
                        }
                        state.outstanding.fetch_add(1, Relaxed);
                        state.owed.next();
                        state.unsynced.store(false, Relaxed);
                        true
                    }
                    // Terminate: handed over, forwarded last.
                    _ => false,
                }
            });
            match step {
                Step::Forward(n) => {
                    if !write_through(
                        bw,
                        &buf[..n],
                        &state.backend_at_boundary,
                        scanner.at_boundary(),
                    )
                    .await
                    {
                        return End::BackendGone;
                    }
                    buf.advance(n);
                }
                Step::Message(n) if local.is_some() => {
                    let q = local.take().expect("checked");
                    if buf[0] == tag::QUERY {
                        let sql = crate::router::sql_of(&buf[..n]).unwrap_or("");
                        state.info.begin(RouteLabel::Local, statement_text(sql));
                    }
                    let rewritten = views::rewrite(q, shared, &state.info.database).await;
                    let mut message = Vec::with_capacity(rewritten.len() + 64);
                    if buf[0] == tag::QUERY {
                        state.outstanding.fetch_add(1, Relaxed);
                        state.owed.next();
                        state.unsynced.store(false, Relaxed);
                        statements.remove("");
                        portals.remove("");
                        frontend::query(&mut message, &rewritten);
                    } else {
                        // Parse: the same name and parameter types, the new text.
                        let body = &buf[5..n];
                        let Some((name, sql)) = extended::parse_message(body) else {
                            return End::ClientInvalid(ErrorFields::fatal(
                                "08P01",
                                "invalid Parse message",
                            ));
                        };
                        let types = &body[name.len() + sql.len() + 2..];
                        frontend::parse_typed(&mut message, name, &rewritten, types);
                    }
                    if !write_through(bw, &message, &state.backend_at_boundary, true).await {
                        return End::BackendGone;
                    }
                    buf.advance(n);
                }
                Step::Message(n) if buf[0] == tag::QUERY || buf[0] == tag::EXECUTE => {
                    let work = if buf[0] == tag::QUERY {
                        Work::Query(crate::router::sql_of(&buf[..n]).unwrap_or("").to_string())
                    } else {
                        let Some((portal, max_rows)) = extended::execute_message(&buf[5..n]) else {
                            return End::ClientInvalid(ErrorFields::fatal(
                                "08P01",
                                "invalid Execute message",
                            ));
                        };
                        let (statement, bind) = portals.get(portal).cloned().unwrap_or_default();
                        let sql = statements.get(&statement).cloned().unwrap_or_default();
                        // Postgres holds replies until a Flush or Sync: ask for
                        // them, so the Execute can run once they are in.
                        if !write_through(bw, &[b'H', 0, 0, 0, 4], &state.backend_at_boundary, true)
                            .await
                        {
                            return End::BackendGone;
                        }
                        Work::Execute(ExecuteJob {
                            portal: portal.to_string(),
                            max_rows,
                            statement,
                            sql,
                            bind,
                            first_in_batch: !std::mem::replace(&mut batch_executed, true),
                        })
                    };
                    buf.advance(n);
                    let (done, back) = oneshot::channel();
                    let taken = std::mem::replace(bw, Box::new(tokio::io::sink()));
                    if jobs
                        .send(Job {
                            work,
                            bw: taken,
                            done,
                        })
                        .await
                        .is_err()
                    {
                        return End::BackendGone;
                    }
                    match back.await {
                        Ok(w) => *bw = w,
                        Err(_) => return End::BackendGone,
                    }
                }
                Step::Message(n) => {
                    // Terminate: passed on last.
                    let _ = write_through(bw, &buf[..n], &state.backend_at_boundary, true).await;
                    return End::ClientTerminated;
                }
                Step::NeedMore => break,
                Step::Invalid(len) => {
                    tracing::debug!(len, "client message with an invalid length");
                    return End::ClientInvalid(ErrorFields::fatal(
                        "08P01",
                        "invalid message length",
                    ));
                }
            }
        }
        state.client_partial.store(!buf.is_empty(), Relaxed);
        reserve_for(&mut buf, 8 * 1024);
        let read = loop {
            let Some(limit) = shared.limits.idle_session_timeout() else {
                break cr.read_buf(&mut buf).await;
            };
            let idle =
                |empty: bool| empty && state.idle() && state.info.txn_status.load(Relaxed) == b'I';
            // Busy or in a transaction: look again after a whole period.
            let wait = if idle(buf.is_empty()) {
                limit.saturating_sub(state.quiet_for())
            } else {
                limit
            };
            match tokio::time::timeout(wait.max(Duration::from_millis(1)), cr.read_buf(&mut buf))
                .await
            {
                Ok(read) => break read,
                Err(_) if idle(buf.is_empty()) && state.quiet_for() >= limit => {
                    METRICS.idle_timeouts.fetch_add(1, Relaxed);
                    return End::IdleTimeout;
                }
                Err(_) => {}
            }
        };
        match read {
            Ok(0) | Err(_) => return End::ClientGone,
            Ok(n) => {
                state.touch();
                METRICS.bytes_from_clients.fetch_add(n as u64, Relaxed);
            }
        }
    }
}

async fn backend_to_client(
    br: &mut ReadHalf,
    cw: &mut WriteHalf,
    state: &State,
    shared: &Shared,
    phase: &mut watch::Receiver<Phase>,
    jobs: &mut mpsc::Receiver<Job>,
    federation: Option<(&Federation, &Router)>,
) -> End {
    let mut pending: Option<Job> = None;
    let tracking = federation.is_some();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    // Postgres is trusted to frame its own messages; the limit only guards
    // against a corrupt stream.
    let mut scanner = FrameScanner::new(i32::MAX as u32);
    loop {
        loop {
            let ready = state.ready.load(Relaxed);
            let held = |t: u8| {
                t == tag::READY_FOR_QUERY
                    || t == tag::ERROR_RESPONSE
                    // Only sessions that may federate need to see settings
                    // and count extended-protocol replies.
                    || (tracking && (t == tag::PARAMETER_STATUS || is_extended_reply_end(t)))
                    || (!ready && (t == tag::AUTHENTICATION || t == tag::BACKEND_KEY_DATA))
            };
            let step = scanner.scan(&buf, held, |m| match m[0] {
                tag::PARAMETER_STATUS => {
                    remember_setting(state, &m[5..]);
                    true
                }
                t if tracking && is_extended_reply_end(t) => {
                    state.owed.replied();
                    true
                }
                tag::READY_FOR_QUERY => {
                    let status = m.get(5).copied().unwrap_or(b'I');
                    state.info.txn_status.store(status, Relaxed);
                    state.touch();
                    // The statement it ends (none for the startup exchange).
                    if state.ready.load(Relaxed)
                        && let Some(running) = state.info.end()
                    {
                        let code = state.error_code.lock().ok().and_then(|mut c| c.take());
                        shared.activity.finished(
                            &state.info,
                            running,
                            code,
                            shared.limits.slow_statement_threshold(),
                        );
                    }
                    state.owed.answered();
                    if status == b'I' && tracking {
                        // Portals end with their transaction.
                        if let Ok(mut s) = state.suspended.lock() {
                            s.clear();
                        }
                    }
                    state.outstanding.fetch_sub(1, Relaxed);
                    state.ready.store(true, Relaxed);
                    state.backend_said_fatal.store(false, Relaxed);
                    true
                }
                tag::ERROR_RESPONSE => {
                    if state.unsynced.load(Relaxed) || state.owed.total() > 0 {
                        state.owed.failed(true);
                    }
                    let body = &m[5..];
                    if let Some(code) = crate::protocol::error_code(body) {
                        METRICS.error_sent(code);
                        if let Ok(mut c) = state.error_code.lock()
                            && c.is_none()
                        {
                            *c = Some(String::from_utf8_lossy(code).into_owned());
                        }
                    }
                    let fatal = body.starts_with(b"SFATAL\0") || body.starts_with(b"SPANIC\0");
                    state.backend_said_fatal.store(fatal, Relaxed);
                    true
                }
                tag::AUTHENTICATION => sasl_mechanisms_without_plus(m).is_none(),
                // BackendKeyData: handed over to be rewritten.
                _ => false,
            });
            match step {
                Step::Forward(n) => {
                    METRICS.bytes_to_clients.fetch_add(n as u64, Relaxed);
                    if !write_through(
                        cw,
                        &buf[..n],
                        &state.client_at_boundary,
                        scanner.at_boundary(),
                    )
                    .await
                    {
                        return End::ClientGone;
                    }
                    buf.advance(n);
                }
                Step::Message(n) => {
                    METRICS.bytes_to_clients.fetch_add(n as u64, Relaxed);
                    let rewritten = match buf[0] {
                        tag::BACKEND_KEY_DATA => backend_key_data(&buf[..n], state, shared),
                        _ => sasl_mechanisms_without_plus(&buf[..n])
                            .unwrap_or_else(|| buf[..n].to_vec()),
                    };
                    if !write_through(cw, &rewritten, &state.client_at_boundary, true).await {
                        return End::ClientGone;
                    }
                    buf.advance(n);
                }
                Step::NeedMore => break,
                Step::Invalid(len) => {
                    tracing::warn!(len, "Postgres sent a message with an invalid length");
                    return End::BackendGone;
                }
            }
        }
        // A federated statement runs once Postgres has answered everything
        // sent before it.
        if pending.is_some()
            && state.ready.load(Relaxed)
            && state.outstanding.load(Relaxed) <= 0
            && state.owed.total() <= 0
            && scanner.at_boundary()
        {
            let job = pending.take().expect("checked");
            let Some((federation, router)) = federation else {
                return End::BackendGone;
            };
            if matches!(job.work, Work::Execute(_)) && state.owed.failing() {
                // Postgres skips everything up to the Sync after an error;
                // so does a federated Execute.
                let _ = job.done.send(job.bw);
                continue;
            }
            let settings = state.settings.lock().map(|s| s.clone()).unwrap_or_default();
            let r = std::mem::replace(br, Box::new(tokio::io::empty()));
            let mut link = PgLink::new(
                r,
                job.bw,
                std::mem::take(&mut buf),
                state.info.txn_status.load(Relaxed),
            );
            if matches!(job.work, Work::Query(_)) {
                link.fresh = !state.federated_before.swap(true, Relaxed);
            }
            let answered = match &job.work {
                Work::Query(sql) => {
                    state.info.begin(RouteLabel::Federated, statement_text(sql));
                    crate::federation::answer_query(
                        link,
                        cw,
                        sql,
                        (federation, router),
                        &settings,
                        &state.cancel,
                        &|body: &[u8]| remember_setting(state, body),
                    )
                    .await
                }
                Work::Execute(e) => {
                    let mut suspended = state
                        .suspended
                        .lock()
                        .map(|mut s| std::mem::take(&mut *s))
                        .unwrap_or_default();
                    let link = extended::answer_execute(
                        link,
                        cw,
                        e,
                        federation,
                        &settings,
                        &mut suspended,
                        &state.cancel,
                    )
                    .await;
                    if let Ok(mut s) = state.suspended.lock() {
                        *s = suspended;
                    }
                    link
                }
            };
            if matches!(job.work, Work::Query(_))
                && let Some(running) = state.info.end()
            {
                let code = match &answered {
                    Some(link) => link.statement_failed.clone(),
                    None => Some("08006".into()),
                };
                shared.activity.finished(
                    &state.info,
                    running,
                    code,
                    shared.limits.slow_statement_threshold(),
                );
            } else if let Some(link) = &answered
                && let Some(code) = &link.statement_failed
            {
                // An Execute: its error belongs to the exchange up to Sync,
                // and the Executes after it up to the Sync are skipped, as
                // Postgres skips them.
                state.owed.failed(false);
                if let Ok(mut c) = state.error_code.lock()
                    && c.is_none()
                {
                    *c = Some(code.clone());
                }
            }
            state.touch();
            match answered {
                Some(link) => {
                    *br = link.r;
                    buf = link.buf;
                    state.info.txn_status.store(link.txn_status, Relaxed);
                    let _ = job.done.send(link.w);
                    continue;
                }
                None => return End::BackendGone,
            }
        }
        match *phase.borrow() {
            Phase::Running => {}
            Phase::Draining if !state.idle() => {}
            Phase::Draining | Phase::Closing => return End::Shutdown,
        }
        reserve_for(&mut buf, 16 * 1024);
        tokio::select! {
            job = jobs.recv(), if pending.is_none() => match job {
                Some(job) => pending = Some(job),
                None => return End::ClientGone,
            },
            read = br.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => return End::BackendGone,
                Ok(_) => {}
            },
            changed = phase.changed() => if changed.is_err() {
                return End::Shutdown;
            },
        }
    }
}

/// Backend messages that complete the reply to one extended-protocol
/// message: ParseComplete, BindComplete, CloseComplete, NoData,
/// RowDescription (after a Describe), CommandComplete, EmptyQueryResponse,
/// PortalSuspended.
fn is_extended_reply_end(t: u8) -> bool {
    matches!(t, b'1' | b'2' | b'3' | b'n' | b'T' | b'C' | b'I' | b's')
}

/// Keeps the settings a federated statement needs from a ParameterStatus body.
fn remember_setting(state: &State, body: &[u8]) {
    if let Ok(mut s) = state.settings.lock() {
        s.remember(body);
    }
}

/// Replaces Postgres's cancel secret with one of ours, so the client never
/// holds Postgres's key; the pid stays real (clients pass it to
/// `pg_terminate_backend`).
fn backend_key_data(message: &[u8], state: &State, shared: &Shared) -> Vec<u8> {
    if message.len() != 13 {
        return message.to_vec();
    }
    let pid = i32::from_be_bytes([message[5], message[6], message[7], message[8]]);
    let secret = i32::from_be_bytes([message[9], message[10], message[11], message[12]]);
    let ours = shared
        .cancel_keys
        .register(pid, secret, state.cancel.clone());
    state.info.backend_pid.store(pid, Relaxed);
    state.backend_secret.store(secret.into(), Relaxed);
    state.client_secret.store(ours.into(), Relaxed);
    let mut out = message.to_vec();
    out[9..13].copy_from_slice(&ours.to_be_bytes());
    out
}

const SASL: u32 = 10;
const SCRAM_PLUS: &[u8] = b"SCRAM-SHA-256-PLUS";

/// An AuthenticationSASL message without SCRAM-SHA-256-PLUS, or `None` if
/// the message is not one that offers it. Channel binding ties SCRAM to one
/// TLS connection; the client's connection is not Postgres's, so a client
/// must never be offered it.
fn sasl_mechanisms_without_plus(message: &[u8]) -> Option<Vec<u8>> {
    if message.len() < 9
        || u32::from_be_bytes([message[5], message[6], message[7], message[8]]) != SASL
    {
        return None;
    }
    let list = &message[9..];
    let names: Vec<&[u8]> = list.split(|b| *b == 0).filter(|n| !n.is_empty()).collect();
    if !names.contains(&SCRAM_PLUS) {
        return None;
    }
    let mut body = SASL.to_be_bytes().to_vec();
    for name in names.into_iter().filter(|n| *n != SCRAM_PLUS) {
        body.extend_from_slice(name);
        body.push(0);
    }
    body.push(0);
    let mut out = Vec::with_capacity(body.len() + 5);
    crate::protocol::put_message(&mut out, tag::AUTHENTICATION, &body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scram_plus_is_never_offered() {
        let mut body = SASL.to_be_bytes().to_vec();
        body.extend(b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
        let mut m = Vec::new();
        crate::protocol::put_message(&mut m, b'R', &body);
        let out = sasl_mechanisms_without_plus(&m).unwrap();
        let mut want_body = SASL.to_be_bytes().to_vec();
        want_body.extend(b"SCRAM-SHA-256\0\0");
        let mut want = Vec::new();
        crate::protocol::put_message(&mut want, b'R', &want_body);
        assert_eq!(out, want);

        // Without -PLUS, and for other authentication requests, nothing changes.
        assert!(sasl_mechanisms_without_plus(&want).is_none());
        let mut md5 = Vec::new();
        crate::protocol::put_message(&mut md5, b'R', &[0, 0, 0, 5, 1, 2, 3, 4]);
        assert!(sasl_mechanisms_without_plus(&md5).is_none());
    }
}
