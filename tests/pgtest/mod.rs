//! Throw-away PostgreSQL clusters for tests.
//!
//! A [`Cluster`] owns a fresh directory under the system temp dir
//! (`hamon-pgtest-<pid>-<n>-<name>`) holding its data directory, socket
//! directory, log and a libpq password file; it listens on a loopback
//! address and a free port of its own (from 25432 up). Everything runs as
//! the `postgres` OS user when the tests run as root (initdb and pg_ctl
//! refuse root), as the current user otherwise. Dropping a cluster stops
//! its server (by the PID in postmaster.pid, checked against the command
//! line so that no other server is ever signalled) and removes the
//! directory.
//!
//! Use: [`require`] for the binaries, [`Cluster::new`], [`Cluster::init`]
//! (initdb with data checksums, replication settings and pg_hba for the
//! replication user), [`Cluster::start`], [`Cluster::create_replication_user`]
//! on the first primary, then [`Cluster::config`] for the driver. A cluster
//! meant to become a standby needs only `new`: the driver fills its data
//! directory.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hamon::db::postgres::PgConfig;
use hamon::db::{Account, PeerDb};

/// The replication role the clusters create and the drivers use.
pub const REPL_USER: &str = "repl";

/// Where PostgreSQL's binaries are: $HAMON_PG_BIN, else PostgreSQL 15's
/// Debian location, if `postgres` and `initdb` are there.
pub fn bin_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("HAMON_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    let ok = [
        "postgres",
        "initdb",
        "pg_ctl",
        "psql",
        "pg_basebackup",
        "pg_rewind",
    ]
    .iter()
    .all(|b| dir.join(b).is_file());
    ok.then_some(dir)
}

/// The binaries, or `None` after printing why the test is skipped. Under
/// CI (env CI set) missing binaries fail the test instead.
pub fn require() -> Option<PathBuf> {
    if let Some(dir) = bin_dir() {
        return Some(dir);
    }
    let msg = "PostgreSQL 15 server binaries not found in /usr/lib/postgresql/15/bin \
               (apt-get install -y postgresql-15, or set HAMON_PG_BIN)";
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);
static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// A port from 25432 up that nothing listens on, at `addr` or 127.0.0.1.
pub fn free_port(addr: &str) -> u16 {
    // Spread concurrent test processes apart.
    let _ = NEXT_PORT.compare_exchange(
        0,
        25432 + (std::process::id() % 400) as u16 * 10,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = NEXT_PORT.fetch_add(1, Ordering::SeqCst);
        assert!(port < 65000, "ran out of ports");
        if TcpListener::bind((addr, port)).is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
}

/// One test cluster. See the module documentation.
#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    pub root: PathBuf,
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    pub log_file: PathBuf,
    pub passfile: PathBuf,
    pub listen: String,
    pub port: u16,
    /// The replication user's password (only ever in the passfile and in
    /// SQL sent on psql's stdin).
    pub password: String,
    pub bin: PathBuf,
    account: Option<Account>,
}

impl Cluster {
    /// Directories and password file, no data directory contents yet.
    pub fn new(bin: &Path, name: &str, listen: &str) -> Cluster {
        become_subreaper();
        let n = NEXT_DIR.fetch_add(1, Ordering::SeqCst);
        let root =
            std::env::temp_dir().join(format!("hamon-pgtest-{}-{n}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        let account = Account::for_tools("postgres").unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let c = Cluster {
            name: name.to_string(),
            data_dir: root.join("data"),
            socket_dir: root.join("sock"),
            log_file: root.join("server.log"),
            passfile: root.join("pgpass"),
            listen: listen.to_string(),
            port: free_port(listen),
            password: format!("Pw{}x{nanos}", std::process::id()),
            bin: bin.to_path_buf(),
            root,
            account,
        };
        for (dir, mode) in [(&c.data_dir, 0o700), (&c.socket_dir, 0o755)] {
            fs::create_dir_all(dir).unwrap();
            fs::set_permissions(dir, fs::Permissions::from_mode(mode)).unwrap();
            c.give(dir);
        }
        fs::write(&c.log_file, "").unwrap();
        c.give(&c.log_file);
        // Any host, port and database, for the replication user only.
        fs::write(&c.passfile, format!("*:*:*:{REPL_USER}:{}\n", c.password)).unwrap();
        fs::set_permissions(&c.passfile, fs::Permissions::from_mode(0o600)).unwrap();
        c.give(&c.passfile);
        c
    }

    fn give(&self, path: &Path) {
        if let Some(a) = &self.account {
            chown(path, Some(a.uid), Some(a.gid)).unwrap();
        }
    }

    /// A command for one of the PostgreSQL programs, as the cluster's user.
    pub fn tool(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(name));
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LC_ALL", "C")
            .current_dir("/")
            .stdin(Stdio::null());
        if let Some(a) = &self.account {
            cmd.uid(a.uid).gid(a.gid).env("HOME", &a.home);
        }
        cmd
    }

    fn run(&self, mut cmd: Command) -> String {
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{:?} failed: {}{}",
            cmd,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// initdb (data checksums, so pg_rewind works), then settings for
    /// streaming replication and pg_hba lines for the replication user
    /// (scram) from the whole loopback range.
    pub fn init(&self) {
        let mut cmd = self.tool("initdb");
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .args(["-k", "-E", "UTF8", "--locale=C", "--no-sync"]);
        self.run(cmd);
        let conf = format!(
            "\n# hamon test settings\n\
             listen_addresses = '{}'\nport = {}\nunix_socket_directories = '{}'\n\
             wal_level = replica\nmax_wal_senders = 10\nmax_replication_slots = 10\n\
             hot_standby = on\nwal_log_hints = on\nwal_keep_size = '64MB'\n\
             shared_buffers = '16MB'\nmax_connections = 30\nfsync = off\n\
             wal_receiver_status_interval = '1s'\nlog_line_prefix = '%m [%p] '\nlog_replication_commands = on\n",
            self.listen,
            self.port,
            self.socket_dir.display()
        );
        append(&self.data_dir.join("postgresql.conf"), &conf);
        let hba = format!(
            "\nhost replication {REPL_USER} 127.0.0.0/8 scram-sha-256\n\
             host postgres {REPL_USER} 127.0.0.0/8 scram-sha-256\n"
        );
        append(&self.data_dir.join("pg_hba.conf"), &hba);
    }

    /// Start the server (pg_ctl, waiting until it accepts connections) with
    /// this cluster's port, address and socket directory whatever the
    /// config file says.
    pub fn start(&self) {
        let mut cmd = self.tool("pg_ctl");
        cmd.arg("start")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-w", "-t", "60", "-l"])
            .arg(&self.log_file)
            .arg("-o")
            .arg(format!(
                "-c port={} -c listen_addresses={} -c unix_socket_directories='{}'",
                self.port,
                self.listen,
                self.socket_dir.display()
            ))
            .stdout(Stdio::null());
        let status = cmd.status().unwrap();
        assert!(
            status.success(),
            "{} did not start: {}",
            self.name,
            self.log_tail()
        );
    }

    /// The last lines of the server log.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(&self.log_file).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// The running postmaster's PID (from postmaster.pid, only if that
    /// process is alive and is a postgres of this data directory).
    pub fn pid(&self) -> Option<i32> {
        let text = fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        let ours = cmdline.contains("postgres")
            && cmdline.contains(&*self.data_dir.to_string_lossy())
            && !matches!(proc_state(pid), None | Some('Z') | Some('X'));
        ours.then_some(pid)
    }

    fn signal(&self, sig: i32) -> Option<i32> {
        let pid = self.pid()?;
        // SAFETY: kill takes no pointers; pid was just checked to be this
        // cluster's live postmaster.
        unsafe { libc::kill(pid, sig) };
        Some(pid)
    }

    fn wait_gone(&self, pid: i32, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if reap(pid) || proc_state(pid).is_none() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Crash the server: SIGKILL to the postmaster, then wait until it is
    /// gone (its children notice and exit on their own).
    pub fn kill9(&self) {
        let pid = self.signal(libc::SIGKILL).expect("server not running");
        assert!(self.wait_gone(pid, Duration::from_secs(10)));
        // Orphaned backends exit once they see the postmaster gone.
        std::thread::sleep(Duration::from_millis(300));
        reap_orphans();
    }

    /// Fast shutdown by signal (SIGINT), waiting up to 30 s; then SIGKILL.
    pub fn stop(&self) {
        if let Some(pid) = self.signal(libc::SIGINT) {
            if !self.wait_gone(pid, Duration::from_secs(30)) {
                self.signal(libc::SIGKILL);
                self.wait_gone(pid, Duration::from_secs(5));
            }
        }
    }

    /// Run SQL as the superuser over the unix socket, with the SQL on
    /// stdin (never on the command line). Output is `-A -t`, trimmed.
    pub fn sql(&self, sql: &str) -> Result<String, String> {
        let mut cmd = self.tool("psql");
        cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.socket_dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(sql.as_bytes()).map_err(|e| e.to_string())?;
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// The replication role with its password, and the grants pg_rewind
    /// needs (see the driver's documentation). On a running primary.
    pub fn create_replication_user(&self) {
        let sql = format!(
            "CREATE ROLE {REPL_USER} WITH LOGIN REPLICATION PASSWORD '{}';\n\
             GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO {REPL_USER};\n\
             GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_file(text, boolean) TO {REPL_USER};\n\
             GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text) TO {REPL_USER};\n\
             GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO {REPL_USER};\n",
            self.password
        );
        self.sql(&sql).unwrap();
    }

    /// Where the peer reaches this cluster.
    pub fn peer(&self) -> PeerDb {
        PeerDb {
            host: self.listen.clone(),
            port: self.port,
        }
    }

    /// The driver configuration for this cluster.
    pub fn config(&self) -> PgConfig {
        let mut cfg = PgConfig::new(&self.data_dir, self.port);
        cfg.bin_dir = self.bin.clone();
        cfg.log_file = self.log_file.clone();
        cfg.listen = self.listen.clone();
        cfg.socket_dir = self.socket_dir.clone();
        cfg.passfile = self.passfile.clone();
        cfg.replication_user = REPL_USER.into();
        cfg.timeout = Duration::from_secs(10);
        cfg.start_timeout = Duration::from_secs(60);
        cfg.copy_timeout = Duration::from_secs(120);
        // The certificate the server serves (the agent gives its Health Monitor's).
        let cert = rcgen::generate_simple_self_signed(vec![self.listen.clone()])
            .expect("a test certificate");
        cfg.tls_identity = Some((cert.cert.pem(), cert.key_pair.serialize_pem()));
        cfg
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Fast shutdown (SIGINT): the postmaster reaps its own children.
        if let Some(pid) = self.signal(libc::SIGINT) {
            if !self.wait_gone(pid, Duration::from_secs(10)) {
                self.signal(libc::SIGKILL);
                self.wait_gone(pid, Duration::from_secs(5));
            }
        }
        reap_orphans();
        if std::env::var_os("HAMON_PGTEST_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

/// Make this test process the reaper of its orphaned descendants. pg_ctl
/// leaves the postmaster orphaned; where PID 1 does not reap (some
/// container inits), a killed postmaster would stay a zombie, and the PID
/// in its stale postmaster.pid would look alive to pg_ctl and to the next
/// postmaster. As our child, [`reap`] can collect it.
pub fn become_subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(rc, 0, "prctl(PR_SET_CHILD_SUBREAPER)");
    });
}

/// Collect `pid` if it is our (adopted) child and has exited: true if it
/// is gone now.
pub fn reap(pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: status is a valid, writable int; WNOHANG never blocks.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    rc == pid
}

/// Collect exited postgres processes that were orphaned to us (the
/// backends of a killed postmaster), so none is left a zombie. Only
/// `postgres` zombies whose parent is this process are touched.
pub fn reap_orphans() {
    let me = std::process::id().to_string();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) S ppid ..."
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (state, ppid) = (fields.next(), fields.next());
        if head.ends_with("(postgres") && state == Some("Z") && ppid == Some(me.as_str()) {
            reap(pid);
        }
    }
}

fn append(path: &Path, text: &str) {
    let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// A process's state letter from /proc/<pid>/stat (R, S, Z, ...).
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

/// Poll `f` every 50 ms until it returns true or `limit` passes.
pub fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Scans every process's command line and environment for `secret` in a
/// background thread until [`ProcWatch::finish`].
#[derive(Debug)]
pub struct ProcWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(Vec<String>, usize)>>,
}

impl ProcWatch {
    /// Only processes whose command line mentions `marker` (e.g. the test's
    /// temp dir) are counted as seen.
    pub fn start(secret: &str, marker: &str) -> ProcWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let secret = secret.to_string();
        let marker = marker.to_string();
        let thread = std::thread::spawn(move || {
            let mut hits = Vec::new();
            let mut seen = 0;
            while !flag.load(Ordering::SeqCst) {
                for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
                    let name = entry.file_name();
                    let Some(pid) = name.to_str().and_then(|n| n.parse::<i32>().ok()) else {
                        continue;
                    };
                    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                    let environ = String::from_utf8_lossy(&environ).replace('\0', " ");
                    if cmdline.contains(&marker) {
                        seen += 1;
                    }
                    if cmdline.contains(&secret) || environ.contains(&secret) {
                        hits.push(format!("{pid}: {cmdline}"));
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (hits, seen)
        });
        ProcWatch {
            stop,
            thread: Some(thread),
        }
    }

    /// Stop scanning: (processes showing the secret, sightings of processes
    /// with the marker).
    pub fn finish(mut self) -> (Vec<String>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map(|t| t.join().unwrap())
            .unwrap_or_default()
    }
}
