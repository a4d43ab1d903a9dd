//! The shell's side of file sync: what the peer API serves (manifests, file
//! contents, hints, full-copy jobs), the puller thread that keeps the standby
//! up to date, and the full copies the core asks for.
//!
//! Data always flows from the server that holds the data (the active one, or
//! the source of a full copy) to the other: the standby *pulls*. The timed pass
//! per class is the safety net; a hint from the active (after an inotify event)
//! only makes it come sooner.

use super::direction::{peer_of, pull_source};
use super::http::PeerSource;
use super::manifest::{OLDEST, VERSION};
use super::progress::{unix_now, ClassProgress, Progress};
use super::{Limits, PassStats, Puller, Scanner, SetSpec};
use crate::config::{Replication, SyncClass, SyncSet};
use crate::ha::{Duty, PeerTarget, Severity, StatusView};
use crate::peer::auth::Keys;
use crate::peer::client::Link;
use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// One full-copy job run for the peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum JobState {
    Running,
    Done,
    Failed { error: String },
}

/// The full copy a peer asks this server to make (pulling from the caller).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Registration: the secondary copies everything from the primary.
    Initial,
    /// Failback, first pass: the primary copies the files while the secondary
    /// still serves.
    Failback,
    /// Failback, last pass: writes have stopped on the secondary at `lsn`; copy
    /// what changed since and wait for the database to reach `lsn`.
    FailbackFinal { lsn: Option<String> },
}

/// The database steps of the full copies, implemented by the agent's driver.
pub trait CopyDatabase: Send + Sync {
    /// Rebuild the local database as a copy of the peer's (registration, data gap).
    fn full_copy(&self, from: &PeerTarget) -> Result<(), String>;
    /// Wait until the local database has everything up to `lsn` from `from`.
    fn catch_up(&self, from: &PeerTarget, lsn: Option<&str>) -> Result<(), String>;
}

#[derive(Debug)]
struct Job {
    state: JobState,
}

/// File sync for one server: shared by the web workers (serving), the puller
/// thread and the copy threads.
pub struct SyncService {
    cfg: Replication,
    /// This server's Health Monitor, for the peer to pull from.
    me: PeerTarget,
    specs: Vec<(SyncSet, SetSpec)>,
    limits: Limits,
    /// Serving-side scanners, one per set, so unchanged files are not re-hashed.
    served: Vec<Mutex<Scanner>>,
    /// Pulling-side state, one per set.
    pullers: Vec<Mutex<Puller>>,
    progress: RwLock<Progress>,
    jobs: Mutex<(u64, HashMap<u64, Job>)>,
    wake: Sender<Wake>,
    wake_rx: Receiver<Wake>,
    keys: Arc<RwLock<Option<Keys>>>,
    tls: bool,
    /// The database steps of full copies, when a driver is configured.
    db: Option<Arc<dyn CopyDatabase>>,
    log: LogFn,
    /// Where `sync_failed` / `sync_recovered` go.
    events: EventFn,
    /// Failed passes in a row, per class; `sync_failed` is raised at
    /// `FAILED_PASSES` and cleared by the next good pass.
    failing: Mutex<HashMap<SyncClass, u32>>,
    /// Refused entries already logged.
    skipped_seen: Mutex<std::collections::HashSet<String>>,
}

impl std::fmt::Debug for SyncService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncService")
            .field("sets", &self.specs.len())
            .finish()
    }
}

/// Where the service reports: `(is_error, text)`.
pub type LogFn = Box<dyn Fn(bool, &str) + Send + Sync>;

/// Where the service's events go (the journal and notifications):
/// `(kind, severity, text)`.
pub type EventFn = Box<dyn Fn(&str, Severity, String) + Send + Sync>;

/// Failed passes in a row of one class before `sync_failed` is raised (a
/// single failure is usually the active server going away).
const FAILED_PASSES: u32 = 3;

/// Why the puller thread wakes before its timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    Hint(SyncClass),
    Stop,
}

/// An answer for the peer API: status and body, or an error message.
pub type Answer = Result<Vec<u8>, (u16, String)>;

#[derive(Deserialize)]
struct SetRequest {
    set: String,
    /// The newest manifest version the caller reads (absent before version 2).
    #[serde(default)]
    version: u32,
}

#[derive(Deserialize)]
struct FileRequest {
    set: String,
    path: String,
}

/// `sync/blocks` and `sync/ranges`: a file of a set as the manifest gave it (its content
/// hash), and for ranges the bytes wanted.
#[derive(Deserialize)]
struct DeltaRequest {
    set: String,
    path: String,
    hash: String,
    #[serde(default)]
    ranges: Vec<(u64, u64)>,
    /// For `blocks`: the groups whose details are wanted (absent: the summary).
    #[serde(default)]
    groups: Option<Vec<u32>>,
}

/// A file to stream ranges of: the open file and `(offset, length)` ranges.
pub type Ranges = (std::fs::File, Vec<(u64, u64)>);

/// Most ranges in one request (the request body's 1 MiB limit allows about 50 000 in
/// practice; a standby that needs more fetches the file whole).
const MAX_RANGES: usize = 1 << 20;

#[derive(Deserialize)]
struct HintRequest {
    class: SyncClass,
}

#[derive(Deserialize)]
struct JobRequest {
    job: u64,
}

/// `sync/pull`: a full copy of `kind`, from the caller at `from`.
#[derive(Serialize, Deserialize)]
struct PullRequest {
    kind: JobKind,
    from: PeerTarget,
}

#[derive(Serialize, Deserialize)]
struct JobStarted {
    job: u64,
}

impl SyncService {
    /// How this server calls its peer: from its own address.
    fn link(&self) -> Link {
        Link {
            from: self.me.address.parse().ok(),
            tls: self.tls,
        }
    }

    /// `log(error, text)` reports what the service does (errors when `error`).
    pub fn new(
        cfg: Replication,
        me: PeerTarget,
        keys: Arc<RwLock<Option<Keys>>>,
        tls: bool,
        log: LogFn,
        events: EventFn,
        db: Option<Arc<dyn CopyDatabase>>,
    ) -> Arc<SyncService> {
        let limits = Limits {
            max_entries: cfg.max_manifest_entries,
            max_manifest_bytes: cfg.max_manifest_bytes,
            max_file_bytes: cfg.max_file_bytes,
        };
        let specs: Vec<(SyncSet, SetSpec)> = cfg
            .sets
            .iter()
            .map(|s| {
                let spec = SetSpec {
                    name: s.name.clone(),
                    root: s.path.clone(),
                    include: s.include.clone(),
                    exclude: s.exclude.clone(),
                    keep_setid: s.keep_setid,
                };
                (s.clone(), spec)
            })
            .collect();
        let mut progress = Progress {
            direction: "idle".into(),
            ..Progress::default()
        };
        for (s, _) in &specs {
            progress.class_mut(s.class).sets += 1;
        }
        let (wake, wake_rx) = unbounded();
        Arc::new(SyncService {
            served: specs.iter().map(|_| Mutex::new(Scanner::new())).collect(),
            pullers: specs.iter().map(|_| Mutex::new(Puller::new())).collect(),
            specs,
            limits,
            cfg,
            me,
            progress: RwLock::new(progress),
            jobs: Mutex::new((0, HashMap::new())),
            wake,
            wake_rx,
            keys,
            tls,
            db,
            log,
            events,
            failing: Mutex::new(HashMap::new()),
            skipped_seen: Mutex::new(std::collections::HashSet::new()),
        })
    }

    fn observe(&self, kind: &str, severity: Severity, text: String) {
        (self.events)(kind, severity, text);
    }

    /// Logs a refused entry once (passes repeat every few seconds).
    fn note_skipped(&self, set: &str, s: &super::Skipped) {
        let key = format!("{set}\0{}\0{}", s.path, s.reason);
        let new = self.skipped_seen.lock().is_ok_and(|mut seen| {
            if seen.len() >= 10_000 {
                seen.clear();
            }
            seen.insert(key)
        });
        if new {
            (self.log)(
                true,
                &format!("sync set {set}: not synced: {}: {}", s.path, s.reason),
            );
        }
    }

    /// Count a pass of `class`: raise or clear the `sync_failed` alarm.
    fn pass_outcome(&self, class: SyncClass, error: Option<String>) {
        let Ok(mut failing) = self.failing.lock() else {
            return;
        };
        let n = failing.entry(class).or_insert(0);
        match error {
            Some(e) => {
                *n += 1;
                if *n == FAILED_PASSES {
                    self.observe(
                        "sync_failed",
                        Severity::Error,
                        format!(
                            "{} sets: {FAILED_PASSES} passes in a row failed: {e}",
                            class.label()
                        ),
                    );
                }
            }
            None => {
                if *n >= FAILED_PASSES {
                    self.observe(
                        "sync_recovered",
                        Severity::Info,
                        format!("{} sets: a pass completed", class.label()),
                    );
                }
                *n = 0;
            }
        }
    }

    pub fn has_sets(&self) -> bool {
        !self.specs.is_empty()
    }

    /// What file sync is doing, as of the core's latest `view`.
    pub fn progress(&self, view: Option<&StatusView>) -> Progress {
        let mut p = self.progress.read().map(|p| p.clone()).unwrap_or_default();
        p.direction = match view {
            Some(v) if pull_source(v).is_some() => "pulling",
            Some(v) if v.duty == Duty::Active => "serving",
            _ => "idle",
        }
        .to_string();
        p.aged(unix_now())
    }

    fn set_of(&self, name: &str) -> Option<usize> {
        self.specs.iter().position(|(s, _)| s.name == name)
    }

    fn keys(&self) -> Result<Keys, String> {
        self.keys
            .read()
            .ok()
            .and_then(|k| k.clone())
            .ok_or_else(|| "no authentication key is set on this server".to_string())
    }

    // ----- serving (called by the web workers after the signature checked) --

    /// `sync/manifest`: the named set as this server has it now.
    pub fn serve_manifest(&self, body: &[u8]) -> Answer {
        let req: SetRequest = serde_json::from_slice(body).map_err(|e| (400, e.to_string()))?;
        // A standby from before version 2 sends none, and reads version 1 only; a newer
        // one reads this server's, or it would not have asked.
        let version = req.version.clamp(OLDEST, VERSION);
        let i = self
            .set_of(&req.set)
            .ok_or((404, format!("no sync set named {:?} here", req.set)))?;
        let spec = &self.specs[i].1;
        let mut scanner = self.served[i]
            .lock()
            .map_err(|_| (500, "scanner unavailable".to_string()))?;
        let (manifest, skipped) = scanner
            .scan_as(spec, &self.limits, version)
            .map_err(|e| (500, format!("set {}: {e}", spec.name)))?;
        for s in skipped {
            self.note_skipped(&spec.name, &s);
        }
        Ok(super::manifest::encode(&manifest))
    }

    /// `sync/file`: open one file of a set for streaming.
    pub fn serve_file(&self, body: &[u8]) -> Result<(std::fs::File, u64), (u16, String)> {
        let req: FileRequest = serde_json::from_slice(body).map_err(|e| (400, e.to_string()))?;
        let i = self
            .set_of(&req.set)
            .ok_or((404, format!("no sync set named {:?} here", req.set)))?;
        super::open_served(&self.specs[i].1, &req.path).map_err(|e| {
            (self.log)(
                true,
                &format!("sync set {}: refused to serve {:?}: {e}", req.set, req.path),
            );
            (403, e.to_string())
        })
    }

    /// `sync/blocks`: the summary of one file, or the details of some of its groups, if
    /// it is still the content the standby asks about (409 when it changed since the
    /// manifest: the standby fetches it whole).
    pub fn serve_blocks(&self, body: &[u8]) -> Answer {
        let req: DeltaRequest = serde_json::from_slice(body).map_err(|e| (400, e.to_string()))?;
        let i = self
            .set_of(&req.set)
            .ok_or((404, format!("no sync set named {:?} here", req.set)))?;
        let spec = &self.specs[i].1;
        let (file, _) = super::open_served(spec, &req.path).map_err(|e| (403, e.to_string()))?;
        let mut scanner = self.served[i]
            .lock()
            .map_err(|_| (500, "scanner unavailable".to_string()))?;
        match scanner.blocks(&spec.root.join(&req.path), &file, &req.hash) {
            Ok(Some(list)) => {
                super::delta::serve(&list, req.groups.as_deref()).map_err(|e| (400, e))
            }
            Ok(None) => Err((409, format!("{:?} changed since the manifest", req.path))),
            Err(e) => Err((500, e.to_string())),
        }
    }

    /// `sync/ranges`: byte ranges of one file, for a delta. The standby checks every leaf
    /// it receives against the signed block list, whose leaves give the manifest's hash.
    pub fn serve_ranges(&self, body: &[u8]) -> Result<Ranges, (u16, String)> {
        let req: DeltaRequest = serde_json::from_slice(body).map_err(|e| (400, e.to_string()))?;
        let i = self
            .set_of(&req.set)
            .ok_or((404, format!("no sync set named {:?} here", req.set)))?;
        let (file, len) =
            super::open_served(&self.specs[i].1, &req.path).map_err(|e| (403, e.to_string()))?;
        if req.ranges.len() > MAX_RANGES
            || req
                .ranges
                .iter()
                .any(|&(o, l)| l == 0 || o.checked_add(l).is_none_or(|end| end > len))
        {
            return Err((400, format!("bad ranges for {:?} ({len} bytes)", req.path)));
        }
        Ok((file, req.ranges))
    }

    /// `sync/hint`: the active saw a change in a class; pull it soon.
    pub fn hint(&self, body: &[u8]) -> Answer {
        let req: HintRequest = serde_json::from_slice(body).map_err(|e| (400, e.to_string()))?;
        let _ = self.wake.send(Wake::Hint(req.class));
        Ok(b"{}".to_vec())
    }

    /// `sync/pull`: start a full copy from the caller, answer its job id.
    pub fn start_job(self: &Arc<Self>, body: &[u8]) -> Answer {
        let PullRequest { kind, from } =
            serde_json::from_slice(body).map_err(|e| (400, e.to_string()))?;
        let id = {
            let mut jobs = self
                .jobs
                .lock()
                .map_err(|_| (500, "jobs unavailable".to_string()))?;
            if jobs.1.values().any(|j| j.state == JobState::Running) {
                return Err((409, "a full copy is already running here".into()));
            }
            jobs.0 += 1;
            let id = jobs.0;
            jobs.1.retain(|_, j| j.state == JobState::Running);
            jobs.1.insert(
                id,
                Job {
                    state: JobState::Running,
                },
            );
            id
        };
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("sync-job".into())
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    me.run_job(&kind, &from)
                }))
                .unwrap_or_else(|_| Err("the copy job panicked".to_string()));
                if let Ok(mut jobs) = me.jobs.lock() {
                    if let Some(j) = jobs.1.get_mut(&id) {
                        j.state = match result {
                            Ok(()) => JobState::Done,
                            Err(error) => JobState::Failed { error },
                        };
                    }
                }
            });
        if spawned.is_err() {
            return Err((500, "could not start the copy thread".into()));
        }
        serde_json::to_vec(&JobStarted { job: id }).map_err(|e| (500, e.to_string()))
    }

    /// `sync/job`: how a job started by `sync/pull` is doing.
    pub fn job_state(&self, body: &[u8]) -> Answer {
        let req: JobRequest = serde_json::from_slice(body).map_err(|e| (400, e.to_string()))?;
        let jobs = self
            .jobs
            .lock()
            .map_err(|_| (500, "jobs unavailable".to_string()))?;
        let job = jobs
            .1
            .get(&req.job)
            .ok_or((404, format!("no copy job {}", req.job)))?;
        serde_json::to_vec(&job.state).map_err(|e| (500, e.to_string()))
    }

    fn run_job(&self, kind: &JobKind, from: &PeerTarget) -> Result<(), String> {
        let name = match kind {
            JobKind::Initial => "initial",
            JobKind::Failback => "failback",
            JobKind::FailbackFinal { .. } => "failback (final)",
        };
        self.noted(name, || self.copy_from(from, kind))
    }

    /// Runs the full copy `name`, shown in the progress while it runs and after.
    fn noted(&self, name: &str, copy: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
        self.note_copy(format!("{name}: running"));
        let result = copy();
        self.note_copy(match &result {
            Ok(()) => format!("{name}: done"),
            Err(e) => format!("{name}: failed: {e}"),
        });
        result
    }

    fn note_copy(&self, what: String) {
        (self.log)(what.contains("failed"), &format!("full copy {what}"));
        if let Ok(mut p) = self.progress.write() {
            p.copy = Some(what);
        }
    }

    /// Every set from `from`, then the database step the kind needs.
    fn copy_from(&self, from: &PeerTarget, kind: &JobKind) -> Result<(), String> {
        let stats = self.pull_sets(from, |_| true)?;
        if let Some(e) = stats.iter().flat_map(|(_, s)| s.errors.first()).next() {
            return Err(format!("file copy incomplete: {e}"));
        }
        match (kind, &self.db) {
            (_, None) => Ok(()),
            (JobKind::Initial, Some(db)) => db.full_copy(from),
            (JobKind::Failback, Some(_)) => Ok(()),
            (JobKind::FailbackFinal { lsn }, Some(db)) => db.catch_up(from, lsn.as_deref()),
        }
    }

    /// The data-gap copy, run locally: everything from the peer, database in
    /// full, as registration's copy does.
    pub fn data_gap_copy(&self, from: &PeerTarget) -> Result<(), String> {
        self.noted("data-gap", || self.copy_from(from, &JobKind::Initial))
    }

    /// Ask the peer to run a full copy from us and wait for it to finish.
    pub fn remote_copy(&self, peer: &PeerTarget, kind: &JobKind) -> Result<(), String> {
        let keys = self.keys()?;
        let mut src = PeerSource::new(peer.clone(), keys, self.link(), self.limits);
        let request = PullRequest {
            kind: kind.clone(),
            from: self.me.clone(),
        };
        let body = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
        let started: JobStarted = serde_json::from_slice(&src.call("pull", &body)?)
            .map_err(|e| format!("malformed job answer: {e}"))?;
        let deadline = Instant::now() + self.cfg.copy_timeout;
        let ask = serde_json::to_vec(&serde_json::json!({ "job": started.job }))
            .map_err(|e| e.to_string())?;
        let mut failures = 0;
        loop {
            std::thread::sleep(Duration::from_millis(300));
            match src.call("job", &ask) {
                Ok(bytes) => {
                    failures = 0;
                    match serde_json::from_slice::<JobState>(&bytes) {
                        Ok(JobState::Done) => return Ok(()),
                        Ok(JobState::Failed { error }) => {
                            return Err(format!("the peer's copy failed: {error}"))
                        }
                        Ok(JobState::Running) => {}
                        Err(e) => return Err(format!("malformed job state: {e}")),
                    }
                }
                Err(e) => {
                    failures += 1;
                    if failures >= 10 {
                        return Err(format!("lost the peer during the copy: {e}"));
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the copy did not finish within {:?}",
                    self.cfg.copy_timeout
                ));
            }
        }
    }

    /// One pass over the chosen sets from `from`; per-set stats.
    fn pull_sets(
        &self,
        from: &PeerTarget,
        which: impl Fn(&SyncSet) -> bool,
    ) -> Result<Vec<(SyncClass, PassStats)>, String> {
        let keys = self.keys()?;
        let mut src = PeerSource::new(from.clone(), keys, self.link(), self.limits);
        let mut out = Vec::new();
        for (i, (set, spec)) in self.specs.iter().enumerate() {
            if !which(set) {
                continue;
            }
            let started = unix_now();
            let mut puller = self.pullers[i]
                .lock()
                .map_err(|_| "puller unavailable".to_string())?;
            // The replica's root is ours to make; everything below comes from the peer.
            if !spec.root.is_dir() {
                std::fs::create_dir_all(&spec.root).map_err(|e| {
                    format!("set {}: creating {}: {e}", set.name, spec.root.display())
                })?;
            }
            let stats = puller
                .pass(spec, &mut src, &self.limits)
                .map_err(|e| format!("set {}: {e}", set.name))?;
            for e in &stats.errors {
                (self.log)(true, &format!("sync set {}: {e}", set.name));
            }
            for s in &stats.skipped {
                self.note_skipped(&set.name, s);
            }
            (self.log)(
                false,
                &format!(
                    "sync set {} from {}: {} file(s), {} byte(s), {} deleted, {} error(s) \
                     in {} ms (manifest {} ms)",
                    set.name,
                    from.address,
                    stats.files,
                    stats.bytes,
                    stats.deleted,
                    stats.errors.len(),
                    stats.pass_ms,
                    stats.manifest_ms
                ),
            );
            self.record(set.class, &stats, started);
            out.push((set.class, stats));
        }
        Ok(out)
    }

    fn record(&self, class: SyncClass, s: &PassStats, started: u64) {
        if let Ok(mut p) = self.progress.write() {
            let c = p.class_mut(class);
            c.files = s.files;
            c.bytes = s.bytes;
            c.deleted = s.deleted;
            c.total_files += s.files;
            c.total_bytes += s.bytes;
            c.delta_files += s.delta_files;
            c.delta_fetched += s.delta_fetched;
            c.errors = s.errors.iter().take(10).cloned().collect();
            c.skipped = s
                .skipped
                .iter()
                .take(10)
                .map(|k| format!("{}: {}", k.path, k.reason))
                .collect();
            if s.errors.is_empty() {
                c.last_ok = Some(started);
            }
        }
    }

    /// The puller: every class on its timer, sooner on a hint, while this
    /// server is the standby of an active peer. `status` reads the core's
    /// latest published view.
    pub fn run_puller(
        self: Arc<Self>,
        status: impl Fn() -> Option<StatusView>,
        on_lag: impl Fn(Option<crate::ha::SyncBeat>),
    ) {
        // The lag goes into our heartbeats: told on a change of direction,
        // else at most every LAG_EVERY.
        const LAG_EVERY: Duration = Duration::from_secs(5);
        let mut told: Option<(Option<crate::ha::SyncBeat>, Instant)> = None;
        // When each class is next due; hints not yet served. Both are kept
        // while this server is not pulling (and everything falls due the
        // moment it starts to: a new standby copies at once, not a full
        // interval later).
        let mut due: HashMap<SyncClass, Instant> = HashMap::new();
        let mut hinted: std::collections::HashSet<SyncClass> = Default::default();
        let mut pulling = false;
        let tick = Duration::from_secs(1);
        loop {
            let next = due.values().min().copied();
            // Wake at least every second to follow the direction (status).
            let wait = match (pulling, next) {
                (true, Some(t)) => t.saturating_duration_since(Instant::now()).min(tick),
                _ => tick,
            };
            match self.wake_rx.recv_timeout(wait) {
                Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Wake::Hint(c)) => {
                    hinted.insert(c);
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            // Hints that came meanwhile are served by this same pass.
            while let Ok(w) = self.wake_rx.try_recv() {
                match w {
                    Wake::Stop => return,
                    Wake::Hint(c) => {
                        hinted.insert(c);
                    }
                }
            }
            let Some(view) = status() else { continue };
            let lag = pull_source(&view).map(|_| self.lag());
            let tell = match &told {
                None => true,
                Some((was, at)) => {
                    was.is_some() != lag.is_some() || (*was != lag && at.elapsed() >= LAG_EVERY)
                }
            };
            if tell {
                on_lag(lag);
                told = Some((lag, Instant::now()));
            }
            let Some(source) = pull_source(&view) else {
                pulling = false;
                continue;
            };
            let now = Instant::now();
            if !pulling {
                pulling = true;
                due.insert(SyncClass::Frequent, now);
                due.insert(SyncClass::Batch, now);
            }
            let classes: Vec<SyncClass> = [SyncClass::Frequent, SyncClass::Batch]
                .into_iter()
                .filter(|c| hinted.contains(c) || due.get(c).is_some_and(|t| *t <= now))
                .collect();
            if classes.is_empty() {
                continue;
            }
            // Moved on before anything else: a class left due would make the next wait
            // zero, and the loop spin (it did, with no sets configured).
            for c in &classes {
                let every = match c {
                    SyncClass::Frequent => self.cfg.frequent_interval,
                    SyncClass::Batch => self.cfg.batch_interval,
                };
                due.insert(*c, now + every);
                hinted.remove(c);
            }
            if !self.has_sets() {
                continue;
            }
            match self.pull_sets(&source, |s| classes.contains(&s.class)) {
                Err(e) => {
                    (self.log)(true, &format!("file sync from {}: {e}", source.address));
                    for c in &classes {
                        self.pass_outcome(*c, Some(e.clone()));
                    }
                }
                Ok(stats) => {
                    for c in &classes {
                        let first = stats
                            .iter()
                            .filter(|(k, _)| k == c)
                            .find_map(|(_, s)| s.errors.first().cloned());
                        self.pass_outcome(*c, first);
                    }
                }
            }
        }
    }

    /// Seconds since the last complete pass, per class with sets.
    fn lag(&self) -> crate::ha::SyncBeat {
        let p = self.progress(None);
        let class = |c: &ClassProgress| crate::ha::ClassBeat {
            lag: (c.sets > 0)
                .then(|| c.lag_secs.map(|s| u32::try_from(s).unwrap_or(u32::MAX - 1)))
                .flatten(),
            files: u32::try_from(c.files).unwrap_or(u32::MAX),
            bytes: c.bytes,
        };
        crate::ha::SyncBeat {
            frequent: class(&p.frequent),
            batch: class(&p.batch),
        }
    }

    /// Stop the puller thread.
    pub fn stop(&self) {
        let _ = self.wake.send(Wake::Stop);
    }

    /// The active side: tell the standby that a class changed.
    pub fn send_hint(&self, peer: &PeerTarget, class: SyncClass) -> Result<(), String> {
        let keys = self.keys()?;
        let mut src = PeerSource::new(peer.clone(), keys, self.link(), self.limits);
        let body = serde_json::to_vec(&serde_json::json!({ "class": class }))
            .map_err(|e| e.to_string())?;
        src.call("hint", &body).map(drop)
    }

    /// The active side: watch the sets and hint the standby after changes,
    /// until `stop`.
    pub fn run_hinter(
        self: Arc<Self>,
        status: impl Fn() -> Option<StatusView>,
        stop: &std::sync::atomic::AtomicBool,
    ) {
        use super::inotify::{Debounce, Watcher};
        let roots = self
            .specs
            .iter()
            .map(|(s, _)| (s.path.clone(), s.class))
            .collect();
        let mut watcher = match Watcher::new(roots) {
            Ok(w) => w,
            Err(e) => {
                (self.log)(
                    true,
                    &format!("file sync: inotify unavailable ({e}); timed passes only"),
                );
                return;
            }
        };
        let delay = self.cfg.hint_delay;
        let mut pending = Debounce::default();
        let tick = Duration::from_millis(500);
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let wait = pending
                .next(Instant::now(), delay)
                .unwrap_or(tick)
                .min(tick);
            let changed = watcher.wait(wait);
            pending.add(changed, Instant::now());
            let due = pending.due(Instant::now(), delay);
            if due.is_empty() {
                continue;
            }
            let Some(view) = status() else { continue };
            if view.duty != Duty::Active || !view.peer_reachable {
                continue;
            }
            let Some(peer) = peer_of(&view) else { continue };
            for class in due {
                if let Err(e) = self.send_hint(&peer, class) {
                    (self.log)(false, &format!("sync hint to {}: {e}", peer.address));
                }
            }
        }
    }

    /// The sets (and their classes) this server replicates.
    pub fn sets(&self) -> impl Iterator<Item = &SyncSet> {
        self.specs.iter().map(|(s, _)| s)
    }

    pub fn hint_delay(&self) -> Duration {
        self.cfg.hint_delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(cfg: Replication, events: EventFn) -> Arc<SyncService> {
        let me = PeerTarget {
            address: "192.0.2.11".into(),
            hm_port: 8082,
            pin: None,
        };
        SyncService::new(
            cfg,
            me,
            Arc::new(RwLock::new(None)),
            false,
            Box::new(|_, _| {}),
            events,
            None,
        )
    }

    #[test]
    fn a_standby_of_manifest_version_1_is_served_version_1() {
        use crate::sync::manifest::{decode, VERSION};
        use sha2::{Digest, Sha256};
        let dir = crate::sync::testutil::TempDir::new("svc-version");
        let d = dir.path().to_path_buf();
        let big = crate::sync::noise(3, crate::sync::delta::DELTA_MIN as usize);
        std::fs::write(d.join("big"), &big).unwrap();
        let cfg = Replication {
            frequent_interval: Duration::from_secs(11),
            batch_interval: Duration::from_secs(500),
            hint_delay: Duration::from_millis(200),
            max_manifest_entries: 10,
            max_manifest_bytes: 4096,
            max_file_bytes: 1 << 30,
            copy_timeout: Duration::from_secs(1),
            sets: vec![crate::config::SyncSet {
                name: "s".into(),
                path: d.clone(),
                include: Vec::new(),
                exclude: Vec::new(),
                class: SyncClass::Frequent,
                keep_setid: false,
            }],
        };
        let svc = service(cfg, Box::new(|_, _, _| {}));
        let limits = crate::sync::Limits {
            max_file_bytes: 1 << 30,
            ..crate::sync::Limits::default()
        };
        let hash = |body: &[u8]| {
            let m = decode(&svc.serve_manifest(body).unwrap(), &limits).unwrap();
            (m.version, m.entries[0].hash.clone().unwrap())
        };
        // A standby from before version 2 sends no version: every file by its SHA-256.
        let sha = crate::sync::apply::hex(&Sha256::digest(&big));
        assert_eq!(hash(br#"{"set":"s"}"#), (1, sha.clone()));
        // This version: the large file by its block list.
        let blocks = crate::sync::apply::hex(&crate::sync::delta::index(&big[..]).unwrap().hash);
        assert_eq!(
            hash(br#"{"set":"s","version":2}"#),
            (VERSION, blocks.clone())
        );
        // And back, each from the cache of the other's way or read again, never mixed.
        assert_eq!(hash(br#"{"set":"s","version":1}"#), (1, sha));
        assert_eq!(hash(br#"{"set":"s","version":3}"#), (VERSION, blocks));
    }

    #[test]
    fn three_failed_passes_raise_sync_failed_and_a_good_one_clears_it() {
        let cfg = Replication {
            frequent_interval: Duration::from_secs(11),
            batch_interval: Duration::from_secs(500),
            hint_delay: Duration::from_millis(200),
            max_manifest_entries: 10,
            max_manifest_bytes: 1024,
            max_file_bytes: 1024,
            copy_timeout: Duration::from_secs(1),
            sets: Vec::new(),
        };
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = seen.clone();
        let svc = service(
            cfg,
            Box::new(move |kind, _, _| sink.lock().unwrap().push(kind.to_string())),
        );
        for _ in 0..2 {
            svc.pass_outcome(SyncClass::Frequent, Some("peer went away".into()));
        }
        svc.pass_outcome(SyncClass::Batch, None);
        assert!(seen.lock().unwrap().is_empty(), "raised too early");
        svc.pass_outcome(SyncClass::Frequent, Some("hash mismatch".into()));
        svc.pass_outcome(SyncClass::Frequent, Some("hash mismatch".into()));
        assert_eq!(*seen.lock().unwrap(), vec!["sync_failed".to_string()]);
        svc.pass_outcome(SyncClass::Frequent, None);
        svc.pass_outcome(SyncClass::Frequent, None);
        assert_eq!(
            *seen.lock().unwrap(),
            vec!["sync_failed".to_string(), "sync_recovered".to_string()]
        );
    }
}
