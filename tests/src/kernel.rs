//! The compiled XDP object with the test vectors loaded, run through BPF_PROG_TEST_RUN: shared by
//! the tests that compare the kernel with the host pipeline.

use std::sync::{Mutex, OnceLock};

use alioth::dataplane::{AttachMode, Dataplane};
use alioth_common::Counter;
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};

use crate::vectors;

/// One data plane per test process, programmed with the vectors (tests run in parallel: lock it).
pub fn vector_dataplane() -> &'static Mutex<Dataplane> {
    static DP: OnceLock<Mutex<Dataplane>> = OnceLock::new();
    DP.get_or_init(|| {
        let (mut dp, _) = Dataplane::load(None, AttachMode::Auto).expect("load the XDP object (run as root)");
        vectors::program(&mut dp).unwrap();
        Mutex::new(dp)
    })
}

/// Runs one frame through `prog`; returns the XDP action and the frame as the program left it
/// (room for 1 KiB of growth: DHCP replies are longer than requests).
pub fn run_program(prog: &mut Xdp, frame: &[u8]) -> (u32, Vec<u8>) {
    alioth::dataplane::test_run::xdp(prog, frame, None).expect("BPF_PROG_TEST_RUN")
}

/// The summed value of one counter.
pub fn counter(dp: &Dataplane, c: Counter) -> u64 {
    dp.counters().unwrap().into_iter().find(|(k, _)| *k == c).unwrap().1
}

/// Runs one frame through a TC program as if it arrived on `ingress_ifindex`, a GSO super-frame
/// of `gso_size`-byte segments unless that is 0; returns the TC action and the frame as the
/// program left it.
pub fn run_tc(prog: &mut SchedClassifier, frame: &[u8], ingress_ifindex: u32, gso_size: u32) -> (u32, Vec<u8>) {
    // struct __sk_buff (192 bytes): ingress_ifindex at 36 and ifindex at 40; the kernel takes
    // only a few fields from a test run's context and wants the rest zero.
    let mut ctx = [0u8; 192];
    ctx[36..40].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    ctx[40..44].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    // gso_segs at 164, gso_size at 176.
    ctx[164..168].copy_from_slice(&u32::from(gso_size != 0).wrapping_mul(2).to_ne_bytes());
    ctx[176..180].copy_from_slice(&gso_size.to_ne_bytes());
    let mut out = vec![0u8; frame.len() + 1024];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat: 1,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN (TC)");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}
