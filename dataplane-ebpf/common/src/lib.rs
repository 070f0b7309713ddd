//! Map keys and values shared by the XDP programs and the controller, and the packet logic itself.
//!
//! Everything here is `no_std` and allocation-free so that the same functions run inside the kernel
//! (through the `Packet` implementation over an XDP context) and on the host (over byte slices), where
//! they are unit- and property-tested.
#![no_std]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod arp;
pub mod checksum;
pub mod conntrack;
pub mod counters;
pub mod dhcp;
pub mod eth;
pub mod events;
pub mod firewall;
pub mod generator;
pub mod icmp;
pub mod ipv4;
pub mod maps;
pub mod monitor;
pub mod nat;
pub mod offload;
pub mod packet;
pub mod pipeline;
pub mod probe;
pub mod snat;
pub mod vxlan;

pub use counters::Counter;
pub use packet::Packet;
