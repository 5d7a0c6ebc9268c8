//! Each federated statement's share of the executor's memory.
//!
//! All statements draw from one pool (`executor_memory`); on top of it each
//! statement may hold at most `statement_memory`, so one statement that
//! needs more than that fails alone (53200) instead of starving the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// One statement's view of the shared pool, capped at `limit` bytes.
#[derive(Debug)]
pub(crate) struct StatementPool {
    shared: Arc<dyn MemoryPool>,
    limit: usize,
    used: AtomicUsize,
}

impl StatementPool {
    pub(crate) fn new(shared: Arc<dyn MemoryPool>, limit: usize) -> Self {
        StatementPool {
            shared,
            limit,
            used: AtomicUsize::new(0),
        }
    }
}

impl MemoryPool for StatementPool {
    fn register(&self, consumer: &MemoryConsumer) {
        self.shared.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.shared.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.shared.grow(reservation, additional);
        self.used.fetch_add(additional, Relaxed);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.shared.shrink(reservation, shrink);
        let _ = self
            .used
            .fetch_update(Relaxed, Relaxed, |u| Some(u.saturating_sub(shrink)));
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let taken = self.used.fetch_add(additional, Relaxed) + additional;
        if taken > self.limit {
            self.used.fetch_sub(additional, Relaxed);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the statement needs more than statement_memory ({} MB) for {}",
                self.limit >> 20,
                reservation.consumer().name()
            )));
        }
        if let Err(e) = self.shared.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Relaxed);
            return Err(e);
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}
