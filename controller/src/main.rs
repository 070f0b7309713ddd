//! `alioth`: the agent and its command-line clients.

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

use alioth::{agent, cli};

/// Applying a large goal state is allocation-bound (ids, resources, record rows); glibc's
/// malloc took about a quarter of the agent's time there.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "alioth",
    version,
    about = "XDP host data plane for cloud virtual networks (Alcor goal-state compatible)",
    after_help = "Environment: ALIOTH_LOG sets the log filter (tracing EnvFilter syntax; default info), \
                  e.g. ALIOTH_LOG=info,alioth::controller=debug. Every flag has an ALIOTH_* variable too, \
                  named in each subcommand's --help."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr: text, or json (one object per line, for log collectors).
    #[arg(long, global = true, value_enum, default_value = "text", env = "ALIOTH_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: load the XDP data plane and serve alcor.schema.GoalStateProvisioner.
    Agent(agent::AgentArgs),
    /// Push a goal-state file to the agent and print the per-resource reply.
    Apply(cli::ApplyArgs),
    /// Attached interfaces and map sizes.
    Status(cli::InspectArgs),
    /// Programmed ports.
    Ports(cli::InspectArgs),
    /// The routes of the subnets on routers, as the data plane holds them (`ROUTES`).
    Routes(cli::InspectArgs),
    /// Elastic IPs: each one's port and private address, and whether the data plane translates it
    /// (`ELASTIC_IPS`).
    ElasticIps(cli::InspectArgs),
    /// The distributed SNAT's flows: which port's address and port each host port carries, to
    /// where (`SNAT_FLOWS`).
    Snat(cli::InspectArgs),
    /// One port: its addresses, security groups and their effective rules, and the flows its
    /// connection-tracking zone holds.
    Port(cli::PortArgs),
    /// gRPC health check of an agent (exit 0 when SERVING): for probes and scripts.
    Health(cli::HealthArgs),
    /// Packet counters by action and drop reason: the host's, or one port's (`--port`).
    Stats(cli::StatsArgs),
    /// The agent's record of goal state, read offline from its state directory.
    State(cli::StateArgs),
    /// Run one synthetic frame from a port through the live data plane (BPF_PROG_TEST_RUN on the
    /// pinned maps, with counters of its own) and through the same pipeline on the host, which
    /// lists every lookup; exit 2 when they disagree.
    Trace(cli::TraceArgs),
    /// Stream the data plane's drop events (and, with --sample, one forwarded frame in N) as they
    /// happen: reason, port, MACs, addresses, protocol and ports.
    Monitor(cli::MonitorArgs),
    /// Ask the agent to probe an address from a port: ICMP echo requests through the port's own
    /// program and maps (and the overlay); prints each round trip or where the path broke. Exit 0
    /// when every probe was answered, 1 otherwise.
    Echo(cli::EchoArgs),
    /// Print a completion script for SHELL (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff): `alioth man | man -l -`.
    Man,
    /// Mount bpffs at /sys/fs/bpf when the machine has none (the DaemonSet's init container: a
    /// mount made in the agent's own container would die with it, and the pins with it).
    MountBpffs,
    /// Lab helper (built with `--features lab`): attach a pass-through XDP program to the VM side of a veth, so that native-mode
    /// XDP_TX replies reach it (veth flushes them only to a peer running XDP). Not needed for VM taps.
    #[cfg(feature = "lab")]
    XdpPass {
        /// The veth (VM side) to attach to.
        #[arg(long)]
        iface: String,
        /// bpffs path that keeps the link attached after this command exits; remove it to detach.
        #[arg(long)]
        pin: std::path::PathBuf,
        /// Attach the benchmarks' packet sink on TC ingress instead: drops UDP to the discard port
        /// (9) and passes everything else.
        #[arg(long)]
        sink: bool,
        /// Attach the benchmarks' bare forwarder on TC ingress instead: every frame redirected,
        /// unchanged, out of this interface (into its peer with --peer).
        #[arg(long, conflicts_with = "sink")]
        forward_to: Option<String>,
        #[arg(long, requires = "forward_to")]
        peer: bool,
    },
}

/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() {
    // Memory freed after one large message is kept for a second (mimalloc's default is 10 ms)
    // instead of going back to the kernel at once: the next one reuses it without page faults.
    // SAFETY: sets an option before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1000) };
    // No transparent huge pages: each first touch of a 2 MiB page zeroes all of it, which on a
    // VM whose host backs guest memory lazily cost milliseconds per page of a large message's
    // fresh memory (the first 10,000-neighbor message took 62-110 ms with them, 46-85 without).
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("ALIOTH_LOG").unwrap_or_else(|_| "info".into());
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        // A log file or journald gets plain text; colours are for a terminal.
        LogFormat::Text => log
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => log.json().init(),
    }
    let code = match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("alioth: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn run(cli: Cli) -> Result<i32> {
    // Commands that use pins, before the runtime starts threads (see `bpffs`).
    let pinless = matches!(
        cli.command,
        Command::Apply(_)
            | Command::Echo(_)
            | Command::Health(_)
            | Command::State(_)
            | Command::Completions { .. }
            | Command::Man
    );
    if !pinless {
        alioth::dataplane::bpffs::leave_private_mount_namespace()?;
    }
    // Listings piped into `head` and the like end quietly when the reader goes, as other tools
    // do, instead of panicking on EPIPE (Rust ignores SIGPIPE). Not for commands with sockets.
    if matches!(
        cli.command,
        Command::State(_)
            | Command::Ports(_)
            | Command::Routes(_)
            | Command::ElasticIps(_)
            | Command::Snat(_)
            | Command::Port(_)
            | Command::Stats(_)
            | Command::Monitor(_)
            | Command::Completions { .. }
            | Command::Man
    ) {
        // SAFETY: restores the default disposition of one signal, before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let rt = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Agent(args) => rt.block_on(agent::run(args)).map(|()| 0),
        Command::Apply(args) => rt.block_on(cli::apply(args)),
        Command::Status(args) => cli::status(args).map(|()| 0),
        Command::Ports(args) => cli::ports(args).map(|()| 0),
        Command::Routes(args) => cli::routes(args).map(|()| 0),
        Command::ElasticIps(args) => cli::elastic_ips(args).map(|()| 0),
        Command::Snat(args) => cli::snat(args).map(|()| 0),
        Command::Port(args) => cli::port(args).map(|()| 0),
        Command::Health(args) => rt.block_on(cli::health(args)),
        Command::Stats(args) => cli::stats(args).map(|()| 0),
        Command::Monitor(args) => rt.block_on(cli::monitor(args)).map(|()| 0),
        Command::Echo(args) => rt.block_on(cli::echo(args)),
        Command::State(args) => cli::state(args).map(|()| 0),
        Command::Trace(args) => cli::trace(args),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "alioth", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(0)
        }
        Command::MountBpffs => {
            alioth::dataplane::bpffs::ensure(std::path::Path::new(agent::DEFAULT_PIN_DIR), true).map(|()| 0)
        }
        #[cfg(feature = "lab")]
        Command::XdpPass {
            iface,
            pin,
            forward_to: Some(to),
            peer,
            ..
        } => alioth::dataplane::attach_forward(&iface, &to, peer, &pin).map(|()| 0),
        #[cfg(feature = "lab")]
        Command::XdpPass { iface, pin, sink, .. } => {
            use alioth::dataplane::object::{PASS_PROGRAM, SINK_PROGRAM};
            let program = if sink { SINK_PROGRAM } else { PASS_PROGRAM };
            alioth::dataplane::attach_pinned(program, &iface, &pin).map(|()| 0)
        }
    }
}
