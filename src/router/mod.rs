//! Decides, for every Query and Parse message, where the statement goes.
//!
//! Every statement the session forwards passes through [`Router::route`]
//! first, so that reads of tiered tables can be taken out of the relay here.

/// Where a statement is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Forward the message to the session's Postgres as it is.
    Relay,
}

/// The routing rules. With no tiered tables (all there is so far) every
/// statement relays, and routing is one call that decides nothing.
#[derive(Debug, Default)]
pub(crate) struct Router;

impl Router {
    /// Routes one complete frontend message (`Q` or `P`, tag and length included).
    #[inline]
    pub(crate) fn route(&self, _message: &[u8]) -> Route {
        Route::Relay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_everything_without_tiered_tables() {
        let router = Router::default();
        let mut q = Vec::new();
        crate::protocol::put_message(&mut q, b'Q', b"SELECT 1\0");
        assert_eq!(router.route(&q), Route::Relay);
    }
}
