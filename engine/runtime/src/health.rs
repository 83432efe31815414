//! What a health endpoint reads: whether this process's pipeline is ready (its sources are
//! open and an epoch has committed) and whether it is stopping. One pipeline runs per process,
//! so the state is the process's.

use std::sync::atomic::{AtomicBool, Ordering};

pub struct Health {
    committed: AtomicBool,
    stopping: AtomicBool,
}

static HEALTH: Health = Health {
    committed: AtomicBool::new(false),
    stopping: AtomicBool::new(false),
};

/// The process's health.
pub fn health() -> &'static Health {
    &HEALTH
}

impl Health {
    /// Ready: a first epoch is done, committed or with nothing to commit (so every source
    /// opened and read), and no stop was asked.
    pub fn ready(&self) -> bool {
        self.committed.load(Ordering::SeqCst) && !self.stopping.load(Ordering::SeqCst)
    }

    /// A stop was asked (Ctrl-C, SIGTERM): not ready from now on.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    pub(crate) fn set_committed(&self) {
        self.committed.store(true, Ordering::SeqCst);
    }
}
