//! The agent's settings the controller applies to every port.

use crate::goalstate::dhcp;

/// What a port that names no security group gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PortsWithoutGroups {
    /// Unfiltered (as before security groups existed; Alcor's ACA never filtered).
    #[default]
    Allow,
    /// Filtered as a port whose groups allow nothing but the data plane's own answers (ARP, DHCP,
    /// ICMP to its gateway): Neutron's port security.
    Deny,
}

/// The agent's settings the controller applies to every port.
#[derive(Clone, Debug)]
pub struct Options {
    pub dhcp_lease: u32,
    pub ports_without_groups: PortsWithoutGroups,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dhcp_lease: dhcp::DEFAULT_LEASE_SECS,
            ports_without_groups: PortsWithoutGroups::Allow,
        }
    }
}
