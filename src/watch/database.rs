//! Database watcher: is the appliance's database reachable?
//!
//! [`DbCheck::probe`] does one blocking probe (a TCP connect, a command, or
//! both); [`DbWatch`] turns a series of probe results into a debounced level.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::db::exec::{io_text, show_duration, wait_until};
use crate::ha::Level;

/// How to probe the database.
#[derive(Debug, Clone)]
pub struct DbCheck {
    /// Connect to this address (and close the connection again).
    pub tcp: Option<SocketAddr>,
    /// Run this program (first element) with these arguments; exit status 0
    /// means reachable.
    pub command: Option<Vec<String>>,
    /// Limit for the connect and, separately, for the command: a probe with
    /// both takes at most twice this long. Zero counts as 1 ms.
    pub timeout: Duration,
    /// Consecutive failed probes before the level becomes `Failed`.
    pub failures: u32,
}

impl DbCheck {
    /// One probe: the TCP connect (if any), then the command (if any). `Err`
    /// carries a readable reason: "connect to 127.0.0.1:5432: connection
    /// refused", "/usr/bin/pg_isready exited with status 2",
    /// "/usr/bin/pg_isready timed out after 3s".
    ///
    /// The command runs with stdin, stdout and stderr on /dev/null, in a
    /// process group of its own; at the timeout the whole group is killed
    /// (`SIGKILL`) and the command reaped, so nothing it started outlives the
    /// probe. A check with neither a TCP address nor a command fails (that is
    /// a configuration mistake, and `Ok` would hide it).
    pub fn probe(&self) -> Result<(), String> {
        let timeout = self.timeout.max(Duration::from_millis(1));
        if self.tcp.is_none() && self.command.is_none() {
            return Err("no database check configured (neither tcp nor command)".into());
        }
        if let Some(addr) = self.tcp {
            probe_tcp(addr, timeout)?;
        }
        if let Some(argv) = &self.command {
            probe_command(argv, timeout)?;
        }
        Ok(())
    }
}

fn probe_tcp(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    match TcpStream::connect_timeout(&addr, timeout) {
        Ok(_stream) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(format!(
            "connect to {addr}: timed out after {}",
            show_duration(timeout)
        )),
        Err(e) => Err(format!("connect to {addr}: {}", io_text(&e))),
    }
}

fn probe_command(argv: &[String], timeout: Duration) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("database check command is empty".into());
    };
    let started = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("{program}: cannot run: {}", io_text(&e)))?;
    match wait_until(&mut child, started + timeout) {
        Ok(status) => exit_verdict(program, status),
        Err(Some(e)) => Err(format!("{program}: cannot wait for it: {}", io_text(&e))),
        Err(None) => Err(format!(
            "{program} timed out after {}",
            show_duration(timeout)
        )),
    }
}

fn exit_verdict(program: &str, status: ExitStatus) -> Result<(), String> {
    if status.success() {
        Ok(())
    } else if let Some(code) = status.code() {
        Err(format!("{program} exited with status {code}"))
    } else if let Some(signal) = status.signal() {
        Err(format!("{program} was killed by signal {signal}"))
    } else {
        Err(format!("{program} failed ({status})"))
    }
}

/// Debounced verdict: `Failed` only after `failures` consecutive failed
/// probes, `Ok` again on the first success. The level starts `Unknown` and
/// stays so until the first success or the `failures`-th failure; failures
/// short of that leave the level as it was.
pub struct DbWatch {
    failures: u32,
    level: Level,
    /// Consecutive failed probes so far.
    failed: u32,
}

impl fmt::Debug for DbWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbWatch")
            .field("failures", &self.failures)
            .field("level", &self.level)
            .field("failed", &self.failed)
            .finish()
    }
}

impl DbWatch {
    /// `failures` of 0 counts as 1.
    pub fn new(failures: u32) -> Self {
        DbWatch {
            failures: failures.max(1),
            level: Level::Unknown,
            failed: 0,
        }
    }

    /// Take in one probe result; returns `Some((new level, text))` when the
    /// level changes.
    pub fn observe(&mut self, result: &Result<(), String>) -> Option<(Level, String)> {
        match result {
            Ok(()) => {
                self.failed = 0;
                let text = match self.level {
                    Level::Ok => return None,
                    Level::Failed => "the database is reachable again",
                    _ => "the database is reachable",
                };
                self.level = Level::Ok;
                Some((Level::Ok, text.to_string()))
            }
            Err(reason) => {
                self.failed = self.failed.saturating_add(1);
                if self.failed < self.failures || self.level == Level::Failed {
                    return None;
                }
                self.level = Level::Failed;
                let probes = if self.failed == 1 {
                    "1 failed probe".to_string()
                } else {
                    format!("{} failed probes in a row", self.failed)
                };
                Some((
                    Level::Failed,
                    format!("the database is unreachable ({probes}): {reason}"),
                ))
            }
        }
    }

    pub fn level(&self) -> Level {
        self.level
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn check(tcp: Option<SocketAddr>, command: Option<&[&str]>, timeout_ms: u64) -> DbCheck {
        DbCheck {
            tcp,
            command: command.map(|c| c.iter().map(|s| s.to_string()).collect()),
            timeout: Duration::from_millis(timeout_ms),
            failures: 3,
        }
    }

    #[test]
    fn tcp_probe_to_a_listener_succeeds() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert_eq!(check(Some(addr), None, 1000).probe(), Ok(()));
    }

    #[test]
    fn tcp_probe_to_a_closed_port_says_refused() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        // The listener is dropped: the port is closed now.
        let err = check(Some(addr), None, 1000).probe().unwrap_err();
        assert_eq!(err, format!("connect to {addr}: connection refused"));
    }

    #[test]
    fn command_exit_status_is_the_verdict() {
        assert_eq!(
            check(None, Some(&["/bin/sh", "-c", "exit 0"]), 2000).probe(),
            Ok(())
        );
        let err = check(None, Some(&["/bin/sh", "-c", "exit 2"]), 2000)
            .probe()
            .unwrap_err();
        assert_eq!(err, "/bin/sh exited with status 2");
        let err = check(None, Some(&["/bin/sh", "-c", "kill -TERM $$"]), 2000)
            .probe()
            .unwrap_err();
        assert_eq!(err, "/bin/sh was killed by signal 15");
        let err = check(None, Some(&["/no/such/pg_isready"]), 2000)
            .probe()
            .unwrap_err();
        assert_eq!(
            err,
            "/no/such/pg_isready: cannot run: no such file or directory"
        );
        let err = check(None, Some(&[]), 2000).probe().unwrap_err();
        assert_eq!(err, "database check command is empty");
        let err = check(None, None, 2000).probe().unwrap_err();
        assert!(err.contains("no database check configured"), "{err}");
    }

    #[test]
    fn tcp_then_command_both_must_pass() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let ok: &[&str] = &["/bin/sh", "-c", "exit 0"];
        let bad: &[&str] = &["/bin/sh", "-c", "exit 3"];
        assert_eq!(check(Some(open), Some(ok), 1000).probe(), Ok(()));
        assert_eq!(
            check(Some(open), Some(bad), 1000).probe(),
            Err("/bin/sh exited with status 3".into())
        );
        let err = check(Some(closed), Some(ok), 1000).probe().unwrap_err();
        assert!(err.starts_with("connect to "), "{err}");
    }

    fn pid_state(pid: &str) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) S ...": the state follows the last ')'.
        stat.rsplit(')').next()?.trim_start().chars().next()
    }

    #[test]
    fn command_is_killed_at_the_timeout_with_its_children() {
        let dir = std::env::temp_dir().join(format!("hamon-db-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pids = dir.join("pids");
        // The shell starts a sleeping child, writes both pids, then waits.
        let script = format!(
            "sleep 5 & echo $! > {p}.tmp; echo $$ >> {p}.tmp; mv {p}.tmp {p}; wait",
            p = pids.display()
        );
        let started = Instant::now();
        let err = check(None, Some(&["/bin/sh", "-c", &script]), 200)
            .probe()
            .unwrap_err();
        let took = started.elapsed();
        assert_eq!(err, "/bin/sh timed out after 200ms");
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");

        let written = std::fs::read_to_string(&pids).unwrap();
        let listed: Vec<&str> = written.split_whitespace().collect();
        assert_eq!(listed.len(), 2, "{written:?}");
        // The shell was reaped by the probe; the sleep, orphaned, is dead
        // (at most a zombie until whoever adopted it reaps it).
        let gone = |pid: &str| matches!(pid_state(pid), None | Some('Z') | Some('X'));
        let deadline = Instant::now() + Duration::from_secs(2);
        while !listed.iter().all(|p| gone(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        for pid in &listed {
            assert!(gone(pid), "pid {pid} still running: {:?}", pid_state(pid));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn plain_sleep_times_out() {
        let started = Instant::now();
        let err = check(None, Some(&["/bin/sh", "-c", "sleep 5"]), 200)
            .probe()
            .unwrap_err();
        assert_eq!(err, "/bin/sh timed out after 200ms");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn text_helpers() {
        assert_eq!(show_duration(Duration::from_secs(3)), "3s");
        assert_eq!(show_duration(Duration::from_millis(200)), "200ms");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(
            io_text(&io::Error::from_raw_os_error(libc::ECONNREFUSED)),
            "connection refused"
        );
        assert_eq!(io_text(&io::Error::other("Odd")), "odd");
        assert_eq!(io_text(&io::Error::other("")), "");
    }

    #[test]
    fn db_watch_debounces_failures() {
        let mut w = DbWatch::new(3);
        assert_eq!(w.level(), Level::Unknown);
        let bad: Result<(), String> = Err("connect to 127.0.0.1:5432: connection refused".into());

        // Failures short of the limit leave Unknown alone.
        assert_eq!(w.observe(&bad), None);
        assert_eq!(w.observe(&bad), None);
        assert_eq!(w.level(), Level::Unknown);
        assert_eq!(
            w.observe(&Ok(())),
            Some((Level::Ok, "the database is reachable".into()))
        );
        assert_eq!(w.observe(&Ok(())), None);

        // Two failures, a success: the count starts over.
        assert_eq!(w.observe(&bad), None);
        assert_eq!(w.observe(&bad), None);
        assert_eq!(w.observe(&Ok(())), None);
        assert_eq!(w.level(), Level::Ok);
        assert_eq!(w.observe(&bad), None);
        assert_eq!(w.observe(&bad), None);
        assert_eq!(w.level(), Level::Ok);
        assert_eq!(
            w.observe(&bad),
            Some((
                Level::Failed,
                "the database is unreachable (3 failed probes in a row): \
                 connect to 127.0.0.1:5432: connection refused"
                    .into()
            ))
        );
        assert_eq!(w.level(), Level::Failed);
        // Reported once.
        assert_eq!(w.observe(&bad), None);
        // The first success recovers.
        assert_eq!(
            w.observe(&Ok(())),
            Some((Level::Ok, "the database is reachable again".into()))
        );
        assert_eq!(w.level(), Level::Ok);
    }

    #[test]
    fn db_watch_with_one_failure_and_zero() {
        for n in [0, 1] {
            let mut w = DbWatch::new(n);
            let r = w.observe(&Err("x timed out after 3s".into()));
            assert_eq!(
                r,
                Some((
                    Level::Failed,
                    "the database is unreachable (1 failed probe): x timed out after 3s".into()
                ))
            );
            assert!(format!("{w:?}").contains("DbWatch"));
        }
    }
}
