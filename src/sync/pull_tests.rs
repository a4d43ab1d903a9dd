use super::*;
use crate::sync::apply::tests::{file_entry, temps_below};
use crate::sync::testutil::TempDir;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

fn spec(name: &str, root: &Path) -> SetSpec {
    SetSpec {
        name: name.into(),
        root: root.into(),
        include: vec![],
        exclude: vec![],
        keep_setid: false,
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn set_mtime(p: &Path, secs: u64) {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
    let f = fs::File::options().write(true).open(p).unwrap();
    f.set_times(fs::FileTimes::new().set_modified(t)).unwrap();
}

fn mkfifo(p: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

/// The manifest of `root` by a fresh scanner.
fn manifest_of(root: &Path) -> Manifest {
    Scanner::new()
        .scan(&spec("s", root), &Limits::default())
        .unwrap()
        .0
}

/// Pulls `src` into `dst` (set "s") and checks the two then scan the same.
fn pull(puller: &mut Puller, src: &Path, dst: &Path) -> PassStats {
    let mut source = LocalSource::new(spec("s", src), Limits::default());
    let stats = puller
        .pass(&spec("s", dst), &mut source, &Limits::default())
        .unwrap();
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    assert_eq!(manifest_of(src), manifest_of(dst));
    stats
}

#[test]
fn full_pass_mirrors_the_set() {
    let d = TempDir::new("pass");
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    fs::create_dir_all(src.join("a/b")).unwrap();
    fs::create_dir_all(src.join("empty")).unwrap();
    fs::create_dir_all(dst.join("old/deeper")).unwrap();
    fs::create_dir_all(dst.join("a/b")).unwrap();
    fs::write(src.join("a/b/f"), b"new f").unwrap();
    fs::write(dst.join("a/b/f"), b"old f, longer").unwrap();
    fs::write(src.join("top"), b"top").unwrap();
    fs::write(dst.join("top"), b"top").unwrap();
    fs::set_permissions(src.join("top"), fs::Permissions::from_mode(0o604)).unwrap();
    fs::write(dst.join("gone.txt"), b"x").unwrap();
    fs::write(dst.join("old/deeper/x"), b"x").unwrap();
    symlink("b/f", src.join("a/l")).unwrap();
    symlink("../top", src.join("a/up")).unwrap();
    symlink("elsewhere", dst.join("a/l")).unwrap();
    set_mtime(&src.join("a/b/f"), 1_000_000_000);
    fs::set_permissions(src.join("a/b"), fs::Permissions::from_mode(0o750)).unwrap();
    if is_root() {
        std::os::unix::fs::lchown(src.join("top"), Some(12345), Some(12346)).unwrap();
        std::os::unix::fs::lchown(src.join("a/l"), Some(12345), Some(12345)).unwrap();
    }

    let mut puller = Puller::new();
    let s = pull(&mut puller, &src, &dst);
    assert_eq!((s.files, s.bytes, s.links, s.dirs), (1, 5, 2, 1));
    assert_eq!(s.deleted, 4, "gone.txt, old/deeper/x, old/deeper, old");
    // top (same content, other mode), a/b (other mode), maybe a (other mtime).
    assert!((2..=3).contains(&s.meta), "{s:?}");
    assert_eq!(fs::read(dst.join("a/b/f")).unwrap(), b"new f");
    assert_eq!(
        fs::metadata(dst.join("a/b/f")).unwrap().mtime(),
        1_000_000_000
    );
    assert_eq!(
        fs::metadata(dst.join("top")).unwrap().mode() & 0o7777,
        0o604
    );
    assert_eq!(
        fs::metadata(dst.join("a/b")).unwrap().mode() & 0o7777,
        0o750
    );
    assert_eq!(
        fs::read_link(dst.join("a/up")).unwrap(),
        Path::new("../top")
    );
    assert!(!dst.join("old").exists() && !dst.join("gone.txt").exists());
    if is_root() {
        let m = fs::metadata(dst.join("top")).unwrap();
        assert_eq!((m.uid(), m.gid()), (12345, 12346));
        let m = fs::symlink_metadata(dst.join("a/l")).unwrap();
        assert_eq!((m.uid(), m.gid()), (12345, 12345));
        assert_eq!(s.owners_not_set, 0);
    }

    // Nothing left to do. The files just written (new inodes, or a new ctime) are hashed
    // once more by the next scan, then never again while unchanged.
    let s = pull(&mut puller, &src, &dst);
    assert_eq!(
        (s.files, s.dirs, s.links, s.deleted, s.meta),
        (0, 0, 0, 0, 0)
    );
    let hashed = puller.scanner().stats().bytes_hashed;
    pull(&mut puller, &src, &dst);
    assert_eq!(puller.scanner().stats().bytes_hashed, hashed);

    // Kind changes both ways, a mode change and a deletion.
    fs::remove_dir_all(src.join("empty")).unwrap();
    fs::write(src.join("empty"), b"now a file").unwrap();
    fs::remove_file(src.join("top")).unwrap();
    fs::create_dir_all(src.join("top/sub")).unwrap();
    fs::remove_file(src.join("a/up")).unwrap();
    fs::set_permissions(src.join("a/b/f"), fs::Permissions::from_mode(0o400)).unwrap();
    let s = pull(&mut puller, &src, &dst);
    // meta: a/b/f's mode, and a's mtime (a/up went).
    assert_eq!((s.files, s.dirs, s.meta, s.deleted), (1, 2, 2, 3));
    assert_eq!(fs::read(dst.join("empty")).unwrap(), b"now a file");
    assert!(dst.join("top/sub").is_dir());
}

#[test]
fn include_and_exclude_on_both_sides() {
    let d = TempDir::new("globs");
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    fs::create_dir_all(src.join("conf")).unwrap();
    fs::create_dir_all(dst.join("cache")).unwrap();
    fs::write(src.join("conf/a.conf"), b"a").unwrap();
    fs::write(src.join("conf/b.txt"), b"b").unwrap();
    fs::write(dst.join("local.txt"), b"mine").unwrap();
    fs::write(dst.join("cache/c.conf"), b"mine").unwrap();
    let mut sp = spec("s", &src);
    sp.include = vec!["**/*.conf".into()];
    sp.exclude = vec!["cache".into()];
    let mut source = LocalSource::new(sp.clone(), Limits::default());
    sp.root = dst.clone();
    let s = Puller::new()
        .pass(&sp, &mut source, &Limits::default())
        .unwrap();
    assert_eq!(s.files, 1);
    assert_eq!(fs::read(dst.join("conf/a.conf")).unwrap(), b"a");
    assert!(!dst.join("conf/b.txt").exists());
    assert_eq!(
        fs::read(dst.join("local.txt")).unwrap(),
        b"mine",
        "not selected: kept"
    );
    assert_eq!(
        fs::read(dst.join("cache/c.conf")).unwrap(),
        b"mine",
        "excluded: kept"
    );
}

/// Serves a fixed manifest and file bodies.
struct Fixed {
    manifest: Vec<u8>,
    files: HashMap<String, Vec<u8>>,
}

impl Source for Fixed {
    fn manifest(&mut self, _: &str) -> Result<Vec<u8>, String> {
        Ok(self.manifest.clone())
    }

    fn file(&mut self, _: &str, path: &str) -> Result<Box<dyn Read + '_>, String> {
        let body = self.files.get(path).ok_or("no such file")?;
        Ok(Box::new(&body[..]))
    }
}

fn fixed(entries: Vec<Entry>) -> Fixed {
    let files = entries
        .iter()
        .map(|e| (e.path.clone(), b"pwned".to_vec()))
        .collect();
    Fixed {
        manifest: encode(&Manifest {
            version: crate::sync::manifest::VERSION,
            set: "s".into(),
            entries,
        }),
        files,
    }
}

fn link(path: &str, target: &str) -> Entry {
    Entry {
        kind: Kind::Symlink {
            target: target.into(),
        },
        hash: None,
        size: 0,
        ..file_entry(path, b"")
    }
}

fn dir(path: &str) -> Entry {
    Entry {
        kind: Kind::Dir,
        hash: None,
        size: 0,
        mode: 0o755,
        ..file_entry(path, b"")
    }
}

#[test]
fn hostile_manifests_write_nothing_outside() {
    let d = TempDir::new("hostile");
    let root = d.path().join("root");
    let outside = d.path().join("outside");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("victim"), b"victim").unwrap();
    let victim = outside.join("victim").to_string_lossy().into_owned();
    let f = |p: &str| file_entry(p, b"pwned");

    let refused = [
        vec![f(&victim)],
        vec![f("../outside/victim")],
        vec![dir("a"), f("a/../../outside/victim")],
        vec![link("l", "../outside"), f("l/victim")],
        vec![link("l", "../outside/victim")],
        vec![dir("a"), link("a/l", "../../outside")],
        vec![link("l", &victim)],
        vec![link("l", "a/../../outside")],
        vec![f("x"), f("x")],
        vec![f("x"), f("x/victim")],
        vec![Entry {
            hash: Some("0".repeat(63)),
            ..f("x")
        }],
        vec![Entry {
            hash: None,
            ..f("x")
        }],
        vec![f("a\\..\\..\\outside\\victim")],
        vec![f("outside/victim")],
    ];
    for entries in refused {
        let mut src = fixed(entries.clone());
        let err = Puller::new()
            .pass(&spec("s", &root), &mut src, &Limits::default())
            .unwrap_err();
        assert!(matches!(err, SyncError::Manifest(_)), "{entries:?}: {err}");
        assert_eq!(fs::read_dir(&root).unwrap().count(), 0, "{entries:?}");
    }
    let err = Puller::new()
        .pass(
            &spec("other", &root),
            &mut fixed(vec![f("x")]),
            &Limits::default(),
        )
        .unwrap_err();
    assert!(matches!(err, SyncError::WrongSet { .. }), "{err}");

    // A symlink already in the local root, leading outside: the scan skips (and reports) it,
    // and as the remote says it is a directory, it is replaced by one (writing through it is
    // refused anyway: see apply's tests).
    symlink(&outside, root.join("evil")).unwrap();
    let mut src = fixed(vec![dir("evil"), f("evil/victim")]);
    let s = Puller::new()
        .pass(&spec("s", &root), &mut src, &Limits::default())
        .unwrap();
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(s.skipped.len(), 1);
    assert_eq!(s.skipped[0].path, "evil");
    assert!(fs::symlink_metadata(root.join("evil")).unwrap().is_dir());
    assert_eq!(fs::read(root.join("evil/victim")).unwrap(), b"pwned");

    assert_eq!(fs::read(outside.join("victim")).unwrap(), b"victim");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
}

#[test]
fn special_files_are_skipped_and_reported() {
    let d = TempDir::new("special");
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    mkfifo(&src.join("pipe"));
    mkfifo(&dst.join("localpipe"));
    fs::write(src.join("f"), b"f").unwrap();
    let (_, skipped) = Scanner::new()
        .scan(&spec("s", &src), &Limits::default())
        .unwrap();
    assert_eq!(
        skipped,
        [Skipped {
            path: "pipe".into(),
            reason: "fifo".into()
        }]
    );
    let mut source = LocalSource::new(spec("s", &src), Limits::default());
    let s = Puller::new()
        .pass(&spec("s", &dst), &mut source, &Limits::default())
        .unwrap();
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(
        s.skipped,
        [Skipped {
            path: "localpipe".into(),
            reason: "fifo".into()
        }]
    );
    assert!(!dst.join("pipe").exists());
    assert!(
        fs::symlink_metadata(dst.join("localpipe")).is_ok(),
        "left alone"
    );
    assert_eq!(fs::read(dst.join("f")).unwrap(), b"f");
}

/// Serves `inner`, but `bad` with its bytes flipped.
struct Corrupting {
    inner: LocalSource,
    bad: &'static str,
}

impl Source for Corrupting {
    fn manifest(&mut self, set: &str) -> Result<Vec<u8>, String> {
        self.inner.manifest(set)
    }

    fn file(&mut self, set: &str, path: &str) -> Result<Box<dyn Read + '_>, String> {
        let mut body = Vec::new();
        self.inner
            .file(set, path)?
            .read_to_end(&mut body)
            .map_err(|e| e.to_string())?;
        if path == self.bad {
            body.iter_mut().for_each(|b| *b = !*b);
        }
        Ok(Box::new(io::Cursor::new(body)))
    }
}

#[test]
fn hash_mismatch_keeps_the_old_file() {
    let d = TempDir::new("mismatch");
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    fs::write(src.join("f"), b"new").unwrap();
    fs::write(src.join("g"), b"new g").unwrap();
    fs::write(dst.join("f"), b"old").unwrap();
    let mut source = Corrupting {
        inner: LocalSource::new(spec("s", &src), Limits::default()),
        bad: "f",
    };
    let mut puller = Puller::new();
    let s = puller
        .pass(&spec("s", &dst), &mut source, &Limits::default())
        .unwrap();
    assert_eq!(s.errors.len(), 1, "{:?}", s.errors);
    assert!(s.errors[0].contains("SHA-256"), "{:?}", s.errors);
    assert_eq!(s.files, 1);
    assert_eq!(fs::read(dst.join("f")).unwrap(), b"old");
    assert_eq!(fs::read(dst.join("g")).unwrap(), b"new g");
    assert!(temps_below(&dst).is_empty());
    // The next pass, with an honest source, settles it.
    pull(&mut puller, &src, &dst);
}

/// Yields zeros, 4 KiB every 2 ms, forever.
struct Slow;

impl Read for Slow {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        std::thread::sleep(Duration::from_millis(2));
        let n = buf.len().min(4096);
        buf[..n].fill(0);
        Ok(n)
    }
}

/// Environment variable selecting the helper mode of [`kill_helper`]: the root to write into.
const HELPER_ENV: &str = "HAMON_SYNC_KILL_HELPER_ROOT";

/// Not a test on its own: in a child process (see [`kill_9_mid_write`]), writes `f` below the
/// root named by [`HELPER_ENV`] slowly, until killed.
#[test]
fn kill_helper() {
    let Some(root) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let e = Entry {
        size: 1 << 30,
        ..file_entry("f", b"")
    };
    let _ = crate::sync::write_file(Path::new(&root), &e, &mut Slow);
    unreachable!("the parent kills this process before the write ends");
}

#[test]
fn kill_9_mid_write() {
    let d = TempDir::new("kill");
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    fs::write(src.join("f"), b"old content").unwrap();
    fs::write(dst.join("f"), b"old content").unwrap();

    let name = format!(
        "{}::kill_helper",
        module_path!().split_once("::").unwrap().1
    );
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &name, "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, &dst)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let temp = loop {
        let found = temps_below(&dst)
            .into_iter()
            .find(|t| fs::metadata(dst.join(t)).is_ok_and(|m| m.len() >= 256 << 10));
        if let Some(t) = found {
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the helper never wrote"
        );
        assert!(child.try_wait().unwrap().is_none(), "the helper exited");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    assert_eq!(fs::read(dst.join("f")).unwrap(), b"old content");
    assert!(dst.join(&temp).exists());
    // Ignored by the scan, left alone while young ...
    let mut puller = Puller::new();
    let s = pull(&mut puller, &src, &dst);
    assert_eq!((s.files, s.temps_removed), (0, 0));
    assert!(dst.join(&temp).exists());
    // ... and removed once stale.
    puller.stale_temp_age = Duration::ZERO;
    let s = pull(&mut puller, &src, &dst);
    assert_eq!(s.temps_removed, 1);
    assert!(temps_below(&dst).is_empty());
    assert_eq!(fs::read(dst.join("f")).unwrap(), b"old content");
}

#[test]
fn files_just_written_are_not_read_again_by_the_next_pass() {
    let d = TempDir::new("rehash");
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    fs::create_dir_all(src.join("a")).unwrap();
    fs::create_dir_all(&dst).unwrap();
    for i in 0..20 {
        fs::write(src.join(format!("a/f{i}")), vec![i as u8; 10_000]).unwrap();
    }
    let mut puller = Puller::new();
    let first = pull(&mut puller, &src, &dst);
    assert_eq!(first.files, 20);
    let hashed = puller.scanner().stats().bytes_hashed;
    // Nothing changed: the second pass finds every file in the cache.
    let second = pull(&mut puller, &src, &dst);
    assert_eq!(second.files, 0);
    assert_eq!(
        puller.scanner().stats().bytes_hashed,
        hashed,
        "re-read what it wrote"
    );
    // A file changed on the replica afterwards is read again (and repaired).
    fs::write(dst.join("a/f3"), b"tampered").unwrap();
    let third = pull(&mut puller, &src, &dst);
    assert_eq!(third.files, 1);
    assert!(puller.scanner().stats().bytes_hashed > hashed);
}

#[test]
fn set_id_bits_are_cleared_unless_the_set_keeps_them() {
    let d = TempDir::new("setid");
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    fs::create_dir_all(src.join("shared")).unwrap();
    fs::create_dir_all(&dst).unwrap();
    fs::write(src.join("tool"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("tool"), fs::Permissions::from_mode(0o6755)).unwrap();
    fs::set_permissions(src.join("shared"), fs::Permissions::from_mode(0o2775)).unwrap();
    let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
    let mut source = LocalSource::new(spec("s", &src), Limits::default());
    let mut puller = Puller::new();
    let stats = puller
        .pass(&spec("s", &dst), &mut source, &Limits::default())
        .unwrap();
    assert!(stats.errors.is_empty(), "{:?}", stats.errors);
    assert_eq!(mode(&dst.join("tool")), 0o755);
    // A directory's setgid (group inheritance) is not a privilege: kept.
    assert_eq!(mode(&dst.join("shared")), 0o2775);
    // The next pass sees nothing to do: no rewrite of the file each time.
    let again = puller
        .pass(&spec("s", &dst), &mut source, &Limits::default())
        .unwrap();
    assert_eq!((again.files, again.meta), (0, 0), "{again:?}");
    // A set that keeps them gets the bits (as root, who may set them).
    if is_root() {
        let keep = SetSpec {
            keep_setid: true,
            ..spec("s", &dst)
        };
        let stats = puller.pass(&keep, &mut source, &Limits::default()).unwrap();
        assert!(stats.errors.is_empty(), "{:?}", stats.errors);
        assert_eq!(mode(&dst.join("tool")), 0o6755);
    }
}

use crate::sync::noise;

#[test]
fn a_large_changed_file_comes_as_a_delta() {
    let d = TempDir::new("delta");
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    let old = noise(1, 12 << 20);
    fs::write(src.join("big"), &old).unwrap();
    let mut puller = Puller::new();
    let first = pull(&mut puller, &src, &dst);
    assert_eq!(
        (first.files, first.delta_files),
        (1, 0),
        "no old copy: whole"
    );

    // One byte changed, and 1 MiB appended.
    let mut new = old.clone();
    new[5 << 20] ^= 0xff;
    new.extend_from_slice(&noise(2, 1 << 20));
    fs::write(src.join("big"), &new).unwrap();
    let s = pull(&mut puller, &src, &dst);
    assert_eq!((s.files, s.delta_files), (1, 1), "{s:?}");
    assert!(
        s.delta_fetched < (1 << 20) + 3 * u64::from(delta::LEAF),
        "{} bytes fetched",
        s.delta_fetched
    );
    assert_eq!(fs::read(dst.join("big")).unwrap(), new);

    // 1000 bytes inserted off any leaf boundary: every later leaf shifts, and is found
    // in the old copy by the rolling search instead of fetched.
    let mut shifted = new[..(3 << 20) + 7].to_vec();
    shifted.extend_from_slice(&noise(5, 1000));
    shifted.extend_from_slice(&new[(3 << 20) + 7..]);
    fs::write(src.join("big"), &shifted).unwrap();
    let s = pull(&mut puller, &src, &dst);
    assert_eq!((s.files, s.delta_files), (1, 1), "{s:?}");
    // Two leaves around the insert, and the details of the shifted groups (10 MiB /
    // 16 KiB x 40 bytes).
    assert!(
        s.delta_fetched < 3 * u64::from(delta::LEAF) + (32 << 10),
        "{} bytes fetched",
        s.delta_fetched
    );
    assert_eq!(fs::read(dst.join("big")).unwrap(), shifted);
    assert!(temps_below(&dst).is_empty());

    // A small file is never a delta.
    fs::write(src.join("small"), noise(3, 1 << 20)).unwrap();
    fs::write(dst.join("small"), noise(4, 1 << 20)).unwrap();
    let s = pull(&mut puller, &src, &dst);
    assert_eq!((s.files, s.delta_files), (1, 0));
}

/// Serves `inner`, with every range's bytes flipped.
struct LyingRanges {
    inner: LocalSource,
}

impl Source for LyingRanges {
    fn manifest(&mut self, set: &str) -> Result<Vec<u8>, String> {
        self.inner.manifest(set)
    }
    fn file(&mut self, set: &str, path: &str) -> Result<Box<dyn Read + '_>, String> {
        self.inner.file(set, path)
    }
    fn blocks(
        &mut self,
        set: &str,
        path: &str,
        hash: &str,
        groups: Option<&[u32]>,
    ) -> Result<Vec<u8>, String> {
        self.inner.blocks(set, path, hash, groups)
    }
    fn ranges(
        &mut self,
        set: &str,
        path: &str,
        hash: &str,
        ranges: &[(u64, u64)],
    ) -> Result<Box<dyn Read + '_>, String> {
        let mut body = Vec::new();
        self.inner
            .ranges(set, path, hash, ranges)?
            .read_to_end(&mut body)
            .map_err(|e| e.to_string())?;
        body.iter_mut().for_each(|b| *b = !*b);
        Ok(Box::new(io::Cursor::new(body)))
    }
}

#[test]
fn a_delta_whose_blocks_do_not_check_out_is_fetched_whole() {
    let d = TempDir::new("delta-lie");
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    let old = noise(5, 8 << 20);
    fs::write(dst.join("big"), &old).unwrap();
    let mut new = old;
    new[3 << 20] ^= 1;
    fs::write(src.join("big"), &new).unwrap();
    let mut source = LyingRanges {
        inner: LocalSource::new(spec("s", &src), Limits::default()),
    };
    let s = Puller::new()
        .pass(&spec("s", &dst), &mut source, &Limits::default())
        .unwrap();
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!((s.files, s.delta_files), (1, 0));
    assert_eq!(fs::read(dst.join("big")).unwrap(), new);
    assert!(temps_below(&dst).is_empty());
}

/// Serves `inner`, but every range stalls for good after its first 64 KiB, and a whole
/// file is refused: the only way forward is the delta, and it never ends.
struct StallingRanges {
    inner: LocalSource,
}

/// A reader that never answers.
struct Stalled;

impl Read for Stalled {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

impl Source for StallingRanges {
    fn manifest(&mut self, set: &str) -> Result<Vec<u8>, String> {
        self.inner.manifest(set)
    }
    fn file(&mut self, _: &str, _: &str) -> Result<Box<dyn Read + '_>, String> {
        Err("this source serves deltas only".into())
    }
    fn blocks(
        &mut self,
        set: &str,
        path: &str,
        hash: &str,
        groups: Option<&[u32]>,
    ) -> Result<Vec<u8>, String> {
        self.inner.blocks(set, path, hash, groups)
    }
    fn ranges(
        &mut self,
        set: &str,
        path: &str,
        hash: &str,
        ranges: &[(u64, u64)],
    ) -> Result<Box<dyn Read + '_>, String> {
        let first = self.inner.ranges(set, path, hash, ranges)?.take(64 << 10);
        Ok(Box::new(first.chain(Stalled)))
    }
}

const DELTA_HELPER_ENV: &str = "HAMON_SYNC_DELTA_KILL_HELPER";

/// Not a test on its own: in a child process (see
/// [`kill_9_mid_delta_apply_leaves_the_old_file`]), pulls a delta whose fetched blocks
/// stall, until killed.
#[test]
fn delta_kill_helper() {
    let Some(dir) = std::env::var_os(DELTA_HELPER_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let mut source = StallingRanges {
        inner: LocalSource::new(spec("s", &dir.join("src")), Limits::default()),
    };
    let _ = Puller::new().pass(
        &spec("s", &dir.join("dst")),
        &mut source,
        &Limits::default(),
    );
    unreachable!("the parent kills this process before the delta ends");
}

#[test]
fn kill_9_mid_delta_apply_leaves_the_old_file() {
    let d = TempDir::new("delta-kill");
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    let old = noise(6, 16 << 20);
    fs::write(dst.join("big"), &old).unwrap();
    // 512 KiB changed near the end: most of the new file is written from the old copy
    // before the fetched blocks stall, after their first 64 KiB.
    let mut new = old.clone();
    new[15 << 20..(15 << 20) + (512 << 10)].copy_from_slice(&noise(7, 512 << 10));
    fs::write(src.join("big"), &new).unwrap();

    let name = format!(
        "{}::delta_kill_helper",
        module_path!().split_once("::").unwrap().1
    );
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &name, "--nocapture", "--test-threads=1"])
        .env(DELTA_HELPER_ENV, d.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let written = temps_below(&dst)
            .into_iter()
            .any(|t| fs::metadata(dst.join(t)).is_ok_and(|m| m.len() >= 8 << 20));
        if written {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the helper never wrote"
        );
        assert!(child.try_wait().unwrap().is_none(), "the helper exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL, in the middle of the rebuilt file
    child.wait().unwrap();
    assert!(
        fs::read(dst.join("big")).unwrap() == old,
        "the old file changed"
    );

    // The next pass (stale temp files removed) completes the delta.
    let mut puller = Puller::new();
    puller.stale_temp_age = Duration::ZERO;
    let s = pull(&mut puller, &src, &dst);
    assert_eq!(
        (s.files, s.delta_files, s.temps_removed),
        (1, 1, 1),
        "{s:?}"
    );
    assert!(fs::read(dst.join("big")).unwrap() == new);
}

/// A source whose manifest takes a while, as an active's rescan of a changed large file.
struct SlowManifest {
    inner: LocalSource,
    delay: Duration,
}

impl Source for SlowManifest {
    fn manifest(&mut self, set: &str) -> Result<Vec<u8>, String> {
        std::thread::sleep(self.delay);
        self.inner.manifest(set)
    }
    fn file(&mut self, set: &str, path: &str) -> Result<Box<dyn Read + '_>, String> {
        self.inner.file(set, path)
    }
}

#[test]
fn a_pass_reports_how_long_it_and_the_manifest_took() {
    let d = TempDir::new("timed");
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    fs::write(src.join("f"), b"content").unwrap();
    let mut source = SlowManifest {
        inner: LocalSource::new(spec("s", &src), Limits::default()),
        delay: Duration::from_millis(120),
    };
    let stats = Puller::new()
        .pass(&spec("s", &dst), &mut source, &Limits::default())
        .unwrap();
    assert_eq!(stats.files, 1);
    assert!(stats.manifest_ms >= 120, "{stats:?}");
    assert!(stats.pass_ms >= stats.manifest_ms, "{stats:?}");
}

/// An active of the previous release: manifests of version 1 (every file by its SHA-256),
/// and block lists this build must not ask for.
struct OldPeer {
    inner: LocalSource,
    scanner: Scanner,
    blocks_asked: usize,
}

impl Source for OldPeer {
    fn manifest(&mut self, set: &str) -> Result<Vec<u8>, String> {
        let (m, _) = self
            .scanner
            .scan_as(&spec(set, &self.inner.spec.root), &Limits::default(), 1)
            .map_err(|e| e.to_string())?;
        assert_eq!(m.version, 1);
        Ok(encode(&m))
    }
    fn file(&mut self, set: &str, path: &str) -> Result<Box<dyn Read + '_>, String> {
        self.inner.file(set, path)
    }
    fn blocks(
        &mut self,
        _set: &str,
        _path: &str,
        _hash: &str,
        _groups: Option<&[u32]>,
    ) -> Result<Vec<u8>, String> {
        self.blocks_asked += 1;
        Err("block list version 3".into())
    }
    fn ranges(
        &mut self,
        set: &str,
        path: &str,
        hash: &str,
        ranges: &[(u64, u64)],
    ) -> Result<Box<dyn Read + '_>, String> {
        self.inner.ranges(set, path, hash, ranges)
    }
}

#[test]
fn a_pair_mid_upgrade_keeps_syncing_large_files_by_their_sha256() {
    use sha2::{Digest, Sha256};
    let d = TempDir::new("oldpeer");
    let (src, dst) = (d.path().join("src"), d.path().join("dst"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dst).unwrap();
    let mut big = noise(21, delta::DELTA_MIN as usize + 5000);
    fs::write(src.join("big"), &big).unwrap();
    fs::write(src.join("small"), b"small").unwrap();
    let mut old = OldPeer {
        inner: LocalSource::new(spec("s", &src), Limits::default()),
        scanner: Scanner::new(),
        blocks_asked: 0,
    };
    let mut puller = Puller::new();
    let pass = |puller: &mut Puller, source: &mut dyn Source| {
        let s = puller
            .pass(&spec("s", &dst), source, &Limits::default())
            .unwrap();
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        assert_eq!(
            fs::read(dst.join("big")).unwrap(),
            fs::read(src.join("big")).unwrap()
        );
        s
    };
    // From the old active: whole files, checked against their SHA-256.
    let s = pass(&mut puller, &mut old);
    assert_eq!((s.files, s.delta_files), (2, 0));
    let m = decode(&old.manifest("s").unwrap(), &Limits::default()).unwrap();
    let listed = m.entries.iter().find(|e| e.path == "big").unwrap();
    assert_eq!(
        listed.hash.as_deref(),
        Some(crate::sync::apply::hex(&Sha256::digest(&big)).as_str())
    );
    // A change: fetched whole again, no block list asked of a peer that speaks another.
    big[100] ^= 1;
    fs::write(src.join("big"), &big).unwrap();
    let s = pass(&mut puller, &mut old);
    assert_eq!((s.files, s.delta_files), (1, 0));
    assert_eq!(old.blocks_asked, 0);
    // Nothing changed: nothing fetched.
    assert_eq!(pass(&mut puller, &mut old).files, 0);
    // The active upgraded: the standby's copy hashed the new way matches, and the next
    // change comes as a delta.
    let mut new = LocalSource::new(spec("s", &src), Limits::default());
    assert_eq!(pass(&mut puller, &mut new).files, 0);
    big[200] ^= 1;
    fs::write(src.join("big"), &big).unwrap();
    let s = pass(&mut puller, &mut new);
    assert_eq!((s.files, s.delta_files), (1, 1));
}
