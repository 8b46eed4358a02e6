//! A partition on its owning shard as replication sees it: the log, this broker's role in
//! the partition (from the metadata image), and on a leader what each follower has.
//!
//! Kafka's model. The **high watermark** is the smallest log end offset over the in-sync
//! replicas (the leader's counted as its durable offset); it never goes back while this
//! broker leads, and consumers read only below it. A follower's log end is known from the
//! offset of its fetches (it asks for offset X once everything below X is durable on it).
//! A follower is **caught up** when a fetch reaches the leader's log end as it was at its
//! previous fetch (Kafka's lastCaughtUpTime); one in the ISR that has not been caught up for
//! `replica_lag_time_max_ms` is dropped from it, one out of it that reaches the high
//! watermark (and the start of this leadership) joins it: both through the controller
//! (AlterPartition), never by the leader alone.
//!
//! On a single node the role is "lead, ISR = me", so the high watermark is the durable
//! offset, as before replication.

use crate::log::{LogConfig, Partition};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// This broker's part in a partition, as of the image it last saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    /// This broker.
    pub me: i32,
    /// The leader, -1 while there is none.
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
    pub replicas: Vec<i32>,
}

impl Role {
    pub fn leads(&self) -> bool {
        self.leader == self.me
    }
}

/// What a leader knows of one follower.
#[derive(Debug, Clone, Copy)]
struct Follower {
    /// Its log end offset (the offset of its last fetch); -1 before its first fetch of this
    /// leadership.
    leo: i64,
    /// Last time it had everything the leader had at its previous fetch.
    caught_up: Instant,
    /// The leader's log end at its previous fetch, and when that was.
    last_fetch_leo: i64,
    last_fetch: Instant,
    /// Its log start as its last fetch gave it; -1 before.
    log_start: i64,
}

/// An ISR change a leader wants committed.
#[derive(Debug, Clone, PartialEq)]
pub struct IsrChange {
    pub topic: String,
    pub partition: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

/// How long a leader waits for an ISR change it asked for before asking again.
const ISR_CHANGE_RETRY: Duration = Duration::from_secs(3);

pub struct Replica {
    pub log: Rc<Partition>,
    /// The topic's `min.insync.replicas`.
    min_isr: Cell<usize>,
    /// The topic config overrides the log's settings and `min_isr` were made from.
    configs: RefCell<BTreeMap<String, String>>,
    role: RefCell<Role>,
    /// The high watermark as last computed (leader) or learned from the leader (follower).
    hw: Cell<i64>,
    followers: RefCell<BTreeMap<i32, Follower>>,
    /// The log end when this leadership began: a follower joins the ISR only past it.
    lead_start: Cell<i64>,
    /// An ISR change asked for and not yet seen in an image, and when it was asked.
    isr_asked: Cell<Option<Instant>>,
    /// The ISR asked for (KIP-497's "maximal ISR"): until the image shows the outcome, the
    /// high watermark waits for the members of both the current and the asked ISR, so a
    /// follower whose joining was committed is never behind it.
    isr_wanted: RefCell<Vec<i32>>,
}

impl Replica {
    pub fn new(
        log: Rc<Partition>,
        role: Role,
        min_isr: usize,
        configs: BTreeMap<String, String>,
    ) -> Replica {
        let leo = log.log_end_offset();
        let r = Replica {
            hw: Cell::new(log.log_start_offset()),
            log,
            min_isr: Cell::new(min_isr.max(1)),
            configs: RefCell::new(configs),
            role: RefCell::new(role.clone()),
            followers: RefCell::new(BTreeMap::new()),
            lead_start: Cell::new(leo),
            isr_asked: Cell::new(None),
            isr_wanted: RefCell::new(Vec::new()),
        };
        r.start_leadership(&role);
        r
    }

    /// The topic's `min.insync.replicas` now.
    pub fn min_isr(&self) -> usize {
        self.min_isr.get()
    }

    /// The topic configs this replica's settings were made from.
    pub fn configs_are(&self, configs: &BTreeMap<String, String>) -> bool {
        *self.configs.borrow() == *configs
    }

    /// Takes a topic's altered configs: the log's new settings and `min.insync.replicas`.
    /// Waiters look again (an acks=all write may now have enough in-sync replicas).
    pub fn set_configs(&self, configs: BTreeMap<String, String>, log: LogConfig, min_isr: usize) {
        self.log.set_config(log);
        self.min_isr.set(min_isr.max(1));
        *self.configs.borrow_mut() = configs;
        self.log.progress.notify_all();
    }

    pub fn role(&self) -> Role {
        self.role.borrow().clone()
    }

    pub fn leads(&self) -> bool {
        self.role.borrow().leads()
    }

    /// Takes the role the newest image gives this broker. Returns true when leadership
    /// changed (a new leader or a new leader epoch).
    pub fn set_role(&self, role: Role) -> bool {
        let old = self.role.replace(role.clone());
        if old == role {
            return false;
        }
        if old.isr != role.isr || old.partition_epoch != role.partition_epoch {
            self.isr_change_failed();
        }
        let new_term = old.leader != role.leader || old.leader_epoch != role.leader_epoch;
        if new_term {
            self.start_leadership(&role);
        }
        // Waiters (acks=all, long polls) look again: the ISR or the leader changed.
        self.log.progress.notify_all();
        new_term
    }

    fn start_leadership(&self, role: &Role) {
        self.followers.borrow_mut().clear();
        self.isr_change_failed();
        if role.leads() {
            let now = Instant::now();
            let leo = self.log.log_end_offset();
            self.lead_start.set(leo);
            // Every follower starts with a full lag allowance (Kafka does the same).
            let mut f = self.followers.borrow_mut();
            for &r in role.replicas.iter().filter(|r| **r != role.me) {
                f.insert(
                    r,
                    Follower {
                        leo: -1,
                        caught_up: now,
                        last_fetch_leo: leo,
                        last_fetch: now,
                        log_start: -1,
                    },
                );
            }
        }
    }

    /// What consumers may read up to. Leader: the smallest log end over the ISR (its own
    /// being its durable offset), never lower than before. Follower: the last value the
    /// leader sent, within its own durable log.
    pub fn high_watermark(&self) -> i64 {
        let role = self.role.borrow();
        let durable = self.log.durable_offset();
        let hw = if role.leads() {
            let f = self.followers.borrow();
            let wanted = self.isr_wanted.borrow();
            let min = role
                .isr
                .iter()
                .chain(wanted.iter())
                .filter(|r| **r != role.me)
                .map(|r| f.get(r).map_or(-1, |x| x.leo))
                .fold(durable, i64::min);
            min.max(self.hw.get())
        } else {
            self.hw.get().min(durable)
        };
        self.hw.set(hw);
        hw
    }

    /// On a leader: the smallest log start over the in-sync replicas (Kafka's low
    /// watermark), as the followers' fetches last gave theirs.
    pub fn low_watermark(&self) -> i64 {
        let role = self.role.borrow();
        let f = self.followers.borrow();
        role.isr
            .iter()
            .filter(|r| **r != role.me)
            .map(|r| f.get(r).map_or(-1, |x| x.log_start))
            .fold(self.log.log_start_offset(), i64::min)
    }

    /// A follower learned the leader's high watermark.
    pub fn set_follower_hw(&self, leader_hw: i64) {
        let hw = leader_hw.min(self.log.durable_offset()).max(self.hw.get());
        self.hw.set(hw);
    }

    /// After a truncation: the high watermark is never past the log end.
    pub fn clamp_hw(&self) {
        self.hw.set(self.hw.get().min(self.log.log_end_offset()));
    }

    /// The leader epoch of this partition's current leadership (the log stamps its batches
    /// with it).
    pub fn leader_epoch(&self) -> i32 {
        self.log.leader_epoch()
    }

    /// A follower fetched at `offset` (so holds everything below it). Returns an ISR
    /// change to ask for when it now belongs in the ISR, and wakes waiters when the high
    /// watermark moved.
    pub fn follower_fetched(&self, id: i32, offset: i64, log_start: i64) -> Option<IsrChange> {
        let before = self.hw.get();
        let now = Instant::now();
        let leo = self.log.log_end_offset();
        let start_moved;
        {
            let mut fs = self.followers.borrow_mut();
            let f = fs.entry(id).or_insert(Follower {
                leo: -1,
                caught_up: now,
                last_fetch_leo: leo,
                last_fetch: now,
                log_start: -1,
            });
            f.leo = offset;
            start_moved = f.log_start != log_start;
            f.log_start = log_start;
            if offset >= leo {
                f.caught_up = now;
            } else if offset >= f.last_fetch_leo {
                f.caught_up = f.caught_up.max(f.last_fetch);
            }
            f.last_fetch_leo = leo;
            f.last_fetch = now;
        }
        if self.high_watermark() != before || start_moved {
            self.log.progress.notify_all();
        }
        let role = self.role.borrow();
        if role.isr.contains(&id) || !role.replicas.contains(&id) {
            return None;
        }
        let hw = self.hw.get();
        if offset >= hw && offset >= self.lead_start.get() {
            let mut isr = role.isr.clone();
            isr.push(id);
            return self.ask(&role, isr);
        }
        None
    }

    /// On a leader: the ISR without the followers that have not caught up for `lag`, if
    /// any must go.
    pub fn lagging(&self, lag: Duration) -> Option<IsrChange> {
        let role = self.role.borrow();
        if !role.leads() {
            return None;
        }
        let fs = self.followers.borrow();
        let now = Instant::now();
        let isr: Vec<i32> = role
            .isr
            .iter()
            .copied()
            .filter(|r| {
                *r == role.me
                    || fs
                        .get(r)
                        .is_none_or(|f| now.duration_since(f.caught_up) <= lag)
            })
            .collect();
        if isr.len() == role.isr.len() {
            return None;
        }
        self.ask(&role, isr)
    }

    fn ask(&self, role: &Role, isr: Vec<i32>) -> Option<IsrChange> {
        if self
            .isr_asked
            .get()
            .is_some_and(|t| t.elapsed() < ISR_CHANGE_RETRY)
        {
            return None;
        }
        self.isr_asked.set(Some(Instant::now()));
        *self.isr_wanted.borrow_mut() = isr.clone();
        Some(IsrChange {
            topic: self.log.topic.clone(),
            partition: self.log.index,
            leader_epoch: role.leader_epoch,
            partition_epoch: role.partition_epoch,
            isr,
        })
    }

    /// An ISR change was refused or failed (or the image settled it): it may be asked for
    /// again at once, and only the image's ISR counts.
    pub fn isr_change_failed(&self) {
        self.isr_asked.set(None);
        self.isr_wanted.borrow_mut().clear();
    }
}
