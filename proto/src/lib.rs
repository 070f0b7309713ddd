//! `alcor.schema`: Alcor's goal-state messages and the `GoalStateProvisioner` gRPC service, generated
//! from our own wire-compatible `.proto` files, with serde in the proto3 JSON mapping; and
//! `alioth.v1`, alioth's own `Diagnostics` service.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod alcor {
    pub mod schema {
        include!(concat!(env!("OUT_DIR"), "/alcor.schema.rs"));
        include!(concat!(env!("OUT_DIR"), "/alcor.schema.serde.rs"));
    }
}

pub use alcor::schema;

/// `alioth.v1`: alioth's own services (`Diagnostics`), beside Alcor's.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod alioth {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/alioth.v1.rs"));
        include!(concat!(env!("OUT_DIR"), "/alioth.v1.serde.rs"));
    }
}

/// Encoded `FileDescriptorSet` of every file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/alcor_descriptor.bin"));

pub mod codec;
pub mod wire;

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::schema;

    /// Alcor's field numbers and JSON names, byte for byte: subscribe info, and alioth's reason.
    #[test]
    fn subscribe_info_and_the_reason_extension_are_on_the_wire_as_documented() {
        let info = schema::NodeSubscribeInfo {
            subscribe_operation: schema::SubscribeOperation::Unsubscribe as i32,
            topic: "t".into(),
            key: "k".into(),
        };
        assert_eq!(info.encode_to_vec(), [0x08, 1, 0x12, 1, b't', 0x1a, 1, b'k']);
        let reply = schema::SubscribeOperationReply {
            operation_status: schema::OperationStatus::Pending as i32,
        };
        assert_eq!(reply.encode_to_vec(), [0x08, 3]);
        let json = serde_json::to_value(reply).unwrap();
        assert_eq!(json["operationStatus"], "PENDING");
        // Field 1001, length-delimited: tag (1001 << 3) | 2 as a varint.
        let status = schema::goal_state_operation_reply::GoalStateOperationStatus {
            reason: "why".into(),
            ..Default::default()
        };
        assert_eq!(status.encode_to_vec(), [0xca, 0x3e, 3, b'w', b'h', b'y']);
        // Every field is printed, defaults included (SUCCESS is the enum's zero).
        let json = serde_json::to_value(status).unwrap();
        assert_eq!(json["operationStatus"], "SUCCESS");
        assert_eq!(json["reason"], "why");
    }
}
