//! The start-up load: a clustered node becomes ready only once it holds its peers' ephemeral
//! data, or knows there is none to hold (rule S1 in the [`crate::distro`] module doc).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::store::ServiceRecord;
use super::{wire, Distro};
use crate::peer::PeerError;

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
                let got = c
                    .client
                    .get_json::<Vec<ServiceRecord>>(
                        &peer,
                        wire::SNAPSHOT_PATH,
                        c.settings.snapshot_timeout,
                    )
                    .await;
                match got {
                    Ok(records) => {
                        let n = records.len();
                        let applied = self.apply_remote(records, now_ms()).changed.len();
                        tracing::info!(peer = %peer, services = n, applied, "loaded distro snapshot");
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
