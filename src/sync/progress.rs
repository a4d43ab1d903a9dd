//! What file sync is doing, for `hamon status`, the JSON status and the
//! heartbeats.

use crate::config::SyncClass;
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Progress of one class, as shown by `hamon status` and the JSON status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassProgress {
    /// Sets in this class.
    pub sets: usize,
    /// Files and bytes written by the last pass.
    pub files: u64,
    pub bytes: u64,
    pub deleted: u64,
    /// Totals since the agent started.
    pub total_files: u64,
    pub total_bytes: u64,
    /// When the last pass that completed without errors started (Unix seconds).
    pub last_ok: Option<u64>,
    /// Seconds between the start of that pass and now: how stale the replica can be.
    pub lag_secs: Option<u64>,
    /// Files that came as deltas since the agent started, and the bytes they fetched.
    #[serde(default)]
    pub delta_files: u64,
    #[serde(default)]
    pub delta_fetched: u64,
    /// The last pass's errors (files that could not be copied), most recent first.
    pub errors: Vec<String>,
    /// Refused entries (special files, links out of the set) seen by the last pass.
    pub skipped: Vec<String>,
}

/// What this server's file sync is doing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// `pulling` (standby, peer active), `serving` (active), `idle`.
    pub direction: String,
    pub frequent: ClassProgress,
    pub batch: ClassProgress,
    /// The full copy under way or last done: `initial: running`, `failback: done`...
    pub copy: Option<String>,
}

impl Progress {
    /// What `hamon status` prints: one line per class with sets, then the copy.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, c) in [("frequent", &self.frequent), ("batch", &self.batch)] {
            if c.sets == 0 {
                continue;
            }
            let lag = match c.lag_secs {
                Some(s) => format!("{s} s"),
                None => "not yet synced".into(),
            };
            let mut line = format!(
                "File sync ({}) {name}: {} set(s), last pass {} file(s) / {} byte(s), \
                 {} deleted, lag {lag}",
                self.direction, c.sets, c.files, c.bytes, c.deleted
            );
            if !c.errors.is_empty() {
                line.push_str(&format!(", {} error(s): {}", c.errors.len(), c.errors[0]));
            }
            out.push(line);
        }
        if let Some(copy) = &self.copy {
            out.push(format!("Full copy {copy}"));
        }
        out
    }

    pub(crate) fn class_mut(&mut self, c: SyncClass) -> &mut ClassProgress {
        match c {
            SyncClass::Frequent => &mut self.frequent,
            SyncClass::Batch => &mut self.batch,
        }
    }

    /// Refresh the lag figures against the clock.
    pub(crate) fn aged(mut self, now: u64) -> Progress {
        for c in [&mut self.frequent, &mut self.batch] {
            c.lag_secs = c.last_ok.map(|t| now.saturating_sub(t));
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_show_each_class_with_sets_and_the_copy() {
        let mut p = Progress {
            frequent: ClassProgress {
                sets: 2,
                files: 3,
                bytes: 4096,
                deleted: 1,
                last_ok: Some(100),
                errors: vec!["etc/x: hash mismatch".into()],
                ..ClassProgress::default()
            },
            ..Progress::default()
        };
        p.copy = Some("initial: done".into());
        p.direction = "pulling".into();
        let lines = p.clone().aged(130).lines();
        assert_eq!(
            lines,
            vec![
                "File sync (pulling) frequent: 2 set(s), last pass 3 file(s) / 4096 byte(s), \
                 1 deleted, lag 30 s, 1 error(s): etc/x: hash mismatch"
                    .to_string(),
                "Full copy initial: done".to_string(),
            ]
        );
    }
}
