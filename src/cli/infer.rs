//! `faaswap run`, `generate` and `inspect`.

use serde_json::json;

use super::{print_json, CliError, GenerateArgs, InputArgs, InspectArgs, RunArgs};
use crate::engine::{GenerateOptions, Model, OutputKind, SamplingParams, TokenBatch};

fn token_ids(model: &Model, input: InputArgs) -> Result<Vec<Vec<u32>>, CliError> {
    if input.texts.is_empty() {
        Ok(input.input_ids.into_iter().map(|t| t.0).collect())
    } else {
        Ok(model.spec.tokenize(&input.texts)?)
    }
}

pub fn run(a: RunArgs) -> Result<(), CliError> {
    let model = Model::load(&a.model)?;
    let outputs: Vec<OutputKind> = if a.outputs.is_empty() {
        vec![model.spec.default_output()]
    } else {
        a.outputs.iter().map(|n| model.spec.output_by_name(n)).collect::<Result<_, _>>()?
    };
    let seqs = token_ids(&model, a.input)?;
    let batch = TokenBatch::from_sequences(&seqs)?;
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
    let tokens = model.generate(&prompt, &opts, &mut |_| true)?;
    print_json(&json!({ "token_ids": tokens }))
}

pub fn inspect(a: InspectArgs) -> Result<(), CliError> {
    let model = Model::load(&a.model)?;
    let mut v = serde_json::to_value(model.spec.summary()).map_err(std::io::Error::from)?;
    if a.tensors {
        v["tensors"] = serde_json::to_value(&model.spec.layout.tensors).map_err(std::io::Error::from)?;
    }
    print_json(&v)
}
