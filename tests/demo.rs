//! `hamon demo` brings up a working pair: on loopback without root, and in
//! network namespaces with a virtual IP as root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod netns;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Start the demo and collect its output until it says it is running.
fn start(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hamon"))
        .arg("demo")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut text = String::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        text.push_str(&line);
        text.push('\n');
        if line.contains("Ctrl-C stops") {
            break;
        }
    }
    (child, text)
}

fn stop(mut child: Child) {
    // SAFETY: signalling the child this test spawned.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(status.success(), "demo exit: {status:?}");
}

#[test]
fn loopback_demo_runs_a_registered_pair() {
    let (child, text) = start(&["--loopback"]);
    assert!(text.contains("HA registration complete"), "{text}");
    assert!(text.contains("ha failback"), "{text}");
    let cfg = text
        .lines()
        .find_map(|l| l.split_whitespace().skip_while(|w| *w != "--config").nth(1))
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_hamon"))
        .args(["--config", cfg, "ha", "status"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("[State] Primary Active"),
        "{out:?}"
    );
    // The demo's file sync: what it suggests writing on the primary appears
    // on the secondary.
    let hint = text.lines().find(|l| l.contains("hello.txt")).unwrap();
    let words: Vec<&str> = hint.split_whitespace().collect();
    let (on_a, on_b) = (words[3].trim_end_matches(';'), words[5]);
    std::fs::write(on_a, "hello\n").unwrap();
    let t = std::time::Instant::now();
    while std::fs::read_to_string(on_b).ok().as_deref() != Some("hello\n") {
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{on_b} never arrived"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(child);
}

#[test]
fn root_demo_runs_in_namespaces_with_a_vip() {
    if !netns::available() {
        return;
    }
    let (child, text) = start(&[]);
    assert!(text.contains("HA registration complete"), "{text}");
    let ping = Command::new("ip")
        .args([
            "netns",
            "exec",
            "hamon-demo-obs",
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "192.0.2.10",
        ])
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "the observer reaches the VIP: {ping:?}"
    );
    stop(child);
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains("hamon-demo"),
        "namespaces removed"
    );
}
