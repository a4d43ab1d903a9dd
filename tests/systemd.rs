//! The agent under systemd: the unit file verifies, and the agent speaks
//! sd_notify (READY=1, watchdog pings from the core loop, STOPPING=1).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing in CI"
        );
        eprintln!("skipped: systemd-analyze not installed");
        return;
    };
    assert!(out.status.success());
    let dir = std::env::temp_dir().join(format!("hamon-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/hamon.service"
    ))
    .unwrap()
    .replace("/usr/bin/hamon", common::hamon());
    for want in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "ProtectSystem=strict",
    ] {
        assert!(unit.contains(want), "unit lacks {want}");
    }
    let caps = unit
        .lines()
        .find(|l| l.starts_with("CapabilityBoundingSet="))
        .unwrap();
    assert_eq!(
        caps,
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE"
    );
    std::fs::write(dir.join("hamon.service"), unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.join("hamon.service"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("hamon.service:"),
        "verify: {text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn agent_notifies_ready_and_feeds_the_watchdog() {
    let p = common::Pair::new(30);
    let sock_path = p.dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut child = Command::new(common::hamon())
        .args(["agent", "--config"])
        .arg(p.config(0))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "300000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut got: Vec<String> = Vec::new();
    let t = Instant::now();
    let mut buf = [0u8; 256];
    while t.elapsed() < Duration::from_secs(3) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    // SAFETY: signalling the child this test spawned.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = child.wait().unwrap();
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(got.first().map(String::as_str), Some("READY=1"), "{got:?}");
    let pings = got.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(
        pings >= 5,
        "watchdog fed every ~150 ms for 3 s, got {pings}: {got:?}"
    );
    assert_eq!(
        got.last().map(String::as_str),
        Some("STOPPING=1"),
        "{got:?}"
    );
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}

/// `systemd-analyze verify` of `units` in `dir`; its complaints, if any.
fn verify(dir: &std::path::Path, units: &[&str]) -> Result<(), String> {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(units.iter().map(|u| dir.join(u)))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    if out.status.success() && !units.iter().any(|u| text.contains(&format!("{u}:"))) {
        Ok(())
    } else {
        Err(text)
    }
}

#[test]
fn the_generator_writes_a_dropin_systemd_accepts_and_the_first_boot_unit_verifies() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing in CI"
        );
        eprintln!("skipped: systemd-analyze not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("hamon-gen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let units = dir.join("units");
    std::fs::create_dir_all(&units).unwrap();
    let repo = env!("CARGO_MANIFEST_DIR");
    for unit in ["hamon.service", "hamon-firstboot.service"] {
        let text = std::fs::read_to_string(format!("{repo}/systemd/{unit}"))
            .unwrap()
            .replace("/usr/bin/hamon", common::hamon());
        std::fs::write(units.join(unit), text).unwrap();
    }
    // The binary under the generator's name, as the .deb links it.
    let generator = dir.join("hamon-generator");
    std::os::unix::fs::symlink(common::hamon(), &generator).unwrap();
    let config = dir.join("hamon.toml");
    std::fs::write(
        &config,
        "[node]\nname = \"a\"\nrole = \"primary\"\naddress = \"192.0.2.11\"\n\
         [[sync]]\nname = \"conf\"\npath = \"/etc/appliance\"\n\
         [[service]]\nname = \"w\"\ncommand = [\"/bin/true\"]\nuser = \"nobody\"\n",
    )
    .unwrap();
    let run = |args: &[&std::path::Path]| {
        Command::new(&generator)
            .args(args)
            .env("HAMON_CONFIG", &config)
            .status()
            .unwrap()
    };
    let late = dir.join("late");
    assert!(run(&[&units, &late, &late]).success());
    let dropin = units.join("hamon.service.d/50-hamon-features.conf");
    let text = std::fs::read_to_string(&dropin).unwrap();
    assert!(
        text.contains("ReadWritePaths=\"-/etc/appliance\"\n"),
        "{text}"
    );
    assert!(text.contains("CapabilityBoundingSet=CAP_CHOWN CAP_DAC_OVERRIDE CAP_FOWNER CAP_KILL CAP_SETGID CAP_SETUID\n"), "{text}");
    verify(&units, &["hamon.service", "hamon-firstboot.service"])
        .unwrap_or_else(|e| panic!("verify with the drop-in: {e}"));
    // A configuration the agent would refuse: no drop-in, and the generator
    // still succeeds (a generator must not fail the boot).
    std::fs::remove_file(&dropin).unwrap();
    std::fs::write(&config, "[node]\nname = \n").unwrap();
    assert!(run(&[&units, &late, &late]).success());
    assert!(!dropin.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// systemd starts a service with 1,024 descriptors as its soft limit and leaves raising
/// it to the program; the agent raises it to its hard limit (file sync holds two
/// descriptors for each file of a commit group, besides the connections).
#[test]
fn agent_raises_its_open_files_soft_limit_to_the_hard_one() {
    let p = common::Pair::new(113);
    // prlimit sets the limits and execs the agent, keeping its PID.
    let mut child = Command::new("prlimit")
        .args(["--nofile=256:4096", "--"])
        .arg(common::hamon())
        .args(["agent", "--config"])
        .arg(p.config(0))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let limits = format!("/proc/{}/limits", child.id());
    let open_files = || {
        std::fs::read_to_string(&limits)
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .map(|l| {
                l.split_whitespace()
                    .skip(3)
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    let t = Instant::now();
    while open_files() != "4096 4096" && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = open_files();
    // SAFETY: signalling the child this test spawned.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
    assert_eq!(seen, "4096 4096", "soft and hard limit of open files");
}
