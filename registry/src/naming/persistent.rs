//! The persistent (CP) naming state and the commands that change it.
//!
//! This is the Raft state machine's application logic: `apply` is deterministic (every input,
//! including timestamps, travels inside the command), so every replica that applies the same log
//! reaches the same state. Rejections are returned as values, not errors, because they are part
//! of the replicated outcome.

use std::collections::BTreeMap;

use nacre_ring::ServiceKey;
use serde::{Deserialize, Serialize};

use super::error::NamingError;
use super::model::{ClusterMeta, Instance, Metadata, Namespace, Selector, ServiceMeta};

/// How a persistent instance write treats an existing entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PutMode {
    /// Insert or replace (keeps the existing health flag and instance id).
    Upsert,
    /// Replace only; the service and instance must exist.
    UpdateExisting,
}

/// Fields of a partial instance update; `None` leaves the field unchanged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstancePatch {
    /// New metadata (replaces the old map).
    pub metadata: Option<Metadata>,
    /// New app name.
    pub app: Option<String>,
    /// New weight.
    pub weight: Option<f64>,
    /// New health flag.
    pub healthy: Option<bool>,
    /// New enabled flag.
    pub enabled: Option<bool>,
}

/// Service fields a `PUT /service` replaces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceUpdate {
    /// New protect threshold.
    pub protect_threshold: f64,
    /// New metadata (replaces; empty clears).
    pub metadata: Metadata,
    /// New selector, when given.
    pub selector: Option<Selector>,
}

/// A change to the persistent state, as stored in the Raft log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Create a service; fails if it exists (persistently, or ephemerally as `exists_elsewhere`).
    CreateService {
        /// Service.
        key: ServiceKey,
        /// Initial settings.
        meta: ServiceMeta,
        /// The proposer saw the service in the ephemeral store.
        exists_elsewhere: bool,
    },
    /// Update a service's settings; creates the persistent record when the service only existed
    /// ephemerally (`exists_elsewhere`).
    UpdateService {
        /// Service.
        key: ServiceKey,
        /// New values.
        update: ServiceUpdate,
        /// The proposer saw the service in the ephemeral store.
        exists_elsewhere: bool,
    },
    /// Set the settings of one cluster of a service.
    UpdateCluster {
        /// Service.
        key: ServiceKey,
        /// Cluster name.
        cluster: String,
        /// New settings.
        meta: ClusterMeta,
        /// The proposer saw the service in the ephemeral store.
        exists_elsewhere: bool,
    },
    /// Delete a service and its persistent instances.
    DeleteService {
        /// Service.
        key: ServiceKey,
        /// The proposer saw the service in the ephemeral store.
        exists_elsewhere: bool,
    },
    /// Register or update a persistent instance (creates the service when absent).
    PutInstance {
        /// Service.
        key: ServiceKey,
        /// The instance as the proposer built it (timestamps included).
        instance: Instance,
        /// Upsert or update-only.
        mode: PutMode,
    },
    /// Partially update a persistent instance.
    PatchInstance {
        /// Service.
        key: ServiceKey,
        /// Instance ip.
        ip: String,
        /// Instance port.
        port: u16,
        /// Instance cluster.
        cluster: String,
        /// Fields to change.
        patch: InstancePatch,
        /// Proposer's clock, recorded as the instance's last beat.
        now_ms: u64,
    },
    /// Remove a persistent instance (idempotent).
    RemoveInstance {
        /// Service.
        key: ServiceKey,
        /// Instance ip.
        ip: String,
        /// Instance port.
        port: u16,
        /// Instance cluster.
        cluster: String,
    },
    /// Create a namespace.
    CreateNamespace(Namespace),
    /// Change a namespace's name and description.
    UpdateNamespace(Namespace),
    /// Delete a namespace record (its services are left alone, as in Nacos).
    DeleteNamespace {
        /// Namespace id.
        id: String,
    },
    /// Change users, roles, permissions or the token key (see [`crate::auth`]).
    Auth(crate::auth::AuthCommand),
    /// A config-center change.
    Config(crate::configs::ConfigCommand),
    /// Commands proposed together in one entry (see `raft::propose`, rule B3): applied in
    /// order, each with its own result in [`CommandOutput::batch`].
    Batch(Vec<Command>),
}

impl Command {
    /// Roughly how many bytes the command carries beyond its fixed fields: the config contents
    /// (everything else is small). Bounds batches and in-memory log caches.
    pub fn weight(&self) -> usize {
        use crate::configs::ConfigCommand;
        match self {
            Command::Config(ConfigCommand::Publish(p)) => p.content.len(),
            Command::Config(ConfigCommand::Import { items, .. }) => {
                items.iter().map(|p| p.content.len()).sum()
            }
            Command::Batch(cmds) => cmds.iter().map(Command::weight).sum(),
            _ => 0,
        }
    }
}

/// The outcome of applying one command.
pub type CommandResult = Result<CommandOutput, NamingError>;

/// What a successfully applied command reports back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CommandOutput {
    /// Services whose visible state changed (drives push and cache invalidation).
    pub changed: Vec<ServiceKey>,
    /// Configs whose record changed (wakes listeners; rows to rewrite).
    #[serde(default)]
    pub configs: Vec<crate::configs::ConfigKey>,
    /// For a [`Command::Batch`]: each command's own result, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch: Vec<CommandResult>,
}

impl CommandOutput {
    fn changed(key: &ServiceKey) -> Self {
        Self {
            changed: vec![key.clone()],
            ..Self::default()
        }
    }
}

/// A persistent service: settings plus persistent instances in registration order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PersistentService {
    /// Settings.
    pub meta: ServiceMeta,
    /// Persistent instances.
    pub instances: Vec<Instance>,
}

/// The whole persistent state of a node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PersistentState {
    services: BTreeMap<ServiceKey, PersistentService>,
    namespaces: BTreeMap<String, Namespace>,
    auth: crate::auth::AuthState,
    configs: crate::configs::ConfigState,
}

/// The serialised form of [`PersistentState`] (JSON maps need string keys).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct PersistentSnapshot {
    /// Services with their instances.
    pub services: Vec<(ServiceKey, PersistentService)>,
    /// Namespaces.
    pub namespaces: Vec<Namespace>,
    /// Users, roles, permissions and the token key (absent in snapshots of older versions).
    #[serde(default)]
    pub auth: crate::auth::AuthState,
    /// Configs with their history (absent in snapshots of older versions).
    #[serde(default)]
    pub configs: Vec<(crate::configs::ConfigKey, crate::configs::ConfigRecord)>,
}

impl PersistentState {
    /// Rebuilds state from its serialised form.
    pub fn from_snapshot(s: PersistentSnapshot) -> Self {
        Self {
            services: s.services.into_iter().collect(),
            namespaces: s
                .namespaces
                .into_iter()
                .map(|n| (n.id.clone(), n))
                .collect(),
            auth: s.auth,
            configs: crate::configs::ConfigState::from_records(s.configs),
        }
    }

    /// The serialised form of the state.
    pub fn to_snapshot(&self) -> PersistentSnapshot {
        PersistentSnapshot {
            services: self
                .services
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            namespaces: self.namespaces.values().cloned().collect(),
            auth: self.auth.clone(),
            configs: self
                .configs
                .records()
                .map(|(k, r)| (k.clone(), r.clone()))
                .collect(),
        }
    }

    /// Configs and their history.
    pub fn configs(&self) -> &crate::configs::ConfigState {
        &self.configs
    }

    /// Users, roles, permissions and the token key.
    pub fn auth(&self) -> &crate::auth::AuthState {
        &self.auth
    }

    /// One persistent service.
    pub fn service(&self, key: &ServiceKey) -> Option<&PersistentService> {
        self.services.get(key)
    }

    /// All persistent services, ordered by key.
    pub fn services(&self) -> impl Iterator<Item = (&ServiceKey, &PersistentService)> {
        self.services.iter()
    }

    /// User-created namespaces, ordered by id.
    pub fn namespaces(&self) -> impl Iterator<Item = &Namespace> {
        self.namespaces.values()
    }

    /// One namespace.
    pub fn namespace(&self, id: &str) -> Option<&Namespace> {
        self.namespaces.get(id)
    }

    /// Number of persistent instances across all services.
    pub fn instance_count(&self) -> usize {
        self.services.values().map(|s| s.instances.len()).sum()
    }

    /// Applies one command. Deterministic: same state + same command → same result.
    pub fn apply(&mut self, cmd: &Command) -> CommandResult {
        match cmd {
            Command::CreateService {
                key,
                meta,
                exists_elsewhere,
            } => {
                // A retried create (the first one committed behind a timeout) must not report
                // a failure: the same settings again are the same outcome.
                if let Some(existing) = self.services.get(key) {
                    if existing.meta == *meta && !*exists_elsewhere {
                        return Ok(CommandOutput::default());
                    }
                }
                if *exists_elsewhere || self.services.contains_key(key) {
                    return Err(NamingError::bad(format!(
                        "specified service already exists, serviceName : {}",
                        key.grouped()
                    )));
                }
                self.services.insert(
                    key.clone(),
                    PersistentService {
                        meta: meta.clone(),
                        instances: Vec::new(),
                    },
                );
                Ok(CommandOutput::changed(key))
            }
            Command::UpdateService {
                key,
                update,
                exists_elsewhere,
            } => {
                let svc = match self.services.get_mut(key) {
                    Some(s) => s,
                    None if *exists_elsewhere => self.services.entry(key.clone()).or_default(),
                    None => {
                        return Err(NamingError::bad(format!(
                            "service {} not found!",
                            key.grouped()
                        )))
                    }
                };
                svc.meta.protect_threshold = update.protect_threshold;
                svc.meta.metadata = update.metadata.clone();
                if let Some(sel) = &update.selector {
                    svc.meta.selector = sel.clone();
                }
                Ok(CommandOutput::changed(key))
            }
            Command::UpdateCluster {
                key,
                cluster,
                meta,
                exists_elsewhere,
            } => {
                let svc = match self.services.get_mut(key) {
                    Some(s) => s,
                    None if *exists_elsewhere => self.services.entry(key.clone()).or_default(),
                    None => {
                        return Err(NamingError::bad(format!(
                            "service not found:{}",
                            key.grouped()
                        )))
                    }
                };
                svc.meta.clusters.insert(cluster.clone(), meta.clone());
                Ok(CommandOutput::changed(key))
            }
            Command::DeleteService {
                key,
                exists_elsewhere,
            } => {
                if self.services.remove(key).is_none() && !*exists_elsewhere {
                    return Err(NamingError::bad(format!(
                        "specified service not exist, serviceName : {}",
                        key.grouped()
                    )));
                }
                Ok(CommandOutput::changed(key))
            }
            Command::PutInstance {
                key,
                instance,
                mode,
            } => self.put_instance(key, instance, *mode),
            Command::PatchInstance {
                key,
                ip,
                port,
                cluster,
                patch,
                now_ms,
            } => {
                let inst = self
                    .services
                    .get_mut(key)
                    .and_then(|s| {
                        s.instances
                            .iter_mut()
                            .find(|i| i.matches(ip, *port, cluster))
                    })
                    .ok_or_else(|| NamingError::bad("instance not found"))?;
                apply_patch(inst, patch, *now_ms);
                Ok(CommandOutput::changed(key))
            }
            Command::RemoveInstance {
                key,
                ip,
                port,
                cluster,
            } => {
                if let Some(svc) = self.services.get_mut(key) {
                    let before = svc.instances.len();
                    svc.instances.retain(|i| !i.matches(ip, *port, cluster));
                    if svc.instances.len() != before {
                        return Ok(CommandOutput::changed(key));
                    }
                }
                Ok(CommandOutput::default())
            }
            Command::CreateNamespace(ns) => {
                // A retried create with the same fields is the same outcome, not an error.
                if self.namespaces.get(&ns.id) == Some(ns) {
                    return Ok(CommandOutput::default());
                }
                if ns.id == nacre_ring::DEFAULT_NAMESPACE || self.namespaces.contains_key(&ns.id) {
                    return Err(NamingError::bad(format!(
                        "namespace already exists, namespaceId : {}",
                        ns.id
                    )));
                }
                self.namespaces.insert(ns.id.clone(), ns.clone());
                Ok(CommandOutput::default())
            }
            Command::UpdateNamespace(ns) => match self.namespaces.get_mut(&ns.id) {
                Some(existing) => {
                    *existing = ns.clone();
                    Ok(CommandOutput::default())
                }
                None => Err(NamingError::bad(format!(
                    "namespace not exist, namespaceId : {}",
                    ns.id
                ))),
            },
            Command::DeleteNamespace { id } => {
                if self.namespaces.remove(id).is_none() {
                    return Err(NamingError::bad(format!(
                        "namespace not exist, namespaceId : {id}"
                    )));
                }
                Ok(CommandOutput::default())
            }
            Command::Auth(cmd) => self
                .auth
                .apply(cmd)
                .map(|()| CommandOutput::default())
                .map_err(NamingError::bad),
            Command::Config(cmd) => self.configs.apply(cmd).map(|configs| CommandOutput {
                configs,
                ..CommandOutput::default()
            }),
            Command::Batch(cmds) => {
                // Rule B3 of `raft::propose`: each command on the state the previous one left,
                // a refusal refusing only itself.
                let mut out = CommandOutput::default();
                for cmd in cmds {
                    let res = self.apply(cmd);
                    if let Ok(o) = &res {
                        out.changed.extend(o.changed.iter().cloned());
                        out.configs.extend(o.configs.iter().cloned());
                    }
                    out.batch.push(res);
                }
                out.changed.sort();
                out.changed.dedup();
                out.configs.sort();
                out.configs.dedup();
                Ok(out)
            }
        }
    }

    fn put_instance(
        &mut self,
        key: &ServiceKey,
        instance: &Instance,
        mode: PutMode,
    ) -> CommandResult {
        let svc = match (self.services.get_mut(key), mode) {
            (Some(s), _) => s,
            (None, PutMode::Upsert) => self.services.entry(key.clone()).or_default(),
            (None, PutMode::UpdateExisting) => return Err(service_not_found(key)),
        };
        put_into(&mut svc.instances, instance.clone(), mode)?;
        svc.meta
            .clusters
            .entry(instance.cluster.to_string())
            .or_default();
        Ok(CommandOutput::changed(key))
    }
}

/// The error for an update of an instance whose service does not exist.
pub fn service_not_found(key: &ServiceKey) -> NamingError {
    NamingError::bad(format!(
        "service not found, namespace: {}, service: {}",
        key.namespace,
        key.grouped()
    ))
}

/// Inserts or replaces `instance` in one service's list, with Nacos's re-registration rules
/// (shared by the ephemeral store and the persistent state machine): an existing instance keeps
/// its health and id, since `healthy` only seeds brand-new instances; a new one with the
/// snowflake generator takes the smallest free integer id.
pub fn put_into(
    list: &mut Vec<Instance>,
    instance: Instance,
    mode: PutMode,
) -> Result<(), NamingError> {
    let at = list
        .iter()
        .position(|i| i.matches(&instance.ip, instance.port, &instance.cluster));
    put_at(list, at, instance, mode)
}

/// [`put_into`] with the instance's current position already known (`None`: not in the list);
/// a new instance is appended at the end.
pub fn put_at(
    list: &mut Vec<Instance>,
    at: Option<usize>,
    mut instance: Instance,
    mode: PutMode,
) -> Result<(), NamingError> {
    match at.and_then(|at| list.get_mut(at)) {
        Some(old) => {
            debug_assert!(old.matches(&instance.ip, instance.port, &instance.cluster));
            instance.healthy = old.healthy;
            instance.instance_id = std::mem::take(&mut old.instance_id);
            *old = instance;
        }
        None if mode == PutMode::UpdateExisting => {
            return Err(NamingError::bad(format!(
                "instance not exist: {}",
                instance.key()
            )))
        }
        None => {
            if instance.uses_snowflake_ids() {
                instance.instance_id = super::select::smallest_free_id(list).into();
            }
            super::model::push_compact(list, instance);
        }
    }
    Ok(())
}

/// Applies the non-`None` fields of a patch to an instance.
pub fn apply_patch(inst: &mut Instance, patch: &InstancePatch, now_ms: u64) {
    if let Some(m) = &patch.metadata {
        inst.metadata = m.clone().into();
    }
    if let Some(a) = &patch.app {
        inst.app = a.as_str().into();
    }
    if let Some(w) = patch.weight {
        inst.weight = w;
    }
    if let Some(h) = patch.healthy {
        inst.healthy = h;
    }
    if let Some(e) = patch.enabled {
        inst.enabled = e;
    }
    inst.last_beat_ms = now_ms;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ServiceKey {
        ServiceKey::new("public", "DEFAULT_GROUP", "orders")
    }

    fn inst(ip: &str, port: u16) -> Instance {
        crate::naming::model::test_instance(ip, port, "DEFAULT", false)
    }

    #[test]
    fn a_retried_create_succeeds_and_a_conflicting_one_is_rejected_without_change() {
        let mut st = PersistentState::default();
        let c = Command::CreateService {
            key: key(),
            meta: ServiceMeta::default(),
            exists_elsewhere: false,
        };
        assert!(st.apply(&c).is_ok());
        let before = st.clone();
        // The client's retry of a create that committed: the same outcome, nothing changes.
        let again = st.apply(&c).expect("a retried create succeeds");
        assert!(again.changed.is_empty());
        assert_eq!(st, before);
        // Other settings for an existing service: still the Nacos error.
        let other = Command::CreateService {
            key: key(),
            meta: ServiceMeta {
                protect_threshold: 0.5,
                ..ServiceMeta::default()
            },
            exists_elsewhere: false,
        };
        assert!(matches!(st.apply(&other), Err(NamingError::BadRequest(_))));
        assert_eq!(st, before);
        // Namespaces: a retried create succeeds, a different one with the same id does not.
        let ns = Namespace {
            id: "dev".into(),
            show_name: "Dev".into(),
            desc: String::new(),
        };
        st.apply(&Command::CreateNamespace(ns.clone())).unwrap();
        st.apply(&Command::CreateNamespace(ns.clone()))
            .expect("a retried namespace create succeeds");
        let renamed = Namespace {
            show_name: "Other".into(),
            ..ns
        };
        assert!(st.apply(&Command::CreateNamespace(renamed)).is_err());
    }

    #[test]
    fn reregistration_keeps_health_and_id() {
        let mut st = PersistentState::default();
        let mut a = inst("10.0.0.1", 80);
        st.apply(&Command::PutInstance {
            key: key(),
            instance: a.clone(),
            mode: PutMode::Upsert,
        })
        .unwrap();
        st.services.get_mut(&key()).unwrap().instances[0].healthy = false;
        a.weight = 3.0;
        a.healthy = true;
        a.instance_id = "other".into();
        st.apply(&Command::PutInstance {
            key: key(),
            instance: a,
            mode: PutMode::Upsert,
        })
        .unwrap();
        let got = &st.service(&key()).unwrap().instances[0];
        assert_eq!(got.weight, 3.0);
        assert!(!got.healthy);
        assert_eq!(got.instance_id, "10.0.0.1#80#DEFAULT#DEFAULT_GROUP@@orders");
    }

    #[test]
    fn update_existing_requires_instance() {
        let mut st = PersistentState::default();
        let r = st.apply(&Command::PutInstance {
            key: key(),
            instance: inst("10.0.0.1", 80),
            mode: PutMode::UpdateExisting,
        });
        assert!(r.is_err());
        assert!(st.service(&key()).is_none());
    }

    #[test]
    fn snapshot_round_trips() {
        let mut st = PersistentState::default();
        st.apply(&Command::PutInstance {
            key: key(),
            instance: inst("10.0.0.1", 80),
            mode: PutMode::Upsert,
        })
        .unwrap();
        st.apply(&Command::CreateNamespace(Namespace {
            id: "dev".into(),
            show_name: "Dev".into(),
            desc: String::new(),
        }))
        .unwrap();
        let config = crate::configs::ConfigKey::new("app.yaml", "G", Some("dev")).unwrap();
        st.apply(&Command::Config(crate::configs::ConfigCommand::Publish(
            crate::configs::Publish {
                key: config.clone(),
                content: "a: 1\n".into(),
                meta: crate::configs::ConfigMeta {
                    kind: "yaml".into(),
                    src_ip: "10.0.0.1".into(),
                    ..Default::default()
                },
                time_ms: 5,
                cas_md5: None,
                target: Default::default(),
            },
        )))
        .unwrap();
        let json = serde_json::to_string(&st.to_snapshot()).unwrap();
        let back = PersistentState::from_snapshot(serde_json::from_str(&json).unwrap());
        assert_eq!(back, st);
        assert_eq!(back.configs().get(&config).unwrap().content, "a: 1\n");
    }

    #[test]
    fn remove_is_idempotent() {
        let mut st = PersistentState::default();
        let rm = Command::RemoveInstance {
            key: key(),
            ip: "10.0.0.1".into(),
            port: 80,
            cluster: "DEFAULT".into(),
        };
        assert_eq!(st.apply(&rm), Ok(CommandOutput::default()));
    }
}
