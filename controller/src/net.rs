//! The host's network as the agent sees it: interfaces, the underlay (routes, neighbours, the
//! uplink) and rtnetlink notifications.

pub mod fib_source;
pub mod interfaces;
pub mod links;
pub mod netlink;
pub mod route;
pub mod underlay;
