//! Network interface watcher: link state and required addresses, followed
//! through netlink events and debounced.
//!
//! The decisions live in two pure pieces: [`Debounce`] (one boolean that must
//! hold for a while before it counts) and `Nics` (what the watched interfaces
//! look like, fed with netlink dumps and events). [`NicWatch`] is the thin
//! layer that reads the kernel with a netlink `Socket` and follows a netlink
//! `Monitor`.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::ha::Level;
use crate::net::netlink::{AddrInfo, LinkInfo, Monitor, NetEvent, NetlinkError, Socket};

/// A flap shorter than `hold` is ignored: a change becomes effective only
/// after it has held for `hold`.
///
/// `observe` takes the raw value as it is seen; `poll` makes a change
/// effective once it has held. Going back to the effective value before that
/// cancels the change. Time is passed in, so it is a pure state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Debounce {
    up: bool,
    hold: Duration,
    /// The raw value differs from `up` since this instant.
    pending: Option<(bool, Instant)>,
}

impl Debounce {
    pub fn new(initial_up: bool, hold: Duration) -> Self {
        Debounce {
            up: initial_up,
            hold,
            pending: None,
        }
    }

    /// The raw value is `up` at `now`. Observing the same raw value again does
    /// not restart the hold.
    pub fn observe(&mut self, up: bool, now: Instant) {
        if up == self.up {
            self.pending = None;
        } else if self.pending.is_none() {
            self.pending = Some((up, now));
        }
    }

    /// `Some(new state)` when a change has held long enough (reported once).
    pub fn poll(&mut self, now: Instant) -> Option<bool> {
        let due = self.due()?;
        if now < due {
            return None;
        }
        let (up, _) = self.pending.take()?;
        self.up = up;
        Some(up)
    }

    /// The effective state.
    pub fn up(&self) -> bool {
        self.up
    }

    /// When the pending change becomes effective, if one is pending.
    pub fn due(&self) -> Option<Instant> {
        let (_, since) = self.pending?;
        // An absurdly long hold never comes due.
        since.checked_add(self.hold)
    }
}

/// An effective change of one interface.
#[derive(Debug, Clone, PartialEq)]
pub struct NicChange {
    pub interface: String,
    pub usable: bool,
    /// "eth0: link down (no carrier)", "eth0: link up", "eth0: address
    /// 192.0.2.11 gone"...
    pub text: String,
}

/// Why an interface is not usable; the first that applies, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reason {
    Missing,
    AdminDown,
    NoCarrier,
    /// Required addresses that are not on the interface.
    Addresses(Vec<IpAddr>),
}

fn address_list(addrs: &[IpAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
    let noun = if addrs.len() == 1 {
        "address"
    } else {
        "addresses"
    };
    format!("{noun} {}", list.join(", "))
}

impl Reason {
    fn text(&self, name: &str) -> String {
        match self {
            Reason::Missing => format!("{name}: interface missing"),
            Reason::AdminDown => format!("{name}: link down (administratively down)"),
            Reason::NoCarrier => format!("{name}: link down (no carrier)"),
            Reason::Addresses(a) => format!("{name}: {} gone", address_list(a)),
        }
    }

    /// What to say when the interface is usable again after this.
    fn recovery_text(&self, name: &str) -> String {
        match self {
            Reason::Addresses(a) => format!("{name}: {} back", address_list(a)),
            _ => format!("{name}: link up"),
        }
    }
}

/// One watched interface.
#[derive(Debug, Clone)]
struct Nic {
    name: String,
    /// Kernel index, while an interface of that name exists.
    index: Option<u32>,
    admin_up: bool,
    carrier: bool,
    /// Addresses that must be on it, and whether they are.
    required: Vec<(IpAddr, bool)>,
    debounce: Debounce,
    /// Why it was last reported unusable (for the recovery text).
    down_reason: Option<Reason>,
}

impl Nic {
    fn reason(&self) -> Option<Reason> {
        if self.index.is_none() {
            return Some(Reason::Missing);
        }
        if !self.admin_up {
            return Some(Reason::AdminDown);
        }
        if !self.carrier {
            return Some(Reason::NoCarrier);
        }
        let missing: Vec<IpAddr> = self
            .required
            .iter()
            .filter(|(_, present)| !present)
            .map(|(a, _)| *a)
            .collect();
        if missing.is_empty() {
            None
        } else {
            Some(Reason::Addresses(missing))
        }
    }

    fn usable(&self) -> bool {
        self.reason().is_none()
    }

    fn set_missing(&mut self) {
        self.index = None;
        self.admin_up = false;
        self.carrier = false;
        self.set_all_addresses(false);
    }

    fn set_all_addresses(&mut self, present: bool) {
        for (_, p) in &mut self.required {
            *p = present;
        }
    }

    fn set_address(&mut self, addr: IpAddr, present: bool) {
        for (a, p) in &mut self.required {
            if *a == addr {
                *p = present;
            }
        }
    }
}

/// The watched interfaces as the kernel last described them (pure: fed with
/// dumps and events, time passed in).
#[derive(Debug, Clone)]
struct Nics {
    nics: Vec<Nic>,
}

impl Nics {
    /// Check and normalise the configuration (duplicates are dropped).
    fn new(
        interfaces: Vec<String>,
        addresses: Vec<(String, IpAddr)>,
        hold: Duration,
    ) -> Result<Nics, String> {
        let mut nics: Vec<Nic> = Vec::new();
        for name in interfaces {
            // IFNAMSIZ is 16 with the terminating NUL.
            if name.is_empty()
                || name.len() > 15
                || name.contains(|c: char| c == '/' || c.is_whitespace())
            {
                return Err(format!("{name:?} is not a valid interface name"));
            }
            if nics.iter().all(|n| n.name != name) {
                nics.push(Nic {
                    name,
                    index: None,
                    admin_up: false,
                    carrier: false,
                    required: Vec::new(),
                    debounce: Debounce::new(false, hold),
                    down_reason: None,
                });
            }
        }
        for (name, addr) in addresses {
            let Some(nic) = nics.iter_mut().find(|n| n.name == name) else {
                return Err(format!(
                    "address {addr} is required on {name}, which is not watched"
                ));
            };
            if nic.required.iter().all(|(a, _)| *a != addr) {
                nic.required.push((addr, false));
            }
        }
        Ok(Nics { nics })
    }

    /// Take in a full dump. With `initial`, the result becomes the effective
    /// state at once (no debounce); otherwise it is observed like an event.
    fn load(&mut self, links: &[LinkInfo], addrs: &[AddrInfo], now: Instant, initial: bool) {
        for nic in &mut self.nics {
            match links.iter().find(|l| l.name == nic.name) {
                Some(l) => {
                    nic.index = Some(l.index);
                    nic.admin_up = l.up;
                    nic.carrier = l.carrier;
                    nic.set_all_addresses(false);
                    for a in addrs.iter().filter(|a| a.index == l.index) {
                        nic.set_address(a.addr, true);
                    }
                }
                None => nic.set_missing(),
            }
            if initial {
                let reason = nic.reason();
                nic.debounce = Debounce::new(reason.is_none(), nic.debounce.hold);
                nic.down_reason = reason;
            } else {
                nic.debounce.observe(nic.usable(), now);
            }
        }
    }

    /// Take in one event seen at `now`. Returns true when the state must be
    /// re-read (an interface of a watched name appeared with a new index, so
    /// its addresses are unknown).
    fn apply(&mut self, event: &NetEvent, now: Instant) -> bool {
        let mut resync = false;
        for nic in &mut self.nics {
            match event {
                NetEvent::Link(l) if l.name == nic.name => {
                    if nic.index != Some(l.index) {
                        nic.index = Some(l.index);
                        nic.set_all_addresses(false);
                        resync |= !nic.required.is_empty();
                    }
                    nic.admin_up = l.up;
                    nic.carrier = l.carrier;
                }
                // Our interface was renamed to something else.
                NetEvent::Link(l) if nic.index == Some(l.index) => nic.set_missing(),
                NetEvent::LinkGone { index, .. } if nic.index == Some(*index) => nic.set_missing(),
                NetEvent::AddrAdded(a) if nic.index == Some(a.index) => {
                    nic.set_address(a.addr, true)
                }
                NetEvent::AddrRemoved(a) if nic.index == Some(a.index) => {
                    nic.set_address(a.addr, false)
                }
                _ => continue,
            }
            nic.debounce.observe(nic.usable(), now);
        }
        resync
    }

    /// The changes that have held long enough by `now`.
    fn poll(&mut self, now: Instant) -> Vec<NicChange> {
        let mut out = Vec::new();
        for nic in &mut self.nics {
            let Some(usable) = nic.debounce.poll(now) else {
                continue;
            };
            let text = if usable {
                match nic.down_reason.take() {
                    Some(r) => r.recovery_text(&nic.name),
                    None => format!("{}: link up", nic.name),
                }
            } else {
                let reason = nic.reason();
                let text = match &reason {
                    Some(r) => r.text(&nic.name),
                    None => format!("{}: not usable", nic.name),
                };
                nic.down_reason = reason;
                text
            };
            out.push(NicChange {
                interface: nic.name.clone(),
                usable,
                text,
            });
        }
        out
    }

    /// Every interface's usability as last seen, before the debounce.
    fn raw(&self) -> Vec<bool> {
        self.nics.iter().map(Nic::usable).collect()
    }

    /// Whether the interface is usable as last seen, before the debounce (`None`: not
    /// watched).
    fn usable_now(&self, name: &str) -> Option<bool> {
        self.nics.iter().find(|n| n.name == name).map(Nic::usable)
    }

    /// The earliest instant at which a pending change comes due.
    fn due(&self) -> Option<Instant> {
        self.nics.iter().filter_map(|n| n.debounce.due()).min()
    }

    fn level(&self) -> Level {
        if self.nics.iter().all(|n| n.debounce.up()) {
            Level::Ok
        } else {
            Level::Failed
        }
    }

    /// The effective state of every interface, worded like a change.
    fn status(&self) -> Vec<NicChange> {
        self.nics
            .iter()
            .map(|n| {
                let usable = n.debounce.up();
                let text = if usable {
                    format!("{}: link up", n.name)
                } else {
                    match &n.down_reason {
                        Some(r) => r.text(&n.name),
                        None => format!("{}: not usable", n.name),
                    }
                };
                NicChange {
                    interface: n.name.clone(),
                    usable,
                    text,
                }
            })
            .collect()
    }
}

/// At most this many error messages are kept for [`NicWatch::take_errors`].
const MAX_ERRORS: usize = 64;

/// How long to wait before retrying a failed re-read of the state.
const RESYNC_RETRY: Duration = Duration::from_secs(1);

/// Pause after a monitor error other than an overrun, so that a persistent
/// error cannot turn `wait` into a busy loop.
const ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Watches interfaces through netlink events; see [`NicWatch::new`].
pub struct NicWatch {
    nics: Nics,
    monitor: Monitor,
    /// The state must be re-read with a `Socket`, not before this instant.
    resync_at: Option<Instant>,
    errors: Vec<String>,
}

impl fmt::Debug for NicWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NicWatch")
            .field("nics", &self.nics)
            .field("monitor", &self.monitor)
            .field("resync_at", &self.resync_at)
            .field("errors", &self.errors)
            .finish()
    }
}

fn read_state() -> Result<(Vec<LinkInfo>, Vec<AddrInfo>), NetlinkError> {
    let mut nl = Socket::open()?;
    Ok((nl.links()?, nl.addresses(None)?))
}

impl NicWatch {
    /// Watch `interfaces`; `addresses` are the addresses that must stay on
    /// them (e.g. the management address on the HA interface). Reads the
    /// initial state with a netlink Socket, then follows a netlink Monitor.
    /// An interface is usable when it exists, is up with carrier, and holds
    /// its required addresses.
    ///
    /// The monitor is opened before the state is read, so that no change falls
    /// between the two. The initial state counts at once (no debounce), and
    /// is not reported as a change: see [`NicWatch::status`]. An interface
    /// that does not exist yet is not an error (it is unusable); an address
    /// required on an interface that is not in `interfaces`, an invalid
    /// interface name, or a netlink failure is.
    pub fn new(
        interfaces: Vec<String>,
        addresses: Vec<(String, IpAddr)>,
        hold: Duration,
    ) -> Result<NicWatch, String> {
        let mut nics = Nics::new(interfaces, addresses, hold)?;
        let monitor = Monitor::open().map_err(|e| format!("netlink monitor: {e}"))?;
        let (links, addrs) = read_state().map_err(|e| format!("netlink: {e}"))?;
        nics.load(&links, &addrs, Instant::now(), true);
        Ok(NicWatch {
            nics,
            monitor,
            resync_at: None,
            errors: Vec::new(),
        })
    }

    /// Wait up to `timeout` for events; apply debounce; return the effective
    /// changes. On a monitor overrun (`NetlinkError::is_overrun`), re-read the
    /// state with a Socket.
    ///
    /// Returns as soon as there is at least one effective change (a pending
    /// change coming due wakes it in time), else after `timeout` with
    /// nothing. Queued events are taken in even with a zero timeout. Other
    /// monitor errors reopen the monitor and re-read the state; they and
    /// failed re-reads are kept for [`NicWatch::take_errors`].
    pub fn wait(&mut self, timeout: Duration) -> Vec<NicChange> {
        let deadline = Instant::now().checked_add(timeout);
        // A raw change (before the debounce) also ends the wait: the takeover decision
        // reads it through `usable_now` at once.
        let raw_at_start = self.nics.raw();
        // The monitor is read at least once, so that even a zero timeout
        // takes in what is queued.
        let mut read_once = false;
        loop {
            let now = Instant::now();
            if self.resync_at.is_some_and(|at| now >= at) {
                self.resync(now);
            }
            let changes = self.nics.poll(now);
            let timed_out = read_once && deadline.is_some_and(|d| now >= d);
            if !changes.is_empty() || timed_out || self.nics.raw() != raw_at_start {
                return changes;
            }
            read_once = true;
            let wake = [deadline, self.nics.due(), self.resync_at]
                .into_iter()
                .flatten()
                .min();
            let wait_for = match wake {
                Some(w) => w.saturating_duration_since(now),
                None => timeout,
            };
            match self.monitor.next(wait_for) {
                Ok(events) => {
                    let now = Instant::now();
                    for event in &events {
                        if self.nics.apply(event, now) {
                            self.resync_at = Some(now);
                        }
                    }
                }
                Err(e) if e.is_overrun() => {
                    self.note(format!("{e}: re-reading the interfaces"));
                    self.resync_at = Some(Instant::now());
                }
                Err(e) => {
                    self.note(format!("netlink monitor: {e}: reopening it"));
                    match Monitor::open() {
                        Ok(m) => self.monitor = m,
                        Err(e) => self.note(format!("netlink monitor: {e}")),
                    }
                    self.resync_at = Some(Instant::now());
                    let left = deadline.map_or(ERROR_PAUSE, |d| d.saturating_duration_since(now));
                    std::thread::sleep(ERROR_PAUSE.min(left));
                }
            }
        }
    }

    /// Worst level: `Failed` if any watched interface is not usable, else `Ok`
    /// (also with nothing to watch). Follows the effective (debounced) state.
    pub fn level(&self) -> Level {
        self.nics.level()
    }

    /// Whether `name` is usable as last seen, before the debounce: what a takeover
    /// decision needs at once (`None`: not watched).
    pub fn usable_now(&self, name: &str) -> Option<bool> {
        self.nics.usable_now(name)
    }

    /// Re-read everything now (udev told us about an add/remove). What it
    /// finds is debounced like an event; the next [`NicWatch::wait`] reports
    /// the changes.
    pub fn rescan(&mut self) {
        self.resync(Instant::now());
    }

    /// The effective state of each watched interface, e.g. to log the
    /// initial state: usable ones read "eth0: link up", the others give the
    /// reason they were found unusable.
    pub fn status(&self) -> Vec<NicChange> {
        self.nics.status()
    }

    /// Netlink trouble seen since the last call (overruns, monitor errors,
    /// failed re-reads), oldest first. The watcher carries on by itself; this
    /// is for the log.
    pub fn take_errors(&mut self) -> Vec<String> {
        std::mem::take(&mut self.errors)
    }

    fn resync(&mut self, now: Instant) {
        match read_state() {
            Ok((links, addrs)) => {
                self.nics.load(&links, &addrs, now, false);
                self.resync_at = None;
            }
            Err(e) => {
                self.note(format!("netlink: re-reading the interfaces: {e}"));
                self.resync_at = now.checked_add(RESYNC_RETRY);
            }
        }
    }

    fn note(&mut self, text: String) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::testns::in_private_netns;
    use std::process::Command;

    const HOLD: Duration = Duration::from_millis(300);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn debounce_ignores_a_short_flap() {
        let t0 = Instant::now();
        let mut d = Debounce::new(true, HOLD);
        assert!(d.up());
        assert_eq!(d.due(), None);
        d.observe(false, t0);
        assert_eq!(d.due(), Some(t0 + HOLD));
        assert_eq!(d.poll(t0 + ms(100)), None);
        d.observe(true, t0 + ms(100));
        assert_eq!(d.due(), None);
        assert_eq!(d.poll(t0 + ms(1000)), None);
        assert!(d.up());
    }

    #[test]
    fn debounce_reports_a_held_change_once() {
        let t0 = Instant::now();
        let mut d = Debounce::new(true, HOLD);
        d.observe(false, t0);
        // Seeing the same raw value again does not restart the hold.
        d.observe(false, t0 + ms(200));
        assert_eq!(d.due(), Some(t0 + HOLD));
        assert_eq!(d.poll(t0 + HOLD - ms(1)), None);
        assert!(d.up());
        assert_eq!(d.poll(t0 + HOLD), Some(false));
        assert!(!d.up());
        assert_eq!(d.due(), None);
        assert_eq!(d.poll(t0 + ms(5000)), None);
        // Observing the effective value changes nothing.
        d.observe(false, t0 + ms(5000));
        assert_eq!(d.due(), None);

        // And back up.
        let t1 = t0 + ms(6000);
        d.observe(true, t1);
        assert_eq!(d.due(), Some(t1 + HOLD));
        assert_eq!(d.poll(t1 + ms(400)), Some(true));
        assert!(d.up());
    }

    #[test]
    fn debounce_zero_hold_and_flap_restart() {
        let t0 = Instant::now();
        let mut d = Debounce::new(false, Duration::ZERO);
        d.observe(true, t0);
        assert_eq!(d.poll(t0), Some(true));

        // A flap restarts the hold: down at 0, up at 100, down at 200: due at
        // 200 + hold, not 0 + hold.
        let mut d = Debounce::new(true, HOLD);
        d.observe(false, t0);
        d.observe(true, t0 + ms(100));
        d.observe(false, t0 + ms(200));
        assert_eq!(d.poll(t0 + HOLD), None);
        assert_eq!(d.due(), Some(t0 + ms(200) + HOLD));
        assert_eq!(d.poll(t0 + ms(200) + HOLD), Some(false));

        // A hold too long to add never comes due.
        let mut d = Debounce::new(true, Duration::MAX);
        d.observe(false, t0);
        assert_eq!(d.due(), None);
        assert_eq!(d.poll(t0 + ms(1000)), None);
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn link(index: u32, name: &str, up: bool, carrier: bool) -> LinkInfo {
        LinkInfo {
            index,
            name: name.into(),
            mac: Some([2, 0, 0, 0, 0, 1]),
            up,
            carrier,
            mtu: Some(1500),
        }
    }

    fn addr(index: u32, a: &str) -> AddrInfo {
        AddrInfo {
            index,
            addr: ip(a),
            prefix_len: 24,
        }
    }

    fn change(interface: &str, usable: bool, text: &str) -> NicChange {
        NicChange {
            interface: interface.into(),
            usable,
            text: text.into(),
        }
    }

    /// eth0 (index 2) must hold 192.0.2.11; eth1 (index 3) nothing.
    fn model(t0: Instant) -> Nics {
        let mut n = Nics::new(
            vec!["eth0".into(), "eth1".into(), "eth0".into()],
            vec![("eth0".into(), ip("192.0.2.11"))],
            HOLD,
        )
        .unwrap();
        n.load(
            &[
                link(1, "lo", true, true),
                link(2, "eth0", true, true),
                link(3, "eth1", true, true),
            ],
            &[addr(2, "192.0.2.11"), addr(3, "198.51.100.1")],
            t0,
            true,
        );
        n
    }

    #[test]
    fn nics_configuration_is_checked() {
        let bad = |i: Vec<&str>, a: Vec<(&str, &str)>| {
            Nics::new(
                i.into_iter().map(String::from).collect(),
                a.into_iter().map(|(n, x)| (n.to_string(), ip(x))).collect(),
                HOLD,
            )
            .unwrap_err()
        };
        assert_eq!(
            bad(vec!["eth0"], vec![("eth9", "192.0.2.11")]),
            "address 192.0.2.11 is required on eth9, which is not watched"
        );
        assert!(bad(vec![""], vec![]).contains("not a valid interface name"));
        assert!(bad(vec!["a-name-too-long-0"], vec![]).contains("not a valid"));
        assert!(bad(vec!["et h0"], vec![]).contains("not a valid"));
        let empty = Nics::new(vec![], vec![], HOLD).unwrap();
        assert_eq!(empty.level(), Level::Ok);
        assert!(empty.status().is_empty());
    }

    #[test]
    fn nics_initial_state_counts_at_once() {
        let t0 = Instant::now();
        let mut n = model(t0);
        assert_eq!(n.nics.len(), 2, "duplicates dropped");
        assert_eq!(n.level(), Level::Ok);
        assert_eq!(n.due(), None);
        assert_eq!(n.poll(t0 + ms(1000)), vec![]);
        assert_eq!(
            n.status(),
            vec![
                change("eth0", true, "eth0: link up"),
                change("eth1", true, "eth1: link up")
            ]
        );

        // Starting without the address, and without eth1 at all.
        let mut n = Nics::new(
            vec!["eth0".into(), "eth1".into()],
            vec![("eth0".into(), ip("192.0.2.11"))],
            HOLD,
        )
        .unwrap();
        n.load(&[link(2, "eth0", true, true)], &[], t0, true);
        assert_eq!(n.level(), Level::Failed);
        assert_eq!(n.poll(t0 + ms(1000)), vec![]);
        assert_eq!(
            n.status(),
            vec![
                change("eth0", false, "eth0: address 192.0.2.11 gone"),
                change("eth1", false, "eth1: interface missing"),
            ]
        );
        // The address arrives: reported as back, after the hold.
        n.apply(&NetEvent::AddrAdded(addr(2, "192.0.2.11")), t0 + ms(10));
        assert_eq!(n.poll(t0 + ms(100)), vec![]);
        assert_eq!(
            n.poll(t0 + ms(310)),
            vec![change("eth0", true, "eth0: address 192.0.2.11 back")]
        );
    }

    #[test]
    fn nics_carrier_loss_and_return() {
        let t0 = Instant::now();
        let mut n = model(t0);
        // Events for other interfaces are ignored.
        assert!(!n.apply(&NetEvent::Link(link(7, "veth9", false, false)), t0));
        assert!(!n.apply(&NetEvent::AddrRemoved(addr(3, "192.0.2.11")), t0));
        assert_eq!(n.due(), None);

        assert!(!n.apply(&NetEvent::Link(link(2, "eth0", true, false)), t0));
        assert_eq!(n.due(), Some(t0 + HOLD));
        assert_eq!(n.poll(t0 + ms(299)), vec![]);
        assert_eq!(n.level(), Level::Ok, "not effective yet");
        assert_eq!(
            n.poll(t0 + HOLD),
            vec![change("eth0", false, "eth0: link down (no carrier)")]
        );
        assert_eq!(n.level(), Level::Failed);
        assert_eq!(n.poll(t0 + ms(2000)), vec![], "reported once");
        assert_eq!(
            n.status()[0],
            change("eth0", false, "eth0: link down (no carrier)")
        );

        let t1 = t0 + ms(3000);
        n.apply(&NetEvent::Link(link(2, "eth0", true, true)), t1);
        assert_eq!(
            n.poll(t1 + HOLD),
            vec![change("eth0", true, "eth0: link up")]
        );
        assert_eq!(n.level(), Level::Ok);
    }

    #[test]
    fn nics_flap_shorter_than_hold_is_ignored() {
        let t0 = Instant::now();
        let mut n = model(t0);
        n.apply(&NetEvent::Link(link(2, "eth0", false, false)), t0);
        n.apply(&NetEvent::Link(link(2, "eth0", true, true)), t0 + ms(100));
        assert_eq!(n.due(), None);
        assert_eq!(n.poll(t0 + ms(1000)), vec![]);
        assert_eq!(n.level(), Level::Ok);
    }

    #[test]
    fn nics_admin_down_address_loss_and_removal() {
        let t0 = Instant::now();
        let mut n = model(t0);
        n.apply(&NetEvent::Link(link(3, "eth1", false, false)), t0);
        n.apply(&NetEvent::AddrRemoved(addr(2, "192.0.2.11")), t0);
        let mut got = n.poll(t0 + HOLD);
        got.sort_by(|a, b| a.interface.cmp(&b.interface));
        assert_eq!(
            got,
            vec![
                change("eth0", false, "eth0: address 192.0.2.11 gone"),
                change("eth1", false, "eth1: link down (administratively down)"),
            ]
        );

        // eth1 is deleted, then comes back under a new index: its state is
        // taken from the event.
        let t1 = t0 + ms(1000);
        n.apply(
            &NetEvent::LinkGone {
                index: 3,
                name: "eth1".into(),
            },
            t1,
        );
        assert_eq!(n.poll(t1 + HOLD), vec![]);
        assert_eq!(
            n.status()[1],
            change("eth1", false, "eth1: link down (administratively down)")
        );
        // A watched name with required addresses and a new index asks for a
        // re-read; eth1 has none, so it does not.
        assert!(!n.apply(&NetEvent::Link(link(9, "eth1", true, true)), t1));
        assert_eq!(
            n.poll(t1 + HOLD),
            vec![change("eth1", true, "eth1: link up")]
        );

        // The address comes back, then eth0 is renamed away.
        let t2 = t0 + ms(2000);
        n.apply(&NetEvent::AddrAdded(addr(2, "192.0.2.11")), t2);
        assert_eq!(
            n.poll(t2 + HOLD),
            vec![change("eth0", true, "eth0: address 192.0.2.11 back")]
        );
        let t3 = t0 + ms(3000);
        n.apply(&NetEvent::Link(link(2, "wan0", true, true)), t3);
        assert_eq!(
            n.poll(t3 + HOLD),
            vec![change("eth0", false, "eth0: interface missing")]
        );
        // A new eth0 needs its addresses read.
        assert!(n.apply(&NetEvent::Link(link(11, "eth0", true, true)), t3 + HOLD));
        // A dump says it has the address.
        let t4 = t0 + ms(4000);
        n.load(
            &[link(11, "eth0", true, true), link(9, "eth1", true, true)],
            &[addr(11, "192.0.2.11")],
            t4,
            false,
        );
        assert_eq!(
            n.poll(t4 + HOLD),
            vec![change("eth0", true, "eth0: link up")]
        );
        assert_eq!(n.level(), Level::Ok);
    }

    #[test]
    fn nics_several_missing_addresses_and_dump_debounce() {
        let t0 = Instant::now();
        let mut n = Nics::new(
            vec!["eth0".into()],
            vec![
                ("eth0".into(), ip("192.0.2.11")),
                ("eth0".into(), ip("2001:db8::11")),
            ],
            HOLD,
        )
        .unwrap();
        n.load(&[link(2, "eth0", true, true)], &[], t0, true);
        assert_eq!(
            n.status()[0].text,
            "eth0: addresses 192.0.2.11, 2001:db8::11 gone"
        );
        // A later dump is debounced like an event.
        n.load(
            &[link(2, "eth0", true, true)],
            &[addr(2, "192.0.2.11"), addr(2, "2001:db8::11")],
            t0 + ms(10),
            false,
        );
        assert_eq!(n.level(), Level::Failed);
        assert_eq!(n.due(), Some(t0 + ms(10) + HOLD));
        assert_eq!(
            n.poll(t0 + ms(10) + HOLD),
            vec![change(
                "eth0",
                true,
                "eth0: addresses 192.0.2.11, 2001:db8::11 back"
            )]
        );
    }

    // ---- root test in a private network namespace --------------------------

    /// Run `ip` from the calling thread (so in its namespace).
    fn run_ip(args: &[&str]) {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Call `wait` until a change arrives or `within` passes.
    fn next_changes(w: &mut NicWatch, within: Duration) -> Vec<NicChange> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let got = w.wait(left);
            if !got.is_empty() || left.is_zero() {
                return got;
            }
        }
    }

    #[test]
    fn root_nic_watch_follows_carrier_addresses_and_ignores_flaps() {
        in_private_netns(
            "root_nic_watch_follows_carrier_addresses_and_ignores_flaps",
            || {
                // The kernel here may lack the dummy driver: a veth pair, where
                // taking hv1 down takes the carrier from hv0.
                run_ip(&["link", "add", "hv0", "type", "veth", "peer", "name", "hv1"]);
                run_ip(&["link", "set", "hv0", "up"]);
                run_ip(&["link", "set", "hv1", "up"]);
                run_ip(&["addr", "add", "192.0.2.11/24", "dev", "hv0"]);
                let vip = ip("192.0.2.11");

                // veth reports carrier a moment after both ends are up.
                let mut w = None;
                let deadline = Instant::now() + Duration::from_secs(2);
                while Instant::now() < deadline {
                    let nw =
                        NicWatch::new(vec!["hv0".into()], vec![("hv0".into(), vip)], HOLD).unwrap();
                    if nw.level() == Level::Ok {
                        w = Some(nw);
                        break;
                    }
                    std::thread::sleep(ms(20));
                }
                let mut w = w.expect("hv0 usable within 2 s");
                assert!(format!("{w:?}").contains("NicWatch"));
                assert_eq!(w.status(), vec![change("hv0", true, "hv0: link up")]);
                assert_eq!(w.wait(ms(100)), vec![]);

                // Carrier lost: reported after the hold, within 2 s.
                let started = Instant::now();
                run_ip(&["link", "set", "hv1", "down"]);
                let got = next_changes(&mut w, Duration::from_secs(2));
                let took = started.elapsed();
                assert_eq!(
                    got,
                    vec![change("hv0", false, "hv0: link down (no carrier)")]
                );
                assert!(took >= HOLD, "reported before the hold: {took:?}");
                assert_eq!(w.level(), Level::Failed);

                run_ip(&["link", "set", "hv1", "up"]);
                let got = next_changes(&mut w, Duration::from_secs(2));
                assert_eq!(got, vec![change("hv0", true, "hv0: link up")]);
                assert_eq!(w.level(), Level::Ok);

                // The required address goes.
                run_ip(&["addr", "del", "192.0.2.11/24", "dev", "hv0"]);
                let got = next_changes(&mut w, Duration::from_secs(2));
                assert_eq!(
                    got,
                    vec![change("hv0", false, "hv0: address 192.0.2.11 gone")]
                );
                assert_eq!(w.level(), Level::Failed);
                run_ip(&["addr", "add", "192.0.2.11/24", "dev", "hv0"]);
                let got = next_changes(&mut w, Duration::from_secs(2));
                assert_eq!(
                    got,
                    vec![change("hv0", true, "hv0: address 192.0.2.11 back")]
                );
                assert_eq!(w.level(), Level::Ok);

                // A 100 ms flap while `wait` runs: no change. The shell is
                // spawned from this thread, so it runs in this namespace.
                // It prints how long hv1 was down, in ms.
                let flap = Command::new("/bin/sh")
                    .args([
                        "-c",
                        "ip link set hv1 down && a=$(date +%s%N) && sleep 0.1 && \
                         ip link set hv1 up && b=$(date +%s%N) && \
                         echo $(( (b - a) / 1000000 ))",
                    ])
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                let until = Instant::now() + Duration::from_secs(1);
                let mut seen = Vec::new();
                while Instant::now() < until {
                    seen.extend(w.wait(until.saturating_duration_since(Instant::now())));
                }
                let out = flap.wait_with_output().unwrap();
                assert!(out.status.success());
                let down_ms: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
                seen.extend(w.wait(HOLD + ms(200)));
                if down_ms < 250 {
                    assert_eq!(seen, vec![], "a {down_ms} ms flap was reported");
                } else {
                    // A loaded machine stretched the flap past the hold:
                    // then it must be reported as down and up again.
                    eprintln!("flap took {down_ms} ms: checking it was reported in full");
                    assert_eq!(seen.len(), 2, "{seen:?}");
                    assert!(!seen[0].usable && seen[1].usable, "{seen:?}");
                }
                assert_eq!(w.level(), Level::Ok);

                // Administratively down, then gone; rescan finds the same.
                // Zero timeouts still take in queued events: the first
                // starts the hold, one after the hold reports the change.
                run_ip(&["link", "set", "hv0", "down"]);
                std::thread::sleep(ms(50));
                assert_eq!(w.wait(Duration::ZERO), vec![]);
                std::thread::sleep(HOLD + ms(20));
                let got = w.wait(Duration::ZERO);
                assert_eq!(
                    got,
                    vec![change(
                        "hv0",
                        false,
                        "hv0: link down (administratively down)"
                    )]
                );
                run_ip(&["link", "del", "hv0"]);
                w.rescan();
                assert_eq!(w.wait(HOLD + ms(200)), vec![]);
                assert_eq!(
                    w.status(),
                    vec![change(
                        "hv0",
                        false,
                        "hv0: link down (administratively down)"
                    )]
                );
                assert_eq!(w.level(), Level::Failed);
                assert_eq!(w.take_errors(), Vec::<String>::new());
            },
        );
    }

    #[test]
    fn root_nic_watch_resyncs_after_an_overrun() {
        const FLOOD: u32 = 5000;
        in_private_netns("root_nic_watch_resyncs_after_an_overrun", || {
            run_ip(&["link", "add", "hv0", "type", "veth", "peer", "name", "hv1"]);
            run_ip(&["link", "set", "hv0", "up"]);
            run_ip(&["link", "set", "hv1", "up"]);
            run_ip(&["addr", "add", "192.0.2.11/24", "dev", "hv0"]);
            let vip = ip("192.0.2.11");
            let deadline = Instant::now() + Duration::from_secs(2);
            let mut w = loop {
                let nw =
                    NicWatch::new(vec!["hv0".into()], vec![("hv0".into(), vip)], HOLD).unwrap();
                if nw.level() == Level::Ok || Instant::now() > deadline {
                    break nw;
                }
                std::thread::sleep(ms(20));
            };
            assert_eq!(w.level(), Level::Ok);

            // Flood the monitor while nobody reads it: thousands of link
            // events (MTU changes) overflow its socket buffer, and the
            // removal of the required address at the end is among what the
            // kernel drops.
            let mut batch = String::new();
            for i in 0..FLOOD {
                let mtu = if i % 2 == 0 { 1400 } else { 1500 };
                batch.push_str(&format!("link set dev hv0 mtu {mtu}\n"));
            }
            batch.push_str("addr del 192.0.2.11/24 dev hv0\n");
            let path = std::env::temp_dir().join(format!("hamon-nic-{}.batch", std::process::id()));
            std::fs::write(&path, batch).unwrap();
            run_ip(&["-batch", &path.to_string_lossy()]);
            std::fs::remove_file(&path).unwrap();

            let got = next_changes(&mut w, Duration::from_secs(5));
            assert_eq!(
                got,
                vec![change("hv0", false, "hv0: address 192.0.2.11 gone")]
            );
            assert_eq!(w.level(), Level::Failed);
            let errors = w.take_errors();
            assert!(
                errors.iter().any(|e| e.contains("overrun")),
                "no overrun seen: {errors:?}"
            );
            assert_eq!(w.take_errors(), Vec::<String>::new());
        });
    }
}
