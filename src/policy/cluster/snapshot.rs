//! Each device's memory map as the devices API and the event feed show it. These are views,
//! built on demand; nothing in the cluster reads them back.

use serde::Serialize;

use super::{Cluster, DeviceId, FunctionId};

/// A device's memory map, for the devices API.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceSnapshot {
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
    pub page_bytes: u64,
    pub busy: bool,
    pub healthy: bool,
    pub executing: Option<String>,
    pub resident: Vec<ResidentSnapshot>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResidentSnapshot {
    pub function: String,
    pub bytes: u64,
    pub first_page: usize,
    pub pages: usize,
}

impl Cluster {
    /// A device's (used, capacity) weight-pool bytes, without building its memory map.
    pub fn memory(&self, device: DeviceId) -> (u64, u64) {
        let pool = &self.s.devices[device].pool;
        (pool.used_pages() as u64 * pool.page_bytes(), pool.capacity_bytes())
    }

    pub fn snapshot(&self, device: DeviceId) -> DeviceSnapshot {
        let d = &self.s.devices[device];
        let name = |f: &FunctionId| self.s.functions.get(f).map_or_else(|| format!("#{f}"), |i| i.spec.name.clone());
        let mut resident: Vec<ResidentSnapshot> = d
            .resident
            .iter()
            .map(|(f, r)| ResidentSnapshot {
                function: name(f),
                bytes: self.s.functions.get(f).map_or(0, |i| i.spec.bytes),
                first_page: r.extent.first,
                pages: r.extent.pages,
            })
            .collect();
        resident.sort_by_key(|r| r.first_page);
        let used = d.pool.used_pages() as u64 * d.pool.page_bytes();
        DeviceSnapshot {
            capacity_bytes: d.pool.capacity_bytes(),
            used_bytes: used,
            free_bytes: d.pool.capacity_bytes() - used,
            page_bytes: d.pool.page_bytes(),
            busy: d.job.is_some(),
            healthy: d.healthy,
            executing: d.job.as_ref().map(|j| name(&j.function)),
            resident,
        }
    }
}
