//! `cargo xtask bench dataplane`: ns per packet of each port-program path through BPF_PROG_TEST_RUN,
//! beside the trivial XDP_PASS program measured the same way in the same run.
//!
//! Paths that rewrite the frame are not idempotent (a reply run again is another path), so every
//! sample is one run (repeat = 1) on a fresh copy of the input; the kernel's own per-run time is
//! used, and the baseline carries the same fixed cost of the test harness. Each syscall leaves the
//! caches cold-ish, so these are upper bounds; for paths whose input is idempotent (drop, pass) the
//! steady-state cost from one run with repeat = 1,000,000 is printed too.

use alioth::dataplane::{AttachMode, Dataplane};
use alioth_tests::dhcp::Request;
use alioth_tests::frames;
use alioth_tests::timing::{measure, steady, ROUNDS, SAMPLES};
use alioth_tests::vectors::{self, *};
use anyhow::Result;
use dhcproto::v4::MessageType;

fn main() -> Result<()> {
    let (mut dp, _) = Dataplane::load(None, AttachMode::Auto)?;
    vectors::program(&mut dp)?;
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
            "dhcp discover -> offer (XDP_TX)",
            Request::new(MessageType::Discover).frame(),
            3,
            Some(200),
        ),
        (
            "dhcp request -> ack (XDP_TX)",
            Request::selecting().frame(),
            3,
            Some(200),
        ),
        (
            "udp 60 B to a local port (XDP_REDIRECT)",
            vectors::udp_from_port(PEER_MAC, PEER_IP, 18),
            4,
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
