//! The md5 of every config the gateway has heard of, from the nodes' change feeds and from
//! fetches (rules L1–L3 and L5 in [`super`]), and the wake-ups of listeners parked on them.
//! In memory, no I/O.

use std::collections::HashMap;

use nacre_ring::configs::listen::Listened;
use nacre_ring::configs::watch::{ConfigWatch, Interest};
use nacre_ring::configs::ConfigKey;
use nacre_ring::wire::{ConfigChange, Md5Reply};
use parking_lot::Mutex;

/// Most keys kept; past it the table starts over (rule L5).
pub const MAX_KEYS: usize = 1_000_000;

/// Config md5s by key.
#[derive(Debug, Default)]
pub struct Md5Table {
    inner: Mutex<Inner>,
    watch: ConfigWatch,
    max_keys: usize,
}

#[derive(Debug, Default)]
struct Inner {
    /// Bumped by every reset: a fetch started before one is not kept.
    epoch: u64,
    known: HashMap<ConfigKey, Known>,
}

#[derive(Debug)]
struct Known {
    md5: Box<str>,
    revision: u64,
    /// The config has a beta (rule L8).
    beta: bool,
}

/// What the table knows of a listener's keys.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Every key is known: these differ from the client's md5s (rule C6).
    Known(Vec<&'a Listened>),
    /// A key has a beta: who sees what is a node's call (rule L8).
    Node,
    /// These keys are unknown; fetch them and pass `epoch` to [`Md5Table::learn_fetched`].
    Missing {
        /// The table's epoch when it was looked at.
        epoch: u64,
        /// Keys to fetch.
        keys: Vec<ConfigKey>,
    },
}

impl Inner {
    /// Keeps `md5` for `key` unless what is known is as new (rule L2); true when what a
    /// parked listener compares with changed (the md5, or whether there is a beta), or
    /// appeared.
    fn merge(&mut self, key: &ConfigKey, md5: &str, revision: u64, beta: bool) -> bool {
        match self.known.get_mut(key) {
            Some(k) if k.revision >= revision => false,
            Some(k) => {
                k.revision = revision;
                let moved = *k.md5 != *md5 || k.beta != beta;
                if *k.md5 != *md5 {
                    k.md5 = md5.into();
                }
                k.beta = beta;
                moved
            }
            None => {
                self.known.insert(
                    key.clone(),
                    Known {
                        md5: md5.into(),
                        revision,
                        beta,
                    },
                );
                true
            }
        }
    }
}

impl Md5Table {
    /// An empty table keeping at most [`MAX_KEYS`].
    pub fn new() -> Self {
        Self::with_max_keys(MAX_KEYS)
    }

    /// An empty table keeping at most `max_keys` (tests).
    pub fn with_max_keys(max_keys: usize) -> Self {
        Self {
            max_keys,
            ..Self::default()
        }
    }

    /// Takes in changes from a feed; wakes the listeners of keys whose md5 changed.
    pub fn learn(&self, changes: &[ConfigChange]) {
        let mut inner = self.inner.lock();
        let changed: Vec<&ConfigKey> = changes
            .iter()
            .filter(|c| inner.merge(&c.key, &c.md5, c.revision, c.beta))
            .map(|c| &c.key)
            .collect();
        self.settle(inner, &changed);
    }

    /// After merging: starts over past the bound (rule L5), else wakes the listeners of
    /// `changed`.
    fn settle(&self, inner: parking_lot::MutexGuard<'_, Inner>, changed: &[&ConfigKey]) {
        let over = inner.known.len() > self.max_keys;
        drop(inner);
        if over {
            self.reset();
        } else {
            self.watch.changed(changed.iter().copied());
        }
    }

    /// Takes in a fetch of `keys` started at `epoch` (rule L3); false when it was not kept
    /// (a reset happened meanwhile, or the reply does not match the question).
    pub fn learn_fetched(&self, epoch: u64, keys: &[ConfigKey], reply: &Md5Reply) -> bool {
        if keys.len() != reply.md5s.len() {
            return false;
        }
        let mut inner = self.inner.lock();
        if inner.epoch != epoch {
            return false;
        }
        let changed: Vec<&ConfigKey> = keys
            .iter()
            .zip(&reply.md5s)
            .enumerate()
            .filter(|(i, (k, m))| {
                let beta = reply.betas.get(*i).copied().unwrap_or(false);
                inner.merge(k, m, reply.revision, beta)
            })
            .map(|(_, (k, _))| k)
            .collect();
        self.settle(inner, &changed);
        true
    }

    /// Forgets everything (rule L1) and wakes every parked listener to look again.
    pub fn reset(&self) {
        let mut inner = self.inner.lock();
        inner.epoch += 1;
        inner.known = HashMap::new();
        drop(inner);
        self.watch.wake_all();
    }

    /// Compares a listener's md5s with the table's.
    pub fn lookup<'a>(&self, listened: &'a [Listened]) -> Lookup<'a> {
        let inner = self.inner.lock();
        let mut changed = Vec::new();
        let mut missing = Vec::new();
        let mut beta = false;
        for l in listened {
            match inner.known.get(&l.key) {
                Some(k) => {
                    beta |= k.beta;
                    if *k.md5 != *l.md5 {
                        changed.push(l);
                    }
                }
                None => missing.push(l.key.clone()),
            }
        }
        if missing.is_empty() {
            if beta {
                return Lookup::Node;
            }
            Lookup::Known(changed)
        } else {
            missing.sort();
            missing.dedup();
            Lookup::Missing {
                epoch: inner.epoch,
                keys: missing,
            }
        }
    }

    /// Whether the table knows `key` with `md5` as of a revision no newer than `revision`
    /// (an answer read at `revision` showing `md5` is then current), and without a beta (whose
    /// readers see something else, rule L8).
    pub fn is_current(&self, key: &ConfigKey, md5: &str, revision: u64) -> bool {
        let inner = self.inner.lock();
        inner
            .known
            .get(key)
            .is_some_and(|k| !k.beta && *k.md5 == *md5 && k.revision <= revision)
    }

    /// Registers a parked listener on `keys`: register before the first lookup, so a change in
    /// between still wakes it. (Tests; the edge registers with [`Md5Table::interest_from`].)
    #[cfg(test)]
    pub fn interest(&self, keys: impl IntoIterator<Item = ConfigKey>) -> Interest {
        self.watch.interest(keys)
    }

    /// Registers a parked listener of the client at `client` holding an md5 per key (shown by
    /// the listener query): register before the first lookup, so a change in between still
    /// wakes it.
    pub fn interest_from(
        &self,
        client: &str,
        listened: impl IntoIterator<Item = (ConfigKey, String)>,
    ) -> Interest {
        self.watch.interest_from(client, listened)
    }

    /// The long-polls parked here on `key`.
    pub fn listeners(&self, key: &ConfigKey) -> Vec<nacre_ring::configs::watch::Listener> {
        self.watch.listeners(key)
    }

    /// Keys known.
    pub fn len(&self) -> usize {
        self.inner.lock().known.len()
    }

    /// Whether no key is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Listeners parked now.
    pub fn parked(&self) -> usize {
        self.watch.parked()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use nacre_ring::configs::listen;

    use super::*;

    fn key(d: &str) -> ConfigKey {
        ConfigKey::new(d, "G", None).unwrap()
    }

    fn change(d: &str, md5: &str, revision: u64) -> ConfigChange {
        ConfigChange {
            key: key(d),
            md5: md5.into(),
            revision,
            beta: false,
        }
    }

    fn listened(entries: &[(&str, &str)]) -> Vec<Listened> {
        let v: String = entries
            .iter()
            .map(|(d, m)| format!("{d}\u{2}G\u{2}{m}\u{1}"))
            .collect();
        listen::parse(&v, None).unwrap()
    }

    fn names(l: &Lookup<'_>) -> Vec<String> {
        match l {
            Lookup::Known(c) => c.iter().map(|l| l.key.data_id.clone()).collect(),
            other => panic!("not all known: {other:?}"),
        }
    }

    async fn woken(i: &Interest) -> bool {
        tokio::time::timeout(Duration::from_millis(50), i.changed())
            .await
            .is_ok()
    }

    #[test]
    fn l2_a_lagging_source_never_takes_a_key_back() {
        let t = Md5Table::new();
        t.learn(&[change("a", "new", 9)]);
        // The same change from a slower node, then an older one: no effect.
        t.learn(&[change("a", "new", 9), change("a", "old", 5)]);
        let l = listened(&[("a", "new")]);
        assert!(names(&t.lookup(&l)).is_empty());
        let Lookup::Known(_) = t.lookup(&l) else {
            unreachable!()
        };
        let epoch = match t.lookup(&listened(&[("b", "")])) {
            Lookup::Missing { epoch, keys } => {
                assert_eq!(keys, vec![key("b")]);
                epoch
            }
            other => panic!("b was never heard of: {other:?}"),
        };
        // A fetch from a node that had applied only up to 5 answers for `a` too: ignored.
        let reply = Md5Reply {
            revision: 5,
            md5s: vec!["old".into(), String::new()],
            betas: Vec::new(),
        };
        assert!(t.learn_fetched(epoch, &[key("a"), key("b")], &reply));
        assert!(names(&t.lookup(&listened(&[("a", "new"), ("b", "")]))).is_empty());
        // A deletion is an md5 like any other.
        t.learn(&[change("a", "", 10)]);
        assert_eq!(names(&t.lookup(&listened(&[("a", "new")]))), vec!["a"]);
    }

    #[tokio::test]
    async fn l1_a_reset_forgets_everything_wakes_every_listener_and_voids_fetches_in_flight() {
        let t = Md5Table::new();
        t.learn(&[change("a", "m", 1)]);
        let i = t.interest([key("a")]);
        let l = listened(&[("b", "")]);
        let Lookup::Missing { epoch, keys } = t.lookup(&l) else {
            panic!("b is unknown")
        };
        t.reset();
        assert!(woken(&i).await, "a parked listener must look again");
        assert!(t.is_empty());
        let reply = Md5Reply {
            revision: 3,
            md5s: vec![String::new()],
            betas: Vec::new(),
        };
        assert!(
            !t.learn_fetched(epoch, &keys, &reply),
            "a fetch from before the reset may predate changes the table no longer remembers"
        );
        assert!(matches!(t.lookup(&l), Lookup::Missing { .. }));
        assert!(!t.learn_fetched(
            epoch + 1,
            &keys,
            &Md5Reply {
                revision: 3,
                md5s: vec![],
                betas: vec![],
            }
        ));
    }

    #[tokio::test]
    async fn c6_a_feed_change_wakes_the_listeners_of_that_key_only_when_its_md5_moved() {
        let t = Md5Table::new();
        t.learn(&[change("a", "m1", 1), change("b", "m1", 1)]);
        let on_a = t.interest([key("a")]);
        let on_b = t.interest([key("b")]);
        t.learn(&[change("a", "m1", 2)]);
        assert!(
            !woken(&on_a).await,
            "same md5 at a newer revision: nothing to tell"
        );
        t.learn(&[change("a", "m2", 3)]);
        assert!(woken(&on_a).await);
        assert!(!woken(&on_b).await);
        assert_eq!(t.parked(), 2);
    }

    #[tokio::test]
    async fn l8_a_key_with_a_beta_is_a_nodes_call_and_its_appearance_wakes_listeners() {
        let t = Md5Table::new();
        t.learn(&[change("a", "m", 1), change("b", "m", 1)]);
        let i = t.interest([key("a")]);
        let l = listened(&[("a", "m"), ("b", "m")]);
        assert_eq!(t.lookup(&l), Lookup::Known(Vec::new()));
        t.learn(&[ConfigChange {
            beta: true,
            ..change("a", "m", 2)
        }]);
        assert!(
            woken(&i).await,
            "the listener must look again: it may be in the beta"
        );
        assert_eq!(t.lookup(&l), Lookup::Node);
        assert!(
            !t.is_current(&key("a"), "m", 9),
            "no cached read of a beta'd config"
        );
        t.learn(&[change("a", "m", 3)]);
        assert!(woken(&i).await);
        assert_eq!(t.lookup(&l), Lookup::Known(Vec::new()));
        assert!(t.is_current(&key("a"), "m", 9));
    }

    #[tokio::test]
    async fn l5_past_its_size_the_table_starts_over() {
        let t = Md5Table::with_max_keys(2);
        let i = t.interest([key("a")]);
        t.learn(&[change("a", "m", 1), change("b", "m", 1)]);
        assert!(woken(&i).await);
        t.learn(&[change("c", "m", 2)]);
        assert!(t.is_empty(), "over the bound: forget all");
        assert!(woken(&i).await);
    }
}
