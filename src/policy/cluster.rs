//! The scheduler's view of every device: which models are resident where, which devices are
//! busy, the queue of waiting requests, and the decisions over them. This first policy is the
//! baseline the scheduling work replaces: FIFO order, a device that already holds the model
//! first, else any idle device, making room by evicting least-recently-used models; the copy
//! comes from another device that holds the model when its peer link beats the host link.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use super::pages::{Extent, PagePool};

pub type FunctionId = u64;
pub type DeviceId = usize;
pub type RequestId = u64;

/// Where a swap-in copies from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwapSource {
    Host,
    Peer(DeviceId),
}

/// An order for one device: run `request` of `function` from `extent`, copying the model in
/// first when `swap` says so. `evicted` lists what was dropped to make room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    pub request: RequestId,
    pub function: FunctionId,
    pub device: DeviceId,
    pub extent: Extent,
    pub swap: Option<SwapSource>,
    pub evicted: Vec<FunctionId>,
}

#[derive(Debug, Clone)]
struct FunctionInfo {
    name: String,
    bytes: u64,
}

#[derive(Debug, Clone)]
struct Resident {
    extent: Extent,
    last_used: u64,
    /// Copies to other devices reading from this one: never evicted while non-zero.
    pins: usize,
    /// The copy is complete (only a complete copy can be a peer-copy source).
    ready: bool,
}

/// A device's links, bytes per second (`None`: no limit for the host link, no peer access for
/// a peer link).
#[derive(Debug, Clone, Default)]
pub struct Links {
    pub host: Option<f64>,
    /// Indexed by device.
    pub peers: Vec<Option<f64>>,
}

impl Links {
    /// Whether copying from device `from` is faster than from the host.
    fn peer_beats_host(&self, from: DeviceId) -> bool {
        match (self.peers.get(from).copied().flatten(), self.host) {
            (Some(peer), Some(host)) => peer > host,
            _ => false,
        }
    }
}

#[derive(Debug, Clone)]
struct DeviceState {
    pool: PagePool,
    links: Links,
    resident: HashMap<FunctionId, Resident>,
    /// The function executing there, if any.
    busy: Option<FunctionId>,
    /// The device (and function) its running job copies from, pinned until it completes.
    copying_from: Option<(DeviceId, FunctionId)>,
}

/// A device's memory map, for the devices API.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceSnapshot {
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
    pub page_bytes: u64,
    pub busy: bool,
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

#[derive(Debug)]
pub struct Cluster {
    devices: Vec<DeviceState>,
    functions: HashMap<FunctionId, FunctionInfo>,
    queue: VecDeque<(RequestId, FunctionId)>,
    clock: u64,
}

impl Cluster {
    /// Devices without peer links (every copy comes from the host).
    pub fn new(pools: Vec<PagePool>) -> Self {
        let n = pools.len();
        Self::with_links(pools, vec![Links::default(); n])
    }

    pub fn with_links(pools: Vec<PagePool>, links: Vec<Links>) -> Self {
        assert_eq!(pools.len(), links.len(), "one link description per device");
        Self {
            devices: pools
                .into_iter()
                .zip(links)
                .map(|(pool, links)| DeviceState {
                    pool,
                    links,
                    resident: HashMap::new(),
                    busy: None,
                    copying_from: None,
                })
                .collect(),
            functions: HashMap::new(),
            queue: VecDeque::new(),
            clock: 0,
        }
    }

    /// Registers a function whose packed weights are `bytes` long. Refused when no device
    /// could ever hold it.
    pub fn add_function(&mut self, id: FunctionId, name: &str, bytes: u64) -> Result<(), String> {
        if !self.devices.iter().any(|d| d.pool.can_ever_hold(bytes)) {
            let largest = self.devices.iter().map(|d| d.pool.capacity_bytes()).max().unwrap_or(0);
            return Err(format!(
                "the model's weights ({bytes} bytes) do not fit the largest device weight pool ({largest} bytes)"
            ));
        }
        self.functions.insert(id, FunctionInfo { name: name.to_string(), bytes });
        Ok(())
    }

    /// Forgets a function: drops its queued requests (returned, to be answered) and frees its
    /// residency on idle devices (their count is returned); a device still executing it frees
    /// it on completion.
    pub fn remove_function(&mut self, id: FunctionId) -> (Vec<RequestId>, usize) {
        self.functions.remove(&id);
        let mut dropped = Vec::new();
        self.queue.retain(|&(r, f)| {
            if f == id {
                dropped.push(r);
            }
            f != id
        });
        let mut evicted = 0;
        for d in &mut self.devices {
            let pinned = d.resident.get(&id).is_some_and(|r| r.pins > 0);
            if d.busy != Some(id) && !pinned {
                if let Some(r) = d.resident.remove(&id) {
                    d.pool.free(r.extent);
                    evicted += 1;
                }
            }
        }
        (dropped, evicted)
    }

    /// Queues a request; false (and nothing queued) when the function is not registered, e.g.
    /// undeployed while the request was on its way.
    pub fn enqueue(&mut self, request: RequestId, function: FunctionId) -> bool {
        if !self.functions.contains_key(&function) {
            return false;
        }
        self.queue.push_back((request, function));
        true
    }

    pub fn queued(&self, function: FunctionId) -> usize {
        self.queue.iter().filter(|(_, f)| *f == function).count()
    }

    /// The next order to send, if any request can start now. Call until `None`.
    pub fn next_dispatch(&mut self) -> Option<Dispatch> {
        for qi in 0..self.queue.len() {
            let (request, function) = self.queue[qi];
            if let Some(d) = self.place(request, function) {
                self.queue.remove(qi);
                return Some(d);
            }
        }
        None
    }

    fn place(&mut self, request: RequestId, function: FunctionId) -> Option<Dispatch> {
        let bytes = self.functions.get(&function)?.bytes;
        self.clock += 1;
        let now = self.clock;
        let idle: Vec<DeviceId> = (0..self.devices.len()).filter(|&i| self.devices[i].busy.is_none()).collect();
        // A device that already holds the model.
        if let Some(&i) = idle.iter().find(|&&i| self.devices[i].resident.contains_key(&function)) {
            let d = &mut self.devices[i];
            let r = d.resident.get_mut(&function).expect("checked resident");
            r.last_used = now;
            d.busy = Some(function);
            return Some(Dispatch { request, function, device: i, extent: r.extent, swap: None, evicted: Vec::new() });
        }
        // Else the idle device needing the fewest evictions (free room first).
        let mut best: Option<(usize, DeviceId)> = None;
        for &i in &idle {
            if let Some(n) = self.evictions_needed(i, bytes) {
                if best.is_none_or(|(m, _)| n < m) {
                    best = Some((n, i));
                }
            }
        }
        let (_, i) = best?;
        // Copy from a device that holds the model over a faster peer link, if any.
        let source = (0..self.devices.len())
            .filter(|&j| j != i && self.devices[j].resident.get(&function).is_some_and(|r| r.ready))
            .filter(|&j| self.devices[i].links.peer_beats_host(j))
            .max_by(|&a, &b| {
                let bw = |j: DeviceId| self.devices[i].links.peers[j].unwrap_or(0.0);
                bw(a).total_cmp(&bw(b))
            });
        let d = &mut self.devices[i];
        let pages = d.pool.pages_for(bytes);
        let mut evicted = Vec::new();
        let extent = loop {
            if let Some(e) = d.pool.alloc(pages) {
                break e;
            }
            let victim = d
                .resident
                .iter()
                .filter(|(_, r)| r.pins == 0)
                .min_by_key(|(_, r)| r.last_used)
                .map(|(&f, _)| f)
                .expect("evictions_needed promised room");
            let r = d.resident.remove(&victim).expect("victim is resident");
            d.pool.free(r.extent);
            evicted.push(victim);
        };
        d.resident.insert(function, Resident { extent, last_used: now, pins: 0, ready: false });
        d.busy = Some(function);
        let swap = match source {
            Some(j) => {
                d.copying_from = Some((j, function));
                let r = self.devices[j].resident.get_mut(&function).expect("source holds the model");
                r.pins += 1;
                r.last_used = now;
                SwapSource::Peer(j)
            }
            None => SwapSource::Host,
        };
        Some(Dispatch { request, function, device: i, extent, swap: Some(swap), evicted })
    }

    /// How many LRU evictions device `i` needs before `bytes` fit, or `None` if they never
    /// would (an idle device holds no pinned model, so only its size can refuse).
    fn evictions_needed(&self, i: DeviceId, bytes: u64) -> Option<usize> {
        let d = &self.devices[i];
        if !d.pool.can_ever_hold(bytes) {
            return None;
        }
        let mut pool = d.pool.clone();
        let pages = pool.pages_for(bytes);
        let mut order: Vec<_> = d.resident.values().filter(|r| r.pins == 0).collect();
        order.sort_by_key(|r| r.last_used);
        let mut n = 0;
        while pool.alloc(pages).is_none() {
            pool.free(order.get(n)?.extent);
            n += 1;
        }
        Some(n)
    }

    /// The device finished its order (successfully or not: `keep` says whether the model's
    /// copy there is complete and may be reused).
    pub fn complete(&mut self, device: DeviceId, keep: bool) {
        if let Some((j, f)) = self.devices[device].copying_from.take() {
            let registered = self.functions.contains_key(&f);
            let src = &mut self.devices[j];
            if let Some(r) = src.resident.get_mut(&f) {
                r.pins -= 1;
                // Undeployed while it was a copy source, and not executing there: drop it now.
                if r.pins == 0 && !registered && src.busy != Some(f) {
                    let extent = r.extent;
                    src.resident.remove(&f);
                    src.pool.free(extent);
                }
            }
        }
        let registered = &self.functions;
        let d = &mut self.devices[device];
        if let Some(f) = d.busy.take() {
            if let Some(r) = d.resident.get_mut(&f) {
                r.ready |= keep;
            }
            let pinned = d.resident.get(&f).is_some_and(|r| r.pins > 0);
            if (!keep || !registered.contains_key(&f)) && !pinned {
                if let Some(r) = d.resident.remove(&f) {
                    d.pool.free(r.extent);
                }
            }
        }
    }

    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// Devices where the function is resident.
    pub fn residency(&self, function: FunctionId) -> Vec<DeviceId> {
        (0..self.devices.len()).filter(|&i| self.devices[i].resident.contains_key(&function)).collect()
    }

    pub fn snapshot(&self, device: DeviceId) -> DeviceSnapshot {
        let d = &self.devices[device];
        let name = |f: &FunctionId| self.functions.get(f).map_or_else(|| format!("#{f}"), |i| i.name.clone());
        let mut resident: Vec<ResidentSnapshot> = d
            .resident
            .iter()
            .map(|(f, r)| ResidentSnapshot {
                function: name(f),
                bytes: self.functions.get(f).map_or(0, |i| i.bytes),
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
            busy: d.busy.is_some(),
            executing: d.busy.as_ref().map(name),
            resident,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 1024;

    fn cluster(devices: usize, pages: u64) -> Cluster {
        Cluster::new((0..devices).map(|_| PagePool::new(pages * PAGE, PAGE)).collect())
    }

    #[test]
    fn refuses_functions_that_fit_no_device() {
        let mut c = cluster(2, 4);
        assert!(c.add_function(1, "a", 4 * PAGE).is_ok());
        assert!(c.add_function(2, "b", 4 * PAGE + 1).is_err());
    }

    #[test]
    fn first_request_swaps_from_host_and_second_reuses() {
        let mut c = cluster(1, 4);
        c.add_function(1, "a", 2 * PAGE).unwrap();
        c.enqueue(10, 1);
        let d = c.next_dispatch().unwrap();
        assert_eq!((d.request, d.device, d.swap), (10, 0, Some(SwapSource::Host)));
        c.enqueue(11, 1);
        assert!(c.next_dispatch().is_none(), "the only device is busy");
        c.complete(0, true);
        let d = c.next_dispatch().unwrap();
        assert_eq!((d.request, d.swap), (11, None));
    }

    #[test]
    fn evicts_least_recently_used_to_make_room() {
        let mut c = cluster(1, 4);
        for f in 1..=3 {
            c.add_function(f, &format!("f{f}"), 2 * PAGE).unwrap();
        }
        for (r, f) in [(1, 1), (2, 2), (3, 1)] {
            c.enqueue(r, f);
            c.next_dispatch().unwrap();
            c.complete(0, true);
        }
        // f2 was used less recently than f1: it goes.
        c.enqueue(4, 3);
        let d = c.next_dispatch().unwrap();
        assert_eq!(d.evicted, vec![2]);
        assert_eq!(c.residency(1), vec![0]);
        assert!(c.residency(2).is_empty());
    }

    #[test]
    fn never_evicts_the_executing_model_and_uses_idle_devices() {
        let mut c = cluster(2, 2);
        c.add_function(1, "a", 2 * PAGE).unwrap();
        c.add_function(2, "b", 2 * PAGE).unwrap();
        c.enqueue(1, 1);
        let d1 = c.next_dispatch().unwrap();
        c.enqueue(2, 2);
        let d2 = c.next_dispatch().unwrap();
        assert_ne!(d1.device, d2.device, "the second model goes to the idle device");
        c.enqueue(3, 1);
        assert!(c.next_dispatch().is_none(), "both devices busy: wait, evict nothing");
        c.complete(d2.device, true);
        let d3 = c.next_dispatch().unwrap();
        assert_eq!(d3.device, d2.device);
        assert_eq!(d3.evicted, vec![2]);
    }

    #[test]
    fn removing_a_function_frees_its_pages_and_drops_its_queue() {
        let mut c = cluster(1, 4);
        c.add_function(1, "a", 3 * PAGE).unwrap();
        c.enqueue(1, 1);
        c.next_dispatch().unwrap();
        c.enqueue(2, 1);
        assert_eq!(c.remove_function(1), (vec![2], 0));
        assert_eq!(c.snapshot(0).used_bytes, 3 * PAGE, "still executing: freed on completion");
        c.complete(0, true);
        assert_eq!(c.snapshot(0).used_bytes, 0);
    }

    fn linked(devices: usize, pages: u64, host: f64, peer: f64) -> Cluster {
        let pools = (0..devices).map(|_| PagePool::new(pages * PAGE, PAGE)).collect();
        let links = (0..devices)
            .map(|i| Links { host: Some(host), peers: (0..devices).map(|j| (i != j).then_some(peer)).collect() })
            .collect();
        Cluster::with_links(pools, links)
    }

    #[test]
    fn copies_from_a_peer_when_its_link_is_faster_and_pins_the_source() {
        let mut c = linked(2, 2, 12e9, 48e9);
        c.add_function(1, "a", 2 * PAGE).unwrap();
        c.enqueue(1, 1);
        c.next_dispatch().unwrap();
        c.complete(0, true);
        c.enqueue(2, 1);
        c.next_dispatch().unwrap(); // device 0 runs `a` again
        c.enqueue(3, 1);
        let d = c.next_dispatch().unwrap();
        assert_eq!((d.device, d.swap), (1, Some(SwapSource::Peer(0))));
        // While device 1 copies from it, device 0's copy of `a` cannot be evicted.
        c.complete(0, true);
        c.add_function(2, "b", 2 * PAGE).unwrap();
        c.enqueue(4, 2);
        assert!(c.next_dispatch().is_none(), "device 0's only model is pinned, device 1 is busy");
        c.complete(1, true);
        assert_eq!(c.next_dispatch().unwrap().evicted, vec![1]);
    }

    #[test]
    fn an_incomplete_copy_is_never_a_source_and_slow_peers_are_skipped() {
        let mut c = linked(3, 2, 12e9, 48e9);
        c.add_function(1, "a", PAGE).unwrap();
        c.enqueue(1, 1);
        c.enqueue(2, 1);
        assert_eq!(c.next_dispatch().unwrap().swap, Some(SwapSource::Host));
        assert_eq!(c.next_dispatch().unwrap().swap, Some(SwapSource::Host), "device 0's copy is not complete yet");
        let mut c = linked(2, 2, 12e9, 6e9);
        c.add_function(1, "a", PAGE).unwrap();
        c.enqueue(1, 1);
        c.next_dispatch().unwrap();
        c.complete(0, true);
        c.enqueue(2, 1);
        c.next_dispatch().unwrap();
        c.enqueue(3, 1);
        assert_eq!(c.next_dispatch().unwrap().swap, Some(SwapSource::Host), "the peer link is slower than the host's");
    }

    #[test]
    fn requests_for_unknown_functions_are_not_queued() {
        let mut c = cluster(1, 4);
        assert!(!c.enqueue(1, 9));
        c.add_function(9, "f", PAGE).unwrap();
        assert!(c.enqueue(2, 9));
        c.remove_function(9);
        assert!(!c.enqueue(3, 9));
        assert!(c.next_dispatch().is_none());
    }

    #[test]
    fn a_failed_copy_is_not_reused() {
        let mut c = cluster(1, 4);
        c.add_function(1, "a", PAGE).unwrap();
        c.enqueue(1, 1);
        c.next_dispatch().unwrap();
        c.complete(0, false);
        assert!(c.residency(1).is_empty());
        c.enqueue(2, 1);
        assert_eq!(c.next_dispatch().unwrap().swap, Some(SwapSource::Host));
    }
}
