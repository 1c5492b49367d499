//! The engine against the reference fixtures (tiny BERT and tiny GPT-2), within the README's
//! tolerances, plus the properties the runtime relies on: a copy of the packed buffer runs, the
//! weights are first read layer by layer in order, a model streamed in layer by layer gives
//! the same outputs, batching with padding changes nothing.

use std::sync::Mutex;

use faaswap::engine::program::exec::{Resident, WeightSource};
use faaswap::engine::{
    EngineError, GenerateOptions, Model, OutputKind, SamplingParams, Span, StreamedWeights, TokenBatch, Workspace,
};

use crate::common::*;

const HIDDEN_TOL: f32 = 1e-4;

#[test]
fn tiny_bert_hidden_states_match_reference() {
    let model = Model::load(&tiny_bert()).unwrap();
    let reference = read_json(&tiny_bert().join("reference.json"));
    let cases = reference["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let input = ids(&case["input_ids"]);
        let batch = TokenBatch::from_sequences(std::slice::from_ref(&input)).unwrap();
        let out = model.infer(&batch, &[OutputKind::LastHiddenState]).unwrap();
        assert_eq!(out[0].name, "last_hidden_state");
        assert_eq!(out[0].shape, vec![1, input.len(), 64]);
        let want = flat_rows(&case["last_hidden_state"]);
        let diff = max_abs_diff(&out[0].data, &want);
        assert!(diff <= HIDDEN_TOL, "seq_len {}: max abs diff {diff}", input.len());
    }
}

#[test]
fn tiny_bert_padded_batch_equals_single_runs() {
    let model = Model::load(&tiny_bert()).unwrap();
    let reference = read_json(&tiny_bert().join("reference.json"));
    let cases: Vec<_> = reference["cases"].as_array().unwrap().iter().take(3).collect();
    let seqs: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["input_ids"])).collect();
    let batch = TokenBatch::from_sequences(&seqs).unwrap();
    let out = model.infer(&batch, &[OutputKind::LastHiddenState]).unwrap();
    let s = batch.seq;
    assert_eq!(out[0].shape, vec![3, s, 64]);
    for (b, case) in cases.iter().enumerate() {
        let len = seqs[b].len();
        let got = &out[0].data[b * s * 64..(b * s + len) * 64];
        let diff = max_abs_diff(got, &flat_rows(&case["last_hidden_state"]));
        assert!(diff <= HIDDEN_TOL, "batch row {b}: {diff}");
        let padding = &out[0].data[(b * s + len) * 64..(b + 1) * s * 64];
        assert!(padding.iter().all(|&v| v == 0.0), "padding positions are zeros");
    }
}

#[test]
fn tiny_gpt2_logits_match_reference() {
    let model = Model::load(&tiny_gpt2()).unwrap();
    let reference = read_json(&tiny_gpt2().join("reference.json"));
    for case in reference["cases"].as_array().unwrap() {
        let input = ids(&case["input_ids"]);
        let batch = TokenBatch::from_sequences(std::slice::from_ref(&input)).unwrap();
        let out = model.infer(&batch, &[OutputKind::Logits]).unwrap();
        assert_eq!(out[0].shape, vec![1, input.len(), 512]);
        let last = &out[0].data[(input.len() - 1) * 512..];
        let diff = max_abs_diff(last, &floats(&case["last_position_logits"]));
        assert!(diff <= HIDDEN_TOL, "seq_len {}: max abs diff {diff}", input.len());
        assert_eq!(faaswap::engine::argmax(last), case["argmax"].as_u64().unwrap() as u32);
    }
}

#[test]
fn tiny_gpt2_right_padded_batch_matches_single_runs() {
    let model = Model::load(&tiny_gpt2()).unwrap();
    let reference = read_json(&tiny_gpt2().join("reference.json"));
    let cases: Vec<_> = reference["cases"].as_array().unwrap().iter().take(3).collect();
    let seqs: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["input_ids"])).collect();
    let batch = TokenBatch::from_sequences(&seqs).unwrap();
    let out = model.infer(&batch, &[OutputKind::Logits]).unwrap();
    for (b, case) in cases.iter().enumerate() {
        let at = (b * batch.seq + seqs[b].len() - 1) * 512;
        let diff = max_abs_diff(&out[0].data[at..at + 512], &floats(&case["last_position_logits"]));
        assert!(diff <= HIDDEN_TOL, "batch row {b}: {diff}");
    }
}

#[test]
fn tiny_gpt2_greedy_generation_is_exact() {
    let model = Model::load(&tiny_gpt2()).unwrap();
    let reference = read_json(&tiny_gpt2().join("reference.json"));
    for g in reference["generation"].as_array().unwrap() {
        let opts = GenerateOptions {
            max_new_tokens: g["max_new_tokens"].as_u64().unwrap() as usize,
            sampling: SamplingParams::default(),
            stop_at_eos: true,
        };
        let mut streamed = Vec::new();
        let tokens = model
            .generate(&ids(&g["prompt_ids"]), &opts, &mut |t| {
                streamed.push(t);
                true
            })
            .unwrap();
        assert_eq!(tokens, ids(&g["new_token_ids"]));
        assert_eq!(streamed, tokens, "every token is reported as it is made");
    }
}

#[test]
fn kv_cache_generation_equals_full_recompute() {
    let model = Model::load(&tiny_gpt2()).unwrap();
    let prompt = vec![5, 77, 300, 2, 140];
    let opts = GenerateOptions { max_new_tokens: 12, ..Default::default() };
    let cached = model.generate(&prompt, &opts, &mut |_| true).unwrap();
    let mut seq = prompt.clone();
    for _ in 0..12 {
        let out = model.infer(&TokenBatch::from_sequences(&[seq.clone()]).unwrap(), &[OutputKind::Logits]).unwrap();
        let last = &out[0].data[(seq.len() - 1) * 512..];
        seq.push(faaswap::engine::argmax(last));
    }
    assert_eq!(cached, seq[prompt.len()..]);
}

#[test]
fn sampling_is_reproducible_and_top_k_one_is_greedy() {
    let model = Model::load(&tiny_gpt2()).unwrap();
    let prompt = [10, 20, 30];
    let sampled = |temperature: f32, top_k: Option<usize>, top_p: Option<f32>, seed: u64| {
        let opts = GenerateOptions {
            max_new_tokens: 10,
            sampling: SamplingParams { temperature: Some(temperature), top_k, top_p, seed: Some(seed) },
            stop_at_eos: false,
        };
        model.generate(&prompt, &opts, &mut |_| true).unwrap()
    };
    assert_eq!(sampled(1.5, None, Some(0.95), 7), sampled(1.5, None, Some(0.95), 7));
    let greedy =
        model.generate(&prompt, &GenerateOptions { max_new_tokens: 10, ..Default::default() }, &mut |_| true).unwrap();
    assert_eq!(sampled(2.0, Some(1), None, 3), greedy);
    // At a high temperature over 512 tokens, different seeds must diverge somewhere.
    assert_ne!(sampled(5.0, None, None, 1), sampled(5.0, None, None, 2));
}

#[test]
fn generation_stops_when_the_consumer_says_so() {
    let model = Model::load(&tiny_gpt2()).unwrap();
    let opts = GenerateOptions { max_new_tokens: 20, ..Default::default() };
    let mut seen = 0;
    let tokens = model
        .generate(&[1, 2, 3], &opts, &mut |_| {
            seen += 1;
            seen < 4
        })
        .unwrap();
    assert_eq!(tokens.len(), 4);
}

#[test]
fn a_copy_of_the_packed_buffer_is_a_complete_model() {
    let model = Model::load(&tiny_bert()).unwrap();
    let copy: Vec<f32> = model.weights().to_vec();
    assert_eq!(copy.len() * 4, model.spec.layout.total_bytes());
    let batch = TokenBatch::from_sequences(&[vec![1, 2, 3, 4]]).unwrap();
    let original = model.infer(&batch, &[OutputKind::LastHiddenState]).unwrap();
    let mut ws = Workspace::new(model.spec.workspace_elems(1, 4, 4));
    let layout = &model.spec.layout;
    let from_copy =
        model.spec.infer(&Resident::new(&copy, layout), &batch, &[OutputKind::LastHiddenState], &mut ws).unwrap();
    assert_eq!(original, from_copy);
    let short = Resident::new(&copy[1..], layout);
    assert!(model.spec.infer(&short, &batch, &[OutputKind::LastHiddenState], &mut ws).is_err());
}

/// Records, for each layer execution asks for, which layer of the layout it is.
struct Recorder<'a> {
    data: &'a [f32],
    layers: Vec<Span>,
    seen: Mutex<Vec<usize>>,
}

impl WeightSource for Recorder<'_> {
    fn len(&self) -> usize {
        self.data.len()
    }

    fn layer(&self, l: usize) -> &[f32] {
        self.seen.lock().unwrap().push(l);
        &self.data[self.layers[l].offset..self.layers[l].end()]
    }
}

#[test]
fn execution_first_reads_each_layer_in_layout_order() {
    for (dir, output) in [(tiny_bert(), OutputKind::LastHiddenState), (tiny_gpt2(), OutputKind::Logits)] {
        let model = Model::load(&dir).unwrap();
        let recorder = Recorder {
            data: model.weights(),
            layers: model.spec.layout.layers.iter().map(|l| l.span).collect(),
            seen: Mutex::new(Vec::new()),
        };
        let batch = TokenBatch::from_sequences(&[vec![3, 4, 5]]).unwrap();
        let mut ws = Workspace::new(model.spec.workspace_elems(1, 3, 3));
        model.spec.infer(&recorder, &batch, &[output], &mut ws).unwrap();
        let mut first_reads = Vec::new();
        for layer in recorder.seen.into_inner().unwrap() {
            if !first_reads.contains(&layer) {
                first_reads.push(layer);
            }
        }
        let layers: Vec<usize> = (0..model.spec.layout.layers.len()).collect();
        assert_eq!(first_reads, layers, "{}", dir.display());
    }
}

#[test]
fn streamed_weights_give_the_same_outputs_as_resident_ones() {
    for (dir, output) in [(tiny_bert(), OutputKind::LastHiddenState), (tiny_gpt2(), OutputKind::Logits)] {
        let model = Model::load(&dir).unwrap();
        let batch = TokenBatch::from_sequences(&[vec![9, 8, 7, 6], vec![5]]).unwrap();
        let want = model.infer(&batch, &[output]).unwrap();
        let layout = &model.spec.layout;
        let streamed = StreamedWeights::new(layout);
        let mut ws = Workspace::new(model.spec.workspace_elems(2, 4, 4));
        let got = std::thread::scope(|s| {
            let run = s.spawn(|| model.spec.infer(&streamed, &batch, &[output], &mut ws).unwrap());
            // Deliver the layers last to first: execution must wait for each in turn.
            for (i, l) in layout.layers.iter().enumerate().rev() {
                streamed.deliver(i, &model.weights()[l.span.offset..l.span.end()]);
            }
            run.join().unwrap()
        });
        assert_eq!(got, want, "{}", dir.display());
    }
}

#[test]
fn layout_is_first_use_order_and_layers_tile_the_buffer() {
    for dir in [tiny_bert(), tiny_gpt2()] {
        let model = Model::load(&dir).unwrap();
        let layout = &model.spec.layout;
        let mut at = 0;
        for layer in &layout.layers {
            assert_eq!(layer.span.offset, at, "layers are contiguous");
            at = layer.span.end();
        }
        assert_eq!(at, layout.total_elems);
        let offsets: Vec<usize> = layout.tensors.iter().map(|t| t.span.offset).collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "tensors are packed in plan order");
        assert!(offsets.iter().all(|o| o % 64 == 0), "tensors start on 256-byte boundaries");
    }
    let bert = Model::load(&tiny_bert()).unwrap();
    assert_eq!(bert.spec.layout.tensors[0].name, "embeddings.word_embeddings.weight");
    assert_eq!(bert.spec.layout.layers.len(), 3);
    assert_eq!(bert.spec.layout.layers[1].name, "encoder.layer.0");
}

#[test]
fn bad_inputs_are_rejected_not_run() {
    let model = Model::load(&tiny_bert()).unwrap();
    let too_long = TokenBatch::from_sequences(&[vec![1; 129]]).unwrap();
    assert!(model.infer(&too_long, &[OutputKind::LastHiddenState]).is_err());
    let bad_id = TokenBatch::from_sequences(&[vec![1, 512]]).unwrap();
    let err = model.infer(&bad_id, &[OutputKind::LastHiddenState]).unwrap_err();
    assert!(err.to_string().contains("512"), "{err}");
    let err = model.infer(&bad_id, &[OutputKind::Logits]).unwrap_err();
    assert!(err.to_string().contains("logits"), "{err}");
    let gpt2 = Model::load(&tiny_gpt2()).unwrap();
    let opts = GenerateOptions { max_new_tokens: 200, ..Default::default() };
    assert!(gpt2.generate(&[1, 2], &opts, &mut |_| true).is_err(), "past n_positions");
    assert!(model.generate(&[1, 2], &opts, &mut |_| true).is_err(), "BERT does not generate");
}

#[test]
fn a_workspace_too_small_for_the_request_is_an_error_not_an_allocation() {
    let model = Model::load(&tiny_bert()).unwrap();
    let batch = TokenBatch::from_sequences(&[vec![1; 100]]).unwrap();
    let need = model.spec.workspace_elems(1, 100, 100);
    let mut small = Workspace::new(need / 2);
    let weights = model.resident();
    let err = model.spec.infer(&weights, &batch, &[OutputKind::LastHiddenState], &mut small).unwrap_err();
    assert!(matches!(err, EngineError::WorkspaceTooSmall { .. }), "{err}");
    // The same workspace serves a smaller request; a large enough one serves the big one.
    let short = TokenBatch::from_sequences(&[vec![1; 10]]).unwrap();
    assert!(model.spec.infer(&weights, &short, &[OutputKind::LastHiddenState], &mut small).is_ok());
    let mut enough = Workspace::new(need);
    let out = model.spec.infer(&weights, &batch, &[OutputKind::LastHiddenState], &mut enough).unwrap();
    assert_eq!(out, model.infer(&batch, &[OutputKind::LastHiddenState]).unwrap());
}
