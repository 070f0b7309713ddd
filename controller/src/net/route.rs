//! The kernel's own route lookup (`ip route get`, RTM_GETROUTE): the policy rules, every table
//! they name and the multipath choice are the kernel's, not a copy of them read from /proc.

use std::net::Ipv4Addr;

use anyhow::{bail, Context, Result};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

/// Where the kernel sends a packet to some address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteTo {
    /// The output interface.
    pub oif: u32,
    /// The gateway; `None`: the address is on the link.
    pub gateway: Option<Ipv4Addr>,
}

/// A netlink socket for route lookups, answering for the network namespace it was made in.
pub struct RouteQuery {
    socket: Socket,
    sequence: u32,
    buf: Vec<u8>,
}

impl RouteQuery {
    pub fn new() -> Result<RouteQuery> {
        let mut socket = Socket::new(NETLINK_ROUTE).context("netlink socket")?;
        socket.bind_auto().context("bind a netlink socket")?;
        socket.connect(&SocketAddr::new(0, 0)).context("connect to rtnetlink")?;
        Ok(RouteQuery {
            socket,
            sequence: 0,
            buf: vec![0; 1 << 16],
        })
    }

    /// The kernel's route to `dst`, as `ip route get` shows it.
    pub fn get(&mut self, dst: Ipv4Addr) -> Result<RouteTo> {
        let mut route = RouteMessage::default();
        route.header.destination_prefix_length = 32;
        route
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
        self.request(route, NLM_F_REQUEST).context("send RTM_GETROUTE")?;
        match self.answer().context("the route")? {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) => route_to(&r, dst),
            NetlinkPayload::Error(e) => bail!("no route to {dst}: {}", e.to_io()),
            other => bail!("unexpected answer to a route lookup: {other:?}"),
        }
    }
}

impl RouteQuery {
    /// Interface `index` as RTM_GETLINK answers for it alone.
    pub fn link(&mut self, index: u32) -> Result<LinkMessage> {
        let mut link = LinkMessage::default();
        link.header.index = index;
        self.send(RouteNetlinkMessage::GetLink(link), NLM_F_REQUEST)
            .context("send RTM_GETLINK")?;
        match self.answer().context("the link")? {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => Ok(l),
            NetlinkPayload::Error(e) => bail!("no interface {index}: {}", e.to_io()),
            other => bail!("unexpected answer to a link lookup: {other:?}"),
        }
    }

    /// Creates the interface `link` describes (RTM_NEWLINK); fails if one of its name exists.
    pub fn add_link(&mut self, link: LinkMessage) -> Result<()> {
        let create = NLM_F_CREATE | NLM_F_EXCL;
        self.acked(RouteNetlinkMessage::NewLink(link), create)
            .context("RTM_NEWLINK")
    }

    /// Changes interface `link.header.index` as `link` says (RTM_SETLINK).
    pub fn set_link(&mut self, link: LinkMessage) -> Result<()> {
        self.acked(RouteNetlinkMessage::SetLink(link), 0).context("RTM_SETLINK")
    }

    /// Sends `msg` with `flags` and waits for the kernel's acknowledgement.
    fn acked(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        self.send(msg, NLM_F_REQUEST | NLM_F_ACK | flags)?;
        match self.answer()? {
            NetlinkPayload::Error(e) if e.code.is_none() => Ok(()),
            NetlinkPayload::Error(e) => Err(e.to_io().into()),
            other => bail!("unexpected answer: {other:?}"),
        }
    }

    /// The answer to the last request sent (a message under its sequence number).
    fn answer(&mut self) -> Result<NetlinkPayload<RouteNetlinkMessage>> {
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0).context("receive")?;
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[..n])
                .map_err(|e| anyhow::anyhow!("parse: {e}"))?;
            if reply.header.sequence_number == self.sequence {
                return Ok(reply.payload);
            }
        }
    }

    /// Sends `route` (an IPv4 RTM_GETROUTE) with `flags`, under the next sequence number.
    fn request(&mut self, mut route: RouteMessage, flags: u16) -> Result<()> {
        route.header.address_family = AddressFamily::Inet;
        self.send(RouteNetlinkMessage::GetRoute(route), flags)
    }

    /// Sends `msg` with `flags`, under the next sequence number.
    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        (header.flags, header.sequence_number) = (flags, self.sequence);
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        msg.finalize();
        let mut out = vec![0; msg.buffer_len()];
        msg.serialize(&mut out);
        self.socket.send(&out, 0)?;
        Ok(())
    }

    /// Sends the dump request `msg` and hands each message of the answer to `each`.
    pub fn dump(&mut self, msg: RouteNetlinkMessage, mut each: impl FnMut(RouteNetlinkMessage)) -> Result<()> {
        self.send(msg, NLM_F_REQUEST | NLM_F_DUMP)
            .context("send a dump request")?;
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0).context("receive a dump")?;
            for reply in crate::net::netlink::messages(&self.buf[..n]) {
                if reply.header.sequence_number != self.sequence {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => bail!("dump failed: {}", e.to_io()),
                    NetlinkPayload::InnerMessage(m) => each(m),
                    _ => {}
                }
            }
        }
    }

    /// The output interface of the main table's IPv4 default route (the lowest metric's), what
    /// `--uplink auto` takes.
    pub fn default_route_oif(&mut self) -> Result<u32> {
        let mut dump = RouteMessage::default();
        dump.header.address_family = AddressFamily::Inet;
        // (metric, output interface) of each default route seen.
        let mut best: Option<(u32, u32)> = None;
        self.dump(RouteNetlinkMessage::GetRoute(dump), |m| {
            let RouteNetlinkMessage::NewRoute(r) = m else { return };
            let h = &r.header;
            let main = h.table == RouteHeader::RT_TABLE_MAIN
                || r.attributes
                    .contains(&RouteAttribute::Table(RouteHeader::RT_TABLE_MAIN.into()));
            if h.destination_prefix_length != 0 || h.kind != RouteType::Unicast || !main {
                return;
            }
            let metric = r
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Priority(p) => Some(*p),
                    _ => None,
                })
                .unwrap_or(0);
            let oif = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            });
            if let Some(oif) = oif.filter(|_| best.is_none_or(|(m, _)| metric < m)) {
                best = Some((metric, oif));
            }
        })?;
        best.map(|(_, oif)| oif)
            .context("no IPv4 default route in the main table")
    }
}

fn route_to(r: &RouteMessage, dst: Ipv4Addr) -> Result<RouteTo> {
    let mut to = RouteTo { oif: 0, gateway: None };
    for a in &r.attributes {
        match a {
            RouteAttribute::Oif(i) => to.oif = *i,
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => to.gateway = Some(*g),
            _ => {}
        }
    }
    if to.oif == 0 {
        bail!("the route to {dst} has no output interface");
    }
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback is always routed, through `lo`.
    #[test]
    fn loopback_is_routed_through_lo() {
        let mut q = RouteQuery::new().unwrap();
        let to = q.get(Ipv4Addr::LOCALHOST).unwrap();
        assert_eq!(Some(to.oif), crate::net::interfaces::ifindex("lo"));
        assert_eq!(to.gateway, None);
        // Twice on one socket: the sequence keeps replies apart.
        assert_eq!(q.get(Ipv4Addr::LOCALHOST).unwrap(), to);
    }
}
