//! Two real agents, each with a real PostgreSQL 15 cluster, on loopback:
//! registration builds the standby, kill -9 promotes it, the returning
//! primary is rewound, failback loses no acknowledged write, and the data-gap
//! path makes (or fails to make) a full copy. With synchronous replication, a primary
//! that dies under load loses no acknowledged write either.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pgtest;

use common::{wait, Pair};
use pgtest::{Cluster, REPL_USER};
use std::fs;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[allow(non_snake_case)]
fn SECS(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The `[database]` section for a server whose cluster is `c` and whose
/// peer's database listens on `peer_port`.
fn db_section(c: &Cluster, peer_port: u16) -> String {
    format!(
        "[database]\ndriver = \"postgres\"\ninterval_ms = 300\nfailures = 3\n\
         peer_port = {peer_port}\nmax_failover_lag_bytes = 16777216\ncopy_timeout_ms = 120000\n\
         [database.postgres]\nbin_dir = \"{bin}\"\ndata_dir = \"{data}\"\nlog_file = \"{log}\"\n\
         port = {port}\nlisten = \"{listen}\"\nsocket_dir = \"{sock}\"\npassfile = \"{pass}\"\n\
         replication_user = \"{REPL_USER}\"\ntimeout_ms = 10000\nstart_timeout_ms = 60000\n",
        bin = c.bin.display(),
        data = c.data_dir.display(),
        log = c.log_file.display(),
        port = c.port,
        listen = c.listen,
        sock = c.socket_dir.display(),
        pass = c.passfile.display(),
    )
}

fn append(path: &std::path::Path, text: &str) {
    let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn in_recovery(c: &Cluster) -> Option<bool> {
    c.sql("SELECT pg_is_in_recovery()").ok().map(|s| s == "t")
}

fn has_row(c: &Cluster, id: i64) -> bool {
    c.sql(&format!("SELECT count(*) FROM t WHERE id = {id}"))
        .is_ok_and(|n| n == "1")
}

fn ids(c: &Cluster) -> Vec<i64> {
    c.sql("SELECT id FROM t ORDER BY id")
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Pretend this server's last in-sync stamp is `hours` old.
fn age_in_sync(p: &Pair, i: usize, hours: u64) {
    let now = hamon::peer::client::unix_ms() / 1000;
    fs::write(
        p.state_dir(i).join("in-sync"),
        format!("{}\n", now - hours * 3600),
    )
    .unwrap();
}

/// A registered pair (automatic failover) on 127.0.`n`.x, each agent with its
/// cluster: the primary's initialised with table `t`, the secondary's empty
/// (registration fills it). `None` when PostgreSQL is missing outside CI.
fn registered_pair(n: u8, max_lag: u64) -> Option<(Arc<Cluster>, Arc<Cluster>, Pair)> {
    registered_pair_with(n, max_lag, "")
}

/// Like `registered_pair`, with `pg` appended to both `[database.postgres]` sections.
fn registered_pair_with(
    n: u8,
    max_lag: u64,
    pg: &str,
) -> Option<(Arc<Cluster>, Arc<Cluster>, Pair)> {
    let bin = pgtest::require()?;
    let a = Arc::new(Cluster::new(&bin, "a", &format!("127.0.{n}.2")));
    a.init();
    a.start();
    a.create_replication_user();
    a.sql("CREATE TABLE t (id bigint PRIMARY KEY, note text)")
        .unwrap();
    // The secondary's password file holds the primary's replication
    // password, which the copy brings along.
    let b = Arc::new(Cluster::new(&bin, "b", &format!("127.0.{n}.3")));
    fs::write(&b.passfile, format!("*:*:*:{REPL_USER}:{}\n", a.password)).unwrap();
    let p = Pair::new(n);
    // The clusters serve the Health Monitor's certificate.
    p.edit_configs(|c| c.replace("tls = false", "tls = true"));
    let bounded = |c: &Cluster, port| {
        db_section(c, port).replace(
            "max_failover_lag_bytes = 16777216",
            &format!("max_failover_lag_bytes = {max_lag}"),
        ) + pg
    };
    append(&p.config(0), &bounded(&a, b.port));
    append(&p.config(1), &bounded(&b, a.port));
    Some((a, b, Pair::registered_with(p, "automatic")))
}

#[test]
fn postgres_pair_through_failover_rewind_failback_and_data_gap() {
    let Some((a, b, mut p)) = registered_pair(102, 16 * 1024 * 1024) else {
        return;
    };

    // Registration built the standby with pg_basebackup; rows flow to it, over TLS
    // with SCRAM channel binding.
    assert_eq!(in_recovery(&b), Some(true), "b is not a standby");
    let streams_over_tls = || {
        a.sql(
            "SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid) \
             WHERE s.ssl",
        )
        .is_ok_and(|n| n == "1")
    };
    wait(SECS(20), streams_over_tls).expect("the standby does not stream over TLS");
    let conninfo = b.sql("SHOW primary_conninfo").unwrap();
    assert!(
        conninfo.contains("sslmode=require channel_binding=require"),
        "{conninfo}"
    );
    a.sql("INSERT INTO t VALUES (1, 'on a')").unwrap();
    wait(SECS(20), || has_row(&b, 1)).expect("row 1 never reached the standby");
    assert!(
        b.sql("INSERT INTO t VALUES (99, 'x')").is_err(),
        "a standby took a write"
    );
    // Role and lag, in bytes and seconds, in `hamon status`.
    let status = || String::from_utf8_lossy(&p.run(1, &["status"]).stdout).to_string();
    wait(SECS(10), || {
        status().contains("Database (postgres): standby, ")
    })
    .unwrap_or_else(|| panic!("no database line: {}", status()));
    assert!(
        status().contains("bytes of WAL not yet replayed"),
        "{}",
        status()
    );

    // kill -9 of the primary server (agent and database): the secondary is
    // promoted and takes writes.
    // A rewind keeps the data directory's tree; a fresh copy rebuilds it.
    let base_inode = || {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(a.data_dir.join("base")).map(|m| m.ino()).ok()
    };
    let before_rewind = base_inode();
    p.kill9(0);
    a.kill9();
    p.wait_state(1, "Secondary Active", SECS(60));
    wait(SECS(30), || in_recovery(&b) == Some(false)).expect("b was not promoted");
    b.sql("INSERT INTO t VALUES (2, 'on b')").unwrap();

    // The primary comes back: rewound, it follows the secondary.
    p.start(0);
    p.wait_state(0, "Primary Syncing", SECS(120));
    assert_eq!(in_recovery(&a), Some(true), "a does not follow b");
    wait(SECS(30), || has_row(&a, 2)).expect("a never saw b's row");
    assert!(has_row(&a, 1), "a lost its own history");
    assert_eq!(
        base_inode(),
        before_rewind,
        "a was copied afresh instead of rewound"
    );

    // Failback under a write workload: every acknowledged write survives.
    let (acked, done, writer) = write_load(&a, &b, 1000);
    std::thread::sleep(Duration::from_millis(500));
    let out = p.run(1, &["ha", "failback"]);
    assert!(
        out.status.success(),
        "failback: {out:?}\n{}\n{}",
        p.log(1),
        p.log(0)
    );
    p.wait_state(0, "Primary Active", SECS(60));
    p.wait_state(1, "Secondary Syncing", SECS(60));
    wait(SECS(30), || in_recovery(&a) == Some(false)).expect("a was not promoted");
    // Let the load run on the promoted primary for a moment too.
    let before = acked.lock().unwrap().len();
    wait(SECS(20), || acked.lock().unwrap().len() > before + 20).expect("a takes no writes");
    done.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    let on_a = ids(&a);
    let lost: Vec<i64> = acked
        .iter()
        .filter(|i| !on_a.contains(i))
        .copied()
        .collect();
    eprintln!(
        "failback under load: {} writes acknowledged, {} rows on the primary",
        acked.len(),
        on_a.len()
    );
    assert!(acked.len() > 40, "too little load to tell: {}", acked.len());
    assert!(
        lost.is_empty(),
        "acknowledged writes lost in failback: {lost:?}"
    );
    assert!(on_a.contains(&1) && on_a.contains(&2));
    a.sql("INSERT INTO t VALUES (3, 'after failback')").unwrap();
    wait(SECS(30), || has_row(&b, 3)).expect("b does not follow a after failback");
    assert_eq!(in_recovery(&b), Some(true));

    // Data gap: the primary stops, the secondary takes over, and the primary
    // returns with an in-sync stamp 25 h old: it needs a full copy.
    p.stop(0);
    p.wait_state(1, "Secondary Active", SECS(60));
    wait(SECS(30), || in_recovery(&b) == Some(false)).expect("b was not promoted");
    b.sql("INSERT INTO t VALUES (4, 'during the gap')").unwrap();
    age_in_sync(&p, 0, 25);
    // First with a copy that cannot work (the peer's database port is wrong):
    // Primary Database Copy Failed, and failback is refused.
    let good = fs::read_to_string(p.config(0)).unwrap();
    let bad = good.replace(
        &format!("peer_port = {}", b.port),
        &format!("peer_port = {}", pgtest::free_port("127.0.0.1")),
    );
    fs::write(p.config(0), &bad).unwrap();
    p.start(0);
    p.wait_state(0, "Primary Database Copy Failed", SECS(120));
    let refused = p.run(1, &["ha", "failback"]);
    assert!(!refused.status.success(), "failback allowed: {refused:?}");
    // Fixed, the copy succeeds and the primary syncs from the secondary.
    let before_copy = base_inode();
    p.stop(0);
    fs::write(p.config(0), &good).unwrap();
    age_in_sync(&p, 0, 25);
    p.start(0);
    p.wait_state(0, "Primary Syncing", SECS(180));
    wait(SECS(30), || has_row(&a, 4)).expect("the full copy lacks the gap's row");
    assert_ne!(base_inode(), before_copy, "no full copy was made");
    assert_eq!(in_recovery(&a), Some(true));
    let events = String::from_utf8_lossy(&p.run(0, &["ha", "events"]).stdout).to_string();
    assert!(
        events.contains("data-gap") || events.contains("data gap"),
        "{events}"
    );
    drop(p);
}

#[test]
fn automatic_failover_waits_until_the_standby_has_replayed_within_the_bound() {
    let Some((a, b, mut p)) = registered_pair(105, 65536) else {
        return;
    };
    assert_eq!(in_recovery(&b), Some(true));

    // Replay stops on the standby while the primary writes a few MiB: the
    // standby receives the WAL but is far behind in applying it.
    b.sql("SELECT pg_wal_replay_pause()").unwrap();
    a.sql("INSERT INTO t SELECT g, repeat('x', 500) FROM generate_series(1, 20000) g")
        .unwrap();
    // The standby has received all of it (streaming over TLS on a busy machine can
    // take a moment): what it received is what must survive the primary's death.
    let end = a.sql("SELECT pg_current_wal_lsn()").unwrap();
    wait(SECS(30), || {
        b.sql(&format!(
            "SELECT pg_last_wal_receive_lsn() >= '{end}'::pg_lsn"
        ))
        .is_ok_and(|r| r == "t")
    })
    .expect("the standby never received the rows");
    let events =
        |p: &Pair| String::from_utf8_lossy(&p.run(1, &["ha", "events"]).stdout).to_string();
    wait(SECS(20), || {
        events(&p).contains("bytes of WAL not yet replayed, bound 65536")
    })
    .unwrap_or_else(|| panic!("no replica_lagging event:\n{}", events(&p)));

    // The primary dies: the secondary may not take over yet, and says why.
    p.kill9(0);
    a.kill9();
    p.wait_state(1, "Secondary Lost Primary", SECS(20));
    std::thread::sleep(SECS(2));
    assert!(
        p.ha_status(1).contains("Secondary Lost Primary"),
        "{}",
        p.ha_status(1)
    );
    let withheld = events(&p);
    assert!(
        withheld.contains("automatic failover withheld")
            && withheld.contains("the database standby is too far behind"),
        "{withheld}"
    );
    // Replay resumes: once within the bound, the takeover goes ahead, and no
    // row the standby had received is lost.
    b.sql("SELECT pg_wal_replay_resume()").unwrap();
    p.wait_state(1, "Secondary Active", SECS(60));
    wait(SECS(30), || in_recovery(&b) == Some(false)).expect("b was not promoted");
    assert_eq!(b.sql("SELECT count(*) FROM t").unwrap(), "20000");
    assert!(
        events(&p).contains("within the bound of 65536 bytes"),
        "{}",
        events(&p)
    );
}

/// Inserts rows with growing ids into whichever database takes writes (the standby
/// refuses them), until `done`; an id counts as acknowledged once its insert committed.
fn write_load(
    a: &Arc<Cluster>,
    b: &Arc<Cluster>,
    first: i64,
) -> (
    Arc<Mutex<Vec<i64>>>,
    Arc<AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, done) = (acked.clone(), done.clone());
        let (a, b) = (a.clone(), b.clone());
        std::thread::spawn(move || {
            // Every round takes a new id: a commit whose acknowledgement was lost (its
            // server died while it waited for the standby) may still be there.
            let mut id = first;
            while !done.load(Ordering::Relaxed) {
                for c in [&*b, &*a] {
                    if c.sql(&format!("INSERT INTO t VALUES ({id}, 'load')"))
                        .is_ok()
                    {
                        acked.lock().unwrap().push(id);
                        break;
                    }
                }
                id += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    (acked, done, writer)
}

/// Synchronous replication (`synchronous = true`): the primary's server dies with its
/// agent while its WAL sender to the standby is frozen. The commits made meanwhile wait
/// for the standby and are never acknowledged, so the promoted standby holds every
/// acknowledged write. (With asynchronous replication the writes acknowledged during the
/// freeze never reach the standby and are lost, and this test fails.)
#[test]
fn synchronous_replication_loses_no_acknowledged_write_when_the_primary_dies() {
    let Some((a, b, mut p)) = registered_pair_with(106, 16 * 1024 * 1024, "synchronous = true\n")
    else {
        return;
    };
    // The primary turns synchronous replication on once the standby streams.
    wait(SECS(30), || {
        a.sql("SHOW synchronous_standby_names")
            .is_ok_and(|s| s == "hamon_peer")
    })
    .unwrap_or_else(|| panic!("never synchronous:\n{}", p.log(0)));
    let (acked, done, writer) = write_load(&a, &b, 5000);
    wait(SECS(20), || acked.lock().unwrap().len() > 20).expect("no writes");

    // Freeze the primary's WAL sender to the standby (a process of the cluster this test
    // started): from now on nothing the primary commits reaches the standby.
    let sender: i32 = a
        .sql("SELECT pid FROM pg_stat_replication WHERE application_name = 'hamon_peer'")
        .unwrap()
        .parse()
        .unwrap();
    // SAFETY: kill(2) on the WAL sender of the cluster this test started.
    unsafe { libc::kill(sender, libc::SIGSTOP) };
    std::thread::sleep(SECS(1));
    let during = acked.lock().unwrap().len();
    // A power cut on the primary: its agent and its server die together, the frozen
    // sender with them.
    p.kill9(0);
    a.kill9();
    // SAFETY: as above; the sender is an orphan of the dead postmaster now.
    unsafe { libc::kill(sender, libc::SIGKILL) };
    pgtest::reap(sender);

    p.wait_state(1, "Secondary Active", SECS(60));
    wait(SECS(30), || in_recovery(&b) == Some(false)).expect("b was not promoted");
    let before = acked.lock().unwrap().len();
    wait(SECS(20), || acked.lock().unwrap().len() > before + 20).unwrap_or_else(|| {
        panic!(
            "b takes no writes: synchronous_standby_names {:?}\n{}",
            b.sql("SHOW synchronous_standby_names"),
            p.log(1)
        )
    });
    done.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    let acked = acked.lock().unwrap().clone();
    let on_b = ids(&b);
    let lost: Vec<i64> = acked
        .iter()
        .filter(|i| !on_b.contains(i))
        .copied()
        .collect();
    eprintln!(
        "primary died under load: {} writes acknowledged ({during} before the crash), \
         {} rows on the new primary",
        acked.len(),
        on_b.len()
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}

/// etcd on loopback for one test (`127.0.{n}.4`), on a data directory that survives a
/// kill, killed on drop. `None` when etcd is missing outside CI.
struct Etcd {
    child: Option<std::process::Child>,
    dir: std::path::PathBuf,
    ip: String,
}

impl Etcd {
    fn start(n: u8) -> Option<Etcd> {
        let found = std::process::Command::new("etcd")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            let msg = "etcd not found (apt-get install etcd-server; .ci/run installs it)";
            assert!(std::env::var_os("CI").is_none(), "{msg}");
            eprintln!("SKIPPED: {msg}");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("hamon-pg-etcd-{n}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut e = Etcd {
            child: None,
            dir,
            ip: format!("127.0.{n}.4"),
        };
        e.run();
        Some(e)
    }

    fn url(&self) -> String {
        format!("http://{}:2379", self.ip)
    }

    fn run(&mut self) {
        let (url, peer) = (self.url(), format!("http://{}:2380", self.ip));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .unwrap();
        let child = std::process::Command::new("etcd")
            .args(["--name", "pg", "--data-dir"])
            .arg(self.dir.join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("pg={peer}")])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let addr = format!("{}:2379", self.ip);
        wait(SECS(20), || std::net::TcpStream::connect(&addr).is_ok()).unwrap_or_else(|| {
            panic!(
                "etcd did not start:\n{}",
                fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
            )
        });
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the etcd this test started and has not reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Issue 14: a primary that cannot renew the arbiter's lease (etcd killed, the default
/// `on_arbiter_loss = "demote"`) gives up the active duty and stops writes through the
/// PostgreSQL driver: its database, still a writable primary, is stopped, and the check
/// does not take that for a database failure (no Primary Uncertain, so the secondary
/// does not try to take over). etcd back, the primary wins the lease again, its database
/// starts and takes writes, and they reach the standby.
#[test]
fn a_primary_that_loses_the_arbiters_lease_stops_writes_through_the_database() {
    let n = 107;
    let Some(mut etcd) = Etcd::start(n) else {
        return;
    };
    let arbiter = format!("\n[arbiter]\nendpoints = [\"{}\"]\nttl_s = 2\n", etcd.url());
    let Some((a, b, p)) = registered_pair_with(n, 16 * 1024 * 1024, &arbiter) else {
        return;
    };
    wait(SECS(30), || p.journaled(0, "arbiter_lease_held"))
        .unwrap_or_else(|| panic!("the primary never held the lease:\n{}", p.journal(0)));
    wait(SECS(30), || {
        a.sql("INSERT INTO t VALUES (1, 'leased')").is_ok()
    })
    .expect("the primary's database never took a write");
    wait(SECS(30), || has_row(&b, 1)).expect("the write never reached the standby");

    etcd.kill();
    wait(SECS(15), || p.journaled(0, "database_writes_stopped")).unwrap_or_else(|| {
        panic!(
            "the primary did not stop its database:\n{}\n{}",
            p.journal(0),
            p.log(0)
        )
    });
    assert!(p.journaled(0, "arbiter_lost"), "{}", p.journal(0));
    assert!(
        a.sql("INSERT INTO t VALUES (2, 'after the lease')")
            .is_err(),
        "the demoted primary's database still takes writes"
    );
    // Down on purpose is not a database failure: nothing moves while etcd is away.
    std::thread::sleep(SECS(3));
    let status = p.ha_status(0);
    assert!(status.contains("[State] Primary Active"), "{status}");
    assert!(!p.journaled(0, "database_unreachable"), "{}", p.journal(0));
    assert_eq!(in_recovery(&b), Some(true), "the standby was promoted");

    // etcd back: the lease, the active duty and a writable database come back together.
    etcd.run();
    wait(SECS(60), || {
        a.sql("INSERT INTO t VALUES (3, 'leased again')").is_ok()
    })
    .unwrap_or_else(|| panic!("the database never took writes again:\n{}", p.journal(0)));
    assert_eq!(in_recovery(&a), Some(false));
    wait(SECS(30), || has_row(&b, 3)).expect("the new write never reached the standby");
    assert_eq!(ids(&b), [1, 3]);
    assert_eq!(in_recovery(&b), Some(true));
}
