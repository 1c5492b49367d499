//! The real all-MiniLM-L6-v2 model (fetched by scripts/fetch-minilm.sh) against the
//! sentence-transformers reference embeddings.

use faaswap::engine::{Model, OutputKind, TokenBatch};

use crate::cli::faaswap_json;
use crate::common::*;

fn sentences() -> Vec<serde_json::Value> {
    read_json(&fixtures().join("minilm_sample.json"))["sentences"].as_array().unwrap().clone()
}

#[test]
fn tokenizer_ids_match_sentence_transformers() {
    let model = Model::load(&minilm()).unwrap();
    for s in sentences() {
        let got = model.spec.tokenize(&[s["text"].as_str().unwrap().to_string()]).unwrap();
        assert_eq!(got[0], ids(&s["input_ids"]), "{}", s["text"]);
    }
}

#[test]
fn embeddings_match_reference_batched_and_alone() {
    let model = Model::load(&minilm()).unwrap();
    let sentences = sentences();
    let texts: Vec<String> = sentences.iter().map(|s| s["text"].as_str().unwrap().to_string()).collect();
    let batch = TokenBatch::from_sequences(&model.spec.tokenize(&texts).unwrap()).unwrap();
    let out = model.infer(&batch, &[OutputKind::SentenceEmbedding]).unwrap();
    assert_eq!(out[0].shape, vec![texts.len(), 384]);
    for (i, s) in sentences.iter().enumerate() {
        let want = floats(&s["embedding"]);
        let got = &out[0].data[i * 384..(i + 1) * 384];
        assert!(cosine(got, &want) >= 0.9999, "sentence {i}: cosine {}", cosine(got, &want));
        assert!(max_abs_diff(got, &want) <= 1e-5, "sentence {i}: {}", max_abs_diff(got, &want));
        let alone = TokenBatch::from_sequences(&[ids(&s["input_ids"])]).unwrap();
        let single = model.infer(&alone, &[OutputKind::SentenceEmbedding]).unwrap();
        assert!(max_abs_diff(&single[0].data, &want) <= 1e-5, "sentence {i} alone");
    }
}

#[test]
fn cli_run_with_text_gives_sentence_embeddings() {
    let sentences = sentences();
    let model = minilm();
    let mut args = vec!["run", "--model", model.to_str().unwrap()];
    for s in &sentences {
        args.push("--text");
        args.push(s["text"].as_str().unwrap());
    }
    let v = faaswap_json(&args);
    let out = &v["outputs"][0];
    assert_eq!(out["name"], "sentence_embedding");
    assert_eq!(out["shape"], serde_json::json!([sentences.len(), 384]));
    let data = floats(&out["data"]);
    for (i, s) in sentences.iter().enumerate() {
        assert!(max_abs_diff(&data[i * 384..(i + 1) * 384], &floats(&s["embedding"])) <= 1e-5);
    }
}

#[test]
fn long_text_is_truncated_to_max_seq_length() {
    let model = Model::load(&minilm()).unwrap();
    // 400 words: past both the 256 of sentence_bert_config.json and the 128 that
    // tokenizer.json itself carries.
    let text = vec!["river"; 400].join(" ");
    let ids = model.spec.tokenize(&[text]).unwrap().remove(0);
    assert_eq!(ids.len(), 256);
    assert_eq!((ids[0], ids[255]), (101, 102), "[CLS] ... [SEP]");
    assert_eq!(model.spec.summary().max_input_tokens, 256);
}
