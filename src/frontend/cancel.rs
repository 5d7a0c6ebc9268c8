//! Cancel keys: clients hold thermocline's secrets, never Postgres's.
//!
//! A CancelRequest arrives on a new connection with the key the client was
//! given; it is looked up here and passed to Postgres with the real one.
//! (<https://www.postgresql.org/docs/15/protocol-flow.html#id-1.10.6.9>)

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub(crate) struct CancelKeys {
    /// (pid, secret given to the client) → Postgres's secret.
    keys: Mutex<HashMap<(i32, i32), i32>>,
}

impl CancelKeys {
    /// Records a session's key and returns the secret to give its client.
    pub(crate) fn register(&self, pid: i32, backend_secret: i32) -> i32 {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let ours: i32 = rand::random();
            if let std::collections::hash_map::Entry::Vacant(slot) = keys.entry((pid, ours)) {
                slot.insert(backend_secret);
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

    /// Postgres's secret for a key a client presents, if it is one we gave.
    pub(crate) fn lookup(&self, pid: i32, client_secret: i32) -> Option<i32> {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(pid, client_secret))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_given_key_maps_to_the_real_one() {
        let keys = CancelKeys::default();
        let ours = keys.register(100, 555);
        assert_eq!(keys.lookup(100, ours), Some(555));
        assert_eq!(keys.lookup(100, ours.wrapping_add(1)), None);
        assert_eq!(keys.lookup(101, ours), None);
        keys.remove(100, ours);
        assert_eq!(keys.lookup(100, ours), None);
    }
}
