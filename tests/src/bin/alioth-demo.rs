//! `cargo xtask run`: a self-contained demo. A host namespace runs the agent, two VM namespaces
//! hang off its taps, the sample goal state is applied, and `arping`/`ping` to a gateway address
//! that no namespace holds are answered by the XDP port program. Everything is removed on exit.

use std::path::PathBuf;

use alioth_tests::agent::Agent;
use alioth_tests::netns::{Netns, Vm};
use anyhow::{Context, Result};

fn step(title: &str) {
    println!("\n\x1b[1m== {title}\x1b[0m");
}

fn show(out: std::process::Output) {
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
}

fn main() -> Result<()> {
    let once = std::env::args().any(|a| a == "--once");
    let demo: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "examples", "demo.yaml"]
        .iter()
        .collect();
    let demo = demo.canonicalize().context("examples/demo.yaml")?;

    step("topology: host namespace (agent) + two VM namespaces on veth taps, addresses from 198.18.0.0/15");
    let host = Netns::new("aldemo")?;
    let vm1 = Vm::new(&host, "tapf37810eb-7f", "02:00:c6:12:00:0a", "198.18.0.10/24")?;
    let vm2 = Vm::new(&host, "tap2a2b0d1c-4c", "02:00:c6:12:00:0b", "198.18.0.11/24")?;
    println!(
        "host {}  vm1 {} (198.18.0.10)  vm2 {} (198.18.0.11)",
        host.name, vm1.ns.name, vm2.ns.name
    );
    let agent = Agent::start(&host, &[])?;
    println!("agent listening on {} with pins in {}", agent.listen, agent.pin_dir);

    step(&format!("alioth apply -f {}", demo.display()));
    show(agent.cli(&["apply", "-f", demo.to_str().unwrap()])?);

    step("vm1: arping 198.18.0.1 (the subnet gateway: no namespace has this address)");
    show(
        vm1.ns
            .exec_output(&["arping", "-c", "3", "-w", "5", "-I", "eth0", "198.18.0.1"])?,
    );
    step("vm1: ping 198.18.0.1");
    show(vm1.ns.exec_output(&["ping", "-c", "3", "-i", "0.2", "198.18.0.1"])?);
    step("vm2: arping 198.18.0.10 (another port of the VPC, answered with vm1's MAC)");
    show(
        vm2.ns
            .exec_output(&["arping", "-c", "2", "-w", "5", "-I", "eth0", "198.18.0.10"])?,
    );

    step("alioth stats: the XDP counters prove who answered");
    show(agent.cli(&["stats"])?);
    step("alioth status");
    show(agent.cli(&["status"])?);

    if !once {
        step("the topology stays up; try it yourself, then press Ctrl-C to tear everything down");
        println!("  ip netns exec {} ping 198.18.0.1", vm1.ns.name);
        println!("  ip netns exec {} arping -I eth0 198.18.0.1", vm2.ns.name);
        println!(
            "  nsenter --net=/run/netns/{} {} stats --pin-dir {}",
            host.name,
            alioth_tests::agent::alioth_bin()?.display(),
            agent.pin_dir
        );
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    r = tokio::signal::ctrl_c() => r,
                    _ = term.recv() => Ok(()),
                }
            })?;
    }

    step("tearing down: agent, namespaces, veths, pins");
    let (_, left) = agent.stop()?;
    left.reset()?;
    drop((vm1, vm2, host));
    println!("done: nothing left behind");
    Ok(())
}
