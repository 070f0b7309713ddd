//! `alcor.schema.GoalStateProvisioner` over tonic.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use alioth_proto::schema::goal_state_provisioner_server::{GoalStateProvisioner, GoalStateProvisionerServer};
use alioth_proto::schema::{
    GoalState, GoalStateOperationReply, GoalStateV2, HostRequest, HostRequestReply, NeighborRulesRequest,
};
use alioth_proto::wire;
use std::net::IpAddr;

use tokio::sync::{mpsc, Mutex};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::codegen::{http, Service};
use tonic::{Request, Response, Status, Streaming};

use crate::api::admission::bytes::ByteGate;
use crate::api::hosts;
use crate::background_drop;
use crate::controller::{Controller, FREE_LATER};

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
    /// (`Provisioning` serves this method with `stream`, which decodes the maps as entries; this is
    /// the same for a server built from the generated code alone.)
    async fn push_goal_states_stream(
        &self,
        request: Request<Streaming<GoalStateV2>>,
    ) -> Result<Response<Self::PushGoalStatesStreamStream>, Status> {
        Ok(Response::new(
            self.stream(request.into_inner(), wire::GoalStateV2::from),
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

impl Provisioner {
    /// Applies each message of `inbound` (converted by `wire`) and answers it, in order.
    fn stream<M: Send + 'static>(&self, mut inbound: Streaming<M>, wire: fn(M) -> wire::GoalStateV2) -> ReplyStream {
        let (tx, rx) = mpsc::channel(STREAM_WINDOW);
        let controller = self.controller.clone();
        let host_ips = self.host_ips.clone();
        tokio::spawn(async move {
            while let Some(next) = inbound.message().await.transpose() {
                let failed = next.is_err();
                let reply = match next {
                    Ok(msg) => {
                        // Converted before taking the lock that serializes the messages.
                        let msg = hosts::for_host(wire(msg), &host_ips);
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
        Box::pin(ReceiverStream::new(rx))
    }
}

/// `GoalStateProvisioner` as the agent serves it: the generated server, except that
/// `PushGoalStatesStream` decodes each GoalStateV2 with its maps as entries (`wire`), not into
/// search trees the agent would take apart again. Same bytes, same replies.
#[derive(Clone)]
pub struct Provisioning {
    generated: GoalStateProvisionerServer<Provisioner>,
    provisioner: Arc<Provisioner>,
    max_message_bytes: usize,
    /// The budget of message bytes in flight across all connections.
    bytes: ByteGate,
}

const STREAM_PATH: &str = "/alcor.schema.GoalStateProvisioner/PushGoalStatesStream";

impl Provisioning {
    pub fn new(provisioner: Provisioner, max_message_bytes: usize, bytes: ByteGate) -> Self {
        let provisioner = Arc::new(provisioner);
        Provisioning {
            generated: GoalStateProvisionerServer::from_arc(provisioner.clone())
                .max_decoding_message_size(max_message_bytes)
                // A reply is bounded by its request, but can be larger (a status per resource).
                .max_encoding_message_size(usize::MAX),
            provisioner,
            max_message_bytes,
            bytes,
        }
    }
}

impl tonic::server::NamedService for Provisioning {
    const NAME: &'static str = <GoalStateProvisionerServer<Provisioner> as tonic::server::NamedService>::NAME;
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl Service<http::Request<tonic::body::Body>> for Provisioning {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        // The request's bytes are held until it is answered: a queued message costs nothing.
        let (parts, body) = req.into_parts();
        let (body, hold) = self.bytes.meter(body);
        let req = http::Request::from_parts(parts, tonic::body::Body::new(body));
        if req.uri().path() != STREAM_PATH {
            let answer = self.generated.call(req);
            return Box::pin(async move {
                let answered = answer.await;
                drop(hold);
                answered
            });
        }
        let method = StreamEntries(self.provisioner.clone());
        let max = Some(self.max_message_bytes);
        Box::pin(async move {
            let codec = alioth_proto::codec::SliceCodec::<GoalStateOperationReply, wire::GoalStateV2>::default();
            let mut grpc = tonic::server::Grpc::new(codec).apply_max_message_size_config(max, Some(usize::MAX));
            let answered = grpc.streaming(method, req).await;
            drop(hold);
            Ok(answered)
        })
    }
}

/// `PushGoalStatesStream` over GoalStateV2 decoded as entries.
struct StreamEntries(Arc<Provisioner>);

impl tonic::server::StreamingService<wire::GoalStateV2> for StreamEntries {
    type Response = GoalStateOperationReply;
    type ResponseStream = ReplyStream;
    type Future = BoxFuture<Response<ReplyStream>, Status>;

    fn call(&mut self, request: Request<Streaming<wire::GoalStateV2>>) -> Self::Future {
        let replies = self.0.stream(request.into_inner(), |m| m);
        Box::pin(std::future::ready(Ok(Response::new(replies))))
    }
}

/// Frees a large message off the reply's path.
fn release(msg: GoalState, reply: &GoalStateOperationReply) {
    if reply.operation_statuses.len() >= FREE_LATER {
        background_drop::free_later(msg);
    }
}
