//! Interfaces and the underlay as they change, from the kernel's rtnetlink notifications: a port's
//! tap that is deleted and created again (a VM reboot, a migration) is attached again as it
//! appears, and a route or neighbour change reaches the next hops at once, not at the next poll.

use anyhow::{Context, Result};
use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};
use tokio::sync::mpsc::UnboundedSender;

/// What changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// An interface exists (new, or changed) under this name and index.
    Link { name: String, index: u32 },
    /// An interface was deleted.
    LinkGone { name: String, index: u32 },
    /// A route or neighbour entry changed: next hops may have.
    Underlay,
    /// Notifications were lost (the socket's buffer overran): look at everything again.
    Resync,
    /// A veth appeared, or an interface left for another network namespace: a port's peer may
    /// have moved between namespaces (`Dataplane::refresh_iface_flags`).
    Peers,
}

/// Subscribes to link, IPv4 route and neighbour notifications of the calling thread's network
/// namespace and sends what changes to `tx`, from a thread of its own, until `tx` is closed.
pub fn watch(tx: UnboundedSender<Change>) -> Result<()> {
    let mut socket = Socket::new(NETLINK_ROUTE).context("netlink socket")?;
    let groups = (libc::RTMGRP_LINK | libc::RTMGRP_NEIGH | libc::RTMGRP_IPV4_ROUTE) as u32;
    socket
        .bind(&SocketAddr::new(0, groups))
        .context("subscribe to rtnetlink notifications")?;
    grow_receive_buffer(&socket);
    std::thread::Builder::new()
        .name("alioth-netlink".into())
        .spawn(move || receive(socket, tx))
        .context("start the netlink thread")?;
    Ok(())
}

/// Bursts (thousands of taps at a host's boot) must not overrun the socket: a larger buffer.
fn grow_receive_buffer(socket: &Socket) {
    if let Err(e) = rustix::net::sockopt::set_socket_recv_buffer_size(socket, 4 << 20) {
        tracing::warn!("rtnetlink receive buffer stays as it is: {e}");
    }
}

fn receive(socket: Socket, tx: UnboundedSender<Change>) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match socket.recv(&mut &mut buf[..], 0) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                tracing::warn!("rtnetlink notifications overran; looking at every interface again");
                if tx.send(Change::Resync).is_err() {
                    return;
                }
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("rtnetlink socket failed ({e}); interface changes are seen by polling only");
                return;
            }
        };
        for change in parse(&buf[..n]) {
            if tx.send(change).is_err() {
                return;
            }
        }
    }
}

/// The changes in one datagram (several messages each); what does not parse is skipped.
pub fn parse(bytes: &[u8]) -> Vec<Change> {
    messages(bytes)
        .flat_map(|msg| match msg.payload {
            NetlinkPayload::InnerMessage(inner) => {
                let peers = moves_peers(&inner).then_some(Change::Peers);
                change(inner).into_iter().chain(peers).collect()
            }
            _ => Vec::new(),
        })
        .collect()
}

/// Whether `msg` may mean that a veth's peer moved between namespaces: a veth that appears here
/// (created, or moved in), or any interface that leaves for another namespace.
fn moves_peers(msg: &RouteNetlinkMessage) -> bool {
    match msg {
        RouteNetlinkMessage::NewLink(link) => crate::net::links::is_veth(link),
        RouteNetlinkMessage::DelLink(link) => link
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::NewNetnsId(_))),
        _ => false,
    }
}

/// The rtnetlink messages of one datagram, in order; what does not parse is skipped.
pub fn messages(mut bytes: &[u8]) -> impl Iterator<Item = NetlinkMessage<RouteNetlinkMessage>> + '_ {
    std::iter::from_fn(move || {
        while bytes.len() >= 16 {
            let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            if len < 16 || len > bytes.len() {
                return None;
            }
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..len]);
            // Messages are 4-byte aligned.
            bytes = &bytes[len.next_multiple_of(4).min(bytes.len())..];
            if let Ok(msg) = msg {
                return Some(msg);
            }
        }
        None
    })
}

fn change(msg: RouteNetlinkMessage) -> Option<Change> {
    match msg {
        RouteNetlinkMessage::NewLink(link) => {
            let (name, index) = name_and_index(&link)?;
            Some(Change::Link { name, index })
        }
        RouteNetlinkMessage::DelLink(link) => {
            let (name, index) = name_and_index(&link)?;
            Some(Change::LinkGone { name, index })
        }
        RouteNetlinkMessage::NewRoute(_)
        | RouteNetlinkMessage::DelRoute(_)
        | RouteNetlinkMessage::NewNeighbour(_)
        | RouteNetlinkMessage::DelNeighbour(_) => Some(Change::Underlay),
        _ => None,
    }
}

fn name_and_index(link: &LinkMessage) -> Option<(String, u32)> {
    let name = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })?;
    Some((name, link.header.index))
}
