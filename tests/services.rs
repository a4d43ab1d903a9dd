//! Service supervision with real agents on loopback: restarts, critical
//! failures that fail the primary over, and services that follow the active
//! role.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// A service that records its PID in `{dir}/{name}-<tag>.pid` and sleeps.
fn sleeper(tag: &str, run_on: &str, critical: bool) -> String {
    let file = tag.replace(' ', "_");
    format!(
        "[[service]]\nname = \"{tag}\"\n\
         command = [\"/bin/sh\", \"-c\", \"echo $$ > {{dir}}/{{name}}-{file}.pid; exec sleep 300\"]\n\
         run_on = \"{run_on}\"\ncritical = {critical}\nrestart_backoff_ms = 50\n\
         stop_timeout_ms = 2000\n"
    )
}

fn pid(p: &Pair, node: &str, tag: &str) -> Option<i32> {
    let file = tag.replace(' ', "_");
    let text = std::fs::read_to_string(p.dir.join(format!("{node}-{file}.pid"))).ok()?;
    text.trim().parse().ok()
}

/// Alive and not a zombie.
fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next());
    state.is_some_and(|s| s != "Z")
}

fn running(p: &Pair, node: &str, tag: &str) -> bool {
    pid(p, node, tag).is_some_and(alive)
}

fn status(p: &Pair, i: usize) -> String {
    String::from_utf8_lossy(&p.run(i, &["status"]).stdout).to_string()
}

#[test]
fn a_killed_service_is_restarted_and_the_count_shown() {
    let p = Pair::registered_with(
        Pair::with_extra(60, &sleeper("Web", "both", false)),
        "manual",
    );
    assert!(wait(SECS(3), || running(&p, "ha-a", "Web")).is_some());
    let first = pid(&p, "ha-a", "Web").unwrap();
    // SAFETY: SIGKILL to the service's process, which this test's agent started.
    unsafe { libc::kill(first, libc::SIGKILL) };
    let restarted = wait(SECS(3), || {
        pid(&p, "ha-a", "Web").is_some_and(|n| n != first && alive(n))
    });
    assert!(restarted.is_some(), "{}", status(&p, 0));
    let out = status(&p, 0);
    assert!(
        out.lines().any(|l| l == "Web is running (restarted once)"),
        "{out}"
    );
    let events = String::from_utf8_lossy(&p.run(0, &["ha", "events"]).stdout).to_string();
    assert!(
        events.contains("Web killed by signal 9") || events.contains("Web"),
        "{events}"
    );
}

#[test]
fn a_critical_service_that_keeps_dying_fails_the_primary_over() {
    // Dies a moment after each start; 2 restarts allowed (50 ms, 100 ms).
    let dying = "[[service]]\nname = \"NMS Server\"\n\
        command = [\"/bin/sh\", \"-c\", \"[ {name} = ha-a ] || exec sleep 300; sleep 0.2; exit 3\"]\n\
        critical = true\nrestart_attempts = 2\nrestart_window_secs = 60\nrestart_backoff_ms = 50\n";
    let p = Pair::registered_with(Pair::with_extra(61, dying), "automatic");
    // Three runs of 0.2 s plus 150 ms of backoff, then one heartbeat.
    let budget = Duration::from_millis(3 * 200 + 150 + INTERVAL_MS) + SECS(2);
    p.wait_state(0, "Primary Failover", budget);
    p.wait_state(1, "Secondary Active", SECS(2));
    let out = status(&p, 0);
    assert!(
        out.contains("NMS Server has failed (exited with status 3)"),
        "{out}"
    );
    let out = status(&p, 1);
    assert!(
        out.contains("NMS Server is running"),
        "the secondary runs it now: {out}"
    );
}

#[test]
fn active_only_services_follow_the_active_role() {
    let extra = sleeper("App", "active", false) + &sleeper("Agent", "both", false);
    let mut p = Pair::registered_with(Pair::with_extra(62, &extra), "automatic");
    assert!(wait(SECS(3), || running(&p, "ha-a", "App")
        && running(&p, "ha-b", "Agent"))
    .is_some());
    assert!(!running(&p, "ha-b", "App"), "not on the standby");
    assert!(running(&p, "ha-a", "Agent"));
    let before = status(&p, 1);
    assert!(before.lines().any(|l| l == "App is stopped"), "{before}");
    assert!(before.lines().any(|l| l == "Agent is running"), "{before}");
    // Failover: the secondary starts App.
    let old_app = pid(&p, "ha-a", "App").unwrap();
    p.kill9(0);
    // SAFETY: the killed agent's service; this test started that agent.
    unsafe { libc::kill(old_app, libc::SIGKILL) };
    p.wait_state(1, "Secondary Active", SECS(3));
    assert!(
        wait(SECS(3), || running(&p, "ha-b", "App")).is_some(),
        "{}",
        status(&p, 1)
    );
    // The primary returns standby: it runs Agent, not App.
    p.start(0);
    p.wait_state(0, "Primary Syncing", SECS(10));
    assert!(wait(SECS(3), || running(&p, "ha-a", "Agent")).is_some());
    assert!(
        !running(&p, "ha-a", "App"),
        "a standby primary does not run App"
    );
    // Failback: App moves home.
    let out = p.run(1, &["ha", "failback"]);
    assert!(out.status.success(), "{out:?}");
    assert!(wait(SECS(3), || running(&p, "ha-a", "App")
        && !running(&p, "ha-b", "App"))
    .is_some());
    assert!(
        running(&p, "ha-b", "Agent"),
        "both-services keep running on the standby"
    );
}

#[test]
fn status_prints_one_line_per_service_after_the_health_monitor_line() {
    let extra = sleeper("Database server", "both", true) + &sleeper("Ftp Server", "active", false);
    let p = Pair::registered_with(Pair::with_extra(63, &extra), "manual");
    assert!(wait(SECS(3), || running(&p, "ha-a", "Ftp Server")).is_some());
    let out = status(&p, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "Health Monitor Server is running. ( [Role] Primary [State] Primary Active )"
    );
    assert_eq!(lines[1], "Database server is running");
    assert_eq!(lines[2], "Ftp Server is running");
    let out = status(&p, 1);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[1..3],
        ["Database server is running", "Ftp Server is stopped"]
    );
    assert!(Path::new(&p.dir).exists());
}
