//! Progress of long work (applying a large bundle, writing one), for whoever shows it: the
//! CLI draws bars on a terminal; the engine knows nothing of terminals.

use std::sync::Arc;

/// Receives progress of one piece of work at a time.
pub trait Progress: Send + Sync + std::fmt::Debug {
    /// Work `what` starts, with `total` steps (changes).
    fn begin(&self, what: &str, total: u64);
    /// `done` of the total are done.
    fn set(&self, done: u64);
    /// The work is over (done or failed).
    fn end(&self);
}

/// Where progress goes, if anywhere.
pub type Reporter = Option<Arc<dyn Progress>>;

/// Reports progress every `STEP` steps, and ends the work when dropped (also on an error).
pub(crate) struct Tracker<'a> {
    to: Option<&'a dyn Progress>,
    done: u64,
}

const STEP: u64 = 1024;

impl<'a> Tracker<'a> {
    /// Starts `what` (nothing is shown for small work).
    pub(crate) fn new(to: &'a Reporter, what: &str, total: u64) -> Self {
        let to = to.as_deref().filter(|_| total >= 4 * STEP);
        if let Some(p) = to {
            p.begin(what, total);
        }
        Tracker { to, done: 0 }
    }

    /// One step done.
    pub(crate) fn step(&mut self) {
        self.done += 1;
        if let Some(p) = self.to
            && self.done.is_multiple_of(STEP)
        {
            p.set(self.done);
        }
    }
}

impl Drop for Tracker<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.to {
            p.set(self.done);
            p.end();
        }
    }
}
