//! File synchronisation between the two servers of a pair: the standby pulls from the active.
//!
//! The active serves, for each configured *set* (a root directory plus include/exclude globs),
//! a [`Manifest`] of what it holds ([`scan`]); the standby decodes it ([`manifest::decode`],
//! which refuses anything hostile), scans its own copy, [`diff`]s the two and applies the
//! [`Plan`] ([`apply`]): every file is written to a temp file in its target directory, checked
//! against the manifest's size and SHA-256, and renamed over the target, so a crash leaves
//! either the old or the new file, never a mix. [`pull::Puller`] runs one such pass over a
//! [`pull::Source`], the transport (HTTP in the agent, [`pull::LocalSource`] in tests).
//!
//! Globs match the path relative to the root, `/`-separated, with `*` stopping at `/` and
//! `**` spanning directories (`**/*.conf`). An entry is excluded when it or one of its
//! ancestors matches an exclude pattern; with includes given, a non-directory is selected when
//! it or an ancestor matches one (`include = ["conf"]` takes the whole `conf` tree), and a
//! directory is kept when it is selected or holds something selected.
//!
//! Every write stays inside the root: paths are walked from an open root directory with
//! `openat(O_NOFOLLOW)`, so a symlink anywhere in the parent chain is refused, never followed.
//!
//! Temp files are named `.<name>.hamon-tmp.<pid>.<random>`. The scanner never lists such
//! names (nor can a manifest carry one); the puller removes those older than
//! [`pull::Puller::stale_temp_age`] (default one minute) on every pass, leftovers of a killed
//! writer.

pub mod apply;
pub mod delta;
pub mod diff;
pub mod direction;
mod fsat;
pub mod http;
pub mod inotify;
pub mod manifest;
pub mod progress;
pub mod pull;
pub mod scan;
pub mod service;

use std::io;
use std::path::PathBuf;

use glob::{MatchOptions, Pattern};

pub use apply::{open_served, owner_settable, write_file};
pub use diff::{diff, Plan};
pub use manifest::{decode, encode, Entry, Kind, Manifest, ManifestError};
pub use pull::{LocalSource, PassStats, Puller, Source};
pub use scan::{ScanStats, Scanner};

/// The marker in temp-file names; see the module documentation.
pub(crate) const TEMP_MARKER: &str = ".hamon-tmp.";

/// One synchronised set: a root directory and the globs selecting what under it is synced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    /// Name both servers know the set by.
    pub name: String,
    /// The directory synchronised (itself not listed, nor its own metadata synced).
    pub root: PathBuf,
    /// Globs of what is synced; empty means everything.
    pub include: Vec<String>,
    /// Globs of what is never synced (nor deleted), checked before `include`.
    pub exclude: Vec<String>,
    /// Keep setuid/setgid bits on files; else they are cleared on receipt.
    pub keep_setid: bool,
}

/// Bounds on what a manifest, and a file in it, may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most entries in one set.
    pub max_entries: usize,
    /// Largest encoded manifest accepted.
    pub max_manifest_bytes: usize,
    /// Largest file synced; bigger ones are skipped by the scanner and refused in manifests.
    pub max_file_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_entries: 100_000,
            max_manifest_bytes: 64 << 20,
            max_file_bytes: 16 << 30,
        }
    }
}

/// Something under a set's root that is not synchronised, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Relative to the root (lossy UTF-8 when the name is not UTF-8).
    pub path: String,
    pub reason: String,
}

/// What can go wrong while scanning, serving or applying.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{}: {op}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("set {set:?}: root {} is missing or not a directory", .root.display())]
    RootMissing { set: String, root: PathBuf },
    #[error("set {set:?}: bad glob {pattern:?}: {message}")]
    Pattern {
        set: String,
        pattern: String,
        message: String,
    },
    #[error("set {set:?}: more than {max} entries")]
    TooManyEntries { set: String, max: usize },
    #[error("refused manifest: {0}")]
    Manifest(#[from] ManifestError),
    #[error("got the manifest of set {got:?}, asked for {want:?}")]
    WrongSet { want: String, got: String },
    #[error("{path:?}: refused: {reason}")]
    Refused { path: String, reason: String },
    #[error("{path:?}: received {got} bytes, the manifest says {want}")]
    Size { path: String, got: u64, want: u64 },
    #[error("{path:?}: received content has SHA-256 {got}, the manifest says {want}")]
    Hash {
        path: String,
        got: String,
        want: String,
    },
    #[error("source: {0}")]
    Source(String),
}

impl SyncError {
    pub(crate) fn io(op: &'static str, path: PathBuf, source: io::Error) -> SyncError {
        SyncError::Io { op, path, source }
    }

    pub(crate) fn refused(path: &str, reason: impl Into<String>) -> SyncError {
        SyncError::Refused {
            path: path.to_string(),
            reason: reason.into(),
        }
    }
}

/// A [`SetSpec`]'s globs, compiled.
#[derive(Debug)]
pub(crate) struct Selector {
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
}

const MATCH: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

impl Selector {
    pub(crate) fn new(spec: &SetSpec) -> Result<Selector, SyncError> {
        let compile = |globs: &[String]| {
            globs
                .iter()
                .map(|g| {
                    Pattern::new(g).map_err(|e| SyncError::Pattern {
                        set: spec.name.clone(),
                        pattern: g.clone(),
                        message: e.msg.to_string(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Selector {
            include: compile(&spec.include)?,
            exclude: compile(&spec.exclude)?,
        })
    }

    /// Whether `rel` or one of its ancestors matches one of `patterns`.
    fn any_prefix(patterns: &[Pattern], rel: &str) -> bool {
        rel.match_indices('/')
            .map(|(i, _)| &rel[..i])
            .chain(std::iter::once(rel))
            .any(|p| patterns.iter().any(|pat| pat.matches_with(p, MATCH)))
    }

    /// `rel` is excluded (it or an ancestor matches an exclude glob).
    pub(crate) fn excluded(&self, rel: &str) -> bool {
        Selector::any_prefix(&self.exclude, rel)
    }

    /// `rel` is selected: not excluded, and included (it or an ancestor) when includes exist.
    pub(crate) fn selects(&self, rel: &str) -> bool {
        !self.excluded(rel) && (self.include.is_empty() || Selector::any_prefix(&self.include, rel))
    }

    /// Keeps the entries selected, and the directories above them. Returns the kept and the
    /// dropped entries, each in the order given.
    pub(crate) fn filter(&self, entries: Vec<Entry>) -> (Vec<Entry>, Vec<Entry>) {
        let mut above = std::collections::HashSet::new();
        for e in &entries {
            if self.selects(&e.path) {
                let mut p = e.path.as_str();
                while let Some(i) = p.rfind('/') {
                    p = &p[..i];
                    if !above.insert(p.to_string()) {
                        break;
                    }
                }
            }
        }
        entries.into_iter().partition(|e| {
            self.selects(&e.path) || (e.kind == Kind::Dir && above.contains(&e.path))
        })
    }
}

/// Whether a file name is one of our temp files.
pub(crate) fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(TEMP_MARKER)
}

/// Longest relative path accepted (`PATH_MAX` less the NUL).
pub(crate) const PATH_MAX: usize = 4095;
/// Longest path component accepted (`NAME_MAX`).
pub(crate) const NAME_MAX: usize = 255;

/// Checks a relative, `/`-separated path of a set; the error says why it is refused.
pub(crate) fn check_rel(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    if path.len() > PATH_MAX {
        return Err("path too long");
    }
    if path.contains('\0') {
        return Err("path contains NUL");
    }
    if path.contains('\\') {
        return Err("path contains a backslash");
    }
    if path.starts_with('/') {
        return Err("absolute path");
    }
    for c in path.split('/') {
        match c {
            "" => return Err("empty path component"),
            "." => return Err("'.' path component"),
            ".." => return Err("'..' path component"),
            c if c.len() > NAME_MAX => return Err("path component too long"),
            c if is_temp_name(c) => return Err("reserved temp-file name"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks the target of a symlink at `link` (a path that passed [`check_rel`]): relative,
/// normalised (every `..` before the first name) and, resolved from the link's directory,
/// inside the root. Normalised targets keep even chains of symlinks inside the root, because
/// every `..` then starts from a real directory whose depth the check knows.
pub(crate) fn check_target(link: &str, target: &str) -> Result<(), &'static str> {
    if target.is_empty() {
        return Err("is empty");
    }
    if target.len() > PATH_MAX {
        return Err("is too long");
    }
    if target.contains('\0') {
        return Err("contains NUL");
    }
    if target.starts_with('/') {
        return Err("is absolute");
    }
    let mut depth = link.matches('/').count();
    let mut seen_name = false;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." if seen_name => return Err("is not normalised ('..' after a name)"),
            ".." if depth == 0 => return Err("leads outside the set"),
            ".." => depth -= 1,
            c if c.len() > NAME_MAX => return Err("has a component too long"),
            _ => seen_name = true,
        }
    }
    Ok(())
}

/// A process-unique temp-file name for `name`, within `NAME_MAX`.
pub(crate) fn temp_name(name: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded randomly per process; mixing a counter in gives a fresh value
    // per call. O_EXCL on creation catches the (harmless) collisions anyway.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let suffix = format!("{TEMP_MARKER}{}.{:016x}", std::process::id(), h.finish());
    let mut keep = name.len().min(NAME_MAX - 1 - suffix.len());
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!(".{}{suffix}", &name[..keep])
}

/// Bytes that look like data, from a seed (a xorshift stream): CDC needs variety to cut.
#[cfg(test)]
pub(crate) fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod testutil {
    use std::path::{Path, PathBuf};

    /// A fresh, empty directory under the system temp dir, removed on drop.
    #[derive(Debug)]
    pub struct TempDir(pub PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let p =
                std::env::temp_dir().join(format!("hamon-sync-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).expect("create temp dir");
            TempDir(p)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(include: &[&str], exclude: &[&str]) -> SetSpec {
        SetSpec {
            name: "s".into(),
            root: PathBuf::from("/nonexistent"),
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            keep_setid: false,
        }
    }

    #[test]
    fn globs_select_paths() {
        let s = Selector::new(&spec(&[], &[])).unwrap();
        assert!(s.selects("a") && s.selects("a/b/c"));

        let s = Selector::new(&spec(&["**/*.conf", "keys"], &["**/tmp", "*.bak"])).unwrap();
        assert!(s.selects("x.conf"));
        assert!(s.selects("a/b/x.conf"));
        assert!(!s.selects("a/b/x.txt"));
        assert!(
            s.selects("keys/a/b"),
            "an included directory takes its subtree"
        );
        assert!(
            !s.selects("a/tmp/x.conf"),
            "an excluded directory drops its subtree"
        );
        assert!(s.selects("keys/x.bak"), "'*.bak' excludes at the top only");
        assert!(!s.selects("keys.bak"));
        let s = Selector::new(&spec(&["*.conf"], &[])).unwrap();
        assert!(s.selects("x.conf"));
        assert!(!s.selects("a/x.conf"), "'*' stops at '/'");
        let s = Selector::new(&spec(&["etc/**"], &[])).unwrap();
        assert!(s.selects("etc/a") && s.selects("etc/a/b/c"));
        assert!(!s.selects("var/a"));
    }

    #[test]
    fn bad_glob_is_an_error() {
        let err = Selector::new(&spec(&["a**"], &[])).unwrap_err();
        assert!(err.to_string().contains("a**"), "{err}");
    }

    #[test]
    fn filter_keeps_parents_of_selected() {
        let s = Selector::new(&spec(&["a/b/*.conf", "d/e"], &[])).unwrap();
        let e = |p: &str, kind: Kind| Entry {
            path: p.into(),
            kind,
            size: 0,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime_s: 0,
            mtime_ns: 0,
            hash: None,
        };
        let entries = vec![
            e("a", Kind::Dir),
            e("a/b", Kind::Dir),
            e("a/b/x.conf", Kind::File),
            e("a/b/y", Kind::File),
            e("c", Kind::Dir),
            e("d", Kind::Dir),
            e("d/e", Kind::Dir),
        ];
        let (kept, dropped) = s.filter(entries);
        let kept: Vec<_> = kept.iter().map(|e| e.path.as_str()).collect();
        let dropped: Vec<_> = dropped.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(kept, ["a", "a/b", "a/b/x.conf", "d", "d/e"]);
        assert_eq!(dropped, ["a/b/y", "c"]);
    }

    #[test]
    fn rel_paths_checked() {
        assert_eq!(check_rel("a/b.c"), Ok(()));
        assert_eq!(check_rel("..a/b.."), Ok(()));
        for bad in [
            "",
            "/a",
            "a//b",
            "a/",
            "./a",
            "a/./b",
            "a/../b",
            "..",
            "a\\b",
            "a\0b",
            ".x.hamon-tmp.1.2",
        ] {
            assert!(check_rel(bad).is_err(), "{bad:?}");
        }
        assert!(check_rel(&"a".repeat(256)).is_err());
        assert!(check_rel(&"a/".repeat(2100)).is_err());
    }

    #[test]
    fn symlink_targets_checked() {
        assert_eq!(check_target("l", "x"), Ok(()));
        assert_eq!(check_target("a/l", ".."), Ok(()));
        assert_eq!(check_target("a/b/l", "../../c/d"), Ok(()));
        assert_eq!(check_target("a/l", "./x//y/"), Ok(()));
        assert_eq!(check_target("l", "../x"), Err("leads outside the set"));
        assert_eq!(check_target("a/l", "../../x"), Err("leads outside the set"));
        assert_eq!(check_target("l", "/etc"), Err("is absolute"));
        assert_eq!(check_target("l", ""), Err("is empty"));
        assert!(check_target("l", "x/../..").is_err());
        assert!(check_target("a/b/l", "x/../y").is_err(), "not normalised");
    }

    #[test]
    fn temp_names_are_recognised_and_bounded() {
        let t = temp_name("file.txt");
        assert!(t.starts_with(".file.txt.hamon-tmp."), "{t}");
        assert!(is_temp_name(&t));
        assert_ne!(t, temp_name("file.txt"));
        let long = "é".repeat(127);
        let t = temp_name(&long);
        assert!(t.len() <= NAME_MAX && is_temp_name(&t), "{}", t.len());
        assert!(!is_temp_name("file.txt"));
    }
}
