//! A model being swapped in, as programs read it: `StreamedWeights` hands out each layer once
//! that layer's bytes have arrived (a program's `WaitLayer` blocks until then), so compute on
//! early layers overlaps the copy of later ones. A resident model is `program::exec::Resident`.

use std::sync::{Condvar, Mutex};

use super::layout::{Span, WeightLayout};

/// A buffer arriving layer by layer. The copier calls `deliver` for each layer (in any order);
/// readers of a layer's tensors wait until it has been delivered.
pub struct StreamedWeights<'a> {
    layers: Vec<Span>,
    total: usize,
    arrived: Mutex<Vec<Option<&'a [f32]>>>,
    cond: Condvar,
}

impl<'a> StreamedWeights<'a> {
    pub fn new(layout: &WeightLayout) -> Self {
        Self {
            layers: layout.layers.iter().map(|l| l.span).collect(),
            total: layout.total_elems,
            arrived: Mutex::new(vec![None; layout.layers.len()]),
            cond: Condvar::new(),
        }
    }

    /// Layer `layer`'s elements are in place and will not change while `self` lives.
    pub fn deliver(&self, layer: usize, data: &'a [f32]) {
        assert_eq!(data.len(), self.layers[layer].len, "layer {layer} delivered with the wrong length");
        let mut arrived = self.arrived.lock().unwrap_or_else(|e| e.into_inner());
        arrived[layer] = Some(data);
        self.cond.notify_all();
    }
}

impl super::program::exec::WeightSource for StreamedWeights<'_> {
    fn len(&self) -> usize {
        self.total
    }

    fn layer(&self, l: usize) -> &[f32] {
        let mut arrived = self.arrived.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(data) = arrived[l] {
                return data;
            }
            arrived = self.cond.wait(arrived).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::layout::PlannedTensor;
    use crate::engine::program::exec::WeightSource;

    #[test]
    fn readers_wait_for_their_layer() {
        let plan = vec![PlannedTensor::new("a", &[64], 0), PlannedTensor::new("b", &[64], 1)];
        let layout = WeightLayout::build(&plan, &["l0".into(), "l1".into()]);
        let src: Vec<f32> = (0..128).map(|i| i as f32).collect();
        let streamed = StreamedWeights::new(&layout);
        let value = std::thread::scope(|s| {
            let reader = s.spawn(|| streamed.layer(1)[0]);
            streamed.deliver(0, &src[..64]);
            assert_eq!(streamed.layer(0)[3], 3.0);
            assert!(!reader.is_finished(), "layer 1 is not there yet");
            streamed.deliver(1, &src[64..]);
            reader.join().unwrap()
        });
        assert_eq!(value, 64.0);
    }
}
