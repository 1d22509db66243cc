//! The SQLite-backed Raft log and state machine (openraft storage-v2).
//!
//! One file, `<data_dir>/nacre.db`, holds both halves so a node has exactly one thing to back
//! up and one fsync domain:
//! - the log (`raft_log`) and its bookkeeping (`raft_kv`: vote, committed, last purged id);
//! - the state machine: one row per persistent service, per namespace, per config and per
//!   config history entry (appended, never rewritten: a publish writes its config and one
//!   entry, not the whole history), plus `sm_kv` (the auth state, last applied id, last
//!   membership), all rewritten in the same transaction after each
//!   apply batch, so a crash never leaves a half-applied batch behind;
//! - the latest snapshot (`sm_snapshot`), kept for followers that fell behind the purged log.
//!
//! Every SQLite call runs on one dedicated thread that owns the connection; async callers send
//! it closures and await the answer, so no tokio worker ever blocks on disk. The in-memory
//! [`PersistentState`] is the read path: readers take the shared lock and never touch SQLite.
//! The connection holds the file exclusively (`locking_mode=EXCLUSIVE`): a second process on the
//! same data dir cannot open it.
//!
//! Durability: log writes, votes, purges and snapshots commit with `synchronous=FULL`. State
//! machine batches use `synchronous=NORMAL`: in WAL mode a later FULL commit syncs every earlier
//! frame, and the log entries they derive from stay on disk until a (FULL) snapshot covers them,
//! so losing a NORMAL commit to power loss only means re-applying. The commit index rides along
//! with the next append (see `PendingCommitted`). openraft 0.9 waits for each append's fsync
//! before it takes the next proposal, so concurrent writes are packed into shared entries one
//! level up, in [`super::propose`].

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::io::{self, Cursor};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nacre_ring::ServiceKey;
use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    BasicNode, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use parking_lot::{Mutex, RwLock, RwLockWriteGuard};
use rusqlite::{params, Connection, OptionalExtension};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::types::{Entry, NodeId, TypeConfig};
use crate::configs::{ConfigKey, ConfigRecord};
use crate::naming::model::Namespace;
use nacre_ring::wire::ConfigChange;

use crate::naming::persistent::{
    Command, CommandOutput, CommandResult, PersistentService, PersistentSnapshot, PersistentState,
};

/// File name of the database inside the data dir.
pub const DB_FILE: &str = "nacre.db";

/// Called with the services whose visible state changed and the configs whose record changed
/// (with their md5 and the log index it is current as of), after the change is applied (also
/// after a snapshot install). It runs on openraft's state
/// machine task: keep it quick and non-blocking (e.g. push to a bounded queue), or it delays
/// every later apply.
pub type ChangeCallback = Arc<dyn Fn(&[ServiceKey], &[ConfigChange]) + Send + Sync>;

/// The schema this code reads and writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS raft_log (
    idx   INTEGER PRIMARY KEY,
    term  INTEGER NOT NULL,
    entry TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS raft_kv (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sm_kv (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sm_service (
    namespace  TEXT NOT NULL,
    group_name TEXT NOT NULL,
    service    TEXT NOT NULL,
    data       TEXT NOT NULL,
    PRIMARY KEY (namespace, group_name, service)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sm_config (
    tenant     TEXT NOT NULL,
    group_name TEXT NOT NULL,
    data_id    TEXT NOT NULL,
    data       TEXT NOT NULL,
    PRIMARY KEY (tenant, group_name, data_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sm_config_history (
    nid        INTEGER PRIMARY KEY,
    tenant     TEXT NOT NULL,
    group_name TEXT NOT NULL,
    data_id    TEXT NOT NULL,
    data       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sm_config_history_key
    ON sm_config_history (tenant, group_name, data_id, nid);
CREATE TABLE IF NOT EXISTS sm_config_variant (
    tenant     TEXT NOT NULL,
    group_name TEXT NOT NULL,
    data_id    TEXT NOT NULL,
    data       TEXT NOT NULL,
    PRIMARY KEY (tenant, group_name, data_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sm_namespace (
    id   TEXT PRIMARY KEY,
    data TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sm_snapshot (
    slot INTEGER PRIMARY KEY CHECK (slot = 0),
    meta TEXT NOT NULL,
    data BLOB NOT NULL
);
";

const RAFT_KV: &str = "raft_kv";
const SM_KV: &str = "sm_kv";
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_PURGED: &str = "last_purged";
const KEY_APPLIED: &str = "last_applied";
const KEY_MEMBERSHIP: &str = "last_membership";
const KEY_AUTH: &str = "auth";

/// A failure of the SQLite layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite reported an error.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value did not (de)serialise.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// The file holds something this version cannot use.
    #[error("invalid stored data: {0}")]
    Invalid(String),
    /// The storage thread is gone (shut down or panicked).
    #[error("the storage thread has stopped")]
    Closed,
    /// The storage thread could not be started.
    #[error("cannot start the storage thread: {0}")]
    Spawn(#[from] io::Error),
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Handle to the thread that owns the SQLite connection. Cloning shares the thread; the thread
/// ends (closing the file) when the last handle is dropped.
#[derive(Clone)]
struct Db {
    tx: std::sync::mpsc::Sender<Job>,
    /// The commit index openraft reported and the storage thread has not written yet.
    committed: PendingCommitted,
}

/// A commit index waiting to be written (`Some(None)`: "nothing committed"). openraft reports
/// one after every commit; writing each in its own transaction cost as much as the appends. It
/// rides along with the next append instead, or is written alone after [`COMMITTED_IDLE`] of
/// no appends. A crash may lose the latest one: that is safe, openraft treats the stored commit
/// index as a lower bound and learns the rest from the leader (or, alone, by committing again).
#[derive(Clone, Default)]
struct PendingCommitted(Arc<Mutex<Option<Option<LogId<NodeId>>>>>);

impl PendingCommitted {
    /// openraft reported `committed`; it replaces any older one still waiting.
    fn report(&self, committed: Option<LogId<NodeId>>) {
        *self.0.lock() = Some(committed);
    }

    /// The one waiting, if any, without taking it.
    fn peek(&self) -> Option<Option<LogId<NodeId>>> {
        *self.0.lock()
    }

    /// Takes the one waiting, to write it.
    fn take(&self) -> Option<Option<LogId<NodeId>>> {
        self.0.lock().take()
    }

    /// Puts back one that could not be written, unless a newer one was reported meanwhile.
    fn put_back(&self, pending: Option<Option<LogId<NodeId>>>) {
        let mut slot = self.0.lock();
        if slot.is_none() {
            *slot = pending;
        }
    }
}

/// How long a reported commit index may wait for an append to carry it.
const COMMITTED_IDLE: Duration = Duration::from_millis(200);

impl Db {
    async fn open(path: PathBuf) -> Result<Self, DbError> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let committed = PendingCommitted::default();
        let pending = committed.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("nacre-sqlite".into())
            .spawn(move || {
                let mut conn = match open_connection(&path) {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                serve(&mut conn, &rx, &pending);
            })?;
        ready_rx.await.map_err(|_| DbError::Closed)??;
        Ok(Self { tx, committed })
    }

    /// Runs `f` on the storage thread and returns its answer.
    async fn call<R, F>(&self, f: F) -> Result<R, DbError>
    where
        F: FnOnce(&mut Connection) -> Result<R, DbError> + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        self.tx.send(job).map_err(|_| DbError::Closed)?;
        rx.await.map_err(|_| DbError::Closed)?
    }
}

/// The storage thread's loop: runs jobs in the order sent until every handle is gone.
fn serve(conn: &mut Connection, rx: &std::sync::mpsc::Receiver<Job>, committed: &PendingCommitted) {
    // The queue is unbounded but every caller awaits its answer, so it never holds more jobs
    // than there are concurrent openraft storage calls.
    while let Some(job) = next_job(conn, rx, committed) {
        job(conn);
    }
}

/// Waits for the next job; a commit index still pending is written alone once the queue has
/// stayed empty for [`COMMITTED_IDLE`], or when every handle is gone (then `None`).
fn next_job(
    conn: &mut Connection,
    rx: &std::sync::mpsc::Receiver<Job>,
    committed: &PendingCommitted,
) -> Option<Job> {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        let job = if committed.peek().is_none() {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(COMMITTED_IDLE)
        };
        match job {
            Ok(job) => return Some(job),
            Err(e) => {
                if let Some(pending) = committed.take() {
                    let written = relaxed(conn)
                        .map_err(DbError::from)
                        .and_then(|()| put_committed(conn, pending.as_ref()));
                    if let Err(e) = written {
                        tracing::warn!(error = %e, "cannot store the commit index");
                        committed.put_back(Some(pending));
                    }
                }
                if e == RecvTimeoutError::Disconnected {
                    return None;
                }
            }
        }
    }
}

/// Writes (or clears) the stored commit index.
fn put_committed(conn: &Connection, committed: Option<&LogId<NodeId>>) -> Result<(), DbError> {
    match committed {
        Some(id) => kv_put(conn, RAFT_KV, KEY_COMMITTED, id),
        None => {
            conn.execute("DELETE FROM raft_kv WHERE name = ?1", [KEY_COMMITTED])?;
            Ok(())
        }
    }
}

fn open_connection(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // One connection, one process: holding the file's locks for the connection's life spares
    // every transaction its lock calls and keeps the WAL index in memory (it must be set before
    // WAL mode is entered), and a second process opened on the same data dir fails to start
    // instead of writing the same Raft log.
    conn.execute_batch("PRAGMA locking_mode=EXCLUSIVE")?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(DbError::Invalid(format!(
            "cannot switch {} to WAL mode (got {mode})",
            path.display()
        )));
    }
    durable(&conn)?;
    // Checkpoint every 4,000 pages (16 MiB of WAL) instead of SQLite's 1,000: the hot pages
    // (config rows, the log's end) are rewritten many times between checkpoints and each
    // checkpoint copies only their last version. Measured on config publishes: ~8 % less CPU
    // per publish; a larger interval lengthened the checkpoint pauses (p99 20 ms).
    conn.execute_batch("PRAGMA wal_autocheckpoint=4000")?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(DbError::Invalid(format!(
            "{} has schema version {version}, newer than this build's {SCHEMA_VERSION}",
            path.display()
        )));
    }
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(&format!("PRAGMA user_version={SCHEMA_VERSION}"))?;
    Ok(conn)
}

/// Makes the next commits fsync (log, vote, purge, snapshot).
fn durable(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("PRAGMA synchronous=FULL")
}

/// Lets the next commits skip the fsync (state machine rows, commit index); see the module doc.
fn relaxed(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("PRAGMA synchronous=NORMAL")
}

fn kv_get<T: DeserializeOwned>(
    conn: &Connection,
    table: &str,
    name: &str,
) -> Result<Option<T>, DbError> {
    let text: Option<String> = conn
        .prepare_cached(&format!("SELECT value FROM {table} WHERE name = ?1"))?
        .query_row([name], |r| r.get(0))
        .optional()?;
    Ok(match text {
        Some(t) => Some(serde_json::from_str(&t)?),
        None => None,
    })
}

fn kv_put<T: Serialize>(
    conn: &Connection,
    table: &str,
    name: &str,
    value: &T,
) -> Result<(), DbError> {
    let text = serde_json::to_string(value)?;
    conn.prepare_cached(&format!(
        "INSERT INTO {table} (name, value) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET value = excluded.value"
    ))?
    .execute(params![name, text])?;
    Ok(())
}

/// SQLite integers are signed; Raft indexes beyond `i64::MAX` cannot occur in practice, so
/// clamping keeps range queries correct without a fallible conversion on every call.
fn sql_index(i: u64) -> i64 {
    i64::try_from(i).unwrap_or(i64::MAX)
}

/// Only the log id of a stored entry, so finding the last id skips decoding the payload's types.
#[derive(Deserialize)]
struct EntryHead {
    log_id: LogId<NodeId>,
}

/// The commit index as last reported by openraft (`save_committed`); shared for status reads.
#[derive(Debug, Default)]
pub struct CommitIndex(AtomicU64);

impl CommitIndex {
    /// The committed log index, if anything is committed.
    pub fn get(&self) -> Option<u64> {
        // Stored as index + 1 so that 0 can mean "nothing committed" (index 0 is a real entry).
        self.0.load(Ordering::Acquire).checked_sub(1)
    }

    fn set(&self, id: Option<&LogId<NodeId>>) {
        let v = id.map_or(0, |l| l.index.saturating_add(1));
        self.0.store(v, Ordering::Release);
    }
}

/// The Raft log half of the store. Cheap to clone; clones share the storage thread.
#[derive(Clone)]
pub struct LogStore {
    db: Db,
    committed: Arc<CommitIndex>,
    /// The newest entries, so reads right after an append skip SQLite (see [`super::tail`]).
    tail: Arc<Mutex<super::tail::Tail>>,
}

fn read_logs_err(e: DbError) -> StorageError<NodeId> {
    StorageIOError::read_logs(&e).into()
}

fn write_logs_err(e: DbError) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

fn read_entries(conn: &Connection, first: u64, last: u64) -> Result<Vec<Entry>, DbError> {
    if first > last {
        return Ok(Vec::new());
    }
    let mut stmt = conn
        .prepare_cached("SELECT entry FROM raft_log WHERE idx >= ?1 AND idx <= ?2 ORDER BY idx")?;
    let rows = stmt.query_map(params![sql_index(first), sql_index(last)], |r| {
        r.get::<_, String>(0)
    })?;
    let mut out = Vec::new();
    for row in rows {
        out.push(serde_json::from_str(&row?)?);
    }
    Ok(out)
}

/// Appends `entries` (and writes a pending commit index) in one durable transaction.
fn append_entries(
    conn: &mut Connection,
    entries: &[Entry],
    committed: Option<Option<LogId<NodeId>>>,
) -> Result<(), DbError> {
    durable(conn)?;
    let tx = conn.transaction()?;
    if let Some(c) = &committed {
        put_committed(&tx, c.as_ref())?;
    }
    {
        let mut stmt = tx.prepare_cached(
            "INSERT OR REPLACE INTO raft_log (idx, term, entry) VALUES (?1, ?2, ?3)",
        )?;
        for e in entries {
            let json = serde_json::to_string(e)?;
            stmt.execute(params![
                sql_index(e.log_id.index),
                sql_index(e.log_id.leader_id.term),
                json
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        let first = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let last = match range.end_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(0) => return Ok(Vec::new()),
            Bound::Excluded(x) => x - 1,
            Bound::Unbounded => u64::MAX,
        };
        if let Some(hit) = self.tail.lock().get(first, last) {
            return Ok(hit);
        }
        self.db
            .call(move |c| read_entries(c, first, last))
            .await
            .map_err(read_logs_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        self.db
            .call(|c| {
                let purged: Option<LogId<NodeId>> = kv_get(c, RAFT_KV, KEY_PURGED)?;
                let last: Option<String> = c
                    .prepare_cached("SELECT entry FROM raft_log ORDER BY idx DESC LIMIT 1")?
                    .query_row([], |r| r.get(0))
                    .optional()?;
                let last_log_id = match last {
                    Some(text) => Some(serde_json::from_str::<EntryHead>(&text)?.log_id),
                    None => purged,
                };
                Ok(LogState {
                    last_purged_log_id: purged,
                    last_log_id,
                })
            })
            .await
            .map_err(read_logs_err)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let vote = *vote;
        self.db
            .call(move |c| {
                durable(c)?;
                kv_put(c, RAFT_KV, KEY_VOTE, &vote)
            })
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.db
            .call(|c| kv_get(c, RAFT_KV, KEY_VOTE))
            .await
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Not written here: see `PendingCommitted`.
        self.committed.set(committed.as_ref());
        self.db.committed.report(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        if let Some(pending) = self.db.committed.peek() {
            return Ok(pending);
        }
        self.db
            .call(|c| kv_get(c, RAFT_KV, KEY_COMMITTED))
            .await
            .map_err(read_logs_err)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.tail.lock().append(&entries);
        let committed = self.db.committed.clone();
        self.db
            .call(move |c| {
                let pending = committed.take();
                let res = append_entries(c, &entries, pending);
                if res.is_err() {
                    committed.put_back(pending);
                }
                // Reported only after the commit: openraft counts these entries as durable
                // (towards the quorum) from this signal on.
                match &res {
                    Ok(()) => callback.log_io_completed(Ok(())),
                    Err(e) => callback.log_io_completed(Err(io::Error::other(e.to_string()))),
                }
                res
            })
            .await
            .map_err(write_logs_err)
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.tail.lock().truncate(log_id.index);
        self.db
            .call(move |c| {
                durable(c)?;
                c.execute(
                    "DELETE FROM raft_log WHERE idx >= ?1",
                    [sql_index(log_id.index)],
                )?;
                Ok(())
            })
            .await
            .map_err(write_logs_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.tail.lock().purge(log_id.index);
        self.db
            .call(move |c| {
                durable(c)?;
                let tx = c.transaction()?;
                kv_put(&tx, RAFT_KV, KEY_PURGED, &log_id)?;
                tx.execute(
                    "DELETE FROM raft_log WHERE idx <= ?1",
                    [sql_index(log_id.index)],
                )?;
                tx.commit()?;
                Ok(())
            })
            .await
            .map_err(write_logs_err)
    }
}

/// What the state machine has applied, kept beside the state under the same lock order
/// (state, then this) so a snapshot sees a matching pair.
#[derive(Debug, Clone, Default)]
struct Applied {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
}

struct SmShared {
    state: Arc<RwLock<PersistentState>>,
    applied: Mutex<Applied>,
    snapshots: Arc<SnapshotCounts>,
}

/// Snapshots this node built and installed since it started (a member too far behind the
/// leader's log is sent a snapshot instead of entries).
#[derive(Debug, Default)]
pub struct SnapshotCounts {
    /// Snapshots built from the local state (log compaction).
    pub built: std::sync::atomic::AtomicU64,
    /// Snapshots received from a leader and installed.
    pub installed: std::sync::atomic::AtomicU64,
}

/// The state machine half of the store.
pub struct StateMachine {
    db: Db,
    shared: Arc<SmShared>,
    on_change: ChangeCallback,
}

/// Builds snapshots from the in-memory state; runs concurrently with `apply`.
pub struct SnapshotBuilder {
    db: Db,
    shared: Arc<SmShared>,
}

/// The snapshot blob: self-describing, so a snapshot file can be inspected on its own.
#[derive(Serialize, Deserialize)]
struct SnapshotBlob {
    membership: StoredMembership<NodeId, BasicNode>,
    state: PersistentSnapshot,
}

/// The rows an apply batch rewrites: what its commands can modify.
#[derive(Default)]
struct Touched {
    services: BTreeSet<ServiceKey>,
    namespaces: BTreeSet<String>,
    auth: bool,
}

impl Touched {
    /// Notes what `cmd` can modify. `PersistentState::apply` must never touch anything outside
    /// what this names: only these rows are rewritten after the batch. A config command names
    /// its rows in its output instead (a batch delete learns its keys only as it applies).
    fn note(&mut self, cmd: &Command) {
        match cmd {
            Command::CreateService { key, .. }
            | Command::UpdateService { key, .. }
            | Command::UpdateCluster { key, .. }
            | Command::DeleteService { key, .. }
            | Command::PutInstance { key, .. }
            | Command::PatchInstance { key, .. }
            | Command::RemoveInstance { key, .. } => {
                self.services.insert(key.clone());
            }
            Command::CreateNamespace(ns) | Command::UpdateNamespace(ns) => {
                self.namespaces.insert(ns.id.clone());
            }
            Command::DeleteNamespace { id } => {
                self.namespaces.insert(id.clone());
            }
            Command::Auth(_) => self.auth = true,
            Command::Config(_) => {}
            Command::Batch(cmds) => cmds.iter().for_each(|c| self.note(c)),
        }
    }
}

/// The rows of one config after a batch: its current value (or none), the history entries
/// appended in the batch, and the oldest entry still kept (older rows are deleted).
struct ConfigRows {
    key: ConfigKey,
    current: Option<String>,
    /// The tag variants and the beta (`None`: there are none).
    variants: Option<String>,
    appended: Vec<(u64, String)>,
    oldest_kept: Option<u64>,
}

fn write_config(conn: &Connection, rows: &ConfigRows) -> Result<(), DbError> {
    let k = &rows.key;
    put_config_row(conn, "sm_config", k, rows.current.as_deref())?;
    put_config_row(conn, "sm_config_variant", k, rows.variants.as_deref())?;
    for (nid, json) in &rows.appended {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO sm_config_history (nid, tenant, group_name, data_id, data)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![*nid as i64, k.tenant, k.group, k.data_id, json])?;
    }
    conn.prepare_cached(
        "DELETE FROM sm_config_history
         WHERE tenant = ?1 AND group_name = ?2 AND data_id = ?3 AND nid < ?4",
    )?
    .execute(params![
        k.tenant,
        k.group,
        k.data_id,
        rows.oldest_kept.map_or(i64::MAX, |n| n as i64)
    ])?;
    Ok(())
}

/// Writes (`Some`) or deletes (`None`) the row of `key` in `table`, a per-config table keyed by
/// tenant, group and data id.
fn put_config_row(
    conn: &Connection,
    table: &str,
    k: &ConfigKey,
    data: Option<&str>,
) -> Result<(), DbError> {
    match data {
        Some(json) => {
            conn.prepare_cached(&format!(
                "INSERT OR REPLACE INTO {table} (tenant, group_name, data_id, data)
                 VALUES (?1, ?2, ?3, ?4)"
            ))?
            .execute(params![k.tenant, k.group, k.data_id, json])?;
        }
        None => {
            conn.prepare_cached(&format!(
                "DELETE FROM {table} WHERE tenant = ?1 AND group_name = ?2 AND data_id = ?3"
            ))?
            .execute(params![k.tenant, k.group, k.data_id])?;
        }
    }
    Ok(())
}

/// The rows of config `key` in `state`, with the history entries newer than `mark`.
fn config_rows(state: &PersistentState, key: &ConfigKey, mark: u64) -> Result<ConfigRows, DbError> {
    let record = state.configs().record(key);
    let current = record
        .and_then(|r| r.current.as_ref())
        .map(serde_json::to_string)
        .transpose()?;
    let variants = record
        .map(|r| &r.variants)
        .filter(|v| !v.is_empty())
        .map(serde_json::to_string)
        .transpose()?;
    let history = record.map(|r| &r.history);
    let appended = history
        .into_iter()
        .flatten()
        .filter(|h| h.nid > mark)
        .map(|h| Ok((h.nid, serde_json::to_string(h)?)))
        .collect::<Result<Vec<_>, DbError>>()?;
    Ok(ConfigRows {
        key: key.clone(),
        current,
        variants,
        appended,
        oldest_kept: history.and_then(|h| h.front()).map(|h| h.nid),
    })
}

fn upsert_service(conn: &Connection, key: &ServiceKey, data: Option<&str>) -> Result<(), DbError> {
    match data {
        Some(json) => {
            conn.prepare_cached(
                "INSERT OR REPLACE INTO sm_service (namespace, group_name, service, data)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![key.namespace, key.group, key.service, json])?;
        }
        None => {
            conn.prepare_cached(
                "DELETE FROM sm_service WHERE namespace = ?1 AND group_name = ?2 AND service = ?3",
            )?
            .execute(params![key.namespace, key.group, key.service])?;
        }
    }
    Ok(())
}

fn upsert_namespace(conn: &Connection, id: &str, data: Option<&str>) -> Result<(), DbError> {
    match data {
        Some(json) => {
            conn.prepare_cached("INSERT OR REPLACE INTO sm_namespace (id, data) VALUES (?1, ?2)")?
                .execute(params![id, json])?;
        }
        None => {
            conn.prepare_cached("DELETE FROM sm_namespace WHERE id = ?1")?
                .execute([id])?;
        }
    }
    Ok(())
}

fn put_applied(conn: &Connection, applied: &Applied) -> Result<(), DbError> {
    kv_put(conn, SM_KV, KEY_APPLIED, &applied.last_applied)?;
    kv_put(conn, SM_KV, KEY_MEMBERSHIP, &applied.membership)
}

/// The answers of one apply batch, the services and the configs it changed.
type BatchOutcome = (Vec<CommandResult>, Vec<ServiceKey>, Vec<ConfigChange>);

/// Applies a batch in memory, then persists the touched rows and the applied id in one
/// transaction. Runs on the storage thread.
fn apply_batch(
    conn: &mut Connection,
    shared: &SmShared,
    entries: Vec<Entry>,
) -> Result<BatchOutcome, DbError> {
    let mut results = Vec::with_capacity(entries.len());
    let mut changed = Vec::new();
    let mut touched = Touched::default();
    let mut configs = BTreeSet::new();

    let mut state = shared.state.write();
    let config_mark = state.configs().last_id();
    let applied = {
        let mut applied = shared.applied.lock();
        for entry in &entries {
            applied.last_applied = Some(entry.log_id);
            match &entry.payload {
                EntryPayload::Blank => results.push(Ok(CommandOutput::default())),
                EntryPayload::Normal(cmd) => {
                    touched.note(cmd);
                    let res = state.apply(cmd);
                    if let Ok(out) = &res {
                        changed.extend(out.changed.iter().cloned());
                        configs.extend(out.configs.iter().cloned());
                    }
                    results.push(res);
                }
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    results.push(Ok(CommandOutput::default()));
                }
            }
        }
        applied.clone()
    };
    // Serialise under a read lock so readers are not blocked while SQLite commits.
    let state = RwLockWriteGuard::downgrade(state);
    let Touched {
        services,
        namespaces,
        auth: auth_touched,
    } = touched;
    let mut service_rows = Vec::with_capacity(services.len());
    for key in services {
        let data = state.service(&key).map(serde_json::to_string).transpose()?;
        service_rows.push((key, data));
    }
    let mut namespace_rows = Vec::with_capacity(namespaces.len());
    for id in namespaces {
        let data = state
            .namespace(&id)
            .map(serde_json::to_string)
            .transpose()?;
        namespace_rows.push((id, data));
    }
    let config_rows = configs
        .iter()
        .map(|key| config_rows(&state, key, config_mark))
        .collect::<Result<Vec<_>, DbError>>()?;
    let revision = applied.last_applied.map_or(0, |l| l.index);
    let config_changes = config_changes(&state, configs, revision);
    // The auth state is small (users, roles, permissions): stored whole.
    let auth_row = auth_touched.then(|| state.auth().clone());
    drop(state);

    relaxed(conn)?;
    let tx = conn.transaction()?;
    for (key, data) in &service_rows {
        upsert_service(&tx, key, data.as_deref())?;
    }
    for (id, data) in &namespace_rows {
        upsert_namespace(&tx, id, data.as_deref())?;
    }
    for rows in &config_rows {
        write_config(&tx, rows)?;
    }
    if let Some(auth) = &auth_row {
        kv_put(&tx, SM_KV, KEY_AUTH, auth)?;
    }
    put_applied(&tx, &applied)?;
    tx.commit()?;
    Ok((results, changed, config_changes))
}

fn store_snapshot(
    conn: &Connection,
    meta: &SnapshotMeta<NodeId, BasicNode>,
    data: &[u8],
) -> Result<(), DbError> {
    let meta = serde_json::to_string(meta)?;
    conn.prepare_cached(
        "INSERT OR REPLACE INTO sm_snapshot (slot, meta, data) VALUES (0, ?1, ?2)",
    )?
    .execute(params![meta, data])?;
    Ok(())
}

/// Services whose stored value differs between two states (for change notification).
fn differing_services(old: &PersistentState, new: &PersistentState) -> Vec<ServiceKey> {
    let keys: BTreeSet<&ServiceKey> = old
        .services()
        .chain(new.services())
        .map(|(k, _)| k)
        .collect();
    keys.into_iter()
        .filter(|k| old.service(k) != new.service(k))
        .cloned()
        .collect()
}

/// Configs whose record differs between two states (for change notification).
/// What listeners and gateways are told of changed `keys`: their md5 in `state`, as of
/// `revision`.
fn config_changes(
    state: &PersistentState,
    keys: impl IntoIterator<Item = ConfigKey>,
    revision: u64,
) -> Vec<ConfigChange> {
    keys.into_iter()
        .map(|key| ConfigChange {
            md5: state.configs().md5(&key).to_string(),
            beta: state.configs().has_beta(&key),
            key,
            revision,
        })
        .collect()
}

fn differing_configs(old: &PersistentState, new: &PersistentState) -> Vec<ConfigKey> {
    let keys: BTreeSet<&ConfigKey> = old
        .configs()
        .records()
        .chain(new.configs().records())
        .map(|(k, _)| k)
        .collect();
    keys.into_iter()
        .filter(|k| old.configs().record(k) != new.configs().record(k))
        .cloned()
        .collect()
}

fn unix_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let shared = self.shared.clone();
        // Copy and serialize the state on the blocking pool, not on the storage thread: log
        // appends (and so every persistent write) queue on that thread, and a whole-state
        // serialization there stalled them. State and applied id are read together under
        // the state lock, which `apply_batch` holds while it moves both; any apply already
        // read here is committed to SQLite before the `store_snapshot` call below runs (the
        // storage thread runs calls in order).
        let (meta, data) = tokio::task::spawn_blocking(move || {
            let (state, applied) = {
                let st = shared.state.read();
                let applied = shared.applied.lock().clone();
                (st.to_snapshot(), applied)
            };
            let blob = SnapshotBlob {
                membership: applied.membership.clone(),
                state,
            };
            let data = serde_json::to_vec(&blob)?;
            let snapshot_id = match &applied.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, unix_millis()),
                None => format!("0-none-{}", unix_millis()),
            };
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership,
                snapshot_id,
            };
            Ok::<_, serde_json::Error>((meta, data))
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, &std::io::Error::other(e)))?
        .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let counts = self.shared.snapshots.clone();
        self.db
            .call(move |c| {
                durable(c)?;
                store_snapshot(c, &meta, &data)?;
                Ok(Snapshot {
                    meta,
                    snapshot: Box::new(Cursor::new(data)),
                })
            })
            .await
            .inspect(|_| {
                counts
                    .built
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            })
            .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let a = self.shared.applied.lock().clone();
        Ok((a.last_applied, a.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let shared = self.shared.clone();
        let (results, changed, configs) = self
            .db
            .call(move |c| apply_batch(c, &shared, entries))
            .await
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        if !changed.is_empty() || !configs.is_empty() {
            (self.on_change)(&changed, &configs);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            shared: self.shared.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let meta = meta.clone();
        let signature = meta.signature();
        let shared = self.shared.clone();
        let changed = self
            .db
            .call(move |c| {
                let blob: SnapshotBlob = serde_json::from_slice(&data)?;
                let new_state = PersistentState::from_snapshot(blob.state);
                let applied = Applied {
                    last_applied: meta.last_log_id,
                    membership: meta.last_membership.clone(),
                };
                durable(c)?;
                let tx = c.transaction()?;
                tx.execute("DELETE FROM sm_service", [])?;
                tx.execute("DELETE FROM sm_namespace", [])?;
                tx.execute("DELETE FROM sm_config", [])?;
                tx.execute("DELETE FROM sm_config_history", [])?;
                tx.execute("DELETE FROM sm_config_variant", [])?;
                for (key, _) in new_state.configs().records() {
                    write_config(&tx, &config_rows(&new_state, key, 0)?)?;
                }
                for (key, svc) in new_state.services() {
                    upsert_service(&tx, key, Some(&serde_json::to_string(svc)?))?;
                }
                for ns in new_state.namespaces() {
                    upsert_namespace(&tx, &ns.id, Some(&serde_json::to_string(ns)?))?;
                }
                kv_put(&tx, SM_KV, KEY_AUTH, new_state.auth())?;
                put_applied(&tx, &applied)?;
                store_snapshot(&tx, &meta, &data)?;
                tx.commit()?;

                let mut state = shared.state.write();
                let mut current = shared.applied.lock();
                let changed = differing_services(&state, &new_state);
                let configs = config_changes(
                    &new_state,
                    differing_configs(&state, &new_state),
                    meta.last_log_id.map_or(0, |l| l.index),
                );
                *state = new_state;
                *current = applied;
                Ok((changed, configs))
            })
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(signature), &e))?;
        self.shared
            .snapshots
            .installed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (changed, configs) = changed;
        if !changed.is_empty() || !configs.is_empty() {
            (self.on_change)(&changed, &configs);
        }
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        self.db
            .call(|c| {
                let row: Option<(String, Vec<u8>)> = c
                    .prepare_cached("SELECT meta, data FROM sm_snapshot WHERE slot = 0")?
                    .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                match row {
                    Some((meta, data)) => Ok(Some(Snapshot {
                        meta: serde_json::from_str(&meta)?,
                        snapshot: Box::new(Cursor::new(data)),
                    })),
                    None => Ok(None),
                }
            })
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}

/// An opened store: the two openraft halves plus the handles the node reads from.
pub struct SqliteStore {
    /// The log half, for `Raft::new`.
    pub log: LogStore,
    /// The state machine half, for `Raft::new`.
    pub state_machine: StateMachine,
    /// The applied state; readers lock it, only the state machine writes it.
    pub state: Arc<RwLock<PersistentState>>,
    /// The commit index last saved by openraft.
    pub commit_index: Arc<CommitIndex>,
    /// Snapshots built and installed.
    pub snapshots: Arc<SnapshotCounts>,
}

type Loaded = (PersistentState, Applied, Option<LogId<NodeId>>);

fn load_all(conn: &mut Connection) -> Result<Loaded, DbError> {
    let mut services = Vec::new();
    {
        let mut stmt =
            conn.prepare("SELECT namespace, group_name, service, data FROM sm_service")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                ServiceKey {
                    namespace: r.get(0)?,
                    group: r.get(1)?,
                    service: r.get(2)?,
                },
                r.get::<_, String>(3)?,
            ))
        })?;
        for row in rows {
            let (key, data) = row?;
            services.push((key, serde_json::from_str::<PersistentService>(&data)?));
        }
    }
    let mut namespaces = Vec::new();
    {
        let mut stmt = conn.prepare("SELECT data FROM sm_namespace")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        for row in rows {
            namespaces.push(serde_json::from_str::<Namespace>(&row?)?);
        }
    }
    let mut configs: std::collections::BTreeMap<ConfigKey, ConfigRecord> = Default::default();
    let config_key = |r: &rusqlite::Row<'_>| -> rusqlite::Result<ConfigKey> {
        Ok(ConfigKey {
            tenant: r.get(0)?,
            group: r.get(1)?,
            data_id: r.get(2)?,
        })
    };
    {
        let mut stmt = conn.prepare("SELECT tenant, group_name, data_id, data FROM sm_config")?;
        let rows = stmt.query_map([], |r| Ok((config_key(r)?, r.get::<_, String>(3)?)))?;
        for row in rows {
            let (key, data) = row?;
            configs.entry(key).or_default().current = Some(serde_json::from_str(&data)?);
        }
        let mut stmt = conn.prepare(
            "SELECT tenant, group_name, data_id, data FROM sm_config_history ORDER BY nid",
        )?;
        let rows = stmt.query_map([], |r| Ok((config_key(r)?, r.get::<_, String>(3)?)))?;
        for row in rows {
            let (key, data) = row?;
            configs
                .entry(key)
                .or_default()
                .history
                .push_back(serde_json::from_str(&data)?);
        }
        let mut stmt =
            conn.prepare("SELECT tenant, group_name, data_id, data FROM sm_config_variant")?;
        let rows = stmt.query_map([], |r| Ok((config_key(r)?, r.get::<_, String>(3)?)))?;
        for row in rows {
            let (key, data) = row?;
            configs.entry(key).or_default().variants = serde_json::from_str(&data)?;
        }
    }
    let configs: Vec<_> = configs.into_iter().collect();
    let state = PersistentState::from_snapshot(PersistentSnapshot {
        services,
        namespaces,
        auth: kv_get(conn, SM_KV, KEY_AUTH)?.unwrap_or_default(),
        configs,
    });
    let applied = Applied {
        last_applied: kv_get(conn, SM_KV, KEY_APPLIED)?.flatten(),
        membership: kv_get(conn, SM_KV, KEY_MEMBERSHIP)?.unwrap_or_default(),
    };
    let committed = kv_get(conn, RAFT_KV, KEY_COMMITTED)?;
    Ok((state, applied, committed))
}

/// Opens (creating if needed) the database at `path` and rebuilds the in-memory state from
/// its rows. `on_change` is called after every apply that changed services.
pub async fn open(path: &Path, on_change: ChangeCallback) -> Result<SqliteStore, DbError> {
    let db = Db::open(path.to_path_buf()).await?;
    let (state, applied, committed) = db.call(load_all).await?;
    let state = Arc::new(RwLock::new(state));
    let commit_index = Arc::new(CommitIndex::default());
    commit_index.set(committed.as_ref());
    let snapshots = Arc::new(SnapshotCounts::default());
    let shared = Arc::new(SmShared {
        state: state.clone(),
        applied: Mutex::new(applied),
        snapshots: snapshots.clone(),
    });
    Ok(SqliteStore {
        log: LogStore {
            db: db.clone(),
            committed: commit_index.clone(),
            tail: Arc::default(),
        },
        state_machine: StateMachine {
            db,
            shared,
            on_change,
        },
        state,
        commit_index,
        snapshots,
    })
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};
    use tempfile::TempDir;

    use super::*;

    struct SqliteBuilder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for SqliteBuilder {
        async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<NodeId>> {
            let dir = tempfile::tempdir().map_err(|e| StorageIOError::write(&e))?;
            let store = open(
                &dir.path().join(DB_FILE),
                Arc::new(|_: &[ServiceKey], _: &[ConfigChange]| {}),
            )
            .await
            .map_err(|e| StorageIOError::write(&e))?;
            Ok((dir, store.log, store.state_machine))
        }
    }

    /// A plain connection to a store's file once the store is dropped; its storage thread may
    /// still be closing the file (it holds the lock until then).
    fn raw(path: &Path) -> Connection {
        let c = Connection::open(path).unwrap();
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        c
    }

    /// openraft's conformance suite; must run outside a tokio runtime (it builds its own).
    #[test]
    fn openraft_storage_suite_passes() {
        Suite::test_all(SqliteBuilder).unwrap();
    }

    fn entry(term: u64, index: u64, cmd: Command) -> Entry {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(term, 0), index),
            payload: EntryPayload::Normal(cmd),
        }
    }

    fn ns(id: &str) -> Command {
        Command::CreateNamespace(Namespace {
            id: id.into(),
            show_name: id.into(),
            desc: String::new(),
        })
    }

    fn create(name: &str) -> Command {
        Command::CreateService {
            key: ServiceKey::new("public", "DEFAULT_GROUP", name),
            meta: Default::default(),
            exists_elsewhere: false,
        }
    }

    #[tokio::test]
    async fn applied_rows_survive_reopen_and_rejections_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let cb: ChangeCallback =
            Arc::new(move |k: &[ServiceKey], _: &[ConfigChange]| seen2.lock().extend_from_slice(k));
        {
            let mut s = open(&path, cb).await.unwrap();
            let res = s
                .state_machine
                .apply([
                    entry(1, 1, create("a")),
                    // Another create of "a", by a node that also holds it ephemerally.
                    entry(
                        1,
                        2,
                        Command::CreateService {
                            key: ServiceKey::new("public", "DEFAULT_GROUP", "a"),
                            meta: Default::default(),
                            exists_elsewhere: true,
                        },
                    ),
                    entry(1, 3, ns("dev")),
                    entry(1, 4, create("b")),
                    entry(
                        1,
                        5,
                        Command::DeleteService {
                            key: ServiceKey::new("public", "DEFAULT_GROUP", "b"),
                            exists_elsewhere: false,
                        },
                    ),
                ])
                .await
                .unwrap();
            assert!(res[0].is_ok());
            assert!(
                res[1].is_err(),
                "a conflicting create is a replicated rejection"
            );
            assert_eq!(seen.lock().len(), 3);
        }
        let mut s = open(&path, Arc::new(|_: &[ServiceKey], _: &[ConfigChange]| {}))
            .await
            .unwrap();
        let st = s.state.read().clone();
        assert!(st
            .service(&ServiceKey::new("public", "DEFAULT_GROUP", "a"))
            .is_some());
        assert!(st
            .service(&ServiceKey::new("public", "DEFAULT_GROUP", "b"))
            .is_none());
        assert!(st.namespace("dev").is_some());
        let (applied, _) = s.state_machine.applied_state().await.unwrap();
        assert_eq!(applied.map(|l| l.index), Some(5));
    }

    #[tokio::test]
    async fn installed_snapshot_replaces_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = open(
            &dir.path().join("a.db"),
            Arc::new(|_: &[ServiceKey], _: &[ConfigChange]| {}),
        )
        .await
        .unwrap();
        src.state_machine
            .apply([entry(1, 1, create("x")), entry(1, 2, ns("dev"))])
            .await
            .unwrap();
        let snap = src
            .state_machine
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();

        let path = dir.path().join("b.db");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        {
            let mut dst = open(
                &path,
                Arc::new(move |k: &[ServiceKey], _: &[ConfigChange]| {
                    seen2.lock().extend_from_slice(k)
                }),
            )
            .await
            .unwrap();
            dst.state_machine
                .apply([entry(1, 1, create("stale"))])
                .await
                .unwrap();
            dst.state_machine
                .install_snapshot(&snap.meta, snap.snapshot)
                .await
                .unwrap();
        }
        // "stale" removed and "x" added: both are reported as changed.
        assert_eq!(seen.lock().len(), 1 + 2);
        let dst = open(&path, Arc::new(|_: &[ServiceKey], _: &[ConfigChange]| {}))
            .await
            .unwrap();
        assert_eq!(*dst.state.read(), *src.state.read());
    }

    fn publish(data_id: &str, content: &str, t: u64) -> Command {
        Command::Config(crate::configs::ConfigCommand::Publish(
            crate::configs::Publish {
                key: ConfigKey::new(data_id, "G", None).unwrap(),
                content: content.into(),
                meta: Default::default(),
                time_ms: t,
                cas_md5: None,
                target: Default::default(),
            },
        ))
    }

    /// A config's tag variants and beta come back from their row, also once the config itself
    /// was deleted (rule C7), and a variant's removal removes the row.
    #[tokio::test]
    async fn config_variants_survive_reopen() {
        use crate::configs::model::{Reader, Target};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let variant = |content: &str, target: Target| match publish("v", content, 1) {
            Command::Config(crate::configs::ConfigCommand::Publish(p)) => Command::Config(
                crate::configs::ConfigCommand::Publish(crate::configs::Publish { target, ..p }),
            ),
            other => other,
        };
        let delete = |of: Target| {
            Command::Config(crate::configs::ConfigCommand::Delete {
                targets: vec![(ConfigKey::new("v", "G", None).unwrap(), None)],
                src_user: String::new(),
                src_ip: String::new(),
                time_ms: 9,
                of,
            })
        };
        let before = {
            let mut s = open(&path, Arc::new(|_: &[ServiceKey], _: &[ConfigChange]| {}))
                .await
                .unwrap();
            s.state_machine
                .apply([
                    entry(1, 1, publish("v", "main", 1)),
                    entry(1, 2, variant("gray", Target::Beta(vec!["10.1.1.1".into()]))),
                    entry(1, 3, variant("blue", Target::Tag("blue".into()))),
                    entry(1, 4, variant("red", Target::Tag("red".into()))),
                ])
                .await
                .unwrap();
            s.state_machine
                .apply([
                    entry(1, 5, delete(Target::Main)),
                    entry(1, 6, delete(Target::Tag("red".into()))),
                ])
                .await
                .unwrap();
            let st = s.state.read().clone();
            st
        };
        let s = open(&path, Arc::new(|_: &[ServiceKey], _: &[ConfigChange]| {}))
            .await
            .unwrap();
        assert_eq!(*s.state.read(), before);
        let key = ConfigKey::new("v", "G", None).unwrap();
        let beta_reader = Reader {
            ip: Some("10.1.1.1"),
            auto_tag: None,
        };
        assert_eq!(
            s.state.read().configs().md5_for(&key, beta_reader),
            crate::configs::md5_hex("gray")
        );
        assert!(s.state.read().configs().tag(&key, "red").is_none());
        assert!(s.state.read().configs().tag(&key, "blue").is_some());
        drop(s);
        let mut s = open(&path, Arc::new(|_: &[ServiceKey], _: &[ConfigChange]| {}))
            .await
            .unwrap();
        s.state_machine
            .apply([
                entry(1, 7, delete(Target::Beta(Vec::new()))),
                entry(1, 8, delete(Target::Tag("blue".into()))),
            ])
            .await
            .unwrap();
        drop(s);
        let rows: i64 = raw(&path)
            .query_row("SELECT count(*) FROM sm_config_variant", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0, "no variant left, no row left");
    }

    /// Configs and their history come back from their rows: each publish appended one history
    /// row, evicted entries' rows are gone, and a config deleted keeps its history.
    #[tokio::test]
    async fn config_rows_and_history_rows_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        let changed = Arc::new(Mutex::new(Vec::new()));
        let changed2 = changed.clone();
        let n = crate::configs::HISTORY_KEPT as u64 + 5;
        let before = {
            let mut s = open(
                &path,
                Arc::new(move |_: &[ServiceKey], c: &[ConfigChange]| {
                    changed2.lock().extend_from_slice(c)
                }),
            )
            .await
            .unwrap();
            // One batch per publish, as commits arrive.
            for i in 1..=n {
                s.state_machine
                    .apply([entry(1, i, publish("app", &format!("v{i}"), i))])
                    .await
                    .unwrap();
            }
            s.state_machine
                .apply([
                    entry(1, n + 1, publish("gone", "x", n + 1)),
                    entry(
                        1,
                        n + 2,
                        Command::Config(crate::configs::ConfigCommand::Delete {
                            targets: vec![(ConfigKey::new("gone", "G", None).unwrap(), None)],
                            src_user: String::new(),
                            src_ip: String::new(),
                            time_ms: n + 2,
                            of: Default::default(),
                        }),
                    ),
                ])
                .await
                .unwrap();
            let st = s.state.read().clone();
            st
        };
        assert_eq!(
            changed.lock().len() as u64,
            n + 1,
            "each batch reports its configs"
        );
        let last = changed.lock().last().cloned().unwrap();
        assert_eq!(
            (last.key.data_id.as_str(), last.md5.as_str(), last.revision),
            ("gone", "", n + 2),
            "a change carries the md5 after its batch and the batch's last log index"
        );
        assert_eq!(
            changed.lock()[0].md5,
            crate::configs::md5_hex("v1"),
            "a publish reports its content's md5"
        );
        let history_rows: i64 = raw(&path)
            .query_row("SELECT count(*) FROM sm_config_history", [], |r| r.get(0))
            .unwrap();
        assert_eq!(history_rows, crate::configs::HISTORY_KEPT as i64 + 2);
        let s = open(&path, Arc::new(|_: &[ServiceKey], _: &[ConfigChange]| {}))
            .await
            .unwrap();
        assert_eq!(*s.state.read(), before);
        let st = s.state.read();
        let app = ConfigKey::new("app", "G", None).unwrap();
        assert_eq!(st.configs().get(&app).unwrap().content, format!("v{n}"));
        let gone = st
            .configs()
            .record(&ConfigKey::new("gone", "G", None).unwrap())
            .unwrap();
        assert!(gone.current.is_none());
        assert_eq!(gone.history.len(), 2);
    }
}
