//! An in-process agent (real XDP object, real gRPC server on loopback) for gRPC-level tests.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use alioth::controller::Controller;
use alioth::dataplane::{AttachMode, Dataplane};
use alioth::validate::Naming;
use alioth_proto::schema::goal_state_provisioner_client::GoalStateProvisionerClient;
use anyhow::Result;
use tokio::sync::{oneshot, Mutex};
use tonic::transport::Channel;

pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl Server {
    /// Loads the XDP object (maps unpinned), and serves on an ephemeral loopback port. Ports get
    /// interface names no machine has, so they are never attached: they answer PENDING.
    pub async fn start(host_ips: Vec<IpAddr>) -> Result<Server> {
        let (dp, _) = Dataplane::load(None, AttachMode::Skb)?;
        let naming = Naming {
            iface_template: "zz{id11}".into(),
        };
        let controller = Arc::new(Mutex::new(Controller::new(dp, naming)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let task = tokio::spawn(alioth::agent::serve(controller, host_ips, 64 << 20, incoming, async {
            let _ = stopped.await;
        }));
        Ok(Server {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub async fn channel(&self) -> Result<Channel> {
        Ok(Channel::from_shared(format!("http://{}", self.addr))?.connect().await?)
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
