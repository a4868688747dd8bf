//! The cases of one scenario, begun one after the other on one cluster, each with a
//! recorder of its own.

use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::Recorder;
use crate::case::Case;
use crate::observation::Observation;
use crate::progress::progress_on;

/// The cases of one scenario, begun one after the other on the same cluster; each
/// observation's time runs from its beginning to the next one's.
#[derive(Debug, Clone)]
pub(crate) struct Phases {
    variant: String,
    begun: Arc<Mutex<Vec<Recorder>>>,
}

impl Phases {
    /// Cases of a scenario called `variant`.
    pub(crate) fn new(variant: String) -> Self {
        Phases {
            variant,
            begun: Arc::default(),
        }
    }

    fn begun(&self) -> std::sync::MutexGuard<'_, Vec<Recorder>> {
        self.begun.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Begins `case`: its recorder, whose clock starts now.
    pub(crate) fn begin(&self, case: Case) -> Recorder {
        if progress_on() {
            eprintln!("▶ {case} ({})", self.variant);
        }
        let rec = Recorder::new(case, Instant::now()).with_variant(self.variant.clone());
        self.begun().push(rec.clone());
        rec
    }

    /// The case begun last (FO-01's, begun now, if none was).
    pub(crate) fn current(&self) -> Recorder {
        if let Some(rec) = self.begun().last() {
            return rec.clone();
        }
        self.begin(Case::Fo01)
    }

    /// Every case begun, as observed until now.
    pub(crate) fn finish(&self) -> Vec<Observation> {
        let begun = self.begun().clone();
        let ends: Vec<Instant> = begun
            .iter()
            .skip(1)
            .map(Recorder::started)
            .chain(std::iter::once(Instant::now()))
            .collect();
        begun
            .iter()
            .zip(ends)
            .map(|(rec, end)| {
                let mut observation = rec.finish();
                observation.elapsed = end - rec.started();
                observation
            })
            .collect()
    }
}
