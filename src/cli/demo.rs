//! `hamon demo`: a complete pair on this machine, no root needed.
//!
//! Primary on 127.0.0.2, secondary on 127.0.0.3, each with its own state and
//! run directories under a temporary directory, fast timers and automatic
//! failover. Runs until Ctrl-C, then stops both agents.

use crate::control::{self, Reply, Request};
use crate::ha::{FailoverType, Secret};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEY: &str = "Demo-Key-2026";

/// A config for one demo server.
pub fn demo_config(dir: &Path, name: &str, role: &str, address: &str) -> String {
    format!(
        "[node]\nname = \"{name}\"\nrole = \"{role}\"\naddress = \"{address}\"\n\
         state_dir = \"{state}\"\nrun_dir = \"{run}\"\n\
         [heartbeat]\nport = 18083\ninterval_ms = 200\nmissed = 3\ngrace_ms = 400\n\
         probe_timeout_ms = 300\n\
         [health_monitor]\nport = 18082\ntls = false\n",
        state = dir.join(name).join("state").display(),
        run = dir.join(name).join("run").display(),
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

pub fn main() -> i32 {
    match run() {
        Ok(()) => 0,
        Err(e) => super::fail(&e),
    }
}

fn run() -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("hamon-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let servers = [
        ("ha-a", "primary", "127.0.0.2"),
        ("ha-b", "secondary", "127.0.0.3"),
    ];
    let mut configs: Vec<PathBuf> = Vec::new();
    let mut children: Vec<Child> = Vec::new();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| e.to_string())?;
    }
    let result = (|| {
        for (name, role, addr) in servers {
            let path = dir.join(format!("{name}.toml"));
            std::fs::write(&path, demo_config(&dir, name, role, addr))
                .map_err(|e| e.to_string())?;
            let log = std::fs::File::create(dir.join(format!("{name}.log")))
                .map_err(|e| e.to_string())?;
            let child = Command::new(&exe)
                .args(["agent", "--config"])
                .arg(&path)
                .stderr(log)
                .spawn()
                .map_err(|e| format!("starting {name}: {e}"))?;
            children.push(child);
            configs.push(path);
        }
        let sock = |i: usize| dir.join(servers[i].0).join("run").join("hamon.sock");
        for (i, (name, _, _)) in servers.iter().enumerate() {
            if !wait_for_socket(&sock(i)) {
                return Err(format!("{name} did not start; see {}", dir.display()));
            }
        }
        let set_key = Request::AuthKey {
            key: Secret::new(KEY),
        };
        control::call(&sock(1), &set_key, None).map_err(|e| e.to_string())?;
        let register = Request::Register {
            secondary_address: "127.0.0.3".into(),
            secondary_hm_port: 18082,
            failover_type: FailoverType::Automatic,
            vips: vec![],
            emails: vec![],
            key: Secret::new(KEY),
        };
        match control::call(&sock(0), &register, None).map_err(|e| e.to_string())? {
            Reply::Done { message } => println!("{message}"),
            other => return Err(format!("registration: {other:?}")),
        }
        let cfg = |i: usize| configs[i].display().to_string();
        println!(
            "\nA demo pair is running (automatic failover, 200 ms heartbeats).\n\
             Health Monitor:  http://127.0.0.2:18082/healthz   http://127.0.0.3:18082/healthz\n\
             Logs and state:  {dir}\n\n\
             Try:\n  \
             {exe} --config {p} ha status\n  \
             {exe} --config {s} ha status\n  \
             kill -9 {pid}            # kill the primary; the secondary takes over in ~1.5 s\n  \
             {exe} --config {p} agent &   # bring the primary back (Primary Syncing)\n  \
             {exe} --config {s} ha failback\n  \
             {exe} --config {s} ha events\n\n\
             Ctrl-C stops both servers.",
            dir = dir.display(),
            exe = exe.display(),
            p = cfg(0),
            s = cfg(1),
            pid = children[0].id(),
        );
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
