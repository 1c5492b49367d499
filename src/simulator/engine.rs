//! The event loop: arrivals enter the cluster's queue, its decisions start jobs, copies move
//! over links shared fluidly among the copies in flight (a PCIe group's host link, or a peer
//! link), a swapped job ends max(transfer, execution) plus the first chunk after it starts,
//! and each completion frees its device for the next decision. Virtual time, no threads, no
//! wall clock: the same inputs give the same report.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use super::report::{Counts, RunReport};
use super::scenario::Scenario;
use super::workload::Arrival;
use crate::policy::cluster::Admission;
use crate::policy::estimate::{self, FIRST_CHUNK_BYTES};
use crate::policy::{Cluster, ClusterConfig, Decision, PolicyKind, SwapSource};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimOptions {
    pub policy: PolicyKind,
    pub functions: usize,
    pub seed: u64,
    pub shed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Arrival(usize),
    /// A link's earliest copy may have finished (stale when the version moved on).
    Link(usize, u64),
    JobEnd(usize),
}

struct Copy {
    device: usize,
    remaining: f64,
}

struct Link {
    bytes_per_ms: f64,
    copies: Vec<Copy>,
    at: f64,
    version: u64,
}

impl Link {
    /// Moves every copy forward to `now` at an equal share of the link.
    fn advance(&mut self, now: f64) {
        if !self.copies.is_empty() {
            let each = self.bytes_per_ms / self.copies.len() as f64 * (now - self.at);
            for c in &mut self.copies {
                c.remaining -= each;
            }
        }
        self.at = now;
    }

    fn next_finish(&self) -> Option<f64> {
        let share = self.bytes_per_ms / self.copies.len().max(1) as f64;
        self.copies.iter().map(|c| self.at + c.remaining.max(0.0) / share).min_by(f64::total_cmp)
    }
}

struct Job {
    requests: Vec<u64>,
    function: usize,
    start: f64,
    /// Start plus execution (plus the first chunk when swapping).
    exec_end: f64,
    /// Still copying.
    copying: bool,
    chunk_ms: f64,
}

struct Sim<'a> {
    scenario: &'a Scenario,
    cluster: Cluster,
    arrivals: &'a [Arrival],
    events: BinaryHeap<Reverse<(u64, u64, Event)>>,
    seq: u64,
    links: Vec<Link>,
    /// Peer link index by (source, destination).
    peer_links: HashMap<(usize, usize), usize>,
    jobs: Vec<Option<Job>>,
    busy_ms: Vec<f64>,
    latencies: Vec<Vec<f64>>,
    dropped: usize,
    swaps_host: usize,
    swaps_peer: usize,
    now: f64,
}

fn key(ms: f64) -> u64 {
    (ms * 1e6).round() as u64
}

/// Runs one policy over `arrivals` (of functions `0..opts.functions`).
pub fn run(scenario: &Scenario, opts: SimOptions, arrivals: &[Arrival]) -> RunReport {
    let cfg = ClusterConfig { policy: opts.policy, seed: opts.seed, shed: opts.shed, ..ClusterConfig::default() };
    let mut cluster = Cluster::new(cfg, scenario.device_specs());
    for i in 0..opts.functions {
        cluster.add_function(i as u64, scenario.function_spec(i)).expect("scenario models fit a device");
    }
    let host_bw = scenario.topology.host_link.unwrap_or(estimate::UNLIMITED_LINK);
    let groups = (0..scenario.devices).map(|i| scenario.host_group(i)).max().map_or(0, |g| g + 1);
    let mut sim = Sim {
        scenario,
        cluster,
        arrivals,
        events: BinaryHeap::new(),
        seq: 0,
        links: (0..groups)
            .map(|_| Link { bytes_per_ms: host_bw / 1e3, copies: Vec::new(), at: 0.0, version: 0 })
            .collect(),
        peer_links: HashMap::new(),
        jobs: (0..scenario.devices).map(|_| None).collect(),
        busy_ms: vec![0.0; scenario.devices],
        latencies: vec![Vec::new(); opts.functions],
        dropped: 0,
        swaps_host: 0,
        swaps_peer: 0,
        now: 0.0,
    };
    for (i, a) in arrivals.iter().enumerate() {
        sim.push(a.time_ms, Event::Arrival(i));
    }
    while let Some(Reverse((t, _, ev))) = sim.events.pop() {
        sim.now = t as f64 / 1e6;
        match ev {
            Event::Arrival(i) => sim.arrive(i),
            Event::Link(l, v) => sim.link_check(l, v),
            Event::JobEnd(d) => sim.job_end(d),
        }
    }
    if let Err(e) = sim.cluster.check_accounting() {
        // The run's figures would rest on broken bookkeeping: fail loudly.
        panic!("{} with {} functions: {e}", opts.policy, opts.functions);
    }
    sim.report(opts)
}

impl Sim<'_> {
    fn push(&mut self, at: f64, ev: Event) {
        self.seq += 1;
        self.events.push(Reverse((key(at), self.seq, ev)));
    }

    fn arrive(&mut self, i: usize) {
        let f = self.arrivals[i].function;
        match self.cluster.enqueue(i as u64, f as u64, self.now, None) {
            Admission::Queued => self.dispatch(),
            Admission::Rejected(_) | Admission::Unknown => self.drop_request(f),
        }
    }

    /// A request the cluster dropped (and counted as its function's miss).
    fn drop_request(&mut self, f: usize) {
        self.dropped += 1;
        self.latencies[f].push(f64::INFINITY);
    }

    fn dispatch(&mut self) {
        while let Some(decision) = self.cluster.next_dispatch(self.now) {
            match decision {
                Decision::Drop { requests, function, .. } => {
                    for _ in requests {
                        self.drop_request(function as usize);
                    }
                }
                Decision::Run(d) => {
                    let model = self.scenario.model_of(d.function as usize);
                    let exec = estimate::batched_exec_ms(model.exec_ms, d.requests.len());
                    let mut job = Job {
                        requests: d.requests,
                        function: d.function as usize,
                        start: self.now,
                        exec_end: self.now + exec,
                        copying: false,
                        chunk_ms: 0.0,
                    };
                    let link = match d.swap {
                        None => None,
                        Some(SwapSource::Host) => {
                            self.swaps_host += 1;
                            Some(self.scenario.host_group(d.device))
                        }
                        Some(SwapSource::Peer(j)) => {
                            self.swaps_peer += 1;
                            Some(self.peer_link(j, d.device))
                        }
                    };
                    match link {
                        None => self.push(job.exec_end, Event::JobEnd(d.device)),
                        Some(l) => {
                            job.copying = true;
                            job.chunk_ms = FIRST_CHUNK_BYTES.min(model.bytes) as f64 / self.links[l].bytes_per_ms;
                            job.exec_end += job.chunk_ms;
                            self.links[l].advance(self.now);
                            self.links[l].copies.push(Copy { device: d.device, remaining: model.bytes as f64 });
                            self.reschedule(l);
                        }
                    }
                    self.jobs[d.device] = Some(job);
                }
            }
        }
    }

    fn peer_link(&mut self, from: usize, to: usize) -> usize {
        if let Some(&l) = self.peer_links.get(&(from, to)) {
            return l;
        }
        let bw = self.scenario.topology.peers[to][from].expect("peer copies only over peer links");
        self.links.push(Link { bytes_per_ms: bw / 1e3, copies: Vec::new(), at: self.now, version: 0 });
        self.peer_links.insert((from, to), self.links.len() - 1);
        self.links.len() - 1
    }

    fn reschedule(&mut self, l: usize) {
        self.links[l].version += 1;
        if let Some(t) = self.links[l].next_finish() {
            let v = self.links[l].version;
            self.push(t, Event::Link(l, v));
        }
    }

    fn link_check(&mut self, l: usize, version: u64) {
        if self.links[l].version != version {
            return;
        }
        self.links[l].advance(self.now);
        // Copies within a nanosecond of done are done (the event time was rounded).
        let eps = self.links[l].bytes_per_ms * 1e-6;
        let (done, left): (Vec<Copy>, Vec<Copy>) =
            std::mem::take(&mut self.links[l].copies).into_iter().partition(|c| c.remaining <= eps);
        self.links[l].copies = left;
        for c in done {
            let job = self.jobs[c.device].as_mut().expect("a copy belongs to a running job");
            job.copying = false;
            let end = job.exec_end.max(self.now + job.chunk_ms);
            self.push(end, Event::JobEnd(c.device));
        }
        self.reschedule(l);
    }

    fn job_end(&mut self, device: usize) {
        let job = self.jobs[device].take().expect("a job ends once");
        debug_assert!(!job.copying);
        self.busy_ms[device] += self.now - job.start;
        self.cluster.complete(device);
        for r in job.requests {
            let latency = self.now - self.arrivals[r as usize].time_ms;
            self.latencies[job.function].push(latency);
            self.cluster.record(job.function as u64, latency);
        }
        self.dispatch();
    }

    fn report(self, opts: SimOptions) -> RunReport {
        let makespan = self.now.max(1e-9);
        RunReport::from_latencies(
            self.scenario,
            opts.policy.name(),
            &self.latencies,
            Counts {
                requests: self.arrivals.len(),
                dropped: self.dropped,
                swaps_host: self.swaps_host,
                swaps_peer: self.swaps_peer,
            },
            self.busy_ms.iter().map(|b| b / makespan).collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::workload;

    #[test]
    fn every_policy_ends_with_exact_accounting_and_every_request_answered() {
        // A tight two-minute slice of paper-node at 640 functions: heavy swapping everywhere.
        let mut s = Scenario::paper_node();
        s.workload.duration_s = 120.0;
        let trace = workload::generate(&s, 640, 11);
        for policy in PolicyKind::ALL {
            // `run` checks the cluster's bookkeeping at the end and panics on a mismatch.
            let r = run(&s, SimOptions { policy, functions: 640, seed: 11, shed: true }, &trace);
            assert_eq!(r.served + r.dropped, trace.len(), "{policy}");
        }
    }
}
