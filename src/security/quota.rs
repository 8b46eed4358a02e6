//! Client quotas, Kafka's (KIP-13, KIP-55, KIP-124, KIP-546): produce and fetch byte rates
//! and a share of request-handling time, set per user, per client id, or per both, with
//! defaults (`<default>`), and looked up most specific first. Each shard meters its own
//! connections (as each Kafka broker meters its own): a client over its rate gets
//! `throttle_time_ms` in its Produce and Fetch responses, a throttled Fetch gets no records,
//! and its connection is not read from until the throttle has passed.
//!
//! A meter is a token bucket holding at most one second of the rate: what a client uses
//! beyond it is a debt, and the debt over the rate is the throttle time.

use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
pub const REQUEST_PERCENTAGE: &str = "request_percentage";
/// The quota keys Flumen enforces.
pub const KEYS: [&str; 3] = [PRODUCER_BYTE_RATE, CONSUMER_BYTE_RATE, REQUEST_PERCENTAGE];

/// Kafka's entity types.
pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";

/// The longest throttle answered (Kafka's: its quota window, 11 samples of a second).
pub const MAX_THROTTLE: Duration = Duration::from_secs(10);

/// One component of an entity: a name, or the default for every name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EntityName {
    Default,
    Named(String),
}

impl EntityName {
    pub fn from_wire(name: Option<&str>) -> EntityName {
        match name {
            None => EntityName::Default,
            Some(n) => EntityName::Named(n.to_string()),
        }
    }

    pub fn to_wire(&self) -> Option<&str> {
        match self {
            EntityName::Default => None,
            EntityName::Named(n) => Some(n),
        }
    }

    fn shown(&self) -> &str {
        self.to_wire().unwrap_or("<default>")
    }
}

/// A quota entity: a user, a client id, or both.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QuotaEntity {
    pub user: Option<EntityName>,
    pub client_id: Option<EntityName>,
}

impl std::fmt::Display for QuotaEntity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(u) = &self.user {
            parts.push(format!("user={}", u.shown()));
        }
        if let Some(c) = &self.client_id {
            parts.push(format!("client-id={}", c.shown()));
        }
        write!(f, "{}", parts.join(","))
    }
}

/// An entity's quota values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientQuota {
    pub entity: QuotaEntity,
    pub values: BTreeMap<String, f64>,
}

/// The quotas of a cluster, one entry per entity with values.
pub type ClientQuotas = Vec<ClientQuota>;

/// AlterClientQuotas' change to one entity: per key a new value, or None to remove it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaChange {
    pub entity: QuotaEntity,
    pub ops: Vec<(String, Option<f64>)>,
}

/// Checks a change as Kafka does; Err(reason) answers INVALID_REQUEST.
pub fn validate(c: &QuotaChange) -> Result<(), String> {
    if c.entity.user.is_none() && c.entity.client_id.is_none() {
        return Err("the entity names neither a user nor a client id".into());
    }
    for (key, value) in &c.ops {
        if !KEYS.contains(&key.as_str()) {
            return Err(format!(
                "unknown or unsupported quota {key} (supported: {})",
                KEYS.join(", ")
            ));
        }
        if let Some(v) = value {
            if !v.is_finite() || *v <= 0.0 {
                return Err(format!("{key} must be a positive number, got {v}"));
            }
        }
    }
    Ok(())
}

/// Applies a change (validated first).
pub fn apply(quotas: &mut ClientQuotas, c: &QuotaChange) {
    let i = match quotas.iter().position(|q| q.entity == c.entity) {
        Some(i) => i,
        None => {
            quotas.push(ClientQuota {
                entity: c.entity.clone(),
                values: BTreeMap::new(),
            });
            quotas.len() - 1
        }
    };
    for (key, value) in &c.ops {
        match value {
            Some(v) => quotas[i].values.insert(key.clone(), *v),
            None => quotas[i].values.remove(key),
        };
    }
    if quotas[i].values.is_empty() {
        quotas.remove(i);
    }
    quotas.sort_by(|a, b| a.entity.cmp(&b.entity));
}

/// The quota on `key` for `user`'s client `client_id`: (limit, the meter it is counted on).
/// Kafka's order: user+client, user+default client, user, default user+client, default
/// user+default client, default user, client, default client. A default stands for each
/// user (client) on its own; a level without a client id counts all of the user's clients
/// together.
pub fn resolve(
    quotas: &ClientQuotas,
    user: &str,
    client_id: &str,
    key: &str,
) -> Option<(f64, MeterKey)> {
    use EntityName::{Default, Named};
    if quotas.is_empty() {
        return None;
    }
    let named = |n: &str| Some(Named(n.to_string()));
    let order = [
        (named(user), named(client_id)),
        (named(user), Some(Default)),
        (named(user), None),
        (Some(Default), named(client_id)),
        (Some(Default), Some(Default)),
        (Some(Default), None),
        (None, named(client_id)),
        (None, Some(Default)),
    ];
    for (u, c) in order {
        let counted = MeterKey {
            user: if u.is_some() {
                user.into()
            } else {
                String::new()
            },
            client_id: if c.is_some() {
                client_id.into()
            } else {
                String::new()
            },
            key: key.to_string(),
        };
        let entity = QuotaEntity {
            user: u,
            client_id: c,
        };
        if let Some(v) = quotas
            .iter()
            .find(|q| q.entity == entity)
            .and_then(|q| q.values.get(key))
        {
            return Some((*v, counted));
        }
    }
    None
}

/// What a meter counts: the quota's key and the user and client it is kept for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MeterKey {
    pub user: String,
    pub client_id: String,
    pub key: String,
}

struct Bucket {
    /// Allowance left (negative: a debt, of at most MAX_THROTTLE's worth: like Kafka's
    /// windows, a burst is forgotten after a while).
    tokens: f64,
    /// The rate it was last counted at.
    rate: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, rate: f64, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.rate = rate;
        self.tokens = (self.tokens + dt * rate).min(rate);
        self.at = now;
    }

    fn take(&mut self, amount: f64) {
        let floor = -self.rate * MAX_THROTTLE.as_secs_f64();
        self.tokens = (self.tokens - amount).max(floor);
    }

    fn throttle(&self) -> Duration {
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            let secs = (-self.tokens / self.rate).min(MAX_THROTTLE.as_secs_f64());
            Duration::from_secs_f64(secs.max(0.0))
        }
    }
}

/// This shard's meters.
#[derive(Default)]
pub struct Meters {
    buckets: RefCell<HashMap<MeterKey, Bucket>>,
}

/// Meters kept beyond this are dropped when idle (a full bucket remembers nothing).
const MAX_METERS: usize = 10_000;

impl Meters {
    /// Counts `amount` against `rate` (per second); answers the throttle it leaves.
    pub fn record(&self, key: &MeterKey, rate: f64, amount: f64) -> Duration {
        let now = Instant::now();
        let mut b = self.buckets.borrow_mut();
        if b.len() >= MAX_METERS && !b.contains_key(key) {
            // Full buckets remember nothing; if too many still owe, all are forgotten
            // (a client cycling client ids must not grow this, nor make each insert a scan).
            b.retain(|_, bucket| {
                bucket.refill(bucket.rate, now);
                bucket.tokens < bucket.rate
            });
            if b.len() > MAX_METERS / 2 {
                b.clear();
            }
        }
        let bucket = b.entry(key.clone()).or_insert(Bucket {
            tokens: rate,
            rate,
            at: now,
        });
        bucket.refill(rate, now);
        bucket.take(amount);
        bucket.throttle()
    }

    /// The throttle the meter owes now, without counting anything.
    pub fn owed(&self, key: &MeterKey, rate: f64) -> Duration {
        let mut b = self.buckets.borrow_mut();
        match b.get_mut(key) {
            None => Duration::ZERO,
            Some(bucket) => {
                bucket.refill(rate, Instant::now());
                bucket.throttle()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(q: &mut ClientQuotas, user: Option<EntityName>, client: Option<EntityName>, v: f64) {
        let c = QuotaChange {
            entity: QuotaEntity {
                user,
                client_id: client,
            },
            ops: vec![(PRODUCER_BYTE_RATE.into(), Some(v))],
        };
        validate(&c).unwrap();
        apply(q, &c);
    }

    #[test]
    fn the_most_specific_entity_wins_and_defaults_count_each_client() {
        use EntityName::*;
        let mut q = ClientQuotas::new();
        assert!(resolve(&q, "alice", "app", PRODUCER_BYTE_RATE).is_none());
        set(&mut q, None, Some(Default), 1.0);
        set(&mut q, None, Some(Named("app".into())), 2.0);
        set(&mut q, Some(Default), None, 3.0);
        set(&mut q, Some(Named("alice".into())), None, 4.0);
        set(
            &mut q,
            Some(Named("alice".into())),
            Some(Named("app".into())),
            5.0,
        );
        let r = |q: &ClientQuotas, u: &str, c: &str| resolve(q, u, c, PRODUCER_BYTE_RATE).unwrap();
        assert_eq!(r(&q, "alice", "app").0, 5.0);
        let (v, k) = r(&q, "alice", "other");
        assert_eq!(
            (v, k.user.as_str(), k.client_id.as_str()),
            (4.0, "alice", "")
        );
        let (v, k) = r(&q, "bob", "app");
        assert_eq!((v, k.user.as_str(), k.client_id.as_str()), (3.0, "bob", ""));
        assert!(resolve(&q, "bob", "app", CONSUMER_BYTE_RATE).is_none());
        // Removing values removes the entity.
        let before = q.len();
        apply(
            &mut q,
            &QuotaChange {
                entity: QuotaEntity {
                    user: Some(Default),
                    client_id: None,
                },
                ops: vec![(PRODUCER_BYTE_RATE.into(), None)],
            },
        );
        assert_eq!(q.len(), before - 1);
        let (v, k) = r(&q, "bob", "app");
        assert_eq!((v, k.user.as_str(), k.client_id.as_str()), (2.0, "", "app"));
        let (v, k) = r(&q, "bob", "x");
        assert_eq!((v, k.client_id.as_str()), (1.0, "x"));
    }

    #[test]
    fn bad_changes_are_refused() {
        let e = QuotaEntity {
            user: Some(EntityName::Default),
            client_id: None,
        };
        let bad = |key: &str, v: f64| QuotaChange {
            entity: e.clone(),
            ops: vec![(key.into(), Some(v))],
        };
        assert!(validate(&bad("producer_byte_rate", 0.0)).is_err());
        assert!(validate(&bad("producer_byte_rate", f64::NAN)).is_err());
        assert!(validate(&bad("controller_mutation_rate", 1.0)).is_err());
        assert!(validate(&bad("request_percentage", 50.0)).is_ok());
        let none = QuotaChange {
            entity: QuotaEntity {
                user: None,
                client_id: None,
            },
            ops: vec![],
        };
        assert!(validate(&none).is_err());
    }

    #[test]
    fn a_meter_throttles_what_goes_beyond_a_second_of_its_rate() {
        let m = Meters::default();
        let k = MeterKey {
            user: "u".into(),
            client_id: String::new(),
            key: PRODUCER_BYTE_RATE.into(),
        };
        // A second's worth passes; the next half second's is owed as 500 ms.
        assert_eq!(m.record(&k, 1000.0, 1000.0), Duration::ZERO);
        let t = m.record(&k, 1000.0, 500.0);
        assert!(
            t > Duration::from_millis(450) && t <= Duration::from_millis(500),
            "{t:?}"
        );
        assert!(m.owed(&k, 1000.0) > Duration::from_millis(400));
        // Capped, and the debt with it: a huge burst is forgotten within MAX_THROTTLE.
        assert_eq!(m.record(&k, 1000.0, 1e9), MAX_THROTTLE);
        assert_eq!(m.record(&k, 1000.0, 1e9), MAX_THROTTLE);
        let b = m.buckets.borrow();
        assert!(b[&k].tokens >= -1000.0 * MAX_THROTTLE.as_secs_f64());
        drop(b);
        // A tiny rate does not overflow the conversion.
        assert_eq!(m.record(&k, 1e-300, 1.0), MAX_THROTTLE);
    }
}
