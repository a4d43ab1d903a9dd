//! Two builds of hamon in one pair: this one, and the same source built with the next
//! protocol minor and another release (`HAMON_PROTOCOL_MINOR`, `HAMON_RELEASE`; see
//! `src/version.rs`). They register, fail over and fail back, and the rolling upgrade
//! of docs/operations.md runs step by step.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// This build's release and protocol, and the next build's.
const THIS: &str = concat!(env!("CARGO_PKG_VERSION"), " (protocol 1.1)");
const NEXT_RELEASE: &str = concat!(env!("CARGO_PKG_VERSION"), "-next");
const NEXT: &str = concat!(env!("CARGO_PKG_VERSION"), "-next (protocol 1.2)");

/// The next build, made once per test run in its own target directory (its own cargo
/// lock: the `cargo test` that runs this holds the main one).
fn next_build() -> &'static PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let target = root.join("target").join("protocol-next");
        let out = Command::new(env!("CARGO"))
            .args(["build", "--locked", "--bin", "hamon", "--target-dir"])
            .arg(&target)
            .current_dir(&root)
            .env("HAMON_PROTOCOL_MINOR", "2")
            .env("HAMON_RELEASE", NEXT_RELEASE)
            .output()
            .expect("run cargo");
        assert!(
            out.status.success(),
            "building the next protocol's hamon failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = target.join("debug").join("hamon");
        let version = Command::new(&bin).arg("--version").output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&version.stdout).trim(),
            format!("hamon {NEXT_RELEASE} (protocol 1.2)")
        );
        bin
    })
}

/// `ha status`'s release line on server `i`.
fn releases(p: &Pair, i: usize) -> String {
    p.ha_status(i)
        .lines()
        .find_map(|l| l.strip_prefix("[Release] "))
        .unwrap_or_default()
        .to_string()
}

fn wait_journaled(p: &Pair, i: usize, kind: &str) {
    let seen = wait(SECS(10), || p.journaled(i, kind));
    assert!(
        seen.is_some(),
        "{kind} not journaled on {i}:\n{}",
        p.journal(i)
    );
}

#[test]
fn builds_one_protocol_minor_apart_register_fail_over_and_fail_back() {
    let next = next_build().clone();
    let mut p = Pair::new(98);
    p.binaries[1] = next;
    let p = Pair::registered_with(p, "manual");
    assert_eq!(
        releases(&p, 0),
        format!("this server {THIS}, peer {NEXT}: MISMATCH (a rolling upgrade: finish it)")
    );
    assert_eq!(
        releases(&p, 1),
        format!("this server {NEXT}, peer {THIS}: MISMATCH (a rolling upgrade: finish it)")
    );
    for i in 0..2 {
        wait_journaled(&p, i, "version_mismatch");
        assert!(
            p.journal(i).contains("the two work together"),
            "{}",
            p.journal(i)
        );
    }
    let mut p = p;
    p.kill9(0);
    p.wait_state(1, "Secondary Lost Primary", SECS(15));
    let out = p.run(1, &["ha", "failover"]);
    assert!(out.status.success(), "{out:?}");
    p.wait_state(1, "Secondary Active", SECS(15));
    p.start(0);
    p.wait_state(0, "Primary Syncing", SECS(15));
    let out = p.run(1, &["ha", "failback"]);
    assert!(out.status.success(), "{out:?}\n{}", p.log(1));
    p.wait_state(0, "Primary Active", SECS(15));
    p.wait_state(1, "Secondary Syncing", SECS(15));
    p.assert_never_journaled(&["split_brain", "peer_not_paired"]);
}

/// docs/operations.md, "Upgrading a pair", step by step.
#[test]
fn the_rolling_upgrade_of_docs_operations_md() {
    let next = next_build().clone();
    let mut p = Pair::registered(97, "manual");
    assert_eq!(releases(&p, 0), format!("this server {THIS}, peer {THIS}"));

    // 1. The standby first: stop it, install the new release, start it.
    p.stop(1);
    p.binaries[1] = next.clone();
    p.start(1);
    p.wait_state(1, "Secondary Syncing", SECS(15));
    wait_journaled(&p, 0, "version_mismatch");
    assert!(releases(&p, 0).contains(&format!("peer {NEXT}: MISMATCH")));

    // 2. Fail over to it: stop the primary (manual failover type: the operator's
    //    command; automatic: the secondary takes over by itself).
    p.stop(0);
    p.wait_state(1, "Secondary Lost Primary", SECS(15));
    let out = p.run(1, &["ha", "failover"]);
    assert!(out.status.success(), "{out:?}");
    p.wait_state(1, "Secondary Active", SECS(15));

    // 3. The primary: install the new release, start it; it syncs from the secondary.
    p.binaries[0] = next;
    p.start(0);
    p.wait_state(0, "Primary Syncing", SECS(15));
    wait_journaled(&p, 1, "version_match");
    assert_eq!(releases(&p, 0), format!("this server {NEXT}, peer {NEXT}"));

    // 4. Fail back.
    let out = p.run(1, &["ha", "failback"]);
    assert!(out.status.success(), "{out:?}\n{}", p.log(1));
    p.wait_state(0, "Primary Active", SECS(15));
    p.wait_state(1, "Secondary Syncing", SECS(15));
    p.assert_never_journaled(&["split_brain", "peer_not_paired"]);
}
