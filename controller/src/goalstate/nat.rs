//! Elastic IPs -> the NAT maps: each public address to the VNI and private address of its port
//! (`ELASTIC_IPS`; `ELASTIC_SOURCES` is its reverse). An elastic IP whose port is not held
//! translates nothing.

use std::collections::BTreeMap;

use alioth_common::maps::EndpointKey;

use crate::goalstate::model::State;

/// Public address -> private address, as the maps hold them.
pub type ElasticIps = BTreeMap<[u8; 4], EndpointKey>;

/// What the state's elastic IPs translate.
pub fn render(state: &State) -> ElasticIps {
    state
        .elastic_ips
        .values()
        .filter_map(|e| {
            let port = state.ports().get(&*e.port_id)?;
            let vni = state.vpcs.get(&*port.vpc_id)?.vni;
            let key = EndpointKey {
                vni,
                ip: e.private_ip.octets(),
            };
            Some((e.ip.octets(), key))
        })
        .collect()
}
