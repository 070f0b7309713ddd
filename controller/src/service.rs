//! `alcor.schema.GoalStateProvisioner` over tonic.

use std::pin::Pin;
use std::sync::Arc;

use alioth_proto::schema::goal_state_provisioner_server::GoalStateProvisioner;
use alioth_proto::schema::{
    GoalState, GoalStateOperationReply, GoalStateV2, HostRequest, HostRequestReply, NeighborRulesRequest,
};
use tokio::sync::Mutex;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::controller::Controller;

pub struct Provisioner {
    controller: Arc<Mutex<Controller>>,
}

impl Provisioner {
    pub fn new(controller: Arc<Mutex<Controller>>) -> Self {
        Provisioner { controller }
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<GoalStateOperationReply, Status>> + Send>>;

#[tonic::async_trait]
impl GoalStateProvisioner for Provisioner {
    async fn push_network_resource_states(
        &self,
        request: Request<GoalState>,
    ) -> Result<Response<GoalStateOperationReply>, Status> {
        let msg = request.into_inner();
        let reply = self.controller.lock().await.push(&msg);
        Ok(Response::new(reply))
    }

    type PushGoalStatesStreamStream = ReplyStream;

    async fn push_goal_states_stream(
        &self,
        _request: Request<Streaming<GoalStateV2>>,
    ) -> Result<Response<Self::PushGoalStatesStreamStream>, Status> {
        Err(Status::unimplemented(
            "PushGoalStatesStream (GoalStateV2) is not implemented yet; use PushNetworkResourceStates",
        ))
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
