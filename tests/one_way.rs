//! One-way heartbeat loss, in a private network namespace (nft drops the UDP
//! heartbeats of one direction only). The server that still hears its peer
//! learns from the peer's echoes that it is not heard, and the journal names the
//! one-way path.
//!
//! - secondary -> primary lost: the primary's probe answers (TCP works), so it
//!   reports a broken path and stays active; the secondary, which hears the
//!   primary, names the one-way path; nothing fails over.
//! - primary -> secondary lost: the primary names the one-way path. The
//!   secondary hears nothing and its probe is answered, so it reports a broken
//!   path too and does not take over while the primary's Health Monitor answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;

/// Drops the heartbeats from `from` to `to` (UDP to port 18083) from now on.
fn drop_heartbeats(from: &str, to: &str) {
    sh(
        "nft -f -",
        &format!(
            "table ip oneway {{\n chain out {{\n  type filter hook output priority 0; \
             policy accept;\n  ip saddr {from} ip daddr {to} udp dport 18083 drop\n }}\n}}\n"
        ),
    );
}

fn run_one_way(n: u8, drop_from_primary: bool) {
    private_netns();
    let p = Pair::registered(n, "automatic");
    let (hearer, deaf) = if drop_from_primary { (0, 1) } else { (1, 0) };
    drop_heartbeats(&p.addrs[hearer], &p.addrs[deaf]);
    // The server whose frames are lost learns it from the peer's echoes.
    assert!(
        wait(Duration::from_secs(5), || p
            .journaled(hearer, "heartbeat_one_way"))
        .is_some(),
        "server {hearer} never named the one-way path:\n{}",
        p.journal(hearer)
    );
    // The deaf side sees silence, probes, is answered: a broken path, no failover.
    assert!(
        wait(Duration::from_secs(5), || p
            .journaled(deaf, "heartbeat_path_broken"))
        .is_some(),
        "server {deaf}:\n{}",
        p.journal(deaf)
    );
    std::thread::sleep(Duration::from_secs(2));
    p.assert_undisturbed();
    p.assert_never_journaled(&["failover_complete", "split_brain", "peer_lost"]);
    // Healed: the path is named two-way again.
    sh("nft delete table ip oneway", "");
    assert!(
        wait(Duration::from_secs(5), || p
            .journaled(hearer, "heartbeat_two_way"))
        .is_some(),
        "server {hearer}:\n{}",
        p.journal(hearer)
    );
}

#[test]
fn secondary_to_primary_loss_is_named_and_moves_nothing() {
    if netns_and_nft("the one-way tests") {
        run_one_way(93, false);
    }
}

#[test]
fn primary_to_secondary_loss_is_named_and_moves_nothing() {
    if netns_and_nft("the one-way tests") {
        run_one_way(94, true);
    }
}
