//! A test bed of real `hamon agent` processes on loopback addresses.
//!
//! Each `Pair` gets its own two 127.0.x.y addresses, temp directory and
//! processes; dropping it stops only the processes it started, by PID.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const KEY: &str = "Test-Key-2026";
pub const INTERVAL_MS: u64 = 100;
pub const MISSED: u64 = 3;
pub const GRACE_MS: u64 = 300;
pub const PROBE_MS: u64 = 300;
/// One frequent sync set per server, at `{dir}/{name}/data` ([`Pair::data`]). The timed
/// passes are a minute apart, so anything that arrives sooner came through a hint.
pub const SYNC: &str = "[replication]\nfrequent_interval_ms = 60000\nbatch_interval_ms = 60000\n\
                        hint_delay_ms = 100\n\
                        [[sync]]\nname = \"conf\"\npath = \"{dir}/{name}/data\"\nclass = \"frequent\"\n";

pub fn hamon() -> &'static str {
    env!("CARGO_BIN_EXE_hamon")
}

pub struct Pair {
    pub dir: PathBuf,
    pub addrs: [String; 2],
    pub children: [Option<Child>; 2],
    /// The build each server runs (agent and CLI): this one unless a test upgrades it.
    pub binaries: [PathBuf; 2],
}

impl Pair {
    /// Two configured, unregistered servers (not started). `n` picks the
    /// loopback addresses 127.0.<n>.2 and 127.0.<n>.3 (unique per test).
    pub fn new(n: u8) -> Pair {
        Pair::with_extra(n, "")
    }

    /// Like `new`, with `extra` appended to both configs (`{name}` and
    /// `{dir}` are substituted).
    pub fn with_extra(n: u8, extra: &str) -> Pair {
        let dir = std::env::temp_dir().join(format!("hamon-it-{n}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let addrs = [format!("127.0.{n}.2"), format!("127.0.{n}.3")];
        for (i, role) in ["primary", "secondary"].iter().enumerate() {
            let name = ["ha-a", "ha-b"][i];
            let cfg = format!(
                "[node]\nname = \"{name}\"\nrole = \"{role}\"\naddress = \"{addr}\"\n\
                 state_dir = \"{d}/{name}/state\"\nrun_dir = \"{d}/{name}/run\"\n\
                 [heartbeat]\nport = 18083\ninterval_ms = {INTERVAL_MS}\nmissed = {MISSED}\n\
                 grace_ms = {GRACE_MS}\nprobe_timeout_ms = {PROBE_MS}\n\
                 [health_monitor]\nport = 18082\ntls = false\n[log]\nlevel = \"trace\"\n",
                addr = addrs[i],
                d = dir.display(),
            ) + &extra
                .replace("{name}", name)
                .replace("{dir}", &dir.display().to_string());
            let path = dir.join(format!("{name}.toml"));
            std::fs::write(&path, cfg).expect("config");
            // As installed: the file may hold secrets (`hamon config check`
            // refuses inline ones in a file others can read).
            std::fs::set_permissions(
                &path,
                <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
            )
            .expect("chmod");
        }
        Pair {
            dir,
            addrs,
            children: [None, None],
            binaries: [PathBuf::from(hamon()), PathBuf::from(hamon())],
        }
    }

    /// `https` when the configs turn TLS on.
    pub fn scheme(&self) -> &'static str {
        let cfg = std::fs::read_to_string(self.config(0)).unwrap_or_default();
        if cfg.contains("tls = true") {
            "https"
        } else {
            "http"
        }
    }

    /// Rewrite both configs (before starting the agents).
    pub fn edit_configs(&self, f: impl Fn(String) -> String) {
        for i in 0..2 {
            let text = std::fs::read_to_string(self.config(i)).unwrap();
            std::fs::write(self.config(i), f(text)).unwrap();
        }
    }

    pub fn config(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.toml", ["ha-a", "ha-b"][i]))
    }

    pub fn state_dir(&self, i: usize) -> PathBuf {
        self.dir.join(["ha-a", "ha-b"][i]).join("state")
    }

    pub fn socket(&self, i: usize) -> PathBuf {
        self.dir
            .join(["ha-a", "ha-b"][i])
            .join("run")
            .join("hamon.sock")
    }

    pub fn start(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("agent-{i}.log")))
            .expect("log");
        let child = Command::new(&self.binaries[i])
            .args(["agent", "--config"])
            .arg(self.config(i))
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn hamon agent");
        self.children[i] = Some(child);
        let sock = self.socket(i);
        wait(Duration::from_secs(10), || {
            hamon::control::call(
                &sock,
                &hamon::control::Request::Status,
                Some(Duration::from_secs(1)),
            )
            .is_ok()
        })
        .unwrap_or_else(|| panic!("agent {i} did not come up; log:\n{}", self.log(i)));
    }

    /// kill -9.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            // SAFETY: signalling a child this test spawned and has not reaped.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGKILL) };
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for the exit.
    pub fn stop(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        let mut c = self.children[i].take()?;
        // SAFETY: signalling a child this test spawned and has not reaped.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
        c.wait().ok()
    }

    pub fn run(&self, i: usize, args: &[&str]) -> Output {
        Command::new(&self.binaries[i])
            .arg("--config")
            .arg(self.config(i))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run hamon")
    }

    pub fn run_with_stdin(&self, i: usize, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(&self.binaries[i])
            .arg("--config")
            .arg(self.config(i))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run hamon");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("wait hamon")
    }

    /// `hamon ha status` on server `i`.
    pub fn ha_status(&self, i: usize) -> String {
        String::from_utf8_lossy(&self.run(i, &["ha", "status"]).stdout)
            .trim()
            .to_string()
    }

    /// The guide's status line alone (`ha status` prints a `[Release]` line after it).
    pub fn status_line(&self, i: usize) -> String {
        self.ha_status(i)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }

    pub fn wait_state(&self, i: usize, state: &str, within: Duration) -> Duration {
        let t = Instant::now();
        wait(within, || {
            self.ha_status(i).contains(&format!("[State] {state}"))
        })
        .unwrap_or_else(|| {
            panic!(
                "server {i} not in {state} within {within:?}: {:?}\nlog:\n{}",
                self.ha_status(i),
                self.log(i)
            )
        });
        t.elapsed()
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.join(format!("agent-{i}.log"))).unwrap_or_default()
    }

    /// Server `i`'s heartbeat counters, from its control socket.
    pub fn heartbeat_counts(&self, i: usize) -> hamon::control::HeartbeatCounts {
        match hamon::control::call(
            &self.socket(i),
            &hamon::control::Request::Status,
            Some(Duration::from_secs(2)),
        ) {
            Ok(hamon::control::Reply::Status { heartbeats, .. }) => *heartbeats,
            other => panic!("status: {other:?}"),
        }
    }

    /// Requires the pair to be as registration leaves it: Primary Active, Secondary Syncing.
    pub fn assert_undisturbed(&self) {
        for (i, state) in [(0, "Primary Active"), (1, "Secondary Syncing")] {
            let status = self.ha_status(i);
            assert!(status.contains(&format!("[State] {state}")), "{status}");
        }
    }

    /// Server `i`'s event journal as stored (one JSON object a line).
    pub fn journal(&self, i: usize) -> String {
        std::fs::read_to_string(self.state_dir(i).join("events.jsonl")).unwrap_or_default()
    }

    /// True if server `i` journaled an event of `kind`.
    pub fn journaled(&self, i: usize, kind: &str) -> bool {
        self.journal(i).contains(&format!("\"kind\":\"{kind}\""))
    }

    /// Requires that neither server journaled any of `kinds`.
    pub fn assert_never_journaled(&self, kinds: &[&str]) {
        for i in 0..2 {
            for kind in kinds {
                assert!(
                    !self.journaled(i, kind),
                    "server {i} journaled {kind}:\n{}",
                    self.journal(i)
                );
            }
        }
    }

    /// Server `i`'s replicated data directory (`{dir}/{name}/data` in the sync tests).
    pub fn data(&self, i: usize) -> PathBuf {
        self.dir.join(["ha-a", "ha-b"][i]).join("data")
    }

    /// Set the secondary's key, start both, register.
    pub fn registered(n: u8, failover_type: &str) -> Pair {
        Pair::registered_with(Pair::new(n), failover_type)
    }

    pub fn registered_with(mut p: Pair, failover_type: &str) -> Pair {
        let out = p.run_with_stdin(1, &["ha", "authkey"], &format!("{KEY}\n"));
        assert!(out.status.success(), "{out:?}");
        p.start(0);
        p.start(1);
        let out = p.run_with_stdin(
            0,
            &[
                "ha",
                "register",
                "--secondary",
                &p.addrs[1].clone(),
                "--failover-type",
                failover_type,
            ],
            &format!("{KEY}\n"),
        );
        assert!(out.status.success(), "register: {out:?}\n{}", p.log(0));
        p.wait_state(0, "Primary Active", Duration::from_secs(5));
        p.wait_state(1, "Secondary Syncing", Duration::from_secs(5));
        p
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for i in 0..2 {
            self.kill9(i);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn wait(within: Duration, mut f: impl FnMut() -> bool) -> Option<()> {
    let t = Instant::now();
    while t.elapsed() < within {
        if f() {
            return Some(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f().then_some(())
}

/// The working keys server `i` holds: its pair secret's (a registered pair agreed on one
/// when it registered).
pub fn pair_keys(p: &Pair, i: usize) -> hamon::peer::auth::Keys {
    let text = std::fs::read_to_string(p.state_dir(i).join("secret")).expect("pair secret");
    hamon::peer::pair::PairSecret::from_text(&text)
        .expect("pair secret")
        .keys()
}

pub fn path_exists(p: &Path) -> bool {
    p.exists()
}

/// Runs `cmd` through `sh -c` with `stdin`, and requires it to succeed.
pub fn sh(cmd: &str, stdin: &str) {
    use std::io::Write;
    let mut child = Command::new("sh")
        .args(["-c", cmd])
        .stdin(Stdio::piped())
        .spawn()
        .expect("sh");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    assert!(child.wait().expect("wait sh").success(), "{cmd} failed");
}

/// Root and nft, which the tests in private network namespaces need: outside CI a
/// missing one skips `test`, under CI it fails.
pub fn netns_and_nft(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let nft = Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !(root && nft) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run {test} (root and nft)"
        );
        eprintln!("skipped {test}: needs root and nft");
    }
    root && nft
}

/// Moves the calling test's thread, and what it starts, into a new network namespace
/// with its loopback up.
pub fn private_netns() {
    // SAFETY: unshare(2) with CLONE_NEWNET affects only the calling thread.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0, "unshare");
    sh("ip link set lo up", "");
}

/// Bytes that cut into many delta blocks, from a seed (a xorshift stream).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
