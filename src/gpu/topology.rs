//! How simulated devices are connected: host links, PCIe groups that share a host link, and
//! peer links between devices. From a preset (`sim:paper-node`) or a JSON file.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::sizes::{parse_bandwidth, parse_bytes};
use super::DeviceError;

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Topology {
    /// Host→device bandwidth of every device, bytes per second (`None`: not modelled).
    pub host_link: Option<f64>,
    /// `peers[i][j]`: bandwidth of a copy from device `j` to device `i` (`None`: no peer access).
    pub peers: Vec<Vec<Option<f64>>>,
    /// Devices that share one host link (a PCIe switch); the simulator splits it among them.
    pub pcie_groups: Vec<Vec<usize>>,
}

impl Topology {
    /// The host link device `i` uses: its PCIe group's, else its own.
    pub fn host_group(&self, i: usize) -> usize {
        self.pcie_groups.iter().position(|g| g.contains(&i)).unwrap_or(self.pcie_groups.len() + i)
    }
}

/// A node's devices as files describe them: `{"devices": 4, "memory": "25GB", "host_link":
/// "12GB/s", "pcie_groups": [[0, 1], [2, 3]], "peer_links": [[0, 3, "48GB/s"], ...]}` (JSON for
/// `--devices`, the `[devices]` table of a simulator scenario, where `count` may stand for
/// `devices`); peer links are symmetric.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySpec {
    #[serde(alias = "count")]
    devices: usize,
    memory: String,
    host_link: String,
    #[serde(default)]
    pcie_groups: Vec<Vec<usize>>,
    #[serde(default)]
    peer_links: Vec<(usize, usize, String)>,
}

/// The paper's node (FaaSwap/Torpor artifact): 4 GPUs with 25 GB budgets, PCIe 3 class host
/// links (12 GB/s pinned) shared by the pairs (0, 1) and (2, 3), fast peer links (48 GB/s) for
/// 0–3, 1–2, 2–3 and slow ones (24 GB/s) for 0–1, 0–2, 1–3.
const PAPER_NODE: &str = r#"{"devices": 4, "memory": "25GB", "host_link": "12GB/s",
  "pcie_groups": [[0, 1], [2, 3]],
  "peer_links": [[0, 3, "48GB/s"], [1, 2, "48GB/s"], [2, 3, "48GB/s"],
                 [0, 1, "24GB/s"], [0, 2, "24GB/s"], [1, 3, "24GB/s"]]}"#;

/// A preset by name: (device count, pool bytes, topology).
pub fn preset(name: &str) -> Option<Result<(usize, u64, Topology), DeviceError>> {
    match name {
        "paper-node" => Some(parse(PAPER_NODE, "preset paper-node")),
        _ => None,
    }
}

pub fn load(path: &Path) -> Result<(usize, u64, Topology), DeviceError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| DeviceError::BadSpec(format!("topology file {}: {e}", path.display())))?;
    parse(&text, &path.display().to_string())
}

fn parse(text: &str, what: &str) -> Result<(usize, u64, Topology), DeviceError> {
    let bad = |why: String| DeviceError::BadSpec(format!("topology {what}: {why}"));
    let f: TopologySpec = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    f.build().map_err(bad)
}

impl TopologySpec {
    /// Checks the description: (device count, pool bytes, topology).
    pub fn build(&self) -> Result<(usize, u64, Topology), String> {
        let n = self.devices;
        if !(1..=64).contains(&n) {
            return Err(format!("devices {n} must be 1 to 64"));
        }
        let memory = parse_bytes(&self.memory)?;
        let host = parse_bandwidth(&self.host_link)?;
        let mut peers = vec![vec![None; n]; n];
        for (a, b, bw) in &self.peer_links {
            if *a >= n || *b >= n || a == b {
                return Err(format!("peer link {a}–{b} does not join two of the {n} devices"));
            }
            let bw = parse_bandwidth(bw)?;
            peers[*a][*b] = Some(bw);
            peers[*b][*a] = Some(bw);
        }
        if let Some(group) = self.pcie_groups.iter().find(|g| g.iter().any(|&d| d >= n)) {
            return Err(format!("PCIe group {group:?} names a device that does not exist"));
        }
        Ok((n, memory, Topology { host_link: Some(host), peers, pcie_groups: self.pcie_groups.clone() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_node_preset() {
        let (n, memory, t) = preset("paper-node").unwrap().unwrap();
        assert_eq!((n, memory), (4, 25_000_000_000));
        assert_eq!(t.host_link, Some(12e9));
        assert_eq!(t.peers[0][3], Some(48e9));
        assert_eq!(t.peers[3][0], Some(48e9));
        assert_eq!(t.peers[1][3], Some(24e9));
        assert_eq!(t.peers[2][2], None);
        assert_eq!(t.pcie_groups, vec![vec![0, 1], vec![2, 3]]);
    }

    #[test]
    fn bad_files_are_refused() {
        for text in [
            r#"{"devices": 0, "memory": "1GB", "host_link": "1GB/s"}"#,
            r#"{"devices": 2, "memory": "1GB", "host_link": "1GB/s", "peer_links": [[0, 2, "1GB/s"]]}"#,
            r#"{"devices": 2, "memory": "lots", "host_link": "1GB/s"}"#,
            r#"{"devices": 2, "memory": "1GB", "host_link": "1GB/s", "nvlink": true}"#,
        ] {
            assert!(parse(text, "test").is_err(), "{text}");
        }
    }
}
