//! `hamon demo`: a complete pair on this machine.
//!
//! As root (with iproute2), the two servers and an observer run in network
//! namespaces joined by a bridge, with a virtual IP the observer can ping, so
//! the VIP visibly moves. Otherwise (or with `--loopback`) the primary runs on
//! 127.0.0.2 and the secondary on 127.0.0.3, no root needed. Either way: fast
//! timers, automatic failover, registered at once, stopped by Ctrl-C.

use crate::control::{self, Reply, Request};
use crate::ha::{FailoverType, Secret};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "Demo-Key-2026";
const NAMES: [&str; 2] = ["ha-a", "ha-b"];
const ROLES: [&str; 2] = ["primary", "secondary"];
/// Namespaces of the root demo: primary, secondary, observer, bridge.
const NETNS: [&str; 4] = [
    "hamon-demo-a",
    "hamon-demo-b",
    "hamon-demo-obs",
    "hamon-demo-br",
];
const NETNS_ADDR: [&str; 3] = ["192.0.2.11", "192.0.2.12", "192.0.2.100"];
const VIPS: [&str; 2] = ["192.0.2.10/24", "2001:db8::10/64"];

/// A config for one demo server.
pub fn demo_config(dir: &Path, i: usize, address: &str, interface: Option<&str>) -> String {
    let name = NAMES[i];
    let iface = interface
        .map(|n| format!("interface = \"{n}\"\n"))
        .unwrap_or_default();
    format!(
        "[node]\nname = \"{name}\"\nrole = \"{role}\"\naddress = \"{address}\"\n{iface}\
         state_dir = \"{state}\"\nrun_dir = \"{run}\"\n\
         [heartbeat]\nport = 18083\ninterval_ms = 200\nmissed = 3\ngrace_ms = 400\n\
         probe_timeout_ms = 300\n\
         [health_monitor]\nport = 18082\ntls = false\n\
         [replication]\nhint_delay_ms = 100\n\
         [[sync]]\nname = \"demo\"\npath = \"{data}\"\nclass = \"frequent\"\n",
        role = ROLES[i],
        state = dir.join(name).join("state").display(),
        run = dir.join(name).join("run").display(),
        data = dir.join(name).join("data").display(),
    )
}

fn wait_for_socket(path: &Path) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if control::call(path, &Request::Status, Some(Duration::from_secs(2))).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn sh(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Build the namespaces: each server and the observer on one bridge.
fn build_netns() -> Result<(), String> {
    remove_netns();
    for n in NETNS {
        sh(&["ip", "netns", "add", n])?;
        sh(&["ip", "-n", n, "link", "set", "lo", "up"])?;
    }
    let br = NETNS[3];
    sh(&["ip", "-n", br, "link", "add", "br0", "type", "bridge"])?;
    sh(&["ip", "-n", br, "link", "set", "br0", "up"])?;
    for (i, ns) in NETNS[..3].iter().enumerate() {
        let port = format!("v{i}");
        sh(&[
            "ip", "-n", br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            ns,
        ])?;
        sh(&["ip", "-n", br, "link", "set", &port, "master", "br0", "up"])?;
        sh(&[
            "ip",
            "netns",
            "exec",
            ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.eth0.accept_dad=0",
        ])?;
        sh(&["ip", "-n", ns, "link", "set", "eth0", "up"])?;
        sh(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/24", NETNS_ADDR[i]),
            "dev",
            "eth0",
        ])?;
        let v6 = format!("2001:db8::{}/64", [11, 12, 100][i]);
        sh(&["ip", "-n", ns, "addr", "add", &v6, "dev", "eth0", "nodad"])?;
    }
    sh(&[
        "ip",
        "netns",
        "exec",
        NETNS[2],
        "sysctl",
        "-qw",
        "net.ipv4.conf.eth0.arp_accept=1",
    ])?;
    Ok(())
}

fn remove_netns() {
    for n in NETNS {
        let _ = sh(&["ip", "netns", "del", n]);
    }
}

fn can_use_netns() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn main(args: &[&str]) -> i32 {
    let netns = match args {
        [] => can_use_netns(),
        ["--loopback"] => false,
        _ => return super::fail("usage: hamon demo [--loopback]"),
    };
    let result = run(netns);
    if netns {
        remove_netns();
    }
    match result {
        Ok(()) => 0,
        Err(e) => super::fail(&e),
    }
}

fn run(netns: bool) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("hamon-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| e.to_string())?;
    }
    if netns {
        build_netns()?;
    }
    let addr = |i: usize| {
        if netns {
            NETNS_ADDR[i]
        } else {
            ["127.0.0.2", "127.0.0.3"][i]
        }
    };
    let mut configs: Vec<PathBuf> = Vec::new();
    let mut children: Vec<Child> = Vec::new();
    let result = (|| {
        for i in 0..2 {
            let path = dir.join(format!("{}.toml", NAMES[i]));
            let iface = netns.then_some("eth0");
            std::fs::write(&path, demo_config(&dir, i, addr(i), iface))
                .map_err(|e| e.to_string())?;
            std::fs::create_dir_all(dir.join(NAMES[i]).join("data")).map_err(|e| e.to_string())?;
            let log = std::fs::File::create(dir.join(format!("{}.log", NAMES[i])))
                .map_err(|e| e.to_string())?;
            let mut cmd = if netns {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", NETNS[i]]).arg(&exe);
                c
            } else {
                Command::new(&exe)
            };
            let child = cmd
                .args(["agent", "--config"])
                .arg(&path)
                .stdin(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("starting {}: {e}", NAMES[i]))?;
            children.push(child);
            configs.push(path);
        }
        let sock = |i: usize| dir.join(NAMES[i]).join("run").join("hamon.sock");
        for (i, name) in NAMES.iter().enumerate() {
            if !wait_for_socket(&sock(i)) {
                return Err(format!("{name} did not start; see {}", dir.display()));
            }
        }
        let set_key = Request::AuthKey {
            key: Secret::new(KEY),
        };
        control::call(&sock(1), &set_key, None).map_err(|e| e.to_string())?;
        let register = Request::Register {
            secondary_address: addr(1).into(),
            secondary_hm_port: 18082,
            failover_type: FailoverType::Automatic,
            vips: if netns {
                VIPS.iter().map(|v| v.to_string()).collect()
            } else {
                vec![]
            },
            emails: vec![],
            key: Secret::new(KEY),
        };
        match control::call(&sock(0), &register, None).map_err(|e| e.to_string())? {
            Reply::Done { message } => println!("{message}"),
            Reply::Refused { message } => return Err(format!("registration: {message}")),
            other => return Err(format!("registration: {other:?}")),
        }
        let (exe, p, s) = (exe.display(), configs[0].display(), configs[1].display());
        println!("\nA demo pair is running (automatic failover, 200 ms heartbeats).");
        println!("Logs and state: {}\n\nTry:", dir.display());
        println!("  {exe} --config {p} ha status");
        println!("  {exe} --config {s} ha status");
        if netns {
            let obs = NETNS[2];
            println!("  ip netns exec {obs} ping -c 3 192.0.2.10      # the VIP, on the primary");
            println!("  ip -n {obs} neigh show 192.0.2.10              # which MAC answers");
            println!(
                "  ip -n {} addr show dev eth0                # the primary holds the VIP",
                NETNS[0]
            );
        }
        println!(
            "  kill -9 {}    # kill the primary; the secondary takes over in ~1.5 s",
            children[0].id()
        );
        if netns {
            println!(
                "  ip -n {} neigh show 192.0.2.10              # now the secondary's MAC",
                NETNS[2]
            );
            println!(
                "  ip netns exec {} {exe} --config {p} agent &   # bring the primary back",
                NETNS[0]
            );
        } else {
            println!("  {exe} --config {p} agent &   # bring the primary back (Primary Syncing)");
        }
        println!("  {exe} --config {s} ha failback");
        println!("  {exe} --config {s} ha events");
        println!(
            "  echo hello > {}/hello.txt; cat {}/hello.txt   # file sync, within a second",
            dir.join(NAMES[0]).join("data").display(),
            dir.join(NAMES[1]).join("data").display()
        );
        println!("  {exe} --config {s} status       # sync progress, lag");
        println!("\nCtrl-C stops both servers.");
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    })();
    for mut c in children {
        // SAFETY: kill(2) on a PID this process spawned and has not reaped.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        let _ = c.wait();
    }
    println!("demo stopped; files left in {}", dir.display());
    result
}
