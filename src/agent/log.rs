//! The agent's small logger.

use super::*;

/// A small logger: stderr (journald picks it up under systemd) and
/// `state_dir/hamon.log` (rotated at 1 MiB, one old file kept), for the Health
/// Monitor's log download. The level is shared with the web page.
#[derive(Debug, Clone)]
pub(super) struct Log {
    pub(super) published: Arc<Published>,
    pub(super) tag: String,
    pub(super) file: Option<Arc<Mutex<LogFile>>>,
}

#[derive(Debug)]
pub(super) struct LogFile {
    pub(super) path: std::path::PathBuf,
    pub(super) file: Option<std::fs::File>,
}

pub(super) const LOG_ROTATE_BYTES: u64 = 1024 * 1024;

impl LogFile {
    fn append(&mut self, line: &str) {
        use std::io::Write;
        if self
            .file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .is_some_and(|m| m.len() > LOG_ROTATE_BYTES)
        {
            self.file = None;
            let _ = std::fs::rename(&self.path, self.path.with_extension("log.1"));
        }
        if self.file.is_none() {
            use std::os::unix::fs::OpenOptionsExt;
            self.file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.path)
                .ok();
        }
        if let Some(f) = self.file.as_mut() {
            let _ = writeln!(f, "{line}");
        }
    }
}

impl Log {
    /// 0 error, 1 info, 2 trace (the index into `app::LEVELS`).
    pub(super) fn level(&self) -> u8 {
        self.published.log_level.load(Ordering::Relaxed)
    }

    fn emit(&self, sev: &str, text: &str) {
        let line = format!("{}: {sev}: {text}", self.tag);
        eprintln!("{line}");
        if let Some(f) = &self.file {
            if let Ok(mut f) = f.lock() {
                let t = peer_client::unix_ms();
                f.append(&format!("{}.{:03} {line}", t / 1000, t % 1000));
            }
        }
    }

    pub(super) fn write(&self, severity: Severity, text: &str) {
        let (show, sev) = match severity {
            Severity::Error => (true, "error"),
            Severity::Warning => (self.level() >= 1, "warning"),
            Severity::Info => (self.level() >= 1, "info"),
        };
        if show {
            self.emit(sev, text);
        }
    }

    pub(super) fn trace(&self, text: &str) {
        if self.level() >= 2 {
            self.emit("trace", text);
        }
    }
}

pub(super) fn level_index(l: LogLevel) -> u8 {
    match l {
        LogLevel::Error => 0,
        LogLevel::Info => 1,
        LogLevel::Trace => 2,
    }
}

/// The level saved from the Health Monitor page, else the configured one.
pub(super) fn initial_level(store: &Store, configured: LogLevel) -> u8 {
    let saved = std::fs::read_to_string(store.dir().join("log-level")).ok();
    saved
        .and_then(|s| LEVELS.iter().position(|l| *l == s.trim()))
        .map(|i| i as u8)
        .unwrap_or(level_index(configured))
}
