//! The PostgreSQL driver against real PostgreSQL 15 clusters on loopback:
//! initial copy, failover with rewind, zero-loss switchover, a failing
//! copy, and no password on any command line.

mod pgtest;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hamon::db::postgres::Postgres;
use hamon::db::{Database, DbRole};
use pgtest::{wait_for, Cluster};

const WAIT: Duration = Duration::from_secs(30);

fn count(c: &Cluster, filter: &str) -> i64 {
    c.sql(&format!("SELECT count(*) FROM t WHERE {filter}"))
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(-1)
}

#[test]
fn copy_failover_rewind_and_switchover() {
    let Some(bin) = pgtest::require() else {
        return;
    };
    let a = Cluster::new(&bin, "a", "127.0.0.2");
    let b = Cluster::new(&bin, "b", "127.0.0.3");
    assert_eq!(a.password, a.password.trim());
    // Both sides know the same password.
    std::fs::write(&b.passfile, std::fs::read(&a.passfile).unwrap()).unwrap();
    let secret = a.password.clone();
    let watch = pgtest::ProcWatch::start(&secret, "hamon-pgtest-");

    a.init();
    a.start();
    a.create_replication_user();
    a.sql("CREATE TABLE t (id bigint PRIMARY KEY, who text)")
        .unwrap();
    let da = Postgres::new(a.config()).unwrap();
    let db = Postgres::new(b.config()).unwrap();
    // A was started without TLS: its first health check turns it on, as the agent's
    // watcher does, since the peer's connections demand it.
    assert_eq!(a.sql("SHOW ssl").unwrap(), "off");
    assert_eq!(da.health(), Ok(()));
    assert_eq!(a.sql("SHOW ssl").unwrap(), "on");
    assert_eq!(da.role(), Ok(DbRole::Primary));
    assert_eq!(db.role(), Ok(DbRole::Down));
    assert_eq!(da.lag(), Ok(None));
    assert_eq!(da.received(), Ok(None));

    // 1. B becomes a standby of A by a fresh copy.
    let t = Instant::now();
    db.initial_copy(&a.peer()).unwrap();
    eprintln!("initial copy: {:?}", t.elapsed());
    assert_eq!(db.role(), Ok(DbRole::Standby));
    assert_eq!(db.health(), Ok(()));
    a.sql("INSERT INTO t SELECT g, 'a' FROM generate_series(1, 100) g")
        .unwrap();
    assert!(
        wait_for(WAIT, || count(&b, "who = 'a'") == 100),
        "{}",
        b.log_tail()
    );
    let lag = db.lag().unwrap().expect("a standby has a lag");
    eprintln!("lag on B: {lag:?}");
    assert!(wait_for(WAIT, || db.lag().unwrap().unwrap().bytes == 0));
    assert!(db.received().unwrap().is_some());
    let slots = a
        .sql("SELECT slot_name || ':' || active FROM pg_replication_slots")
        .unwrap();
    assert_eq!(slots, "hamon_peer:true");
    // Following the node it already follows changes nothing.
    let pid = b.pid();
    db.follow(&a.peer()).unwrap();
    assert_eq!(b.pid(), pid);
    // A standby promoted by mistake (a new timeline, no writes) is rewound
    // back into following A.
    db.promote().unwrap();
    assert_eq!(db.role(), Ok(DbRole::Primary));
    db.follow(&a.peer()).unwrap();
    assert_eq!(db.role(), Ok(DbRole::Standby));
    assert!(
        wait_for(WAIT, || count(&b, "true") == 100),
        "{}",
        b.log_tail()
    );

    // Make A diverge: B stops streaming, A takes writes B never sees.
    b.sql("ALTER SYSTEM SET primary_conninfo = ''; SELECT pg_reload_conf()")
        .unwrap();
    assert!(wait_for(WAIT, || {
        b.sql("SELECT count(*) FROM pg_stat_wal_receiver")
            .as_deref()
            == Ok("0")
    }));
    a.sql("INSERT INTO t SELECT g, 'lost' FROM generate_series(1001, 1010) g")
        .unwrap();

    // 2. A crashes; B is promoted and takes writes.
    a.kill9();
    assert_eq!(da.role(), Ok(DbRole::Down));
    let t = Instant::now();
    db.promote().unwrap();
    eprintln!("promote: {:?}", t.elapsed());
    assert_eq!(db.role(), Ok(DbRole::Primary));
    assert_eq!(db.lag(), Ok(None));
    b.sql("INSERT INTO t SELECT g, 'b' FROM generate_series(101, 200) g")
        .unwrap();
    db.promote().unwrap(); // no-op

    // 3. A is rewound and follows B: its lost rows are gone, B's arrive.
    let t = Instant::now();
    da.follow(&b.peer()).unwrap();
    eprintln!("follow with rewind: {:?}", t.elapsed());
    assert_eq!(da.role(), Ok(DbRole::Standby));
    assert!(
        wait_for(WAIT, || count(&a, "who = 'b'") == 100),
        "{}",
        a.log_tail()
    );
    assert_eq!(count(&a, "who = 'lost'"), 0);
    assert_eq!(count(&a, "true"), 200);
    // A's own slot from its time as primary was dropped; B has one for A.
    assert_eq!(
        a.sql("SELECT count(*) FROM pg_replication_slots").unwrap(),
        "0"
    );
    assert!(wait_for(WAIT, || {
        b.sql("SELECT active FROM pg_replication_slots WHERE slot_name = 'hamon_peer'")
            .as_deref()
            == Ok("t")
    }));

    // 4. Switchover B -> A under a steady stream of writes.
    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let b = Arc::new(b);
    let writer = {
        let (acked, stop, b) = (acked.clone(), stop.clone(), b.clone());
        std::thread::spawn(move || {
            let mut id = 10_000;
            while !stop.load(Ordering::SeqCst) {
                id += 1;
                if b.sql(&format!("INSERT INTO t VALUES ({id}, 'w')")).is_ok() {
                    acked.lock().unwrap().push(id);
                }
            }
        })
    };
    assert!(wait_for(WAIT, || acked.lock().unwrap().len() >= 20));
    let t = Instant::now();
    let lsn = db.stop_writes().unwrap();
    eprintln!("stop_writes: {:?} -> {lsn}", t.elapsed());
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert_eq!(db.role(), Ok(DbRole::Down));
    assert_eq!(db.stop_writes().as_deref(), Ok(lsn.as_str()), "idempotent");
    assert!(wait_for(WAIT, || da.caught_up(&lsn) == Ok(true)));
    da.promote().unwrap();
    assert_eq!(da.role(), Ok(DbRole::Primary));
    let t = Instant::now();
    db.follow(&a.peer()).unwrap();
    eprintln!("follow after switchover: {:?}", t.elapsed());
    assert_eq!(db.role(), Ok(DbRole::Standby));
    let acked = acked.lock().unwrap().clone();
    eprintln!("{} acknowledged writes", acked.len());
    let present = a
        .sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM t WHERE who = 'w'")
        .unwrap();
    let present: Vec<i64> = present.split(',').map(|s| s.parse().unwrap()).collect();
    for id in &acked {
        assert!(present.contains(id), "acknowledged id {id} lost");
    }
    a.sql("INSERT INTO t VALUES (99999, 'a2')").unwrap();
    assert!(
        wait_for(WAIT, || count(&b, "who = 'a2'") == 1),
        "{}",
        b.log_tail()
    );

    // 6. No process ever showed the password on its command line or in its
    // environment; and the watch did see our tools running.
    let (hits, seen) = watch.finish();
    assert!(hits.is_empty(), "password visible: {hits:?}");
    assert!(seen > 0);

    da.stop().unwrap();
    db.stop().unwrap();
    assert_eq!(da.role(), Ok(DbRole::Down));
    da.stop().unwrap();
}

#[test]
fn copy_from_an_unreachable_peer_fails_fast_and_leaves_local_data_alone() {
    let Some(bin) = pgtest::require() else {
        return;
    };
    let c = Cluster::new(&bin, "c", "127.0.0.4");
    c.init();
    c.start();
    c.sql("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .unwrap();
    let mut cfg = c.config();
    cfg.timeout = Duration::from_secs(3);
    let d = Postgres::new(cfg).unwrap();

    // A peer that answers without TLS (this cluster, started without it) is refused
    // before anything is touched: the replication connection demands TLS.
    let err = d.initial_copy(&c.peer()).unwrap_err();
    assert!(err.contains("SSL"), "{err}");
    assert_eq!(c.sql("SELECT count(*) FROM t").unwrap(), "1");

    // Nothing listens: refused at once.
    let closed = pgtest::free_port("127.0.0.5");
    let peer = hamon::db::PeerDb {
        host: "127.0.0.5".into(),
        port: closed,
    };
    let t = Instant::now();
    let err = d.initial_copy(&peer).unwrap_err();
    eprintln!("refused: {:?}: {err}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(
        err.starts_with("cannot reach the peer database at 127.0.0.5:"),
        "{err}"
    );
    assert!(err.contains("Connection refused"), "{err}");

    // Something listens but never answers: the timeout ends it.
    let silent = TcpListener::bind("127.0.0.5:0").unwrap();
    let peer = hamon::db::PeerDb {
        host: "127.0.0.5".into(),
        port: silent.local_addr().unwrap().port(),
    };
    let t = Instant::now();
    let err = d.initial_copy(&peer).unwrap_err();
    eprintln!("silent: {:?}: {err}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert!(err.starts_with("cannot reach the peer database"), "{err}");
    assert!(
        err.contains("timeout") || err.contains("timed out"),
        "{err}"
    );

    // The local database was not touched.
    assert_eq!(d.role(), Ok(DbRole::Primary));
    assert_eq!(c.sql("SELECT count(*) FROM t").unwrap(), "1");
    // follow() also refuses to stop anything when the peer is unreachable.
    assert!(d.follow(&peer).is_err());
    assert_eq!(d.role(), Ok(DbRole::Primary));
}
