//! Notifications from real agents on a failover, to real receivers:
//! snmptrapd (v2c, and v3 authPriv decoded with the configured user),
//! aiosmtpd, and a syslog collector; then the same with the receivers dead or
//! stuck: no heartbeat is late, and the queued mail goes out once the SMTP
//! server is back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod receivers;

use common::{wait, Pair};
use receivers::*;
use std::net::{TcpListener, UdpSocket};
use std::time::{Duration, Instant};

#[allow(non_snake_case)]
fn SECS(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn free_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_tcp() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The engine id both agents use (written to their state directories before
/// they start, so snmptrapd can be told the user's localized keys).
const ENGINE_HEX: &str = "8001869f05";

fn notify_section(trap_port: u16, smtp_port: u16, syslog: &str) -> String {
    format!(
        "[notify.syslog]\nlocal = false\nremote = \"{syslog}\"\nfacility = \"local3\"\n\
         [notify.mail]\nsmtp = \"127.0.0.1:{smtp_port}\"\nsecurity = \"none\"\n\
         from = \"hamon@example.com\"\nto = [\"ops@example.com\"]\nretry_ms = 200\n\
         retry_max_ms = 500\nattempts = 1000\ntimeout_ms = 2000\n\
         [notify.snmp]\ncold_start = true\n\
         [[notify.snmp.target]]\naddress = \"127.0.0.1:{trap_port}\"\nversion = \"v2c\"\n\
         community = \"public\"\n\
         [[notify.snmp.target]]\naddress = \"127.0.0.1:{trap_port}\"\nversion = \"v3\"\n\
         user = \"hamonops\"\nauth = \"sha256\"\nauth_password = \"auth-pass-256\"\n\
         privacy = \"aes128\"\nprivacy_password = \"priv-pass-128\"\n"
    )
}

/// Both agents' SNMP engine ids, chosen by the test.
fn seed_engine(p: &Pair) {
    for (i, last) in ["a1", "b2"].iter().enumerate() {
        let dir = p.state_dir(i);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("snmp-engine-id"),
            format!("{ENGINE_HEX}{last}0102030405\n"),
        )
        .unwrap();
    }
}

fn trapd_conf() -> String {
    let mut conf = String::from("disableAuthorization yes\nauthCommunity log public\n");
    for last in ["a1", "b2"] {
        conf.push_str(&format!(
            "createUser -e 0x{ENGINE_HEX}{last}0102030405 hamonops SHA-256 auth-pass-256 AES priv-pass-128\n"
        ));
    }
    conf.push_str("authUser log hamonops priv\n");
    conf
}

fn scratch(p: &Pair, name: &str) -> std::path::PathBuf {
    let d = p.dir.join(name);
    std::fs::create_dir_all(d.join("spool")).unwrap();
    d
}

#[test]
fn a_failover_reaches_snmp_mail_and_syslog() {
    let (Some(py), true, true) = (
        python(),
        have("snmptrapd", "--version"),
        have("npm", "--version"),
    ) else {
        return;
    };
    let mibs = base_mibs();
    let (trap_port, smtp_port) = (free_udp(), free_tcp());
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    collector
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let syslog = format!("udp://{}", collector.local_addr().unwrap());
    let p = Pair::with_extra(103, &notify_section(trap_port, smtp_port, &syslog));
    seed_engine(&p);
    let tdir = scratch(&p, "trapd");
    let trapd = Trapd::start(&tdir, &trapd_conf(), trap_port, &mibs);
    let mdir = scratch(&p, "smtp");
    let _smtp = Server::start(py, &mdir, smtp_port, ServerTls::None);

    let mut p = Pair::registered_with(p, "automatic");
    // The standard coldStart went out when the agents started.
    trapd.wait_for(|log| log.contains("coldStart"), "coldStart");
    p.kill9(0);
    p.wait_state(1, "Secondary Active", SECS(20));

    // SNMP: hamonFailover from ha-b, named from HAMON-MIB, once over v2c and
    // once over v3 authPriv (the user's keys decrypt it).
    let log = trapd.wait_for(
        |log| log.matches("HAMON-MIB::hamonFailover").count() >= 2,
        "two hamonFailover traps",
    );
    assert!(
        log.contains("HAMON-MIB::hamonNodeName.0 = STRING: ha-b"),
        "{log}"
    );
    assert!(
        log.contains("HAMON-MIB::hamonState.0 = STRING: Secondary Active"),
        "{log}"
    );
    assert!(log.contains("HAMON-MIB::hamonSeverity.0"), "{log}");
    assert!(!log.contains("1.3.6.1.4.1.99999"), "raw OIDs in {log}");
    assert!(!log.contains("Authentication failed"), "{log}");

    // Mail: subject, body and the Health Monitor link of the server that sent it.
    wait(SECS(20), || {
        spooled(&mdir)
            .iter()
            .any(|m| m.header("subject").contains("failover_complete"))
    })
    .unwrap_or_else(|| panic!("no failover mail; log:\n{}", p.log(1)));
    let mails = spooled(&mdir);
    let m = mails
        .iter()
        .find(|m| m.header("subject").contains("failover_complete"))
        .unwrap();
    assert!(
        m.header("subject").contains("ha-b"),
        "{}",
        m.header("subject")
    );
    assert!(
        m.header("subject").contains("Secondary Active"),
        "{}",
        m.header("subject")
    );
    assert!(m.body.contains("http://127.0.103.3:18082/"), "{}", m.body);
    assert!(m.body.to_lowercase().contains("failover"), "{}", m.body);
    // Every state change is mailed too (the guide's rule).
    assert!(mails
        .iter()
        .any(|m| m.header("subject").contains("state_changed")));

    // syslog: RFC 5424 with the event id as MSGID, facility local3 (19).
    let end = Instant::now() + SECS(10);
    let mut lines = Vec::new();
    while Instant::now() < end {
        let mut buf = [0u8; 4096];
        if let Ok(n) = collector.recv(&mut buf) {
            let line = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = line.contains("failover_complete");
            lines.push(line);
            if done {
                break;
            }
        }
    }
    let line = lines
        .iter()
        .find(|l| l.contains(" failover_complete "))
        .unwrap_or_else(|| panic!("no syslog line for the failover: {lines:?}"));
    assert!(line.starts_with("<15"), "{line}"); // local3 (19*8=152) + severity: PRI 15x
    assert!(line.contains("ha-b"), "{line}");
    drop(p);
}

/// Heartbeats the secondary accepted so far (from `hamon status --json`-less
/// output: the control socket's counters).
fn accepted(p: &Pair, i: usize) -> u64 {
    match hamon::control::call(
        &p.socket(i),
        &hamon::control::Request::Status,
        Some(SECS(5)),
    ) {
        Ok(hamon::control::Reply::Status { heartbeats, .. }) => heartbeats.accepted,
        other => panic!("{other:?}"),
    }
}

#[test]
fn dead_receivers_cost_no_heartbeat_and_mail_waits_for_the_server() {
    let Some(py) = python() else { return };
    // SMTP and syslog-over-TCP endpoints that accept and then never answer;
    // SNMP to a port where nobody listens.
    let stuck_smtp = TcpListener::bind("127.0.0.1:0").unwrap();
    let smtp_port = stuck_smtp.local_addr().unwrap().port();
    let stuck_syslog = TcpListener::bind("127.0.0.1:0").unwrap();
    let syslog = format!("tcp://{}", stuck_syslog.local_addr().unwrap());
    let p = Pair::with_extra(104, &notify_section(free_udp(), smtp_port, &syslog));
    seed_engine(&p);
    // Churn: a service that dies every half second makes a stream of events.
    for i in 0..2 {
        let extra =
            "[[service]]\nname = \"flapper\"\ncommand = [\"/bin/sh\", \"-c\", \"sleep 0.5\"]\n\
                     run_on = \"both\"\nrestart_attempts = 1000\nrestart_window_secs = 1\n\
                     restart_backoff_ms = 10\n";
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(p.config(i))
            .unwrap();
        std::io::Write::write_all(&mut f, extra.as_bytes()).unwrap();
    }
    let p = Pair::registered_with(p, "manual");
    let (t0, a0) = (Instant::now(), accepted(&p, 1));
    std::thread::sleep(SECS(6));
    let (elapsed, got) = (t0.elapsed(), accepted(&p, 1) - a0);
    // 100 ms heartbeats: about 60 in 6 s. A stalled sender would lose most of
    // them; allow a loaded machine's scheduling slack (and the journal check
    // below is exact: no heartbeat was ever missed three times in a row).
    let expected = elapsed.as_millis() as u64 / 100;
    assert!(
        got * 10 >= expected * 7,
        "only {got} of ~{expected} heartbeats accepted while receivers hung"
    );
    let events = String::from_utf8_lossy(&p.run(1, &["ha", "events"]).stdout).to_string();
    assert!(!events.contains("heartbeats_missed"), "{events}");
    assert!(
        p.ha_status(0).contains("Primary Active"),
        "{}",
        p.ha_status(0)
    );
    let status = String::from_utf8_lossy(&p.run(0, &["status"]).stdout).to_string();
    assert!(status.contains("Notifications: mail 0 sent"), "{status}");

    // The SMTP server comes back on the same port: the queued mail goes out.
    drop(stuck_smtp);
    let mdir = scratch(&p, "smtp");
    let _smtp = Server::start(py, &mdir, smtp_port, ServerTls::None);
    wait(SECS(30), || {
        spooled(&mdir)
            .iter()
            .any(|m| m.header("subject").contains("registered"))
    })
    .unwrap_or_else(|| panic!("queued mail never delivered:\n{}", p.log(0)));
    drop(stuck_syslog);
}

/// Issue 15: `hamon notify test` sends a test through every configured channel to the
/// real receivers and says what each did; `--channel` picks one; a receiver that is down
/// makes it fail, with the reason.
#[test]
fn notify_test_reaches_every_receiver_and_says_when_one_fails() {
    let (Some(py), true, true) = (
        python(),
        have("snmptrapd", "--version"),
        have("npm", "--version"),
    ) else {
        return;
    };
    let mibs = base_mibs();
    let (trap_port, smtp_port) = (free_udp(), free_tcp());
    let collector = UdpSocket::bind("127.0.0.1:0").unwrap();
    collector
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let syslog = format!("udp://{}", collector.local_addr().unwrap());
    let p = Pair::with_extra(108, &notify_section(trap_port, smtp_port, &syslog));
    seed_engine(&p);
    let tdir = scratch(&p, "trapd");
    let trapd = Trapd::start(&tdir, &trapd_conf(), trap_port, &mibs);
    let mdir = scratch(&p, "smtp");
    let smtp = Server::start(py, &mdir, smtp_port, ServerTls::None);
    let p = Pair::registered_with(p, "manual");

    let out = p.run(0, &["notify", "test"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}");
    assert!(
        said.contains(&format!("syslog to {syslog}: sent")),
        "{said}"
    );
    assert!(said.contains("mail to ops@example.com: sent"), "{said}");
    assert_eq!(
        said.matches(&format!("snmp to 127.0.0.1:{trap_port}: sent"))
            .count(),
        2,
        "{said}"
    );
    // Each receiver has it.
    let log = trapd.wait_for(
        |log| log.matches("Test notification").count() >= 2,
        "two test traps",
    );
    assert!(
        log.contains("HAMON-MIB::hamonNodeName.0 = STRING: ha-a"),
        "{log}"
    );
    wait(SECS(20), || {
        spooled(&mdir)
            .iter()
            .any(|m| m.header("subject").contains("notify_test"))
    })
    .expect("no test mail");
    let end = Instant::now() + SECS(10);
    let mut heard = false;
    while !heard && Instant::now() < end {
        let mut buf = [0u8; 4096];
        if let Ok(n) = collector.recv(&mut buf) {
            heard = String::from_utf8_lossy(&buf[..n]).contains(" notify_test ");
        }
    }
    assert!(heard, "no syslog line for the test");

    // One channel only.
    let out = p.run(0, &["notify", "test", "--channel", "syslog"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(said.lines().count(), 1, "{said}");
    let out = p.run(0, &["notify", "test", "--channel", "pager"]);
    assert!(!out.status.success(), "{out:?}");

    // The SMTP server gone: the test says so, and fails.
    drop(smtp);
    let out = p.run(0, &["notify", "test", "--channel", "mail"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{out:?}");
    assert!(
        err.contains("mail to ops@example.com: FAILED: SMTP"),
        "{err}"
    );
}
