//! `alioth agent`: load the data plane, serve goal state, keep ports attached, clean up on exit.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alioth_proto::schema::goal_state_provisioner_server::GoalStateProvisionerServer;
use anyhow::{Context, Result};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Mutex;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::api::admission::bytes::ByteGate;
use crate::api::admission::{admit, AdmissionStats, ConnectionLimits};
use crate::api::service::{Provisioner, Provisioning};
use crate::controller::overlay::{Overlay, OverlayConfig};
use crate::controller::{Controller, Options, PortsWithoutGroups};
use crate::dataplane::{AttachMode, BpfLogLevel};
use crate::goalstate::validate::Naming;
use crate::net::netlink::Change;
use crate::store::Store;

pub mod instance;
mod load;

/// Pause after an underlay refresh that notifications asked for: our own neighbour solicitations
/// notify too, and a change must still reach the next hops well within 100 ms.
const UNDERLAY_PAUSE_MS: u64 = 20;

/// Default gRPC address (Alcor's agents listen on 50001).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50001";
/// HTTP/2 flow-control window per stream (the connection gets twice this).
pub const H2_WINDOW: u32 = 8 << 20;
/// Default directory of the agent's record of applied goal state.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/alioth";
/// Default bpffs directory for this agent's pins.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/alioth";

/// Where the agent serves gRPC: a TCP address, or a unix socket (`unix:/run/alioth/grpc.sock`),
/// which only local processes allowed by its file mode (0600, root) can reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("unix:") {
            Some("") => Err("unix: needs a socket path (unix:/run/alioth/grpc.sock)".into()),
            Some(path) => Ok(Listen::Unix(path.into())),
            None => s
                .parse()
                .map(Listen::Tcp)
                .map_err(|e| format!("{s:?} is neither HOST:PORT nor unix:PATH ({e})")),
        }
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct AgentArgs {
    /// gRPC listen address: HOST:PORT, or unix:PATH for a unix socket.
    #[arg(long, default_value = DEFAULT_LISTEN, env = "ALIOTH_LISTEN")]
    pub listen: Listen,
    /// bpffs directory for this agent's pinned maps (one per agent instance).
    #[arg(long, default_value = DEFAULT_PIN_DIR, env = "ALIOTH_PIN_DIR")]
    pub pin_dir: PathBuf,
    /// XDP attach mode for port interfaces.
    #[arg(long, value_enum, default_value = "auto", env = "ALIOTH_XDP_MODE")]
    pub xdp_mode: AttachMode,
    /// Host interface of a port: `{id11}` = first 11 characters of the port id (Neutron/ACA `tap` naming),
    /// `{id}` = the whole id, `{name}` = the port name.
    #[arg(long, default_value = "tap{id11}", env = "ALIOTH_PORT_IFACE")]
    pub port_iface: String,
    /// Level of the XDP program's log records (drained into this agent's log).
    #[arg(long, value_enum, default_value = "warn", env = "ALIOTH_BPF_LOG_LEVEL")]
    pub bpf_log_level: BpfLogLevel,
    /// This host's addresses for GoalStateV2 `host_resources` (repeatable); default: every
    /// address of this network namespace.
    #[arg(long = "host-ip", env = "ALIOTH_HOST_IPS", value_delimiter = ',')]
    pub host_ip: Vec<std::net::IpAddr>,
    /// Prometheus /metrics address; `off` disables it.
    #[arg(long, default_value = "127.0.0.1:9464", env = "ALIOTH_METRICS_LISTEN")]
    pub metrics_listen: String,
    /// Serve gRPC over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "ALIOTH_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "ALIOTH_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Accept only clients with a certificate issued by this CA (PEM); needs --tls-cert.
    #[arg(long, env = "ALIOTH_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Largest gRPC message accepted or sent.
    #[arg(long, default_value_t = 256 << 20, env = "ALIOTH_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: usize,
    /// Goal-state bytes in flight across all connections (messages received and not yet
    /// answered); more waits. Default: twice --max-message-bytes.
    #[arg(long, env = "ALIOTH_MAX_BYTES_IN_FLIGHT")]
    pub max_bytes_in_flight: Option<u64>,
    /// gRPC connections held at once; more are closed as they arrive.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..), env = "ALIOTH_MAX_CONNECTIONS")]
    pub max_connections: u32,
    /// Seconds after which a gRPC connection that neither side has sent a byte on is closed
    /// (0: never). Clients reconnect when they next call.
    #[arg(long, default_value_t = 300, env = "ALIOTH_GRPC_IDLE_TIMEOUT")]
    pub grpc_idle_timeout: u64,
    /// Directory of this agent's record of applied goal state (one per agent instance).
    #[arg(long, default_value = DEFAULT_STATE_DIR, env = "ALIOTH_STATE_DIR")]
    pub state_dir: PathBuf,
    /// Underlay interface for the VXLAN overlay (the uplink program is attached to it); `auto`: the
    /// interface of the main table's default route. Without it the agent switches between local
    /// ports only.
    #[arg(long, env = "ALIOTH_UPLINK")]
    pub uplink: Option<String>,
    /// Tunnel endpoint address of this host; default: the uplink's first IPv4 address.
    #[arg(long, env = "ALIOTH_UPLINK_IP", requires = "uplink")]
    pub uplink_ip: Option<std::net::Ipv4Addr>,
    /// Interface the NAT program's next-hop lookups start from, created (a dummy, or an IFB) with
    /// IPv4 forwarding on (it receives nothing, so the host forwards nothing more); `off`: none.
    #[arg(long, default_value = "alioth-fib", env = "ALIOTH_FIB_SOURCE")]
    pub fib_source: String,
    /// VXLAN UDP port (the IANA port; Linux's vxlan default is 8472 unless `dstport 4789`).
    #[arg(long, default_value_t = alioth_common::vxlan::DEFAULT_PORT, env = "ALIOTH_VXLAN_PORT")]
    pub vxlan_port: u16,
    /// DHCP lease time in seconds, unless a subnet's `lease-time` option says otherwise.
    #[arg(long, default_value_t = crate::goalstate::dhcp::DEFAULT_LEASE_SECS, env = "ALIOTH_DHCP_LEASE_TIME")]
    pub dhcp_lease_time: u32,
    /// What a port that names no security group gets: `allow` (unfiltered) or `deny` (filtered as
    /// one whose groups allow nothing, Neutron's port security).
    #[arg(long, value_enum, default_value = "allow", env = "ALIOTH_PORTS_WITHOUT_GROUPS")]
    pub ports_without_groups: PortsWithoutGroups,
    /// Detach every port, remove this agent's pins and state, and exit.
    #[arg(long)]
    pub reset: bool,
}

/// Raises the soft limit of open files to the hard one: every port's links, every connection and
/// the record take descriptors, and the usual soft limit (1,024) ran out under 1,100 idle gRPC
/// connections.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let (Some(soft), hard) = (lim.current, lim.maximum) else {
        return;
    };
    if hard.is_some_and(|h| soft >= h) {
        return;
    }
    let raised = Rlimit {
        current: hard,
        maximum: hard,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => tracing::info!(from = soft, to = ?hard, "open-files limit raised"),
        Err(e) => tracing::warn!("open-files limit stays {soft}: {e}"),
    }
}

pub async fn run(args: AgentArgs) -> Result<()> {
    crate::dataplane::object::xdp_object()?;
    raise_fd_limit();
    if args.reset {
        return reset(&args);
    }
    // Everything that can be misconfigured is checked before the data plane is touched: a bad
    // start must leave the running data plane (and a previous agent's program) alone.
    let tls = tls_config(&args)?;
    let listener = Listener::bind(&args.listen).await?;
    // Held until the agent exits.
    let _instance = instance::take(&args.state_dir, &listener.address()?)?;
    let uplink = match &args.uplink {
        Some(name) => Some(Overlay::check(OverlayConfig {
            uplink: uplink_name(name)?,
            ip: args.uplink_ip,
            vxlan_port: args.vxlan_port,
        })?),
        None => None,
    };
    let ((store, state), (mut dp, logger)) = load::record_and_dataplane(&load::Places {
        state_dir: &args.state_dir,
        pin_dir: &args.pin_dir,
        mode: args.xdp_mode,
        log: args.bpf_log_level,
    })?;
    let overlay = match uplink {
        Some((cfg, info)) => Some(Overlay::start(cfg, info, &mut dp)?),
        None => None,
    };
    if overlay.is_some() && args.fib_source != "off" {
        // Without it, translated frames still leave; the kernel resolves each one's next hop.
        match crate::net::fib_source::ensure(&args.fib_source) {
            Ok(index) => dp.set_fib_source(index)?,
            Err(e) => tracing::warn!("no NAT lookup source: {e:#}"),
        }
    }
    if let Some(logger) = logger {
        drain_bpf_log(logger)?;
    }
    let events = dp.take_events()?;
    let naming = Naming {
        iface_template: args.port_iface.clone(),
        ..Default::default()
    };
    let options = Options {
        dhcp_lease: args.dhcp_lease_time,
        ports_without_groups: args.ports_without_groups,
    };
    let controller = Controller::restore(dp, naming, state, store, overlay, &options)?;
    let controller = Arc::new(Mutex::new(controller));
    watch_events(events, controller.clone())?;
    let tasks = [follow_links(controller.clone())?, retry_and_refresh(controller.clone())];

    // The gRPC server's gates, which /metrics shows.
    let admission = Arc::new(AdmissionStats::default());
    if args.metrics_listen != "off" {
        match tokio::net::TcpListener::bind(&args.metrics_listen).await {
            Ok(l) => {
                tracing::info!(listen = %args.metrics_listen, "metrics at /metrics");
                tokio::spawn(crate::api::exporter::serve(l, controller.clone(), admission.clone()));
            }
            // Metrics are not worth failing the data plane for.
            Err(e) => tracing::warn!(listen = %args.metrics_listen, "metrics disabled: {e}"),
        }
    }
    let host_ips = if args.host_ip.is_empty() {
        crate::api::hosts::local_addresses()
    } else {
        args.host_ip.clone()
    };
    tracing::info!(listen = %listener.address()?, pin_dir = %args.pin_dir.display(), ?host_ips, "alioth agent ready");
    let server = Server {
        controller,
        host_ips,
        limits: args.limits(),
        admission,
        tls,
    };
    server.serve_on(listener).await?;
    for task in tasks {
        task.abort();
        let _ = task.await;
    }
    // Links and maps stay pinned: the data plane keeps forwarding until an agent takes over again
    // (or `alioth agent --reset` removes it).
    tracing::info!("exiting; the data plane keeps forwarding");
    Ok(())
}

impl AgentArgs {
    /// What the gRPC server admits, from the flags.
    fn limits(&self) -> ServeLimits {
        ServeLimits {
            max_message_bytes: self.max_message_bytes,
            bytes_in_flight: self.max_bytes_in_flight.unwrap_or(2 * self.max_message_bytes as u64),
            connections: ConnectionLimits {
                max: self.max_connections as usize,
                idle: (self.grpc_idle_timeout > 0).then(|| Duration::from_secs(self.grpc_idle_timeout)),
            },
        }
    }
}

/// `--uplink`'s interface: as given, or for `auto` the default route's.
fn uplink_name(given: &str) -> Result<String> {
    if given != "auto" {
        return Ok(given.to_string());
    }
    let oif = crate::net::route::RouteQuery::new()?
        .default_route_oif()
        .context("--uplink auto")?;
    let name = crate::net::interfaces::ifname(oif).with_context(|| format!("--uplink auto: no interface {oif}"))?;
    tracing::info!(uplink = name, "uplink: the default route's interface");
    Ok(name)
}

/// `--reset`: detaches every port, removes the pins and the record.
fn reset(args: &AgentArgs) -> Result<()> {
    // Not under a running agent's feet.
    let held = instance::take(&args.state_dir, "reset")?;
    // Nothing mounted: nothing pinned to remove.
    if crate::dataplane::bpffs::ensure(&args.pin_dir, false).is_ok() {
        crate::dataplane::remove_pins(&args.pin_dir)?;
    }
    Store::remove(&args.state_dir)?;
    drop(held);
    let _ = std::fs::remove_file(args.state_dir.join(instance::LOCK_FILE));
    let _ = std::fs::remove_dir(&args.state_dir);
    tracing::info!(pin_dir = %args.pin_dir.display(), state_dir = %args.state_dir.display(), "reset: links detached, pins and state removed");
    Ok(())
}

/// Copies the XDP program's log records into the agent's log as they come.
fn drain_bpf_log(logger: crate::dataplane::Logger) -> Result<()> {
    // SAFETY: the AsyncFd owns the logger, so the ring buffer fd outlives its registration.
    let mut fd = unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watch the eBPF log ring: {}", e.into_parts().1))?;
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                break;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
    Ok(())
}

/// Follows rtnetlink: interfaces that come and go, and underlay changes.
fn follow_links(controller: Arc<Mutex<Controller>>) -> Result<tokio::task::JoinHandle<()>> {
    let (changes, mut changed) = tokio::sync::mpsc::unbounded_channel();
    crate::net::netlink::watch(changes)?;
    Ok(tokio::spawn(async move {
        while let Some(first) = changed.recv().await {
            let mut underlay = false;
            {
                let mut c = controller.lock().await;
                let mut peers = first == Change::Peers;
                underlay |= c.link_changed(&first);
                // What piled up meanwhile, under the same lock.
                while let Ok(next) = changed.try_recv() {
                    peers |= next == Change::Peers;
                    underlay |= c.link_changed(&next);
                }
                if underlay {
                    c.refresh_overlay();
                }
                if peers {
                    c.refresh_iface_flags();
                }
            }
            if underlay {
                // Our own neighbour solicitations notify too: at most one refresh per pause.
                tokio::time::sleep(Duration::from_millis(UNDERLAY_PAUSE_MS)).await;
            }
        }
    }))
}

/// Retries pending ports and refreshes the next hops: every second,
/// or every 100 ms while a next hop is being resolved (its traffic drops until then).
fn retry_and_refresh(controller: Arc<Mutex<Controller>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let unresolved = {
                let mut c = controller.lock().await;
                c.retry_pending();
                c.refresh_overlay()
            };
            let pause = if unresolved > 0 { 100 } else { 1000 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    })
}

/// The gRPC server, once everything it serves is ready.
struct Server {
    controller: Arc<Mutex<Controller>>,
    host_ips: Vec<std::net::IpAddr>,
    limits: ServeLimits,
    admission: Arc<AdmissionStats>,
    tls: Option<ServerTlsConfig>,
}

impl Server {
    /// Serves on `listener` until SIGTERM or Ctrl-C.
    async fn serve_on(self, listener: Listener) -> Result<()> {
        match listener {
            Listener::Tcp(l) => {
                // Small goal-state messages must not wait for Nagle and delayed ACKs (40 ms stalls).
                let incoming =
                    tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(l), |conn| {
                        conn.inspect(|c| {
                            if let Err(e) = c.set_nodelay(true) {
                                tracing::warn!("TCP_NODELAY: {e}");
                            }
                        })
                    });
                self.serve(incoming).await
            }
            Listener::Unix(l, path) => {
                let served = self.serve(tokio_stream::wrappers::UnixListenerStream::new(l)).await;
                let _ = std::fs::remove_file(&path);
                served
            }
        }
    }

    async fn serve<I, IO, IE>(self, incoming: I) -> Result<()>
    where
        I: tokio_stream::Stream<Item = Result<IO, IE>>,
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + tonic::transport::server::Connected + Unpin + Send + 'static,
        IE: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display,
    {
        let Server {
            controller,
            host_ips,
            limits,
            admission,
            tls,
        } = self;
        serve(
            controller,
            host_ips,
            limits,
            admission,
            tls,
            incoming,
            shutdown_signal(),
        )
        .await
    }
}

/// The bound gRPC socket.
enum Listener {
    Tcp(tokio::net::TcpListener),
    /// With its path, removed when the agent exits.
    Unix(tokio::net::UnixListener, PathBuf),
}

impl Listener {
    async fn bind(listen: &Listen) -> Result<Listener> {
        match listen {
            Listen::Tcp(addr) => Ok(Listener::Tcp(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("listen on {addr}"))?,
            )),
            Listen::Unix(path) => {
                use std::os::unix::fs::{FileTypeExt, PermissionsExt};
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    // A socket a previous agent left (it was killed) is replaced, unless an
                    // agent still answers on it; anything else at that path is not ours to remove.
                    if !meta.file_type().is_socket() {
                        anyhow::bail!("listen on {}: exists and is not a socket", path.display());
                    }
                    if std::os::unix::net::UnixStream::connect(path).is_ok() {
                        anyhow::bail!("listen on {}: another process serves it", path.display());
                    }
                    std::fs::remove_file(path).with_context(|| format!("remove stale socket {}", path.display()))?;
                }
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
                }
                let l =
                    tokio::net::UnixListener::bind(path).with_context(|| format!("listen on {}", path.display()))?;
                // Goal state programs the host's network: only root may send it.
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("chmod 0600 {}", path.display()))?;
                Ok(Listener::Unix(l, path.clone()))
            }
        }
    }

    fn address(&self) -> Result<String> {
        Ok(match self {
            Listener::Tcp(l) => l.local_addr()?.to_string(),
            Listener::Unix(_, path) => format!("unix:{}", path.display()),
        })
    }
}

/// Hands every event the data plane reports (a DHCPDECLINE...) to the controller.
fn watch_events(ring: aya::maps::RingBuf<aya::maps::MapData>, controller: Arc<Mutex<Controller>>) -> Result<()> {
    // SAFETY: the AsyncFd owns the ring, so its fd outlives the registration.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watch the event ring: {}", e.into_parts().1))?;
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                break;
            };
            let mut events = Vec::new();
            while let Some(item) = guard.get_inner_mut().next() {
                if item.len() >= std::mem::size_of::<alioth_common::maps::Event>() {
                    // SAFETY: the program writes whole `Event`s; read unaligned from the ring.
                    events
                        .push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<alioth_common::maps::Event>()) });
                }
            }
            guard.clear_ready();
            let mut c = controller.lock().await;
            for e in &events {
                c.event(e);
            }
        }
    });
    Ok(())
}

/// What the gRPC server admits.
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    pub max_message_bytes: usize,
    pub bytes_in_flight: u64,
    pub connections: ConnectionLimits,
}

impl ServeLimits {
    /// The agent's defaults for messages of at most `max_message_bytes`.
    pub fn for_messages(max_message_bytes: usize) -> Self {
        ServeLimits {
            max_message_bytes,
            bytes_in_flight: 2 * max_message_bytes as u64,
            connections: ConnectionLimits {
                max: 256,
                idle: Some(Duration::from_secs(300)),
            },
        }
    }
}

/// Serves the goal-state service, diagnostics, gRPC health and server reflection on `incoming`
/// until `shutdown`.
pub async fn serve<I, IO, IE>(
    controller: Arc<Mutex<Controller>>,
    host_ips: Vec<std::net::IpAddr>,
    limits: ServeLimits,
    stats: Arc<AdmissionStats>,
    tls: Option<ServerTlsConfig>,
    incoming: I,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()>
where
    I: tokio_stream::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + tonic::transport::server::Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display,
{
    let max = limits.max_message_bytes;
    let bytes = ByteGate::new(limits.bytes_in_flight, max as u64, stats.clone());
    let incoming = admit(incoming, limits.connections, stats);
    let diagnostics = crate::api::diagnostics::service(controller.clone()).await?;
    let provisioner = Provisioning::new(Provisioner::new(controller, host_ips), max, bytes);
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<GoalStateProvisionerServer<Provisioner>>().await;
    // Reflection v1, and v1alpha for the clients that speak only that (older grpcurl builds,
    // Python's grpcio-reflection).
    let described = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(alioth_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = described().build_v1().context("gRPC reflection")?;
    let reflection_v1alpha = described().build_v1alpha().context("gRPC reflection v1alpha")?;
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls).context("TLS configuration")?;
    }
    server
        // Large goal states (100k resources is ~15 MB) must not crawl through 64 KiB windows.
        .initial_stream_window_size(Some(H2_WINDOW))
        .initial_connection_window_size(Some(2 * H2_WINDOW))
        .add_service(provisioner)
        .add_service(diagnostics)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .context("gRPC server")
}

/// The server's TLS setup from --tls-cert/--tls-key (and --tls-client-ca for mutual TLS).
fn tls_config(args: &AgentArgs) -> Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("read {}", p.display()));
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?));
    if let Some(ca) = &args.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    tracing::info!(client_auth = args.tls_client_ca.is_some(), "gRPC over TLS");
    Ok(Some(tls))
}

async fn shutdown_signal() {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
