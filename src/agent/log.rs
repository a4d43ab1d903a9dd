//! The agent's small logger.

use super::*;

/// A small logger: stderr and, unless `[log] file = false`,
/// `state_dir/hamon.log` (rotated at 1 MiB, one old file kept) for the Health
/// Monitor's log download. The level is shared with the web page.
///
/// Under systemd (stderr is the journal's stream) each line starts with its
/// syslog priority, `<3>` for an error, so `journalctl -p err` finds it, and
/// carries no tag of ours: the journal already names the unit and the PID.
#[derive(Debug, Clone)]
pub(super) struct Log {
    pub(super) published: Arc<Published>,
    pub(super) tag: String,
    pub(super) file: Option<Arc<Mutex<LogFile>>>,
    pub(super) journal: bool,
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
        if self.journal {
            eprintln!("{}", journal_line(sev, text));
        } else {
            eprintln!("{line}");
        }
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

/// A line for journald's stream: the syslog priority in angle brackets
/// (journald strips it and files the line at that priority), then the text.
fn journal_line(sev: &str, text: &str) -> String {
    let priority = match sev {
        "error" => 3,
        "warning" => 4,
        "info" => 6,
        _ => 7,
    };
    // One record per line: an embedded newline would start an untagged one.
    format!("<{priority}>{}", text.replace('\n', " "))
}

/// Whether stderr is connected to the journal: `JOURNAL_STREAM` names the
/// device and inode of the stream systemd gave us, and stderr is still it
/// (a child that inherited the variable but not the stream says no).
pub(super) fn stderr_is_journal() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some_and(|v| stderr_is(&v))
}

/// Whether stderr is the stream `JOURNAL_STREAM` names (`DEVICE:INODE`).
fn stderr_is(journal_stream: &std::ffi::OsStr) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = journal_stream.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.dev() == dev && m.ino() == ino)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_lines_carry_the_priority_and_no_tag() {
        assert_eq!(
            journal_line("error", "[duty_failed] x"),
            "<3>[duty_failed] x"
        );
        assert_eq!(journal_line("warning", "w"), "<4>w");
        assert_eq!(journal_line("info", "i"), "<6>i");
        assert_eq!(journal_line("trace", "t"), "<7>t");
        assert_eq!(journal_line("error", "a\nb"), "<3>a b");
    }

    #[test]
    fn journal_stream_must_match_stderr() {
        use std::os::unix::fs::MetadataExt;
        let real = std::fs::metadata("/proc/self/fd/2").expect("stderr");
        let named = format!("{}:{}", real.dev(), real.ino());
        assert!(stderr_is(std::ffi::OsStr::new(&named)));
        // Another stream, or a value that is not DEVICE:INODE, is not the journal.
        let other = format!("{}:{}", real.dev(), real.ino() + 1);
        assert!(!stderr_is(std::ffi::OsStr::new(&other)));
        assert!(!stderr_is(std::ffi::OsStr::new("journal")));
        assert!(!stderr_is(std::ffi::OsStr::new("1:x")));
    }
}
