//! `alcor.schema.GoalStateProvisioner` over tonic.

use std::pin::Pin;
use std::sync::Arc;

use alioth_proto::schema::goal_state_provisioner_server::GoalStateProvisioner;
use alioth_proto::schema::{
    GoalState, GoalStateOperationReply, GoalStateV2, HostRequest, HostRequestReply, NeighborRulesRequest,
};
use std::net::IpAddr;

use tokio::sync::{mpsc, Mutex};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::controller::{Controller, FREE_LATER};
use crate::garbage;
use crate::v2;

pub struct Provisioner {
    controller: Arc<Mutex<Controller>>,
    /// This host's addresses, for GoalStateV2 `host_resources`.
    host_ips: Arc<Vec<IpAddr>>,
}

impl Provisioner {
    pub fn new(controller: Arc<Mutex<Controller>>, host_ips: Vec<IpAddr>) -> Self {
        Provisioner {
            controller,
            host_ips: Arc::new(host_ips),
        }
    }
}

/// Stream messages read ahead of the one being applied: beyond that, HTTP/2 flow control holds the
/// sender back, so a flood is never buffered without bound.
const STREAM_WINDOW: usize = 16;

type ReplyStream = Pin<Box<dyn Stream<Item = Result<GoalStateOperationReply, Status>> + Send>>;

#[tonic::async_trait]
impl GoalStateProvisioner for Provisioner {
    async fn push_network_resource_states(
        &self,
        request: Request<GoalState>,
    ) -> Result<Response<GoalStateOperationReply>, Status> {
        let msg = request.into_inner();
        let reply = self.controller.lock().await.push(&msg);
        release(msg, &reply);
        Ok(Response::new(reply))
    }

    type PushGoalStatesStreamStream = ReplyStream;

    /// One reply per GoalStateV2, in order, for as long as the client keeps the stream open.
    async fn push_goal_states_stream(
        &self,
        request: Request<Streaming<GoalStateV2>>,
    ) -> Result<Response<Self::PushGoalStatesStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(STREAM_WINDOW);
        let controller = self.controller.clone();
        let host_ips = self.host_ips.clone();
        tokio::spawn(async move {
            while let Some(next) = inbound.message().await.transpose() {
                let failed = next.is_err();
                let reply = match next {
                    Ok(msg) => {
                        // Converted before taking the lock that serializes the messages.
                        let msg = v2::for_host(msg, &host_ips);
                        let reply = controller.lock().await.push(&msg);
                        release(msg, &reply);
                        Ok(reply)
                    }
                    Err(status) => {
                        tracing::warn!("goal-state stream ended by an error: {status}");
                        Err(status)
                    }
                };
                if tx.send(reply).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn request_goal_states(&self, _request: Request<HostRequest>) -> Result<Response<HostRequestReply>, Status> {
        Err(Status::unimplemented(
            "RequestGoalStates is an agent-to-controller call; this agent does not serve it",
        ))
    }

    async fn push_goalstates(
        &self,
        _request: Request<NeighborRulesRequest>,
    ) -> Result<Response<GoalStateOperationReply>, Status> {
        Err(Status::unimplemented(
            "PushGoalstates (neighbor rules) is not implemented yet",
        ))
    }
}

/// Frees a large message off the reply's path.
fn release(msg: GoalState, reply: &GoalStateOperationReply) {
    if reply.operation_statuses.len() >= FREE_LATER {
        garbage::free_later(msg);
    }
}
