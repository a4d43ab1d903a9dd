//! Real notification receivers for the tests: net-snmp's snmptrapd (with the
//! SMIv2 base MIBs from the `net-snmp` npm package) and Debian's aiosmtpd.
//! Each is started by the test that needs it and killed (by PID) on drop.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The npm package whose tarball carries the SMIv2 base MIBs (pinned: npm versions are
/// immutable).
pub const NPM_MIBS: &str = "net-snmp@3.29.2";
pub const MIB_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/mib");

/// Whether `cmd` runs; under CI a missing tool fails the test instead.
pub fn have(cmd: &str, arg: &str) -> bool {
    let ok = Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "{cmd} is missing in CI");
        eprintln!("skipped: {cmd} not installed");
    }
    ok
}

/// The directory of the npm package's base MIBs, fetched once and cached under target/tmp.
pub fn base_mibs() -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _once = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("net-snmp-npm");
    let mibs = cache.join("package/lib/mibs");
    if mibs.join("SNMPv2-SMI.mib").exists() {
        return mibs;
    }
    // Unpack beside the cache and rename into place, so a concurrent test process never
    // sees half a tree.
    let work = cache.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let out = Command::new("npm")
        .args(["pack", NPM_MIBS, "--silent", "--pack-destination"])
        .arg(&work)
        .output()
        .unwrap();
    assert!(out.status.success(), "npm pack: {out:?}");
    let tgz = std::fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "tgz"))
        .expect("npm pack wrote a tarball");
    let status = Command::new("tar")
        .arg("xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(&work)
        .status()
        .unwrap();
    assert!(status.success());
    if std::fs::rename(&work, &cache).is_err() {
        // Another process got there first.
        let _ = std::fs::remove_dir_all(&work);
    }
    assert!(
        mibs.join("SNMPv2-SMI.mib").exists(),
        "no MIBs in {NPM_MIBS}"
    );
    mibs
}

/// snmptrapd in the foreground, its log collected; killed (by PID, via `Child`) on drop.
pub struct Trapd {
    child: Child,
    pub log: Arc<Mutex<String>>,
}

impl Drop for Trapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Trapd {
    pub fn start(dir: &Path, conf: &str, port: u16, mibs: &Path) -> Trapd {
        Trapd::start_on(dir, conf, &format!("udp:127.0.0.1:{port}"), None, mibs)
    }

    /// Listening on `listen` (`udp:ADDR:PORT`), inside network namespace
    /// `netns` when given (`ip netns exec` execs it: the PID is its own).
    pub fn start_on(
        dir: &Path,
        conf: &str,
        listen: &str,
        netns: Option<&str>,
        mibs: &Path,
    ) -> Trapd {
        let conf_path = dir.join("snmptrapd.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "snmptrapd"]);
                c
            }
            None => Command::new("snmptrapd"),
        };
        let mut child = cmd
            .args(["-f", "-Lo", "-C", "-c"])
            .arg(&conf_path)
            .arg("-M")
            .arg(format!("{}:{MIB_DIR}", mibs.display()))
            .args(["-m", "SNMPv2-MIB:HAMON-MIB"])
            .arg(listen)
            // Its persistent store (engine boots, users) stays in the test's directory.
            .env("SNMP_PERSISTENT_DIR", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let trapd = Trapd { child, log };
        trapd.wait_for(|log| log.contains("NET-SNMP version"), "snmptrapd to start");
        trapd
    }

    pub fn wait_for(&self, done: impl Fn(&str) -> bool, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let log = self.log.lock().unwrap().clone();
            if done(&log) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A python3 that has aiosmtpd, or None (the test is skipped; fails on CI).
pub fn python() -> Option<&'static str> {
    let found = ["/usr/bin/python3", "python3"].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install python3-aiosmtpd"
        );
        eprintln!("skipped: python3-aiosmtpd not installed");
    }
    found
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ServerTls {
    None,
    StartTls,
    Implicit,
}

/// aiosmtpd, killed on drop.
pub struct Server {
    child: Child,
}

impl Server {
    pub fn start(py: &str, dir: &Path, port: u16, tls: ServerTls) -> Server {
        let mut cmd = Command::new(py);
        cmd.env(
            "PYTHONPATH",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support"),
        )
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-c", "hamon_spool.Spool"]);
        if tls != ServerTls::None {
            write_cert(dir);
            let flags = if tls == ServerTls::StartTls {
                ["--tlscert", "--tlskey"]
            } else {
                ["--smtpscert", "--smtpskey"]
            };
            cmd.arg(flags[0])
                .arg(dir.join("cert.pem"))
                .arg(flags[1])
                .arg(dir.join("key.pem"));
        }
        // Its log (e.g. the aborted handshakes of the untrusted-certificate
        // test) goes to a file, shown if it does not start.
        let log = dir.join("server.log");
        let child = cmd
            .arg(dir.join("spool"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let server = Server { child };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn write_cert(dir: &Path) {
    if dir.join("cert.pem").exists() {
        return;
    }
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), ck.key_pair.serialize_pem()).unwrap();
}

/// A received mail: decoded headers (lower-case names) and body.
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

pub fn spooled(dir: &Path) -> Vec<Received> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir.join("spool"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let (head, body) = text.split_once("\n\n").unwrap();
            let headers = head
                .lines()
                .filter_map(|l| l.split_once(": "))
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
            Received {
                headers,
                body: body.to_string(),
            }
        })
        .collect()
}
