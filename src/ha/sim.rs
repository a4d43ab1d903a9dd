//! A deterministic two-node simulator around the pure core.
//!
//! Two `Node`s, a virtual clock, a network that can delay, drop and
//! partition, and stand-in executors (duties, copies) that answer after a
//! delay. Nodes crash (losing everything but what they persisted) and restart.
//! Golden scenario tests and randomised fault schedules run on it in
//! milliseconds.

use super::action::{Action, JournalEntry, Persisted, Reply};
use super::event::{Command, CopyKind, Event, Millis, PeerAnswer, Secret, Token};
use super::machine::{step, Node, NodeConfig, Timers};
use super::state::{Duty, FailoverType, HaState, Role};
use std::collections::{BTreeMap, HashMap, HashSet};

/// How long the simulated BMC takes to fence.
const FENCE_TIME: Millis = 50;

/// Index of the primary in a `Sim`.
pub const P: usize = 0;
/// Index of the secondary in a `Sim`.
pub const S: usize = 1;

/// The authentication key both simulated servers are installed with.
pub const KEY: &str = "Sim-Key-2026";

#[derive(Debug, Clone)]
enum Delivery {
    /// An event for node `to`, valid only while it is still in boot `epoch`.
    Event { to: usize, epoch: u64, event: Event },
    /// A peer request reaching node `to`; its answer goes back to `from`.
    Request {
        to: usize,
        epoch: u64,
        from: usize,
        from_epoch: u64,
        id: u64,
        key: Option<String>,
        request: super::event::PeerRequest,
    },
    /// Node `to`'s arbiter thread wakes (renews, tries to win, or sees its margin pass).
    Arbiter { to: usize, epoch: u64, gen: u64 },
}

/// The simulated arbiter: one etcd key per pair under a lease with a TTL on etcd's clock,
/// and each server's arbiter thread, which renews every `ttl / 10` and reports a lease it
/// could not renew `margin` before it can expire.
#[derive(Debug, Clone)]
pub struct SimArbiter {
    pub ttl: Millis,
    pub margin: Millis,
    /// Whether each server reaches etcd.
    pub reaches: [bool; 2],
    /// etcd's key: who holds it, and when its lease expires.
    pub holder: Option<(usize, Millis)>,
    /// Each thread: the generation it is asked to hold (`None`: released), and until when
    /// its last renewal keeps it safe (`None`: it does not hold the lease).
    want: [Option<u64>; 2],
    safe_until: [Option<Millis>; 2],
}

impl SimArbiter {
    /// The holder, if its lease has not expired at `now`.
    pub fn holder_at(&self, now: Millis) -> Option<usize> {
        self.holder.filter(|&(_, exp)| now < exp).map(|(i, _)| i)
    }
}

#[derive(Debug)]
struct SimNode {
    cfg: NodeConfig,
    node: Option<Node>,
    epoch: u64,
    /// Heartbeat frames sent in this boot (the frames' sequence numbers).
    frames: u64,
    disk: Option<Persisted>,
    stamp_wall: Option<u64>,
    key: Option<String>,
    history: Vec<HaState>,
}

/// Network conditions between the two servers.
#[derive(Debug, Clone, Copy)]
pub struct Net {
    pub partitioned: bool,
    /// Percentage of packets dropped, each way: a heartbeat is lost with this chance, a
    /// probe (a request and its answer) unless both get through.
    pub loss_pct: u32,
    /// One-way delay.
    pub delay: Millis,
}

/// The simulated world.
#[derive(Debug)]
pub struct Sim {
    pub now: Millis,
    wall_base: u64,
    nodes: [SimNode; 2],
    queue: BTreeMap<(Millis, u64), Delivery>,
    seq: u64,
    pub net: Net,
    /// How long executors take to apply a duty and to copy data.
    pub duty_delay: Millis,
    pub copy_delay: Millis,
    /// Copies that fail: (node, kind).
    pub failing_copies: HashSet<(usize, CopyKind)>,
    rng: u64,
    next_token: u64,
    operator: HashMap<Token, usize>,
    pending_answers: HashMap<Token, (usize, u64, u64, usize)>,
    replies: HashMap<Token, Reply>,
    pub journal: Vec<(Millis, usize, JournalEntry)>,
    /// Every duty each node was told to apply, with the time.
    pub duties: Vec<(Millis, usize, Duty)>,
    /// Duties whose executor fails: (node, duty).
    pub failing_duties: HashSet<(usize, Duty)>,
    /// Probes each node sent.
    pub probes: [u64; 2],
    /// Nodes whose saves fail (a full disk): what they persist is lost.
    pub unsaved: [bool; 2],
    /// Whether the simulated BMC fences (powers off) the peer when asked.
    pub fence_works: bool,
    /// Print every step to stderr (`HAMON_SIM_TRACE=1`).
    pub trace: bool,
    /// The arbiter, once `configure_arbiter` is called.
    pub arbiter: Option<SimArbiter>,
    /// Answers to peer requests still to be lost on the way back (the request itself
    /// arrives and is acted on; the caller's call times out).
    pub lose_answers: u32,
    /// Every `MoveVips` each node was told to make: (time, node, the new list).
    pub vips_moved: Vec<(Millis, usize, Vec<String>)>,
}

/// Fast timers for simulation: 100 ms heartbeats, 3 missed, 200 ms grace.
pub fn fast_timers() -> Timers {
    Timers {
        interval: 100,
        missed: 3,
        grace: 200,
        probe_timeout: 100,
        data_gap_secs: 24 * 3600,
        copy_retry: 2_000,
    }
}

fn node_config(role: Role, timers: Timers) -> NodeConfig {
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
        timers,
        witness: false,
        fence: super::machine::FencePolicy::Off,
        arbiter: None,
    }
}

impl Sim {
    /// Two freshly installed servers (Stand Alone), started, with `seed` for
    /// the network's randomness. The secondary has its key set (`KEY`).
    pub fn new(timers: Timers, seed: u64) -> Sim {
        let mk = |role| SimNode {
            cfg: node_config(role, timers),
            node: None,
            epoch: 0,
            frames: 0,
            disk: None,
            stamp_wall: None,
            key: None,
            history: vec![HaState::StandAlone],
        };
        let mut sim = Sim {
            now: 0,
            wall_base: 1_800_000_000,
            nodes: [mk(Role::Primary), mk(Role::Secondary)],
            queue: BTreeMap::new(),
            seq: 0,
            net: Net {
                partitioned: false,
                loss_pct: 0,
                delay: 2,
            },
            duty_delay: 5,
            copy_delay: 50,
            failing_copies: HashSet::new(),
            rng: seed ^ 0x9E37_79B9_7F4A_7C15,
            next_token: 1,
            operator: HashMap::new(),
            pending_answers: HashMap::new(),
            replies: HashMap::new(),
            journal: Vec::new(),
            duties: Vec::new(),
            trace: std::env::var_os("HAMON_SIM_TRACE").is_some(),
            failing_duties: HashSet::new(),
            probes: [0; 2],
            unsaved: [false; 2],
            fence_works: true,
            arbiter: None,
            lose_answers: 0,
            vips_moved: Vec::new(),
        };
        sim.nodes[S].key = Some(KEY.into());
        sim.start(P);
        sim.start(S);
        sim
    }

    /// A registered pair in Primary Active / Secondary Syncing.
    pub fn registered(timers: Timers, seed: u64, failover_type: FailoverType) -> Sim {
        let mut sim = Sim::new(timers, seed);
        let t = sim.command(P, register_command(failover_type, KEY));
        sim.run_for(2_000);
        debug_assert!(matches!(sim.reply(t), Some(Reply::Done { .. })));
        sim
    }

    fn rand(&mut self) -> u64 {
        // splitmix64: small, seedable, good enough for fault schedules.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A random number below `n` (for tests' schedules).
    pub fn random_below(&mut self, n: u64) -> u64 {
        self.rand() % n.max(1)
    }

    fn wall(&self) -> u64 {
        self.wall_base + self.now / 1000
    }

    /// Let wall-clock time pass without monotonic time (a server powered off).
    pub fn jump_wall(&mut self, secs: u64) {
        self.wall_base += secs;
    }

    pub fn state(&self, i: usize) -> Option<HaState> {
        self.nodes[i].node.as_ref().map(|n| n.state())
    }

    pub fn node(&self, i: usize) -> Option<&Node> {
        self.nodes[i].node.as_ref()
    }

    /// The states node `i` passed through, in order, across restarts.
    pub fn history(&self, i: usize) -> &[HaState] {
        &self.nodes[i].history
    }

    pub fn clear_history(&mut self) {
        for n in &mut self.nodes {
            n.history = n.node.as_ref().map(|x| vec![x.state()]).unwrap_or_default();
        }
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].node.is_some()
    }

    /// Holds the active duty (would hold the VIP).
    pub fn is_active(&self, i: usize) -> bool {
        self.nodes[i]
            .node
            .as_ref()
            .is_some_and(|n| n.duty() == Duty::Active)
    }

    pub fn set_key(&mut self, i: usize, key: &str) {
        self.nodes[i].key = Some(key.into());
    }

    pub fn reply(&self, t: Token) -> Option<&Reply> {
        self.replies.get(&t)
    }

    /// Journal texts of node `i` of the given kind.
    pub fn journal_kinds(&self, i: usize) -> Vec<String> {
        self.journal
            .iter()
            .filter(|(_, n, _)| *n == i)
            .map(|(_, _, e)| e.kind.clone())
            .collect()
    }

    /// Start (or restart) node `i` from what it persisted.
    pub fn start(&mut self, i: usize) {
        let wall = self.wall();
        let sn = &mut self.nodes[i];
        sn.epoch += 1;
        sn.frames = 0;
        sn.node = Some(Node::new(sn.cfg.clone(), sn.disk.clone()));
        let since = sn.stamp_wall.map(|s| wall.saturating_sub(s));
        self.step(
            i,
            Event::Start {
                since_in_sync_secs: since,
            },
        );
    }

    /// New hardware with the same identity: nothing on disk, no key.
    pub fn reinstall(&mut self, i: usize) {
        self.crash(i);
        let sn = &mut self.nodes[i];
        sn.disk = None;
        sn.stamp_wall = None;
        sn.key = None;
    }

    /// Power loss or kill -9: everything not persisted is gone.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].node = None;
        self.nodes[i].epoch += 1;
        if let Some(a) = &mut self.arbiter {
            // Its arbiter thread dies with it; its key stays until the lease expires.
            a.want[i] = None;
            a.safe_until[i] = None;
        }
    }

    /// SIGTERM: the node releases what it holds and exits.
    pub fn stop(&mut self, i: usize) {
        if self.is_up(i) {
            self.step(i, Event::Shutdown);
        }
    }

    /// An operator command on node `i`; the reply appears under the token.
    pub fn command(&mut self, i: usize, command: Command) -> Token {
        let token = Token(self.next_token);
        self.next_token += 1;
        self.operator.insert(token, i);
        if self.is_up(i) {
            self.step(i, Event::Command { token, command });
        } else {
            self.replies.insert(
                token,
                Reply::Refused {
                    message: "agent not running".into(),
                },
            );
        }
        token
    }

    /// The database standby's lag on node `i`, against the failover bound.
    pub fn replica_lag(&mut self, i: usize, behind: Option<&str>) {
        if self.is_up(i) {
            let behind = behind.map(str::to_string);
            self.step(i, Event::ReplicaLag { behind });
        }
    }

    /// Report local health on node `i`.
    pub fn health(&mut self, i: usize, health: super::state::HealthSummary) {
        if self.is_up(i) {
            self.step(i, Event::Health { health });
        }
    }

    /// Both servers fence their peer before a takeover (`[fencing]`), from now on.
    pub fn configure_fencing(&mut self, policy: super::machine::FencePolicy) {
        for n in &mut self.nodes {
            n.cfg.fence = policy;
            if let Some(node) = &mut n.node {
                node.cfg.fence = policy;
            }
        }
    }

    /// Both servers get a witness (`[witness]`), from now on.
    pub fn configure_witness(&mut self) {
        for n in &mut self.nodes {
            n.cfg.witness = true;
            if let Some(node) = &mut n.node {
                node.cfg.witness = true;
            }
        }
    }

    /// Both servers hold the arbiter's lease to be active (`[arbiter]`), from now on.
    pub fn configure_arbiter(
        &mut self,
        on_loss: super::machine::ArbiterLoss,
        ttl: Millis,
        margin: Millis,
    ) {
        for n in &mut self.nodes {
            n.cfg.arbiter = Some(on_loss);
            if let Some(node) = &mut n.node {
                node.cfg.arbiter = Some(on_loss);
            }
        }
        self.arbiter = Some(SimArbiter {
            ttl,
            margin,
            reaches: [true; 2],
            holder: None,
            want: [None; 2],
            safe_until: [None; 2],
        });
    }

    /// Node `i`'s arbiter thread acts on `Action::Lease`.
    fn lease(&mut self, i: usize, hold: bool, gen: u64) {
        let Some(a) = &mut self.arbiter else {
            return;
        };
        a.want[i] = hold.then_some(gen);
        if !hold {
            a.safe_until[i] = None;
            if a.reaches[i] && a.holder.is_some_and(|(h, _)| h == i) {
                a.holder = None; // deleted at once: the peer need not wait for the TTL
            }
            return;
        }
        let epoch = self.nodes[i].epoch;
        self.schedule(0, Delivery::Arbiter { to: i, epoch, gen });
    }

    /// One wake of node `i`'s arbiter thread.
    fn arbiter_wake(&mut self, i: usize, gen: u64) {
        let now = self.now;
        let Some(a) = &mut self.arbiter else {
            return;
        };
        if a.want[i] != Some(gen) {
            return; // released, or asked again under a newer generation
        }
        let mut report = None;
        if a.reaches[i] {
            let mine = match a.holder {
                Some((h, exp)) => h == i || now >= exp,
                None => true,
            };
            if mine {
                a.holder = Some((i, now + a.ttl));
                if a.safe_until[i].is_none() {
                    report = Some(true);
                }
                a.safe_until[i] = Some(now + a.ttl - a.margin);
            }
        } else if a.safe_until[i].is_some_and(|t| now >= t) {
            a.safe_until[i] = None;
            report = Some(false);
        }
        let poll = (a.ttl / 10).max(1);
        if let Some(held) = report {
            let detail = if held { "won" } else { "not renewed" }.to_string();
            self.step(i, Event::Lease { gen, held, detail });
        }
        let epoch = self.nodes[i].epoch;
        self.schedule(poll, Delivery::Arbiter { to: i, epoch, gen });
    }

    /// Node `i`'s witness check reports `reachable`.
    pub fn witness(&mut self, i: usize, reachable: bool) {
        if self.is_up(i) {
            self.step(i, Event::Witness { reachable });
        }
    }

    /// Node `i`'s HA interface goes down or up, as the kernel shows it at once. The
    /// network follows: a node with its link down is cut off from its peer.
    pub fn ha_link(&mut self, i: usize, up: bool) {
        if self.is_up(i) {
            self.step(i, Event::HaLink { up });
        }
        self.net.partitioned = !up;
    }

    fn schedule(&mut self, after: Millis, d: Delivery) {
        self.seq += 1;
        self.queue.insert((self.now + after, self.seq), d);
    }

    fn event_later(&mut self, to: usize, after: Millis, event: Event) {
        let epoch = self.nodes[to].epoch;
        self.schedule(after, Delivery::Event { to, epoch, event });
    }

    fn step(&mut self, i: usize, event: Event) {
        let now = self.now;
        let Some(node) = self.nodes[i].node.as_mut() else {
            return;
        };
        let shown = self.trace.then(|| format!("{event:?}"));
        let actions = step(node, event, now);
        if let Some(ev) = shown {
            eprintln!(
                "{now:>7} n{i} {:?} <- {ev}\n{:>7}    -> {actions:?}",
                node.state(),
                ""
            );
        }
        for a in actions {
            self.execute(i, a);
        }
    }

    /// One packet lost to `loss_pct`.
    fn lost(&mut self) -> bool {
        self.net.loss_pct > 0 && self.random_below(100) < u64::from(self.net.loss_pct)
    }

    fn reachable(&self, to: usize) -> bool {
        !self.net.partitioned && self.nodes[to].node.is_some()
    }

    fn execute(&mut self, i: usize, action: Action) {
        let other = 1 - i;
        let delay = self.net.delay;
        match action {
            Action::SendHeartbeat { beacon, .. } => {
                self.nodes[i].frames += 1;
                let seq = self.nodes[i].frames;
                let lost = self.lost();
                let authentic =
                    self.nodes[i].key.is_some() && self.nodes[i].key == self.nodes[other].key;
                if self.reachable(other) && !lost && authentic {
                    let from = self.nodes[i].cfg.address.clone();
                    self.event_later(other, delay, Event::Heartbeat { from, beacon, seq });
                }
            }
            Action::Lease { hold, gen, .. } => self.lease(i, hold, gen),
            Action::FencePeer { .. } => {
                // The simulated BMC: power the peer off, or fail.
                let ok = self.fence_works;
                if ok {
                    self.crash(other);
                }
                let detail = if ok { "powered off" } else { "BMC unreachable" };
                self.event_later(
                    i,
                    FENCE_TIME,
                    Event::FenceDone {
                        ok,
                        detail: detail.into(),
                    },
                );
            }
            Action::Probe { .. } => {
                self.probes[i] += 1;
                let ok = self.reachable(other) && !self.lost() && !self.lost();
                let t = self.nodes[i].cfg.timers.probe_timeout;
                let (after, detail) = if ok {
                    (2 * delay, "200 OK")
                } else {
                    (t, "timed out")
                };
                self.event_later(
                    i,
                    after,
                    Event::ProbeDone {
                        ok,
                        detail: detail.into(),
                    },
                );
            }
            Action::PeerCall {
                id, request, key, ..
            } => {
                if self.reachable(other) {
                    let key = key
                        .map(|k| k.expose().to_string())
                        .or(self.nodes[i].key.clone());
                    let d = Delivery::Request {
                        to: other,
                        epoch: self.nodes[other].epoch,
                        from: i,
                        from_epoch: self.nodes[i].epoch,
                        id,
                        key,
                        request,
                    };
                    self.schedule(delay, d);
                } else {
                    let t = self.nodes[i].cfg.timers.probe_timeout;
                    let result = Err("connection timed out".into());
                    self.event_later(i, t, Event::PeerReply { id, result });
                }
            }
            Action::Reply { token, reply } => {
                self.replies.insert(token, reply);
            }
            Action::Answer { token, answer } => {
                if let Some((to, epoch, id, _)) = self.pending_answers.remove(&token) {
                    if self.lose_answers > 0 {
                        self.lose_answers -= 1;
                        let t = self.nodes[to].cfg.timers.probe_timeout;
                        let result = Err("timed out waiting for the answer".into());
                        let d = Delivery::Event {
                            to,
                            epoch,
                            event: Event::PeerReply { id, result },
                        };
                        self.schedule(t, d);
                    } else if self.reachable(to) && self.nodes[to].epoch == epoch {
                        let result = Ok(answer);
                        self.schedule(
                            delay,
                            Delivery::Event {
                                to,
                                epoch,
                                event: Event::PeerReply { id, result },
                            },
                        );
                    }
                }
            }
            Action::SetDuty(duty) => {
                self.duties.push((self.now, i, duty));
                let after = self.duty_delay;
                let result = if self.failing_duties.contains(&(i, duty)) {
                    Err("simulated executor failure".into())
                } else {
                    Ok(())
                };
                self.event_later(i, after, Event::DutyApplied { duty, result });
            }
            Action::StartCopy(kind) => {
                let result = if self.failing_copies.contains(&(i, kind)) {
                    Err("simulated copy failure".into())
                } else {
                    Ok(())
                };
                let after = self.copy_delay;
                self.event_later(i, after, Event::CopyDone { kind, result });
            }
            Action::Persist(p) if !self.unsaved[i] => self.nodes[i].disk = Some(p),
            Action::Persist(_) => {}
            Action::StampInSync => self.nodes[i].stamp_wall = Some(self.wall()),
            Action::InstallKey(k) => self.nodes[i].key = Some(k.expose().to_string()),
            Action::PurgeData => {}
            Action::MoveVips { to, .. } => self.vips_moved.push((self.now, i, to)),
            Action::Journal(e) => {
                if e.kind == "state_changed" {
                    self.nodes[i].history.push(e.state);
                }
                self.journal.push((self.now, i, e));
            }
            Action::Exit => self.crash(i),
        }
    }

    fn deliver(&mut self, d: Delivery) {
        match d {
            Delivery::Arbiter { to, epoch, gen } => {
                if self.nodes[to].epoch == epoch {
                    self.arbiter_wake(to, gen);
                }
            }
            Delivery::Event { to, epoch, event } => {
                if self.nodes[to].epoch == epoch {
                    self.step(to, event);
                }
            }
            Delivery::Request {
                to,
                epoch,
                from,
                from_epoch,
                id,
                key,
                request,
            } => {
                if self.nodes[to].epoch != epoch || !self.reachable(to) {
                    let result = Err("connection reset".into());
                    let d = Delivery::Event {
                        to: from,
                        epoch: from_epoch,
                        event: Event::PeerReply { id, result },
                    };
                    self.schedule(self.net.delay, d);
                    return;
                }
                if key.is_none() || key != self.nodes[to].key {
                    let result = Err("authentication failed: the peer refused the key".into());
                    let d = Delivery::Event {
                        to: from,
                        epoch: from_epoch,
                        event: Event::PeerReply { id, result },
                    };
                    self.schedule(self.net.delay, d);
                    return;
                }
                let token = Token(self.next_token);
                self.next_token += 1;
                self.pending_answers
                    .insert(token, (from, from_epoch, id, to));
                self.step(to, Event::PeerRequest { token, request });
            }
        }
    }

    /// Run the world until `until` (absolute virtual time).
    pub fn run_until(&mut self, until: Millis) {
        loop {
            let q = self.queue.keys().next().map(|k| k.0);
            let ticks = (0..2).filter_map(|i| {
                self.nodes[i]
                    .node
                    .as_ref()
                    .and_then(|n| n.next_deadline())
                    .map(|t| (t.max(self.now), i))
            });
            let tick = ticks.min();
            let next = match (q, tick) {
                (Some(a), Some((b, _))) => a.min(b),
                (Some(a), None) => a,
                (None, Some((b, _))) => b,
                (None, None) => break,
            };
            if next > until {
                break;
            }
            self.now = next;
            if q == Some(next) {
                if let Some((_, d)) = self.queue.pop_first() {
                    self.deliver(d);
                }
            } else if let Some((_, i)) = tick {
                self.step(i, Event::Tick);
                // A tick must move the node's deadline past `now`; if it does
                // not, the core would spin forever on a real clock too.
                let again = self.nodes[i].node.as_ref().and_then(|n| n.next_deadline());
                assert!(
                    again.is_none_or(|t| t > self.now),
                    "core livelock: node {i} still due at {again:?} after a tick at {} ({:?})",
                    self.now,
                    self.nodes[i].node
                );
            }
        }
        self.now = until;
    }

    pub fn run_for(&mut self, ms: Millis) {
        let until = self.now + ms;
        self.run_until(until);
    }

    /// The detection budget: missed heartbeats + grace + probe timeout.
    pub fn detection(&self) -> Millis {
        let t = self.nodes[P].cfg.timers;
        t.silent_after() + t.grace + t.probe_timeout
    }
}

/// The `ha register` command the simulator's primary runs.
pub fn register_command(failover_type: FailoverType, key: &str) -> Command {
    Command::Register {
        id: 0x5EED,
        secondary_address: "192.0.2.12".into(),
        secondary_hm_port: 8082,
        failover_type,
        vips: vec!["192.0.2.10/24".into()],
        emails: vec![],
        key: Secret::new(key),
    }
}

/// Collapse a history to the states named, for compact golden comparisons.
pub fn dedup(states: &[HaState]) -> Vec<HaState> {
    let mut v: Vec<HaState> = Vec::new();
    for s in states {
        if v.last() != Some(s) {
            v.push(*s);
        }
    }
    v
}

impl PeerAnswer {
    /// True for an accepted answer (tests).
    pub fn is_accepted(&self) -> bool {
        matches!(self, PeerAnswer::Accepted { .. })
    }
}
