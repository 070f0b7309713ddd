//! What the agent serves: the goal-state provisioner with its admission limits and host selection,
//! and the Prometheus exporter.

pub mod admission;
pub mod exporter;
pub mod hosts;
pub mod service;
