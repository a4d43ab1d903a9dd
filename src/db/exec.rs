//! Running one external tool (a PostgreSQL program, an operator script) with
//! a deadline, capturing its output.
//!
//! Like the database watcher's probe command, the tool runs in a process
//! group of its own with stdin on /dev/null; at the deadline the whole group
//! is killed (`SIGKILL`) and the tool reaped. Unlike the probe, stdout and
//! stderr are captured (up to [`MAX_OUTPUT`] bytes each), because the
//! drivers read answers and error messages from them.

use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bytes kept of each of stdout and stderr; the rest is read and dropped.
pub(crate) const MAX_OUTPUT: usize = 1 << 20;

/// Longest pause between two looks at a running tool.
const MAX_POLL: Duration = Duration::from_millis(50);

/// What a finished tool left behind.
#[derive(Debug)]
pub(crate) struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// "pg_rewind exited with status 1: could not connect to server".
    /// The text after the colon is stderr's last non-empty lines (stdout's
    /// when stderr is empty), at most [`ERROR_TAIL`] of them, joined by "; ".
    pub fn failure(&self, name: &str) -> String {
        let verdict = if let Some(code) = self.status.code() {
            format!("{name} exited with status {code}")
        } else if let Some(signal) = self.status.signal() {
            format!("{name} was killed by signal {signal}")
        } else {
            format!("{name} failed ({})", self.status)
        };
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        match tail(text) {
            Some(t) => format!("{verdict}: {t}"),
            None => verdict,
        }
    }

    /// `Ok(stdout)` for exit status 0, else [`Output::failure`].
    pub fn into_stdout(self, name: &str) -> Result<String, String> {
        if self.success() {
            Ok(self.stdout)
        } else {
            Err(self.failure(name))
        }
    }
}

/// Lines of output kept in an error message.
pub(crate) const ERROR_TAIL: usize = 3;

/// The last few non-empty lines of `text`, trimmed and joined by "; ".
pub(crate) fn tail(text: &str) -> Option<String> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        return None;
    }
    let start = lines.len().saturating_sub(ERROR_TAIL);
    Some(lines[start..].join("; "))
}

/// The name used in messages: the program's file name ("pg_ctl").
pub(crate) fn program_name(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program());
    program
        .file_name()
        .unwrap_or(program.as_os_str())
        .to_string_lossy()
        .into_owned()
}

/// An operating-system account the tools run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

impl Account {
    /// Look `name` up in the user database (getpwnam_r).
    pub fn lookup(name: &str) -> Result<Account, String> {
        let (uid, gid, home) = crate::watch::process::lookup_user(name)?;
        Ok(Account {
            name: name.to_string(),
            uid,
            gid,
            home: PathBuf::from(home),
        })
    }

    /// The account to run tools as: `Some` only when this process is root
    /// (the PostgreSQL tools refuse to run as root, and an unprivileged
    /// process cannot switch users anyway).
    pub fn for_tools(name: &str) -> Result<Option<Account>, String> {
        // SAFETY: geteuid takes no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(None);
        }
        Account::lookup(name).map(Some)
    }
}

/// A command for `program` with a clean environment: only PATH, HOME and
/// LC_ALL=C (so messages are in English and parseable), plus whatever the
/// caller adds. None of libpq's PG* variables leak in from hamon's own
/// environment. With `account`, the command runs as that user (std drops
/// root's supplementary groups when it changes the uid).
pub(crate) fn command(program: &Path, account: Option<&Account>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("LC_ALL", "C");
    match account {
        Some(a) => {
            cmd.uid(a.uid)
                .gid(a.gid)
                .env("HOME", &a.home)
                .current_dir("/");
        }
        None => {
            if let Some(home) = std::env::var_os("HOME") {
                cmd.env("HOME", home);
            }
        }
    }
    cmd
}

/// Run `cmd` for at most `timeout` (zero counts as 1 ms). `Err` only when
/// it cannot be started or did not finish in time; a non-zero exit status
/// is an `Ok` [`Output`] for the caller to judge.
pub(crate) fn run(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let name = program_name(cmd);
    let timeout = timeout.max(Duration::from_millis(1));
    let started = Instant::now();
    let deadline = started + timeout;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("{name}: cannot run: {}", io_text(&e)))?;
    let (done_tx, done_rx) = mpsc::channel();
    let stdout = collect(child.stdout.take(), done_tx.clone());
    let stderr = collect(child.stderr.take(), done_tx);
    let status = wait_until(&mut child, deadline).map_err(|e| match e {
        None => format!("{name} timed out after {}", show_duration(timeout)),
        Some(e) => format!("{name}: cannot wait for it: {}", io_text(&e)),
    })?;
    // Both pipes close when the tool and everything that inherited them
    // exit. Something left running in the background may hold them open:
    // wait for that until the deadline, then take what was read so far.
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    Ok(Output {
        status,
        stdout: take(&stdout),
        stderr: take(&stderr),
    })
}

type Buffer = Arc<Mutex<Vec<u8>>>;

fn collect<R: Read + Send + 'static>(pipe: Option<R>, done: mpsc::Sender<()>) -> Buffer {
    let buffer: Buffer = Arc::new(Mutex::new(Vec::new()));
    let Some(mut pipe) = pipe else {
        let _ = done.send(());
        return buffer;
    };
    let shared = Arc::clone(&buffer);
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    if let Ok(mut b) = shared.lock() {
                        let room = MAX_OUTPUT.saturating_sub(b.len());
                        b.extend_from_slice(&chunk[..n.min(room)]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = done.send(());
    });
    buffer
}

fn take(buffer: &Buffer) -> String {
    match buffer.lock() {
        Ok(mut b) => String::from_utf8_lossy(&std::mem::take(&mut *b)).into_owned(),
        Err(_) => String::new(),
    }
}

/// Wait for the child until `deadline`. `Err(None)`: timed out (the group
/// was killed and the child reaped); `Err(Some(e))`: waiting failed.
pub(crate) fn wait_until(
    child: &mut Child,
    deadline: Instant,
) -> Result<ExitStatus, Option<io::Error>> {
    let mut pause = Duration::from_millis(2);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => {}
            Err(e) => {
                kill_group(child);
                return Err(Some(e));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            kill_group(child);
            return Err(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(MAX_POLL);
    }
}

/// Kill the child's whole process group and reap the child.
pub(crate) fn kill_group(child: &mut Child) {
    if let Ok(pgid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill takes no pointers. The child leads its own process
        // group (`process_group(0)`) and has not been reaped yet (no wait has
        // returned its status), so its pid, and with it the group id, cannot
        // have been reused by an unrelated process.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
    // In case the group kill failed; harmless if the child is already dead.
    let _ = child.kill();
    let _ = child.wait();
}

/// An I/O error as lowercase text without std's " (os error N)" suffix.
pub(crate) fn io_text(e: &io::Error) -> String {
    let mut text = e.to_string();
    if let Some(code) = e.raw_os_error() {
        let suffix = format!(" (os error {code})");
        if let Some(stripped) = text.strip_suffix(&suffix) {
            text = stripped.to_string();
        }
    }
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// "3s", "200ms", "1500ms".
pub(crate) fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = command(Path::new("/bin/sh"), None);
        cmd.arg("-c").arg(script);
        cmd
    }

    #[test]
    fn captures_output_and_status() {
        let out = run(
            &mut sh("echo out; echo err >&2; exit 3"),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.failure("sh"), "sh exited with status 3: err");
        assert_eq!(
            out.into_stdout("sh").unwrap_err(),
            "sh exited with status 3: err"
        );
        let out = run(&mut sh("echo fine"), Duration::from_secs(5)).unwrap();
        assert_eq!(out.into_stdout("sh").unwrap(), "fine\n");
    }

    #[test]
    fn environment_is_clean() {
        let out = run(&mut sh("env"), Duration::from_secs(5)).unwrap();
        for line in out.stdout.lines() {
            let key = line.split('=').next().unwrap();
            assert!(
                ["PATH", "HOME", "LC_ALL", "PWD", "SHLVL", "_"].contains(&key),
                "{line}"
            );
        }
        assert!(out.stdout.contains("LC_ALL=C"), "{}", out.stdout);
    }

    #[test]
    fn timeout_kills_the_group() {
        let started = Instant::now();
        let err = run(&mut sh("sleep 5 & sleep 5"), Duration::from_millis(200)).unwrap_err();
        assert_eq!(err, "sh timed out after 200ms");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn background_holder_of_the_pipes_does_not_hang_us() {
        let started = Instant::now();
        let out = run(&mut sh("echo hi; sleep 3 &"), Duration::from_millis(300)).unwrap();
        assert!(out.success());
        assert_eq!(out.stdout, "hi\n");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn missing_program_and_tail() {
        let mut cmd = command(Path::new("/no/such/tool"), None);
        let err = run(&mut cmd, Duration::from_secs(1)).unwrap_err();
        assert_eq!(err, "tool: cannot run: no such file or directory");
        assert_eq!(tail("a\n\nb\nc\nd\n").as_deref(), Some("b; c; d"));
        assert_eq!(tail(" \n"), None);
        assert_eq!(show_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn account_lookup() {
        let root = Account::lookup("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(Account::lookup("no-such-user-hamon").is_err());
    }
}
