//! The only module that names metrics. Prometheus text at `/metrics`; names carry the
//! `faaswap_` prefix and a unit suffix; labels are bounded (device ids, deployed function
//! names, fixed enums).

use std::sync::OnceLock;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once (several servers in one test process share it).
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        let recorder =
            PrometheusBuilder::new().set_buckets(&buckets).expect("static buckets are valid").build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed by an embedding program; ours then only
        // renders what it recorded (nothing), which is better than failing to start.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

fn describe() {
    metrics::describe_counter!("faaswap_requests_total", "Inference requests by function and outcome");
    metrics::describe_histogram!("faaswap_request_phase_seconds", "Request time by phase: queue, swap, execute, total");
    metrics::describe_counter!("faaswap_swaps_total", "Model swap-ins by source (host, peer)");
    metrics::describe_counter!("faaswap_swap_bytes_total", "Bytes copied by swap-ins, by source");
    metrics::describe_counter!("faaswap_evictions_total", "Resident models dropped, by reason");
    metrics::describe_counter!("faaswap_generated_tokens_total", "New tokens generated, by function");
    metrics::describe_counter!("faaswap_device_faults_total", "Device failures, by device and kind");
    metrics::describe_counter!(
        "faaswap_event_subscribers_dropped_total",
        "Event-feed subscribers dropped for falling behind"
    );
    metrics::describe_gauge!("faaswap_device_resident_bytes", "Weight-pool bytes in use, by device");
    metrics::describe_gauge!("faaswap_device_capacity_bytes", "Weight-pool capacity, by device");
    metrics::describe_gauge!("faaswap_functions_deployed", "Functions currently deployed");
    metrics::describe_gauge!(
        "faaswap_unsent_response_bytes",
        "Bytes of results held for clients that have not read them yet (bounded by --max-unsent)"
    );
    metrics::describe_gauge!(
        "faaswap_state_records_unreadable",
        "Function records in the state store that this release cannot read (listed by the functions API)"
    );
    metrics::describe_gauge!(
        "faaswap_functions_unavailable",
        "Persisted functions not served (record unreadable or lost, package copy changed, restore failed)"
    );
    metrics::describe_gauge!(
        "faaswap_host_pinned_bytes",
        "Host weight bytes page-locked for fast swap-ins (CUDA devices; the rest swap through a staging ring)"
    );
    metrics::describe_gauge!(
        "faaswap_function_slo_compliant",
        "1 when the function's latency at its SLO percentile is within its deadline"
    );
    metrics::describe_gauge!(
        "faaswap_function_observed_latency_seconds",
        "Latency at the function's SLO percentile over its last 1000 requests"
    );
    metrics::describe_gauge!(
        "faaswap_device_seconds_total",
        "Device time used per function, by kind (execute, swap): what pay-per-use billing needs"
    );
}

pub fn request(function: &str, outcome: &'static str) {
    counter!("faaswap_requests_total", "function" => function.to_string(), "outcome" => outcome).increment(1);
}

pub fn phases(queue_ms: f64, swap_ms: f64, exec_ms: f64, total_ms: f64) {
    for (phase, ms) in [("queue", queue_ms), ("swap", swap_ms), ("execute", exec_ms), ("total", total_ms)] {
        histogram!("faaswap_request_phase_seconds", "phase" => phase).record(ms / 1e3);
    }
}

/// A completed swap-in; `source` is `host` or `peer`.
pub fn swap(function: &str, source: &'static str, bytes: u64, ms: f64) {
    counter!("faaswap_swaps_total", "source" => source).increment(1);
    counter!("faaswap_swap_bytes_total", "source" => source).increment(bytes);
    device_seconds(function, "swap", ms);
}

/// A device failure, by kind (`device_lost`, `copy_fail`, ...).
pub fn device_fault(device: &str, kind: &'static str) {
    counter!("faaswap_device_faults_total", "device" => device.to_string(), "kind" => kind).increment(1);
}

/// Event-feed subscribers connected (`delta` +1 on connect, -1 on leave).
pub fn event_subscribers(delta: f64) {
    gauge!("faaswap_event_subscribers").increment(delta);
}

/// A subscriber dropped for falling behind.
pub fn event_subscriber_dropped() {
    counter!("faaswap_event_subscribers_dropped_total").increment(1);
}

/// New tokens a generation produced.
pub fn generated(function: &str, tokens: usize) {
    counter!("faaswap_generated_tokens_total", "function" => function.to_string()).increment(tokens as u64);
}

pub fn executed(function: &str, ms: f64) {
    device_seconds(function, "execute", ms);
}

/// `metrics` counters are integers; device time needs fractions of a second, so it is a gauge
/// that only ever increases.
fn device_seconds(function: &str, kind: &'static str, ms: f64) {
    gauge!("faaswap_device_seconds_total", "function" => function.to_string(), "kind" => kind).increment(ms / 1e3);
}

pub fn eviction(reason: &'static str) {
    counter!("faaswap_evictions_total", "reason" => reason).increment(1);
}

/// A request the scheduler refused or shed (`reason`: `not_placed`, `deadline_unmeetable`).
pub fn dropped(function: &str, reason: &'static str) {
    counter!("faaswap_dropped_requests_total", "function" => function.to_string(), "reason" => reason).increment(1);
}

pub fn device_memory(device: &str, used: u64, capacity: u64) {
    gauge!("faaswap_device_resident_bytes", "device" => device.to_string()).set(used as f64);
    gauge!("faaswap_device_capacity_bytes", "device" => device.to_string()).set(capacity as f64);
}

pub fn slo(function: &str, compliant: bool, observed_ms: Option<f64>) {
    gauge!("faaswap_function_slo_compliant", "function" => function.to_string()).set(if compliant { 1.0 } else { 0.0 });
    if let Some(ms) = observed_ms {
        gauge!("faaswap_function_observed_latency_seconds", "function" => function.to_string()).set(ms / 1e3);
    }
}

/// Host weights page-locked (`delta` > 0) or released (< 0).
pub fn host_pinned(delta: f64) {
    gauge!("faaswap_host_pinned_bytes").increment(delta);
}

pub fn unsent_bytes(bytes: u64) {
    gauge!("faaswap_unsent_response_bytes").set(bytes as f64);
}

pub fn functions_deployed(n: usize) {
    gauge!("faaswap_functions_deployed").set(n as f64);
}

/// Persisted functions that are not served: all of them, and those whose record is unreadable.
pub fn functions_unavailable(all: usize, unreadable_records: usize) {
    gauge!("faaswap_functions_unavailable").set(all as f64);
    gauge!("faaswap_state_records_unreadable").set(unreadable_records as f64);
}
