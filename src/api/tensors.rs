//! KServe v2 inference bodies: JSON tensors and the binary tensor data extension that
//! Triton's client uses by default (`Inference-Header-Content-Length`, `binary_data_size`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::engine::TokenBatch;
use crate::request::{Completed, Inputs};

/// A KServe v2 inference request, as the API description shows it. Bodies are parsed by
/// `RequestSeed`, which flattens each input's `data` as it reads it.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // the schema's shape; decoding goes through the seeds below
pub(crate) struct InferRequestBody {
    id: Option<String>,
    inputs: Vec<InferInput>,
    outputs: Vec<InferOutput>,
    #[schema(value_type = Object)]
    parameters: Map<String, Value>,
}

#[derive(Debug, Default, utoipa::ToSchema)]
pub(crate) struct InferInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[schema(value_type = Option<Object>)]
    data: Option<Flat>,
    #[schema(value_type = Object)]
    parameters: Map<String, Value>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(crate) struct InferOutput {
    name: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    parameters: Map<String, Value>,
}

/// An input's `data`: the values of its nested arrays in order, one kind of value, read
/// straight from the body (no JSON tree) and never more of them than its shape holds (or the
/// element limit, before the shape is seen).
#[derive(Debug, Default)]
pub(crate) enum Flat {
    #[default]
    Empty,
    Ints(Vec<i64>),
    Floats(Vec<f64>),
    Strings(Vec<String>),
    Bools(Vec<bool>),
}

impl Flat {
    fn len(&self) -> usize {
        match self {
            Flat::Empty => 0,
            Flat::Ints(v) => v.len(),
            Flat::Floats(v) => v.len(),
            Flat::Strings(v) => v.len(),
            Flat::Bools(v) => v.len(),
        }
    }
}

mod seeds {
    //! `serde` seeds that carry the element limit down to each input's `data`.

    use std::fmt;

    use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Value};

    use super::{elements, Flat, InferInput, InferOutput};

    /// Keys of the request object, matched without allocating.
    #[derive(serde::Deserialize)]
    #[serde(field_identifier, rename_all = "lowercase")]
    enum RequestKey {
        Id,
        Inputs,
        Outputs,
        Parameters,
        #[serde(other)]
        Other,
    }

    /// Keys of an input object.
    #[derive(serde::Deserialize)]
    #[serde(field_identifier, rename_all = "lowercase")]
    enum InputKey {
        Name,
        Shape,
        Datatype,
        Parameters,
        Data,
        #[serde(other)]
        Other,
    }

    /// The whole request.
    pub struct RequestSeed {
        pub max_elements: usize,
    }

    pub struct Request {
        pub id: Option<String>,
        pub inputs: Vec<InferInput>,
        pub outputs: Vec<InferOutput>,
        pub parameters: Map<String, Value>,
    }

    impl<'de> DeserializeSeed<'de> for RequestSeed {
        type Value = Request;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Request, D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for RequestSeed {
        type Value = Request;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an inference request object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Request, A::Error> {
            let mut r = Request { id: None, inputs: Vec::new(), outputs: Vec::new(), parameters: Map::new() };
            while let Some(key) = map.next_key::<RequestKey>()? {
                match key {
                    RequestKey::Id => r.id = map.next_value()?,
                    RequestKey::Inputs => {
                        r.inputs = map.next_value_seed(InputsSeed { max_elements: self.max_elements })?
                    }
                    RequestKey::Outputs => r.outputs = map.next_value()?,
                    RequestKey::Parameters => r.parameters = map.next_value()?,
                    RequestKey::Other => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(r)
        }
    }

    struct InputsSeed {
        max_elements: usize,
    }

    impl<'de> DeserializeSeed<'de> for InputsSeed {
        type Value = Vec<InferInput>;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for InputsSeed {
        type Value = Vec<InferInput>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of inputs")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(input) = seq.next_element_seed(InputSeed { max_elements: self.max_elements })? {
                out.push(input);
            }
            Ok(out)
        }
    }

    struct InputSeed {
        max_elements: usize,
    }

    impl<'de> DeserializeSeed<'de> for InputSeed {
        type Value = InferInput;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<InferInput, D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for InputSeed {
        type Value = InferInput;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an input object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InferInput, A::Error> {
            let mut input = InferInput::default();
            let (mut name, mut shape, mut datatype) = (false, false, false);
            while let Some(key) = map.next_key::<InputKey>()? {
                match key {
                    InputKey::Name => (input.name, name) = (map.next_value()?, true),
                    InputKey::Shape => (input.shape, shape) = (map.next_value()?, true),
                    InputKey::Datatype => (input.datatype, datatype) = (map.next_value()?, true),
                    InputKey::Parameters => input.parameters = map.next_value()?,
                    InputKey::Data => {
                        // A shape already read bounds the values exactly; otherwise the limit.
                        let limit = if shape {
                            elements(&input.shape, self.max_elements).map_err(de::Error::custom)?
                        } else {
                            self.max_elements
                        };
                        let mut flat = Flat::Empty;
                        map.next_value_seed(FlatSeed { out: &mut flat, limit })?;
                        input.data = Some(flat);
                    }
                    InputKey::Other => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            for (seen, field) in [(name, "name"), (shape, "shape"), (datatype, "datatype")] {
                if !seen {
                    return Err(de::Error::missing_field(field));
                }
            }
            Ok(input)
        }
    }

    /// Appends a value, or a nested array's values, to `out`.
    struct FlatSeed<'a> {
        out: &'a mut Flat,
        limit: usize,
    }

    impl FlatSeed<'_> {
        fn push<E: de::Error>(self, v: Scalar) -> Result<(), E> {
            if self.out.len() >= self.limit {
                return Err(E::custom(format!("more values than the {} the shape holds", self.limit)));
            }
            match (&mut *self.out, v) {
                (out @ Flat::Empty, v) => {
                    *out = match v {
                        Scalar::Int(x) => Flat::Ints(vec![x]),
                        Scalar::Float(x) => Flat::Floats(vec![x]),
                        Scalar::Str(x) => Flat::Strings(vec![x]),
                        Scalar::Bool(x) => Flat::Bools(vec![x]),
                    }
                }
                (Flat::Ints(v), Scalar::Int(x)) => v.push(x),
                (Flat::Floats(v), Scalar::Float(x)) => v.push(x),
                (Flat::Floats(v), Scalar::Int(x)) => v.push(x as f64),
                (out @ Flat::Ints(_), Scalar::Float(x)) => {
                    let Flat::Ints(ints) = std::mem::take(out) else { unreachable!() };
                    let mut floats: Vec<f64> = ints.into_iter().map(|i| i as f64).collect();
                    floats.push(x);
                    *out = Flat::Floats(floats);
                }
                (Flat::Strings(v), Scalar::Str(x)) => v.push(x),
                (Flat::Bools(v), Scalar::Bool(x)) => v.push(x),
                _ => return Err(E::custom("data mixes values of different types")),
            }
            Ok(())
        }
    }

    enum Scalar {
        Int(i64),
        Float(f64),
        Str(String),
        Bool(bool),
    }

    impl<'de> DeserializeSeed<'de> for FlatSeed<'_> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for FlatSeed<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("numbers, strings or booleans, in nested arrays")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let limit = self.limit;
            while seq.next_element_seed(FlatSeed { out: &mut *self.out, limit })?.is_some() {}
            Ok(())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
            self.push(Scalar::Int(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
            match i64::try_from(v) {
                Ok(x) => self.push(Scalar::Int(x)),
                Err(_) => self.push(Scalar::Float(v as f64)),
            }
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
            self.push(Scalar::Float(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
            self.push(Scalar::Str(v.to_string()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<(), E> {
            self.push(Scalar::Str(v))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
            self.push(Scalar::Bool(v))
        }
    }
}

/// A decoded inference request.
pub struct InferRequest {
    pub id: Option<String>,
    pub inputs: Inputs,
    pub outputs: Vec<String>,
    /// Answer with binary output tensors.
    pub binary_output: bool,
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

/// Decodes a request body. `header_len` is the `Inference-Header-Content-Length` header: the
/// JSON part's length when binary tensors follow it.
pub fn decode(body: &[u8], header_len: Option<usize>, max_elements: usize) -> Result<InferRequest, ApiError> {
    let json_len = header_len.unwrap_or(body.len());
    if json_len > body.len() {
        return Err(bad(format!("Inference-Header-Content-Length {json_len} exceeds the body's {} bytes", body.len())));
    }
    let (head, mut binary) = body.split_at(json_len);
    let mut de = serde_json::Deserializer::from_slice(head);
    let req = serde::de::DeserializeSeed::deserialize(seeds::RequestSeed { max_elements }, &mut de)
        .and_then(|r| de.end().map(|()| r))
        .map_err(|e| bad(format!("invalid inference request JSON: {e}")))?;
    let mut seen: Vec<&str> = Vec::with_capacity(req.inputs.len());
    for input in &req.inputs {
        if seen.contains(&input.name.as_str()) {
            return Err(bad(format!("input {:?} is given twice", input.name)));
        }
        seen.push(&input.name);
    }
    let mut texts = None;
    let mut text_pairs: Option<Vec<String>> = None;
    let mut ids = None;
    let mut mask = None;
    let mut types = None;
    let mut ids_shape = (0, 0);
    let seeds::Request { id, inputs: given, outputs, parameters } = req;
    for mut input in given {
        let n = elements(&input.shape, max_elements).map_err(|e| bad(format!("input {:?}: {e}", input.name)))?;
        let raw = match input.parameters.get("binary_data_size") {
            Some(size) => {
                let size = size.as_u64().ok_or_else(|| bad("binary_data_size must be an integer"))? as usize;
                if size > binary.len() {
                    return Err(bad(format!("input {:?}: binary data is shorter than binary_data_size", input.name)));
                }
                let (chunk, rest) = binary.split_at(size);
                binary = rest;
                Raw::Binary(chunk)
            }
            None => Raw::Json(input.data.take().ok_or_else(|| bad(format!("input {:?} has no data", input.name)))?),
        };
        match input.name.as_str() {
            "text" => {
                expect_type(&input, &["BYTES"])?;
                texts = Some(raw.strings(n).map_err(|e| bad(format!("input \"text\": {e}")))?);
            }
            "text_pair" => {
                expect_type(&input, &["BYTES"])?;
                text_pairs = Some(raw.strings(n).map_err(|e| bad(format!("input \"text_pair\": {e}")))?);
            }
            "input_ids" | "attention_mask" | "token_type_ids" => {
                expect_type(&input, &["INT64", "INT32"])?;
                let shape = match input.shape.as_slice() {
                    [s] => (1, *s as usize),
                    [b, s] => (*b as usize, *s as usize),
                    _ => return Err(bad(format!("input {:?} must have shape [batch, seq]", input.name))),
                };
                let values = raw.ints(n, &input.datatype).map_err(|e| bad(format!("input {:?}: {e}", input.name)))?;
                match input.name.as_str() {
                    "input_ids" => {
                        ids_shape = shape;
                        ids = Some(values);
                    }
                    "attention_mask" => mask = Some((shape, values)),
                    _ => types = Some((shape, values)),
                }
            }
            other => {
                return Err(bad(format!(
                    "unknown input {other:?}: this model takes \"input_ids\" (with optional \"attention_mask\", \"token_type_ids\") or \"text\" (with optional \"text_pair\")"
                )))
            }
        }
    }
    if !binary.is_empty() {
        return Err(bad(format!("{} bytes of binary data follow the last input", binary.len())));
    }
    if text_pairs.is_some() && texts.is_none() {
        return Err(bad("\"text_pair\" needs a \"text\" input: it is the second text of each pair"));
    }
    let inputs = match (texts, ids) {
        (Some(_), Some(_)) => return Err(bad("give either \"text\" or \"input_ids\", not both")),
        (Some(t), None) => match text_pairs {
            None => Inputs::Texts(t),
            Some(p) if p.len() == t.len() => Inputs::TextPairs(t.into_iter().zip(p).collect()),
            Some(p) => {
                return Err(bad(format!(
                    "\"text\" has {} values and \"text_pair\" {}: give one text_pair per text",
                    t.len(),
                    p.len()
                )))
            }
        },
        (None, Some(ids)) => {
            let to_u32 = |what: &str, v: Vec<i64>| -> Result<Vec<u32>, ApiError> {
                v.into_iter()
                    .map(|x| u32::try_from(x).map_err(|_| bad(format!("{what} value {x} is out of range"))))
                    .collect()
            };
            let check = |what: &str, shape: (usize, usize)| {
                if shape == ids_shape {
                    Ok(())
                } else {
                    Err(bad(format!("{what} shape {shape:?} differs from input_ids {ids_shape:?}")))
                }
            };
            let mask = match mask {
                Some((shape, v)) => {
                    check("attention_mask", shape)?;
                    Some(v.into_iter().map(|x| x != 0).collect())
                }
                None => None,
            };
            let types = match types {
                Some((shape, v)) => {
                    check("token_type_ids", shape)?;
                    Some(to_u32("token_type_ids", v)?)
                }
                None => None,
            };
            let batch = TokenBatch::from_tensors(ids_shape.0, ids_shape.1, to_u32("input_ids", ids)?, mask, types)
                .map_err(|e| bad(e.to_string()))?;
            Inputs::Tokens(batch)
        }
        (None, None) => return Err(bad("the request has no \"input_ids\" or \"text\" input")),
    };
    let wants_binary = |p: &Map<String, Value>, key: &str| p.get(key).and_then(Value::as_bool).unwrap_or(false);
    let binary_output = wants_binary(&parameters, "binary_data_output")
        || outputs.iter().any(|o| wants_binary(&o.parameters, "binary_data"));
    let mut outputs: Vec<String> = outputs.into_iter().map(|o| o.name).collect();
    // `parameters.logits: "last"` asks a decoder for its last position's logits only: the
    // `logits` output (named, or the default) becomes `last_logits`.
    match parameters.get("logits") {
        None => {}
        Some(Value::String(s)) if s == "all" => {}
        Some(Value::String(s)) if s == "last" => {
            if outputs.is_empty() {
                outputs.push("logits".into());
            }
            for o in outputs.iter_mut().filter(|o| *o == "logits") {
                *o = "last_logits".into();
            }
        }
        Some(other) => return Err(bad(format!("parameters.logits {other} is not one of \"all\", \"last\""))),
    }
    Ok(InferRequest { id, inputs, outputs, binary_output })
}

fn expect_type(input: &InferInput, allowed: &[&str]) -> Result<(), ApiError> {
    if allowed.contains(&input.datatype.as_str()) {
        Ok(())
    } else {
        Err(bad(format!("input {:?} has datatype {}, expected {}", input.name, input.datatype, allowed.join(" or "))))
    }
}

fn elements(shape: &[i64], max: usize) -> Result<usize, String> {
    let mut n: usize = 1;
    for &d in shape {
        let d = usize::try_from(d).map_err(|_| format!("shape {shape:?} has a negative dimension"))?;
        n = n.checked_mul(d).filter(|&n| n <= max).ok_or_else(|| format!("shape {shape:?} exceeds {max} elements"))?;
    }
    Ok(n)
}

enum Raw<'a> {
    Json(Flat),
    Binary(&'a [u8]),
}

impl Raw<'_> {
    fn ints(self, n: usize, datatype: &str) -> Result<Vec<i64>, String> {
        let v: Vec<i64> = match self {
            Raw::Json(Flat::Ints(v)) => v,
            Raw::Json(Flat::Empty) => Vec::new(),
            Raw::Json(_) => return Err("values must be integers".into()),
            Raw::Binary(bytes) => {
                let width = if datatype == "INT64" { 8 } else { 4 };
                if bytes.len() != n * width {
                    return Err(format!("binary_data_size {} is not {n} elements of {width} bytes", bytes.len()));
                }
                match width {
                    8 => bytes.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect(),
                    _ => bytes
                        .chunks_exact(4)
                        .map(|c| i32::from_le_bytes(c.try_into().expect("4 bytes")) as i64)
                        .collect(),
                }
            }
        };
        if v.len() != n {
            return Err(format!("{} values for a shape of {n} elements", v.len()));
        }
        Ok(v)
    }

    fn strings(self, n: usize) -> Result<Vec<String>, String> {
        let v: Vec<String> = match self {
            Raw::Json(Flat::Strings(v)) => v,
            Raw::Json(Flat::Empty) => Vec::new(),
            Raw::Json(_) => return Err("values must be strings".into()),
            Raw::Binary(mut bytes) => {
                let mut out = Vec::new();
                while !bytes.is_empty() {
                    if bytes.len() < 4 {
                        return Err("truncated BYTES element".into());
                    }
                    let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
                    let s = bytes.get(4..4 + len).ok_or("truncated BYTES element")?;
                    out.push(String::from_utf8(s.to_vec()).map_err(|_| "text is not UTF-8")?);
                    bytes = &bytes[4 + len..];
                }
                out
            }
        };
        if v.len() != n {
            return Err(format!("{} values for a shape of {n} elements", v.len()));
        }
        Ok(v)
    }
}

/// The response's JSON part, written by serde straight from the tensors: no `Value` tree, and
/// FP32 data as `f32` (shortest round-trip form: about half the bytes of the same numbers
/// widened to `f64`, and several times faster to write for large outputs).
#[derive(Serialize)]
struct Response<'a> {
    model_name: &'a str,
    model_version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    outputs: Vec<ResponseTensor<'a>>,
    parameters: ResponseParameters<'a>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    simulated: bool,
}

#[derive(Serialize)]
struct ResponseTensor<'a> {
    name: &'a str,
    datatype: &'a str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a [f32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

#[derive(Serialize)]
struct ResponseParameters<'a> {
    device: &'a str,
    simulated: bool,
    queue_ms: f64,
    swap_ms: f64,
    execute_ms: f64,
    total_ms: f64,
    swapped_bytes: u64,
    swap_source: Option<&'a str>,
}

/// The response: JSON, or JSON header + binary tensors. Returns (body, JSON header length when
/// binary).
pub fn encode(model: &str, id: Option<String>, done: Completed, binary: bool) -> (Vec<u8>, Option<usize>) {
    let outputs = done
        .outputs
        .iter()
        .map(|t| ResponseTensor {
            name: &t.name,
            datatype: &t.datatype,
            shape: &t.shape,
            data: (!binary).then_some(t.data.as_slice()),
            parameters: binary.then(|| BinarySize { binary_data_size: t.data.len() * 4 }),
        })
        .collect();
    let resp = Response {
        model_name: model,
        model_version: "1",
        id,
        outputs,
        parameters: ResponseParameters {
            device: &done.device,
            simulated: done.simulated,
            queue_ms: done.queue_ms,
            swap_ms: done.swap_ms,
            execute_ms: done.exec_ms,
            total_ms: done.total_ms,
            swapped_bytes: done.swapped_bytes,
            swap_source: done.swap_source.as_deref(),
        },
        simulated: done.simulated,
    };
    let mut body = serde_json::to_vec(&resp).expect("responses serialize");
    if binary {
        let header = body.len();
        body.reserve(done.outputs.iter().map(|t| t.data.len() * 4).sum());
        for t in &done.outputs {
            body.extend(t.data.iter().flat_map(|x| x.to_le_bytes()));
        }
        (body, Some(header))
    } else {
        (body, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::OutputTensor;

    fn completed(data: Vec<f32>, simulated: bool) -> Completed {
        Completed {
            outputs: vec![OutputTensor {
                name: "logits".into(),
                datatype: "FP32".into(),
                shape: vec![1, data.len()],
                data,
            }],
            device: "cpu:0".into(),
            simulated,
            swap_source: Some("host".into()),
            swapped_bytes: 7,
            queue_ms: 0.5,
            swap_ms: 1.5,
            exec_ms: 2.5,
            total_ms: 3.5,
            generated: None,
        }
    }

    #[test]
    fn responses_carry_every_fp32_value_exactly_as_json_or_binary() {
        let data = vec![0.1f32, -3.4028235e38, 1.0e-45, 123.456, -0.0, 7.0];
        let (body, header) = encode("m", Some("req-1".into()), completed(data.clone(), false), false);
        assert_eq!(header, None);
        let v: Value = serde_json::from_slice(&body).unwrap();
        let got: Vec<f32> =
            v["outputs"][0]["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        assert_eq!(
            got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            data.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(
            (v["model_name"].as_str(), v["id"].as_str(), v["model_version"].as_str()),
            (Some("m"), Some("req-1"), Some("1"))
        );
        assert_eq!(v["outputs"][0]["shape"], serde_json::json!([1, 6]));
        assert_eq!(v["parameters"]["swap_source"], "host");
        assert_eq!(v["parameters"]["execute_ms"], 2.5);
        assert!(v.get("simulated").is_none() && v["parameters"]["simulated"] == false);
        // f32's shortest form: 0.1 is written as 0.1, not as the f64 widening 0.10000000149011612.
        assert!(String::from_utf8_lossy(&body).contains("[0.1,"));

        let (body, header) = encode("m", None, completed(data.clone(), true), true);
        let header = header.unwrap();
        let v: Value = serde_json::from_slice(&body[..header]).unwrap();
        assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 24);
        assert!(v["outputs"][0].get("data").is_none() && v.get("id").is_none());
        assert_eq!(v["simulated"], true);
        let blob: Vec<f32> = body[header..].chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        assert_eq!(
            blob.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            data.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn decodes_json_and_binary_ids() {
        let body = br#"{"inputs":[{"name":"input_ids","shape":[2,2],"datatype":"INT64","data":[[1,2],[3,4]]},
            {"name":"attention_mask","shape":[2,2],"datatype":"INT64","data":[1,1,1,0]}]}"#;
        let r = decode(body, None, 1000).unwrap();
        let Inputs::Tokens(b) = r.inputs else { panic!("tokens expected") };
        assert_eq!(b.ids, vec![1, 2, 3, 4]);
        assert_eq!(b.mask, vec![true, true, true, false]);
        assert!(!r.binary_output);

        let head = br#"{"inputs":[{"name":"input_ids","shape":[1,3],"datatype":"INT64","parameters":{"binary_data_size":24}}],"outputs":[{"name":"logits","parameters":{"binary_data":true}}]}"#;
        let mut body = head.to_vec();
        for x in [7i64, 8, 9] {
            body.extend(x.to_le_bytes());
        }
        let r = decode(&body, Some(head.len()), 1000).unwrap();
        let Inputs::Tokens(b) = r.inputs else { panic!("tokens expected") };
        assert_eq!(b.ids, vec![7, 8, 9]);
        assert!(r.binary_output);
        assert_eq!(r.outputs, vec!["logits"]);
    }

    #[test]
    fn decodes_binary_text() {
        let head =
            br#"{"inputs":[{"name":"text","shape":[2],"datatype":"BYTES","parameters":{"binary_data_size":17}}]}"#;
        let mut body = head.to_vec();
        for s in ["hello", "héh"] {
            body.extend((s.len() as u32).to_le_bytes());
            body.extend(s.as_bytes());
        }
        let r = decode(&body, Some(head.len()), 1000).unwrap();
        let Inputs::Texts(t) = r.inputs else { panic!("texts expected") };
        assert_eq!(t, vec!["hello", "héh"]);
    }

    #[test]
    fn binary_sizes_must_match_shapes_exactly() {
        let head = br#"{"inputs":[{"name":"input_ids","shape":[1,3],"datatype":"INT64","parameters":{"binary_data_size":20}}]}"#;
        let mut body = head.to_vec();
        body.extend([0u8; 20]);
        assert!(decode(&body, Some(head.len()), 1000).is_err(), "20 bytes are not 3 INT64");
        let head = br#"{"inputs":[{"name":"input_ids","shape":[1,3],"datatype":"INT64","parameters":{"binary_data_size":24}}]}"#;
        let mut body = head.to_vec();
        body.extend([0u8; 30]);
        assert!(decode(&body, Some(head.len()), 1000).is_err(), "6 bytes left over");
    }

    #[test]
    fn data_is_bounded_by_the_shape_as_it_is_read() {
        // Shape first (as clients send it): the 3rd value of a 2-element shape stops the parse.
        let body = br#"{"inputs":[{"name":"input_ids","shape":[1,2],"datatype":"INT64","data":[1,2,3,4,5,6,7,8]}]}"#;
        let err = decode(body, None, 1 << 20).err().unwrap().to_string();
        assert!(err.contains("more values than the 2 the shape holds"), "{err}");
        // Data before the shape: bounded by the element limit, then checked against the shape.
        let body = br#"{"inputs":[{"data":[[1,2],[3,4]],"name":"input_ids","datatype":"INT64","shape":[2,2]}]}"#;
        let Inputs::Tokens(b) = decode(body, None, 1000).unwrap().inputs else { panic!("tokens expected") };
        assert_eq!(b.ids, vec![1, 2, 3, 4]);
        let body = br#"{"inputs":[{"data":[1,2,3,4,5],"name":"input_ids","datatype":"INT64","shape":[1,5]}]}"#;
        assert!(decode(body, None, 4).is_err(), "5 values past a limit of 4");
        for (body, what) in [
            (&br#"{"inputs":[{"name":"input_ids","shape":[1,2],"datatype":"INT64","data":[1,"a"]}]}"#[..], "mixes"),
            (
                br#"{"inputs":[{"name":"input_ids","shape":[1,2],"datatype":"INT64","data":[1,{"a":1}]}]}"#,
                "invalid type",
            ),
            (br#"{"inputs":[{"name":"input_ids","shape":[1,2],"datatype":"INT64","data":[1,2.5]}]}"#, "integers"),
            (br#"{"inputs":[{"name":"input_ids","datatype":"INT64","data":[1,2]}]}"#, "missing field `shape`"),
            (br#"{"inputs":[{"name":"input_ids","shape":[1,1],"datatype":"INT64","data":[1]}]} trailing"#, "trailing"),
        ] {
            let err = decode(body, None, 1000).err().unwrap().to_string();
            assert!(err.contains(what), "{what}: {err}");
        }
    }

    #[test]
    fn an_input_given_twice_is_refused() {
        let body = br#"{"inputs":[{"name":"input_ids","shape":[1,1],"datatype":"INT64","data":[1]},
            {"name":"attention_mask","shape":[1,1],"datatype":"INT64","data":[1]},
            {"name":"input_ids","shape":[1,1],"datatype":"INT64","data":[2]}]}"#;
        let err = decode(body, None, 1000).err().unwrap().to_string();
        assert!(err.contains("\"input_ids\" is given twice"), "{err}");
    }

    #[test]
    fn rejects_malformed_requests() {
        for body in [
            &br#"{"inputs":[]}"#[..],
            br#"{"inputs":[{"name":"pixels","shape":[1],"datatype":"FP32","data":[1]}]}"#,
            br#"{"inputs":[{"name":"input_ids","shape":[1,2],"datatype":"INT64","data":[1]}]}"#,
            br#"{"inputs":[{"name":"input_ids","shape":[1,2],"datatype":"FP32","data":[1,2]}]}"#,
            br#"{"inputs":[{"name":"input_ids","shape":[1,-2],"datatype":"INT64","data":[1,2]}]}"#,
            br#"{"inputs":[{"name":"input_ids","shape":[1,2],"datatype":"INT64","data":[1,-2]}]}"#,
            br#"{"inputs":[{"name":"input_ids","shape":[100000,100000],"datatype":"INT64","data":[1]}]}"#,
            br#"not json"#,
        ] {
            assert!(decode(body, None, 1 << 20).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }
}

/// Hostile bodies: arbitrary bytes, and structurally plausible requests with wild shapes,
/// datatypes and data. Decoding never panics, and what it accepts stays within the element
/// limit whatever the shapes claim.
#[cfg(test)]
mod props {
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;

    const MAX: usize = 4096;

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e3f64..1e3).prop_map(Value::from),
            "[a-z ]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| prop::collection::vec(inner, 0..6).prop_map(Value::Array))
    }

    fn request() -> impl Strategy<Value = Value> {
        let input = (
            prop_oneof![Just("input_ids"), Just("attention_mask"), Just("token_type_ids"), Just("text"), Just("x")],
            prop::collection::vec(prop_oneof![-2i64..6, Just(i64::MAX), Just(1 << 40)], 0..4),
            prop_oneof![Just("INT64"), Just("INT32"), Just("BYTES"), Just("FP32"), Just("BOOL")],
            value(),
            any::<bool>(),
        )
            .prop_map(|(name, shape, datatype, data, binary)| {
                let mut v = json!({"name": name, "shape": shape, "datatype": datatype, "data": data});
                if binary {
                    v["parameters"] = json!({"binary_data_size": 8});
                }
                v
            });
        (prop::collection::vec(input, 0..4), any::<bool>()).prop_map(|(inputs, outputs)| {
            let mut v = json!({"inputs": inputs});
            if outputs {
                v["outputs"] = json!([{"name": "logits", "parameters": {"binary_data": true}}]);
            }
            v
        })
    }

    fn check_bounded(r: &InferRequest) {
        match &r.inputs {
            Inputs::Tokens(b) => assert!(b.ids.len() <= MAX),
            Inputs::Texts(t) => assert!(t.len() <= MAX),
            Inputs::TextPairs(t) => assert!(t.len() <= MAX),
            Inputs::Tensors(_) => panic!("the KServe decoder makes no tensor inputs yet"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256), header in prop::option::of(0usize..300)) {
            if let Ok(r) = decode(&body, header, MAX) {
                check_bounded(&r);
            }
        }

        #[test]
        fn plausible_requests_never_panic(req in request(), tail in prop::collection::vec(any::<u8>(), 0..32)) {
            let head = req.to_string().into_bytes();
            let mut body = head.clone();
            body.extend_from_slice(&tail);
            for header in [None, Some(head.len())] {
                let body = if header.is_some() { &body[..] } else { &head[..] };
                if let Ok(r) = decode(body, header, MAX) {
                    check_bounded(&r);
                }
            }
        }
    }
}
