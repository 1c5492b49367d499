//! The request path: a request validated (on the HTTP worker, or on the blocking pool for long
//! texts), its results' room taken in `unsent`, queued and placed under the scheduler's lock on
//! this thread, awaited, and counted in its function's counters, metrics and SLO window.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{now_ms, Runtime};
use crate::actors::messages::Submit;
use crate::function::Function;
use crate::metrics as m;
use crate::request::{Completed, FinishReason, Generation, Inputs, RuntimeError, Work};

/// Texts of a request longer than this in all are tokenized on a blocking thread, not on the
/// HTTP worker that received them.
pub const INLINE_TEXT_BYTES: usize = 4096;

impl Runtime {
    /// Runs one request on a deployed function; `deadline_ms` may shorten its SLO deadline.
    /// Its results are held (`unsent`) from before it runs until the caller drops the `Held`
    /// it returns (once the response is sent); a request whose results do not fit is refused.
    pub async fn infer(
        &self,
        entry: &Function,
        inputs: Inputs,
        outputs: Vec<String>,
        deadline_ms: Option<f64>,
    ) -> Result<(Completed, crate::unsent::Held), RuntimeError> {
        let received = Instant::now();
        let max_batch = entry.settings().max_batch;
        let work = match &inputs {
            // Tokenizing takes a while for long texts: not on the HTTP worker.
            Inputs::Texts(_) | Inputs::TextPairs(_) if inputs.text_bytes() > INLINE_TEXT_BYTES => {
                let payload = entry.payload.clone();
                actix_rt::task::spawn_blocking(move || payload.prepare(inputs, &outputs, max_batch))
                    .await
                    .unwrap_or(Err(RuntimeError::Stopped))
            }
            _ => entry.payload.prepare(inputs, &outputs, max_batch),
        };
        let (work, held) = match work {
            Ok(w) => match self.unsent.hold(w.result_bytes()) {
                Some(held) => (Ok(w), Some(held)),
                None => (Err(RuntimeError::Backlogged { retry_after_s: 1 }), None),
            },
            Err(e) => (Err(e), None),
        };
        let done = self.run(entry, work, received, deadline_ms).await?;
        Ok((done, held.expect("a request that ran held its results")))
    }

    /// Queues and places prepared work on this thread (the HTTP worker's), waits for the device
    /// to answer, and accounts the result; refused work is accounted as it is.
    async fn run(
        &self,
        entry: &Function,
        work: Result<Work, RuntimeError>,
        received: Instant,
        deadline_ms: Option<f64>,
    ) -> Result<Completed, RuntimeError> {
        let result = match work {
            Ok(work) => {
                let (reply, rx) = tokio::sync::oneshot::channel();
                let name = entry.name.to_string();
                self.scheduler.submit(Submit { function: entry.id, name, work, received, deadline_ms, reply });
                rx.await.unwrap_or(Err(RuntimeError::Stopped))
            }
            Err(e) => Err(e),
        };
        self.account(entry, received, deadline_ms, &result);
        result
    }

    /// Starts a generation on a deployed function: tokens stream into `generation.tokens`
    /// as they exist; the returned result is the summary once it ends.
    pub async fn generate(
        &self,
        entry: &Function,
        generation: Generation,
        deadline_ms: Option<f64>,
    ) -> Result<Completed, RuntimeError> {
        // A device that cannot generate (sim) says so itself.
        let received = generation.received;
        let work = entry.payload.prepare_generation(generation).and_then(|w| {
            // A KV cache that cannot fit is refused here, before the request waits or swaps.
            if let (Some(model), Some(g)) = (&w.model, &w.generation) {
                let (prompt, total) = (g.prompt.len(), g.prompt.len() + g.options.max_new_tokens);
                model.spec.check_workspace(1, prompt, total, self.config.workspace_bytes)?;
            }
            Ok(w)
        });
        self.run(entry, work, received, deadline_ms).await
    }

    /// Counts a finished request in the function's statistics, metrics and SLO window (a
    /// generation by its first token). A request refused for a deadline its client shortened
    /// is not a miss of the function's SLO.
    fn account(
        &self,
        entry: &Function,
        received: Instant,
        deadline_ms: Option<f64>,
        result: &Result<Completed, RuntimeError>,
    ) {
        let ns = |ms: f64| (ms * 1e6) as u64;
        let s = &entry.counters;
        let name = entry.name.as_str();
        match result {
            Ok(c) => {
                s.success.fetch_add(1, Ordering::Relaxed);
                s.success_ns.fetch_add(ns(c.total_ms), Ordering::Relaxed);
                s.queue_ns.fetch_add(ns(c.queue_ms), Ordering::Relaxed);
                s.swap_ns.fetch_add(ns(c.swap_ms), Ordering::Relaxed);
                s.exec_ns.fetch_add(ns(c.exec_ms), Ordering::Relaxed);
                let cancelled = c.generated.as_ref().is_some_and(|g| g.finish_reason == FinishReason::Cancelled);
                m::request(name, if cancelled { "cancelled" } else { "success" });
                m::phases(c.queue_ms, c.swap_ms, c.exec_ms, c.total_ms);
                let latency = match &c.generated {
                    Some(g) => g.first_token_ms,
                    None => received.elapsed().as_secs_f64() * 1e3,
                };
                entry.record_latency(latency);
            }
            Err(RuntimeError::Cancelled) => m::request(name, "cancelled"),
            Err(e) => {
                s.fail.fetch_add(1, Ordering::Relaxed);
                s.fail_ns.fetch_add(received.elapsed().as_nanos() as u64, Ordering::Relaxed);
                let invalid = matches!(e, RuntimeError::Engine(_));
                m::request(name, if invalid { "invalid" } else { "error" });
                let clients_own = matches!(e, RuntimeError::DeadlineUnmeetable(_))
                    && deadline_ms.is_some_and(|d| d < entry.settings().slo_ms);
                if !invalid && !clients_own {
                    entry.record_latency(f64::INFINITY);
                }
            }
        }
        s.last_inference_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Sets the per-function SLO gauges; called before `/metrics` renders.
    pub fn publish_slo_metrics(&self) {
        m::unsent_bytes(self.unsent.used());
        for f in self.functions() {
            let s = f.slo();
            m::slo(&f.name, s.compliant, s.observed_ms);
        }
    }
}
