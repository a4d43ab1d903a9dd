//! Operator-facing behaviour with real agents: hooks, identity changes,
//! confirmations and the CLI surface.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;

const HOOKS: &str = "[hooks]\n\
    activate = [\"/bin/sh\", \"-c\", \"echo $HAMON_DUTY > {dir}/{name}.duty\"]\n\
    deactivate = [\"/bin/sh\", \"-c\", \"echo $HAMON_DUTY > {dir}/{name}.duty\"]\n";

fn duty(p: &Pair, name: &str) -> String {
    std::fs::read_to_string(p.dir.join(format!("{name}.duty")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn duty_hooks_follow_the_active_role_across_failover() {
    let mut p = Pair::registered_with(Pair::with_extra(21, HOOKS), "automatic");
    wait(Duration::from_secs(3), || {
        duty(&p, "ha-a") == "active" && duty(&p, "ha-b") == "standby"
    })
    .unwrap_or_else(|| panic!("a={:?} b={:?}", duty(&p, "ha-a"), duty(&p, "ha-b")));
    p.kill9(0);
    p.wait_state(1, "Secondary Active", Duration::from_secs(3));
    assert_eq!(duty(&p, "ha-b"), "active");
}

#[test]
fn a_failing_copy_hook_fails_registration() {
    let extra = "[hooks]\nfull_copy = [\"/bin/sh\", \"-c\", \"echo disk full >&2; exit 3\"]\n";
    let mut p = Pair::with_extra(22, extra);
    assert!(p
        .run_with_stdin(1, &["ha", "authkey"], &format!("{KEY}\n"))
        .status
        .success());
    p.start(0);
    p.start(1);
    let out = p.run_with_stdin(
        0,
        &[
            "ha",
            "register",
            "--secondary",
            &p.addrs[1].clone(),
            "--failover-type",
            "manual",
        ],
        &format!("{KEY}\n"),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("initial copy"),
        "{out:?}"
    );
    p.wait_state(0, "Stand Alone", Duration::from_secs(3));
    p.wait_state(1, "Stand Alone", Duration::from_secs(3));
}

#[test]
fn a_changed_node_name_is_refused_until_ha_remove() {
    let mut p = Pair::registered(23, "automatic");
    p.kill9(1);
    let cfg = std::fs::read_to_string(p.config(1))
        .unwrap()
        .replace("name = \"ha-b\"", "name = \"ha-b2\"");
    std::fs::write(p.config(1), cfg).unwrap();
    p.start(1);
    p.wait_state(1, "Secondary Alone", Duration::from_secs(3));
    p.kill9(0);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        p.ha_status(1).contains("Secondary Alone"),
        "never takes over while blocked"
    );
    let out = p.run(1, &["ha", "failover"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ha-b2") && err.contains("ha remove"), "{err}");
    let out = p.run(1, &["ha", "remove", "--yes"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(p.status_line(1), "[Role] Secondary [State] Stand Alone");
}

#[test]
fn remove_asks_twice_and_no_keeps_everything() {
    let p = Pair::registered(24, "manual");
    let out = p.run_with_stdin(0, &["ha", "remove"], "n\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Nothing removed"));
    assert!(p.ha_status(0).contains("Primary Active"));
    let out = p.run_with_stdin(0, &["ha", "remove"], "y\nn\n");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Also remove the HA data") && text.contains("both servers"),
        "{text}"
    );
    assert_eq!(p.status_line(0), "[Role] Primary [State] Stand Alone");
    p.wait_state(1, "Stand Alone", Duration::from_secs(3));
}

#[test]
fn version_help_usage_and_config_check() {
    let run = |args: &[&str]| {
        std::process::Command::new(hamon())
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["--version"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("hamon {} (protocol 1.1)", env!("CARGO_PKG_VERSION"))
    );
    assert!(String::from_utf8_lossy(&run(&["--help"]).stdout).contains("hamon ha <command>"));
    for args in [&["ha"][..], &["ha", "?"], &["ha", "--help"]] {
        let out = run(args);
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("failback"),
            "{args:?}"
        );
    }
    let out = run(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));

    let p = Pair::new(25);
    let out = p.run(0, &["config", "check"]);
    assert!(out.status.success(), "{out:?}");
    let bad = std::fs::read_to_string(p.config(0))
        .unwrap()
        .replace("interval_ms = 100", "interval_ms = 1");
    std::fs::write(p.config(0), bad).unwrap();
    let out = p.run(0, &["config", "check"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ha-a.toml") && err.contains("heartbeat.interval_ms"),
        "{err}"
    );
    // HAMON_CONFIG is honoured.
    let out = std::process::Command::new(hamon())
        .args(["config", "check"])
        .env("HAMON_CONFIG", p.config(1))
        .output()
        .unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ha-b.toml"));
}

#[test]
fn sighup_reloads_the_authentication_key() {
    let mut p = Pair::new(26);
    assert!(p
        .run_with_stdin(1, &["ha", "authkey"], &format!("{KEY}\n"))
        .status
        .success());
    p.start(0);
    p.start(1);
    // The key changes on disk behind the agent's back (an image tool, say).
    std::fs::write(p.state_dir(1).join("authkey"), "Reloaded-Key-7\n").unwrap();
    let pid = p.children[1].as_ref().unwrap().id();
    // SAFETY: signalling the child this test spawned.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(300));
    let register = |key: &str| {
        p.run_with_stdin(
            0,
            &[
                "ha",
                "register",
                "--secondary",
                &p.addrs[1].clone(),
                "--failover-type",
                "manual",
            ],
            &format!("{key}\n"),
        )
    };
    assert!(
        !register(KEY).status.success(),
        "the old key no longer works"
    );
    // Each pairing is a guess of the key for the secondary's login throttle: the
    // next one from the same address waits a second.
    let hurried = register("Reloaded-Key-7");
    let said = String::from_utf8_lossy(&hurried.stderr).to_string();
    assert!(
        !hurried.status.success() && said.contains("429"),
        "{hurried:?}"
    );
    // After the wait, the new key works. (On a loaded machine the first try may still
    // fall in the throttle's second: only a 429 is tried again.)
    std::thread::sleep(Duration::from_millis(1100));
    let mut out = register("Reloaded-Key-7");
    for _ in 0..4 {
        if out.status.success() || !String::from_utf8_lossy(&out.stderr).contains("429") {
            break;
        }
        std::thread::sleep(Duration::from_millis(1100));
        out = register("Reloaded-Key-7");
    }
    assert!(out.status.success(), "{out:?}");
    p.wait_state(1, "Secondary Syncing", Duration::from_secs(5));
}

/// Issue 15: a registration with a malformed e-mail address is refused, naming each bad
/// one, and nothing changes; the same registration with good addresses goes through.
#[test]
fn registration_refuses_malformed_email_addresses_and_names_them() {
    let mut p = Pair::new(28);
    assert!(p
        .run_with_stdin(1, &["ha", "authkey"], &format!("{KEY}\n"))
        .status
        .success());
    p.start(0);
    p.start(1);
    let register = |emails: &str| {
        p.run_with_stdin(
            0,
            &[
                "ha",
                "register",
                "--secondary",
                &p.addrs[1].clone(),
                "--failover-type",
                "manual",
                "--email",
                emails,
            ],
            &format!("{KEY}\n"),
        )
    };
    let out = register("ops@example.com,not-an-email,two@@example.com");
    let said = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{out:?}");
    assert!(
        said.contains("\"not-an-email\"") && said.contains("\"two@@example.com\""),
        "{said}"
    );
    assert!(!said.contains("\"ops@example.com\""), "{said}");
    p.wait_state(0, "Stand Alone", Duration::from_secs(1));
    p.wait_state(1, "Stand Alone", Duration::from_secs(1));
    let out = register("ops@example.com, oncall@example.org");
    assert!(out.status.success(), "{out:?}");
    p.wait_state(1, "Secondary Syncing", Duration::from_secs(5));
    // These configs have no [notify.mail]: registration, and then `hamon status` on both
    // servers, say that the addresses get no mail.
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.contains("WARNING: no mail will be sent to ops@example.com, oncall@example.org"),
        "{said}"
    );
    for i in 0..2 {
        let status = p.run(i, &["status"]);
        let status = String::from_utf8_lossy(&status.stdout).to_string();
        assert!(
            status.contains("E-mail: NO MAIL IS SENT to ops@example.com, oncall@example.org"),
            "server {i}: {status}"
        );
    }
}

/// With a `[notify.mail]` section, neither registration nor `hamon status` warns.
#[test]
fn registration_with_a_mail_transport_does_not_warn() {
    let mut p = Pair::with_extra(
        29,
        "[notify.mail]\nfrom = \"hamon@example.com\"\nsendmail = \"/bin/true\"\n",
    );
    assert!(p
        .run_with_stdin(1, &["ha", "authkey"], &format!("{KEY}\n"))
        .status
        .success());
    p.start(0);
    p.start(1);
    let out = p.run_with_stdin(
        0,
        &[
            "ha",
            "register",
            "--secondary",
            &p.addrs[1].clone(),
            "--failover-type",
            "manual",
            "--email",
            "ops@example.com",
        ],
        &format!("{KEY}\n"),
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("WARNING"),
        "{out:?}"
    );
    p.wait_state(1, "Secondary Syncing", Duration::from_secs(5));
    let status = p.run(0, &["status"]);
    assert!(
        !String::from_utf8_lossy(&status.stdout).contains("E-mail:"),
        "{status:?}"
    );
}
