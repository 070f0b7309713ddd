//! The compiled XDP object with the test vectors loaded, run through BPF_PROG_TEST_RUN: shared by
//! the tests that compare the kernel with the host pipeline.

use std::sync::{Mutex, OnceLock};

use alioth::dataplane::{AttachMode, Dataplane};
use alioth_common::Counter;
use aya::programs::{SchedClassifier, Xdp};

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

/// `test_run::tc`, which a test expects to run.
pub fn run_tc(prog: &mut SchedClassifier, frame: &[u8], ingress_ifindex: u32, gso_size: u32) -> (u32, Vec<u8>) {
    alioth::dataplane::test_run::tc(prog, frame, ingress_ifindex, gso_size).expect("BPF_PROG_TEST_RUN (TC)")
}
