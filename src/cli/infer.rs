//! `faaswap run`, `generate` and `inspect`.

use serde_json::json;

use super::{print_json, CliError, GenerateArgs, InputArgs, InspectArgs, RunArgs, TokenIds};
use crate::engine::{GenerateOptions, Model, SamplingParams, TokenBatch};

/// The batch `faaswap run` was given: texts (or text pairs) through the tokenizer, or token ids
/// with their token types.
fn batch(model: &Model, input: InputArgs, pairs: &[String], types: &[TokenIds]) -> Result<TokenBatch, CliError> {
    if !input.texts.is_empty() {
        let pairs = if pairs.is_empty() { None } else { Some(pairs) };
        return Ok(model.spec.tokenize_batch(&input.texts, pairs)?);
    }
    let seqs: Vec<Vec<u32>> = input.input_ids.into_iter().map(|t| t.0).collect();
    let mut batch = TokenBatch::from_sequences(&seqs)?;
    if !types.is_empty() {
        if types.len() != seqs.len() {
            return Err(CliError::Usage("give one --token-type-ids per --input-ids".into()));
        }
        for (b, (types, ids)) in types.iter().zip(&seqs).enumerate() {
            if types.0.len() != ids.len() {
                return Err(CliError::Usage(format!(
                    "--token-type-ids {b} has {} values for {} ids",
                    types.0.len(),
                    ids.len()
                )));
            }
            batch.type_ids[b * batch.seq..][..ids.len()].copy_from_slice(&types.0);
        }
    }
    Ok(batch)
}

pub fn run(a: RunArgs) -> Result<(), CliError> {
    let model = Model::load(&a.model)?;
    let outputs = model.spec.requested_outputs(&a.outputs)?;
    let batch = batch(&model, a.input, &a.text_pairs, &a.token_type_ids)?;
    let tensors = model.infer(&batch, &outputs)?;
    print_json(&json!({ "outputs": tensors }))
}

pub fn generate(a: GenerateArgs) -> Result<(), CliError> {
    let model = Model::load(&a.model)?;
    let prompt = match (a.input_ids, a.text) {
        (Some(ids), _) => ids.0,
        (None, Some(text)) => model.spec.tokenize(&[text])?.remove(0),
        (None, None) => return Err(CliError::Usage("give --input-ids or --text".into())),
    };
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        sampling: SamplingParams { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, seed: a.seed },
        stop_at_eos: !a.ignore_eos,
    };
    // When each token arrived: the first after the prefill, the rest one decode step each.
    let t0 = std::time::Instant::now();
    let mut arrivals = Vec::with_capacity(a.max_new_tokens);
    let tokens = model.generate(&prompt, &opts, &mut |_| {
        arrivals.push(t0.elapsed().as_secs_f64() * 1e3);
        true
    })?;
    let first_token_ms = arrivals.first().copied();
    let decode_ms_per_token = match arrivals.as_slice() {
        [first, .., last] => Some((last - first) / (arrivals.len() - 1) as f64),
        _ => None,
    };
    print_json(&json!({
        "token_ids": tokens,
        "prompt_tokens": prompt.len(),
        "first_token_ms": first_token_ms,
        "decode_ms_per_token": decode_ms_per_token,
    }))
}

pub fn inspect(a: InspectArgs) -> Result<(), CliError> {
    // An ONNX model (a `model.onnx` file, or a folder holding one and no config.json): what
    // the importer reads from it.
    let onnx = if a.model.is_dir() { a.model.join("model.onnx") } else { a.model.clone() };
    if onnx.extension().is_some_and(|e| e == "onnx") && !a.model.join("config.json").exists() {
        return inspect_onnx(&onnx, a.tensors);
    }
    let model = Model::load(&a.model)?;
    let mut v = serde_json::to_value(model.spec.summary()).map_err(std::io::Error::from)?;
    if a.tensors {
        v["tensors"] = serde_json::to_value(&model.spec.layout.tensors).map_err(std::io::Error::from)?;
    }
    print_json(&v)
}

fn inspect_onnx(path: &std::path::Path, tensors: bool) -> Result<(), CliError> {
    let m = crate::engine::onnx::OnnxModel::read(path)?;
    let value = |v: &crate::engine::onnx::ValueSpec| json!({"name": v.name, "elem_type": v.elem_type, "dims": v.dims});
    let mut out = json!({
        "format": "onnx",
        "opset": m.opset,
        "inputs": m.inputs.iter().map(value).collect::<Vec<_>>(),
        "outputs": m.outputs.iter().map(value).collect::<Vec<_>>(),
        "nodes": m.nodes().len(),
        "operators": m.operators,
        "initializers": m.initializers.len(),
    });
    if tensors {
        out["tensors"] =
            m.initializers.iter().map(|t| json!({"name": t.name, "elem_type": t.elem_type, "dims": t.dims})).collect();
    }
    print_json(&out)
}
