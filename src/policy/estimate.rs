//! The time model the `faaswap` policy predicts with and the simulator executes: transfer
//! times over a (possibly shared) link, pipelined swap-and-execute, and batched execution.

/// Bytes of the first chunk a pipelined execution waits for before its first layer runs.
pub const FIRST_CHUNK_BYTES: u64 = 2_000_000;

/// Copy rate assumed for a link the configuration leaves unlimited (a host memory copy).
pub const UNLIMITED_LINK: f64 = 10e9;

/// Each extra request in a batch adds this fraction of a single request's execution time.
pub const BATCH_MARGINAL: f64 = 0.2;

/// The batched execution-time model, as the simulate report states it.
pub const BATCH_MODEL: &str = "exec(b) = exec(1) * (1 + 0.2 * (b - 1))";

/// Milliseconds to move `bytes` at `bytes_per_s`.
pub fn transfer_ms(bytes: u64, bytes_per_s: f64) -> f64 {
    bytes as f64 / bytes_per_s.max(1.0) * 1e3
}

/// Execution time of a batch of `batch` requests of a function whose single request takes
/// `exec_ms`.
pub fn batched_exec_ms(exec_ms: f64, batch: usize) -> f64 {
    exec_ms * (1.0 + BATCH_MARGINAL * (batch.max(1) - 1) as f64)
}

/// How long a job takes: resident models just execute; a swapped model runs pipelined, ending
/// about max(transfer, execution) after it starts, plus the first chunk.
pub fn job_ms(swap_ms: Option<f64>, chunk_ms: f64, exec_ms: f64) -> f64 {
    match swap_ms {
        None => exec_ms,
        Some(swap) => chunk_ms + swap.max(exec_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipelined_jobs_hide_the_shorter_phase() {
        // BERT-large over PCIe 3: 1.34 GB at 12 GB/s is 111.7 ms, longer than its 43 ms run.
        let swap = transfer_ms(1_340_000_000, 12e9);
        assert!((swap - 111.666).abs() < 0.01);
        let chunk = transfer_ms(FIRST_CHUNK_BYTES, 12e9);
        assert!((job_ms(Some(swap), chunk, 43.0) - (swap + chunk)).abs() < 1e-9);
        assert_eq!(job_ms(Some(2.0), 0.5, 25.0), 25.5, "a light model's copy hides under execution");
        assert_eq!(job_ms(None, 0.5, 25.0), 25.0);
        assert_eq!(batched_exec_ms(10.0, 1), 10.0);
        assert!((batched_exec_ms(10.0, 4) - 16.0).abs() < 1e-9);
    }
}
