//! Compiles the Open Inference Protocol's gRPC definition (proto/grpc_predict_v2.proto) with
//! protox, a protobuf compiler in Rust, so building needs no `protoc`. The encoded descriptor set
//! is kept too: gRPC server reflection serves it.

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/grpc_predict_v2.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("inference_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(false)
        // Tensor bytes stay in the received buffer (no copy per input) until decoded.
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
