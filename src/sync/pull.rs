//! One pull pass of a set: fetch the active's manifest, diff it against a local scan, apply.

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::apply::{
    self, commit_all, make_dir, make_symlink, open_served, owner_settable, set_meta, stage_file_as,
    sync_dirs, DirSync, Staged,
};
use super::delta::{self, BlockList};
use super::diff::{diff, Plan};
use super::manifest::{by_leaves, decode, encode, Entry, Kind, Manifest};
use super::scan::Scanner;
use super::{Limits, Selector, SetSpec, Skipped, SyncError};

/// Where a standby pulls from: the transport to the active.
pub trait Source {
    /// The encoded manifest of `set`.
    fn manifest(&mut self, set: &str) -> Result<Vec<u8>, String>;
    /// The content of the file `path` of `set`.
    fn file(&mut self, set: &str, path: &str) -> Result<Box<dyn Read + '_>, String>;
    /// Another source for the same peer, for fetching files in parallel;
    /// `None` (the default) fetches them one after another.
    fn fork(&self) -> Option<Box<dyn Source + Send>> {
        None
    }
    /// For a delta of the file `path` of `set` while it is the content `hash`: its
    /// summary (`groups` `None`), or the details of those groups, encoded
    /// ([`delta::decode_summary`], [`delta::decode_details`]); an error (the default)
    /// fetches the file whole.
    fn blocks(
        &mut self,
        _set: &str,
        _path: &str,
        _hash: &str,
        _groups: Option<&[u32]>,
    ) -> Result<Vec<u8>, String> {
        Err("this source serves no block lists".into())
    }
    /// The bytes of `ranges` (`(offset, length)`) of that file, one after another.
    fn ranges(
        &mut self,
        _set: &str,
        _path: &str,
        _hash: &str,
        _ranges: &[(u64, u64)],
    ) -> Result<Box<dyn Read + '_>, String> {
        Err("this source serves no ranges".into())
    }
}

/// Files fetched at once when the source can be forked: a pass over many
/// small files waits on the network and on fsync, so a few in flight keep
/// both busy.
const PARALLEL_FETCHES: usize = 4;

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassStats {
    /// Files written.
    pub files: u64,
    /// Bytes written into them.
    pub bytes: u64,
    /// Of those files, how many came as deltas, and the bytes those fetched (block lists
    /// and the blocks the old copy did not have).
    pub delta_files: u64,
    pub delta_fetched: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks created or re-pointed.
    pub links: u64,
    /// Paths removed (each listed in the plan: a directory and what it held).
    pub deleted: u64,
    /// Entries whose mode, owner or mtime alone changed.
    pub meta: u64,
    /// Stale temp files removed.
    pub temps_removed: u64,
    /// Entries written whose owner could not be given (not running as root).
    pub owners_not_set: u64,
    /// What failed; the pass went on with the rest.
    pub errors: Vec<String>,
    /// What was not synced: special files and the like, here or (entries the local globs do
    /// not select) in the remote manifest.
    pub skipped: Vec<Skipped>,
    /// How long the source took to hand over its manifest (the active scans for it: after
    /// a large file changed, most of a pass), and the whole pass, in milliseconds.
    pub manifest_ms: u64,
    pub pass_ms: u64,
}

/// Pulls sets, keeping a [`Scanner`] (and so its hash cache) across passes.
#[derive(Debug)]
pub struct Puller {
    scanner: Scanner,
    /// Temp files at least this old are removed at the start of every pass: a killed writer's
    /// leftovers. Younger ones may belong to a writer still running (a pass of another
    /// process), and are only ignored.
    pub stale_temp_age: Duration,
}

impl Default for Puller {
    fn default() -> Puller {
        Puller::new()
    }
}

impl Puller {
    pub fn new() -> Puller {
        Puller {
            scanner: Scanner::new(),
            stale_temp_age: Duration::from_secs(60),
        }
    }

    pub fn scanner(&self) -> &Scanner {
        &self.scanner
    }

    /// Makes the local copy of `spec` match what `src` serves. Fails as a whole only when the
    /// remote manifest is refused or the local set cannot be scanned; a file that fails (its
    /// content does not match the manifest, ...) is recorded in `errors` and left as it was.
    pub fn pass(
        &mut self,
        spec: &SetSpec,
        src: &mut dyn Source,
        limits: &Limits,
    ) -> Result<PassStats, SyncError> {
        let started = std::time::Instant::now();
        let bytes = src.manifest(&spec.name).map_err(SyncError::Source)?;
        let manifest_ms = millis(started.elapsed());
        let mut remote = decode(&bytes, limits)?;
        drop(bytes);
        if remote.set != spec.name {
            return Err(SyncError::WrongSet {
                want: spec.name.clone(),
                got: remote.set,
            });
        }
        let mut stats = PassStats {
            manifest_ms,
            ..PassStats::default()
        };
        remote.entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        let (kept, dropped) = Selector::new(spec)?.filter(std::mem::take(&mut remote.entries));
        remote.entries = kept;
        if !spec.keep_setid {
            // A set-id program is a privilege, not data: unless the set says
            // so, files arrive without the bits (directories keep setgid,
            // which only passes the group on to new entries). Cleared before
            // the diff, so the local copy matches and is not rewritten.
            for e in &mut remote.entries {
                if e.kind == Kind::File {
                    e.mode &= !0o6000;
                }
            }
        }
        stats.skipped.extend(dropped.into_iter().map(|e| Skipped {
            path: e.path,
            reason: "remote entry not selected by the local set's globs".into(),
        }));

        // Hashed as the peer's manifest version names files, to compare like with like.
        let (local, skipped) = self.scanner.scan_as(spec, limits, remote.version)?;
        stats.skipped.extend(skipped);
        self.remove_stale_temps(spec, &mut stats);
        let plan = diff(&local, &remote);
        let written = execute(spec, src, &plan, &remote, &mut stats, &self.scanner);
        // What was just written and verified need not be read again next pass.
        for (e, blocks) in written {
            if let Some(h) = &e.hash {
                let abs = spec.root.join(&e.path);
                self.scanner.remember(&abs, h, blocks, remote.version);
            }
        }
        stats.pass_ms = millis(started.elapsed());
        Ok(stats)
    }

    fn remove_stale_temps(&self, spec: &SetSpec, stats: &mut PassStats) {
        let now = SystemTime::now();
        for t in self.scanner.temps() {
            let age = now.duration_since(t.mtime).unwrap_or(Duration::ZERO);
            if age < self.stale_temp_age {
                continue;
            }
            match apply::remove_temp(&spec.root, &t.rel) {
                Ok(true) => stats.temps_removed += 1,
                Ok(false) => {}
                Err(e) => stats.errors.push(e.to_string()),
            }
        }
    }
}

/// Applies `plan` (from `remote`) to `spec`'s root, recording what happens in `stats`.
/// Applies `plan`; the files written (each checked against its hash).
fn execute<'p>(
    spec: &SetSpec,
    src: &mut dyn Source,
    plan: &'p Plan,
    remote: &Manifest,
    stats: &mut PassStats,
    scanner: &Scanner,
) -> Vec<(&'p Entry, Option<Arc<BlockList>>)> {
    let root = spec.root.as_path();
    for p in &plan.delete {
        match apply::delete(root, p) {
            Ok(removed) => stats.deleted += u64::from(removed),
            Err(e) => stats.errors.push(e.to_string()),
        }
    }
    for e in &plan.mkdirs {
        if note(stats, make_dir(root, e)) {
            stats.dirs += 1;
        }
    }
    // File contents are fsynced one by one before their rename; the renames
    // are made durable with one fsync per directory after the batch.
    let mut renamed_in: BTreeSet<&str> = BTreeSet::new();
    let mut fetched = Vec::new();
    for (e, r) in fetch_all(spec, src, &plan.fetch, remote.version, scanner) {
        match r {
            Ok(got) => {
                renamed_in.insert(e.path.rsplit_once('/').map_or("", |(d, _)| d));
                stats.files += 1;
                stats.bytes += got.written;
                match got.delta {
                    // A delta was checked against the standby's list of its old copy,
                    // not read back: the next scan reads it, so that an old copy that
                    // changed unseen (a write through a shared mapping leaves the times
                    // alone) is found and fetched again.
                    Some(fetched_bytes) => {
                        stats.delta_files += 1;
                        stats.delta_fetched += fetched_bytes;
                    }
                    None => fetched.push((e, got.blocks)),
                }
            }
            Err(e) => stats.errors.push(e.to_string()),
        }
    }
    note(stats, sync_dirs(root, renamed_in));
    for e in &plan.links {
        if note(stats, make_symlink(root, e)) {
            stats.links += 1;
        }
    }
    for e in &plan.meta {
        if note(stats, set_meta(root, e)) {
            stats.meta += 1;
        }
    }
    let written = plan
        .mkdirs
        .iter()
        .chain(&plan.fetch)
        .chain(&plan.links)
        .chain(&plan.meta);
    stats.owners_not_set += written.filter(|e| !owner_settable(e.uid, e.gid)).count() as u64;

    // A directory's mtime changes as entries go in or out of it: give every directory touched
    // (or above something touched) its mtime again, deepest first.
    let mut touched: BTreeSet<&str> = BTreeSet::new();
    let changed = plan
        .mkdirs
        .iter()
        .chain(&plan.fetch)
        .chain(&plan.links)
        .map(|e| e.path.as_str());
    for p in changed.chain(plan.delete.iter().map(String::as_str)) {
        touched.extend(p.match_indices('/').map(|(i, _)| &p[..i]));
    }
    touched.extend(plan.mkdirs.iter().map(|e| e.path.as_str()));
    let dirs: Vec<&Entry> = remote
        .entries
        .iter()
        .filter(|e| e.kind == Kind::Dir && touched.contains(e.path.as_str()))
        .collect();
    for e in dirs.into_iter().rev() {
        note(stats, set_meta(root, e));
    }
    fetched
}

/// At most this many small files, or bytes, wait to be committed together
/// ([`apply::commit_all`]): one journal commit for the lot, and a bound on what a worker
/// holds open (two descriptors a file, the file and its directory: with four workers,
/// 512 at most; the agent raises its soft limit to the hard one at start).
const COMMIT_FILES: usize = 64;
const COMMIT_BYTES: u64 = 16 << 20;

/// What fetching one file gave: written and in place, or written and checked, waiting to
/// be committed with others.
enum Fetched {
    Done(Got),
    Staged(Staged),
}

impl Got {
    fn whole(written: u64) -> Got {
        Got {
            written,
            delta: None,
            blocks: None,
        }
    }
}

/// One file written: its bytes, and for a delta the bytes it fetched and the new block
/// list.
struct Got {
    written: u64,
    /// For a delta, the bytes it fetched.
    delta: Option<u64>,
    /// The new file's blocks, for a large file (kept for its next delta).
    blocks: Option<Arc<BlockList>>,
}

/// Fetches and writes every file of `fetch`, several at once when `src` can
/// be forked; each file's outcome, in no particular order.
fn fetch_all<'p>(
    spec: &SetSpec,
    src: &mut dyn Source,
    fetch: &'p [Entry],
    version: u32,
    scanner: &Scanner,
) -> Vec<(&'p Entry, Result<Got, SyncError>)> {
    let root = spec.root.as_path();
    let one = |src: &mut dyn Source, e: &Entry| {
        // A large file the standby has an old copy of comes as a delta; when that fails
        // for any reason (no block list served, the file changed meanwhile, a block that
        // does not check out), it is fetched whole.
        // (A peer of manifest version 1 serves block lists of version 3, which this
        // build does not read: not asked.)
        if by_leaves(version) {
            if let Some(Ok(got)) = fetch_delta(spec, src, e, scanner) {
                return Ok(Fetched::Done(got));
            }
        }
        let mut body = src
            .file(&spec.name, &e.path)
            .map_err(|m| SyncError::Source(format!("{:?}: {m}", e.path)))?;
        let staged = stage_file_as(root, e, &mut body, version)?;
        if e.size < delta::DELTA_MIN {
            // A small file waits, written and checked, to be committed with others.
            return Ok(Fetched::Staged(staged));
        }
        // A large file was cut into leaves on its way to disk (its hash is theirs), so
        // its next delta need not read it again.
        let blocks = staged.blocks.clone();
        let written = staged.size;
        staged.commit(root, DirSync::Later)?;
        Ok(Fetched::Done(Got {
            written,
            delta: None,
            blocks,
        }))
    };
    // One worker: fetch files until none is left, committing the small ones in batches.
    let work = |src: &mut dyn Source, take: &dyn Fn() -> Option<&'p Entry>| {
        let mut out = Vec::new();
        let mut batch: Vec<(&'p Entry, Staged)> = Vec::new();
        let mut batch_bytes = 0;
        let commit = |batch: &mut Vec<(&'p Entry, Staged)>, out: &mut Vec<_>| {
            let (entries, staged): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
            for (e, r) in entries.into_iter().zip(commit_all(root, staged)) {
                out.push((e, r.map(Got::whole)));
            }
        };
        while let Some(e) = take() {
            match one(src, e) {
                Ok(Fetched::Staged(st)) => {
                    batch_bytes += st.size;
                    batch.push((e, st));
                    if batch.len() >= COMMIT_FILES || batch_bytes >= COMMIT_BYTES {
                        commit(&mut batch, &mut out);
                        batch_bytes = 0;
                    }
                }
                Ok(Fetched::Done(got)) => out.push((e, Ok(got))),
                Err(err) => out.push((e, Err(err))),
            }
        }
        commit(&mut batch, &mut out);
        out
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let take = || fetch.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let forks: Vec<Box<dyn Source + Send>> = if fetch.len() > 1 {
        (1..PARALLEL_FETCHES).map_while(|_| src.fork()).collect()
    } else {
        Vec::new()
    };
    if forks.is_empty() {
        return work(src, &take);
    }
    std::thread::scope(|s| {
        let workers: Vec<_> = forks
            .into_iter()
            .map(|mut f| s.spawn(move || work(f.as_mut(), &take)))
            .collect();
        let mut out = work(&mut *src, &take);
        for w in workers {
            // A worker that panicked loses its results; those files are
            // simply fetched again by the next pass.
            if let Ok(more) = w.join() {
                out.extend(more);
            }
        }
        out
    })
}

/// Groups whose details one `sync/blocks` request asks for, at most: the request stays
/// far under the peer's 1 MiB body limit, and the answer (40 bytes a leaf, at most 256
/// leaves a group, 64 on average) under the manifest's size limit.
const DETAILS_BATCH: usize = 2048;

/// `e` as a delta from the local copy at its path, if it is large and there is one
/// (`None`: not a case for a delta).
fn fetch_delta(
    spec: &SetSpec,
    src: &mut dyn Source,
    e: &Entry,
    scanner: &Scanner,
) -> Option<Result<Got, SyncError>> {
    let want = e.hash.as_deref()?;
    if e.size < delta::DELTA_MIN {
        return None;
    }
    let (old, old_len) = open_served(spec, &e.path).ok()?;
    if old_len < u64::from(delta::LEAF) {
        return None;
    }
    let fail = |m: String| SyncError::Source(format!("{:?}: delta: {m}", e.path));
    let listed = match src.blocks(&spec.name, &e.path, want, None) {
        Ok(bytes) => bytes,
        Err(m) => return Some(Err(fail(m))),
    };
    let summary = match delta::decode_summary(&listed) {
        Ok(s) if s.size == e.size && apply::hex(&s.hash) == want => s,
        Ok(_) => return Some(Err(fail("the summary is not the manifest's file".into()))),
        Err(x) => return Some(Err(fail(x.to_string()))),
    };
    let abs = spec.root.join(&e.path);
    let Ok(before) = old.metadata() else {
        return None;
    };
    let mine = match scanner.cached_blocks(&abs, &old) {
        Some(l) => l,
        None => match delta::index_file(&old) {
            Ok(l) => Arc::new(l),
            Err(x) => return Some(Err(fail(format!("reading the old copy: {x}")))),
        },
    };
    let unknown = delta::unknown_groups(&mine, &summary);
    let mut crossed = listed.len() as u64;
    // In batches, so that neither a request nor an answer outgrows the limits on them
    // (an insert near the start of a large file makes every group unknown).
    let mut details = Vec::with_capacity(unknown.len());
    for batch in unknown.chunks(DETAILS_BATCH) {
        let bytes = match src.blocks(&spec.name, &e.path, want, Some(batch)) {
            Ok(b) => b,
            Err(m) => return Some(Err(fail(m))),
        };
        crossed += bytes.len() as u64;
        match delta::decode_details(&bytes, &summary, batch) {
            Ok(d) => details.extend(d),
            Err(x) => return Some(Err(fail(x.to_string()))),
        }
    }
    let mut pieces = match delta::plan(&mine, &summary, &unknown, &details) {
        Ok((pieces, _)) => pieces,
        Err(x) => return Some(Err(fail(x.to_string()))),
    };
    drop(details);
    // Leaves an insert or a deletion shifted are in the old copy at other offsets.
    if let Err(x) = delta::relocate(&old, old_len, &mut pieces) {
        return Some(Err(fail(format!("reading the old copy: {x}"))));
    }
    if delta::remote_bytes(&pieces) > e.size / 10 * 9 {
        return None; // little in common: whole is as cheap, and gives the block list
    }
    let fetch = delta::remote_bytes(&pieces);
    let ranges = delta::ranges(&pieces);
    let body: Box<dyn Read + '_> = if ranges.is_empty() {
        Box::new(std::io::empty())
    } else {
        match src.ranges(&spec.name, &e.path, want, &ranges) {
            Ok(r) => r,
            Err(m) => return Some(Err(fail(m))),
        }
    };
    // Every fetched block is checked against the details, the details against the signed
    // summary, and the old runs are the blocks `mine` lists: the new file is the
    // summary's, byte for byte, if the old copy did not change meanwhile, which its
    // times say (a change sets the ctime). So the new file is not read back for its
    // SHA-256: with reflinks its unchanged runs are never even copied.
    let staged = apply::stage_with(&spec.root, e, |f| {
        let n = delta::assemble(&old, f, &pieces, body)
            .map_err(|x| fail(format!("building the new file: {x}")))?;
        match old.metadata() {
            Ok(after) if same_file_state(&before, &after) => Ok(n),
            _ => Err(fail(
                "the old copy changed while the new one was built".into(),
            )),
        }
    });
    let written = staged.and_then(|s| {
        let n = s.size;
        s.commit(&spec.root, DirSync::Later).map(|()| n)
    });
    Some(written.map(|written| Got {
        written,
        delta: Some(fetch + crossed),
        blocks: None,
    }))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether two looks at one open file saw the same content: same size, mtime and ctime.
fn same_file_state(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (
        a.size(),
        a.mtime(),
        a.mtime_nsec(),
        a.ctime(),
        a.ctime_nsec(),
    ) == (
        b.size(),
        b.mtime(),
        b.mtime_nsec(),
        b.ctime(),
        b.ctime_nsec(),
    )
}

/// Whether `r` succeeded; its error, if any, recorded.
fn note(stats: &mut PassStats, r: Result<(), SyncError>) -> bool {
    match r {
        Ok(()) => true,
        Err(e) => {
            stats.errors.push(e.to_string());
            false
        }
    }
}

/// Serves a set of this machine, as the active does: scan for the manifest, [`open_served`]
/// for files. For tests and benchmarks.
#[derive(Debug)]
pub struct LocalSource {
    spec: SetSpec,
    limits: Limits,
    scanner: Scanner,
}

impl LocalSource {
    pub fn new(spec: SetSpec, limits: Limits) -> LocalSource {
        LocalSource {
            spec,
            limits,
            scanner: Scanner::new(),
        }
    }

    pub fn scanner(&self) -> &Scanner {
        &self.scanner
    }
}

impl Source for LocalSource {
    fn manifest(&mut self, set: &str) -> Result<Vec<u8>, String> {
        if set != self.spec.name {
            return Err(format!("no set {set:?}"));
        }
        let (m, _) = self
            .scanner
            .scan(&self.spec, &self.limits)
            .map_err(|e| e.to_string())?;
        Ok(encode(&m))
    }

    fn file(&mut self, set: &str, path: &str) -> Result<Box<dyn Read + '_>, String> {
        if set != self.spec.name {
            return Err(format!("no set {set:?}"));
        }
        let (f, len) = open_served(&self.spec, path).map_err(|e| e.to_string())?;
        Ok(Box::new(f.take(len)))
    }

    /// Files are served without the scanner, so a fork needs none of its cache.
    fn fork(&self) -> Option<Box<dyn Source + Send>> {
        Some(Box::new(LocalSource::new(self.spec.clone(), self.limits)))
    }

    fn blocks(
        &mut self,
        set: &str,
        path: &str,
        hash: &str,
        groups: Option<&[u32]>,
    ) -> Result<Vec<u8>, String> {
        if set != self.spec.name {
            return Err(format!("no set {set:?}"));
        }
        let (f, _) = open_served(&self.spec, path).map_err(|e| e.to_string())?;
        match self.scanner.blocks(&self.spec.root.join(path), &f, hash) {
            Ok(Some(list)) => delta::serve(&list, groups),
            Ok(None) => Err(format!("{path:?} changed since the manifest")),
            Err(e) => Err(e.to_string()),
        }
    }

    fn ranges(
        &mut self,
        set: &str,
        path: &str,
        _hash: &str,
        ranges: &[(u64, u64)],
    ) -> Result<Box<dyn Read + '_>, String> {
        if set != self.spec.name {
            return Err(format!("no set {set:?}"));
        }
        let (f, _) = open_served(&self.spec, path).map_err(|e| e.to_string())?;
        Ok(Box::new(RangeReader {
            file: f,
            ranges: ranges.to_vec(),
            next: 0,
            at: 0,
            end: 0,
        }))
    }
}

/// Byte ranges of a file, one after another (what `sync/ranges` streams).
#[derive(Debug)]
struct RangeReader {
    file: std::fs::File,
    ranges: Vec<(u64, u64)>,
    next: usize,
    at: u64,
    end: u64,
}

impl Read for RangeReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        while self.at == self.end {
            match self.ranges.get(self.next) {
                Some(&(o, l)) => (self.at, self.end) = (o, o.saturating_add(l)),
                None => return Ok(0),
            }
            self.next += 1;
        }
        let want = out
            .len()
            .min(usize::try_from(self.end - self.at).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut out[..want], self.at)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.at += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
#[path = "pull_tests.rs"]
mod tests;
