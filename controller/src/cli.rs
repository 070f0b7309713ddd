//! Client subcommands: `apply` (gRPC), `status`, `ports`, `routes`, `elastic-ips`, `stats` (the pinned maps), `state` (the
//! record), `health`, `trace` (a synthetic frame through the live data plane), `monitor` (drop
//! events as they happen), `echo` (probes through the live data plane, by the agent).

mod apply;
mod client;
mod echo;
mod elastic_ips;
mod file;
mod health;
mod inspect;
mod monitor;
mod port;
mod routes;
mod snat;
mod state;
mod trace;

pub use apply::{apply, reply_table, ApplyArgs, EXIT_NOT_ALL_APPLIED};
pub use client::{connect, ClientTls};
pub use echo::{echo, EchoArgs};
pub use elastic_ips::elastic_ips;
pub use file::{parse_goal_state_file, read_goal_state, GoalStateFile};
pub use health::{health, HealthArgs};
pub use inspect::{ports, read_stats, stats, status, InspectArgs, StatsArgs};
pub use monitor::{monitor, MonitorArgs};
pub use port::{port, PortArgs};
pub use routes::routes;
pub use snat::snat;
pub use state::{state, StateArgs};
pub use trace::{trace, TraceArgs, EXIT_DISAGREE};
