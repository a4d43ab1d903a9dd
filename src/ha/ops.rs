//! Operator commands and the peer requests they set off: registration,
//! failover, failback and removal. Multi-step operations keep the operator's
//! token until they finish, so `hamon ha failback` returns only when the
//! failback is done (or refused).

use super::action::{Action, Reply, Severity};
use super::event::{Command, CopyKind, PeerAnswer, PeerRequest, Secret, Token};
use super::machine::{Link, Step};
use super::state::{HaState, Member, Registration, Role};
use HaState::*;

/// An operator operation in progress.
#[derive(Debug, Clone)]
pub enum Op {
    Register {
        token: Token,
        key: Secret,
        call: u64,
        stage: RegStage,
    },
    Failover {
        token: Token,
    },
    Failback {
        token: Token,
        call: u64,
        stage: FailbackStage,
    },
    Remove {
        token: Token,
        call: u64,
    },
    /// `hamon ha set`: the change waits for the peer's answer (`ha::settings`).
    Settings {
        token: Token,
        call: u64,
        change: super::action::SettingsChange,
        tries: u32,
    },
}

impl Op {
    /// The operator's token this operation will answer.
    pub fn token(&self) -> Token {
        match self {
            Op::Register { token, .. }
            | Op::Failover { token }
            | Op::Failback { token, .. }
            | Op::Remove { token, .. }
            | Op::Settings { token, .. } => *token,
        }
    }
}

/// How many times a primary sends a registration's commit before it gives up.
const COMMIT_TRIES: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegStage {
    Joining,
    Copying,
    Committing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailbackStage {
    Begin,
    Copying,
    Committing,
}

/// How often a server whose certificate changed retries telling its peer.
const REPIN_RETRY: u64 = 10_000;

fn done(message: impl Into<String>) -> Reply {
    Reply::Done {
        message: message.into(),
    }
}

fn refused(message: impl Into<String>) -> Reply {
    Reply::Refused {
        message: message.into(),
    }
}

impl Step<'_> {
    pub(super) fn on_command(&mut self, token: Token, command: Command) {
        if let Command::Status = command {
            let status = Box::new(self.n.status());
            self.reply(token, Reply::Status { status });
            return;
        }
        if let (Some(why), false) = (&self.n.blocked, matches!(command, Command::Remove { .. })) {
            let why = why.clone();
            self.reply(token, refused(why));
            return;
        }
        if self.n.op.is_some() && !matches!(command, Command::Remove { .. }) {
            self.reply(
                token,
                refused("another HA operation is in progress; try again shortly"),
            );
            return;
        }
        match command {
            Command::Status => {}
            Command::Register {
                id,
                secondary_address,
                secondary_hm_port,
                failover_type,
                vips,
                emails,
                key,
            } => {
                if self.n.cfg.role != Role::Primary {
                    return self.reply(token, refused("registration is run on the primary server"));
                }
                if self.n.reg.is_some() {
                    let msg = format!(
                        "HA is already configured (state {}); run `hamon ha remove` first",
                        self.n.state
                    );
                    return self.reply(token, refused(msg));
                }
                if secondary_address == self.n.cfg.address {
                    return self.reply(token, refused("the secondary's address is this server's"));
                }
                let cfg = &self.n.cfg;
                let registration = Registration {
                    id,
                    failover_type,
                    primary: Member {
                        name: cfg.name.clone(),
                        address: cfg.address.clone(),
                        hm_port: cfg.hm_port,
                        hb_port: cfg.hb_port,
                        tls_fingerprint: cfg.fingerprint.clone(),
                    },
                    // The secondary fills in its own name and heartbeat port.
                    secondary: Member {
                        name: String::new(),
                        address: secondary_address,
                        hm_port: secondary_hm_port,
                        hb_port: cfg.hb_port,
                        tls_fingerprint: None,
                    },
                    vips,
                    emails,
                };
                self.n.reg = Some(registration.clone());
                self.n.reg_committed = false;
                self.reset_link();
                self.enter(HaInitializing, "registration started by operator");
                let call =
                    self.call_with_key(PeerRequest::Register { registration }, Some(key.clone()));
                self.n.op = Some(Op::Register {
                    token,
                    key,
                    call,
                    stage: RegStage::Joining,
                });
            }
            Command::Failover => self.command_failover(token),
            Command::Failback => self.command_failback(token),
            Command::Remove { purge } => self.command_remove(token, purge),
            Command::Settings {
                change_id,
                expected,
                new,
                by,
            } => self.command_settings(token, change_id, expected, new, by),
        }
    }

    fn command_failover(&mut self, token: Token) {
        if self.n.cfg.role != Role::Secondary {
            return self.reply(token, refused("failover is run on the secondary server"));
        }
        let why = match self.n.state {
            SecondaryLostPrimary | SecondaryAlone => None,
            StandAlone => Some("HA is not configured".to_string()),
            SecondaryActive => Some("this secondary is already active".to_string()),
            SecondaryUncertain if self.n.prior == Some(SecondaryActive) => {
                Some("this secondary is already active".to_string())
            }
            SecondarySyncing | SecondaryUncertain => Some(format!(
                "the primary {} is healthy and active; failover is for a failed primary",
                self.n.peer_label()
            )),
            s => Some(format!("not possible in state {s}")),
        };
        if let Some(why) = why {
            return self.reply(token, refused(format!("failover refused: {why}")));
        }
        self.n.op = Some(Op::Failover { token });
        self.take_over("manual failover by operator");
    }

    pub(super) fn fail_op_failover(&mut self, msg: String) {
        if let Some(Op::Failover { token }) = self.n.op {
            self.n.op = None;
            self.reply(token, refused(msg));
        }
    }

    pub(super) fn finish_op_failover(&mut self, msg: String) {
        if let Some(Op::Failover { token }) = self.n.op {
            self.n.op = None;
            self.reply(token, done(msg));
        }
    }

    fn command_failback(&mut self, token: Token) {
        if self.n.cfg.role != Role::Secondary {
            return self.reply(token, refused("failback is run on the secondary server"));
        }
        if self.n.state != SecondaryActive {
            let msg = format!(
                "failback refused: this secondary is {}; failback starts from Secondary Active",
                self.n.state
            );
            return self.reply(token, refused(msg));
        }
        let Some(registration) = self.n.reg.clone() else {
            return self.reply(token, refused("HA is not configured"));
        };
        self.enter(SecondaryFailback, "failback started by operator");
        let call = self.call(PeerRequest::FailbackBegin { registration });
        self.n.op = Some(Op::Failback {
            token,
            call,
            stage: FailbackStage::Begin,
        });
    }

    /// Give up a failback: the secondary keeps (or takes back) the active role.
    fn failback_failed(&mut self, token: Token, why: String) {
        self.n.op = None;
        self.enter(SecondaryActive, &why);
        self.reply(token, refused(why));
    }

    pub(super) fn failback_copy_done(&mut self, result: Result<(), String>) {
        let Some(Op::Failback {
            token,
            call,
            stage: FailbackStage::Copying,
        }) = self.n.op
        else {
            return;
        };
        match result {
            Ok(()) => {
                self.n.op = Some(Op::Failback {
                    token,
                    call,
                    stage: FailbackStage::Committing,
                });
                // Standing down; the commit goes out once the duty is applied.
                self.enter(
                    SecondaryPostFailback,
                    "data copied to the primary; standing down",
                );
            }
            Err(e) => {
                let id = self.n.reg.as_ref().map_or(0, |r| r.id);
                let reason = format!("failback copy failed: {e}");
                self.call(PeerRequest::FailbackAbort {
                    id,
                    reason: reason.clone(),
                });
                self.failback_failed(token, reason);
            }
        }
    }

    pub(super) fn failback_commit(&mut self) {
        let Some(Op::Failback {
            token,
            stage: FailbackStage::Committing,
            ..
        }) = self.n.op
        else {
            return;
        };
        let id = self.n.reg.as_ref().map_or(0, |r| r.id);
        let call = self.call(PeerRequest::FailbackCommit { id });
        self.n.op = Some(Op::Failback {
            token,
            call,
            stage: FailbackStage::Committing,
        });
    }

    fn command_remove(&mut self, token: Token, purge: bool) {
        let Some(reg) = self.n.reg.clone() else {
            return self.reply(token, refused("HA is not configured on this server"));
        };
        if let Some(old) = self.n.op.take() {
            self.reply(old.token(), refused("cancelled by `hamon ha remove`"));
        }
        let call = self.call(PeerRequest::Remove { id: reg.id, purge });
        self.n.op = Some(Op::Remove { token, call });
        self.remove_locally(purge, "HA configuration removed by operator");
    }

    fn remove_locally(&mut self, purge: bool, why: &str) {
        if purge {
            self.out.push(Action::PurgeData);
        }
        self.n.reg = None;
        self.n.reg_committed = false;
        self.n.joining = false;
        self.n.blocked = None;
        self.n.boot_from = None;
        self.n.data_gap = false;
        self.n.copy_retry_at = None;
        self.n.peer = None;
        self.n.settings_pending = None;
        self.n.settings_call = None;
        self.n.settings_applied = None;
        self.enter(StandAlone, why);
    }

    /// When this server's certificate is not the one its registration pins (it was
    /// replaced), tells the peer through the authenticated channel, while the peer is
    /// heard, every `REPIN_RETRY` until it accepts. Only then is our own copy updated, so
    /// a restart before that tries again.
    pub(super) fn repin(&mut self) {
        let Some(reg) = self.n.reg.as_ref().filter(|_| self.n.reg_committed) else {
            return;
        };
        let mine = reg.member(self.n.cfg.role);
        let current = &self.n.cfg.fingerprint;
        if current.is_none() || mine.tls_fingerprint == *current {
            return;
        }
        let waiting = self.n.identity_call.is_some() && self.now < self.n.identity_retry_at;
        if waiting || self.n.link != Link::Up {
            return;
        }
        let mut member = mine.clone();
        member.tls_fingerprint = current.clone();
        let id = reg.id;
        let call = self.call(PeerRequest::Identity { id, member });
        self.n.identity_call = Some(call);
        self.n.identity_retry_at = self.now.saturating_add(REPIN_RETRY);
    }

    // ----- replies to our calls --------------------------------------------

    pub(super) fn on_peer_reply(&mut self, id: u64, result: Result<PeerAnswer, String>) {
        let result = match result {
            Ok(PeerAnswer::Accepted {
                state,
                registration,
            }) => Ok((state, registration.map(|r| *r))),
            Ok(PeerAnswer::Refused { reason }) => Err(format!("refused by the peer: {reason}")),
            Err(e) => Err(e),
        };
        if self.n.identity_call == Some(id) {
            self.n.identity_call = None;
            return self.repinned(result.map(|_| ()));
        }
        if self.n.settings_call == Some(id) {
            return self.settings_undo_reply(result.map(|_| ()));
        }
        match self.n.op.clone() {
            Some(Op::Register {
                token,
                key,
                call,
                stage,
            }) if call == id => self.register_reply(token, key, stage, result),
            Some(Op::Failback { token, call, stage }) if call == id => match (stage, result) {
                (FailbackStage::Begin, Ok(_)) => {
                    self.n.op = Some(Op::Failback {
                        token,
                        call,
                        stage: FailbackStage::Copying,
                    });
                    self.journal(
                        "failback_copy",
                        Severity::Info,
                        "copying data from this secondary to the primary",
                    );
                    self.start_copy(CopyKind::Failback);
                }
                (FailbackStage::Committing, Ok(_)) => {
                    self.n.op = None;
                    self.n.synced = true;
                    let msg = format!(
                        "Completed failback from {} to {}",
                        self.n.cfg.name,
                        self.n.peer_label()
                    );
                    self.enter(SecondarySyncing, "failback complete");
                    self.journal("failback_complete", Severity::Info, msg.clone());
                    self.reply(token, done(msg));
                }
                (_, Err(e)) => self.failback_failed(token, format!("failback failed: {e}")),
                (FailbackStage::Copying, Ok(_)) => {}
            },
            Some(Op::Settings {
                token,
                call,
                change,
                tries,
            }) if call == id => self.settings_reply(token, change, tries, result.map(|_| ())),
            Some(Op::Remove { token, call }) if call == id => {
                self.n.op = None;
                let msg = match result {
                    Ok(_) => "HA configuration removed from both servers".to_string(),
                    Err(e) => format!(
                        "HA configuration removed from this server; the peer was not updated \
                         ({e}): run `hamon ha remove` there too"
                    ),
                };
                self.reply(token, done(msg));
            }
            _ => {}
        }
    }

    fn repinned(&mut self, result: Result<(), String>) {
        let role = self.n.cfg.role;
        let fingerprint = self.n.cfg.fingerprint.clone();
        match (result, self.n.reg.as_mut()) {
            (Ok(()), Some(reg)) => {
                let mine = match role {
                    Role::Primary => &mut reg.primary,
                    Role::Secondary => &mut reg.secondary,
                };
                mine.tls_fingerprint = fingerprint.clone();
                let peer = self.n.peer_label();
                self.journal(
                    "peer_certificate_pinned",
                    Severity::Info,
                    format!(
                        "{peer} now pins this server's new Health Monitor certificate {}",
                        fingerprint.unwrap_or_default()
                    ),
                );
            }
            (Err(e), Some(_)) => self.journal(
                "peer_certificate_pin_failed",
                Severity::Warning,
                format!(
                    "could not give {} this server's new Health Monitor certificate (retried \
                     every {} s): {e}",
                    self.n.peer_label(),
                    REPIN_RETRY / 1000
                ),
            ),
            (_, None) => {}
        }
    }

    fn register_reply(
        &mut self,
        token: Token,
        key: Secret,
        stage: RegStage,
        result: Result<(HaState, Option<Registration>), String>,
    ) {
        match (stage, result) {
            (RegStage::Joining, Ok((_, Some(full)))) => {
                let ours = self.n.reg.as_ref();
                if ours.map(|r| (r.id, &r.primary)) != Some((full.id, &full.primary)) {
                    return self.register_failed(
                        token,
                        "the secondary answered for another \
                                                        registration"
                            .into(),
                    );
                }
                self.n.reg = Some(full);
                self.out.push(Action::InstallKey(key.clone()));
                self.reset_link();
                self.journal(
                    "initial_copy",
                    Severity::Info,
                    "copying data to the secondary",
                );
                let call = 0; // no call outstanding while copying
                self.n.op = Some(Op::Register {
                    token,
                    key,
                    call,
                    stage: RegStage::Copying,
                });
                self.start_copy(CopyKind::Initial);
            }
            (RegStage::Joining, Ok((_, None))) => {
                self.register_failed(token, "the secondary sent no registration".into())
            }
            (RegStage::Committing, Ok(_)) => {
                self.n.op = None;
                self.n.reg_committed = true;
                self.enter(PrimaryActive, "registration complete");
                let msg = format!(
                    "HA registration complete: this primary is {} and {} is the secondary",
                    self.n.state,
                    self.n.peer_label()
                );
                self.journal("registered", Severity::Info, msg.clone());
                self.reply(token, done(msg));
            }
            (RegStage::Committing, Err(e))
                if !e.starts_with("refused by the peer") && self.n.commit_tries < COMMIT_TRIES =>
            {
                // The commit or its answer was lost: the secondary may have committed.
                // Asking again is safe (it answers a commit it made already), and only a
                // commit that never gets through ends in an abort.
                self.n.commit_tries += 1;
                let id = self.n.reg.as_ref().map_or(0, |r| r.id);
                let call = self.call(PeerRequest::RegisterCommit { id });
                self.n.op = Some(Op::Register {
                    token,
                    key,
                    call,
                    stage: RegStage::Committing,
                });
            }
            (_, Err(e)) => self.register_failed(token, format!("registration failed: {e}")),
            (RegStage::Copying, Ok(_)) => {}
        }
    }

    pub(super) fn initial_copy_done(&mut self, result: Result<(), String>) {
        let Some(Op::Register {
            token,
            key,
            stage: RegStage::Copying,
            ..
        }) = self.n.op.clone()
        else {
            return;
        };
        let id = self.n.reg.as_ref().map_or(0, |r| r.id);
        match result {
            Ok(()) => {
                self.n.commit_tries = 1;
                let call = self.call(PeerRequest::RegisterCommit { id });
                self.n.op = Some(Op::Register {
                    token,
                    key,
                    call,
                    stage: RegStage::Committing,
                });
            }
            Err(e) => {
                self.register_failed(token, format!("registration failed: initial copy: {e}"))
            }
        }
    }

    fn register_failed(&mut self, token: Token, why: String) {
        if let Some(reg) = &self.n.reg {
            // The secondary may have joined: tell it (best effort).
            let request = PeerRequest::RegisterAbort {
                id: reg.id,
                reason: why.clone(),
            };
            let key = match &self.n.op {
                Some(Op::Register { key, .. }) => Some(key.clone()),
                _ => None,
            };
            self.call_with_key(request, key);
        }
        self.n.op = None;
        self.n.reg = None;
        self.n.reg_committed = false;
        self.n.peer = None;
        self.enter(StandAlone, &why);
        self.reply(token, refused(why));
    }

    // ----- requests from the peer --------------------------------------------

    pub(super) fn on_peer_request(&mut self, token: Token, request: PeerRequest) {
        let answer = self.peer_request(request);
        self.out.push(Action::Answer { token, answer });
    }

    fn accepted(&self, registration: Option<Registration>) -> PeerAnswer {
        PeerAnswer::Accepted {
            state: self.n.state,
            registration: registration.map(Box::new),
        }
    }

    fn peer_request(&mut self, request: PeerRequest) -> PeerAnswer {
        let refuse = |reason: String| PeerAnswer::Refused { reason };
        if let Some(why) = &self.n.blocked {
            if !matches!(request, PeerRequest::Remove { .. }) {
                return refuse(why.clone());
            }
        }
        let reg_id = self.n.reg.as_ref().map(|r| r.id);
        match request {
            PeerRequest::Register { mut registration } => {
                if self.n.cfg.role != Role::Secondary {
                    return refuse("this server is a primary".into());
                }
                if registration.secondary.address != self.n.cfg.address {
                    return refuse(format!(
                        "the registration names secondary {} but this server is {}",
                        registration.secondary.address, self.n.cfg.address
                    ));
                }
                if let Some(r) = &self.n.reg {
                    if r.primary.address != registration.primary.address {
                        return refuse(format!(
                            "this secondary is registered with primary {}({}); run `hamon ha \
                             remove` there first",
                            r.primary.name, r.primary.address
                        ));
                    }
                    if self.n.duty == super::state::Duty::Active {
                        return refuse("this secondary is active; fail back first".into());
                    }
                }
                let cfg = &self.n.cfg;
                registration.secondary = Member {
                    name: cfg.name.clone(),
                    address: cfg.address.clone(),
                    hm_port: cfg.hm_port,
                    hb_port: cfg.hb_port,
                    tls_fingerprint: cfg.fingerprint.clone(),
                };
                let primary = format!(
                    "{}({})",
                    registration.primary.name, registration.primary.address
                );
                self.n.reg = Some(registration.clone());
                self.n.reg_committed = false;
                self.n.joining = true;
                self.n.boot_from = None;
                self.enter(
                    HaInitializing,
                    &format!("registration requested by primary {primary}"),
                );
                self.set_duty(super::state::Duty::Standby);
                self.reset_link();
                self.accepted(Some(registration))
            }
            PeerRequest::RegisterCommit { id } => {
                if !self.n.joining && self.n.reg_committed && reg_id == Some(id) {
                    // Committed already: the answer to the first commit was lost.
                    return self.accepted(None);
                }
                if !(self.n.joining && reg_id == Some(id)) {
                    return refuse("no registration in progress with that id".into());
                }
                self.n.joining = false;
                self.n.reg_committed = true;
                self.n.reg_confirmed = false;
                self.n.synced = true;
                self.enter(SecondarySyncing, "registration complete");
                self.accepted(None)
            }
            PeerRequest::RegisterAbort { id, reason } => {
                // Joining, or committed without the primary's word since: the primary
                // gave up on the commit (its answer was lost), so this side goes too.
                let unconfirmed = self.n.reg_committed
                    && !self.n.reg_confirmed
                    && self.n.duty != super::state::Duty::Active;
                if (self.n.joining || unconfirmed) && reg_id == Some(id) {
                    self.n.joining = false;
                    self.n.reg = None;
                    self.n.reg_committed = false;
                    self.n.reg_confirmed = true;
                    self.enter(
                        StandAlone,
                        &format!("registration aborted by primary: {reason}"),
                    );
                }
                self.accepted(None)
            }
            PeerRequest::FailbackBegin { registration } => self.failback_begin(registration),
            PeerRequest::FailbackCommit { id } => {
                if self.n.state != PrimaryFailback || reg_id != Some(id) {
                    return refuse(format!("no failback in progress (state {})", self.n.state));
                }
                self.enter(PrimaryActive, "failback complete");
                self.accepted(None)
            }
            PeerRequest::FailbackAbort { id, reason } => {
                if self.n.state == PrimaryFailback && reg_id == Some(id) {
                    self.enter(PrimarySyncing, &format!("failback abandoned: {reason}"));
                }
                self.accepted(None)
            }
            PeerRequest::Identity { id, member } => {
                let other = self.n.cfg.role.other();
                let Some(reg) = self.n.reg.as_mut().filter(|r| r.id == id) else {
                    return refuse("not part of that registration".into());
                };
                let peer = match other {
                    Role::Primary => &mut reg.primary,
                    Role::Secondary => &mut reg.secondary,
                };
                if (&peer.name, &peer.address) != (&member.name, &member.address) {
                    return refuse(format!(
                        "this server's peer is {}({}), not {}({})",
                        peer.name, peer.address, member.name, member.address
                    ));
                }
                peer.tls_fingerprint = member.tls_fingerprint.clone();
                let text = format!(
                    "{}({}) has a new Health Monitor certificate {}; pinned",
                    member.name,
                    member.address,
                    member.tls_fingerprint.unwrap_or_default()
                );
                self.journal("peer_certificate_pinned", Severity::Info, text);
                self.accepted(None)
            }
            PeerRequest::Settings {
                id,
                change_id,
                registration,
                by,
            } => self.peer_settings(id, change_id, registration, by),
            PeerRequest::SettingsUndo {
                id,
                change_id,
                old,
                new,
            } => self.peer_settings_undo(id, change_id, old, new),
            PeerRequest::Remove { id, purge } => {
                if reg_id != Some(id) {
                    return refuse("not part of that registration".into());
                }
                if let Some(old) = self.n.op.take() {
                    self.reply(old.token(), refused("cancelled: the peer removed HA"));
                }
                self.remove_locally(purge, "HA configuration removed by the peer");
                self.accepted(None)
            }
        }
    }

    fn failback_begin(&mut self, registration: Registration) -> PeerAnswer {
        let refuse = |reason: String| PeerAnswer::Refused { reason };
        if self.n.cfg.role != Role::Primary {
            return refuse("this server is a secondary".into());
        }
        let me = &registration.primary;
        if me.address != self.n.cfg.address || me.name != self.n.cfg.name {
            return refuse(format!(
                "the registration names primary {}({}) but this server is {}({})",
                me.name, me.address, self.n.cfg.name, self.n.cfg.address
            ));
        }
        match (&self.n.reg, self.n.state) {
            // A replacement primary: not configured, same identity and key.
            (None, StandAlone) => {
                self.n.reg = Some(registration);
                self.n.reg_committed = true;
                self.reset_link();
                self.enter(
                    PrimaryFailback,
                    "failback to this (replacement) primary started",
                );
                self.accepted(None)
            }
            (Some(r), _) if r.id != registration.id => {
                refuse("this primary belongs to another registration".into())
            }
            (_, PrimarySyncing | PrimaryFailover) => {
                self.n.boot_from = None;
                self.enter(PrimaryFailback, "failback started by the secondary");
                self.accepted(None)
            }
            (_, PrimaryDatabaseCopyFailed) => refuse(format!(
                "failback is blocked: the data-gap copy failed and is retried every {} s; \
                 failback is possible once it succeeds",
                self.n.cfg.timers.copy_retry / 1000
            )),
            (_, PrimaryPreparingForFailback) => {
                refuse("the primary is still preparing for failback (copying data)".into())
            }
            (_, s) => refuse(format!("the primary is {s}; failback is not possible")),
        }
    }
}
