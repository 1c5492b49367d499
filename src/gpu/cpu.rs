//! The `cpu` device: a weight pool in host memory, reserved at start-up. A swap-in is a real
//! copy from the function's host buffer into its pages, layer by layer in chunks on a copier
//! thread (optionally throttled to a configured link bandwidth) while execution starts on the
//! layers already there.

use std::time::{Duration, Instant};

use super::{Device, DeviceError, DeviceInfo, Job, JobResult};
use crate::engine::program::exec::{Resident, WeightSource};
use crate::engine::{EngineError, ModelSpec, OutputTensor, StreamedWeights, Workspace};
use crate::request::Generated;

/// Copy granularity: progress is published per layer, throttling is applied per chunk.
const CHUNK_ELEMS: usize = (4 << 20) / 4;

pub struct CpuDevice {
    info: DeviceInfo,
    pool: Vec<f32>,
    workspace: Workspace,
}

impl CpuDevice {
    pub fn new(info: DeviceInfo) -> Result<Self, DeviceError> {
        if !info.page_bytes.is_multiple_of(4) {
            return Err(DeviceError::BadSpec(format!("page size {} is not a multiple of 4 bytes", info.page_bytes)));
        }
        let pages = info.pool_bytes / info.page_bytes;
        let elems = (pages * info.page_bytes / 4) as usize;
        let workspace = Workspace::with_bytes(info.workspace_bytes);
        Ok(Self { info, pool: vec![0f32; elems], workspace })
    }
}

impl Device for CpuDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn run(&mut self, job: &Job) -> Result<JobResult, DeviceError> {
        let model = job.model()?;
        let spec = &model.spec;
        let host = model.weights();
        let page_elems = (self.info.page_bytes / 4) as usize;
        let start = job.extent.first * page_elems;
        assert!(host.len() <= job.extent.pages * page_elems, "the scheduler gave an extent smaller than the model");
        // CPU devices have no peer links, so the scheduler only orders copies from the host.
        let dst = &mut self.pool[start..start + host.len()];
        let t0 = Instant::now();
        if job.swap.is_none() {
            let resident = Resident { weights: &dst[..], layers: &spec.layout.layers };
            let (outputs, generated) = run_task(spec, &resident, job, &mut self.workspace)?;
            return Ok(JobResult { outputs, generated, exec_ms: ms(t0.elapsed()), ..JobResult::default() });
        }
        // Split the destination into one slice per layer (layers tile the buffer), hand them
        // to the copier, and run the model on whatever has arrived.
        let mut parts = Vec::with_capacity(spec.layout.layers.len());
        let mut rest = dst;
        for layer in &spec.layout.layers {
            let (head, tail) = rest.split_at_mut(layer.span.len);
            parts.push(head);
            rest = tail;
        }
        let streamed = StreamedWeights::new(&spec.layout);
        let link = self.info.host_link_bytes_per_s;
        let workspace = &mut self.workspace;
        let (outputs, swap_ms) = std::thread::scope(|s| {
            let copier = s.spawn(|| {
                let mut copied = 0usize;
                for (i, (part, layer)) in parts.into_iter().zip(&spec.layout.layers).enumerate() {
                    let src = &host[layer.span.offset..layer.span.end()];
                    for (d, c) in part.chunks_mut(CHUNK_ELEMS).zip(src.chunks(CHUNK_ELEMS)) {
                        d.copy_from_slice(c);
                        copied += c.len() * 4;
                        throttle(t0, copied, link);
                    }
                    streamed.deliver(i, part);
                }
                ms(t0.elapsed())
            });
            let result = run_task(spec, &streamed, job, workspace);
            (result, copier.join().expect("the copier does not panic"))
        });
        let (outputs, generated) = outputs?;
        Ok(JobResult {
            outputs,
            generated,
            swap_ms,
            exec_ms: ms(t0.elapsed()),
            swapped_bytes: host.len() as u64 * 4,
            simulated: false,
        })
    }

    fn raw_copy_ms(
        &mut self,
        model: &crate::engine::Model,
        extent: crate::policy::Extent,
    ) -> Result<Option<f64>, DeviceError> {
        let host = model.weights();
        let t0 = Instant::now();
        self.slot(extent, host.len()).copy_from_slice(host);
        Ok(Some(ms(t0.elapsed())))
    }
}

impl CpuDevice {
    fn slot(&mut self, extent: crate::policy::Extent, elems: usize) -> &mut [f32] {
        let page_elems = (self.info.page_bytes / 4) as usize;
        assert!(elems <= extent.pages * page_elems, "the extent holds the model");
        &mut self.pool[extent.first * page_elems..extent.first * page_elems + elems]
    }
}

/// A forward pass, or a generation, against `weights`.
fn run_task(
    spec: &ModelSpec,
    weights: &dyn WeightSource,
    job: &Job,
    ws: &mut Workspace,
) -> Result<(Vec<OutputTensor>, Option<Generated>), EngineError> {
    match &job.work.generation {
        None => Ok((spec.infer(weights, &job.work.batch, &job.work.outputs, ws)?, None)),
        Some(g) => {
            let generated = super::generation::stream(g, spec, |on_token| {
                spec.generate(weights, &g.prompt, &g.options, ws, on_token)
            })?;
            Ok((Vec::new(), Some(generated)))
        }
    }
}

/// Sleeps until `copied` bytes are no faster than `link` bytes per second since `t0`.
#[allow(clippy::disallowed_methods)] // the copier is a device thread that models a link
fn throttle(t0: Instant, copied: usize, link: Option<f64>) {
    if let Some(bw) = link {
        let due = Duration::from_secs_f64(copied as f64 / bw);
        if let Some(wait) = due.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::{Model, OutputKind, TokenBatch};
    use crate::gpu::DeviceKind;
    use crate::policy::{Extent, SwapSource};

    #[test]
    fn swapped_in_and_resident_runs_match_the_host_model() {
        let dir = crate::engine::fixture("tiny_bert");
        let model = Arc::new(Model::load(&dir).unwrap());
        let page = 64 << 10;
        let mut dev = CpuDevice::new(DeviceInfo {
            id: "cpu:0".into(),
            kind: DeviceKind::Cpu,
            pool_bytes: 4 << 20,
            page_bytes: page,
            host_link_bytes_per_s: Some(2e9),
            peer_links_bytes_per_s: vec![None],
            host_group: 0,
            pci_bus_id: None,
            workspace_bytes: 1 << 20,
        })
        .unwrap();
        let pages = (model.weights().len() * 4).div_ceil(page as usize);
        let batch = TokenBatch::from_sequences(&[vec![1, 2, 3], vec![4]]).unwrap();
        let want = model.infer(&batch, &[OutputKind::LastHiddenState]).unwrap();
        let work = crate::request::Work {
            model: Some(model.clone()),
            bytes: model.weights().len() as u64 * 4,
            exec_ms: None,
            batch,
            outputs: vec![OutputKind::LastHiddenState],
            generation: None,
        };
        let mut job =
            Job { work, extent: Extent { first: 3, pages }, swap: Some(SwapSource::Host), source_extent: None };
        let swapped = dev.run(&job).unwrap();
        assert_eq!(swapped.outputs, want);
        assert_eq!(swapped.swapped_bytes, model.weights().len() as u64 * 4);
        job.swap = None;
        let resident = dev.run(&job).unwrap();
        assert_eq!(resident.outputs, want, "the copy left in the pool is the whole model");
        assert_eq!(resident.swapped_bytes, 0);
    }
}
