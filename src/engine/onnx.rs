//! ONNX models (`model.onnx`, opsets 13–21, initializers in the file or in external-data files
//! beside it), read with the types generated from the vendored `proto/onnx/onnx.proto` and
//! checked before anything is built from them: the operators faaswap's importer handles, the
//! opset, and every initializer's bytes (where they are, that they are all there). A model
//! using any other operator is refused naming it and its node.
//!
//! This is the importer's first layer: it reads and checks; lowering a graph into the engine's
//! programs is its next.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use prost::bytes::Bytes;
use prost::Message;

use super::error::{EngineError, Result};

/// The generated types of `onnx.proto` (package `onnx`).
#[allow(clippy::all, missing_docs)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use proto::tensor_proto::{DataLocation, DataType};

/// The opsets of the default domain the importer follows.
pub const OPSETS: std::ops::RangeInclusive<i64> = 13..=21;

/// Largest `model.onnx` read (initializers beyond it go in external-data files).
const MAX_MODEL_BYTES: u64 = 2 << 30;

/// Largest tensor, in elements.
const MAX_ELEMENTS: u64 = 1 << 32;

/// The operators of torchvision's CNNs and ViT exported at opset 17 (issue 19's list, and what
/// the reference fixtures use), with the shape arithmetic a dynamic batch dimension leaves
/// (folded at import for each batch size).
pub const OPERATORS: [&str; 33] = [
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "Div",
    "Dropout",
    "Equal",
    "Erf",
    "Expand",
    "Flatten",
    "Gather",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "Identity",
    "LayerNormalization",
    "MatMul",
    "MaxPool",
    "Mul",
    "Pow",
    "Relu",
    "Reshape",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Transpose",
    "Unsqueeze",
    "Where",
];

/// A graph input or output: its name, element type and dims (`None`: a symbolic dimension
/// such as the batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueSpec {
    pub name: String,
    pub elem_type: &'static str,
    pub dims: Vec<Option<i64>>,
}

/// Where an initializer's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Data {
    /// In the model file (`raw_data`, little-endian).
    Raw(Bytes),
    /// Typed values (`float_data`, `int64_data`, ...), kept as parsed.
    Typed,
    /// `length` bytes at `offset` of a file beside the model.
    External { file: PathBuf, offset: u64, length: u64 },
}

/// A checked initializer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initializer {
    pub name: String,
    pub elem_type: &'static str,
    pub dims: Vec<usize>,
    data: Data,
}

/// A read and checked ONNX model.
#[derive(Debug)]
pub struct OnnxModel {
    pub path: PathBuf,
    pub opset: i64,
    pub inputs: Vec<ValueSpec>,
    pub outputs: Vec<ValueSpec>,
    /// Operators by name, with how many nodes use each.
    pub operators: BTreeMap<String, usize>,
    pub initializers: Vec<Initializer>,
    model: proto::ModelProto,
}

fn bad(path: &Path, reason: impl Into<String>) -> EngineError {
    EngineError::BadOnnx { path: path.to_path_buf(), reason: reason.into() }
}

impl OnnxModel {
    /// Reads `path` and checks it.
    pub fn read(path: &Path) -> Result<Self> {
        let size = std::fs::metadata(path).map_err(|e| EngineError::io(path, e))?.len();
        if size > MAX_MODEL_BYTES {
            return Err(EngineError::FileTooLarge { path: path.to_path_buf(), size, limit: MAX_MODEL_BYTES });
        }
        let bytes = Bytes::from(std::fs::read(path).map_err(|e| EngineError::io(path, e))?);
        let model = proto::ModelProto::decode(bytes).map_err(|e| bad(path, format!("not an ONNX model: {e}")))?;
        let opset = opset(path, &model)?;
        let graph = model.graph.as_ref().ok_or_else(|| bad(path, "the model has no graph"))?;
        let mut operators = BTreeMap::new();
        for (i, node) in graph.node.iter().enumerate() {
            let op = node.op_type();
            let node_name = if node.name().is_empty() { format!("#{i}") } else { node.name().to_string() };
            if !matches!(node.domain(), "" | "ai.onnx") || !OPERATORS.contains(&op) {
                let op = if node.domain().is_empty() { op.to_string() } else { format!("{}::{op}", node.domain()) };
                return Err(EngineError::UnsupportedOperator { path: path.to_path_buf(), op, node: node_name });
            }
            *operators.entry(op.to_string()).or_insert(0) += 1;
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let initializers = graph.initializer.iter().map(|t| initializer(path, dir, t)).collect::<Result<Vec<_>>>()?;
        let weights: std::collections::HashSet<&str> = initializers.iter().map(|t| t.name.as_str()).collect();
        // Inputs that are initializers too (older exporters list them) are weights, not inputs.
        let inputs = graph
            .input
            .iter()
            .filter(|v| !weights.contains(v.name()))
            .map(|v| value(path, v))
            .collect::<Result<Vec<_>>>()?;
        let outputs = graph.output.iter().map(|v| value(path, v)).collect::<Result<Vec<_>>>()?;
        if inputs.is_empty() || outputs.is_empty() {
            return Err(bad(path, "the graph needs at least one input and one output"));
        }
        Ok(Self { path: path.to_path_buf(), opset, inputs, outputs, operators, initializers, model })
    }

    /// The graph's nodes, in the file's (topological) order.
    pub fn nodes(&self) -> &[proto::NodeProto] {
        &self.model.graph.as_ref().expect("checked at read").node
    }

    /// An initializer's values as `f32` (FLOAT tensors only), read from wherever they are.
    pub fn f32_values(&self, t: &Initializer) -> Result<Vec<f32>> {
        if t.elem_type != "FLOAT" {
            return Err(bad(&self.path, format!("initializer {:?} is {}, not FLOAT", t.name, t.elem_type)));
        }
        let from_le = |b: &[u8]| b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        match &t.data {
            Data::Raw(b) => Ok(from_le(b)),
            Data::Typed => {
                let graph = self.model.graph.as_ref().expect("checked at read");
                let proto = graph.initializer.iter().find(|p| p.name() == t.name).expect("listed from the graph");
                Ok(proto.float_data.clone())
            }
            Data::External { file, offset, length } => {
                use std::io::{Read, Seek, SeekFrom};
                let mut f = std::fs::File::open(file).map_err(|e| EngineError::io(file, e))?;
                f.seek(SeekFrom::Start(*offset)).map_err(|e| EngineError::io(file, e))?;
                let mut buf = vec![0u8; *length as usize];
                f.read_exact(&mut buf).map_err(|e| EngineError::io(file, e))?;
                Ok(from_le(&buf))
            }
        }
    }
}

/// The default domain's opset; refused outside `OPSETS`, or when the model imports another
/// domain's operators.
fn opset(path: &Path, model: &proto::ModelProto) -> Result<i64> {
    let mut default = None;
    for o in &model.opset_import {
        match o.domain() {
            "" | "ai.onnx" => default = Some(o.version()),
            other => return Err(bad(path, format!("opset_import: domain {other:?} is not supported"))),
        }
    }
    match default {
        Some(v) if OPSETS.contains(&v) => Ok(v),
        Some(v) => Err(bad(path, format!("opset_import: opset {v} is outside {}–{}", OPSETS.start(), OPSETS.end()))),
        None => Err(bad(path, "opset_import: no opset of the default domain")),
    }
}

fn type_name(t: i32) -> Option<(&'static str, u64)> {
    Some(match DataType::try_from(t).ok()? {
        DataType::Float => ("FLOAT", 4),
        DataType::Float16 => ("FLOAT16", 2),
        DataType::Bfloat16 => ("BFLOAT16", 2),
        DataType::Double => ("DOUBLE", 8),
        DataType::Int64 => ("INT64", 8),
        DataType::Int32 => ("INT32", 4),
        DataType::Int8 => ("INT8", 1),
        DataType::Uint8 => ("UINT8", 1),
        DataType::Bool => ("BOOL", 1),
        _ => return None,
    })
}

fn value(path: &Path, v: &proto::ValueInfoProto) -> Result<ValueSpec> {
    use proto::tensor_shape_proto::dimension::Value as Dim;
    use proto::type_proto::Value as Type;
    let name = v.name().to_string();
    let Some(Type::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(bad(path, format!("graph value {name:?} is not a tensor")));
    };
    let elem_type = type_name(t.elem_type()).map(|(n, _)| n).ok_or_else(|| {
        bad(path, format!("graph value {name:?} has element type {}, which faaswap does not take", t.elem_type()))
    })?;
    let dims = t
        .shape
        .as_ref()
        .map(|s| s.dim.iter().map(|d| if let Some(Dim::DimValue(v)) = d.value { Some(v) } else { None }).collect())
        .unwrap_or_default();
    Ok(ValueSpec { name, elem_type, dims })
}

fn initializer(path: &Path, dir: &Path, t: &proto::TensorProto) -> Result<Initializer> {
    let name = t.name().to_string();
    let what = |reason: String| bad(path, format!("initializer {name:?}: {reason}"));
    let (elem_type, width) =
        type_name(t.data_type()).ok_or_else(|| what(format!("element type {} is not supported", t.data_type())))?;
    let mut elements: u64 = 1;
    let mut dims = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        let d = u64::try_from(d).map_err(|_| what(format!("dims {:?} has a negative size", t.dims)))?;
        elements =
            elements.checked_mul(d).filter(|&n| n <= MAX_ELEMENTS).ok_or_else(|| what("too many elements".into()))?;
        dims.push(d as usize);
    }
    let bytes = elements * width;
    let external = t.data_location() == DataLocation::External;
    let typed = match elem_type {
        "FLOAT" => t.float_data.len(),
        "INT64" => t.int64_data.len(),
        "DOUBLE" => t.double_data.len(),
        _ => t.int32_data.len(),
    };
    let data = if external {
        let entry = |key: &str| t.external_data.iter().find(|e| e.key() == key).map(|e| e.value());
        let location = entry("location").ok_or_else(|| what("external data without a location".into()))?;
        let relative = Path::new(location);
        if relative.as_os_str().is_empty() || !relative.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(what(format!("external data location {location:?} is not a file beside the model")));
        }
        let number = |key: &str| -> Result<u64> {
            entry(key)
                .map_or(Ok(0), |v| v.parse().map_err(|_| what(format!("external data {key} {v:?} is not a number"))))
        };
        let (offset, length) = (number("offset")?, entry("length").map_or(Ok(bytes), |_| number("length"))?);
        if length != bytes {
            return Err(what(format!("external data of {length} bytes for {bytes} bytes of values")));
        }
        let file = dir.join(relative);
        let size = std::fs::metadata(&file).map_err(|e| EngineError::io(&file, e))?.len();
        if offset.checked_add(length).is_none_or(|end| end > size) {
            return Err(what(format!("external data {offset}+{length} runs past {location:?} ({size} bytes)")));
        }
        Data::External { file, offset, length }
    } else if let Some(raw) = &t.raw_data {
        if raw.len() as u64 != bytes {
            return Err(what(format!("raw_data holds {} bytes for {bytes} bytes of values", raw.len())));
        }
        Data::Raw(raw.clone())
    } else if typed as u64 == elements {
        Data::Typed
    } else {
        return Err(what(format!("{typed} values for {elements} elements")));
    };
    Ok(Initializer { name, elem_type, dims, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: [&str; 5] =
        ["tiny_resnet_onnx", "tiny_densenet_onnx", "tiny_inception_onnx", "tiny_efficientnet_onnx", "tiny_vit_onnx"];

    fn read_json(p: &Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    }

    #[test]
    fn every_fixture_reads_with_its_operators_and_shapes() {
        for name in FIXTURES {
            let dir = crate::engine::fixture(name);
            let reference = read_json(&dir.join("reference.json"));
            let m = OnnxModel::read(&dir.join("model.onnx")).unwrap();
            assert_eq!(m.opset, 17, "{name}");
            let ops: Vec<&str> = m.operators.keys().map(String::as_str).collect();
            let mut want: Vec<&str> =
                reference["operators"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
            want.sort();
            assert_eq!(ops, want, "{name}");
            assert_eq!((m.inputs.len(), m.outputs.len()), (1, 1), "{name}");
            assert_eq!((m.inputs[0].name.as_str(), m.inputs[0].elem_type), ("input", "FLOAT"));
            assert_eq!(m.inputs[0].dims[0], None, "{name}: a dynamic batch");
            assert_eq!(&m.inputs[0].dims[1..2], &[Some(3)]);
            assert_eq!(m.outputs[0].name, "logits");
            for t in m.initializers.iter().filter(|t| t.elem_type == "FLOAT") {
                let values = m.f32_values(t).unwrap();
                assert_eq!(values.len(), t.dims.iter().product::<usize>(), "{name}: {}", t.name);
                assert!(values.iter().all(|v| v.is_finite()));
            }
        }
    }

    fn fixture_model() -> proto::ModelProto {
        let path = crate::engine::fixture("tiny_resnet_onnx").join("model.onnx");
        proto::ModelProto::decode(Bytes::from(std::fs::read(path).unwrap())).unwrap()
    }

    fn write(dir: &Path, model: &proto::ModelProto) -> PathBuf {
        let path = dir.join("model.onnx");
        std::fs::write(&path, model.encode_to_vec()).unwrap();
        path
    }

    #[test]
    fn an_operator_outside_the_list_is_refused_naming_it_and_its_node() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = fixture_model();
        let node = &mut model.graph.as_mut().unwrap().node[3];
        node.op_type = Some("NonMaxSuppression".into());
        let node_name = node.name().to_string();
        let err = OnnxModel::read(&write(dir.path(), &model)).unwrap_err();
        assert!(
            matches!(&err, EngineError::UnsupportedOperator { op, node, .. } if op == "NonMaxSuppression" && *node == node_name),
            "{err}"
        );
        model.graph.as_mut().unwrap().node[3].domain = Some("com.microsoft".into());
        let err = OnnxModel::read(&write(dir.path(), &model)).unwrap_err();
        assert!(err.to_string().contains("com.microsoft::NonMaxSuppression"), "{err}");
    }

    #[test]
    fn opsets_outside_the_range_and_broken_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut model = fixture_model();
        model.opset_import[0].version = Some(12);
        let err = OnnxModel::read(&write(dir.path(), &model)).unwrap_err();
        assert!(err.to_string().contains("opset 12"), "{err}");
        let bytes = fixture_model().encode_to_vec();
        let path = dir.path().join("model.onnx");
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(matches!(OnnxModel::read(&path), Err(EngineError::BadOnnx { .. })));
        std::fs::write(&path, b"not protobuf at all \xff\xff\xff").unwrap();
        assert!(matches!(OnnxModel::read(&path), Err(EngineError::BadOnnx { .. })));
        let mut short = fixture_model();
        let t = &mut short.graph.as_mut().unwrap().initializer[0];
        let raw = t.raw_data.take().unwrap();
        t.raw_data = Some(raw.slice(..raw.len() - 4));
        let err = OnnxModel::read(&write(dir.path(), &short)).unwrap_err();
        assert!(err.to_string().contains("raw_data holds"), "{err}");
    }

    #[test]
    fn external_data_is_read_from_beside_the_model_and_only_from_there() {
        let dir = tempfile::tempdir().unwrap();
        let original = OnnxModel::read(&crate::engine::fixture("tiny_resnet_onnx").join("model.onnx")).unwrap();
        let first = original.initializers[0].clone();
        let want = original.f32_values(&first).unwrap();
        let mut model = fixture_model();
        let t = &mut model.graph.as_mut().unwrap().initializer[0];
        let raw = t.raw_data.take().unwrap();
        let mut file = vec![7u8; 16];
        file.extend_from_slice(&raw);
        std::fs::write(dir.path().join("weights.bin"), &file).unwrap();
        t.data_location = Some(DataLocation::External as i32);
        let entry = |k: &str, v: String| proto::StringStringEntryProto { key: Some(k.into()), value: Some(v) };
        t.external_data = vec![
            entry("location", "weights.bin".into()),
            entry("offset", "16".into()),
            entry("length", raw.len().to_string()),
        ];
        let m = OnnxModel::read(&write(dir.path(), &model)).unwrap();
        assert_eq!(m.f32_values(&m.initializers[0]).unwrap(), want);
        for (location, offset, needle) in [
            ("../weights.bin", "16", "not a file beside the model"),
            ("/etc/passwd", "16", "not a file beside the model"),
            ("weights.bin", "32", "runs past"),
            ("weights.bin", "x", "not a number"),
        ] {
            let t = &mut model.graph.as_mut().unwrap().initializer[0];
            t.external_data[0] = entry("location", location.into());
            t.external_data[1] = entry("offset", offset.into());
            let err = OnnxModel::read(&write(dir.path(), &model)).unwrap_err();
            assert!(err.to_string().contains(needle), "{location} {offset}: {err}");
        }
    }
}
