//! Compiles `proto/` into Rust with protox (a pure-Rust protobuf compiler, so building
//! strom needs no system `protoc`) and tonic-prost-build, and saves the descriptor set
//! that the server's reflection service publishes.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["strom/v1/strom.proto"], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("strom_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        // `bytes` fields become `Bytes`: decoding slices the request buffer, no copy.
        .bytes(".")
        // Malformed requests are INVALID_ARGUMENT, not INTERNAL (src/grpc/codec.rs).
        .codec_path("crate::grpc::codec::StromCodec")
        // Fetch and Subscribe responses are encoded by strom itself from stored batches
        // (see src/grpc/records.rs); everything else is generated.
        .extern_path(
            ".strom.v1.FetchResponse",
            "crate::grpc::records::FetchResponse",
        )
        .extern_path(
            ".strom.v1.SubscribeResponse",
            "crate::grpc::records::SubscribeResponse",
        )
        // Produce requests are decoded by strom too: each record stays as the bytes it
        // came in, parsed only when its batch is built (see src/grpc/produce/); so are
        // publishes to an exchange.
        .extern_path(
            ".strom.v1.ProduceRequest",
            "crate::grpc::produce::ProduceRequest",
        )
        .extern_path(
            ".strom.v1.PublishRequest",
            "crate::grpc::produce::PublishRequest",
        )
        .compile_fds(descriptors)?;
    Ok(())
}
