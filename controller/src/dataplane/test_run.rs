//! One frame through a loaded XDP program with BPF_PROG_TEST_RUN: `alioth trace`, and the tests
//! that compare the kernel with the host pipeline.

use alioth_common::pipeline::Action;
use anyhow::{Context, Result};
use aya::programs::{TestRun, TestRunOptions, Xdp};

/// `enum xdp_action` in the kernel's uapi.
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// The XDP action the kernel program returns for a pipeline `action` (`finish` in the XDP
/// program). `Dhcp` is what the host pipeline never answers when it runs the server itself; the
/// kernel drops what it could not hand on.
pub fn xdp_action(action: Action) -> u32 {
    match action {
        Action::Pass => XDP_PASS,
        Action::Tx => XDP_TX,
        Action::Drop | Action::Dhcp => XDP_DROP,
        Action::Redirect | Action::Encap | Action::Decap => XDP_REDIRECT,
    }
}

/// Runs `frame` once through `prog`, as if it came in on `ingress_ifindex` when given; returns the
/// XDP action and the frame as the program left it (room for 1 KiB of growth: DHCP replies are
/// longer than requests).
pub fn xdp(prog: &Xdp, frame: &[u8], ingress_ifindex: Option<u32>) -> Result<(u32, Vec<u8>)> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let ctx: Option<Vec<u8>> = ingress_ifindex.map(|ifindex| {
        let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
        md.iter().flat_map(|w| w.to_ne_bytes()).collect()
    });
    let mut out = vec![0u8; frame.len() + 1024];
    let run = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: ctx.as_deref(),
            repeat: 1,
            ..Default::default()
        })
        .context("BPF_PROG_TEST_RUN")?;
    out.truncate(run.data_size_out as usize);
    Ok((run.return_value, out))
}
