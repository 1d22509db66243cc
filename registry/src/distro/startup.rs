//! The start-up load: a clustered node becomes ready only once it holds its peers' ephemeral
//! data, or knows there is none to hold (rule S1 in the [`crate::distro`] module doc).

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::store::ServiceRecord;
use super::{wire, Distro};
use crate::peer::{PeerClient, PeerError};

/// What one peer answered to a snapshot request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// It gave its snapshot (applied here).
    Gave,
    /// It is starting too (503: its own load is not done).
    Loading,
    /// No answer, or an error.
    Unreachable,
}

/// Rule S1: a round of answers settles the start-up load when a loaded peer gave its data, or
/// when a majority of the expected members (this node included) answered and every one of
/// them is starting too: then the whole cluster is starting and there is nothing to load. A
/// failed lookup, timeouts, or a minority of starting peers settle nothing: the node retries
/// and stays out of every ring meanwhile.
pub fn settled(expected: usize, answers: &[Answer]) -> bool {
    if answers.contains(&Answer::Gave) {
        return true;
    }
    let starting = answers.iter().filter(|a| **a == Answer::Loading).count();
    (1 + starting) * 2 > expected.max(1)
}

/// Pause between two rounds of snapshot requests.
const RETRY: Duration = Duration::from_millis(500);

impl Distro {
    /// Loads the snapshot of the first loaded peer, retrying every `RETRY` (500 ms) until rule S1
    /// settles it (or `stop` fires); then marks the store loaded. Returns the services
    /// applied, `None` when stopped first.
    pub async fn load_snapshot(
        &self,
        now_ms: impl Fn() -> u64,
        stop: &CancellationToken,
    ) -> Option<usize> {
        let Some(c) = self.cluster() else {
            self.mark_loaded();
            return Some(0);
        };
        let mut last_round: Option<Vec<Answer>> = None;
        loop {
            let mut answers = Vec::new();
            for peer in self.membership().peers() {
                let began = Instant::now();
                match self.load_from(c, &peer, &now_ms).await {
                    Ok((services, applied)) => {
                        tracing::info!(
                            peer = %peer,
                            services,
                            applied,
                            ms = began.elapsed().as_millis() as u64,
                            "loaded distro snapshot"
                        );
                        self.mark_loaded();
                        return Some(applied);
                    }
                    Err(PeerError::Status { status: 503, .. }) => answers.push(Answer::Loading),
                    Err(e) => {
                        tracing::debug!(peer = %peer, error = %e, "no distro snapshot from peer");
                        answers.push(Answer::Unreachable);
                    }
                }
            }
            if settled(c.settings.expected_members, &answers) {
                tracing::info!(
                    peers_starting = answers.len(),
                    "no peer holds ephemeral data: the cluster is starting together"
                );
                self.mark_loaded();
                return Some(0);
            }
            if last_round.as_ref() != Some(&answers) {
                tracing::info!(answers = ?answers, expected = c.settings.expected_members, "start-up snapshot not loaded yet; this node stays out of the ring and retries");
                last_round = Some(answers);
            }
            tokio::select! {
                _ = stop.cancelled() => return None,
                _ = tokio::time::sleep(RETRY) => {}
            }
        }
    }
}

impl Distro {
    /// Fetches `peer`'s snapshot and merges it as it arrives: a body written line by line
    /// (rule S3) is cut into batches of whole lines as they come in, each decoded off the async
    /// workers and merged while the next arrives; any other body is read whole first. Returns
    /// (services received, services that changed here); an error if the body ended before the
    /// snapshot did.
    async fn load_from(
        &self,
        c: &super::DistroCluster,
        peer: &str,
        now_ms: &impl Fn() -> u64,
    ) -> Result<(usize, usize), PeerError> {
        let mut res = c
            .client
            .get_streamed(peer, wire::SNAPSHOT_PATH, c.settings.snapshot_timeout)
            .await?;
        let protocol = |message: String| PeerError::Protocol {
            addr: peer.to_string(),
            message,
        };
        if !res.headers().contains_key(wire::SNAPSHOT_LINES_HEADER) {
            let body = res
                .bytes()
                .await
                .map_err(|e| protocol(format!("snapshot body: {e}")))?;
            let records = joined(tokio::task::spawn_blocking(move || {
                serde_json::from_slice::<Vec<ServiceRecord>>(&body)
                    .map_err(|e| format!("bad snapshot: {e}"))
            }))
            .await
            .map_err(protocol)?;
            let n = records.len();
            return Ok((n, self.apply_batch(records, now_ms)));
        }
        let mut tally = Tally::default();
        // Whole lines go to the decoder; a line cut by the end of a piece waits for the next.
        let mut pending = bytes::BytesMut::new();
        // The batch being decoded. Should the body fail, an unfinished decode is left to end
        // on its own: a megabyte of work, never waited for.
        let mut decoding: Option<tokio::task::JoinHandle<Decoded>> = None;
        loop {
            let piece = PeerClient::next_piece(peer, &mut res).await?;
            let end = piece.is_none();
            if let Some(p) = piece {
                pending.extend_from_slice(&p);
            }
            let cut = if end {
                pending.len()
            } else {
                match pending.iter().rposition(|b| *b == b'\n') {
                    Some(at) if at + 1 >= DECODE_BATCH => at + 1,
                    _ => continue,
                }
            };
            let lines = pending.split_to(cut).freeze();
            // Merge the previous batch while this one is decoded.
            let next = tokio::task::spawn_blocking(move || decode_lines(&lines));
            if let Some(d) = decoding.replace(next) {
                tally.merge(self, joined(d).await.map_err(&protocol)?, now_ms);
            }
            if end {
                break;
            }
        }
        if let Some(d) = decoding {
            tally.merge(self, joined(d).await.map_err(&protocol)?, now_ms);
        }
        if !tally.complete {
            return Err(protocol("the snapshot ended early".into()));
        }
        Ok((tally.services, tally.applied))
    }

    /// Merges records a chunk at a time under the store's write lock, so a batch of a
    /// snapshot never holds it for long.
    fn apply_batch(&self, records: Vec<ServiceRecord>, now_ms: &impl Fn() -> u64) -> usize {
        let mut applied = 0;
        let mut rest = records.into_iter().peekable();
        while rest.peek().is_some() {
            let chunk: Vec<ServiceRecord> = rest.by_ref().take(APPLY_CHUNK).collect();
            applied += self.apply_remote(chunk, now_ms()).changed.len();
        }
        applied
    }
}

/// What a streamed snapshot brought so far.
#[derive(Debug, Default)]
struct Tally {
    services: usize,
    applied: usize,
    /// The closing line arrived.
    complete: bool,
}

impl Tally {
    fn merge(
        &mut self,
        distro: &Distro,
        (records, closes): (Vec<ServiceRecord>, bool),
        now_ms: &impl Fn() -> u64,
    ) {
        self.complete |= closes;
        self.services += records.len();
        self.applied += distro.apply_batch(records, now_ms);
    }
}

/// Records merged under one hold of the store's write lock while a snapshot is applied.
const APPLY_CHUNK: usize = 1_000;

/// Bytes of whole lines handed to the decoder at once.
const DECODE_BATCH: usize = 1 << 20;

/// A batch of snapshot records and whether it closed the snapshot, or why it could not be read.
type Decoded = Result<(Vec<ServiceRecord>, bool), String>;

/// Decodes the records in `lines` (a run of whole lines of a snapshot written line by line);
/// the flag tells whether the run closes the snapshot.
fn decode_lines(lines: &[u8]) -> Decoded {
    let mut records = Vec::new();
    let mut closes = false;
    for line in lines.split(|b| *b == b'\n') {
        let (record, ends) = wire::snapshot_record(line);
        closes |= ends;
        if let Some(r) = record {
            records
                .push(serde_json::from_slice(r).map_err(|e| format!("bad snapshot record: {e}"))?);
        }
    }
    Ok((records, closes))
}

/// The result of a decode run off the async workers.
async fn joined<T>(task: tokio::task::JoinHandle<Result<T, String>>) -> Result<T, String> {
    task.await.map_err(|e| e.to_string())?
}

#[cfg(test)]
mod tests {
    use super::Answer::{Gave, Loading, Unreachable};
    use super::*;

    #[test]
    fn s1_ready_only_with_the_peers_data_or_a_majority_starting_together() {
        assert!(settled(3, &[Gave, Unreachable]));
        assert!(settled(3, &[Unreachable, Gave]));
        assert!(
            settled(3, &[Loading, Loading]),
            "the whole cluster is starting"
        );
        assert!(
            settled(3, &[Loading, Unreachable]),
            "a majority is starting"
        );
        assert!(!settled(3, &[Unreachable, Unreachable]), "cut off: retry");
        assert!(!settled(
            5,
            &[Loading, Unreachable, Unreachable, Unreachable]
        ));
        assert!(settled(5, &[Loading, Loading, Unreachable, Unreachable]));
        // The first DNS / endpoint lookup failed: no peers known, but three expected.
        assert!(!settled(3, &[]));
        assert!(
            settled(1, &[]),
            "a one-member cluster has nobody to wait for"
        );
    }
}
