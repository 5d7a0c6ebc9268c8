//! Cancel keys: clients hold thermocline's secrets, never Postgres's.
//!
//! A CancelRequest arrives on a new connection with the key the client was
//! given; it is looked up here and passed to Postgres with the real one.
//! (<https://www.postgresql.org/docs/15/protocol-flow.html#id-1.10.6.9>)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// A session's cancel signal: statements thermocline runs itself (reads
/// over both tiers) stop when a CancelRequest for the session arrives.
#[derive(Debug, Default)]
pub(crate) struct SessionCancel {
    requests: AtomicU64,
    notify: Notify,
}

impl SessionCancel {
    /// Cancel requests received so far.
    pub(crate) fn count(&self) -> u64 {
        self.requests.load(Ordering::Acquire)
    }

    pub(crate) fn request(&self) {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// Resolves once a cancel request arrives after `seen` had been counted.
    pub(crate) async fn after(&self, seen: u64) {
        loop {
            let notified = self.notify.notified();
            if self.count() != seen {
                return;
            }
            notified.await;
        }
    }
}

/// Postgres's secret for a session, and the session's own cancel signal.
type KeyEntry = (i32, Arc<SessionCancel>);

#[derive(Default)]
pub(crate) struct CancelKeys {
    /// (pid, secret given to the client) → the session's entry.
    keys: Mutex<HashMap<(i32, i32), KeyEntry>>,
}

impl CancelKeys {
    /// Records a session's key and returns the secret to give its client.
    pub(crate) fn register(
        &self,
        pid: i32,
        backend_secret: i32,
        cancel: Arc<SessionCancel>,
    ) -> i32 {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let ours: i32 = rand::random();
            if let std::collections::hash_map::Entry::Vacant(slot) = keys.entry((pid, ours)) {
                slot.insert((backend_secret, cancel));
                return ours;
            }
        }
    }

    pub(crate) fn remove(&self, pid: i32, client_secret: i32) {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(pid, client_secret));
    }

    /// Postgres's secret for a key a client presents, if it is one we gave,
    /// and the session's cancel signal.
    pub(crate) fn lookup(&self, pid: i32, client_secret: i32) -> Option<(i32, Arc<SessionCancel>)> {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(pid, client_secret))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_given_key_maps_to_the_real_one() {
        let keys = CancelKeys::default();
        let ours = keys.register(100, 555, Arc::default());
        assert_eq!(keys.lookup(100, ours).map(|k| k.0), Some(555));
        assert!(keys.lookup(100, ours.wrapping_add(1)).is_none());
        assert!(keys.lookup(101, ours).is_none());
        keys.remove(100, ours);
        assert!(keys.lookup(100, ours).is_none());
    }
}
