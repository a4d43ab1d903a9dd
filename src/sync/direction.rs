//! Which way data flows: from the server that holds it (the active one) to
//! the standby, whichever role each has.

use crate::ha::{Duty, HaState, PeerTarget, StatusView};

/// States whose server holds the data the standby copies.
pub fn is_data_source(s: HaState) -> bool {
    use HaState::*;
    matches!(
        s,
        PrimaryActive
            | PrimaryLostSecondary
            | SecondaryActive
            | SecondaryFailover
            | SecondaryFailback
    )
}

/// The registered peer's Health Monitor.
pub fn peer_of(view: &StatusView) -> Option<PeerTarget> {
    let peer = view.registration.as_ref()?.member(view.role.other());
    Some(PeerTarget {
        address: peer.address.clone(),
        hm_port: peer.hm_port,
        pin: peer.tls_fingerprint.clone(),
    })
}

/// Whom a standby pulls from: its peer, when that peer holds the data.
pub fn pull_source(view: &StatusView) -> Option<PeerTarget> {
    if view.duty == Duty::Active || !view.peer_reachable {
        return None;
    }
    if !view.peer_state.is_some_and(is_data_source) {
        return None;
    }
    peer_of(view)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ha::{FailoverType, Member, Registration, Role};

    pub(crate) fn view(
        role: Role,
        duty: Duty,
        peer: Option<HaState>,
        reachable: bool,
    ) -> StatusView {
        let member = |name: &str, address: &str| Member {
            name: name.into(),
            address: address.into(),
            hm_port: 8082,
            hb_port: 8083,
            tls_fingerprint: None,
        };
        let mut v = crate::ha::Node::new(
            crate::ha::NodeConfig {
                name: "x".into(),
                role,
                address: "192.0.2.11".into(),
                hm_port: 8082,
                hb_port: 8083,
                fingerprint: None,
                timers: crate::ha::sim::fast_timers(),
                witness: false,
                fence: crate::ha::FencePolicy::Off,
                arbiter: None,
            },
            None,
        )
        .status();
        v.duty = duty;
        v.peer_state = peer;
        v.peer_reachable = reachable;
        v.registration = Some(Registration {
            id: 1,
            failover_type: FailoverType::Manual,
            primary: member("a", "192.0.2.11"),
            secondary: member("b", "192.0.2.12"),
            vips: Vec::new(),
            emails: Vec::new(),
        });
        v
    }

    #[test]
    fn the_standby_pulls_from_whichever_server_is_active() {
        use HaState::*;
        // Normal operation: the secondary pulls from the active primary.
        let s = view(Role::Secondary, Duty::Standby, Some(PrimaryActive), true);
        assert_eq!(
            pull_source(&s).map(|t| t.address),
            Some("192.0.2.11".into())
        );
        // After a failover: the primary (syncing) pulls from the active secondary.
        let p = view(Role::Primary, Duty::Standby, Some(SecondaryActive), true);
        assert_eq!(
            pull_source(&p).map(|t| t.address),
            Some("192.0.2.12".into())
        );
        // During failback the secondary still holds the data.
        let p = view(Role::Primary, Duty::Standby, Some(SecondaryFailback), true);
        assert!(pull_source(&p).is_some());
        // Never from a standby peer, never while active, never from a lost peer.
        assert!(pull_source(&view(
            Role::Primary,
            Duty::Active,
            Some(SecondarySyncing),
            true
        ))
        .is_none());
        assert!(pull_source(&view(
            Role::Secondary,
            Duty::Standby,
            Some(PrimarySyncing),
            true
        ))
        .is_none());
        assert!(pull_source(&view(
            Role::Secondary,
            Duty::Standby,
            Some(PrimaryActive),
            false
        ))
        .is_none());
        let mut alone = view(Role::Secondary, Duty::Standby, Some(PrimaryActive), true);
        alone.registration = None;
        assert!(pull_source(&alone).is_none());
    }
}
