//! The shell's replication glue: the database driver behind the duties and
//! the full copies, the replica-lag check for automatic failover, and the
//! copies the core orders (`Action::StartCopy`).
//!
//! Who runs what (see docs/replication.md):
//! - registration (`Initial`, ordered on the primary): the secondary pulls
//!   every file set and rebuilds its database from the primary's;
//! - failback (`Failback`, ordered on the active secondary): the primary
//!   pulls the files; writes stop on the secondary (its database shuts down
//!   cleanly, so every change has streamed to the primary); the primary
//!   pulls again and waits until its database has replayed up to the
//!   secondary's last position; only then do the roles swap (RPO 0);
//! - data gap (`DataGap`, ordered on a primary that was away too long): the
//!   primary pulls every set and rebuilds its database from the secondary's.

use crate::config::{Config, DbDriver};
use crate::db::{self, Database, DbRole, Lag, PeerDb};
use crate::ha::{CopyKind, Duty, PeerTarget, Severity};
use crate::sync::service::{CopyDatabase, JobKind, SyncService};
use crate::watch::Reporter;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The configured database driver, if any, its changes serialized.
pub fn driver(
    cfg: &Config,
    identity: Option<&crate::web::tls::Identity>,
) -> Result<Option<Arc<dyn Database>>, String> {
    let Some(d) = &cfg.database else {
        return Ok(None);
    };
    let inner: Box<dyn Database> = match &d.driver {
        DbDriver::None => return Ok(None),
        DbDriver::Postgres(pg) => {
            let mut pg = (**pg).clone();
            pg.tls_identity = identity.map(|id| (id.cert_pem.clone(), id.key_pem.clone()));
            Box::new(db::postgres::Postgres::new(pg)?)
        }
        DbDriver::Command(c) => Box::new(db::command::CommandDb::new(c.clone())?),
    };
    Ok(Some(Arc::new(Serialized {
        inner,
        changing: Mutex::new(()),
        stopped: AtomicBool::new(false),
    })))
}

/// A driver whose changes (copy, follow, promote, stop) run one at a time:
/// the duty executor and a copy job may both want to rebuild the database
/// (a standby duty during registration's copy), and two base backups into
/// one data directory destroy each other. Reads go straight through.
#[derive(Debug)]
pub struct Serialized {
    inner: Box<dyn Database>,
    changing: Mutex<()>,
    /// `stop` took the database down, and no change has run since.
    stopped: AtomicBool,
}

impl Serialized {
    fn one_at_a_time<T>(&self, f: impl FnOnce(&dyn Database) -> T) -> T {
        // A poisoned lock only means an earlier change panicked; go on.
        let _guard = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        f(self.inner.as_ref())
    }

    /// A change that may start the database: once it is over (done or failed), a
    /// database that is down is a failure again.
    fn starting<T>(&self, f: impl FnOnce(&dyn Database) -> T) -> T {
        self.one_at_a_time(|d| {
            let result = f(d);
            self.stopped.store(false, Ordering::SeqCst);
            result
        })
    }
}

impl Database for Serialized {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn health(&self) -> Result<(), String> {
        self.inner.health()
    }
    fn role(&self) -> Result<DbRole, String> {
        self.inner.role()
    }
    fn lag(&self) -> Result<Option<db::Lag>, String> {
        self.inner.lag()
    }
    fn initial_copy(&self, from: &PeerDb) -> Result<(), String> {
        self.starting(|d| d.initial_copy(from))
    }
    fn follow(&self, from: &PeerDb) -> Result<(), String> {
        self.starting(|d| d.follow(from))
    }
    fn promote(&self) -> Result<(), String> {
        self.starting(|d| d.promote())
    }
    fn stop_writes(&self) -> Result<String, String> {
        self.one_at_a_time(|d| d.stop_writes())
    }
    fn received(&self) -> Result<Option<String>, String> {
        self.inner.received()
    }
    fn caught_up(&self, lsn: &str) -> Result<bool, String> {
        self.inner.caught_up(lsn)
    }
    fn stop(&self) -> Result<(), String> {
        self.one_at_a_time(|d| {
            // Down on purpose from the first moment of the shutdown, so that a check
            // during it is not counted as a failure.
            self.stopped.store(true, Ordering::SeqCst);
            let stopped = d.stop();
            self.stopped.store(stopped.is_ok(), Ordering::SeqCst);
            stopped
        })
    }
    fn stopped_on_purpose(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }
}

/// Where the peer's database listens, given the peer's address.
#[derive(Debug, Clone)]
pub struct PeerPort(pub u16);

impl PeerPort {
    pub fn from_config(cfg: &Config) -> PeerPort {
        let ours = cfg.database.as_ref().and_then(|d| match &d.driver {
            DbDriver::Postgres(pg) => Some(pg.port),
            _ => None,
        });
        PeerPort(
            cfg.database
                .as_ref()
                .and_then(|d| d.peer_port)
                .or(ours)
                .unwrap_or(5432),
        )
    }

    pub fn at(&self, address: &str) -> PeerDb {
        PeerDb {
            host: address.to_string(),
            port: self.0,
        }
    }
}

/// The database steps of the full copies, for the sync service.
#[derive(Debug)]
pub struct DbCopies {
    pub db: Arc<dyn Database>,
    pub port: PeerPort,
    pub timeout: Duration,
}

impl CopyDatabase for DbCopies {
    fn full_copy(&self, from: &PeerTarget) -> Result<(), String> {
        self.db
            .initial_copy(&self.port.at(&from.address))
            .map_err(|e| format!("database copy from {}: {e}", from.address))
    }

    fn catch_up(&self, from: &PeerTarget, lsn: Option<&str>) -> Result<(), String> {
        let Some(lsn) = lsn else { return Ok(()) };
        // The standby must be streaming from `from`: make sure it follows it.
        self.db.follow(&self.port.at(&from.address))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.db.caught_up(lsn) {
                Ok(true) => return Ok(()),
                Ok(false) | Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                Ok(false) => {
                    return Err(format!(
                        "the database did not replay up to {lsn} within {:?}",
                        self.timeout
                    ))
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The database's part of a duty: a server that serves (active, or alone)
/// must have a writable database; a standby's follows its peer's.
///
/// A standby whose database cannot follow (the peer is out of reach: an active server
/// that demoted itself because it lost the arbiter's lease or both the peer and the
/// witness) must not go on taking writes from clients that reach it by its own address:
/// a database that is still a primary is stopped. The next active duty starts it again.
pub fn apply_duty(db: &dyn Database, duty: Duty, peer: Option<&PeerDb>) -> Result<(), String> {
    match (duty, peer) {
        (Duty::Active | Duty::Standalone, _) => {
            db.promote().map_err(|e| format!("database promotion: {e}"))
        }
        (Duty::Standby, Some(p)) => db.follow(p).map_err(|e| {
            let failed = format!("database could not follow {p}: {e}");
            match stop_writes_on_demotion(db) {
                Ok(true) => format!("{failed}; it was a writable primary: stopped it"),
                Ok(false) => failed,
                Err(stop) => format!("{failed}; {stop}"),
            }
        }),
        (Duty::Standby, None) | (Duty::Halted, _) => Ok(()),
    }
}

/// The database's part of a demotion (the server gave up the active duty on its own: it
/// lost the arbiter's lease, or fenced itself): a database that is still a primary takes
/// no more writes, since clients may reach this server by its own address. It is stopped;
/// the next active duty starts it again (`promote` starts a database that is down).
/// `Ok(true)` when it was stopped; a database that is not a primary (a standby, down, not
/// answering) is left alone.
pub fn stop_writes_on_demotion(db: &dyn Database) -> Result<bool, String> {
    if db.role() != Ok(DbRole::Primary) {
        return Ok(false);
    }
    db.stop()
        .map(|()| true)
        .map_err(|e| format!("the database is a writable primary and could not be stopped: {e}"))
}

/// Runs one full copy the core ordered; `Ok` once it is complete.
pub fn run_copy(
    kind: CopyKind,
    sync: &SyncService,
    db: Option<&dyn Database>,
    peer: &PeerTarget,
) -> Result<(), String> {
    match kind {
        CopyKind::Initial => sync.remote_copy(peer, &JobKind::Initial),
        CopyKind::DataGap => sync.data_gap_copy(peer),
        CopyKind::Failback => {
            sync.remote_copy(peer, &JobKind::Failback)?;
            let Some(db) = db else {
                return sync.remote_copy(peer, &JobKind::FailbackFinal { lsn: None });
            };
            let last = db
                .stop_writes()
                .map_err(|e| format!("stopping writes: {e}"))
                .and_then(|lsn| sync.remote_copy(peer, &JobKind::FailbackFinal { lsn: Some(lsn) }));
            // Any failure once writes were being stopped calls the failback off:
            // this server stays active, so its database must take writes again.
            last.map_err(|e| match db.promote() {
                Ok(()) => e,
                Err(p) => format!("{e}; and the database could not be made writable again: {p}"),
            })
        }
    }
}

/// One look at the local database: its role and, on a standby, its lag. The watcher
/// takes one per interval, and everything it reports is read from it.
#[derive(Debug, Clone, PartialEq)]
pub struct DbSeen {
    /// The driver's name ("postgres", "command").
    pub name: &'static str,
    /// `Err`: running but not answering (the driver's reason).
    pub role: Result<DbRole, String>,
    /// A standby's lag (`Ok(None)` elsewhere, or when there is none to tell).
    pub lag: Result<Option<Lag>, String>,
}

impl DbSeen {
    /// Ask the driver (the lag only of a standby).
    pub fn look(db: &dyn Database) -> DbSeen {
        let role = db.role();
        let lag = match role {
            Ok(DbRole::Standby) => db.lag(),
            _ => Ok(None),
        };
        DbSeen {
            name: db.name(),
            role,
            lag,
        }
    }

    /// The lag verdict for the core: `Some(Some(why))` when a standby is further behind
    /// than `max_bytes`, `Some(None)` when it is within it or the database is the primary,
    /// `None` when it cannot be told.
    pub fn verdict(&self, max_bytes: u64) -> Option<Option<String>> {
        match (&self.role, &self.lag) {
            (Ok(DbRole::Standby), Ok(Some(l))) if l.bytes > max_bytes => Some(Some(format!(
                "{} bytes of WAL not yet replayed, bound {max_bytes}",
                l.bytes
            ))),
            (Ok(DbRole::Standby), Ok(_)) | (Ok(DbRole::Primary), _) => Some(None),
            _ => None,
        }
    }

    /// `hamon status`'s database line: the driver, its role and, on a standby, its lag
    /// in bytes and seconds.
    pub fn line(&self) -> String {
        let name = self.name;
        match (&self.role, &self.lag) {
            (Ok(DbRole::Standby), Ok(Some(l))) => format!(
                "Database ({name}): standby, {} bytes of WAL not yet replayed, {}",
                l.bytes,
                match l.seconds {
                    Some(s) => format!("last replayed change {s:.1} s old"),
                    None => "nothing replayed yet".to_string(),
                }
            ),
            (Ok(DbRole::Standby), Ok(None)) => format!("Database ({name}): standby"),
            (Ok(DbRole::Standby), Err(e)) => {
                format!("Database ({name}): standby, lag unknown ({e})")
            }
            (Ok(role), _) => format!("Database ({name}): {role}"),
            (Err(e), _) => format!("Database ({name}): not answering ({e})"),
        }
    }
}

/// The lag verdict for the core (see [`DbSeen::verdict`]).
pub fn lag_verdict(db: &dyn Database, max_bytes: u64) -> Option<Option<String>> {
    DbSeen::look(db).verdict(max_bytes)
}

/// `hamon status`'s database line (see [`DbSeen::line`]).
pub fn status_line(db: &dyn Database) -> String {
    DbSeen::look(db).line()
}

/// The database watcher for a driver: the lag verdict for the core, and the
/// last look (`seen`) for `hamon status` and `/metrics`.
pub fn start_lag_watch(
    db: Arc<dyn Database>,
    max_bytes: u64,
    every: Duration,
    reporter: Reporter,
    seen: Arc<std::sync::RwLock<Option<DbSeen>>>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("watch-replica".into())
        .spawn(move || {
            let mut last: Option<Option<String>> = None;
            while !stop.load(Ordering::Relaxed) {
                let now = DbSeen::look(db.as_ref());
                let verdict = now.verdict(max_bytes);
                if let Ok(mut l) = seen.write() {
                    *l = Some(now);
                }
                if let Some(v) = verdict {
                    let changed = match (&last, &v) {
                        (Some(a), b) => a.is_some() != b.is_some(),
                        (None, _) => true,
                    };
                    if changed {
                        reporter.event(crate::ha::Event::ReplicaLag { behind: v.clone() });
                        match (&last, &v) {
                            (_, Some(why)) => {
                                reporter.observe("replica_lagging", Severity::Warning, why.clone())
                            }
                            (Some(Some(_)), None) => reporter.observe(
                                "replica_caught_up",
                                Severity::Info,
                                format!("within the bound of {max_bytes} bytes"),
                            ),
                            _ => {}
                        }
                        last = Some(v);
                    }
                }
                let end = Instant::now() + every;
                while Instant::now() < end && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A database that reports a fixed role and lag, and counts overlapping changes.
    #[derive(Debug, Default)]
    struct Fake {
        role: Option<DbRole>,
        lag_bytes: u64,
        inside: AtomicUsize,
        most: AtomicUsize,
    }

    impl Fake {
        fn change(&self) -> Result<(), String> {
            let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(30));
            self.inside.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    }

    impl Database for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }
        fn health(&self) -> Result<(), String> {
            Ok(())
        }
        fn role(&self) -> Result<DbRole, String> {
            self.role.ok_or_else(|| "not answering".to_string())
        }
        fn lag(&self) -> Result<Option<db::Lag>, String> {
            Ok(Some(db::Lag {
                bytes: self.lag_bytes,
                seconds: Some(1.0),
            }))
        }
        fn initial_copy(&self, _: &PeerDb) -> Result<(), String> {
            self.change()
        }
        fn follow(&self, _: &PeerDb) -> Result<(), String> {
            self.change()
        }
        fn promote(&self) -> Result<(), String> {
            self.change()
        }
        fn stop_writes(&self) -> Result<String, String> {
            self.change().map(|()| "0/1".into())
        }
        fn received(&self) -> Result<Option<String>, String> {
            Ok(None)
        }
        fn caught_up(&self, _: &str) -> Result<bool, String> {
            Ok(true)
        }
        fn stop(&self) -> Result<(), String> {
            self.change()
        }
    }

    #[test]
    fn the_lag_verdict_compares_a_standbys_backlog_with_the_bound() {
        let standby = |bytes| Fake {
            role: Some(DbRole::Standby),
            lag_bytes: bytes,
            ..Fake::default()
        };
        assert_eq!(lag_verdict(&standby(100), 1000), Some(None));
        let behind = lag_verdict(&standby(5000), 1000).unwrap().unwrap();
        assert!(
            behind.contains("5000 bytes") && behind.contains("bound 1000"),
            "{behind}"
        );
        let primary = Fake {
            role: Some(DbRole::Primary),
            lag_bytes: 5000,
            ..Fake::default()
        };
        assert_eq!(lag_verdict(&primary, 1000), Some(None));
        // Unknown (down, not answering): no verdict, the last one stands.
        assert_eq!(lag_verdict(&Fake::default(), 1000), None);
    }

    /// A command driver whose script logs every operation to `log` and answers `role`
    /// with `role`; `follow` fails.
    fn logging_db(log: &std::path::Path, role: &str) -> db::command::CommandDb {
        let script = format!(
            "echo \"$HAMON_DB_OP\" >> '{}'; case \"$HAMON_DB_OP\" in \
             role) echo {role} ;; follow) echo 'peer unreachable' >&2; exit 1 ;; esac",
            log.display()
        );
        db::command::CommandDb::new(db::command::CommandConfig {
            argv: vec!["/bin/sh".into(), "-c".into(), script],
            timeout: Duration::from_secs(5),
            copy_timeout: Duration::from_secs(5),
        })
        .unwrap()
    }

    #[test]
    fn a_standby_that_cannot_follow_stops_a_writable_database() {
        let dir = std::env::temp_dir().join(format!("hamon-repl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let peer = PeerDb {
            host: "192.0.2.12".into(),
            port: 5432,
        };
        // A demoted active server: its database is still a primary.
        let log = dir.join("primary.log");
        let err = apply_duty(&logging_db(&log, "primary"), Duty::Standby, Some(&peer)).unwrap_err();
        assert!(
            err.contains("peer unreachable") && err.contains("stopped it"),
            "{err}"
        );
        let ops = std::fs::read_to_string(&log).unwrap();
        assert_eq!(ops.lines().collect::<Vec<_>>(), ["follow", "role", "stop"]);
        // A database that is a standby already takes no writes: it is left running.
        let log = dir.join("standby.log");
        let err = apply_duty(&logging_db(&log, "standby"), Duty::Standby, Some(&peer)).unwrap_err();
        assert!(!err.contains("stopped"), "{err}");
        let ops = std::fs::read_to_string(&log).unwrap();
        assert_eq!(ops.lines().collect::<Vec<_>>(), ["follow", "role"]);
        // The next active duty starts it again (promote starts a database that is down).
        let log = dir.join("again.log");
        apply_duty(&logging_db(&log, "down"), Duty::Active, None).unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "promote\n");
        // A demotion (duty Halted) stops a primary, and leaves a standby alone.
        let log = dir.join("demoted.log");
        assert_eq!(
            stop_writes_on_demotion(&logging_db(&log, "primary")),
            Ok(true)
        );
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "role\nstop\n");
        let log = dir.join("demoted-standby.log");
        assert_eq!(
            stop_writes_on_demotion(&logging_db(&log, "standby")),
            Ok(false)
        );
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "role\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn database_changes_run_one_at_a_time() {
        let fake = Arc::new(Fake::default());
        let db = Arc::new(Serialized {
            inner: Box::new(fake.clone()),
            changing: Mutex::new(()),
            stopped: AtomicBool::new(false),
        });
        let peer = PeerDb {
            host: "192.0.2.12".into(),
            port: 5432,
        };
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let (db, peer) = (db.clone(), peer.clone());
                std::thread::spawn(move || match i % 2 {
                    0 => db.initial_copy(&peer),
                    _ => db.follow(&peer),
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap().unwrap();
        }
        assert_eq!(fake.most.load(Ordering::SeqCst), 1, "changes overlapped");
    }
}
