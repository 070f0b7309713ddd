//! `cargo xtask`: setup (toolchain), build, run, test, bench.
//!
//! Everything here shells out to the real tools; it needs nothing but the Rust toolchain to build,
//! so it works on a fresh machine before anything else is installed.

mod setup;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what building and testing need (Debian packages, bpf-linker), skipping what is present.
    Setup,
    /// Build the XDP object and the `alioth` binary that embeds it.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Lint (fmt, clippy) and run every test: host, BPF_PROG_TEST_RUN, and netns integration (as root).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// No arguments: a self-contained demo on a netns topology. With `--iface` (or `--agent`): the
    /// real agent in the foreground.
    Run {
        /// Exit after the demonstration instead of waiting for Ctrl-C.
        #[arg(long)]
        once: bool,
        /// The host's interface: its addresses are the host IPs goal state is addressed to
        /// (GoalStateV2 host_resources). Runs the real agent.
        #[arg(long)]
        iface: Option<String>,
        /// Run the real agent without naming an interface (host IPs: every local address).
        #[arg(long)]
        agent: bool,
        /// More arguments for `alioth agent`, after `--`.
        #[arg(last = true)]
        agent_args: Vec<String>,
    },
    /// Build the container image (static binary on scratch) into target/alioth-<version>.oci.tar.
    Image,
    /// Benchmarks; each prints a table.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// ns/packet of each port-program path through BPF_PROG_TEST_RUN, beside an XDP_PASS program.
    Dataplane,
    /// Goal-state programming: 1 port + N neighbors, streamed-message latency, 1M ports + 100k neighbors.
    Goalstate,
    /// VM -> VM across two hosts: Linux vxlan + bridge vs alioth (pps, TCP, ping), encap/decap ns.
    Overlay,
    /// perfdhcp DORA exchanges/s, drops and latency: dnsmasq as Neutron runs it vs alioth's XDP server.
    Dhcp,
    /// Security groups: ns per frame (established, new flow at 1 to 10,000 rules), pps through
    /// 1,000 rules vs Neutron's iptables_hybrid layout, programming 1,000 ports x 100 rules.
    Secgroups,
    /// VM -> VM of another subnet across two hosts: Linux routing between bridges with vxlan vs
    /// alioth's router (pps, TCP, ping).
    Routing,
    /// An elastic IP both ways: iptables DNAT/SNAT as Neutron's DVR floating IPs vs alioth (pps,
    /// TCP, ping).
    Nat,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::setup(),
        Cmd::Build { release } => {
            setup::ensure()?;
            build(release, false)
        }
        Cmd::Test { args } => {
            setup::ensure()?;
            test(&args)
        }
        Cmd::Run {
            once,
            iface,
            agent,
            agent_args,
        } => {
            setup::ensure()?;
            let real = agent || iface.is_some();
            // The demo's labs need the lab build (`alioth xdp-pass`); the real agent does not.
            build(true, !real)?;
            if real {
                let mut cmd = Command::new(root().join("target/release/alioth"));
                cmd.arg("agent");
                if let Some(iface) = &iface {
                    for ip in interface_addresses(iface)? {
                        cmd.args(["--host-ip", &ip]);
                    }
                }
                return run(cmd.args(&agent_args));
            }
            run_tests_bin("alioth-demo", if once { &["--once"] } else { &[] })
        }
        Cmd::Image => {
            setup::ensure()?;
            setup::ensure_packages(&["buildah"])?;
            image()
        }
        Cmd::Bench { which } => {
            setup::ensure()?;
            build(true, true)?;
            // The build leaves about 100 MB of dirty pages (the binaries), which the kernel would
            // otherwise write back some 30 s later, in the middle of the measurements.
            run(&mut Command::new("sync"))?;
            let bin = match which {
                Bench::Dataplane => "bench-dataplane",
                Bench::Goalstate => "bench-goalstate",
                Bench::Overlay => "bench-overlay",
                Bench::Dhcp => "bench-dhcp",
                Bench::Secgroups => {
                    // The peer: iptables, as Neutron's iptables_hybrid driver uses it.
                    setup::ensure_packages(&["iptables"])?;
                    "bench-secgroups"
                }
                Bench::Routing => "bench-routing",
                Bench::Nat => {
                    setup::ensure_packages(&["iptables"])?;
                    "bench-nat"
                }
            };
            run_tests_bin(bin, &[])
        }
    }
}

/// IPv4 and IPv6 addresses of `iface` (from `ip -o addr`).
fn interface_addresses(iface: &str) -> Result<Vec<String>> {
    let out = Command::new("ip")
        .args(["-o", "addr", "show", "dev", iface])
        .output()
        .context("run ip")?;
    if !out.status.success() {
        bail!("no interface {iface}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let addrs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace().skip_while(|w| *w != "inet" && *w != "inet6");
            w.next()?;
            Some(w.next()?.split('/').next()?.to_string())
        })
        .collect();
    if addrs.is_empty() {
        bail!("{iface} has no address");
    }
    Ok(addrs)
}

/// Runs a binary of the tests crate (demo, benchmarks) against the release `alioth`.
fn run_tests_bin(bin: &str, args: &[&str]) -> Result<()> {
    run(cargo()
        .args(["run", "--release", "--quiet", "-p", "alioth-tests", "--bin", bin, "--"])
        .args(args)
        .env("ALIOTH_BIN", root().join("target/release/alioth")))
}

/// The workspace root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Builds `alioth`; with `lab`, the one tests, labs and benchmarks run (`--features lab`: the lab
/// object and `alioth xdp-pass` in it too), the same features `cargo test --workspace` gives it.
fn build(release: bool, lab: bool) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "-p", "alioth"]);
    if release {
        cmd.arg("--release");
    }
    if lab {
        cmd.args(["--features", "lab"]);
    }
    run(&mut cmd)
}

/// A statically linked `alioth` (glibc, crt-static) on scratch, built with buildah from the
/// repository's Containerfile and written as an OCI archive.
fn image() -> Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    let target = "x86_64-unknown-linux-gnu";
    // An explicit --target keeps crt-static away from build scripts and proc macros.
    run(cargo()
        .args(["build", "--release", "-p", "alioth", "--target", target])
        .env("RUSTFLAGS", "-C target-feature=+crt-static -C strip=symbols"))?;
    let ctx = root().join("target/image");
    std::fs::create_dir_all(&ctx)?;
    std::fs::copy(
        root().join(format!("target/{target}/release/alioth")),
        ctx.join("alioth"),
    )?;
    let out = root().join(format!("target/alioth-{version}.oci.tar"));
    let _ = std::fs::remove_file(&out);
    let tag = format!("localhost/alioth:{version}");
    let buildah = |args: &[&str]| {
        let mut c = Command::new("buildah");
        // vfs + chroot: no kernel overlay or OCI runtime needed (the image has no RUN step anyway).
        c.args(["--storage-driver", "vfs"]).args(args);
        c
    };
    let containerfile = root().join("deploy/Containerfile");
    let (containerfile, ctx_s) = (
        containerfile.to_string_lossy().into_owned(),
        ctx.to_string_lossy().into_owned(),
    );
    run(&mut buildah(&[
        "bud",
        "--isolation",
        "chroot",
        "-q",
        "-f",
        &containerfile,
        "-t",
        &tag,
        &ctx_s,
    ]))?;
    let dest = format!("oci-archive:{}:alioth:{version}", out.display());
    run(&mut buildah(&["push", "-q", &tag, &dest]))?;
    let size = std::fs::metadata(&out)?.len() as f64 / 1048576.0;
    let binary = std::fs::metadata(ctx.join("alioth"))?.len() as f64 / 1048576.0;
    println!(
        "image: {} ({size:.1} MiB; the static binary is {binary:.1} MiB)",
        out.display()
    );
    Ok(())
}

fn test(args: &[String]) -> Result<()> {
    setup::require_root()?;
    setup::warn_if_low_disk(&root());
    println!("== cargo fmt --check");
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo()
        .args(["fmt", "--check"])
        .current_dir(root().join("dataplane-ebpf/xdp")))?;
    println!("== cargo clippy -D warnings");
    // The workspace, then the agent as shipped: without the lab feature the workspace turns on.
    for which in [&["--workspace"][..], &["-p", "alioth"]] {
        run(cargo()
            .arg("clippy")
            .args(which)
            .args(["--all-targets", "--quiet", "--", "-D", "warnings"]))?;
    }
    // The integration tests run the real binary; build it first so it is never stale.
    build(false, true)?;
    println!("== cargo test (host, BPF_PROG_TEST_RUN, netns)");
    run(cargo()
        .args(["test", "--workspace"])
        .args(args)
        .env("ALIOTH_KUBERNETES_VALIDATE", setup::kubernetes_validate()))
}
