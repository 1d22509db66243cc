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
    /// Keys are shared with the interests registered on them: one copy per key, however many
    /// listen to it.
    by_key: HashMap<Arc<ConfigKey>, Listening>,
    /// Interests alive (parked listeners).
    parked: usize,
}

/// The listeners of one key. Most keys have one, kept inline: a gateway holding 100,000
/// listeners on as many keys would otherwise keep as many one-entry maps.
#[derive(Debug)]
enum Listening {
    One(u64, Entry),
    Many(HashMap<u64, Entry>),
}

impl Listening {
    fn insert(&mut self, id: u64, entry: Entry) {
        match self {
            Listening::Many(m) => {
                m.insert(id, entry);
            }
            Listening::One(first, _) if *first == id => *self = Listening::One(id, entry),
            Listening::One(..) => {
                let mut m = HashMap::with_capacity(2);
                if let Listening::One(first, e) =
                    std::mem::replace(self, Listening::Many(HashMap::new()))
                {
                    m.insert(first, e);
                }
                m.insert(id, entry);
                *self = Listening::Many(m);
            }
        }
    }

    /// Removes `id`'s entry; `true` when no listener is left.
    fn remove(&mut self, id: u64) -> bool {
        match self {
            Listening::One(first, _) => *first == id,
            Listening::Many(m) => {
                m.remove(&id);
                m.is_empty()
            }
        }
    }

    fn entries(&self) -> impl Iterator<Item = &Entry> {
        let (one, many) = match self {
            Listening::One(_, e) => (Some(e), None),
            Listening::Many(m) => (None, Some(m.values())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
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
    keys: Vec<Arc<ConfigKey>>,
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
            for e in waiters
                .by_key
                .get(key)
                .into_iter()
                .flat_map(Listening::entries)
            {
                // A listener not waiting yet keeps the permit, so a change between its
                // comparison and its wait still wakes it.
                e.notify.notify_one();
            }
        }
    }

    /// Wakes every listener (what it compared against may be gone: it must look again).
    pub fn wake_all(&self) {
        let waiters = self.waiters.lock();
        for e in waiters.by_key.values().flat_map(Listening::entries) {
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
        let mut keys = Vec::with_capacity(listened.len());
        for (key, md5) in listened {
            let entry = Entry {
                notify: notify.clone(),
                client: client.clone(),
                md5,
            };
            let shared = waiters.by_key.get_key_value(&key).map(|(k, _)| k.clone());
            let key = match shared {
                Some(shared) => {
                    if let Some(listening) = waiters.by_key.get_mut(&shared) {
                        listening.insert(id, entry);
                    }
                    shared
                }
                None => {
                    let key = Arc::new(key);
                    waiters
                        .by_key
                        .insert(key.clone(), Listening::One(id, entry));
                    key
                }
            };
            keys.push(key);
        }
        drop(waiters);
        Interest {
            waiters: self.waiters.clone(),
            id,
            keys,
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
            .flat_map(Listening::entries)
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
            if let Some(listening) = waiters.by_key.get_mut(key) {
                if listening.remove(self.id) {
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
    async fn c6_listeners_sharing_a_key_are_woken_and_unregistered_one_by_one() {
        let w = ConfigWatch::new();
        let a = w.interest([key("k")]);
        let b = w.interest([key("k")]);
        let c = w.interest([key("k"), key("other")]);
        drop(b);
        w.changed(&[key("k")]);
        assert!(woken(&a).await && woken(&c).await);
        drop(a);
        assert_eq!((w.watched_keys(), w.parked()), (2, 1));
        w.changed(&[key("k")]);
        assert!(woken(&c).await);
        drop(c);
        assert_eq!((w.watched_keys(), w.parked()), (0, 0));
        // The key registered again from nothing.
        let d = w.interest([key("k")]);
        w.changed(&[key("k")]);
        assert!(woken(&d).await);
        assert_eq!(w.listeners(&key("k")).len(), 1);
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
