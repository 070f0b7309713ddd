//! `alioth.v1.Diagnostics`: echo probes through the live data plane (`controller::echo` sends
//! them; the replies come back on the data plane's ring and are matched here by sequence).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use alioth_common::probe::ProbeReply;
use alioth_proto::alioth::v1::diagnostics_server::{Diagnostics, DiagnosticsServer};
use alioth_proto::alioth::v1::{EchoReply, EchoRequest, Probe};
use anyhow::Result;
use tokio::io::unix::AsyncFd;
use tokio::sync::{oneshot, Mutex};
use tonic::{Request, Response, Status};

use crate::controller::{Controller, Launch, ProbeError};

/// Probes a call may send, and how long it may wait for each.
const MAX_PROBES: u32 = 100;
const MAX_TIMEOUT_MS: u32 = 10_000;
/// Between two probes of a call, as `ping` spaces them (a little tighter).
const INTERVAL: Duration = Duration::from_millis(100);

/// Probes waiting for their reply, by sequence.
type Waiting = Arc<std::sync::Mutex<HashMap<u16, oneshot::Sender<ProbeReply>>>>;

/// The service: its state is shared with each call's task (see `echo`).
pub struct Echo(Arc<Probes>);

struct Probes {
    controller: Arc<Mutex<Controller>>,
    waiting: Waiting,
    next: AtomicU16,
    /// Calls with probes out: the data plane takes marked replies only while there are any.
    calls: AtomicUsize,
}

/// The service, and the task that hands replies from the data plane's ring to their probes.
pub async fn service(controller: Arc<Mutex<Controller>>) -> Result<DiagnosticsServer<Echo>> {
    let ring = controller.lock().await.dataplane().take_probe_replies()?;
    let waiting = Waiting::default();
    // SAFETY: the AsyncFd owns the ring, so its fd outlives the registration.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watch the probe ring: {}", e.into_parts().1))?;
    let handed = waiting.clone();
    tokio::spawn(async move {
        while let Ok(mut guard) = fd.readable_mut().await {
            while let Some(item) = guard.get_inner_mut().next() {
                if item.len() < size_of::<ProbeReply>() {
                    continue;
                }
                // SAFETY: the programs write whole `ProbeReply`s; read unaligned from the ring.
                let reply: ProbeReply = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
                let waiter = handed.lock().expect("probe table").remove(&reply.sequence);
                if let Some(tx) = waiter {
                    let _ = tx.send(reply);
                }
            }
            guard.clear_ready();
        }
    });
    Ok(DiagnosticsServer::new(Echo(Arc::new(Probes {
        controller,
        waiting,
        next: AtomicU16::new(1),
        calls: AtomicUsize::new(0),
    }))))
}

#[tonic::async_trait]
impl Diagnostics for Echo {
    async fn echo(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let req = request.into_inner();
        let dst: Ipv4Addr = req
            .destination
            .parse()
            .map_err(|_| Status::invalid_argument(format!("{:?} is not an IPv4 address", req.destination)))?;
        let count = match req.count {
            0 => 3,
            n => n.min(MAX_PROBES),
        };
        let timeout = Duration::from_millis(u64::from(match req.timeout_ms {
            0 => 1000,
            t => t.min(MAX_TIMEOUT_MS),
        }));
        // The probes run in a task of their own, so that a client that goes away (Ctrl-C) cannot
        // cut a call between arming the data plane and disarming it; the task stops at the next
        // probe once `alive` is dropped with this call.
        let (alive, gone) = oneshot::channel::<()>();
        let probes = self.0.clone();
        let call = tokio::spawn(async move { probes.call(&req.port_id, dst, count, timeout, gone).await });
        let answered = call.await.map_err(|e| Status::internal(format!("echo task: {e}")))?;
        drop(alive);
        answered.map(Response::new)
    }
}

impl Probes {
    /// One call: the data plane armed, `count` probes (while the client is there), disarmed.
    async fn call(
        &self,
        port: &str,
        dst: Ipv4Addr,
        count: u32,
        timeout: Duration,
        mut gone: oneshot::Receiver<()>,
    ) -> Result<EchoReply, Status> {
        self.arm(true).await?;
        let mut reply = EchoReply::default();
        let mut result = Ok(());
        for i in 0..count {
            if gone.try_recv() != Err(oneshot::error::TryRecvError::Empty) {
                break;
            }
            if i > 0 {
                tokio::time::sleep(INTERVAL).await;
            }
            match self.one(port, dst, timeout, &mut reply.path).await {
                Ok(probe) => reply.probes.push(probe),
                Err(status) => {
                    result = Err(status);
                    break;
                }
            }
        }
        self.arm(false).await?;
        result.map(|()| reply)
    }
    /// Sends one probe and waits for its reply; `path` learns the way it went.
    async fn one(&self, port: &str, dst: Ipv4Addr, timeout: Duration, path: &mut String) -> Result<Probe, Status> {
        let sequence = self.next.fetch_add(1, Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("probe table").insert(sequence, tx);
        let launched = self.controller.lock().await.probe(port, dst, sequence);
        let mut probe = Probe {
            sequence: u32::from(sequence),
            ..Default::default()
        };
        let sent_ns = match launched {
            Ok(Launch::Sent { path: p, sent_ns }) => {
                *path = p;
                sent_ns
            }
            Ok(Launch::Broke(why)) => {
                self.forget(sequence);
                probe.broke = why;
                return Ok(probe);
            }
            Err(e) => {
                self.forget(sequence);
                return Err(match e {
                    ProbeError::NoPort(_) => Status::not_found(e.to_string()),
                    ProbeError::NotAttached(..) => Status::failed_precondition(e.to_string()),
                    ProbeError::Other(e) => Status::internal(format!("{e:#}")),
                });
            }
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => {
                probe.answered = true;
                probe.rtt_ns = r.ktime_ns.saturating_sub(sent_ns);
            }
            _ => {
                self.forget(sequence);
                probe.broke = format!("no reply within {} ms ({path})", timeout.as_millis());
            }
        }
        Ok(probe)
    }

    /// Counts a call in (`true`) or out; the first in arms the data plane, the last out disarms it.
    async fn arm(&self, call: bool) -> Result<(), Status> {
        let switch = match call {
            true => self.calls.fetch_add(1, Relaxed) == 0,
            false => self.calls.fetch_sub(1, Relaxed) == 1,
        };
        if !switch {
            return Ok(());
        }
        let mut controller = self.controller.lock().await;
        // Under the lock: a call counted meanwhile finds the switch as it left it.
        let armed = self.calls.load(Relaxed) > 0;
        controller
            .dataplane()
            .arm_probes(armed)
            .map_err(|e| Status::internal(format!("{e:#}")))
    }

    fn forget(&self, sequence: u16) {
        self.waiting.lock().expect("probe table").remove(&sequence);
    }
}
