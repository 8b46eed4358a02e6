//! Access control lists, Kafka's model (KIP-11, KIP-290): a binding says that a principal,
//! from a host, may (ALLOW) or may not (DENY) perform an operation on resources named
//! literally or by a prefix. With `authorizer_enabled` every request is checked against them:
//! a DENY wins, then an ALLOW (READ, WRITE, DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS
//! implies DESCRIBE_CONFIGS; ALL is every operation); with neither the answer is no.
//! `super_users` pass every check. The bindings live in the cluster metadata, so every broker
//! enforces the same ones and they survive restarts.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Kafka's resource types (the wire's numbers). ANY only appears in filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
    DelegationToken,
    User,
}

impl ResourceType {
    pub const ALL: [ResourceType; 6] = [
        ResourceType::Topic,
        ResourceType::Group,
        ResourceType::Cluster,
        ResourceType::TransactionalId,
        ResourceType::DelegationToken,
        ResourceType::User,
    ];

    pub fn code(self) -> i8 {
        match self {
            ResourceType::Topic => 2,
            ResourceType::Group => 3,
            ResourceType::Cluster => 4,
            ResourceType::TransactionalId => 5,
            ResourceType::DelegationToken => 6,
            ResourceType::User => 7,
        }
    }

    pub fn from_code(c: i8) -> Option<ResourceType> {
        ResourceType::ALL.into_iter().find(|t| t.code() == c)
    }

    pub fn name(self) -> &'static str {
        match self {
            ResourceType::Topic => "TOPIC",
            ResourceType::Group => "GROUP",
            ResourceType::Cluster => "CLUSTER",
            ResourceType::TransactionalId => "TRANSACTIONAL_ID",
            ResourceType::DelegationToken => "DELEGATION_TOKEN",
            ResourceType::User => "USER",
        }
    }
}

/// How a binding's resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PatternType {
    /// The name itself, or `*` for every resource of the type.
    Literal,
    /// Every resource whose name starts with it.
    Prefixed,
}

impl PatternType {
    pub fn code(self) -> i8 {
        match self {
            PatternType::Literal => 3,
            PatternType::Prefixed => 4,
        }
    }

    pub fn from_code(c: i8) -> Option<PatternType> {
        match c {
            3 => Some(PatternType::Literal),
            4 => Some(PatternType::Prefixed),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PatternType::Literal => "LITERAL",
            PatternType::Prefixed => "PREFIXED",
        }
    }
}

/// Kafka's operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
    CreateTokens,
    DescribeTokens,
}

impl Operation {
    pub const EVERY: [Operation; 13] = [
        Operation::All,
        Operation::Read,
        Operation::Write,
        Operation::Create,
        Operation::Delete,
        Operation::Alter,
        Operation::Describe,
        Operation::ClusterAction,
        Operation::DescribeConfigs,
        Operation::AlterConfigs,
        Operation::IdempotentWrite,
        Operation::CreateTokens,
        Operation::DescribeTokens,
    ];

    pub fn code(self) -> i8 {
        2 + Operation::EVERY
            .iter()
            .position(|o| *o == self)
            .unwrap_or(0) as i8
    }

    pub fn from_code(c: i8) -> Option<Operation> {
        Operation::EVERY
            .get(usize::try_from(c).ok()?.checked_sub(2)?)
            .copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            Operation::All => "ALL",
            Operation::Read => "READ",
            Operation::Write => "WRITE",
            Operation::Create => "CREATE",
            Operation::Delete => "DELETE",
            Operation::Alter => "ALTER",
            Operation::Describe => "DESCRIBE",
            Operation::ClusterAction => "CLUSTER_ACTION",
            Operation::DescribeConfigs => "DESCRIBE_CONFIGS",
            Operation::AlterConfigs => "ALTER_CONFIGS",
            Operation::IdempotentWrite => "IDEMPOTENT_WRITE",
            Operation::CreateTokens => "CREATE_TOKENS",
            Operation::DescribeTokens => "DESCRIBE_TOKENS",
        }
    }

    pub fn from_name(s: &str) -> Option<Operation> {
        let s = s.trim().to_ascii_uppercase().replace('-', "_");
        Operation::EVERY.into_iter().find(|o| o.name() == s)
    }

    /// Whether an ALLOW of `self` also allows `op` (Kafka's implied operations).
    fn implies(self, op: Operation) -> bool {
        use Operation::*;
        self == All
            || self == op
            || (op == Describe && matches!(self, Read | Write | Delete | Alter))
            || (op == DescribeConfigs && self == AlterConfigs)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    Deny,
    Allow,
}

impl Permission {
    pub fn code(self) -> i8 {
        match self {
            Permission::Deny => 2,
            Permission::Allow => 3,
        }
    }

    pub fn from_code(c: i8) -> Option<Permission> {
        match c {
            2 => Some(Permission::Deny),
            3 => Some(Permission::Allow),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Permission::Deny => "DENY",
            Permission::Allow => "ALLOW",
        }
    }
}

/// One ACL. Ordered by resource first, so a resource type's bindings are one range.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub pattern: PatternType,
    pub name: String,
    /// `User:<name>`, or `User:*` for everyone.
    pub principal: String,
    /// A client IP address, or `*`.
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

/// The ACLs of a cluster.
pub type Acls = BTreeSet<AclBinding>;

pub const WILDCARD: &str = "*";
pub const WILDCARD_PRINCIPAL: &str = "User:*";
/// The one CLUSTER resource's name.
pub const CLUSTER_NAME: &str = "kafka-cluster";

impl AclBinding {
    /// Checks a binding to create as Kafka does; Err(reason) for INVALID_REQUEST.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("the resource name is empty".into());
        }
        if self.resource_type == ResourceType::Cluster && self.name != CLUSTER_NAME {
            return Err(format!(
                "the CLUSTER resource is named {CLUSTER_NAME}, not {:?}",
                self.name
            ));
        }
        if self.pattern == PatternType::Prefixed && self.name == WILDCARD {
            return Err("a PREFIXED pattern cannot be *; use LITERAL *".into());
        }
        match self.principal.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => {}
            _ => {
                return Err(format!(
                    "principal {:?} is not TYPE:name (e.g. User:alice, User:*)",
                    self.principal
                ))
            }
        }
        if self.host.is_empty() {
            return Err("the host is empty (use * for any)".into());
        }
        if self.host != WILDCARD && self.host.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("host {:?} is not an IP address or *", self.host));
        }
        Ok(())
    }

    /// The binding with its host written canonically (`::ffff:10.0.0.5` as `10.0.0.5`, IPv6
    /// compressed and lower case), as connections' hosts are, so text comparison matches.
    pub fn canonical(mut self) -> AclBinding {
        self.host = canonical_host(&self.host);
        self
    }

    /// Whether this binding's pattern covers the resource `name` of its type.
    fn covers(&self, name: &str) -> bool {
        match self.pattern {
            PatternType::Literal => self.name == name || self.name == WILDCARD,
            PatternType::Prefixed => name.starts_with(self.name.as_str()),
        }
    }
}

/// An IP address as the authorizer compares it (others unchanged: `*`).
pub fn canonical_host(host: &str) -> String {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_canonical().to_string(),
        Err(_) => host.to_string(),
    }
}

/// A filter's pattern type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternFilter {
    /// Any pattern type; a name given must equal the binding's name.
    Any,
    /// Every binding that would apply to the named resource (literal, `*`, prefixes).
    Match,
    Exactly(PatternType),
}

/// DescribeAcls' and DeleteAcls' filter: None is ANY (or a null string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: Option<ResourceType>,
    pub name: Option<String>,
    pub pattern: PatternFilter,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

impl AclFilter {
    /// From the wire's codes; Err(reason) for a code that is UNKNOWN or out of range.
    #[allow(clippy::too_many_arguments)]
    pub fn from_wire(
        resource_type: i8,
        name: Option<&str>,
        pattern: i8,
        principal: Option<&str>,
        host: Option<&str>,
        operation: i8,
        permission: i8,
    ) -> Result<AclFilter, String> {
        const ANY: i8 = 1;
        // ANY (1), else a code `from` knows.
        fn any_or<T>(c: i8, from: fn(i8) -> Option<T>, what: &str) -> Result<Option<T>, String> {
            match c {
                ANY => Ok(None),
                c => from(c)
                    .map(Some)
                    .ok_or_else(|| format!("{what} {c} is not a filter's")),
            }
        }
        let resource_type = any_or(resource_type, ResourceType::from_code, "resource type")?;
        let pattern = match pattern {
            2 => PatternFilter::Match,
            c => any_or(c, PatternType::from_code, "pattern type")?
                .map_or(PatternFilter::Any, PatternFilter::Exactly),
        };
        let operation = any_or(operation, Operation::from_code, "operation")?;
        let permission = any_or(permission, Permission::from_code, "permission type")?;
        Ok(AclFilter {
            resource_type,
            name: name.map(str::to_string),
            pattern,
            principal: principal.map(str::to_string),
            host: host.map(canonical_host),
            operation,
            permission,
        })
    }

    pub fn matches(&self, b: &AclBinding) -> bool {
        if self.resource_type.is_some_and(|t| t != b.resource_type) {
            return false;
        }
        let name_ok = match (&self.pattern, &self.name) {
            (PatternFilter::Any, None) => true,
            (PatternFilter::Any, Some(n)) => *n == b.name,
            (PatternFilter::Match, None) => true,
            (PatternFilter::Match, Some(n)) => b.covers(n),
            (PatternFilter::Exactly(p), n) => {
                *p == b.pattern && n.as_ref().is_none_or(|n| *n == b.name)
            }
        };
        name_ok
            && self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && self.operation.is_none_or(|o| o == b.operation)
            && self.permission.is_none_or(|p| p == b.permission)
    }
}

/// Who is asking, as the authorizer needs it.
pub struct Requester<'a> {
    pub principal: &'a str,
    /// The client's IP address, as text.
    pub host: &'a str,
}

/// Whether `who` may perform `op` on the resource (`rtype`, `name`) under `acls`.
/// Super users are checked by the caller.
pub fn authorize(
    acls: &Acls,
    who: &Requester,
    op: Operation,
    rtype: ResourceType,
    name: &str,
) -> bool {
    let mut allowed = false;
    let applies = |b: &AclBinding| {
        (b.principal == who.principal || b.principal == WILDCARD_PRINCIPAL)
            && (b.host == WILDCARD || b.host == who.host)
            && b.covers(name)
    };
    // The bindings that can cover the name, found by range: literal ones named exactly so
    // or `*`, and the prefixed ones of the type.
    let from = |pattern: PatternType, name: &str| AclBinding {
        resource_type: rtype,
        pattern,
        name: name.to_string(),
        principal: String::new(),
        host: String::new(),
        operation: Operation::All,
        permission: Permission::Deny,
    };
    let literal = |n: &'static str| {
        let n: &str = if n.is_empty() { name } else { n };
        acls.range(from(PatternType::Literal, n)..)
            .take_while(move |b| {
                b.resource_type == rtype && b.pattern == PatternType::Literal && b.name == n
            })
    };
    let prefixed = acls
        .range(from(PatternType::Prefixed, "")..)
        .take_while(|b| b.resource_type == rtype);
    let exact = literal("");
    let star = (name != WILDCARD)
        .then(|| literal(WILDCARD))
        .into_iter()
        .flatten();
    for b in exact.chain(star).chain(prefixed) {
        if !applies(b) {
            continue;
        }
        match b.permission {
            Permission::Deny if b.operation == op || b.operation == Operation::All => return false,
            Permission::Deny => {}
            Permission::Allow => allowed |= b.operation.implies(op),
        }
    }
    allowed
}

/// The operations a resource type has (Kafka's, for the authorized-operations bit sets).
pub fn operations_of(rtype: ResourceType) -> &'static [Operation] {
    use Operation::*;
    match rtype {
        ResourceType::Topic => &[
            Read,
            Write,
            Create,
            Delete,
            Alter,
            Describe,
            DescribeConfigs,
            AlterConfigs,
        ],
        ResourceType::Group => &[Read, Delete, Describe],
        ResourceType::Cluster => &[
            Create,
            ClusterAction,
            DescribeConfigs,
            AlterConfigs,
            IdempotentWrite,
            Alter,
            Describe,
        ],
        ResourceType::TransactionalId => &[Describe, Write],
        ResourceType::DelegationToken => &[Describe],
        ResourceType::User => &[CreateTokens, DescribeTokens],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(
        rt: ResourceType,
        pattern: PatternType,
        name: &str,
        principal: &str,
        op: Operation,
        perm: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type: rt,
            pattern,
            name: name.into(),
            principal: principal.into(),
            host: WILDCARD.into(),
            operation: op,
            permission: perm,
        }
    }

    #[test]
    fn codes_round_trip() {
        for o in Operation::EVERY {
            assert_eq!(Operation::from_code(o.code()), Some(o));
            assert_eq!(Operation::from_name(o.name()), Some(o));
        }
        assert_eq!(Operation::Read.code(), 3);
        assert_eq!(Operation::DescribeTokens.code(), 14);
        assert_eq!(Operation::from_code(1), None);
        assert_eq!(Operation::from_code(15), None);
        assert_eq!(Operation::from_code(i8::MIN), None);
        assert_eq!(Operation::from_code(-1), None);
        for t in ResourceType::ALL {
            assert_eq!(ResourceType::from_code(t.code()), Some(t));
        }
    }

    #[test]
    fn deny_wins_implied_operations_and_patterns() {
        use Operation::*;
        use PatternType::*;
        use Permission::*;
        use ResourceType::*;
        let acls: Acls = [
            b(Topic, Literal, "orders", "User:alice", Read, Allow),
            b(Topic, Prefixed, "logs-", "User:alice", Write, Allow),
            b(Topic, Literal, "logs-secret", "User:alice", All, Deny),
            b(Topic, Literal, "*", "User:*", DescribeConfigs, Allow),
            b(Group, Literal, "g", "User:bob", AlterConfigs, Allow),
            b(Cluster, Literal, CLUSTER_NAME, "User:bob", All, Allow),
        ]
        .into_iter()
        .collect();
        let alice = Requester {
            principal: "User:alice",
            host: "10.0.0.1",
        };
        let bob = Requester {
            principal: "User:bob",
            host: "10.0.0.1",
        };
        assert!(authorize(&acls, &alice, Read, Topic, "orders"));
        assert!(authorize(&acls, &alice, Describe, Topic, "orders"));
        assert!(!authorize(&acls, &alice, Write, Topic, "orders"));
        assert!(!authorize(&acls, &alice, Read, Topic, "orders2"));
        assert!(authorize(&acls, &alice, Write, Topic, "logs-a"));
        assert!(authorize(&acls, &alice, Describe, Topic, "logs-a"));
        assert!(!authorize(&acls, &alice, Write, Topic, "logs-secret"));
        assert!(!authorize(&acls, &alice, Describe, Topic, "logs-secret"));
        assert!(authorize(&acls, &bob, DescribeConfigs, Topic, "anything"));
        assert!(!authorize(&acls, &bob, AlterConfigs, Topic, "anything"));
        // A topic ACL does not reach a group of the same name, and back.
        assert!(!authorize(&acls, &alice, Read, Group, "orders"));
        assert!(authorize(&acls, &bob, DescribeConfigs, Group, "g"));
        assert!(!authorize(&acls, &bob, Describe, Group, "g"));
        assert!(authorize(&acls, &bob, ClusterAction, Cluster, CLUSTER_NAME));
        assert!(!authorize(&acls, &alice, Create, Cluster, CLUSTER_NAME));
        // Hosts.
        let mut acls2 = Acls::new();
        let mut h = b(Topic, Literal, "t", "User:alice", Read, Allow);
        h.host = "10.0.0.2".into();
        acls2.insert(h);
        assert!(!authorize(&acls2, &alice, Read, Topic, "t"));
        let from2 = Requester {
            principal: "User:alice",
            host: "10.0.0.2",
        };
        assert!(authorize(&acls2, &from2, Read, Topic, "t"));
        // Nothing: no.
        assert!(!authorize(&Acls::new(), &alice, Describe, Topic, "t"));
    }

    #[test]
    fn filters_match_as_kafkas_do() {
        use PatternType::*;
        let lit = b(
            ResourceType::Topic,
            Literal,
            "orders",
            "User:a",
            Operation::Read,
            Permission::Allow,
        );
        let star = b(
            ResourceType::Topic,
            Literal,
            "*",
            "User:a",
            Operation::Read,
            Permission::Allow,
        );
        let pre = b(
            ResourceType::Topic,
            Prefixed,
            "ord",
            "User:a",
            Operation::Read,
            Permission::Allow,
        );
        let f = |rt: i8, name: Option<&str>, pat: i8| {
            AclFilter::from_wire(rt, name, pat, None, None, 1, 1).unwrap()
        };
        let any = f(1, None, 1);
        assert!(any.matches(&lit) && any.matches(&star) && any.matches(&pre));
        let m = f(2, Some("orders"), 2);
        assert!(m.matches(&lit) && m.matches(&star) && m.matches(&pre));
        let exact = f(2, Some("orders"), 3);
        assert!(exact.matches(&lit) && !exact.matches(&star) && !exact.matches(&pre));
        let any_named = f(2, Some("ord"), 1);
        assert!(!any_named.matches(&lit) && any_named.matches(&pre));
        assert!(!f(3, None, 1).matches(&lit));
        assert!(AclFilter::from_wire(0, None, 1, None, None, 1, 1).is_err());
        assert!(AclFilter::from_wire(1, None, 0, None, None, 1, 1).is_err());
        assert!(AclFilter::from_wire(1, None, 1, None, None, 0, 1).is_err());
        let by_principal = AclFilter::from_wire(1, None, 1, Some("User:b"), None, 1, 1).unwrap();
        assert!(!by_principal.matches(&lit));
    }

    #[test]
    fn bindings_are_validated() {
        let ok = b(
            ResourceType::Topic,
            PatternType::Literal,
            "t",
            "User:a",
            Operation::Read,
            Permission::Allow,
        );
        assert!(ok.validate().is_ok());
        let mut bad = ok.clone();
        bad.principal = "alice".into();
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.host = "example.com".into();
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.resource_type = ResourceType::Cluster;
        assert!(bad.validate().is_err());
        let mut bad = ok;
        bad.pattern = PatternType::Prefixed;
        bad.name = "*".into();
        assert!(bad.validate().is_err());
    }
}
