//! The watchers: services (supervised), the database, disk space, NICs and
//! system information. Each turns what it sees into levels for the core
//! (`Event::Health`, sent only when the summary changes) and into journal
//! lines (`Event::Observation`); none of them decides anything itself.

pub mod database;
pub mod disk;
pub mod nic;
pub mod process;
pub mod run;
pub mod system;

use crate::ha::{Event, HealthSummary, Level, Severity};
use std::sync::{Arc, Mutex};

/// Which part of the health summary a watcher owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Processes,
    Database,
    Disk,
    Nic,
}

/// Merges the watchers' levels and tells the core when the summary changes.
#[derive(Clone)]
pub struct Reporter {
    summary: Arc<Mutex<HealthSummary>>,
    send: Arc<dyn Fn(Event) + Send + Sync>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("summary", &self.summary)
            .finish()
    }
}

impl Reporter {
    pub fn new(send: Arc<dyn Fn(Event) + Send + Sync>) -> Reporter {
        Reporter {
            summary: Arc::new(Mutex::new(HealthSummary::default())),
            send,
        }
    }

    /// Set one part; the core hears of it only if the summary changed.
    pub fn set(&self, part: Part, level: Level) {
        let changed = match self.summary.lock() {
            Ok(mut s) => {
                let slot = match part {
                    Part::Processes => &mut s.processes,
                    Part::Database => &mut s.database,
                    Part::Disk => &mut s.disk,
                    Part::Nic => &mut s.nic,
                };
                let changed = *slot != level;
                *slot = level;
                changed.then_some(*s)
            }
            Err(_) => None,
        };
        if let Some(health) = changed {
            (self.send)(Event::Health { health });
        }
    }

    /// Any other event for the core (the replica-lag verdict).
    pub fn event(&self, e: Event) {
        (self.send)(e);
    }

    /// A line for the journal.
    pub fn observe(&self, kind: &str, severity: Severity, text: impl Into<String>) {
        (self.send)(Event::Observation {
            kind: kind.to_string(),
            severity,
            text: text.into(),
        });
    }

    pub fn summary(&self) -> HealthSummary {
        self.summary.lock().map(|s| *s).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_core_hears_only_changes() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let r = Reporter::new(Arc::new(move |e| sink.lock().unwrap().push(e)));
        r.set(Part::Disk, Level::Ok);
        r.set(Part::Disk, Level::Ok);
        r.set(Part::Nic, Level::Failed);
        let got = seen.lock().unwrap().clone();
        assert_eq!(got.len(), 2);
        assert!(
            matches!(&got[1], Event::Health { health } if health.nic == Level::Failed && health.disk == Level::Ok)
        );
        assert_eq!(r.summary().database, Level::Unknown);
    }
}
