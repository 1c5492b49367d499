//! Triton model configurations (`<repo>/<name>/config.pbtxt`): protobuf text of Triton's
//! `inference.ModelConfig` (the vendored `proto/triton/model_config.proto`), read by a real
//! text-format parser (prost-reflect) and checked for what faaswap serves — ONNX models run by
//! its own engine, as Triton's `onnxruntime` backend would. Fields that only tune Triton's own
//! scheduling (`instance_group`, `dynamic_batching`, ...) are accepted and listed as ignored;
//! a field whose value faaswap cannot honour is an error naming it.

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage};

/// The generated types of `model_config.proto` (package `inference`).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/inference.rs"));
}

use proto::model_version_policy::PolicyChoice;
use proto::DataType;

static DESCRIPTORS: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(include_bytes!(concat!(env!("OUT_DIR"), "/inference_descriptors.bin")).as_ref())
        .expect("build.rs wrote valid descriptors")
});

/// The platforms and backends whose models faaswap runs.
const PLATFORMS: [&str; 1] = ["onnxruntime_onnx"];
const BACKENDS: [&str; 1] = ["onnxruntime"];

/// What is wrong with a `config.pbtxt`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TritonConfigError {
    /// Not protobuf text of a `ModelConfig` (an unknown field, a value of the wrong kind, ...).
    #[error("config.pbtxt is not a valid model configuration: {0}")]
    Syntax(String),
    /// A field faaswap cannot honour.
    #[error("config.pbtxt: {field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> TritonConfigError {
    TritonConfigError::Invalid { field: field.into(), reason: reason.into() }
}

/// One input or output: its name, KServe datatype, dims (without the batch dimension when
/// `max_batch_size` > 0; -1 for any size) and the shape the model sees, if reshaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorConfig {
    pub name: String,
    pub datatype: &'static str,
    pub dims: Vec<i64>,
    pub reshape: Option<Vec<i64>>,
}

/// Which versions (`<repo>/<name>/<version>/`) are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The highest `n` versions (Triton's default: the highest one).
    Latest(u32),
    All,
    Specific(Vec<i64>),
}

/// A checked configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TritonConfig {
    pub name: String,
    /// 0: no batch dimension; otherwise the largest batch a request may carry.
    pub max_batch_size: u32,
    pub inputs: Vec<TensorConfig>,
    pub outputs: Vec<TensorConfig>,
    pub versions: VersionPolicy,
    /// The model file in a version folder (`model.onnx` unless set).
    pub model_filename: String,
    /// Fields set that tune only Triton's own serving, accepted and not used.
    pub ignored: Vec<&'static str>,
}

/// Parses and checks the `config.pbtxt` of the model folder `folder`.
pub fn parse(text: &str, folder: &str) -> Result<TritonConfig, TritonConfigError> {
    let descriptor =
        DESCRIPTORS.get_message_by_name("inference.ModelConfig").expect("ModelConfig is in the descriptors");
    let text = colon_before_lists(text);
    let message =
        DynamicMessage::parse_text_format(descriptor, &text).map_err(|e| TritonConfigError::Syntax(e.to_string()))?;
    let c: proto::ModelConfig = message.transcode_to().map_err(|e| TritonConfigError::Syntax(e.to_string()))?;
    check(c, folder)
}

/// The text with a `:` between a field name and the `[` of its list. The text format lets a
/// list of messages go without one (`input [ { ... } ]`, how Triton's own examples write it);
/// the parser wants it. In this schema (no extensions, no `Any`) a `[` after a name can only
/// open a list. Strings and `#` comments are copied as they are.
fn colon_before_lists(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    // Whether the last token was a name (and only whitespace came since).
    let mut after_name = false;
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                out.push(c);
                while let Some(d) = chars.next() {
                    out.push(d);
                    if d == '\\' {
                        out.extend(chars.next());
                    } else if d == c || d == '\n' {
                        break;
                    }
                }
                after_name = false;
            }
            '#' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '[' if after_name => {
                out.push_str(": [");
                after_name = false;
            }
            c if c.is_alphanumeric() || c == '_' || c == '.' || c == '-' => {
                out.push(c);
                let mut word = String::from(c);
                while let Some(&d) =
                    chars.peek().filter(|d| d.is_alphanumeric() || **d == '_' || **d == '.' || **d == '-')
                {
                    word.push(d);
                    out.push(d);
                    chars.next();
                }
                // A name starts with a letter or `_`; numbers (`-1`, `3.5`) are values.
                after_name = word.starts_with(|f: char| f.is_alphabetic() || f == '_');
            }
            c if c.is_whitespace() => out.push(c),
            c => {
                out.push(c);
                after_name = false;
            }
        }
    }
    out
}

fn check(c: proto::ModelConfig, folder: &str) -> Result<TritonConfig, TritonConfigError> {
    if !c.name.is_empty() && c.name != folder {
        return Err(invalid("name", format!("{:?} differs from the model's folder {folder:?}", c.name)));
    }
    match (c.platform.as_str(), c.backend.as_str()) {
        ("", "") => return Err(invalid("platform", "set platform \"onnxruntime_onnx\" or backend \"onnxruntime\"")),
        (p, _) if !p.is_empty() && !PLATFORMS.contains(&p) => {
            return Err(invalid("platform", format!("{p:?}: faaswap serves ONNX models (\"onnxruntime_onnx\")")))
        }
        (_, b) if !b.is_empty() && !BACKENDS.contains(&b) => {
            return Err(invalid("backend", format!("{b:?}: faaswap serves ONNX models (\"onnxruntime\")")))
        }
        _ => {}
    }
    let max_batch_size = u32::try_from(c.max_batch_size)
        .map_err(|_| invalid("max_batch_size", format!("{} is negative", c.max_batch_size)))?;
    let inputs = c
        .input
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let field = format!("input[{i}]");
            if t.is_shape_tensor || t.optional || t.allow_ragged_batch || t.is_non_linear_format_io {
                return Err(invalid(field, "shape tensors, optional, ragged and non-linear inputs are not supported"));
            }
            tensor(&field, &t.name, t.data_type, &t.dims, t.reshape.as_ref())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = c
        .output
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let field = format!("output[{i}]");
            if t.is_shape_tensor || t.is_non_linear_format_io {
                return Err(invalid(field, "shape tensors and non-linear outputs are not supported"));
            }
            tensor(&field, &t.name, t.data_type, &t.dims, t.reshape.as_ref())
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (what, list) in [("input", &inputs), ("output", &outputs)] {
        if list.is_empty() {
            return Err(invalid(what, "the model needs at least one"));
        }
        if let Some((i, t)) = list.iter().enumerate().find(|(i, t)| list[..*i].iter().any(|u| u.name == t.name)) {
            return Err(invalid(format!("{what}[{i}].name"), format!("{:?} is given twice", t.name)));
        }
    }
    let versions = match c.version_policy.and_then(|v| v.policy_choice) {
        None => VersionPolicy::Latest(1),
        Some(PolicyChoice::Latest(l)) if l.num_versions == 0 => {
            return Err(invalid("version_policy.latest.num_versions", "must be at least 1"))
        }
        Some(PolicyChoice::Latest(l)) => VersionPolicy::Latest(l.num_versions),
        Some(PolicyChoice::All(_)) => VersionPolicy::All,
        Some(PolicyChoice::Specific(s)) => {
            if s.versions.is_empty() || s.versions.iter().any(|&v| v < 1) {
                return Err(invalid("version_policy.specific.versions", "list versions of 1 or more"));
            }
            VersionPolicy::Specific(s.versions)
        }
    };
    let model_filename = if c.default_model_filename.is_empty() {
        "model.onnx".to_string()
    } else if c.default_model_filename.contains(['/', '\\']) || c.default_model_filename.starts_with('.') {
        return Err(invalid("default_model_filename", "a file name in the version folder, not a path"));
    } else {
        c.default_model_filename.clone()
    };
    let set = [
        ("instance_group", !c.instance_group.is_empty()),
        ("scheduling (dynamic_batching, sequence_batching, ensemble_scheduling)", c.scheduling_choice.is_some()),
        ("optimization", c.optimization.is_some()),
        ("model_warmup", !c.model_warmup.is_empty()),
        ("parameters", !c.parameters.is_empty()),
        ("metric_tags", !c.metric_tags.is_empty()),
        ("response_cache", c.response_cache.is_some()),
        ("model_transaction_policy", c.model_transaction_policy.is_some()),
    ];
    if !c.batch_input.is_empty() || !c.batch_output.is_empty() {
        return Err(invalid("batch_input", "batch inputs and outputs are not supported"));
    }
    let name = if c.name.is_empty() { folder.to_string() } else { c.name };
    Ok(TritonConfig {
        name,
        max_batch_size,
        inputs,
        outputs,
        versions,
        model_filename,
        ignored: set.into_iter().filter(|(_, on)| *on).map(|(f, _)| f).collect(),
    })
}

fn tensor(
    field: &str,
    name: &str,
    data_type: i32,
    dims: &[i64],
    reshape: Option<&proto::ModelTensorReshape>,
) -> Result<TensorConfig, TritonConfigError> {
    if name.is_empty() {
        return Err(invalid(format!("{field}.name"), "is empty"));
    }
    let datatype = DataType::try_from(data_type)
        .ok()
        .and_then(kserve_datatype)
        .ok_or_else(|| invalid(format!("{field}.data_type"), format!("{data_type} is not a tensor type")))?;
    if dims.is_empty() {
        return Err(invalid(format!("{field}.dims"), "is empty (a scalar is dims: [ 1 ])"));
    }
    let check_dims = |what: &str, d: &[i64]| match d.iter().find(|&&v| v < -1 || v == 0) {
        Some(v) => Err(invalid(format!("{field}.{what}"), format!("{v} is neither -1 nor a size"))),
        None => Ok(()),
    };
    check_dims("dims", dims)?;
    if let Some(r) = reshape {
        check_dims("reshape.shape", &r.shape)?;
    }
    Ok(TensorConfig {
        name: name.to_string(),
        datatype,
        dims: dims.to_vec(),
        reshape: reshape.map(|r| r.shape.clone()),
    })
}

/// A Triton data type as KServe v2 names it (`TYPE_STRING` is `BYTES`).
fn kserve_datatype(t: DataType) -> Option<&'static str> {
    Some(match t {
        DataType::TypeInvalid => return None,
        DataType::TypeBool => "BOOL",
        DataType::TypeUint8 => "UINT8",
        DataType::TypeUint16 => "UINT16",
        DataType::TypeUint32 => "UINT32",
        DataType::TypeUint64 => "UINT64",
        DataType::TypeInt8 => "INT8",
        DataType::TypeInt16 => "INT16",
        DataType::TypeInt32 => "INT32",
        DataType::TypeInt64 => "INT64",
        DataType::TypeFp16 => "FP16",
        DataType::TypeFp32 => "FP32",
        DataType::TypeFp64 => "FP64",
        DataType::TypeString => "BYTES",
        DataType::TypeBf16 => "BF16",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Triton's own example for an ONNX image classifier, with the fields faaswap ignores.
    const RESNET: &str = r#"
# ResNet-50 exported from torchvision at opset 17.
name: "resnet50"
platform: "onnxruntime_onnx"
max_batch_size : 8
input [
  {
    name: "input"
    data_type: TYPE_FP32
    format: FORMAT_NCHW
    dims: [ 3, 224, 224 ]
  }
]
output [
  {
    name: "logits"
    data_type: TYPE_FP32
    dims: [ 1000 ]
    reshape { shape: [ 1, 1000 ] }
  }
]
version_policy: { specific { versions: [ 1, 3 ] } }
instance_group [ { count: 2, kind: KIND_GPU } ]
dynamic_batching { preferred_batch_size: [ 4, 8 ], max_queue_delay_microseconds: 100 }
"#;

    #[test]
    fn a_triton_onnx_config_reads_with_its_shapes_and_ignored_fields() {
        let c = parse(RESNET, "resnet50").unwrap();
        assert_eq!(c.name, "resnet50");
        assert_eq!(c.max_batch_size, 8);
        assert_eq!(
            c.inputs,
            vec![TensorConfig { name: "input".into(), datatype: "FP32", dims: vec![3, 224, 224], reshape: None }]
        );
        assert_eq!(c.outputs[0].reshape, Some(vec![1, 1000]));
        assert_eq!(c.versions, VersionPolicy::Specific(vec![1, 3]));
        assert_eq!(c.model_filename, "model.onnx");
        assert_eq!(
            c.ignored,
            ["instance_group", "scheduling (dynamic_batching, sequence_batching, ensemble_scheduling)"]
        );
    }

    #[test]
    fn defaults_follow_triton() {
        let text = r#"backend: "onnxruntime"
input { name: "x" data_type: TYPE_INT64 dims: -1 }
output { name: "y" data_type: TYPE_STRING dims: [ -1, 2 ] }"#;
        let c = parse(text, "folder").unwrap();
        assert_eq!((c.name.as_str(), c.max_batch_size), ("folder", 0));
        assert_eq!((c.inputs[0].datatype, c.outputs[0].datatype), ("INT64", "BYTES"));
        assert_eq!(c.versions, VersionPolicy::Latest(1));
        assert!(c.ignored.is_empty());
    }

    fn field_of(text: &str) -> String {
        match parse(text, "m") {
            Err(TritonConfigError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn values_faaswap_cannot_honour_name_their_field() {
        let io = "input { name: \"x\" data_type: TYPE_FP32 dims: [ 4 ] } output { name: \"y\" data_type: TYPE_FP32 dims: [ 2 ] }";
        let with = |extra: &str| format!("platform: \"onnxruntime_onnx\" {io} {extra}");
        assert_eq!(field_of(&format!("name: \"other\" {}", with(""))), "name");
        assert_eq!(field_of(&format!("platform: \"tensorrt_plan\" {io}")), "platform");
        assert_eq!(field_of(&format!("backend: \"python\" {io}")), "backend");
        assert_eq!(field_of(io), "platform");
        assert_eq!(field_of(&with("max_batch_size: -2")), "max_batch_size");
        assert_eq!(
            field_of(&with("version_policy { latest { num_versions: 0 } }")),
            "version_policy.latest.num_versions"
        );
        assert_eq!(
            field_of(&with("version_policy { specific { versions: [ 0 ] } }")),
            "version_policy.specific.versions"
        );
        assert_eq!(field_of(&with("default_model_filename: \"../x.onnx\"")), "default_model_filename");
        let bad_dims = "platform: \"onnxruntime_onnx\" input { name: \"x\" data_type: TYPE_FP32 dims: [ 4, 0 ] } output { name: \"y\" data_type: TYPE_FP32 dims: [ 2 ] }";
        assert_eq!(field_of(bad_dims), "input[0].dims");
        let no_dims = "platform: \"onnxruntime_onnx\" input { name: \"x\" data_type: TYPE_FP32 } output { name: \"y\" data_type: TYPE_FP32 dims: [ 2 ] }";
        assert_eq!(field_of(no_dims), "input[0].dims");
        let no_type = "platform: \"onnxruntime_onnx\" input { name: \"x\" dims: [ 1 ] } output { name: \"y\" data_type: TYPE_FP32 dims: [ 2 ] }";
        assert_eq!(field_of(no_type), "input[0].data_type");
        let twice = "platform: \"onnxruntime_onnx\" input [ { name: \"x\" data_type: TYPE_FP32 dims: [ 1 ] }, { name: \"x\" data_type: TYPE_FP32 dims: [ 1 ] } ] output { name: \"y\" data_type: TYPE_FP32 dims: [ 2 ] }";
        assert_eq!(field_of(twice), "input[1].name");
        assert_eq!(
            field_of("platform: \"onnxruntime_onnx\" output { name: \"y\" data_type: TYPE_FP32 dims: [ 2 ] }"),
            "input"
        );
        let shape_tensor = with("").replace("dims: [ 4 ]", "dims: [ 4 ] is_shape_tensor: true");
        assert_eq!(field_of(&shape_tensor), "input[0]");
    }

    #[test]
    fn lists_read_with_or_without_a_colon_and_strings_and_comments_stay() {
        let text = "name: \"a [b\" # input [ comment\nplatform: 'onnxruntime_onnx' input: [ { name: \"x\" data_type: TYPE_FP32 dims: [ -1 ] } ] output [{ name: \"y\" data_type: TYPE_FP32 dims [ 2 ] }]";
        let fixed = colon_before_lists(text);
        assert!(fixed.contains("\"a [b\"") && fixed.contains("# input [ comment"), "{fixed}");
        assert!(
            fixed.contains("output : [{") && fixed.contains("dims : [ 2 ]") && fixed.contains("input: [ {"),
            "{fixed}"
        );
        let c = parse(text, "a [b").unwrap();
        assert_eq!((c.inputs[0].dims.clone(), c.outputs[0].dims.clone()), (vec![-1], vec![2]));
    }

    #[test]
    fn text_that_is_not_a_model_config_is_a_syntax_error() {
        for text in [
            "platform: \"onnxruntime_onnx\" inputs { name: \"x\" }",
            "max_batch_size: \"eight\"",
            "input { name: \"x\" data_type: TYPE_FP99 }",
            "input [ { name: \"x\" ",
            "name: \"a\" name: \"b\"",
            "\u{0}\u{1}binary",
        ] {
            assert!(matches!(parse(text, "m"), Err(TritonConfigError::Syntax(_))), "{text:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_is_read_or_refused_without_a_panic(text in "(\\PC|[\\[\\]{}:#\"' \n])*") {
            let _ = parse(&text, "m");
        }
    }
}
