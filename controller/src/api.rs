//! What the agent serves: the goal-state provisioner with its admission limits and host selection,
//! `alioth.v1.Diagnostics` (echo probes), and the Prometheus exporter.

pub mod admission;
pub mod diagnostics;
pub mod exporter;
pub mod hosts;
pub mod service;
