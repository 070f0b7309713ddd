//! The compiled XDP object with the test vectors loaded, run through BPF_PROG_TEST_RUN: shared by
//! the tests that compare the kernel with the host pipeline.

use std::sync::{Mutex, OnceLock};

use alioth::dataplane::{AttachMode, Dataplane};
use alioth_common::Counter;
use aya::programs::{TestRun, TestRunOptions, Xdp};

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
    let mut out = vec![0u8; frame.len() + 1024];
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

/// The summed value of one counter.
pub fn counter(dp: &Dataplane, c: Counter) -> u64 {
    dp.counters().unwrap().into_iter().find(|(k, _)| *k == c).unwrap().1
}
