//! `state`: the agent's record of goal state, listed offline from its state directory.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::agent::DEFAULT_STATE_DIR;
use crate::goalstate::model::{format_mac, FixedIp, Resource};
use crate::store::Store;

#[derive(Clone, Debug, clap::Args)]
pub struct StateArgs {
    /// The agent's state directory.
    #[arg(long, default_value = DEFAULT_STATE_DIR, env = "ALIOTH_STATE_DIR")]
    pub state_dir: PathBuf,
    /// Print every resource as JSON (the record's own form).
    #[arg(long)]
    pub json: bool,
}

pub fn state(args: StateArgs) -> Result<()> {
    anyhow::ensure!(
        args.state_dir.is_dir(),
        "{} is no state directory: is the agent running with --state-dir {}?",
        args.state_dir.display(),
        args.state_dir.display()
    );
    let held = Store::read(&args.state_dir).with_context(|| format!("read {}", args.state_dir.display()))?;
    if args.json {
        let all: Vec<Resource> = held.resources().collect();
        println!("{}", serde_json::to_string(&all)?);
        return Ok(());
    }
    println!("{:<9} {:<40} {:>8}  DETAIL", "KIND", "ID", "REVISION");
    for r in held.resources() {
        let (kind, id) = r.kind_id();
        let kind = kind.as_str_name().to_lowercase();
        println!("{kind:<9} {id:<40} {:>8}  {}", r.revision(), detail(&r));
    }
    Ok(())
}

fn ips(fixed: &[FixedIp]) -> String {
    fixed.iter().map(|f| f.ip.to_string()).collect::<Vec<_>>().join(",")
}

/// What identifies a resource on the wire and in the maps.
fn detail(r: &Resource) -> String {
    match r {
        Resource::Vpc(v) => format!("vni {}", v.vni),
        Resource::Subnet(s) => format!("vpc {} cidr {} gateway {}", s.vpc_id, s.cidr, s.gateway_ip),
        Resource::Port(p) => format!(
            "vpc {} ip {} mac {} iface {}",
            p.vpc_id,
            ips(&p.fixed_ips),
            format_mac(&p.mac),
            p.iface
        ),
        Resource::Neighbor(n) => format!(
            "vpc {} ip {} mac {} host {}",
            n.vpc_id,
            ips(&n.fixed_ips),
            format_mac(&n.mac),
            n.host_ip
        ),
        Resource::Dhcp(d) => format!(
            "subnet {} mac {} ip {}",
            d.subnet_id,
            format_mac(&d.mac),
            d.ip.map_or("-".to_string(), |ip| ip.to_string())
        ),
        Resource::SecurityGroup(g) => format!("rules {}", g.rules.len()),
        Resource::Router(r) => format!(
            "subnets {} rules {}",
            r.subnets.len(),
            r.subnets.values().map(|rules| rules.len()).sum::<usize>()
        ),
        Resource::Gateway(g) => format!(
            "type {} destinations {}",
            g.kind,
            g.destinations
                .iter()
                .map(|(ip, mac)| format!("{ip}/{}", format_mac(mac)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Resource::ElasticIp(e) => format!("ip {} port {} private {}", e.ip, e.port_id, e.private_ip),
    }
}
