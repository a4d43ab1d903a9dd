//! The network side of the active role: netlink (addresses, links, events),
//! gratuitous ARP and unsolicited NA frames, raw packet sockets, and the
//! virtual IP built from them.

pub mod arp;
pub mod icmp;
pub mod ndisc;
pub mod netlink;
pub mod packet;
#[cfg(test)]
pub(crate) mod testns;
pub mod vip;
