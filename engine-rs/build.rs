//! Compiles the bridge.v1 contract (../schemas) and the engine's private state schema with
//! prost. `protox` parses the .proto files in pure Rust, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "../schemas/bridge/v1/common.proto",
        "../schemas/bridge/v1/orders.proto",
        "proto/engine/v1/state.proto",
    ];
    let includes = ["../schemas", "proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, includes)?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
