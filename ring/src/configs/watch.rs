//! Wakes parked config listeners when the configs they listen to change (rule C6 in
//! [`super`]). A parked listener registers an [`Interest`] in its keys; whoever learns of a
//! change (a node's Raft apply, a gateway's change feed) calls [`ConfigWatch::changed`] with
//! the changed keys, which wakes exactly the listeners of those keys (a publish must not wake
//! every listener: with a thousand parked listeners that was most of a node's CPU). In-process
//! signalling only; it knows nothing of HTTP.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::ConfigKey;

/// The node's parked listeners, by the keys they listen to.
#[derive(Debug, Clone, Default)]
pub struct ConfigWatch {
    waiters: Arc<Mutex<Waiters>>,
}

#[derive(Debug, Default)]
struct Waiters {
    next_id: u64,
    by_key: HashMap<ConfigKey, HashMap<u64, Arc<Notify>>>,
    /// Interests alive (parked listeners).
    parked: usize,
}

/// One listener's registration; dropping it (the listener answered) unregisters it.
#[derive(Debug)]
pub struct Interest {
    waiters: Arc<Mutex<Waiters>>,
    id: u64,
    keys: Vec<ConfigKey>,
    notify: Arc<Notify>,
}

impl ConfigWatch {
    /// No listener yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes the listeners of `keys` (quick and non-blocking).
    pub fn changed<'a>(&self, keys: impl IntoIterator<Item = &'a ConfigKey>) {
        let waiters = self.waiters.lock();
        for key in keys {
            for n in waiters.by_key.get(key).into_iter().flat_map(|m| m.values()) {
                // A listener not waiting yet keeps the permit, so a change between its
                // comparison and its wait still wakes it.
                n.notify_one();
            }
        }
    }

    /// Wakes every listener (what it compared against may be gone: it must look again).
    pub fn wake_all(&self) {
        let waiters = self.waiters.lock();
        for n in waiters.by_key.values().flat_map(|m| m.values()) {
            n.notify_one();
        }
    }

    /// Registers a listener on `keys`. Register before comparing md5s, then wait on
    /// [`Interest::changed`] and compare again.
    pub fn interest(&self, keys: impl IntoIterator<Item = ConfigKey>) -> Interest {
        let notify = Arc::new(Notify::new());
        let mut keys: Vec<ConfigKey> = keys.into_iter().collect();
        keys.sort();
        keys.dedup();
        let mut waiters = self.waiters.lock();
        waiters.next_id += 1;
        waiters.parked += 1;
        let id = waiters.next_id;
        for key in &keys {
            waiters
                .by_key
                .entry(key.clone())
                .or_default()
                .insert(id, notify.clone());
        }
        drop(waiters);
        Interest {
            waiters: self.waiters.clone(),
            id,
            keys,
            notify,
        }
    }

    /// Keys some listener is registered on (for tests and metrics).
    pub fn watched_keys(&self) -> usize {
        self.waiters.lock().by_key.len()
    }

    /// Listeners registered now (for metrics).
    pub fn parked(&self) -> usize {
        self.waiters.lock().parked
    }
}

impl Interest {
    /// Resolves once one of the keys changed since the registration (or since the last wake).
    pub async fn changed(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        let mut waiters = self.waiters.lock();
        waiters.parked = waiters.parked.saturating_sub(1);
        for key in &self.keys {
            if let Some(m) = waiters.by_key.get_mut(key) {
                m.remove(&self.id);
                if m.is_empty() {
                    waiters.by_key.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key(d: &str) -> ConfigKey {
        ConfigKey::new(d, "G", None).unwrap()
    }

    async fn woken(i: &Interest) -> bool {
        tokio::time::timeout(Duration::from_millis(100), i.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn c6_a_change_wakes_the_listeners_of_that_key_only_even_before_they_wait() {
        let w = ConfigWatch::new();
        let a = w.interest([key("a"), key("b")]);
        let c = w.interest([key("c")]);
        // The change lands between registration and wait: the permit is kept.
        w.changed(&[key("b")]);
        assert!(woken(&a).await);
        assert!(!woken(&c).await, "another key's listener sleeps on");
        w.changed(&[]);
        assert!(!woken(&a).await);
        w.wake_all();
        assert!(woken(&a).await && woken(&c).await);
    }

    #[tokio::test]
    async fn c6_an_answered_listener_leaves_no_registration_behind() {
        let w = ConfigWatch::new();
        let a = w.interest([key("a"), key("a"), key("b")]);
        let b = w.interest([key("a")]);
        assert_eq!((w.watched_keys(), w.parked()), (2, 2));
        drop(a);
        assert_eq!(w.watched_keys(), 1);
        drop(b);
        assert_eq!((w.watched_keys(), w.parked()), (0, 0));
        w.changed(&[key("a")]);
    }
}
