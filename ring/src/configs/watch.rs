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
    by_key: HashMap<ConfigKey, HashMap<u64, Entry>>,
    /// Interests alive (parked listeners).
    parked: usize,
}

/// One parked listener on one key.
#[derive(Debug)]
struct Entry {
    notify: Arc<Notify>,
    client: Arc<str>,
    md5: String,
}

/// A parked listener as operators see it (Nacos's listener query): who, and the md5 it holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Listener {
    /// The client's address.
    pub client: String,
    /// The md5 it sent (`""` when it has no content).
    pub md5: String,
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
            for e in waiters.by_key.get(key).into_iter().flat_map(|m| m.values()) {
                // A listener not waiting yet keeps the permit, so a change between its
                // comparison and its wait still wakes it.
                e.notify.notify_one();
            }
        }
    }

    /// Wakes every listener (what it compared against may be gone: it must look again).
    pub fn wake_all(&self) {
        let waiters = self.waiters.lock();
        for e in waiters.by_key.values().flat_map(|m| m.values()) {
            e.notify.notify_one();
        }
    }

    /// Registers a listener on `keys`. Register before comparing md5s, then wait on
    /// [`Interest::changed`] and compare again.
    pub fn interest(&self, keys: impl IntoIterator<Item = ConfigKey>) -> Interest {
        self.interest_from("", keys.into_iter().map(|k| (k, String::new())))
    }

    /// [`ConfigWatch::interest`] for a client at `client` holding an md5 per key, so that
    /// [`ConfigWatch::listeners`] can tell who listens.
    pub fn interest_from(
        &self,
        client: &str,
        listened: impl IntoIterator<Item = (ConfigKey, String)>,
    ) -> Interest {
        let notify = Arc::new(Notify::new());
        let client: Arc<str> = Arc::from(client);
        let mut listened: Vec<(ConfigKey, String)> = listened.into_iter().collect();
        listened.sort();
        listened.dedup_by(|a, b| a.0 == b.0);
        let mut waiters = self.waiters.lock();
        waiters.next_id += 1;
        waiters.parked += 1;
        let id = waiters.next_id;
        for (key, md5) in &listened {
            let entry = Entry {
                notify: notify.clone(),
                client: client.clone(),
                md5: md5.clone(),
            };
            waiters
                .by_key
                .entry(key.clone())
                .or_default()
                .insert(id, entry);
        }
        drop(waiters);
        Interest {
            waiters: self.waiters.clone(),
            id,
            keys: listened.into_iter().map(|(k, _)| k).collect(),
            notify,
        }
    }

    /// The listeners parked on `key` now, sorted.
    pub fn listeners(&self, key: &ConfigKey) -> Vec<Listener> {
        let mut out: Vec<Listener> = self
            .waiters
            .lock()
            .by_key
            .get(key)
            .into_iter()
            .flat_map(|m| m.values())
            .map(|e| Listener {
                client: e.client.to_string(),
                md5: e.md5.clone(),
            })
            .collect();
        out.sort();
        out
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
    async fn listeners_name_the_client_and_the_md5_it_holds_while_parked() {
        let w = ConfigWatch::new();
        let a = w.interest_from(
            "10.0.0.2",
            [(key("a"), "m1".to_string()), (key("b"), String::new())],
        );
        let b = w.interest_from("10.0.0.1", [(key("a"), "m0".to_string())]);
        let on_a = w.listeners(&key("a"));
        assert_eq!(
            on_a,
            vec![
                Listener {
                    client: "10.0.0.1".into(),
                    md5: "m0".into()
                },
                Listener {
                    client: "10.0.0.2".into(),
                    md5: "m1".into()
                }
            ]
        );
        assert_eq!(w.listeners(&key("b")).len(), 1);
        drop(a);
        drop(b);
        assert!(w.listeners(&key("a")).is_empty());
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
