//! Group membership (Kafka's GroupCoordinator, classic protocol): the state machine of every
//! group this shard coordinates. JoinGroup, SyncGroup, Heartbeat and LeaveGroup move a group
//! through Empty -> PreparingRebalance -> CompletingRebalance -> Stable (and Dead when it is
//! deleted); `tick` drives the deadlines: session expiry, member ids handed out but never
//! used, the rebalance deadline and the initial rebalance delay of a new group.
//!
//! Invariants: a member is in `members` under its current id, and a static member's
//! `group.instance.id` maps to that id in `statics`; the generation only grows; every state
//! change that a blocked JoinGroup or SyncGroup may be waiting for is followed by
//! `notify_all`. A member blocked in a call (`waiting > 0`) is not expired by its session
//! timeout.
//!
//! A group is stored in `__consumer_offsets` (as Kafka stores it) when a rebalance completes
//! and when it becomes empty (`changed`, written by the coordinator): a coordinator that takes
//! the group over restores it (`restore`) and its members go on in their generation. Between
//! those points the state is memory only; members rejoin after a takeover in the middle of a
//! rebalance.

use super::offsets::{GroupRecord, MemberRecord};
use super::types::{DescribeOut, JoinOut, JoinRequest, LeaveOut, MemberDescription, SyncOut};
use crate::config::Config;
use crate::protocol::errors::ErrorCode;
use crate::util::{Clock, Notify};
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Most members one group may have, counting member ids handed out with MEMBER_ID_REQUIRED
/// and not used yet (Kafka: group.max.size is unbounded by default; this bounds the memory one
/// group id can take). Past it: GROUP_MAX_SIZE_REACHED.
pub(super) const MAX_GROUP_MEMBERS: usize = 10_000;
/// Most groups with live membership state one coordinator shard keeps (each costs its
/// members' metadata and assignments). A JoinGroup for a new group past it answers
/// GROUP_MAX_SIZE_REACHED; groups that emptied are forgotten (`forget_empty`), so the bound
/// is on groups in use, not on every id ever seen.
pub(super) const MAX_GROUPS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// Joined in the current rebalance.
    joined: bool,
    join_result: Option<JoinOut>,
    /// Blocked in a JoinGroup or SyncGroup call: not subject to the session timeout.
    waiting: u32,
    last_seen: Instant,
    seq: u64,
}

struct Group {
    state: GroupState,
    protocol_type: Option<String>,
    protocol: Option<String>,
    generation: i32,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    pending: HashMap<String, Instant>,
    statics: HashMap<String, String>,
    rebalance_deadline: Instant,
    initial_deadline: Option<Instant>,
    notify: Rc<Notify>,
    /// The group changed in a way another coordinator must know (a rebalance completed, it
    /// became empty): its record is to be written (`Membership::take_changed`).
    changed: bool,
}

impl Group {
    fn new(now: Instant) -> Group {
        Group {
            state: GroupState::Empty,
            protocol_type: None,
            protocol: None,
            generation: 0,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            statics: HashMap::new(),
            rebalance_deadline: now,
            initial_deadline: None,
            notify: Rc::new(Notify::default()),
            changed: false,
        }
    }

    /// The group as `__consumer_offsets` stores it.
    fn record(&self, now_ms: i64) -> GroupRecord {
        GroupRecord {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp: now_ms,
            members: self
                .members
                .values()
                .map(|m| MemberRecord {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout.as_millis() as i32,
                    session_timeout_ms: m.session_timeout.as_millis() as i32,
                    subscription: self.metadata_for(m),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    fn metadata_for(&self, m: &Member) -> Bytes {
        let p = self.protocol.as_deref().unwrap_or("");
        m.protocols
            .iter()
            .find(|(n, _)| n == p)
            .map(|(_, b)| b.clone())
            .unwrap_or_default()
    }

    /// Begins a rebalance unless one is on. Its deadline is the longest rebalance timeout of
    /// the members from the moment it begins, and members joining meanwhile do not push it
    /// back (Kafka's DelayedJoin): else a member that heartbeats but never rejoins would hold
    /// the group in PreparingRebalance for as long as others keep joining.
    fn start_rebalance(&mut self, now: Instant, initial_delay: Duration) {
        if self.state == GroupState::PreparingRebalance {
            return;
        }
        if self.state == GroupState::Empty && !initial_delay.is_zero() {
            self.initial_deadline = Some(now + initial_delay);
        }
        self.state = GroupState::PreparingRebalance;
        for m in self.members.values_mut() {
            m.joined = false;
            m.join_result = None;
        }
        let longest = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        self.rebalance_deadline = now + longest;
    }

    fn remove_member(&mut self, id: &str) -> bool {
        match self.members.remove(id) {
            Some(m) => {
                if let Some(i) = &m.instance_id {
                    if self.statics.get(i).is_some_and(|x| x == id) {
                        self.statics.remove(i);
                    }
                }
                if self.leader.as_deref() == Some(id) {
                    self.leader = None;
                }
                true
            }
            None => false,
        }
    }

    /// After members left or died: rebalance the rest, or become Empty.
    fn after_departure(&mut self, now: Instant) {
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if self.members.is_empty() {
                    self.become_empty();
                } else {
                    self.start_rebalance(now, Duration::ZERO);
                }
            }
            GroupState::PreparingRebalance => self.maybe_complete(now),
            GroupState::Empty | GroupState::Dead => {}
        }
        self.notify.notify_all();
    }

    fn become_empty(&mut self) {
        self.state = GroupState::Empty;
        self.generation += 1;
        self.protocol = None;
        self.leader = None;
        self.initial_deadline = None;
        self.changed = true;
        self.notify.notify_all();
    }

    /// Completes the join phase when every member rejoined (after the initial delay of a new
    /// group), or at the rebalance deadline, dropping members that did not rejoin.
    fn maybe_complete(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.joined);
        let past_deadline = now >= self.rebalance_deadline;
        let delaying = self.initial_deadline.is_some_and(|d| now < d);
        if !past_deadline && (!all_joined || delaying) {
            return;
        }
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.joined)
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.initial_deadline = None;
        if self.members.is_empty() {
            self.become_empty();
            return;
        }
        self.generation += 1;
        self.protocol = self.select_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self
                .members
                .values()
                .min_by_key(|m| m.seq)
                .map(|m| m.id.clone());
        }
        let leader = self.leader.clone().unwrap_or_default();
        let all: Vec<(String, Option<String>, Bytes)> = self
            .members
            .values()
            .map(|m| (m.id.clone(), m.instance_id.clone(), self.metadata_for(m)))
            .collect();
        let (generation, pt, proto) = (
            self.generation,
            self.protocol_type.clone(),
            self.protocol.clone(),
        );
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            m.join_result = Some(JoinOut {
                error: ErrorCode::NONE,
                generation,
                protocol_type: pt.clone(),
                protocol: proto.clone(),
                leader: leader.clone(),
                member_id: m.id.clone(),
                skip_assignment: false,
                members: if m.id == leader {
                    all.clone()
                } else {
                    Vec::new()
                },
            });
        }
        self.state = GroupState::CompletingRebalance;
        self.notify.notify_all();
    }

    /// The protocol every member supports with the most first-choice votes.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(x, _)| x == *n))
            })
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0usize, *c)).collect();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
                if let Some(v) = votes.iter_mut().find(|v| v.1 == n) {
                    v.0 += 1;
                }
            }
        }
        let best = votes.iter().map(|v| v.0).max()?;
        votes.into_iter().find(|v| v.0 == best).map(|v| v.1.clone())
    }

    fn supports_common_protocol(&self, protocols: &[(String, Bytes)]) -> bool {
        self.members.is_empty()
            || protocols.iter().any(|(n, _)| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(x, _)| x == n))
            })
    }

    /// The answer to a call whose member left the group while the call waited:
    /// FENCED_INSTANCE_ID when its static instance id passed to another member (the instance
    /// restarted), else UNKNOWN_MEMBER_ID.
    fn gone(&self, instance_id: &Option<String>) -> ErrorCode {
        if instance_id
            .as_ref()
            .is_some_and(|i| self.statics.contains_key(i))
        {
            ErrorCode::FENCED_INSTANCE_ID
        } else {
            ErrorCode::UNKNOWN_MEMBER_ID
        }
    }

    /// Checks a member's identity for Sync/Heartbeat/Commit.
    fn check_member(&self, member_id: &str, instance_id: &Option<String>) -> Result<(), ErrorCode> {
        if let Some(i) = instance_id {
            if let Some(cur) = self.statics.get(i) {
                if cur != member_id {
                    return Err(ErrorCode::FENCED_INSTANCE_ID);
                }
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ErrorCode::UNKNOWN_MEMBER_ID);
        }
        Ok(())
    }
}

fn new_member_id(prefix: &str, n: u64) -> String {
    format!("{prefix}-{}-{n}", crate::metadata::image::random_hex(8))
}

/// The groups of one coordinator shard.
pub(super) struct Membership {
    config: Rc<Config>,
    clock: Rc<dyn Clock>,
    groups: RefCell<HashMap<String, Group>>,
    seq: Cell<u64>,
    member_counter: Cell<u64>,
}

impl Membership {
    pub(super) fn new(config: Rc<Config>, clock: Rc<dyn Clock>) -> Membership {
        Membership {
            config,
            clock,
            groups: RefCell::new(HashMap::new()),
            seq: Cell::new(0),
            member_counter: Cell::new(0),
        }
    }

    fn next_seq(&self) -> u64 {
        self.seq.set(self.seq.get() + 1);
        self.seq.get()
    }

    pub(super) async fn join(&self, req: JoinRequest) -> JoinOut {
        let JoinRequest {
            group: gid,
            member_id,
            instance_id,
            client_id,
            client_host,
            session_timeout_ms,
            rebalance_timeout_ms,
            protocol_type,
            protocols,
            require_member_id,
            can_skip_assignment,
        } = req;
        let cfg = &self.config;
        if gid.is_empty() {
            return JoinOut::error(ErrorCode::INVALID_GROUP_ID, member_id);
        }
        if session_timeout_ms < cfg.group_min_session_timeout_ms
            || session_timeout_ms > cfg.group_max_session_timeout_ms
        {
            return JoinOut::error(ErrorCode::INVALID_SESSION_TIMEOUT, member_id);
        }
        if protocol_type.is_empty() || protocols.is_empty() {
            return JoinOut::error(ErrorCode::INCONSISTENT_GROUP_PROTOCOL, member_id);
        }
        let now = self.clock.now();
        let initial_delay = Duration::from_millis(cfg.group_initial_rebalance_delay_ms);
        let (notify, id) = {
            let mut groups = self.groups.borrow_mut();
            if !groups.contains_key(&gid) && groups.len() >= MAX_GROUPS {
                tracing::warn!(group = %gid, "refusing a new group: {MAX_GROUPS} groups on this coordinator");
                return JoinOut::error(ErrorCode::GROUP_MAX_SIZE_REACHED, member_id);
            }
            let g = groups.entry(gid.clone()).or_insert_with(|| Group::new(now));
            if g.state == GroupState::Dead {
                *g = Group::new(now);
            }
            if !g.members.is_empty()
                && (g
                    .protocol_type
                    .as_deref()
                    .is_some_and(|t| t != protocol_type)
                    || !g.supports_common_protocol(&protocols))
            {
                return JoinOut::error(ErrorCode::INCONSISTENT_GROUP_PROTOCOL, member_id);
            }
            let mut id = member_id.clone();
            if id.is_empty() {
                let n = self.member_counter.get() + 1;
                self.member_counter.set(n);
                let prefix = if client_id.is_empty() {
                    "member"
                } else {
                    client_id.as_str()
                };
                match &instance_id {
                    Some(iid) => {
                        let new_id = new_member_id(iid, n);
                        if let Some(old) = g.statics.get(iid).cloned() {
                            // A static member restarted: it takes over its old membership.
                            if let Some(mut m) = g.members.remove(&old) {
                                m.id = new_id.clone();
                                // The old incarnation's blocked calls end (woken below, told
                                // FENCED_INSTANCE_ID) without touching what is now another
                                // member: its count would spare this one session expiry.
                                m.waiting = 0;
                                m.protocols = protocols.clone();
                                m.last_seen = now;
                                m.client_id = client_id.clone();
                                m.client_host = client_host.clone();
                                let was_leader = g.leader.as_deref() == Some(old.as_str());
                                if was_leader {
                                    g.leader = Some(new_id.clone());
                                }
                                g.members.insert(new_id.clone(), m);
                                g.statics.insert(iid.clone(), new_id.clone());
                                g.notify.notify_all();
                                // As Kafka: no rebalance while the selected protocol would stay
                                // the same; the member gets its stored assignment at SyncGroup.
                                if g.state == GroupState::Stable
                                    && g.select_protocol() == g.protocol
                                {
                                    let (leader, members) = if was_leader && can_skip_assignment {
                                        let all = g
                                            .members
                                            .values()
                                            .map(|m| {
                                                (
                                                    m.id.clone(),
                                                    m.instance_id.clone(),
                                                    g.metadata_for(m),
                                                )
                                            })
                                            .collect();
                                        (new_id.clone(), all)
                                    } else if was_leader {
                                        // Before JoinGroup v9 the client cannot be told to skip
                                        // the assignment: name the old id as leader so it
                                        // behaves as a follower (what Kafka did).
                                        (old.clone(), Vec::new())
                                    } else {
                                        (g.leader.clone().unwrap_or_default(), Vec::new())
                                    };
                                    return JoinOut {
                                        error: ErrorCode::NONE,
                                        generation: g.generation,
                                        protocol_type: g.protocol_type.clone(),
                                        protocol: g.protocol.clone(),
                                        leader,
                                        member_id: new_id,
                                        skip_assignment: was_leader && can_skip_assignment,
                                        members,
                                    };
                                }
                            }
                        }
                        id = new_id;
                    }
                    None if require_member_id => {
                        if g.members.len() + g.pending.len() >= MAX_GROUP_MEMBERS {
                            return JoinOut::error(ErrorCode::GROUP_MAX_SIZE_REACHED, member_id);
                        }
                        let new_id = new_member_id(prefix, n);
                        g.pending.insert(
                            new_id.clone(),
                            now + Duration::from_millis(session_timeout_ms as u64),
                        );
                        return JoinOut::error(ErrorCode::MEMBER_ID_REQUIRED, new_id);
                    }
                    None => id = new_member_id(prefix, n),
                }
            } else if instance_id
                .as_ref()
                .and_then(|iid| g.statics.get(iid))
                .is_some_and(|cur| *cur != id)
            {
                // Before the member check, as Kafka does: told UNKNOWN_MEMBER_ID, a replaced
                // static instance would join afresh and take its instance id back.
                return JoinOut::error(ErrorCode::FENCED_INSTANCE_ID, id);
            } else if g.pending.remove(&id).is_none() && !g.members.contains_key(&id) {
                return JoinOut::error(ErrorCode::UNKNOWN_MEMBER_ID, id);
            }
            if !g.members.contains_key(&id) && g.members.len() >= MAX_GROUP_MEMBERS {
                return JoinOut::error(ErrorCode::GROUP_MAX_SIZE_REACHED, id);
            }
            let seq = self.next_seq();
            let m = g.members.entry(id.clone()).or_insert_with(|| Member {
                id: id.clone(),
                instance_id: instance_id.clone(),
                client_id: client_id.clone(),
                client_host: client_host.clone(),
                session_timeout: Duration::ZERO,
                rebalance_timeout: Duration::ZERO,
                protocols: Vec::new(),
                assignment: Bytes::new(),
                joined: false,
                join_result: None,
                waiting: 0,
                last_seen: now,
                seq,
            });
            m.session_timeout = Duration::from_millis(session_timeout_ms as u64);
            m.rebalance_timeout =
                Duration::from_millis(rebalance_timeout_ms.max(session_timeout_ms) as u64);
            m.protocols = protocols;
            m.last_seen = now;
            m.waiting += 1;
            if let Some(iid) = &instance_id {
                g.statics.insert(iid.clone(), id.clone());
            }
            g.protocol_type = Some(protocol_type);
            g.start_rebalance(now, initial_delay);
            let m = g.members.get_mut(&id).expect("just inserted");
            m.joined = true;
            m.join_result = None;
            g.maybe_complete(now);
            (g.notify.clone(), id)
        };
        // Wait for the rebalance to complete (the shard's group timer drives deadlines).
        loop {
            let wait = notify.wait();
            {
                let mut groups = self.groups.borrow_mut();
                let Some(g) = groups.get_mut(&gid) else {
                    return JoinOut::error(ErrorCode::UNKNOWN_MEMBER_ID, id);
                };
                let gone = g.gone(&instance_id);
                let Some(m) = g.members.get_mut(&id) else {
                    return JoinOut::error(gone, id);
                };
                if let Some(r) = m.join_result.take() {
                    m.waiting -= 1;
                    m.last_seen = self.clock.now();
                    return r;
                }
            }
            wait.await;
        }
    }

    pub(super) async fn sync(
        &self,
        gid: &str,
        generation: i32,
        member_id: &str,
        instance_id: &Option<String>,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncOut {
        let err = SyncOut::error;
        let notify = {
            let mut groups = self.groups.borrow_mut();
            let Some(g) = groups.get_mut(gid) else {
                return err(ErrorCode::UNKNOWN_MEMBER_ID);
            };
            if let Err(e) = g.check_member(member_id, instance_id) {
                return err(e);
            }
            if generation != g.generation {
                return err(ErrorCode::ILLEGAL_GENERATION);
            }
            match g.state {
                GroupState::PreparingRebalance => return err(ErrorCode::REBALANCE_IN_PROGRESS),
                GroupState::Empty | GroupState::Dead => return err(ErrorCode::UNKNOWN_MEMBER_ID),
                GroupState::Stable | GroupState::CompletingRebalance => {}
            }
            if g.state == GroupState::CompletingRebalance && g.leader.as_deref() == Some(member_id)
            {
                for (mid, a) in assignments {
                    if let Some(m) = g.members.get_mut(&mid) {
                        m.assignment = a;
                    }
                }
                g.state = GroupState::Stable;
                g.changed = true;
                g.notify.notify_all();
            }
            let m = g.members.get_mut(member_id).expect("checked");
            m.last_seen = self.clock.now();
            m.waiting += 1;
            g.notify.clone()
        };
        loop {
            let wait = notify.wait();
            {
                let mut groups = self.groups.borrow_mut();
                let Some(g) = groups.get_mut(gid) else {
                    return err(ErrorCode::UNKNOWN_MEMBER_ID);
                };
                let (state, gen) = (g.state, g.generation);
                let (pt, proto) = (g.protocol_type.clone(), g.protocol.clone());
                let gone = g.gone(instance_id);
                let Some(m) = g.members.get_mut(member_id) else {
                    return err(gone);
                };
                if state != GroupState::CompletingRebalance || gen != generation {
                    m.waiting -= 1;
                    m.last_seen = self.clock.now();
                    if state == GroupState::Stable && gen == generation {
                        return SyncOut {
                            error: ErrorCode::NONE,
                            protocol_type: pt,
                            protocol: proto,
                            assignment: m.assignment.clone(),
                        };
                    }
                    return err(ErrorCode::REBALANCE_IN_PROGRESS);
                }
            }
            wait.await;
        }
    }

    pub(super) fn heartbeat(
        &self,
        gid: &str,
        generation: i32,
        member_id: &str,
        instance_id: &Option<String>,
    ) -> ErrorCode {
        let mut groups = self.groups.borrow_mut();
        let Some(g) = groups.get_mut(gid) else {
            return ErrorCode::UNKNOWN_MEMBER_ID;
        };
        if let Err(e) = g.check_member(member_id, instance_id) {
            return e;
        }
        if generation != g.generation {
            return ErrorCode::ILLEGAL_GENERATION;
        }
        if let Some(m) = g.members.get_mut(member_id) {
            m.last_seen = self.clock.now();
        }
        match g.state {
            GroupState::PreparingRebalance => ErrorCode::REBALANCE_IN_PROGRESS,
            _ => ErrorCode::NONE,
        }
    }

    pub(super) fn leave(&self, gid: &str, members: Vec<(String, Option<String>)>) -> LeaveOut {
        let mut groups = self.groups.borrow_mut();
        let Some(g) = groups.get_mut(gid) else {
            return LeaveOut {
                error: ErrorCode::NONE,
                members: vec![ErrorCode::UNKNOWN_MEMBER_ID; members.len()],
            };
        };
        let mut out = Vec::with_capacity(members.len());
        let mut any = false;
        for (mid, iid) in members {
            let id = match &iid {
                Some(i) => match g.statics.get(i) {
                    Some(cur) if mid.is_empty() || *cur == mid => cur.clone(),
                    Some(_) => {
                        out.push(ErrorCode::FENCED_INSTANCE_ID);
                        continue;
                    }
                    None => mid,
                },
                None => mid,
            };
            if g.remove_member(&id) {
                any = true;
                out.push(ErrorCode::NONE);
            } else {
                out.push(ErrorCode::UNKNOWN_MEMBER_ID);
            }
        }
        if any {
            g.after_departure(self.clock.now());
        }
        LeaveOut {
            error: ErrorCode::NONE,
            members: out,
        }
    }

    /// Drives deadlines: session expiry, pending member ids, rebalance completion. Called by
    /// the shard's group timer.
    /// Drops the state of groups nobody is in (no member, no pending member id) unless
    /// `keep` says the group is still known elsewhere (its committed offsets): the membership
    /// table holds groups in use, not every group id ever joined.
    /// Returns the groups forgotten (their stored records are to be deleted).
    pub(super) fn forget_empty(&self, keep: impl Fn(&str) -> bool) -> Vec<String> {
        let mut gone = Vec::new();
        self.groups.borrow_mut().retain(|gid, g| {
            let forget = matches!(g.state, GroupState::Empty | GroupState::Dead)
                && g.members.is_empty()
                && g.pending.is_empty()
                && !keep(gid);
            if forget {
                gone.push(gid.clone());
            }
            !forget
        });
        gone
    }

    /// `gid`'s record now if its stored one is out of date (and marks it written).
    pub(super) fn take_changed_group(&self, gid: &str) -> Option<GroupRecord> {
        let mut groups = self.groups.borrow_mut();
        let g = groups.get_mut(gid).filter(|g| g.changed)?;
        g.changed = false;
        Some(g.record(self.clock.now_ms()))
    }

    /// The groups whose stored record is out of date, with their records now (and marks them
    /// written).
    pub(super) fn take_changed(&self) -> Vec<(String, GroupRecord)> {
        let now_ms = self.clock.now_ms();
        self.groups
            .borrow_mut()
            .iter_mut()
            .filter(|(_, g)| g.changed)
            .map(|(gid, g)| {
                g.changed = false;
                (gid.clone(), g.record(now_ms))
            })
            .collect()
    }

    /// Takes over a group as its stored record has it (this coordinator now leads its
    /// offsets partition): a group with members is Stable in the stored generation, and each
    /// member has a full session from now to heartbeat in it; `None` forgets the group.
    pub(super) fn restore(&self, gid: &str, rec: Option<GroupRecord>) {
        let mut groups = self.groups.borrow_mut();
        let Some(rec) = rec else {
            groups.remove(gid);
            return;
        };
        let now = self.clock.now();
        let mut g = Group::new(now);
        g.state = if rec.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
        g.protocol_type = Some(rec.protocol_type).filter(|p| !p.is_empty());
        g.generation = rec.generation;
        g.protocol = rec.protocol.clone();
        g.leader = rec.leader;
        for m in rec.members {
            if let Some(i) = &m.instance_id {
                g.statics.insert(i.clone(), m.member_id.clone());
            }
            let protocols = g
                .protocol
                .clone()
                .map(|p| vec![(p, m.subscription)])
                .unwrap_or_default();
            g.members.insert(
                m.member_id.clone(),
                Member {
                    id: m.member_id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    session_timeout: Duration::from_millis(m.session_timeout_ms.max(0) as u64),
                    rebalance_timeout: Duration::from_millis(
                        m.rebalance_timeout_ms.max(m.session_timeout_ms).max(0) as u64,
                    ),
                    protocols,
                    assignment: m.assignment,
                    joined: false,
                    join_result: None,
                    waiting: 0,
                    last_seen: now,
                    seq: self.next_seq(),
                },
            );
        }
        if let Some(old) = groups.insert(gid.to_string(), g) {
            // Calls waiting on a group this coordinator held before wake to a new one.
            old.notify.notify_all();
        }
    }

    pub(super) fn tick(&self) {
        let now = self.clock.now();
        let mut groups = self.groups.borrow_mut();
        for (gid, g) in groups.iter_mut() {
            g.pending.retain(|_, until| *until > now);
            let expired: Vec<String> = g
                .members
                .values()
                .filter(|m| m.waiting == 0 && now.duration_since(m.last_seen) > m.session_timeout)
                .filter(|m| !(g.state == GroupState::PreparingRebalance && m.joined))
                .map(|m| m.id.clone())
                .collect();
            if !expired.is_empty() {
                for id in &expired {
                    tracing::info!(group = %gid, member = %id, "member session expired");
                    g.remove_member(id);
                }
                g.after_departure(now);
            }
            if g.state == GroupState::PreparingRebalance {
                g.maybe_complete(now);
            }
        }
    }

    /// Whether an OffsetCommit by this member may go ahead: a member of the current
    /// generation outside a rebalance, or a "simple" commit (no generation, no member id) to a
    /// group without members.
    pub(super) fn check_commit(
        &self,
        gid: &str,
        generation: i32,
        member_id: &str,
        instance_id: &Option<String>,
    ) -> Result<(), ErrorCode> {
        let groups = self.groups.borrow();
        match groups.get(gid) {
            Some(g) if generation >= 0 || !member_id.is_empty() => {
                g.check_member(member_id, instance_id)?;
                if generation != g.generation {
                    return Err(ErrorCode::ILLEGAL_GENERATION);
                }
                if g.state == GroupState::PreparingRebalance {
                    return Err(ErrorCode::REBALANCE_IN_PROGRESS);
                }
                Ok(())
            }
            Some(g) if !g.members.is_empty() => Err(ErrorCode::UNKNOWN_MEMBER_ID),
            None if generation >= 0 => Err(ErrorCode::ILLEGAL_GENERATION),
            _ => Ok(()), // a "simple" commit by a client not using group membership
        }
    }

    /// The group is known (it may have no members).
    pub(super) fn contains(&self, gid: &str) -> bool {
        self.groups.borrow().contains_key(gid)
    }

    /// The group has members (its offsets neither expire nor may be deleted).
    pub(super) fn has_members(&self, gid: &str) -> bool {
        self.groups
            .borrow()
            .get(gid)
            .is_some_and(|g| !g.members.is_empty())
    }

    /// Live groups: (group, protocol type, state).
    pub(super) fn list(&self) -> Vec<(String, String, &'static str)> {
        self.groups
            .borrow()
            .iter()
            .filter(|(_, g)| g.state != GroupState::Dead)
            .map(|(id, g)| {
                (
                    id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state.name(),
                )
            })
            .collect()
    }

    /// The group and its members, or None when it is not known.
    pub(super) fn describe(&self, gid: &str) -> Option<DescribeOut> {
        let groups = self.groups.borrow();
        let g = groups.get(gid)?;
        Some(DescribeOut {
            group: gid.to_string(),
            state: g.state.name(),
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: g.protocol.clone().unwrap_or_default(),
            members: g
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: g.metadata_for(m),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// DeleteGroups, once the group's offsets are gone: the group is Dead (calls still
    /// waiting on it wake up) and forgotten.
    /// Drops every group `mine` names (their coordinator moved): waiters wake to a dead
    /// group and the members rejoin wherever the coordinator is now.
    pub(super) fn drop_groups(&self, mine: &dyn Fn(&str) -> bool) {
        self.groups.borrow_mut().retain(|gid, g| {
            if mine(gid) {
                g.state = GroupState::Dead;
                g.notify.notify_all();
                false
            } else {
                true
            }
        });
    }

    pub(super) fn remove(&self, gid: &str) {
        if let Some(g) = self.groups.borrow_mut().get_mut(gid) {
            g.state = GroupState::Dead;
            g.notify.notify_all();
        }
        self.groups.borrow_mut().remove(gid);
    }

    /// Topics the members of a consumer-protocol group subscribe to (their offsets may not be
    /// deleted).
    pub(super) fn subscribed_topics(&self, gid: &str) -> Vec<String> {
        self.groups
            .borrow()
            .get(gid)
            .map(|g| {
                if g.protocol_type.as_deref() != Some("consumer") {
                    return Vec::new();
                }
                g.members
                    .values()
                    .flat_map(|m| subscription_topics(&g.metadata_for(m)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Topics of a consumer-protocol subscription (`i16 version, [string] topics, ...`).
fn subscription_topics(meta: &[u8]) -> Vec<String> {
    use bytes::Buf;
    let mut b = meta;
    let mut out = Vec::new();
    if b.remaining() < 6 {
        return out;
    }
    let _version = b.get_i16();
    let n = b.get_i32();
    for _ in 0..n.max(0) {
        if b.remaining() < 2 {
            break;
        }
        let len = b.get_i16();
        if len < 0 || b.remaining() < len as usize {
            break;
        }
        out.push(String::from_utf8_lossy(&b[..len as usize]).into_owned());
        b.advance(len as usize);
    }
    out
}
