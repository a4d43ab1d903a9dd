//! File sync between two real agents on loopback: the initial copy at
//! registration, change hints, the direction following the active role, and
//! hostile requests to the sync endpoints.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{noise, wait, Pair, KEY, SYNC};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

#[allow(non_snake_case)]
fn SECS(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

/// Waits until `path` holds `text`; how long it took.
fn arrives(path: &Path, text: &str, within: Duration) -> Duration {
    let t = Instant::now();
    wait(within, || read(path).as_deref() == Some(text)).unwrap_or_else(|| {
        panic!(
            "{} did not get {text:?} within {within:?} (has {:?})",
            path.display(),
            read(path)
        )
    });
    t.elapsed()
}

#[test]
fn registration_copies_the_files_and_changes_follow_the_active_server() {
    let p = Pair::with_extra(100, SYNC);
    let (a, b) = (p.data(0), p.data(1));
    // The primary's tree before registration: nested files, a private mode,
    // an owner, an old mtime, an in-set symlink, a larger file.
    write(&a.join("etc/app.conf"), "listen = 8443\n");
    write(&a.join("etc/secret.key"), "k3y\n");
    fs::set_permissions(a.join("etc/secret.key"), fs::Permissions::from_mode(0o600)).unwrap();
    if is_root() {
        std::os::unix::fs::chown(a.join("etc/app.conf"), Some(4321), Some(4322)).unwrap();
    }
    let old = filetime(a.join("etc/app.conf").as_path(), 1_600_000_000);
    std::os::unix::fs::symlink("etc/app.conf", a.join("current.conf")).unwrap();
    let big: String = (0..200_000).map(|i| format!("{i:07}\n")).collect();
    write(&a.join("big/records.txt"), &big);
    // The secondary has a file the primary does not: the copy removes it.
    write(&b.join("stale.txt"), "old\n");

    let p = Pair::registered_with(p, "automatic");
    // Registration returned: the initial copy is complete.
    assert_eq!(
        read(&b.join("etc/app.conf")).as_deref(),
        Some("listen = 8443\n")
    );
    assert_eq!(
        read(&b.join("big/records.txt")).as_deref(),
        Some(big.as_str())
    );
    assert!(!b.join("stale.txt").exists(), "stale file not deleted");
    let key = fs::metadata(b.join("etc/secret.key")).unwrap();
    assert_eq!(key.mode() & 0o7777, 0o600);
    let conf = fs::metadata(b.join("etc/app.conf")).unwrap();
    assert_eq!(conf.mtime(), old);
    if is_root() {
        assert_eq!((conf.uid(), conf.gid()), (4321, 4322));
    }
    assert_eq!(
        fs::read_link(b.join("current.conf")).unwrap(),
        Path::new("etc/app.conf")
    );

    // A change on the active primary reaches the standby through a hint,
    // long before the next timed pass.
    write(&a.join("etc/app.conf"), "listen = 9443\n");
    let took = arrives(&b.join("etc/app.conf"), "listen = 9443\n", SECS(20));
    assert!(took < SECS(20));
    fs::remove_file(a.join("etc/secret.key")).unwrap();
    wait(SECS(20), || !b.join("etc/secret.key").exists()).expect("deletion not propagated");
    let status = String::from_utf8_lossy(&p.run(1, &["status"]).stdout).to_string();
    assert!(
        status.contains("File sync (pulling) frequent: 1 set(s)"),
        "{status}"
    );
    // The standby's lag reaches the active server in its heartbeats.
    let primary_status = || String::from_utf8_lossy(&p.run(0, &["status"]).stdout).to_string();
    wait(SECS(10), || {
        primary_status().contains("Peer's file replica (from its heartbeats): frequent lag ")
            && primary_status().contains(" file(s), ")
    })
    .unwrap_or_else(|| panic!("no peer lag in {}", primary_status()));

    // The primary dies: the secondary serves, and its changes flow back to
    // the primary once it returns (Primary Syncing pulls from the secondary).
    let mut p = p;
    p.kill9(0);
    p.wait_state(1, "Secondary Active", SECS(20));
    write(&b.join("etc/app.conf"), "listen = 10443\n");
    p.start(0);
    p.wait_state(0, "Primary Syncing", SECS(30));
    write(&b.join("etc/added-on-b.conf"), "from b\n");
    arrives(&a.join("etc/added-on-b.conf"), "from b\n", SECS(20));
    let status = String::from_utf8_lossy(&p.run(0, &["status"]).stdout).to_string();
    assert!(status.contains("File sync (pulling)"), "{status}");
    let status = String::from_utf8_lossy(&p.run(1, &["status"]).stdout).to_string();
    assert!(status.contains("File sync (serving)"), "{status}");

    // Failback copies the secondary's data back, then the primary serves
    // again and the direction flips back.
    let out = p.run(1, &["ha", "failback"]);
    assert!(out.status.success(), "{out:?}\n{}", p.log(1));
    assert_eq!(
        read(&a.join("etc/app.conf")).as_deref(),
        Some("listen = 10443\n")
    );
    p.wait_state(0, "Primary Active", SECS(20));
    p.wait_state(1, "Secondary Syncing", SECS(20));
    write(&a.join("etc/after-failback.conf"), "from a\n");
    arrives(&b.join("etc/after-failback.conf"), "from a\n", SECS(20));
}

/// Sets a file's mtime to `secs` (Unix time); returns it.
fn filetime(path: &Path, secs: i64) -> i64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let times = [
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
    ];
    // SAFETY: a valid NUL-terminated path and two timespecs.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
    assert_eq!(rc, 0);
    secs
}

/// Sends `body` to server `i` at `target` with the `signed` headers.
fn send_signed(
    p: &Pair,
    i: usize,
    target: &str,
    signed: &[(&str, String)],
    body: &str,
) -> (u16, String) {
    let headers: Vec<(&str, &str)> = signed.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let addr = format!("{}:18082", p.addrs[i]).parse().unwrap();
    let r = hamon::web::client::request(
        addr,
        "POST",
        target,
        &headers,
        body.as_bytes(),
        SECS(5),
        1 << 20,
    )
    .unwrap();
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

#[test]
fn signed_requests_cannot_be_altered_redirected_or_replayed_after_a_restart() {
    use hamon::peer::auth;
    let p = Pair::with_extra(103, SYNC);
    write(&p.data(0).join("ok.txt"), "fine\n");
    let mut p = Pair::registered_with(p, "manual");
    let keys = common::pair_keys(&p, 0);
    let (path, body) = ("/peer/v1/sync/manifest", r#"{"set":"conf","version":2}"#);
    let sign = |receiver: &str| {
        auth::sign_request(
            &keys.api,
            "POST",
            path,
            receiver,
            body.as_bytes(),
            hamon::peer::client::unix_ms(),
            auth::random16(),
        )
    };
    let signed = sign(&p.addrs[0]);
    // A query string added on the way breaks the signature.
    let (status, text) = send_signed(&p, 0, &format!("{path}?set=other"), &signed, body);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("bad signature"), "{text}");
    // A request signed for the other server is not taken by this one.
    let (status, _) = send_signed(&p, 0, path, &sign(&p.addrs[1]), body);
    assert_eq!(status, 401);
    // As signed: answered, once.
    assert_eq!(send_signed(&p, 0, path, &signed, body).0, 200);
    let (status, text) = send_signed(&p, 0, path, &signed, body);
    assert_eq!(status, 401);
    assert!(text.contains("replayed"), "{text}");
    // The receiver restarts, forgetting the nonces it saw: the capture is
    // still refused, being older than the restart.
    p.kill9(0);
    p.start(0);
    let (status, text) = send_signed(&p, 0, path, &signed, body);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("before this server started"), "{text}");
}

/// A signed request to a sync endpoint of server `i`, as the peer would send it: with the
/// pair's keys for `KEY`, with keys derived from any other key (which the server refuses).
fn sync_call(p: &Pair, i: usize, op: &str, body: &str, key: &str) -> (u16, String) {
    use hamon::peer::auth;
    let keys = if key == KEY {
        common::pair_keys(p, i)
    } else {
        auth::Keys::legacy(key)
    };
    let path = format!("/peer/v1/sync/{op}");
    let now = hamon::peer::client::unix_ms();
    let signed = auth::sign_request(
        &keys.api,
        "POST",
        &path,
        &p.addrs[i],
        body.as_bytes(),
        now,
        auth::random16(),
    );
    send_signed(p, i, &path, &signed, body)
}

#[test]
fn hostile_sync_requests_are_refused_and_logged() {
    let p = Pair::with_extra(101, SYNC);
    let a = p.data(0);
    write(&a.join("ok.txt"), "fine\n");
    let outside = p.dir.join("outside-secret");
    write(&outside, "do not serve\n");
    std::os::unix::fs::symlink(&outside, a.join("escape")).unwrap();
    std::os::unix::fs::symlink("../../outside-secret", a.join("escape-rel")).unwrap();
    let fifo = std::ffi::CString::new(a.join("pipe").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let p = Pair::registered_with(p, "manual");

    // A legitimate file is served.
    let (status, body) = sync_call(&p, 0, "file", r#"{"set":"conf","path":"ok.txt"}"#, KEY);
    assert_eq!((status, body.as_str()), (200, "fine\n"));
    // Traversal, absolute paths, links out of the set, special files: refused.
    for path in [
        "../../outside-secret",
        "/etc/passwd",
        "escape",
        "escape-rel",
        "pipe",
        "ok.txt/../../../outside-secret",
    ] {
        let body = format!(r#"{{"set":"conf","path":"{path}"}}"#);
        let (status, text) = sync_call(&p, 0, "file", &body, KEY);
        assert_eq!(status, 403, "{path}: {text}");
        assert!(!text.contains("do not serve"), "{path}: {text}");
    }
    // The manifest leaves the escaping links and the fifo out.
    let (status, manifest) = sync_call(&p, 0, "manifest", r#"{"set":"conf","version":2}"#, KEY);
    assert_eq!(status, 200, "{manifest}");
    assert!(manifest.contains("ok.txt"), "{manifest}");
    for bad in ["escape", "pipe"] {
        assert!(
            !manifest.contains(&format!("\"{bad}")),
            "{bad} in {manifest}"
        );
    }
    // A standby of the previous release (no version) is served the manifest it reads.
    let (status, old) = sync_call(&p, 0, "manifest", r#"{"set":"conf"}"#, KEY);
    assert_eq!(status, 200, "{old}");
    assert!(old.starts_with(r#"{"version":1,"#), "{old}");
    // Unknown sets, malformed bodies and wrong keys.
    assert_eq!(
        sync_call(&p, 0, "manifest", r#"{"set":"nope","version":2}"#, KEY).0,
        404
    );
    assert_eq!(sync_call(&p, 0, "manifest", "{", KEY).0, 400);
    assert_eq!(
        sync_call(&p, 0, "manifest", r#"{"set":"conf"}"#, "Wrong-Key-2026").0,
        401
    );
    assert!(
        p.log(0).contains("refused to serve"),
        "refusals are not logged:\n{}",
        p.log(0)
    );
    // The secondary did not copy what the primary refused to list.
    let b = p.data(1);
    assert_eq!(read(&b.join("ok.txt")).as_deref(), Some("fine\n"));
    assert!(fs::symlink_metadata(b.join("escape")).is_err());
    assert!(fs::symlink_metadata(b.join("pipe")).is_err());
}

#[test]
fn a_changed_large_file_crosses_the_wire_as_a_delta() {
    let p = Pair::with_extra(99, SYNC);
    let (a, b) = (p.data(0), p.data(1));
    fs::create_dir_all(&a).unwrap();
    let old = noise(9, 24 << 20);
    fs::write(a.join("image.bin"), &old).unwrap();
    let p = Pair::registered_with(p, "manual");
    let copied = wait(SECS(30), || {
        fs::read(b.join("image.bin")).is_ok_and(|got| got == old)
    });
    assert!(copied.is_some(), "the initial copy did not arrive");

    let mut new = old.clone();
    new[17 << 20] ^= 0x01;
    // Replaced in one step, from outside the set: a pass that catches a half-written
    // file would fetch that state, and the delta would come from it, or not at all.
    let staged = a.parent().unwrap().join("image.bin.new"); // outside the set
    fs::write(&staged, &new).unwrap();
    fs::rename(&staged, a.join("image.bin")).unwrap();
    let synced = wait(SECS(30), || {
        fs::read(b.join("image.bin")).is_ok_and(|got| got == new)
    });
    assert!(synced.is_some(), "the change did not arrive:\n{}", p.log(1));
    // The status shows the last pass: a later one (a timed pass, a late hint) finds
    // nothing to do, so look until the delta's pass is seen.
    let mut frequent = serde_json::Value::Null;
    let seen = wait(SECS(10), || {
        let out = p.run(1, &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        frequent = v["sync"]["frequent"].clone();
        frequent["delta_files"] == 1
    });
    assert!(seen.is_some(), "no pass with one delta: {frequent}");
    let fetched = frequent["delta_fetched"].as_u64().unwrap();
    // The summary (about 2 KB), one group's details and the changed block: not 24 MiB.
    assert!(
        fetched < 256 << 10,
        "{fetched} bytes fetched for a 1-byte change"
    );
}
