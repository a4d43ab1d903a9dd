//! Mail notifications against a real SMTP server: Debian's aiosmtpd
//! (`python3-aiosmtpd`) on 127.0.0.1 with a small handler
//! (`tests/support/hamon_spool.py`) that writes each mail, decoded, to a
//! numbered file. Skipped when aiosmtpd is missing, unless `CI` is set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod receivers;

use receivers::*;

use hamon::notify::mail::{
    MailConfig, MailTransport, Mailer, RetryPolicy, SmtpConfig, SmtpSecurity,
};
use hamon::notify::{Notice, NoticeSeverity};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A temporary directory (with `spool/`), removed on drop.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("hamon-mail-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("spool")).unwrap();
    Scratch(dir)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn notice(n: u32) -> Notice {
    Notice {
        id: format!("event_{n}"),
        severity: NoticeSeverity::Major,
        node: "alpha".into(),
        role: "primary".into(),
        state: "active".into(),
        previous_state: Some("standby".into()),
        text: format!("test event number {n}"),
        time_unix: 1_709_294_400 + u64::from(n),
        peer: Some("beta".into()),
        monitor_url: "https://alpha.example:8443/monitor".into(),
    }
}

fn config(port: u16, security: SmtpSecurity) -> MailConfig {
    let mut smtp = SmtpConfig::new("localhost", security);
    smtp.port = port;
    smtp.timeout = Duration::from_secs(5);
    smtp.accept_invalid_certs = true;
    smtp.hello_name = Some("alpha.test".into());
    let mut cfg = MailConfig::new(
        MailTransport::Smtp(smtp),
        "hamon <hamon@alpha.test>",
        vec!["ops@example.com".into(), "oncall@example.com".into()],
    );
    cfg.retry = RetryPolicy {
        base: Duration::from_millis(100),
        max: Duration::from_millis(300),
        max_attempts: 200,
    };
    cfg
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_mails(dir: &Path, n: usize) -> Vec<Received> {
    wait_for(&format!("{n} mail(s)"), Duration::from_secs(20), || {
        spooled(dir).len() >= n
    });
    spooled(dir)
}

fn check_mail(m: &Received, n: u32) {
    assert_eq!(
        m.header("subject"),
        format!("[hamon] alpha: active \u{2014} event_{n}")
    );
    assert_eq!(m.header("env-from"), "hamon@alpha.test");
    assert_eq!(m.header("env-to"), "ops@example.com,oncall@example.com");
    assert!(m.header("message-id").ends_with("@alpha.test>"));
    assert!(m.header("content-type").starts_with("text/plain"));
    for want in [
        "State:           active\n".to_string(),
        "Previous state:  standby\n".to_string(),
        format!("Description:     test event number {n}\n"),
        "Severity:        major\n".to_string(),
        "Peer:            beta\n".to_string(),
        format!("Time (UTC):      2024-03-01T12:00:0{n}Z\n"),
        "Health Monitor:  https://alpha.example:8443/monitor\n".to_string(),
    ] {
        assert!(m.body.contains(&want), "{want:?} not in:\n{}", m.body);
    }
}

#[test]
fn delivers_subject_body_and_link() {
    let Some(py) = python() else { return };
    let dir = scratch("plain");
    let port = free_port();
    let _server = Server::start(py, &dir, port, ServerTls::None);
    let mailer = Mailer::start(config(port, SmtpSecurity::None)).unwrap();
    mailer.send(&notice(1));
    let mails = wait_mails(&dir, 1);
    check_mail(&mails[0], 1);
    assert_eq!(mails[0].header("tls"), "no");
    wait_for("stats", Duration::from_secs(5), || mailer.stats().sent == 1);
    let stats = mailer.stats();
    assert_eq!(
        (stats.dropped, stats.failed_attempts, stats.queued),
        (0, 0, 0)
    );
    mailer.stop();
}

#[test]
fn queues_while_the_server_is_down_then_delivers_in_order() {
    let Some(py) = python() else { return };
    let dir = scratch("down");
    let port = free_port();
    let mailer = Mailer::start(config(port, SmtpSecurity::None)).unwrap();
    let t0 = Instant::now();
    for n in 1..=3 {
        mailer.send(&notice(n));
    }
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(50),
        "send blocked for {took:?}"
    );
    wait_for("failed attempts", Duration::from_secs(5), || {
        mailer.stats().failed_attempts >= 2
    });
    // Still not blocking while the thread is retrying.
    let t0 = Instant::now();
    mailer.send(&notice(4));
    assert!(t0.elapsed() < Duration::from_millis(20));
    let stats = mailer.stats();
    assert_eq!((stats.sent, stats.queued, stats.dropped), (0, 4, 0));
    assert!(stats.last_error.is_some());

    let _server = Server::start(py, &dir, port, ServerTls::None);
    let mails = wait_mails(&dir, 4);
    assert_eq!(mails.len(), 4);
    for (i, m) in mails.iter().enumerate() {
        check_mail(m, i as u32 + 1);
    }
    wait_for("stats", Duration::from_secs(5), || mailer.stats().sent == 4);
    assert_eq!(mailer.stats().dropped, 0);
    mailer.stop();
}

#[test]
fn a_full_queue_drops_the_oldest() {
    let Some(py) = python() else { return };
    let dir = scratch("full");
    let port = free_port();
    let mut cfg = config(port, SmtpSecurity::None);
    cfg.queue_len = 2;
    let mailer = Mailer::start(cfg).unwrap();
    for n in 1..=5 {
        mailer.send(&notice(n));
    }
    let stats = mailer.stats();
    assert_eq!((stats.queued, stats.dropped, stats.sent), (2, 3, 0));

    let _server = Server::start(py, &dir, port, ServerTls::None);
    let mails = wait_mails(&dir, 2);
    std::thread::sleep(Duration::from_millis(300));
    let mails_after = spooled(&dir);
    assert_eq!(mails_after.len(), 2, "only the two newest are delivered");
    check_mail(&mails[0], 4);
    check_mail(&mails[1], 5);
    wait_for("stats", Duration::from_secs(5), || mailer.stats().sent == 2);
    assert_eq!(mailer.stats().dropped, 3);
    mailer.stop();
}

#[test]
fn a_permanent_rejection_is_not_retried() {
    let Some(py) = python() else { return };
    let dir = scratch("reject");
    let port = free_port();
    let _server = Server::start(py, &dir, port, ServerTls::None);
    let mut cfg = config(port, SmtpSecurity::None);
    cfg.to = vec!["reject@example.com".into()];
    let mailer = Mailer::start(cfg).unwrap();
    mailer.send(&notice(1));
    wait_for("drop", Duration::from_secs(10), || {
        mailer.stats().dropped == 1
    });
    let stats = mailer.stats();
    assert_eq!((stats.sent, stats.failed_attempts, stats.queued), (0, 1, 0));
    assert!(
        stats.last_error.as_deref().unwrap_or("").contains("550"),
        "{stats:?}"
    );
    mailer.stop();
}

#[test]
fn retries_are_bounded() {
    let Some(_py) = python() else { return };
    let port = free_port(); // nothing listens there
    let mut cfg = config(port, SmtpSecurity::None);
    cfg.retry = RetryPolicy {
        base: Duration::from_millis(10),
        max: Duration::from_millis(20),
        max_attempts: 3,
    };
    let mailer = Mailer::start(cfg).unwrap();
    mailer.send(&notice(1));
    mailer.send(&notice(2));
    wait_for("both given up", Duration::from_secs(10), || {
        mailer.stats().dropped == 2
    });
    let stats = mailer.stats();
    assert_eq!((stats.failed_attempts, stats.queued), (6, 0));
    mailer.stop();
}

/// One mail over TLS (`server` side, `client` side); the server saw TLS.
fn over_tls(name: &str, server: ServerTls, client: SmtpSecurity, n: u32) {
    let Some(py) = python() else { return };
    let dir = scratch(name);
    let port = free_port();
    let _server = Server::start(py, &dir, port, server);
    let mailer = Mailer::start(config(port, client)).unwrap();
    mailer.send(&notice(n));
    let mails = wait_mails(&dir, 1);
    check_mail(&mails[0], n);
    assert!(
        mails[0].header("tls").starts_with("TLS"),
        "tls: {}",
        mails[0].header("tls")
    );
    mailer.stop();
}

#[test]
fn starttls() {
    over_tls("starttls", ServerTls::StartTls, SmtpSecurity::StartTls, 1);
}

#[test]
fn implicit_tls() {
    over_tls("smtps", ServerTls::Implicit, SmtpSecurity::Tls, 2);
}

#[test]
fn an_untrusted_certificate_is_refused() {
    let Some(py) = python() else { return };
    let dir = scratch("untrusted");
    let port = free_port();
    let _server = Server::start(py, &dir, port, ServerTls::StartTls);
    let mut cfg = config(port, SmtpSecurity::StartTls);
    if let MailTransport::Smtp(s) = &mut cfg.transport {
        s.accept_invalid_certs = false;
    }
    let mailer = Mailer::start(cfg).unwrap();
    mailer.send(&notice(1));
    wait_for("a failed attempt", Duration::from_secs(10), || {
        mailer.stats().failed_attempts >= 1
    });
    let stats = mailer.stats();
    assert_eq!(stats.sent, 0);
    let err = stats.last_error.unwrap_or_default();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(spooled(&dir).is_empty());
    mailer.stop();
}

#[test]
fn stop_drains_the_queue() {
    let Some(py) = python() else { return };
    let dir = scratch("drain");
    let port = free_port();
    let _server = Server::start(py, &dir, port, ServerTls::None);
    let mailer = Mailer::start(config(port, SmtpSecurity::None)).unwrap();
    for n in 1..=3 {
        mailer.send(&notice(n));
    }
    mailer.stop();
    let mails = spooled(&dir);
    assert_eq!(mails.len(), 3);
    for (i, m) in mails.iter().enumerate() {
        check_mail(m, i as u32 + 1);
    }
}

#[test]
fn stop_gives_up_on_a_dead_server_in_time() {
    let port = free_port();
    let mailer = Mailer::start(config(port, SmtpSecurity::None)).unwrap();
    mailer.send(&notice(1));
    let t0 = Instant::now();
    mailer.stop();
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
}

#[test]
fn sendmail_transport() {
    let dir = scratch("sendmail");
    let script = dir.join("sendmail");
    let out = dir.join("out.eml");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"ARGS: $*\" > {out}.tmp\ncat >> {out}.tmp\nmv {out}.tmp {out}\n",
            out = out.display()
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&script, perms).unwrap();

    let mut cfg = config(0, SmtpSecurity::None);
    cfg.transport = MailTransport::Sendmail {
        path: script.clone(),
    };
    let mailer = Mailer::start(cfg).unwrap();
    mailer.send(&notice(3));
    wait_for("sendmail output", Duration::from_secs(10), || out.exists());
    let text = std::fs::read_to_string(&out).unwrap();
    let first = text.lines().next().unwrap();
    assert!(first.contains("-f hamon@alpha.test"), "{first}");
    assert!(
        first.contains("ops@example.com oncall@example.com"),
        "{first}"
    );
    assert!(
        text.contains("Subject: [hamon] alpha: active =?utf-8?b?4oCU?= event_3"),
        "{text}"
    );
    assert!(
        text.contains("Description:     test event number 3"),
        "{text}"
    );
    assert!(
        text.contains("https://alpha.example:8443/monitor"),
        "{text}"
    );
    wait_for("stats", Duration::from_secs(5), || mailer.stats().sent == 1);
    mailer.stop();
}
