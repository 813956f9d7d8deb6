//! Generates the ONNX protobuf types from the workspace's vendored `proto/onnx.proto` with protox
//! (pure Rust, no system `protoc`). Every `bytes` field becomes `bytes::Bytes`, so tensor payloads decoded
//! from a memory-mapped file are slices of the map, not copies.

fn main() {
    println!("cargo:rerun-if-changed=../../proto/onnx.proto");
    let descriptors = protox::compile(["../../proto/onnx.proto"], ["../../proto"])
        .expect("proto/onnx.proto must compile");
    prost_build::Config::new()
        .bytes(["."])
        .compile_fds(descriptors)
        .expect("prost code generation for onnx.proto");
}
