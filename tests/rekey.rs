//! Changing the authentication key on a registered pair under load: 200 ms
//! heartbeats and a sync set that changes every 100 ms. `hamon ha authkey` on
//! the primary, then on the secondary, changes the key and the pair secret on
//! both servers: no heartbeat is refused, nothing fails over, sync goes on,
//! and the old key no longer logs in. With the peer stopped, the command is
//! refused and both servers keep what they had.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const N: u8 = 80;

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// What server `i` keeps: its key and its pair secret.
fn kept(p: &Pair, i: usize) -> (String, String) {
    let dir = p.state_dir(i);
    (read(&dir.join("authkey")), read(&dir.join("secret")))
}

/// The status of a login to server `i` with `key` (303: logged in, 401: refused), from
/// a source address of its own (`from`), so the login throttle does not mix them up.
fn login(p: &Pair, i: usize, key: &str, from: u8) -> u16 {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: std::net::SocketAddr = format!("127.0.{N}.{from}:0").parse().unwrap();
    sock.bind(&local.into()).unwrap();
    let to: std::net::SocketAddr = format!("{}:18082", p.addrs[i]).parse().unwrap();
    sock.connect(&to.into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = format!("key={key}");
    write!(
        s,
        "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_key_changes_on_both_servers_without_a_refused_heartbeat() {
    let p = Pair::with_extra(N, SYNC);
    p.edit_configs(|c| c.replace("interval_ms = 100", "interval_ms = 200"));
    fs::create_dir_all(p.data(0)).unwrap();
    fs::write(p.data(0).join("counter"), "0\n").unwrap();
    let mut p = Pair::registered_with(p, "automatic");
    let first = kept(&p, 0);
    assert_eq!(
        kept(&p, 1),
        first,
        "registration gave both servers one secret"
    );

    // Load: the primary's set changes every 100 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (dir, stop) = (p.data(0), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                fs::write(dir.join("counter"), format!("{n}\n")).unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
            n
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let before = [p.heartbeat_counts(0), p.heartbeat_counts(1)];

    for (i, key) in [(0, "Rotated-Key-1"), (1, "Rotated-Key-2")] {
        let out = p.run_with_stdin(i, &["ha", "authkey"], &format!("{key}\n"));
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "server {i}: {said}");
        assert!(said.contains("changed on both servers"), "{said}");
        let (a, b) = (kept(&p, 0), kept(&p, 1));
        assert_eq!(a, b, "after the change on server {i} both keep the same");
        assert_eq!(a.0.trim(), key);
        assert_ne!(a.1, first.1, "a new pair secret");
        std::thread::sleep(Duration::from_secs(2)); // heartbeats under the new keys
    }
    assert_ne!(kept(&p, 0).1, first.1);

    // Sync went on: the last value written reaches the secondary.
    stop.store(true, Ordering::Relaxed);
    let last = writer.join().unwrap();
    let counter = p.data(1).join("counter");
    assert!(
        wait(Duration::from_secs(15), || read(&counter)
            == format!("{last}\n"))
        .is_some(),
        "sync stopped: the secondary has {:?}, the primary wrote {last}",
        read(&counter)
    );
    let after = [p.heartbeat_counts(0), p.heartbeat_counts(1)];
    for i in 0..2 {
        assert_eq!(
            after[i].rejected_bad - before[i].rejected_bad,
            0,
            "server {i} refused heartbeats during the change"
        );
        assert_eq!(after[i].rejected_replay - before[i].rejected_replay, 0);
        assert!(after[i].accepted - before[i].accepted > 10);
    }
    p.assert_never_journaled(&[
        "heartbeats_missed",
        "heartbeat_path_broken",
        "peer_lost",
        "split_brain",
    ]);
    p.assert_undisturbed();
    // The old keys no longer log in; the new one does, on both.
    for i in 0..2 {
        assert_eq!(login(&p, i, KEY, 10), 401, "server {i}, the first key");
        assert_eq!(
            login(&p, i, "Rotated-Key-1", 11),
            401,
            "server {i}, the second key"
        );
        assert_eq!(
            login(&p, i, "Rotated-Key-2", 12),
            303,
            "server {i}, the new key"
        );
    }

    // With the peer stopped, the change is refused and nothing moves.
    let held = [kept(&p, 0), kept(&p, 1)];
    p.stop(1);
    let out = p.run_with_stdin(0, &["ha", "authkey"], "Rotated-Key-3\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the key was not changed"), "{err}");
    assert_eq!([kept(&p, 0), kept(&p, 1)], held);
    assert_eq!(login(&p, 0, "Rotated-Key-2", 13), 303);
    assert!(!p.state_dir(0).join("secret.new").exists());
    assert!(!p.state_dir(0).join("authkey.new").exists());
}
