//! The Llama-family decoders (`tiny_llama`, `tiny_qwen2` stored in BF16, `tiny_qwen3`,
//! `tiny_mistral`) against their reference fixtures: last-position logits within 1e-4, greedy
//! generations with a KV cache exactly, chat prompts rendered exactly and their greedy
//! continuations, and the properties the runtime relies on (cache = recompute, a padded batch =
//! single runs, the programs CUDA runs = the CPU's).

use faaswap::engine::program::{exec, storage};
use faaswap::engine::{
    ChatMessage, ChatTemplate, Dtype, GenerateOptions, Model, OutputKind, SamplingParams, TokenBatch,
};

use crate::common::*;

const FAMILIES: [&str; 4] = ["tiny_llama", "tiny_qwen2", "tiny_qwen3", "tiny_mistral"];
const TOL: f32 = 1e-4;

fn last_logits(model: &Model, input: &[u32]) -> Vec<f32> {
    let batch = TokenBatch::from_sequences(&[input.to_vec()]).unwrap();
    let out = model.infer(&batch, &[OutputKind::Logits]).unwrap();
    let vocab = out[0].shape[2];
    out[0].data[(input.len() - 1) * vocab..].to_vec()
}

#[test]
fn last_position_logits_match_reference() {
    for name in FAMILIES {
        let dir = fixtures().join(name);
        let model = Model::load(&dir).unwrap();
        let reference = read_json(&dir.join("reference.json"));
        assert_eq!(model.spec.arch.model_type(), reference["model_type"].as_str().unwrap());
        for case in reference["cases"].as_array().unwrap() {
            let input = ids(&case["input_ids"]);
            let got = last_logits(&model, &input);
            let diff = max_abs_diff(&got, &floats(&case["last_position_logits"]));
            assert!(diff <= TOL, "{name} seq_len {}: max abs diff {diff}", input.len());
            assert_eq!(faaswap::engine::argmax(&got), case["argmax"].as_u64().unwrap() as u32, "{name}");
        }
    }
}

#[test]
fn qwen2_stays_bf16_in_memory() {
    let model = Model::load(&fixtures().join("tiny_qwen2")).unwrap();
    assert_eq!(model.spec.layout.matrix_dtype(), Dtype::Bf16);
    let f32_model = Model::load_as(&fixtures().join("tiny_qwen2"), Some(Dtype::F32)).unwrap();
    let ratio = model.weights().len() as f64 / f32_model.weights().len() as f64;
    assert!(ratio < 0.55, "BF16 holds about half the bytes: {ratio}");
}

#[test]
fn greedy_generations_are_exact() {
    for name in FAMILIES {
        let dir = fixtures().join(name);
        let model = Model::load(&dir).unwrap();
        let reference = read_json(&dir.join("reference.json"));
        for g in reference["generation"].as_array().unwrap() {
            let opts = GenerateOptions {
                max_new_tokens: g["max_new_tokens"].as_u64().unwrap() as usize,
                sampling: SamplingParams::default(),
                stop_at_eos: false,
            };
            let tokens = model.generate(&ids(&g["prompt_ids"]), &opts, &mut |_| true).unwrap();
            assert_eq!(tokens, ids(&g["new_token_ids"]), "{name}");
        }
    }
}

/// The chat prompt renders exactly, tokenizes to the reference ids (no special tokens added:
/// the template writes its own), and continues greedily as transformers does where the margin
/// between the two best tokens is wide enough for 1e-4 to decide nothing.
#[test]
fn chat_prompts_render_and_continue_exactly() {
    for name in FAMILIES {
        let dir = fixtures().join(name);
        let model = Model::load(&dir).unwrap();
        let template = ChatTemplate::load(&dir).unwrap().expect("the fixture has a chat template");
        let reference = read_json(&dir.join("reference.json"));
        for chat in reference["chat"].as_array().unwrap() {
            let messages: Vec<ChatMessage> = serde_json::from_value(chat["messages"].clone()).unwrap();
            let rendered = template.render(&messages, true).unwrap();
            assert_eq!(rendered, chat["rendered"].as_str().unwrap(), "{name}");
            let encoder = model.spec.tokenizer.as_ref().expect("the fixture has a tokenizer");
            let input = encoder.encode_plain(&rendered).unwrap();
            assert_eq!(input, ids(&chat["input_ids"]), "{name}");
            let opts = GenerateOptions { max_new_tokens: 8, sampling: SamplingParams::default(), stop_at_eos: false };
            let tokens = model.generate(&input, &opts, &mut |_| true).unwrap();
            if chat["greedy_8_min_top2_margin"].as_f64().unwrap() >= 5e-3 {
                assert_eq!(tokens, ids(&chat["greedy_8"]), "{name}");
            }
        }
        let refused = &reference["chat_template_error"];
        let messages: Vec<ChatMessage> = serde_json::from_value(refused["messages"].clone()).unwrap();
        let e = template.render(&messages, true).unwrap_err().to_string();
        assert!(e.contains(refused["error_contains"].as_str().unwrap()), "{name}: {e}");
    }
}

#[test]
fn tokenizers_and_end_of_sequence_ids_match_reference() {
    for name in FAMILIES {
        let dir = fixtures().join(name);
        let model = Model::load(&dir).unwrap();
        let reference = read_json(&dir.join("reference.json"));
        let decoder = model.spec.arch.as_decoder().expect("a decoder");
        assert_eq!(decoder.eos_ids(), ids(&reference["eos_token_ids"]).as_slice(), "{name}");
        let encoder = model.spec.tokenizer.as_ref().unwrap();
        for case in reference["tokenizer_cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            assert_eq!(encoder.encode_plain(text).unwrap(), ids(&case["input_ids"]), "{name}: {text:?}");
            assert_eq!(encoder.decode(&ids(&case["input_ids"])).unwrap(), case["decoded"].as_str().unwrap());
        }
    }
}

#[test]
fn kv_cache_generation_equals_recompute_and_batches_equal_single_runs() {
    for name in FAMILIES {
        let model = Model::load(&fixtures().join(name)).unwrap();
        // Long enough for Mistral's sliding window (16) to matter.
        let prompt: Vec<u32> = (0..20).map(|i| (i * 37 + 5) % 500).collect();
        let opts = GenerateOptions { max_new_tokens: 6, ..Default::default() };
        let cached = model.generate(&prompt, &opts, &mut |_| true).unwrap();
        let mut seq = prompt.clone();
        for _ in 0..6 {
            let next = faaswap::engine::argmax(&last_logits(&model, &seq));
            seq.push(next);
        }
        assert_eq!(cached, seq[prompt.len()..], "{name}");

        let seqs = vec![prompt[..9].to_vec(), prompt[..4].to_vec()];
        let batch = TokenBatch::from_sequences(&seqs).unwrap();
        let out = model.infer(&batch, &[OutputKind::Logits]).unwrap();
        let vocab = out[0].shape[2];
        for (b, s) in seqs.iter().enumerate() {
            let at = (b * batch.seq + s.len() - 1) * vocab;
            let d = max_abs_diff(&out[0].data[at..at + vocab], &last_logits(&model, s));
            assert!(d < TOL, "{name} row {b}: {d}");
        }
    }
}

/// What the CUDA back end runs: each attention as its lowering (per query head of a group), and
/// the BF16 model's products widened or `native`; all against the CPU's own run.
#[test]
fn device_programs_equal_the_cpu_run() {
    for name in FAMILIES {
        let model = Model::load(&fixtures().join(name)).unwrap();
        let batch = TokenBatch::from_sequences(&[(0..24).map(|i| (i * 11 + 3) % 500).collect()]).unwrap();
        let program = model.spec.forward_program(&batch, &[]);
        let run = |p: &faaswap::engine::program::Program| {
            let mut work = vec![0f32; p.work_elems];
            exec::run(p, &model.resident(), &model.spec.layout, &mut work).unwrap()
        };
        let want = run(&program);
        let lowered = faaswap::engine::program::Program {
            ops: program
                .ops
                .iter()
                .flat_map(|o| match o {
                    faaswap::engine::program::Op::Attention(at) => at.lower(),
                    other => vec![other.clone()],
                })
                .collect(),
            ..program.clone()
        };
        let d = max_abs_diff(&run(&lowered), &want);
        assert!(d < 1e-4, "{name}: lowered attention differs by {d}");
        let widened = storage::widen(&program, &model.spec.layout);
        assert_eq!(run(&widened), want, "{name}: widening is exact");
        if model.spec.layout.matrix_dtype().is_half() {
            let native = storage::native(&program, &model.spec.layout);
            let d = max_abs_diff(&run(&native), &want);
            assert!(d < 0.1, "{name}: native BF16 products differ by {d}");
        }
    }
}

/// Every preset of the family loads, plans and runs as a synthetic package (the nano one whole).
#[test]
fn presets_plan_and_the_nano_one_runs() {
    let dir = tempfile::tempdir().unwrap();
    let p = faaswap::engine::synth::preset("llama-nano").unwrap();
    faaswap::engine::synth::write_package(p, 3, faaswap::engine::synth::SynthDtype::F32, dir.path(), &mut |_, _| {})
        .unwrap();
    let model = Model::load(dir.path()).unwrap();
    let tokens =
        model.generate(&[1, 2, 3], &GenerateOptions { max_new_tokens: 4, ..Default::default() }, &mut |_| true);
    assert_eq!(tokens.unwrap().len(), 4);
    for name in ["smollm2-135m", "llama-1b", "llama-3b", "qwen2.5-0.5b", "qwen3-0.6b"] {
        let config = (faaswap::engine::synth::preset(name).unwrap().config)();
        let (_, loaded) = faaswap::engine::registry::load(std::path::Path::new("config.json"), &config).unwrap();
        assert!(loaded.layout.total_elems > 100_000_000, "{name}: {}", loaded.layout.total_elems);
    }
}

/// A sharded checkpoint (`model.safetensors.index.json` and its shards, as transformers saves
/// large models) loads as one package, and an index that points outside the package is refused.
#[test]
fn sharded_checkpoints_load_as_one_package() {
    let src = fixtures().join("tiny_llama");
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]
    {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let mut weight_map = serde_json::Map::new();
    for (i, half) in names.chunks(names.len().div_ceil(2)).enumerate() {
        let shard = format!("model-0000{}-of-00002.safetensors", i + 1);
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> =
            half.iter().map(|n| (n.clone(), st.tensor(n).unwrap())).collect();
        safetensors::serialize_to_file(views, None, &dir.path().join(&shard)).unwrap();
        for n in half {
            weight_map.insert(n.clone(), serde_json::Value::from(shard.clone()));
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    let sharded = Model::load(dir.path()).unwrap();
    let whole = Model::load(&src).unwrap();
    assert_eq!(sharded.weights(), whole.weights(), "the same packed buffer");

    let mut bad = index.clone();
    bad["weight_map"]["model.norm.weight"] = serde_json::Value::from("../model.safetensors");
    std::fs::write(dir.path().join("model.safetensors.index.json"), bad.to_string()).unwrap();
    let e = Model::load(dir.path()).unwrap_err().to_string();
    assert!(e.contains("model.safetensors.index.json") && e.contains("model.norm.weight"), "{e}");
}

#[test]
fn the_server_answers_last_position_logits_when_asked() {
    let repo = tempfile::tempdir().unwrap();
    copy_dir(&fixtures().join("tiny_llama"), &repo.path().join("llama"));
    let state = tempfile::tempdir().unwrap();
    let s = crate::server::TestServer::start(state.path(), repo.path(), |_| {});
    let (status, body) = s.post("/v2/repository/models/llama/load", &serde_json::json!({}));
    assert_eq!(status, 200, "{body}");
    let (_, meta) = s.get("/v2/models/llama");
    let outputs: Vec<&str> = meta["outputs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(outputs, ["logits", "last_logits"]);
    let reference = read_json(&fixtures().join("tiny_llama/reference.json"));
    let cases = reference["cases"].as_array().unwrap();
    let (a, b) = (ids(&cases[0]["input_ids"]), ids(&cases[1]["input_ids"]));
    // Two prompts of different lengths, right-padded: each gets its last real position's row.
    let seq = a.len().max(b.len());
    let pad = |v: &[u32]| (0..seq).map(|i| v.get(i).copied().unwrap_or(0)).collect::<Vec<_>>();
    let mask = |v: &[u32]| (0..seq).map(|i| u32::from(i < v.len())).collect::<Vec<_>>();
    let (ids_data, mask_data) = ([pad(&a), pad(&b)].concat(), [mask(&a), mask(&b)].concat());
    let inputs = serde_json::json!([
        {"name": "input_ids", "shape": [2, seq], "datatype": "INT64", "data": ids_data},
        {"name": "attention_mask", "shape": [2, seq], "datatype": "INT64", "data": mask_data},
    ]);
    for body in [
        serde_json::json!({"inputs": inputs, "parameters": {"logits": "last"}}),
        serde_json::json!({"inputs": inputs, "outputs": [{"name": "last_logits"}]}),
    ] {
        let (status, v) = s.post("/v2/models/llama/infer", &body);
        assert_eq!(status, 200, "{v}");
        let out = &v["outputs"][0];
        assert_eq!(out["name"], "last_logits");
        let vocab = out["shape"][1].as_u64().unwrap() as usize;
        assert_eq!(out["shape"][0], 2);
        let data = floats(&out["data"]);
        for (row, case) in data.chunks(vocab).zip(cases) {
            let diff = max_abs_diff(row, &floats(&case["last_position_logits"]));
            assert!(diff <= TOL, "max abs diff {diff}");
        }
    }
    let (status, v) =
        s.post("/v2/models/llama/infer", &serde_json::json!({"inputs": inputs, "parameters": {"logits": "first"}}));
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("parameters.logits"), "{v}");
}
