//! `GoalStateV2` as the agent decodes it: its maps as the repeated entries they are on the wire.
//!
//! A protobuf `map<string, V>` field is encoded exactly as `repeated Entry { string key = 1; V
//! value = 2; }`, so these types read the same bytes as `schema::GoalStateV2`. They leave out
//! building a search tree of 100,000 ids that the agent would only take apart again (about half
//! of decoding a large message); the agent orders the entries by id itself (`by_id`).

use std::collections::BTreeMap;

use crate::schema::{
    DhcpState, ElasticIpState, GatewayState, HostResources, NeighborState, PortState, RouterState, SecurityGroupState,
    SubnetState, VpcState,
};

/// An entry of a map field.
pub trait MapEntry: Sized {
    type Value;
    fn new(key: String, value: Self::Value) -> Self;
    /// (key, value); an entry without a value holds the default value, as in a map.
    fn into_pair(self) -> (String, Self::Value);
}

macro_rules! entries {
    ($($entry:ident: $value:ty),* $(,)?) => {$(
        /// One entry of a map field: `key` and `value` as the map holds them.
        #[derive(Clone, PartialEq, ::prost::Message)]
        pub struct $entry {
            #[prost(string, tag = "1")]
            pub key: ::prost::alloc::string::String,
            #[prost(message, optional, tag = "2")]
            pub value: ::core::option::Option<$value>,
        }

        impl MapEntry for $entry {
            type Value = $value;
            fn new(key: String, value: $value) -> Self {
                $entry { key, value: Some(value) }
            }
            fn into_pair(self) -> (String, $value) {
                (self.key, self.value.unwrap_or_default())
            }
        }
    )*};
}

entries!(
    HostResourcesEntry: HostResources,
    VpcStateEntry: VpcState,
    SubnetStateEntry: SubnetState,
    PortStateEntry: PortState,
    DhcpStateEntry: DhcpState,
    NeighborStateEntry: NeighborState,
    SecurityGroupStateEntry: SecurityGroupState,
    RouterStateEntry: RouterState,
    GatewayStateEntry: GatewayState,
    ElasticIpStateEntry: ElasticIpState,
);

/// `alcor.schema.GoalStateV2` with the same field numbers, each map as its repeated entries.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct GoalStateV2 {
    #[prost(uint32, tag = "1")]
    pub format_version: u32,
    #[prost(message, repeated, tag = "2")]
    pub host_resources: ::prost::alloc::vec::Vec<HostResourcesEntry>,
    #[prost(message, repeated, tag = "3")]
    pub vpc_states: ::prost::alloc::vec::Vec<VpcStateEntry>,
    #[prost(message, repeated, tag = "4")]
    pub subnet_states: ::prost::alloc::vec::Vec<SubnetStateEntry>,
    #[prost(message, repeated, tag = "5")]
    pub port_states: ::prost::alloc::vec::Vec<PortStateEntry>,
    #[prost(message, repeated, tag = "6")]
    pub dhcp_states: ::prost::alloc::vec::Vec<DhcpStateEntry>,
    #[prost(message, repeated, tag = "7")]
    pub neighbor_states: ::prost::alloc::vec::Vec<NeighborStateEntry>,
    #[prost(message, repeated, tag = "8")]
    pub security_group_states: ::prost::alloc::vec::Vec<SecurityGroupStateEntry>,
    #[prost(message, repeated, tag = "9")]
    pub router_states: ::prost::alloc::vec::Vec<RouterStateEntry>,
    #[prost(message, repeated, tag = "10")]
    pub gateway_states: ::prost::alloc::vec::Vec<GatewayStateEntry>,
    /// alioth's extension.
    #[prost(message, repeated, tag = "1001")]
    pub elastic_ip_states: ::prost::alloc::vec::Vec<ElasticIpStateEntry>,
}

/// A map field's entries as (key, value) in key order, each key once: the last entry with a key
/// wins, as when the same bytes decode into a map. Entries already in key order (a sender's
/// sorted map) are only checked.
pub fn by_id<E: MapEntry>(entries: Vec<E>) -> Vec<(String, E::Value)> {
    let mut pairs: Vec<_> = entries.into_iter().map(E::into_pair).collect();
    if pairs.windows(2).all(|w| w[0].0 < w[1].0) {
        return pairs;
    }
    // Reversed and stably sorted, the last entry of a key on the wire comes first among equals,
    // and `dedup_by` keeps the first.
    pairs.reverse();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    pairs.dedup_by(|a, b| a.0 == b.0);
    pairs
}

/// A map's pairs as entries, in key order.
fn entries<E: MapEntry>(map: BTreeMap<String, E::Value>) -> Vec<E> {
    map.into_iter().map(|(key, value)| E::new(key, value)).collect()
}

impl From<crate::schema::GoalStateV2> for GoalStateV2 {
    /// The same message with its maps as entries (in key order).
    fn from(m: crate::schema::GoalStateV2) -> Self {
        GoalStateV2 {
            format_version: m.format_version,
            host_resources: entries(m.host_resources),
            vpc_states: entries(m.vpc_states),
            subnet_states: entries(m.subnet_states),
            port_states: entries(m.port_states),
            dhcp_states: entries(m.dhcp_states),
            neighbor_states: entries(m.neighbor_states),
            security_group_states: entries(m.security_group_states),
            router_states: entries(m.router_states),
            gateway_states: entries(m.gateway_states),
            elastic_ip_states: entries(m.elastic_ip_states),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{self, NeighborConfiguration, OperationType, VpcConfiguration};
    use prost::Message;

    fn neighbor(id: &str, mac: &str) -> NeighborState {
        NeighborState {
            operation_type: OperationType::Create as i32,
            configuration: Some(NeighborConfiguration {
                id: id.into(),
                mac_address: mac.into(),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn reads_the_bytes_of_the_map_message() {
        let m = schema::GoalStateV2 {
            format_version: 7,
            vpc_states: [(
                "v".to_string(),
                VpcState {
                    operation_type: OperationType::Create as i32,
                    configuration: Some(VpcConfiguration {
                        id: "v".into(),
                        tunnel_id: 5,
                        ..Default::default()
                    }),
                },
            )]
            .into(),
            neighbor_states: [("b", "02:00:00:00:00:02"), ("a", "02:00:00:00:00:01")]
                .map(|(id, mac)| (id.to_string(), neighbor(id, mac)))
                .into(),
            ..Default::default()
        };
        let wire = GoalStateV2::decode(&m.encode_to_vec()[..]).unwrap();
        assert_eq!(wire, GoalStateV2::from(m.clone()));
        // And back: the entries are the map's bytes.
        assert_eq!(schema::GoalStateV2::decode(&wire.encode_to_vec()[..]).unwrap(), m);
    }

    #[test]
    fn later_entries_win_and_come_out_in_key_order() {
        let wire = GoalStateV2 {
            neighbor_states: [
                ("b", "02:00:00:00:00:01"),
                ("a", "02:00:00:00:00:02"),
                ("b", "02:00:00:00:00:03"),
                ("c", "02:00:00:00:00:04"),
                ("a", "02:00:00:00:00:05"),
            ]
            .map(|(id, mac)| NeighborStateEntry {
                key: id.into(),
                value: Some(neighbor(id, mac)),
            })
            .into(),
            ..Default::default()
        };
        let as_map = schema::GoalStateV2::decode(&wire.encode_to_vec()[..]).unwrap();
        let pairs = by_id(wire.neighbor_states);
        assert_eq!(pairs, as_map.neighbor_states.into_iter().collect::<Vec<_>>());
        let macs: Vec<&str> = pairs
            .iter()
            .map(|(_, n)| n.configuration.as_ref().unwrap().mac_address.as_str())
            .collect();
        assert_eq!(macs, ["02:00:00:00:00:05", "02:00:00:00:00:03", "02:00:00:00:00:04"]);
    }
}
