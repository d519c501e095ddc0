//! Generated protobuf types: the `bridge.v1` contract and the engine's private records.
//! Module paths mirror the proto packages so prost's cross-package references resolve.

#[allow(clippy::all, missing_docs)]
pub mod bridge {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/bridge.v1.rs"));
    }
    pub mod engine {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/bridge.engine.v1.rs"));
        }
    }
}

pub use bridge::engine::v1 as state;
pub use bridge::v1;
