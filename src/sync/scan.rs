//! Scanning a set into a [`Manifest`], hashing only what changed since the last scan.
//!
//! The walk never follows a symlink (`lstat`), and the files it hashes, after the walk and on
//! several threads, are opened from the set's root with no symlink on the way (`openat2`).
//! Device files, fifos, sockets, symlinks leading outside the set, non-UTF-8 names and files
//! over the size limit are skipped and reported;
//! temp files of ours are neither listed nor reported, only remembered for the puller to clean.
//! An I/O error other than an entry vanishing fails the scan: a partial manifest would make the
//! standby delete what could not be read.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use super::apply::{hex, Hasher, BUF_SIZE};
use super::delta::{self, BlockList};
use super::fsat;
use super::manifest::{by_leaves, Entry, Kind, Manifest, VERSION};
use super::{check_rel, check_target, is_temp_name, Limits, Selector, SetSpec, Skipped, SyncError};

/// Deepest directory nesting walked.
const MAX_DEPTH: usize = 256;

/// Counters over a [`Scanner`]'s life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Files read to hash them.
    pub files_hashed: u64,
    /// Bytes read to hash files.
    pub bytes_hashed: u64,
    /// Files whose hash came from the cache.
    pub cache_hits: u64,
}

/// What identifies an unchanged file: same inode, size, mtime and ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileKey {
    fn of(m: &Metadata) -> FileKey {
        FileKey {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// What the scanner knows of an unchanged file: its content hash and, for a file of at
/// least [`delta::DELTA_MIN`] bytes, its block list when known (see [`hash_file`]).
#[derive(Debug, Clone)]
struct Cached {
    key: FileKey,
    /// The content hash of manifest version 2 ([`by_leaves`]), once made.
    leaves: Option<String>,
    /// The SHA-256 of version 1, once a version-1 peer asked for it: both are kept, so
    /// that manifests of the two versions asked in turn do not read the set each time.
    sha: Option<String>,
    blocks: Option<Arc<BlockList>>,
}

/// One of our temp files found by the last scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TempFile {
    pub rel: String,
    pub mtime: SystemTime,
}

/// Scans sets, keeping the hash of every file seen keyed by path, device, inode, size, mtime
/// and ctime, so a re-scan reads only files that changed.
#[derive(Debug, Default)]
pub struct Scanner {
    cache: HashMap<PathBuf, Cached>,
    stats: ScanStats,
    temps: Vec<TempFile>,
}

/// The state of one scan.
struct Walk<'a> {
    /// The manifest version scanned for.
    version: u32,
    sel: &'a Selector,
    limits: &'a Limits,
    set: &'a str,
    entries: Vec<Entry>,
    files: usize,
    skipped: Vec<Skipped>,
    seen: HashSet<PathBuf>,
    /// Files the cache cannot vouch for: hashed once the walk is done.
    pending: Vec<Pending>,
}

/// A file to hash: its path, absolute and within the set.
struct Pending {
    abs: PathBuf,
    rel: String,
}

/// What reading one file found.
enum Hashed {
    /// Gone, or no longer a regular file.
    Vanished,
    /// Unchanged after all (the open file's times matched the cache).
    Cached { meta: Metadata, hash: String },
    /// Read now: its hash, and what to cache (`None`: it changed while read).
    Read {
        meta: Metadata,
        hash: String,
        cache: Option<Cached>,
    },
}

impl Cached {
    fn new(key: FileKey, hash: String, by_leaves: bool, blocks: Option<Arc<BlockList>>) -> Cached {
        let (leaves, sha) = if by_leaves {
            (Some(hash), None)
        } else {
            (None, Some(hash))
        };
        Cached {
            key,
            leaves,
            sha,
            blocks: blocks.filter(|_| by_leaves),
        }
    }

    /// The hash as manifests of `by_leaves`'s kind name the file, if known and the file
    /// is still the one cached (`key`).
    fn vouches(&self, key: FileKey, by_leaves: bool) -> Option<&String> {
        let hash = if by_leaves { &self.leaves } else { &self.sha };
        hash.as_ref().filter(|_| self.key == key)
    }
}

impl Scanner {
    pub fn new() -> Scanner {
        Scanner::default()
    }

    /// Counters since this scanner was made.
    pub fn stats(&self) -> ScanStats {
        self.stats
    }

    /// Temp files of ours the last scan came across.
    pub(crate) fn temps(&self) -> &[TempFile] {
        &self.temps
    }

    /// The manifest of `spec` as it is on this machine, sorted by path, and what was skipped.
    pub fn scan(
        &mut self,
        spec: &SetSpec,
        limits: &Limits,
    ) -> Result<(Manifest, Vec<Skipped>), SyncError> {
        self.scan_as(spec, limits, VERSION)
    }

    /// As [`Scanner::scan`], for a peer that reads manifest `version` (its files hashed
    /// that version's way, see [`by_leaves`]).
    pub fn scan_as(
        &mut self,
        spec: &SetSpec,
        limits: &Limits,
        version: u32,
    ) -> Result<(Manifest, Vec<Skipped>), SyncError> {
        let sel = Selector::new(spec)?;
        match fs::metadata(&spec.root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(root_missing(spec)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(root_missing(spec)),
            Err(e) => return Err(SyncError::io("stat", spec.root.clone(), e)),
        }
        self.temps.clear();
        let mut w = Walk {
            version,
            sel: &sel,
            limits,
            set: &spec.name,
            entries: Vec::new(),
            files: 0,
            skipped: Vec::new(),
            seen: HashSet::new(),
            pending: Vec::new(),
        };
        self.walk(&mut w, &spec.root, "", 0)?;
        self.hash_pending(&mut w, &spec.root)?;
        let Walk {
            mut entries,
            skipped,
            seen,
            ..
        } = w;
        self.cache
            .retain(|p, _| !p.starts_with(&spec.root) || seen.contains(p));
        entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        let (entries, _) = sel.filter(entries);
        if entries.len() > limits.max_entries {
            return Err(too_many(spec.name.as_str(), limits));
        }
        let manifest = Manifest {
            version,
            set: spec.name.clone(),
            entries,
        };
        Ok((manifest, skipped))
    }

    fn walk(
        &mut self,
        w: &mut Walk<'_>,
        dir: &Path,
        prefix: &str,
        depth: usize,
    ) -> Result<(), SyncError> {
        let mut names = Vec::new();
        let list = match fs::read_dir(dir) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::NotFound && depth > 0 => return Ok(()),
            Err(e) => return Err(SyncError::io("read directory", dir.into(), e)),
        };
        for entry in list {
            let entry = entry.map_err(|e| SyncError::io("read directory", dir.into(), e))?;
            names.push(entry.file_name());
        }
        names.sort_unstable();
        for os_name in names {
            let abs = dir.join(&os_name);
            let Some(name) = os_name.to_str() else {
                let path = format!("{prefix}{}", os_name.to_string_lossy());
                w.skipped.push(skipped(path, "name is not UTF-8"));
                continue;
            };
            let rel = format!("{prefix}{name}");
            let meta = match fs::symlink_metadata(&abs) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(SyncError::io("stat", abs, e)),
            };
            if is_temp_name(name) {
                if meta.is_file() {
                    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    self.temps.push(TempFile { rel, mtime });
                }
                continue;
            }
            if let Err(reason) = check_rel(&rel) {
                w.skipped.push(skipped(rel, reason));
                continue;
            }
            if w.sel.excluded(&rel) {
                continue;
            }
            let ft = meta.file_type();
            if ft.is_dir() {
                if depth >= MAX_DEPTH {
                    w.skipped.push(skipped(rel, "directories nested too deep"));
                    continue;
                }
                self.walk(w, &abs, &format!("{rel}/"), depth + 1)?;
                w.entries.push(entry_of(rel, Kind::Dir, &meta, None));
                continue;
            }
            if !w.sel.selects(&rel) {
                continue;
            }
            if ft.is_symlink() {
                let target = match fs::read_link(&abs) {
                    Ok(t) => t,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(SyncError::io("read symlink", abs, e)),
                };
                let Some(target) = target.to_str() else {
                    w.skipped.push(skipped(rel, "symlink target is not UTF-8"));
                    continue;
                };
                if let Err(reason) = check_target(&rel, target) {
                    w.skipped
                        .push(skipped(rel, format!("symlink target {target:?} {reason}")));
                    continue;
                }
                let kind = Kind::Symlink {
                    target: target.to_string(),
                };
                w.entries.push(entry_of(rel, kind, &meta, None));
            } else if ft.is_file() {
                if meta.len() > w.limits.max_file_bytes {
                    let why = format!("larger than {} bytes", w.limits.max_file_bytes);
                    w.skipped.push(skipped(rel, why));
                    continue;
                }
                // The walk's lstat is enough to tell an unchanged file: no open, no read.
                let known = self.cache.get(&abs);
                match known.and_then(|c| c.vouches(FileKey::of(&meta), by_leaves(w.version))) {
                    Some(hash) => {
                        self.stats.cache_hits += 1;
                        let hash = hash.clone();
                        w.seen.insert(abs);
                        w.entries.push(entry_of(rel, Kind::File, &meta, Some(hash)));
                    }
                    None => w.pending.push(Pending { abs, rel }),
                }
            } else {
                w.skipped.push(skipped(rel, special_kind(&meta)));
                continue;
            }
            w.files += 1;
            if w.files > w.limits.max_entries {
                return Err(too_many(w.set, w.limits));
            }
        }
        Ok(())
    }

    /// Records the hash (as manifest `version` names it) of a file this process has just
    /// written and verified, with its block list when known, so the next scan does not read
    /// it again (a file changed since has another key and is re-read).
    pub fn remember(
        &mut self,
        abs: &Path,
        hash: &str,
        blocks: Option<Arc<BlockList>>,
        version: u32,
    ) {
        if let Ok(m) = fs::symlink_metadata(abs) {
            if m.is_file() {
                let cached = Cached::new(FileKey::of(&m), hash.into(), by_leaves(version), blocks);
                self.keep(abs.to_path_buf(), cached);
            }
        }
    }

    /// Caches `c` for `abs`, keeping what an entry for the same unchanged file knew
    /// already (the other version's hash, the block list).
    fn keep(&mut self, abs: PathBuf, mut c: Cached) {
        if let Some(old) = self.cache.remove(&abs).filter(|o| o.key == c.key) {
            c.leaves = c.leaves.or(old.leaves);
            c.sha = c.sha.or(old.sha);
            c.blocks = c.blocks.or(old.blocks);
        }
        self.cache.insert(abs, c);
    }

    /// The cached block list of `file` (at `abs`), if it is unchanged since it was cut.
    pub fn cached_blocks(&self, abs: &Path, file: &File) -> Option<Arc<BlockList>> {
        let key = FileKey::of(&file.metadata().ok()?);
        let c = self.cache.get(abs)?;
        (c.key == key).then(|| c.blocks.clone()).flatten()
    }

    /// The block list of `file` (opened safely by the caller, at its start; `abs` is its
    /// path, the cache's key) if it is still the content whose hash is `hash`: from the
    /// cache while the file is unchanged, else cut now (one read, which also checks the
    /// hash). `Ok(None)`: the file is not that content any more.
    pub fn blocks(
        &mut self,
        abs: &Path,
        file: &File,
        hash: &str,
    ) -> Result<Option<Arc<BlockList>>, SyncError> {
        let err = |op| move |e| SyncError::io(op, abs.into(), e);
        let before = file.metadata().map_err(err("stat"))?;
        let key = FileKey::of(&before);
        if let Some(c) = self.cache.get(abs).filter(|c| c.key == key) {
            match (&c.leaves, &c.blocks) {
                (Some(l), Some(b)) if l == hash => return Ok(Some(b.clone())),
                (Some(l), _) if l != hash => return Ok(None),
                // A version-1 name (a standby of the previous release asks for lists
                // of its own format): no list of this build's has it. Said without
                // reading the file.
                _ if c.sha.as_deref() == Some(hash) => return Ok(None),
                _ => {}
            }
        }
        let list = delta::index_file(file).map_err(err("read"))?;
        let after = file.metadata().map_err(err("stat"))?;
        let got = hex(&list.hash);
        if FileKey::of(&after) != key || got != hash {
            return Ok(None);
        }
        let list = Arc::new(list);
        self.keep(
            abs.to_path_buf(),
            Cached::new(key, got, true, Some(list.clone())),
        );
        Ok(Some(list))
    }

    /// Hashes the files the walk could not take from the cache, on up to [`HASHERS`]
    /// threads: a set's first scan (start-up, a new set, the standby's first pass after a
    /// restart) reads every file, and the standby waits for that manifest before it
    /// fetches anything.
    fn hash_pending(&mut self, w: &mut Walk<'_>, root: &Path) -> Result<(), SyncError> {
        let jobs = std::mem::take(&mut w.pending);
        if jobs.is_empty() {
            return Ok(());
        }
        let root = fsat::open_root(root).map_err(|e| SyncError::io("open", root.into(), e))?;
        let root = root.as_fd();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(HASHERS)
            .min(jobs.len());
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let (cache, queue, version) = (&self.cache, &jobs, w.version);
        // Takes the next file until none is left or one failed (the scan fails then).
        let work = || {
            let mut done = Vec::new();
            while !failed.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(j) = queue.get(i) else { break };
                let r = hash_file(cache, root, &j.rel, &j.abs, version);
                if r.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                done.push((i, r));
            }
            done
        };
        let mut slots: Vec<Option<Result<Hashed, SyncError>>> =
            std::iter::repeat_with(|| None).take(jobs.len()).collect();
        std::thread::scope(|s| {
            // Helpers beside this thread; one the system cannot start leaves its share
            // to the others.
            let helpers: Vec<_> = (1..threads)
                .filter_map(|_| std::thread::Builder::new().spawn_scoped(s, work).ok())
                .collect();
            let mut done = work();
            for h in helpers {
                // A helper that panicked leaves its files unhashed: the scan fails
                // below rather than list them without a hash.
                done.extend(h.join().unwrap_or_default());
            }
            for (i, r) in done {
                if let Some(slot) = slots.get_mut(i) {
                    *slot = Some(r);
                }
            }
        });
        // Files are taken in order, and a taken file is finished: every file before
        // the first failure has its result, so that failure is the error returned.
        let results: Vec<Result<Hashed, SyncError>> = slots
            .into_iter()
            .zip(&jobs)
            .map(|(r, j)| {
                r.unwrap_or_else(|| {
                    let why = io::Error::other("not hashed: the scan stopped");
                    Err(SyncError::io("hash", j.abs.clone(), why))
                })
            })
            .collect();
        for (job, r) in jobs.into_iter().zip(results) {
            let (meta, hash) = match r? {
                Hashed::Vanished => continue,
                Hashed::Cached { meta, hash } => {
                    self.stats.cache_hits += 1;
                    (meta, hash)
                }
                Hashed::Read { meta, hash, cache } => {
                    self.stats.files_hashed += 1;
                    self.stats.bytes_hashed += meta.size();
                    match cache {
                        Some(c) => self.keep(job.abs.clone(), c),
                        // Changed while read: the hash may match neither version. Not
                        // cached; the standby will see a mismatch when it fetches, and
                        // the next pass settles it.
                        None => {
                            self.cache.remove(&job.abs);
                        }
                    }
                    (meta, hash)
                }
            };
            w.entries
                .push(entry_of(job.rel, Kind::File, &meta, Some(hash)));
            w.seen.insert(job.abs);
        }
        Ok(())
    }
}

/// How many threads a scan hashes files on, at most.
const HASHERS: usize = 4;

/// Reads the regular file at `abs` for its content hash as manifest `version` names it
/// ([`by_leaves`]), unless `cache` vouches for it once it is open. A file of at least
/// [`delta::DELTA_MIN`] bytes that the cache knew gets its block list in the same read,
/// for deltas.
///
/// The file is opened from the set's root (`root`, its relative path `rel`) with no
/// symlink anywhere on the way: between the walk and this read, a directory of the set
/// swapped for a symlink must not bring a file from outside into the manifest. Reached
/// that way no more, it is left out, as the next walk will see it.
fn hash_file(
    cache: &HashMap<PathBuf, Cached>,
    root: BorrowedFd<'_>,
    rel: &str,
    abs: &Path,
    version: u32,
) -> Result<Hashed, SyncError> {
    let err = |op| move |e| SyncError::io(op, abs.into(), e);
    let gone = |e: &io::Error| {
        matches!(
            e.raw_os_error(),
            Some(libc::ENOENT | libc::ELOOP | libc::ENOTDIR | libc::EXDEV)
        )
    };
    let mut f = match fsat::open_beneath(root, rel) {
        Ok(Some(fd)) => File::from(fd),
        Err(e) if gone(&e) => return Ok(Hashed::Vanished),
        Err(e) => return Err(err("open")(e)),
        // No openat2 here: by path, O_NOFOLLOW guarding the last component only.
        Ok(None) => match File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(abs)
        {
            Ok(f) => f,
            Err(e) if gone(&e) => return Ok(Hashed::Vanished),
            Err(e) => return Err(err("open")(e)),
        },
    };
    let before = f.metadata().map_err(err("stat"))?;
    if !before.is_file() {
        return Ok(Hashed::Vanished);
    }
    let key = FileKey::of(&before);
    let by_leaves = by_leaves(version);
    let prior = cache.get(abs);
    if let Some(hash) = prior.and_then(|c| c.vouches(key, by_leaves)) {
        return Ok(Hashed::Cached {
            hash: hash.clone(),
            meta: before,
        });
    }
    let (hash, blocks) = if by_leaves && before.size() >= delta::DELTA_MIN {
        // The list comes with the hash; it is kept only for a file seen before, which
        // changed and so will likely be asked for as a delta. Most large files never
        // change, and their lists would hold 0.25 % of their size in memory for nothing
        // ([`Scanner::blocks`] cuts one when a standby asks).
        let list = delta::index_file(&f).map_err(err("read"))?;
        (hex(&list.hash), prior.map(|_| Arc::new(list)))
    } else {
        let mut hasher = Hasher::new(by_leaves);
        let mut buf = vec![0u8; BUF_SIZE];
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(err("read")(e)),
            };
            hasher.update(buf.get(..n).unwrap_or_default());
        }
        (hex(&hasher.finish()), None)
    };
    let after = f.metadata().map_err(err("stat"))?;
    let cache =
        (FileKey::of(&after) == key).then(|| Cached::new(key, hash.clone(), by_leaves, blocks));
    Ok(Hashed::Read {
        meta: before,
        hash,
        cache,
    })
}

fn root_missing(spec: &SetSpec) -> SyncError {
    SyncError::RootMissing {
        set: spec.name.clone(),
        root: spec.root.clone(),
    }
}

fn too_many(set: &str, limits: &Limits) -> SyncError {
    SyncError::TooManyEntries {
        set: set.to_string(),
        max: limits.max_entries,
    }
}

fn skipped(path: String, reason: impl Into<String>) -> Skipped {
    Skipped {
        path,
        reason: reason.into(),
    }
}

fn special_kind(m: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let ft = m.file_type();
    if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else {
        "unknown file type"
    }
}

fn entry_of(path: String, kind: Kind, m: &Metadata, hash: Option<String>) -> Entry {
    let size = if kind == Kind::File { m.size() } else { 0 };
    Entry {
        path,
        kind,
        size,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        mtime_s: m.mtime(),
        mtime_ns: u32::try_from(m.mtime_nsec()).unwrap_or(0).min(999_999_999),
        hash,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::testutil::TempDir;
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn spec(root: &Path) -> SetSpec {
        SetSpec {
            name: "t".into(),
            root: root.into(),
            include: vec![],
            exclude: vec![],
            keep_setid: false,
        }
    }

    fn mkfifo(p: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }

    #[test]
    fn scans_files_dirs_and_symlinks() {
        let d = TempDir::new("scan");
        let r = d.path();
        fs::create_dir_all(r.join("a/b")).unwrap();
        fs::write(r.join("a/b/f"), b"hello").unwrap();
        fs::write(r.join("top"), b"").unwrap();
        fs::set_permissions(r.join("top"), fs::Permissions::from_mode(0o4751)).unwrap();
        symlink("b/f", r.join("a/in")).unwrap();
        symlink("../../x", r.join("a/out")).unwrap();
        symlink("/etc/passwd", r.join("abs")).unwrap();
        mkfifo(&r.join("fifo"));
        fs::write(r.join(".top.hamon-tmp.1.2"), b"partial").unwrap();

        let mut s = Scanner::new();
        let (m, skipped) = s.scan(&spec(r), &Limits::default()).unwrap();
        let paths: Vec<_> = m.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a", "a/b", "a/b/f", "a/in", "top"]);
        let f = &m.entries[2];
        assert_eq!(f.size, 5);
        // The content hash of "hello", pinned: BLAKE3 derive-key over the one leaf's
        // BLAKE3 and the size, as a peer of another build computes it.
        let mut want = blake3::Hasher::new_derive_key("hamon 2026-12-08 file content, manifest v2");
        want.update(blake3::hash(b"hello").as_bytes());
        want.update(&5u64.to_be_bytes());
        assert_eq!(
            f.hash.as_deref(),
            Some("80d8e85f6ec057d66145c7899dd23df6e11333acb2293c310d3557eeec6f769b")
        );
        assert_eq!(f.hash, Some(hex(want.finalize().as_bytes())));
        assert_eq!(
            m.entries[3].kind,
            Kind::Symlink {
                target: "b/f".into()
            }
        );
        assert_eq!(m.entries[4].mode, 0o4751);
        let mut reasons: Vec<_> = skipped
            .iter()
            .map(|s| (s.path.as_str(), s.reason.as_str()))
            .collect();
        reasons.sort();
        assert_eq!(reasons[0].0, "a/out");
        assert!(reasons[0].1.contains("outside"), "{reasons:?}");
        assert_eq!(reasons[1].0, "abs");
        assert_eq!(reasons[2], ("fifo", "fifo"));
        assert_eq!(reasons.len(), 3);
        assert_eq!(s.temps().len(), 1);
        assert_eq!(s.temps()[0].rel, ".top.hamon-tmp.1.2");
        // The manifest it makes passes the decoder.
        let again = crate::sync::decode(&crate::sync::encode(&m), &Limits::default()).unwrap();
        assert_eq!(again, m);
    }

    #[test]
    fn rescan_reads_only_changed_files() {
        let d = TempDir::new("rescan");
        let r = d.path();
        fs::write(r.join("big"), vec![7u8; 300_000]).unwrap();
        fs::write(r.join("small"), b"abc").unwrap();
        let mut s = Scanner::new();
        let (m1, _) = s.scan(&spec(r), &Limits::default()).unwrap();
        assert_eq!(s.stats().bytes_hashed, 300_003);
        assert_eq!(s.stats().files_hashed, 2);

        let (m2, _) = s.scan(&spec(r), &Limits::default()).unwrap();
        assert_eq!(m1, m2);
        assert_eq!(s.stats().bytes_hashed, 300_003, "nothing re-read");
        assert_eq!(s.stats().cache_hits, 2);

        fs::write(r.join("small"), b"abcd").unwrap();
        let (m3, _) = s.scan(&spec(r), &Limits::default()).unwrap();
        assert_eq!(
            s.stats().bytes_hashed,
            300_007,
            "only the changed file re-read"
        );
        assert_ne!(m3.entries[1].hash, m1.entries[1].hash);

        fs::remove_file(r.join("small")).unwrap();
        s.scan(&spec(r), &Limits::default()).unwrap();
        assert_eq!(s.cache.len(), 1, "gone files leave the cache");
    }

    #[test]
    fn a_first_scan_hashes_every_file_on_several_threads_with_the_same_result() {
        let d = TempDir::new("hashers");
        let r = d.path();
        let mut want = HashMap::new();
        for i in 0..200usize {
            let dir = r.join(format!("d{}", i % 7));
            fs::create_dir_all(&dir).unwrap();
            let body = crate::sync::noise(i as u64, 1 + i * 997 % 70_000);
            want.insert(
                format!("d{}/f{i}", i % 7),
                hex(&delta::content_hash_of(&body)),
            );
            fs::write(dir.join(format!("f{i}")), body).unwrap();
        }
        let mut s = Scanner::new();
        let (m, _) = s.scan(&spec(r), &Limits::default()).unwrap();
        let got: HashMap<String, String> = m
            .entries
            .iter()
            .filter_map(|e| Some((e.path.clone(), e.hash.clone()?)))
            .collect();
        assert_eq!(got, want);
        assert_eq!(s.stats().files_hashed, 200);
        let paths: Vec<&str> = m.entries.iter().map(|e| e.path.as_str()).collect();
        let mut sorted = paths.clone();
        sorted.sort_unstable();
        assert_eq!(paths, sorted, "the manifest stays sorted");
        let (again, _) = s.scan(&spec(r), &Limits::default()).unwrap();
        assert_eq!(again, m);
        assert_eq!(s.stats().files_hashed, 200, "the second scan reads nothing");
    }

    #[test]
    fn a_large_file_is_named_by_its_block_list_cut_in_the_same_read() {
        let d = TempDir::new("lazyblocks");
        let r = d.path();
        let big = r.join("big");
        let small = r.join("small");
        let body = crate::sync::noise(5, delta::DELTA_MIN as usize + 10_000);
        fs::write(&big, &body).unwrap();
        fs::write(&small, &body[..delta::DELTA_MIN as usize - 1]).unwrap();
        let mut s = Scanner::new();
        let (m, _) = s.scan(&spec(r), &Limits::default()).unwrap();
        let hash_of = |m: &Manifest, p: &str| {
            let e = m.entries.iter().find(|e| e.path == p).unwrap();
            e.hash.clone().unwrap()
        };
        let hash = hash_of(&m, "big");
        let want = delta::index(&body[..]).unwrap();
        assert_eq!(hash, hex(&want.hash));
        assert_ne!(hash, hex(&Sha256::digest(&body)));
        // Below the delta size: the same hash, with no list kept.
        assert_eq!(
            hash_of(&m, "small"),
            hex(&delta::content_hash_of(
                &body[..delta::DELTA_MIN as usize - 1]
            ))
        );
        let f = File::open(&big).unwrap();
        assert!(
            s.cached_blocks(&big, &f).is_none(),
            "seen for the first time: hashed, its list not kept"
        );
        // A standby that asks gets the list cut now, and it is kept.
        let list = s.blocks(&big, &f, &hash).unwrap().unwrap();
        assert_eq!(*list, want);
        assert_eq!(*s.cached_blocks(&big, &f).unwrap(), want);
        // The list of another content is not served as this one's, and a name of
        // version 1 (the SHA-256) is refused too, once the scanner knows it; both
        // without reading the file (here opened for writing only: a read would fail).
        s.scan_as(&spec(r), &Limits::default(), 1).unwrap();
        let unreadable = File::options().write(true).open(&big).unwrap();
        let sha = hex(&Sha256::digest(&body));
        for other in [hex(&[0; 32]), sha] {
            assert!(s.blocks(&big, &unreadable, &other).unwrap().is_none());
        }
        assert!(
            s.blocks(&big, &unreadable, &hash).unwrap().is_some(),
            "from the cache"
        );
        drop(f);

        // Changed: the rescan cuts it again, in the same read as its hash.
        let mut edited = body.clone();
        edited[1234] ^= 0xff;
        fs::write(&big, &edited).unwrap();
        let (m2, _) = s.scan(&spec(r), &Limits::default()).unwrap();
        let cut = delta::index(&edited[..]).unwrap();
        assert_eq!(hash_of(&m2, "big"), hex(&cut.hash));
        let f = File::open(&big).unwrap();
        assert_eq!(
            *s.cached_blocks(&big, &f).expect("cut during the rescan"),
            cut
        );
    }

    #[test]
    fn manifests_of_both_versions_asked_in_turn_read_each_file_once_each_way() {
        let d = TempDir::new("twoways");
        let r = d.path();
        fs::write(r.join("small"), b"small").unwrap();
        let big = crate::sync::noise(8, delta::DELTA_MIN as usize + 1);
        fs::write(r.join("big"), &big).unwrap();
        let mut s = Scanner::new();
        let (v2, _) = s.scan(&spec(r), &Limits::default()).unwrap();
        // A standby asked for the big file's list: cut and kept.
        let f = File::open(r.join("big")).unwrap();
        let hash = v2.entries[0].hash.clone().unwrap();
        assert!(s.blocks(&r.join("big"), &f, &hash).unwrap().is_some());
        let (v1, _) = s.scan_as(&spec(r), &Limits::default(), 1).unwrap();
        assert_eq!((v2.version, v1.version), (2, 1));
        assert_eq!(s.stats().files_hashed, 4, "each file read once each way");
        let sha = |m: &Manifest, p: &str| {
            m.entries
                .iter()
                .find(|e| e.path == p)
                .unwrap()
                .hash
                .clone()
                .unwrap()
        };
        assert_eq!(sha(&v1, "big"), hex(&Sha256::digest(&big)));
        assert_eq!(sha(&v2, "big"), hex(&delta::index(&big[..]).unwrap().hash));
        for _ in 0..2 {
            assert_eq!(s.scan(&spec(r), &Limits::default()).unwrap().0, v2);
            assert_eq!(s.scan_as(&spec(r), &Limits::default(), 1).unwrap().0, v1);
        }
        assert_eq!(s.stats().files_hashed, 4, "then from the cache, both ways");
        // The block list survives the version-1 read.
        assert!(s.cached_blocks(&r.join("big"), &f).is_some());
        // A change is read again, for the version asked only.
        fs::write(r.join("small"), b"SMALL").unwrap();
        s.scan_as(&spec(r), &Limits::default(), 1).unwrap();
        assert_eq!(s.stats().files_hashed, 5);
        s.scan(&spec(r), &Limits::default()).unwrap();
        assert_eq!(s.stats().files_hashed, 6);
    }

    #[test]
    fn a_file_gone_or_reached_through_a_symlink_after_the_walk_is_left_out() {
        let d = TempDir::new("vanished");
        let outside = TempDir::new("vanished-outside");
        let r = d.path();
        fs::create_dir(r.join("sub")).unwrap();
        fs::write(r.join("sub/kept"), b"in the set").unwrap();
        fs::write(outside.path().join("secret"), b"not in the set").unwrap();
        fs::write(r.join("target"), b"x").unwrap();
        symlink("target", r.join("link")).unwrap();
        // A directory of the set swapped for a symlink to elsewhere after the walk.
        symlink(outside.path(), r.join("swapped")).unwrap();
        symlink("sub", r.join("inner")).unwrap();
        let root = fsat::open_root(r).unwrap();
        let none = HashMap::new();
        let hash = |rel: &str| hash_file(&none, root.as_fd(), rel, &r.join(rel), VERSION);
        for rel in [
            "never",
            "link",
            "sub",
            "swapped/secret",
            "inner/kept",
            "target/x",
        ] {
            assert!(
                matches!(hash(rel), Ok(Hashed::Vanished)),
                "{rel} must be left out"
            );
        }
        match hash("sub/kept") {
            Ok(Hashed::Read { hash, .. }) => {
                assert_eq!(hash, hex(&delta::content_hash_of(b"in the set")));
            }
            _ => panic!("sub/kept is a file of the set"),
        }
    }

    #[test]
    fn globs_and_limits() {
        let d = TempDir::new("globs");
        let r = d.path();
        fs::create_dir_all(r.join("conf/sub")).unwrap();
        fs::create_dir_all(r.join("cache")).unwrap();
        fs::create_dir_all(r.join("empty")).unwrap();
        fs::write(r.join("conf/a.conf"), b"1").unwrap();
        fs::write(r.join("conf/sub/b.conf"), b"2").unwrap();
        fs::write(r.join("conf/sub/c.txt"), b"3").unwrap();
        fs::write(r.join("cache/d.conf"), b"4").unwrap();
        fs::write(r.join("huge.conf"), vec![0u8; 100]).unwrap();
        let mut sp = spec(r);
        sp.include = vec!["**/*.conf".into()];
        sp.exclude = vec!["cache".into()];
        let limits = Limits {
            max_file_bytes: 99,
            ..Limits::default()
        };
        let (m, skipped) = Scanner::new().scan(&sp, &limits).unwrap();
        let paths: Vec<_> = m.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            ["conf", "conf/a.conf", "conf/sub", "conf/sub/b.conf"]
        );
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].path, "huge.conf");

        let few = Limits {
            max_entries: 2,
            ..Limits::default()
        };
        let err = Scanner::new().scan(&sp, &few).unwrap_err();
        assert!(
            matches!(err, SyncError::TooManyEntries { max: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn missing_root_is_an_error() {
        let d = TempDir::new("noroot");
        let err = Scanner::new()
            .scan(&spec(&d.path().join("nope")), &Limits::default())
            .unwrap_err();
        assert!(matches!(err, SyncError::RootMissing { .. }));
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
