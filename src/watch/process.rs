//! The service supervisor: runs the appliance's services that the server's
//! duty wants (none when halted, `run_on = both` on the standby, all of them
//! on the active or standalone server), restarts failed ones under their
//! policy and reports a critical service that cannot be kept running.
//!
//! Synchronous: the owner calls [`Supervisor::apply`] on a duty change and
//! [`Supervisor::poll`] every ~100 ms. Stopping blocks up to each service's
//! `stop_timeout`; `systemctl start`/`stop` block until systemd is done.
//! A service is a command hamon spawns in its own process group (so signals
//! reach its children too), or a systemd unit driven through `systemctl`.

use std::collections::VecDeque;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A unit is asked whether it is active at most this often.
const UNIT_CHECK_EVERY: Duration = Duration::from_secs(2);
/// How long a process group may take to die after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How often a stopping process is looked at.
const STOP_POLL: Duration = Duration::from_millis(10);

/// How a service runs.
#[derive(Clone, PartialEq, Eq)]
pub enum How {
    /// A command hamon spawns and supervises itself; `env` is added to
    /// hamon's environment, `user` is looked up when the command starts.
    Command {
        argv: Vec<String>,
        env: Vec<(String, String)>,
        cwd: Option<PathBuf>,
        user: Option<String>,
    },
    /// A systemd unit driven through `systemctl`.
    Unit(String),
}

/// Like a derived `Debug`, but without the values of `env`: they may hold secrets.
impl fmt::Debug for How {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            How::Command {
                argv,
                env,
                cwd,
                user,
            } => {
                let env: Vec<String> = env.iter().map(|(k, _)| format!("{k}=<redacted>")).collect();
                f.debug_struct("Command")
                    .field("argv", argv)
                    .field("env", &env)
                    .field("cwd", cwd)
                    .field("user", user)
                    .finish()
            }
            How::Unit(u) => f.debug_tuple("Unit").field(u).finish(),
        }
    }
}

/// Where a service runs: only on the active server, or on the standby too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOn {
    Active,
    Both,
}

/// At most `attempts` restarts within `window`; the n-th waits `backoff * 2^(n-1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub attempts: u32,
    pub window: Duration,
    pub backoff: Duration,
}

/// One supervised service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    pub how: How,
    pub run_on: RunOn,
    /// A critical service that gives up makes [`Supervisor::critical_failed`] true.
    pub critical: bool,
    pub restart: RestartPolicy,
    /// Services started before this one (and stopped after it).
    pub after: Vec<String>,
    /// Time between SIGTERM and SIGKILL when stopping a command.
    pub stop_timeout: Duration,
}

/// Which services the server's duty wants running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Halted.
    Nothing,
    /// Standby: the `run_on = both` services.
    BothOnly,
    /// Active or standalone: every service.
    Everything,
}

/// What a service is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Running,
    Stopped,
    /// Waiting out a backoff before a restart.
    Starting,
    /// Gave up restarting it; the reason of the last failure.
    Failed(String),
}

/// One line of `hamon status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStatus {
    pub name: String,
    pub state: State,
    /// Restarts since apply() last started it.
    pub restarts: u32,
    pub critical: bool,
    /// The process group leader's pid, for a running command.
    pub pid: Option<u32>,
}

impl ServiceStatus {
    /// "web is running", "web is stopped", "web is restarting",
    /// "web has failed (exited with status 3)": the guide's `ncs status` style.
    pub fn line(&self) -> String {
        let name = &self.name;
        match &self.state {
            State::Running => format!("{name} is running"),
            State::Stopped => format!("{name} is stopped"),
            State::Starting => format!("{name} is restarting"),
            State::Failed(reason) => format!("{name} has failed ({reason})"),
        }
    }
}

/// What the supervisor did or saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started {
        name: String,
        pid: Option<u32>,
    },
    /// It stopped running without being asked to, or could not be started
    /// ("failed to start: ...").
    Exited {
        name: String,
        reason: String,
    },
    /// `attempt`: failures inside the restart window, this one included.
    Restarting {
        name: String,
        attempt: u32,
        after: Duration,
    },
    GaveUp {
        name: String,
        reason: String,
        critical: bool,
    },
    Stopped {
        name: String,
    },
}

/// The restart arithmetic, pure: failures inside the sliding window.
#[derive(Debug, Clone)]
pub struct RestartWindow {
    policy: RestartPolicy,
    failures: VecDeque<Instant>,
}

impl RestartWindow {
    pub fn new(policy: RestartPolicy) -> Self {
        RestartWindow {
            policy,
            failures: VecDeque::new(),
        }
    }

    /// A failure at `now`: restart after the returned delay
    /// (`backoff * 2^(n-1)`, n = failures in the window, saturating), or give
    /// up (None) when more than `attempts` failures fall inside `window`.
    /// A failure older than `window` has slid out.
    pub fn failed(&mut self, now: Instant) -> Option<Duration> {
        let window = self.policy.window;
        self.failures
            .retain(|&t| now.saturating_duration_since(t) < window);
        self.failures.push_back(now);
        let keep = usize::try_from(self.policy.attempts)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        while self.failures.len() > keep {
            self.failures.pop_front();
        }
        let n = self.count();
        if n > self.policy.attempts {
            return None;
        }
        let factor = 2u32.checked_pow(n.saturating_sub(1)).unwrap_or(u32::MAX);
        Some(
            self.policy
                .backoff
                .checked_mul(factor)
                .unwrap_or(Duration::MAX),
        )
    }

    /// Forget every failure.
    pub fn reset(&mut self) {
        self.failures.clear();
    }

    fn count(&self) -> u32 {
        u32::try_from(self.failures.len()).unwrap_or(u32::MAX)
    }
}

/// Runs `systemctl ARGS`: Ok(true) when it exits 0, Ok(false) when it exits
/// non-zero, Err when it cannot be run.
pub type Systemctl = Box<dyn FnMut(&[&str]) -> Result<bool, String> + Send>;

/// The real `systemctl`: stdin and stdout null, stderr to the agent's journal.
pub fn systemctl(args: &[&str]) -> Result<bool, String> {
    Command::new("systemctl")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .map_err(|e| format!("cannot run systemctl: {e}"))
}

/// One service and what it is doing.
#[derive(Debug)]
struct Svc {
    spec: ServiceSpec,
    state: State,
    /// The last apply() wants it (a stop that failed leaves it Running, unwanted).
    wanted: bool,
    child: Option<Child>,
    window: RestartWindow,
    restarts: u32,
    /// When Starting: when to restart.
    due: Option<Instant>,
    /// A unit's last start or is-active check.
    checked: Option<Instant>,
}

impl Svc {
    fn new(spec: ServiceSpec) -> Svc {
        Svc {
            window: RestartWindow::new(spec.restart),
            spec,
            state: State::Stopped,
            wanted: false,
            child: None,
            restarts: 0,
            due: None,
            checked: None,
        }
    }

    fn name(&self) -> String {
        self.spec.name.clone()
    }

    /// Starts it; a failure is an Exited event and goes through the restart
    /// policy, and is returned for apply().
    fn launch(
        &mut self,
        ctl: &mut Systemctl,
        now: Instant,
        ev: &mut Vec<Event>,
    ) -> Result<(), String> {
        let started = match &self.spec.how {
            How::Command {
                argv,
                env,
                cwd,
                user,
            } => spawn(argv, env, cwd.as_ref(), user.as_deref()).map(|child| {
                let pid = child.id();
                self.child = Some(child);
                Some(pid)
            }),
            How::Unit(unit) => run(ctl, "start", unit).map(|()| None),
        };
        match started {
            Ok(pid) => {
                (self.state, self.due, self.checked) = (State::Running, None, Some(now));
                ev.push(Event::Started {
                    name: self.name(),
                    pid,
                });
                Ok(())
            }
            Err(e) => {
                let reason = format!("failed to start: {e}");
                ev.push(Event::Exited {
                    name: self.name(),
                    reason: reason.clone(),
                });
                self.failed(reason, now, ev);
                Err(format!("cannot start {}: {e}", self.spec.name))
            }
        }
    }

    /// It failed at `now`: schedule a restart or give up.
    fn failed(&mut self, reason: String, now: Instant, ev: &mut Vec<Event>) {
        let name = self.name();
        match self
            .window
            .failed(now)
            .and_then(|d| Some((d, now.checked_add(d)?)))
        {
            Some((after, due)) => {
                (self.state, self.due) = (State::Starting, Some(due));
                let attempt = self.window.count();
                ev.push(Event::Restarting {
                    name,
                    attempt,
                    after,
                });
            }
            None => {
                (self.state, self.due) = (State::Failed(reason.clone()), None);
                let critical = self.spec.critical;
                ev.push(Event::GaveUp {
                    name,
                    reason,
                    critical,
                });
            }
        }
    }

    /// Why a Running service no longer runs, if it does not.
    fn gone(&mut self, ctl: &mut Systemctl, now: Instant) -> Option<String> {
        match (&self.spec.how, self.child.as_mut()) {
            (How::Command { .. }, None) => Some("no process".to_string()),
            (How::Command { .. }, Some(child)) => match reap(child) {
                Ok(status) => status.map(exit_reason),
                Err(e) => Some(format!("lost track of process {}: {e}", child.id())),
            },
            (How::Unit(unit), _) => {
                let since = |t: Instant| now.saturating_duration_since(t);
                if self.checked.is_some_and(|t| since(t) < UNIT_CHECK_EVERY) {
                    return None;
                }
                self.checked = Some(now);
                match ctl(&["is-active", "--quiet", unit]) {
                    Ok(true) => None,
                    Ok(false) => Some("unit is not active".to_string()),
                    Err(e) => Some(e),
                }
            }
        }
    }

    /// A unit that cannot be stopped counts as Running (unwanted): poll()'s
    /// checks and the next apply() take it from there.
    fn stop(&mut self, ctl: &mut Systemctl) -> Result<(), String> {
        let result = match (&self.spec.how, self.child.as_mut()) {
            (How::Command { .. }, Some(child)) => stop_child(child, self.spec.stop_timeout),
            (How::Command { .. }, None) => Ok(()),
            (How::Unit(unit), _) => run(ctl, "stop", unit),
        };
        match result {
            Ok(()) => (self.state, self.child, self.due) = (State::Stopped, None, None),
            Err(_) => (self.state, self.due) = (State::Running, None),
        }
        result
    }
}

/// `systemctl VERB UNIT`, which must succeed.
fn run(ctl: &mut Systemctl, verb: &str, unit: &str) -> Result<(), String> {
    match ctl(&[verb, unit]) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("systemctl {verb} {unit} failed")),
        Err(e) => Err(e),
    }
}

/// Runs the services the duty wants. Dropping it stops the commands it
/// spawned (units are left to systemd); call [`Supervisor::stop_all`] first
/// to see errors.
pub struct Supervisor {
    svcs: Vec<Svc>,
    /// Indexes into `svcs`, in start order.
    order: Vec<usize>,
    systemctl: Systemctl,
}

/// Names and states only: the specs' `env` may hold secrets.
impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let states = self
            .svcs
            .iter()
            .map(|s| (&s.spec.name, &s.state, s.restarts));
        f.debug_list().entries(states).finish()
    }
}

impl Supervisor {
    /// Validates: unique non-empty names, non-empty commands and unit names,
    /// `after` names exist, no cycles (the error names the cycle). Computes
    /// the start order: each step takes the first service in config order
    /// whose `after` services are all placed. Units go through the real
    /// `systemctl` (see [`Supervisor::with_systemctl`]).
    pub fn new(specs: Vec<ServiceSpec>) -> Result<Supervisor, String> {
        let mut errors = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            let name = &s.name;
            if name.is_empty() {
                errors.push(format!("service #{} has no name", i + 1));
            }
            if specs[..i].iter().any(|o| o.name == *name) {
                errors.push(format!("service name {name:?} is used twice"));
            }
            match &s.how {
                How::Command { argv, .. } if argv.is_empty() => {
                    errors.push(format!("service {name:?} has an empty command"));
                }
                How::Unit(u) if u.is_empty() => {
                    errors.push(format!("service {name:?} has an empty unit name"));
                }
                _ => {}
            }
            for a in &s.after {
                if !specs.iter().any(|o| o.name == *a) {
                    errors.push(format!("service {name:?} is after unknown service {a:?}"));
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        let order = start_order(&specs)?;
        let svcs = specs.into_iter().map(Svc::new).collect();
        Ok(Supervisor {
            svcs,
            order,
            systemctl: Box::new(systemctl),
        })
    }

    /// Drives units through `f` instead of the real `systemctl` (tests, dry runs).
    pub fn with_systemctl(
        mut self,
        f: impl FnMut(&[&str]) -> Result<bool, String> + Send + 'static,
    ) -> Self {
        self.systemctl = Box::new(f);
        self
    }

    /// Make the wanted set true: stop unwanted services in reverse start order
    /// (commands: SIGTERM to the group, up to `stop_timeout`, then SIGKILL;
    /// units: `systemctl stop`), then start missing ones in start order. A
    /// wanted service that is stopped or has failed starts from a fresh
    /// restart window, so calling apply() again retries failed services; one
    /// waiting out a backoff is left to poll(). Keeps going on errors and
    /// returns all of them, with the events it caused.
    pub fn apply(&mut self, want: Want, now: Instant) -> (Vec<Event>, Vec<String>) {
        for svc in &mut self.svcs {
            svc.wanted = match want {
                Want::Nothing => false,
                Want::BothOnly => svc.spec.run_on == RunOn::Both,
                Want::Everything => true,
            };
        }
        let mut events = Vec::new();
        let mut errors = self.stop_unwanted(&mut events);
        for &i in &self.order {
            let svc = &mut self.svcs[i];
            if svc.wanted && matches!(svc.state, State::Stopped | State::Failed(_)) {
                svc.window.reset();
                svc.restarts = 0;
                if let Err(e) = svc.launch(&mut self.systemctl, now, &mut events) {
                    errors.push(e);
                }
            }
        }
        (events, errors)
    }

    /// Reap exited commands (and kill what is left of their process group),
    /// check units (`systemctl is-active --quiet UNIT`, at most every 2 s),
    /// schedule restarts with the backoff, perform restarts that are due and
    /// give up per policy. Call it every ~100 ms.
    pub fn poll(&mut self, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        for &i in &self.order {
            let svc = &mut self.svcs[i];
            match svc.state {
                State::Running => {
                    let Some(reason) = svc.gone(&mut self.systemctl, now) else {
                        continue;
                    };
                    svc.child = None;
                    if svc.wanted {
                        events.push(Event::Exited {
                            name: svc.name(),
                            reason: reason.clone(),
                        });
                        svc.failed(reason, now, &mut events);
                    } else {
                        // Its stop had failed; now it is gone.
                        svc.state = State::Stopped;
                        events.push(Event::Stopped { name: svc.name() });
                    }
                }
                State::Starting if svc.due.is_some_and(|t| t <= now) => {
                    svc.restarts = svc.restarts.saturating_add(1);
                    // A failed restart is in `events` already.
                    let _ = svc.launch(&mut self.systemctl, now, &mut events);
                }
                _ => {}
            }
        }
        events
    }

    /// One entry per service, in config order.
    pub fn status(&self) -> Vec<ServiceStatus> {
        let status = |s: &Svc| ServiceStatus {
            name: s.name(),
            state: s.state.clone(),
            restarts: s.restarts,
            critical: s.spec.critical,
            pid: s.child.as_ref().map(Child::id),
        };
        self.svcs.iter().map(status).collect()
    }

    /// A critical service has given up (until it is started again by apply()).
    pub fn critical_failed(&self) -> bool {
        let failed = |s: &Svc| s.spec.critical && matches!(s.state, State::Failed(_));
        self.svcs.iter().any(failed)
    }

    /// Stop everything (reverse start order); keeps going on errors, returns
    /// them. Failed services stay Failed (there is nothing to stop).
    pub fn stop_all(&mut self) -> Vec<String> {
        for svc in &mut self.svcs {
            svc.wanted = false;
        }
        self.stop_unwanted(&mut Vec::new())
    }

    /// When the next poll() has work (a due restart), for the caller's timer.
    pub fn next_due(&self) -> Option<Instant> {
        let starting = self.svcs.iter().filter(|s| s.state == State::Starting);
        starting.filter_map(|s| s.due).min()
    }

    fn stop_unwanted(&mut self, events: &mut Vec<Event>) -> Vec<String> {
        let mut errors = Vec::new();
        for &i in self.order.iter().rev() {
            let svc = &mut self.svcs[i];
            if svc.wanted || !matches!(svc.state, State::Running | State::Starting) {
                continue;
            }
            match svc.stop(&mut self.systemctl) {
                Ok(()) => events.push(Event::Stopped { name: svc.name() }),
                // Left Running but unwanted: the next apply() tries again.
                Err(e) => errors.push(format!("cannot stop {}: {e}", svc.spec.name)),
            }
        }
        errors
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for &i in self.order.iter().rev() {
            let svc = &mut self.svcs[i];
            if let Some(child) = svc.child.as_mut() {
                let _ = stop_child(child, svc.spec.stop_timeout);
            }
        }
    }
}

/// Computes the start order, or names a cycle. `after` names must exist.
fn start_order(specs: &[ServiceSpec]) -> Result<Vec<usize>, String> {
    let deps: Vec<Vec<usize>> = specs
        .iter()
        .map(|s| {
            s.after
                .iter()
                .filter_map(|a| specs.iter().position(|o| o.name == *a))
                .collect()
        })
        .collect();
    let mut placed = vec![false; specs.len()];
    let mut order = Vec::with_capacity(specs.len());
    while order.len() < specs.len() {
        let ready = (0..specs.len()).find(|&i| !placed[i] && deps[i].iter().all(|&d| placed[d]));
        if let Some(i) = ready {
            placed[i] = true;
            order.push(i);
            continue;
        }
        // Every unplaced service waits for an unplaced one: walk until a repeat.
        let mut path: Vec<usize> = Vec::new();
        let mut at = (0..specs.len()).find(|&i| !placed[i]);
        while let Some(i) = at {
            if let Some(start) = path.iter().position(|&p| p == i) {
                let names: Vec<String> = path[start..]
                    .iter()
                    .chain([&i])
                    .map(|&p| format!("{:?}", specs[p].name))
                    .collect();
                return Err(format!("`after` forms a cycle: {}", names.join(" after ")));
            }
            path.push(i);
            at = deps[i].iter().copied().find(|&d| !placed[d]);
        }
        return Err("`after` forms a cycle".to_string());
    }
    Ok(order)
}

/// "exited with status 3", "killed by signal 9".
fn exit_reason(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => format!("ended ({status})"),
    }
}

/// Spawns a command in a new process group; stdin null, stdout and stderr
/// inherited. Errors never show `env` values.
fn spawn(
    argv: &[String],
    env: &[(String, String)],
    cwd: Option<&PathBuf>,
    user: Option<&str>,
) -> Result<Child, String> {
    let Some((prog, args)) = argv.split_first() else {
        return Err("empty command".to_string());
    };
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .process_group(0);
    if let Some(name) = user {
        let (uid, gid, home) = lookup_user(name)?;
        // std drops supplementary groups when it changes the uid.
        cmd.uid(uid)
            .gid(gid)
            .env("HOME", home)
            .env("USER", name)
            .env("LOGNAME", name);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    // A service must not outlive the agent that supervises it: if hamon is
    // killed (SIGKILL, a crash) and systemd cannot clean up its cgroup, the
    // restarted agent would start a second copy beside the orphan. The
    // kernel sends SIGTERM to the service when the thread that spawned it
    // (the duty executor, alive as long as the agent) dies.
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and calls
    // only signal(2), prctl(2) and getppid(2) through nix: async-signal-safe,
    // no allocation, no locks. It runs after std's setuid/setgid, so the
    // credential change cannot clear the parent-death signal. Until exec the
    // child still has the agent's SIGTERM handler (signal-hook's, which would
    // write to the agent's own self-pipe), so SIGTERM goes back to its
    // default first: a parent-death signal in this window ends the child.
    unsafe {
        cmd.pre_exec(move || {
            use nix::sys::signal::{signal, SigHandler, Signal};
            signal(Signal::SIGTERM, SigHandler::SigDfl)?;
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
            // The agent may have died before the line above: then no signal
            // will come, and the service must not start.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other("the agent is gone"));
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| match cwd {
        Some(dir) => format!("cannot run {prog} in {}: {e}", dir.display()),
        None => format!("cannot run {prog}: {e}"),
    })
}

/// A user's uid, gid and home directory, through getpwnam_r.
pub(crate) fn lookup_user(name: &str) -> Result<(u32, u32, OsString), String> {
    let cname = CString::new(name).map_err(|_| format!("bad user name {name:?}"))?;
    let mut size = 1024;
    loop {
        let mut buf: Vec<libc::c_char> = vec![0; size];
        // SAFETY: `passwd` is plain data (integers and pointers); all zeroes is a valid value.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and `buf.len()` is its real size;
        // the strings in `pwd` point into `buf`, which outlives their use below.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && size < 1 << 20 {
            size *= 2;
            continue;
        }
        if result.is_null() {
            return Err(match rc {
                0 | libc::ENOENT | libc::ESRCH => format!("unknown user {name:?}"),
                _ => format!(
                    "cannot look up user {name:?}: {}",
                    io::Error::from_raw_os_error(rc)
                ),
            });
        }
        let home = if pwd.pw_dir.is_null() {
            OsString::from("/")
        } else {
            // SAFETY: getpwnam_r succeeded, so pw_dir points at a NUL-terminated string in `buf`.
            OsStr::from_bytes(unsafe { CStr::from_ptr(pwd.pw_dir) }.to_bytes()).to_os_string()
        };
        return Ok((pwd.pw_uid, pwd.pw_gid, home));
    }
}

/// Sends `sig` to the process group led by `pid`; a group already gone is fine.
fn signal_group(pid: u32, sig: libc::c_int) -> io::Result<()> {
    let pgid = libc::pid_t::try_from(pid).unwrap_or(0);
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad process group {pid}"),
        ));
    }
    // SAFETY: kill() touches no memory of ours; pgid > 1, so -pgid names exactly
    // the group of a child we have not reaped yet (its id cannot be reused).
    if unsafe { libc::kill(-pgid, sig) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(e)
    }
}

/// Has the child exited? Looks without reaping it (WNOWAIT).
fn leader_exited(pid: u32) -> io::Result<bool> {
    loop {
        // SAFETY: `siginfo_t` is plain data; all zeroes is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        // SAFETY: `info` is valid and writable; WNOWAIT leaves the child for std's Child to reap.
        if unsafe { libc::waitid(libc::P_PID, pid, &mut info, flags) } == 0 {
            // SAFETY: waitid filled `info`; si_pid stays 0 when the child has not exited.
            return Ok(unsafe { info.si_pid() } != 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// If the child has exited, kills what is left of its process group (while
/// the unreaped leader still holds the group id) and reaps it.
fn reap(child: &mut Child) -> io::Result<Option<ExitStatus>> {
    if !leader_exited(child.id())? {
        return Ok(None);
    }
    // Best effort: the leader's status matters more than a straggler we may not signal.
    let _ = signal_group(child.id(), libc::SIGKILL);
    child.try_wait()
}

/// SIGTERM to the group, up to `timeout`, then SIGKILL; returns once reaped.
fn stop_child(child: &mut Child, timeout: Duration) -> Result<(), String> {
    let pid = child.id();
    // Has it been reaped within `limit`?
    let reaped = |child: &mut Child, limit: Duration| -> Result<bool, String> {
        let start = Instant::now();
        loop {
            let status = reap(child).map_err(|e| format!("process {pid}: {e}"))?;
            if status.is_some() {
                return Ok(true);
            }
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Ok(false);
            }
            std::thread::sleep(left.min(STOP_POLL));
        }
    };
    signal_group(pid, libc::SIGTERM).map_err(|e| format!("SIGTERM to process {pid}: {e}"))?;
    if reaped(child, timeout)? {
        return Ok(());
    }
    signal_group(pid, libc::SIGKILL).map_err(|e| format!("SIGKILL to process {pid}: {e}"))?;
    if reaped(child, KILL_WAIT)? {
        return Ok(());
    }
    Err(format!("process {pid} outlived SIGKILL by {KILL_WAIT:?}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    const MS: Duration = Duration::from_millis(1);
    const SEC: Duration = Duration::from_secs(1);

    fn policy(attempts: u32, backoff: Duration) -> RestartPolicy {
        RestartPolicy {
            attempts,
            window: 10 * SEC,
            backoff,
        }
    }

    fn spec(name: &str, how: How, run_on: RunOn, after: &[&str]) -> ServiceSpec {
        ServiceSpec {
            name: name.to_string(),
            how,
            run_on,
            critical: false,
            restart: policy(3, 50 * MS),
            after: after.iter().map(|a| a.to_string()).collect(),
            stop_timeout: 2 * SEC,
        }
    }

    fn cmd(argv: &[&str], env: &[(&str, &str)], cwd: Option<PathBuf>, user: Option<&str>) -> How {
        let argv = argv.iter().map(|a| a.to_string()).collect();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        How::Command {
            argv,
            env,
            cwd,
            user: user.map(String::from),
        }
    }

    fn sh(name: &str, script: &str, run_on: RunOn, after: &[&str]) -> ServiceSpec {
        spec(
            name,
            cmd(&["/bin/sh", "-c", script], &[], None, None),
            run_on,
            after,
        )
    }

    fn unit(name: &str, after: &[&str]) -> ServiceSpec {
        spec(
            name,
            How::Unit(format!("{name}.service")),
            RunOn::Active,
            after,
        )
    }

    /// Is a live (not zombie) process in the group led by `pgid`?
    fn live(pgid: u32) -> bool {
        let stats = std::fs::read_dir("/proc").unwrap().flatten();
        let mut stats = stats.filter_map(|d| std::fs::read_to_string(d.path().join("stat")).ok());
        stats.any(|st| {
            // "pid (comm) state ppid pgrp ..."; comm may hold anything.
            let f: Vec<&str> = st.rsplit_once(')').map_or("", |r| r.1).split(' ').collect();
            f.len() > 3 && f[3] == pgid.to_string() && !matches!(f[1], "Z" | "X")
        })
    }

    /// The group led by `pgid` is empty within 1 s (SIGKILLed members take a moment).
    fn gone(pgid: u32) -> bool {
        let deadline = Instant::now() + SEC;
        while live(pgid) {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(10 * MS);
        }
        true
    }

    fn pid_of(sup: &Supervisor, name: &str) -> u32 {
        let status = sup.status().into_iter().find(|s| s.name == name);
        status.and_then(|s| s.pid).unwrap()
    }

    /// Names in Started (or else Stopped) events.
    fn names(events: &[Event], started: bool) -> Vec<&str> {
        let names = events.iter().filter_map(|e| match e {
            Event::Started { name, .. } if started => Some(name.as_str()),
            Event::Stopped { name } if !started => Some(name.as_str()),
            _ => None,
        });
        names.collect()
    }

    /// Polls with real time until an event matches, for at most 5 s.
    fn poll_until(sup: &mut Supervisor, done: impl Fn(&Event) -> bool) -> Vec<Event> {
        let (deadline, mut all) = (Instant::now() + 5 * SEC, Vec::new());
        while !all.iter().any(&done) {
            assert!(Instant::now() < deadline, "timed out: {all:?}");
            std::thread::sleep(10 * MS);
            all.extend(sup.poll(Instant::now()));
        }
        all
    }

    #[derive(Default)]
    struct Fake {
        calls: Vec<String>,
        active: HashSet<String>,
        fail_start: bool,
        fail_stop: bool,
    }

    fn fake(specs: Vec<ServiceSpec>) -> (Supervisor, Arc<Mutex<Fake>>) {
        let state = Arc::new(Mutex::new(Fake::default()));
        let st = Arc::clone(&state);
        let ctl = move |args: &[&str]| {
            let mut f = st.lock().unwrap();
            f.calls.push(args.join(" "));
            match args {
                ["start", _] if f.fail_start => Ok(false),
                ["stop", _] if f.fail_stop => Ok(false),
                ["start", u] => {
                    f.active.insert(u.to_string());
                    Ok(true)
                }
                ["stop", u] => {
                    f.active.remove(*u);
                    Ok(true)
                }
                ["is-active", "--quiet", u] => Ok(f.active.contains(*u)),
                _ => Err(format!("unexpected systemctl {args:?}")),
            }
        };
        (Supervisor::new(specs).unwrap().with_systemctl(ctl), state)
    }

    #[test]
    fn restart_window_doubles_then_gives_up() {
        let (t, mut w) = (Instant::now(), RestartWindow::new(policy(3, 100 * MS)));
        assert_eq!(w.failed(t), Some(100 * MS));
        assert_eq!(w.failed(t + SEC), Some(200 * MS));
        assert_eq!(w.failed(t + 2 * SEC), Some(400 * MS));
        assert_eq!(w.failed(t + 3 * SEC), None);
        w.reset();
        assert_eq!(w.failed(t + 4 * SEC), Some(100 * MS));
        assert_eq!(RestartWindow::new(policy(0, MS)).failed(t), None);
        // Huge numbers saturate instead of panicking.
        let mut big = RestartWindow::new(policy(u32::MAX, Duration::MAX));
        assert!((0..40).all(|k| big.failed(t + k * MS) == Some(Duration::MAX)));
    }

    #[test]
    fn restart_window_slides() {
        let (t, mut w) = (Instant::now(), RestartWindow::new(policy(2, 100 * MS)));
        assert_eq!(w.failed(t), Some(100 * MS));
        assert_eq!(w.failed(t + 5 * SEC), Some(200 * MS));
        // The failure at t has slid out of the 10 s window: one attempt is back.
        assert_eq!(w.failed(t + 12 * SEC), Some(200 * MS));
        assert_eq!(w.failed(t + 13 * SEC), None);
        assert_eq!(w.failed(t + 30 * SEC), Some(100 * MS));
    }

    #[test]
    fn new_rejects_cycles_unknown_and_duplicates() {
        let specs = vec![
            unit("a", &["c"]),
            unit("b", &["a"]),
            unit("c", &["b"]),
            unit("d", &[]),
        ];
        let err = Supervisor::new(specs).unwrap_err();
        assert_eq!(
            err,
            r#"`after` forms a cycle: "a" after "c" after "b" after "a""#
        );
        let err = Supervisor::new(vec![unit("d", &[]), unit("a", &["a"])]).unwrap_err();
        assert_eq!(err, r#"`after` forms a cycle: "a" after "a""#);
        let err = Supervisor::new(vec![unit("a", &["db"]), unit("a", &[])]).unwrap_err();
        let want = r#"service "a" is after unknown service "db"; service name "a" is used twice"#;
        assert_eq!(err, want);
        let empty = spec("x", cmd(&[], &[], None, None), RunOn::Both, &[]);
        let err = Supervisor::new(vec![empty]).unwrap_err();
        assert_eq!(err, r#"service "x" has an empty command"#);
    }

    #[test]
    fn units_start_in_order_and_stop_in_reverse() {
        let specs = vec![unit("web", &["db"]), unit("cache", &[]), unit("db", &[])];
        let (mut sup, fake) = fake([specs, vec![unit("api", &["web", "cache"])]].concat());
        let (events, errors) = sup.apply(Want::Everything, Instant::now());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(names(&events, true), ["cache", "db", "web", "api"]);
        assert!(events.contains(&Event::Started {
            name: "web".into(),
            pid: None
        }));
        let (events, errors) = sup.apply(Want::Nothing, Instant::now());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(names(&events, false), ["api", "web", "db", "cache"]);
        let calls = fake.lock().unwrap().calls.clone();
        assert_eq!(
            (calls[0].as_str(), calls[4].as_str()),
            ("start cache.service", "stop api.service")
        );
        assert!(sup.status().iter().all(|s| s.state == State::Stopped));
    }

    #[test]
    fn unit_is_checked_restarted_and_given_up_with_a_fake_systemctl() {
        let mut db = unit("db", &[]);
        (db.critical, db.restart) = (true, policy(1, 100 * MS));
        let (mut sup, fake) = fake(vec![db]);
        let t = Instant::now();
        sup.apply(Want::Everything, t);
        fake.lock().unwrap().active.clear(); // the unit dies
        assert!(sup.poll(t + 1500 * MS).is_empty()); // not checked again yet
        let events = sup.poll(t + 2 * SEC);
        let exited = Event::Exited {
            name: "db".into(),
            reason: "unit is not active".into(),
        };
        let restarting = Event::Restarting {
            name: "db".into(),
            attempt: 1,
            after: 100 * MS,
        };
        assert_eq!(events, [exited, restarting]);
        assert_eq!(sup.status()[0].line(), "db is restarting");
        assert_eq!(sup.next_due(), Some(t + 2100 * MS));
        assert_eq!(
            fake.lock().unwrap().calls,
            ["start db.service", "is-active --quiet db.service"]
        );
        // The restart is due, and `systemctl start` fails: give up.
        fake.lock().unwrap().fail_start = true;
        let events = sup.poll(t + 3 * SEC);
        let reason = "failed to start: systemctl start db.service failed".to_string();
        let exited = Event::Exited {
            name: "db".into(),
            reason: reason.clone(),
        };
        let gave_up = Event::GaveUp {
            name: "db".into(),
            reason: reason.clone(),
            critical: true,
        };
        assert_eq!(events, [exited, gave_up]);
        assert!(sup.critical_failed() && sup.next_due().is_none());
        assert_eq!(
            (sup.status()[0].state.clone(), sup.status()[0].restarts),
            (State::Failed(reason), 1)
        );
        // A later apply() tries again from a fresh window.
        fake.lock().unwrap().fail_start = false;
        let (events, errors) = sup.apply(Want::Everything, t + 4 * SEC);
        assert!(errors.is_empty() && names(&events, true) == ["db"] && !sup.critical_failed());
        assert_eq!(sup.status()[0].restarts, 0);
    }

    #[test]
    fn unit_that_cannot_be_stopped_stays_watched() {
        let (mut sup, fake) = fake(vec![unit("db", &[])]);
        let t = Instant::now();
        sup.apply(Want::Everything, t);
        fake.lock().unwrap().fail_stop = true;
        let (events, errors) = sup.apply(Want::Nothing, t);
        assert!(events.is_empty());
        assert_eq!(errors, ["cannot stop db: systemctl stop db.service failed"]);
        assert_eq!(sup.status()[0].state, State::Running);
        fake.lock().unwrap().active.clear(); // it stops after all
        assert_eq!(
            sup.poll(t + 2 * SEC),
            [Event::Stopped { name: "db".into() }]
        );
    }

    #[test]
    fn commands_start_in_order_and_standby_keeps_both_only() {
        let mut sup = Supervisor::new(vec![
            sh("web", "sleep 30", RunOn::Active, &["db"]),
            sh("db", "sleep 30", RunOn::Both, &[]),
            sh("cache", "sleep 30", RunOn::Active, &[]),
        ])
        .unwrap();
        let (events, errors) = sup.apply(Want::Everything, Instant::now());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(names(&events, true), ["db", "web", "cache"]);
        let pids = ["web", "db", "cache"].map(|n| pid_of(&sup, n));
        assert!(pids.iter().all(|&p| live(p)));
        let (events, errors) = sup.apply(Want::BothOnly, Instant::now());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(names(&events, false), ["cache", "web"]);
        assert!(gone(pids[0]) && live(pids[1]) && gone(pids[2]));
        let lines: Vec<String> = sup.status().iter().map(ServiceStatus::line).collect();
        assert_eq!(
            lines,
            ["web is stopped", "db is running", "cache is stopped"]
        );
        assert!(sup.poll(Instant::now()).is_empty());
        assert!(sup.stop_all().is_empty());
        assert!(gone(pids[1]) && sup.status()[1].pid.is_none());
    }

    #[test]
    fn killed_service_is_restarted() {
        let mut sup = Supervisor::new(vec![sh("web", "sleep 30", RunOn::Both, &[])]).unwrap();
        sup.apply(Want::BothOnly, Instant::now());
        let pid = pid_of(&sup, "web");
        signal_group(pid, libc::SIGKILL).unwrap();
        let events = poll_until(&mut sup, |e| matches!(e, Event::Started { .. }));
        let exited = Event::Exited {
            name: "web".into(),
            reason: "killed by signal 9".into(),
        };
        let restarting = Event::Restarting {
            name: "web".into(),
            attempt: 1,
            after: 50 * MS,
        };
        assert_eq!(events[..2], [exited, restarting]);
        let status = &sup.status()[0];
        assert_eq!((status.state.clone(), status.restarts), (State::Running, 1));
        assert!(gone(pid) && live(status.pid.unwrap()));
        assert!(sup.stop_all().is_empty());
    }

    #[test]
    fn always_failing_critical_service_gives_up() {
        let mut s = sh("web", "exit 3", RunOn::Active, &[]);
        (s.critical, s.restart) = (true, policy(2, 20 * MS));
        let mut sup = Supervisor::new(vec![s]).unwrap();
        sup.apply(Want::Everything, Instant::now());
        let events = poll_until(&mut sup, |e| matches!(e, Event::GaveUp { .. }));
        let delays: Vec<(u32, Duration)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Restarting { attempt, after, .. } => Some((*attempt, *after)),
                _ => None,
            })
            .collect();
        assert_eq!(delays, [(1, 20 * MS), (2, 40 * MS)]);
        let reason = "exited with status 3".to_string();
        let gave_up = Event::GaveUp {
            name: "web".into(),
            reason: reason.clone(),
            critical: true,
        };
        assert_eq!(events.last(), Some(&gave_up));
        let status = &sup.status()[0];
        assert_eq!(
            (status.state.clone(), status.restarts),
            (State::Failed(reason), 2)
        );
        assert_eq!(status.line(), "web has failed (exited with status 3)");
        assert!(sup.critical_failed());
        // Unwanted, it stays failed; wanted again, it starts afresh.
        assert!(sup.apply(Want::Nothing, Instant::now()).0.is_empty());
        assert!(sup.critical_failed());
        let (events, _) = sup.apply(Want::Everything, Instant::now());
        assert_eq!(names(&events, true), ["web"]);
        assert!(!sup.critical_failed());
    }

    #[test]
    fn stop_escalates_to_sigkill() {
        let mut s = sh("stubborn", "trap '' TERM; sleep 30", RunOn::Both, &[]);
        s.stop_timeout = 300 * MS;
        let mut sup = Supervisor::new(vec![s]).unwrap();
        sup.apply(Want::Everything, Instant::now());
        let pid = pid_of(&sup, "stubborn");
        // Wait for the shell to ignore SIGTERM (SigIgn in /proc/PID/status).
        let ignores_term = || {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let mask = status
                .lines()
                .find_map(|l| l.strip_prefix("SigIgn:"))
                .unwrap();
            u64::from_str_radix(mask.trim(), 16).unwrap() & (1 << (libc::SIGTERM - 1)) != 0
        };
        let deadline = Instant::now() + 5 * SEC;
        while !ignores_term() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(10 * MS);
        }
        let start = Instant::now();
        let (events, errors) = sup.apply(Want::Nothing, Instant::now());
        let took = start.elapsed();
        assert!(
            errors.is_empty() && names(&events, false) == ["stubborn"],
            "{errors:?}"
        );
        assert!(took >= 300 * MS && took < 3 * SEC, "{took:?}");
        assert!(gone(pid));
    }

    #[test]
    fn spawn_errors_are_reported_without_secrets() {
        let mut ghost = spec(
            "ghost",
            cmd(&["/bin/true"], &[], None, Some("nobody-hamon")),
            RunOn::Both,
            &[],
        );
        ghost.restart = policy(0, MS);
        let missing = cmd(&["/nonexistent/prog"], &[("TOKEN", "s3cret")], None, None);
        let specs = vec![ghost, spec("missing", missing, RunOn::Both, &[])];
        let mut sup = Supervisor::new(specs).unwrap();
        let (events, errors) = sup.apply(Want::BothOnly, Instant::now());
        assert_eq!(
            errors[0],
            r#"cannot start ghost: unknown user "nobody-hamon""#
        );
        assert!(errors[1].starts_with("cannot start missing: cannot run /nonexistent/prog: "));
        assert!(matches!(
            &events[1],
            Event::GaveUp {
                critical: false,
                ..
            }
        ));
        assert!(matches!(&events[3], Event::Restarting { attempt: 1, .. }));
        let shown = format!("{sup:?} {events:?} {errors:?} {:?}", sup.svcs[1].spec);
        assert!(
            !shown.contains("s3cret") && shown.contains("TOKEN=<redacted>"),
            "{shown}"
        );
        assert_eq!(
            lookup_user("root").unwrap(),
            (0, 0, OsString::from("/root"))
        );
    }

    #[test]
    fn command_gets_env_cwd_and_user_and_drop_stops_it() {
        let dir = std::env::temp_dir().join(format!("hamon-sup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = "echo \"$GREETING $(pwd) $(id -u) $HOME\" > out.tmp; mv out.tmp out; sleep 30";
        let argv = ["/bin/sh", "-c", script];
        let how = cmd(
            &argv,
            &[("GREETING", "hello")],
            Some(dir.clone()),
            Some("root"),
        );
        let mut sup = Supervisor::new(vec![spec("env", how, RunOn::Both, &[])]).unwrap();
        sup.apply(Want::Everything, Instant::now());
        let deadline = Instant::now() + 5 * SEC;
        while !dir.join("out").exists() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(10 * MS);
        }
        let text = std::fs::read_to_string(dir.join("out")).unwrap();
        assert_eq!(text, format!("hello {} 0 /root\n", dir.display()));
        let pid = pid_of(&sup, "env");
        drop(sup);
        assert!(gone(pid));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn status_lines_and_exit_reasons() {
        let line = |state| {
            let name = "web".to_string();
            ServiceStatus {
                name,
                state,
                restarts: 0,
                critical: false,
                pid: None,
            }
            .line()
        };
        assert_eq!(line(State::Running), "web is running");
        assert_eq!(line(State::Stopped), "web is stopped");
        assert_eq!(line(State::Starting), "web is restarting");
        assert_eq!(
            line(State::Failed("killed by signal 9".into())),
            "web has failed (killed by signal 9)"
        );
        assert_eq!(
            exit_reason(ExitStatus::from_raw(3 << 8)),
            "exited with status 3"
        );
        assert_eq!(exit_reason(ExitStatus::from_raw(9)), "killed by signal 9");
    }
}
