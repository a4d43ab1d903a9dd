use super::*;
use crate::sync::testutil::TempDir;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};

/// The content hash a manifest of this version gives `b`.
pub(crate) fn content(b: &[u8]) -> String {
    hex(&crate::sync::delta::content_hash_of(b))
}

pub(crate) fn file_entry(path: &str, body: &[u8]) -> Entry {
    Entry {
        path: path.into(),
        kind: Kind::File,
        size: body.len() as u64,
        mode: 0o640,
        uid: euid(),
        gid: egid(),
        mtime_s: 1_600_000_000,
        mtime_ns: 123_456_789,
        hash: Some(content(body)),
    }
}

/// Names of our temp files anywhere below `dir`.
pub(crate) fn temps_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if is_temp_name(&name) {
            out.push(name);
        } else if e.file_type().unwrap().is_dir() {
            out.extend(temps_below(&e.path()));
        }
    }
    out
}

#[test]
fn writes_content_and_metadata() {
    let d = TempDir::new("write");
    let e = file_entry("a/b/f", b"new content");
    let n = write_file(d.path(), &e, &mut &b"new content"[..]).unwrap();
    assert_eq!(n, 11);
    let p = d.path().join("a/b/f");
    assert_eq!(fs::read(&p).unwrap(), b"new content");
    let m = fs::metadata(&p).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o640);
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_600_000_000, 123_456_789));
    assert_eq!(
        fs::metadata(d.path().join("a")).unwrap().mode() & 0o777,
        0o700
    );
    assert!(temps_below(d.path()).is_empty());

    // Over an existing file, and with set-id bits kept.
    let mut e = file_entry("a/b/f", b"");
    e.mode = 0o2755;
    write_file(d.path(), &e, &mut &b""[..]).unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"");
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o2755);
}

#[test]
fn wrong_body_leaves_the_old_file() {
    let d = TempDir::new("wrongbody");
    let p = d.path().join("f");
    fs::write(&p, b"old").unwrap();
    let e = file_entry("f", b"12345");
    let too_long = write_file(d.path(), &e, &mut &b"123456"[..]).unwrap_err();
    assert!(
        matches!(
            too_long,
            SyncError::Size {
                got: 6,
                want: 5,
                ..
            }
        ),
        "{too_long}"
    );
    let short = write_file(d.path(), &e, &mut &b"1234"[..]).unwrap_err();
    assert!(
        matches!(
            short,
            SyncError::Size {
                got: 4,
                want: 5,
                ..
            }
        ),
        "{short}"
    );
    let bad = write_file(d.path(), &e, &mut &b"12346"[..]).unwrap_err();
    assert!(matches!(bad, SyncError::Hash { .. }), "{bad}");
    assert_eq!(fs::read(&p).unwrap(), b"old");
    assert!(temps_below(d.path()).is_empty());
    // A failing reader, too.
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("connection reset"))
        }
    }
    let err = write_file(d.path(), &e, &mut Failing).unwrap_err();
    assert!(err.to_string().contains("connection reset"), "{err}");
    assert_eq!(fs::read(&p).unwrap(), b"old");
    assert!(temps_below(d.path()).is_empty());
}

#[test]
fn kind_changes_replace_the_old_entry() {
    let d = TempDir::new("kinds");
    fs::create_dir_all(d.path().join("x/y")).unwrap();
    fs::write(d.path().join("x/y/z"), b"z").unwrap();
    write_file(d.path(), &file_entry("x", b"file"), &mut &b"file"[..]).unwrap();
    assert_eq!(fs::read(d.path().join("x")).unwrap(), b"file");

    let mut dir = file_entry("x", b"");
    dir.kind = Kind::Dir;
    dir.hash = None;
    dir.mode = 0o751;
    make_dir(d.path(), &dir).unwrap();
    let m = fs::symlink_metadata(d.path().join("x")).unwrap();
    assert!(m.is_dir());
    assert_eq!(m.mode() & 0o7777, 0o751);

    let mut link = dir.clone();
    link.kind = Kind::Symlink { target: ".".into() };
    fs::write(d.path().join("x/inside"), b"").unwrap();
    make_symlink(d.path(), &link).unwrap();
    assert_eq!(fs::read_link(d.path().join("x")).unwrap(), Path::new("."));
    let mtime = fs::symlink_metadata(d.path().join("x")).unwrap().mtime();
    assert_eq!(mtime, 1_600_000_000);
    link.kind = Kind::Symlink {
        target: "elsewhere".into(),
    };
    make_symlink(d.path(), &link).unwrap();
    assert_eq!(
        fs::read_link(d.path().join("x")).unwrap(),
        Path::new("elsewhere")
    );
    assert!(temps_below(d.path()).is_empty());
}

#[test]
fn metadata_only() {
    let d = TempDir::new("meta");
    let body = b"same";
    write_file(d.path(), &file_entry("f", body), &mut &body[..]).unwrap();
    let mut e = file_entry("f", body);
    e.mode = 0o600;
    e.mtime_s = -5;
    set_meta(d.path(), &e).unwrap();
    let m = fs::metadata(d.path().join("f")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o600, -5));
    e.kind = Kind::Dir;
    e.hash = None;
    e.size = 0;
    let err = set_meta(d.path(), &e).unwrap_err();
    assert!(err.to_string().contains("kind"), "{err}");
}

#[test]
fn symlinks_in_the_parent_chain_are_refused() {
    let d = TempDir::new("symparent");
    let root = d.path().join("root");
    let outside = d.path().join("outside");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(outside.join("sub")).unwrap();
    fs::write(outside.join("victim"), b"victim").unwrap();
    symlink(&outside, root.join("link")).unwrap();

    let e = file_entry("link/victim", b"pwned");
    let err = write_file(&root, &e, &mut &b"pwned"[..]).unwrap_err();
    assert!(matches!(err, SyncError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("\"link\" is a symlink"), "{err}");
    let e = file_entry("link/sub/new", b"pwned");
    assert!(write_file(&root, &e, &mut &b"pwned"[..]).is_err());
    assert!(delete(&root, "link/victim").is_err());
    let mut dir = file_entry("link/newdir", b"");
    dir.kind = Kind::Dir;
    dir.hash = None;
    assert!(make_dir(&root, &dir).is_err());
    let mut chmod = file_entry("link/victim", b"victim");
    chmod.mode = 0o777;
    assert!(set_meta(&root, &chmod).is_err());
    let link = Entry {
        kind: Kind::Symlink { target: "x".into() },
        hash: None,
        size: 0,
        ..file_entry("link/l", b"")
    };
    assert!(make_symlink(&root, &link).is_err());

    assert_eq!(fs::read(outside.join("victim")).unwrap(), b"victim");
    assert_ne!(
        fs::metadata(outside.join("victim")).unwrap().mode() & 0o777,
        0o777
    );
    let names: Vec<_> = fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(fs::read_dir(outside.join("sub")).unwrap().next().is_none());

    // Deleting the symlink itself removes the link, never what it points to.
    assert!(delete(&root, "link").unwrap());
    assert!(outside.join("victim").exists());
    // Nor does deleting a tree follow a symlink inside it.
    fs::create_dir_all(root.join("tree")).unwrap();
    symlink(&outside, root.join("tree/link")).unwrap();
    assert!(delete(&root, "tree").unwrap());
    assert!(!root.join("tree").exists());
    assert_eq!(fs::read(outside.join("victim")).unwrap(), b"victim");
    assert!(!delete(&root, "tree").unwrap(), "absent is fine");
}

fn mkfifo(p: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

#[test]
fn open_served_checks() {
    let d = TempDir::new("served");
    let root = d.path().join("root");
    fs::create_dir_all(root.join("dir")).unwrap();
    fs::create_dir_all(d.path().join("outside")).unwrap();
    fs::write(d.path().join("outside/secret"), b"secret").unwrap();
    fs::write(root.join("dir/f"), b"served").unwrap();
    fs::write(root.join("skip.log"), b"log").unwrap();
    symlink("../outside", root.join("out")).unwrap();
    symlink("dir/f", root.join("alias")).unwrap();
    mkfifo(&root.join("fifo"));
    let spec = SetSpec {
        name: "s".into(),
        root: root.clone(),
        include: vec![],
        exclude: vec!["*.log".into()],
        keep_setid: false,
    };
    let (mut f, len) = open_served(&spec, "dir/f").unwrap();
    let mut body = String::new();
    f.read_to_string(&mut body).unwrap();
    assert_eq!((body.as_str(), len), ("served", 6));
    for (rel, why) in [
        ("../outside/secret", "'..'"),
        ("/etc/passwd", "absolute"),
        ("out/secret", "symlink"),
        ("alias", "symlink"),
        ("fifo", "not a regular file"),
        ("dir", "not a regular file"),
        ("skip.log", "not in the set"),
    ] {
        let err = open_served(&spec, rel).unwrap_err();
        assert!(err.to_string().contains(why), "{rel}: {err}");
    }
    let err = open_served(&spec, "nope").unwrap_err();
    assert!(matches!(err, SyncError::Io { .. }), "{err}");
}

/// Yields `len` bytes of a fixed pattern, at most `chunk` per read.
pub(crate) struct Generated {
    pub pos: u64,
    pub len: u64,
    pub chunk: usize,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.len - self.pos).min(buf.len().min(self.chunk) as u64) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let at = self.pos + i as u64;
            *b = (at ^ (at >> 11)) as u8;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[test]
fn large_file_is_streamed() {
    const LEN: u64 = 64 << 20;
    let d = TempDir::new("large");
    // A large file is named by its block list's hash.
    let list = crate::sync::delta::index(Generated {
        pos: 0,
        len: LEN,
        chunk: 1 << 20,
    })
    .unwrap();
    let e = Entry {
        size: LEN,
        hash: Some(hex(&list.hash)),
        ..file_entry("big", b"")
    };
    let mut body = Generated {
        pos: 0,
        len: LEN,
        chunk: 1000,
    };
    assert_eq!(write_file(d.path(), &e, &mut body).unwrap(), LEN);
    assert_eq!(fs::metadata(d.path().join("big")).unwrap().len(), LEN);
    let (m, _) = crate::sync::Scanner::new()
        .scan(
            &SetSpec {
                name: "s".into(),
                root: d.path().into(),
                include: vec![],
                exclude: vec![],
                keep_setid: false,
            },
            &Limits::default(),
        )
        .unwrap();
    assert_eq!(m.entries[0].hash, e.hash);
}

#[test]
fn staged_files_are_invisible_until_committed_together() {
    let d = TempDir::new("staged");
    fs::write(d.path().join("old"), b"old").unwrap();
    let bodies: [(&str, &[u8]); 3] = [("old", b"new"), ("a/one", b"1"), ("a/two", b"22")];
    let staged: Vec<Staged> = bodies
        .iter()
        .map(|(p, b)| stage_file(d.path(), &file_entry(p, b), &mut &b[..]).unwrap())
        .collect();
    // Written and checked, but nothing is in place yet: a kill here leaves the old
    // file and only temp files, which a later pass removes.
    assert_eq!(fs::read(d.path().join("old")).unwrap(), b"old");
    assert!(!d.path().join("a/one").exists());
    assert_eq!(temps_below(d.path()).len(), 3);
    let sizes: Vec<u64> = commit_all(d.path(), staged)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(sizes, [3, 1, 2]);
    for (p, b) in bodies {
        assert_eq!(fs::read(d.path().join(p)).unwrap(), b, "{p}");
    }
    assert!(temps_below(d.path()).is_empty());
}

#[test]
fn a_staged_file_dropped_uncommitted_leaves_the_old_one() {
    let d = TempDir::new("dropped");
    fs::write(d.path().join("f"), b"old").unwrap();
    let staged = stage_file(d.path(), &file_entry("f", b"new"), &mut &b"new"[..]).unwrap();
    drop(staged);
    assert_eq!(fs::read(d.path().join("f")).unwrap(), b"old");
    assert!(temps_below(d.path()).is_empty());
    // A body that does not check out is refused at staging, with nothing left behind.
    let bad = stage_file(d.path(), &file_entry("f", b"new"), &mut &b"NEW"[..]).unwrap_err();
    assert!(matches!(bad, SyncError::Hash { .. }), "{bad}");
    assert!(temps_below(d.path()).is_empty());
}
