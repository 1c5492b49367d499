//! Every kind of bad package gives its typed error, naming the file and tensor, without a
//! panic and without sizing anything from the bad values.

use std::path::Path;

use faaswap::engine::{EngineError, Model};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use serde_json::json;

use crate::common::*;

/// A safetensors file's tensors as owned (name, dtype, shape, bytes).
type Tensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

fn read_tensors(path: &Path) -> Tensors {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| (name, view.dtype(), view.shape().to_vec(), view.data().to_vec()))
        .collect()
}

fn write_tensors(path: &Path, tensors: &Tensors) {
    let views: Vec<(String, TensorView<'_>)> =
        tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// A copy of tiny_bert with its weights edited by `edit`.
fn bert_with(edit: impl FnOnce(&mut Tensors)) -> tempfile::TempDir {
    let dir = copy_package(&tiny_bert());
    let path = dir.path().join("model.safetensors");
    let mut tensors = read_tensors(&path);
    edit(&mut tensors);
    write_tensors(&path, &tensors);
    dir
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut config = read_json(&path);
    edit(&mut config);
    std::fs::write(path, serde_json::to_vec(&config).unwrap()).unwrap();
}

fn load_err(dir: &Path) -> EngineError {
    Model::load(dir).expect_err("a bad package must not load")
}

const TENSOR: &str = "encoder.layer.1.output.dense.bias";

#[test]
fn unknown_model_type() {
    let dir = copy_package(&tiny_bert());
    edit_config(dir.path(), |c| c["model_type"] = json!("mamba"));
    let err = load_err(dir.path());
    assert!(matches!(&err, EngineError::UnknownModelType { model_type, .. } if model_type == "mamba"));
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn missing_tensor() {
    let dir = bert_with(|t| t.retain(|(n, ..)| n != TENSOR));
    let err = load_err(dir.path());
    assert!(matches!(&err, EngineError::MissingTensor { tensor, .. } if tensor == TENSOR), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn wrong_shape() {
    let dir = bert_with(|t| {
        let entry = t.iter_mut().find(|(n, ..)| n == TENSOR).unwrap();
        entry.2 = vec![32];
        entry.3.truncate(32 * 4);
    });
    let err = load_err(dir.path());
    assert!(
        matches!(&err, EngineError::WrongShape { tensor, expected, found, .. }
            if tensor == TENSOR && expected == &vec![64] && found == &vec![32]),
        "{err}"
    );
}

#[test]
fn wrong_dtype() {
    let dir = bert_with(|t| {
        let entry = t.iter_mut().find(|(n, ..)| n == TENSOR).unwrap();
        entry.1 = Dtype::I32;
    });
    let err = load_err(dir.path());
    assert!(matches!(&err, EngineError::WrongDtype { tensor, .. } if tensor == TENSOR), "{err}");
    assert!(err.to_string().contains("I32"), "{err}");
}

#[test]
fn non_finite_weight() {
    let dir = bert_with(|t| {
        let entry = t.iter_mut().find(|(n, ..)| n == TENSOR).unwrap();
        entry.3[12..16].copy_from_slice(&f32::NAN.to_le_bytes());
    });
    let err = load_err(dir.path());
    assert!(matches!(&err, EngineError::NonFiniteWeight { tensor, index: 3, .. } if tensor == TENSOR), "{err}");
}

#[test]
fn truncated_weights_file() {
    let dir = copy_package(&tiny_bert());
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let err = load_err(dir.path());
    assert!(matches!(err, EngineError::CorruptWeights { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    std::fs::write(&path, &bytes[..5]).unwrap();
    assert!(matches!(load_err(dir.path()), EngineError::CorruptWeights { .. }));
}

#[test]
fn corrupt_header() {
    let dir = copy_package(&tiny_bert());
    let path = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    // Garbage where the JSON header starts.
    bytes[8..16].copy_from_slice(b"not json");
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(load_err(dir.path()), EngineError::CorruptWeights { .. }));
    // A header length of 2^64-1 must be refused, not allocated.
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(load_err(dir.path()), EngineError::CorruptWeights { .. }));
}

#[test]
fn absurd_config_values() {
    for (key, value) in [
        ("hidden_size", json!(1_000_000_000u64)),
        ("num_attention_heads", json!(0)),
        ("num_attention_heads", json!(5)),
        ("layer_norm_eps", json!(-1.0)),
        ("num_hidden_layers", json!("two")),
    ] {
        let dir = copy_package(&tiny_bert());
        edit_config(dir.path(), |c| c[key] = value.clone());
        let err = load_err(dir.path());
        assert!(matches!(err, EngineError::BadConfig { .. }), "{key}={value}: {err}");
        assert!(err.to_string().contains(key), "{err}");
    }
}

#[test]
fn config_larger_than_the_weights_is_a_shape_error_not_an_allocation() {
    // Every value is within limits, but together they describe ~34 GB of embeddings: the
    // loader must compare with the file before it sizes anything.
    let dir = copy_package(&tiny_bert());
    edit_config(dir.path(), |c| {
        c["vocab_size"] = json!(2_000_000);
        c["hidden_size"] = json!(4096);
        c["num_attention_heads"] = json!(64);
    });
    let err = load_err(dir.path());
    assert!(matches!(err, EngineError::WrongShape { .. }), "{err}");
}

#[test]
fn missing_or_unreadable_config() {
    let dir = copy_package(&tiny_bert());
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    let err = load_err(dir.path());
    assert!(matches!(err, EngineError::Io { .. }), "{err}");
    assert!(err.to_string().contains("config.json"), "{err}");
    std::fs::write(dir.path().join("config.json"), b"{\"model_type\": ").unwrap();
    assert!(matches!(load_err(dir.path()), EngineError::BadConfig { .. }));
    assert!(matches!(load_err(Path::new("/nonexistent/package")), EngineError::Io { .. }));
}

#[test]
fn bad_tokenizer_and_pooling_files() {
    let dir = copy_package(&tiny_bert());
    std::fs::write(dir.path().join("tokenizer.json"), b"{\"version\": 7}").unwrap();
    let err = load_err(dir.path());
    assert!(matches!(err, EngineError::BadTokenizer { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");

    let dir = copy_package(&tiny_bert());
    std::fs::create_dir(dir.path().join("1_Pooling")).unwrap();
    std::fs::write(dir.path().join("1_Pooling/config.json"), b"{\"pooling_mode_mean_tokens\": false}").unwrap();
    let err = load_err(dir.path());
    assert!(matches!(err, EngineError::BadConfig { .. }), "{err}");
    assert!(err.to_string().contains("1_Pooling"), "{err}");
}

#[test]
fn f16_and_bf16_weights_stay_half_and_widen_to_the_rounded_values() {
    let reference = Model::load(&tiny_bert()).unwrap();
    for dtype in [Dtype::F16, Dtype::BF16] {
        let dir = bert_with(|t| {
            for (_, d, _, bytes) in t.iter_mut() {
                let converted: Vec<u8> = bytes
                    .chunks_exact(4)
                    .flat_map(|c| {
                        let x = f32::from_le_bytes(c.try_into().unwrap());
                        match dtype {
                            Dtype::F16 => half::f16::from_f32(x).to_le_bytes(),
                            _ => half::bf16::from_f32(x).to_le_bytes(),
                        }
                    })
                    .collect();
                *bytes = converted;
                *d = dtype;
            }
        });
        // Held as the file stores them by default; widened on request to the rounded values.
        let held = Model::load(dir.path()).unwrap();
        let stored = if dtype == Dtype::F16 { faaswap::engine::Dtype::F16 } else { faaswap::engine::Dtype::Bf16 };
        assert_eq!(held.spec.layout.matrix_dtype(), stored);
        let model = Model::load_as(dir.path(), Some(faaswap::engine::Dtype::F32)).unwrap();
        let want: Vec<f32> = reference
            .weights()
            .iter()
            .map(|&x| match dtype {
                Dtype::F16 => half::f16::from_f32(x).to_f32(),
                _ => half::bf16::from_f32(x).to_f32(),
            })
            .collect();
        assert_eq!(model.weights(), &want[..], "{dtype:?} weights are the rounded f32 weights");
    }
}

#[test]
fn bert_prefix_and_extra_tensors_are_accepted() {
    // A BertForX checkpoint: names under `bert.`, plus heads and buffers the encoder ignores.
    let dir = bert_with(|t| {
        for (name, ..) in t.iter_mut() {
            *name = format!("bert.{name}");
        }
        t.push(("cls.predictions.bias".into(), Dtype::F32, vec![2], vec![0; 8]));
        t.push(("bert.embeddings.position_ids".into(), Dtype::I64, vec![1, 2], vec![0; 16]));
    });
    let prefixed = Model::load(dir.path()).unwrap();
    let plain = Model::load(&tiny_bert()).unwrap();
    assert_eq!(prefixed.weights(), plain.weights());
}

#[test]
fn too_many_tensors() {
    // Every real tensor plus 70,000 one-float extras: over the limit of 65,536 tensors.
    let dir = bert_with(|t| {
        for i in 0..70_000 {
            t.push((format!("extra.{i}"), Dtype::F32, vec![1], vec![0; 4]));
        }
    });
    let err = load_err(dir.path());
    assert!(matches!(&err, EngineError::CorruptWeights { reason, .. } if reason.contains("limit")), "{err}");
}

// Hostile weights files: tiny_bert's `model.safetensors` with random bytes overwritten, cut
// short, or its header length rewritten. Loading never panics; it either fails with a typed
// error or loads a buffer of exactly the planned size.
proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    #[test]
    fn mangled_weights_files_never_panic(
        edits in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 0..16),
        cut in proptest::option::of(0usize..700_000),
        header_len in proptest::option::of(proptest::prelude::any::<u64>()),
    ) {
        let dir = copy_package(&tiny_bert());
        let path = dir.path().join("model.safetensors");
        let mut bytes = std::fs::read(&path).unwrap();
        for (at, b) in edits {
            let i = at % bytes.len();
            bytes[i] = b;
        }
        if let Some(n) = header_len {
            bytes[..8].copy_from_slice(&n.to_le_bytes());
        }
        if let Some(c) = cut {
            bytes.truncate(c.min(bytes.len()));
        }
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(model) = Model::load(dir.path()) {
            proptest::prop_assert_eq!(model.weights().len(), model.spec.layout.total_elems);
        }
    }
}
