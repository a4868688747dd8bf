//! Whether the suite narrates on stderr as it goes: the demo turns it on, tests log
//! through `tracing` instead.

use std::sync::atomic::{AtomicBool, Ordering};

/// Whether cases print progress lines on stderr as they go (the binary turns it on;
/// tests log them through `tracing` instead).
static PROGRESS: AtomicBool = AtomicBool::new(false);

/// Turns progress lines on stderr on or off.
pub fn set_progress(on: bool) {
    PROGRESS.store(on, Ordering::Relaxed);
}

pub(crate) fn progress_on() -> bool {
    PROGRESS.load(Ordering::Relaxed)
}
