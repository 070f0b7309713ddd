//! `cargo xtask bench dataplane`: ns per packet of each port-program path through BPF_PROG_TEST_RUN,
//! beside the trivial XDP_PASS program measured the same way in the same run.
//!
//! Paths that rewrite the frame are not idempotent (a reply run again is another path), so every
//! sample is one run (repeat = 1) on a fresh copy of the input; the kernel's own per-run time is
//! used, and the baseline carries the same fixed cost of the test harness. Each syscall leaves the
//! caches cold-ish, so these are upper bounds. The steady-state cost is the least of 10 runs with
//! repeat = 100,000 of the benchmark program (interference on a shared VM only adds time), which
//! turns ARP and ICMP replies back into their requests after each run (DHCP replies cannot be
//! turned back).

use alioth::dataplane::object::BENCH_PORT_PROGRAM;
use alioth::dataplane::{AttachMode, Dataplane};
use alioth_common::Counter;
use alioth_tests::dhcp::Request;
use alioth_tests::frames;
use alioth_tests::kernel::counter;
use alioth_tests::timing::{measure, steady, ROUNDS, SAMPLES, STEADY_REPEAT, STEADY_ROUNDS};
use alioth_tests::vectors::{self, *};
use anyhow::{ensure, Result};
use dhcproto::v4::MessageType;

/// One row of the table.
struct Path {
    name: &'static str,
    frame: Vec<u8>,
    /// The XDP action every run must return.
    action: u32,
    /// Target in ns net of XDP_PASS, when the issue sets one.
    target: Option<u64>,
    steady: Steady,
}

/// A measured path: (name, cold ns, steady ns and its baseline, target).
type Row = (&'static str, f64, Option<(u64, u64)>, Option<u64>);

/// How the path is measured in steady state (`STEADY_REPEAT` runs on one buffer).
enum Steady {
    /// The program leaves the frame as it was (drop, redirect).
    Idempotent,
    /// The benchmark program turns the reply back into its request; the counter proves that each
    /// run answered.
    Undone(Counter),
    /// The reply cannot be turned back.
    No,
}

fn path(name: &'static str, frame: Vec<u8>, action: u32, target: Option<u64>, steady: Steady) -> Path {
    Path {
        name,
        frame,
        action,
        target,
        steady,
    }
}

/// The paths measured, with their frames and targets.
fn paths(echo: &[u8]) -> Vec<Path> {
    vec![
        path(
            "arp request -> reply (XDP_TX)",
            frames::arp_request(VM_MAC, VM_IP, GW_IP),
            3,
            Some(40),
            Steady::Undone(Counter::ArpReply),
        ),
        path(
            "icmp echo 98 B -> reply (XDP_TX)",
            echo.to_vec(),
            3,
            Some(50),
            Steady::Undone(Counter::IcmpEchoReply),
        ),
        path(
            "icmp echo 1514 B -> reply (XDP_TX)",
            frames::echo_request(VM_MAC, GW_MAC, VM_IP, GW_IP, 1, 1, &[7; 1472]),
            3,
            None,
            Steady::Undone(Counter::IcmpEchoReply),
        ),
        path(
            "arp for unknown ip (XDP_DROP)",
            frames::arp_request(VM_MAC, VM_IP, UNKNOWN_IP),
            1,
            None,
            Steady::Idempotent,
        ),
        path(
            "dhcp discover -> offer (XDP_TX)",
            Request::new(MessageType::Discover).frame(),
            3,
            Some(200),
            Steady::No,
        ),
        path(
            "dhcp request -> ack (XDP_TX)",
            Request::selecting().frame(),
            3,
            Some(200),
            Steady::No,
        ),
        path(
            "udp 60 B to a local port (XDP_REDIRECT)",
            vectors::udp_from_port(PEER_MAC, PEER_IP, 18),
            4,
            None,
            Steady::Idempotent,
        ),
    ]
}

fn main() -> Result<()> {
    // The logger holds the log map the benchmark program loaded below refers to: keep it.
    let (mut dp, _logger) = Dataplane::load_lab(AttachMode::Auto)?;
    vectors::program(&mut dp)?;
    let echo = frames::echo_request(VM_MAC, GW_MAC, VM_IP, GW_IP, 1, 1, &vectors::ping_payload());
    let paths = paths(&echo);
    let baseline = measure(dp.pass_program()?, &echo, 2)?;
    // (path, cold ns, steady ns and its baseline, target)
    let mut rows = Vec::new();
    for p in &paths {
        let name = p.name;
        let ns = measure(dp.program()?, &p.frame, p.action)?;
        let st = match p.steady {
            Steady::No => None,
            Steady::Idempotent => Some(steady(&mut dp, BENCH_PORT_PROGRAM, &p.frame)?),
            Steady::Undone(c) => {
                let before = counter(&dp, c);
                let st = steady(&mut dp, BENCH_PORT_PROGRAM, &p.frame)?;
                let answered = counter(&dp, c) - before;
                ensure!(
                    answered == STEADY_REPEAT,
                    "{name}: {answered} of {STEADY_REPEAT} steady runs answered"
                );
                Some(st)
            }
        };
        rows.push((name, ns, st, p.target));
    }
    let baseline_steady = rows.iter().filter_map(|r| r.2.map(|(_, base)| base)).min().unwrap_or(0);

    print_table(baseline, baseline_steady, rows)?;
    monitor_overhead(&mut dp)
}

/// A flood of drops (a spoofed source, the idempotent drop path) with no monitor, then with one
/// listening for drop events (at its default rate, its ring drained as `alioth monitor` does): the
/// steady ns per frame of each, XDP_PASS included, and the pps the monitor costs.
fn monitor_overhead(dp: &mut Dataplane) -> Result<()> {
    use alioth_common::monitor::{Config, DROPS};
    let spoofed = frames::udp(VM_MAC, PEER_MAC, [198, 18, 9, 9], PEER_IP, 64, 40000, 9, &[0; 18]);
    let mut ring = dp.take_monitor_events()?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (off, on, events) = std::thread::scope(|s| -> Result<_> {
        let drained = s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                while ring.next().is_some() {
                    n += 1;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            n
        });
        let (mut off, mut on) = (u64::MAX, u64::MAX);
        // Alternated, the least of each: interference only adds time.
        for _ in 0..3 {
            dp.set_monitor(Config::default())?;
            off = off.min(steady(dp, BENCH_PORT_PROGRAM, &spoofed)?.0);
            let listening = Config {
                flags: DROPS,
                sample_every: 1,
                per_second: 1000,
                owner: std::process::id(),
            };
            dp.set_monitor(listening)?;
            on = on.min(steady(dp, BENCH_PORT_PROGRAM, &spoofed)?.0);
        }
        dp.set_monitor(Config::default())?;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok((off, on, drained.join().expect("drain thread")))
    })?;
    ensure!(events > 0, "the monitor got no drop event");
    let pps = |ns: u64| 1e9 / ns.max(1) as f64 / 1e6;
    println!();
    println!("monitor: a flood of drops (spoofed source), steady ns per frame, XDP_PASS included");
    println!("{:<38} {:>8} {:>10}", "", "ns/pkt", "Mpps");
    println!("{:<38} {off:>8} {:>10.2}", "no monitor", pps(off));
    println!("{:<38} {on:>8} {:>10.2}", "monitor listening for drops", pps(on));
    println!(
        "pps with drop events on: {:.1}% of without (target >= 95%); {events} events read",
        100.0 * off as f64 / on.max(1) as f64
    );
    Ok(())
}

/// The results, one row per path: (path, cold ns, steady ns and its baseline, target).
fn print_table(baseline: f64, baseline_steady: u64, rows: Vec<Row>) -> Result<()> {
    println!("alioth bench dataplane: BPF_PROG_TEST_RUN, repeat=1 x {SAMPLES} samples (trimmed mean), median of {ROUNDS} rounds");
    println!(
        "steady: the least of {STEADY_ROUNDS} runs of repeat={}, in alternation with XDP_PASS (net of that)",
        STEADY_REPEAT / STEADY_ROUNDS as u64
    );
    println!(
        "kernel {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim()
    );
    println!();
    println!(
        "{:<38} {:>8} {:>10} {:>12} {:>12} {:>8}",
        "path", "ns/pkt", "net of", "steady", "steady net", "target"
    );
    println!(
        "{:<38} {:>8} {:>10} {:>12} {:>12} {:>8}",
        "", "", "XDP_PASS", "", "of XDP_PASS", "(net)"
    );
    println!(
        "{:<38} {baseline:>8.1} {:>10} {baseline_steady:>12} {:>12} {:>8}",
        "xdp_pass (baseline program)", "-", "-", "-"
    );
    for (name, ns, st, target) in rows {
        let net = ns - baseline;
        let (st, st_net) = match st {
            Some((st, base)) => (st.to_string(), st.saturating_sub(base).to_string()),
            None => ("n/a".to_string(), "n/a".to_string()),
        };
        let target = target.map(|t| format!("<= {t}")).unwrap_or_else(|| "-".into());
        println!("{name:<38} {ns:>8.1} {net:>10.1} {st:>12} {st_net:>12} {target:>8}");
    }
    println!();
    println!("Steady XDP_TX figures include turning the reply back into the request after each run (an");
    println!("upper bound); DHCP replies cannot be turned back, so they have only the cold figure.");
    Ok(())
}
