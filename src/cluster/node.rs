//! One node of the cluster, on shard 0: its Raft member of the metadata quorum, the RPC
//! server on `controller_listen`, and the broker's side of membership (register, heartbeat,
//! controlled shutdown). While it leads the quorum it is the active controller: it fences
//! brokers that stop heartbeating and creates the internal topics.
//!
//! Every change goes through `write`, which commits a `Command` on the active controller
//! (here or forwarded) and answers with the log index it was applied at. Each applied change
//! reaches the shards as a new image through `spawn_publisher`.

use super::log_store::LogStore;
use super::network::{self, Network, Peer, Request, Response, WriteError};
use super::state::{ClusterState, Command, NewTopic, Reply};
use super::state_machine::{write_atomic, Applied, StateMachineStore};
use super::{Raft, TypeConfig};
use crate::config::{Config, Voter};
use crate::metadata::{image, ClusterMeta, OFFSETS_TOPIC, TXN_TOPIC};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The quorum's directory inside the metadata dir (Kafka's name for the metadata log).
pub const QUORUM_DIR: &str = "__cluster_metadata";
/// Who this data dir belongs to, written once the cluster id is known.
const IDENTITY_FILE: &str = "identity.json";
/// A write that finds no active controller keeps trying for this long.
const WRITE_DEADLINE: Duration = Duration::from_secs(15);
/// Deadline of one forwarded call.
const CALL_TTL: Duration = Duration::from_secs(5);
/// Connections `controller_listen` holds at once (voters, observers and brokers' calls: a
/// handful each); more are closed at once, so a flood cannot exhaust descriptors or memory.
const MAX_CONTROLLER_CONNECTIONS: usize = 1024;
/// Controlled shutdown: how long to wait for an active controller to be known, and for it
/// to commit this broker's fencing. A healthy cluster commits in milliseconds; a cluster
/// without a quorum never does, and the broker stops anyway.
const SHUTDOWN_LEADER_WAIT: Duration = Duration::from_secs(1);
const SHUTDOWN_FENCE_DEADLINE: Duration = Duration::from_secs(3);

/// The active controller's housekeeping period (fencing, internal topics).
const LEADER_TICK: Duration = Duration::from_millis(100);
/// How long a new active controller waits for every voter to register before it creates
/// the internal topics on the brokers it has.
const INTERNAL_TOPICS_GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Identity {
    node_id: i32,
    cluster_id: String,
}

/// What a node finds on disk before it starts: its log store, the state it had committed,
/// and a clear error when the directory belongs to another node or cluster.
pub struct Recovered {
    pub dir: PathBuf,
    pub applied: Applied,
}

/// Reads the quorum directory under `meta_dir` (creating it on first start) and rebuilds the
/// committed state. Refuses a directory written by another node, another cluster, a single
/// node, or a quorum of other voters.
pub fn recover(config: &Config) -> anyhow::Result<Recovered> {
    let meta_dir = config.meta_dir();
    let dir = meta_dir.join(QUORUM_DIR);
    let single = meta_dir.join(crate::metadata::image::META_FILE);
    if !dir.exists() && single.exists() {
        let m = ClusterMeta::load(&meta_dir, 1)?;
        anyhow::ensure!(
            m.topics.is_empty(),
            "{} holds the metadata of a single-node broker ({} topics); a cluster node needs a data dir of its own",
            meta_dir.display(),
            m.topics.len()
        );
    }
    std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let identity = read_identity(&dir)?;
    if let Some(id) = &identity {
        anyhow::ensure!(
            id.node_id == config.node_id,
            "{} belongs to node {} of cluster {}, not to node {}: give each node its own data dir",
            meta_dir.display(),
            id.node_id,
            id.cluster_id,
            config.node_id
        );
    }
    let mut log = LogStore::<TypeConfig>::open(&dir)
        .map_err(|e| anyhow::anyhow!("opening the metadata log in {}: {e}", dir.display()))?;
    let entries = futures_lite::future::block_on(committed_entries(&mut log))
        .map_err(|e| anyhow::anyhow!("reading the metadata log in {}: {e}", dir.display()))?;
    let applied = super::state_machine::recover(&dir, &entries)
        .map_err(|e| anyhow::anyhow!("recovering the metadata in {}: {e}", dir.display()))?;
    if let Some(id) = &identity {
        let sid = &applied.state.cluster_id;
        anyhow::ensure!(
            sid.is_empty() || *sid == id.cluster_id,
            "{}: the metadata log is of cluster {sid}, the identity file says {}",
            dir.display(),
            id.cluster_id
        );
    }
    let voters = config.voters()?;
    let membership = applied.last_membership.membership();
    let stored: BTreeMap<u64, String> = membership
        .voter_ids()
        .filter_map(|id| membership.get_node(&id).map(|n| (id, n.addr.clone())))
        .collect();
    let wanted: BTreeMap<u64, String> = voters
        .iter()
        .map(|v| (v.id as u64, v.addr.clone()))
        .collect();
    anyhow::ensure!(
        stored.is_empty() || stored == wanted,
        "controller_quorum_voters {:?} differ from the quorum this node belongs to ({}): every node must list the same voters",
        config.controller_quorum_voters,
        stored
            .iter()
            .map(|(id, a)| format!("{id}@{a}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    Ok(Recovered { dir, applied })
}

/// The entries of the log known to be committed (those after the last purge).
async fn committed_entries(log: &mut LogStore<TypeConfig>) -> std::io::Result<Vec<super::Entry>> {
    use openraft::storage::RaftLogStorage;
    use openraft::RaftLogReader;
    match log.read_committed().await? {
        None => Ok(Vec::new()),
        Some(c) => {
            let mut reader = log.get_log_reader().await;
            reader.try_get_log_entries(0..=c.index).await
        }
    }
}

fn read_identity(dir: &Path) -> anyhow::Result<Option<Identity>> {
    match std::fs::read(dir.join(IDENTITY_FILE)) {
        Ok(b) => Ok(Some(serde_json::from_slice(&b).map_err(|e| {
            anyhow::anyhow!("{}: {e}", dir.join(IDENTITY_FILE).display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!(
            "{}: {e}",
            dir.join(IDENTITY_FILE).display()
        )),
    }
}

/// This node's part of the cluster (shard 0 only).
pub struct ClusterNode {
    config: Rc<Config>,
    dir: PathBuf,
    id: u64,
    voters: Vec<Voter>,
    nr_shards: usize,
    raft: Raft,
    sm: Rc<StateMachineStore>,
    /// This broker's epoch: the index of its registration (0 before it registered).
    epoch: Cell<u64>,
    /// Active controller only: when each broker last heartbeated.
    /// (broker epoch, time) of the last heartbeat of each broker's current registration.
    last_seen: RefCell<HashMap<i32, (u64, Instant)>>,
    /// Active controller only: since when it leads (None while it does not).
    leading_since: Cell<Option<Instant>>,
    /// Active controller only: the Raft term it leads in (a new term starts a new session).
    leading_term: Cell<Option<u64>>,
    /// This node's controller address: quorum connections leave from it.
    source: Option<std::net::IpAddr>,
    /// Open connections on `controller_listen`.
    connections: Cell<usize>,
    /// Active controller: when it last looked for leaders to move back to preferred replicas.
    last_rebalance: Cell<Option<Instant>>,
}

impl ClusterNode {
    /// Starts the Raft member and the RPC server; the quorum forms once a majority runs.
    pub async fn start(
        config: Rc<Config>,
        recovered: Recovered,
        nr_shards: usize,
    ) -> anyhow::Result<Rc<ClusterNode>> {
        let id = config.node_id as u64;
        let voters = config.voters()?;
        let listen = config
            .controller_listen
            .clone()
            .ok_or_else(|| anyhow::anyhow!("controller_listen is not set"))?;
        let listener = glommio::net::TcpListener::bind(listen.as_str())
            .map_err(|e| anyhow::anyhow!("controller listen {listen}: {e}"))?;
        let raft_config = openraft::Config {
            cluster_name: "flumen".into(),
            // Generous for a shared 2-core box: a busy shard must not look like a dead leader.
            heartbeat_interval: 150,
            election_timeout_min: 1000,
            election_timeout_max: 2000,
            ..Default::default()
        };
        let raft_config = Arc::new(
            raft_config
                .validate()
                .map_err(|e| anyhow::anyhow!("raft config: {e}"))?,
        );
        let sm = StateMachineStore::new(&recovered.dir, recovered.applied)?;
        let log = LogStore::<TypeConfig>::open(&recovered.dir)?;
        use std::net::ToSocketAddrs;
        let source = listen
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .map(|a| a.ip());
        let raft = Raft::new(id, raft_config, Network { source }, log, sm.clone())
            .await
            .map_err(|e| anyhow::anyhow!("starting the metadata quorum: {e}"))?;
        let node = Rc::new(ClusterNode {
            config,
            dir: recovered.dir,
            id,
            voters,
            nr_shards,
            raft,
            sm,
            epoch: Cell::new(0),
            last_seen: RefCell::new(HashMap::new()),
            leading_since: Cell::new(None),
            leading_term: Cell::new(None),
            source,
            last_rebalance: Cell::new(None),
            connections: Cell::new(0),
        });
        let server = node.clone();
        glommio::spawn_local(async move {
            loop {
                match listener.accept().await {
                    Ok(stream) if server.connections.get() >= MAX_CONTROLLER_CONNECTIONS => {
                        tracing::warn!(
                            "refusing a controller connection: {MAX_CONTROLLER_CONNECTIONS} open"
                        );
                        drop(stream);
                    }
                    Ok(stream) => {
                        server.connections.set(server.connections.get() + 1);
                        let s = server.clone();
                        glommio::spawn_local(async move {
                            s.clone().serve(stream).await;
                            s.connections.set(s.connections.get() - 1);
                        })
                        .detach();
                    }
                    Err(e) => {
                        tracing::warn!("controller accept: {e}");
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        })
        .detach();
        let members: BTreeMap<u64, BasicNode> = node
            .voters
            .iter()
            .map(|v| (v.id as u64, BasicNode::new(v.addr.clone())))
            .collect();
        // Every voter proposes the same initial membership; on a node that already has a
        // log this is refused, which is the normal case after the first start. An observer
        // broker asks the active controller to add it as a learner (`spawn_membership`).
        if node.config.is_voter() {
            if let Err(e) = node.raft.initialize(members).await {
                tracing::debug!("quorum already initialized: {e}");
            }
        }
        tracing::info!(
            node = id,
            controller = %listen,
            voters = ?node.config.controller_quorum_voters,
            "metadata quorum member started"
        );
        Ok(node)
    }

    /// The current state (a copy).
    pub fn state(&self) -> ClusterState {
        self.sm.state()
    }

    /// The node leading the quorum, if one is known.
    pub fn leader(&self) -> Option<u64> {
        use openraft::async_runtime::WatchReceiver;
        self.raft.metrics().borrow_watched().current_leader
    }

    fn is_leader(&self) -> bool {
        self.leader() == Some(self.id)
    }

    /// The image this broker serves from now.
    /// This broker's image of the committed state. Before the state holds this process's
    /// own registration (a restarted broker catching up with the metadata log), the
    /// leaderships it records for this broker are stale and left out: it serves nothing as a
    /// leader from a view older than its return.
    pub fn image(&self) -> ClusterMeta {
        let controller = self.leader().map_or(-1, |l| l as i32);
        let meta = self.sm.applied.borrow().state.image_for(
            self.config.node_id,
            controller,
            self.nr_shards,
        );
        if self.registered() {
            meta
        } else {
            meta.without_own_leadership()
        }
    }

    /// Whether the applied state holds this process's own registration.
    fn registered(&self) -> bool {
        let epoch = self.epoch.get();
        let me = self.config.node_id;
        epoch > 0
            && self
                .sm
                .applied
                .borrow()
                .state
                .brokers
                .get(&me)
                .map(|b| b.epoch)
                == Some(epoch)
    }

    /// Commits `cmd` on the active controller, here or forwarded, retrying while there is
    /// none; answers the log index it was applied at and what applying it answered.
    pub async fn write(&self, cmd: Command) -> Result<(u64, Reply), WriteError> {
        let deadline = Instant::now() + WRITE_DEADLINE;
        loop {
            let r = match self.leader() {
                Some(l) if l == self.id => self.write_local(cmd.clone()).await,
                Some(l) => self.forward(l, cmd.clone()).await,
                None => Err(WriteError::NotLeader(None)),
            };
            match r {
                Err(WriteError::NotLeader(_)) if Instant::now() < deadline => {
                    glommio::timer::sleep(Duration::from_millis(50)).await;
                }
                r => return r,
            }
        }
    }

    async fn write_local(&self, cmd: Command) -> Result<(u64, Reply), WriteError> {
        match self.raft.client_write(cmd).await {
            Ok(r) => Ok((r.log_id.index, r.data)),
            Err(e) => {
                use openraft::errors::{ClientWriteError, RaftError};
                match e {
                    RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                        Err(WriteError::NotLeader(f.leader_id))
                    }
                    other => Err(WriteError::Failed(other.to_string())),
                }
            }
        }
    }

    fn addr_of(&self, node: u64) -> Option<String> {
        self.voters
            .iter()
            .find(|v| v.id as u64 == node)
            .map(|v| v.addr.clone())
    }

    async fn forward(&self, leader: u64, cmd: Command) -> Result<(u64, Reply), WriteError> {
        let addr = self.addr_of(leader).ok_or(WriteError::NotLeader(None))?;
        let req = Request::Write {
            cluster_id: self.state().cluster_id,
            cmd,
        };
        match Peer::new(addr, self.source).call(&req, CALL_TTL).await {
            Ok(Response::Write(r)) => r,
            Ok(_) => Err(WriteError::Failed("unexpected answer".into())),
            // The leader may have died: look again.
            Err(_) => Err(WriteError::NotLeader(None)),
        }
    }

    /// Serves one controller connection: Raft RPCs and broker calls, one at a time.
    async fn serve(self: Rc<Self>, mut stream: glommio::net::TcpStream) {
        stream.set_nodelay(true).ok();
        loop {
            let req = match network::read_frame::<Request>(&mut stream).await {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(e) => {
                    // Peers that die or restart reset their connections: not news.
                    tracing::debug!("controller connection: {e}");
                    return;
                }
            };
            let resp = self.handle(req).await;
            if let Err(e) = network::write_frame(&mut stream, &resp).await {
                tracing::debug!("controller connection: {e}");
                return;
            }
        }
    }

    async fn handle(&self, req: Request) -> Response {
        match req {
            Request::Append(r) => {
                Response::Append(self.raft.append_entries(r).await.map_err(|e| e.to_string()))
            }
            Request::Vote(r) => Response::Vote(self.raft.vote(r).await.map_err(|e| e.to_string())),
            Request::Snapshot { vote, meta, data } => {
                let snapshot = super::Snapshot {
                    meta,
                    snapshot: std::io::Cursor::new(data),
                };
                Response::Snapshot(
                    self.raft
                        .install_full_snapshot(vote, snapshot)
                        .await
                        .map_err(|e| e.to_string()),
                )
            }
            Request::Write { cluster_id, cmd } => {
                let mine = self.state().cluster_id;
                if !cluster_id.is_empty() && !mine.is_empty() && cluster_id != mine {
                    return Response::Write(Err(WriteError::WrongCluster(mine)));
                }
                if !self.is_leader() {
                    return Response::Write(Err(WriteError::NotLeader(self.leader())));
                }
                Response::Write(self.write_local(cmd).await)
            }
            Request::Heartbeat { id, epoch } => Response::Heartbeat(self.heartbeat(id, epoch)),
            Request::AddLearner { id, addr } => Response::Write(self.add_learner(id, addr).await),
        }
    }

    /// On the active controller: makes node `id` (an observer broker) a learner of the
    /// quorum, so the metadata log reaches it. Nothing to do when it already is one at `addr`.
    async fn add_learner(&self, id: u64, addr: String) -> Result<(u64, Reply), WriteError> {
        if !self.is_leader() {
            return Err(WriteError::NotLeader(self.leader()));
        }
        if self.voters.iter().any(|v| v.id as u64 == id) {
            return Err(WriteError::Failed(format!(
                "node {id} is a voter, not an observer"
            )));
        }
        let known = {
            use openraft::async_runtime::WatchReceiver;
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            m.membership_config
                .membership()
                .get_node(&id)
                .map(|n| n.addr == addr)
        };
        if known == Some(true) {
            return Ok((0, Reply::default()));
        }
        self.raft
            .add_learner(id, BasicNode::new(addr), false)
            .await
            .map(|r| (r.log_id.index, Reply::default()))
            .map_err(|e| WriteError::Failed(e.to_string()))
    }

    /// An observer broker: asks the voters, in turn, until the active controller adds it as
    /// a learner.
    async fn join_as_learner(&self, stop: &AtomicBool) {
        let addr = self.config.controller_listen.clone().unwrap_or_default();
        let req = Request::AddLearner { id: self.id, addr };
        let mut target: Option<u64> = None;
        let mut next = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let to = target.or_else(|| self.leader()).unwrap_or_else(|| {
                next += 1;
                self.voters[next % self.voters.len()].id as u64
            });
            let Some(at) = self.addr_of(to) else {
                target = None;
                continue;
            };
            match Peer::new(at, self.source).call(&req, CALL_TTL).await {
                Ok(Response::Write(Ok(_))) => {
                    tracing::info!(node = self.id, "joined the metadata quorum as an observer");
                    return;
                }
                Ok(Response::Write(Err(WriteError::NotLeader(l)))) => target = l,
                Ok(Response::Write(Err(e))) => {
                    tracing::warn!("joining the quorum: {e}");
                    target = None;
                }
                _ => target = None,
            }
            glommio::timer::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A broker's heartbeat, on the active controller: remembered for fencing; a fenced
    /// broker with its current epoch is unfenced (in the background).
    fn heartbeat(&self, id: i32, epoch: u64) -> Result<bool, WriteError> {
        if !self.is_leader() {
            return Err(WriteError::NotLeader(self.leader()));
        }
        let known = self
            .sm
            .applied
            .borrow()
            .state
            .brokers
            .get(&id)
            .map(|b| (b.epoch, b.fenced));
        // Only registered brokers are remembered: a stray caller cannot grow the table.
        if known.is_some_and(|(e, _)| e == epoch) {
            self.last_seen
                .borrow_mut()
                .insert(id, (epoch, Instant::now()));
        }
        Ok(known == Some((epoch, true)))
    }

    /// The broker side: register (again after each start), then heartbeat to the active
    /// controller until the broker stops; unfences itself when the controller reports it
    /// fenced.
    pub fn spawn_membership(self: &Rc<Self>, stop: Arc<AtomicBool>) {
        let node = self.clone();
        glommio::spawn_local(async move {
            if !node.config.is_voter() {
                node.join_as_learner(&stop).await;
            }
            // Validated at start-up; the first listener carries the traffic between brokers.
            let listeners: Vec<(String, String, i32)> = crate::security::listeners(&node.config)
                .unwrap_or_default()
                .into_iter()
                .map(|l| (l.name, l.advertised.0, l.advertised.1))
                .collect();
            let (host, port) = listeners
                .first()
                .map_or_else(|| node.config.advertised(), |(_, h, p)| (h.clone(), *p));
            let register = Command::RegisterBroker {
                id: node.config.node_id,
                host,
                port,
                rack: node.config.broker_rack.clone(),
                shards: node.nr_shards as u32,
                listeners,
            };
            while node.epoch.get() == 0 && !stop.load(Ordering::Relaxed) {
                match node.write(register.clone()).await {
                    Ok((index, _)) => {
                        node.epoch.set(index);
                        tracing::info!(node = node.id, epoch = index, "broker registered");
                    }
                    Err(e) => {
                        tracing::warn!("registering with the controller: {e}");
                        glommio::timer::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            let interval = Duration::from_millis(node.config.broker_heartbeat_interval_ms);
            while !stop.load(Ordering::Relaxed) {
                let (id, epoch) = (node.config.node_id, node.epoch.get());
                let fenced = match node.leader() {
                    Some(l) if l == node.id => node.heartbeat(id, epoch),
                    Some(l) => match node.addr_of(l) {
                        Some(addr) => match Peer::new(addr, node.source)
                            .call(&Request::Heartbeat { id, epoch }, interval)
                            .await
                        {
                            Ok(Response::Heartbeat(r)) => r,
                            _ => Err(WriteError::NotLeader(None)),
                        },
                        None => Err(WriteError::NotLeader(None)),
                    },
                    None => Err(WriteError::NotLeader(None)),
                };
                if fenced == Ok(true) {
                    if let Err(e) = node.write(Command::UnfenceBroker { id, epoch }).await {
                        tracing::warn!("unfencing: {e}");
                    }
                }
                glommio::timer::sleep(interval).await;
            }
        })
        .detach();
    }

    /// The active controller's duties, checked every tick: fence brokers whose heartbeats
    /// stopped, give the cluster its id and its internal topics.
    pub fn spawn_controller_duties(self: &Rc<Self>, stop: Arc<AtomicBool>) {
        let node = self.clone();
        glommio::spawn_local(async move {
            while !stop.load(Ordering::Relaxed) {
                glommio::timer::sleep(LEADER_TICK).await;
                let term = {
                    use openraft::async_runtime::WatchReceiver;
                    node.raft.metrics().borrow_watched().current_term
                };
                if !node.is_leader() {
                    node.leading_since.set(None);
                    node.leading_term.set(None);
                    continue;
                }
                let since = match node.leading_since.get() {
                    Some(s) if node.leading_term.get() == Some(term) => s,
                    _ => {
                        // A new term of leadership gives every broker a full session to reach
                        // this controller before fencing anyone.
                        node.last_seen.borrow_mut().clear();
                        let now = Instant::now();
                        node.leading_since.set(Some(now));
                        node.leading_term.set(Some(term));
                        now
                    }
                };
                node.leader_tick(since).await;
            }
        })
        .detach();
    }

    async fn leader_tick(&self, since: Instant) {
        let state = self.state();
        if state.cluster_id.is_empty() {
            let cluster_id = image::random_hex(16);
            if let Err(e) = self.write_local(Command::InitCluster { cluster_id }).await {
                tracing::warn!("initializing the cluster id: {e}");
            }
            return;
        }
        let timeout = Duration::from_millis(self.config.broker_session_timeout_ms);
        let expired: Vec<(i32, u64)> = {
            let mut seen = self.last_seen.borrow_mut();
            let now = Instant::now();
            let mut out = Vec::new();
            for b in state.brokers.values().filter(|b| !b.fenced) {
                match seen.get(&b.id) {
                    Some(&(epoch, t)) if epoch == b.epoch => {
                        if t.elapsed() > timeout {
                            out.push((b.id, b.epoch));
                        }
                    }
                    // A registration this controller has not heard from yet (new, or new
                    // since it took over): its session starts now.
                    _ => {
                        seen.insert(b.id, (b.epoch, now));
                    }
                }
            }
            out
        };
        for (id, epoch) in expired {
            // Decided from this term's heartbeats: committed here or not at all (never
            // forwarded to a newer controller that saw heartbeats this one did not).
            if !self.is_leader() {
                return;
            }
            tracing::warn!(broker = id, "no heartbeat for {timeout:?}: fencing it");
            if let Err(e) = self.write_local(Command::FenceBroker { id, epoch }).await {
                tracing::warn!("fencing broker {id}: {e}");
            }
        }
        self.rebalance_leaders(&state).await;
        self.unclean_elections(&state).await;
        let missing: Vec<&str> = [OFFSETS_TOPIC, TXN_TOPIC]
            .into_iter()
            .filter(|t| !state.topics.contains_key(*t))
            .collect();
        let registered = state.live_brokers().count();
        let all_voters = self
            .voters
            .iter()
            .all(|v| state.brokers.get(&v.id).is_some_and(|b| !b.fenced));
        if !missing.is_empty()
            && registered > 0
            && (all_voters || since.elapsed() > INTERNAL_TOPICS_GRACE)
        {
            let topics = missing
                .into_iter()
                .map(|name| NewTopic {
                    name: name.to_string(),
                    id: image::random_hex(16),
                    partitions: if name == OFFSETS_TOPIC {
                        self.config.offsets_topic_partitions
                    } else {
                        self.config.transaction_state_partitions
                    },
                    replication_factor: {
                        let configured = if name == OFFSETS_TOPIC {
                            self.config.offsets_topic_replication_factor
                        } else {
                            self.config.transaction_state_replication_factor
                        };
                        if configured > 0 {
                            configured
                        } else {
                            registered.min(3) as i16
                        }
                    },
                    assignment: None,
                    configs: crate::metadata::internal_topic_configs(&self.config, name),
                })
                .collect();
            let cmd = Command::CreateTopics {
                topics,
                max_partitions: crate::metadata::MAX_PARTITIONS,
                max_topics: crate::metadata::MAX_TOPICS,
            };
            if let Err(e) = self.write_local(cmd).await {
                tracing::warn!("creating the internal topics: {e}");
            }
        }
    }

    /// Partitions without a leader whose in-sync replicas are all fenced, where unclean
    /// election is allowed (the topic's `unclean.leader.election.enable`, else the broker's
    /// dynamic or static one) and an out-of-sync replica is live: that replica
    /// leads, and what only the old ISR held is lost (Kafka's unclean election).
    async fn unclean_elections(&self, state: &ClusterState) {
        let live: std::collections::BTreeSet<i32> = state.live_brokers().map(|b| b.id).collect();
        let mut partitions = Vec::new();
        for (name, t) in &state.topics {
            // The topic's, else the dynamic broker config in force on this (the active
            // controller's) node, else its config file's.
            let allowed = crate::metadata::topic_config::topic_value(
                &state.broker_configs,
                self.config.node_id,
                &t.configs,
                "unclean.leader.election.enable",
            )
            .map_or(self.config.unclean_leader_election_enable, |v| v == "true");
            if !allowed {
                continue;
            }
            for (i, p) in t.partitions.iter().enumerate() {
                if p.leader == -1 && p.replicas.iter().any(|r| live.contains(r)) {
                    partitions.push((name.clone(), i as i32));
                }
            }
        }
        if partitions.is_empty() {
            return;
        }
        tracing::warn!(
            ?partitions,
            "unclean leader election: out-of-sync replicas lead; records only the old ISR held are lost"
        );
        let cmd = Command::ElectLeaders {
            unclean: true,
            partitions,
        };
        if let Err(e) = self.write_local(cmd).await {
            tracing::warn!("unclean leader election: {e}");
        }
    }

    /// Automatic preferred-leader election, every `leader_imbalance_check_interval_ms`.
    async fn rebalance_leaders(&self, state: &ClusterState) {
        if !self.config.auto_leader_rebalance_enable {
            return;
        }
        let every = Duration::from_millis(self.config.leader_imbalance_check_interval_ms);
        match self.last_rebalance.get() {
            Some(t) if t.elapsed() < every => return,
            _ => self.last_rebalance.set(Some(Instant::now())),
        }
        let partitions = state.preferred_imbalance();
        if partitions.is_empty() {
            return;
        }
        tracing::info!(
            partitions = partitions.len(),
            "moving leaders back to preferred replicas"
        );
        let cmd = Command::ElectLeaders {
            unclean: false,
            partitions,
        };
        if let Err(e) = self.write_local(cmd).await {
            tracing::warn!("preferred leader election: {e}");
        }
    }

    /// Calls `publish` with each new image: after every applied change and every change of
    /// the active controller. Also records the cluster id in the identity file once known.
    pub fn spawn_publisher<F, Fut>(self: &Rc<Self>, stop: Arc<AtomicBool>, publish: F)
    where
        F: Fn(ClusterMeta) -> Fut + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        let node = self.clone();
        glommio::spawn_local(async move {
            let mut changes = node.sm.subscribe();
            let mut last: Option<(u64, i32, bool)> = None;
            let mut identity_written = read_identity(&node.dir).ok().flatten().is_some();
            while !stop.load(Ordering::Relaxed) {
                let meta = node.image();
                let now = (meta.version, meta.controller_id, node.registered());
                if last != Some(now) {
                    if !identity_written && !meta.cluster_id.is_empty() {
                        identity_written = node.write_identity(&meta.cluster_id);
                    }
                    publish(meta).await;
                    last = Some(now);
                }
                // Woken by a change, or every 100 ms to see a new active controller.
                let _ = super::deadline(Duration::from_millis(100), changes.changed()).await;
            }
        })
        .detach();
    }

    fn write_identity(&self, cluster_id: &str) -> bool {
        let id = Identity {
            node_id: self.config.node_id,
            cluster_id: cluster_id.to_string(),
        };
        let bytes = serde_json::to_vec_pretty(&id).expect("identity serializes");
        match write_atomic(&self.dir, IDENTITY_FILE, &bytes) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("writing {}: {e}", self.dir.join(IDENTITY_FILE).display());
                false
            }
        }
    }

    /// Controlled shutdown: this broker gives up its leaderships (fenced: clients see
    /// retriable errors and move), then the Raft member stops.
    pub async fn shutdown(&self) {
        let epoch = self.epoch.get();
        if epoch > 0 {
            let cmd = Command::FenceBroker {
                id: self.config.node_id,
                epoch,
            };
            // With no active controller in sight (the rest of the cluster is down or
            // unreachable) nothing can be committed: do not wait for it.
            let seen = Instant::now();
            while self.leader().is_none() && seen.elapsed() < SHUTDOWN_LEADER_WAIT {
                glommio::timer::sleep(Duration::from_millis(20)).await;
            }
            if self.leader().is_none() {
                tracing::warn!(
                    "controlled shutdown: no active controller, leaderships not released"
                );
                if let Err(e) = self.raft.shutdown().await {
                    tracing::warn!("stopping the quorum member: {e}");
                }
                return;
            }
            match super::deadline(SHUTDOWN_FENCE_DEADLINE, self.write(cmd)).await {
                Ok(Ok(_)) => tracing::info!("controlled shutdown: leaderships released"),
                Ok(Err(e)) => tracing::warn!("controlled shutdown: {e}"),
                Err(e) => tracing::warn!("controlled shutdown: {e}"),
            }
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("stopping the quorum member: {e}");
        }
    }
}
