//! Wakes parked config listeners when configs change: the Raft apply bumps a version, every
//! parked listener on the node holds a receiver and re-compares its keys when it moves.
//! In-process signalling only; it knows nothing of HTTP.

use std::sync::Arc;

use tokio::sync::watch;

use super::ConfigKey;

/// The node's config change signal.
#[derive(Debug, Clone)]
pub struct ConfigWatch {
    tx: Arc<watch::Sender<u64>>,
}

impl Default for ConfigWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigWatch {
    /// A signal at version 0.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::channel(0).0),
        }
    }

    /// Records that `keys` changed (called by the Raft apply; cheap and non-blocking).
    pub fn changed(&self, keys: &[ConfigKey]) {
        if !keys.is_empty() {
            self.tx.send_modify(|v| *v += 1);
        }
    }

    /// A receiver that sees every later change. Subscribe before comparing md5s, so a change
    /// applied between the comparison and the wait still wakes the listener.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_after_subscribing_wakes_the_receiver() {
        let w = ConfigWatch::new();
        let mut rx = w.subscribe();
        w.changed(&[]);
        assert!(!rx.has_changed().unwrap(), "no keys, no wake");
        w.changed(&[ConfigKey::new("d", "G", None).unwrap()]);
        tokio::time::timeout(std::time::Duration::from_secs(1), rx.changed())
            .await
            .unwrap()
            .unwrap();
    }
}
