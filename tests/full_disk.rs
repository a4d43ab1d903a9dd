//! A full `state_dir` must not lose an HA state change. Both servers keep their
//! state directory on a 2 MiB tmpfs that is filled to the last byte. The
//! primary dies: the secondary takes over and its state is saved all the same
//! (the state file's blocks are held from the start), so a restart of the
//! secondary comes back Secondary Active, and the primary, restarted on its own
//! full disk, comes back standing by, not believing it was active. Exactly one
//! server is active at the end, and the disk watcher reports the full disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use hamon::ha::HaState;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const N: u8 = 91;

/// tmpfs mounts this test made, lazily unmounted when dropped.
struct Mounts(Vec<PathBuf>);

impl Mounts {
    fn tmpfs(&mut self, dir: &Path, size: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs on {}", dir.display());
        self.0.push(dir.to_path_buf());
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = Command::new("umount").arg("-l").arg(dir).status();
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the full-disk test (root, to mount tmpfs)"
        );
        eprintln!("skipped: needs root to mount tmpfs");
    }
    root
}

/// Fills the file system of `dir` to the last byte.
fn fill(dir: &Path) {
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let block = vec![0xA5u8; 64 * 1024];
    loop {
        if f.write_all(&block).is_err() {
            break;
        }
    }
    let mut small = [0u8; 1];
    while f.write_all(&small).is_ok() {
        small[0] ^= 1;
    }
    let _ = f.sync_all();
    assert!(
        std::fs::write(dir.join("probe"), b"x").is_err() || {
            let _ = std::fs::remove_file(dir.join("probe"));
            false
        },
        "{} is not full",
        dir.display()
    );
}

fn saved(p: &Pair, i: usize) -> Option<HaState> {
    hamon::store::Store::at(&p.state_dir(i))
        .load_state()
        .ok()
        .flatten()
        .map(|s| s.state)
}

#[test]
fn a_full_state_dir_loses_no_state_change_and_leaves_one_active_server() {
    if !is_root() {
        return;
    }
    let p = Pair::with_extra(N, "[disk]\ninterval_ms = 500\n");
    let mut mounts = Mounts(Vec::new());
    for i in 0..2 {
        mounts.tmpfs(&p.state_dir(i), "2m");
    }
    let mut p = Pair::registered_with(p, "automatic");
    for i in 0..2 {
        fill(&p.state_dir(i));
    }

    // The primary dies; the secondary takes over on its full disk, and says the
    // disk is full.
    p.kill9(0);
    p.wait_state(1, "Secondary Active", Duration::from_secs(10));
    assert!(
        wait(Duration::from_secs(5), || saved(&p, 1)
            == Some(HaState::SecondaryActive))
        .is_some(),
        "the takeover was not saved: {:?}",
        saved(&p, 1)
    );
    assert!(
        wait(Duration::from_secs(5), || {
            let log = p.log(1);
            log.contains("% full") && log.contains("critical")
        })
        .is_some(),
        "no full-disk report:\n{}",
        p.log(1)
    );

    // A restart of the secondary comes back active, with the primary still down.
    p.kill9(1);
    p.start(1);
    p.wait_state(1, "Secondary Active", Duration::from_secs(10));

    // The primary comes back on its own full disk: it stands by.
    p.start(0);
    std::thread::sleep(Duration::from_secs(3));
    let primary = p.ha_status(0);
    assert!(
        !primary.contains("[State] Primary Active"),
        "the primary came back active: {primary}"
    );
    assert!(p.ha_status(1).contains("[State] Secondary Active"));
    for i in 0..2 {
        assert!(
            p.children[i]
                .as_mut()
                .unwrap()
                .try_wait()
                .unwrap()
                .is_none(),
            "agent {i} exited"
        );
    }
    drop(p);
    drop(mounts);
}

/// A save that fails all the same (here the state file is replaced by a directory) is
/// said loudly: an `agent_state_unsaved` event and a line in `hamon status`.
#[test]
fn a_state_that_cannot_be_saved_is_reported() {
    let mut p = Pair::registered(92, "automatic");
    let state = p.state_dir(1).join("ha.state");
    std::fs::remove_file(&state).unwrap();
    std::fs::create_dir(&state).unwrap();
    p.kill9(0);
    p.wait_state(1, "Secondary Active", Duration::from_secs(10));
    let status = || String::from_utf8_lossy(&p.run(1, &["status"]).stdout).to_string();
    assert!(
        wait(Duration::from_secs(5), || status()
            .contains("HA state NOT SAVED"))
        .is_some(),
        "{}",
        status()
    );
    assert!(p.log(1).contains("[agent_state_unsaved]"), "{}", p.log(1));
}

/// File sync onto a full disk: the files whose staging runs out of space fail, each
/// leaving its old content and no temp file; those staged before commit together.
#[test]
fn a_full_sync_target_keeps_the_old_files_and_no_temp() {
    use hamon::sync::apply::{commit_all, stage_file};
    use hamon::sync::manifest::{Entry, Kind};
    use std::os::unix::fs::MetadataExt;
    if !is_root() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("hamon-full-sync-{}", std::process::id()));
    let mut mounts = Mounts(Vec::new());
    mounts.tmpfs(&dir, "1m");
    let names: Vec<String> = (0..8).map(|i| format!("f{i}")).collect();
    for n in &names {
        std::fs::write(dir.join(n), b"old").unwrap();
    }
    // Full, then about 200 KiB free: room for some of the new 64 KiB files, not all.
    fill(&dir);
    let _ = std::fs::remove_file(dir.join("probe")); // fill's check, created empty
    let filler = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("filler"))
        .unwrap();
    let len = filler.metadata().unwrap().len();
    filler.set_len(len - 200 * 1024).unwrap();
    let meta = std::fs::metadata(&dir).unwrap();
    let mut staged = Vec::new();
    let mut refused = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let body = vec![i as u8; 64 * 1024];
        let e = Entry {
            path: n.clone(),
            kind: Kind::File,
            size: body.len() as u64,
            mode: 0o600,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime_s: 1_600_000_000,
            mtime_ns: 0,
            hash: Some(
                hamon::sync::delta::content_hash_of(&body)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
            ),
        };
        match stage_file(&dir, &e, &mut &body[..]) {
            Ok(s) => staged.push((i, s)),
            Err(err) => refused.push((i, err.to_string())),
        }
    }
    assert!(!staged.is_empty() && !refused.is_empty(), "{refused:?}");
    let (done, staged): (Vec<usize>, Vec<_>) = staged.into_iter().unzip();
    for r in commit_all(&dir, staged) {
        r.unwrap();
    }
    for i in done {
        assert_eq!(
            std::fs::read(dir.join(&names[i])).unwrap(),
            vec![i as u8; 64 * 1024]
        );
    }
    for (i, why) in &refused {
        assert!(why.contains("No space left"), "{why}");
        assert_eq!(std::fs::read(dir.join(&names[*i])).unwrap(), b"old");
    }
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut want = names.clone();
    want.push("filler".into());
    assert_eq!(left, want, "no temp file is left");
    drop(mounts);
    let _ = std::fs::remove_dir(&dir);
}
