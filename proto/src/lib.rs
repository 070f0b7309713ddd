//! `alcor.schema`: Alcor's goal-state messages and the `GoalStateProvisioner` gRPC service, generated
//! from our own wire-compatible `.proto` files, with serde in the proto3 JSON mapping.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod alcor {
    pub mod schema {
        include!(concat!(env!("OUT_DIR"), "/alcor.schema.rs"));
        include!(concat!(env!("OUT_DIR"), "/alcor.schema.serde.rs"));
    }
}

pub use alcor::schema;

/// Encoded `FileDescriptorSet` of every file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/alcor_descriptor.bin"));

pub mod codec;
pub mod wire;
