//! One placement decision of the scheduler with 1,000 deployed functions on 8 devices.
//!
//! The node: 8 devices with 25 GB weight pools of 2 MiB pages, host links of 12 GB/s shared by
//! pairs of devices, 48 GB/s peer links between every pair. 1,000 functions of the paper node's
//! eight models (round robin) — about 266 GB of weights for 200 GB of device memory — so a
//! warmed cluster has its pools full and a swap-in has to evict.
//!
//! A decision: with every device idle, enqueue one request and call `next_dispatch` once (device
//! choice, swap source, eviction planning and commit). The device is then completed and a
//! latency recorded, outside the timed region, so that the next decision starts from the same
//! kind of state. Functions are cycled in a fixed shuffled order over all 1,000, so resident
//! hits, swaps into free pages and swaps with eviction all occur.
//!
//! Criterion reports the mean and median; `main` then times 100,000 single decisions per policy
//! with `Instant` and prints p50/p99/max (only under `cargo bench`, not `cargo test --benches`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use faaswap::policy::cluster::Admission;
use faaswap::policy::{Cluster, ClusterConfig, Decision, DeviceSpec, PagePool, PolicyKind};
use faaswap::simulator::Scenario;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Deployed functions and devices (override with `PLACEMENT_FUNCTIONS` / `PLACEMENT_DEVICES`
/// to see how a decision's cost scales).
const FUNCTIONS: usize = 1_000;
const DEVICES: usize = 8;
const POOL_BYTES: u64 = 25_000_000_000;
const PAGE_BYTES: u64 = 2 << 20;
const HOST_LINK: f64 = 12e9;
const PEER_LINK: f64 = 48e9;
/// Requests run through the cluster before measuring.
const WARM_REQUESTS: usize = 5_000;
/// The paper node's mean request rate per function (10 a minute): with 1,000 functions, a
/// request every 6 ms of virtual time.
const RATE_PER_MIN: f64 = 10.0;
/// Single decisions timed for the percentiles.
const PERCENTILE_DECISIONS: usize = 100_000;

const POLICIES: [PolicyKind; 3] = [PolicyKind::Faaswap, PolicyKind::Torpor, PolicyKind::SimpleSwap];

/// What a decision did.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The model was resident on the chosen device.
    Hit,
    /// Copied in (host or peer) into free pages.
    Swap,
    /// Copied in after evicting resident models.
    SwapEvict,
    /// No dispatch (the request stayed queued) or a drop.
    Other,
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn functions() -> usize {
    env_or("PLACEMENT_FUNCTIONS", FUNCTIONS)
}

fn devices() -> usize {
    env_or("PLACEMENT_DEVICES", DEVICES)
}

struct Bench {
    cluster: Cluster,
    functions: u64,
    step_ms: f64,
    now: f64,
    next_request: u64,
    order: Vec<u64>,
    cursor: usize,
    rng: ChaCha8Rng,
}

impl Bench {
    fn new(policy: PolicyKind) -> Self {
        let (functions, n_devices) = (functions(), devices());
        let devices = (0..n_devices)
            .map(|i| DeviceSpec {
                pool: PagePool::new(POOL_BYTES, PAGE_BYTES),
                host_link: Some(HOST_LINK),
                peers: (0..n_devices).map(|j| (j != i).then_some(PEER_LINK)).collect(),
                host_group: i / 2,
            })
            .collect();
        let mut cluster = Cluster::new(ClusterConfig { policy, seed: 7, ..ClusterConfig::default() }, devices);
        let scenario = Scenario::paper_node();
        for i in 0..functions {
            cluster.add_function(i as u64, scenario.function_spec(i)).expect("the function fits a device");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let mut order: Vec<u64> = (0..functions as u64).collect();
        order.shuffle(&mut rng);
        let step_ms = 60_000.0 / (functions as f64 * RATE_PER_MIN);
        let mut b =
            Self { cluster, functions: functions as u64, step_ms, now: 0.0, next_request: 0, order, cursor: 0, rng };
        b.warm();
        b
    }

    /// Runs requests for pseudo-random functions through the cluster, each dispatched and
    /// completed at once, until the device pools are full of resident models.
    fn warm(&mut self) {
        for _ in 0..WARM_REQUESTS {
            let f = self.rng.random_range(0..self.functions);
            self.now += self.step_ms;
            let admission = self.cluster.enqueue(self.next_request, f, self.now, None);
            assert_eq!(admission, Admission::Queued);
            self.next_request += 1;
            while let Some(d) = self.cluster.next_dispatch(self.now) {
                self.settle(&d);
            }
        }
        assert_eq!(self.cluster.queue_len(), 0, "every warm-up request was dispatched");
    }

    /// Completes the dispatched job at once and records its predicted time as its latency.
    fn settle(&mut self, d: &Decision) {
        match d {
            Decision::Run(d) => {
                self.cluster.complete(d.device);
                self.cluster.record(d.function, d.predicted_ms);
            }
            Decision::Drop { function, .. } => self.cluster.record(*function, f64::INFINITY),
        }
    }

    /// One timed decision (enqueue + one `next_dispatch`); completing the job is not timed.
    fn decide(&mut self) -> (Duration, Outcome) {
        let f = self.order[self.cursor];
        self.cursor = (self.cursor + 1) % self.order.len();
        self.now += self.step_ms;
        let request = self.next_request;
        self.next_request += 1;
        let start = Instant::now();
        let admission = self.cluster.enqueue(black_box(request), black_box(f), self.now, None);
        let decision = self.cluster.next_dispatch(self.now);
        let elapsed = start.elapsed();
        black_box(admission);
        let outcome = match &decision {
            Some(Decision::Run(d)) if d.swap.is_none() => Outcome::Hit,
            Some(Decision::Run(d)) if d.evicted.is_empty() => Outcome::Swap,
            Some(Decision::Run(_)) => Outcome::SwapEvict,
            _ => Outcome::Other,
        };
        if let Some(d) = decision {
            self.settle(&d);
        }
        // Should a request stay queued (no device could make room), drain it untimed so every
        // timed decision starts from an empty queue.
        while let Some(d) = self.cluster.next_dispatch(self.now) {
            self.settle(&d);
        }
        (elapsed, outcome)
    }

    fn resident_summary(&self) -> String {
        let mut used = 0u64;
        let mut cap = 0u64;
        let mut models = 0;
        for i in 0..self.cluster.device_count() {
            let s = self.cluster.snapshot(i);
            used += s.used_bytes;
            cap += s.capacity_bytes;
            models += s.resident.len();
        }
        format!("{models} resident models, pools {:.1}% full", used as f64 / cap as f64 * 100.0)
    }
}

fn bench_placement(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("placement_{}fn_{}gpu", functions(), devices()));
    group.sample_size(30).warm_up_time(Duration::from_secs(2)).measurement_time(Duration::from_secs(8));
    for policy in POLICIES {
        let mut b = Bench::new(policy);
        // `iter_custom` sums only the enqueue + next_dispatch time; `complete`/`record` (resetting
        // the device to idle) are excluded.
        group.bench_function(policy.name(), |bencher| {
            bencher.iter_custom(|iters| (0..iters).map(|_| b.decide().0).sum());
        });
    }
    group.finish();
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e6
}

fn line(label: &str, times: &mut [Duration], total: usize) -> String {
    times.sort_unstable();
    format!(
        "  {label:<10} n={:>6} ({:>5.1}%)  p50 {:>7.2} µs  p99 {:>7.2} µs  max {:>8.2} µs",
        times.len(),
        times.len() as f64 / total as f64 * 100.0,
        percentile(times, 0.50),
        percentile(times, 0.99),
        percentile(times, 1.0),
    )
}

fn percentiles() {
    println!(
        "\nSingle-decision percentiles ({PERCENTILE_DECISIONS} decisions, {} functions, {} devices):",
        functions(),
        devices()
    );
    for policy in POLICIES {
        let mut b = Bench::new(policy);
        println!("{policy} (after warm-up: {})", b.resident_summary());
        // A short untimed run so caches and the allocator settle.
        for _ in 0..2_000 {
            b.decide();
        }
        let mut all = Vec::with_capacity(PERCENTILE_DECISIONS);
        let mut by: [Vec<Duration>; 4] = Default::default();
        for _ in 0..PERCENTILE_DECISIONS {
            let (t, outcome) = b.decide();
            all.push(t);
            by[outcome as usize].push(t);
        }
        println!("{}", line("all", &mut all, PERCENTILE_DECISIONS));
        for (label, times) in ["hit", "swap", "swap+evict", "other"].iter().zip(by.iter_mut()) {
            if !times.is_empty() {
                println!("{}", line(label, times, PERCENTILE_DECISIONS));
            }
        }
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench_placement(&mut criterion);
    criterion.final_summary();
    // Only when benchmarking (`cargo bench`), not under `cargo test --benches` / `--all-targets`
    // nor when listing or profiling (`--profile-time`).
    let args: Vec<String> = std::env::args().collect();
    let skip = |a: &String| a == "--test" || a == "--list" || a.starts_with("--profile-time");
    if args.iter().any(|a| a == "--bench") && !args.iter().any(skip) {
        percentiles();
    }
}
