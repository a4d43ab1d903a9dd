//! Claiming and releasing the virtual IP.
//!
//! Claim: add each address to the interface (IPv6 without DAD), then announce
//! it at once (gratuitous ARP request and reply, unsolicited NA) and keep
//! announcing in a burst on a thread of its own. Release: stop any burst and
//! remove every address, carrying on past errors and reporting all of them.

use super::netlink::{self, Change, Socket};
use super::packet::{self, PacketSocket};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One virtual IP: an address and the prefix of its subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Vip {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl FromStr for Vip {
    type Err = String;
    fn from_str(s: &str) -> Result<Vip, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("virtual IP {s:?} needs a prefix length, e.g. 192.0.2.10/24"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("virtual IP {s:?}: bad address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = p
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("virtual IP {s:?}: prefix length must be 0 to {max}"))?;
        if addr.is_unspecified() || addr.is_loopback() || addr.is_multicast() {
            return Err(format!("virtual IP {s:?} must be a unicast address"));
        }
        Ok(Vip { addr, prefix })
    }
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parse a registration's VIP list: at most one IPv4 and one IPv6 address.
pub fn parse_vips(list: &[String]) -> Result<Vec<Vip>, String> {
    let vips = list
        .iter()
        .map(|s| s.parse())
        .collect::<Result<Vec<Vip>, String>>()?;
    let v4 = vips.iter().filter(|v| v.addr.is_ipv4()).count();
    if v4 > 1 || vips.len() - v4 > 1 {
        return Err("at most one IPv4 and one IPv6 virtual IP".into());
    }
    Ok(vips)
}

/// A registration's VIP list, checked for this server: parsed, at most one
/// per family, inside the subnet of `interface`. Returns it normalised
/// (`ADDR/PREFIX` as we print it), which is how registrations store it.
pub fn checked(list: &[String], interface: Option<&str>) -> Result<Vec<String>, String> {
    let vips = parse_vips(list)?;
    if vips.is_empty() {
        return Ok(Vec::new());
    }
    let Some(iface) = interface else {
        return Err("a virtual IP needs `interface` in [node] of the configuration".into());
    };
    validate(&vips, iface)?;
    Ok(vips.iter().map(|v| v.to_string()).collect())
}

/// Check that every VIP lies in the subnet of one of `interface`'s addresses.
pub fn validate(vips: &[Vip], interface: &str) -> Result<(), String> {
    if vips.is_empty() {
        return Ok(());
    }
    let mut nl = Socket::open().map_err(|e| format!("netlink: {e}"))?;
    let link = nl
        .link_by_name(interface)
        .map_err(|e| format!("interface {interface}: {e}"))?;
    let addrs = nl
        .addresses(Some(link.index))
        .map_err(|e| format!("netlink: {e}"))?;
    for v in vips {
        if !netlink::in_subnet_of(v.addr, &addrs) {
            let have: Vec<String> = addrs
                .iter()
                .filter(|a| a.addr.is_ipv4() == v.addr.is_ipv4())
                .map(|a| format!("{}/{}", a.addr, a.prefix_len))
                .collect();
            return Err(format!(
                "virtual IP {v} is not in the subnet of {interface} ({}); both servers must share \
                 the VIP's subnet",
                if have.is_empty() {
                    "no address of that family".into()
                } else {
                    have.join(", ")
                }
            ));
        }
    }
    Ok(())
}

/// How the VIP is announced on takeover.
#[derive(Debug, Clone, Copy)]
pub struct Announce {
    pub count: u32,
    pub gap: Duration,
}

/// What a claim did, for the log and the takeover benchmark.
#[derive(Debug, Clone, Copy)]
pub struct Claimed {
    /// From the call to the first announcement frame on the wire.
    pub first_frame_after: Duration,
}

/// Holds the VIP on one interface.
#[derive(Debug)]
pub struct VipControl {
    interface: String,
    announce: Announce,
    burst: Option<Arc<AtomicBool>>,
}

impl VipControl {
    pub fn new(interface: &str, announce: Announce) -> VipControl {
        VipControl {
            interface: interface.to_string(),
            announce,
            burst: None,
        }
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    fn stop_burst(&mut self) {
        if let Some(stop) = self.burst.take() {
            stop.store(true, Ordering::Relaxed);
        }
    }

    /// Add the addresses and announce them.
    pub fn claim(&mut self, vips: &[Vip]) -> Result<Claimed, Vec<String>> {
        let t0 = Instant::now();
        self.stop_burst();
        let mut errors = Vec::new();
        let link = Socket::open()
            .and_then(|mut nl| {
                let link = nl.link_by_name(&self.interface)?;
                for v in vips {
                    if let Err(e) = nl.add_address(link.index, v.addr, v.prefix) {
                        errors.push(format!("adding {v} to {}: {e}", self.interface));
                    }
                }
                Ok(link)
            })
            .map_err(|e| vec![format!("{}: {e}", self.interface)])?;
        let Some(mac) = link.mac else {
            errors.push(format!(
                "{} has no MAC address: nothing announced",
                self.interface
            ));
            return Err(errors);
        };
        let addrs: Vec<IpAddr> = vips.iter().map(|v| v.addr).collect();
        let sock = match PacketSocket::open(link.index) {
            Ok(s) => s,
            Err(e) => {
                errors.push(format!("packet socket on {}: {e}", self.interface));
                return Err(errors);
            }
        };
        // The first round goes out from here, before any thread is spawned.
        if let Err(e) = packet::announce(&sock, mac, &addrs, 1, Duration::ZERO, &|| false) {
            errors.push(format!("announcing on {}: {e}", self.interface));
        }
        let first_frame_after = t0.elapsed();
        let rest = self.announce.count.saturating_sub(1);
        if rest > 0 {
            let stop = Arc::new(AtomicBool::new(false));
            self.burst = Some(stop.clone());
            let gap = self.announce.gap;
            let _ = std::thread::Builder::new()
                .name("vip-burst".into())
                .spawn(move || {
                    std::thread::sleep(gap);
                    if !stop.load(Ordering::Relaxed) {
                        let _ = packet::announce(&sock, mac, &addrs, rest, gap, &|| {
                            stop.load(Ordering::Relaxed)
                        });
                    }
                });
        }
        if errors.is_empty() {
            Ok(Claimed { first_frame_after })
        } else {
            Err(errors)
        }
    }

    /// One more round of announcements (the periodic refresh).
    pub fn refresh(&self, vips: &[Vip]) -> Result<(), String> {
        let link = Socket::open()
            .and_then(|mut nl| nl.link_by_name(&self.interface))
            .map_err(|e| format!("{}: {e}", self.interface))?;
        let mac = link
            .mac
            .ok_or_else(|| format!("{} has no MAC address", self.interface))?;
        let sock = PacketSocket::open(link.index).map_err(|e| e.to_string())?;
        let addrs: Vec<IpAddr> = vips.iter().map(|v| v.addr).collect();
        packet::announce(&sock, mac, &addrs, 1, Duration::ZERO, &|| false)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Remove the addresses; returns the ones actually removed, or every
    /// error met along the way (it does not stop at the first).
    pub fn release(&mut self, vips: &[Vip]) -> Result<Vec<Vip>, Vec<String>> {
        self.stop_burst();
        release_on(&self.interface, vips)
    }
}

/// Remove `vips` from `interface` (used by `hamon vip release` too).
pub fn release_on(interface: &str, vips: &[Vip]) -> Result<Vec<Vip>, Vec<String>> {
    if vips.is_empty() {
        return Ok(Vec::new());
    }
    let mut nl = Socket::open().map_err(|e| vec![format!("netlink: {e}")])?;
    let link = nl
        .link_by_name(interface)
        .map_err(|e| vec![format!("{interface}: {e}")])?;
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    for v in vips {
        match nl.del_address(link.index, v.addr, v.prefix) {
            Ok(Change::Removed) => removed.push(*v),
            Ok(_) => {}
            Err(e) => errors.push(format!("removing {v} from {interface}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(removed)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_vips() {
        let v: Vip = "192.0.2.10/24".parse().unwrap();
        assert_eq!(v.to_string(), "192.0.2.10/24");
        let v: Vip = "2001:db8::10/64".parse().unwrap();
        assert_eq!(v.prefix, 64);
        for bad in [
            "192.0.2.10",
            "192.0.2.10/33",
            "2001:db8::1/129",
            "x/24",
            "127.0.0.1/8",
            "224.0.0.1/4",
            "0.0.0.0/0",
        ] {
            assert!(bad.parse::<Vip>().is_err(), "{bad}");
        }
        let two_v4 = ["192.0.2.10/24".to_string(), "192.0.2.9/24".to_string()];
        assert!(parse_vips(&two_v4).is_err());
        let both = ["192.0.2.10/24".to_string(), "2001:db8::10/64".to_string()];
        assert_eq!(parse_vips(&both).map(|v| v.len()), Ok(2));
    }
}
