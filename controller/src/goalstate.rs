//! Goal state as the agent holds it: the model, its validation against what is held, the plan
//! (the diff) a change makes, the DHCP options a subnet's ports are served, the deletions a file implies (`apply --prune`),
//! and security-group rules compiled into lookups (`secgroup`).

pub mod dhcp;
pub mod model;
pub mod nat;
pub mod plan;
pub mod prune;
pub mod routes;
pub mod secgroup;
pub mod validate;
