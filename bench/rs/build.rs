//! Compiles the bridge.v1 contract (../../schemas) and the bench's gRPC echo service with
//! prost + tonic. `protox` parses the .proto files in pure Rust, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "../../schemas/bridge/v1/common.proto",
        "../../schemas/bridge/v1/orders.proto",
        "proto/bridge/bench/v1/echo.proto",
    ];
    let includes = ["../../schemas", "proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, includes)?;
    tonic_prost_build::configure()
        .build_client(false)
        .compile_fds(fds)?;
    Ok(())
}
