//! `faaswap serve` configuration: defaults in the struct, then a TOML file (`--config`), then
//! environment variables (`FAASWAP_*`), then flags — each later source wins.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Deserialize;

use crate::auth::{Scope, TokenSet, TokenSpec};
use crate::gpu::{parse_bandwidth, parse_bytes, DevicePlan};
use crate::policy::PolicyKind;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Devices(#[from] crate::gpu::DeviceError),
}

/// Flags and environment variables; every field is optional so that the file can fill it.
#[derive(Debug, Clone, Default, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ServeArgs {
    /// TOML configuration file (keys as the flags, e.g. `device-memory = "4GiB"`).
    #[arg(long, env = "FAASWAP_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "FAASWAP_ADDR")]
    pub addr: Option<String>,
    /// Data directory: the store and the deployed packages [default: ./state].
    #[arg(long, env = "FAASWAP_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Folder of model packages that can be deployed by name.
    #[arg(long, env = "FAASWAP_MODEL_REPOSITORY")]
    pub model_repository: Option<PathBuf>,
    /// auto, cpu, cpu:N, cuda, sim:N or sim:NxSIZE [default: auto].
    #[arg(long, env = "FAASWAP_DEVICES")]
    pub devices: Option<String>,
    /// Weight pool of each device, e.g. 2GiB [default: 2GiB for cpu, 16GiB for sim].
    #[arg(long, env = "FAASWAP_DEVICE_MEMORY")]
    pub device_memory: Option<String>,
    /// Page size of the weight pools [default: 2MiB].
    #[arg(long, env = "FAASWAP_PAGE_SIZE")]
    pub page_size: Option<String>,
    /// Host→device link bandwidth to model, e.g. 12GB/s (cpu: throttles swap-in copies).
    #[arg(long, env = "FAASWAP_HOST_LINK")]
    pub host_link: Option<String>,
    /// Multiplies every modelled time of `sim` devices (0: jobs take no time, to measure the
    /// runtime's own overhead) [default: 1].
    #[arg(long, env = "FAASWAP_SIM_TIME_SCALE")]
    pub sim_time_scale: Option<f64>,
    /// Activation workspace of each cpu device, reserved at start-up; a request needing more
    /// is refused [default: 1GiB].
    #[arg(long, env = "FAASWAP_WORKSPACE")]
    pub workspace: Option<String>,
    /// HTTP worker threads [default: one per core].
    #[arg(long, env = "FAASWAP_HTTP_WORKERS")]
    pub http_workers: Option<usize>,
    /// Largest request body [default: 64MiB].
    #[arg(long, env = "FAASWAP_MAX_BODY")]
    pub max_body: Option<String>,
    /// Seconds a client may take to send a request body; beyond, 408 [default: 30].
    #[arg(long, env = "FAASWAP_BODY_TIMEOUT")]
    pub body_timeout: Option<f64>,
    /// Most bytes of results held for clients that have not read them yet (computed, encoded or
    /// being sent); beyond, requests are refused with 503 and Retry-After [default: 1GiB].
    #[arg(long, env = "FAASWAP_MAX_UNSENT")]
    pub max_unsent: Option<String>,
    /// Seconds a large response may take to be read by its client; then its bytes are dropped
    /// and the connection fails [default: 60].
    #[arg(long, env = "FAASWAP_SEND_TIMEOUT")]
    pub send_timeout: Option<f64>,
    /// Scheduling and memory policy: native, simpleswap, torpor or faaswap [default: faaswap].
    #[arg(long, env = "FAASWAP_POLICY")]
    pub policy: Option<String>,
    /// Most requests waiting per function; beyond, 429 with Retry-After [default: 512].
    #[arg(long, env = "FAASWAP_MAX_QUEUE_PER_FUNCTION")]
    pub max_queue_per_function: Option<usize>,
    /// Most requests waiting in all [default: 8192].
    #[arg(long, env = "FAASWAP_MAX_QUEUE")]
    pub max_queue: Option<usize>,
    /// faaswap policy: refuse (503 deadline_unmeetable) a request that cannot finish before its
    /// deadline on any device, instead of running it late [default: true].
    #[arg(long, env = "FAASWAP_SHED")]
    pub shed: Option<bool>,
    /// Largest model package a deploy accepts (its files together) [default: 64GiB].
    #[arg(long, env = "FAASWAP_MAX_PACKAGE")]
    pub max_package: Option<String>,
    /// Require an admin token for `/metrics` [default: false].
    #[arg(long, env = "FAASWAP_PROTECT_METRICS")]
    pub protect_metrics: Option<bool>,
    /// API tokens, file only: `[[tokens]]` tables (`name`, `scope` admin|invoke, `sha256`,
    /// optional `functions`).
    #[arg(skip)]
    #[serde(default)]
    pub tokens: Vec<TokenSpec>,
    /// An admin token in plain text: from `FAASWAP_ADMIN_TOKEN` only (never a flag, which
    /// other users could read from the process list).
    #[arg(skip)]
    #[serde(skip)]
    pub admin_token: Option<String>,
    /// An invoke token (all functions) in plain text: from `FAASWAP_INVOKE_TOKEN` only.
    #[arg(skip)]
    #[serde(skip)]
    pub invoke_token: Option<String>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub addr: String,
    pub state_dir: PathBuf,
    pub model_repository: Option<PathBuf>,
    pub devices: DevicePlan,
    pub page_bytes: u64,
    pub host_link: Option<f64>,
    pub sim_time_scale: f64,
    pub workspace_bytes: u64,
    pub max_body: usize,
    pub body_timeout: std::time::Duration,
    pub max_unsent: u64,
    pub send_timeout: std::time::Duration,
    pub http_workers: usize,
    pub max_package: u64,
    pub policy: PolicyKind,
    pub shed: bool,
    pub max_queue_per_function: usize,
    pub max_queue: usize,
    pub auth: TokenSet,
}

/// One HTTP worker per core, as actix-web and Triton do.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

impl ServeConfig {
    /// Where to listen: the configured address, except that without API tokens the server
    /// stays on loopback (the same port on 127.0.0.1), with a line saying so.
    pub fn listen_addr(&self) -> Result<(String, Option<String>), ConfigError> {
        use std::net::ToSocketAddrs;
        let resolved: Vec<std::net::SocketAddr> = self
            .addr
            .to_socket_addrs()
            .map_err(|e| ConfigError::Invalid(format!("--addr {}: {e}", self.addr)))?
            .collect();
        let port = resolved.first().map_or(0, |a| a.port());
        if !self.auth.is_empty() {
            return Ok((self.addr.clone(), None));
        }
        if !resolved.is_empty() && resolved.iter().all(|a| a.ip().is_loopback()) {
            return Ok((
                self.addr.clone(),
                Some("no API tokens are configured: the API is open to local users only".into()),
            ));
        }
        let addr = format!("127.0.0.1:{port}");
        let note = format!(
            "no API tokens are configured: listening on loopback only ({addr}, not {}); set FAASWAP_ADMIN_TOKEN or [[tokens]] to serve other hosts",
            self.addr
        );
        Ok((addr, Some(note)))
    }
}

/// A count flag that must be at least 1.
fn positive(what: &str, v: Option<usize>, default: usize) -> Result<usize, ConfigError> {
    match v {
        Some(0) => Err(ConfigError::Invalid(format!("{what} must be at least 1"))),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

impl ServeArgs {
    pub fn resolve(self) -> Result<ServeConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        let pick = |a: Option<String>, b: Option<String>| a.or(b);
        let addr = pick(self.addr, file.addr).unwrap_or_else(|| "127.0.0.1:8080".into());
        let size = |what: &str, v: Option<String>| -> Result<Option<u64>, ConfigError> {
            v.map(|s| parse_bytes(&s).map_err(|e| ConfigError::Invalid(format!("{what}: {e}")))).transpose()
        };
        let device_memory = size("--device-memory", pick(self.device_memory, file.device_memory))?;
        let page_bytes = size("--page-size", pick(self.page_size, file.page_size))?.unwrap_or(2 << 20);
        if !page_bytes.is_power_of_two() || !(4096..=(64 << 20)).contains(&page_bytes) {
            return Err(ConfigError::Invalid(format!(
                "--page-size {page_bytes} must be a power of two from 4KiB to 64MiB"
            )));
        }
        let spec = pick(self.devices, file.devices).unwrap_or_else(|| "auto".into());
        let host_link = pick(self.host_link, file.host_link)
            .map(|s| parse_bandwidth(&s).map_err(|e| ConfigError::Invalid(format!("--host-link: {e}"))))
            .transpose()?;
        let max_body = size("--max-body", pick(self.max_body, file.max_body))?.unwrap_or(64 << 20);
        let seconds = |what: &str, v: Option<f64>, default: f64| -> Result<std::time::Duration, ConfigError> {
            let v = v.unwrap_or(default);
            if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
                return Err(ConfigError::Invalid(format!("{what} {v} must be a number of seconds in (0, 86400]")));
            }
            Ok(std::time::Duration::from_secs_f64(v))
        };
        let sim_time_scale = self.sim_time_scale.or(file.sim_time_scale).unwrap_or(1.0);
        if !(sim_time_scale.is_finite() && sim_time_scale >= 0.0) {
            return Err(ConfigError::Invalid(format!("--sim-time-scale {sim_time_scale} must be ≥ 0")));
        }
        let admin = self.admin_token.or_else(|| std::env::var("FAASWAP_ADMIN_TOKEN").ok());
        let invoke = self.invoke_token.or_else(|| std::env::var("FAASWAP_INVOKE_TOKEN").ok());
        let plain: Vec<_> =
            [("FAASWAP_ADMIN_TOKEN", Scope::Admin, admin), ("FAASWAP_INVOKE_TOKEN", Scope::Invoke(None), invoke)]
                .into_iter()
                .filter_map(|(name, scope, token)| Some((name, scope, token?)))
                .collect();
        let specs = if self.tokens.is_empty() { &file.tokens } else { &self.tokens };
        let mut auth = TokenSet::new(specs, &plain).map_err(ConfigError::Invalid)?;
        auth.protect_metrics = self.protect_metrics.or(file.protect_metrics).unwrap_or(false);
        Ok(ServeConfig {
            auth,
            addr,
            state_dir: self.state_dir.or(file.state_dir).unwrap_or_else(|| PathBuf::from("state")),
            model_repository: self.model_repository.or(file.model_repository),
            devices: DevicePlan::parse(&spec, device_memory)?,
            page_bytes,
            host_link,
            sim_time_scale,
            workspace_bytes: size("--workspace", pick(self.workspace, file.workspace))?
                .unwrap_or(crate::gpu::DEFAULT_WORKSPACE),
            max_body: max_body as usize,
            body_timeout: seconds("--body-timeout", self.body_timeout.or(file.body_timeout), 30.0)?,
            max_unsent: size("--max-unsent", pick(self.max_unsent, file.max_unsent))?.unwrap_or(1 << 30),
            send_timeout: seconds("--send-timeout", self.send_timeout.or(file.send_timeout), 60.0)?,
            http_workers: positive("--http-workers", self.http_workers.or(file.http_workers), default_workers())?,
            max_package: size("--max-package", pick(self.max_package, file.max_package))?.unwrap_or(64 << 30),
            policy: pick(self.policy, file.policy)
                .map(|p| p.parse::<PolicyKind>().map_err(|e| ConfigError::Invalid(format!("--policy: {e}"))))
                .transpose()?
                .unwrap_or_default(),
            shed: self.shed.or(file.shed).unwrap_or(true),
            max_queue_per_function: positive(
                "--max-queue-per-function",
                self.max_queue_per_function.or(file.max_queue_per_function),
                512,
            )?,
            max_queue: positive("--max-queue", self.max_queue.or(file.max_queue), 8192)?,
        })
    }

    fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let err = |reason: String| ConfigError::File { path: path.to_path_buf(), reason };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        toml::from_str(&text).map_err(|e| err(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("faaswap.toml");
        std::fs::write(&file, "addr = \"0.0.0.0:9000\"\ndevices = \"sim:2x1GiB\"\npage-size = \"1MiB\"\n").unwrap();
        let args = ServeArgs {
            config: Some(file),
            devices: Some("cpu:2".into()),
            device_memory: Some("256MiB".into()),
            ..ServeArgs::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.addr, "0.0.0.0:9000");
        assert_eq!((c.devices.count, c.devices.pool_bytes), (2, 256 << 20));
        assert_eq!(c.page_bytes, 1 << 20);
        assert_eq!(c.state_dir, PathBuf::from("state"));
    }

    #[test]
    fn the_example_config_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("faaswap.example.toml");
        let c = ServeArgs { config: Some(path), ..ServeArgs::default() }.resolve().unwrap();
        assert_eq!((c.workspace_bytes, c.max_body), (1 << 30, 64 << 20));
        assert_eq!((c.policy, c.shed, c.max_queue_per_function, c.max_queue), (PolicyKind::Faaswap, true, 512, 8192));
    }

    #[test]
    fn without_tokens_the_server_stays_on_loopback() {
        let open = ServeArgs { addr: Some("0.0.0.0:9001".into()), ..ServeArgs::default() }.resolve().unwrap();
        let (addr, note) = open.listen_addr().unwrap();
        assert_eq!(addr, "127.0.0.1:9001");
        assert!(note.unwrap().contains("loopback"));
        let local = ServeArgs { addr: Some("127.0.0.1:9002".into()), ..ServeArgs::default() }.resolve().unwrap();
        assert_eq!(local.listen_addr().unwrap().0, "127.0.0.1:9002");
        let guarded = ServeArgs {
            addr: Some("0.0.0.0:9003".into()),
            admin_token: Some("a-long-enough-admin-token".into()),
            ..ServeArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(guarded.listen_addr().unwrap(), ("0.0.0.0:9003".to_string(), None));
    }

    #[test]
    fn tokens_come_from_the_file_as_digests() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("faaswap.toml");
        let digest = hex::encode(crate::auth::digest("file-token-0123456789"));
        let text = format!(
            "protect-metrics = true\n[[tokens]]\nname = \"app\"\nscope = \"invoke\"\nfunctions = [\"bert\"]\nsha256 = \"{digest}\"\n"
        );
        std::fs::write(&file, text).unwrap();
        let c = ServeArgs { config: Some(file), ..ServeArgs::default() }.resolve().unwrap();
        assert!(c.auth.protect_metrics);
        let bert = crate::auth::Access::Invoke(Some("bert"));
        assert_eq!(c.auth.check(Some("file-token-0123456789"), &bert), Ok(()));
        assert!(c.auth.check(Some("file-token-0123456789"), &crate::auth::Access::Admin).is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        let bad = |args: ServeArgs| assert!(args.resolve().is_err());
        bad(ServeArgs { page_size: Some("3000".into()), ..Default::default() });
        bad(ServeArgs { device_memory: Some("lots".into()), ..Default::default() });
        bad(ServeArgs { host_link: Some("fast".into()), ..Default::default() });
        bad(ServeArgs { devices: Some("tpu".into()), ..Default::default() });
        bad(ServeArgs { policy: Some("lru".into()), ..Default::default() });
        bad(ServeArgs { max_queue: Some(0), ..Default::default() });
    }
}
