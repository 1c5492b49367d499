//! The function actor: one per deployed function, owning what is the function's own business
//! and not per-request — its package import and digest verification, the restore after a start,
//! loading and pinning its weights, its settings, its retirement, and the `slo` events of its
//! window. It publishes an immutable snapshot (`function::Function`) to the registry, which
//! requests read without passing through the actor (a hop would cost each request a thread
//! wake-up); it tells the scheduler actor of the function's arrival, settings and departure.
//!
//! All function actors share one arbiter thread; what blocks for long (copying, hashing and
//! loading a package) runs on the blocking pool, and the actor takes its next message only once
//! the one before has finished (`AtomicResponse`).
//!
//! Must not know: HTTP, the devices, the queue.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::fut::{ready, ActorFutureExt, WrapFuture};
use actix::{Actor, ActorContext, Addr, AsyncContext, AtomicResponse, Context, Handler};

use super::messages::{
    Deploy, DeploySource, NotRestored, RegisterFunction, Restore, Retire, UnregisterFunction, UpdateSettings, UpdateSlo,
};
use super::scheduler::SchedulerActor;
use crate::engine::Model;
use crate::events::{Event, EventBus};
use crate::function::{DeployError, Function, Registry, Repository};
use crate::policy::{estimate, FunctionId, FunctionSpec, ModelClass};
use crate::request::{FunctionName, ModelName, Payload};
use crate::store::{FunctionRecord, Store};

/// What every function actor works with.
pub struct Services {
    pub store: Arc<Store>,
    pub registry: Arc<Registry>,
    pub scheduler: Addr<SchedulerActor>,
    pub events: EventBus,
    pub repository: Repository,
    /// Host→device copy rate of the first device (`None`: unlimited), for a function's class.
    pub host_link: Option<f64>,
}

pub struct FunctionActor {
    id: FunctionId,
    name: FunctionName,
    record: FunctionRecord,
    services: Arc<Services>,
    /// The snapshot last published (none before the function is up).
    current: Option<Arc<Function>>,
}

impl FunctionActor {
    pub fn new(id: FunctionId, name: FunctionName, record: FunctionRecord, services: Arc<Services>) -> Self {
        Self { id, name, record, services, current: None }
    }

    /// Publishes an `slo` event when requests came since the last one (and anyone listens).
    fn publish_slo_event(&self) {
        let Some(f) = &self.current else { return };
        if !self.services.events.active() {
            return;
        }
        if let Some(requests) = f.requests_since_published() {
            let status = f.slo();
            self.services.events.emit(|| Event::Slo {
                function: f.name.to_string(),
                compliant: status.compliant,
                observed_ms: status.observed_ms,
                percentile: status.percentile,
                deadline_ms: status.deadline_ms,
                requests,
            });
        }
    }

    /// Keeps the published snapshot, or stops the actor when the function did not come up.
    fn settle<E>(&mut self, result: &Result<Arc<Function>, E>, ctx: &mut Context<Self>) {
        match result {
            Ok(f) => {
                self.record = f.record().clone();
                self.current = Some(f.clone());
            }
            Err(_) => ctx.stop(),
        }
    }
}

impl Actor for FunctionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_secs(1), |act, _| act.publish_slo_event());
    }
}

/// Loads a recorded function's package (and page-locks its weights for fast swaps), or takes
/// its profile.
async fn load(services: &Services, record: &FunctionRecord) -> Result<Payload, DeployError> {
    if let Some(p) = &record.profile {
        return Ok(Payload::Profile(*p));
    }
    let dir = services.store.package_path(record);
    let (dtype, compute) = (record.settings.dtype, record.settings.compute);
    let model = actix_rt::task::spawn_blocking(move || {
        let model = Model::load_as(&dir, dtype)?.with_compute(compute.unwrap_or_default());
        crate::gpu::prepare_host(&model);
        Ok(model)
    })
    .await
    .map_err(|e| DeployError::Task(e.to_string()))?
    .map_err(DeployError::BadPackage)?;
    Ok(Payload::Model(Arc::new(model)))
}

/// Tells the scheduler of the function: its bytes, its SLO, and an execution time the
/// scheduler refines from every measured run (memory-bound guess: weights read once at
/// host-memory speed). Refused when it fits no device.
async fn register(
    services: &Services,
    id: FunctionId,
    name: &FunctionName,
    payload: &Payload,
    record: &FunctionRecord,
) -> Result<(), DeployError> {
    let bytes = payload.bytes();
    let (exec_ms, class) = match payload {
        Payload::Profile(p) => (p.exec_ms, p.class),
        Payload::Model(_) => (estimate::transfer_ms(bytes, estimate::UNLIMITED_LINK).max(0.1), None),
    };
    let host = services.host_link.unwrap_or(estimate::UNLIMITED_LINK);
    let s = &record.settings;
    let spec = FunctionSpec {
        name: name.to_string(),
        bytes,
        exec_ms,
        class: class.unwrap_or_else(|| ModelClass::measure(bytes, exec_ms, host)),
        deadline_ms: s.slo_ms,
        percentile: s.slo_percentile,
        max_batch: s.max_batch,
    };
    services
        .scheduler
        .send(RegisterFunction { id, spec })
        .await
        .map_err(|_| crate::request::RuntimeError::Stopped)?
        .map_err(|reason| DeployError::DoesNotFit { name: name.to_string(), reason })
}

/// The package copy against its recorded digest; a copy that changed is re-imported from the
/// repository when the same package is there, and otherwise never served.
fn verify_copy(services: &Services, record: &FunctionRecord) -> Result<(), NotRestored> {
    let failed = |e: &dyn std::fmt::Display| NotRestored { kind: "restore_failed", reason: e.to_string() };
    let copy = services.store.package_path(record);
    let found = Store::digest_of(&copy).map_err(|e| failed(&e))?;
    if found == record.digest {
        return Ok(());
    }
    let changed =
        format!("its package copy {} changed on disk (digest {found}, recorded {})", record.package_dir, record.digest);
    let src = ModelName::parse(&record.model)
        .ok()
        .and_then(|m| services.repository.path(&m).ok())
        .filter(|src| Store::digest_of(src).ok().as_ref() == Some(&record.digest));
    let Some(src) = src else {
        return Err(NotRestored {
            kind: "package_changed",
            reason: format!("{changed}, and the model repository has no package with that digest"),
        });
    };
    services
        .store
        .reimport(record, &src)
        .map_err(|e| NotRestored { kind: "package_changed", reason: format!("{changed}; re-importing: {e}") })?;
    tracing::warn!("function {:?}: {changed}; re-imported from the model repository", record.name);
    Ok(())
}

impl Handler<Deploy> for FunctionActor {
    type Result = AtomicResponse<Self, Result<Arc<Function>, DeployError>>;

    fn handle(&mut self, msg: Deploy, _: &mut Context<Self>) -> Self::Result {
        let (id, name, services, mut record) = (self.id, self.name.clone(), self.services.clone(), self.record.clone());
        let work = async move {
            if let DeploySource::Package(src) = msg.source {
                let (s, n) = (services.clone(), name.to_string());
                let (package_dir, digest) = actix_rt::task::spawn_blocking(move || s.store.import_package(&src, &n))
                    .await
                    .map_err(|e| DeployError::Task(e.to_string()))??;
                record.package_dir = package_dir;
                record.digest = digest;
            }
            let payload = load(&services, &record).await?;
            register(&services, id, &name, &payload, &record).await?;
            // Durable first, visible second: nobody sees (or is told "loaded" about) a
            // function whose record is not on disk.
            if let Err(e) = services.store.put(&record) {
                let _ = services.scheduler.send(UnregisterFunction { id }).await;
                return Err(e.into());
            }
            // Acknowledged: the copy says so, should the store ever lose the record.
            if let Err(e) = services.store.mark_acknowledged(&record) {
                tracing::warn!("marking the package copy of {name:?}: {e}");
            }
            let model = record.model.clone();
            let function = Arc::new(Function::new(id, name, record, payload));
            services.registry.publish(function.clone());
            services.events.emit(|| Event::Deploy {
                function: function.name.to_string(),
                model,
                weight_bytes: function.payload.bytes(),
            });
            Ok(function)
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|result, act, ctx| {
            act.settle(&result, ctx);
            result
        })))
    }
}

impl Handler<Restore> for FunctionActor {
    type Result = AtomicResponse<Self, Result<Arc<Function>, NotRestored>>;

    fn handle(&mut self, _: Restore, _: &mut Context<Self>) -> Self::Result {
        let (id, name, services, record) = (self.id, self.name.clone(), self.services.clone(), self.record.clone());
        let work = async move {
            let failed = |e: DeployError| NotRestored { kind: "restore_failed", reason: e.to_string() };
            if record.profile.is_none() {
                let (s, r) = (services.clone(), record.clone());
                actix_rt::task::spawn_blocking(move || verify_copy(&s, &r))
                    .await
                    .map_err(|e| failed(DeployError::Task(e.to_string())))??;
            }
            let payload = load(&services, &record).await.map_err(failed)?;
            register(&services, id, &name, &payload, &record).await.map_err(failed)?;
            let copy: PathBuf = services.store.package_path(&record);
            if record.profile.is_none() && !copy.join(crate::store::MARKER).exists() {
                // Copies written before the marker existed get it now.
                if let Err(e) = services.store.mark_acknowledged(&record) {
                    tracing::warn!("marking the package copy of {name:?}: {e}");
                }
            }
            let function = Arc::new(Function::new(id, name, record, payload));
            services.registry.publish(function.clone());
            Ok(function)
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|result, act, ctx| {
            act.settle(&result, ctx);
            result
        })))
    }
}

impl Handler<UpdateSettings> for FunctionActor {
    type Result = AtomicResponse<Self, Result<FunctionRecord, DeployError>>;

    fn handle(&mut self, msg: UpdateSettings, _: &mut Context<Self>) -> Self::Result {
        let Some(current) = &self.current else {
            return AtomicResponse::new(Box::pin(ready(Err(DeployError::NotDeployed(self.name.to_string())))));
        };
        let mut record = self.record.clone();
        let settings = match crate::function::settings::update(&record.settings, current.held(), msg.settings) {
            Ok(s) => s,
            Err(reason) => return AtomicResponse::new(Box::pin(ready(Err(DeployError::InvalidSettings(reason))))),
        };
        record.settings = settings;
        if let Err(e) = self.services.store.put(&record) {
            return AtomicResponse::new(Box::pin(ready(Err(e.into()))));
        }
        let function = Arc::new(current.with_record(record.clone()));
        self.services.registry.publish(function.clone());
        self.current = Some(function);
        self.record = record.clone();
        let s = &record.settings;
        let update =
            UpdateSlo { id: self.id, deadline_ms: s.slo_ms, percentile: s.slo_percentile, max_batch: s.max_batch };
        let scheduler = self.services.scheduler.clone();
        // Answered once the scheduler has it: the next request, which does not pass this
        // actor, is placed under the new settings.
        AtomicResponse::new(Box::pin(
            async move {
                let _ = scheduler.send(update).await;
                Ok(record)
            }
            .into_actor(self),
        ))
    }
}

impl Handler<Retire> for FunctionActor {
    type Result = AtomicResponse<Self, Result<(), DeployError>>;

    fn handle(&mut self, _: Retire, _: &mut Context<Self>) -> Self::Result {
        // The durable fact first: a kill from here on finds the function gone.
        if let Err(e) = self.services.store.delete_record(&self.name) {
            return AtomicResponse::new(Box::pin(ready(Err(e.into()))));
        }
        self.services.registry.remove(&self.name);
        self.current = None;
        let (scheduler, id) = (self.services.scheduler.clone(), self.id);
        AtomicResponse::new(Box::pin(
            async move {
                let _ = scheduler.send(UnregisterFunction { id }).await;
            }
            .into_actor(self)
            .map(|_, _, ctx: &mut Context<Self>| {
                ctx.stop();
                Ok(())
            }),
        ))
    }
}
