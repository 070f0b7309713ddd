//! An in-process agent (real XDP object, real gRPC server on loopback) for gRPC-level tests.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use alioth::agent::ServeLimits;
use alioth::api::admission::AdmissionStats;
use alioth::controller::Controller;
use alioth::dataplane::{AttachMode, Dataplane};
use alioth::goalstate::validate::Naming;
use alioth_proto::schema::goal_state_provisioner_client::GoalStateProvisionerClient;
use anyhow::Result;
use tokio::sync::{oneshot, Mutex};
use tonic::transport::Channel;

pub struct Server {
    pub addr: SocketAddr,
    /// Where `/metrics` is served.
    pub metrics: SocketAddr,
    /// The agent's controller: a test that holds its lock holds every message back.
    pub controller: Arc<Mutex<Controller>>,
    /// The gRPC server's admission gates.
    pub admission: Arc<AdmissionStats>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl Server {
    /// Loads the XDP object (maps unpinned), and serves on an ephemeral loopback port. Ports get
    /// interface names no machine has, so they are never attached: they answer PENDING.
    pub async fn start(host_ips: Vec<IpAddr>) -> Result<Server> {
        Self::start_tls(host_ips, None).await
    }

    /// As `start`, serving gRPC over TLS.
    pub async fn start_tls(host_ips: Vec<IpAddr>, tls: Option<tonic::transport::ServerTlsConfig>) -> Result<Server> {
        Self::start_with(host_ips, tls, ServeLimits::for_messages(64 << 20)).await
    }

    /// As `start_tls`, with these limits.
    pub async fn start_with(
        host_ips: Vec<IpAddr>,
        tls: Option<tonic::transport::ServerTlsConfig>,
        limits: ServeLimits,
    ) -> Result<Server> {
        let (dp, _) = Dataplane::load(None, AttachMode::Skb)?;
        let naming = Naming {
            iface_template: "zz{id11}".into(),
            ..Default::default()
        };
        let controller = Arc::new(Mutex::new(Controller::new(dp, naming)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let metrics = metrics_listener.local_addr()?;
        let admission = Arc::new(AdmissionStats::default());
        tokio::spawn(alioth::api::exporter::serve(
            metrics_listener,
            controller.clone(),
            admission.clone(),
        ));
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let task = tokio::spawn(alioth::agent::serve(
            controller.clone(),
            host_ips,
            limits,
            admission.clone(),
            tls,
            incoming,
            async {
                let _ = stopped.await;
            },
        ));
        Ok(Server {
            addr,
            metrics,
            controller,
            admission,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// `GET path` on the metrics port: (status line, body).
    pub async fn http_get(&self, path: &str) -> Result<(String, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(self.metrics).await?;
        conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .await?;
        let mut resp = String::new();
        conn.read_to_string(&mut resp).await?;
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        Ok((head.lines().next().unwrap_or_default().to_string(), body.to_string()))
    }

    pub async fn channel(&self) -> Result<Channel> {
        alioth::cli::connect(&self.addr.to_string(), &alioth::cli::ClientTls::default()).await
    }

    pub async fn client(&self) -> Result<GoalStateProvisionerClient<Channel>> {
        Ok(GoalStateProvisionerClient::new(self.channel().await?))
    }

    /// Stops the server and reports how it ended.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
