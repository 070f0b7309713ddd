//! One frame through a loaded XDP or TC program with BPF_PROG_TEST_RUN: `alioth trace`, echo
//! probes, and the tests that compare the kernel with the host pipeline.

use alioth_common::pipeline::Action;
use anyhow::{Context, Result};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};

/// `enum xdp_action` in the kernel's uapi.
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;
/// `TC_ACT_REDIRECT` in the kernel's uapi.
pub const TC_ACT_REDIRECT: u32 = 7;

/// The XDP action the kernel program returns for a pipeline `action` (`finish` in the XDP
/// program). `Dhcp` is what the host pipeline never answers when it runs the server itself; the
/// kernel drops what it could not hand on.
pub fn xdp_action(action: Action) -> u32 {
    match action {
        Action::Pass | Action::Nat => XDP_PASS,
        Action::Tx => XDP_TX,
        Action::Drop | Action::Dhcp => XDP_DROP,
        Action::Redirect | Action::Encap | Action::Decap => XDP_REDIRECT,
    }
}

/// `TC_ACT_OK` and `TC_ACT_SHOT`.
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;

/// The TC action the skb path's program returns for a pipeline `action` (`tc::finish`).
pub fn tc_action(action: Action) -> u32 {
    match action {
        Action::Pass => TC_ACT_OK,
        Action::Drop | Action::Dhcp => TC_ACT_SHOT,
        Action::Tx | Action::Redirect | Action::Encap | Action::Decap | Action::Nat => TC_ACT_REDIRECT,
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

/// The `struct __sk_buff` (192 bytes) of a TC program's test run: the interface it arrived on
/// and the one it is on, and a GSO super-frame of `gso_size`-byte segments unless that is 0. The
/// kernel takes only a few fields from a test run's context and wants the rest zero.
pub fn skb_context(ingress_ifindex: u32, ifindex: u32, gso_size: u32) -> [u8; 192] {
    let mut ctx = [0u8; 192];
    // ingress_ifindex at 36, ifindex at 40, gso_segs at 164, gso_size at 176.
    ctx[36..40].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    ctx[164..168].copy_from_slice(&u32::from(gso_size != 0).wrapping_mul(2).to_ne_bytes());
    ctx[176..180].copy_from_slice(&gso_size.to_ne_bytes());
    ctx
}

/// Runs one frame through a TC program as if it arrived on `ingress_ifindex`, a GSO super-frame
/// of `gso_size`-byte segments unless that is 0; returns the TC action and the frame as the
/// program left it.
pub fn tc(prog: &SchedClassifier, frame: &[u8], ingress_ifindex: u32, gso_size: u32) -> Result<(u32, Vec<u8>)> {
    let ctx = skb_context(ingress_ifindex, ingress_ifindex, gso_size);
    let mut out = vec![0u8; frame.len() + 1024];
    let run = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat: 1,
            ..Default::default()
        })
        .context("BPF_PROG_TEST_RUN (TC)")?;
    out.truncate(run.data_size_out as usize);
    Ok((run.return_value, out))
}
