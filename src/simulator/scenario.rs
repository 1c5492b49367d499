//! A simulated node and its workload: devices and links, the models functions are assigned
//! round-robin, and the arrival process. Built in (`paper-node`) or from a TOML file.

use std::path::Path;

use serde::Deserialize;

use super::SimError;
use crate::gpu::{parse_bytes, topology, Topology, TopologySpec};
use crate::policy::{estimate, DeviceSpec, FunctionSpec, ModelClass, PagePool, Profile};

/// Per-function Poisson arrivals whose rate is redrawn every period, uniformly in a range.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub duration_s: f64,
    pub rate_min_per_min: f64,
    pub rate_max_per_min: f64,
    pub rate_period_s: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub devices: usize,
    pub pool_bytes: u64,
    pub page_bytes: u64,
    pub topology: Topology,
    /// Each model as a function of it is specified (`name` is the model's).
    pub models: Vec<FunctionSpec>,
    pub workload: Workload,
    pub max_batch: usize,
}

/// The paper's node as its artifact runs it.
const PAPER_NODE: &str = r#"
name = "paper-node"
page = "2MiB"
max_batch = 4

# The devices preset of the same name (`--devices sim:paper-node`): 4 × 25 GB, 12 GB/s host
# links shared by the pairs (0, 1) and (2, 3), peer links 48/24 GB/s.
devices = "paper-node"

[workload]
duration_s = 1860
rate_min_per_min = 5
rate_max_per_min = 15
rate_period_s = 60

[[models]]
name = "densenet169"
weights = "57MB"
exec_ms = 25
class = "light"
deadline_ms = 80

[[models]]
name = "densenet201"
weights = "81MB"
exec_ms = 28
class = "light"
deadline_ms = 80

[[models]]
name = "inception3"
weights = "109MB"
exec_ms = 14
class = "light"
deadline_ms = 80

[[models]]
name = "efficientnetb0"
weights = "21MB"
exec_ms = 12
class = "light"
deadline_ms = 80

[[models]]
name = "resnet50"
weights = "103MB"
exec_ms = 9
class = "medium"
deadline_ms = 80

[[models]]
name = "resnet101"
weights = "179MB"
exec_ms = 14
class = "medium"
deadline_ms = 80

[[models]]
name = "resnet152"
weights = "242MB"
exec_ms = 17
class = "medium"
deadline_ms = 80

[[models]]
name = "bertqa"
weights = "1340MB"
exec_ms = 43
class = "heavy"
deadline_ms = 200
"#;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: Option<String>,
    page: Option<String>,
    max_batch: Option<usize>,
    devices: DevicesFile,
    workload: WorkloadFile,
    models: Vec<ModelFile>,
}

/// A devices preset by name (as `--devices sim:NAME`) or a `[devices]` table.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DevicesFile {
    Preset(String),
    Spec(TopologySpec),
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadFile {
    duration_s: f64,
    rate_min_per_min: f64,
    rate_max_per_min: f64,
    #[serde(default = "default_period")]
    rate_period_s: f64,
}

fn default_period() -> f64 {
    60.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    name: String,
    weights: String,
    exec_ms: f64,
    /// Measured from the profile when left out.
    class: Option<ModelClass>,
    deadline_ms: f64,
    #[serde(default = "default_percentile")]
    percentile: f64,
}

fn default_percentile() -> f64 {
    0.98
}

impl Scenario {
    /// `paper-node` or a TOML file.
    pub fn load(spec: &str) -> Result<Self, SimError> {
        if spec == "paper-node" {
            return Self::parse(PAPER_NODE, "paper-node");
        }
        let path = Path::new(spec);
        let text = std::fs::read_to_string(path)
            .map_err(|e| SimError::Scenario(format!("{spec:?}: {e} (expected paper-node or a TOML file)")))?;
        Self::parse(&text, spec)
    }

    pub fn paper_node() -> Self {
        Self::parse(PAPER_NODE, "paper-node").expect("the built-in scenario parses")
    }

    pub fn parse(text: &str, what: &str) -> Result<Self, SimError> {
        let bad = |why: String| SimError::Scenario(format!("{what}: {why}"));
        let f: File = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let (devices, pool_bytes, topology) = match &f.devices {
            DevicesFile::Preset(name) => topology::preset(name)
                .ok_or_else(|| bad(format!("no devices preset {name:?} (expected paper-node or a [devices] table)")))?
                .map_err(|e| bad(e.to_string()))?,
            DevicesFile::Spec(spec) => spec.build().map_err(bad)?,
        };
        let host = topology.host_link.unwrap_or(estimate::UNLIMITED_LINK);
        let w = &f.workload;
        let workload_ok = w.duration_s > 0.0
            && w.duration_s <= 7.0 * 86_400.0
            && w.rate_min_per_min >= 0.0
            && w.rate_max_per_min >= w.rate_min_per_min
            && w.rate_max_per_min <= 60_000.0
            && w.rate_period_s > 0.0;
        if !workload_ok {
            return Err(bad(
                "workload: need 0 < duration_s ≤ 1 week, 0 ≤ rate_min ≤ rate_max ≤ 60000/min, rate_period_s > 0".into(),
            ));
        }
        if f.models.is_empty() {
            return Err(bad("no models".into()));
        }
        let page_bytes = f.page.as_deref().map(parse_bytes).transpose().map_err(bad)?.unwrap_or(2 << 20);
        if page_bytes == 0 {
            return Err(bad("page must be positive".into()));
        }
        let max_batch = f.max_batch.unwrap_or(4).max(1);
        let mut models = Vec::new();
        for m in &f.models {
            let invalid = |why: String| bad(format!("model {}: {why}", m.name));
            let profile =
                Profile { weight_bytes: parse_bytes(&m.weights).map_err(bad)?, exec_ms: m.exec_ms, class: m.class };
            profile.validate().map_err(invalid)?;
            if !(m.deadline_ms > 0.0 && m.deadline_ms.is_finite() && m.percentile > 0.0 && m.percentile <= 1.0) {
                return Err(invalid("deadline_ms must be positive, percentile in (0, 1]".into()));
            }
            let bytes = profile.weight_bytes;
            models.push(FunctionSpec {
                name: m.name.clone(),
                bytes,
                exec_ms: m.exec_ms,
                class: m.class.unwrap_or_else(|| ModelClass::measure(bytes, m.exec_ms, host)),
                deadline_ms: m.deadline_ms,
                percentile: m.percentile,
                max_batch,
            });
        }
        Ok(Self {
            name: f.name.unwrap_or_else(|| what.to_string()),
            devices,
            pool_bytes,
            page_bytes,
            topology,
            models,
            workload: (*w).into(),
            max_batch,
        })
    }

    /// The model of function `i` (round-robin).
    pub fn model_of(&self, i: usize) -> &FunctionSpec {
        &self.models[i % self.models.len()]
    }

    /// Function `i`'s name: `f7-resnet152`.
    pub fn function_name(&self, i: usize) -> String {
        format!("f{i}-{}", self.model_of(i).name)
    }

    pub fn function_spec(&self, i: usize) -> FunctionSpec {
        FunctionSpec { name: self.function_name(i), ..self.model_of(i).clone() }
    }

    pub fn device_specs(&self) -> Vec<DeviceSpec> {
        (0..self.devices)
            .map(|i| DeviceSpec {
                pool: PagePool::new(self.pool_bytes, self.page_bytes),
                host_link: self.topology.host_link,
                peers: self.topology.peers.get(i).cloned().unwrap_or_default(),
                host_group: self.host_group(i),
            })
            .collect()
    }

    /// The host link device `i` uses: its PCIe group's, else its own.
    pub fn host_group(&self, i: usize) -> usize {
        self.topology.host_group(i)
    }

    /// The most functions the devices could serve if every request only executed (no swaps,
    /// no waiting): device time available over device time each function needs, at the mean
    /// arrival rate and the round-robin mean execution time.
    pub fn capacity_bound_functions(&self) -> usize {
        let mean_exec_ms = self.models.iter().map(|m| m.exec_ms).sum::<f64>() / self.models.len() as f64;
        let rate_per_s = (self.workload.rate_min_per_min + self.workload.rate_max_per_min) / 2.0 / 60.0;
        let need = rate_per_s * mean_exec_ms / 1e3;
        if need <= 0.0 {
            return usize::MAX;
        }
        (self.devices as f64 / need).floor() as usize
    }
}

impl From<WorkloadFile> for Workload {
    fn from(w: WorkloadFile) -> Self {
        Self {
            duration_s: w.duration_s,
            rate_min_per_min: w.rate_min_per_min,
            rate_max_per_min: w.rate_max_per_min,
            rate_period_s: w.rate_period_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;

    #[test]
    fn paper_node_is_the_issues_node() {
        let s = Scenario::paper_node();
        assert_eq!((s.devices, s.pool_bytes), (4, 25_000_000_000));
        assert_eq!(s.models.len(), 8);
        assert_eq!(s.models[7].bytes, 1340 * MB);
        assert_eq!(s.models[7].deadline_ms, 200.0);
        assert_eq!(s.function_name(15), "f15-bertqa");
        assert_eq!(s.host_group(1), 0);
        assert_eq!(s.host_group(2), 1);
        assert_eq!(s.topology.peers[2][1], Some(48e9));
        assert_eq!(s.workload.duration_s, 1860.0);
        // 4 GPUs / (10 req/min × 20.25 ms mean) = 1185 functions.
        assert_eq!(s.capacity_bound_functions(), 1185);
    }

    #[test]
    fn bad_scenarios_are_refused() {
        // The paper node with its devices written out as a table.
        let ok = &PAPER_NODE.replace(
            "devices = \"paper-node\"\n",
            "[devices]\ncount = 4\nmemory = \"25GB\"\nhost_link = \"12GB/s\"\npcie_groups = [[0, 1], [2, 3]]\n\
             peer_links = [[0, 3, \"48GB/s\"], [1, 2, \"48GB/s\"], [2, 3, \"48GB/s\"], [0, 1, \"24GB/s\"], \
             [0, 2, \"24GB/s\"], [1, 3, \"24GB/s\"]]\n",
        );
        assert_eq!(Scenario::parse(ok, "t").unwrap().topology, Scenario::paper_node().topology);
        assert!(
            Scenario::parse(&PAPER_NODE.replace("devices = \"paper-node\"", "devices = \"moon-base\""), "t").is_err()
        );
        for (from, to) in [
            ("count = 4", "count = 0"),
            ("memory = \"25GB\"", "memory = \"lots\""),
            ("[1, 2, \"48GB/s\"]", "[1, 9, \"48GB/s\"]"),
            ("exec_ms = 43", "exec_ms = -1"),
            ("duration_s = 1860", "duration_s = 0"),
            ("max_batch = 4", "max_batch = 4\nunknown = 1"),
        ] {
            assert!(Scenario::parse(&ok.replace(from, to), "t").is_err(), "{to}");
        }
        assert!(Scenario::load("/nonexistent.toml").is_err());
    }

    #[test]
    fn classes_are_measured_when_not_given() {
        let text = PAPER_NODE.replace("class = \"heavy\"\n", "");
        let s = Scenario::parse(&text, "t").unwrap();
        assert_eq!(s.models[7].class, ModelClass::Heavy);
    }
}
