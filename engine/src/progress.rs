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

/// Reports progress every `every` steps, and ends the work when dropped (also on an error).
pub(crate) struct Tracker<'a> {
    to: Option<&'a dyn Progress>,
    done: u64,
    every: u64,
    next: u64,
}

/// Changes between two reports.
const STEP: u64 = 1024;

impl<'a> Tracker<'a> {
    /// Starts `what`, counted in changes (nothing is shown for small work).
    pub(crate) fn new(to: &'a Reporter, what: &str, total: u64) -> Self {
        Self::with_step(to, what, total, STEP)
    }

    /// Starts `what`, counted in changes done in batches of `batch`: reported after every
    /// batch, shown for work of more than a few steps (as [`Tracker::new`]) or of more than
    /// one batch.
    pub(crate) fn batches(to: &'a Reporter, what: &str, total: u64, batch: u64) -> Self {
        let to = to.as_deref().filter(|_| total >= 4 * STEP || total > batch);
        if let Some(p) = to {
            p.begin(what, total);
        }
        Tracker {
            to,
            done: 0,
            every: 1,
            next: 1,
        }
    }

    /// Reports to no one.
    pub(crate) fn none() -> Self {
        Tracker {
            to: None,
            done: 0,
            every: u64::MAX,
            next: u64::MAX,
        }
    }

    fn with_step(to: &'a Reporter, what: &str, total: u64, every: u64) -> Self {
        let to = to.as_deref().filter(|_| total >= 4 * every);
        if let Some(p) = to {
            p.begin(what, total);
        }
        Tracker {
            to,
            done: 0,
            every,
            next: every,
        }
    }

    /// One step done.
    pub(crate) fn step(&mut self) {
        self.advance(1);
    }

    /// `n` steps done.
    pub(crate) fn advance(&mut self, n: u64) {
        self.done += n;
        if let Some(p) = self.to
            && self.done >= self.next
        {
            p.set(self.done);
            self.next = self.done + self.every;
        }
    }
}

/// A writer that reports the bytes written through it.
pub(crate) struct Counted<'a, W> {
    pub(crate) inner: W,
    pub(crate) tracker: Tracker<'a>,
}

impl<W: std::io::Write> std::io::Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.tracker.advance(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
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
