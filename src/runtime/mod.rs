//! The running system. `Runtime::start` opens the store, builds the devices and starts the
//! actors; the HTTP handlers call it. Split by job: this file (start-up and accessors),
//! `lifecycle` (deploy, undeploy, settings, the restore after a start), `requests` (the request
//! path, from validation to the function's counters), `chat` (conversations as prompts). The
//! registry of functions is `function::Registry`.
//!
//! Must not know: HTTP types, how a device computes, the policies' insides.

mod chat;
mod lifecycle;
mod requests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix::dev::channel;
use actix::{Actor, Addr, Arbiter, Context};

pub use requests::INLINE_TEXT_BYTES;

use crate::actors::function::{FunctionActor, Services};
use crate::actors::gpu::GpuActor;
use crate::actors::messages::InjectFault;
use crate::actors::scheduler::{Scheduler, SchedulerActor};
use crate::config::ServeConfig;
use crate::events::EventBus;
use crate::function::{Function, Registry, Repository, Unavailable};
use crate::gpu::faults::FaultSpec;
use crate::gpu::{BuildOptions, DeviceError, DeviceInfo, DeviceKind};
use crate::metrics as m;
use crate::policy::cluster::DeviceSnapshot;
use crate::policy::{Cluster, ClusterConfig, DeviceSpec, PagePool};
use crate::store::{Store, StoreError};

pub struct Runtime {
    pub config: ServeConfig,
    pub devices: Vec<DeviceInfo>,
    store: Arc<Store>,
    registry: Arc<Registry>,
    /// The scheduler's handle: requests are queued and placed on the HTTP worker's thread.
    scheduler: Scheduler,
    /// What the function actors work with.
    services: Arc<Services>,
    /// The function actors by function name, and the thread they share.
    function_actors: Mutex<HashMap<String, Addr<FunctionActor>>>,
    functions_arbiter: Arbiter,
    next_id: AtomicU64,
    ready: AtomicBool,
    /// Deploys, undeploys and settings changes one at a time (names are claimed under it).
    deploys: tokio::sync::Mutex<()>,
    arbiters: Vec<Arbiter>,
    pub events: EventBus,
    gpus: Vec<Addr<GpuActor>>,
    /// Results held for clients that have not read them yet.
    pub unsent: Arc<crate::unsent::Unsent>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.functions_arbiter.stop();
        for a in &self.arbiters {
            a.stop();
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Runtime {
    /// Opens the store, creates the devices and starts the actors. Call inside an actix system.
    pub fn start(config: ServeConfig) -> Result<Arc<Self>, StartError> {
        m::handle();
        let store = Arc::new(Store::open(&config.state_dir)?);
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
        // The GPU actors' mailboxes exist before the actors run, so that the scheduler holds
        // their addresses from the start and they hold the scheduler's handle.
        let mailboxes: Vec<_> = (0..devices.len()).map(|_| channel::channel::<GpuActor>(16)).collect();
        let gpus: Vec<Addr<GpuActor>> = mailboxes.iter().map(|(tx, _)| Addr::new(tx.clone())).collect();
        let scheduler = Scheduler::new(cluster, ids.clone(), events.clone(), gpus.clone());
        let mut arbiters = Vec::with_capacity(devices.len() + 1);
        for (i, (device, (_, rx))) in devices.into_iter().zip(mailboxes).enumerate() {
            // Each device on its own thread: its calls block.
            let arbiter = Arbiter::new();
            let actor = GpuActor::new(i, device, scheduler.clone(), events.clone(), ids.clone());
            arbiter.spawn_fn(move || {
                Context::with_receiver(rx).run(actor);
            });
            arbiters.push(arbiter);
        }
        let sched_arbiter = Arbiter::new();
        let handle = scheduler.clone();
        let scheduler_actor =
            SchedulerActor::start_in_arbiter(&sched_arbiter.handle(), move |_| SchedulerActor::new(handle));
        arbiters.push(sched_arbiter);
        let registry = Arc::new(Registry::default());
        let services = Arc::new(Services {
            store: store.clone(),
            registry: registry.clone(),
            scheduler: scheduler_actor,
            events: events.clone(),
            repository: Repository::new(config.model_repository.clone()),
            host_link: infos.first().and_then(|d| d.host_link_bytes_per_s),
        });
        let unsent = crate::unsent::Unsent::new(config.max_unsent);
        Ok(Arc::new(Self {
            unsent,
            config,
            devices: infos,
            store,
            registry,
            scheduler,
            services,
            function_actors: Mutex::new(HashMap::new()),
            functions_arbiter: Arbiter::new(),
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

    pub fn function(&self, name: &str) -> Option<Arc<Function>> {
        self.registry.get(name)
    }

    pub fn functions(&self) -> Vec<Arc<Function>> {
        self.registry.all()
    }

    /// A persisted function that is not served, if `name` is one.
    pub fn unavailable(&self, name: &str) -> Option<Unavailable> {
        self.registry.unavailable(name)
    }

    pub fn unavailable_functions(&self) -> Vec<Unavailable> {
        self.registry.unavailable_all()
    }

    /// Package folders in the model repository.
    pub fn repository_models(&self) -> Vec<String> {
        self.services.repository.models()
    }

    /// Residency and memory map of every device.
    pub fn device_snapshots(&self) -> Vec<DeviceSnapshot> {
        self.scheduler.devices()
    }

    /// Requests of `function` waiting for a device.
    pub fn queued(&self, function: &Function) -> usize {
        self.scheduler.queued(function.id)
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
