//! Deploys, undeploys, settings changes and the restore after a start: names are claimed and
//! checked here, one operation at a time; each function's own work (import, verification,
//! loading, persisting, retiring) is its function actor's.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::{Actor, Addr};

use super::{now_ms, Runtime};
use crate::actors::function::FunctionActor;
use crate::actors::messages::{Deploy, DeploySource, NotRestored, Restore, Retire, UpdateSettings};
use crate::events::Event;
use crate::function::{DeployError, Function};
use crate::gpu::DeviceKind;
use crate::policy::Profile;
use crate::request::{FunctionName, ModelName, RuntimeError};
use crate::store::{FunctionRecord, FunctionSettings};

impl Runtime {
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
                    self.registry.set_unavailable(&name, "unreadable_record", reason);
                }
                for record in loaded.records {
                    let name = record.name.clone();
                    if let Err(NotRestored { kind, reason }) = self.restore_one(record).await {
                        tracing::error!("function {name:?} is not restored: {reason}");
                        self.registry.set_unavailable(&name, kind, reason);
                    }
                }
                self.clean_packages();
            }
            Err(e) => tracing::error!("cannot read the state store: {e}"),
        }
        self.ready.store(true, Ordering::Release);
        tracing::info!(
            "ready: {} functions restored, {} not served",
            self.registry.all().len(),
            self.registry.unavailable_all().len()
        );
    }

    async fn restore_one(&self, record: FunctionRecord) -> Result<(), NotRestored> {
        let name = FunctionName::parse(&record.name)
            .map_err(|e| NotRestored { kind: "restore_failed", reason: e.to_string() })?;
        let actor = self.start_actor(name.clone(), record);
        let stopped = |_| NotRestored { kind: "restore_failed", reason: RuntimeError::Stopped.to_string() };
        actor.send(Restore).await.map_err(stopped)??;
        self.keep_actor(&name, actor);
        Ok(())
    }

    /// Removes package copies that nothing needs, keeping those of unavailable functions, and
    /// reports acknowledged copies whose record is missing.
    fn clean_packages(&self) {
        let keep: Vec<String> = self.registry.unavailable_all().into_iter().map(|u| u.name).collect();
        match self.store.remove_unused_packages(&keep) {
            Ok(cleanup) => {
                for (name, dir) in cleanup.orphaned {
                    if self.registry.get(&name).is_none() && self.registry.unavailable(&name).is_none() {
                        let reason =
                            format!("its package copy {dir} was acknowledged, but the state store has no record of it");
                        tracing::error!("function {name:?}: {reason}");
                        self.registry.set_unavailable(&name, "record_lost", reason);
                    }
                }
            }
            Err(e) => tracing::warn!("removing unused package copies: {e}"),
        }
    }

    /// Deploys package `model` from the repository as function `name`. Durable once it returns.
    pub async fn deploy(
        self: &Arc<Self>,
        name: &str,
        model: &str,
        settings: FunctionSettings,
    ) -> Result<Arc<Function>, DeployError> {
        let name = FunctionName::for_new_function(name)?;
        settings.validate().map_err(DeployError::InvalidSettings)?;
        let model = ModelName::parse(model)?;
        let src = self.services.repository.path(&model)?;
        let bytes: u64 = crate::store::package_files(&src)
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
        let record = FunctionRecord {
            name: name.to_string(),
            model: model.to_string(),
            digest: String::new(),
            package_dir: String::new(),
            settings,
            created_unix_ms: now_ms(),
            profile: None,
        };
        self.bring_up(name, record, DeploySource::Package(src)).await
    }

    /// Deploys function `name` from a profile alone (weight bytes, execution time, class): no
    /// weights in host memory, so only `sim` devices can serve it. Durable once it returns.
    pub async fn deploy_profile(
        self: &Arc<Self>,
        name: &str,
        profile: Profile,
        settings: FunctionSettings,
    ) -> Result<Arc<Function>, DeployError> {
        let name = FunctionName::for_new_function(name)?;
        settings.validate().map_err(DeployError::InvalidSettings)?;
        profile.validate().map_err(DeployError::InvalidProfile)?;
        if self.devices.iter().any(|d| d.kind != DeviceKind::Sim) {
            return Err(DeployError::ProfileNeedsSim);
        }
        let record = FunctionRecord {
            name: name.to_string(),
            model: "profile".to_string(),
            digest: String::new(),
            package_dir: String::new(),
            settings,
            created_unix_ms: now_ms(),
            profile: Some(profile),
        };
        self.bring_up(name, record, DeploySource::Profile).await
    }

    /// Claims the name and has a new function actor bring the function up (durable, then
    /// visible); a failed deploy leaves no package copy behind.
    async fn bring_up(
        &self,
        name: FunctionName,
        record: FunctionRecord,
        source: DeploySource,
    ) -> Result<Arc<Function>, DeployError> {
        let _guard = self.deploys.lock().await;
        self.registry.check_free(&name)?;
        let actor = self.start_actor(name.clone(), record);
        let result = actor.send(Deploy { source }).await.map_err(|_| RuntimeError::Stopped)?;
        match result {
            Ok(function) => {
                self.keep_actor(&name, actor);
                Ok(function)
            }
            Err(e) => {
                self.clean_packages();
                Err(e)
            }
        }
    }

    fn start_actor(&self, name: FunctionName, record: FunctionRecord) -> Addr<FunctionActor> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let services = self.services.clone();
        FunctionActor::start_in_arbiter(&self.functions_arbiter.handle(), move |_| {
            FunctionActor::new(id, name, record, services)
        })
    }

    fn keep_actor(&self, name: &FunctionName, actor: Addr<FunctionActor>) {
        self.function_actors.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), actor);
    }

    fn actor(&self, name: &str) -> Option<Addr<FunctionActor>> {
        self.function_actors.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// Removes the record first (the durable fact), then the function from memory; a leftover
    /// package copy is removed now or at the next start. A function that is persisted but not
    /// served (`Unavailable`) is forgotten: its record, if any, and its package copies.
    pub async fn undeploy(&self, name: &str) -> Result<(), DeployError> {
        let _guard = self.deploys.lock().await;
        if self.registry.unavailable(name).is_some() {
            self.store.forget(name)?;
            self.registry.forget_unavailable(name);
            self.events.emit(|| Event::Undeploy { function: name.to_string() });
            return Ok(());
        }
        let actor = self.actor(name).ok_or_else(|| DeployError::NotDeployed(name.to_string()))?;
        actor.send(Retire).await.map_err(|_| RuntimeError::Stopped)??;
        self.function_actors.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
        self.events.emit(|| Event::Undeploy { function: name.to_string() });
        self.clean_packages();
        Ok(())
    }

    pub async fn update_settings(&self, name: &str, settings: FunctionSettings) -> Result<FunctionRecord, DeployError> {
        settings.validate().map_err(DeployError::InvalidSettings)?;
        let _guard = self.deploys.lock().await;
        if let Some(u) = self.registry.unavailable(name) {
            return Err(DeployError::Unavailable { name: name.to_string(), reason: u.reason });
        }
        let actor = self.actor(name).ok_or_else(|| DeployError::NotDeployed(name.to_string()))?;
        actor.send(UpdateSettings { settings }).await.map_err(|_| RuntimeError::Stopped)?
    }
}
