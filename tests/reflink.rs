//! A delta on a file system with reflinks shares the old file's unchanged blocks instead
//! of writing them again. The replica lives on a fresh XFS (reflinks are on by default);
//! a hard link keeps the old file's blocks alive after the new file replaces it, so the
//! space the pass takes is the space the new file does not share. A shift by less than
//! a block cannot be shared, and is copied. Needs root (a loop mount) and mkfs.xfs
//! (xfsprogs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::noise;
use hamon::sync::pull::{LocalSource, Puller};
use hamon::sync::{Limits, SetSpec};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A file system mounted by this test, lazily unmounted (and its loop device freed) on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the reflink test (root, for a loop mount)"
        );
        eprintln!("skipped: needs root for a loop mount");
    }
    root
}

/// A fresh XFS of 512 MiB, from a sparse image in `dir`, mounted at `dir/mnt`.
fn xfs(dir: &Path) -> Mount {
    let image = dir.join("xfs.img");
    fs::File::create(&image)
        .unwrap()
        .set_len(512 << 20)
        .unwrap();
    let out = Command::new("mkfs.xfs")
        .args(["-q", "-m", "reflink=1"])
        .arg(&image)
        .output()
        .expect("mkfs.xfs (xfsprogs) is installed");
    assert!(out.status.success(), "mkfs.xfs: {out:?}");
    let mnt = dir.join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let ok = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&image)
        .arg(&mnt)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mount the XFS image");
    Mount(mnt)
}

/// Bytes of the file system of `dir` in use, once everything is on disk.
fn used(dir: &Path) -> u64 {
    assert!(Command::new("sync")
        .arg("-f")
        .arg(dir)
        .status()
        .unwrap()
        .success());
    let out = Command::new("stat")
        .args(["-f", "-c", "%b %f %S"])
        .arg(dir)
        .output()
        .unwrap();
    let s = String::from_utf8(out.stdout).unwrap();
    let n: Vec<u64> = s.split_whitespace().map(|x| x.parse().unwrap()).collect();
    (n[0] - n[1]) * n[2]
}

fn spec(root: &Path) -> SetSpec {
    SetSpec {
        name: "s".into(),
        root: root.into(),
        include: vec![],
        exclude: vec![],
        keep_setid: false,
    }
}

#[test]
fn a_delta_on_xfs_shares_the_unchanged_blocks_with_the_old_file() {
    if !is_root() {
        return;
    }
    let d = std::env::temp_dir().join(format!("hamon-reflink-{}", std::process::id()));
    fs::create_dir_all(&d).unwrap();
    let mount = xfs(&d);
    let (src, dst) = (d.join("src"), mount.0.join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();

    const SIZE: usize = 64 << 20;
    let old = noise(1, SIZE);
    fs::write(src.join("big"), &old).unwrap();
    let mut puller = Puller::new();
    let mut source = LocalSource::new(spec(&src), Limits::default());
    let first = puller
        .pass(&spec(&dst), &mut source, &Limits::default())
        .unwrap();
    assert!(first.errors.is_empty(), "{:?}", first.errors);

    // One byte changed, then 64 KiB inserted (every later block moves by a multiple of
    // the file system's block): each pass is a delta, and takes far less space than a
    // copy of the file would.
    let mut one_byte = old.clone();
    one_byte[SIZE / 3] ^= 1;
    let mut inserted = one_byte.clone();
    let at = SIZE / 2 + 12_345;
    inserted.splice(at..at, noise(2, 64 << 10));
    for (step, (before, new)) in [(&old, &one_byte), (&one_byte, &inserted)]
        .into_iter()
        .enumerate()
    {
        let keep = mount.0.join(format!("keep-{step}"));
        fs::hard_link(dst.join("big"), &keep).unwrap();
        fs::write(src.join("big"), new).unwrap();
        let used_before = used(&mount.0);
        let s = puller
            .pass(&spec(&dst), &mut source, &Limits::default())
            .unwrap();
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        assert_eq!((s.files, s.delta_files), (1, 1), "step {step}: {s:?}");
        assert!(
            fs::read(dst.join("big")).unwrap() == *new,
            "step {step}: content"
        );
        assert!(
            fs::read(&keep).unwrap() == *before,
            "step {step}: old file changed"
        );
        let grown = used(&mount.0).saturating_sub(used_before);
        assert!(
            grown < 4 << 20,
            "step {step}: the pass took {grown} bytes, as if it copied the {SIZE}-byte file"
        );
    }
    // 1000 bytes inserted: the later runs move by less than a block and cannot be
    // shared. The kernel copies them; the file is still right and the old one intact.
    let mut unaligned = inserted.clone();
    unaligned.splice(SIZE / 4..SIZE / 4, noise(3, 1000));
    let keep = mount.0.join("keep-unaligned");
    fs::hard_link(dst.join("big"), &keep).unwrap();
    fs::write(src.join("big"), &unaligned).unwrap();
    let s = puller
        .pass(&spec(&dst), &mut source, &Limits::default())
        .unwrap();
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!((s.files, s.delta_files), (1, 1), "{s:?}");
    assert!(fs::read(dst.join("big")).unwrap() == unaligned);
    assert!(fs::read(&keep).unwrap() == inserted);

    drop(source);
    drop(mount);
    let _ = fs::remove_dir_all(&d);
}
