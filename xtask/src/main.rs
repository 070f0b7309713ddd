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
    /// No arguments: a self-contained demo on a netns topology. With `--agent`: the real agent.
    Run {
        /// Exit after the demonstration instead of waiting for Ctrl-C.
        #[arg(long)]
        once: bool,
        /// Run the real agent in the foreground (arguments after `--` go to `alioth agent`).
        #[arg(long)]
        agent: bool,
        #[arg(last = true)]
        agent_args: Vec<String>,
    },
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
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Setup => setup::setup(),
        Cmd::Build { release } => {
            setup::ensure()?;
            build(release)
        }
        Cmd::Test { args } => {
            setup::ensure()?;
            test(&args)
        }
        Cmd::Run {
            once,
            agent,
            agent_args,
        } => {
            setup::ensure()?;
            build(true)?;
            if agent {
                let bin = root().join("target/release/alioth");
                let mut cmd = Command::new(bin);
                cmd.arg("agent").args(&agent_args);
                return run(&mut cmd);
            }
            let mut cmd = cargo();
            cmd.args([
                "run",
                "--release",
                "--quiet",
                "-p",
                "alioth-tests",
                "--bin",
                "alioth-demo",
                "--",
            ]);
            if once {
                cmd.arg("--once");
            }
            run(cmd.env("ALIOTH_BIN", root().join("target/release/alioth")))
        }
        Cmd::Bench { which } => {
            setup::ensure()?;
            build(true)?;
            let bin = match which {
                Bench::Dataplane => "bench-dataplane",
                Bench::Goalstate => "bench-goalstate",
            };
            run(cargo()
                .args(["run", "--release", "--quiet", "-p", "alioth-tests", "--bin", bin])
                .env("ALIOTH_BIN", root().join("target/release/alioth")))
        }
    }
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

fn build(release: bool) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "-p", "alioth"]);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd)
}

fn test(args: &[String]) -> Result<()> {
    setup::require_root()?;
    println!("== cargo fmt --check");
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo()
        .args(["fmt", "--check"])
        .current_dir(root().join("dataplane-ebpf/xdp")))?;
    println!("== cargo clippy -D warnings");
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--quiet",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The integration tests run the real binary; build it first so it is never stale.
    build(false)?;
    println!("== cargo test (host, BPF_PROG_TEST_RUN, netns)");
    run(cargo().args(["test", "--workspace"]).args(args))
}
