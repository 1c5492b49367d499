//! Encoders with task heads and the other encoder bodies against their reference fixtures
//! (`tiny_bert_qa`, `tiny_bert_cls` with its text pairs, `tiny_bert_tokcls`, `tiny_roberta`,
//! `tiny_xlmr_cls`, `tiny_distilbert_cls`, `tiny_bert_bf16`): through the engine, through
//! `faaswap run`, and through the server (KServe JSON, text pairs, metadata, bad configs).

use std::path::PathBuf;

use serde_json::{json, Value};

use faaswap::engine::{Model, OutputKind, TokenBatch};

use crate::cli::faaswap_json;
use crate::common::*;
use crate::server::TestServer;

const TOL: f32 = 1e-4;

/// Every fixture of this file, with the outputs its reference holds per case.
const FIXTURES: &[(&str, &[&str])] = &[
    ("tiny_bert_qa", &["start_logits", "end_logits"]),
    ("tiny_bert_cls", &["logits"]),
    ("tiny_bert_tokcls", &["logits"]),
    ("tiny_roberta", &["last_hidden_state"]),
    ("tiny_xlmr_cls", &["logits"]),
    ("tiny_distilbert_cls", &["logits"]),
    ("tiny_bert_bf16", &["last_hidden_state"]),
];

fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// A reference output of a case, flattened (nested lists for per-token rows).
fn flat(v: &Value) -> Vec<f32> {
    match v.as_array().and_then(|a| a.first()) {
        Some(Value::Array(_)) => flat_rows(v),
        _ => floats(v),
    }
}

fn case_batch(case: &Value) -> TokenBatch {
    let input = ids(&case["input_ids"]);
    let mut batch = TokenBatch::from_sequences(std::slice::from_ref(&input)).unwrap();
    if let Some(types) = case.get("token_type_ids") {
        batch.type_ids = ids(types);
    }
    batch
}

#[test]
fn every_head_and_body_matches_its_reference() {
    for &(name, outputs) in FIXTURES {
        let model = Model::load(&fixture(name)).unwrap();
        let reference = read_json(&fixture(name).join("reference.json"));
        let kinds: Vec<OutputKind> = outputs.iter().map(|o| model.spec.output_by_name(o).unwrap()).collect();
        assert_eq!(model.spec.default_outputs(), kinds, "{name}: the reference's outputs are the defaults");
        let cases = reference["cases"].as_array().unwrap();
        assert_eq!(cases.len(), 4);
        for case in cases {
            let batch = case_batch(case);
            let got = model.infer(&batch, &kinds).unwrap();
            for (out, want) in got.iter().zip(outputs) {
                assert_eq!(out.name, *want);
                let d = max_abs_diff(&out.data, &flat(&case[*want]));
                assert!(d <= TOL, "{name} {want} seq_len {}: max abs diff {d}", batch.seq);
            }
        }
    }
}

#[test]
fn heads_answer_a_padded_batch_as_each_sequence_alone() {
    for &(name, outputs) in FIXTURES {
        let model = Model::load(&fixture(name)).unwrap();
        let reference = read_json(&fixture(name).join("reference.json"));
        let cases: Vec<&Value> = reference["cases"].as_array().unwrap().iter().take(3).collect();
        let seqs: Vec<Vec<u32>> = cases.iter().map(|c| ids(&c["input_ids"])).collect();
        let mut batch = TokenBatch::from_sequences(&seqs).unwrap();
        for (b, c) in cases.iter().enumerate() {
            if let Some(types) = c.get("token_type_ids") {
                batch.type_ids[b * batch.seq..][..seqs[b].len()].copy_from_slice(&ids(types));
            }
        }
        let kinds: Vec<OutputKind> = outputs.iter().map(|o| model.spec.output_by_name(o).unwrap()).collect();
        let got = model.infer(&batch, &kinds).unwrap();
        for (out, want) in got.iter().zip(outputs) {
            let per_row = out.data.len() / batch.batch;
            for (b, c) in cases.iter().enumerate() {
                let want = flat(&c[*want]);
                let row = &out.data[b * per_row..(b + 1) * per_row];
                // Per-token outputs: the sequence's positions first, zeros at its padding.
                let d = max_abs_diff(&row[..want.len()], &want);
                assert!(d <= TOL, "{name} {} row {b}: max abs diff {d}", out.name);
                assert!(row[want.len()..].iter().all(|&v| v == 0.0), "{name}: padding positions are zeros");
            }
        }
    }
}

#[test]
fn text_pairs_go_through_the_pair_template() {
    let model = Model::load(&fixture("tiny_bert_cls")).unwrap();
    let reference = read_json(&fixture("tiny_bert_cls").join("reference.json"));
    let pairs = reference["pair_cases"].as_array().unwrap();
    let texts: Vec<String> = pairs.iter().map(|p| p["text"].as_str().unwrap().to_string()).collect();
    let seconds: Vec<String> = pairs.iter().map(|p| p["text_pair"].as_str().unwrap().to_string()).collect();
    let batch = model.spec.tokenize_batch(&texts, Some(&seconds)).unwrap();
    let logits = &model.infer(&batch, &[OutputKind::Logits]).unwrap()[0];
    for (b, p) in pairs.iter().enumerate() {
        let want_ids = ids(&p["input_ids"]);
        let s = batch.seq;
        assert_eq!(&batch.ids[b * s..b * s + want_ids.len()], want_ids.as_slice(), "pair {b} ids");
        assert_eq!(
            &batch.type_ids[b * s..b * s + want_ids.len()],
            ids(&p["token_type_ids"]).as_slice(),
            "pair {b} types"
        );
        let d = max_abs_diff(&logits.data[b * 3..(b + 1) * 3], &floats(&p["logits"]));
        assert!(d <= TOL, "pair {b}: max abs diff {d}");
    }
}

#[test]
fn faaswap_run_prints_the_same_tensors() {
    for &(name, outputs) in FIXTURES {
        let reference = read_json(&fixture(name).join("reference.json"));
        let case = &reference["cases"][1];
        let dir = fixture(name);
        let input = ids(&case["input_ids"]).iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let mut args = vec!["run", "--model", dir.to_str().unwrap(), "--input-ids", &input];
        let types;
        if let Some(t) = case.get("token_type_ids") {
            types = ids(t).iter().map(u32::to_string).collect::<Vec<_>>().join(",");
            args.extend(["--token-type-ids", &types]);
        }
        let v = faaswap_json(&args);
        let got = v["outputs"].as_array().unwrap();
        assert_eq!(got.len(), outputs.len(), "{name}: the default outputs: {v}");
        for (out, want) in got.iter().zip(outputs) {
            assert_eq!(out["name"], *want);
            let d = max_abs_diff(&floats(&out["data"]), &flat(&case[*want]));
            assert!(d <= TOL, "{name} {want}: max abs diff {d}");
        }
    }
    // A pair from the command line.
    let reference = read_json(&fixture("tiny_bert_cls").join("reference.json"));
    let p = &reference["pair_cases"][0];
    let dir = fixture("tiny_bert_cls");
    let v = faaswap_json(&[
        "run",
        "--model",
        dir.to_str().unwrap(),
        "--text",
        p["text"].as_str().unwrap(),
        "--text-pair",
        p["text_pair"].as_str().unwrap(),
    ]);
    let d = max_abs_diff(&floats(&v["outputs"][0]["data"]), &floats(&p["logits"]));
    assert!(d <= TOL, "pair through faaswap run: {d}");
}

fn repository() -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    for &(name, _) in FIXTURES {
        copy_dir(&fixture(name), &repo.path().join(name));
    }
    repo
}

#[test]
fn the_server_answers_heads_pairs_and_labels() {
    let state = tempfile::tempdir().unwrap();
    let repo = repository();
    let s = TestServer::start(state.path(), repo.path(), |_| {});
    for &(name, outputs) in FIXTURES {
        let (status, body) = s.post(&format!("/v2/repository/models/{name}/load"), &json!({}));
        assert_eq!(status, 200, "{name}: {body}");
        let reference = read_json(&fixture(name).join("reference.json"));
        let case = &reference["cases"][3];
        let input = ids(&case["input_ids"]);
        let mut inputs =
            vec![json!({"name": "input_ids", "shape": [1, input.len()], "datatype": "INT64", "data": input})];
        if let Some(t) = case.get("token_type_ids") {
            inputs.push(json!({"name": "token_type_ids", "shape": [1, input.len()], "datatype": "INT64", "data": t}));
        }
        // No outputs named: the defaults, all of a question-answering head's.
        let (status, v) = s.post(&format!("/v2/models/{name}/infer"), &json!({"inputs": inputs}));
        assert_eq!(status, 200, "{name}: {v}");
        let got = v["outputs"].as_array().unwrap();
        assert_eq!(got.len(), outputs.len(), "{name}: {v}");
        for (out, want) in got.iter().zip(outputs) {
            assert_eq!(out["name"], *want);
            let d = max_abs_diff(&floats(&out["data"]), &flat(&case[*want]));
            assert!(d <= TOL, "{name} {want} over HTTP: {d}");
        }
        let (_, meta) = s.get(&format!("/v2/models/{name}"));
        let names: Vec<&str> =
            meta["outputs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
        assert_eq!(names, *outputs, "{name}: metadata {meta}");
    }

    // Shapes and labels in the metadata.
    let (_, meta) = s.get("/v2/models/tiny_bert_cls");
    assert_eq!(meta["outputs"][0]["shape"], json!([-1, 3]));
    assert_eq!(meta["id2label"], json!({"0": "negative", "1": "neutral", "2": "positive"}));
    assert!(meta["inputs"].as_array().unwrap().iter().any(|i| i["name"] == "text_pair"), "{meta}");
    let (_, meta) = s.get("/v2/models/tiny_bert_qa");
    assert_eq!(meta["outputs"][0]["shape"], json!([-1, -1]));
    assert!(meta.get("id2label").is_none());
    assert!(!meta["inputs"].as_array().unwrap().iter().any(|i| i["name"] == "text_pair"), "no tokenizer: {meta}");
    let (_, meta) = s.get("/v2/models/tiny_bert_tokcls");
    assert_eq!(meta["outputs"][0]["shape"], json!([-1, -1, 5]));
    let (_, meta) = s.get("/v2/models/tiny_distilbert_cls");
    let inputs: Vec<&str> = meta["inputs"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(inputs, ["input_ids", "attention_mask"], "DistilBERT takes no token types");
    let (_, f) = s.get("/api/v1/functions/tiny_xlmr_cls");
    assert_eq!(f["id2label"], json!(["LABEL_0"]), "{f}");

    // A reranker's pairs: text and text_pair, one sequence each.
    let reference = read_json(&fixture("tiny_bert_cls").join("reference.json"));
    let pairs = reference["pair_cases"].as_array().unwrap();
    let texts: Vec<&str> = pairs.iter().map(|p| p["text"].as_str().unwrap()).collect();
    let seconds: Vec<&str> = pairs.iter().map(|p| p["text_pair"].as_str().unwrap()).collect();
    let body = json!({"inputs": [
        {"name": "text", "shape": [texts.len()], "datatype": "BYTES", "data": texts},
        {"name": "text_pair", "shape": [seconds.len()], "datatype": "BYTES", "data": seconds},
    ]});
    let (status, v) = s.post("/v2/models/tiny_bert_cls/infer", &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["outputs"][0]["shape"], json!([pairs.len(), 3]));
    let data = floats(&v["outputs"][0]["data"]);
    for (b, p) in pairs.iter().enumerate() {
        let d = max_abs_diff(&data[b * 3..(b + 1) * 3], &floats(&p["logits"]));
        assert!(d <= TOL, "pair {b} over HTTP: {d}");
    }

    // Pairs that do not pair up, and a pair without its first text, are 400s.
    let lopsided = json!({"inputs": [
        {"name": "text", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]},
        {"name": "text_pair", "shape": [1], "datatype": "BYTES", "data": ["c"]},
    ]});
    let (status, v) = s.post("/v2/models/tiny_bert_cls/infer", &lopsided);
    assert_eq!((status, v["code"].as_str()), (400, Some("bad_request")), "{v}");
    let alone = json!({"inputs": [{"name": "text_pair", "shape": [1], "datatype": "BYTES", "data": ["c"]}]});
    let (status, _) = s.post("/v2/models/tiny_bert_cls/infer", &alone);
    assert_eq!(status, 400);
    // One output of a question-answering head, by name.
    let body = json!({"inputs": [{"name": "input_ids", "shape": [1, 3], "datatype": "INT64", "data": [5, 6, 7]}],
                      "outputs": [{"name": "end_logits"}]});
    let (status, v) = s.post("/v2/models/tiny_bert_qa/infer", &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["outputs"].as_array().unwrap().len(), 1);
    assert_eq!((v["outputs"][0]["name"].as_str(), &v["outputs"][0]["shape"]), (Some("end_logits"), &json!([1, 3])));
}

#[test]
fn a_bad_head_or_body_config_is_refused_naming_the_key() {
    let state = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    let edits: &[(&str, &str, Value, &str)] = &[
        ("multiple_choice", "tiny_bert_cls", json!({"architectures": ["BertForMultipleChoice"]}), "architectures"),
        ("bad_labels", "tiny_bert_cls", json!({"id2label": {"0": "a", "7": "b"}}), "id2label"),
        ("twice_labelled", "tiny_bert_cls", json!({"id2label": {"1": "a", "01": "b"}}), "id2label"),
        ("sinusoidal", "tiny_distilbert_cls", json!({"sinusoidal_pos_embds": true}), "sinusoidal_pos_embds"),
        ("no_position", "tiny_roberta", json!({"pad_token_id": 129}), "pad_token_id"),
    ];
    for (name, src, edit, _) in edits {
        let dir = repo.path().join(name);
        copy_dir(&fixture(src), &dir);
        let mut config = read_json(&dir.join("config.json"));
        for (k, v) in edit.as_object().unwrap() {
            config[k] = v.clone();
        }
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    }
    let s = TestServer::start(state.path(), repo.path(), |_| {});
    for (name, _, _, key) in edits {
        let (status, body) = s.post(&format!("/v2/repository/models/{name}/load"), &json!({}));
        assert_eq!(status, 422, "{name}: {body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(message.contains(key), "{name}: the error names {key}: {body}");
    }
}

/// Sentence-transformers pooling on the other bodies: a RoBERTa package with mean pooling and
/// Normalize (as multilingual-e5 ships), and CLS pooling (as bge-m3), answers the pooled
/// reference hidden states.
#[test]
fn sentence_pooling_works_on_every_body() {
    let reference = read_json(&fixture("tiny_roberta").join("reference.json"));
    let case = &reference["cases"][2];
    let hidden = flat_rows(&case["last_hidden_state"]);
    let rows: Vec<&[f32]> = hidden.chunks_exact(64).collect();
    let normalized = |v: Vec<f32>| {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect::<Vec<f32>>()
    };
    let mean: Vec<f32> = (0..64).map(|j| rows.iter().map(|r| r[j]).sum::<f32>() / rows.len() as f32).collect();
    for (mode, want) in
        [("pooling_mode_mean_tokens", normalized(mean)), ("pooling_mode_cls_token", normalized(rows[0].to_vec()))]
    {
        let dir = copy_package(&fixture("tiny_roberta"));
        let modules = json!([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]);
        std::fs::write(dir.path().join("modules.json"), modules.to_string()).unwrap();
        std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
        std::fs::write(
            dir.path().join("1_Pooling/config.json"),
            json!({"word_embedding_dimension": 64, mode: true}).to_string(),
        )
        .unwrap();
        let model = Model::load(dir.path()).unwrap();
        assert_eq!(model.spec.default_outputs(), vec![OutputKind::SentenceEmbedding]);
        // A padded batch: the pooled rows are the sequence's own.
        let input = ids(&case["input_ids"]);
        let batch = TokenBatch::from_sequences(&[input.clone(), input[..3].to_vec()]).unwrap();
        let out = &model.infer(&batch, &[OutputKind::SentenceEmbedding]).unwrap()[0];
        assert_eq!(out.shape, vec![2, 64]);
        let d = max_abs_diff(&out.data[..64], &want);
        assert!(d <= 1e-5, "{mode}: max abs diff {d}");
    }
}
