//! Disk space watcher: how full are the file systems the appliance writes to?
//!
//! [`usage`] reads one file system with `statvfs(3)`; [`classify`] turns a
//! reading into a [`Level`]; [`DiskWatch`] checks a list of paths and reports
//! the paths whose level changed since the last check. Everything but
//! [`usage`] is pure, and `DiskWatch` takes its reader as a closure so that
//! tests can feed it made-up readings.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::ha::Level;

/// When a file system counts as filling up (`Warning`) or full (`Failed`).
///
/// A used-percent threshold is crossed when the used share is at or above it
/// (so a value above 100 never fires); a free-bytes threshold is crossed when
/// fewer bytes than it are available. 0 disables a free-bytes threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub warn_used_percent: u8,
    pub critical_used_percent: u8,
    pub warn_free_bytes: u64,
    pub critical_free_bytes: u64,
}

/// One reading of a file system.
///
/// (`PartialEq` but not `Eq`: `used_percent` is a float.)
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Size of the file system in bytes (`f_blocks * f_frsize`).
    pub total: u64,
    /// Bytes that non-root users can still write (`f_bavail * f_frsize`).
    pub available: u64,
    /// Used share as `df` computes it: used / (used + available) * 100, where
    /// used is `f_blocks - f_bfree`. Blocks reserved for root therefore count
    /// neither as used nor as available, and a file system whose
    /// non-reserved space is all taken reads 100.
    pub used_percent: f64,
}

impl Usage {
    /// Build a reading from `statvfs` numbers (block counts and fragment
    /// size). Pure, so the arithmetic is testable.
    pub fn from_blocks(frsize: u64, blocks: u64, bfree: u64, bavail: u64) -> Usage {
        let used = blocks.saturating_sub(bfree);
        let usable = used.saturating_add(bavail);
        let used_percent = if usable == 0 {
            0.0
        } else {
            used as f64 * 100.0 / usable as f64
        };
        Usage {
            total: blocks.saturating_mul(frsize),
            available: bavail.saturating_mul(frsize),
            used_percent,
        }
    }
}

/// Read the file system holding `path` with `statvfs(3)`.
pub fn usage(path: &Path) -> io::Result<Usage> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: statvfs is plain old data; all-zero bytes are a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a valid NUL-terminated string and `st` a valid,
    // writable statvfs; both outlive the call, which keeps neither pointer.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // The field types differ between C libraries and architectures; all are
    // unsigned and at most 64 bits wide.
    #[allow(clippy::useless_conversion)]
    let (frsize, blocks, bfree, bavail) = (
        u64::from(st.f_frsize),
        u64::from(st.f_blocks),
        u64::from(st.f_bfree),
        u64::from(st.f_bavail),
    );
    Ok(Usage::from_blocks(frsize, blocks, bfree, bavail))
}

/// The level of one reading: `Failed` when a critical threshold is crossed,
/// `Warning` when a warning threshold is, `Ok` otherwise.
pub fn classify(u: &Usage, t: &Thresholds) -> Level {
    let crossed = |percent: u8, free: u64| {
        u.used_percent >= f64::from(percent) || (free != 0 && u.available < free)
    };
    if crossed(t.critical_used_percent, t.critical_free_bytes) {
        Level::Failed
    } else if crossed(t.warn_used_percent, t.warn_free_bytes) {
        Level::Warning
    } else {
        Level::Ok
    }
}

/// A path whose level changed between two checks.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub path: PathBuf,
    pub from: Level,
    pub to: Level,
    /// For the operator, e.g. "/var/lib/hamon is 96.1% full (410 MiB free):
    /// critical", "... : back to normal", or "/data: cannot read: No such
    /// file or directory (os error 2)".
    pub text: String,
}

/// How a [`DiskWatch`] reads a path (`usage` unless a test says otherwise).
type Reader = Box<dyn FnMut(&Path) -> io::Result<Usage> + Send>;

/// What the last check found for one path.
#[derive(Debug, Clone)]
struct Watched {
    path: PathBuf,
    level: Level,
    usage: Option<Usage>,
}

/// Checks a list of paths against one set of thresholds and remembers each
/// path's level, so that only changes are reported.
pub struct DiskWatch {
    paths: Vec<Watched>,
    thresholds: Thresholds,
    reader: Reader,
}

impl fmt::Debug for DiskWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiskWatch")
            .field("paths", &self.paths)
            .field("thresholds", &self.thresholds)
            .finish_non_exhaustive()
    }
}

impl DiskWatch {
    /// Watch `paths` with `statvfs`. Every path starts at `Level::Unknown`.
    pub fn new(paths: Vec<PathBuf>, t: Thresholds) -> Self {
        Self::with_reader(paths, t, usage)
    }

    /// Watch `paths`, reading them with `reader` instead of [`usage`].
    pub fn with_reader(
        paths: Vec<PathBuf>,
        t: Thresholds,
        reader: impl FnMut(&Path) -> io::Result<Usage> + Send + 'static,
    ) -> Self {
        DiskWatch {
            paths: paths
                .into_iter()
                .map(|path| Watched {
                    path,
                    level: Level::Unknown,
                    usage: None,
                })
                .collect(),
            thresholds: t,
            reader: Box::new(reader),
        }
    }

    /// Check every path; returns the worst level and the per-path changes
    /// since the last check (a path that cannot be read is `Failed` with the
    /// error in the text).
    ///
    /// The first check reports every path, as a change from `Unknown`. A path
    /// whose level stays the same is not reported, even if its numbers or the
    /// reason for its level changed. With no paths the level is `Ok`.
    pub fn check(&mut self) -> (Level, Vec<Change>) {
        let mut changes = Vec::new();
        for w in &mut self.paths {
            let (level, reading, detail) = match (self.reader)(&w.path) {
                Ok(u) => {
                    let level = classify(&u, &self.thresholds);
                    let detail = format!(
                        "{} is {:.1}% full ({} free)",
                        w.path.display(),
                        u.used_percent,
                        format_bytes(u.available)
                    );
                    (level, Some(u), detail)
                }
                Err(e) => (
                    Level::Failed,
                    None,
                    format!("{}: cannot read: {e}", w.path.display()),
                ),
            };
            if level != w.level {
                let text = match (reading.is_some(), level, w.level) {
                    (false, _, _) => detail,
                    (true, Level::Failed, _) => format!("{detail}: critical"),
                    (true, Level::Warning, _) => format!("{detail}: warning"),
                    (true, Level::Ok, Level::Unknown) => format!("{detail}: ok"),
                    (true, _, _) => format!("{detail}: back to normal"),
                };
                changes.push(Change {
                    path: w.path.clone(),
                    from: w.level,
                    to: level,
                    text,
                });
            }
            w.level = level;
            w.usage = reading;
        }
        let worst = self.paths.iter().map(|w| w.level).fold(Level::Ok, worse);
        (worst, changes)
    }

    /// Every path with its level and reading from the last check (`Unknown`
    /// and `None` before the first one; `None` when the read failed).
    pub fn last(&self) -> Vec<(PathBuf, Level, Option<Usage>)> {
        self.paths
            .iter()
            .map(|w| (w.path.clone(), w.level, w.usage))
            .collect()
    }
}

/// The worse of two levels: Failed > Warning > Unknown > Ok.
fn worse(a: Level, b: Level) -> Level {
    fn rank(l: Level) -> u8 {
        match l {
            Level::Ok => 0,
            Level::Unknown => 1,
            Level::Warning => 2,
            Level::Failed => 3,
        }
    }
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

/// A byte count for people, in binary units: "512 B", "410 MiB", "1.2 GiB".
/// One decimal below 10 units, whole numbers above.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = n as f64;
    let mut unit = 0;
    // Move up while the number would print as 1024 or more.
    while unit + 1 < UNITS.len() && value >= 1023.5 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else if value < 9.95 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;

    fn t(warn: u8, crit: u8, warn_free: u64, crit_free: u64) -> Thresholds {
        Thresholds {
            warn_used_percent: warn,
            critical_used_percent: crit,
            warn_free_bytes: warn_free,
            critical_free_bytes: crit_free,
        }
    }

    fn u(used_percent: f64, available: u64) -> Usage {
        Usage {
            total: 100 * GIB,
            available,
            used_percent,
        }
    }

    #[test]
    fn classify_used_percent_boundaries() {
        let th = t(90, 95, 0, 0);
        assert_eq!(classify(&u(0.0, GIB), &th), Level::Ok);
        assert_eq!(classify(&u(89.99, GIB), &th), Level::Ok);
        assert_eq!(classify(&u(90.0, GIB), &th), Level::Warning);
        assert_eq!(classify(&u(94.99, GIB), &th), Level::Warning);
        assert_eq!(classify(&u(95.0, GIB), &th), Level::Failed);
        assert_eq!(classify(&u(100.0, 0), &th), Level::Failed);
    }

    #[test]
    fn classify_free_bytes_boundaries() {
        // Percentages out of the way (above 100 never fires).
        let th = t(101, 101, GIB, 100 * MIB);
        assert_eq!(classify(&u(50.0, GIB), &th), Level::Ok);
        assert_eq!(classify(&u(50.0, GIB - 1), &th), Level::Warning);
        assert_eq!(classify(&u(50.0, 100 * MIB), &th), Level::Warning);
        assert_eq!(classify(&u(50.0, 100 * MIB - 1), &th), Level::Failed);
        assert_eq!(classify(&u(50.0, 0), &th), Level::Failed);
    }

    #[test]
    fn classify_disabled_free_thresholds_and_either_crossing() {
        // 0 disables the free-bytes thresholds: even 0 bytes free is only
        // judged by the percentages.
        let th = t(90, 95, 0, 0);
        assert_eq!(classify(&u(10.0, 0), &th), Level::Ok);
        // Only the critical free-bytes threshold set.
        let th = t(90, 95, 0, MIB);
        assert_eq!(classify(&u(10.0, MIB), &th), Level::Ok);
        assert_eq!(classify(&u(10.0, MIB - 1), &th), Level::Failed);
        // Either criterion is enough; the worse one wins.
        let th = t(90, 95, GIB, MIB);
        assert_eq!(classify(&u(96.0, 2 * GIB), &th), Level::Failed);
        assert_eq!(classify(&u(10.0, MIB - 1), &th), Level::Failed);
        assert_eq!(classify(&u(91.0, 2 * GIB), &th), Level::Warning);
        assert_eq!(classify(&u(10.0, GIB - 1), &th), Level::Warning);
    }

    #[test]
    fn usage_from_blocks_follows_df() {
        // 1000 blocks of 4 KiB, 300 free of which 250 usable by non-root.
        let r = Usage::from_blocks(4096, 1000, 300, 250);
        assert_eq!(r.total, 4096 * 1000);
        assert_eq!(r.available, 4096 * 250);
        // used 700 / (700 + 250)
        assert!((r.used_percent - 700.0 * 100.0 / 950.0).abs() < 1e-9);
        // Only root-reserved blocks left: full for everyone else.
        assert_eq!(Usage::from_blocks(4096, 1000, 50, 0).used_percent, 100.0);
        // Pseudo file systems report no blocks at all.
        let empty = Usage::from_blocks(4096, 0, 0, 0);
        assert_eq!((empty.total, empty.available), (0, 0));
        assert_eq!(empty.used_percent, 0.0);
    }

    #[test]
    fn format_bytes_picks_units() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1.0 KiB");
        assert_eq!(format_bytes(410 * MIB), "410 MiB");
        assert_eq!(format_bytes(GIB + GIB / 5), "1.2 GiB");
        assert_eq!(format_bytes(12 * GIB), "12 GiB");
        assert_eq!(format_bytes(1024 * MIB - 1), "1.0 GiB");
        assert_eq!(format_bytes(u64::MAX), "16 EiB");
    }

    /// A reader whose answers the test sets per path.
    type Fake = Arc<Mutex<HashMap<PathBuf, Result<Usage, i32>>>>;

    fn fake_watch(paths: &[&str], th: Thresholds) -> (DiskWatch, Fake) {
        let fake: Fake = Arc::default();
        let source = Arc::clone(&fake);
        let w = DiskWatch::with_reader(
            paths.iter().map(PathBuf::from).collect(),
            th,
            move |p: &Path| match source.lock().unwrap().get(p) {
                Some(Ok(u)) => Ok(*u),
                Some(Err(errno)) => Err(io::Error::from_raw_os_error(*errno)),
                None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
            },
        );
        (w, fake)
    }

    fn set(fake: &Fake, path: &str, r: Result<Usage, i32>) {
        fake.lock().unwrap().insert(PathBuf::from(path), r);
    }

    #[test]
    fn disk_watch_reports_crossings_and_recovery() {
        let th = t(90, 95, 0, 0);
        let (mut w, fake) = fake_watch(&["/var/lib/hamon", "/var/log"], th);
        assert!(w
            .last()
            .iter()
            .all(|(_, l, u)| *l == Level::Unknown && u.is_none()));

        set(&fake, "/var/lib/hamon", Ok(u(42.0, 12 * GIB)));
        set(&fake, "/var/log", Ok(u(10.0, 50 * GIB)));
        let (level, changes) = w.check();
        assert_eq!(level, Level::Ok);
        // The first check reports the initial levels.
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].from, Level::Unknown);
        assert_eq!(changes[0].to, Level::Ok);
        assert_eq!(
            changes[0].text,
            "/var/lib/hamon is 42.0% full (12 GiB free): ok"
        );

        // Nothing changed: nothing reported.
        assert_eq!(w.check(), (Level::Ok, vec![]));

        set(&fake, "/var/lib/hamon", Ok(u(91.24, 2 * GIB + GIB / 10)));
        let (level, changes) = w.check();
        assert_eq!(level, Level::Warning);
        assert_eq!(
            changes,
            vec![Change {
                path: "/var/lib/hamon".into(),
                from: Level::Ok,
                to: Level::Warning,
                text: "/var/lib/hamon is 91.2% full (2.1 GiB free): warning".into(),
            }]
        );

        // Fuller, same level: no change, but `last` has the new numbers.
        set(&fake, "/var/lib/hamon", Ok(u(93.0, GIB)));
        assert_eq!(w.check(), (Level::Warning, vec![]));
        assert_eq!(w.last()[0].2, Some(u(93.0, GIB)));

        set(&fake, "/var/lib/hamon", Ok(u(96.1, 410 * MIB)));
        let (level, changes) = w.check();
        assert_eq!(level, Level::Failed);
        assert_eq!(changes.len(), 1);
        assert_eq!(
            (changes[0].from, changes[0].to),
            (Level::Warning, Level::Failed)
        );
        assert_eq!(
            changes[0].text,
            "/var/lib/hamon is 96.1% full (410 MiB free): critical"
        );

        set(&fake, "/var/lib/hamon", Ok(u(40.0, 12 * GIB)));
        let (level, changes) = w.check();
        assert_eq!(level, Level::Ok);
        assert_eq!(changes.len(), 1);
        assert_eq!((changes[0].from, changes[0].to), (Level::Failed, Level::Ok));
        assert_eq!(
            changes[0].text,
            "/var/lib/hamon is 40.0% full (12 GiB free): back to normal"
        );
        assert_eq!(
            w.last(),
            vec![
                ("/var/lib/hamon".into(), Level::Ok, Some(u(40.0, 12 * GIB))),
                ("/var/log".into(), Level::Ok, Some(u(10.0, 50 * GIB))),
            ]
        );
    }

    #[test]
    fn disk_watch_unreadable_path_is_failed_with_the_error() {
        let (mut w, fake) = fake_watch(&["/srv/data", "/"], t(90, 95, 0, 0));
        set(&fake, "/", Ok(u(91.0, 9 * GIB)));
        let (level, changes) = w.check();
        // The worst level wins.
        assert_eq!(level, Level::Failed);
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].path, PathBuf::from("/srv/data"));
        assert_eq!(changes[0].to, Level::Failed);
        assert!(
            changes[0]
                .text
                .starts_with("/srv/data: cannot read: No such file or directory"),
            "{}",
            changes[0].text
        );
        assert_eq!(changes[1].to, Level::Warning);
        assert_eq!(w.last()[0], ("/srv/data".into(), Level::Failed, None));

        set(&fake, "/srv/data", Ok(u(5.0, 90 * GIB)));
        let (level, changes) = w.check();
        assert_eq!(level, Level::Warning);
        assert_eq!(changes.len(), 1);
        assert_eq!(
            changes[0].text,
            "/srv/data is 5.0% full (90 GiB free): back to normal"
        );

        set(&fake, "/srv/data", Err(libc::EIO));
        let (_, changes) = w.check();
        assert!(
            changes[0].text.contains("Input/output error"),
            "{changes:?}"
        );
    }

    #[test]
    fn disk_watch_without_paths_is_ok() {
        let (mut w, _) = fake_watch(&[], t(90, 95, 0, 0));
        assert_eq!(w.check(), (Level::Ok, vec![]));
        assert!(w.last().is_empty());
        assert!(format!("{w:?}").contains("DiskWatch"));
    }

    #[test]
    fn worse_orders_levels() {
        use Level::*;
        assert_eq!(worse(Ok, Unknown), Unknown);
        assert_eq!(worse(Warning, Unknown), Warning);
        assert_eq!(worse(Failed, Warning), Failed);
        assert_eq!(worse(Ok, Ok), Ok);
    }

    #[test]
    fn real_statvfs_on_root() {
        let r = usage(Path::new("/")).unwrap();
        assert!(r.total > 0, "{r:?}");
        assert!(r.available <= r.total, "{r:?}");
        assert!((0.0..=100.0).contains(&r.used_percent), "{r:?}");

        let err = usage(Path::new("/no/such/path/for/hamon")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
        let err = usage(Path::new("/bad\0path")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

        // The real reader behind DiskWatch::new.
        let mut w = DiskWatch::new(vec!["/".into()], t(101, 101, 0, 0));
        let (level, changes) = w.check();
        assert_eq!(level, Level::Ok);
        assert!(changes[0].text.starts_with("/ is "), "{changes:?}");
    }
}
