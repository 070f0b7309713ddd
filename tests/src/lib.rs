//! Helpers shared by the integration tests and the benchmarks: test frames, network namespaces,
//! and running the real agent.

pub mod aca;
pub mod agent;
pub mod binary;
pub mod demo;
pub mod dhcp;
pub mod dpm;
pub mod frames;
pub mod generator;
pub mod goalstate;
pub mod grpc;
pub mod kernel;
pub mod netns;
pub mod overlay;
pub mod pki;
pub mod routing;
pub mod sockets;
pub mod table;
pub mod timing;
pub mod vectors;
