//! The alioth agent: goal state over gRPC -> validate -> plan (diff) -> apply (BPF maps) -> reply.
//!
//! The binary (`alioth`) is a thin CLI over these modules; tests and benchmarks use them directly.

pub mod admission;
pub mod agent;
pub mod attach;
pub mod batch;
pub mod bpffs;
pub mod cli;
pub mod controller;
pub mod dataplane;
pub mod dhcp;
pub mod exporter;
pub mod garbage;
pub mod interfaces;
pub mod jsonl;
pub mod metrics;
pub mod model;
pub mod netlink;
pub mod object;
pub mod overlay;
pub mod plan;
pub mod prune;
pub mod service;
pub mod store;
pub mod underlay;
pub mod v2;
pub mod validate;
