//! Redundant heartbeat paths (`[heartbeat] paths`), in a private network namespace: a
//! registered pair with a second path between two more loopback addresses. nft cuts
//! either path alone (every packet between its two addresses, both ways) and nothing
//! changes; cutting both fails the pair over as a dead primary would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::{Duration, Instant};

const N: u8 = 95;

/// The second path's addresses: 127.0.N.12 (primary) and 127.0.N.13 (secondary).
fn path_addrs() -> [String; 2] {
    [format!("127.0.{N}.12"), format!("127.0.{N}.13")]
}

/// Drops everything between `a` and `b`, both ways, in table `name`.
fn cut(name: &str, a: &str, b: &str) {
    sh(
        "nft -f -",
        &format!(
            "table ip {name} {{\n chain out {{\n  type filter hook output priority 0; \
             policy accept;\n  ip saddr {a} ip daddr {b} drop\n  ip saddr {b} ip daddr {a} drop\n \
             }}\n}}\n"
        ),
    );
}

fn heal(name: &str) {
    sh(&format!("nft delete table ip {name}"), "");
}

#[test]
fn either_path_alone_carries_the_pair_and_both_cut_fail_it_over() {
    if !netns_and_nft("the heartbeat path tests") {
        return;
    }
    private_netns();
    let p = Pair::new(N);
    let extra = path_addrs();
    for i in 0..2 {
        let text = std::fs::read_to_string(p.config(i)).unwrap();
        let paths = format!(
            "[heartbeat]\npaths = [{{ local = \"{}\", peer = \"{}\" }}]\n",
            extra[i],
            extra[1 - i]
        );
        std::fs::write(p.config(i), text.replacen("[heartbeat]\n", &paths, 1)).unwrap();
    }
    let mut p = Pair::registered_with(p, "automatic");

    // Both paths carry every heartbeat: the second copy of each is a duplicate.
    let before = p.heartbeat_counts(1);
    std::thread::sleep(Duration::from_secs(1));
    let after = p.heartbeat_counts(1);
    assert!(
        after.duplicates >= before.duplicates + 5,
        "{before:?} -> {after:?}"
    );

    // The node addresses cut (heartbeats, probes, everything): the second path holds,
    // and `hamon status` says which way the peer is still heard.
    cut("main", &p.addrs[0], &p.addrs[1]);
    std::thread::sleep(Duration::from_secs(3));
    p.assert_undisturbed();
    let status = String::from_utf8_lossy(&p.run(1, &["status"]).stdout).to_string();
    let line = status
        .lines()
        .find(|l| l.starts_with("Heartbeat paths: "))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(line.contains(&format!("{} SILENT", p.addrs[0])), "{line}");
    assert!(line.contains(&format!("{} heard", extra[0])), "{line}");
    heal("main");
    // The second path cut: the first holds.
    cut("second", &extra[0], &extra[1]);
    std::thread::sleep(Duration::from_secs(3));
    p.assert_undisturbed();
    p.assert_never_journaled(&["heartbeats_missed", "peer_lost", "failover_complete"]);

    // Both cut: silence on every path, the probe fails, the secondary takes over.
    let t = Instant::now();
    cut("main", &p.addrs[0], &p.addrs[1]);
    let took = p.wait_state(1, "Secondary Active", Duration::from_secs(10));
    eprintln!(
        "both paths cut: Secondary Active after {took:?} (budget {} ms)",
        INTERVAL_MS * MISSED + GRACE_MS + PROBE_MS
    );
    assert!(t.elapsed() >= Duration::from_millis(INTERVAL_MS * MISSED));
    p.kill9(0);
}
