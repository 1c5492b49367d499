//! The host-link time model: devices of one host group share one link, and the copies in
//! flight on it share it equally (processor sharing). A copy's predicted end moves when another
//! starts beside it.

use super::{DeviceId, State};
use crate::policy::estimate;

impl State {
    /// The copies on `device`'s host link in flight at `at` (other than `device`'s own), as
    /// (device, bytes left) — each one's bytes left estimated from its predicted end at the
    /// link's current split.
    pub fn host_copies(&self, device: DeviceId, at: f64) -> Vec<(DeviceId, f64)> {
        let group = self.devices[device].group;
        let until: Vec<(DeviceId, f64)> = self
            .devices
            .iter()
            .enumerate()
            .filter(|&(i, d)| i != device && d.group == group)
            .filter_map(|(i, d)| d.job.as_ref().and_then(|j| j.host_copy_until).filter(|&t| t > at).map(|t| (i, t)))
            .collect();
        let share = self.devices[device].host_bw / until.len().max(1) as f64;
        until.into_iter().map(|(i, t)| (i, (t - at) / 1e3 * share)).collect()
    }

    /// A host copy of `bytes` to `device` starting at `at`: how long it takes (ms) and how long
    /// it delays each copy already on the link (ms, by device). A copy with `r` bytes left
    /// delays a new one of `b` bytes by min(r, b) over the link's rate, and is delayed by as
    /// much.
    pub fn host_copy(&self, device: DeviceId, at: f64, bytes: u64) -> (f64, Vec<(DeviceId, f64)>) {
        let bw = self.devices[device].host_bw;
        let b = bytes as f64;
        let delays: Vec<(DeviceId, f64)> = self
            .host_copies(device, at)
            .into_iter()
            .map(|(i, r)| (i, estimate::transfer_ms(r.min(b) as u64, bw)))
            .collect();
        (estimate::transfer_ms(bytes, bw) + delays.iter().map(|d| d.1).sum::<f64>(), delays)
    }

    /// Starts a host copy of `bytes` to `device` at `now`: the copies already on the link slow
    /// down by as much as they slow this one (their predicted ends move). Returns its time, ms.
    pub(super) fn start_host_copy(&mut self, device: DeviceId, now: f64, bytes: u64) -> f64 {
        let (ms, delays) = self.host_copy(device, now, bytes);
        for (j, delay) in delays {
            if let Some(r) = self.devices[j].job.as_mut() {
                if let Some(until) = r.host_copy_until.as_mut() {
                    *until += delay;
                    r.ends_at = r.ends_at.max(*until);
                }
            }
        }
        ms
    }
}
