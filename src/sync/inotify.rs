//! Change hints: inotify on every directory of every sync set. While this
//! server is active, a change makes it tell the standby (after `hint_delay`,
//! so a burst of writes becomes one pull). Hints only make the standby pull
//! sooner; its timed pass is the safety net, so an inotify queue overflow
//! just re-watches everything and hints every class.

use crate::config::SyncClass;
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MASK: u32 = libc::IN_CLOSE_WRITE
    | libc::IN_MOVED_TO
    | libc::IN_MOVED_FROM
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF
    | libc::IN_ONLYDIR;

/// Watches the directories of the sync sets.
#[derive(Debug)]
pub struct Watcher {
    fd: libc::c_int,
    roots: Vec<(PathBuf, SyncClass)>,
    /// Watch descriptor -> (directory, class).
    dirs: HashMap<libc::c_int, (PathBuf, SyncClass)>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // SAFETY: `fd` is the inotify descriptor this watcher opened and owns.
        unsafe { libc::close(self.fd) };
    }
}

impl Watcher {
    pub fn new(roots: Vec<(PathBuf, SyncClass)>) -> io::Result<Watcher> {
        // SAFETY: plain syscall without pointers.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut w = Watcher {
            fd,
            roots,
            dirs: HashMap::new(),
        };
        w.watch_all();
        Ok(w)
    }

    /// (Re-)watch every directory under every root.
    fn watch_all(&mut self) {
        for (root, class) in self.roots.clone() {
            self.watch_tree(&root, class);
        }
    }

    fn watch_tree(&mut self, dir: &Path, class: SyncClass) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            if self.add(&d, class).is_err() {
                continue; // gone meanwhile, or not a directory
            }
            if let Ok(entries) = std::fs::read_dir(&d) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                }
            }
        }
    }

    fn add(&mut self, dir: &Path, class: SyncClass) -> io::Result<()> {
        let c = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        let wd =
            unsafe { libc::inotify_add_watch(self.fd, c.as_ptr(), MASK | libc::IN_DONT_FOLLOW) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        self.dirs.insert(wd, (dir.to_path_buf(), class));
        Ok(())
    }

    /// Wait up to `timeout` for changes; the classes that changed.
    pub fn wait(&mut self, timeout: Duration) -> HashSet<SyncClass> {
        let mut changed = HashSet::new();
        let mut pfd = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, count 1.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n <= 0 {
            return changed;
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
            let got = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if got <= 0 {
                break;
            }
            self.parse(&buf[..got as usize], &mut changed);
        }
        changed
    }

    fn parse(&mut self, mut bytes: &[u8], changed: &mut HashSet<SyncClass>) {
        const HEAD: usize = std::mem::size_of::<libc::inotify_event>();
        while bytes.len() >= HEAD {
            let field = |at: usize| {
                let mut b = [0u8; 4];
                b.copy_from_slice(&bytes[at..at + 4]);
                b
            };
            // struct inotify_event { int wd; u32 mask; u32 cookie; u32 len; char name[]; }
            let wd = i32::from_ne_bytes(field(0));
            let mask = u32::from_ne_bytes(field(4));
            let len = u32::from_ne_bytes(field(12)) as usize;
            let Some(name) = bytes.get(HEAD..HEAD + len) else {
                break;
            };
            let name = name.split(|b| *b == 0).next().unwrap_or_default().to_vec();
            bytes = &bytes[(HEAD + len).min(bytes.len())..];
            if mask & libc::IN_Q_OVERFLOW != 0 {
                // Events were lost: re-watch everything and hint every class.
                self.watch_all();
                changed.extend(self.roots.iter().map(|(_, c)| *c));
                continue;
            }
            if mask & libc::IN_IGNORED != 0 {
                self.dirs.remove(&wd);
                continue;
            }
            let Some((dir, class)) = self.dirs.get(&wd).cloned() else {
                continue;
            };
            changed.insert(class);
            if mask & libc::IN_ISDIR != 0 && mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
                let sub = dir.join(std::ffi::OsStr::from_bytes(&name));
                self.watch_tree(&sub, class);
            }
        }
    }
}

/// Collects changes and says when to send them: `hint_delay` after the first.
#[derive(Debug, Default)]
pub struct Debounce {
    pending: HashSet<SyncClass>,
    since: Option<Instant>,
}

impl Debounce {
    pub fn add(&mut self, classes: HashSet<SyncClass>, now: Instant) {
        if classes.is_empty() {
            return;
        }
        self.since.get_or_insert(now);
        self.pending.extend(classes);
    }

    /// The classes to hint now, if `delay` has passed since the first change.
    pub fn due(&mut self, now: Instant, delay: Duration) -> Vec<SyncClass> {
        match self.since {
            Some(t) if now.duration_since(t) >= delay => {
                self.since = None;
                let mut out: Vec<SyncClass> = self.pending.drain().collect();
                out.sort_by_key(|c| c.label());
                out
            }
            _ => Vec::new(),
        }
    }

    /// How long until something is due (`None`: nothing pending).
    pub fn next(&self, now: Instant, delay: Duration) -> Option<Duration> {
        self.since
            .map(|t| (t + delay).saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hamon-inotify-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn changes_within(w: &mut Watcher, limit: Duration) -> HashSet<SyncClass> {
        let end = Instant::now() + limit;
        let mut all = HashSet::new();
        while Instant::now() < end {
            all.extend(w.wait(Duration::from_millis(50)));
            if !all.is_empty() {
                break;
            }
        }
        all
    }

    #[test]
    fn changes_in_new_subdirectories_are_seen_with_their_class() {
        let (a, b) = (tmp("a"), tmp("b"));
        let mut w = Watcher::new(vec![
            (a.clone(), SyncClass::Frequent),
            (b.clone(), SyncClass::Batch),
        ])
        .unwrap();
        std::fs::write(a.join("f"), b"1").unwrap();
        let got = changes_within(&mut w, Duration::from_secs(2));
        assert_eq!(got, HashSet::from([SyncClass::Frequent]));
        // A directory made after the start is watched too.
        std::fs::create_dir(b.join("sub")).unwrap();
        let _ = changes_within(&mut w, Duration::from_secs(2));
        std::fs::write(b.join("sub").join("g"), b"2").unwrap();
        let got = changes_within(&mut w, Duration::from_secs(2));
        assert_eq!(got, HashSet::from([SyncClass::Batch]));
        // Nothing happens: nothing reported.
        assert!(w.wait(Duration::from_millis(100)).is_empty());
        std::fs::remove_dir_all(&a).unwrap();
        std::fs::remove_dir_all(&b).unwrap();
    }

    #[test]
    fn a_burst_of_changes_becomes_one_hint_after_the_delay() {
        let t0 = Instant::now();
        let delay = Duration::from_millis(200);
        let mut d = Debounce::default();
        assert!(d.next(t0, delay).is_none());
        d.add(HashSet::from([SyncClass::Frequent]), t0);
        d.add(
            HashSet::from([SyncClass::Batch]),
            t0 + Duration::from_millis(50),
        );
        assert!(d.due(t0 + Duration::from_millis(100), delay).is_empty());
        assert_eq!(
            d.next(t0 + Duration::from_millis(100), delay),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            d.due(t0 + delay, delay),
            vec![SyncClass::Batch, SyncClass::Frequent]
        );
        assert!(d.due(t0 + delay * 3, delay).is_empty());
    }
}
