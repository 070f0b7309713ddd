//! The alioth agent: goal state over gRPC -> validate -> plan (diff) -> apply (BPF maps) -> reply.
//!
//! The binary (`alioth`) is a thin CLI over these modules; tests and benchmarks use them directly.
//! ARCHITECTURE.md at the top of the repository maps them.

pub mod agent;
pub mod api;
pub mod background_drop;
pub mod cli;
pub mod controller;
pub mod dataplane;
pub mod goalstate;
pub mod net;
pub mod store;
