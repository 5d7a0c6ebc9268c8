//! The limits that protect the server, changeable while it runs (SIGHUP).
//!
//! Each is read on the path it guards with one relaxed atomic load; a
//! reload stores the new values and wakes statements waiting in the
//! federated queue, so a raised limit lets them in at once.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::admin::metrics::METRICS;
use crate::config::Config;
use crate::frontend::cancel::SessionCancel;
use crate::protocol::ErrorFields;

/// The reloadable limits of one server.
#[derive(Debug, Default)]
pub struct Limits {
    max_clients: AtomicUsize,
    /// 0: no limit.
    max_federated: AtomicUsize,
    queue_timeout_ms: AtomicU64,
    /// 0: off.
    idle_session_ms: AtomicU64,
    /// 0: off.
    slow_statement_ms: AtomicU64,
    statement_memory: AtomicUsize,
    /// 0: off.
    result_cache_ttl_ms: AtomicU64,
    running: Mutex<usize>,
    freed: Notify,
}

fn millis(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| (d.as_millis() as u64).max(1))
}

impl Limits {
    pub fn new(config: &Config) -> Self {
        let l = Limits::default();
        l.apply(config);
        l
    }

    /// Takes the limits of `config`.
    pub fn apply(&self, config: &Config) {
        self.max_clients
            .store(config.max_client_connections, Relaxed);
        self.max_federated
            .store(config.max_federated_statements, Relaxed);
        self.queue_timeout_ms
            .store(millis(Some(config.federated_queue_timeout)), Relaxed);
        self.idle_session_ms
            .store(millis(config.idle_session_timeout), Relaxed);
        self.slow_statement_ms
            .store(millis(config.slow_statement_threshold), Relaxed);
        self.statement_memory
            .store(config.statement_memory() as usize, Relaxed);
        self.result_cache_ttl_ms
            .store(millis(config.result_cache_ttl), Relaxed);
        let secs = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64());
        METRICS.set_limits(vec![
            (
                "max_client_connections",
                config.max_client_connections as f64,
            ),
            (
                "max_federated_statements",
                config.max_federated_statements as f64,
            ),
            (
                "federated_queue_timeout",
                config.federated_queue_timeout.as_secs_f64(),
            ),
            ("idle_session_timeout", secs(config.idle_session_timeout)),
            (
                "slow_statement_threshold",
                secs(config.slow_statement_threshold),
            ),
            ("executor_memory", config.executor_memory as f64),
            ("statement_memory", config.statement_memory() as f64),
            ("cache_memory", config.cache_memory as f64),
            ("result_cache_ttl", secs(config.result_cache_ttl)),
        ]);
        // A raised limit lets waiting statements in now.
        self.freed.notify_waiters();
    }

    /// `result_cache_ttl`: how old a whole cached answer may be for a
    /// session that does not set its own.
    pub fn result_cache_ttl(&self) -> Option<Duration> {
        match self.result_cache_ttl_ms.load(Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// `max_client_connections`; 0: no limit.
    pub fn max_clients(&self) -> usize {
        self.max_clients.load(Relaxed)
    }

    pub fn idle_session_timeout(&self) -> Option<Duration> {
        match self.idle_session_ms.load(Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    pub fn slow_statement_threshold(&self) -> Option<Duration> {
        match self.slow_statement_ms.load(Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// The most memory one federated statement may hold.
    pub fn statement_memory(&self) -> usize {
        self.statement_memory.load(Relaxed)
    }

    fn try_enter(&self) -> bool {
        let max = self.max_federated.load(Relaxed);
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if max == 0 || *running < max {
            *running += 1;
            METRICS.federated_running.fetch_add(1, Relaxed);
            true
        } else {
            false
        }
    }

    /// A place among the `max_federated_statements` running now, waiting in
    /// the queue for up to `federated_queue_timeout`. A CancelRequest for
    /// the session ends the wait with 57014.
    pub(crate) async fn federated_slot(
        &self,
        cancel: &SessionCancel,
    ) -> Result<FederatedSlot<'_>, ErrorFields> {
        if self.try_enter() {
            return Ok(FederatedSlot(self));
        }
        let seen = cancel.count();
        let started = Instant::now();
        METRICS.federated_queued.fetch_add(1, Relaxed);
        struct Queued;
        impl Drop for Queued {
            fn drop(&mut self) {
                METRICS.federated_queued.fetch_sub(1, Relaxed);
            }
        }
        let _queued = Queued;
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.try_enter() {
                return Ok(FederatedSlot(self));
            }
            let timeout = Duration::from_millis(self.queue_timeout_ms.load(Relaxed));
            let Some(left) = timeout.checked_sub(started.elapsed()) else {
                METRICS.federated_queue_timeouts.fetch_add(1, Relaxed);
                return Err(ErrorFields::error(
                    "53000",
                    format!(
                        "too many reads of tiered tables are running: waited {:.1}s for one of max_federated_statements = {}",
                        started.elapsed().as_secs_f64(),
                        self.max_federated.load(Relaxed)
                    ),
                )
                .with_hint("Try again later, or raise max_federated_statements or federated_queue_timeout."));
            };
            tokio::select! {
                () = &mut freed => {}
                () = tokio::time::sleep(left) => {}
                () = cancel.after(seen) => {
                    return Err(ErrorFields::error("57014", "canceling statement due to user request"));
                }
            }
        }
    }
}

/// A running federated statement's place; given back when dropped.
pub(crate) struct FederatedSlot<'a>(&'a Limits);

impl Drop for FederatedSlot<'_> {
    fn drop(&mut self) {
        let mut running = self.0.running.lock().unwrap_or_else(|e| e.into_inner());
        *running = running.saturating_sub(1);
        drop(running);
        METRICS.federated_running.fetch_sub(1, Relaxed);
        self.0.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_queue_admits_in_turn_and_times_out() {
        let config = Config {
            max_federated_statements: 1,
            federated_queue_timeout: Duration::from_millis(200),
            ..Config::default()
        };
        let limits = Limits::new(&config);
        let cancel = SessionCancel::default();
        let first = limits.federated_slot(&cancel).await.unwrap();
        let e = limits.federated_slot(&cancel).await.err().unwrap();
        assert_eq!(e.code, "53000");
        // Freed while another waits: the waiter gets in.
        let waiter = limits.federated_slot(&cancel);
        let release = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(first);
        };
        let (got, ()) = tokio::join!(waiter, release);
        assert!(got.is_ok());
        drop(got);
        // A raised limit admits more at once.
        let a = limits.federated_slot(&cancel).await.unwrap();
        limits.apply(&Config {
            max_federated_statements: 2,
            ..config.clone()
        });
        let b = limits.federated_slot(&cancel).await.unwrap();
        drop((a, b));
        // A cancel request ends the wait.
        let _held = limits.federated_slot(&cancel).await.unwrap();
        limits.apply(&Config {
            federated_queue_timeout: Duration::from_secs(60),
            ..config
        });
        let waiting = limits.federated_slot(&cancel);
        let cancelling = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            cancel.request();
        };
        let (got, ()) = tokio::join!(waiting, cancelling);
        assert_eq!(got.err().unwrap().code, "57014");
    }
}
