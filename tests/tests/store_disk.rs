//! The agent's record of goal state on a real filesystem: one that fills up (a small tmpfs), where
//! what cannot be recorded is answered FAILURE and undone in state and maps, never acknowledged and
//! then forgotten by a restart, and the record stays whole for what comes after; an agent killed
//! mid-commit again and again, whose record is always a prefix of what was sent that holds all
//! that was acknowledged; and a record turned to garbage.

use std::path::PathBuf;

use alioth::controller::Controller;
use alioth::dataplane::{AttachMode, Dataplane};
use alioth::goalstate::validate::Naming;
use alioth::store::Store;
use alioth_common::maps::EndpointKey;
use alioth_proto::schema::{GoalState, OperationStatus, OperationType::Create, UpdateType};
use alioth_tests::goalstate::{statuses, subnet, vpc};
use alioth_tests::netns;
use alioth_tests::overlay::{neighbor, VmSpec};
use anyhow::{ensure, Context, Result};

/// A tmpfs of `kib` KiB mounted on a fresh directory; unmounted and removed on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(kib: u32) -> Result<Tmpfs> {
        let dir = std::env::temp_dir().join(netns::unique("alioth-disk-"));
        std::fs::create_dir_all(&dir)?;
        let disk = Tmpfs(dir);
        let size = format!("size={kib}k");
        let out = netns::run_output(&["mount", "-t", "tmpfs", "-o", &size, "tmpfs", &disk.0.to_string_lossy()])?;
        ensure!(
            out.status.success(),
            "mount tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(disk)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = netns::run_output(&["umount", "-l", self.0.to_str().unwrap_or_default()]);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Neighbor `i` of VPC "v" in subnet "s" (198.18.1.0/24), on host 198.19.0.2.
fn neighbor_state(i: u8) -> alioth_proto::schema::NeighborState {
    let vm = VmSpec {
        port_id: format!("neighbor-{i:03}-with-a-long-enough-id"),
        vpc: "v".into(),
        subnet: "s".into(),
        ip: format!("198.18.1.{}", 10 + u16::from(i)),
        mac: format!("02:00:00:00:01:{i:02x}"),
    };
    neighbor(Create, &vm, "198.19.0.2")
}

#[test]
fn a_full_disk_answers_failure_and_keeps_nothing_it_could_not_record() -> Result<()> {
    let disk = Tmpfs::mount(96)?;
    let (store, state) = Store::open(&disk.0)?;
    let (dp, _log) = Dataplane::load(None, AttachMode::Auto)?;
    let mut c = Controller::restore(dp, Naming::default(), state, store, None, &Default::default())?;
    let base = GoalState {
        vpc_states: vec![vpc(Create, "v", 1001, 0, UpdateType::Delta)],
        subnet_states: vec![subnet(Create, "s", "v", 1)],
        ..Default::default()
    };
    let st = statuses(&c.push(&base));
    ensure!(st.iter().all(|(_, s)| *s == OperationStatus::Success), "{st:?}");
    // 200 neighbors: more than the disk has room for.
    let many = GoalState {
        neighbor_states: (0..200).map(neighbor_state).collect(),
        ..Default::default()
    };
    let reply = c.push(&many);
    ensure!(
        reply
            .operation_statuses
            .iter()
            .all(|s| s.operation_status == OperationStatus::Failure as i32 && s.reason.contains("not recorded")),
        "every neighbor is refused with the reason: {:?}",
        &reply.operation_statuses[..2]
    );
    ensure!(c.state().neighbors().is_empty(), "nothing unrecorded is held");
    let key = EndpointKey {
        vni: 1001,
        ip: [198, 18, 1, 10],
    };
    ensure!(
        c.dataplane().endpoint(&key)?.is_none(),
        "nothing unrecorded is programmed"
    );
    // Nothing of it stays: one more neighbor fits, and a restart reads it back.
    let st = statuses(&c.push(&GoalState {
        neighbor_states: vec![neighbor_state(0)],
        ..Default::default()
    }));
    ensure!(
        st == [(neighbor_state(0).configuration.unwrap().id, OperationStatus::Success)],
        "{st:?}"
    );
    ensure!(c.dataplane().endpoint(&key)?.is_some());
    let read_back = Store::read(&disk.0)?;
    ensure!(
        read_back.neighbors().len() == 1 && read_back.vpcs.contains_key("v"),
        "the record holds exactly what was acknowledged"
    );
    Ok(())
}

/// Every file of the agent's record turned to garbage while the agent was down. The restarted
/// agent starts anyway and says so (log, `alioth status`); it keeps the data plane as it was, so
/// the VMs talk through the restart without a loss; and goal state sent again applies on top.
#[test]
fn a_record_of_garbage_never_wipes_the_data_plane() -> Result<()> {
    use alioth_tests::agent::Agent;
    use alioth_tests::demo::{apply, example, topology};
    let t = topology(&[])?;
    let (code, _) = apply(&t.agent, &example("demo.yaml"))?;
    ensure!(code == 0);
    let pings = t.vm1.ns.steady_pings("198.18.0.11")?;
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let left = t.agent.kill()?;
    let mut damaged = 0;
    for entry in std::fs::read_dir(&left.state_dir)? {
        std::fs::write(entry?.path(), "this is not a record\nnor is this\n")?;
        damaged += 1;
    }
    ensure!(damaged > 0, "the record has files");
    let agent = Agent::start_with(&t.host, left, &[])?;
    pings.all_answered().with_context(|| agent.log_text())?;
    ensure!(
        agent.log_text().contains("the record is damaged"),
        "{}",
        agent.log_text()
    );
    let status: serde_json::Value = serde_json::from_slice(&agent.cli(&["status", "--json"])?.stdout)?;
    let copies = status["record"]["damaged_copies"].as_array().map_or(0, Vec::len);
    ensure!(
        copies >= 1 && status["attached"].as_array().map(Vec::len) == Some(2),
        "{status}"
    );
    let (code, statuses) = apply(&agent, &example("demo.yaml"))?;
    ensure!(code == 0 && statuses.values().all(|s| s == "SUCCESS"), "{statuses:?}");
    let ping = t
        .vm1
        .ns
        .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.18.0.11"])?;
    ensure!(ping.contains("3 received"), "{ping}");
    Ok(())
}

/// SIGKILL while messages are being committed, twenty times: each time the record read back holds
/// exactly the first k messages sent, for some k no smaller than what was acknowledged, and the
/// restarted agent carries on from there.
#[tokio::test(flavor = "multi_thread")]
async fn killed_mid_commit_the_record_is_a_prefix_holding_all_that_was_acknowledged() -> Result<()> {
    use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
    use std::sync::Arc;

    use alioth_proto::schema::goal_state_provisioner_client::GoalStateProvisionerClient;
    use alioth_tests::agent::Agent;

    const ROUNDS: u32 = 20;
    let args = ["--bpf-log-level", "off", "--metrics-listen", "off"];
    let mut agent = Agent::start_local(&args)?;
    let (mut next, mut in_flight) = (0u32, 0);
    for round in 0..ROUNDS {
        let (sent, acked) = (Arc::new(AtomicU32::new(next)), Arc::new(AtomicU32::new(next)));
        let channel = alioth::cli::connect(&agent.listen, &alioth::cli::ClientTls::default()).await?;
        let mut client = GoalStateProvisionerClient::new(channel);
        let (s, a) = (sent.clone(), acked.clone());
        // Message i creates VPC p<i>: one transaction each, back to back.
        let sender = tokio::spawn(async move {
            for i in next.. {
                let msg = GoalState {
                    vpc_states: vec![vpc(Create, &format!("p{i:05}"), 100 + i, 1, UpdateType::Delta)],
                    ..Default::default()
                };
                s.store(i + 1, SeqCst);
                match client.push_network_resource_states(msg).await {
                    Ok(r)
                        if statuses(r.get_ref())
                            .iter()
                            .all(|(_, st)| *st == OperationStatus::Success) =>
                    {
                        a.store(i + 1, SeqCst)
                    }
                    _ => return,
                }
            }
        });
        tokio::time::sleep(std::time::Duration::from_millis(u64::from(15 + 7 * round))).await;
        let left = agent.kill()?;
        let _ = sender.await;
        let (sent, acked) = (sent.load(SeqCst), acked.load(SeqCst));
        in_flight += u32::from(sent > acked);
        let held = Store::read(std::path::Path::new(&left.state_dir))?;
        let k = held.vpcs.len() as u32;
        let ids: Vec<&str> = held.vpcs.keys().map(String::as_str).collect();
        let prefix: Vec<String> = (0..k).map(|i| format!("p{i:05}")).collect();
        ensure!(ids == prefix, "round {round}: not a prefix of what was sent: {ids:?}");
        ensure!(
            acked <= k && k <= sent,
            "round {round}: acknowledged {acked}, sent {sent}, recorded {k}"
        );
        next = k;
        agent = Agent::restart_local(left, &args)?;
    }
    ensure!(next >= 100, "too few commits to mean anything: {next}");
    ensure!(
        in_flight >= ROUNDS / 2,
        "a message was in flight at only {in_flight} of {ROUNDS} kills"
    );
    Ok(())
}
