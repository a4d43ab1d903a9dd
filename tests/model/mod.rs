//! A bounded, exhaustive explorer of hamon's pure core (`hamon::ha::step`), shared by the
//! CI test (`tests/model_check.rs`) and the deeper bench run (`bench/model/run.sh`).
//!
//! The world: two servers (each a `Node`, or down), what each has on disk, whether each
//! holds the pair's key, the executors' last applied duty, the messages and executor
//! results in flight, three links that can be cut (primary-secondary, primary-etcd,
//! secondary-etcd) and, when configured, the arbiter: an etcd key with a holder and an
//! expiry, and each server's arbiter thread. Breadth-first search from one start state over
//! every choice the world allows (deliver any message early, in any order; lose one;
//! duplicate a heartbeat; crash or restart a server; cut or heal a link; an operator
//! command; or let time pass), within bounds, with a visited set of 64-bit fingerprints of
//! the whole world (the `Debug` text of both nodes, hashed without allocating, and the rest).
//!
//! Time is discrete: "advance" first delivers everything whose latest delivery time has
//! come (in a fixed order), then moves the clock to the earliest of: a node's
//! `next_deadline()`, an arbiter thread's next wake, the etcd key's expiry, a message's
//! latest delivery time; and steps `Event::Tick` on every node then due. Any message may be
//! delivered earlier, at any point between, by an explicit choice.
//!
//! See `bench/model/README.md` for what is modelled, the properties and the limits.

use hamon::ha::sim::{register_command, KEY};
use hamon::ha::{
    Action, ArbiterLoss, Beacon, Command, CopyKind, Duty, Event, FailoverType, FencePolicy,
    HaState, Link, Millis, Node, NodeConfig, PeerAnswer, PeerRequest, Persisted, Reply, Role,
    Timers, Token,
};
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::time::{Duration, Instant};

/// The step function under test: `hamon::ha::step`, or a mutated wrapper around it.
pub type StepFn = fn(&mut Node, Event, Millis) -> Vec<Action>;

pub const P: usize = 0;
pub const S: usize = 1;
const NAMES: [&str; 2] = ["P", "S"];

/// Links that can be cut.
pub const LINK_PS: usize = 0;
pub const LINK_P_ETCD: usize = 1;
pub const LINK_S_ETCD: usize = 2;
const LINK_NAMES: [&str; 3] = ["P-S", "P-etcd", "S-etcd"];

const OPERATOR: Token = Token(1);
const PEER: Token = Token(2);

/// Small timers, so that few ticks separate the interesting moments: heartbeats every
/// 100 ms, silent after 2 missed, 100 ms grace, 100 ms probe (a 400 ms detection).
pub fn model_timers() -> Timers {
    Timers {
        interval: 100,
        missed: 2,
        grace: 100,
        probe_timeout: 100,
        data_gap_secs: 24 * 3600,
        copy_retry: 1_000,
    }
}

fn node_config(role: Role, arbiter: Option<ArbiterLoss>) -> NodeConfig {
    // The same identities as `hamon::ha::sim` (whose `register_command` names them).
    let (name, address) = match role {
        Role::Primary => ("ha-a", "192.0.2.11"),
        Role::Secondary => ("ha-b", "192.0.2.12"),
    };
    NodeConfig {
        name: name.into(),
        role,
        address: address.into(),
        hm_port: 8082,
        hb_port: 8083,
        fingerprint: None,
        timers: model_timers(),
        witness: false,
        fence: FencePolicy::Off,
        arbiter,
    }
}

fn role_of(i: usize) -> Role {
    if i == P {
        Role::Primary
    } else {
        Role::Secondary
    }
}

// ----- configuration ---------------------------------------------------------------------

/// How far the search goes and which faults it may inject (each a budget per path).
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Choices along one path (breadth-first layers).
    pub depth: usize,
    /// Stop (and say so) after this many distinct states.
    pub max_states: usize,
    /// Messages lost (a heartbeat, a peer call or its answer, a probe or a copy that fails
    /// although the peer is there).
    pub drops: u8,
    /// Heartbeats delivered twice.
    pub dups: u8,
    /// Server crashes (power loss or kill -9); restarts are free.
    pub crashes: u8,
    /// Link cuts and heals (each toggle counts).
    pub cuts: u8,
    /// Operator commands.
    pub commands: u8,
    /// At most this many network messages in flight for a duplicate to be made.
    pub in_flight: usize,
    /// The latest a network message arrives after it is sent.
    pub net_delay: Millis,
    /// The latest a data copy finishes after it starts.
    pub copy_delay: Millis,
    /// Check the healed-liveness property on states whose fingerprint is a multiple of this
    /// (1: every state; 0: never).
    pub liveness_every: u64,
    /// How long the healed world runs before exactly one server must be active.
    pub settle_ms: Millis,
    /// The longest a `Choice::Run` lets time pass.
    pub run_ms: Millis,
}

impl Bounds {
    /// Bounds from `HAMON_MODEL_*` environment variables, with `base` for those unset.
    pub fn from_env(base: Bounds) -> Bounds {
        fn var<T: std::str::FromStr>(name: &str, d: T) -> T {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(d)
        }
        Bounds {
            depth: var("HAMON_MODEL_DEPTH", base.depth),
            max_states: var("HAMON_MODEL_MAX_STATES", base.max_states),
            drops: var("HAMON_MODEL_DROPS", base.drops),
            dups: var("HAMON_MODEL_DUPS", base.dups),
            crashes: var("HAMON_MODEL_CRASHES", base.crashes),
            cuts: var("HAMON_MODEL_CUTS", base.cuts),
            commands: var("HAMON_MODEL_COMMANDS", base.commands),
            in_flight: var("HAMON_MODEL_IN_FLIGHT", base.in_flight),
            net_delay: var("HAMON_MODEL_NET_DELAY", base.net_delay),
            copy_delay: var("HAMON_MODEL_COPY_DELAY", base.copy_delay),
            liveness_every: var("HAMON_MODEL_LIVENESS_EVERY", base.liveness_every),
            settle_ms: var("HAMON_MODEL_SETTLE_MS", base.settle_ms),
            run_ms: var("HAMON_MODEL_RUN_MS", base.run_ms),
        }
    }
}

/// Where the search starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// A registered pair (Primary Active, Secondary Syncing), reached by a fault-free
    /// registration in the model itself and the world left to settle.
    Registered,
    /// Two freshly installed servers (Stand Alone; only the secondary has the key); the
    /// operator's `ha register` on the primary is one of the search's choices.
    Fresh,
}

/// An operator command the search may issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cmd {
    /// `ha register` on the primary (Stand Alone), with the secondary's key.
    Register,
    /// `ha failover` on the secondary (Lost Primary or Alone).
    Failover,
    /// `ha failback` on the secondary (Secondary Active).
    Failback,
}

/// The properties checked.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checks {
    /// Never two servers with an active duty (for a model with an arbiter).
    pub one_active: bool,
    /// Healed, restarted and left alone, a registered pair has exactly one active server
    /// within `settle_ms` (for a model without an arbiter).
    pub healed_one_active: bool,
    /// Once the secondary took over, the primary gets the active duty back only after a
    /// `ha failback` accepted on that path.
    pub failback_by_command: bool,
    /// In every quiescent state both servers are registered under the same id, or neither.
    pub registration_atomic: bool,
}

/// One model: a configuration of the pair, a start, the faults, the properties, and the
/// step function under test.
#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub failover: FailoverType,
    pub arbiter: Option<Arbiter>,
    pub start: Start,
    pub commands: Vec<Cmd>,
    pub checks: Checks,
    pub bounds: Bounds,
    pub step: StepFn,
}

/// The arbiter's configuration: the lease's TTL on etcd, the thread's safety margin, and
/// what the core does on a lost lease.
#[derive(Debug, Clone, Copy)]
pub struct Arbiter {
    pub on_loss: ArbiterLoss,
    pub ttl: Millis,
    pub margin: Millis,
}

// ----- the world --------------------------------------------------------------------------

/// Something in flight: a network message, or an executor's or arbiter thread's answer.
#[derive(Debug, Clone, PartialEq)]
enum Msg {
    Heartbeat {
        from: usize,
        beacon: Beacon,
        seq: u64,
    },
    /// A peer call; `orphan` once its caller crashed (its answer goes nowhere).
    Request {
        from: usize,
        orphan: bool,
        id: u64,
        authentic: bool,
        request: PeerRequest,
    },
    Reply {
        to: usize,
        id: u64,
        result: Result<PeerAnswer, String>,
    },
    /// A probe of the peer's Health Monitor by `on`; its verdict is taken on delivery.
    Probe {
        on: usize,
    },
    /// A data copy run by `on` with its peer; its result is taken on delivery.
    Copy {
        on: usize,
        kind: CopyKind,
    },
    Duty {
        on: usize,
        duty: Duty,
    },
    Lease {
        on: usize,
        gen: u64,
        held: bool,
    },
}

impl Msg {
    /// The server this reaches.
    fn dest(&self) -> usize {
        match self {
            Msg::Heartbeat { from, .. } | Msg::Request { from, .. } => 1 - from,
            Msg::Reply { to, .. } => *to,
            Msg::Probe { on } | Msg::Copy { on, .. } | Msg::Duty { on, .. } => *on,
            Msg::Lease { on, .. } => *on,
        }
    }
    /// The server that sent this over the network.
    fn sender(&self) -> Option<usize> {
        match self {
            Msg::Heartbeat { from, .. } | Msg::Request { from, .. } => Some(*from),
            Msg::Reply {
                to, result: Ok(_), ..
            } => Some(1 - to),
            _ => None,
        }
    }
    fn rank(&self) -> u8 {
        match self {
            Msg::Duty { .. } => 0,
            Msg::Lease { .. } => 1,
            Msg::Copy { .. } => 2,
            Msg::Probe { .. } => 3,
            Msg::Reply { .. } => 4,
            Msg::Request { .. } => 5,
            Msg::Heartbeat { .. } => 6,
        }
    }
    fn network(&self) -> bool {
        matches!(self, Msg::Heartbeat { .. } | Msg::Request { .. })
            || matches!(self, Msg::Reply { result: Ok(_), .. })
    }
    fn label(&self) -> String {
        match self {
            Msg::Heartbeat { from, beacon, .. } => format!(
                "heartbeat {}->{} ({:?}{}{})",
                NAMES[*from],
                NAMES[1 - from],
                beacon.state,
                if beacon.active { ", active" } else { "" },
                if beacon.asks { ", asks" } else { "" }
            ),
            Msg::Request {
                from, id, request, ..
            } => format!(
                "request {}->{} #{id} {}",
                NAMES[*from],
                NAMES[1 - from],
                request.op()
            ),
            Msg::Reply { to, id, result } => format!(
                "reply ->{} #{id} {}",
                NAMES[*to],
                match result {
                    Ok(a) if a.is_accepted() => "accepted".to_string(),
                    Ok(_) => "refused".to_string(),
                    Err(e) => format!("error ({e})"),
                }
            ),
            Msg::Probe { on } => format!("probe result on {}", NAMES[*on]),
            Msg::Copy { on, kind } => format!("copy {kind:?} done on {}", NAMES[*on]),
            Msg::Duty { on, duty } => format!("duty {duty:?} applied on {}", NAMES[*on]),
            Msg::Lease { on, gen, held } => {
                format!("lease report gen {gen} held={held} to {}", NAMES[*on])
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Pending {
    /// The latest time it is delivered (or lost).
    due: Millis,
    msg: Msg,
}

/// etcd's key for the pair, and each server's arbiter thread. A thread wakes at every
/// moment the model visits (so it renews as often as anything happens: one legal schedule
/// of renewals, the fastest), and at its own safety deadline.
#[derive(Debug, Clone, Default)]
struct Etcd {
    /// Who holds the key, and when its lease expires (etcd's clock = model time).
    holder: Option<(usize, Millis)>,
    /// The generation each thread is asked to hold (`None`: released).
    want: [Option<u64>; 2],
    /// Until when each thread's last renewal keeps it safe (`None`: it holds nothing).
    safe_until: [Option<Millis>; 2],
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Used {
    drops: u8,
    dups: u8,
    crashes: u8,
    cuts: u8,
    commands: u8,
}

/// A choice the search makes in a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Advance,
    /// Let time pass without faults until something visible changes (a server's state,
    /// duty, link or lease holder), or `run_ms`: a shortcut through waits.
    Run,
    Deliver(u8),
    Drop(u8),
    Dup(u8),
    Crash(u8),
    Restart(u8),
    Cut(u8),
    Command(Cmd),
}

#[derive(Clone)]
struct World {
    now: Millis,
    nodes: [Option<Node>; 2],
    disk: [Option<Persisted>; 2],
    keyed: [bool; 2],
    /// Heartbeat frames each server sent in its current boot (their sequence numbers).
    frames: [u64; 2],
    /// The duty each server's executors last applied (Halted while down).
    exec: [Duty; 2],
    pending: Vec<Pending>,
    cut: [bool; 3],
    etcd: Option<Etcd>,
    used: Used,
    /// The secondary's executors applied the active duty while the primary held none (a
    /// takeover).
    took_over: bool,
    /// Since that takeover, both held the active duty at once (a split brain, which the
    /// pair resolves by the primary yielding, unless the secondary fails first).
    split_since: bool,
    /// A `ha failback` was accepted since that takeover.
    failback_cmd: bool,
    /// A `ha failback` was accepted on this path, ever.
    failback_ever: bool,
    /// The peer call being answered in the current step: (caller, id, orphan).
    answering: Option<(usize, u64, bool)>,
    /// The operator's last command was refused.
    refused: bool,
    /// Each node's hash, while it has not changed.
    fp_cache: [std::cell::Cell<Option<u64>>; 2],
    /// Every event stepped and the actions it gave, when a trace is replayed with
    /// `HAMON_MODEL_TRACE` set.
    log: Option<Vec<String>>,
}

/// A property broken, with the path that breaks it.
#[derive(Debug, Clone)]
pub struct Violation {
    pub property: &'static str,
    pub message: String,
    /// The choices from the start state.
    pub path: Vec<Choice>,
    /// The path, replayed and described step by step.
    pub trace: Vec<String>,
}

/// What a search found and how much it explored.
#[derive(Debug, Clone)]
pub struct Report {
    pub model: String,
    pub states: usize,
    pub transitions: u64,
    pub max_depth: usize,
    /// States on which the healed-liveness property was checked.
    pub settled: u64,
    pub elapsed: Duration,
    /// `max_states` was reached before the depth bound.
    pub truncated: bool,
    pub violation: Option<Violation>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "model {}: {} states, {} transitions, max depth {}, {} healed runs, {:.1} s{}",
            self.model,
            self.states,
            self.transitions,
            self.max_depth,
            self.settled,
            self.elapsed.as_secs_f64(),
            if self.truncated {
                " (state bound reached)"
            } else {
                ""
            }
        )?;
        if let Some(v) = &self.violation {
            write!(
                f,
                "\n  VIOLATION of {} after {} steps: {}",
                v.property,
                v.path.len(),
                v.message
            )?;
            for line in &v.trace {
                write!(f, "\n    {line}")?;
            }
        }
        Ok(())
    }
}

/// A 64-bit hash of bytes, word at a time.
fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed ^ (bytes.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut b = [0u8; 8];
        b.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
    }
    let rest = chunks.remainder();
    let mut b = [0u8; 8];
    b[..rest.len()].copy_from_slice(rest);
    h = (h ^ u64::from_le_bytes(b)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 31;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 29)
}

/// The 64-bit hash of a value's `Debug` text, formatted into a reused buffer.
fn debug_hash(seed: u64, value: &dyn fmt::Debug) -> u64 {
    thread_local! {
        static BUF: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    BUF.with(|b| {
        let mut b = b.borrow_mut();
        b.clear();
        let _ = write!(b, "{value:?}");
        hash_bytes(seed, b.as_bytes())
    })
}

type Step = Result<(), String>;

impl World {
    fn new(m: &Model) -> World {
        let mut w = World {
            now: 0,
            nodes: [None, None],
            disk: [None, None],
            // As installed: the secondary has its key (set at install); the primary gets
            // it from `ha register`.
            keyed: [false, true],
            frames: [0; 2],
            exec: [Duty::Halted; 2],
            pending: Vec::new(),
            cut: [false; 3],
            etcd: m.arbiter.map(|_| Etcd::default()),
            used: Used::default(),
            took_over: false,
            split_since: false,
            failback_cmd: false,
            failback_ever: false,
            answering: None,
            refused: false,
            fp_cache: Default::default(),
            log: None,
        };
        for i in [P, S] {
            w.restart(m, i).expect("start");
        }
        w
    }

    /// The hash of node `i` (cached until the node changes).
    fn node_fp(&self, i: usize) -> u64 {
        if let Some(h) = self.fp_cache[i].get() {
            return h;
        }
        let h = match &self.nodes[i] {
            Some(n) => debug_hash(i as u64, n),
            None => 0xDEAD ^ i as u64,
        };
        self.fp_cache[i].set(Some(h));
        h
    }

    fn fingerprint(&self) -> u64 {
        let rest = (
            self.now,
            &self.disk,
            (self.keyed, self.frames),
            self.exec,
            &self.pending,
            self.cut,
            &self.etcd,
            self.used,
            self.took_over,
            self.split_since,
            self.failback_cmd,
            self.failback_ever,
        );
        let h = debug_hash(7, &rest);
        let p = self.node_fp(P);
        let s = self.node_fp(S);
        hash_bytes(h, &[p.to_le_bytes(), s.to_le_bytes()].concat())
    }

    fn up(&self, i: usize) -> bool {
        self.nodes[i].is_some()
    }

    /// Holds (or is still releasing) the active duty.
    fn active(&self, i: usize) -> bool {
        self.nodes[i]
            .as_ref()
            .is_some_and(|n| n.duty() == Duty::Active || self.exec[i] == Duty::Active)
    }

    /// The primary is given the active duty.
    fn primary_serving(&self) -> bool {
        self.nodes[P]
            .as_ref()
            .is_some_and(|n| n.duty() == Duty::Active)
    }

    fn reg_id(&self, i: usize) -> Option<u64> {
        self.nodes[i]
            .as_ref()
            .and_then(|n| n.registration().map(|r| r.id))
    }

    fn state(&self, i: usize) -> Option<HaState> {
        self.nodes[i].as_ref().map(|n| n.state())
    }

    /// Node `i` can reach node `1 - i`'s network (both up and the link not cut).
    fn reaches_peer(&self, i: usize) -> bool {
        !self.cut[LINK_PS] && self.up(1 - i)
    }

    fn push(&mut self, after: Millis, msg: Msg) {
        self.pending.push(Pending {
            due: self.now + after,
            msg,
        });
    }

    /// Keep `pending` in a canonical order: by latest delivery, destination and kind (a
    /// stable sort, so each server's duty results and lease reports stay in FIFO order).
    fn sort(&mut self) {
        self.pending
            .sort_by_key(|p| (p.due, p.msg.dest(), p.msg.rank()));
    }

    // ----- stepping a node and carrying out its actions ---------------------------------

    fn step(&mut self, m: &Model, i: usize, event: Event) -> Step {
        let now = self.now;
        self.fp_cache[i].set(None);
        let Some(node) = self.nodes[i].as_mut() else {
            return Ok(());
        };
        let tick = matches!(event, Event::Tick);
        let shown = self.log.is_some().then(|| short(&format!("{event:?}")));
        let actions = (m.step)(node, event, now);
        if let (Some(log), Some(ev)) = (self.log.as_mut(), shown) {
            let acts: Vec<String> = actions
                .iter()
                .filter(|a| !matches!(a, Action::Journal(_)))
                .map(|a| short(&format!("{a:?}")))
                .collect();
            log.push(format!(
                "       {} ({:?}) <- {ev}\n         -> [{}]",
                NAMES[i],
                node.state(),
                acts.join(", ")
            ));
        }
        if tick {
            // The shell ticks again at once if the deadline did not move: a livelock.
            if let Some(d) = node.next_deadline() {
                if d <= now {
                    return Err(format!(
                        "core livelock: {} still due at {d} after a tick at {now} ({:?})",
                        NAMES[i],
                        node.state()
                    ));
                }
            }
        }
        for a in actions {
            self.execute(m, i, a)?;
        }
        Ok(())
    }

    fn execute(&mut self, m: &Model, i: usize, action: Action) -> Step {
        let other = 1 - i;
        let net = m.bounds.net_delay;
        match action {
            Action::SendHeartbeat { beacon, .. } => {
                self.frames[i] += 1;
                if self.keyed[i] && self.keyed[other] && self.reaches_peer(i) {
                    let seq = self.frames[i];
                    self.push(
                        net,
                        Msg::Heartbeat {
                            from: i,
                            beacon,
                            seq,
                        },
                    );
                }
            }
            Action::Lease { hold, gen, .. } => self.lease(m, i, hold, gen),
            Action::FencePeer { .. } => return Err("unexpected FencePeer (no fencing)".into()),
            Action::Probe { .. } => {
                let t = model_timers().probe_timeout;
                self.push(t, Msg::Probe { on: i });
            }
            Action::PeerCall {
                id, request, key, ..
            } => {
                if self.reaches_peer(i) {
                    let authentic = (key.is_some() || self.keyed[i]) && self.keyed[other];
                    let msg = Msg::Request {
                        from: i,
                        orphan: false,
                        id,
                        authentic,
                        request,
                    };
                    self.push(net, msg);
                } else {
                    let result = Err("connection timed out".into());
                    self.push(net, Msg::Reply { to: i, id, result });
                }
            }
            Action::Reply { reply, .. } => {
                self.refused = matches!(reply, Reply::Refused { .. });
            }
            Action::Answer { answer, .. } => {
                if let Some((caller, id, orphan)) = self.answering {
                    if !orphan {
                        let result = Ok(answer);
                        self.push(
                            net,
                            Msg::Reply {
                                to: caller,
                                id,
                                result,
                            },
                        );
                    }
                }
            }
            Action::SetDuty(duty) => self.push(0, Msg::Duty { on: i, duty }),
            Action::StartCopy(kind) => self.push(m.bounds.copy_delay, Msg::Copy { on: i, kind }),
            Action::Persist(p) => self.disk[i] = Some(p),
            Action::InstallKey(_) => self.keyed[i] = true,
            Action::Exit => self.crash(i),
            Action::StampInSync
            | Action::PurgeData
            | Action::Journal(_)
            | Action::MoveVips { .. } => {}
        }
        Ok(())
    }

    // ----- the arbiter ------------------------------------------------------------------

    fn reaches_etcd(&self, i: usize) -> bool {
        !self.cut[1 + i]
    }

    /// Node `i`'s arbiter thread acts on `Action::Lease`.
    fn lease(&mut self, m: &Model, i: usize, hold: bool, gen: u64) {
        let reaches = self.reaches_etcd(i);
        let Some(e) = self.etcd.as_mut() else {
            return;
        };
        if hold {
            e.want[i] = Some(gen);
            self.arbiter_wake(m, i);
        } else {
            // As `src/arbiter`: a thread that holds the lease deletes the key at once (the
            // peer need not wait for the TTL); a thread that holds nothing (a restarted
            // agent's, whose earlier run may still own the key) leaves it to expire.
            e.want[i] = None;
            let held = e.safe_until[i].take().is_some();
            if held && reaches && e.holder.is_some_and(|(h, _)| h == i) {
                e.holder = None;
            }
        }
    }

    /// One wake of node `i`'s arbiter thread: win or renew the key if etcd is reached,
    /// and report a lease not renewed by `last renewal + ttl - margin`.
    fn arbiter_wake(&mut self, m: &Model, i: usize) {
        let now = self.now;
        let reaches = self.reaches_etcd(i);
        let (Some(cfg), Some(e)) = (m.arbiter, self.etcd.as_mut()) else {
            return;
        };
        let Some(gen) = e.want[i] else {
            return;
        };
        let mut report = None;
        let mine = match e.holder {
            Some((h, exp)) => h == i || now >= exp,
            None => true,
        };
        if reaches && mine {
            e.holder = Some((i, now + cfg.ttl));
            if e.safe_until[i].is_none() {
                report = Some(true);
            }
            e.safe_until[i] = Some(now + cfg.ttl - cfg.margin);
        } else if e.safe_until[i].is_some_and(|t| now >= t) {
            e.safe_until[i] = None;
            report = Some(false);
        }
        if let Some(held) = report {
            self.push(0, Msg::Lease { on: i, gen, held });
        }
    }

    // ----- faults ---------------------------------------------------------------------------

    fn crash(&mut self, i: usize) {
        self.nodes[i] = None;
        self.frames[i] = 0;
        self.fp_cache[i].set(None);
        self.exec[i] = Duty::Halted;
        if let Some(e) = self.etcd.as_mut() {
            // Its arbiter thread dies with it; the key stays until the lease expires.
            e.want[i] = None;
            e.safe_until[i] = None;
        }
        let now = self.now;
        let mut kept = Vec::with_capacity(self.pending.len());
        for mut p in std::mem::take(&mut self.pending) {
            match &mut p.msg {
                Msg::Request { from, orphan, .. } if *from == i => {
                    *orphan = true;
                    kept.push(p);
                }
                Msg::Request {
                    from,
                    orphan: false,
                    id,
                    ..
                } => {
                    // To the crashed server: the caller's connection is reset.
                    let to = *from;
                    let id = *id;
                    let result = Err("connection reset".into());
                    kept.push(Pending {
                        due: p.due.max(now),
                        msg: Msg::Reply { to, id, result },
                    });
                }
                Msg::Request { .. } => {}
                msg if msg.dest() == i => {}
                _ => kept.push(p),
            }
        }
        self.pending = kept;
    }

    fn restart(&mut self, m: &Model, i: usize) -> Step {
        let cfg = node_config(role_of(i), m.arbiter.map(|a| a.on_loss));
        self.nodes[i] = Some(Node::new(cfg, self.disk[i].clone()));
        self.fp_cache[i].set(None);
        self.step(
            m,
            i,
            Event::Start {
                since_in_sync_secs: None,
            },
        )
    }

    // ----- deliveries -------------------------------------------------------------------

    /// Deliver `p` as the network and executors would; `fail` makes a message lost, or a
    /// probe or copy fail although the peer is there.
    fn deliver(&mut self, m: &Model, p: Pending, fail: bool) -> Step {
        let net = m.bounds.net_delay;
        match p.msg {
            Msg::Heartbeat { from, beacon, seq } => {
                let to = 1 - from;
                if !fail && self.reaches_peer(from) {
                    let from = node_config(role_of(from), None).address;
                    self.step(m, to, Event::Heartbeat { from, beacon, seq })?;
                }
            }
            Msg::Request {
                from,
                orphan,
                id,
                authentic,
                request,
            } => {
                let to = 1 - from;
                let reject = if fail {
                    Some("connection timed out")
                } else if !self.reaches_peer(from) {
                    Some("connection reset")
                } else if !authentic {
                    Some("authentication failed: the peer refused the key")
                } else {
                    None
                };
                if let Some(e) = reject {
                    if !orphan {
                        let result = Err(e.into());
                        self.push(
                            net,
                            Msg::Reply {
                                to: from,
                                id,
                                result,
                            },
                        );
                    }
                    return Ok(());
                }
                self.answering = Some((from, id, orphan));
                let r = self.step(
                    m,
                    to,
                    Event::PeerRequest {
                        token: PEER,
                        request,
                    },
                );
                self.answering = None;
                r?;
            }
            Msg::Reply { to, id, result } => {
                let result = match result {
                    Ok(_) if fail || self.cut[LINK_PS] => Err("connection timed out".into()),
                    r => r,
                };
                self.step(m, to, Event::PeerReply { id, result })?;
            }
            Msg::Probe { on } => {
                let ok = !fail && self.reaches_peer(on);
                let detail = if ok { "200 OK" } else { "timed out" }.to_string();
                self.step(m, on, Event::ProbeDone { ok, detail })?;
            }
            Msg::Copy { on, kind } => {
                let result = if !fail && self.reaches_peer(on) {
                    Ok(())
                } else {
                    Err("copy failed".into())
                };
                self.step(m, on, Event::CopyDone { kind, result })?;
            }
            Msg::Duty { on, duty } => {
                if self.up(on) {
                    self.exec[on] = duty;
                }
                let result = Ok(());
                self.step(m, on, Event::DutyApplied { duty, result })?;
            }
            Msg::Lease { on, gen, held } => {
                let detail = if held { "won" } else { "not renewed" }.to_string();
                self.step(m, on, Event::Lease { gen, held, detail })?;
            }
        }
        Ok(())
    }

    /// Whether delivering `pending[k]` now is a choice: each server's duty results and
    /// lease reports come in order (one executor thread, one arbiter thread).
    fn deliverable(&self, k: usize, m: &Model) -> bool {
        let p = &self.pending[k];
        if matches!(p.msg, Msg::Copy { .. }) && p.due == self.now + m.bounds.copy_delay {
            // A copy takes time: it does not finish in the instant it started (what was
            // sent before it has landed by then).
            return false;
        }
        let fifo = |a: &Msg, b: &Msg| {
            matches!(
                (a, b),
                (Msg::Duty { on: x, .. }, Msg::Duty { on: y, .. })
                    | (Msg::Lease { on: x, .. }, Msg::Lease { on: y, .. }) if x == y
            )
        };
        !self.pending[..k].iter().any(|q| fifo(&q.msg, &p.msg))
    }

    /// Whether `pending[k]` can be lost (at the cost of a drop).
    fn droppable(&self, k: usize) -> bool {
        let p = &self.pending[k];
        match &p.msg {
            Msg::Request { orphan, .. } => !orphan,
            Msg::Probe { on } | Msg::Copy { on, .. } => self.reaches_peer(*on),
            msg => msg.network(),
        }
    }

    /// Let time pass: deliver what is due, move to the next moment something happens, and
    /// tick the nodes (and wake the arbiter threads) due then. Returns false if nothing
    /// will ever happen.
    fn advance(&mut self, m: &Model) -> Result<bool, String> {
        let mut guard = 0;
        loop {
            self.sort();
            let Some(k) = self.pending.iter().position(|p| p.due <= self.now) else {
                break;
            };
            let p = self.pending.remove(k);
            self.deliver(m, p, false)?;
            guard += 1;
            if guard > 10_000 {
                return Err("endless deliveries at one instant".into());
            }
        }
        let now = self.now;
        let mut next: Option<Millis> = None;
        let mut at = |t: Millis| next = Some(next.map_or(t, |x: Millis| x.min(t)));
        for n in self.nodes.iter().flatten() {
            if let Some(d) = n.next_deadline() {
                at(d.max(now));
            }
        }
        if let Some(e) = &self.etcd {
            for t in e.safe_until.iter().flatten() {
                at((*t).max(now));
            }
            if let Some((_, exp)) = e.holder {
                if exp > now {
                    at(exp);
                }
            }
        }
        for p in &self.pending {
            at(p.due);
        }
        let Some(t) = next else {
            return Ok(false);
        };
        self.now = t;
        for i in [P, S] {
            let due = self.nodes[i]
                .as_ref()
                .and_then(|n| n.next_deadline())
                .is_some_and(|d| d <= t);
            if due {
                self.step(m, i, Event::Tick)?;
            }
        }
        for i in [P, S] {
            self.arbiter_wake(m, i);
        }
        Ok(true)
    }

    /// What a run waits to change: each server's state, duty and link, the executors'
    /// duties, and the lease holder.
    fn visible(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(12);
        for i in [P, S] {
            match &self.nodes[i] {
                Some(n) => {
                    v.push(n.state().code());
                    v.push(n.duty().code());
                    v.push(match n.link() {
                        Link::Up => 0,
                        Link::Silent { .. } => 1,
                        Link::PathBroken => 2,
                        Link::Lost => 3,
                    });
                }
                None => v.extend([0, 0, 0]),
            }
            v.push(self.exec[i].code());
        }
        let holder = self.etcd.as_ref().and_then(|e| {
            e.holder
                .filter(|&(_, exp)| exp > self.now)
                .map(|(h, _)| h as u8)
        });
        v.push(holder.map_or(9, |h| h));
        v
    }

    fn network_in_flight(&self) -> usize {
        self.pending.iter().filter(|p| p.msg.network()).count()
    }

    /// Every choice in this state, within the bounds left.
    fn choices(&self, m: &Model) -> Vec<Choice> {
        let b = &m.bounds;
        let mut out = vec![Choice::Advance, Choice::Run];
        for k in 0..self.pending.len().min(u8::MAX as usize) {
            if k > 0 && self.pending[k] == self.pending[k - 1] {
                continue; // the same choice as the copy before it
            }
            let kk = k as u8;
            if self.deliverable(k, m) {
                out.push(Choice::Deliver(kk));
            }
            if self.used.drops < b.drops && self.droppable(k) {
                out.push(Choice::Drop(kk));
            }
            if self.used.dups < b.dups
                && matches!(self.pending[k].msg, Msg::Heartbeat { .. })
                && self.network_in_flight() < b.in_flight
            {
                out.push(Choice::Dup(kk));
            }
        }
        for i in [P, S] {
            if self.up(i) {
                if self.used.crashes < b.crashes {
                    out.push(Choice::Crash(i as u8));
                }
            } else if !self.pending.iter().any(|p| p.msg.sender() == Some(i)) {
                // A reboot takes longer than a message's flight: the old incarnation's
                // messages have landed (or been lost) before the new one runs. (Its frames
                // would be refused by the peer's echo guard otherwise; not modelled.)
                out.push(Choice::Restart(i as u8));
            }
        }
        if self.used.cuts < b.cuts {
            let links: &[usize] = if m.arbiter.is_some() {
                &[LINK_PS, LINK_P_ETCD, LINK_S_ETCD]
            } else {
                &[LINK_PS]
            };
            for &c in links {
                out.push(Choice::Cut(c as u8));
            }
        }
        if self.used.commands < b.commands {
            for &c in &m.commands {
                let ok = match c {
                    Cmd::Register => self.state(P) == Some(HaState::StandAlone),
                    Cmd::Failover => matches!(
                        self.state(S),
                        Some(HaState::SecondaryLostPrimary | HaState::SecondaryAlone)
                    ),
                    Cmd::Failback => self.state(S) == Some(HaState::SecondaryActive),
                };
                if ok {
                    out.push(Choice::Command(c));
                }
            }
        }
        out
    }

    fn describe(&self, c: Choice) -> String {
        match c {
            Choice::Advance => "advance time".to_string(),
            Choice::Run => "run until something changes".to_string(),
            Choice::Deliver(k) => format!("deliver {}", self.pending[k as usize].msg.label()),
            Choice::Drop(k) => format!("LOSE {}", self.pending[k as usize].msg.label()),
            Choice::Dup(k) => format!("DUPLICATE {}", self.pending[k as usize].msg.label()),
            Choice::Crash(i) => format!("CRASH {}", NAMES[i as usize]),
            Choice::Restart(i) => format!("restart {}", NAMES[i as usize]),
            Choice::Cut(c) => format!(
                "{} link {}",
                if self.cut[c as usize] { "HEAL" } else { "CUT" },
                LINK_NAMES[c as usize]
            ),
            Choice::Command(c) => format!("operator: {c:?}"),
        }
    }

    /// Carry out `c`. Errors are property violations found while stepping (a livelock).
    fn apply(&mut self, m: &Model, c: Choice) -> Step {
        self.refused = false;
        match c {
            Choice::Advance => {
                self.advance(m)?;
            }
            Choice::Run => {
                let before = self.visible();
                let until = self.now + m.bounds.run_ms;
                while self.now < until && self.visible() == before {
                    if !self.advance(m)? {
                        break;
                    }
                }
            }
            Choice::Deliver(k) => {
                let p = self.pending.remove(k as usize);
                self.deliver(m, p, false)?;
            }
            Choice::Drop(k) => {
                self.used.drops += 1;
                let p = self.pending.remove(k as usize);
                match &p.msg {
                    Msg::Heartbeat { .. } => {}
                    _ => self.deliver(m, p, true)?,
                }
            }
            Choice::Dup(k) => {
                self.used.dups += 1;
                let p = self.pending[k as usize].clone();
                self.deliver(m, p, false)?;
            }
            Choice::Crash(i) => {
                self.used.crashes += 1;
                self.crash(i as usize);
            }
            Choice::Restart(i) => self.restart(m, i as usize)?,
            Choice::Cut(c) => {
                self.used.cuts += 1;
                self.cut[c as usize] = !self.cut[c as usize];
            }
            Choice::Command(c) => {
                self.used.commands += 1;
                let (i, command) = match c {
                    Cmd::Register => (P, register_command(m.failover, KEY)),
                    Cmd::Failover => (S, Command::Failover),
                    Cmd::Failback => (S, Command::Failback),
                };
                self.step(
                    m,
                    i,
                    Event::Command {
                        token: OPERATOR,
                        command,
                    },
                )?;
                if c == Cmd::Failback && !self.refused {
                    self.failback_cmd = true;
                    self.failback_ever = true;
                }
            }
        }
        self.sort();
        Ok(())
    }

    /// Nothing of an operation is in flight: no peer call or answer, no copy, no duty or
    /// lease report, and both servers are up (heartbeats and probes may be in flight).
    fn quiescent(&self) -> bool {
        self.up(P)
            && self.up(S)
            && !self.pending.iter().any(|p| {
                matches!(
                    p.msg,
                    Msg::Request { .. }
                        | Msg::Reply { .. }
                        | Msg::Copy { .. }
                        | Msg::Duty { .. }
                        | Msg::Lease { .. }
                )
            })
    }

    /// The properties on this state. Updates the failback bookkeeping.
    fn check(&mut self, m: &Model) -> Result<(), (&'static str, String)> {
        let c = m.checks;
        if c.one_active && self.active(P) && self.active(S) {
            return Err((
                "one_active",
                format!("both servers hold the active duty at {}", self.now),
            ));
        }
        // A takeover is counted once the secondary's executors applied the active duty:
        // only then has it served, and may its data be the newer. (A secondary told to
        // take over that crashes before it applied the duty never served.)
        if self.exec[S] == Duty::Active && !self.active(P) {
            self.took_over = true;
            self.split_since = false;
        }
        if self.took_over && self.active(P) && self.active(S) {
            self.split_since = true;
        }
        if self.took_over && self.split_since && self.nodes[S].is_none() {
            // The secondary failed during a split brain: the primary, active alongside
            // it, serving on alone is not a failback. (Without that split brain, a
            // primary that takes the role from a failed active secondary is one:
            // docs/states.md, departure g.)
            self.took_over = false;
            self.split_since = false;
        }
        if self.took_over && self.primary_serving() && !self.active(S) {
            // The active role moved back from the secondary to the primary.
            if c.failback_by_command && !self.failback_cmd {
                return Err((
                    "failback_by_command",
                    format!(
                        "the primary ({:?}) holds the active duty again, and the secondary \
                         ({:?}) none, after the secondary took over, without `ha failback`",
                        self.state(P),
                        self.state(S)
                    ),
                ));
            }
            self.took_over = false;
            self.split_since = false;
            self.failback_cmd = false;
        }
        if c.failback_by_command && !self.failback_ever {
            let failing_back = [P, S].into_iter().find(|&i| {
                matches!(
                    self.state(i),
                    Some(
                        HaState::PrimaryFailback
                            | HaState::SecondaryFailback
                            | HaState::SecondaryPostFailback
                    )
                )
            });
            if let Some(i) = failing_back {
                return Err((
                    "failback_by_command",
                    format!(
                        "{} entered {:?} without `ha failback`",
                        NAMES[i],
                        self.state(i)
                    ),
                ));
            }
        }
        if c.registration_atomic && self.quiescent() {
            let (p, s) = (self.reg_id(P), self.reg_id(S));
            if p != s {
                return Err((
                    "registration_atomic",
                    format!(
                        "quiescent with the primary registered as {p:?} ({:?}) and the \
                         secondary as {s:?} ({:?})",
                        self.state(P),
                        self.state(S)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Heal every link, restart every server, inject nothing more, and run `settle_ms`:
    /// a registered pair must end with exactly one active server (checked twice, half a
    /// settle apart, so that it holds still).
    fn healed_one_active(&self, m: &Model) -> Result<(), String> {
        self.clone().heal_and_settle(m)
    }

    fn heal_and_settle(&mut self, m: &Model) -> Result<(), String> {
        let w = self;
        w.cut = [false; 3];
        // What is in flight lands first (a reboot takes longer), then the restarts.
        loop {
            w.sort();
            let Some(k) = w.pending.iter().position(|p| p.due <= w.now) else {
                break;
            };
            let p = w.pending.remove(k);
            w.deliver(m, p, false)?;
        }
        for i in [P, S] {
            if !w.up(i) {
                w.restart(m, i)?;
            }
        }
        let t0 = w.now;
        let mut checks = [t0 + m.bounds.settle_ms / 2, t0 + m.bounds.settle_ms];
        for check_at in &mut checks {
            while w.now < *check_at {
                if !w.advance(m)? {
                    break;
                }
            }
            let registered = w.reg_id(P).is_some() && w.reg_id(P) == w.reg_id(S);
            let active = [P, S].iter().filter(|&&i| w.active(i)).count();
            if registered && active != 1 {
                return Err(format!(
                    "healed at {t0} and left alone, at {}: {active} active servers (P {:?} \
                     {:?}, S {:?} {:?})",
                    w.now,
                    w.state(P),
                    w.nodes[P].as_ref().map(|n| n.duty()),
                    w.state(S),
                    w.nodes[S].as_ref().map(|n| n.duty()),
                ));
            }
        }
        Ok(())
    }

    fn summary(&self) -> String {
        let side = |i: usize| match &self.nodes[i] {
            Some(n) => format!(
                "{} {:?}/{:?}{}",
                NAMES[i],
                n.state(),
                n.duty(),
                if self.exec[i] != n.duty() {
                    format!(" (exec {:?})", self.exec[i])
                } else {
                    String::new()
                }
            ),
            None => format!("{} down", NAMES[i]),
        };
        let cuts: Vec<&str> = (0..3)
            .filter(|&c| self.cut[c])
            .map(|c| LINK_NAMES[c])
            .collect();
        let etcd = match &self.etcd {
            Some(e) => match e.holder {
                Some((h, exp)) if exp > self.now => format!(", etcd: {} until {exp}", NAMES[h]),
                _ => ", etcd: free".to_string(),
            },
            None => String::new(),
        };
        format!(
            "t={} | {} | {} | in flight {}{}{}",
            self.now,
            side(P),
            side(S),
            self.pending.len(),
            if cuts.is_empty() {
                String::new()
            } else {
                format!(" | cut {}", cuts.join(","))
            },
            etcd
        )
    }
}

/// The start state of `m`.
fn initial(m: &Model) -> World {
    let mut w = World::new(m);
    if m.start == Start::Registered {
        // A fault-free registration, in the model itself.
        w.apply(m, Choice::Command(Cmd::Register))
            .expect("register");
        while w.now < 2_000 {
            if !w.advance(m).expect("settle") {
                break;
            }
        }
        assert!(
            w.reg_id(P).is_some() && w.reg_id(P) == w.reg_id(S),
            "the start state is not a registered pair: {}",
            w.summary()
        );
        w.used = Used::default();
        w.took_over = false;
        w.split_since = false;
        w.failback_cmd = false;
        w.failback_ever = false;
    }
    w.sort();
    w
}

/// A `Debug` text cut to a readable length.
fn short(s: &str) -> String {
    if s.chars().count() <= 160 {
        return s.to_string();
    }
    let cut: String = s.chars().take(157).collect();
    format!("{cut}...")
}

/// The path replayed from the start, step by step; `healed`: then healed and settled.
fn replay(m: &Model, path: &[Choice], healed: bool) -> Vec<String> {
    let mut w = initial(m);
    let verbose = std::env::var_os("HAMON_MODEL_TRACE").is_some();
    let mut out = vec![format!("start: {}", w.summary())];
    for (n, &c) in path.iter().enumerate() {
        let what = w.describe(c);
        if verbose {
            w.log = Some(Vec::new());
        }
        let r = w.apply(m, c);
        out.push(format!("{:>3}. {what}  =>  {}", n + 1, w.summary()));
        out.extend(w.log.take().unwrap_or_default());
        if let Err(e) = r {
            out.push(format!("     {e}"));
            return out;
        }
    }
    if healed {
        w.log = verbose.then(Vec::new);
        let r = w.heal_and_settle(m);
        out.push(format!(
            "  heal every link, restart every server, run: {}",
            w.summary()
        ));
        out.extend(w.log.take().unwrap_or_default());
        if let Err(e) = r {
            out.push(format!("     {e}"));
        }
    }
    out
}

/// Breadth-first search of `m` within its bounds; stops at the first violation.
pub fn explore(m: &Model) -> Report {
    let started = Instant::now();
    let b = m.bounds;
    let root = initial(m);
    let root_fp = root.fingerprint();
    // Each state's parent and the choice that reached it (for the counterexample).
    let mut seen: HashMap<u64, (u64, Choice)> = HashMap::new();
    seen.insert(root_fp, (root_fp, Choice::Advance));
    let mut frontier: Vec<(u64, World)> = vec![(root_fp, root)];
    let mut report = Report {
        model: m.name.clone(),
        states: 1,
        transitions: 0,
        max_depth: 0,
        settled: 0,
        elapsed: Duration::ZERO,
        truncated: false,
        violation: None,
    };
    let path_to = |seen: &HashMap<u64, (u64, Choice)>, mut fp: u64| {
        let mut path = Vec::new();
        while fp != root_fp {
            let (parent, c) = seen[&fp];
            path.push(c);
            fp = parent;
        }
        path.reverse();
        path
    };
    let mut depth = 0;
    'search: while depth < b.depth && !frontier.is_empty() {
        let mut next = Vec::new();
        // The last layer is checked, never expanded: it is not kept.
        let keep = depth + 1 < b.depth;
        for (fp, w) in std::mem::take(&mut frontier) {
            let fp = &fp;
            for c in w.choices(m) {
                report.transitions += 1;
                let mut w2 = w.clone();
                let mut broken = w2.apply(m, c).err().map(|e| ("no_livelock", e));
                if broken.is_none() {
                    broken = w2.check(m).err();
                }
                let fp2 = w2.fingerprint();
                if broken.is_none() {
                    if seen.contains_key(&fp2) {
                        continue;
                    }
                    seen.insert(fp2, (*fp, c));
                    report.states += 1;
                    report.max_depth = depth + 1;
                    if m.checks.healed_one_active
                        && b.liveness_every > 0
                        && fp2 % b.liveness_every == 0
                    {
                        report.settled += 1;
                        broken = w2
                            .healed_one_active(m)
                            .err()
                            .map(|e| ("healed_one_active", e));
                    }
                }
                if let Some((property, message)) = broken {
                    let mut path = path_to(&seen, *fp);
                    path.push(c);
                    let trace = replay(m, &path, property == "healed_one_active");
                    report.violation = Some(Violation {
                        property,
                        message,
                        path,
                        trace,
                    });
                    break 'search;
                }
                if report.states >= b.max_states {
                    report.truncated = true;
                    break 'search;
                }
                if keep {
                    next.push((fp2, w2));
                }
            }
        }
        frontier = next;
        depth += 1;
    }
    report.elapsed = started.elapsed();
    report
}
