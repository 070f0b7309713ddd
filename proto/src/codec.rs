//! The gRPC codec of the generated clients and servers: prost messages, decoded from one
//! contiguous slice and encoded into room reserved up front.
//!
//! tonic's own prost codec decodes through its `DecodeBuf`, which bounds-checks and advances two
//! cursors on every field: a tenth of taking a 10,000-neighbor message. The message is already in
//! one buffer; taking it out as `Bytes` costs no copy.

use std::marker::PhantomData;

use prost::bytes::Buf;
use prost::encoding::decode_varint;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use crate::{schema, wire};

/// A `Codec` for prost messages: encodes `E`, decodes `D`.
#[derive(Debug, Clone, Copy)]
pub struct SliceCodec<E, D>(PhantomData<(E, D)>);

impl<E, D> Default for SliceCodec<E, D> {
    fn default() -> Self {
        SliceCodec(PhantomData)
    }
}

impl<E, D> Codec for SliceCodec<E, D>
where
    E: Message + Send + 'static,
    D: Message + Default + Presize + Send + 'static,
{
    type Encode = E;
    type Decode = D;
    type Encoder = SliceEncoder<E>;
    type Decoder = SliceDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        SliceEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        SliceDecoder(PhantomData)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct SliceEncoder<E>(PhantomData<E>);

impl<E: Message> Encoder for SliceEncoder<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // One allocation of the right size rather than doublings from 8 KiB.
        buf.reserve(item.encoded_len());
        item.encode(buf)
            .map_err(|e| Status::internal(format!("encoding a message: {e}")))
    }
}

#[derive(Debug, Clone, Copy)]
pub struct SliceDecoder<D>(PhantomData<D>);

impl<D: Message + Default + Presize> Decoder for SliceDecoder<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        let mut msg = D::default();
        msg.presize(&bytes);
        // As tonic's prost codec: a message that does not parse is INTERNAL (gRPC status codes).
        msg.merge(&bytes[..])
            .map(|()| Some(msg))
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// Sizes a message's repeated fields before it is decoded. prost grows a vector one entry at a
/// time: in the agent, decoding 10,000 neighbors spent two fifths of its time in the doublings,
/// each a fresh block (page faults) and a copy of everything before.
pub trait Presize {
    /// Reserves room in `self`'s repeated fields for the entries the encoded `msg` holds.
    fn presize(&mut self, msg: &[u8]) {
        let _ = msg;
    }
}

/// How many times each field number below 16 occurs at the top level of the encoded `msg`. Stops
/// at the first thing that does not parse (decoding then says what is wrong); a count is at most
/// what decoding allocates anyway, one entry per occurrence.
pub fn field_counts(mut msg: &[u8]) -> [usize; 16] {
    let mut counts = [0; 16];
    while !msg.is_empty() {
        let Ok(key) = decode_varint(&mut msg) else { break };
        let skip = match key & 7 {
            0 => decode_varint(&mut msg).map(|_| 0).ok(),
            1 => Some(8),
            2 => decode_varint(&mut msg).ok().and_then(|len| usize::try_from(len).ok()),
            5 => Some(4),
            _ => None, // groups and invalid wire types
        };
        match skip {
            Some(n) if n <= msg.len() => msg = &msg[n..],
            _ => break,
        }
        if let Some(c) = usize::try_from(key >> 3).ok().and_then(|f| counts.get_mut(f)) {
            *c += 1;
        }
    }
    counts
}

/// `Presize` for messages whose repeated fields are `field = number`.
macro_rules! presize {
    ($($ty:ty { $($field:ident = $tag:literal),* $(,)? }),* $(,)?) => {$(
        impl Presize for $ty {
            fn presize(&mut self, msg: &[u8]) {
                let counts = field_counts(msg);
                $(self.$field.reserve(counts[$tag]);)*
            }
        }
    )*};
}

presize!(
    schema::GoalState {
        vpc_states = 2,
        subnet_states = 3,
        port_states = 4,
        neighbor_states = 5,
        security_group_states = 6,
        dhcp_states = 7,
        router_states = 8,
        gateway_states = 9,
    },
    wire::GoalStateV2 {
        host_resources = 2,
        vpc_states = 3,
        subnet_states = 4,
        port_states = 5,
        dhcp_states = 6,
        neighbor_states = 7,
        security_group_states = 8,
        router_states = 9,
        gateway_states = 10,
    },
    schema::GoalStateOperationReply { operation_statuses = 2 },
    schema::NeighborRulesRequest { neigborstates = 3 },
    schema::HostRequest { state_requests = 2 },
    schema::HostRequestReply { operation_statuses = 2 },
);

/// Its maps decode into search trees, which take no reservation.
impl Presize for schema::GoalStateV2 {}

/// The subscription messages have no repeated fields.
impl Presize for schema::NodeSubscribeInfo {}
impl Presize for schema::SubscribeOperationReply {}

/// Diagnostics: a request has no repeated field, a reply at most 100 probes.
impl Presize for crate::alioth::v1::EchoRequest {}
impl Presize for crate::alioth::v1::EchoReply {}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries<T: Default>(n: usize) -> Vec<T> {
        (0..n).map(|_| T::default()).collect()
    }

    /// Each repeated field is sized from its own field number: distinct counts per field catch a
    /// number that names another field.
    #[test]
    fn repeated_fields_are_sized_to_their_entries() {
        let m = schema::GoalState {
            vpc_states: entries(5),
            subnet_states: entries(6),
            port_states: entries(7),
            neighbor_states: entries(8),
            security_group_states: entries(9),
            dhcp_states: entries(10),
            router_states: entries(11),
            gateway_states: entries(12),
            ..Default::default()
        };
        let mut d = schema::GoalState::default();
        d.presize(&m.encode_to_vec());
        let caps = [
            d.vpc_states.capacity(),
            d.subnet_states.capacity(),
            d.port_states.capacity(),
            d.neighbor_states.capacity(),
            d.security_group_states.capacity(),
            d.dhcp_states.capacity(),
            d.router_states.capacity(),
            d.gateway_states.capacity(),
        ];
        assert_eq!(caps, [5, 6, 7, 8, 9, 10, 11, 12]);

        let m = wire::GoalStateV2 {
            host_resources: entries(5),
            vpc_states: entries(6),
            subnet_states: entries(7),
            port_states: entries(8),
            dhcp_states: entries(9),
            neighbor_states: entries(10),
            security_group_states: entries(11),
            router_states: entries(12),
            gateway_states: entries(13),
            ..Default::default()
        };
        let mut d = wire::GoalStateV2::default();
        d.presize(&m.encode_to_vec());
        let caps = [
            d.host_resources.capacity(),
            d.vpc_states.capacity(),
            d.subnet_states.capacity(),
            d.port_states.capacity(),
            d.dhcp_states.capacity(),
            d.neighbor_states.capacity(),
            d.security_group_states.capacity(),
            d.router_states.capacity(),
            d.gateway_states.capacity(),
        ];
        assert_eq!(caps, [5, 6, 7, 8, 9, 10, 11, 12, 13]);

        let m = schema::GoalStateOperationReply {
            format_version: 1,
            operation_statuses: entries(7),
            message_total_operation_time: 9,
        };
        let mut d = schema::GoalStateOperationReply::default();
        d.presize(&m.encode_to_vec());
        assert_eq!(d.operation_statuses.capacity(), 7);
        let m = schema::NeighborRulesRequest {
            neigborstates: entries(6),
            ..Default::default()
        };
        let mut d = schema::NeighborRulesRequest::default();
        d.presize(&m.encode_to_vec());
        assert_eq!(d.neigborstates.capacity(), 6);
    }

    /// Counting stops at whatever does not parse, without reading past the end.
    #[test]
    fn malformed_input_stops_the_count() {
        let m = schema::GoalStateOperationReply {
            operation_statuses: entries(3),
            ..Default::default()
        };
        let good = m.encode_to_vec();
        assert_eq!(field_counts(&good)[2], 3);
        for cut in 0..good.len() {
            assert!(field_counts(&good[..cut])[2] <= 3);
        }
        // A length beyond the end, a group, an unfinished varint, a field number past 15.
        for bad in [
            &[0x12, 0xff, 0x01][..],
            &[0x13, 0x00],
            &[0xff, 0xff],
            &[0xf8, 0x01, 0x00],
        ] {
            assert_eq!(field_counts(bad)[2], 0, "{bad:?}");
        }
    }

    /// The codec decodes what the generated code encodes.
    #[test]
    fn decodes_as_prost_does() {
        let m = schema::GoalStateOperationReply {
            format_version: 1,
            operation_statuses: vec![schema::goal_state_operation_reply::GoalStateOperationStatus {
                resource_id: "n1".into(),
                state_elapse_time: 3,
                ..Default::default()
            }],
            message_total_operation_time: 9,
        };
        let bytes = m.encode_to_vec();
        let mut d = schema::GoalStateOperationReply::default();
        d.presize(&bytes);
        d.merge(&bytes[..]).unwrap();
        assert_eq!(d, m);
    }
}
