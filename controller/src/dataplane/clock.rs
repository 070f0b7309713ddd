//! The kernel's jiffies, in which tracked flows expire: the programs read them inline, where a
//! clock in nanoseconds costs a helper call per frame.

use anyhow::{ensure, Result};

/// The kernel's `HZ`, read once per process (`kernel_hz`): what the programs are loaded with and
/// what the agent counts jiffies by are the same number (static: the loader holds on to it).
pub fn hz() -> Result<&'static u64> {
    static HZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    match HZ.get() {
        Some(hz) => Ok(hz),
        None => {
            let found = kernel_hz()?;
            Ok(HZ.get_or_init(|| found))
        }
    }
}

/// The kernel's `HZ`: the coarse clocks advance by one jiffy, which `clock_getres` reports.
fn kernel_hz() -> Result<u64> {
    let ns = nanos(libc::CLOCK_MONOTONIC_COARSE, true)?;
    ensure!(
        (1..=1_000_000_000).contains(&ns),
        "the coarse clock's resolution is {ns} ns: no tick length the kernel's HZ can be read from"
    );
    Ok((1_000_000_000 + ns / 2) / ns)
}

/// The kernel's jiffies now, to a tick or so: they start 300 s short of wrapping 32 bits
/// (`INITIAL_JIFFIES`) and advance with the monotonic clock.
pub fn jiffies_now(hz: u64) -> Result<u64> {
    let initial = (300 * hz as i64).wrapping_neg() as u32 as u64;
    Ok(initial + nanos(libc::CLOCK_MONOTONIC, false)? * hz / 1_000_000_000)
}

/// The clock's resolution (`res`) or time, in nanoseconds.
fn nanos(clock: libc::clockid_t, res: bool) -> Result<u64> {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a timespec to write to.
    let rc = unsafe {
        match res {
            true => libc::clock_getres(clock, &mut t),
            false => libc::clock_gettime(clock, &mut t),
        }
    };
    ensure!(rc == 0, "clock {clock}: {}", std::io::Error::last_os_error());
    Ok(t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn kernel_hz_is_one_of_the_kernels_choices() {
        let hz = super::kernel_hz().unwrap();
        assert!([100, 250, 300, 1000].contains(&hz), "HZ {hz}");
    }
}
