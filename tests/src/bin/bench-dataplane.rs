//! `cargo xtask bench dataplane`: ns per packet of each port-program path through BPF_PROG_TEST_RUN,
//! beside the trivial XDP_PASS program measured the same way in the same run.
//!
//! Paths that rewrite the frame are not idempotent (a reply run again is another path), so every
//! sample is one run (repeat = 1) on a fresh copy of the input; the kernel's own per-run time is
//! used, and the baseline carries the same fixed cost of the test harness. Each syscall leaves the
//! caches cold-ish, so these are upper bounds; for paths whose input is idempotent (drop, pass) the
//! steady-state cost from one run with repeat = 1,000,000 is printed too.

use alioth::dataplane::{AttachMode, Dataplane};
use alioth_tests::frames;
use alioth_tests::vectors::{self, *};
use anyhow::{ensure, Result};
use aya::programs::{TestRun, TestRunOptions, Xdp};

const SAMPLES: usize = 20_000;
const ROUNDS: usize = 5;

/// Mean of the middle 80 %: the clock here ticks in ~10 ns steps, so a median would be quantised.
fn trimmed_mean(v: &mut [u64]) -> f64 {
    v.sort_unstable();
    let cut = v.len() / 10;
    let mid = &v[cut..v.len() - cut];
    mid.iter().sum::<u64>() as f64 / mid.len() as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_unstable_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median over `ROUNDS` of the trimmed mean kernel time of `SAMPLES` single runs; checks the action.
fn measure(prog: &Xdp, frame: &[u8], expect_action: u32) -> Result<f64> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let mut samples = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let r = prog.test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat: 1,
                ..Default::default()
            })?;
            ensure!(
                r.return_value == expect_action,
                "unexpected XDP action {}",
                r.return_value
            );
            samples.push(r.duration.as_nanos() as u64);
        }
        rounds.push(trimmed_mean(&mut samples));
    }
    Ok(median(&mut rounds))
}

/// Steady-state ns per run: one BPF_PROG_TEST_RUN with a million repetitions (idempotent inputs only).
fn steady(prog: &Xdp, frame: &[u8]) -> Result<u64> {
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat: 1_000_000,
        ..Default::default()
    };
    Ok(prog.test_run(opts)?.duration.as_nanos() as u64)
}

fn main() -> Result<()> {
    let (mut dp, _) = Dataplane::load(None, AttachMode::Auto)?;
    dp.set_port_entry(1, vectors::port())?;
    for (k, v) in vectors::endpoints() {
        dp.upsert_endpoint(k, v)?;
    }
    let payload = vectors::ping_payload();
    let echo = frames::echo_request(VM_MAC, GW_MAC, VM_IP, GW_IP, 1, 1, &payload);
    let paths: Vec<(&str, Vec<u8>, u32, Option<u64>)> = vec![
        (
            "arp request -> reply (XDP_TX)",
            frames::arp_request(VM_MAC, VM_IP, GW_IP),
            3,
            Some(40),
        ),
        ("icmp echo 98 B -> reply (XDP_TX)", echo.clone(), 3, Some(50)),
        (
            "icmp echo 1514 B -> reply (XDP_TX)",
            frames::echo_request(VM_MAC, GW_MAC, VM_IP, GW_IP, 1, 1, &[7; 1472]),
            3,
            None,
        ),
        (
            "arp for unknown ip (XDP_DROP)",
            frames::arp_request(VM_MAC, VM_IP, UNKNOWN_IP),
            1,
            None,
        ),
        (
            "ipv4 not for a gateway (XDP_PASS)",
            frames::echo_request(VM_MAC, PEER_MAC, VM_IP, PEER_IP, 1, 1, &payload),
            2,
            None,
        ),
    ];

    let baseline = measure(dp.pass_program()?, &echo, 2)?;
    let baseline_steady = steady(dp.pass_program()?, &echo)?;
    println!("alioth bench dataplane: BPF_PROG_TEST_RUN, repeat=1 x {SAMPLES} samples (trimmed mean), median of {ROUNDS} rounds");
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
        "", "", "XDP_PASS", "(repeat 1M)", "of XDP_PASS", "(net)"
    );
    println!(
        "{:<38} {baseline:>8.1} {:>10} {baseline_steady:>12} {:>12} {:>8}",
        "xdp_pass (baseline program)", "-", "-", "-"
    );
    for (name, frame, action, target) in &paths {
        let ns = measure(dp.program()?, frame, *action)?;
        let net = ns - baseline;
        let (st, st_net) = if *action == 3 {
            ("n/a".to_string(), "n/a".to_string())
        } else {
            let st = steady(dp.program()?, frame)?;
            (st.to_string(), st.saturating_sub(baseline_steady).to_string())
        };
        let target = target.map(|t| format!("<= {t}")).unwrap_or_else(|| "-".into());
        println!("{name:<38} {ns:>8.1} {net:>10.1} {st:>12} {st_net:>12} {target:>8}");
    }
    println!();
    println!("XDP_TX paths rewrite the frame, so they have no steady-state (repeat > 1) figure.");
    Ok(())
}
