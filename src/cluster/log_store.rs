//! `LogStore`: the Raft log and vote on disk, openraft's `RaftLogStorage`.
//!
//! Two files in the store's directory, both made of records
//! `[u32 len][u32 crc32c][json]` (little endian; the CRC covers the length and the JSON, so a
//! torn length is caught too):
//! - `log`: one record per entry, in index order. An append is fsync'ed before openraft is told
//!   it is flushed; a crash mid-append leaves a torn tail, which `open` cuts off (only entries
//!   never acknowledged are lost). `truncate_after` cuts the file at the first removed record.
//! - `meta`: one record holding the vote, the committed log id and the last purged log id,
//!   replaced atomically (tmp file, fsync, rename, fsync the directory) before the call that
//!   changed it returns. A vote must be durable before it is answered.
//!
//! `purge` records the purged id in `meta` first, then forgets the prefix in memory; its records
//! stay in `log` (skipped on open) until they outweigh the live ones, when the live suffix is
//! copied to a new file that replaces the old one the same atomic way.
//!
//! All entries are also kept in memory (the metadata log is small and purged after snapshots),
//! so reads never touch the disk. The I/O is blocking `std::fs` on the shard thread, an
//! exception to the no-blocking-syscalls rule: the metadata log is tiny and written only on
//! elections and metadata changes, and synchronous code is easy to get right here.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::type_config::alias::{LogIdOf, VoteOf};
use openraft::{OptionalSend, RaftTypeConfig};
use serde::{Deserialize, Serialize};

const LOG_FILE: &str = "log";
const META_FILE: &str = "meta";
/// What a file being replaced is written as first; left over only by a crash, removed on open.
const TMP_SUFFIX: &str = ".tmp";

const RECORD_HEADER_BYTES: usize = 8;
/// The largest record accepted either way. Far above any metadata command or membership; it
/// bounds what a torn length field can make `open` believe, and what one entry can make us write.
pub const MAX_RECORD_BYTES: usize = 64 << 20;
/// Purged records are dropped from the file once they are at least this many bytes (and at least
/// as many as the live ones): below it the rewrite costs more than the dead bytes do.
const REWRITE_MIN_DEAD_BYTES: u64 = 1 << 20;

/// What `meta` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(bound = "")]
struct Meta<C: RaftTypeConfig> {
    vote: Option<VoteOf<C>>,
    committed: Option<LogIdOf<C>>,
    last_purged: Option<LogIdOf<C>>,
}

/// The state readers see: every live entry, and `meta` as on disk.
struct Shared<C: RaftTypeConfig> {
    entries: BTreeMap<u64, C::Entry>,
    meta: Meta<C>,
}

/// The Raft log and vote of one node, persisted under one directory. Owned by one shard.
pub struct LogStore<C: RaftTypeConfig> {
    dir: PathBuf,
    log: File,
    /// Where the next record goes: the end of the last good record.
    log_bytes: u64,
    /// Where each live entry's record starts in `log`, to cut the file at an index.
    offsets: BTreeMap<u64, u64>,
    shared: Rc<RefCell<Shared<C>>>,
    /// A write or fsync failed: what the disk holds is unknown until the store is reopened, so
    /// every later change is refused rather than built on it.
    failed: bool,
}

/// A reader over a `LogStore`'s entries and vote, for openraft's replication tasks.
pub struct LogReader<C: RaftTypeConfig> {
    shared: Rc<RefCell<Shared<C>>>,
}

impl<C: RaftTypeConfig> LogStore<C> {
    /// Opens the store in `dir`, creating the directory and empty files if missing. A torn tail
    /// of the log (a crash mid-append) is cut off. A record that is intact but does not decode,
    /// a hole in the entries, or a bad `meta` is an error: the store would otherwise forget
    /// acknowledged entries or a vote.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let created = !dir.exists();
        fs::create_dir_all(dir)?;
        if created {
            sync_dir(
                dir.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new(".")),
            )?;
        }
        for name in [LOG_FILE, META_FILE] {
            match fs::remove_file(tmp_path(dir, name)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }

        let meta = read_meta::<C>(dir)?;
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOG_FILE))?;
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut &log, &mut bytes)?;
        let scan = scan_log::<C>(&bytes, meta.last_purged.as_ref().map(|id| id.index()))?;
        if scan.valid_bytes < bytes.len() as u64 {
            tracing::warn!(
                dir = %dir.display(),
                kept_bytes = scan.valid_bytes,
                dropped_bytes = bytes.len() as u64 - scan.valid_bytes,
                "raft log: cutting a torn tail (a crash mid-append)"
            );
            log.set_len(scan.valid_bytes)?;
            log.sync_all()?;
        }
        // The log file's own directory entry, if this open created it.
        sync_dir(dir)?;

        Ok(Self {
            dir: dir.to_path_buf(),
            log,
            log_bytes: scan.valid_bytes,
            offsets: scan.offsets,
            shared: Rc::new(RefCell::new(Shared {
                entries: scan.entries,
                meta,
            })),
            failed: false,
        })
    }

    fn check_usable(&self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other(
                "raft log store: an earlier write failed; reopen the store",
            ));
        }
        Ok(())
    }

    /// Marks the store failed if `r` is an error: for results of writes to disk.
    fn written<T>(&mut self, r: io::Result<T>) -> io::Result<T> {
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    /// Makes `meta` durable, then visible.
    fn save_meta(&mut self, meta: Meta<C>) -> io::Result<()> {
        self.check_usable()?;
        let mut record = Vec::new();
        encode_record(&mut record, &meta)?;
        let r = replace_file(&self.dir, META_FILE, &record).map(drop);
        self.written(r)?;
        self.shared.borrow_mut().meta = meta;
        Ok(())
    }

    /// The index the next appended entry must have, if the log constrains it.
    fn next_index(&self) -> Option<u64> {
        let shared = self.shared.borrow();
        match shared.entries.last_key_value() {
            Some((&last, _)) => Some(last + 1),
            None => shared.meta.last_purged.as_ref().map(|id| id.index() + 1),
        }
    }

    fn append_durably(&mut self, entries: impl IntoIterator<Item = C::Entry>) -> io::Result<()> {
        self.check_usable()?;
        let mut next = self.next_index();
        let mut buf = Vec::new();
        let mut batch = Vec::new();
        for entry in entries {
            let index = entry.index();
            // openraft truncates before it overwrites: an append always continues the log.
            if let Some(expected) = next {
                assert_eq!(
                    index, expected,
                    "raft log append would leave a hole or overlap"
                );
            }
            next = Some(index + 1);
            let offset = self.log_bytes + buf.len() as u64;
            encode_record(&mut buf, &entry)?;
            batch.push((offset, entry));
        }
        if batch.is_empty() {
            return Ok(());
        }
        let r = self
            .log
            .write_all_at(&buf, self.log_bytes)
            .and_then(|()| self.log.sync_data());
        self.written(r)?;
        self.log_bytes += buf.len() as u64;
        let mut shared = self.shared.borrow_mut();
        for (offset, entry) in batch {
            self.offsets.insert(entry.index(), offset);
            shared.entries.insert(entry.index(), entry);
        }
        Ok(())
    }

    /// Replaces the log file with its records from byte `keep_from` on.
    fn rewrite_log(&mut self, keep_from: u64) -> io::Result<()> {
        let mut live = vec![0; (self.log_bytes - keep_from) as usize];
        self.log.read_exact_at(&mut live, keep_from)?;
        self.log = replace_file(&self.dir, LOG_FILE, &live)?;
        self.log_bytes -= keep_from;
        for offset in self.offsets.values_mut() {
            *offset -= keep_from;
        }
        Ok(())
    }
}

// `C::Entry: Clone`: openraft 0.10 no longer requires entries to be `Clone`, and reads hand out
// copies of the cached ones (openraft's own `Entry` is `Clone` when its payload is).
impl<C> RaftLogStorage<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone,
{
    type LogReader = LogReader<C>;

    async fn get_log_state(&mut self) -> io::Result<LogState<C>> {
        let shared = self.shared.borrow();
        let last_purged = shared.meta.last_purged.clone();
        let last_log_id = shared
            .entries
            .last_key_value()
            .map(|(_, e)| e.log_id())
            .or_else(|| last_purged.clone());
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogReader<C> {
        LogReader {
            shared: self.shared.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> io::Result<()> {
        let meta = Meta {
            vote: Some(vote.clone()),
            ..self.shared.borrow().meta.clone()
        };
        self.save_meta(meta)
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> io::Result<()> {
        let meta = Meta {
            committed,
            ..self.shared.borrow().meta.clone()
        };
        self.save_meta(meta)
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogIdOf<C>>> {
        Ok(self.shared.borrow().meta.committed.clone())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> io::Result<()>
    where
        I: IntoIterator<Item = C::Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Synchronous: the entries are on disk when this returns, so the callback fires now.
        match self.append_durably(entries) {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> io::Result<()> {
        self.check_usable()?;
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        let Some(&cut) = self.offsets.range(from..).next().map(|(_, offset)| offset) else {
            return Ok(());
        };
        let r = self.log.set_len(cut).and_then(|()| self.log.sync_all());
        self.written(r)?;
        self.log_bytes = cut;
        self.offsets.split_off(&from);
        self.shared.borrow_mut().entries.split_off(&from);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> io::Result<()> {
        let index = log_id.index();
        let meta = {
            let shared = self.shared.borrow();
            if shared
                .meta
                .last_purged
                .as_ref()
                .is_some_and(|p| p.index() >= index)
            {
                return Ok(());
            }
            Meta {
                last_purged: Some(log_id),
                ..shared.meta.clone()
            }
        };
        // Durable before anything is forgotten: a crash after this skips the prefix on open.
        self.save_meta(meta)?;
        let live = self.offsets.split_off(&(index + 1));
        self.offsets = live;
        {
            let mut shared = self.shared.borrow_mut();
            let live = shared.entries.split_off(&(index + 1));
            shared.entries = live;
        }
        let dead_bytes = self
            .offsets
            .values()
            .next()
            .copied()
            .unwrap_or(self.log_bytes);
        if dead_bytes >= REWRITE_MIN_DEAD_BYTES && dead_bytes >= self.log_bytes - dead_bytes {
            let r = self.rewrite_log(dead_bytes);
            self.written(r)?;
        }
        Ok(())
    }
}

impl<C> RaftLogReader<C> for LogStore<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<C::Entry>> {
        self.get_log_reader().await.try_get_log_entries(range).await
    }

    async fn read_vote(&mut self) -> io::Result<Option<VoteOf<C>>> {
        self.get_log_reader().await.read_vote().await
    }
}

impl<C> RaftLogReader<C> for LogReader<C>
where
    C: RaftTypeConfig,
    C::Entry: Clone,
{
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<C::Entry>> {
        Ok(entries_in(&self.shared.borrow().entries, range))
    }

    async fn read_vote(&mut self) -> io::Result<Option<VoteOf<C>>> {
        Ok(self.shared.borrow().meta.vote.clone())
    }
}

/// The entries in `range`; empty (not a panic, as `BTreeMap::range` would) for an inverted one.
fn entries_in<E: Clone>(entries: &BTreeMap<u64, E>, range: impl RangeBounds<u64>) -> Vec<E> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => match s.checked_add(1) {
            Some(s) => s,
            None => return Vec::new(),
        },
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => Bound::Included(e),
        Bound::Excluded(&e) => Bound::Excluded(e),
        Bound::Unbounded => Bound::Unbounded,
    };
    let empty = match end {
        Bound::Included(e) => e < start,
        Bound::Excluded(e) => e <= start,
        Bound::Unbounded => false,
    };
    if empty {
        return Vec::new();
    }
    entries
        .range((Bound::Included(start), end))
        .map(|(_, e)| e.clone())
        .collect()
}

/// Appends `value` to `out` as one record.
fn encode_record<T: Serialize>(out: &mut Vec<u8>, value: &T) -> io::Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER_BYTES]);
    serde_json::to_writer(&mut *out, value)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let json_bytes = out.len() - start - RECORD_HEADER_BYTES;
    if json_bytes > MAX_RECORD_BYTES {
        out.truncate(start);
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "raft log record of {json_bytes} bytes is over the {MAX_RECORD_BYTES}-byte limit"
            ),
        ));
    }
    let len = (json_bytes as u32).to_le_bytes();
    let crc = record_crc(len, &out[start + RECORD_HEADER_BYTES..]);
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + RECORD_HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
    // The pair of the check `decode_record` does on the way back in.
    debug_assert_eq!(
        decode_record(&out[start..]).map(|(_, n)| n),
        Some(out.len() - start)
    );
    Ok(())
}

/// The JSON of the record at the start of `buf` and the record's length, or `None` if it is torn
/// or damaged. An empty record is damaged too: it is what a zero-filled tail looks like.
fn decode_record(buf: &[u8]) -> Option<(&[u8], usize)> {
    let header = buf.get(..RECORD_HEADER_BYTES)?;
    let len: [u8; 4] = header[..4].try_into().ok()?;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let json_bytes = u32::from_le_bytes(len) as usize;
    if json_bytes == 0 || json_bytes > MAX_RECORD_BYTES {
        return None;
    }
    let json = buf.get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + json_bytes)?;
    (record_crc(len, json) == crc).then_some((json, RECORD_HEADER_BYTES + json_bytes))
}

fn record_crc(len: [u8; 4], json: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len), json)
}

fn invalid_data(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

struct Scan<C: RaftTypeConfig> {
    entries: BTreeMap<u64, C::Entry>,
    offsets: BTreeMap<u64, u64>,
    /// The end of the last good record.
    valid_bytes: u64,
}

/// Reads the log file's records up to the first torn one, skipping those `last_purged` covers.
fn scan_log<C: RaftTypeConfig>(bytes: &[u8], last_purged: Option<u64>) -> io::Result<Scan<C>> {
    let mut entries = BTreeMap::new();
    let mut offsets = BTreeMap::new();
    let mut pos = 0;
    let mut prev: Option<u64> = None;
    while let Some((json, record_bytes)) = decode_record(&bytes[pos..]) {
        let entry: C::Entry = serde_json::from_slice(json).map_err(|e| {
            invalid_data(format!(
                "raft log: record at byte {pos} is intact but does not decode: {e}"
            ))
        })?;
        let index = entry.index();
        // Appends continue the log and truncation cuts the file, so indexes only go up.
        if prev.is_some_and(|p| index <= p) {
            return Err(invalid_data(format!(
                "raft log: index {index} at byte {pos} follows index {prev:?}"
            )));
        }
        if last_purged.is_none_or(|p| index > p) {
            let expected = match entries.last_key_value() {
                Some((&last, _)) => Some(last + 1),
                None => last_purged.map(|p| p + 1),
            };
            if expected.is_some_and(|x| x != index) {
                return Err(invalid_data(format!(
                    "raft log: hole before index {index} (expected {expected:?})"
                )));
            }
            offsets.insert(index, pos as u64);
            entries.insert(index, entry);
        }
        prev = Some(index);
        pos += record_bytes;
    }
    Ok(Scan {
        entries,
        offsets,
        valid_bytes: pos as u64,
    })
}

fn read_meta<C: RaftTypeConfig>(dir: &Path) -> io::Result<Meta<C>> {
    let bytes = match fs::read(dir.join(META_FILE)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Meta::default()),
        Err(e) => return Err(e),
    };
    // Replaced atomically, so never torn: a bad one is damage, and guessing could forget a vote.
    match decode_record(&bytes) {
        Some((json, n)) if n == bytes.len() => serde_json::from_slice(json)
            .map_err(|e| invalid_data(format!("raft meta does not decode: {e}"))),
        _ => Err(invalid_data(format!(
            "raft meta in {} is damaged",
            dir.display()
        ))),
    }
}

fn tmp_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}{TMP_SUFFIX}"))
}

/// Atomically replaces `dir/name` with `bytes`: durable when this returns. Returns the new file,
/// open for reading and writing.
fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<File> {
    let tmp = tmp_path(dir, name);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)?;
    Ok(file)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::GlommioRuntime;
    use futures_lite::StreamExt;
    use openraft::async_runtime::AsyncRuntime;
    use openraft::storage::{
        EntryResponder, RaftLogStorageExt, RaftSnapshotBuilder, RaftStateMachine, Snapshot,
    };
    use openraft::testing::log::{StoreBuilder, Suite};
    use openraft::type_config::alias::{SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
    use openraft::vote::RaftLeaderIdExt;
    use openraft::{ErrorSubject, ErrorVerb, StorageError, StoredMembership};

    openraft::declare_raft_types!(
        /// The suite's needs: `D`/`R` Debug, `NodeId`/`Term` from u64, `Node: Default`.
        pub TestConfig: AsyncRuntime = GlommioRuntime
    );

    type C = TestConfig;

    /// The smallest state machine the storage suite accepts: what was applied, and the last
    /// membership; a snapshot is a copy of both.
    #[derive(Debug, Clone, Default)]
    struct SmState {
        last_applied: Option<LogIdOf<C>>,
        membership: StoredMembershipOf<C>,
    }

    #[derive(Default)]
    struct TestSm {
        state: SmState,
        current: Rc<RefCell<Option<SnapshotOf<C, SmState>>>>,
    }

    struct TestSnapshotBuilder {
        state: SmState,
        current: Rc<RefCell<Option<SnapshotOf<C, SmState>>>>,
    }

    impl RaftSnapshotBuilder<C> for TestSnapshotBuilder {
        type SnapshotData = SmState;

        async fn build_snapshot(&mut self) -> io::Result<SnapshotOf<C, SmState>> {
            let meta = SnapshotMetaOf::<C> {
                last_log_id: self.state.last_applied,
                last_membership: self.state.membership.clone(),
            };
            let snapshot = Snapshot {
                meta,
                snapshot: self.state.clone(),
            };
            *self.current.borrow_mut() = Some(snapshot.clone());
            Ok(snapshot)
        }
    }

    impl RaftStateMachine<C> for TestSm {
        type SnapshotData = SmState;
        type SnapshotBuilder = TestSnapshotBuilder;

        async fn applied_state(
            &mut self,
        ) -> io::Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>)> {
            Ok((self.state.last_applied, self.state.membership.clone()))
        }

        async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
        where
            Strm: futures_lite::Stream<Item = io::Result<EntryResponder<C>>> + Unpin + OptionalSend,
        {
            while let Some(item) = entries.next().await {
                let (entry, responder) = item?;
                let log_id = entry.log_id();
                if let Some(membership) = entry.get_membership() {
                    self.state.membership = StoredMembership::new(Some(log_id), membership);
                }
                self.state.last_applied = Some(log_id);
                if let Some(responder) = responder {
                    responder.send(String::new());
                }
            }
            Ok(())
        }

        async fn get_snapshot_builder(&mut self) -> TestSnapshotBuilder {
            TestSnapshotBuilder {
                state: self.state.clone(),
                current: self.current.clone(),
            }
        }

        async fn install_snapshot(
            &mut self,
            meta: &SnapshotMetaOf<C>,
            snapshot: SmState,
        ) -> io::Result<()> {
            self.state = snapshot.clone();
            *self.current.borrow_mut() = Some(Snapshot {
                meta: meta.clone(),
                snapshot,
            });
            Ok(())
        }

        async fn get_current_snapshot(&mut self) -> io::Result<Option<SnapshotOf<C, SmState>>> {
            Ok(self.current.borrow().clone())
        }
    }

    /// Each build gets a fresh temp dir, deleted when the suite drops the guard.
    struct Builder;

    impl StoreBuilder<C, LogStore<C>, TestSm, tempfile::TempDir> for Builder {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore<C>, TestSm), StorageError<C>> {
            let to_sto = |e| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Read, e);
            let dir = tempfile::tempdir().map_err(to_sto)?;
            let store = LogStore::open(dir.path()).map_err(to_sto)?;
            Ok((dir, store, TestSm::default()))
        }
    }

    #[test]
    fn openraft_storage_suite() {
        GlommioRuntime::run(async {
            Suite::<C, LogStore<C>, TestSm, Builder, tempfile::TempDir>::test_all(Builder)
                .await
                .expect("openraft's storage suite");
        });
    }

    fn log_id(term: u64, index: u64) -> LogIdOf<C> {
        LogIdOf::<C>::new(
            <C as RaftTypeConfig>::LeaderId::new_committed(term, 1),
            index,
        )
    }

    fn entry(term: u64, index: u64, data: &str) -> <C as RaftTypeConfig>::Entry {
        RaftEntry::new_normal(log_id(term, index), data.to_string())
    }

    fn indexes(entries: &[<C as RaftTypeConfig>::Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.index()).collect()
    }

    fn log_len(dir: &Path) -> u64 {
        fs::metadata(dir.join(LOG_FILE)).unwrap().len()
    }

    #[test]
    fn entries_vote_committed_and_purge_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        GlommioRuntime::run(async {
            let vote = VoteOf::<C>::new(3, 1);
            {
                let mut store = LogStore::<C>::open(dir.path()).unwrap();
                store
                    .blocking_append((0..10).map(|i| entry(1, i, "x")))
                    .await
                    .unwrap();
                store.save_vote(&vote).await.unwrap();
                store.save_committed(Some(log_id(1, 6))).await.unwrap();
                store.purge(log_id(1, 3)).await.unwrap();
                store.truncate_after(Some(log_id(1, 7))).await.unwrap();
            }
            let mut store = LogStore::<C>::open(dir.path()).unwrap();
            assert_eq!(store.read_vote().await.unwrap(), Some(vote));
            assert_eq!(store.read_committed().await.unwrap(), Some(log_id(1, 6)));
            let state = store.get_log_state().await.unwrap();
            assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
            assert_eq!(state.last_log_id, Some(log_id(1, 7)));
            let entries = store
                .get_log_reader()
                .await
                .try_get_log_entries(..)
                .await
                .unwrap();
            assert_eq!(indexes(&entries), (4..=7).collect::<Vec<_>>());

            // The log goes on from where it was cut, and that survives too.
            store.blocking_append([entry(2, 8, "y")]).await.unwrap();
            drop(store);
            let mut store = LogStore::<C>::open(dir.path()).unwrap();
            let entries = store.try_get_log_entries(..).await.unwrap();
            assert_eq!(indexes(&entries), (4..=8).collect::<Vec<_>>());
            assert_eq!(entries.last().unwrap().log_id(), log_id(2, 8));
        });
    }

    #[test]
    fn a_torn_tail_is_cut_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        GlommioRuntime::run(async {
            let mut store = LogStore::<C>::open(dir.path()).unwrap();
            store
                .blocking_append((0..3).map(|i| entry(1, i, "acked")))
                .await
                .unwrap();
            drop(store);
            let good_bytes = log_len(dir.path());

            // A crash mid-append: a fourth record written in part, then a zero-filled block.
            let mut record = Vec::new();
            encode_record(&mut record, &entry(1, 3, "never acked")).unwrap();
            let mut tail = record[..record.len() - 5].to_vec();
            tail.extend_from_slice(&[0; 512]);
            let file = OpenOptions::new()
                .append(true)
                .open(dir.path().join(LOG_FILE))
                .unwrap();
            (&file).write_all(&tail).unwrap();

            let mut store = LogStore::<C>::open(dir.path()).unwrap();
            assert_eq!(log_len(dir.path()), good_bytes);
            assert_eq!(
                indexes(&store.try_get_log_entries(..).await.unwrap()),
                vec![0, 1, 2]
            );
            store.blocking_append([entry(1, 3, "again")]).await.unwrap();
            drop(store);
            let mut store = LogStore::<C>::open(dir.path()).unwrap();
            assert_eq!(
                indexes(&store.try_get_log_entries(..).await.unwrap()),
                vec![0, 1, 2, 3]
            );
        });
    }

    #[test]
    fn a_zero_filled_log_is_a_torn_tail_not_an_error() {
        // What a crash can leave after the file grew but before its data landed.
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(LOG_FILE), [0; 64]).unwrap();
        let store = LogStore::<C>::open(dir.path()).unwrap();
        assert_eq!(store.log_bytes, 0);
        assert_eq!(log_len(dir.path()), 0);
    }

    #[test]
    fn an_intact_record_that_does_not_decode_is_an_error_not_a_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        encode_record(&mut bytes, &"not an entry").unwrap();
        fs::write(dir.path().join(LOG_FILE), &bytes).unwrap();
        let err = LogStore::<C>::open(dir.path()).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(log_len(dir.path()), bytes.len() as u64);
    }

    #[test]
    fn a_damaged_meta_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        GlommioRuntime::run(async {
            let mut store = LogStore::<C>::open(dir.path()).unwrap();
            store.save_vote(&VoteOf::<C>::new(1, 1)).await.unwrap();
        });
        let path = dir.path().join(META_FILE);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, bytes).unwrap();
        let err = LogStore::<C>::open(dir.path()).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_large_purged_prefix_is_rewritten_away() {
        let dir = tempfile::tempdir().unwrap();
        let big = "m".repeat(64 << 10);
        GlommioRuntime::run(async {
            let mut store = LogStore::<C>::open(dir.path()).unwrap();
            store
                .blocking_append((0..40).map(|i| entry(1, i, &big)))
                .await
                .unwrap();
            let before = log_len(dir.path());
            // A small purge leaves the file alone.
            store.purge(log_id(1, 2)).await.unwrap();
            assert_eq!(log_len(dir.path()), before);
            // Most of it: the live suffix is copied to a new file.
            store.purge(log_id(1, 29)).await.unwrap();
            let after = log_len(dir.path());
            assert!(after < before / 3, "{after} of {before} bytes left");
            store.blocking_append([entry(2, 40, "z")]).await.unwrap();
            store.truncate_after(Some(log_id(1, 38))).await.unwrap();
            drop(store);

            let mut store = LogStore::<C>::open(dir.path()).unwrap();
            let entries = store.try_get_log_entries(..).await.unwrap();
            assert_eq!(indexes(&entries), (30..=38).collect::<Vec<_>>());
            assert_eq!(
                store.get_log_state().await.unwrap().last_purged_log_id,
                Some(log_id(1, 29))
            );
            assert!(!tmp_path(dir.path(), LOG_FILE).exists());
        });
    }

    #[test]
    fn reads_of_inverted_ranges_are_empty() {
        let entries: BTreeMap<u64, u64> = (0..10).map(|i| (i, i)).collect();
        assert_eq!(
            entries_in(&entries, (Bound::Included(5), Bound::Excluded(3))),
            Vec::<u64>::new()
        );
        assert_eq!(entries_in(&entries, 3..3), Vec::<u64>::new());
        assert_eq!(entries_in(&entries, 3..=3), vec![3]);
        assert_eq!(
            entries_in(&entries, (Bound::Excluded(u64::MAX), Bound::Unbounded)),
            Vec::<u64>::new()
        );
        assert_eq!(entries_in(&entries, 8..), vec![8, 9]);
    }
}
