//! Network namespaces and veths for tests: unique names, bounded commands, cleanup on drop.
//!
//! Nothing is configured in the root namespace: links are created directly inside the test's own
//! namespaces, and every address comes from 198.18.0.0/15.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// Longest a single test command may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A unique, short tag for names created by this process.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command with a time bound; returns its output whatever the exit status.
pub fn run_output(args: &[&str]) -> Result<Output> {
    let secs = COMMAND_TIMEOUT.as_secs().to_string();
    Command::new("timeout")
        .args(["-k", "2", &secs])
        .args(args)
        .output()
        .with_context(|| format!("run {args:?}"))
}

/// Runs a command; fails with its output unless it exits 0.
pub fn run(args: &[&str]) -> Result<String> {
    let out = run_output(args)?;
    if !out.status.success() {
        bail!(
            "{args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// 600 pings 10 ms apart (6 s) running in the background, for the restart tests: not one may be
/// lost while the agent is killed and another takes over.
pub struct SteadyPings(std::process::Child);

impl SteadyPings {
    /// Waits for the pings; fails with ping's summary unless every one was answered.
    pub fn all_answered(self) -> Result<()> {
        let out = self.0.wait_with_output()?;
        let summary = String::from_utf8_lossy(&out.stdout);
        if !summary.contains("600 packets transmitted, 600 received") {
            bail!("ping lost packets: {summary}");
        }
        Ok(())
    }

    /// Waits for the pings; how many were answered.
    pub fn answered(self) -> Result<u64> {
        let out = self.0.wait_with_output()?;
        let summary = String::from_utf8_lossy(&out.stdout);
        let received = summary
            .split(", ")
            .find_map(|part| part.strip_suffix(" received"))
            .and_then(|n| n.trim().parse().ok());
        received.with_context(|| format!("no ping summary: {summary}"))
    }
}

/// A network namespace that is deleted (with everything in it) when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Result<Self> {
        let name = unique(prefix);
        run(&["ip", "netns", "add", &name])?;
        let ns = Netns { name };
        // DHCP clients rewrite resolv.conf: `ip netns exec` bind-mounts this one over /etc/resolv.conf.
        let etc = format!("/etc/netns/{}", ns.name);
        std::fs::create_dir_all(&etc)?;
        std::fs::write(format!("{etc}/resolv.conf"), "# alioth test namespace\n")?;
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs a command inside the namespace; fails unless it exits 0.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    /// Runs a command inside the namespace, whatever its exit status.
    pub fn exec_output(&self, args: &[&str]) -> Result<Output> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run_output(&full)
    }

    /// Counter `name` of interface `iface` here (`/sys/class/net/<iface>/statistics/<name>`).
    pub fn link_counter(&self, iface: &str, name: &str) -> Result<u64> {
        let path = format!("/sys/class/net/{iface}/statistics/{name}");
        self.exec(&["cat", &path])?.trim().parse().context(path)
    }

    /// A `Command` that runs inside the namespace (for long-running processes).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Starts `SteadyPings` from this namespace to `ip`.
    pub fn steady_pings(&self, ip: &str) -> Result<SteadyPings> {
        let child = self
            .command("timeout")
            .args(["30", "ping", "-q", "-i", "0.01", "-c", "600", "-W", "1", ip])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("ping {ip} from {}", self.name))?;
        Ok(SteadyPings(child))
    }

    /// `nsenter` arguments that enter only the network namespace. BPF tools need this: `ip netns exec`
    /// also unshares the mounts and remounts /sys, hiding the machine's bpffs at /sys/fs/bpf.
    pub fn nsenter(&self) -> [String; 2] {
        ["nsenter".to_string(), format!("--net=/run/netns/{}", self.name)]
    }

    /// Runs a command in the network namespace only (see `nsenter`), whatever its exit status.
    pub fn net_output(&self, args: &[&str]) -> Result<Output> {
        let pre = self.nsenter();
        let mut full: Vec<&str> = pre.iter().map(String::as_str).collect();
        full.extend_from_slice(args);
        run_output(&full)
    }

    /// Creates a veth pair `here` (in self) <-> `there` (in `other`), both up.
    pub fn veth(&self, here: &str, other: &Netns, there: &str) -> Result<()> {
        run(&[
            "ip",
            "-n",
            &self.name,
            "link",
            "add",
            here,
            "type",
            "veth",
            "peer",
            "name",
            there,
            "netns",
            &other.name,
        ])?;
        self.exec(&["ip", "link", "set", here, "up"])?;
        other.exec(&["ip", "link", "set", there, "up"])?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Kill what still runs inside, then delete the namespace (its veths go with it).
        let _ = run_output(&["ip", "netns", "pids", &self.name]).map(|o| {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        });
        let _ = run_output(&["ip", "netns", "del", &self.name]);
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

/// Runs `f` on a thread of its own in network namespace `ns` (`setns` changes only the calling
/// thread's namespace).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || -> Result<T> {
        let ns = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
        // SAFETY: setns on this thread only (it exits afterwards); the fd is valid.
        if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread in {ns} panicked"))?
}

/// Whether interface `iface` of namespace `ns` runs one of alioth's programs: in XDP, or on TC
/// ingress (tcx, which neither `ip link` nor this machine's bpftool shows).
pub fn runs_alioth(ns: &str, iface: &str) -> Result<bool> {
    let iface = iface.to_string();
    in_netns(ns, move || {
        let Some(index) = alioth::net::interfaces::ifindex(&iface) else {
            return Ok(false);
        };
        Ok(alioth::net::links::xdp_of(index)?.is_some() || alioth::dataplane::attach::tc_program_on(&iface).is_some())
    })
}

/// The pass-through XDP program on an interface, pinned so that it outlives the `alioth xdp-pass`
/// command; dropped, the pin goes and the program detaches.
pub struct XdpPass {
    pin: String,
}

impl XdpPass {
    /// Native-mode XDP_TX and redirected frames reach a veth only if its peer runs XDP: this is that
    /// XDP on `iface` in `ns`.
    pub fn attach(ns: &Netns, iface: &str) -> Result<XdpPass> {
        Self::attach_program(ns, iface, false)
    }

    /// `attach`, or with `sink` the benchmarks' packet sink on TC ingress (`alioth xdp-pass --sink`).
    fn attach_program(ns: &Netns, iface: &str, sink: bool) -> Result<XdpPass> {
        Self::helper(ns, iface, if sink { &["--sink"] } else { &[] })
    }

    /// The benchmarks' bare forwarder on TC ingress of `iface`: every frame redirected, unchanged,
    /// out of `to` (into its peer with `peer`), as `alioth xdp-pass --forward-to`.
    pub fn forward(ns: &Netns, iface: &str, to: &str, peer: bool) -> Result<XdpPass> {
        let mut extra = vec!["--forward-to", to];
        if peer {
            extra.push("--peer");
        }
        Self::helper(ns, iface, &extra)
    }

    fn helper(ns: &Netns, iface: &str, extra: &[&str]) -> Result<XdpPass> {
        let pin = format!("/sys/fs/bpf/{}", unique("alioth-pass-"));
        let bin = crate::binary::alioth_bin()?;
        let mut args = vec![
            bin.to_str().unwrap_or_default(),
            "xdp-pass",
            "--iface",
            iface,
            "--pin",
            &pin,
        ];
        args.extend_from_slice(extra);
        let out = ns.net_output(&args)?;
        if !out.status.success() {
            bail!(
                "xdp-pass on {}/{iface}: {}",
                ns.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(XdpPass { pin })
    }
}

impl Drop for XdpPass {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pin);
    }
}

/// A "VM": a namespace whose `eth0` is the peer of `tap` in the host namespace.
pub struct Vm {
    pub ns: Netns,
    pass: XdpPass,
}

impl Vm {
    /// Creates the VM namespace, the veth pair, and configures `eth0` with `mac` and `cidr_addr`.
    pub fn new(host: &Netns, tap: &str, mac: &str, cidr_addr: &str) -> Result<Self> {
        let ns = Netns::new("alvm")?;
        host.veth(tap, &ns, "eth0")?;
        Self::configure(ns, mac, cidr_addr)
    }

    /// A VM whose `eth0` is interface `iface` of `from`, moved into it: the far end of a wire
    /// (`overlay::Underlay::wire`'s parked peer).
    pub fn adopt(from: &Netns, iface: &str, mac: &str, cidr_addr: &str) -> Result<Self> {
        let ns = Netns::new("alvm")?;
        from.exec(&["ip", "link", "set", iface, "netns", &ns.name])?;
        ns.exec(&["ip", "link", "set", iface, "name", "eth0"])?;
        ns.exec(&["ip", "link", "set", "eth0", "up"])?;
        Self::configure(ns, mac, cidr_addr)
    }

    fn configure(ns: Netns, mac: &str, cidr_addr: &str) -> Result<Self> {
        ns.exec(&["ip", "link", "set", "eth0", "address", mac])?;
        if !cidr_addr.is_empty() {
            ns.exec(&["ip", "addr", "add", cidr_addr, "dev", "eth0"])?;
        }
        let pass = XdpPass::attach(&ns, "eth0")?;
        Ok(Vm { ns, pass })
    }

    /// Takes the lab's program off eth0: a guest as its users run it (veth: frames redirected in
    /// native XDP then reach it only with GRO on or a program of its own). Waits until it is gone.
    pub fn plain(&mut self) -> Result<()> {
        let _ = std::fs::remove_file(&self.pass.pin);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self
            .ns
            .exec(&["ip", "-o", "link", "show", "dev", "eth0"])?
            .contains("prog/xdp")
        {
            if std::time::Instant::now() > deadline {
                bail!("the lab's XDP program is still on {}'s eth0", self.ns.name);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(())
    }

    /// Swaps eth0's pass-through program for the benchmarks' packet sink on TC ingress: UDP to the
    /// discard port is dropped as it arrives (the veth counts it received) instead of climbing the
    /// VM's stack. eth0 then runs no XDP, in every system measured, and has GRO on: frames a
    /// native-mode program redirects into a veth reach it only through its NAPI.
    pub fn sink(&mut self) -> Result<()> {
        self.plain()?;
        self.ns.exec(&["ethtool", "-K", "eth0", "gro", "on"])?;
        self.pass = XdpPass::attach_program(&self.ns, "eth0", true)?;
        Ok(())
    }
}

/// A scratch directory (goal-state files, leases, client scripts) removed on drop.
pub struct Scratch(std::path::PathBuf);

impl Scratch {
    pub fn new(prefix: &str) -> Result<Self> {
        let p = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&p)?;
        Ok(Scratch(p))
    }

    /// The path of `name` inside the directory.
    pub fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
