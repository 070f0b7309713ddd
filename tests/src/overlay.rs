//! Multi-host overlay labs: host namespaces on an underlay bridge (in its own namespace), an agent
//! per host with `--uplink`, VMs behind the hosts, and hosts running the Linux kernel's own vxlan.
//!
//! Underlay: 198.19.0.0/24 (host n is 198.19.0.n). Overlay: 198.18.0.0/16 per VPC.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alioth_proto::schema::*;
use anyhow::{bail, ensure, Context, Result};

use crate::agent::Agent;
use crate::goalstate;
use crate::netns::{self, Netns, Vm, XdpPass};

/// Name of the uplink inside every host namespace.
pub const UPLINK: &str = "up0";

/// The underlay: a bridge in its own namespace, or (`wire`) one veth straight between two hosts.
pub struct Underlay {
    pub ns: Netns,
    passes: Vec<XdpPass>,
    /// Wire mode: whether the first host is plugged in (and waits for the second).
    wire: Option<bool>,
}

/// In wire mode, the first host's `up0` peer, parked in the underlay's namespace until a second
/// host (or `Vm::adopt`) takes it.
pub const WIRE_PEER: &str = "up0peer";

impl Underlay {
    pub fn new() -> Result<Underlay> {
        let ns = Netns::new("alul")?;
        ns.exec(&["ip", "link", "add", "br0", "type", "bridge"])?;
        ns.exec(&["ip", "link", "set", "br0", "up"])?;
        Ok(Underlay {
            ns,
            passes: Vec::new(),
            wire: None,
        })
    }

    /// Two hosts joined by one veth (the `up0` of each): nothing in between, as over a cable.
    pub fn wire() -> Result<Underlay> {
        Ok(Underlay {
            ns: Netns::new("alul")?,
            passes: Vec::new(),
            wire: Some(false),
        })
    }

    /// Deletes `host`'s `up0` and plugs it in again, as `plug` did: a new interface of the same
    /// name and address (a re-created bond or VLAN).
    pub fn replug(&mut self, host: &Netns, n: u8) -> Result<()> {
        host.exec(&["ip", "link", "del", UPLINK])?;
        self.plug(host, n, true).map(drop)
    }

    /// Plugs `host` into the bridge through its `up0` with address 198.19.0.`n`/24. `xdp`: the
    /// bridge side runs XDP, so that native-mode redirects into `up0` reach it.
    fn plug(&mut self, host: &Netns, n: u8, xdp: bool) -> Result<String> {
        let ip = format!("198.19.0.{n}");
        if let Some(first) = self.wire.as_mut() {
            // The first host's up0 is created with its peer parked in the underlay namespace; the
            // second host takes that peer as its own up0.
            let parked = WIRE_PEER;
            if !*first {
                host.veth(UPLINK, &self.ns, parked)?;
                *first = true;
            } else {
                self.ns.exec(&["ip", "link", "set", parked, "netns", &host.name])?;
                host.exec(&["ip", "link", "set", parked, "name", UPLINK])?;
                host.exec(&["ip", "link", "set", UPLINK, "up"])?;
            }
            host.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", UPLINK])?;
            return Ok(ip);
        }
        let port = format!("u{n}");
        host.veth(UPLINK, &self.ns, &port)?;
        self.ns.exec(&["ip", "link", "set", &port, "master", "br0"])?;
        host.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", UPLINK])?;
        if xdp {
            self.passes.push(XdpPass::attach(&self.ns, &port)?);
        }
        Ok(ip)
    }
}

/// A VM of a lab: where it runs and what goal state describes it.
#[derive(Clone)]
pub struct VmSpec {
    pub port_id: String,
    pub vpc: String,
    pub subnet: String,
    pub ip: String,
    pub mac: String,
}

impl VmSpec {
    pub fn tap(&self) -> String {
        format!("tap{}", &self.port_id[..11])
    }
}

/// A VPC of a lab: VNI and one /24 subnet 198.18.`third`.0/24.
#[derive(Clone)]
pub struct VpcSpec {
    pub id: String,
    pub vni: u32,
    pub subnet: String,
    pub third: u8,
}

impl VpcSpec {
    pub fn new(n: u8, vni: u32, third: u8) -> VpcSpec {
        VpcSpec {
            id: format!("vpc-{n}"),
            vni,
            subnet: format!("subnet-{n}"),
            third,
        }
    }

    /// A VM in this VPC with host part `host_part`; `tag` keeps MACs distinct across VPCs.
    pub fn vm(&self, tag: u8, host_part: u8) -> VmSpec {
        VmSpec {
            port_id: format!("p{tag:02x}{host_part:02x}{:04x}-0000-0000", self.vni & 0xffff),
            vpc: self.id.clone(),
            subnet: self.subnet.clone(),
            ip: format!("198.18.{}.{host_part}", self.third),
            mac: format!("02:00:{tag:02x}:{:02x}:00:{host_part:02x}", self.third),
        }
    }
}

/// An alioth host: namespace, uplink address, agent, VMs.
pub struct Host {
    pub ns: Netns,
    pub ip: String,
    pub agent: Option<Agent>,
    pub vms: Vec<(VmSpec, Vm)>,
}

/// A host running the Linux kernel's vxlan + bridge, for interop and as the benchmark's peer.
pub struct KernelHost {
    pub ns: Netns,
    pub ip: String,
    pub vms: Vec<(VmSpec, Vm)>,
}

/// The systems a benchmark measures: the kernel's own data path, alioth in its default mode (the
/// skb path alone on veths, which keeps the guests' TSO), and alioth with native XDP on its ports,
/// its default on taps and NICs. A tap runs native XDP on a guest's plain frames and builds an
/// skb for its TSO super-frames (`tun_xdp_one` in `drivers/net/tun.c`); a veth cannot do both, so
/// the benches carry small frames natively, as a tap would, in a lab of their own.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum System {
    Kernel,
    Alioth,
    AliothNative,
}

impl System {
    /// The agents' flags for this system.
    pub fn agent_args(self) -> &'static [&'static str] {
        match self {
            System::AliothNative => &["--xdp-mode", "driver"],
            _ => &[],
        }
    }
}

pub struct Lab {
    pub vpcs: Vec<VpcSpec>,
    pub hosts: Vec<Host>,
    pub kernel_hosts: Vec<KernelHost>,
    pub underlay: Underlay,
}

impl Lab {
    pub fn new(vpcs: Vec<VpcSpec>) -> Result<Lab> {
        Self::with_underlay(vpcs, Underlay::new()?)
    }

    pub fn with_underlay(vpcs: Vec<VpcSpec>, underlay: Underlay) -> Result<Lab> {
        Ok(Lab {
            vpcs,
            hosts: Vec::new(),
            kernel_hosts: Vec::new(),
            underlay,
        })
    }

    /// Adds an alioth host with `vms` (not started: see `start_agents`).
    pub fn add_host(&mut self, vms: Vec<VmSpec>) -> Result<usize> {
        let n = (self.hosts.len() + self.kernel_hosts.len() + 1) as u8;
        let ns = Netns::new("alhost")?;
        let ip = self.underlay.plug(&ns, n, true)?;
        let mut host = Host {
            ns,
            ip,
            agent: None,
            vms: Vec::new(),
        };
        for spec in vms {
            let vm = overlay_vm(&host.ns, &spec.tap(), &spec)?;
            host.vms.push((spec, vm));
        }
        self.hosts.push(host);
        Ok(self.hosts.len() - 1)
    }

    /// Adds a host that runs the kernel's vxlan (VNI of the first VPC, port 4789) and a bridge, with
    /// static FDB entries toward the alioth hosts for their VMs' MACs, and `vms` behind the bridge.
    pub fn add_kernel_host(&mut self, vms: Vec<VmSpec>) -> Result<usize> {
        let n = (self.hosts.len() + self.kernel_hosts.len() + 1) as u8;
        let ns = Netns::new("alkvx")?;
        let ip = self.underlay.plug(&ns, n, false)?;
        bridged_vxlan(&ns, "vx0", "brk", self.vpcs[0].vni, &ip)?;
        let mut host = KernelHost {
            ns,
            ip,
            vms: Vec::new(),
        };
        for (i, spec) in vms.into_iter().enumerate() {
            let tap = format!("kv{i}");
            let vm = overlay_vm(&host.ns, &tap, &spec)?;
            host.ns.exec(&["ip", "link", "set", &tap, "mtu", "1450"])?;
            host.ns.exec(&["ip", "link", "set", &tap, "master", "brk"])?;
            // XDP_TX from the VM side (the benchmarks' generator) reaches a veth only with NAPI on.
            host.ns.exec(&["ethtool", "-K", &tap, "gro", "on"])?;
            host.vms.push((spec, vm));
        }
        self.kernel_hosts.push(host);
        Ok(self.kernel_hosts.len() - 1)
    }

    /// Points the kernel hosts at every VM of the first VPC on the other hosts: static FDB entries
    /// to the VM's host and permanent neighbour entries in their VMs (what l2population's ARP
    /// responder does).
    pub fn wire_kernel_hosts(&self) -> Result<()> {
        let vpc = &self.vpcs[0].id;
        let everywhere: Vec<(&str, &Vec<(VmSpec, Vm)>)> = self
            .hosts
            .iter()
            .map(|h| (h.ip.as_str(), &h.vms))
            .chain(self.kernel_hosts.iter().map(|k| (k.ip.as_str(), &k.vms)))
            .collect();
        for k in &self.kernel_hosts {
            for (host_ip, vms) in everywhere.iter().filter(|(ip, _)| *ip != k.ip) {
                for (spec, _) in vms.iter().filter(|(s, _)| &s.vpc == vpc) {
                    k.ns.exec(&[
                        "bridge",
                        "fdb",
                        "add",
                        &spec.mac,
                        "dev",
                        "vx0",
                        "dst",
                        host_ip,
                        "self",
                        "permanent",
                    ])?;
                    for (_, kvm) in &k.vms {
                        kvm.ns.exec(&[
                            "ip",
                            "neigh",
                            "replace",
                            &spec.ip,
                            "lladdr",
                            &spec.mac,
                            "dev",
                            "eth0",
                            "nud",
                            "permanent",
                        ])?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Starts an agent with `--uplink up0` on every alioth host.
    pub fn start_agents(&mut self, extra: &[&str]) -> Result<()> {
        for h in &mut self.hosts {
            let mut args = vec!["--uplink", UPLINK];
            args.extend_from_slice(extra);
            h.agent = Some(Agent::start(&h.ns, &args)?);
        }
        Ok(())
    }

    /// The goal state of host `i`: every VPC and subnet, its own VMs as ports, every other VM (on
    /// alioth and kernel hosts) as a neighbor.
    pub fn goal_state(&self, i: usize) -> GoalState {
        use OperationType::Create;
        let mut gs = GoalState {
            format_version: 1,
            ..Default::default()
        };
        for v in &self.vpcs {
            gs.vpc_states
                .push(goalstate::vpc(Create, &v.id, v.vni, 1, UpdateType::Delta));
            gs.subnet_states
                .push(goalstate::subnet(Create, &v.subnet, &v.id, v.third));
        }
        for (j, h) in self.hosts.iter().enumerate() {
            for (spec, _) in &h.vms {
                if i == j {
                    gs.port_states.push(goalstate::port(
                        Create,
                        &spec.port_id,
                        &spec.vpc,
                        &spec.subnet,
                        &spec.ip,
                        &spec.mac,
                    ));
                } else {
                    gs.neighbor_states.push(neighbor(Create, spec, &h.ip));
                }
            }
        }
        for k in &self.kernel_hosts {
            for (spec, _) in &k.vms {
                gs.neighbor_states.push(neighbor(Create, spec, &k.ip));
            }
        }
        gs
    }

    /// Pushes `goal_state(i)` to every host's agent (over gRPC, with `alioth apply`).
    pub fn push_all(&self) -> Result<()> {
        for i in 0..self.hosts.len() {
            self.push(i, &self.goal_state(i))?;
        }
        Ok(())
    }

    /// Pushes `gs` (a `GoalState`, or a `GoalStateV2`, which `alioth apply` sends over the stream)
    /// to host `i`'s agent; fails unless every resource is applied.
    pub fn push(&self, i: usize, gs: &impl serde::Serialize) -> Result<()> {
        let agent = self.hosts[i].agent.as_ref().context("agent not started")?;
        let file = std::env::temp_dir().join(format!("{}.json", netns::unique("alioth-gs-")));
        std::fs::write(&file, serde_json::to_vec(gs)?)?;
        let out = agent.cli(&["apply", "-f", file.to_str().unwrap_or_default()]);
        let _ = std::fs::remove_file(&file);
        let out = out?;
        ensure!(
            out.status.success(),
            "apply on host {i}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            agent.log_text()
        );
        Ok(())
    }

    /// The VM with port id `id`, on any host.
    pub fn vm_mut(&mut self, id: &str) -> &mut Vm {
        self.hosts
            .iter_mut()
            .flat_map(|h| &mut h.vms)
            .chain(self.kernel_hosts.iter_mut().flat_map(|k| &mut k.vms))
            .find(|(s, _)| s.port_id == id)
            .map(|(_, vm)| vm)
            .unwrap_or_else(|| panic!("no VM {id}"))
    }

    pub fn vm(&self, id: &str) -> &Vm {
        self.hosts
            .iter()
            .flat_map(|h| &h.vms)
            .chain(self.kernel_hosts.iter().flat_map(|k| &k.vms))
            .find(|(s, _)| s.port_id == id)
            .map(|(_, vm)| vm)
            .unwrap_or_else(|| panic!("no VM {id}"))
    }

    /// Frames `frame` from VM `src` to VM `dst`'s sink along the path of a two-host kernel lab
    /// (`add_kernel_host`, one VM each) with no data plane's work: a bare forwarder on the first
    /// host's tap (GRO on, as the generator has every first hop) sends each frame out of the
    /// uplink unchanged, and one on the other host's uplink puts it straight into the receiving
    /// VM's side (as `generator::best_of`). What a frame costs there bounds the ratio a data plane
    /// on the skb path can show on that path.
    pub fn bare_path(
        &self,
        src: &str,
        dst: &str,
        frame: &[u8],
        burst: u32,
        runs: usize,
    ) -> Result<crate::generator::Run> {
        let [h1, h2] = [0, 1].map(|i| self.kernel_hosts.get(i).map(|k| &k.ns));
        let (h1, h2) = (
            h1.context("no first kernel host")?,
            h2.context("no second kernel host")?,
        );
        let _out = XdpPass::forward(h1, "kv0", UPLINK, false)?;
        let _in = XdpPass::forward(h2, UPLINK, "kv0", true)?;
        crate::generator::best_of(&self.vm(src).ns, &self.vm(dst).ns, frame, burst, runs)
    }

    /// Counter `name` of host `i`'s agent (`alioth stats`).
    pub fn counter(&self, i: usize, name: &str) -> Result<u64> {
        crate::demo::counter(self.hosts[i].agent.as_ref().context("agent not started")?, name)
    }

    /// Waits until every agent has resolved the next hops of all its remote hosts.
    pub fn wait_resolved(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        for h in &self.hosts {
            let agent = h.agent.as_ref().context("agent not started")?;
            let remote = self.hosts.len() - 1 + self.kernel_hosts.len();
            loop {
                let resolved = agent.log_text().matches("underlay next hop resolved").count();
                if resolved >= remote {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{} of {remote} next hops resolved:\n{}", resolved, agent.log_text());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

/// A VM for the overlay: MTU 1450 (what DHCP tells it), every offload as the kernel defaults it
/// (checksum offload and TSO on), as a stock guest has them.
fn overlay_vm(host: &Netns, tap: &str, spec: &VmSpec) -> Result<Vm> {
    let vm = Vm::new(host, tap, &spec.mac, &format!("{}/24", spec.ip))?;
    vm.ns.exec(&["ip", "link", "set", "eth0", "mtu", "1450"])?;
    Ok(vm)
}

/// Linux's vxlan device `vx` (VNI `vni`, port 4789, from `local` over the uplink, no learning: the
/// FDB is static) in a new bridge `bridge`, both up.
pub fn bridged_vxlan(ns: &Netns, vx: &str, bridge: &str, vni: u32, local: &str) -> Result<()> {
    let vni = vni.to_string();
    ns.exec(&[
        "ip",
        "link",
        "add",
        vx,
        "type",
        "vxlan",
        "id",
        &vni,
        "dstport",
        "4789",
        "local",
        local,
        "dev",
        UPLINK,
        "nolearning",
    ])?;
    ns.exec(&["ip", "link", "add", bridge, "type", "bridge"])?;
    ns.exec(&["ip", "link", "set", vx, "master", bridge])?;
    for dev in [vx, bridge] {
        ns.exec(&["ip", "link", "set", dev, "up"])?;
    }
    Ok(())
}

/// A neighbor (a port on the host at `host_ip`).
pub fn neighbor(op: OperationType, spec: &VmSpec, host_ip: &str) -> NeighborState {
    NeighborState {
        operation_type: op as i32,
        configuration: Some(NeighborConfiguration {
            id: spec.port_id.clone(),
            vpc_id: spec.vpc.clone(),
            mac_address: spec.mac.clone(),
            host_ip_address: host_ip.to_string(),
            fixed_ips: vec![neighbor_configuration::FixedIp {
                subnet_id: spec.subnet.clone(),
                ip_address: spec.ip.clone(),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

/// A background process (iperf3 server, tcpdump) killed on drop.
pub struct Background(pub Option<Child>);

impl Background {
    /// Runs `args` in `ns` in the background, output captured.
    pub fn spawn(ns: &Netns, args: &[&str]) -> Result<Background> {
        let child = Command::new("timeout")
            .args(["-k", "2", "60", "ip", "netns", "exec", &ns.name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {args:?}"))?;
        Ok(Background(Some(child)))
    }

    /// Waits for the process to exit (SIGINT after `after` if it has not) and returns its stdout.
    pub fn finish(mut self, after: Duration) -> Result<String> {
        let mut child = self.0.take().context("already finished")?;
        let deadline = Instant::now() + after;
        while Instant::now() < deadline && child.try_wait()?.is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        if child.try_wait()?.is_none() {
            // SAFETY: kill(2) on our own child's process group leader: `timeout` forwards it.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        }
        let out = child.wait_with_output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs iperf3 from `client` to `server` (at `ip`): `extra` client arguments; returns its JSON.
pub fn iperf3(server: &Netns, client: &Netns, ip: &str, extra: &[&str]) -> Result<serde_json::Value> {
    let srv = Background::spawn(server, &["iperf3", "-s", "-1"])?;
    // iperf3 -s takes a moment to listen.
    let mut last = String::new();
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(100));
        let mut args = vec!["iperf3", "-c", ip, "-J"];
        args.extend_from_slice(extra);
        let out = client.exec_output(&args)?;
        last = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            drop(srv);
            return Ok(serde_json::from_str(&last)?);
        }
        if !last.contains("Connection refused") {
            break;
        }
    }
    bail!("iperf3 to {ip} failed: {last}")
}

/// What an `iperf3 -J` report says the receiver got, in bits per second (0 when it says nothing).
pub fn received_bps(report: &serde_json::Value) -> f64 {
    report["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0)
}

/// The average round trip of 200 pings from `ns` to `ip`, 5 ms apart, in microseconds.
pub fn ping_avg_us(ns: &Netns, ip: &str) -> Result<f64> {
    let out = ns.exec(&["ping", "-q", "-c", "200", "-i", "0.005", ip])?;
    out.lines()
        .find(|l| l.contains("rtt"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|avg| avg.parse::<f64>().ok())
        .map(|ms| ms * 1000.0)
        .context("ping summary")
}

/// Two alioth hosts with a VM each in one VPC: `prepare` runs on the lab before the agents start;
/// then goal state is pushed and the next hops resolved. Returns the lab, the first VM's port id
/// and the second VM's address.
pub fn two_hosts(prepare: impl FnOnce(&Lab) -> Result<()>) -> Result<(Lab, String, String)> {
    let a = VpcSpec::new(1, 1001, 1);
    let mut lab = Lab::new(vec![a.clone()])?;
    let (one, two) = (a.vm(1, 10), a.vm(1, 20));
    let (one_id, two_ip) = (one.port_id.clone(), two.ip.clone());
    lab.add_host(vec![one])?;
    lab.add_host(vec![two])?;
    prepare(&lab)?;
    lab.start_agents(&[])?;
    lab.push_all()?;
    lab.wait_resolved()?;
    Ok((lab, one_id, two_ip))
}
