//! The Raft state machine: the cluster metadata (`ClusterState`) with the log position it
//! reflects, and its snapshots on disk.
//!
//! A snapshot is the whole state as JSON, written atomically (tmp, fsync, rename, fsync the
//! directory) before openraft is told it exists; openraft then purges the log before it. On
//! start the state is rebuilt from the snapshot and the committed entries after it
//! (`recover`), so a node serves its last committed metadata before it reaches any peer.

use super::state::{ClusterState, Reply};
use super::{Entry, LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig};
use futures_lite::StreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

pub const SNAPSHOT_FILE: &str = "snapshot.json";

/// What a snapshot holds: the state and where in the log it stands.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Applied {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub state: ClusterState,
}

impl Applied {
    /// Applies one committed entry; the reply for a normal one.
    pub fn apply_entry(&mut self, entry: &Entry) -> Reply {
        self.last_applied = Some(entry.log_id);
        match &entry.payload {
            EntryPayload::Blank => {
                self.state.applied_index = entry.log_id.index;
                Reply::default()
            }
            EntryPayload::Normal(cmd) => self.state.apply(entry.log_id.index, cmd),
            EntryPayload::Membership(m) => {
                self.last_membership = StoredMembership::new(Some(entry.log_id), m.clone());
                self.state.applied_index = entry.log_id.index;
                Reply::default()
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

pub struct StateMachineStore {
    dir: PathBuf,
    pub applied: RefCell<Applied>,
    snapshot: RefCell<Option<StoredSnapshot>>,
    /// Told the applied index after every batch: the image publisher waits on it.
    changed: tokio::sync::watch::Sender<u64>,
}

impl StateMachineStore {
    /// The store over `dir`, starting from `recovered` (see `recover`).
    pub fn new(dir: &Path, recovered: Applied) -> io::Result<Rc<StateMachineStore>> {
        let snapshot = match std::fs::read(dir.join(SNAPSHOT_FILE)) {
            Ok(b) => Some(serde_json::from_slice::<StoredSnapshot>(&b).map_err(bad_data)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let (changed, _) = tokio::sync::watch::channel(recovered.state.applied_index);
        Ok(Rc::new(StateMachineStore {
            dir: dir.to_path_buf(),
            applied: RefCell::new(recovered),
            snapshot: RefCell::new(snapshot),
            changed,
        }))
    }

    /// Wakes when the applied index moves.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The current state (a copy).
    pub fn state(&self) -> ClusterState {
        self.applied.borrow().state.clone()
    }

    /// Writes the snapshot durably, off the shard thread (its fsyncs must not stall Raft's
    /// heartbeats or the shard's clients).
    async fn save_snapshot(&self, s: &StoredSnapshot) -> io::Result<()> {
        let bytes = serde_json::to_vec(s).map_err(io::Error::other)?;
        let dir = self.dir.clone();
        glommio::executor()
            .spawn_blocking(move || write_atomic(&dir, SNAPSHOT_FILE, &bytes))
            .await
    }
}

fn bad_data(e: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Writes `dir/name` so that a crash leaves the old file or the new one, never a torn one.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The state a node starts from: its snapshot, then every committed entry after it.
pub fn recover(dir: &Path, committed_after_snapshot: &[Entry]) -> io::Result<Applied> {
    let mut applied = match std::fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(b) => {
            let s: StoredSnapshot = serde_json::from_slice(&b).map_err(bad_data)?;
            serde_json::from_slice::<Applied>(&s.data).map_err(bad_data)?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Applied::default(),
        Err(e) => return Err(e),
    };
    let next = applied.last_applied.map_or(0, |l| l.index + 1);
    if let Some(first) = committed_after_snapshot.first() {
        if first.log_id.index > next {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the metadata log starts at index {} but the snapshot ends before {next}: {} is missing or older than the log",
                    first.log_id.index, SNAPSHOT_FILE
                ),
            ));
        }
    }
    for e in committed_after_snapshot {
        if applied
            .last_applied
            .is_none_or(|l| e.log_id.index > l.index)
        {
            applied.apply_entry(e);
        }
    }
    Ok(applied)
}

impl RaftSnapshotBuilder<TypeConfig> for Rc<StateMachineStore> {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let (data, meta) = {
            let a = self.applied.borrow();
            let data = serde_json::to_vec(&*a).map_err(io::Error::other)?;
            let meta = SnapshotMeta {
                last_log_id: a.last_applied,
                last_membership: a.last_membership.clone(),
            };
            (data, meta)
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        self.save_snapshot(&stored).await?;
        *self.snapshot.borrow_mut() = Some(stored);
        Ok(Snapshot {
            meta,
            snapshot: std::io::Cursor::new(data),
        })
    }
}

impl RaftStateMachine<TypeConfig> for Rc<StateMachineStore> {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let a = self.applied.borrow();
        Ok((a.last_applied, a.last_membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_lite::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some(next) = entries.next().await {
            let (entry, responder) = next?;
            let reply = self.applied.borrow_mut().apply_entry(&entry);
            if let Some(r) = responder {
                r.send(reply);
            }
        }
        let index = self.applied.borrow().state.applied_index;
        self.changed.send_replace(index);
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let applied: Applied = serde_json::from_slice(&data).map_err(bad_data)?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.save_snapshot(&stored).await?;
        let index = applied.state.applied_index;
        *self.applied.borrow_mut() = applied;
        *self.snapshot.borrow_mut() = Some(stored);
        self.changed.send_replace(index);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self.snapshot.borrow().as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: std::io::Cursor::new(s.data.clone()),
        }))
    }
}
