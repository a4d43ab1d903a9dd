//! The appliance as it ships: two appliances booted from `image/build`'s
//! tree (systemd as PID 1, hamon installed from its .deb, the unit enabled,
//! the generator's drop-in in force), each in its own network namespace on
//! a bridge with an observer. Driven from outside as an operator would,
//! through `nsenter`; the client's view (ping, ARP) from the observer.
//!
//! One test walks the whole life of a pair, because a boot costs seconds:
//! today's unit without the drop-in refuses the features; before
//! registration the secondary is a spare; the unit is READY and the watchdog
//! quiet; registration (files, services, PostgreSQL); SIGKILL of the active
//! agent (the outage measured, five times); `systemctl stop` hands over; the
//! old primary returns and fails back with its files and database; a power
//! cut of the active, a reboot, a rewind and another failback; SNMP traps
//! and journald priorities along the way. Timings are printed for
//! docs/performance.md.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod booted;
mod netns;
mod receivers;

use booted::{outage_while, Appliance};
use netns::{Bed, MAC, O, P, S, V4, VIP4};
use std::time::{Duration, Instant};

const KEY: &str = "Appliance-Key-2026";
const REPL_PASSWORD: &str = "Repl-Pass-2026";
const TRAP_PORT: u16 = 1162;

#[allow(non_snake_case)]
fn SECS(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The servers' configuration: every feature the field found broken under
/// the shipped unit, with 1 s heartbeats.
fn config(name: &str, role: &str, me: &str, peer: &str) -> String {
    format!(
        r#"[node]
name = "{name}"
role = "{role}"
address = "{me}"
interface = "eth0"
state_dir = "/var/lib/hamon"
run_dir = "/run/hamon"

[heartbeat]
interval_ms = 1000
missed = 3
grace_ms = 1000
probe_timeout_ms = 500

[vip]
burst_count = 3
burst_gap_ms = 100

[[sync]]
name = "conf"
path = "/etc/appliance"
class = "frequent"

[[sync]]
name = "data"
path = "/var/lib/appliance"
class = "frequent"

# A path a unit file must quote: a space and systemd's specifier sign.
[[sync]]
name = "odd"
path = "/srv/odd dir 50%"
class = "frequent"

[[service]]
name = "web"
unit = "appliance-web.service"

[[service]]
name = "worker"
command = ["/bin/sleep", "86400"]
user = "appliance"

[[service]]
name = "monitor"
command = ["/bin/sleep", "86401"]
user = "appliance"
run_on = "both"

[database]
driver = "postgres"
interval_ms = 1000
failures = 3
peer_port = 5432
max_failover_lag_bytes = 16777216
copy_timeout_ms = 120000

[database.postgres]
data_dir = "/var/lib/postgresql/15/hamon"
listen = "{me},127.0.0.1"
port = 5432
passfile = "/var/lib/postgresql/.pgpass"
replication_user = "repl"

[notify.snmp]
[[notify.snmp.target]]
address = "{observer}:{TRAP_PORT}"
version = "v2c"
community = "public"
"#,
        observer = V4[O],
    ) + &format!("# peer {peer}\n")
}

/// What an image customisation would do for both servers: the appliance's
/// account, its files and unit, PostgreSQL's password file, hamon's config.
fn common_prepare(a: &Appliance, name: &str, role: &str, me: &str, peer: &str) {
    a.write(
        "etc/systemd/system/appliance-web.service",
        "[Unit]\nDescription=The appliance's web front end (a stand-in)\n\
         [Service]\nExecStart=/bin/sleep infinity\n",
        0o644,
    );
    a.write("etc/hamon/hamon.toml", &config(name, role, me, peer), 0o600);
    a.prepare(&format!(
        "useradd --system --user-group --home-dir /var/lib/appliance appliance
         install -d -o appliance -g appliance -m 0750 /etc/appliance /var/lib/appliance \
             '/srv/odd dir 50%'
         install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/15/hamon
         umask 077
         echo '*:*:*:repl:{REPL_PASSWORD}' > /var/lib/postgresql/.pgpass
         chown postgres:postgres /var/lib/postgresql/.pgpass"
    ));
}

/// The primary's data and database before it is ever paired.
fn primary_prepare(a: &Appliance) {
    a.prepare(&format!(
        "install -o appliance -g appliance -m 0640 /dev/null /etc/appliance/app.conf
         echo 'mode = primary-built' > /etc/appliance/app.conf
         install -d -o appliance -g appliance -m 0700 /var/lib/appliance/spool
         echo 'job 1' > /var/lib/appliance/spool/job-1
         chown appliance:appliance /var/lib/appliance/spool/job-1
         chmod 0600 /var/lib/appliance/spool/job-1
         B=/usr/lib/postgresql/15/bin
         D=/var/lib/postgresql/15/hamon
         runuser -u postgres -- $B/initdb -D $D -U postgres --auth-local=trust \
             --auth-host=scram-sha-256 -k -E UTF8 --locale=C >/dev/null
         printf '%s\n' 'wal_log_hints = on' 'wal_keep_size = 64MB' \
             'shared_buffers = 16MB' 'max_connections = 30' >> $D/postgresql.conf
         printf '%s\n' 'host replication repl 192.0.2.0/24 scram-sha-256' \
             'host postgres repl 192.0.2.0/24 scram-sha-256' >> $D/pg_hba.conf
         runuser -u postgres -- $B/postgres --single -D $D postgres >/dev/null <<'SQL'
CREATE ROLE repl WITH LOGIN REPLICATION PASSWORD '{REPL_PASSWORD}';
GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO repl;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_file(text, boolean) TO repl;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text) TO repl;
GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO repl;
CREATE TABLE t (id bigint PRIMARY KEY, note text);
SQL"
    ));
}

/// systemd's generators: masked (today's unit, nothing added) or not.
fn mask_generator(a: &Appliance, masked: bool) {
    let link = a.root.join("etc/systemd/system-generators/hamon-generator");
    if masked {
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/null", &link).unwrap();
    } else {
        let _ = std::fs::remove_file(&link);
    }
}

fn psql(a: &Appliance, sql: &str) -> Result<String, String> {
    let out = a.sh_in(
        "runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -h /var/run/postgresql \
         -p 5432 -d postgres",
        sql,
    );
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn wait(within: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while t.elapsed() < within {
        if f() {
            return t.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("not within {within:?}: {what}");
}

/// `stat -c '%U:%G %a %s'` of a path inside an appliance.
fn stat(a: &Appliance, path: &str) -> String {
    a.out(&format!("stat -c '%U:%G %a' {path}"))
        .trim()
        .to_string()
}

fn vip_answered_by(bed: &Bed, host: usize) -> bool {
    bed.exec(O, &["ip", "neigh", "flush", "dev", "eth0"]);
    bed.ping(O, VIP4) && bed.neighbour(VIP4).as_deref() == Some(MAC[host])
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn an_appliance_pair_under_systemd() {
    if !netns::available() || !booted::available() || !receivers::have("snmptrapd", "-v") {
        return;
    }
    let tree = booted::tree();
    let mut bed = Bed::new("ap");
    let dir = bed.dir.clone();
    let mut a = Appliance::new("appliance-a", &bed.ns[P], &tree, &dir);
    let mut b = Appliance::new("appliance-b", &bed.ns[S], &tree, &dir);
    common_prepare(&a, "appliance-a", "primary", V4[P], V4[S]);
    common_prepare(&b, "appliance-b", "secondary", V4[S], V4[P]);
    primary_prepare(&a);
    // The servers' kernels keep what the bed's namespaces hold: watch the
    // VIP come and go on each, as the kernel sees it.
    let monitors = [P, S].map(|h| {
        let log = dir.join(format!("ip-monitor-{h}.log"));
        bed.spawn(h, &["ip", "-ts", "monitor", "address"], &log);
        log
    });
    let vip_added_on = |h: usize| {
        std::fs::read_to_string(&monitors[h])
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!("inet {VIP4}/")) && !l.contains("Deleted"))
            .count()
    };
    let mibs = receivers::base_mibs();
    let trapd_dir = dir.join("trapd");
    std::fs::create_dir_all(&trapd_dir).unwrap();
    let trapd = receivers::Trapd::start_on(
        &trapd_dir,
        "disableAuthorization yes\nauthCommunity log public\n",
        &format!("udp:{}:{TRAP_PORT}", V4[O]),
        Some(&bed.ns[O]),
        &mibs,
    );

    // ----- today's unit: no drop-in --------------------------------------
    mask_generator(&a, true);
    mask_generator(&b, true);
    a.boot();
    b.boot();
    let booted_in = [a.wait_booted(), b.wait_booted()];
    eprintln!("booted in {booted_in:?}");
    for s in [&a, &b] {
        wait(SECS(20), "hamon active", || {
            s.out("systemctl is-active hamon").trim() == "active"
        });
    }
    let bounding = a.ok("systemctl show hamon -p CapabilityBoundingSet --value");
    assert!(!bounding.contains("cap_chown"), "{bounding}");
    // config check names each feature the sandbox would refuse.
    let check = a.ok("hamon config check");
    for want in [
        "the unit lacks CAP_CHOWN, needed by [[sync]] conf, [[sync]] data",
        "/etc/appliance is read-only for the unit, needed by [[sync]] conf",
        "the unit lacks CAP_SETUID, needed by [[service]] monitor",
        "[[service]] worker (user = \"appliance\"), [database] driver = \"postgres\"",
        "/var/lib/postgresql/15 is read-only for the unit",
    ] {
        assert!(
            check.contains(want),
            "config check lacks {want:?}:\n{check}"
        );
    }
    // And they do fail: the primary (Stand Alone, serving) cannot run its
    // `user =` services or start its database.
    wait(SECS(20), "the sandbox's refusals in the journal", || {
        let err = a.out("journalctl -u hamon -p err -o cat --no-pager");
        err.contains("worker") && err.contains("database promotion")
    });
    let err = a.out("journalctl -u hamon -p err -o cat --no-pager");
    assert!(
        err.contains("Operation not permitted") || err.contains("not permitted"),
        "{err}"
    );
    // A registration under today's unit fails: the secondary cannot write
    // the synced files nor build its database.
    a.ok("systemctl restart hamon"); // a clean start for the duty below
    b.sh_in("hamon ha authkey", &format!("{KEY}\n"));
    let reg = a.sh_in(
        &format!(
            "hamon ha register --secondary {} --failover-type automatic --vip {VIP4}/24",
            V4[S]
        ),
        &format!("{KEY}\n"),
    );
    assert!(!reg.status.success(), "registered under today's unit");
    wait(SECS(30), "both back in Stand Alone", || {
        a.state() == "Stand Alone" && b.state() == "Stand Alone"
    });
    // The sync set's copy failed on the sandbox: the serving primary cannot
    // even read the appliance's 0750 directory without CAP_DAC_OVERRIDE.
    let b_log = b.out("journalctl -u hamon -o cat --no-pager");
    assert!(
        b_log.contains("set conf: /etc/appliance: read directory: Permission denied"),
        "{b_log}"
    );
    let exposure = |s: &Appliance| {
        s.out("systemd-analyze security hamon.service --no-pager 2>&1 | tail -n 1")
            .trim()
            .to_string()
    };
    let minimal_exposure = exposure(&a);

    // ----- the shipped unit: the generator's drop-in ---------------------
    for s in [&a, &b] {
        mask_generator(s, false);
        s.ok("systemctl daemon-reload && systemctl restart hamon");
        let dropins = s.ok("systemctl show hamon -p DropInPaths --value");
        assert!(dropins.contains("50-hamon-features.conf"), "{dropins}");
        let check = s.ok("hamon config check");
        assert!(!check.contains("warning"), "{check}");
        wait(SECS(20), "hamon active", || {
            s.out("systemctl is-active hamon").trim() == "active"
        });
    }
    eprintln!(
        "systemd-analyze security: today's unit {minimal_exposure:?}; with the drop-in \
         for sync, user= services and PostgreSQL {:?}",
        exposure(&a)
    );
    // The unit reached READY (Type=notify: active means READY=1 came).
    let ready = |s: &Appliance| {
        let v = s.ok("systemctl show hamon -p ExecMainStartTimestampMonotonic \
             -p ActiveEnterTimestampMonotonic --value");
        let n: Vec<u64> = v.lines().filter_map(|l| l.trim().parse().ok()).collect();
        Duration::from_micros(n[1].saturating_sub(n[0]))
    };
    eprintln!("READY after start: a {:?}, b {:?}", ready(&a), ready(&b));

    // ----- before registration the secondary is a spare ------------------
    wait(SECS(10), "the secondary's both-service", || {
        b.sh("pgrep -u appliance -f 'sleep 86401'").status.success()
    });
    std::thread::sleep(SECS(2));
    assert_eq!(b.state(), "Stand Alone");
    assert_eq!(
        b.out("systemctl is-active appliance-web").trim(),
        "inactive"
    );
    assert!(!b.sh("pgrep -u appliance -f 'sleep 86400'").status.success());
    assert!(
        !b.sh("pgrep -x postgres").status.success(),
        "b runs a database"
    );
    let b_journal = b.out("journalctl -u hamon -o cat --no-pager");
    assert!(!b_journal.contains("promot"), "{b_journal}");
    assert!(!bed.has_vip(S));

    // ----- registration ---------------------------------------------------
    let reg = a.sh_in(
        &format!(
            "hamon ha register --secondary {} --failover-type automatic --vip {VIP4}/24",
            V4[S]
        ),
        &format!("{KEY}\n"),
    );
    assert!(
        reg.status.success(),
        "register: {}{}",
        String::from_utf8_lossy(&reg.stdout),
        String::from_utf8_lossy(&reg.stderr)
    );
    a.wait_state("Primary Active", SECS(60));
    b.wait_state("Secondary Syncing", SECS(60));
    wait(SECS(10), "the VIP answered by a", || {
        vip_answered_by(&bed, P)
    });

    // Files with their owners and modes (the initial copy).
    assert_eq!(
        stat(&b, "/etc/appliance/app.conf"),
        "appliance:appliance 640"
    );
    assert_eq!(
        b.ok("cat /etc/appliance/app.conf").trim(),
        "mode = primary-built"
    );
    assert_eq!(
        stat(&b, "/var/lib/appliance/spool/job-1"),
        "appliance:appliance 600"
    );
    // A change on the active arrives within the frequent class's second.
    a.ok("echo 'job 2' > /var/lib/appliance/spool/job-2 && \
          chown appliance:appliance /var/lib/appliance/spool/job-2 && \
          chmod 0640 /var/lib/appliance/spool/job-2");
    wait(SECS(20), "job-2 on b", || {
        stat(&b, "/var/lib/appliance/spool/job-2") == "appliance:appliance 640"
    });

    // The quoted path is writable under the drop-in.
    a.ok("echo odd > '/srv/odd dir 50%/file' && chown appliance: '/srv/odd dir 50%/file'");
    wait(SECS(20), "the odd path's file on b", || {
        stat(&b, "'/srv/odd dir 50%/file'") == "appliance:appliance 644"
    });

    // A large file's change comes as a delta under the unit too: the block lists'
    // endpoints, and the new file built with copy_file_range from the old copy.
    let image = "/var/lib/appliance/image.bin";
    let sum = |s: &Appliance| s.out(&format!("sha256sum {image} 2>/dev/null | cut -c1-64"));
    a.ok(&format!(
        "head -c 24M /dev/urandom > /var/lib/image.new && chown appliance: /var/lib/image.new \
         && mv /var/lib/image.new {image}"
    ));
    let first = sum(&a);
    wait(SECS(30), "image.bin on b", || sum(&b) == first);
    // One byte changed, in a copy renamed over the file (a pass never sees it half done).
    a.ok(&format!(
        "at=17825792; old=$(od -An -tu1 -j $at -N1 {image} | tr -d ' ')
         if [ \"$old\" = 88 ]; then c=Y; else c=X; fi
         cp -p {image} /var/lib/image.new
         printf $c | dd of=/var/lib/image.new bs=1 seek=$at conv=notrunc status=none
         mv /var/lib/image.new {image}"
    ));
    let second = sum(&a);
    assert_ne!(first, second);
    wait(SECS(30), "the changed image.bin on b", || sum(&b) == second);
    let mut frequent = serde_json::Value::Null;
    wait(SECS(10), "a pass with one delta", || {
        let v: serde_json::Value =
            serde_json::from_str(&b.out("hamon status --json")).unwrap_or_default();
        frequent = v["sync"]["frequent"].clone();
        frequent["delta_files"] == 1
    });
    let fetched = frequent["delta_fetched"].as_u64().unwrap();
    assert!(fetched < 256 << 10, "{fetched} bytes fetched for 1 byte");
    assert_eq!(stat(&b, image), "appliance:appliance 644");

    // Services follow the role.
    let runs = |s: &Appliance| {
        (
            s.out("systemctl is-active appliance-web").trim() == "active",
            s.sh("pgrep -u appliance -f 'sleep 86400'").status.success(),
            s.sh("pgrep -u appliance -f 'sleep 86401'").status.success(),
        )
    };
    wait(SECS(10), "a runs every service", || {
        runs(&a) == (true, true, true)
    });
    assert_eq!(runs(&b), (false, false, true));

    // PostgreSQL: the standby was built at registration; rows replicate.
    wait(SECS(30), "b's standby", || {
        psql(&b, "SELECT pg_is_in_recovery()").as_deref() == Ok("t")
    });
    psql(&a, "INSERT INTO t VALUES (1, 'on a')").unwrap();
    wait(SECS(20), "row 1 on b", || {
        psql(&b, "SELECT count(*) FROM t WHERE id = 1").as_deref() == Ok("1")
    });
    assert!(psql(&b, "INSERT INTO t VALUES (99, 'x')").is_err());

    // ----- SIGKILL of the active agent: the outage, five times ------------
    let b_vips_before = vip_added_on(S);
    let mut outages = Vec::new();
    for run in 0..5 {
        let restarts_before: u32 = a
            .ok("systemctl show hamon -p NRestarts --value")
            .trim()
            .parse()
            .unwrap();
        // The agent crashes: SIGKILL to its main process. (Signalling the
        // whole cgroup fails on this cgroup-v1 host with EIO, a limit of
        // the host, not of the unit; systemd then stops what remains.)
        let gap = outage_while(&bed, VIP4, SECS(4), || {
            a.ok("systemctl kill --kill-whom=main -s SIGKILL hamon");
        });
        wait(SECS(10), "hamon restarted", || {
            a.out("systemctl show hamon -p NRestarts --value")
                .trim()
                .parse::<u32>()
                .is_ok_and(|n| n > restarts_before)
                && a.out("systemctl is-active hamon").trim() == "active"
        });
        a.wait_state("Primary Active", SECS(10));
        eprintln!("SIGKILL run {run}: client outage {gap:?}");
        if gap > Duration::from_millis(450) {
            eprintln!(
                "{}\n----- b\n{}",
                a.out("journalctl -o short-monotonic --no-pager -n 60 | grep -v sync"),
                b.out("journalctl -u hamon -o short-monotonic --no-pager -n 60 | grep -v sync")
            );
        }
        outages.push(gap);
    }
    // The figure (target: a median under 500 ms) is bench/crash's to
    // report, not a timed assertion here; what must hold in any case is
    // that the secondary never took over (below).
    let med = median(outages.clone());
    eprintln!("SIGKILL of the active agent: outages {outages:?}, median {med:?}");
    assert_eq!(
        vip_added_on(S),
        b_vips_before,
        "b claimed the VIP: dual-active"
    );
    assert_eq!(b.state(), "Secondary Syncing");

    // ----- systemctl stop: hand-over --------------------------------------
    let handover = outage_while(&bed, VIP4, SECS(6), || {
        a.ok("systemctl stop hamon");
    });
    b.wait_state("Secondary Active", SECS(20));
    assert!(vip_answered_by(&bed, S));
    eprintln!("systemctl stop on the active: client outage {handover:?}");
    let traps = trapd.wait_for(
        |log| log.contains("HAMON-MIB::hamonFailover"),
        "hamonFailover from the booted secondary",
    );
    assert!(traps.contains(V4[S]), "{traps}");
    // Services and database moved; b takes writes and files.
    wait(SECS(30), "b promoted", || {
        psql(&b, "SELECT pg_is_in_recovery()").as_deref() == Ok("f")
    });
    psql(&b, "INSERT INTO t VALUES (2, 'on b')").unwrap();
    b.ok("echo 'mode = changed-on-b' > /etc/appliance/app.conf");
    wait(SECS(10), "b runs every service", || {
        runs(&b) == (true, true, true)
    });
    assert_eq!(runs(&a), (false, false, false));

    // ----- the primary returns and fails back ------------------------------
    a.ok("systemctl start hamon");
    a.wait_state("Primary Syncing", SECS(60));
    let failback = b.ok("hamon ha failback");
    eprintln!("failback: {}", failback.trim());
    a.wait_state("Primary Active", SECS(120));
    b.wait_state("Secondary Syncing", SECS(60));
    wait(SECS(10), "the VIP back on a", || vip_answered_by(&bed, P));
    assert_eq!(
        a.ok("cat /etc/appliance/app.conf").trim(),
        "mode = changed-on-b"
    );
    assert_eq!(
        stat(&a, "/etc/appliance/app.conf"),
        "appliance:appliance 640"
    );
    assert_eq!(
        psql(&a, "SELECT note FROM t WHERE id = 2").as_deref(),
        Ok("on b")
    );
    wait(SECS(30), "b following again", || {
        psql(&b, "SELECT pg_is_in_recovery()").as_deref() == Ok("t")
    });

    // ----- power cut of the active primary ---------------------------------
    // A rewind keeps the data directory's tree; a fresh copy rebuilds it.
    let base_inode = |a: &Appliance| {
        a.out("stat -c %i /var/lib/postgresql/15/hamon/base")
            .trim()
            .to_string()
    };
    let before_rewind = base_inode(&a);
    let t = Instant::now();
    let takeover = outage_while(&bed, VIP4, SECS(15), || {
        a.power_cut(&bed, P);
    });
    b.wait_state("Secondary Active", SECS(30));
    eprintln!(
        "power cut of the active: client outage {takeover:?} (Secondary Active after {:?})",
        t.elapsed()
    );
    assert!(vip_answered_by(&bed, S));
    wait(SECS(30), "b promoted", || {
        psql(&b, "SELECT pg_is_in_recovery()").as_deref() == Ok("f")
    });
    psql(&b, "INSERT INTO t VALUES (3, 'on b after the power cut')").unwrap();
    b.ok("echo 'job 3' > /var/lib/appliance/spool/job-3 && \
          chown appliance:appliance /var/lib/appliance/spool/job-3");
    // The reboot: the VIP the dead kernel held is gone, as in a real reboot.
    bed.exec(
        P,
        &["ip", "addr", "del", &format!("{VIP4}/24"), "dev", "eth0"],
    );
    bed.link(P, true);
    a.boot();
    a.wait_booted();
    a.wait_state("Primary Syncing", SECS(90));
    // Rewound, not copied: it follows b.
    wait(SECS(60), "a following b", || {
        psql(&a, "SELECT count(*) FROM t WHERE id = 3").as_deref() == Ok("1")
    });
    assert_eq!(psql(&a, "SELECT pg_is_in_recovery()").as_deref(), Ok("t"));
    assert_eq!(
        base_inode(&a),
        before_rewind,
        "a was copied afresh, not rewound"
    );
    b.ok("hamon ha failback");
    a.wait_state("Primary Active", SECS(120));
    b.wait_state("Secondary Syncing", SECS(60));
    wait(SECS(10), "the VIP back on a", || vip_answered_by(&bed, P));
    assert_eq!(
        stat(&a, "/var/lib/appliance/spool/job-3"),
        "appliance:appliance 644"
    );
    psql(&a, "INSERT INTO t VALUES (4, 'on a again')").unwrap();
    wait(SECS(20), "row 4 on b", || {
        psql(&b, "SELECT count(*) FROM t").as_deref() == Ok("4")
    });

    // ----- the journal ----------------------------------------------------
    // Errors at priority err (b logged the lost peer), one tag per line.
    let errors = b.out("journalctl -u hamon -p err -o cat --no-pager");
    assert!(errors.contains("[peer_lost]"), "{errors}");
    for s in [&a, &b] {
        let lines = s.out("journalctl -u hamon -o short --no-pager");
        for l in lines.lines().filter(|l| l.contains("hamon[")) {
            assert_eq!(l.matches("hamon[").count(), 1, "two tags: {l}");
        }
        assert!(!lines.contains("Watchdog timeout"), "{}: {lines}", s.name);
        assert!(!lines.contains("panicked"), "{}: {lines}", s.name);
    }
}
