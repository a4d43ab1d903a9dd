//! The `command` database driver behind two real agents: a small script
//! stands in for "any other database", keeps its role in a file and logs
//! every operation hamon asks of it, so the test can check the order of
//! copy, promote, follow and the failback switchover.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{wait, Pair};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

#[allow(non_snake_case)]
fn SECS(s: u64) -> Duration {
    Duration::from_secs(s)
}

const SCRIPT: &str = r#"#!/bin/sh
d=$(dirname "$0")
echo "$HAMON_DB_OP ${HAMON_PEER_HOST:-}" >> "$d/ops.log"
case "$HAMON_DB_OP" in
  health) exit 0 ;;
  role) cat "$d/role" ;;
  lag) if [ "$(cat "$d/role")" = standby ]; then echo "0 0"; else echo none; fi ;;
  initial_copy|follow) echo standby > "$d/role" ;;
  promote) echo primary > "$d/role" ;;
  stop_writes) echo down > "$d/role"; echo 0/10 ;;
  received) echo 0/10 ;;
  caught_up) echo yes ;;
  stop) echo down > "$d/role" ;;
  *) echo "unknown op $HAMON_DB_OP" >&2; exit 2 ;;
esac
"#;

const DB: &str = "[database]\ndriver = \"command\"\nops = [\"{dir}/{name}/db/db.sh\"]\n\
                  interval_ms = 300\n";

fn ops(p: &Pair, i: usize) -> Vec<String> {
    let log = p.dir.join(["ha-a", "ha-b"][i]).join("db/ops.log");
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        // The watchers' reads repeat all the time; the changes tell the story.
        .filter(|l| {
            !["health", "role", "lag", "received"].contains(&l.split(' ').next().unwrap_or(""))
        })
        .map(str::to_string)
        .collect()
}

fn role(p: &Pair, i: usize) -> String {
    std::fs::read_to_string(p.dir.join(["ha-a", "ha-b"][i]).join("db/role"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn the_command_driver_is_asked_to_copy_promote_follow_and_switch_over() {
    let p = Pair::with_extra(106, DB);
    for name in ["ha-a", "ha-b"] {
        let d = p.dir.join(name).join("db");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("db.sh"), SCRIPT).unwrap();
        std::fs::set_permissions(d.join("db.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(d.join("role"), "primary\n").unwrap();
    }
    let mut p = Pair::registered_with(p, "manual");
    // Registration: the secondary's database is rebuilt from the primary's.
    assert_eq!(role(&p, 1), "standby");
    assert!(
        ops(&p, 1).contains(&"initial_copy 127.0.106.2".to_string()),
        "{:?}",
        ops(&p, 1)
    );
    assert_eq!(role(&p, 0), "primary");

    // The primary dies; the operator fails over: the standby is promoted.
    p.kill9(0);
    p.wait_state(1, "Secondary Lost Primary", SECS(20));
    let out = p.run(1, &["ha", "failover"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(role(&p, 1), "primary");

    // The primary returns and follows the secondary's database.
    p.start(0);
    p.wait_state(0, "Primary Syncing", SECS(30));
    wait(SECS(10), || role(&p, 0) == "standby").expect("the primary does not follow");
    assert!(
        ops(&p, 0).contains(&"follow 127.0.106.3".to_string()),
        "{:?}",
        ops(&p, 0)
    );

    // Failback: writes stop on the secondary, the primary catches up, then
    // the primary is promoted and the secondary follows it.
    let out = p.run(1, &["ha", "failback"]);
    assert!(out.status.success(), "{out:?}");
    p.wait_state(0, "Primary Active", SECS(20));
    wait(SECS(10), || {
        role(&p, 0) == "primary" && role(&p, 1) == "standby"
    })
    .unwrap_or_else(|| panic!("roles {} / {}", role(&p, 0), role(&p, 1)));
    let b = ops(&p, 1);
    let stop = b
        .iter()
        .position(|o| o == "stop_writes ")
        .expect("no stop_writes");
    let follow = b
        .iter()
        .rposition(|o| o == "follow 127.0.106.2")
        .expect("the secondary does not follow");
    assert!(stop < follow, "{b:?}");
    let a = ops(&p, 0);
    let caught = a
        .iter()
        .position(|o| o == "caught_up ")
        .expect("no caught_up");
    let promoted = a.iter().rposition(|o| o == "promote ").expect("no promote");
    assert!(caught < promoted, "{a:?}");
}
