//! Who a connection is: the listener it came in on (Kafka's security protocols), the subject
//! of its TLS client certificate (`tls`), and on a SASL listener the user it authenticated as (SaslHandshake, then SaslAuthenticate with PLAIN
//! or SCRAM-SHA-256/512). Until then a SASL connection may only ask ApiVersions and the SASL
//! requests; a session past its lifetime (KIP-368, `connections_max_reauth_ms`) must
//! authenticate again before anything else, so a user whose credentials are gone is cut off.

pub mod acl;
pub mod quota;
pub mod scram;
pub mod tls;

use crate::config::Config;
use scram::{Credential, Mechanism};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Kafka's security protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    SaslPlaintext,
    Ssl,
    SaslSsl,
}

impl SecurityProtocol {
    pub const ALL: [SecurityProtocol; 4] = [
        SecurityProtocol::Plaintext,
        SecurityProtocol::SaslPlaintext,
        SecurityProtocol::Ssl,
        SecurityProtocol::SaslSsl,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }
}

/// One listener: Kafka's `PROTOCOL://host:port`, its name being its protocol's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub protocol: SecurityProtocol,
    pub addr: SocketAddr,
    /// (host, port) clients are told to connect to for this listener.
    pub advertised: (String, i32),
    /// A TLS listener's files.
    pub tls: Option<tls::TlsFiles>,
}

/// Splits `NAME://host:port`.
fn split_listener(s: &str) -> anyhow::Result<(String, String)> {
    let (name, addr) = s
        .split_once("://")
        .ok_or_else(|| anyhow::anyhow!("listener {s:?} is not NAME://host:port"))?;
    Ok((name.trim().to_ascii_uppercase(), addr.trim().to_string()))
}

/// The listeners of a config: `listeners`, or the single PLAINTEXT `listen` address when
/// none are given; each advertised at `advertised_listeners`' entry of the same name, else
/// as `listen` is (`advertise` for the first).
pub fn listeners(cfg: &Config) -> anyhow::Result<Vec<Listener>> {
    use std::net::ToSocketAddrs;
    if cfg.listeners.is_empty() {
        return Ok(vec![Listener {
            name: "PLAINTEXT".into(),
            protocol: SecurityProtocol::Plaintext,
            addr: cfg.listen_addr()?,
            advertised: cfg.advertised(),
            tls: None,
        }]);
    }
    let mut advertised = BTreeMap::new();
    for a in &cfg.advertised_listeners {
        let (name, addr) = split_listener(a)?;
        advertised.insert(name, addr);
    }
    let mut out: Vec<Listener> = Vec::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let (name, addr) = split_listener(l)?;
        let Some(protocol) = SecurityProtocol::ALL.into_iter().find(|p| p.name() == name) else {
            anyhow::bail!(
                "listener {l}: unknown security protocol {name} (PLAINTEXT, SASL_PLAINTEXT, SSL, \
                 SASL_SSL)"
            );
        };
        let tls = if protocol.tls() {
            let need = |v: &Option<std::path::PathBuf>, key: &str| {
                v.clone()
                    .ok_or_else(|| anyhow::anyhow!("listener {l} needs {key}"))
            };
            let files = tls::TlsFiles {
                certificate: need(&cfg.ssl_certificate_file, "ssl_certificate_file")?,
                key: need(&cfg.ssl_key_file, "ssl_key_file")?,
                client_auth: tls::ClientAuth::parse(&cfg.ssl_client_auth)?,
                truststore: cfg.ssl_truststore_file.clone(),
            };
            // Loaded once here so a bad file stops the broker at start-up, saying why.
            tls::load(&files)?;
            Some(files)
        } else {
            None
        };
        anyhow::ensure!(
            !out.iter().any(|o| o.name == name),
            "listeners name {name} twice"
        );
        let sock = addr
            .to_socket_addrs()
            .map_err(|e| anyhow::anyhow!("listener {l}: {e}"))?
            .next()
            .ok_or_else(|| anyhow::anyhow!("listener {l} resolves to nothing"))?;
        let adv = match advertised.remove(&name) {
            Some(a) => crate::config::host_port(&a, sock.port() as i32),
            None if i == 0 && cfg.advertise.is_some() => crate::config::host_port(
                cfg.advertise.as_deref().unwrap_or_default(),
                sock.port() as i32,
            ),
            None if sock.ip().is_unspecified() => ("127.0.0.1".into(), sock.port() as i32),
            None => (sock.ip().to_string(), sock.port() as i32),
        };
        out.push(Listener {
            name,
            protocol,
            addr: sock,
            advertised: adv,
            tls,
        });
    }
    if let Some(name) = advertised.keys().next() {
        anyhow::bail!("advertised_listeners names {name}, which is not among the listeners");
    }
    for m in &cfg.sasl_enabled_mechanisms {
        anyhow::ensure!(
            m == "PLAIN" || Mechanism::from_name(m).is_some(),
            "sasl_enabled_mechanisms: unknown mechanism {m} (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)"
        );
    }
    if !cfg.controller_quorum_voters.is_empty() {
        match out[0].protocol {
            SecurityProtocol::Plaintext => {}
            SecurityProtocol::SaslPlaintext => {
                anyhow::ensure!(
                    cfg.inter_broker_sasl_username.is_some()
                        && cfg.inter_broker_sasl_password.is_some(),
                    "the first listener carries the traffic between brokers; as SASL_PLAINTEXT \
                     it needs inter_broker_sasl_username and inter_broker_sasl_password"
                );
                anyhow::ensure!(
                    cfg.sasl_enabled_mechanisms.iter().any(|m| m == "PLAIN"),
                    "brokers log in to each other with PLAIN: keep it in sasl_enabled_mechanisms"
                );
            }
            _ => anyhow::bail!(
                "in a cluster the first listener carries the traffic between brokers and must \
                 be PLAINTEXT or SASL_PLAINTEXT (brokers do not speak TLS to each other yet)"
            ),
        }
    }
    Ok(out)
}

/// PLAIN users from `sasl_plain_users_file` (TOML: `name = "password"` per line), for small
/// setups; SCRAM users (`flumen users create`) also log in with PLAIN.
pub fn load_plain_users(cfg: &Config) -> anyhow::Result<BTreeMap<String, String>> {
    let Some(path) = &cfg.sasl_plain_users_file else {
        return Ok(BTreeMap::new());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("sasl_plain_users_file {}: {e}", path.display()))?;
    toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("sasl_plain_users_file {}: {e}", path.display()))
}

/// The PLAIN users of `sasl_plain_users_file`, loaded once at start-up (read-only after).
static PLAIN_USERS: std::sync::OnceLock<BTreeMap<String, String>> = std::sync::OnceLock::new();

/// Installs the PLAIN users (start-up; a second call keeps the first set).
pub fn install_plain_users(users: BTreeMap<String, String>) {
    let _ = PLAIN_USERS.set(users);
}

pub fn plain_users() -> &'static BTreeMap<String, String> {
    static NONE: BTreeMap<String, String> = BTreeMap::new();
    PLAIN_USERS.get().unwrap_or(&NONE)
}

/// The (user, password) this broker logs in with when it calls another (SASL PLAIN), when
/// the inter-broker listener is SASL_PLAINTEXT.
static INTER_BROKER_LOGIN: std::sync::OnceLock<Option<(String, String)>> =
    std::sync::OnceLock::new();

/// Installs the inter-broker login from the config (start-up).
pub fn install_inter_broker_login(cfg: &Config, listeners: &[Listener]) {
    let login = match (
        listeners.first().map(|l| l.protocol),
        &cfg.inter_broker_sasl_username,
        &cfg.inter_broker_sasl_password,
    ) {
        (Some(SecurityProtocol::SaslPlaintext), Some(u), Some(p)) => Some((u.clone(), p.clone())),
        _ => None,
    };
    let _ = INTER_BROKER_LOGIN.set(login);
}

pub fn inter_broker_login() -> Option<&'static (String, String)> {
    INTER_BROKER_LOGIN.get().and_then(|l| l.as_ref())
}

/// SCRAM credentials as the metadata keeps them: user -> mechanism name -> credential.
pub type ScramUsers = BTreeMap<String, BTreeMap<String, Credential>>;

/// A principal as Kafka writes it.
pub fn user_principal(name: &str) -> String {
    format!("User:{name}")
}

pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// Kafka's `sasl.server.max.receive.size`: the largest frame before authentication.
pub const PRE_AUTH_MAX_FRAME_BYTES: usize = 512 * 1024;

/// A SASL mechanism chosen by SaslHandshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    Scram(Mechanism),
}

impl SaslMechanism {
    pub fn from_name(name: &str) -> Option<SaslMechanism> {
        match name {
            "PLAIN" => Some(SaslMechanism::Plain),
            other => Mechanism::from_name(other).map(SaslMechanism::Scram),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(m) => m.name(),
        }
    }
}

/// Where a connection's SASL exchange stands.
pub enum SaslState {
    /// No handshake yet (or the last exchange finished).
    Idle,
    /// SaslHandshake chose this mechanism; SaslAuthenticate comes next.
    Chosen(SaslMechanism),
    /// SCRAM: the server-first message went out.
    ScramSent(scram::Exchange),
}

/// One connection's identity.
pub struct Session {
    pub peer: Rc<str>,
    /// The client's IP address (what ACLs' hosts name).
    pub host: Rc<str>,
    pub listener: Rc<Listener>,
    pub sasl: RefCell<SaslState>,
    /// The authenticated user (a SASL listener), or None.
    user: RefCell<Option<String>>,
    /// When the authentication stops being good (KIP-368), if it does.
    expires: Cell<Option<Instant>>,
    /// A TLS client certificate's subject (RFC 2253), if the client showed one.
    certificate_subject: RefCell<Option<String>>,
    /// An authentication failed: nothing more is served (the connection is closing, and
    /// requests pipelined behind the failure must not run as the earlier principal).
    failed: Cell<bool>,
    /// A quota throttle: no request is read from the connection before this.
    muted_until: Cell<Option<Instant>>,
}

impl Session {
    pub fn new(peer: Rc<str>, listener: Rc<Listener>) -> Session {
        let host = match peer.parse::<SocketAddr>() {
            Ok(a) => Rc::from(a.ip().to_canonical().to_string().as_str()),
            Err(_) => peer.clone(),
        };
        Session {
            peer,
            host,
            listener,
            sasl: RefCell::new(SaslState::Idle),
            user: RefCell::new(None),
            expires: Cell::new(None),
            certificate_subject: RefCell::new(None),
            failed: Cell::new(false),
            muted_until: Cell::new(None),
        }
    }

    /// A quota throttle of `d`: the connection's next request is read after it.
    pub fn mute_for(&self, d: Duration) {
        let until = Instant::now() + d;
        if self.muted_until.get().is_none_or(|t| t < until) {
            self.muted_until.set(Some(until));
        }
    }

    /// Until when the connection is throttled, if it is.
    pub fn muted_until(&self) -> Option<Instant> {
        self.muted_until.get().filter(|t| *t > Instant::now())
    }

    /// The user name quotas are kept for: the principal's name (`ANONYMOUS` without one).
    pub fn quota_user(&self) -> String {
        let p = self.principal();
        p.strip_prefix("User:").map(str::to_string).unwrap_or(p)
    }

    /// An authentication failed on this connection: it serves nothing more.
    pub fn fail(&self) {
        self.failed.set(true);
    }

    pub fn has_failed(&self) -> bool {
        self.failed.get()
    }

    /// The largest frame this connection may send now: before it has authenticated on a
    /// SASL listener, Kafka's `sasl.server.max.receive.size` (512 KiB), so a client that is
    /// no one yet cannot take the shard's request memory.
    pub fn frame_limit(&self, configured: usize) -> usize {
        if self.listener.protocol.sasl() && self.user.borrow().is_none() {
            configured.min(PRE_AUTH_MAX_FRAME_BYTES)
        } else {
            configured
        }
    }

    /// The subject of the client's TLS certificate (mTLS).
    pub fn set_certificate_subject(&self, dn: String) {
        *self.certificate_subject.borrow_mut() = Some(dn);
    }

    /// Kafka's principal: `User:<name>` once SASL authenticated, else `User:<subject>` of a
    /// TLS client certificate, else `User:ANONYMOUS`.
    pub fn principal(&self) -> String {
        let user = self.user.borrow();
        let cert = self.certificate_subject.borrow();
        user.as_deref()
            .or(cert.as_deref())
            .map_or_else(|| ANONYMOUS.to_string(), user_principal)
    }

    /// Why a request other than ApiVersions and the SASL ones may not be served yet, if so.
    pub fn refuses_requests(&self) -> Option<String> {
        if self.failed.get() {
            return Some("a SASL authentication failed on this connection".into());
        }
        if !self.listener.protocol.sasl() {
            return None;
        }
        if self.user.borrow().is_none() {
            return Some(format!(
                "a request before SASL authentication on listener {}",
                self.listener.name
            ));
        }
        match self.expires.get() {
            Some(t) if Instant::now() >= t => Some(
                "the SASL session expired (connections_max_reauth_ms) and was not renewed".into(),
            ),
            _ => None,
        }
    }

    /// A finished authentication as `user`, good for `lifetime` (None: for the connection's
    /// life). Err when a re-authentication names another user than the first (Kafka refuses
    /// that).
    pub fn authenticated(&self, user: String, lifetime: Option<Duration>) -> Result<(), String> {
        let mut cur = self.user.borrow_mut();
        if let Some(before) = cur.as_ref() {
            if *before != user {
                return Err(format!(
                    "re-authentication as {user} on a connection of {before}"
                ));
            }
        }
        *cur = Some(user);
        self.expires.set(lifetime.map(|d| Instant::now() + d));
        Ok(())
    }
}

/// Checks a PLAIN message (`authzid NUL user NUL password`) against the users file, then
/// the SCRAM credentials; answers the user.
pub fn check_plain(
    message: &[u8],
    file_users: &BTreeMap<String, String>,
    scram: &ScramUsers,
) -> Result<String, String> {
    let mut parts = message.split(|b| *b == 0);
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("PLAIN message is not authzid NUL user NUL password".into());
    };
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| "PLAIN message is not UTF-8");
    let (authzid, user, password) = (text(authzid)?, text(user)?, text(password)?);
    if !authzid.is_empty() && authzid != user {
        return Err("PLAIN authorization id differs from the user name".into());
    }
    let failed =
        || "Authentication failed: Invalid username or password (SASL mechanism PLAIN)".to_string();
    let ok = match file_users.get(&user) {
        // Compared as digests: the time taken tells nothing of either length.
        Some(p) => {
            let d = |v: &str| ring::digest::digest(&ring::digest::SHA256, v.as_bytes());
            scram::same(d(p).as_ref(), d(&password).as_ref())
        }
        None => scram
            .get(&user)
            .and_then(|m| m.iter().next())
            .and_then(|(mech, c)| Some((Mechanism::from_name(mech)?, c)))
            .is_some_and(|(mech, c)| c.matches_password(mech, &password)),
    };
    if ok {
        Ok(user)
    } else {
        Err(failed())
    }
}

/// A change to SCRAM credentials (AlterUserScramCredentials): set or delete one user's
/// credential for one mechanism.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ScramChange {
    Upsert {
        user: String,
        mechanism: Mechanism,
        credential: Credential,
    },
    Delete {
        user: String,
        mechanism: Mechanism,
    },
}

impl ScramChange {
    pub fn user(&self) -> &str {
        match self {
            ScramChange::Upsert { user, .. } | ScramChange::Delete { user, .. } => user,
        }
    }

    /// Applies the change; Err when a deletion finds nothing (Kafka's
    /// RESOURCE_NOT_FOUND).
    pub fn apply(&self, users: &mut ScramUsers) -> Result<(), String> {
        match self {
            ScramChange::Upsert {
                user,
                mechanism,
                credential,
            } => {
                users
                    .entry(user.clone())
                    .or_default()
                    .insert(mechanism.name().to_string(), credential.clone());
                Ok(())
            }
            ScramChange::Delete { user, mechanism } => {
                let m = users.get_mut(user);
                let gone = m.and_then(|m| m.remove(mechanism.name())).is_some();
                if users.get(user).is_some_and(|m| m.is_empty()) {
                    users.remove(user);
                }
                if gone {
                    Ok(())
                } else {
                    Err(format!(
                        "user {user} has no {} credential",
                        mechanism.name()
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_checks_the_file_then_scram_users() {
        let file = BTreeMap::from([("alice".to_string(), "a-pw".to_string())]);
        let mut scram = ScramUsers::new();
        let cred =
            Credential::from_password(Mechanism::Sha512, "b-pw", scram::random_bytes(16), 4096);
        scram
            .entry("bob".into())
            .or_default()
            .insert(Mechanism::Sha512.name().into(), cred);
        assert_eq!(
            check_plain(b"\0alice\0a-pw", &file, &scram).unwrap(),
            "alice"
        );
        assert_eq!(
            check_plain(b"bob\0bob\0b-pw", &file, &scram).unwrap(),
            "bob"
        );
        for bad in [
            &b"\0alice\0wrong"[..],
            b"\0bob\0a-pw",
            b"\0carol\0x",
            b"eve\0alice\0a-pw",
            b"alice\0a-pw",
            b"\0a\0b\0c",
        ] {
            assert!(check_plain(bad, &file, &scram).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sessions_refuse_requests_until_authenticated_and_after_expiry() {
        let l = Rc::new(Listener {
            name: "SASL_PLAINTEXT".into(),
            protocol: SecurityProtocol::SaslPlaintext,
            addr: "127.0.0.1:1".parse().unwrap(),
            advertised: ("h".into(), 1),
            tls: None,
        });
        let s = Session::new(Rc::from("p"), l);
        assert!(s.refuses_requests().is_some());
        assert_eq!(s.principal(), ANONYMOUS);
        s.authenticated("al".into(), Some(Duration::ZERO)).unwrap();
        assert_eq!(s.principal(), "User:al");
        assert!(s.refuses_requests().unwrap().contains("expired"));
        s.authenticated("al".into(), None).unwrap();
        assert!(s.refuses_requests().is_none());
        assert!(s.authenticated("mallory".into(), None).is_err());
    }

    #[test]
    fn scram_changes_upsert_and_delete() {
        let mut users = ScramUsers::new();
        let cred = Credential::from_password(Mechanism::Sha256, "x", vec![1; 16], 4096);
        let up = ScramChange::Upsert {
            user: "u".into(),
            mechanism: Mechanism::Sha256,
            credential: cred,
        };
        up.apply(&mut users).unwrap();
        let del = ScramChange::Delete {
            user: "u".into(),
            mechanism: Mechanism::Sha256,
        };
        del.apply(&mut users).unwrap();
        assert!(users.is_empty());
        assert!(del.apply(&mut users).is_err());
    }
}
