//! Configs, their history, their gray-release variants and the commands that change them
//! (rules C2–C5 and C7 in [`super`]).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

pub use nacre_ring::configs::{normalize_tenant, ConfigKey};

use super::{md5_hex, HISTORY_KEPT, MAX_CONTENT, MISSING_MD5};
use crate::naming::error::NamingError;

/// Longest `desc`.
pub const MAX_DESC: usize = 128;
/// Longest `appName`, `src_user`.
pub const MAX_SHORT: usize = 128;
/// Most `config_tags`, and the longest one.
pub const MAX_TAGS: (usize, usize) = (5, 64);
/// Longest `tag` of a tag variant (Nacos's `ParamUtils`).
pub const MAX_TAG: usize = 16;
/// Most addresses in a beta publish's `betaIps`.
pub const MAX_BETA_IPS: usize = 1000;
/// Config types Nacos knows; anything else is stored as `text`.
pub const TYPES: [&str; 6] = ["text", "json", "xml", "yaml", "html", "properties"];

/// What a publish says about a config besides its content.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ConfigMeta {
    /// `Config-Type`: one of [`TYPES`] (`text` by default).
    pub kind: String,
    /// `appName`.
    pub app_name: String,
    /// `desc`.
    pub desc: String,
    /// `config_tags`, comma-separated.
    pub tags: String,
    /// Who published it (`src_user` as sent).
    pub src_user: String,
    /// From where (the verified source address).
    pub src_ip: String,
}

/// One stored config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigItem {
    /// Id, assigned at creation (a config deleted and created again gets a new one).
    pub id: u64,
    /// Content.
    pub content: String,
    /// Hex MD5 of the content.
    pub md5: String,
    /// Type, app, description, tags, and who published it from where.
    pub meta: ConfigMeta,
    /// Creation time (ms since the epoch).
    pub created_ms: u64,
    /// Last publish (ms since the epoch).
    pub modified_ms: u64,
}

/// One history entry: the config as it was after a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// History id (`nid`), unique across the cluster and increasing.
    pub nid: u64,
    /// The config's id at the time.
    pub id: u64,
    /// `I` insert, `U` update, `D` delete.
    pub op: char,
    /// Content after the change (the deleted content for `D`).
    pub content: String,
    /// Its md5.
    pub md5: String,
    /// `appName`.
    pub app_name: String,
    /// Who.
    pub src_user: String,
    /// From where.
    pub src_ip: String,
    /// When the config was created (ms).
    pub created_ms: u64,
    /// When this change happened (ms).
    pub modified_ms: u64,
}

/// A config key's current value (absent once deleted), its history and its gray-release
/// variants (rule C7).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ConfigRecord {
    /// The config, or `None` after a delete.
    pub current: Option<ConfigItem>,
    /// Oldest first, at most [`HISTORY_KEPT`].
    pub history: VecDeque<HistoryEntry>,
    /// The variants, kept apart from the main config: deleting one never touches the other.
    #[serde(default, skip_serializing_if = "Variants::is_empty")]
    pub variants: Variants,
}

/// A config's tag variants and its beta.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Variants {
    /// Tag variants, by tag.
    #[serde(default)]
    pub tags: BTreeMap<String, ConfigItem>,
    /// The beta, and the client addresses that see it.
    #[serde(default)]
    pub beta: Option<Beta>,
}

impl Variants {
    /// Whether there is no variant.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.beta.is_none()
    }
}

/// A beta: content only the listed client addresses see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Beta {
    /// The beta content.
    pub item: ConfigItem,
    /// Client addresses, as sent in `betaIps`.
    pub ips: Vec<String>,
}

/// Which of a config's variants a publish writes or a delete removes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Target {
    /// The config itself.
    #[default]
    Main,
    /// Tag variant `tag`.
    Tag(String),
    /// The beta (a publish names the addresses that see it).
    Beta(Vec<String>),
}

/// Who reads or listens: what decides which variant they see (rule C7).
#[derive(Debug, Clone, Copy, Default)]
pub struct Reader<'a> {
    /// The client's verified address.
    pub ip: Option<&'a str>,
    /// The tag of the client's `Vipserver-Tag` header.
    pub auto_tag: Option<&'a str>,
}

/// Which variant a reader was shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown<'a> {
    /// The config itself.
    Main,
    /// The beta (the reader's address is in its list).
    Beta,
    /// The tag variant its `Vipserver-Tag` names.
    AutoTag(&'a str),
}

/// A publish, with everything the apply needs (rule C3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Publish {
    /// Which config.
    pub key: ConfigKey,
    /// Content (validated: rule C2).
    pub content: String,
    /// Type (already normalised), app, description, tags, who and from where.
    pub meta: ConfigMeta,
    /// When (ms), stamped by the node that proposed it.
    pub time_ms: u64,
    /// Apply only if the stored md5 equals this (rule C5).
    pub cas_md5: Option<String>,
    /// The config itself, a tag variant or the beta (rule C7).
    #[serde(default)]
    pub target: Target,
}

/// A change to the configs, as stored in the Raft log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ConfigCommand {
    /// Create or replace a config.
    Publish(Publish),
    /// Delete configs: each key, only if its id is the one given (a batch delete by ids must
    /// not remove a config created again since the ids were read); deleting what is not there
    /// is a no-op.
    Delete {
        /// Keys, with the id each must still have (`None`: whatever it is).
        targets: Vec<(ConfigKey, Option<u64>)>,
        /// Who.
        src_user: String,
        /// From where.
        src_ip: String,
        /// When (ms).
        time_ms: u64,
        /// The configs themselves, or one tag variant of each, or their betas (rule C7).
        #[serde(default)]
        of: Target,
    },
    /// Publish many configs, in order, each as a publish would (rule C8); what happens to one
    /// that exists is `policy`'s call.
    Import {
        /// The publishes (the config itself, no compare-and-set).
        items: Vec<Publish>,
        /// For configs that exist.
        policy: super::transfer::Policy,
    },
}

/// Checks and normalises a publish's fields (rules C1, C2); returns the type to store.
pub fn check_publish(
    content: &str,
    kind: Option<&str>,
    desc: Option<&str>,
    tags: Option<&str>,
    app_name: Option<&str>,
    src_user: Option<&str>,
) -> Result<String, NamingError> {
    if content.trim().is_empty() {
        return Err(NamingError::bad("content must not be blank"));
    }
    if content.len() > MAX_CONTENT {
        return Err(NamingError::bad(format!(
            "content is {} bytes, over the {MAX_CONTENT}-byte limit",
            content.len()
        )));
    }
    if desc.is_some_and(|d| d.chars().count() > MAX_DESC) {
        return Err(NamingError::bad(format!(
            "invalid desc: at most {MAX_DESC} characters"
        )));
    }
    for (field, v) in [("appName", app_name), ("src_user", src_user)] {
        if v.is_some_and(|v| v.chars().count() > MAX_SHORT) {
            return Err(NamingError::bad(format!(
                "invalid {field}: at most {MAX_SHORT} characters"
            )));
        }
    }
    if let Some(tags) = tags.filter(|t| !t.trim().is_empty()) {
        let list: Vec<&str> = tags.split(',').collect();
        if list.len() > MAX_TAGS.0 || list.iter().any(|t| t.chars().count() > MAX_TAGS.1) {
            return Err(NamingError::bad(format!(
                "invalid config_tags: at most {} tags of at most {} characters",
                MAX_TAGS.0, MAX_TAGS.1
            )));
        }
    }
    let kind = kind
        .map(str::trim)
        .map(str::to_ascii_lowercase)
        .filter(|k| TYPES.contains(&k.as_str()))
        .unwrap_or_else(|| "text".to_string());
    Ok(kind)
}

/// Every config and its history; part of the Raft state machine.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfigState {
    records: BTreeMap<ConfigKey, ConfigRecord>,
    /// History id → key, for `history?nid=`.
    by_nid: BTreeMap<u64, ConfigKey>,
    /// The largest config or history id handed out (ids are never reused).
    last_id: u64,
}

impl ConfigState {
    /// Rebuilds the state from its records (start-up, snapshot install).
    pub fn from_records(records: impl IntoIterator<Item = (ConfigKey, ConfigRecord)>) -> Self {
        let records: BTreeMap<_, _> = records.into_iter().collect();
        let mut by_nid = BTreeMap::new();
        let mut max = 0;
        for (k, r) in &records {
            for h in &r.history {
                by_nid.insert(h.nid, k.clone());
                max = max.max(h.nid).max(h.id);
            }
            if let Some(c) = &r.current {
                max = max.max(c.id);
            }
            for c in r.variants.tags.values() {
                max = max.max(c.id);
            }
            if let Some(b) = &r.variants.beta {
                max = max.max(b.item.id);
            }
        }
        Self {
            records,
            by_nid,
            last_id: max,
        }
    }

    /// Every record, ordered by key.
    pub fn records(&self) -> impl Iterator<Item = (&ConfigKey, &ConfigRecord)> {
        self.records.iter()
    }

    /// One record.
    pub fn record(&self, key: &ConfigKey) -> Option<&ConfigRecord> {
        self.records.get(key)
    }

    /// The current config.
    pub fn get(&self, key: &ConfigKey) -> Option<&ConfigItem> {
        self.records.get(key).and_then(|r| r.current.as_ref())
    }

    /// The md5 a listener compares with (rule C2: `""` when missing).
    pub fn md5(&self, key: &ConfigKey) -> &str {
        self.get(key).map_or(MISSING_MD5, |c| c.md5.as_str())
    }

    /// The largest id handed out so far: history entries appended after a call have larger
    /// ones (the store writes only those).
    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// Configs that exist.
    pub fn count(&self) -> usize {
        self.records
            .values()
            .filter(|r| r.current.is_some())
            .count()
    }

    /// A history entry by its id.
    pub fn history_entry(&self, nid: u64) -> Option<(&ConfigKey, &HistoryEntry)> {
        let key = self.by_nid.get(&nid)?;
        let entry = self
            .records
            .get(key)?
            .history
            .iter()
            .find(|h| h.nid == nid)?;
        Some((key, entry))
    }

    /// The entry before history entry `nid` of the same config.
    pub fn previous_entry(&self, nid: u64) -> Option<(&ConfigKey, &HistoryEntry)> {
        let key = self.by_nid.get(&nid)?;
        let history = &self.records.get(key)?.history;
        let at = history.iter().position(|h| h.nid == nid)?;
        let prev = history.get(at.checked_sub(1)?)?;
        Some((key, prev))
    }

    /// Applies one command (rules C3–C5); returns the keys whose record changed.
    pub fn apply(&mut self, cmd: &ConfigCommand) -> Result<Vec<ConfigKey>, NamingError> {
        match cmd {
            ConfigCommand::Publish(p) => self.publish(p).map(|()| vec![p.key.clone()]),
            ConfigCommand::Delete {
                targets,
                src_user,
                src_ip,
                time_ms,
                of: Target::Main,
            } => Ok(targets
                .iter()
                .filter(|(key, id)| self.delete(key, *id, src_user, src_ip, *time_ms))
                .map(|(key, _)| key.clone())
                .collect()),
            ConfigCommand::Import { items, policy } => {
                use super::transfer::Policy;
                let mut published = Vec::new();
                for p in items {
                    if self.get(&p.key).is_some() {
                        match policy {
                            Policy::Abort => break,
                            Policy::Skip => continue,
                            Policy::Overwrite => {}
                        }
                    }
                    let main = Publish {
                        cas_md5: None,
                        target: Target::Main,
                        ..p.clone()
                    };
                    self.publish(&main)?;
                    published.push(p.key.clone());
                }
                Ok(published)
            }
            ConfigCommand::Delete { targets, of, .. } => Ok(targets
                .iter()
                .filter(|(key, _)| self.delete_variant(key, of))
                .map(|(key, _)| key.clone())
                .collect()),
        }
    }

    /// Removes a tag variant or the beta (rule C7); whether there was one.
    fn delete_variant(&mut self, key: &ConfigKey, of: &Target) -> bool {
        let Some(record) = self.records.get_mut(key) else {
            return false;
        };
        let removed = match of {
            Target::Main => false,
            Target::Tag(tag) => record.variants.tags.remove(tag).is_some(),
            Target::Beta(_) => record.variants.beta.take().is_some(),
        };
        if record.current.is_none() && record.history.is_empty() && record.variants.is_empty() {
            self.records.remove(key);
        }
        removed
    }

    /// Stores a tag variant or a beta (rule C7): no history, no compare-and-set.
    fn publish_variant(&mut self, p: &Publish) -> Result<(), NamingError> {
        if p.cas_md5.is_some() {
            return Err(NamingError::bad(
                "casMd5 applies to the config itself, not to a tag or beta variant",
            ));
        }
        let id = self.take_id();
        let record = self.records.entry(p.key.clone()).or_default();
        let slot = match &p.target {
            Target::Main => return Ok(()),
            Target::Tag(tag) => record.variants.tags.get(tag),
            Target::Beta(_) => record.variants.beta.as_ref().map(|b| &b.item),
        };
        let (id, created_ms) = slot.map_or((id, p.time_ms), |c| (c.id, c.created_ms));
        let item = ConfigItem {
            id,
            md5: md5_hex(&p.content),
            content: p.content.clone(),
            meta: p.meta.clone(),
            created_ms,
            modified_ms: p.time_ms,
        };
        match &p.target {
            Target::Main => {}
            Target::Tag(tag) => {
                record.variants.tags.insert(tag.clone(), item);
            }
            Target::Beta(ips) => {
                record.variants.beta = Some(Beta {
                    item,
                    ips: ips.clone(),
                })
            }
        }
        Ok(())
    }

    /// What `reader` reads of `key` (rule C7): the beta for an address in its list, else the
    /// tag variant its `Vipserver-Tag` names when there is one, else the config itself.
    pub fn read(&self, key: &ConfigKey, reader: Reader<'_>) -> Option<(&ConfigItem, Shown<'_>)> {
        let record = self.records.get(key)?;
        let v = &record.variants;
        if let (Some(beta), Some(ip)) = (&v.beta, reader.ip) {
            if beta.ips.iter().any(|b| b == ip) {
                return Some((&beta.item, Shown::Beta));
            }
        }
        if let Some((tag, item)) = reader.auto_tag.and_then(|t| v.tags.get_key_value(t)) {
            return Some((item, Shown::AutoTag(tag.as_str())));
        }
        record.current.as_ref().map(|c| (c, Shown::Main))
    }

    /// Tag variant `tag` of `key` (a read with the `tag` parameter).
    pub fn tag(&self, key: &ConfigKey, tag: &str) -> Option<&ConfigItem> {
        self.records.get(key)?.variants.tags.get(tag)
    }

    /// The md5 a listener of `key` is compared with (rules C6, C7): of what `reader` would
    /// read, `""` when that is nothing.
    pub fn md5_for(&self, key: &ConfigKey, reader: Reader<'_>) -> &str {
        self.read(key, reader)
            .map_or(MISSING_MD5, |(c, _)| c.md5.as_str())
    }

    /// Whether `key` has a beta (a gateway sends listeners and reads of it to a node, which
    /// knows who is in it).
    pub fn has_beta(&self, key: &ConfigKey) -> bool {
        self.records
            .get(key)
            .is_some_and(|r| r.variants.beta.is_some())
    }

    /// The beta of `key`.
    pub fn beta(&self, key: &ConfigKey) -> Option<&Beta> {
        self.records.get(key)?.variants.beta.as_ref()
    }

    fn publish(&mut self, p: &Publish) -> Result<(), NamingError> {
        if p.target != Target::Main {
            return self.publish_variant(p);
        }
        let stored = self.md5(&p.key).to_string();
        if let Some(expected) = &p.cas_md5 {
            if *expected != stored {
                return Err(NamingError::Conflict(format!(
                    "cas publish failed: the config's md5 is {stored:?}, not {expected:?}"
                )));
            }
        }
        let nid = self.take_id();
        let record = self.records.entry(p.key.clone()).or_default();
        let (id, created_ms, op) = match &record.current {
            Some(c) => (c.id, c.created_ms, 'U'),
            None => (nid, p.time_ms, 'I'),
        };
        let item = ConfigItem {
            id,
            md5: md5_hex(&p.content),
            content: p.content.clone(),
            meta: p.meta.clone(),
            created_ms,
            modified_ms: p.time_ms,
        };
        let entry = history_of(nid, op, &item);
        record.current = Some(item);
        self.append_history(&p.key, entry);
        Ok(())
    }

    fn delete(
        &mut self,
        key: &ConfigKey,
        id: Option<u64>,
        src_user: &str,
        src_ip: &str,
        time_ms: u64,
    ) -> bool {
        let matches = self
            .get(key)
            .is_some_and(|c| id.is_none_or(|want| want == c.id));
        if !matches {
            return false;
        }
        let nid = self.take_id();
        let Some(mut gone) = self.records.get_mut(key).and_then(|r| r.current.take()) else {
            return false;
        };
        gone.meta.src_user = src_user.to_string();
        gone.meta.src_ip = src_ip.to_string();
        gone.modified_ms = time_ms;
        self.append_history(key, history_of(nid, 'D', &gone));
        true
    }

    fn take_id(&mut self) -> u64 {
        self.last_id += 1;
        self.last_id
    }

    fn append_history(&mut self, key: &ConfigKey, entry: HistoryEntry) {
        let Some(record) = self.records.get_mut(key) else {
            return;
        };
        self.by_nid.insert(entry.nid, key.clone());
        record.history.push_back(entry);
        while record.history.len() > HISTORY_KEPT {
            if let Some(old) = record.history.pop_front() {
                self.by_nid.remove(&old.nid);
            }
        }
    }
}

fn history_of(nid: u64, op: char, c: &ConfigItem) -> HistoryEntry {
    HistoryEntry {
        nid,
        id: c.id,
        op,
        content: c.content.clone(),
        md5: c.md5.clone(),
        app_name: c.meta.app_name.clone(),
        src_user: c.meta.src_user.clone(),
        src_ip: c.meta.src_ip.clone(),
        created_ms: c.created_ms,
        modified_ms: c.modified_ms,
    }
}

/// A `*`-wildcard match (`blur` search): `*` matches any run of characters.
pub fn wildcard_match(pattern: &str, value: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == value;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !value.starts_with(first) || value.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &value[first.len()..];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(at) => rest = &rest[at + mid.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(d: &str) -> ConfigKey {
        ConfigKey::new(d, "DEFAULT_GROUP", None).unwrap()
    }

    fn publish(k: &ConfigKey, content: &str, t: u64) -> ConfigCommand {
        ConfigCommand::Publish(Publish {
            key: k.clone(),
            content: content.into(),
            meta: ConfigMeta {
                kind: "text".into(),
                src_user: "u".into(),
                src_ip: "10.0.0.1".into(),
                ..ConfigMeta::default()
            },
            time_ms: t,
            cas_md5: None,
            target: Default::default(),
        })
    }

    fn delete(k: &ConfigKey, id: Option<u64>, t: u64) -> ConfigCommand {
        ConfigCommand::Delete {
            targets: vec![(k.clone(), id)],
            src_user: "u".into(),
            src_ip: "10.0.0.1".into(),
            time_ms: t,
            of: Target::Main,
        }
    }

    fn variant(k: &ConfigKey, content: &str, target: Target) -> ConfigCommand {
        match publish(k, content, 1) {
            ConfigCommand::Publish(p) => ConfigCommand::Publish(Publish { target, ..p }),
            other => other,
        }
    }

    #[test]
    fn c8_an_import_publishes_in_order_and_existing_configs_follow_the_policy() {
        use super::super::transfer::Policy;
        let import = |policy, names: &[&str]| ConfigCommand::Import {
            items: names
                .iter()
                .map(|n| match publish(&key(n), &format!("imported {n}"), 5) {
                    ConfigCommand::Publish(p) => p,
                    _ => unreachable!(),
                })
                .collect(),
            policy,
        };
        let fresh = || {
            let mut st = ConfigState::default();
            st.apply(&publish(&key("b"), "old", 1)).unwrap();
            st
        };
        let mut st = fresh();
        assert_eq!(
            st.apply(&import(Policy::Abort, &["a", "b", "c"])).unwrap(),
            vec![key("a")],
            "abort stops at the first that exists"
        );
        assert!(st.get(&key("c")).is_none());
        assert_eq!(st.get(&key("b")).unwrap().content, "old");
        let mut st = fresh();
        assert_eq!(
            st.apply(&import(Policy::Skip, &["a", "b", "c"])).unwrap(),
            vec![key("a"), key("c")]
        );
        assert_eq!(st.get(&key("b")).unwrap().content, "old");
        let mut st = fresh();
        assert_eq!(
            st.apply(&import(Policy::Overwrite, &["a", "b"])).unwrap(),
            vec![key("a"), key("b")]
        );
        assert_eq!(st.get(&key("b")).unwrap().content, "imported b");
        assert_eq!(
            st.record(&key("b")).unwrap().history.len(),
            2,
            "an import is history too"
        );
    }

    #[test]
    fn c7_betas_and_tags_are_read_by_who_asks_and_kept_apart_from_the_config() {
        let mut st = ConfigState::default();
        let k = key("app");
        st.apply(&publish(&k, "main", 1)).unwrap();
        st.apply(&variant(&k, "gray", Target::Beta(vec!["10.0.0.7".into()])))
            .unwrap();
        st.apply(&variant(&k, "blue", Target::Tag("blue".into())))
            .unwrap();
        let reader = |ip, tag| Reader {
            ip: Some(ip),
            auto_tag: tag,
        };
        let shown = |st: &ConfigState, ip, tag| {
            st.read(&k, reader(ip, tag))
                .map(|(c, s)| (c.content.clone(), format!("{s:?}")))
        };
        assert_eq!(
            shown(&st, "10.0.0.7", Some("blue")).unwrap().0,
            "gray",
            "beta first"
        );
        assert_eq!(shown(&st, "10.0.0.8", Some("blue")).unwrap().0, "blue");
        assert_eq!(
            shown(&st, "10.0.0.8", Some("red")).unwrap().0,
            "main",
            "unknown tag"
        );
        assert_eq!(shown(&st, "10.0.0.8", None).unwrap().0, "main");
        assert_eq!(st.md5_for(&k, reader("10.0.0.7", None)), md5_hex("gray"));
        assert_eq!(st.md5_for(&k, reader("10.0.0.8", None)), md5_hex("main"));
        assert_eq!(st.md5(&k), md5_hex("main"), "the main md5 ignores variants");
        assert_eq!(st.tag(&k, "blue").unwrap().content, "blue");
        assert!(st.has_beta(&k));
        assert_eq!(
            st.record(&k).unwrap().history.len(),
            1,
            "variants keep no history"
        );
        // A variant is no compare-and-set target.
        let cas = match variant(&k, "x", Target::Tag("blue".into())) {
            ConfigCommand::Publish(p) => ConfigCommand::Publish(Publish {
                cas_md5: Some(String::new()),
                ..p
            }),
            other => other,
        };
        assert!(st.apply(&cas).is_err());
        // Deleting the config leaves its variants; deleting a variant leaves the rest.
        st.apply(&delete(&k, None, 2)).unwrap();
        assert_eq!(st.md5_for(&k, reader("10.0.0.8", None)), "");
        assert_eq!(shown(&st, "10.0.0.7", None).unwrap().0, "gray");
        let stop_beta = ConfigCommand::Delete {
            targets: vec![(k.clone(), None)],
            src_user: String::new(),
            src_ip: String::new(),
            time_ms: 3,
            of: Target::Beta(Vec::new()),
        };
        assert_eq!(st.apply(&stop_beta).unwrap(), vec![k.clone()]);
        assert!(!st.has_beta(&k));
        assert_eq!(st.apply(&stop_beta).unwrap(), Vec::<ConfigKey>::new());
        assert_eq!(shown(&st, "10.0.0.8", Some("blue")).unwrap().0, "blue");
        // A rebuilt state never reuses a variant's id.
        let rebuilt = ConfigState::from_records(st.records().map(|(k, r)| (k.clone(), r.clone())));
        assert!(rebuilt.last_id() >= st.tag(&k, "blue").unwrap().id);
    }

    #[test]
    fn c2_content_must_not_be_blank_or_over_the_limit_and_types_default_to_text() {
        assert!(check_publish(" \n", None, None, None, None, None).is_err());
        assert!(check_publish(&"x".repeat(MAX_CONTENT + 1), None, None, None, None, None).is_err());
        assert_eq!(
            check_publish("x", Some("YAML"), None, None, None, None).unwrap(),
            "yaml"
        );
        assert_eq!(
            check_publish("x", Some("exe"), None, None, None, None).unwrap(),
            "text"
        );
        assert!(check_publish("x", None, Some(&"d".repeat(129)), None, None, None).is_err());
        assert!(check_publish("x", None, None, Some("a,b,c,d,e,f"), None, None).is_err());
        assert!(check_publish("x", None, None, Some("a,b"), None, None).is_ok());
        let mut st = ConfigState::default();
        assert_eq!(st.md5(&key("d")), "");
        st.apply(&publish(&key("d"), "hello", 1)).unwrap();
        assert_eq!(st.md5(&key("d")), "5d41402abc4b2a76b9719d911017c592");
    }

    #[test]
    fn c3_replicas_applying_the_same_commands_agree_and_a_rebuilt_state_continues_the_ids() {
        let cmds = [
            publish(&key("a"), "1", 10),
            publish(&key("b"), "2", 11),
            publish(&key("a"), "3", 12),
            delete(&key("b"), None, 13),
        ];
        let (mut x, mut y) = (ConfigState::default(), ConfigState::default());
        for c in &cmds {
            assert_eq!(x.apply(c), y.apply(c));
        }
        assert_eq!(x, y);
        let rebuilt = ConfigState::from_records(x.records().map(|(k, r)| (k.clone(), r.clone())));
        assert_eq!(rebuilt, x, "ids continue where they were");
        x.apply(&publish(&key("c"), "4", 14)).unwrap();
        let mut r2 = rebuilt;
        r2.apply(&publish(&key("c"), "4", 14)).unwrap();
        assert_eq!(r2, x);
    }

    #[test]
    fn c4_history_records_inserts_updates_and_deletes_and_keeps_a_window() {
        let mut st = ConfigState::default();
        let k = key("h");
        st.apply(&publish(&k, "v1", 1)).unwrap();
        st.apply(&publish(&k, "v2", 2)).unwrap();
        assert_eq!(st.apply(&delete(&k, None, 3)).unwrap(), vec![k.clone()]);
        assert!(st.get(&k).is_none());
        let h = &st.record(&k).unwrap().history;
        let ops: Vec<(char, &str)> = h.iter().map(|e| (e.op, e.content.as_str())).collect();
        assert_eq!(ops, vec![('I', "v1"), ('U', "v2"), ('D', "v2")]);
        let (_, prev) = st.previous_entry(h[2].nid).unwrap();
        assert_eq!(prev.content, "v2");
        assert!(st.previous_entry(h[0].nid).is_none());
        // Deleting again changes nothing.
        assert!(st.apply(&delete(&k, None, 4)).unwrap().is_empty());
        for i in 0..(HISTORY_KEPT + 10) {
            st.apply(&publish(&k, &format!("v{i}"), 10 + i as u64))
                .unwrap();
        }
        let h = &st.record(&k).unwrap().history;
        assert_eq!(h.len(), HISTORY_KEPT);
        assert!(st.history_entry(h[0].nid).is_some());
        assert_eq!(
            st.by_nid.len(),
            HISTORY_KEPT,
            "evicted entries leave the index"
        );
    }

    #[test]
    fn c4_a_batch_delete_by_id_spares_a_config_created_again() {
        let mut st = ConfigState::default();
        let k = key("again");
        st.apply(&publish(&k, "v1", 1)).unwrap();
        let old_id = st.get(&k).unwrap().id;
        st.apply(&delete(&k, None, 2)).unwrap();
        st.apply(&publish(&k, "v2", 3)).unwrap();
        assert_ne!(st.get(&k).unwrap().id, old_id);
        assert!(st.apply(&delete(&k, Some(old_id), 4)).unwrap().is_empty());
        assert_eq!(st.get(&k).unwrap().content, "v2");
    }

    #[test]
    fn c5_a_cas_publish_applies_only_over_the_md5_it_names() {
        let mut st = ConfigState::default();
        let k = key("cas");
        let cas = |content: &str, md5: &str| match publish(&k, content, 5) {
            ConfigCommand::Publish(mut p) => {
                p.cas_md5 = Some(md5.into());
                ConfigCommand::Publish(p)
            }
            other => other,
        };
        assert!(matches!(
            st.apply(&cas("v1", "abc")),
            Err(NamingError::Conflict(_))
        ));
        assert!(st.get(&k).is_none(), "nothing stored");
        st.apply(&cas("v1", "")).unwrap();
        let md5 = st.md5(&k).to_string();
        assert!(st.apply(&cas("v2", "stale")).is_err());
        assert_eq!(st.get(&k).unwrap().content, "v1");
        st.apply(&cas("v2", &md5)).unwrap();
        assert_eq!(st.get(&k).unwrap().content, "v2");
    }

    #[test]
    fn wildcards_match_runs_of_characters() {
        assert!(wildcard_match("app*", "app.yaml"));
        assert!(wildcard_match("*.yaml", "app.yaml"));
        assert!(wildcard_match("a*p*l", "a-p-l"));
        assert!(wildcard_match("*", ""));
        assert!(!wildcard_match("app*", "ap"));
        assert!(!wildcard_match("a*a", "a"));
        assert!(wildcard_match("exact", "exact"));
    }
}
