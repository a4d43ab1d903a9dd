//! Applying entries to the local copy of a set, and opening files to serve.
//!
//! Every operation walks from the set's root with `openat(O_NOFOLLOW)` ([`super::fsat`]): a
//! symlink (or non-directory) anywhere in a target's parent chain is refused, so nothing is
//! ever written, chmod-ed or removed outside the root, whatever a manifest says or a local
//! process swaps in meanwhile. Files and symlinks are created under a temp name in their
//! target directory and renamed over the target; files are fsync-ed before, and the directory
//! after, the rename.

use std::fs::{File, Permissions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::delta::{BlockList, ContentHasher, Indexer, DELTA_MIN};
use super::fsat;
use super::manifest::{by_leaves, check_entry, Entry, Kind, VERSION};
use super::{check_rel, is_temp_name, temp_name, Limits, Selector, SetSpec, SyncError};

/// Mode of directories created before their manifest entry applies its own.
const NEW_DIR_MODE: u32 = 0o700;
/// Read and hash buffer size.
pub(crate) const BUF_SIZE: usize = 64 << 10;

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn egid() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}

/// Whether this process can give a file owner `uid` and group `gid`: it runs as root, or they
/// are its own. Otherwise the owner is left as it is (and the puller counts it).
pub fn owner_settable(uid: u32, gid: u32) -> bool {
    euid() == 0 || (uid == euid() && gid == egid())
}

fn to_system_time(s: i64, ns: u32) -> Option<SystemTime> {
    let t = if s >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(s.unsigned_abs()))?
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(s.unsigned_abs()))?
    };
    t.checked_add(Duration::from_nanos(u64::from(ns)))
}

fn io_err(op: &'static str, root: &Path, rel: &str) -> impl FnOnce(io::Error) -> SyncError {
    let path = root.join(rel);
    move |e| SyncError::io(op, path, e)
}

/// The open parent directory of `rel` below `root` and `rel`'s last component; `None` when a
/// parent is missing and not `create`d (mode [`NEW_DIR_MODE`]). `rel` must be checked.
fn open_parent<'r>(
    root: &Path,
    rel: &'r str,
    create: bool,
) -> Result<Option<(OwnedFd, &'r str)>, SyncError> {
    let mut dir = fsat::open_root(root).map_err(|e| SyncError::io("open", root.into(), e))?;
    let (parents, name) = match rel.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, rel),
    };
    for (i, comp) in parents.into_iter().flat_map(|p| p.split('/')).enumerate() {
        let sub = match fsat::open_dir_at(dir.as_fd(), comp) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                match fsat::mkdir_at(dir.as_fd(), comp, NEW_DIR_MODE) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
                    _ => fsat::open_dir_at(dir.as_fd(), comp),
                }
            }
            r => r,
        };
        dir = match sub {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                let at: Vec<&str> = rel.split('/').take(i + 1).collect();
                return Err(SyncError::refused(
                    rel,
                    format!("{:?} is a symlink or not a directory", at.join("/")),
                ));
            }
            Err(e) => return Err(SyncError::io("open", root.join(rel), e)),
        };
    }
    Ok(Some((dir, name)))
}

/// A temp file removed on drop unless disarmed.
struct TempGuard<'d> {
    dir: BorrowedFd<'d>,
    name: Option<String>,
}

impl Drop for TempGuard<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.name.take() {
            let _ = fsat::unlink_at(self.dir, &n, false);
        }
    }
}

/// Creates a fresh temp name for `name` with `create`, retrying on a name clash.
fn create_temp<T>(
    name: &str,
    mut create: impl FnMut(&str) -> io::Result<T>,
) -> io::Result<(String, T)> {
    let mut tries = 0;
    loop {
        let tmp = temp_name(name);
        match create(&tmp) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
            r => return r.map(|t| (tmp, t)),
        }
    }
}

/// Removes a directory at `name` in `dir`, where a file or symlink is about to go.
fn clear_dir(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    match fsat::stat_at(dir, name)? {
        Some(m) if m.is_dir() => fsat::remove_tree_at(dir, name),
        _ => Ok(()),
    }
}

fn check_kind(e: &Entry, want: &str, ok: bool) -> Result<(), SyncError> {
    let limits = Limits {
        max_file_bytes: u64::MAX,
        ..Limits::default()
    };
    check_entry(e, &limits)?;
    if ok {
        Ok(())
    } else {
        Err(SyncError::refused(
            &e.path,
            format!("entry is not a {want}"),
        ))
    }
}

/// Writes the file `e` below `root` atomically from `body`: into a temp file in the target's
/// directory, checked against `e.size` and `e.hash` (refused, and the target untouched, on any
/// difference), given `e`'s mode, owner (see [`owner_settable`]) and mtime, fsync-ed and renamed
/// over the target (a directory there is removed first). Missing parents are created (mode
/// 0700). Returns the bytes written.
pub fn write_file(root: &Path, e: &Entry, body: &mut dyn Read) -> Result<u64, SyncError> {
    write_file_then(root, e, body, DirSync::Now)
}

/// When [`write_file_then`] makes the rename durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirSync {
    /// fsync the directory right after the rename.
    Now,
    /// The caller fsyncs the directory later ([`sync_dirs`]), once for many
    /// files. Until then a crash may undo the rename (the old file stays, or
    /// the temp file is left for a later pass to remove), never half of it.
    Later,
}

/// As [`write_file`], with the directory fsync now or left to the caller.
pub fn write_file_then(
    root: &Path,
    e: &Entry,
    body: &mut dyn Read,
    dir_sync: DirSync,
) -> Result<u64, SyncError> {
    let staged = stage_file(root, e, body)?;
    let total = staged.size;
    staged.commit(root, dir_sync)?;
    Ok(total)
}

/// Starts writing `f`'s dirty data out, without waiting for it: a hint, whose failure
/// changes nothing (the fsync that follows still decides).
pub(crate) fn start_writeback(f: &File) {
    // nix (0.32) has no wrapper for sync_file_range(2).
    // SAFETY: the descriptor is open for the whole call (borrowed from `f`), and the call
    // takes no pointers.
    let _ = unsafe {
        libc::sync_file_range(
            std::os::fd::AsRawFd::as_raw_fd(f),
            0,
            0,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
}

/// A file written under a temp name in its target's directory and checked against its
/// entry, not yet fsynced nor renamed into place. Dropped uncommitted, the temp file goes.
#[derive(Debug)]
pub struct Staged {
    dir: OwnedFd,
    tmp: Option<String>,
    name: String,
    path: String,
    file: Option<File>,
    /// The bytes written.
    pub size: u64,
    /// For a large file written by [`stage_file`], its block list (which its hash was
    /// checked against), kept for its next delta.
    pub blocks: Option<Arc<BlockList>>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(t) = self.tmp.take() {
            let _ = fsat::unlink_at(self.dir.as_fd(), &t, false);
        }
    }
}

impl Staged {
    /// Starts writing the file's data out, without waiting: a later fsync of it then
    /// finds its blocks allocated, so that one journal commit serves a whole batch.
    fn start_writeback(&self) {
        if let Some(f) = &self.file {
            start_writeback(f);
        }
    }

    /// fsyncs the file and renames it over its target (a directory there is removed
    /// first), then fsyncs the directory now or leaves that to the caller.
    pub fn commit(mut self, root: &Path, dir_sync: DirSync) -> Result<(), SyncError> {
        let err = |op| io_err(op, root, &self.path);
        if let Some(f) = self.file.take() {
            f.sync_all().map_err(err("fsync"))?;
        }
        clear_dir(self.dir.as_fd(), &self.name).map_err(err("remove directory"))?;
        if let Some(tmp) = &self.tmp {
            fsat::rename_at(self.dir.as_fd(), tmp, &self.name).map_err(err("rename"))?;
        }
        self.tmp = None;
        if dir_sync == DirSync::Now {
            fsat::fsync(self.dir.as_fd()).map_err(err("fsync directory"))?;
        }
        Ok(())
    }
}

/// Commits many staged files: each one's writeback is started first, then each is fsynced
/// and renamed in turn, so that the file system writes the batch in one go and its
/// journal commits once for many files rather than once for each. Every file is still
/// fsynced before its rename. Each file's outcome (its size), in the order given.
pub fn commit_all(root: &Path, staged: Vec<Staged>) -> Vec<Result<u64, SyncError>> {
    for s in &staged {
        s.start_writeback();
    }
    staged
        .into_iter()
        .map(|s| {
            let size = s.size;
            s.commit(root, DirSync::Later).map(|()| size)
        })
        .collect()
}

/// A file's content hash as a manifest version names it ([`by_leaves`]): the leaves'
/// hash, or for version 1 the SHA-256.
pub(crate) enum Hasher {
    Leaves(Box<ContentHasher>),
    Sha256(Sha256),
}

impl Hasher {
    pub(crate) fn new(by_leaves: bool) -> Hasher {
        if by_leaves {
            Hasher::Leaves(Box::new(ContentHasher::new()))
        } else {
            Hasher::Sha256(Sha256::new())
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Leaves(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
        }
    }

    pub(crate) fn finish(self) -> [u8; 32] {
        match self {
            Hasher::Leaves(h) => h.finish(),
            Hasher::Sha256(h) => h.finalize().into(),
        }
    }
}

/// Writes the file `e` below `root` into a temp file in the target's directory from `body`,
/// checked against `e.size` and `e.hash` (refused, and the temp file removed, on any
/// difference) and given `e`'s mode, owner (see [`owner_settable`]) and mtime; see
/// [`Staged::commit`] and [`commit_all`] for the rest. Missing parents are created (mode
/// 0700).
///
/// The hash is the manifest's content hash ([`super::delta::content_hash`]); for a file of
/// at least [`DELTA_MIN`] bytes it comes with the file's block list, computed on the way
/// to disk, so the standby has the list for the file's next delta without reading it
/// again.
pub fn stage_file(root: &Path, e: &Entry, body: &mut dyn Read) -> Result<Staged, SyncError> {
    stage_file_as(root, e, body, VERSION)
}

/// As [`stage_file`], for an entry of a manifest of `version` (version 1 named every file
/// by its SHA-256; see [`by_leaves`]).
pub fn stage_file_as(
    root: &Path,
    e: &Entry,
    body: &mut dyn Read,
    version: u32,
) -> Result<Staged, SyncError> {
    let want = e.hash.as_deref().unwrap_or_default();
    let mut blocks = None;
    let mut staged = stage_with(root, e, |f| {
        let (total, got) = if by_leaves(version) && e.size >= DELTA_MIN {
            let (total, list) = copy_indexing_aside(root, body, f, e)?;
            let got = list.hash;
            blocks = Some(Arc::new(list));
            (total, got)
        } else {
            let mut hasher = Hasher::new(by_leaves(version));
            let total = copy(root, body, f, e, |chunk| hasher.update(chunk))?;
            (total, hasher.finish())
        };
        let got = hex(&got);
        if total == e.size && got != want {
            return Err(SyncError::Hash {
                path: e.path.clone(),
                got,
                want: want.to_string(),
            });
        }
        Ok(total)
    })?;
    staged.blocks = blocks;
    Ok(staged)
}

/// As [`stage_file`], with the content written and checked by `fill`: it gets the empty
/// temp file and returns the bytes it wrote, or why the content is not `e`'s. The size is
/// checked here.
pub fn stage_with(
    root: &Path,
    e: &Entry,
    fill: impl FnOnce(&mut File) -> Result<u64, SyncError>,
) -> Result<Staged, SyncError> {
    check_kind(e, "file", e.kind == Kind::File)?;
    let err = |op| io_err(op, root, &e.path);
    let Some((dir, name)) = open_parent(root, &e.path, true)? else {
        return Err(SyncError::refused(&e.path, "parent vanished"));
    };
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    let (tmp, fd) = create_temp(name, |t| fsat::open_at(dir.as_fd(), t, flags, 0o600))
        .map_err(err("create temp file"))?;
    let mut staged = Staged {
        dir,
        tmp: Some(tmp),
        name: name.to_string(),
        path: e.path.clone(),
        file: None,
        size: 0,
        blocks: None,
    };
    let mut f = File::from(fd);
    let total = fill(&mut f)?;
    if total != e.size {
        return Err(SyncError::Size {
            path: e.path.clone(),
            got: total,
            want: e.size,
        });
    }
    set_file_meta(&f, e).map_err(err("set metadata"))?;
    staged.file = Some(f);
    staged.size = total;
    Ok(staged)
}

/// Copies `body` into `f`, handing each chunk to `seen` first; the bytes copied. More
/// than `e.size` bytes is an error at once.
fn copy(
    root: &Path,
    body: &mut dyn Read,
    f: &mut File,
    e: &Entry,
    mut seen: impl FnMut(&[u8]),
) -> Result<u64, SyncError> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut total: u64 = 0;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(x) if x.kind() == io::ErrorKind::Interrupted => continue,
            Err(x) => return Err(io_err("receive", root, &e.path)(x)),
        };
        total = total.saturating_add(n as u64);
        if total > e.size {
            return Err(SyncError::Size {
                path: e.path.clone(),
                got: total,
                want: e.size,
            });
        }
        let chunk = buf.get(..n).unwrap_or_default();
        seen(chunk);
        f.write_all(chunk).map_err(io_err("write", root, &e.path))?;
    }
}

/// As [`copy`], with the bytes cut into leaves and hashed on a second thread, a few
/// chunks behind the writes: a large file costs the slower of the two, not their sum.
fn copy_indexing_aside(
    root: &Path,
    body: &mut dyn Read,
    f: &mut File,
    e: &Entry,
) -> Result<(u64, BlockList), SyncError> {
    const AHEAD: usize = 8;
    const CHUNK: usize = 1 << 20;
    let (to_hash, hashing) = crossbeam_channel::bounded::<Vec<u8>>(AHEAD);
    let (spare, spares) = crossbeam_channel::bounded::<Vec<u8>>(AHEAD + 2);
    std::thread::scope(|s| {
        let hasher = s.spawn(move || {
            let mut ix = Indexer::new();
            for chunk in hashing {
                ix.push(&chunk);
                // Never block on giving a buffer back: at the end nobody takes them.
                let _ = spare.try_send(chunk);
            }
            ix.finish()
        });
        let mut pending: Vec<u8> = Vec::with_capacity(CHUNK);
        let copied = copy(root, body, f, e, |chunk| {
            pending.extend_from_slice(chunk);
            if pending.len() >= CHUNK {
                let next = spares
                    .try_recv()
                    .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
                let full = std::mem::replace(&mut pending, next);
                let _ = to_hash.send(full);
                pending.clear();
            }
        });
        let _ = to_hash.send(pending);
        drop(to_hash);
        let hash = hasher.join();
        let total = copied?;
        match hash {
            Ok(h) => Ok((total, h)),
            Err(_) => Err(io_err("hash", root, &e.path)(io::Error::other(
                "the hashing thread died",
            ))),
        }
    })
}

/// fsyncs each directory `rel` (relative to `root`, "" for the root) once; the
/// first error is returned after trying them all.
pub fn sync_dirs<'a>(
    root: &Path,
    dirs: impl IntoIterator<Item = &'a str>,
) -> Result<(), SyncError> {
    let mut first = None;
    for rel in dirs {
        let r = if rel.is_empty() {
            fsat::open_root(root)
                .and_then(|d| fsat::fsync(d.as_fd()))
                .map_err(|e| SyncError::io("fsync directory", root.into(), e))
        } else {
            match open_parent(root, rel, false) {
                Ok(Some((parent, name))) => fsat::open_dir_at(parent.as_fd(), name)
                    .and_then(|d| fsat::fsync(d.as_fd()))
                    .map_err(|e| SyncError::io("fsync directory", root.join(rel), e)),
                Ok(None) => Ok(()), // gone meanwhile: nothing to make durable
                Err(e) => Err(e),
            }
        };
        if let (Err(e), None) = (r, &first) {
            first = Some(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Owner (when settable), then mode (chown clears set-id bits), then mtime, of an open file.
fn set_file_meta(f: &File, e: &Entry) -> io::Result<()> {
    if owner_settable(e.uid, e.gid) {
        std::os::unix::fs::fchown(f, Some(e.uid), Some(e.gid))?;
    }
    f.set_permissions(Permissions::from_mode(e.mode & 0o7777))?;
    let t = to_system_time(e.mtime_s, e.mtime_ns)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "mtime out of range"))?;
    f.set_times(std::fs::FileTimes::new().set_modified(t))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Creates the directory `e` (and missing parents); a non-directory there is removed first.
/// Its metadata is set, but its mtime changes again as entries go in: set it last.
pub fn make_dir(root: &Path, e: &Entry) -> Result<(), SyncError> {
    check_kind(e, "directory", e.kind == Kind::Dir)?;
    let err = |op| io_err(op, root, &e.path);
    let Some((dir, name)) = open_parent(root, &e.path, true)? else {
        return Err(SyncError::refused(&e.path, "parent vanished"));
    };
    match fsat::stat_at(dir.as_fd(), name).map_err(err("stat"))? {
        Some(m) if m.is_dir() => {}
        other => {
            if other.is_some() {
                fsat::unlink_at(dir.as_fd(), name, false).map_err(err("remove"))?;
            }
            fsat::mkdir_at(dir.as_fd(), name, NEW_DIR_MODE).map_err(err("mkdir"))?;
            fsat::fsync(dir.as_fd()).map_err(err("fsync directory"))?;
        }
    }
    set_meta(root, e)
}

/// Creates or re-points the symlink `e` atomically (temp name, then rename).
pub fn make_symlink(root: &Path, e: &Entry) -> Result<(), SyncError> {
    let Kind::Symlink { target } = &e.kind else {
        return Err(SyncError::refused(&e.path, "entry is not a symlink"));
    };
    check_kind(e, "symlink", true)?;
    let err = |op| io_err(op, root, &e.path);
    let Some((dir, name)) = open_parent(root, &e.path, true)? else {
        return Err(SyncError::refused(&e.path, "parent vanished"));
    };
    let (tmp, ()) = create_temp(name, |t| fsat::symlink_at(target, dir.as_fd(), t))
        .map_err(err("create symlink"))?;
    let mut guard = TempGuard {
        dir: dir.as_fd(),
        name: Some(tmp.clone()),
    };
    if owner_settable(e.uid, e.gid) {
        fsat::lchown_at(dir.as_fd(), &tmp, e.uid, e.gid).map_err(err("chown"))?;
    }
    fsat::set_mtime_at(dir.as_fd(), &tmp, e.mtime_s, e.mtime_ns).map_err(err("set mtime"))?;
    clear_dir(dir.as_fd(), name).map_err(err("remove directory"))?;
    fsat::rename_at(dir.as_fd(), &tmp, name).map_err(err("rename"))?;
    guard.name = None;
    fsat::fsync(dir.as_fd()).map_err(err("fsync directory"))
}

/// Gives the existing entry at `e.path`, of `e`'s kind, `e`'s owner (when settable), mode (not
/// for symlinks) and mtime.
pub fn set_meta(root: &Path, e: &Entry) -> Result<(), SyncError> {
    check_kind(e, "valid entry", true)?;
    let err = |op| io_err(op, root, &e.path);
    let Some((dir, name)) = open_parent(root, &e.path, false)? else {
        return Err(err("open")(io::ErrorKind::NotFound.into()));
    };
    let Some(m) = fsat::stat_at(dir.as_fd(), name).map_err(err("stat"))? else {
        return Err(err("stat")(io::ErrorKind::NotFound.into()));
    };
    let kind_ok = match e.kind {
        Kind::File => m.is_file(),
        Kind::Dir => m.is_dir(),
        Kind::Symlink { .. } => m.is_symlink(),
    };
    if !kind_ok {
        return Err(SyncError::refused(&e.path, "changed kind meanwhile"));
    }
    if let Kind::Symlink { .. } = e.kind {
        if owner_settable(e.uid, e.gid) {
            fsat::lchown_at(dir.as_fd(), name, e.uid, e.gid).map_err(err("chown"))?;
        }
        return fsat::set_mtime_at(dir.as_fd(), name, e.mtime_s, e.mtime_ns)
            .map_err(err("set mtime"));
    }
    let extra = if e.kind == Kind::Dir {
        libc::O_DIRECTORY
    } else {
        0
    };
    let fd = fsat::open_at(
        dir.as_fd(),
        name,
        libc::O_RDONLY | libc::O_NONBLOCK | extra,
        0,
    )
    .map_err(err("open"))?;
    let f = File::from(fd);
    let again = f.metadata().map_err(err("stat"))?;
    if again.is_file() != m.is_file() || again.is_dir() != m.is_dir() {
        return Err(SyncError::refused(&e.path, "changed kind meanwhile"));
    }
    set_file_meta(&f, e).map_err(err("set metadata"))
}

/// Removes `rel` below `root` (a directory with everything in it); absent is fine. Returns
/// whether something was removed.
pub fn delete(root: &Path, rel: &str) -> Result<bool, SyncError> {
    check_rel(rel).map_err(|r| SyncError::refused(rel, r))?;
    remove_at(root, rel)
}

fn remove_at(root: &Path, rel: &str) -> Result<bool, SyncError> {
    let err = |op| io_err(op, root, rel);
    let Some((dir, name)) = open_parent(root, rel, false)? else {
        return Ok(false);
    };
    let Some(m) = fsat::stat_at(dir.as_fd(), name).map_err(err("stat"))? else {
        return Ok(false);
    };
    if m.is_dir() {
        fsat::remove_tree_at(dir.as_fd(), name).map_err(err("remove"))?;
    } else {
        fsat::unlink_at(dir.as_fd(), name, false).map_err(err("remove"))?;
    }
    fsat::fsync(dir.as_fd()).map_err(err("fsync directory"))?;
    Ok(true)
}

/// Removes the temp file `rel` (its last component must be a temp name) below `root`.
pub(crate) fn remove_temp(root: &Path, rel: &str) -> Result<bool, SyncError> {
    let (parent, name) = rel
        .rsplit_once('/')
        .map_or((None, rel), |(p, n)| (Some(p), n));
    if !is_temp_name(name) || parent.is_some_and(|p| check_rel(p).is_err()) {
        return Err(SyncError::refused(rel, "not a temp file"));
    }
    remove_at(root, rel)
}

/// Opens the file `rel` of `spec` to serve it: `rel` must be a valid path, selected by the
/// set's globs, reached without a symlink, and a regular file. Returns it and its length.
pub fn open_served(spec: &SetSpec, rel: &str) -> Result<(File, u64), SyncError> {
    check_rel(rel).map_err(|r| SyncError::refused(rel, r))?;
    if !Selector::new(spec)?.selects(rel) {
        return Err(SyncError::refused(rel, "not in the set"));
    }
    let err = |op| io_err(op, &spec.root, rel);
    let Some((dir, name)) = open_parent(&spec.root, rel, false)? else {
        return Err(err("open")(io::ErrorKind::NotFound.into()));
    };
    let fd = match fsat::open_at(dir.as_fd(), name, libc::O_RDONLY | libc::O_NONBLOCK, 0) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(SyncError::refused(rel, "is a symlink"))
        }
        Err(e) => return Err(err("open")(e)),
    };
    let f = File::from(fd);
    let m = f.metadata().map_err(err("stat"))?;
    if !m.is_file() {
        return Err(SyncError::refused(rel, "not a regular file"));
    }
    Ok((f, m.len()))
}

#[cfg(test)]
#[path = "apply_tests.rs"]
pub(crate) mod tests;
