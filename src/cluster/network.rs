//! The quorum's wire: Raft's RPCs between controllers, and the brokers' calls to the active
//! controller (forwarded metadata writes, heartbeats), over TCP on `controller_listen`.
//!
//! A frame is a 4-byte big-endian length and a JSON body. Metadata traffic is small and rare
//! next to the data path, so readability wins over compactness here. Every call has a deadline,
//! so a partitioned peer costs a timeout, never a hang.

use super::state::{Command, Reply};
use super::{Snapshot, SnapshotData, SnapshotMeta, TypeConfig, Vote};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, RaftNetworkFactory};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;

/// Largest frame accepted: a snapshot of a large cluster's metadata fits with room.
pub const MAX_FRAME: usize = 256 << 20;
/// Connecting to a peer that does not answer gives up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A call to a controller.
#[derive(Serialize, Deserialize)]
pub enum Request {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: Vec<u8>,
    },
    /// A metadata change, for the active controller to commit.
    Write {
        cluster_id: String,
        cmd: Command,
    },
    /// A broker is alive (sent to the active controller).
    Heartbeat {
        id: i32,
        epoch: u64,
    },
    /// An observer broker asks to follow the metadata log (as a Raft learner).
    AddLearner {
        id: u64,
        addr: String,
    },
}

/// The answer to a `Request`; errors travel as text (the caller retries or gives up).
#[derive(Serialize, Deserialize)]
pub enum Response {
    Append(Result<AppendEntriesResponse<TypeConfig>, String>),
    Vote(Result<VoteResponse<TypeConfig>, String>),
    Snapshot(Result<SnapshotResponse<TypeConfig>, String>),
    /// The log index the write committed at and what applying it answered.
    Write(Result<(u64, Reply), WriteError>),
    /// Whether the controller knows the broker as fenced.
    Heartbeat(Result<bool, WriteError>),
}

/// Why a write or heartbeat was not taken.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum WriteError {
    /// This controller does not lead the quorum; the leader's id when known.
    NotLeader(Option<u64>),
    /// The caller belongs to another cluster.
    WrongCluster(String),
    Failed(String),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::NotLeader(Some(l)) => write!(f, "not the active controller (node {l} is)"),
            WriteError::NotLeader(None) => write!(f, "no active controller yet"),
            WriteError::WrongCluster(c) => write!(f, "this controller belongs to cluster {c}"),
            WriteError::Failed(m) => write!(f, "{m}"),
        }
    }
}

/// Writes one frame.
pub async fn write_frame<T: Serialize>(s: &mut TcpStream, msg: &T) -> std::io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    s.write_all(&frame).await?;
    s.flush().await
}

/// Reads one frame; None at a clean end of stream.
pub async fn read_frame<T: DeserializeOwned>(s: &mut TcpStream) -> std::io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("controller frame of {n} bytes is larger than {MAX_FRAME}"),
        ));
    }
    // Grown as bytes arrive: a length prefix alone never allocates the frame.
    let mut body = Vec::new();
    (&mut *s).take(n as u64).read_to_end(&mut body).await?;
    if body.len() != n {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "controller connection closed inside a frame",
        ));
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Connects to `addr` from `source` (bind, then a connect with a deadline, off the shard
/// thread: a peer behind a dropping firewall must not stall the executor).
pub async fn connect_from(
    addr: &str,
    source: Option<std::net::IpAddr>,
) -> std::io::Result<TcpStream> {
    use std::net::ToSocketAddrs;
    let to = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{addr} resolves to nothing")))?;
    let socket = glommio::executor()
        .spawn_blocking(move || -> std::io::Result<socket2::Socket> {
            let domain = socket2::Domain::for_address(to);
            let s = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
            if let Some(ip) = source.filter(|ip| !ip.is_unspecified()) {
                s.bind(&std::net::SocketAddr::new(ip, 0).into())?;
            }
            s.connect_timeout(&to.into(), CONNECT_TIMEOUT)?;
            s.set_nonblocking(true)?;
            s.set_nodelay(true)?;
            Ok(s)
        })
        .await
        .map_err(|e| std::io::Error::other(format!("connect {addr}: {e}")))?;
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: the descriptor comes from `into_raw_fd`, so this stream is its only owner.
    Ok(unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) })
}

/// A connection to one controller, reconnected after any failure.
pub struct Peer {
    addr: String,
    /// The local address connections leave from: this node's controller address, so peers
    /// (and firewalls) see quorum traffic come from the address the voter list names.
    source: Option<std::net::IpAddr>,
    stream: Option<TcpStream>,
}

impl Peer {
    pub fn new(addr: String, source: Option<std::net::IpAddr>) -> Peer {
        Peer {
            addr,
            source,
            stream: None,
        }
    }

    /// One call with a deadline; the connection is dropped on any failure so the next call
    /// starts clean.
    pub async fn call(&mut self, req: &Request, ttl: Duration) -> std::io::Result<Response> {
        let r = super::deadline(ttl, async {
            if self.stream.is_none() {
                self.stream = Some(connect_from(&self.addr, self.source).await?);
            }
            let s = self.stream.as_mut().expect("connected above");
            write_frame(s, req).await?;
            read_frame::<Response>(s).await?.ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "controller closed")
            })
        })
        .await
        .and_then(|r| r);
        if r.is_err() {
            self.stream = None;
        }
        r
    }
}

/// Opens Raft connections to the other voters, from this node's controller address.
pub struct Network {
    pub source: Option<std::net::IpAddr>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, _target: u64, node: &BasicNode) -> Peer {
        Peer::new(node.addr.clone(), self.source)
    }
}

fn unreachable(e: std::io::Error) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&e))
}

fn remote(m: String) -> RPCError<TypeConfig> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(m)))
}

fn unexpected() -> RPCError<TypeConfig> {
    remote("unexpected answer from a controller".into())
}

impl RaftNetworkV2<TypeConfig> for Peer {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(&Request::Append(rpc), option.hard_ttl())
            .await
            .map_err(unreachable)?
        {
            Response::Append(r) => r.map_err(remote),
            _ => Err(unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(&Request::Vote(rpc), option.hard_ttl())
            .await
            .map_err(unreachable)?
        {
            Response::Vote(r) => r.map_err(remote),
            _ => Err(unexpected()),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let req = Request::Snapshot {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        // A snapshot can be large: give it several times the RPC deadline.
        let ttl = option.hard_ttl().max(Duration::from_secs(10));
        match self.call(&req, ttl).await {
            Ok(Response::Snapshot(Ok(r))) => Ok(r),
            Ok(Response::Snapshot(Err(m))) => Err(StreamingError::Network(NetworkError::new(
                &std::io::Error::other(m),
            ))),
            Ok(_) => Err(StreamingError::Network(NetworkError::new(
                &std::io::Error::other("unexpected answer from a controller"),
            ))),
            Err(e) => Err(StreamingError::Unreachable(Unreachable::new(&e))),
        }
    }
}
