//! Generates the Rust types of Triton's model configuration (`proto/triton/model_config.proto`,
//! vendored; its descriptors kept for the text-format parser) and of ONNX models
//! (`proto/onnx/onnx.proto`) — with protox, a protobuf compiler in Rust, so that no `protoc` is
//! needed to build.

use std::path::PathBuf;

use protox::prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=build.rs");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // No source info: the proto's comments would become doc comments (and doctests).
    let triton = protox::Compiler::new(["proto/triton"])?
        .include_imports(true)
        .include_source_info(false)
        .open_files(["model_config.proto"])?
        .file_descriptor_set();
    std::fs::write(out.join("inference_descriptors.bin"), triton.encode_to_vec())?;
    prost_build::Config::new().compile_fds(triton)?;
    // ONNX (package `onnx`): tensors' raw bytes as `Bytes`, slices of the file, not copies.
    let onnx = protox::Compiler::new(["proto/onnx"])?
        .include_imports(true)
        .include_source_info(false)
        .open_files(["onnx.proto"])?
        .file_descriptor_set();
    prost_build::Config::new().bytes([".onnx.TensorProto.raw_data"]).compile_fds(onnx)?;
    Ok(())
}
