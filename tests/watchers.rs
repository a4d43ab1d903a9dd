//! Database and disk watchers with real agents: Uncertain and back, disk
//! thresholds raised and cleared, and the peer's health seen over heartbeats.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use hamon::control::{self, Reply, Request};
use hamon::ha::{Level, StatusView};
use std::process::Command;
use std::time::Duration;

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn status_of(p: &Pair, i: usize) -> StatusView {
    match control::call(&p.socket(i), &Request::Status, Some(SECS(5))) {
        Ok(Reply::Status { status, .. }) => *status,
        other => panic!("{other:?}"),
    }
}

fn events(p: &Pair, i: usize) -> String {
    String::from_utf8_lossy(&p.run(i, &["ha", "events"]).stdout).to_string()
}

#[test]
fn a_failing_database_check_makes_the_primary_uncertain_and_back() {
    let db = "[database]\ncommand = [\"/bin/sh\", \"-c\", \"test ! -e {dir}/{name}-db-down\"]\n\
              interval_ms = 100\ntimeout_ms = 500\nfailures = 2\n";
    let p = Pair::registered_with(Pair::with_extra(70, db), "manual");
    std::fs::write(p.dir.join("ha-a-db-down"), b"").unwrap();
    p.wait_state(0, "Primary Uncertain", SECS(3));
    p.wait_state(1, "Secondary Lost Primary", SECS(3));
    assert!(
        events(&p, 0).contains("exited with status 1"),
        "{}",
        events(&p, 0)
    );
    std::fs::remove_file(p.dir.join("ha-a-db-down")).unwrap();
    p.wait_state(0, "Primary Active", SECS(3));
    p.wait_state(1, "Secondary Syncing", SECS(3));
    assert_eq!(
        status_of(&p, 1).peer_health.map(|h| h.database),
        Some(Level::Ok)
    );
}

/// A 4 MiB tmpfs mounted for the test; unmounted on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: std::path::PathBuf) -> Option<Tmpfs> {
        std::fs::create_dir_all(&at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&at)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs as root and must mount a tmpfs"
            );
            eprintln!("skipped: cannot mount a tmpfs (not root?)");
            return None;
        }
        Some(Tmpfs(at))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn filling_a_small_filesystem_raises_the_disk_event_and_freeing_it_clears_it() {
    let dir = std::env::temp_dir().join(format!("hamon-disk-{}", std::process::id()));
    let Some(fs) = Tmpfs::mount(dir.join("small")) else {
        return;
    };
    let disk = format!(
        "[disk]\npaths = [\"{}\"]\ninterval_ms = 100\nwarn_used_percent = 50\ncritical_used_percent = 90\n",
        fs.0.display()
    );
    let p = Pair::registered_with(Pair::with_extra(71, &disk), "manual");
    let big = fs.0.join("fill");
    std::fs::write(&big, vec![0u8; 3_900 * 1024]).unwrap();
    let raised = wait(SECS(3), || status_of(&p, 0).health.disk == Level::Failed);
    assert!(raised.is_some(), "{:?}", status_of(&p, 0).health);
    assert!(events(&p, 0).contains("full"), "{}", events(&p, 0));
    // The peer sees it too: health travels in heartbeats.
    let seen = wait(SECS(3), || {
        status_of(&p, 1)
            .peer_health
            .is_some_and(|h| h.disk == Level::Failed)
    });
    assert!(seen.is_some(), "{:?}", status_of(&p, 1).peer_health);
    std::fs::remove_file(&big).unwrap();
    let cleared = wait(SECS(3), || status_of(&p, 0).health.disk == Level::Ok);
    assert!(cleared.is_some());
    assert!(
        events(&p, 0).contains("back to normal"),
        "{}",
        events(&p, 0)
    );
    // The state does not move for a full disk: it is an alarm, not a failure.
    assert!(p.ha_status(0).contains("Primary Active"));
    drop(p);
    drop(fs);
    let _ = std::fs::remove_dir_all(&dir);
}
