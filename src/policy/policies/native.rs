//! `native`: early binding, as serverless platforms do without swapping. Each function is bound
//! at deploy to the device with the most free memory while memory lasts; its copy there is never
//! evicted, and it runs there only. A function that got no device is refused (`NotPlaced`).

use super::{run_on, Choice};
use crate::policy::cluster::{DeviceId, FunctionId, Resident, State};
use crate::policy::SwapSource;

#[derive(Debug)]
pub struct Native;

impl Native {
    pub fn bind(&self, s: &mut State, id: FunctionId, bytes: u64) -> Option<DeviceId> {
        let mut order: Vec<DeviceId> = (0..s.devices.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(s.devices[i].pool.free_pages()));
        for i in order {
            let d = &mut s.devices[i];
            if let Some(extent) = d.pool.alloc(d.pool.pages_for(bytes)) {
                d.resident.insert(id, Resident { extent, last_used: 0.0, loaded_at: 0.0, pins: 0, ready: false });
                return Some(i);
            }
        }
        None
    }

    /// The function's own device, when it is idle.
    pub fn choose(&self, s: &State, f: FunctionId) -> Choice {
        match s.functions[&f].bound {
            Some(d) if s.devices[d].idle() => run_on(s, d, f, SwapSource::Host),
            _ => Choice::Wait,
        }
    }
}
