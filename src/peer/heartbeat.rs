//! Heartbeats over UDP: sealing, sending, receiving, and refusing replays.
//!
//! Within one boot id the sequence number must grow. A boot id we have not
//! accepted yet (the peer restarted, or we did) is accepted only from a frame
//! that echoes one of our own recent frames: proof that it was sent after it
//! heard us, which a recorded frame from an earlier boot cannot give.

use super::auth::Keys;
use super::wire::{self, Frame, MAX_FRAME};
use crate::ha::{Beacon, Event, Role, Severity};
use crate::version::Version;
use crossbeam_channel::Sender;
use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// How many of our latest frames a new peer boot may echo to be accepted.
pub const ECHO_WINDOW: u64 = 8;
/// How many retired peer boot ids are remembered.
const RETIRED: usize = 16;

/// Why an authentic frame was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Same boot, sequence not newer.
    Replayed,
    /// The frame just admitted, again: its copy on another heartbeat path.
    Duplicate,
    /// From a boot id the peer has since left behind.
    Retired,
    /// A new boot id that has not yet proven it heard us.
    Unconfirmed,
    /// One of our own frames, sent back to us.
    Own,
}

/// A way the peer was heard within this long confirms its neighbour entry when we send
/// (`MSG_CONFIRM`): the kernel's first probe of a stale entry comes 5 s after it goes
/// stale.
const CONFIRM_WITHIN_MS: u64 = 5_000;

/// The least time between two answers the receiving thread sends to frames that ask.
const ANSWER_GAP: Duration = Duration::from_millis(50);

/// Frames of the peer in a row that echo nothing newer of ours, while we sent newer ones,
/// before the peer counts as not hearing us.
pub const DEAF_AFTER: u32 = 3;

/// Per-peer replay state, and our own sequence.
#[derive(Debug)]
pub struct Guard {
    our_boot: [u8; 16],
    our_seq: u64,
    peer: Option<([u8; 16], u64)>,
    retired: VecDeque<[u8; 16]>,
    latest_seen: Option<([u8; 16], u64)>,
    /// The last new boots answered early (`first_of_boot`).
    prompted: VecDeque<[u8; 16]>,
    /// The newest of our frames the peer echoed, and how many of its frames in a row
    /// since then echoed nothing newer although we had sent more (`hears_us`).
    echoed: Option<u64>,
    stale: u32,
    /// The peer was last found not to hear us.
    deaf: bool,
}

impl Guard {
    pub fn new(our_boot: [u8; 16]) -> Guard {
        Guard {
            our_boot,
            our_seq: 0,
            peer: None,
            retired: VecDeque::new(),
            latest_seen: None,
            prompted: VecDeque::new(),
            echoed: None,
            stale: 0,
            deaf: false,
        }
    }

    /// [`Guard::hears_us`], told only when the verdict changes.
    fn hearing_changed(&mut self, f: &Frame) -> Option<bool> {
        let hears = self.hears_us(f)?;
        (hears == self.deaf).then(|| {
            self.deaf = !hears;
            hears
        })
    }

    /// Whether the peer hears us, judged from an admitted frame's echo: `Some(true)` when
    /// it echoes a newer frame of ours than before, `Some(false)` once [`DEAF_AFTER`] of
    /// its frames in a row echoed nothing newer although we had sent newer ones, `None`
    /// while it is too early to say. Independent of the two servers' intervals.
    fn hears_us(&mut self, f: &Frame) -> Option<bool> {
        let echo = f.echo.filter(|(b, _)| *b == self.our_boot).map(|(_, s)| s);
        if echo.is_some_and(|e| self.echoed.is_none_or(|prev| e > prev)) {
            self.echoed = echo;
            self.stale = 0;
            return Some(true);
        }
        if self.our_seq > echo.unwrap_or(0) {
            self.stale = self.stale.saturating_add(1);
        }
        (self.stale >= DEAF_AFTER).then_some(false)
    }

    /// The next frame to send, carrying our echo of the peer.
    pub fn next_frame(&mut self, body: Beacon) -> Frame {
        self.our_seq += 1;
        Frame {
            boot_id: self.our_boot,
            seq: self.our_seq,
            echo: self.latest_seen,
            body,
            version: None,
        }
    }

    /// Whether `f` opens a boot not answered early yet (called after `admit`
    /// refused it as unconfirmed, or admitted it as a new boot because a
    /// frame of ours had reached it first): each new boot is answered early
    /// once, however many of its frames arrive.
    fn first_of_boot(&mut self, f: &Frame) -> bool {
        if self.prompted.contains(&f.boot_id) {
            return false;
        }
        self.prompted.push_back(f.boot_id);
        if self.prompted.len() > RETIRED {
            self.prompted.pop_front();
        }
        true
    }

    /// Decide on an authentic frame: `Ok(true)` when it is the first
    /// admitted frame of a new peer boot (its echo proved it), `Ok(false)`
    /// for the next frame of the boot already admitted.
    pub fn admit(&mut self, f: &Frame) -> Result<bool, Refusal> {
        // Both directions share the key: a frame of ours sent back to us
        // passes the MAC, but is never the peer's, and must not move the
        // guard (it would become the peer's "latest seen" boot).
        if f.boot_id == self.our_boot {
            return Err(Refusal::Own);
        }
        if self.retired.contains(&f.boot_id) {
            return Err(Refusal::Retired);
        }
        let newer = match self.latest_seen {
            Some((b, s)) => b != f.boot_id || f.seq > s,
            None => true,
        };
        if newer {
            self.latest_seen = Some((f.boot_id, f.seq));
        }
        if let Some((boot, seq)) = self.peer {
            if boot == f.boot_id {
                if f.seq == seq {
                    return Err(Refusal::Duplicate);
                }
                if f.seq < seq {
                    return Err(Refusal::Replayed);
                }
                self.peer = Some((boot, f.seq));
                return Ok(false);
            }
        }
        let proves = matches!(f.echo, Some((b, e))
            if b == self.our_boot && e <= self.our_seq && self.our_seq - e < ECHO_WINDOW);
        if !proves {
            return Err(Refusal::Unconfirmed);
        }
        if let Some((old, _)) = self.peer {
            self.retired.push_back(old);
            if self.retired.len() > RETIRED {
                self.retired.pop_front();
            }
        }
        self.peer = Some((f.boot_id, f.seq));
        Ok(true)
    }
}

/// What one datagram gives the core: the heartbeat, when admitted, and a
/// request to answer a new peer boot early, when it opens one.
#[derive(Debug, Default, PartialEq)]
pub struct Received {
    pub heartbeat: Option<Event>,
    pub booted: Option<Event>,
    /// Whether the peer hears us, when that changed (`Event::PeerHearsUs`).
    pub hearing: Option<Event>,
    /// The peer's release or protocol changed: `version_mismatch` or `version_match`.
    pub version: Option<Event>,
}

/// Counters shown by `hamon status` and used by tests.
#[derive(Debug, Default)]
pub struct Stats {
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    /// Malformed, wrong key, or truncated.
    pub rejected_bad: AtomicU64,
    /// Replayed, retired or unconfirmed.
    pub rejected_replay: AtomicU64,
    /// Copies of an admitted frame that came by another heartbeat path.
    pub duplicates: AtomicU64,
    /// Not from the registered peer: another source address (dropped
    /// unread), or an authentic frame that names our own role (one of ours,
    /// reflected back).
    pub rejected_sender: AtomicU64,
}

impl Stats {
    /// The counters as `hamon status`, the API and `/metrics` show them (no paths).
    pub fn counts(&self) -> crate::control::HeartbeatCounts {
        crate::control::HeartbeatCounts {
            sent: self.sent.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            rejected_bad: self.rejected_bad.load(Ordering::Relaxed),
            rejected_replay: self.rejected_replay.load(Ordering::Relaxed),
            rejected_sender: self.rejected_sender.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            paths: Vec::new(),
        }
    }
}

/// The heartbeat socket, shared by the core thread (send) and the receiver.
#[derive(Debug)]
pub struct Heartbeats {
    sock: UdpSocket,
    /// Redundant paths: a socket on this server's address on each, and the peer's address
    /// there.
    paths: Vec<(UdpSocket, IpAddr)>,
    /// When an authentic frame of the peer's last came by the node address (0) and by
    /// each path (1..), in Unix ms (0: never).
    heard: Vec<AtomicU64>,
    /// The last beacon the core sent, and where to. A frame that asks for an answer is
    /// answered from it at once by the receiving thread (`answer`), so that a core held up
    /// by a slow disk (a state saved with fsync) never looks dead to its peer.
    last_sent: Mutex<Option<(SocketAddr, Beacon)>>,
    /// When the receiving thread last answered an ask.
    answered_at: Mutex<Option<std::time::Instant>>,
    guard: Mutex<Guard>,
    keys: Arc<RwLock<Option<Keys>>>,
    /// Our role: an admitted frame names the other one.
    role: Role,
    /// The registered peer's address (`None`: no peer, nothing admitted).
    peer: RwLock<Option<IpAddr>>,
    /// Where a prepared key change is committed when the peer's frames use it.
    ring: std::sync::OnceLock<crate::peer::rekey::Keyring>,
    /// What this build sends in every frame.
    ours: Version,
    /// What the registered peer's frames say it runs (`None`: not heard yet).
    peer_version: Mutex<Option<Version>>,
    pub stats: Stats,
}

impl Heartbeats {
    pub fn bind(
        addr: SocketAddr,
        keys: Arc<RwLock<Option<Keys>>>,
        role: Role,
    ) -> io::Result<Heartbeats> {
        let sock = UdpSocket::bind(addr)?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let boot = super::auth::random16();
        Ok(Heartbeats {
            sock,
            paths: Vec::new(),
            heard: vec![AtomicU64::new(0)],
            last_sent: Mutex::new(None),
            answered_at: Mutex::new(None),
            guard: Mutex::new(Guard::new(boot)),
            keys,
            role,
            peer: RwLock::new(None),
            ring: std::sync::OnceLock::new(),
            ours: Version::ours(),
            peer_version: Mutex::new(None),
            stats: Stats::default(),
        })
    }

    /// Adds redundant heartbeat paths, each bound on this server's address there and
    /// `port`. The address need not be up yet (a link that comes up later carries
    /// heartbeats from then on).
    pub fn with_paths(
        mut self,
        paths: &[crate::config::HeartbeatPath],
        port: u16,
    ) -> io::Result<Heartbeats> {
        for p in paths {
            let local = SocketAddr::new(p.local, port);
            let sock = socket2::Socket::new(
                socket2::Domain::for_address(local),
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )?;
            if local.is_ipv4() {
                sock.set_freebind_v4(true)?;
            } else {
                sock.set_freebind_v6(true)?;
            }
            sock.bind(&local.into())?;
            let sock = UdpSocket::from(sock);
            sock.set_read_timeout(Some(Duration::from_millis(200)))?;
            self.paths.push((sock, p.peer));
            self.heard.push(AtomicU64::new(0));
        }
        Ok(self)
    }

    /// Each way the peer is heard: the node address, then every path's peer address, with
    /// how long ago an authentic frame of the peer's last came that way (`None`: never).
    pub fn paths_heard(&self) -> Vec<(IpAddr, Option<u64>)> {
        let now = crate::peer::client::unix_ms();
        let node = self.peer.read().ok().and_then(|p| *p);
        let peers = node.into_iter().chain(self.paths.iter().map(|(_, p)| *p));
        let offset = usize::from(node.is_none());
        peers
            .zip(self.heard.iter().skip(offset))
            .map(|(ip, at)| {
                let at = at.load(Ordering::Relaxed);
                (ip, (at > 0).then(|| now.saturating_sub(at)))
            })
            .collect()
    }

    /// Sends on `sock` (way `via`: 0 the node address, 1.. the paths). While the peer was
    /// heard that way lately, with `MSG_CONFIRM`: its heartbeats prove the neighbour
    /// reachable, so the kernel keeps its ARP/ND entry fresh instead of probing it. UDP
    /// alone never confirms a neighbour; under heavy loss the probes fail, the entry
    /// fails with them, and every frame to the peer is dropped for seconds while it is
    /// resolved again (the fault suite's 30 % loss runs saw it fail a healthy pair over).
    fn send_confirmed(
        &self,
        sock: &UdpSocket,
        via: usize,
        bytes: &[u8],
        to: SocketAddr,
    ) -> io::Result<()> {
        let heard = self.heard.get(via).map_or(0, |h| h.load(Ordering::Relaxed));
        let now = crate::peer::client::unix_ms();
        let flags = if heard > 0 && now.saturating_sub(heard) < CONFIRM_WITHIN_MS {
            libc::MSG_CONFIRM
        } else {
            0
        };
        socket2::SockRef::from(sock)
            .send_to_with_flags(bytes, &to.into(), flags)
            .map(drop)
    }

    /// How many redundant paths there are (each has its receiver, `run_path_receiver`).
    pub fn path_count(&self) -> usize {
        self.paths.len()
    }

    /// The keyring whose prepared change a frame under the new keys commits.
    pub fn set_keyring(&self, ring: crate::peer::rekey::Keyring) {
        let _ = self.ring.set(ring);
    }

    /// The registered peer's address; frames from any other are dropped
    /// before they are read.
    pub fn set_peer(&self, peer: Option<IpAddr>) {
        if let Ok(mut p) = self.peer.write() {
            if *p != peer {
                if let Ok(mut v) = self.peer_version.lock() {
                    *v = None;
                }
            }
            *p = peer;
        }
    }

    /// What the registered peer runs, from its last admitted frame (`None`: not heard
    /// since it was registered).
    pub fn peer_version(&self) -> Option<Version> {
        self.peer_version.lock().ok().and_then(|v| v.clone())
    }

    /// Keep what an admitted frame says the peer runs, and say so when that changed: a
    /// different release or protocol is `version_mismatch` (with whether the two work
    /// together), the same again after a mismatch is `version_match`.
    fn note_version(&self, sent: Option<Version>) -> Option<Event> {
        let theirs = sent.unwrap_or_else(Version::before_versions);
        let mut known = self.peer_version.lock().ok()?;
        if known.as_ref() == Some(&theirs) {
            return None;
        }
        let before = known.replace(theirs.clone());
        let ours = &self.ours;
        let same = theirs.release == ours.release && theirs.minor == ours.minor;
        let (kind, severity, text) = if same {
            // First contact with the same release says nothing; the end of a mismatch does.
            let was_mismatch =
                before.is_some_and(|b| b.release != ours.release || b.minor != ours.minor);
            if !was_mismatch {
                return None;
            }
            (
                "version_match",
                Severity::Info,
                format!("the peer runs {theirs}, as this server does"),
            )
        } else {
            let verdict = match ours.incompatible_with(&theirs) {
                Some(why) => format!(
                    "INCOMPATIBLE, {why}. Heartbeats still count, so nothing fails over, but \
                     registration, failback and other peer requests are refused"
                ),
                None => {
                    "the two work together; finish the upgrade (docs/operations.md)".to_string()
                }
            };
            (
                "version_mismatch",
                Severity::Warning,
                format!("the peer runs {theirs}, this server {ours}: {verdict}"),
            )
        };
        Some(Event::Observation {
            kind: kind.to_string(),
            severity,
            text,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    fn key(&self) -> Option<[u8; 32]> {
        self.keys
            .read()
            .ok()
            .and_then(|k| k.as_ref().map(|k| k.heartbeat))
    }

    /// Seal and send one heartbeat. Without a key, nothing is sent.
    pub fn send(&self, to: SocketAddr, beacon: Beacon) -> io::Result<()> {
        if let Ok(mut last) = self.last_sent.lock() {
            *last = Some((
                to,
                Beacon {
                    asks: false,
                    was_active: false,
                    ..beacon.clone()
                },
            ));
        }
        self.send_frame(to, beacon)
    }

    /// Answers a frame that asked for one, with the core's last beacon, at most once every
    /// `ANSWER_GAP`. The core answers too, as soon as it is free; this copy only makes the
    /// answer independent of it.
    fn answer(&self) {
        let now = std::time::Instant::now();
        let due = match self.answered_at.lock() {
            Ok(mut at) => {
                let due = at.is_none_or(|t| now.duration_since(t) >= ANSWER_GAP);
                if due {
                    *at = Some(now);
                }
                due
            }
            Err(_) => false,
        };
        let last = self.last_sent.lock().ok().and_then(|l| l.clone());
        if let (true, Some((to, beacon))) = (due, last) {
            let _ = self.send_frame(to, beacon);
        }
    }

    fn send_frame(&self, to: SocketAddr, beacon: Beacon) -> io::Result<()> {
        let Some(key) = self.key() else { return Ok(()) };
        let frame = match self.guard.lock() {
            Ok(mut g) => g.next_frame(beacon),
            Err(_) => return Err(io::Error::other("heartbeat guard poisoned")),
        };
        let frame = Frame {
            version: Some(self.ours.clone()),
            ..frame
        };
        let bytes = wire::encode(&frame, &key).map_err(|e| io::Error::other(e.to_string()))?;
        // The same frame on every path: the peer admits the first copy and counts the
        // others as duplicates. A path that cannot send now (its link is down) does not
        // hold up the others.
        let mut sent = self.send_confirmed(&self.sock, 0, &bytes, to);
        for (i, (sock, peer)) in self.paths.iter().enumerate() {
            let ok = self
                .send_confirmed(sock, i + 1, &bytes, SocketAddr::new(*peer, to.port()))
                .is_ok();
            if ok && sent.is_err() {
                sent = Ok(());
            }
        }
        sent?;
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Check one datagram: the events it gives the core. Every check comes
    /// before the replay guard, which moves only on a frame that is from
    /// the registered peer's address, authentic, and names the peer's role:
    /// a frame of ours sent back to us (the key is shared) names our role
    /// and never reaches it.
    pub fn receive(&self, bytes: &[u8], from: SocketAddr) -> Received {
        let Some(registered) = self.peer.read().ok().and_then(|p| *p) else {
            self.stats.rejected_sender.fetch_add(1, Ordering::Relaxed);
            return Received::default();
        };
        // The peer's node address, or its address on one of our redundant paths; the core
        // hears it as the node address whichever path it came by.
        let via = if registered == from.ip() {
            0
        } else if let Some(i) = self.paths.iter().position(|(_, p)| *p == from.ip()) {
            i + 1
        } else {
            self.stats.rejected_sender.fetch_add(1, Ordering::Relaxed);
            return Received::default();
        };
        let from = SocketAddr::new(registered, from.port());
        // Ours, then any also accepted during a key change; checked under the read lock,
        // without copying the keys (this runs for every datagram).
        let now = crate::peer::client::unix_ms();
        let decoded = {
            let Ok(guard) = self.keys.read() else {
                return Received::default();
            };
            let Some(keys) = guard.as_ref() else {
                return Received::default(); // no key set: nothing is read
            };
            let found = keys.heartbeat_keys(now).find_map(|key| {
                let frame = wire::decode(bytes, &key).ok()?;
                Some((frame, keys.is_staged(&key)))
            });
            found
        };
        let Some((frame, staged)) = decoded else {
            self.stats.rejected_bad.fetch_add(1, Ordering::Relaxed);
            return Received::default();
        };
        if staged {
            // The peer sends with the keys of the change we prepared: it committed.
            if let Some(ring) = self.ring.get() {
                ring.promote(now);
            }
        }
        if frame.body.role != self.role.other() {
            self.stats.rejected_sender.fetch_add(1, Ordering::Relaxed);
            return Received::default();
        }
        // An authentic frame of the peer's came this way (a duplicate counts: the path
        // works).
        if let Some(at) = self.heard.get(via) {
            at.store(now, Ordering::Relaxed);
        }
        let (verdict, first, hears) = match self.guard.lock() {
            Ok(mut g) => {
                let verdict = g.admit(&frame);
                let new_boot = matches!(verdict, Ok(true) | Err(Refusal::Unconfirmed));
                let hears = verdict.is_ok().then(|| g.hearing_changed(&frame)).flatten();
                (verdict, new_boot && g.first_of_boot(&frame), hears)
            }
            Err(_) => (Err(Refusal::Replayed), false, None),
        };
        let hearing = hears.map(|hears| Event::PeerHearsUs { hears });
        let from = from.ip().to_string();
        // The first frame of a new peer boot (a restarted agent): ask the
        // core to answer it now, so the peer confirms its boot, or hears our
        // state, in one round trip instead of one interval.
        let booted = first.then(|| Event::PeerBooted { from: from.clone() });
        match verdict {
            Ok(_) => {
                self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                if frame.body.asks {
                    self.answer();
                }
                let version = self.note_version(frame.version);
                Received {
                    heartbeat: Some(Event::Heartbeat {
                        from,
                        beacon: frame.body,
                        seq: frame.seq,
                    }),
                    booted,
                    hearing,
                    version,
                }
            }
            Err(refusal) => {
                let counter = if refusal == Refusal::Duplicate {
                    &self.stats.duplicates
                } else {
                    &self.stats.rejected_replay
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Received {
                    heartbeat: None,
                    booted,
                    hearing,
                    version: None,
                }
            }
        }
    }

    /// Receive on the node address until `stop` is set, passing accepted heartbeats to
    /// `tx`.
    pub fn run_receiver(&self, tx: Sender<Event>, stop: &AtomicBool) {
        self.receive_on(&self.sock, tx, stop);
    }

    /// The same for redundant path `i` (`0..path_count()`).
    pub fn run_path_receiver(&self, i: usize, tx: Sender<Event>, stop: &AtomicBool) {
        if let Some((sock, _)) = self.paths.get(i) {
            self.receive_on(sock, tx, stop);
        }
    }

    fn receive_on(&self, sock: &UdpSocket, tx: Sender<Event>, stop: &AtomicBool) {
        let mut buf = [0u8; MAX_FRAME + 1];
        while !stop.load(Ordering::Relaxed) {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    let got = buf.get(..n).map(|b| self.receive(b, from));
                    for ev in got.into_iter().flat_map(|r| {
                        r.heartbeat
                            .into_iter()
                            .chain(r.booted)
                            .chain(r.hearing)
                            .chain(r.version)
                    }) {
                        if tx.send(ev).is_err() {
                            return;
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::{HaState, HealthSummary, Role};

    fn beacon() -> Beacon {
        Beacon {
            name: "ha-a".into(),
            role: Role::Primary,
            state: HaState::PrimaryActive,
            active: true,
            registered: Some((1, crate::ha::FailoverType::Manual)),
            shutting_down: false,
            asks: false,
            was_active: false,
            health: HealthSummary::default(),
            hm_port: 8082,
            sync: None,
        }
    }

    /// Two guards exchanging frames until both accept the other.
    fn handshake(a: &mut Guard, b: &mut Guard) {
        let f = a.next_frame(beacon());
        assert_eq!(b.admit(&f), Err(Refusal::Unconfirmed));
        let g = b.next_frame(beacon());
        assert_eq!(a.admit(&g), Ok(true));
        let f = a.next_frame(beacon());
        assert_eq!(b.admit(&f), Ok(true));
    }

    #[test]
    fn new_boots_confirm_within_one_round_trip() {
        let (mut a, mut b) = (Guard::new([1; 16]), Guard::new([2; 16]));
        handshake(&mut a, &mut b);
        for _ in 0..5 {
            let f = a.next_frame(beacon());
            assert_eq!(b.admit(&f), Ok(false));
        }
    }

    #[test]
    fn replays_within_a_boot_are_refused() {
        let (mut a, mut b) = (Guard::new([1; 16]), Guard::new([2; 16]));
        handshake(&mut a, &mut b);
        let f = a.next_frame(beacon());
        assert_eq!(b.admit(&f), Ok(false));
        // The same frame again is its copy on another path (or a replay of the latest
        // frame): refused either way, counted apart.
        assert_eq!(b.admit(&f), Err(Refusal::Duplicate));
        let mut older = f.clone();
        older.seq -= 1;
        assert_eq!(b.admit(&older), Err(Refusal::Replayed));
    }

    #[test]
    fn a_capture_from_an_earlier_boot_cannot_pose_as_a_restart() {
        let (mut a, mut b) = (Guard::new([1; 16]), Guard::new([2; 16]));
        handshake(&mut a, &mut b);
        let captured = a.next_frame(beacon());
        assert_eq!(b.admit(&captured), Ok(false));
        // `a` restarts with a new boot id and is accepted after a round trip.
        let mut a2 = Guard::new([3; 16]);
        handshake(&mut a2, &mut b);
        // The old capture is now from a retired boot.
        assert_eq!(b.admit(&captured), Err(Refusal::Retired));
        // And if `b` restarted too, the capture echoes b's old boot: refused.
        let mut b2 = Guard::new([4; 16]);
        assert_eq!(b2.admit(&captured), Err(Refusal::Unconfirmed));
    }

    #[test]
    fn our_own_frames_reflected_back_are_refused_and_move_nothing() {
        let (mut a, mut b) = (Guard::new([1; 16]), Guard::new([2; 16]));
        handshake(&mut a, &mut b);
        let ours = b.next_frame(beacon());
        assert_eq!(b.admit(&ours), Err(Refusal::Own));
        // The genuine peer is still admitted afterwards.
        let f = a.next_frame(beacon());
        assert_eq!(b.admit(&f), Ok(false));
        assert_eq!(b.latest_seen, Some(([1; 16], f.seq)));
    }

    #[test]
    fn stale_echo_outside_the_window_is_refused() {
        let (mut a, mut b) = (Guard::new([1; 16]), Guard::new([2; 16]));
        let g = b.next_frame(beacon());
        assert_eq!(a.admit(&g), Err(Refusal::Unconfirmed));
        let f = a.next_frame(beacon()); // echoes b's seq 1
        for _ in 0..ECHO_WINDOW {
            b.next_frame(beacon());
        }
        assert_eq!(b.admit(&f), Err(Refusal::Unconfirmed));
    }

    #[test]
    fn a_frame_that_asks_is_answered_by_the_receiving_thread(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let keys = Arc::new(RwLock::new(Some(Keys::legacy("Test-Key-1"))));
        let a = Heartbeats::bind("127.0.0.1:0".parse()?, keys.clone(), Role::Primary)?;
        let b = Heartbeats::bind("127.0.0.2:0".parse()?, keys, Role::Secondary)?;
        let (a_addr, b_addr) = (a.local_addr()?, b.local_addr()?);
        a.set_peer(Some(b_addr.ip()));
        b.set_peer(Some(a_addr.ip()));
        let from_b = Beacon {
            role: Role::Secondary,
            ..beacon()
        };
        let mut buf = [0u8; 1024];
        let mut deliver = |to: &Heartbeats| -> Result<Received, Box<dyn std::error::Error>> {
            let (n, src) = to.sock.recv_from(&mut buf)?;
            Ok(to.receive(&buf[..n], src))
        };
        // The handshake of two new boots: a, b, a.
        a.send(b_addr, beacon())?;
        deliver(&b)?;
        b.send(a_addr, from_b.clone())?;
        deliver(&a)?;
        a.send(b_addr, beacon())?;
        assert!(deliver(&b)?.heartbeat.is_some());
        // b's core has sent its last beacon to a; a now asks. b's receiving thread answers
        // at once, with that beacon (its core is not involved).
        b.send(a_addr, from_b.clone())?;
        deliver(&a)?;
        let sent = b.stats.sent.load(Ordering::Relaxed);
        a.send(
            b_addr,
            Beacon {
                asks: true,
                was_active: false,
                ..beacon()
            },
        )?;
        assert!(deliver(&b)?.heartbeat.is_some());
        assert_eq!(b.stats.sent.load(Ordering::Relaxed), sent + 1, "b answered");
        match deliver(&a)?.heartbeat {
            Some(Event::Heartbeat { beacon, .. }) => {
                assert_eq!(beacon.role, Role::Secondary);
                assert!(!beacon.asks, "an answer does not ask back");
            }
            other => panic!("no answer: {other:?}"),
        }
        // Another ask at once: within ANSWER_GAP, not answered again by the thread.
        a.send(
            b_addr,
            Beacon {
                asks: true,
                was_active: false,
                ..beacon()
            },
        )?;
        deliver(&b)?;
        assert_eq!(b.stats.sent.load(Ordering::Relaxed), sent + 1);
        Ok(())
    }

    #[test]
    fn sockets_exchange_and_refuse_forgeries() -> Result<(), Box<dyn std::error::Error>> {
        let keys = Arc::new(RwLock::new(Some(Keys::legacy("Test-Key-1"))));
        // a is the primary on 127.0.0.1, b the secondary on 127.0.0.2.
        let a = Heartbeats::bind("127.0.0.1:0".parse()?, keys.clone(), Role::Primary)?;
        let b = Heartbeats::bind("127.0.0.2:0".parse()?, keys.clone(), Role::Secondary)?;
        let (a_addr, b_addr) = (a.local_addr()?, b.local_addr()?);
        a.set_peer(Some(b_addr.ip()));
        b.set_peer(Some(a_addr.ip()));
        let from_a = beacon();
        let from_b = Beacon {
            role: Role::Secondary,
            ..beacon()
        };
        let pass = |from: &Heartbeats,
                    to: &Heartbeats,
                    to_addr,
                    body: &Beacon|
         -> Result<Received, Box<dyn std::error::Error>> {
            let mut buf = [0u8; 1024];
            from.send(to_addr, body.clone())?;
            let (n, src) = to.sock.recv_from(&mut buf)?;
            Ok(to.receive(&buf[..n], src))
        };
        let mut buf = [0u8; 1024];
        let booted = |r: &Received| matches!(r.booted, Some(Event::PeerBooted { .. }));
        let heartbeat = |r: &Received| matches!(r.heartbeat, Some(Event::Heartbeat { .. }));
        // a's first frame cannot be admitted yet; b is asked to answer early,
        // once for the boot, however many such frames come.
        let r = pass(&a, &b, b_addr, &from_a)?;
        assert!(booted(&r) && !heartbeat(&r), "{r:?}");
        assert_eq!(pass(&a, &b, b_addr, &from_a)?, Received::default());
        // b's answer echoes a's boot: admitted by a (b's boot is new to a
        // too, so a answers it early once as well).
        let r = pass(&b, &a, a_addr, &from_b)?;
        assert!(heartbeat(&r) && booted(&r), "{r:?}");
        let r = pass(&a, &b, b_addr, &from_a)?;
        assert!(heartbeat(&r) && !booted(&r), "{r:?}");

        // A frame of b's own, sent back to b (the key is shared, so its MAC
        // holds), names b's role: refused before the guard moves.
        b.send(b_addr, from_b.clone())?;
        let (n, _) = b.sock.recv_from(&mut buf)?;
        let own = buf[..n].to_vec();
        assert_eq!(b.receive(&own, a_addr), Received::default());
        // A frame naming the primary but from another address: dropped unread.
        a.send(b_addr, from_a.clone())?;
        let (n, _) = b.sock.recv_from(&mut buf)?;
        let stray: SocketAddr = "127.0.0.9:8083".parse()?;
        assert_eq!(b.receive(&buf[..n], stray), Received::default());
        assert_eq!(b.stats.rejected_sender.load(Ordering::Relaxed), 2);
        // The genuine peer is still admitted.
        assert!(heartbeat(&pass(&a, &b, b_addr, &from_a)?));

        // a restarts, and hears b before it sends: its first frame already
        // proves its boot and is admitted, and b is still asked to answer it
        // early (a needs to hear b's state, not wait for b's next interval).
        let a2 = Heartbeats::bind(SocketAddr::new(a_addr.ip(), 0), keys, Role::Primary)?;
        a2.set_peer(Some(b_addr.ip()));
        let a2_addr = a2.local_addr()?;
        b.send(a2_addr, from_b.clone())?;
        let (n, src) = a2.sock.recv_from(&mut buf)?;
        assert!(!heartbeat(&a2.receive(&buf[..n], src)));
        a2.send(b_addr, from_a.clone())?;
        let (n, src) = b.sock.recv_from(&mut buf)?;
        let r = b.receive(&buf[..n], src);
        assert!(heartbeat(&r) && booted(&r), "{r:?}");
        // Garbage and a wrong key are refused and counted.
        assert_eq!(b.receive(b"HMHB garbage", a_addr), Received::default());
        let other = Keys::legacy("Other-Key-2");
        let frame = Guard::new([9; 16]).next_frame(beacon());
        let forged = wire::encode(&frame, &other.heartbeat)?;
        assert_eq!(b.receive(&forged, a_addr), Received::default());
        assert_eq!(b.stats.rejected_bad.load(Ordering::Relaxed), 2);
        assert_eq!(b.stats.accepted.load(Ordering::Relaxed), 3);
        Ok(())
    }

    /// A key change seen from the heartbeats: the side that prepared it accepts frames
    /// under the new keys and, hearing them, commits; the side that committed still
    /// accepts the old ones. Not one frame is refused on either side.
    #[test]
    fn frames_across_a_key_change_are_all_accepted_and_commit_it(
    ) -> Result<(), Box<dyn std::error::Error>> {
        use crate::peer::pair::PairSecret;
        use crate::peer::rekey::Keyring;
        let dir = std::env::temp_dir().join(format!("hamon-hb-rekey-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = crate::store::Store::open(&dir)?;
        let (old, new) = (PairSecret::random()?, PairSecret::random()?);
        store.save_secret(&old)?;
        store.save_authkey("Old-Key-0001")?;
        let a_keys = Arc::new(RwLock::new(Some(old.keys())));
        let b_keys = Arc::new(RwLock::new(Some(old.keys())));
        let a = Heartbeats::bind("127.0.0.1:0".parse()?, a_keys.clone(), Role::Primary)?;
        let b = Heartbeats::bind("127.0.0.2:0".parse()?, b_keys.clone(), Role::Secondary)?;
        let (a_addr, b_addr) = (a.local_addr()?, b.local_addr()?);
        a.set_peer(Some(b_addr.ip()));
        b.set_peer(Some(a_addr.ip()));
        let b_ring = Keyring {
            store: store.clone(),
            keys: b_keys.clone(),
        };
        b.set_keyring(b_ring.clone());
        let now = crate::peer::client::unix_ms();
        let mut buf = [0u8; 1024];
        let mut pass = |from: &Heartbeats,
                        to: &Heartbeats,
                        to_addr,
                        role|
         -> Result<(), Box<dyn std::error::Error>> {
            from.send(to_addr, Beacon { role, ..beacon() })?;
            let (n, src) = to.sock.recv_from(&mut buf)?;
            let _ = to.receive(&buf[..n], src);
            Ok(())
        };
        // b prepared the change (the peer's request): still old keys, new ones accepted.
        b_ring.prepare_for_peer("New-Key-0001", &new)?;
        pass(&b, &a, a_addr, Role::Secondary)?;
        // a committed: it sends under the new keys and still accepts the old ones.
        let committed = new.keys().also_accepting(&old.keys(), now + 60_000, now);
        *a_keys.write().map_err(|_| "poisoned")? = Some(committed);
        pass(&b, &a, a_addr, Role::Secondary)?; // b's old keys, in flight
        pass(&a, &b, b_addr, Role::Primary)?; // a's new keys: b commits on hearing them
        assert_eq!(store.load_secret()?, Some(new.clone()));
        assert_eq!(store.load_authkey()?.as_deref(), Some("New-Key-0001"));
        let b_now = b_keys
            .read()
            .map_err(|_| "poisoned")?
            .clone()
            .ok_or("no keys")?;
        assert_eq!(b_now.heartbeat, new.keys().heartbeat);
        pass(&b, &a, a_addr, Role::Secondary)?;
        pass(&a, &b, b_addr, Role::Primary)?;
        for (side, hb) in [("a", &a), ("b", &b)] {
            assert_eq!(hb.stats.rejected_bad.load(Ordering::Relaxed), 0, "{side}");
        }
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    }

    /// The peer's echoes tell whether it hears us, whatever the two intervals.
    #[test]
    fn echoes_tell_whether_the_peer_hears_us() {
        let (mut a, mut b) = (Guard::new([1; 16]), Guard::new([2; 16]));
        handshake(&mut a, &mut b);
        // Both hear each other: b echoes a's newest frame each time.
        for _ in 0..5 {
            let fa = a.next_frame(beacon());
            assert!(b.admit(&fa).is_ok());
            let fb = b.next_frame(beacon());
            assert!(a.admit(&fb).is_ok());
            assert_ne!(a.hears_us(&fb), Some(false));
        }
        // a's frames stop reaching b: b's echo stays put while a sends on.
        let mut verdicts = Vec::new();
        for _ in 0..DEAF_AFTER + 1 {
            let _lost = a.next_frame(beacon());
            let fb = b.next_frame(beacon());
            assert!(a.admit(&fb).is_ok());
            verdicts.push(a.hears_us(&fb));
        }
        assert_eq!(verdicts.last(), Some(&Some(false)), "{verdicts:?}");
        assert!(!verdicts[..DEAF_AFTER as usize - 1].contains(&Some(false)));
        // b hears a again: its next echo moves.
        let fa = a.next_frame(beacon());
        assert!(b.admit(&fa).is_ok());
        let fb = b.next_frame(beacon());
        assert!(a.admit(&fb).is_ok());
        assert_eq!(a.hears_us(&fb), Some(true));
        // A peer sending much faster than we do, with no new frame of ours to echo,
        // is not taken for deaf.
        for _ in 0..10 {
            let fb = b.next_frame(beacon());
            assert!(a.admit(&fb).is_ok());
            assert_ne!(a.hears_us(&fb), Some(false));
        }
    }
}
