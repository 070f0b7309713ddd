//! A port's policy: the rules of its security groups for each direction, compiled, with remote
//! groups expanded into the addresses of their members in the port's VPC.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use ipnetwork::Ipv4Network;

use super::{compile, Compiled, Rule};
use crate::goalstate::model::{Groups, Id, Port, Remote, State};

/// A port's rules, compiled for each direction.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Policy {
    pub egress: Compiled,
    pub ingress: Compiled,
}

/// The addresses of each group's members (ports and neighbors), by group and VPC; and the VPCs
/// whose neighbors name no group at all (Alcor's DPM sends none: their remote groups see this
/// host's ports only).
#[derive(Default)]
pub struct Members {
    by_group: HashMap<(Id, Id), Vec<Ipv4Network>>,
    silent_vpcs: std::collections::HashSet<Id>,
}

impl Members {
    pub fn of(state: &State) -> Self {
        let mut silent: std::collections::HashSet<Id> = state.neighbors().values().map(|n| n.vpc_id.clone()).collect();
        for n in state.neighbors().values().filter(|n| !n.security_groups.is_empty()) {
            silent.remove(&n.vpc_id);
        }
        let mut out: HashMap<(Id, Id), Vec<Ipv4Network>> = HashMap::new();
        let host = |ip: Ipv4Addr| Ipv4Network::from(ip);
        let ports = state
            .ports()
            .values()
            .map(|p| (&p.security_groups, &p.vpc_id, &p.fixed_ips, &p.allowed_pairs));
        let neighbors = state
            .neighbors()
            .values()
            .map(|n| (&n.security_groups, &n.vpc_id, &n.fixed_ips, &n.allowed_pairs));
        for (groups, vpc, ips, pairs) in ports.chain(neighbors) {
            for g in groups {
                let list = out.entry((g.clone(), vpc.clone())).or_default();
                list.extend(ips.iter().map(|f| host(f.ip)));
                list.extend(pairs.iter().copied());
            }
        }
        Members {
            by_group: out,
            silent_vpcs: silent,
        }
    }

    /// The addresses of `group`'s members in `vpc`.
    pub fn of_group(&self, group: &Id, vpc: &Id) -> &[Ipv4Network] {
        self.by_group
            .get(&(group.clone(), vpc.clone()))
            .map_or(&[], Vec::as_slice)
    }
}

/// `port`'s policy; `None` (unfiltered) when it names no group the state holds and
/// `deny_ungrouped` is off. Groups never sent filter nothing: ACA's own tests name group "1"
/// and send no group at all (alcor-control-agent `test/gtest/aca_test_ovs_l2.cpp`), and DPM
/// sends a port's groups in the port's message.
pub fn policy(state: &State, members: &Members, port: &Port, deny_ungrouped: bool) -> Option<Policy> {
    let known = port
        .security_groups
        .iter()
        .any(|g| state.security_groups.contains_key(&**g));
    if !known {
        if !port.security_groups.is_empty() {
            tracing::warn!(
                resource_id = &*port.id,
                groups = ?port.security_groups,
                "the port names security groups this agent was never sent: not filtered by them"
            );
        }
        return deny_ungrouped.then(Policy::default);
    }
    // Rules for the same protocol and range are one compiled rule (one bit) with the remotes of
    // them all: a port's bound is on its distinct services, not on its rules.
    let (mut egress, mut ingress): (Vec<Rule>, Vec<Rule>) = (Vec::new(), Vec::new());
    for g in port
        .security_groups
        .iter()
        .filter_map(|g| state.security_groups.get(&**g))
    {
        for r in g.rules.iter().filter(|r| !r.ipv6) {
            let remotes: &[Ipv4Network] = match &r.remote {
                Remote::Prefix(p) => std::slice::from_ref(p),
                Remote::Group(m) => {
                    if members.silent_vpcs.contains(&port.vpc_id) {
                        tracing::warn!(
                            resource_id = &*port.id,
                            group = &**m,
                            "a rule names a remote group, and no neighbor of the VPC names its groups \
                             (alioth's security_group_ids on neighbors): it matches this host's ports only"
                        );
                    }
                    members.of_group(m, &port.vpc_id)
                }
                Remote::Ipv6(_) => continue,
            };
            let list = if r.ingress { &mut ingress } else { &mut egress };
            let service = |x: &&mut Rule| x.protocol == r.protocol && x.ports == r.ports;
            match list.iter_mut().find(service) {
                Some(rule) => rule.remotes.extend_from_slice(remotes),
                None => list.push(Rule {
                    remotes: remotes.to_vec(),
                    protocol: r.protocol,
                    ports: r.ports,
                }),
            }
        }
    }
    // Validation keeps each group within the bound; several groups together may not be: the
    // services past it are left out (refusing more, never allowing more).
    for (list, dir) in [(&mut egress, "egress"), (&mut ingress, "ingress")] {
        if list.len() > super::MAX_RULES {
            tracing::error!(
                resource_id = &*port.id,
                "{} {dir} services (protocol and range) from its groups; only the first {} apply",
                list.len(),
                super::MAX_RULES
            );
            list.truncate(super::MAX_RULES);
        }
    }
    Some(Policy {
        egress: compile(&egress),
        ingress: compile(&ingress),
    })
}

/// What a compiled policy is the rules of: ports with the same groups in the same VPC have the
/// same rules, and share a rule set in the data plane.
pub type SetKey = (Groups, Id);

/// A compiled policy and what it is the rules of.
pub type KeyedPolicy = (SetKey, Arc<Policy>);

/// `policy` as a rule set of its own, keyed by `name` alone (tests and benchmarks, whose ports
/// are no goal state).
pub fn alone(name: &str, policy: Policy) -> KeyedPolicy {
    ((Groups::new(), name.into()), Arc::new(policy))
}

/// Members and compiled policies, kept while the state's groups and members stay as they are:
/// ports with the same groups in one VPC share one compiled policy, compiled once.
#[derive(Default)]
pub struct Compiler {
    members: Option<Members>,
    compiled: HashMap<SetKey, Option<Arc<Policy>>>,
}

impl Compiler {
    /// `port`'s policy (see `policy`) and what it is the rules of.
    pub fn policy(&mut self, state: &State, port: &Port, deny_ungrouped: bool) -> Option<KeyedPolicy> {
        if port.security_groups.is_empty() && !deny_ungrouped {
            return None;
        }
        let key = (port.security_groups.clone(), port.vpc_id.clone());
        if let Some(p) = self.compiled.get(&key) {
            return p.clone().map(|p| (key, p));
        }
        let members = self.members.get_or_insert_with(|| Members::of(state));
        let p = policy(state, members, port, deny_ungrouped).map(Arc::new);
        self.compiled.insert(key.clone(), p.clone());
        p.map(|p| (key, p))
    }
}
