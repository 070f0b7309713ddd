//! The interface the NAT program's next-hop lookups start from (`maps::FIB_SOURCE`): one that
//! receives nothing (a dummy, or an IFB where the kernel has no dummy), with IPv4 forwarding on.
//! `bpf_fib_lookup` answers only from an interface that forwards, and on a host that does not,
//! the uplink does not: each translated frame would wait for the kernel to look its route up
//! again (`bpf_redirect_neigh`). Forwarding on the uplink would make the host a router for
//! whatever arrives there; on an interface that receives nothing, the host forwards nothing more.

use anyhow::{bail, Context, Result};
use netlink_packet_route::link::{
    AfSpecInet, AfSpecUnspec, InetDevConf, InfoKind, LinkAttribute, LinkInfo, LinkMessage,
};

use crate::net::interfaces::ifindex;
use crate::net::route::RouteQuery;

/// Kinds of interface that receive nothing of their own: a dummy drops what it is sent, and an
/// IFB hands what tc redirects to it back as received by the interface it came from.
const SILENT: [InfoKind; 2] = [InfoKind::Dummy, InfoKind::Ifb];

/// The interface `name` (created if there is none), with IPv4 forwarding on: its ifindex.
pub fn ensure(name: &str) -> Result<u32> {
    let mut query = RouteQuery::new()?;
    if ifindex(name).is_none() {
        create(&mut query, name)?;
    }
    let index = ifindex(name).with_context(|| format!("no interface {name} after creating it"))?;
    // Never forwarding on an interface that receives.
    if !silent(&query.link(index)?) {
        bail!("{name} exists and is neither a dummy nor an IFB: name another with --fib-source");
    }
    // By rtnetlink, not /proc/sys, which containers mount read-only.
    let mut conf = InetDevConf::default();
    conf.forwarding = 1;
    let mut link = LinkMessage::default();
    link.header.index = index;
    let inet = AfSpecUnspec::Inet(vec![AfSpecInet::DevConfRequest(conf)]);
    link.attributes.push(LinkAttribute::AfSpecUnspec(vec![inet]));
    query
        .set_link(link)
        .with_context(|| format!("turn IPv4 forwarding on on {name}"))?;
    Ok(index)
}

/// Creates `name` of the first kind of `SILENT` this kernel has.
fn create(query: &mut RouteQuery, name: &str) -> Result<()> {
    let mut last = None;
    for kind in SILENT {
        let mut link = LinkMessage::default();
        link.attributes.push(LinkAttribute::IfName(name.to_string()));
        link.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind)]));
        match query.add_link(link) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    let e = last.context("no kind of interface to try")?;
    Err(e.context(format!("create {name} (a dummy or an IFB)")))
}

fn silent(link: &LinkMessage) -> bool {
    crate::net::links::kind(link).is_some_and(|k| SILENT.contains(k))
}
