//! Timing of XDP programs through BPF_PROG_TEST_RUN, shared by the benchmarks.

use alioth::dataplane::Dataplane;
use anyhow::{ensure, Result};
use aya::programs::{TestRun, TestRunOptions, Xdp};

pub const SAMPLES: usize = 20_000;
pub const ROUNDS: usize = 5;
/// Runs of the program in one steady-state measurement, split over `STEADY_ROUNDS` calls.
pub const STEADY_REPEAT: u64 = 1_000_000;
pub const STEADY_ROUNDS: usize = 10;

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
pub fn measure(prog: &Xdp, frame: &[u8], expect_action: u32) -> Result<f64> {
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        rounds.push(single_runs(prog, frame, expect_action, SAMPLES)?);
    }
    Ok(median(&mut rounds))
}

/// Trimmed mean kernel time of `n` single runs (a fresh copy of `frame` each); checks the action.
fn single_runs(prog: &Xdp, frame: &[u8], expect_action: u32, n: usize) -> Result<f64> {
    let mut out = vec![0u8; frame.len() + 512];
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
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
    Ok(trimmed_mean(&mut samples))
}

/// Rounds of `cold`, each `SAMPLES / 5` single runs of the program and as many of the baseline.
pub const COLD_ROUNDS: usize = 25;

/// Single-run (cold) ns of the program `name` and of the XDP_PASS baseline: the least over
/// `COLD_ROUNDS` of each one's trimmed mean, the two alternating round by round, for the reason
/// `steady` gives (interference on a shared VM only ever adds time).
pub fn cold(dp: &mut Dataplane, name: &str, frame: &[u8], expect_action: u32) -> Result<(f64, f64)> {
    let (mut least, mut base) = (f64::MAX, f64::MAX);
    for _ in 0..COLD_ROUNDS {
        least = least.min(single_runs(
            dp.loaded_program(name)?,
            frame,
            expect_action,
            SAMPLES / 5,
        )?);
        base = base.min(single_runs(dp.pass_program()?, frame, 2, SAMPLES / 5)?);
    }
    Ok((least, base))
}

/// Steady-state ns per run of the program `name` and of the XDP_PASS baseline: the least of
/// `STEADY_ROUNDS` BPF_PROG_TEST_RUN calls each, which together repeat a program `STEADY_REPEAT`
/// times (idempotent inputs, or a program that undoes its edit). The least, because on a shared
/// VM interference only ever adds time; the two alternate round by round, so that both figures
/// come from the same stretch of time however the neighbours behave.
pub fn steady(dp: &mut Dataplane, name: &str, frame: &[u8]) -> Result<(u64, u64)> {
    let mut out = vec![0u8; frame.len() + 256];
    let (mut least, mut base) = (u64::MAX, u64::MAX);
    for _ in 0..STEADY_ROUNDS {
        let mut run = |prog: &Xdp| -> Result<u64> {
            let opts = TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat: (STEADY_REPEAT / STEADY_ROUNDS as u64) as u32,
                ..Default::default()
            };
            Ok(prog.test_run(opts)?.duration.as_nanos() as u64)
        };
        least = least.min(run(dp.loaded_program(name)?)?);
        base = base.min(run(dp.pass_program()?)?);
    }
    Ok((least, base))
}

/// A row of `in_kernel`: its name, the program and its steady-state twin (none where the twin cannot
/// undo what the program does), the frame, the target.
pub type KernelRow<'a> = (&'a str, &'a str, Option<&'a str>, &'a [u8], &'a str);

/// Prints ns per frame of each row's program in the kernel, net of the XDP_PASS program measured
/// the same way: one run per sample (repeat = 1, cold), and steady state (the least of 10 runs of
/// repeat = 100k) through the benchmark twin that puts the frame's head back after each run.
pub fn in_kernel(dp: &mut Dataplane, rows: &[KernelRow<'_>]) -> Result<()> {
    let base = measure(dp.pass_program()?, rows.first().map_or(&[][..], |r| r.3), 2)?;
    println!();
    println!(
        "{:<28} {:>12} {:>12} {:>14} {:>14} {:>8}",
        "BPF_PROG_TEST_RUN", "repeat=1", "net of PASS", "steady", "net of PASS", "target"
    );
    println!(
        "{:<28} {base:>12.1} {:>12} {:>14} {:>14} {:>8}",
        "xdp_pass (baseline)", "-", "(beside each)", "-", ""
    );
    for (name, prog, bench, frame, target) in rows {
        // Encapsulated and decapsulated frames are redirected (XDP_REDIRECT).
        let cold = measure(dp.loaded_program(prog)?, frame, 4)?;
        let (hot, net) = match bench {
            Some(bench) => {
                let (hot, hot_base) = steady(dp, bench, frame)?;
                (hot.to_string(), hot.saturating_sub(hot_base).to_string())
            }
            None => ("-".to_string(), "-".to_string()),
        };
        println!(
            "{name:<28} {cold:>12.1} {:>12.1} {hot:>14} {net:>14} {target:>8}",
            cold - base
        );
    }
    Ok(())
}
