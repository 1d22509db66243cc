//! The registry node's domain facade.
//!
//! HTTP handlers call these methods with already parsed and validated values; this module picks
//! the store (ephemeral in memory, persistent through Raft), applies Nacos's semantics and
//! triggers pushes. It knows nothing about HTTP.

use std::borrow::Cow;
use std::sync::Arc;

use nacre_config::RegistrySettings;
use nacre_ring::ServiceKey;

use crate::clock::Clock;
use crate::distro::{Ack, BeatOutcome, Distro, EphemeralStore, ServiceRecord};
use crate::membership::Membership;
use crate::metrics::Metrics;
use crate::naming::model::{
    ClusterMeta, CompactString, Instance, InstanceKey, Metadata, Namespace, ServiceMeta,
    SharedMetadata,
};
use crate::naming::persistent::{Command, InstancePatch, PutMode, ServiceUpdate};
use crate::naming::{validate, NamingError};
use crate::push::{PushHub, Subscriber};
use crate::raft::{PersistentStore, WriteError};

/// A lag (rule G1 in [`crate::overload`]) this long at an expiry tick is logged: the node is
/// far enough behind that clients notice.
const LAG_WORTH_A_WARNING_MS: u64 = 1_000;

/// Why a node operation failed, by what the caller should answer.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The client's request was refused by the domain (400/404).
    #[error(transparent)]
    Naming(#[from] NamingError),
    /// The persistent store cannot take writes right now (no leader, no quorum): retry later.
    #[error("{0}")]
    Unavailable(String),
    /// Something broke inside the node.
    #[error("{0}")]
    Internal(String),
}

impl From<WriteError> for NodeError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::NotLeader { leader } => NodeError::Unavailable(match leader {
                Some(l) => format!("not the raft leader, leader is {l}"),
                None => "no raft leader elected yet".to_string(),
            }),
            WriteError::Unavailable(m) => NodeError::Unavailable(m),
            WriteError::Fatal(m) => NodeError::Internal(m),
        }
    }
}

/// The `beat` JSON body a client may send (Nacos "RsInfo"); unknown fields are ignored. It
/// borrows from the request text: a beat for a known instance copies nothing out of it.
#[derive(Debug, Clone, Default)]
pub struct BeatBody<'a> {
    /// Instance ip.
    pub ip: Option<Cow<'a, str>>,
    /// Instance port.
    pub port: Option<u16>,
    /// Weight (Nacos defaults a missing one to 0.0 when re-registering).
    pub weight: Option<f64>,
    /// Cluster; overrides the `clusterName` parameter when non-blank.
    pub cluster: Option<Cow<'a, str>>,
    /// Metadata as the client sent it: a JSON object of scalars (checked when the body was
    /// read), turned into a map only when the beat registers the instance.
    pub metadata: Option<&'a serde_json::value::RawValue>,
    /// Ephemeral flag (default true).
    pub ephemeral: Option<bool>,
}

/// A beat as received, borrowing from the request.
#[derive(Debug, Clone)]
pub struct Beat<'a> {
    /// `ip` parameter.
    pub ip: &'a str,
    /// `port` parameter.
    pub port: u16,
    /// `clusterName` parameter (already defaulted).
    pub cluster: &'a str,
    /// Parsed `beat` body.
    pub body: Option<BeatBody<'a>>,
}

/// The answer to a beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeatReply {
    /// Known instance: beat at this interval.
    Ok {
        /// Interval in ms.
        interval_ms: u64,
    },
    /// Unknown instance and no body to re-register it from (Nacos code 20404).
    NotFound {
        /// Interval in ms.
        interval_ms: u64,
    },
}

/// A read-only view of one service, merged from both stores.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceView {
    /// Settings (defaults for services that exist only ephemerally).
    pub meta: ServiceMeta,
    /// Ephemeral instances first, then persistent ones.
    pub instances: Vec<Instance>,
}

impl ServiceView {
    /// Names of all clusters: configured ones plus those instances name, sorted.
    pub fn cluster_names(&self) -> Vec<String> {
        let mut names: std::collections::BTreeSet<String> =
            self.meta.clusters.keys().cloned().collect();
        names.extend(self.instances.iter().map(|i| i.cluster.to_string()));
        names.into_iter().collect()
    }

    /// Settings of one cluster (defaults when only implied by instances).
    pub fn cluster_meta(&self, name: &str) -> Option<ClusterMeta> {
        match self.meta.clusters.get(name) {
            Some(c) => Some(c.clone()),
            None => self
                .instances
                .iter()
                .any(|i| i.cluster == name)
                .then(ClusterMeta::default),
        }
    }
}

/// One registry node's state and stores.
pub struct Node {
    settings: RegistrySettings,
    distro: Distro,
    persistent: PersistentStore,
    push: Option<Arc<PushHub>>,
    metrics: Metrics,
    clock: Clock,
    health: crate::health::HealthOverlay,
    changes: Arc<crate::changes::Changes>,
    overload: Arc<crate::overload::Overload>,
    /// A lag worth a warning was logged and has not ended yet.
    lag_warned: std::sync::atomic::AtomicBool,
}

impl Node {
    /// Assembles a node from its parts.
    pub fn new(
        settings: RegistrySettings,
        distro: Distro,
        persistent: PersistentStore,
        push: Option<Arc<PushHub>>,
        metrics: Metrics,
        clock: Clock,
        changes: Arc<crate::changes::Changes>,
    ) -> Self {
        let overload = Arc::new(crate::overload::Overload::new(
            std::time::Duration::from_millis(settings.overload_lag_ms),
        ));
        Self {
            settings,
            distro,
            persistent,
            push,
            metrics,
            clock,
            health: crate::health::HealthOverlay::new(),
            changes,
            overload,
            lag_warned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn ephemeral(&self) -> &EphemeralStore {
        self.distro.store()
    }

    /// How late this node runs and which reads it turns away (see [`crate::overload`]).
    pub fn overload(&self) -> &Arc<crate::overload::Overload> {
        &self.overload
    }

    /// The ephemeral side (store, replication, verify).
    pub fn distro(&self) -> &Distro {
        &self.distro
    }

    /// The membership view.
    pub fn membership(&self) -> &Membership {
        self.distro.membership()
    }

    /// Applies service records sent by a peer and notifies subscribers of what changed.
    pub fn apply_remote(&self, records: Vec<ServiceRecord>) -> crate::distro::Received {
        let received = self.distro.apply_remote(records, self.now_ms());
        for k in &received.changed {
            self.changed(k);
        }
        received
    }

    /// Probe results for persistent instances.
    pub fn health_overlay(&self) -> &crate::health::HealthOverlay {
        &self.health
    }

    /// Records that a health check flipped a persistent instance.
    pub fn health_flipped(&self, key: &ServiceKey, id: &InstanceKey, healthy: bool) {
        let result = if healthy { "healthy" } else { "unhealthy" };
        self.metrics.health_flips.with_label_values(&[result]).inc();
        tracing::info!(service = %key, instance = %id, result, "health check changed instance health");
        self.changed(key);
    }

    /// Settings the node runs with.
    pub fn settings(&self) -> &RegistrySettings {
        &self.settings
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The persistent store.
    pub fn persistent(&self) -> &PersistentStore {
        &self.persistent
    }

    /// The push hub, when push is enabled.
    pub fn push(&self) -> Option<&Arc<PushHub>> {
        self.push.as_ref()
    }

    /// Current time (ms).
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Ready to serve: the ephemeral snapshot is loaded and the persistent store has caught up.
    /// Both hold for good once reached (see [`PersistentStore::is_ready`]).
    pub fn is_ready(&self) -> bool {
        self.distro.is_loaded() && self.persistent.is_ready()
    }

    /// Ready and counted a member by a majority of the cluster it reaches: the standing to
    /// take client writes (rule O3). Always true when standalone.
    pub fn has_standing(&self) -> bool {
        self.distro.standing(self.is_ready()).may_serve()
    }

    /// Forgets the change generations of services that exist nowhere any more.
    pub fn prune_changes(&self) -> usize {
        self.changes.prune(|k| self.exists(k))
    }

    /// Change generations of services (for caches of rendered answers).
    pub fn changes(&self) -> &crate::changes::Changes {
        &self.changes
    }

    /// Records a visible change of `key` that arrived here (replicated, expired, a health
    /// flip) and notifies push subscribers. Persistent changes are recorded by the Raft apply
    /// hook instead (see `server.rs`).
    pub fn changed(&self, key: &ServiceKey) {
        self.changes.bump(key);
        if let Some(p) = &self.push {
            p.service_changed(key);
        }
    }

    /// A change made on this node to an ephemeral service (to instance `id` only, or to the
    /// service as a whole): subscribers and peers hear of it.
    fn ephemeral_changed(&self, key: &ServiceKey, id: Option<&InstanceKey>) {
        self.changed(key);
        self.distro.local_change(key, id);
    }

    /// A client's write to instance `id` of an ephemeral service: like
    /// [`Self::ephemeral_changed`], and unless `ack` says the client reads from this node
    /// anyway, the answer waits until live peers have it (rule V3: read-your-writes through any
    /// node).
    async fn client_wrote(&self, key: &ServiceKey, id: &InstanceKey, ack: Ack) {
        self.changed(key);
        self.distro.client_write(key, id, ack).await;
    }

    /// Proposes a config change through Raft; answers once it is applied here and on the live
    /// members (read-your-writes through any node). Returns the configs it changed.
    pub async fn propose_config(
        &self,
        cmd: crate::configs::ConfigCommand,
    ) -> Result<Vec<crate::configs::ConfigKey>, NodeError> {
        Ok(self.persistent.write(Command::Config(cmd)).await??.configs)
    }

    /// Proposes a persistent change. Pushes are triggered by the store's apply hook, which runs
    /// on every replica, so nothing is notified here.
    async fn propose(&self, cmd: Command) -> Result<(), NodeError> {
        self.persistent.write(cmd).await??;
        Ok(())
    }

    /// Stamps what the node, not the client, decides: the default instance id and the
    /// registration time.
    fn stamp(&self, key: &ServiceKey, mut inst: Instance) -> Instance {
        inst.instance_id = compact_str::format_compact!(
            "{}#{}#{}#{}",
            inst.ip,
            inst.port,
            inst.cluster,
            key.grouped()
        );
        inst.last_beat_ms = self.now_ms();
        inst
    }

    /// Registers (or replaces) an instance as the client described it; its `instance_id` and
    /// `last_beat_ms` are assigned here.
    pub async fn register(
        &self,
        key: &ServiceKey,
        spec: Instance,
        ack: Ack,
    ) -> Result<(), NodeError> {
        validate::service_name(&key.grouped())?;
        self.put(key, spec, PutMode::Upsert, ack).await
    }

    /// Updates an instance; with `must_exist` (Java ≥ 1.0 clients) it must already be there.
    pub async fn update(
        &self,
        key: &ServiceKey,
        spec: Instance,
        must_exist: bool,
        ack: Ack,
    ) -> Result<(), NodeError> {
        if must_exist {
            self.put(key, spec, PutMode::UpdateExisting, ack).await
        } else {
            self.register(key, spec, ack).await
        }
    }

    async fn put(
        &self,
        key: &ServiceKey,
        spec: Instance,
        mode: PutMode,
        ack: Ack,
    ) -> Result<(), NodeError> {
        let inst = self.stamp(key, spec);
        if !inst.ephemeral {
            return self
                .propose(Command::PutInstance {
                    key: key.clone(),
                    instance: inst,
                    mode,
                })
                .await;
        }
        let id = inst.key();
        self.ephemeral().put(key, inst, mode, self.now_ms())?;
        self.client_wrote(key, &id, ack).await;
        Ok(())
    }

    /// Applies the given fields to an existing instance (ephemeral first, then persistent).
    pub async fn patch(
        &self,
        key: &ServiceKey,
        id: &InstanceKey,
        patch: InstancePatch,
        ack: Ack,
    ) -> Result<(), NodeError> {
        let now = self.now_ms();
        if self.ephemeral().patch(key, id, &patch, now).is_ok() {
            self.client_wrote(key, id, ack).await;
            return Ok(());
        }
        self.patch_persistent(key, id, patch, now).await
    }

    async fn patch_persistent(
        &self,
        key: &ServiceKey,
        id: &InstanceKey,
        patch: InstancePatch,
        now_ms: u64,
    ) -> Result<(), NodeError> {
        self.propose(Command::PatchInstance {
            key: key.clone(),
            ip: id.ip.to_string(),
            port: id.port,
            cluster: id.cluster.to_string(),
            patch,
            now_ms,
        })
        .await
    }

    /// Removes an instance from the chosen list; succeeds when it is already gone.
    pub async fn deregister(
        &self,
        key: &ServiceKey,
        id: &InstanceKey,
        ephemeral: bool,
        ack: Ack,
    ) -> Result<(), NodeError> {
        if ephemeral {
            if self.ephemeral().remove(key, id, self.now_ms()) {
                self.client_wrote(key, id, ack).await;
            }
            return Ok(());
        }
        let present = self.persistent.read(|st| {
            st.service(key).is_some_and(|s| {
                s.instances
                    .iter()
                    .any(|i| i.matches(&id.ip, id.port, &id.cluster))
            })
        });
        if !present {
            return Ok(());
        }
        self.propose(Command::RemoveInstance {
            key: key.clone(),
            ip: id.ip.to_string(),
            port: id.port,
            cluster: id.cluster.to_string(),
        })
        .await
    }

    /// Handles a client beat, re-registering from its body when the instance is unknown.
    pub async fn beat(
        &self,
        key: &ServiceKey,
        beat: Beat<'_>,
        ack: Ack,
    ) -> Result<BeatReply, NodeError> {
        self.metrics.beats.inc();
        let default_interval = crate::naming::model::DEFAULT_BEAT_INTERVAL_MS;
        let (mut ip, mut port, mut cluster) = (beat.ip, beat.port, beat.cluster);
        if let Some(b) = &beat.body {
            if let Some(c) = b
                .cluster
                .as_deref()
                .map(str::trim)
                .filter(|c| !c.is_empty())
            {
                cluster = c;
            }
            if let Some(i) = b.ip.as_deref() {
                ip = i;
            }
            if let Some(p) = b.port {
                port = p;
            }
        }
        // Compact strings: an address or a cluster name of up to 24 bytes is not allocated.
        let id = InstanceKey {
            ip: ip.into(),
            port,
            cluster: cluster.into(),
        };
        let now = self.now_ms();
        match self.ephemeral().beat(key, &id, now) {
            BeatOutcome::Alive {
                interval_ms,
                revived,
            } => {
                if revived {
                    self.ephemeral_changed(key, Some(&id));
                }
                return Ok(BeatReply::Ok { interval_ms });
            }
            BeatOutcome::Unknown => {}
        }
        if let Some(inst) = self.persistent_instance(key, &id) {
            // Persistent instances are not kept alive by beats; answer as Nacos does.
            return Ok(BeatReply::Ok {
                interval_ms: inst.beat_interval_ms(),
            });
        }
        let Some(body) = beat.body else {
            return Ok(BeatReply::NotFound {
                interval_ms: default_interval,
            });
        };
        validate::cluster_name(&id.cluster)?;
        validate::ip(&id.ip)?;
        let spec = Instance {
            ip: id.ip.clone(),
            port: id.port,
            cluster: id.cluster.clone(),
            weight: body.weight.unwrap_or(0.0),
            healthy: true,
            enabled: true,
            ephemeral: body.ephemeral.unwrap_or(true),
            metadata: match body.metadata {
                Some(raw) => validate::json_metadata_text(raw.get())
                    .ok_or_else(|| NamingError::bad("beat metadata must be a JSON object"))?
                    .into(),
                None => SharedMetadata::default(),
            },
            instance_id: CompactString::default(),
            app: "DEFAULT".into(),
            last_beat_ms: 0,
            marked: false,
        };
        validate::check_weight(spec.weight)?;
        let interval_ms = spec.beat_interval_ms();
        self.register(key, spec, ack).await?;
        Ok(BeatReply::Ok { interval_ms })
    }

    fn persistent_instance(&self, key: &ServiceKey, id: &InstanceKey) -> Option<Instance> {
        self.persistent.read(|st| {
            st.service(key).and_then(|s| {
                s.instances
                    .iter()
                    .find(|i| i.matches(&id.ip, id.port, &id.cluster))
                    .cloned()
            })
        })
    }

    /// Sets an instance's health by hand (only for clusters whose checker is `NONE`).
    pub async fn set_health(
        &self,
        key: &ServiceKey,
        id: &InstanceKey,
        healthy: bool,
    ) -> Result<(), NodeError> {
        let view = self
            .view(key)
            .ok_or_else(|| NamingError::bad(format!("service not found: {}", key.grouped())))?;
        let checker = view
            .cluster_meta(&id.cluster)
            .map(|c| c.health_checker.kind)
            .unwrap_or_default();
        if !checker.eq_ignore_ascii_case("NONE") {
            return Err(NamingError::bad(format!(
                "health check is still working, service: {}",
                key.grouped()
            ))
            .into());
        }
        let now = self.now_ms();
        match self.ephemeral().set_health(key, id, healthy, now) {
            Ok(changed) => {
                if changed {
                    self.ephemeral_changed(key, Some(id));
                }
                Ok(())
            }
            Err(_) => {
                let patch = InstancePatch {
                    healthy: Some(healthy),
                    ..Default::default()
                };
                self.patch_persistent(key, id, patch, now).await
            }
        }
    }

    /// Merges (`remove = false`) or removes (`remove = true`) metadata keys on a set of
    /// instances; `targets` of `None` selects every instance of the chosen kinds. Returns the
    /// updated instances as `ip:port:unknown:cluster:ephemeral|persist`.
    pub async fn batch_metadata(
        &self,
        key: &ServiceKey,
        targets: Option<Vec<(InstanceKey, bool)>>,
        kinds: (bool, bool),
        metadata: &Metadata,
        remove: bool,
    ) -> Result<Vec<String>, NodeError> {
        let view = self
            .view(key)
            .ok_or_else(|| NamingError::bad(format!("service not found: {}", key.grouped())))?;
        let chosen: Vec<&Instance> = view
            .instances
            .iter()
            .filter(|i| match &targets {
                Some(t) => t.iter().any(|(id, eph)| {
                    *eph == i.ephemeral && i.matches(&id.ip, id.port, &id.cluster)
                }),
                None => (i.ephemeral && kinds.0) || (!i.ephemeral && kinds.1),
            })
            .collect();
        let now = self.now_ms();
        let mut updated = Vec::with_capacity(chosen.len());
        let mut ephemeral_patched = false;
        for inst in chosen {
            let mut meta = Metadata::clone(&inst.metadata);
            for (k, v) in metadata {
                if remove {
                    meta.remove(k);
                } else {
                    meta.insert(k.clone(), v.clone());
                }
            }
            let patch = InstancePatch {
                metadata: Some(meta),
                ..Default::default()
            };
            let id = inst.key();
            if inst.ephemeral {
                // The instance may have expired since the view was taken: skip it then.
                if self.ephemeral().patch(key, &id, &patch, now).is_err() {
                    continue;
                }
                ephemeral_patched = true;
            } else {
                self.patch_persistent(key, &id, patch, now).await?;
            }
            let kind = if inst.ephemeral {
                "ephemeral"
            } else {
                "persist"
            };
            updated.push(format!("{id}:{kind}"));
        }
        // Persistent patches notify through the Raft apply hook; only ephemeral ones are ours
        // to announce and replicate.
        if ephemeral_patched {
            self.ephemeral_changed(key, None);
        }
        Ok(updated)
    }

    /// Runs one expiry tick (see the rules in [`crate::distro`]): the node judges silence only
    /// with the standing to, and after moving deadlines it could not observe. Logs one line
    /// per service touched (counts and a few names), not one per instance: a stopped fleet of
    /// thousands would otherwise flood the log.
    pub fn sweep(&self) {
        let lag_ms = self.overload.take_peak_lag().as_millis() as u64;
        let tick = crate::distro::expiry::Tick {
            now_ms: self.now_ms(),
            interval_ms: self.settings.expiry_interval_ms,
            lag_ms,
        };
        let report = self.distro.sweep(tick, self.is_ready());
        let plan = &report.plan;
        // Once per stretch of lag, not once per tick.
        let lagging = lag_ms >= LAG_WORTH_A_WARNING_MS;
        if lagging
            && !self
                .lag_warned
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                lag_ms,
                "this node runs late; silence is judged only up to the time it has caught up with"
            );
        } else if !lagging {
            self.lag_warned
                .store(false, std::sync::atomic::Ordering::Relaxed);
        }
        let moves = &self.metrics.deadline_moves;
        if plan.unobserved_ms > 0 {
            moves.with_label_values(&["unobserved"]).inc();
            tracing::warn!(
                unobserved_ms = plan.unobserved_ms,
                "this node stalled between expiry ticks; every deadline moves later by the time it could not observe"
            );
        }
        if let Some(reason) = plan.held {
            self.metrics.expiry_held.with_label_values(&[reason]).inc();
            if plan.lost_standing {
                tracing::warn!(
                    reason,
                    "expiry held: this node may not judge silence (not ready, out of contact with a majority of members, or their rings disagree)"
                );
            }
            return;
        }
        if plan.restart_all {
            moves.with_label_values(&["regained"]).inc();
            tracing::info!(
                services = report.granted,
                "expiry resumed; every deadline restarts from now"
            );
        } else if report.granted > 0 {
            moves.with_label_values(&["takeover"]).inc();
            tracing::info!(
                services = report.granted,
                "took over services; their instances get one full timeout of grace"
            );
        }
        for s in crate::distro::store::summarize(&report.expired) {
            let m = &self.metrics.expirations;
            m.with_label_values(&["unhealthy"])
                .inc_by(s.unhealthy as u64);
            m.with_label_values(&["removed"]).inc_by(s.removed as u64);
            let sample: Vec<String> = s.sample.iter().map(ToString::to_string).collect();
            tracing::info!(
                service = %s.key,
                unhealthy = s.unhealthy,
                removed = s.removed,
                instances = %sample.join(","),
                more = (s.unhealthy + s.removed).saturating_sub(sample.len()),
                "instances expired"
            );
            self.changed(&s.key);
        }
        // Peers get a delta of the instances each service lost or saw turn unhealthy.
        for e in &report.expired {
            self.distro.local_change(&e.key, Some(&e.instance));
        }
        if !report.dropped.is_empty() {
            tracing::info!(
                services = report.dropped.len(),
                first = %report.dropped[0],
                "dropped services empty for their whole TTL"
            );
            for k in &report.dropped {
                self.ephemeral_changed(k, None);
            }
        }
    }

    /// Whether the service exists in either store.
    pub fn exists(&self, key: &ServiceKey) -> bool {
        self.ephemeral().contains(key) || self.persistent.read(|st| st.service(key).is_some())
    }

    /// A merged view of one service, or `None` when it exists nowhere.
    pub fn view(&self, key: &ServiceKey) -> Option<ServiceView> {
        let eph = self.ephemeral().with_service(key, |s| s.instances.clone());
        let per = self.persistent.read(|st| st.service(key).cloned());
        if eph.is_none() && per.is_none() {
            return None;
        }
        let (meta, mut persistent) = match per {
            Some(p) => (p.meta, p.instances),
            None => (ServiceMeta::default(), Vec::new()),
        };
        self.health.apply(key, &mut persistent);
        let mut instances = eph.unwrap_or_default();
        instances.append(&mut persistent);
        Some(ServiceView { meta, instances })
    }

    /// Every service key in a namespace (`None` = all namespaces), sorted.
    pub fn service_keys(&self, namespace: Option<&str>) -> Vec<ServiceKey> {
        let mut keys: std::collections::BTreeSet<ServiceKey> = self
            .ephemeral()
            .keys()
            .into_iter()
            .filter(|k| namespace.is_none_or(|n| k.namespace == n))
            .collect();
        self.persistent.read(|st| {
            keys.extend(
                st.services()
                    .map(|(k, _)| k)
                    .filter(|k| namespace.is_none_or(|n| k.namespace == n))
                    .cloned(),
            )
        });
        keys.into_iter().collect()
    }

    /// Creates a service explicitly.
    pub async fn create_service(
        &self,
        key: &ServiceKey,
        meta: ServiceMeta,
    ) -> Result<(), NodeError> {
        validate::service_name(&key.grouped())?;
        let exists_elsewhere = self.ephemeral().contains(key);
        self.propose(Command::CreateService {
            key: key.clone(),
            meta,
            exists_elsewhere,
        })
        .await
    }

    /// Updates a service's settings. A missing service is rejected by the state machine, the
    /// one place that decides (and words) it.
    pub async fn update_service(
        &self,
        key: &ServiceKey,
        update: ServiceUpdate,
    ) -> Result<(), NodeError> {
        let exists_elsewhere = self.ephemeral().contains(key);
        self.propose(Command::UpdateService {
            key: key.clone(),
            update,
            exists_elsewhere,
        })
        .await
    }

    /// Deletes a service with all its instances; a missing one is rejected by the state machine.
    pub async fn delete_service(&self, key: &ServiceKey) -> Result<(), NodeError> {
        let exists_elsewhere = self.ephemeral().contains(key);
        let persisted = self.persistent.read(|st| st.service(key).is_some());
        if persisted || !exists_elsewhere {
            self.propose(Command::DeleteService {
                key: key.clone(),
                exists_elsewhere,
            })
            .await?;
        }
        if self.ephemeral().remove_service(key, self.now_ms()) {
            self.ephemeral_changed(key, None);
        }
        Ok(())
    }

    /// Sets one cluster's settings.
    pub async fn update_cluster(
        &self,
        key: &ServiceKey,
        cluster: String,
        meta: ClusterMeta,
    ) -> Result<(), NodeError> {
        let exists_elsewhere = self.ephemeral().contains(key);
        self.propose(Command::UpdateCluster {
            key: key.clone(),
            cluster,
            meta,
            exists_elsewhere,
        })
        .await
    }

    /// Creates, updates or deletes a namespace.
    pub async fn namespace_command(&self, cmd: Command) -> Result<(), NodeError> {
        self.propose(cmd).await
    }

    /// User-created namespaces.
    pub fn namespaces(&self) -> Vec<Namespace> {
        self.persistent
            .read(|st| st.namespaces().cloned().collect())
    }

    /// Registers or refreshes a UDP push subscriber (no-op when push is disabled).
    pub fn subscribe(&self, sub: Subscriber) {
        if let Some(p) = &self.push {
            p.subscribe(sub, tokio::time::Instant::now().into_std());
        }
    }

    /// (services, ephemeral instances, persistent instances) held by this node.
    pub fn counts(&self) -> (usize, usize, usize) {
        let (eph_services, eph_instances) = self.ephemeral().counts();
        // Services present in both stores are counted once.
        let (only_persistent, per_instances) = self.persistent.read(|st| {
            let only = st
                .services()
                .filter(|(k, _)| !self.ephemeral().contains(k))
                .count();
            (only, st.instance_count())
        });
        (eph_services + only_persistent, eph_instances, per_instances)
    }

    /// (services, instances) this node is responsible for: the services the ring gives it,
    /// with their ephemeral and persistent instances (`responsible*` in `operator/metrics`).
    pub fn owned_counts(&self) -> (usize, usize) {
        let ownership = self.membership().ownership();
        let owned = |k: &ServiceKey| ownership.owns(k);
        let (eph_services, eph_instances) = self.ephemeral().counts_where(owned);
        let (only_persistent, per_instances) = self.persistent.read(|st| {
            st.services()
                .filter(|(k, _)| owned(k))
                .fold((0, 0), |(s, i), (k, svc)| {
                    let new_service = usize::from(!self.ephemeral().contains(k));
                    (s + new_service, i + svc.instances.len())
                })
        });
        (
            eph_services + only_persistent,
            eph_instances + per_instances,
        )
    }

    /// Updates the gauges that are computed from state rather than counted on events.
    pub fn refresh_gauges(&self) {
        let (services, eph, per) = self.counts();
        self.metrics.services.set(services as i64);
        self.metrics
            .instances
            .with_label_values(&["ephemeral"])
            .set(eph as i64);
        self.metrics
            .instances
            .with_label_values(&["persistent"])
            .set(per as i64);
        let st = self.persistent.status();
        let commit = st.commit_index.unwrap_or(0);
        let applied = st.last_applied.unwrap_or(0);
        let raft = &self.metrics.raft;
        raft.with_label_values(&["term"]).set(st.term as i64);
        raft.with_label_values(&["commit_index"]).set(commit as i64);
        raft.with_label_values(&["last_applied"])
            .set(applied as i64);
        raft.with_label_values(&["apply_lag"])
            .set(commit.saturating_sub(applied) as i64);
        raft.with_label_values(&["is_leader"])
            .set(i64::from(st.role == "Leader"));
        raft.with_label_values(&["snapshots_built"])
            .set(st.snapshots_built as i64);
        raft.with_label_values(&["snapshots_installed"])
            .set(st.snapshots_installed as i64);
        self.metrics.ready.set(i64::from(self.is_ready()));
        self.metrics.standing.set(i64::from(self.has_standing()));
    }
}
