//! Booted appliances for end-to-end tests: the tree `image/build` makes,
//! booted with systemd as PID 1 under systemd-nspawn, one container per
//! server, each in a network namespace of the `netns` test bed (a bridge and
//! an observer, documentation addresses only).
//!
//! Each appliance's root is an overlay on the built tree (the tree is never
//! written), so a "disk" survives a power cut and a reboot just as a real
//! one would. Everything is driven from outside as an operator would reach a
//! server: commands run inside with `nsenter` into the container's
//! namespaces. Only processes this bed started are signalled, by PID; drop
//! kills the containers, unmounts the overlays and removes the namespaces,
//! and keeps going past errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Whether this machine can boot appliances; in CI it must.
pub fn available() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tools = ["systemd-nspawn", "debootstrap", "nsenter", "ip"]
        .iter()
        .all(|t| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
    let ok = root && tools;
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must boot the appliances (root: {root}, nspawn/debootstrap/nsenter: {tools}); \
             run `bash image/deps`"
        );
        eprintln!("skipped: booting appliances needs root, systemd-nspawn and debootstrap");
    }
    ok
}

/// The binary the image is built with: the one under test, unless
/// `HAMON_APPLIANCE_BINARY` names another (a release build, say).
pub fn binary() -> PathBuf {
    std::env::var_os("HAMON_APPLIANCE_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hamon")))
}

/// Where `image/build` writes: `HAMON_IMAGE_OUT`, else `target/image`.
pub fn out_dir() -> PathBuf {
    std::env::var_os("HAMON_IMAGE_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_TARGET_TMPDIR"))
                .parent()
                .unwrap()
                .join("image")
        })
}

/// Build (or reuse) the appliance tree with `binary()`; its path.
pub fn tree() -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (binary, out) = (binary(), out_dir());
    let t = Instant::now();
    let run = Command::new("bash")
        .arg(repo.join("image/build"))
        .arg("--binary")
        .arg(&binary)
        .arg("--out")
        .arg(&out)
        .arg("--no-raw")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "image/build failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    eprintln!("appliance tree ready in {:.1} s", t.elapsed().as_secs_f64());
    out.join("tree")
}

fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{cmd:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// One appliance: its overlay root and, while it runs, its nspawn.
pub struct Appliance {
    pub name: String,
    /// The network namespace it boots in (from the netns bed).
    pub netns: String,
    dir: PathBuf,
    pub root: PathBuf,
    nspawn: Option<Child>,
    init: Option<u32>,
    boots: u32,
}

impl Appliance {
    /// An overlay of `tree` under `dir`, not booted yet.
    pub fn new(name: &str, netns: &str, tree: &Path, dir: &Path) -> Appliance {
        let dir = dir.join(name);
        let _ = Command::new("umount").arg(dir.join("root")).output();
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["upper", "work", "root"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        run(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                tree.display(),
                dir.join("upper").display(),
                dir.join("work").display()
            ))
            .arg(dir.join("root")))
        .unwrap();
        Appliance {
            name: name.to_string(),
            netns: netns.to_string(),
            root: dir.join("root"),
            dir,
            nspawn: None,
            init: None,
            boots: 0,
        }
    }

    /// Write a file into the (stopped or running) appliance's disk.
    pub fn write(&self, path: &str, text: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let p = self.root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Run a shell script (`sh -e`, traced) in the appliance's tree without
    /// booting it, as an image customisation step would: no network.
    /// Whether it succeeded, and its output.
    pub fn unbooted(&self, script: &str) -> (bool, String) {
        let out = Command::new("systemd-nspawn")
            .arg("-D")
            .arg(&self.root)
            .args([
                "--pipe",
                "--quiet",
                "--register=no",
                "--keep-unit",
                "--private-network",
                "/bin/sh",
                "-exc",
                script,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    /// `unbooted`, which must succeed.
    pub fn prepare(&self, script: &str) {
        let (ok, text) = self.unbooted(script);
        assert!(ok, "preparing {}:\n{text}", self.name);
    }

    /// Boot it: systemd as PID 1, in its network namespace, console to a log.
    pub fn boot(&mut self) {
        assert!(self.nspawn.is_none(), "{} is running", self.name);
        self.boots += 1;
        let log =
            std::fs::File::create(self.dir.join(format!("console-{}.log", self.boots))).unwrap();
        let child = Command::new("systemd-nspawn")
            .arg("-D")
            .arg(&self.root)
            .args([
                "--boot",
                "--register=no",
                "--keep-unit",
                "--console=passive",
            ])
            .arg(format!(
                "--network-namespace-path=/run/netns/{}",
                self.netns
            ))
            .args(["--capability=CAP_NET_ADMIN", "-M", &self.name])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let pid = child.id();
        self.nspawn = Some(child);
        // The container's init is the nspawn process's child that is PID 1
        // of a PID namespace of its own. (nspawn first forks a helper that
        // sets the container up and exits: taking the first child seen
        // would sometimes take that one.)
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let kids = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            let init = kids.split_whitespace().find(|k| {
                std::fs::read_to_string(format!("/proc/{k}/status")).is_ok_and(|st| {
                    st.lines()
                        .find_map(|l| l.strip_prefix("NSpid:"))
                        .is_some_and(|ids| {
                            let ids: Vec<&str> = ids.split_whitespace().collect();
                            ids.len() > 1 && ids.last() == Some(&"1")
                        })
                })
            });
            if let Some(init) = init.and_then(|k| k.parse().ok()) {
                self.init = Some(init);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no init under nspawn: {}",
                self.name,
                self.console()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until systemd says the boot is over (running or degraded).
    pub fn wait_booted(&self) -> Duration {
        let t = Instant::now();
        let deadline = t + Duration::from_secs(90);
        loop {
            let state = self.sh("systemctl is-system-running");
            let s = String::from_utf8_lossy(&state.stdout).trim().to_string();
            if s == "running" || s == "degraded" {
                return t.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "{} did not boot ({s}):\n{}",
                self.name,
                self.console()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("console-{}.log", self.boots)))
            .unwrap_or_default()
    }

    /// Run a shell command inside the running appliance, as root, with a
    /// clean environment.
    pub fn sh(&self, cmd: &str) -> Output {
        self.sh_in(cmd, "")
    }

    /// Like `sh`, with `input` on stdin (never a secret on a command line).
    pub fn sh_in(&self, cmd: &str, input: &str) -> Output {
        use std::io::Write;
        let init = self.init.expect("appliance not running");
        let mut child = Command::new("nsenter")
            .args(["-t", &init.to_string(), "-a", "--", "env", "-i"])
            .args([
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C",
                "SYSTEMD_PAGER=",
                "/bin/sh",
                "-c",
                cmd,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(input.as_bytes());
        }
        child.wait_with_output().unwrap()
    }

    /// `sh`, which must succeed; its stdout.
    pub fn ok(&self, cmd: &str) -> String {
        let out = self.sh(cmd);
        assert!(
            out.status.success(),
            "{}: `{cmd}` failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `sh`'s stdout, whatever the exit status.
    pub fn out(&self, cmd: &str) -> String {
        String::from_utf8_lossy(&self.sh(cmd).stdout).into_owned()
    }

    /// `hamon ha status`'s state, e.g. "Primary Active".
    pub fn state(&self) -> String {
        // The guide's status line is the first; a `[Release]` line follows it.
        let text = self.out("hamon ha status");
        let line = text.lines().next().unwrap_or_default();
        line.split("[State] ")
            .nth(1)
            .and_then(|r| r.split(" [").next())
            .unwrap_or("")
            .trim()
            .to_string()
    }

    pub fn wait_state(&self, want: &str, within: Duration) -> Duration {
        let t = Instant::now();
        while t.elapsed() < within {
            if self.state() == want {
                return t.elapsed();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "{}: not {want} within {within:?}; status: {}\njournal:\n{}",
            self.name,
            self.out("hamon ha status"),
            self.out("journalctl -u hamon -o short-monotonic --no-pager | tail -n 40")
        );
    }

    /// A power cut: the port on the bridge first (nothing more leaves the
    /// server), then SIGKILL to its init (which ends every process in the
    /// container's PID namespace) and to nspawn.
    pub fn power_cut(&mut self, bed: &super::netns::Bed, host: usize) {
        bed.link(host, false);
        if let Some(init) = self.init.take() {
            // SAFETY: kill(2) on the init of the container this bed booted
            // (its nspawn child has not been reaped, so the PID is still it).
            unsafe { libc::kill(init as libc::pid_t, libc::SIGKILL) };
        }
        if let Some(mut c) = self.nspawn.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn running(&self) -> bool {
        self.nspawn.is_some()
    }

    /// After a power cut done by someone else (a BMC's script that killed `pids()`):
    /// reaps nspawn and forgets init, so that nothing signals a PID that may be reused.
    pub fn powered_off(&mut self) {
        self.init = None;
        if let Some(mut c) = self.nspawn.take() {
            let _ = c.wait();
        }
    }

    /// The PIDs a power cut ends: the container's init and its nspawn.
    pub fn pids(&self) -> Vec<u32> {
        self.init
            .into_iter()
            .chain(self.nspawn.as_ref().map(Child::id))
            .collect()
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if let Some(init) = self.init.take() {
            // SAFETY: as in power_cut: the init of a container this bed booted.
            unsafe { libc::kill(init as libc::pid_t, libc::SIGKILL) };
        }
        if let Some(mut c) = self.nspawn.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let mut errors = Vec::new();
        // The container's mounts die with it; the overlay is ours to undo.
        for _ in 0..50 {
            match run(Command::new("umount").arg(&self.root)) {
                Ok(_) => break,
                Err(e) if e.contains("not mounted") => break,
                Err(e) if e.contains("busy") => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => {
                    errors.push(e);
                    break;
                }
            }
        }
        if !std::thread::panicking() && std::env::var_os("HAMON_APPLIANCE_KEEP").is_none() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                errors.push(format!("{}: {e}", self.dir.display()));
            }
        }
        if !errors.is_empty() {
            eprintln!("appliance {} teardown: {}", self.name, errors.join("; "));
        }
    }
}

/// Client-side view of the VIP: the observer pings it every 10 ms while
/// `during` runs, and the longest time without a reply is the outage.
pub fn outage_while(
    bed: &super::netns::Bed,
    vip: &str,
    window: Duration,
    during: impl FnOnce(),
) -> Duration {
    let ns = bed.ns[super::netns::O].clone();
    let vip = vip.to_string();
    let secs = window.as_secs().max(1).to_string();
    let pinger = std::thread::spawn(move || {
        Command::new("ip")
            .args([
                "netns", "exec", &ns, "ping", "-n", "-D", "-i", "0.01", "-W", "1",
            ])
            .args(["-w", &secs, &vip])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(500));
    during();
    let out = pinger.join().unwrap();
    longest_gap(&String::from_utf8_lossy(&out.stdout))
        .unwrap_or_else(|| panic!("no replies at all from {window:?} of pings"))
}

/// The longest time between two replies in `ping -D` output.
pub fn longest_gap(text: &str) -> Option<Duration> {
    let times: Vec<f64> = text
        .lines()
        .filter(|l| l.contains(" bytes from "))
        .filter_map(|l| l.strip_prefix('[')?.split(']').next()?.parse().ok())
        .collect();
    if times.is_empty() {
        return None;
    }
    let gap = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .fold(0.0_f64, f64::max);
    Some(Duration::from_secs_f64(gap))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_longest_gap_between_replies() {
        let text = "PING 192.0.2.10 (192.0.2.10) 56(84) bytes of data.\n\
                    [100.000] 64 bytes from 192.0.2.10: icmp_seq=1 ttl=64 time=0.1 ms\n\
                    [100.010] 64 bytes from 192.0.2.10: icmp_seq=2 ttl=64 time=0.1 ms\n\
                    [100.350] 64 bytes from 192.0.2.10: icmp_seq=30 ttl=64 time=0.1 ms\n\
                    [100.360] 64 bytes from 192.0.2.10: icmp_seq=31 ttl=64 time=0.1 ms\n";
        let gap = super::longest_gap(text).unwrap();
        assert!((gap.as_secs_f64() - 0.34).abs() < 1e-6, "{gap:?}");
        assert_eq!(super::longest_gap("no answer\n"), None);
    }
}
