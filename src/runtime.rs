//! The running system: starts the actors, owns the registry of deployed functions and the
//! store, and carries out deploys, undeploys and the restore after a start. HTTP handlers call
//! it; it calls the actors.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix::{Actor, Addr, Arbiter};

use crate::actors::function::Payload;
use crate::actors::gpu::GpuActor;
use crate::actors::messages::{
    AttachGpus, Completed, GetDevices, GetQueued, InjectFault, Inputs, RegisterFunction, Submit, UnregisterFunction,
    UpdateSlo, Work,
};
use crate::actors::scheduler::{self, Scheduler, SchedulerActor, SharedScheduler};
use crate::actors::RuntimeError;
use crate::config::ServeConfig;
use crate::engine::{EngineError, Model};
use crate::events::{Event, EventBus};
use crate::gpu::faults::FaultSpec;
use crate::gpu::{BuildOptions, DeviceError, DeviceInfo, DeviceKind, FinishReason, Generation};
use crate::metrics as m;
use crate::policy::cluster::DeviceSnapshot;
use crate::policy::{
    estimate, Cluster, ClusterConfig, DeviceSpec, FunctionId, FunctionSpec, ModelClass, PagePool, Profile, SloStatus,
    SloTracker,
};
use crate::store::{FunctionRecord, FunctionSettings, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("invalid name {0:?}: use letters, digits, '_', '-' and '.', starting with a letter or digit, at most 64 characters")]
    InvalidName(String),
    #[error("{0:?} is a fixed segment of the API's routes and cannot name a function")]
    ReservedName(String),
    #[error("no model repository is configured (start with --model-repository DIR)")]
    NoRepository,
    #[error("model {0:?} is not in the model repository")]
    ModelNotFound(String),
    #[error("{0:?} leads outside the model repository (symlinks out are refused)")]
    OutsideRepository(String),
    #[error("package {model:?} holds {bytes} bytes, more than the limit of {limit} (--max-package)")]
    PackageTooLarge { model: String, bytes: u64, limit: u64 },
    #[error("function {0:?} is already deployed")]
    AlreadyExists(String),
    #[error("function {name:?} is persisted but not served ({reason}); delete it (DELETE /api/v1/functions/{name}) before reusing its name")]
    Unavailable { name: String, reason: String },
    #[error("function {0:?} is not deployed")]
    NotDeployed(String),
    #[error("invalid settings: {0}")]
    InvalidSettings(String),
    #[error("invalid profile: {0}")]
    InvalidProfile(String),
    #[error("a function deployed from a profile alone needs sim devices (it has no weights to compute with)")]
    ProfileNeedsSim,
    #[error("bad model package: {0}")]
    BadPackage(#[source] EngineError),
    #[error("function {name:?} cannot be served: {reason}")]
    DoesNotFit { name: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("deploy task failed: {0}")]
    Task(String),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Texts of a request longer than this in all are tokenized on a blocking thread, not on the
/// HTTP worker that received them.
pub const INLINE_TEXT_BYTES: usize = 4096;

/// Names a function may not take: fixed segments of routes where a function's name also goes
/// (`/v2/models/stats` is every function's statistics).
pub const RESERVED_NAMES: &[&str] = &["stats"];

/// Names of functions and models: `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Counters behind `GET /v2/models/{name}/stats`.
#[derive(Debug, Default)]
pub struct FunctionStats {
    pub success: AtomicU64,
    pub fail: AtomicU64,
    pub success_ns: AtomicU64,
    pub fail_ns: AtomicU64,
    pub queue_ns: AtomicU64,
    pub swap_ns: AtomicU64,
    pub exec_ns: AtomicU64,
    pub last_inference_ms: AtomicU64,
}

pub struct FunctionEntry {
    pub id: FunctionId,
    pub name: String,
    pub record: RwLock<FunctionRecord>,
    pub payload: Payload,
    pub stats: FunctionStats,
    slo: std::sync::Mutex<SloTracker>,
    /// Requests counted when the last `slo` event went out.
    slo_published: AtomicU64,
}

impl FunctionEntry {
    /// The model package (none for a function deployed from a profile alone).
    pub fn model(&self) -> Option<&Arc<Model>> {
        self.payload.model()
    }

    pub fn record(&self) -> FunctionRecord {
        self.record.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn slo(&self) -> SloStatus {
        let settings = self.record().settings;
        let tracker = self.slo.lock().unwrap_or_else(|e| e.into_inner());
        tracker.status(settings.slo_ms, settings.slo_percentile)
    }

    /// Cheap on the request path: the percentile is computed only when someone asks (`slo`,
    /// the functions API, a `/metrics` scrape).
    fn record_latency(&self, ms: f64) {
        self.slo.lock().unwrap_or_else(|e| e.into_inner()).record(ms);
    }

    fn max_batch(&self) -> usize {
        self.record.read().unwrap_or_else(|e| e.into_inner()).settings.max_batch
    }
}

/// A persisted function the runtime does not serve, and why. Its name stays taken and its
/// package copy stays until an operator deletes it (`DELETE /api/v1/functions/{name}`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unavailable {
    pub name: String,
    /// `unreadable_record`, `record_lost`, `package_changed` or `restore_failed`.
    pub kind: &'static str,
    pub reason: String,
}

pub struct Runtime {
    pub config: ServeConfig,
    pub devices: Vec<DeviceInfo>,
    store: Store,
    scheduler: Addr<SchedulerActor>,
    /// The scheduler's state: requests are queued and placed on the HTTP worker's thread.
    core: SharedScheduler,
    functions: RwLock<BTreeMap<String, Arc<FunctionEntry>>>,
    unavailable: RwLock<BTreeMap<String, Unavailable>>,
    next_id: AtomicU64,
    ready: AtomicBool,
    deploys: tokio::sync::Mutex<()>,
    arbiters: Vec<Arbiter>,
    pub events: EventBus,
    gpus: Vec<Addr<GpuActor>>,
    /// Results held for clients that have not read them yet.
    pub unsent: Arc<crate::unsent::Unsent>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for a in &self.arbiters {
            a.stop();
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Runtime {
    /// Opens the store, creates the devices and starts the actors. Call inside an actix system.
    pub fn start(config: ServeConfig) -> Result<Arc<Self>, StartError> {
        m::handle();
        let store = Store::open(&config.state_dir)?;
        let devices = config.devices.build(&BuildOptions {
            page_bytes: config.page_bytes,
            host_link: config.host_link,
            sim_time_scale: config.sim_time_scale,
            workspace_bytes: config.workspace_bytes,
        })?;
        let infos: Vec<DeviceInfo> = devices.iter().map(|d| d.info().clone()).collect();
        let specs = infos
            .iter()
            .map(|i| DeviceSpec {
                pool: PagePool::new(i.pool_bytes, i.page_bytes),
                host_link: i.host_link_bytes_per_s,
                peers: i.peer_links_bytes_per_s.clone(),
                host_group: i.host_group,
            })
            .collect();
        let ids: Vec<String> = infos.iter().map(|i| i.id.clone()).collect();
        let sched_arbiter = Arbiter::new();
        let cluster = Cluster::new(
            ClusterConfig {
                policy: config.policy,
                seed: 0,
                shed: config.shed,
                max_queue_per_function: config.max_queue_per_function,
                max_queue: config.max_queue,
            },
            specs,
        );
        tracing::info!("scheduling policy: {}{}", config.policy, if config.shed { " (shedding)" } else { "" });
        let events = EventBus::default();
        let core: SharedScheduler =
            Arc::new(std::sync::Mutex::new(Scheduler::new(cluster, ids.clone(), events.clone())));
        let actor_core = core.clone();
        let scheduler =
            SchedulerActor::start_in_arbiter(&sched_arbiter.handle(), move |_| SchedulerActor::new(actor_core));
        let mut arbiters = vec![sched_arbiter];
        let mut gpus = Vec::with_capacity(devices.len());
        for (i, device) in devices.into_iter().enumerate() {
            // Each device on its own thread: its calls block.
            let arbiter = Arbiter::new();
            let (core, sched, bus, ids) = (core.clone(), scheduler.clone(), events.clone(), ids.clone());
            gpus.push(GpuActor::start_in_arbiter(&arbiter.handle(), move |_| {
                GpuActor::new(i, device, core, sched, bus, ids)
            }));
            arbiters.push(arbiter);
        }
        scheduler.do_send(AttachGpus { gpus: gpus.clone() });
        let unsent = crate::unsent::Unsent::new(config.max_unsent);
        Ok(Arc::new(Self {
            unsent,
            config,
            devices: infos,
            store,
            scheduler,
            core,
            functions: RwLock::new(BTreeMap::new()),
            unavailable: RwLock::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            ready: AtomicBool::new(false),
            deploys: tokio::sync::Mutex::new(()),
            arbiters,
            events,
            gpus,
        }))
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Brings back every persisted function it can, then reports ready. A record that cannot be
    /// read, a package copy that changed on disk, a copy whose record is lost, a function that
    /// no longer loads: each is reported (log, metrics, the functions API) and keeps its name
    /// and its package copy; none stops the others.
    pub async fn restore(self: &Arc<Self>) {
        let _guard = self.deploys.lock().await;
        match self.store.load() {
            Ok(loaded) => {
                if loaded.migrated > 0 {
                    tracing::info!("{} function record(s) rewritten in the current format", loaded.migrated);
                }
                for (name, reason) in loaded.unreadable {
                    tracing::error!("the state record of function {name:?} cannot be read: {reason}");
                    self.set_unavailable(&name, "unreadable_record", reason);
                }
                for record in loaded.records {
                    let name = record.name.clone();
                    match self.restore_one(record).await {
                        Ok(entry) => self.publish(entry),
                        Err((kind, reason)) => {
                            tracing::error!("function {name:?} is not restored: {reason}");
                            self.set_unavailable(&name, kind, reason);
                        }
                    }
                }
                self.clean_packages();
            }
            Err(e) => tracing::error!("cannot read the state store: {e}"),
        }
        self.ready.store(true, Ordering::Release);
        tracing::info!(
            "ready: {} functions restored, {} not served",
            self.functions.read().map_or(0, |f| f.len()),
            self.unavailable_functions().len()
        );
    }

    /// One persisted function: its package copy verified against the recorded digest (a copy
    /// that changed is re-imported from the repository when the same package is there, and
    /// otherwise never served), then activated. The error is (kind, reason).
    async fn restore_one(
        self: &Arc<Self>,
        record: FunctionRecord,
    ) -> Result<Arc<FunctionEntry>, (&'static str, String)> {
        if record.profile.is_none() {
            let this = self.clone();
            let r = record.clone();
            actix_rt::task::spawn_blocking(move || this.verify_copy(&r))
                .await
                .map_err(|e| ("restore_failed", e.to_string()))??;
        }
        let entry = self.activate(record.clone()).await.map_err(|e| ("restore_failed", e.to_string()))?;
        let copy = self.store.package_path(&record);
        if record.profile.is_none() && !copy.join(crate::store::MARKER).exists() {
            // Copies written before the marker existed get it now.
            if let Err(e) = self.store.mark_acknowledged(&record) {
                tracing::warn!("marking the package copy of {:?}: {e}", record.name);
            }
        }
        Ok(entry)
    }

    fn verify_copy(&self, record: &FunctionRecord) -> Result<(), (&'static str, String)> {
        let copy = self.store.package_path(record);
        let found = Store::digest_of(&copy).map_err(|e| ("restore_failed", e.to_string()))?;
        if found == record.digest {
            return Ok(());
        }
        let changed = format!(
            "its package copy {} changed on disk (digest {found}, recorded {})",
            record.package_dir, record.digest
        );
        let src = self
            .repository_path(&record.model)
            .ok()
            .filter(|src| Store::digest_of(src).ok().as_ref() == Some(&record.digest));
        match src {
            Some(src) => {
                self.store
                    .reimport(record, &src)
                    .map_err(|e| ("package_changed", format!("{changed}; re-importing: {e}")))?;
                tracing::warn!("function {:?}: {changed}; re-imported from the model repository", record.name);
                Ok(())
            }
            None => {
                Err(("package_changed", format!("{changed}, and the model repository has no package with that digest")))
            }
        }
    }

    /// Removes package copies that nothing needs, keeping those of unavailable functions, and
    /// reports acknowledged copies whose record is missing.
    fn clean_packages(&self) {
        let keep: Vec<String> = self.unavailable_functions().into_iter().map(|u| u.name).collect();
        match self.store.remove_unused_packages(&keep) {
            Ok(cleanup) => {
                for (name, dir) in cleanup.orphaned {
                    if self.function(&name).is_none() && self.unavailable(&name).is_none() {
                        let reason =
                            format!("its package copy {dir} was acknowledged, but the state store has no record of it");
                        tracing::error!("function {name:?}: {reason}");
                        self.set_unavailable(&name, "record_lost", reason);
                    }
                }
            }
            Err(e) => tracing::warn!("removing unused package copies: {e}"),
        }
    }

    fn set_unavailable(&self, name: &str, kind: &'static str, reason: String) {
        let mut map = self.unavailable.write().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_string()).or_insert(Unavailable { name: name.to_string(), kind, reason });
        let unreadable = map.values().filter(|u| u.kind == "unreadable_record").count();
        m::functions_unavailable(map.len(), unreadable);
    }

    /// A persisted function that is not served, if `name` is one.
    pub fn unavailable(&self, name: &str) -> Option<Unavailable> {
        self.unavailable.read().ok()?.get(name).cloned()
    }

    pub fn unavailable_functions(&self) -> Vec<Unavailable> {
        self.unavailable.read().map(|m| m.values().cloned().collect()).unwrap_or_default()
    }

    /// Refuses a name that is reserved, or taken by a deployed function or an unavailable one.
    fn check_free(&self, name: &str) -> Result<(), DeployError> {
        if RESERVED_NAMES.contains(&name) {
            return Err(DeployError::ReservedName(name.to_string()));
        }
        if self.function(name).is_some() {
            return Err(DeployError::AlreadyExists(name.to_string()));
        }
        match self.unavailable(name) {
            Some(u) => Err(DeployError::Unavailable { name: name.to_string(), reason: u.reason }),
            None => Ok(()),
        }
    }

    pub fn function(&self, name: &str) -> Option<Arc<FunctionEntry>> {
        self.functions.read().ok()?.get(name).cloned()
    }

    pub fn functions(&self) -> Vec<Arc<FunctionEntry>> {
        self.functions.read().map(|f| f.values().cloned().collect()).unwrap_or_default()
    }

    /// Package folders in the model repository.
    pub fn repository_models(&self) -> Vec<String> {
        let Some(repo) = &self.config.model_repository else {
            return Vec::new();
        };
        let mut names: Vec<String> = std::fs::read_dir(repo)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("config.json").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| valid_name(n))
            .collect();
        names.sort();
        names
    }

    fn repository_path(&self, model: &str) -> Result<PathBuf, DeployError> {
        if !valid_name(model) {
            return Err(DeployError::InvalidName(model.to_string()));
        }
        let repo = self.config.model_repository.as_ref().ok_or(DeployError::NoRepository)?;
        let dir = repo.join(model);
        if !dir.join("config.json").is_file() {
            return Err(DeployError::ModelNotFound(model.to_string()));
        }
        // A package folder that is a symlink (or holds one) leading out of the repository
        // would let a request read any file of the host.
        let inside = |p: &std::path::Path| match (p.canonicalize(), repo.canonicalize()) {
            (Ok(p), Ok(r)) => p.starts_with(&r),
            _ => false,
        };
        if !inside(&dir) {
            return Err(DeployError::OutsideRepository(model.to_string()));
        }
        for file in crate::store::PACKAGE_FILES {
            let f = dir.join(file);
            if f.symlink_metadata().is_ok() && !inside(&f) {
                return Err(DeployError::OutsideRepository(format!("{model}/{file}")));
            }
        }
        Ok(dir)
    }

    /// Deploys package `model` from the repository as function `name`. Durable once it returns.
    pub async fn deploy(
        self: &Arc<Self>,
        name: &str,
        model: &str,
        settings: FunctionSettings,
    ) -> Result<Arc<FunctionEntry>, DeployError> {
        if !valid_name(name) {
            return Err(DeployError::InvalidName(name.to_string()));
        }
        settings.validate().map_err(DeployError::InvalidSettings)?;
        let src = self.repository_path(model)?;
        let bytes: u64 = crate::store::PACKAGE_FILES
            .iter()
            .filter_map(|f| std::fs::metadata(src.join(f)).ok())
            .map(|m| m.len())
            .sum();
        if bytes > self.config.max_package {
            return Err(DeployError::PackageTooLarge {
                model: model.to_string(),
                bytes,
                limit: self.config.max_package,
            });
        }
        let _guard = self.deploys.lock().await;
        self.check_free(name)?;
        let this = self.clone();
        let fname = name.to_string();
        let (package_dir, digest) = actix_rt::task::spawn_blocking(move || this.store.import_package(&src, &fname))
            .await
            .map_err(|e| DeployError::Task(e.to_string()))??;
        let record = FunctionRecord {
            name: name.to_string(),
            model: model.to_string(),
            digest,
            package_dir,
            settings,
            created_unix_ms: now_ms(),
            profile: None,
        };
        self.finish_deploy(record).await
    }

    /// Deploys function `name` from a profile alone (weight bytes, execution time, class): no
    /// weights in host memory, so only `sim` devices can serve it. Durable once it returns.
    pub async fn deploy_profile(
        self: &Arc<Self>,
        name: &str,
        profile: Profile,
        settings: FunctionSettings,
    ) -> Result<Arc<FunctionEntry>, DeployError> {
        if !valid_name(name) {
            return Err(DeployError::InvalidName(name.to_string()));
        }
        settings.validate().map_err(DeployError::InvalidSettings)?;
        profile.validate().map_err(DeployError::InvalidProfile)?;
        if self.devices.iter().any(|d| d.kind != DeviceKind::Sim) {
            return Err(DeployError::ProfileNeedsSim);
        }
        let _guard = self.deploys.lock().await;
        self.check_free(name)?;
        let record = FunctionRecord {
            name: name.to_string(),
            model: "profile".to_string(),
            digest: String::new(),
            package_dir: String::new(),
            settings,
            created_unix_ms: now_ms(),
            profile: Some(profile),
        };
        self.finish_deploy(record).await
    }

    /// Activates a new function's record, makes it durable, then visible.
    async fn finish_deploy(self: &Arc<Self>, record: FunctionRecord) -> Result<Arc<FunctionEntry>, DeployError> {
        let entry = match self.activate(record.clone()).await {
            Ok(entry) => entry,
            Err(e) => {
                self.clean_packages();
                return Err(e);
            }
        };
        // Durable first, visible second: nobody sees (or is told "loaded" about) a function
        // whose record is not on disk.
        if let Err(e) = self.store.put(&record) {
            let _ = self.scheduler.send(UnregisterFunction { id: entry.id }).await;
            self.clean_packages();
            return Err(e.into());
        }
        // Acknowledged: the copy says so, should the store ever lose the record.
        if let Err(e) = self.store.mark_acknowledged(&record) {
            tracing::warn!("marking the package copy of {:?}: {e}", record.name);
        }
        self.publish(entry.clone());
        self.events.emit(|| Event::Deploy {
            function: entry.name.clone(),
            model: record.model.clone(),
            weight_bytes: entry.payload.bytes(),
        });
        Ok(entry)
    }

    fn publish(&self, entry: Arc<FunctionEntry>) {
        let mut functions = self.functions.write().unwrap_or_else(|e| e.into_inner());
        functions.insert(entry.name.clone(), entry);
        m::functions_deployed(functions.len());
    }

    /// Loads a recorded function's package, registers it with the scheduler and starts its
    /// actor; the caller publishes it.
    async fn activate(self: &Arc<Self>, record: FunctionRecord) -> Result<Arc<FunctionEntry>, DeployError> {
        let payload = match record.profile {
            Some(p) => Payload::Profile(p),
            None => {
                let dir = self.store.package_path(&record);
                let model = actix_rt::task::spawn_blocking(move || {
                    let model = Model::load(&dir)?;
                    crate::gpu::prepare_host(&model);
                    Ok(model)
                })
                .await
                .map_err(|e| DeployError::Task(e.to_string()))?
                .map_err(DeployError::BadPackage)?;
                Payload::Model(Arc::new(model))
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let name = record.name.clone();
        let spec = self.function_spec(&name, &payload, &record.settings);
        self.scheduler
            .send(RegisterFunction { id, spec })
            .await
            .map_err(|_| RuntimeError::Stopped)?
            .map_err(|reason| DeployError::DoesNotFit { name: name.clone(), reason })?;
        let entry = Arc::new(FunctionEntry {
            id,
            name: name.clone(),
            record: RwLock::new(record),
            payload,
            stats: FunctionStats::default(),
            slo: std::sync::Mutex::new(SloTracker::default()),
            slo_published: AtomicU64::new(0),
        });
        Ok(entry)
    }

    /// What the policies first know of a function: its bytes, its SLO, and an execution time
    /// the scheduler refines from every measured run (memory-bound guess: weights read once at
    /// host-memory speed).
    fn function_spec(&self, name: &str, payload: &Payload, settings: &FunctionSettings) -> FunctionSpec {
        let bytes = payload.bytes();
        let host = self.devices.first().and_then(|d| d.host_link_bytes_per_s).unwrap_or(estimate::UNLIMITED_LINK);
        let (exec_ms, class) = match payload {
            Payload::Profile(p) => (p.exec_ms, p.class),
            Payload::Model(_) => (estimate::transfer_ms(bytes, estimate::UNLIMITED_LINK).max(0.1), None),
        };
        FunctionSpec {
            name: name.to_string(),
            bytes,
            exec_ms,
            class: class.unwrap_or_else(|| ModelClass::measure(bytes, exec_ms, host)),
            deadline_ms: settings.slo_ms,
            percentile: settings.slo_percentile,
            max_batch: settings.max_batch,
        }
    }

    async fn deactivate(&self, name: &str) -> Option<Arc<FunctionEntry>> {
        let entry = {
            let mut functions = self.functions.write().unwrap_or_else(|e| e.into_inner());
            let entry = functions.remove(name);
            m::functions_deployed(functions.len());
            entry
        }?;
        let _ = self.scheduler.send(UnregisterFunction { id: entry.id }).await;
        Some(entry)
    }

    /// Removes the record first (the durable fact), then the function from memory; a leftover
    /// package copy is removed now or at the next start. A function that is persisted but not
    /// served (`Unavailable`) is forgotten: its record, if any, and its package copies.
    pub async fn undeploy(&self, name: &str) -> Result<(), DeployError> {
        let _guard = self.deploys.lock().await;
        if self.unavailable(name).is_some() {
            self.store.forget(name)?;
            let mut map = self.unavailable.write().unwrap_or_else(|e| e.into_inner());
            map.remove(name);
            m::functions_unavailable(map.len(), map.values().filter(|u| u.kind == "unreadable_record").count());
            drop(map);
            self.events.emit(|| Event::Undeploy { function: name.to_string() });
            return Ok(());
        }
        self.function(name).ok_or_else(|| DeployError::NotDeployed(name.to_string()))?;
        self.store.delete_record(name)?;
        self.deactivate(name).await;
        self.events.emit(|| Event::Undeploy { function: name.to_string() });
        self.clean_packages();
        Ok(())
    }

    pub async fn update_settings(&self, name: &str, settings: FunctionSettings) -> Result<FunctionRecord, DeployError> {
        settings.validate().map_err(DeployError::InvalidSettings)?;
        let _guard = self.deploys.lock().await;
        if let Some(u) = self.unavailable(name) {
            return Err(DeployError::Unavailable { name: name.to_string(), reason: u.reason });
        }
        let entry = self.function(name).ok_or_else(|| DeployError::NotDeployed(name.to_string()))?;
        let mut record = entry.record();
        record.settings = settings;
        self.store.put(&record)?;
        *entry.record.write().unwrap_or_else(|e| e.into_inner()) = record.clone();
        let s = &record.settings;
        // Awaited: the next request, which no longer passes the actor's mailbox, sees it.
        let _ = self
            .scheduler
            .send(UpdateSlo {
                id: entry.id,
                deadline_ms: s.slo_ms,
                percentile: s.slo_percentile,
                max_batch: s.max_batch,
            })
            .await;
        Ok(record)
    }

    /// Runs one request on a deployed function; `deadline_ms` may shorten its SLO deadline.
    /// Its results are held (`unsent`) from before it runs until the caller drops the `Held`
    /// it returns (once the response is sent); a request whose results do not fit is refused.
    pub async fn infer(
        &self,
        entry: &FunctionEntry,
        inputs: Inputs,
        outputs: Vec<String>,
        deadline_ms: Option<f64>,
    ) -> Result<(Completed, crate::unsent::Held), RuntimeError> {
        let received = Instant::now();
        let max_batch = entry.max_batch();
        let work = match &inputs {
            // Tokenizing takes a while for long texts: not on the HTTP worker.
            Inputs::Texts(texts) if texts.iter().map(String::len).sum::<usize>() > INLINE_TEXT_BYTES => {
                let payload = entry.payload.clone();
                actix_rt::task::spawn_blocking(move || payload.prepare(inputs, &outputs, max_batch))
                    .await
                    .unwrap_or(Err(RuntimeError::Stopped))
            }
            _ => entry.payload.prepare(inputs, &outputs, max_batch),
        };
        let (work, held) = match work {
            Ok(w) => match self.unsent.hold(w.result_bytes()) {
                Some(held) => (Ok(w), Some(held)),
                None => (Err(RuntimeError::Backlogged { retry_after_s: 1 }), None),
            },
            Err(e) => (Err(e), None),
        };
        let done = self.run(entry, work, received, deadline_ms).await?;
        Ok((done, held.expect("a request that ran held its results")))
    }

    /// Queues and places prepared work on this thread (the HTTP worker's), waits for the device
    /// to answer, and accounts the result; refused work is accounted as it is.
    async fn run(
        &self,
        entry: &FunctionEntry,
        work: Result<Work, RuntimeError>,
        received: Instant,
        deadline_ms: Option<f64>,
    ) -> Result<Completed, RuntimeError> {
        let result = match work {
            Ok(work) => {
                let (reply, rx) = tokio::sync::oneshot::channel();
                let name = entry.name.clone();
                scheduler::with(&self.core, |s| {
                    s.submit(Submit { function: entry.id, name, work, received, deadline_ms, reply })
                });
                rx.await.unwrap_or(Err(RuntimeError::Stopped))
            }
            Err(e) => Err(e),
        };
        self.account(entry, received, deadline_ms, &result);
        result
    }

    /// Starts a generation on a deployed function: tokens stream into `generation.tokens`
    /// as they exist; the returned result is the summary once it ends.
    pub async fn generate(
        &self,
        entry: &FunctionEntry,
        generation: Generation,
        deadline_ms: Option<f64>,
    ) -> Result<Completed, RuntimeError> {
        // A device that cannot generate (sim) says so itself.
        let received = generation.received;
        let work = entry.payload.prepare_generation(generation);
        self.run(entry, work, received, deadline_ms).await
    }

    /// Counts a finished request in the function's statistics, metrics and SLO window (a
    /// generation by its first token). A request refused for a deadline its client shortened
    /// is not a miss of the function's SLO.
    fn account(
        &self,
        entry: &FunctionEntry,
        received: Instant,
        deadline_ms: Option<f64>,
        result: &Result<Completed, RuntimeError>,
    ) {
        let ns = |ms: f64| (ms * 1e6) as u64;
        let s = &entry.stats;
        let name = &entry.name;
        match result {
            Ok(c) => {
                s.success.fetch_add(1, Ordering::Relaxed);
                s.success_ns.fetch_add(ns(c.total_ms), Ordering::Relaxed);
                s.queue_ns.fetch_add(ns(c.queue_ms), Ordering::Relaxed);
                s.swap_ns.fetch_add(ns(c.swap_ms), Ordering::Relaxed);
                s.exec_ns.fetch_add(ns(c.exec_ms), Ordering::Relaxed);
                let cancelled = c.generated.as_ref().is_some_and(|g| g.finish_reason == FinishReason::Cancelled);
                m::request(name, if cancelled { "cancelled" } else { "success" });
                m::phases(c.queue_ms, c.swap_ms, c.exec_ms, c.total_ms);
                let latency = match &c.generated {
                    Some(g) => g.first_token_ms,
                    None => received.elapsed().as_secs_f64() * 1e3,
                };
                entry.record_latency(latency);
            }
            Err(RuntimeError::Cancelled) => m::request(name, "cancelled"),
            Err(e) => {
                s.fail.fetch_add(1, Ordering::Relaxed);
                s.fail_ns.fetch_add(received.elapsed().as_nanos() as u64, Ordering::Relaxed);
                let invalid = matches!(e, RuntimeError::Engine(_));
                m::request(name, if invalid { "invalid" } else { "error" });
                let clients_own = matches!(e, RuntimeError::DeadlineUnmeetable(_))
                    && deadline_ms.is_some_and(|d| d < entry.record().settings.slo_ms);
                if !invalid && !clients_own {
                    entry.record_latency(f64::INFINITY);
                }
            }
        }
        s.last_inference_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Publishes an `slo` event for every function with requests since its last one (when
    /// anyone listens); the server calls it every second.
    pub fn publish_slo_events(&self) {
        if !self.events.active() {
            return;
        }
        for f in self.functions() {
            let requests = f.stats.success.load(Ordering::Relaxed) + f.stats.fail.load(Ordering::Relaxed);
            if f.slo_published.swap(requests, Ordering::Relaxed) == requests {
                continue;
            }
            let status = f.slo();
            self.events.emit(|| Event::Slo {
                function: f.name.clone(),
                compliant: status.compliant,
                observed_ms: status.observed_ms,
                percentile: status.percentile,
                deadline_ms: status.deadline_ms,
                requests,
            });
        }
    }

    /// Sets the per-function SLO gauges; called before `/metrics` renders.
    pub fn publish_slo_metrics(&self) {
        m::unsent_bytes(self.unsent.used());
        for f in self.functions() {
            let s = f.slo();
            m::slo(&f.name, s.compliant, s.observed_ms);
        }
    }

    /// Arms a fault on a `sim` device (for testing how the runtime copes).
    pub async fn inject_fault(&self, device: &str, fault: FaultSpec) -> Result<(), FaultError> {
        let i = self.devices.iter().position(|d| d.id == device).ok_or_else(|| FaultError::NoDevice(device.into()))?;
        if self.devices[i].kind != DeviceKind::Sim {
            return Err(FaultError::NotSim(device.into()));
        }
        self.gpus[i]
            .send(InjectFault { fault })
            .await
            .map_err(|_| FaultError::Invalid("device stopped".into()))?
            .map_err(FaultError::Invalid)
    }

    pub async fn device_snapshots(&self) -> Vec<DeviceSnapshot> {
        self.scheduler.send(GetDevices).await.unwrap_or_default()
    }

    pub async fn queued(&self, entry: &FunctionEntry) -> usize {
        self.scheduler.send(GetQueued { function: entry.id }).await.unwrap_or(0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    #[error("no device {0:?}")]
    NoDevice(String),
    #[error("{0}: faults can be injected into sim devices only")]
    NotSim(String),
    #[error("invalid fault: {0}")]
    Invalid(String),
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Devices(#[from] DeviceError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_follow_the_safe_alphabet() {
        for ok in ["bert", "all-MiniLM-L6-v2", "a.b_c", "9lives", &"x".repeat(64)] {
            assert!(super::valid_name(ok), "{ok}");
        }
        for bad in ["", "-x", ".hidden", "..", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(!super::valid_name(bad), "{bad}");
        }
    }
}
