//! What the kernel reports of each interface's XDP attachment (RTM_GETLINK), for `alioth status`.

use std::collections::BTreeMap;

use anyhow::Result;
use netlink_packet_route::link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached};
use netlink_packet_route::RouteNetlinkMessage;

use crate::net::route::RouteQuery;

/// How XDP runs on one interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (native).
    Driver,
    /// On the skb, after the driver (generic).
    Generic,
    /// On the NIC.
    Offloaded,
    /// More than one program in different modes.
    Multiple,
}

impl XdpMode {
    pub fn name(self) -> &'static str {
        match self {
            XdpMode::Driver => "native",
            XdpMode::Generic => "generic",
            XdpMode::Offloaded => "offloaded",
            XdpMode::Multiple => "multiple",
        }
    }
}

/// The XDP mode and program id of every interface of this network namespace that runs XDP, by
/// interface index.
pub fn xdp_attachments() -> Result<BTreeMap<u32, (XdpMode, u32)>> {
    let mut out = BTreeMap::new();
    RouteQuery::new()?.dump(RouteNetlinkMessage::GetLink(LinkMessage::default()), |m| {
        let RouteNetlinkMessage::NewLink(link) = m else { return };
        let Some(xdp) = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Xdp(x) => Some(x),
            _ => None,
        }) else {
            return;
        };
        let mode = xdp.iter().find_map(|x| match x {
            LinkXdp::Attached(XdpAttached::Driver) => Some(XdpMode::Driver),
            LinkXdp::Attached(XdpAttached::SocketBuffer) => Some(XdpMode::Generic),
            LinkXdp::Attached(XdpAttached::Hardware) => Some(XdpMode::Offloaded),
            LinkXdp::Attached(XdpAttached::Multiple) => Some(XdpMode::Multiple),
            _ => None,
        });
        let prog = xdp
            .iter()
            .find_map(|x| match x {
                LinkXdp::ProgId(id) => Some(*id),
                _ => None,
            })
            .unwrap_or(0);
        if let Some(mode) = mode {
            out.insert(link.header.index, (mode, prog));
        }
    })?;
    Ok(out)
}
