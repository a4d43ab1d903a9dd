//! The imperative shell: starts the adapters, runs the core loop, and carries
//! out the core's actions.
//!
//! One thread owns the `Node` and calls `ha::step`; everything else talks to
//! it through one channel. Slow work (probes, peer calls, hooks, copies)
//! runs on its own threads and comes back as events, so nothing can stall
//! the heartbeats.

use crate::config::{self, Config, LogLevel};
use crate::control::{self, HeartbeatCounts};
use crate::ha::{
    self, Action, Command, CopyKind, Duty, Event, Level, Node, NodeConfig, PeerAnswer, PeerRequest,
    PeerTarget, Severity, Timers, Token,
};
use crate::net::vip::{self, Announce, Vip, VipControl};
use crate::peer::auth::{Keys, Verifier};
use crate::peer::client as peer_client;
use crate::peer::heartbeat::Heartbeats;
use crate::peer::pair::PairSecret;
use crate::replication::{self as repl, PeerPort};
use crate::store::{Stamped, Store};
use crate::sync::service::SyncService;
use crate::watch::process::{
    self, How, RestartPolicy, RunOn, ServiceSpec, ServiceStatus, Supervisor, Want,
};
use crate::watch::{Part, Reporter};
use crate::web::app::{pair_tag, App, CoreLink, Published, LEVELS};
use crate::web::server::{Limits, Reserved, Server};
use crate::web::tls;
use crate::web::ui::session;
use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

mod duty;
mod log;
mod operator;

use duty::{start_duty_executor, DutyOrder};
use log::{initial_level, Log, LogFile};
use operator::{start_control, ControlParts};

/// How long a peer-API request waits for the core's answer.
const PEER_ANSWER_WAIT: Duration = Duration::from_secs(10);
/// Peer calls that carry an operation (registration, failback) may wait long.
const PEER_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
    let what = what.into();
    move |source| AgentError::Io { what, source }
}

/// What reaches the core thread.
enum Input {
    Event(Event),
    Command(Command, Sender<ha::Reply>),
    Peer(PeerRequest, Sender<PeerAnswer>),
    Reload,
}

enum Waiter {
    Operator(Sender<ha::Reply>),
    Peer(Sender<PeerAnswer>),
}

/// Map the validated config onto the core's identity and timers.
pub fn node_config(cfg: &Config) -> NodeConfig {
    let ms = |d: Duration| d.as_millis() as u64;
    NodeConfig {
        name: cfg.node.name.clone(),
        role: match cfg.node.role {
            config::Role::Primary => ha::Role::Primary,
            config::Role::Secondary => ha::Role::Secondary,
        },
        address: cfg.node.address.to_string(),
        hm_port: cfg.health_monitor.port,
        hb_port: cfg.heartbeat.port,
        fingerprint: None, // known once the TLS identity is loaded
        timers: Timers {
            interval: ms(cfg.heartbeat.interval),
            missed: cfg.heartbeat.missed,
            grace: ms(cfg.heartbeat.grace),
            probe_timeout: ms(cfg.heartbeat.probe_timeout),
            data_gap_secs: cfg.failback.data_gap.as_secs(),
            copy_retry: ms(cfg.failback.copy_retry),
        },
        witness: cfg.witness.is_some(),
        fence: match &cfg.fencing {
            None => ha::FencePolicy::Off,
            Some(f) if f.proceed_on_failure => ha::FencePolicy::Proceed,
            Some(_) => ha::FencePolicy::Withhold,
        },
        arbiter: cfg.arbiter.as_ref().map(|a| a.on_loss),
    }
}

/// One call to the peer, run on its own thread.
struct PeerCall {
    target: PeerTarget,
    request: ha::PeerRequest,
    /// The key the operator typed, for a registration: pair with it first.
    key: Option<ha::Secret>,
    link: peer_client::Link,
    store: Store,
    keys: Arc<RwLock<Option<Keys>>>,
    staged: Arc<Mutex<Option<PairSecret>>>,
}

impl PeerCall {
    fn run(self) -> Result<ha::PeerAnswer, String> {
        if let Some(k) = &self.key {
            // A registration: agree on a new pair secret with the key the operator typed;
            // the core installs it with the key once the registration is accepted. Both
            // are staged on disk first: a full disk refuses here, before the peer joins.
            self.store
                .stage_authkey(k.expose())
                .map_err(|e| format!("cannot store the key: {e}"))?;
            let (secret, answer) = self.paired(k.expose()).inspect_err(|_| {
                self.store.discard_staged_authkey();
            })?;
            if matches!(answer, ha::PeerAnswer::Accepted { .. }) {
                if let Ok(mut s) = self.staged.lock() {
                    *s = Some(secret);
                }
            } else {
                self.store.discard_staged_authkey();
            }
            return Ok(answer);
        }
        let Some(keys) = self.keys.read().ok().and_then(|k| k.clone()) else {
            return Err("no authentication key is set on this server".into());
        };
        let first = peer_client::call(
            &self.target,
            &self.request,
            &keys,
            self.link,
            PEER_CALL_TIMEOUT,
        );
        // A replacement primary knows the operator's key but not the pair's secret: a
        // failback to it pairs again, with the key stored here.
        let replacement = matches!(self.request, ha::PeerRequest::FailbackBegin { .. })
            && matches!(&first, Err(e) if e.starts_with("authentication failed"));
        if !replacement {
            return first;
        }
        let Some(authkey) = self.store.load_authkey().ok().flatten() else {
            return first;
        };
        let (secret, answer) = self.paired(&authkey)?;
        if matches!(answer, ha::PeerAnswer::Accepted { .. }) {
            self.store
                .commit_secret(&pair_tag(&secret))
                .map_err(|e| format!("putting the new pair secret in place: {e}"))?;
            if let Ok(mut k) = self.keys.write() {
                *k = Some(secret.keys());
            }
        }
        Ok(answer)
    }

    /// Pairs with the peer under `authkey`, stages the new secret on disk (a full disk
    /// stops here, before the peer depends on it), and sends the request signed with it.
    fn paired(&self, authkey: &str) -> Result<(PairSecret, ha::PeerAnswer), String> {
        let (secret, pairing) =
            peer_client::pair(&self.target, authkey, self.link, PEER_CALL_TIMEOUT)?;
        self.store
            .stage_secret(&secret, &pair_tag(&secret))
            .map_err(|e| format!("cannot store the new pair secret: {e}"))?;
        let answer = peer_client::call_as(
            &self.target,
            &self.request,
            &secret.keys(),
            Some(&pairing),
            self.link,
            PEER_CALL_TIMEOUT,
        );
        match answer {
            Ok(a @ ha::PeerAnswer::Accepted { .. }) => Ok((secret, a)),
            other => {
                self.store.discard_staged_secret(&pair_tag(&secret));
                other.map(|a| (secret, a))
            }
        }
    }
}

/// The agent's side of `CoreLink`: commands and peer requests over the
/// core's channel, each with its own reply channel.
struct Link {
    tx: Sender<Input>,
}

impl CoreLink for Link {
    fn command(&self, command: Command, wait: Duration) -> Option<ha::Reply> {
        let (rtx, rrx) = bounded(1);
        self.tx.send(Input::Command(command, rtx)).ok()?;
        rrx.recv_timeout(wait).ok()
    }

    fn peer(&self, request: PeerRequest) -> Option<PeerAnswer> {
        let (rtx, rrx) = bounded(1);
        self.tx.send(Input::Peer(request, rtx)).ok()?;
        rrx.recv_timeout(PEER_ANSWER_WAIT).ok()
    }

    fn observe(&self, kind: &str, severity: Severity, text: String) {
        let _ = self.tx.send(Input::Event(Event::Observation {
            kind: kind.to_string(),
            severity,
            text,
        }));
    }
}

/// Tell systemd something (`READY=1`, `WATCHDOG=1`, `STOPPING=1`).
fn sd_notify(msg: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        if let Ok(addr) = std::os::unix::net::SocketAddr::from_abstract_name(name) {
            let _ = sock.send_to_addr(msg.as_bytes(), &addr);
        }
    } else {
        let _ = sock.send_to(msg.as_bytes(), &path);
    }
}

/// Half the systemd watchdog interval, when the watchdog is on.
fn watchdog_every() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    Some(Duration::from_micros(usec / 2))
}

/// Run an operator hook with a timeout; the environment says why.
fn run_hook(argv: &[String], timeout: Duration, env: &[(&str, String)]) -> Result<(), String> {
    let Some((prog, args)) = argv.split_first() else {
        return Ok(());
    };
    let mut cmd = std::process::Command::new(prog);
    cmd.args(args).stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    // A group of its own, so that a timeout stops what it started too (a wrapper script's
    // ipmitool must not power the peer off after the verdict).
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| format!("{prog}: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("{prog} exited with {status}")),
            Ok(None) if Instant::now() >= deadline => {
                let group = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                let _ = child.wait();
                return Err(format!("{prog} timed out after {timeout:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("{prog}: {e}")),
        }
    }
}

fn copy_name(k: CopyKind) -> &'static str {
    match k {
        CopyKind::Initial => "initial",
        CopyKind::Failback => "failback",
        CopyKind::DataGap => "data-gap",
    }
}

/// Everything the core loop needs besides the node.
struct Shell {
    cfg: Config,
    log: Log,
    store: Store,
    keys: Arc<RwLock<Option<Keys>>>,
    hb: Arc<Heartbeats>,
    /// The pair secret a registration's pairing agreed on, until the core installs it
    /// with the key (`Action::InstallKey`).
    staged_secret: Arc<Mutex<Option<PairSecret>>>,
    /// Why the last save of the HA state failed, while it does (reported once, and shown
    /// by `hamon status`).
    state_unsaved: Arc<RwLock<Option<String>>>,
    /// The Health Monitor's reserved client: the registered peer.
    reserved: Reserved,
    tx: Sender<Input>,
    duty_tx: Sender<DutyOrder>,
    waiting: HashMap<Token, Waiter>,
    next_token: u64,
    published: Arc<Published>,
    /// The registration's virtual IPs (sent along with every duty).
    vips: Vec<Vip>,
    sync: Arc<SyncService>,
    db: Option<Arc<dyn crate::db::Database>>,
    db_port: PeerPort,
    /// The peer's Health Monitor and database, once registered.
    peer: Option<PeerTarget>,
    /// Whether a standby's database should follow the peer's now: not while
    /// registration runs (its initial copy builds the standby).
    follow_peer: bool,
    /// The core took the active duty away itself (fenced, or the arbiter's lease lost):
    /// a database that is still writable is stopped with it.
    demoted: bool,
    /// Why the registration's mail recipients get no mail (`mail_unsent`).
    mail_unsent: Option<String>,
    /// The registration's mail recipients.
    emails: Vec<String>,
    notifier: Arc<crate::notify::dispatch::Dispatcher>,
    /// The arbiter's lease thread (`[arbiter]`).
    arbiter: Option<crate::arbiter::Arbiter>,
    /// Probes and events, for `/metrics`.
    counters: Arc<crate::web::metrics::Counters>,
    /// When the core began the step whose actions run now: the moment of its decision.
    stepped: Instant,
    /// The step's journal entries, saved together after its actions (one fsync).
    unsaved_journal: Vec<Stamped>,
}

/// Run the agent until SIGTERM (or SIGINT): start the adapters, then run
/// the core loop.
pub fn run(cfg: Config) -> Result<(), AgentError> {
    build(cfg)?.run()
}

/// The agent with every adapter started and the node restored, before its
/// first event.
struct Agent {
    shell: Shell,
    node: Node,
    rx: Receiver<Input>,
    stop: Arc<AtomicBool>,
    since_in_sync: Option<u64>,
    listening: String,
    control: control::Server,
    server: Server,
}

/// Lets the agent open as many descriptors as its hard limit allows. systemd gives a
/// service a soft limit of 1,024 and leaves raising it to the program; file sync holds
/// up to two descriptors for each file waiting in a commit group, besides the
/// connections. Failing is no reason not to start.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    // No process may have more than fs.nr_open descriptors (2^20 by default), whatever
    // the hard limit says (it may be unlimited).
    const NR_OPEN: u64 = 1 << 20;
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let want = hard.min(NR_OPEN);
        if soft < want {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, want, hard);
        }
    }
}

/// Start the adapters: the store, the heartbeat socket, the VIP clean-up,
/// notifications, the database driver, file sync, the Health Monitor, the
/// watchers, the control socket, signals and the duty executor.
fn build(cfg: Config) -> Result<Agent, AgentError> {
    raise_open_files_limit();
    let store = Store::open(&cfg.node.state_dir).map_err(io_err(format!(
        "state directory {}",
        cfg.node.state_dir.display()
    )))?;
    let initial_status = Node::new(node_config(&cfg), None).status();
    let published = Arc::new(Published {
        status: RwLock::new(initial_status),
        log_level: AtomicU8::new(initial_level(&store, cfg.log.level)),
    });
    let log = Log {
        published: published.clone(),
        tag: format!("hamon[{}]", cfg.node.name),
        file: cfg.log.file.then(|| {
            Arc::new(Mutex::new(LogFile {
                path: store.dir().join("hamon.log"),
                file: None,
            }))
        }),
        journal: log::stderr_is_journal(),
    };
    let restored = store.load_state().map_err(io_err("persisted HA state"))?;
    // The state file's blocks are held from the start, so that saving a state change
    // never needs free space (a full disk at the wrong moment must not lose it).
    if let Err(e) = store.reserve_state() {
        log.write(
            Severity::Warning,
            &format!("cannot reserve the HA state file (saving will try again): {e}"),
        );
    }
    let registered = restored.as_ref().is_some_and(|p| p.registration.is_some());
    let keys = store
        .working_keys(registered, true)
        .map_err(io_err("pair secret"))?;
    let keys = Arc::new(RwLock::new(keys));
    let since_in_sync = store
        .load_in_sync()
        .map_err(io_err("in-sync stamp"))?
        .map(|t| (peer_client::unix_ms() / 1000).saturating_sub(t));

    let (tx, rx) = unbounded::<Input>();
    let stop = Arc::new(AtomicBool::new(false));

    let hb_addr = SocketAddr::new(cfg.node.address, cfg.heartbeat.port);
    let identity = load_identity(&cfg, &store, &log)?;
    let mut node_cfg = node_config(&cfg);
    node_cfg.fingerprint = identity.as_ref().map(tls::fingerprint);
    let hb = start_heartbeats(
        hb_addr,
        &cfg.heartbeat.paths,
        node_cfg.role,
        keys.clone(),
        tx.clone(),
        stop.clone(),
    )?;
    hb.set_keyring(crate::peer::rekey::Keyring {
        store: store.clone(),
        keys: keys.clone(),
    });
    release_stale_vip(&cfg, restored.as_ref(), &log);
    let node = Node::new(node_cfg, restored);
    if let Ok(mut st) = published.status.write() {
        *st = node.status();
    }
    let notifier = Arc::new(
        crate::notify::dispatch::Dispatcher::start(&cfg.notify, store.dir(), monitor_url(&cfg))
            .map_err(|e| io_err("notifications")(std::io::Error::other(e)))?,
    );
    let driver = repl::driver(&cfg, identity.as_ref())
        .map_err(|e| io_err("database driver")(std::io::Error::other(e)))?;
    let db_port = PeerPort::from_config(&cfg);
    let sync = {
        let (log, events) = (log.clone(), tx.clone());
        SyncService::new(
            cfg.replication.clone(),
            PeerTarget {
                address: cfg.node.address.to_string(),
                hm_port: cfg.health_monitor.port,
                pin: None,
            },
            keys.clone(),
            cfg.health_monitor.tls,
            Box::new(move |error, text| {
                if error {
                    log.write(Severity::Warning, text)
                } else {
                    log.trace(text)
                }
            }),
            Box::new(move |kind, severity, text| {
                let _ = events.send(Input::Event(Event::Observation {
                    kind: kind.to_string(),
                    severity,
                    text,
                }));
            }),
            driver.as_ref().map(|db| {
                Arc::new(repl::DbCopies {
                    db: db.clone(),
                    port: db_port.clone(),
                    timeout: cfg.replication.copy_timeout,
                }) as Arc<dyn crate::sync::service::CopyDatabase>
            }),
        )
    };
    let services: Arc<RwLock<Vec<ServiceStatus>>> = Arc::new(RwLock::new(Vec::new()));
    let database_seen = Arc::new(RwLock::new(None));
    let counters = Arc::new(crate::web::metrics::Counters::default());
    let metrics = metrics_source(MetricsParts {
        published: published.clone(),
        hb: hb.clone(),
        notifier: notifier.clone(),
        sync: sync.clone(),
        services: services.clone(),
        database: database_seen.clone(),
        counters: counters.clone(),
    });
    let hm_addr = SocketAddr::new(cfg.node.address, cfg.health_monitor.port);
    let (server, fingerprint) = start_health_monitor(
        &cfg,
        hm_addr,
        HealthMonitorParts {
            store: store.clone(),
            core: tx.clone(),
            published: published.clone(),
            keys: keys.clone(),
            sync: sync.clone(),
            identity,
            metrics,
        },
    )?;

    let (rescan_tx, rescan_rx) = unbounded::<()>();
    let reporter = {
        let tx = tx.clone();
        Reporter::new(Arc::new(move |e| {
            let _ = tx.send(Input::Event(e));
        }))
    };
    crate::watch::run::start(&cfg, &reporter, rescan_rx, stop.clone(), driver.clone())
        .map_err(io_err("watcher threads"))?;
    if let (Some(db), Some(dbc)) = (&driver, &cfg.database) {
        repl::start_lag_watch(
            db.clone(),
            dbc.max_failover_lag_bytes,
            dbc.interval,
            reporter.clone(),
            database_seen.clone(),
            stop.clone(),
        )
        .map_err(io_err("replica watcher"))?;
    }
    start_sync_threads(&sync, &published, &tx, &stop)?;
    let arbiter = match &cfg.arbiter {
        None => None,
        Some(a) => {
            // "<role> <name> <address>": who holds the lease, for people and for this
            // server's next run (which takes up a lease its key names it in).
            let role = node.role().to_string().to_lowercase();
            let me = format!("{role} {} {}", cfg.node.name, cfg.node.address);
            let tx = tx.clone();
            let send = Arc::new(move |e| {
                let _ = tx.send(Input::Event(e));
            });
            Some(
                crate::arbiter::Arbiter::start(a, me, send)
                    .map_err(|e| io_err("arbiter")(std::io::Error::other(e)))?,
            )
        }
    };
    let state_unsaved: Arc<RwLock<Option<String>>> = Arc::default();
    let parts = ControlParts {
        store: store.clone(),
        keys: keys.clone(),
        hb: hb.clone(),
        fingerprint: fingerprint.clone(),
        services: services.clone(),
        rescan: rescan_tx,
        sync: sync.clone(),
        notifier: notifier.clone(),
        database: database_seen.clone(),
        published: published.clone(),
        state_unsaved: state_unsaved.clone(),
    };
    let control = start_control(&cfg, tx.clone(), parts)?;
    start_signals(tx.clone())?;
    let duty_tx = start_duty_executor(
        &cfg,
        tx.clone(),
        log.clone(),
        reporter.clone(),
        services.clone(),
        driver.clone(),
    )?;

    let shell = Shell {
        cfg,
        log,
        store,
        keys,
        hb,
        staged_secret: Arc::default(),
        state_unsaved: state_unsaved.clone(),
        reserved: server.reserved(),
        tx,
        duty_tx,
        waiting: HashMap::new(),
        next_token: 1,
        published,
        vips: Vec::new(),
        sync,
        db: driver,
        db_port,
        peer: None,
        follow_peer: false,
        demoted: false,
        mail_unsent: None,
        emails: Vec::new(),
        notifier,
        arbiter,
        counters,
        stepped: Instant::now(),
        unsaved_journal: Vec::new(),
    };
    Ok(Agent {
        shell,
        node,
        rx,
        stop,
        since_in_sync,
        listening: format!("listening: heartbeats {hb_addr}, Health Monitor {hm_addr}"),
        control,
        server,
    })
}

impl Agent {
    /// Start the core, tell systemd it is ready, and step the core until it
    /// says to exit; then stop the adapters.
    fn run(self) -> Result<(), AgentError> {
        let Agent {
            mut shell,
            mut node,
            rx,
            stop,
            since_in_sync,
            listening,
            control,
            server,
        } = self;
        shell.log.write(Severity::Info, &listening);
        let t0 = Instant::now();
        let now = || t0.elapsed().as_millis() as u64;
        shell.apply(
            &mut node,
            Event::Start {
                since_in_sync_secs: since_in_sync,
            },
            now(),
        );
        sd_notify("READY=1");
        let watchdog = watchdog_every();
        let mut last_watchdog = Instant::now();
        let exit = shell.core_loop(&mut node, &rx, t0, watchdog, &mut last_watchdog);
        sd_notify("STOPPING=1");
        stop.store(true, Ordering::Relaxed);
        shell.sync.stop();
        shell.notifier.stop();
        if let Some(a) = shell.arbiter.take() {
            // It gives a held lease up, so that the peer need not wait for its TTL.
            a.finish(Duration::from_secs(1));
        }
        drop(control);
        server.shutdown();
        exit
    }
}

/// The heartbeat socket, its receiver thread, and a thread that hands what
/// it accepts to the core's channel.
fn start_heartbeats(
    addr: SocketAddr,
    paths: &[crate::config::HeartbeatPath],
    role: ha::Role,
    keys: Arc<RwLock<Option<Keys>>>,
    tx: Sender<Input>,
    stop: Arc<AtomicBool>,
) -> Result<Arc<Heartbeats>, AgentError> {
    let hb = Arc::new(
        Heartbeats::bind(addr, keys, role)
            .and_then(|hb| hb.with_paths(paths, addr.port()))
            .map_err(io_err(format!("heartbeat socket {addr}")))?,
    );
    let (ev_tx, ev_rx) = unbounded::<Event>();
    for i in 0..hb.path_count() {
        let (receiver, tx, stop) = (hb.clone(), ev_tx.clone(), stop.clone());
        std::thread::Builder::new()
            .name(format!("heartbeat-rx{}", i + 1))
            .spawn(move || receiver.run_path_receiver(i, tx, &stop))
            .map_err(io_err("heartbeat thread"))?;
    }
    let receiver = hb.clone();
    std::thread::Builder::new()
        .name("heartbeat-rx".into())
        .spawn(move || receiver.run_receiver(ev_tx, &stop))
        .map_err(io_err("heartbeat thread"))?;
    std::thread::Builder::new()
        .name("heartbeat-fwd".into())
        .spawn(move || {
            for ev in ev_rx {
                if tx.send(Input::Event(ev)).is_err() {
                    break;
                }
            }
        })
        .map_err(io_err("heartbeat thread"))?;
    Ok(hb)
}

/// A VIP left on this interface (a crash, a kill -9) is removed before
/// anything else: the core claims it again only once it decides to be active.
fn release_stale_vip(cfg: &Config, restored: Option<&ha::Persisted>, log: &Log) {
    let held = restored
        .and_then(|p| p.registration.as_ref())
        .map(|r| vip::parse_vips(&r.vips).unwrap_or_default())
        .unwrap_or_default();
    if let Some(iface) = &cfg.node.interface {
        match vip::release_on(iface, &held) {
            Ok(gone) if !gone.is_empty() => log.write(
                Severity::Warning,
                &format!("removed a stale virtual IP from {iface} at start: {gone:?}"),
            ),
            Ok(_) => {}
            Err(errors) => log.write(Severity::Error, &errors.join("; ")),
        }
    }
}

/// This server's Health Monitor page, for the links in notifications.
fn monitor_url(cfg: &Config) -> String {
    let scheme = if cfg.health_monitor.tls {
        "https"
    } else {
        "http"
    };
    let host = match cfg.node.address {
        IpAddr::V6(a) => format!("[{a}]"),
        IpAddr::V4(a) => a.to_string(),
    };
    format!("{scheme}://{host}:{}/", cfg.health_monitor.port)
}

/// What the Health Monitor's application serves from.
struct HealthMonitorParts {
    store: Store,
    core: Sender<Input>,
    published: Arc<Published>,
    keys: Arc<RwLock<Option<Keys>>>,
    sync: Arc<SyncService>,
    identity: Option<tls::Identity>,
    metrics: crate::web::app::MetricsFn,
}

/// The Health Monitor's TLS identity unless `tls = false`: a self-signed one is made on
/// first start.
fn load_identity(
    cfg: &Config,
    store: &Store,
    log: &Log,
) -> Result<Option<tls::Identity>, AgentError> {
    if !cfg.health_monitor.tls {
        return Ok(None);
    }
    let names = vec![cfg.node.address.to_string(), cfg.node.name.clone()];
    let id = tls::load_or_create(store.dir(), &names)
        .map_err(|e| io_err("TLS certificate")(std::io::Error::other(e.to_string())))?;
    log.write(
        Severity::Info,
        &format!(
            "Health Monitor certificate SHA-256 {}",
            tls::fingerprint(&id)
        ),
    );
    Ok(Some(id))
}

/// The Health Monitor (page, JSON API, peer API, file sync) on `hm_addr`;
/// also the certificate's fingerprint when it serves HTTPS.
fn start_health_monitor(
    cfg: &Config,
    hm_addr: SocketAddr,
    parts: HealthMonitorParts,
) -> Result<(Server, Option<String>), AgentError> {
    let HealthMonitorParts {
        store,
        core,
        published,
        keys,
        sync,
        identity,
        metrics,
    } = parts;
    let fingerprint = identity.as_ref().map(tls::fingerprint);
    let app = Arc::new(App {
        core: Arc::new(Link { tx: core }),
        published,
        store,
        keys,
        verifier: Mutex::new(Verifier::new(
            cfg.heartbeat.max_clock_skew.as_millis() as u64,
            peer_client::unix_ms(),
        )),
        address: cfg.node.address.to_string(),
        interface: cfg.node.interface.clone(),
        hm_port: cfg.health_monitor.port,
        tls: identity.is_some(),
        fingerprint: fingerprint.clone(),
        sessions: Mutex::new(session::Sessions::new(
            cfg.health_monitor.session_ttl.as_secs(),
        )),
        session_ttl: cfg.health_monitor.session_ttl.as_secs(),
        throttle: Mutex::new(session::LoginThrottle::new()),
        flash: Arc::new(Mutex::new(None)),
        sync: Some(sync),
        pairings: Mutex::default(),
        metrics: Some(metrics),
        metrics_scrapers: cfg.health_monitor.metrics_scrapers.clone(),
    });
    let limits = Limits {
        max_connections: cfg.health_monitor.max_connections as usize,
        max_per_client: cfg.health_monitor.max_connections_per_client as usize,
        // Every connection allowed may wait for a worker at once.
        queue: cfg.health_monitor.max_connections as usize,
        ..Limits::default()
    };
    let server = match &identity {
        Some(id) => {
            let tls = tls::server_config(id)
                .map_err(|e| io_err("TLS")(std::io::Error::other(e.to_string())))?;
            Server::bind_tls(hm_addr, limits, app, tls)
        }
        None => Server::bind(hm_addr, limits, app),
    }
    .map_err(io_err(format!("Health Monitor port {hm_addr}")))?;
    Ok((server, fingerprint))
}

/// What `/metrics` reads, besides the core's published status.
struct MetricsParts {
    published: Arc<Published>,
    hb: Arc<Heartbeats>,
    notifier: Arc<crate::notify::dispatch::Dispatcher>,
    sync: Arc<SyncService>,
    services: Arc<RwLock<Vec<ServiceStatus>>>,
    database: Arc<RwLock<Option<crate::replication::DbSeen>>>,
    counters: Arc<crate::web::metrics::Counters>,
}

/// `/metrics`' renderer: one read of each source per scrape, never the core's queue.
fn metrics_source(p: MetricsParts) -> crate::web::app::MetricsFn {
    let ours = crate::version::Version::ours();
    Arc::new(move || {
        let mut status = p.published.status.read().map(|s| s.clone()).ok()?;
        status.peer_version = p.hb.peer_version();
        let heartbeats = p.hb.stats.counts();
        let services = p.services.read().map(|s| s.clone()).unwrap_or_default();
        let database = p.database.read().ok().and_then(|d| d.clone());
        let c = &p.counters;
        Some(crate::web::metrics::render(&crate::web::metrics::Scrape {
            ours: &ours,
            heartbeats: &heartbeats,
            probes: (
                c.probes_ok.load(Ordering::Relaxed),
                c.probes_failed.load(Ordering::Relaxed),
            ),
            events: &c.events(),
            notify: &p.notifier.stats(),
            sync: &p.sync.progress(Some(&status)),
            database: database.as_ref(),
            services: &services,
            status: &status,
        }))
    })
}

/// File sync's threads: the puller (every server: it pulls while standby)
/// and, when sets are configured, the inotify hinter (it hints while active).
fn start_sync_threads(
    sync: &Arc<SyncService>,
    published: &Arc<Published>,
    tx: &Sender<Input>,
    stop: &Arc<AtomicBool>,
) -> Result<(), AgentError> {
    {
        let (sync, published, tx) = (sync.clone(), published.clone(), tx.clone());
        std::thread::Builder::new()
            .name("sync-pull".into())
            .spawn(move || {
                sync.run_puller(
                    move || published.status.read().ok().map(|s| s.clone()),
                    move |lag| {
                        let _ = tx.send(Input::Event(Event::SyncBeat { lag }));
                    },
                )
            })
            .map_err(io_err("sync thread"))?;
    }
    if sync.has_sets() {
        let (sync, published, stop) = (sync.clone(), published.clone(), stop.clone());
        std::thread::Builder::new()
            .name("sync-hint".into())
            .spawn(move || {
                sync.run_hinter(|| published.status.read().ok().map(|s| s.clone()), &stop)
            })
            .map_err(io_err("sync thread"))?;
    }
    Ok(())
}

fn start_signals(tx: Sender<Input>) -> Result<(), AgentError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(io_err("signals"))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let input = if sig == SIGHUP {
                    Input::Reload
                } else {
                    Input::Event(Event::Shutdown)
                };
                if tx.send(input).is_err() {
                    break;
                }
            }
        })
        .map_err(io_err("signal thread"))?;
    Ok(())
}

impl Shell {
    fn core_loop(
        &mut self,
        node: &mut Node,
        rx: &Receiver<Input>,
        t0: Instant,
        watchdog: Option<Duration>,
        last_watchdog: &mut Instant,
    ) -> Result<(), AgentError> {
        // The core counts whole milliseconds from `t0`.
        let now = || t0.elapsed().as_millis() as u64;
        loop {
            // Wake at the deadline's own instant, not a whole millisecond counted from a
            // `now` already up to one millisecond old: a detection budget of a few
            // milliseconds must not lose half of one to rounding.
            let mut wait = match node.next_deadline() {
                Some(t) => {
                    (t0 + Duration::from_millis(t)).saturating_duration_since(Instant::now())
                }
                None => Duration::from_secs(3600),
            };
            if let Some(w) = watchdog {
                wait = wait.min(w.saturating_sub(last_watchdog.elapsed()));
            }
            let input = match rx.recv_timeout(wait) {
                Ok(i) => Some(i),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            if let Some(w) = watchdog {
                if last_watchdog.elapsed() >= w {
                    sd_notify("WATCHDOG=1");
                    *last_watchdog = Instant::now();
                }
            }
            let event = match input {
                None => Event::Tick,
                Some(Input::Event(e)) => e,
                Some(Input::Command(command, reply)) => {
                    let token = self.token();
                    self.waiting.insert(token, Waiter::Operator(reply));
                    Event::Command { token, command }
                }
                Some(Input::Peer(request, reply)) => {
                    let token = self.token();
                    self.waiting.insert(token, Waiter::Peer(reply));
                    Event::PeerRequest { token, request }
                }
                Some(Input::Reload) => {
                    self.reload();
                    continue;
                }
            };
            if node.next_deadline().is_some_and(|t| t <= now()) && !matches!(event, Event::Tick) {
                // Deadlines first: an event storm must not starve the timers.
                if self.apply(node, Event::Tick, now()) {
                    return Ok(());
                }
            }
            if self.apply(node, event, now()) {
                return Ok(());
            }
        }
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    /// SIGHUP: re-read what can change safely (the keys, the log level).
    fn reload(&mut self) {
        if let Ok(Some(k)) = self.store.working_keys(self.peer.is_some(), false) {
            if let Ok(mut keys) = self.keys.write() {
                *keys = Some(k);
            }
        }
        if let Ok(cfg) = Config::load(&self.cfg.path) {
            let level = initial_level(&self.store, cfg.log.level);
            self.log.published.log_level.store(level, Ordering::Relaxed);
        }
        self.log.write(
            Severity::Info,
            "reloaded the authentication key and log level",
        );
    }

    /// How this server calls its peer: from its own address, so that the peer's Health
    /// Monitor knows it and serves it from the reserved workers.
    fn link(&self) -> peer_client::Link {
        peer_client::Link {
            from: Some(self.cfg.node.address),
            tls: self.cfg.health_monitor.tls,
        }
    }

    /// What the shell adds to the core's status view: the arbiter's etcd side, and mail
    /// that goes nowhere.
    fn add_shell_views(&self, status: &mut ha::StatusView) {
        status.arbiter = self.arbiter.as_ref().map(|a| a.view());
        status.mail_unsent = self.mail_unsent.clone();
        status.version = Some(crate::version::Version::ours());
        status.peer_version = self.hb.peer_version();
    }

    /// Step the core and carry out its actions; true when the agent may exit.
    fn apply(&mut self, node: &mut Node, event: Event, now: u64) -> bool {
        self.stepped = Instant::now();
        self.log.trace(&format!("event {event:?}"));
        let mut actions = ha::step(node, event, now);
        // A new duty and the heartbeats that announce it go out before the step's
        // journal and state are written (each an fsync): a takeover claims the VIP
        // without waiting for the disk. Nothing the core says depends on that order.
        actions.sort_by_key(|a| !matches!(a, Action::SetDuty(_) | Action::SendHeartbeat { .. }));
        let mut view = node.status();
        self.demoted = view.fenced || view.lease == Some(ha::Lease::Lost);
        self.mail_unsent = mail_unsent(&self.cfg, node.registration());
        self.add_shell_views(&mut view);
        if let Ok(mut st) = self.published.status.write() {
            *st = view;
        }
        self.vips = node
            .registration()
            .map(|r| vip::parse_vips(&r.vips).unwrap_or_default())
            .unwrap_or_default();
        let peer = node.peer_target();
        if peer != self.peer {
            // Heartbeats are read only from the registered peer's address, and the
            // Health Monitor keeps workers for it.
            let address = peer.as_ref().and_then(|p| p.address.parse().ok());
            self.hb.set_peer(address);
            self.reserved.set(address);
            self.peer = peer;
        }
        self.follow_peer = node.state() != ha::HaState::HaInitializing;
        self.emails = node
            .registration()
            .map(|r| r.emails.clone())
            .unwrap_or_default();
        let mut exit = false;
        for action in actions {
            exit |= self.execute(action);
        }
        self.save_journal();
        exit
    }

    /// Appends the step's journal entries so far, with one fsync.
    fn save_journal(&mut self) {
        if !self.unsaved_journal.is_empty() {
            if let Err(e) = self.store.append_journal(&self.unsaved_journal) {
                self.log
                    .write(Severity::Error, &format!("event journal: {e}"));
            }
            self.unsaved_journal.clear();
        }
    }

    fn execute(&mut self, action: Action) -> bool {
        match action {
            Action::SendHeartbeat {
                address,
                port,
                beacon,
            } => {
                if let Ok(ip) = address.parse::<IpAddr>() {
                    if let Err(e) = self.hb.send(SocketAddr::new(ip, port), beacon) {
                        self.log.trace(&format!("heartbeat to {address}: {e}"));
                    }
                }
            }
            Action::Lease { hold, pair, gen } => {
                if let Some(a) = &self.arbiter {
                    a.order(hold, pair, gen);
                }
            }
            Action::FencePeer { peer } => {
                let tx = self.tx.clone();
                let fail = self.tx.clone();
                let fencing = self.cfg.fencing.clone();
                let spawned = std::thread::Builder::new()
                    .name("fence".into())
                    .spawn(move || {
                        let (ok, detail) = match &fencing {
                            Some(f) => {
                                match run_hook(&f.command, f.timeout, &[("HAMON_PEER", peer)]) {
                                    Ok(()) => (true, "the fencing command succeeded".to_string()),
                                    Err(e) => (false, e),
                                }
                            }
                            None => (false, "no [fencing] command".to_string()),
                        };
                        let _ = tx.send(Input::Event(Event::FenceDone { ok, detail }));
                    });
                if let Err(e) = spawned {
                    // The core waits for an answer: give it one.
                    let detail = format!("cannot start the fencing thread: {e}");
                    let _ = fail.send(Input::Event(Event::FenceDone { ok: false, detail }));
                }
            }
            Action::Probe { target } => {
                let tx = self.tx.clone();
                let timeout = self.cfg.heartbeat.probe_timeout;
                let link = self.link();
                let counters = self.counters.clone();
                let _ = std::thread::Builder::new()
                    .name("probe".into())
                    .spawn(move || {
                        let (ok, detail) = match peer_client::probe(&target, link, timeout) {
                            Ok(_) => (true, "answered".to_string()),
                            Err(e) => (false, e),
                        };
                        counters.probe(ok);
                        let _ = tx.send(Input::Event(Event::ProbeDone { ok, detail }));
                    });
            }
            Action::PeerCall {
                id,
                target,
                request,
                key,
            } => {
                let call = PeerCall {
                    target,
                    request,
                    key,
                    link: self.link(),
                    store: self.store.clone(),
                    keys: self.keys.clone(),
                    staged: self.staged_secret.clone(),
                };
                let tx = self.tx.clone();
                let _ = std::thread::Builder::new()
                    .name("peer-call".into())
                    .spawn(move || {
                        let result = call.run();
                        let _ = tx.send(Input::Event(Event::PeerReply { id, result }));
                    });
            }
            Action::Reply { token, mut reply } => {
                // What the command caused is in the journal before its caller hears back
                // (a `hamon events` right after it finds it).
                self.save_journal();
                if let ha::Reply::Status { status } = &mut reply {
                    self.add_shell_views(status);
                }
                if let Some(Waiter::Operator(tx)) = self.waiting.remove(&token) {
                    let _ = tx.send(reply);
                }
            }
            Action::Answer { token, answer } => {
                if let Some(Waiter::Peer(tx)) = self.waiting.remove(&token) {
                    let _ = tx.send(answer);
                }
            }
            Action::SetDuty(duty) => {
                let order = DutyOrder {
                    duty,
                    vips: self.vips.clone(),
                    peer_db: self
                        .peer
                        .as_ref()
                        .filter(|_| self.follow_peer)
                        .map(|p| self.db_port.at(&p.address)),
                    stop_writes: duty == Duty::Halted && self.demoted,
                    vips_only: false,
                    decided: self.stepped,
                };
                let _ = self.duty_tx.send(order);
            }
            Action::MoveVips { from, to } => {
                self.log.write(
                    Severity::Info,
                    &format!("virtual IPs {from:?} -> {to:?} (a settings change)"),
                );
                // `self.vips` already follows the registration; the duty thread moves them
                // only if it holds the active duty.
                let order = DutyOrder {
                    duty: Duty::Active,
                    vips: self.vips.clone(),
                    peer_db: None,
                    stop_writes: false,
                    vips_only: true,
                    decided: self.stepped,
                };
                let _ = self.duty_tx.send(order);
            }
            Action::StartCopy(kind) => {
                let tx = self.tx.clone();
                let hook = self.cfg.hooks.full_copy.clone();
                let timeout = self.cfg.hooks.timeout;
                let (sync, db, peer) = (self.sync.clone(), self.db.clone(), self.peer.clone());
                let log = self.log.clone();
                let answer = self.tx.clone();
                let spawned = std::thread::Builder::new()
                    .name("copy".into())
                    .spawn(move || {
                        let name = copy_name(kind);
                        let started = Instant::now();
                        // The core waits for exactly one CopyDone: a panic is a failed copy.
                        let copied =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(
                                || match &peer {
                                    Some(p) => repl::run_copy(kind, &sync, db.as_deref(), p),
                                    None => Err("no peer registered".to_string()),
                                },
                            ))
                            .unwrap_or_else(|_| Err("the copy thread panicked".to_string()));
                        // The operator's hook copies whatever else the appliance needs.
                        let env = [("HAMON_COPY", name.to_string())];
                        let result = copied.and_then(|()| match hook {
                            Some(argv) => run_hook(&argv, timeout, &env),
                            None => Ok(()),
                        });
                        log.write(
                            if result.is_ok() {
                                Severity::Info
                            } else {
                                Severity::Error
                            },
                            &format!(
                                "{name} copy {} after {} ms",
                                match &result {
                                    Ok(()) => "complete".to_string(),
                                    Err(e) => format!("failed: {e}"),
                                },
                                started.elapsed().as_millis()
                            ),
                        );
                        let _ = tx.send(Input::Event(Event::CopyDone { kind, result }));
                    });
                if let Err(e) = spawned {
                    let result = Err(format!("cannot start the copy thread: {e}"));
                    let _ = answer.send(Input::Event(Event::CopyDone { kind, result }));
                }
            }
            Action::Persist(p) => {
                let saved = self.store.save_state(&p);
                if let Err(e) = &saved {
                    self.log
                        .write(Severity::Error, &format!("persisting HA state: {e}"));
                }
                // Loudly, once per episode: the journal may be on the same full disk,
                // but notifications and `hamon status` are not.
                let failing = saved.is_err();
                let was_failing = self.state_unsaved.read().is_ok_and(|s| s.is_some());
                if let Ok(mut s) = self.state_unsaved.write() {
                    *s = saved.as_ref().err().map(|e| e.to_string());
                }
                if failing != was_failing {
                    let (kind, severity, text) = match saved {
                        Err(e) => (
                            "agent_state_unsaved",
                            Severity::Error,
                            format!("the state {:?} could not be written: {e}", p.state),
                        ),
                        Ok(()) => (
                            "agent_state_saved",
                            Severity::Info,
                            format!("the state {:?} is written", p.state),
                        ),
                    };
                    let _ = self.tx.send(Input::Event(Event::Observation {
                        kind: kind.to_string(),
                        severity,
                        text,
                    }));
                }
            }
            Action::StampInSync => {
                if let Err(e) = self.store.save_in_sync(peer_client::unix_ms() / 1000) {
                    self.log
                        .write(Severity::Error, &format!("in-sync stamp: {e}"));
                }
            }
            Action::InstallKey(k) => {
                // Staged by the registration's call; written afresh if it was not.
                let _ = self.store.commit_authkey();
                let stored = self.store.load_authkey().ok().flatten();
                if stored.as_deref() != Some(k.expose()) {
                    if let Err(e) = self.store.save_authkey(k.expose()) {
                        self.log.write(
                            Severity::Error,
                            &format!("saving the authentication key: {e}"),
                        );
                    }
                }
                // The secret the registration's pairing agreed on (staged on disk by then).
                let staged = self.staged_secret.lock().ok().and_then(|mut s| s.take());
                if let Some(secret) = staged {
                    if let Err(e) = self.store.commit_secret(&pair_tag(&secret)) {
                        self.log.write(
                            Severity::Error,
                            &format!("putting the new pair secret in place: {e}"),
                        );
                    }
                    if let Ok(mut keys) = self.keys.write() {
                        *keys = Some(secret.keys());
                    }
                }
            }
            Action::PurgeData => {
                if let Err(e) = self.store.purge_data() {
                    self.log
                        .write(Severity::Error, &format!("purging HA data: {e}"));
                }
            }
            Action::Journal(entry) => {
                self.log
                    .write(entry.severity, &format!("[{}] {}", entry.kind, entry.text));
                self.counters.event(&entry.kind);
                let time = peer_client::unix_ms() / 1000;
                self.notifier.send(crate::notify::dispatch::Happened {
                    entry: entry.clone(),
                    time_unix: time,
                    node: self.cfg.node.name.clone(),
                    role: match self.cfg.node.role {
                        config::Role::Primary => ha::Role::Primary,
                        config::Role::Secondary => ha::Role::Secondary,
                    },
                    peer_address: self.peer.as_ref().map(|p| p.address.clone()),
                    emails: self.emails.clone(),
                });
                self.unsaved_journal.push(Stamped { time, entry });
            }
            Action::Exit => return true,
        }
        false
    }
}

/// Why the registration's mail recipients get no mail, if they do not: the warning
/// `hamon status`, the page and the API show, and registration repeats.
pub(super) fn mail_unsent(cfg: &Config, reg: Option<&ha::Registration>) -> Option<String> {
    let emails = &reg?.emails;
    if emails.is_empty() || cfg.notify.mail.is_some() {
        return None;
    }
    Some(format!(
        "NO MAIL IS SENT to {}: this server's configuration has no [notify.mail] section",
        emails.join(", ")
    ))
}
