//! The one channel through which long operations report progress. The CLI
//! renders it as a progress bar on a terminal and as JSON lines otherwise.

use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A step began; `total` is its size in bytes when known.
    Started { task: String, total: Option<u64> },
    /// `bytes` more were processed in the current step.
    Advanced { bytes: u64 },
    /// The current step ended.
    Finished,
}

pub trait Progress: Send + Sync {
    fn event(&self, event: Event);
}

/// Drops every event (for library callers that do not show progress).
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _: Event) {}
}

pub type Reporter = Arc<dyn Progress>;

pub fn silent() -> Reporter {
    Arc::new(Silent)
}
