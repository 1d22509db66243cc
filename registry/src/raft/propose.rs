//! The leader's proposer: concurrent writes share Raft entries (application-level group commit).
//!
//! openraft 0.9 appends each proposed entry on its own and waits for that append's fsync before
//! it takes the next proposal, so N concurrent client writes cost N fsyncs in a row: a config
//! publish measured ~1,900/s with 32 clients, one fsync each. Proposals therefore go through one
//! task per node that packs them. Its rules:
//!
//! - **B1 (no wait when idle).** While fewer than [`MAX_IN_FLIGHT`] proposals are in flight,
//!   whatever is waiting is proposed at once, without waiting for more to arrive: an idle node
//!   adds no delay, and a lone write is its own entry as before.
//! - **B2 (together when busy).** Commands that arrive while the in-flight slots are full wait;
//!   when a slot frees, every waiting command (up to [`MAX_BATCH_COMMANDS`] and
//!   [`MAX_BATCH_BYTES`] of content) goes in one [`Command::Batch`] entry: one append, one
//!   fsync, one replication round for all of them. A command larger than the byte bound goes
//!   alone.
//! - **B3 (as if consecutive).** A batch applies its commands in order, each on the state the
//!   previous one left, each with its own result: a refused command (a CAS mismatch, a missing
//!   service) refuses only itself. So a batch is exactly the same commands in consecutive
//!   entries, and every rule of the state machine holds per command.
//! - **B4 (one index).** Every command of a batch is committed and applied at the batch entry's
//!   log index: waiting for that index (read-your-writes on a follower, the peers' apply wait)
//!   covers each of them.
//! - **B5 (errors reach everyone).** If the entry is not committed (not the leader, no quorum,
//!   shut down), every command in it gets that error, as a lone proposal would.
//! - **B6 (abandoned writes are not proposed).** A command whose caller stopped waiting before
//!   it was packed is dropped, so a write its client was told failed never commits later.
//! - **B7 (only where every member reads it).** A batch is a newer kind of log entry; during a
//!   rolling upgrade an older member could not read it and would stall replication. The
//!   proposer packs commands only while its gate ([`BatchGate`]: every configured member said
//!   in its ping answer that it reads them) is open; otherwise each command is its own entry.
//!
//! The task is owned by the store: it ends when the store's last handle drops or on
//! [`Proposer::shutdown`]; pending callers then get `Unavailable`.

use std::sync::Arc;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};

use super::types::Raft;
use crate::naming::persistent::{Command, CommandResult};

/// Proposals in flight at once. Two lets one batch be appended while the previous one is
/// applied or replicated; more would only make batches smaller (openraft appends one at a time).
pub const MAX_IN_FLIGHT: usize = 2;

/// Most commands in one batch entry.
pub const MAX_BATCH_COMMANDS: usize = 256;

/// Most content bytes (config contents) in one batch entry, so an entry stays small enough to
/// replicate in one request.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// A committed proposal as the proposer reports it: the command's own result and the index of
/// the entry that carried it.
pub type Proposed = Result<(CommandResult, u64), ProposeError>;

/// Why a proposal was not committed: what openraft said, for the caller to map.
#[derive(Debug, Clone)]
pub enum ProposeError {
    /// openraft refused or failed the write.
    Raft(
        Arc<
            openraft::error::RaftError<
                u64,
                openraft::error::ClientWriteError<u64, openraft::BasicNode>,
            >,
        >,
    ),
    /// The proposer has stopped (shutdown).
    Stopped,
    /// The batch at this index was applied but answered fewer results than it had commands
    /// (a broken state machine; never expected).
    Unanswered(u64),
}

/// Whether the proposer may pack commands into one entry (rule B7). Asked once per entry.
#[derive(Clone)]
pub struct BatchGate(Arc<dyn Fn() -> bool + Send + Sync>);

impl BatchGate {
    /// A gate asking `open`.
    pub fn new(open: impl Fn() -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(open))
    }

    fn is_open(&self) -> bool {
        (self.0)()
    }
}

impl Default for BatchGate {
    /// Always open: a node alone, or one whose members are all known to read batches.
    fn default() -> Self {
        Self::new(|| true)
    }
}

impl std::fmt::Debug for BatchGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BatchGate")
    }
}

struct Pending {
    cmd: Command,
    reply: oneshot::Sender<Proposed>,
}

/// Handle to the proposer task.
pub struct Proposer {
    tx: mpsc::UnboundedSender<Pending>,
    task: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Proposer {
    /// Starts the task proposing to `raft`, packing commands while `gate` is open.
    pub fn start(raft: Raft, gate: BatchGate) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(raft, rx, gate));
        Self {
            tx,
            task: parking_lot::Mutex::new(Some(task)),
        }
    }

    /// Proposes `cmd` and waits until it is committed and applied on this node (or refused).
    pub async fn propose(&self, cmd: Command) -> Proposed {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { cmd, reply })
            .map_err(|_| ProposeError::Stopped)?;
        rx.await.map_err(|_| ProposeError::Stopped)?
    }

    /// Stops the task; callers still waiting get [`ProposeError::Stopped`].
    pub fn shutdown(&self) {
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
    }
}

impl Drop for Proposer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Takes from `queue` the commands of the next entry (rule B2): at least one, then as many as
/// fit the bounds.
fn next_batch(queue: &mut std::collections::VecDeque<Pending>, max: usize) -> Vec<Pending> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    while let Some(p) = queue.front() {
        // Its caller gave up (its deadline passed while the queue waited): a write it was
        // told failed must not commit later.
        if p.reply.is_closed() {
            queue.pop_front();
            continue;
        }
        let w = p.cmd.weight();
        let full = batch.len() >= max || bytes + w > MAX_BATCH_BYTES;
        if !batch.is_empty() && full {
            break;
        }
        bytes += w;
        if let Some(p) = queue.pop_front() {
            batch.push(p);
        }
    }
    batch
}

/// Proposes one entry for `batch` and answers each caller (rules B3–B5).
async fn propose_batch(raft: Raft, batch: Vec<Pending>) {
    let (cmds, replies): (Vec<Command>, Vec<oneshot::Sender<Proposed>>) =
        batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
    // A lone command is its own entry, as before batching (rule B1); nothing left (every
    // caller gave up, rule B6) proposes nothing.
    let (entry, packed) = match <[Command; 1]>::try_from(cmds) {
        Ok([cmd]) => (cmd, false),
        Err(cmds) if cmds.is_empty() => return,
        Err(cmds) => (Command::Batch(cmds), true),
    };
    let resp = match raft.client_write(entry).await {
        Ok(resp) => resp,
        Err(e) => {
            let e = ProposeError::Raft(Arc::new(e));
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
            return;
        }
    };
    let index = resp.log_id.index;
    let mut results = match resp.data {
        Ok(out) if packed => out.batch.into_iter(),
        // A lone command's own result; a batch as a whole never fails (B3), should it, every
        // command shares the failure.
        data => vec![data; replies.len()].into_iter(),
    };
    for reply in replies {
        let _ = reply.send(match results.next() {
            Some(res) => Ok((res, index)),
            None => Err(ProposeError::Unanswered(index)),
        });
    }
}

async fn run(raft: Raft, mut rx: mpsc::UnboundedReceiver<Pending>, gate: BatchGate) {
    let mut queue = std::collections::VecDeque::new();
    let mut in_flight = FuturesUnordered::new();
    let mut open = true;
    loop {
        while in_flight.len() < MAX_IN_FLIGHT && !queue.is_empty() {
            let max = if gate.is_open() {
                MAX_BATCH_COMMANDS
            } else {
                1
            };
            in_flight.push(propose_batch(raft.clone(), next_batch(&mut queue, max)));
        }
        if !open && queue.is_empty() && in_flight.is_empty() {
            return;
        }
        tokio::select! {
            got = rx.recv(), if open => match got {
                Some(p) => {
                    queue.push_back(p);
                    // Take everything already waiting, so it is batched now rather than
                    // trickling into the slots one by one.
                    while let Ok(p) = rx.try_recv() {
                        queue.push_back(p);
                    }
                }
                None => open = false,
            },
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configs::model::{ConfigCommand, ConfigKey, ConfigMeta, Publish, Target};

    fn publish(bytes: usize) -> Command {
        Command::Config(ConfigCommand::Publish(Publish {
            key: ConfigKey::new("d", "g", None).expect("key"),
            content: "x".repeat(bytes),
            meta: ConfigMeta::default(),
            time_ms: 0,
            cas_md5: None,
            target: Target::Main,
        }))
    }

    /// A queued command and the receiver its caller waits on (kept, so it stays queued).
    fn pending(cmd: Command) -> (Pending, oneshot::Receiver<Proposed>) {
        let (reply, rx) = oneshot::channel();
        (Pending { cmd, reply }, rx)
    }

    #[test]
    fn b6_commands_whose_callers_left_are_dropped() {
        let (gone, rx) = oneshot::channel();
        drop(rx);
        let (kept, _rx) = oneshot::channel();
        let mut q: std::collections::VecDeque<_> = [
            Pending {
                cmd: publish(1),
                reply: gone,
            },
            Pending {
                cmd: publish(2),
                reply: kept,
            },
        ]
        .into();
        let batch = next_batch(&mut q, MAX_BATCH_COMMANDS);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].cmd, publish(2));
    }

    #[test]
    fn b2_batches_are_bounded_by_count_and_bytes() {
        let (mut q, _callers): (std::collections::VecDeque<_>, Vec<_>) = (0..MAX_BATCH_COMMANDS
            + 3)
            .map(|_| pending(publish(1)))
            .unzip();
        assert_eq!(
            next_batch(&mut q, MAX_BATCH_COMMANDS).len(),
            MAX_BATCH_COMMANDS
        );
        assert_eq!(next_batch(&mut q, MAX_BATCH_COMMANDS).len(), 3);
        assert!(next_batch(&mut q, MAX_BATCH_COMMANDS).is_empty());

        let half = MAX_BATCH_BYTES / 2;
        let (mut q, _callers): (std::collections::VecDeque<_>, Vec<_>) =
            [half, half, 1, MAX_BATCH_BYTES * 3, 1]
                .into_iter()
                .map(|b| pending(publish(b)))
                .unzip();
        assert_eq!(
            next_batch(&mut q, MAX_BATCH_COMMANDS).len(),
            2,
            "two halves fill one entry"
        );
        assert_eq!(
            next_batch(&mut q, MAX_BATCH_COMMANDS).len(),
            1,
            "the big one does not join the small one"
        );
        assert_eq!(
            next_batch(&mut q, MAX_BATCH_COMMANDS).len(),
            1,
            "an oversized command goes alone"
        );
        assert_eq!(next_batch(&mut q, MAX_BATCH_COMMANDS).len(), 1);
    }
}
