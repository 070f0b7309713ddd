//! The benchmarks' small-packet generator and sink: frames sent from a VM as if the VM sent them
//! (BPF_PROG_RUN live frames of an XDP_TX program; where the kernel refuses those, skb clones a TC
//! program's test runs send out of the VM's eth0, or AF_PACKET from user space), counted where the
//! receiving VM's eth0 receives them (its sink drops them there).

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use aya::programs::{SchedClassifier, TestRun, TestRunAttrs, TestRunOptions, Xdp};

use alioth::dataplane::object::{CLONE_TX_PROGRAM, TX_PROGRAM};
use alioth_common::generator::{TX_HEAD_GLOBAL, TX_HEAD_LEN};

use crate::netns::Netns;

/// Whether `e` is the kernel refusing live frames (some kernels do, with EPERM, for any program):
/// then the frames come from user space instead.
fn refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::EPERM))
    })
}

/// Busy time of all CPUs since boot (/proc/stat: user, nice, system, irq and softirq).
pub fn cpu_busy() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .context("/proc/stat has no cpu line")?
        .split_whitespace()
        .map(|t| t.parse().unwrap_or(0))
        .collect();
    ensure!(ticks.len() >= 7, "short cpu line in /proc/stat");
    let busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6];
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(busy * 1_000_000_000 / hz))
}

/// Frames the VM's `eth0` received (its sink drops the generator's on TC ingress). Counted by
/// the veth as they arrive, however they came: sent through the peer, or put straight into this
/// side by a program on the peer (`bpf_redirect_peer`).
pub fn rx_frames(vm: &Netns) -> Result<u64> {
    vm.link_counter("eth0", "rx_packets")
}

/// Runs the generator in `vm`'s network namespace on CPU 0: `burst` copies of `frame` out of its
/// eth0, with GRO on at its first hop for the run (`NapiOn`). Returns the wall time.
pub fn generate(vm: &Netns, frame: Vec<u8>, burst: u32) -> Result<(Duration, Generator)> {
    let _napi = NapiOn::first_hop(vm)?;
    generate_with_napi(vm, frame, burst)
}

/// `generate`, the first hop's GRO already on (`NapiOn` held by the caller across its runs, so
/// that setting it up stays out of the CPU time they measure).
fn generate_with_napi(vm: &Netns, frame: Vec<u8>, burst: u32) -> Result<(Duration, Generator)> {
    crate::netns::in_netns(&vm.name.clone(), move || generate_here(frame, burst))
}

/// GRO turned on, for a measurement's generator runs, on the veth peer of a VM's eth0 (its first
/// hop) where it was off, and off again after: live frames reach a veth only through its peer's NAPI, which a
/// peer without XDP of its own runs only with GRO on (alioth's ports on the skb path). Both
/// systems' first hops then take the same path.
struct NapiOn {
    ns: String,
    iface: String,
}

impl NapiOn {
    fn first_hop(vm: &Netns) -> Result<Option<NapiOn>> {
        let link = json(&vm.exec(&["ip", "-j", "link", "show", "dev", "eth0"])?)?;
        let (Some(index), Some(nsid)) = (link[0]["link_index"].as_u64(), link[0]["link_netnsid"].as_u64()) else {
            return Ok(None);
        };
        let ids = json(&vm.exec(&["ip", "-j", "netns", "list-id"])?)?;
        let ns = entry(&ids, "nsid", nsid)
            .and_then(|id| id["name"].as_str())
            .with_context(|| format!("no name for {}'s peer namespace {nsid}", vm.name))?
            .to_string();
        let links = json(&crate::netns::run(&["ip", "-n", &ns, "-j", "link", "show"])?)?;
        let iface = entry(&links, "ifindex", index)
            .and_then(|l| l["ifname"].as_str())
            .with_context(|| format!("no interface {index} in {ns}"))?
            .to_string();
        let features = crate::netns::run(&["ip", "netns", "exec", &ns, "ethtool", "-k", &iface])?;
        if features.contains("generic-receive-offload: on") {
            return Ok(None);
        }
        crate::netns::run(&["ip", "netns", "exec", &ns, "ethtool", "-K", &iface, "gro", "on"])?;
        Ok(Some(NapiOn { ns, iface }))
    }
}

impl Drop for NapiOn {
    fn drop(&mut self) {
        let off = [
            "ip",
            "netns",
            "exec",
            &self.ns,
            "ethtool",
            "-K",
            &self.iface,
            "gro",
            "off",
        ];
        let _ = crate::netns::run(&off);
    }
}

fn json(text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).context("ip's JSON")
}

/// The entry of `ip -j`'s list whose `key` is `value`.
fn entry<'a>(list: &'a serde_json::Value, key: &str, value: u64) -> Option<&'a serde_json::Value> {
    list.as_array()?.iter().find(|e| e[key].as_u64() == Some(value))
}

fn generate_here(frame: Vec<u8>, burst: u32) -> Result<(Duration, Generator)> {
    // SAFETY: a zeroed cpu_set_t with CPU 0 set, for this thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    let ifindex = alioth::net::interfaces::ifindex("eth0").context("eth0 in the VM")?;
    let head: [u8; TX_HEAD_LEN] = frame
        .get(..TX_HEAD_LEN)
        .and_then(|h| h.try_into().ok())
        .context("a generator frame shorter than its head")?;
    let mut ebpf = aya::EbpfLoader::new()
        .override_global(TX_HEAD_GLOBAL, &head, true)
        .load(alioth::dataplane::object::lab_object()?)?;
    let prog: &mut Xdp = ebpf.program_mut(TX_PROGRAM).context("generator program")?.try_into()?;
    prog.load()?;
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let md: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
    let ctx: Vec<u8> = md.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let t = Instant::now();
    let live = prog.test_run(TestRunOptions {
        data_in: Some(&frame),
        ctx_in: Some(&ctx),
        repeat: burst,
        attrs: TestRunAttrs::new().xdp_live_frames(64),
        ..Default::default()
    });
    match live.context("BPF_PROG_RUN live frames") {
        Ok(_) => Ok((t.elapsed(), Generator::LiveFrames)),
        Err(e) if refused(&e) => {
            if std::env::var("ALIOTH_BENCH_GENERATOR").as_deref() == Ok("af_packet") {
                let t = Instant::now();
                af_packet_burst(ifindex, &frame, burst)?;
                return Ok((t.elapsed(), Generator::AfPacket));
            }
            let prog: &mut SchedClassifier = ebpf
                .program_mut(CLONE_TX_PROGRAM)
                .context("skb generator program")?
                .try_into()?;
            prog.load()?;
            let t = Instant::now();
            clone_burst(prog, ifindex, &frame, burst)?;
            Ok((t.elapsed(), Generator::CloneRedirect))
        }
        Err(e) => Err(e),
    }
}

/// One generator run of small packets.
#[derive(Default)]
pub struct Run {
    pub generator: Generator,
    pub offered_pps: f64,
    pub received_pps: f64,
    /// Busy CPU time of the whole machine (generator included) per frame received.
    pub cpu_ns: f64,
}

/// `runs` runs of `burst` copies of `frame` from VM `src` to VM `dst`'s sink: the one that
/// delivered the most.
pub fn best_of(src: &Netns, dst: &Netns, frame: &[u8], burst: u32, runs: usize) -> Result<Run> {
    let _napi = NapiOn::first_hop(src)?;
    let mut best = Run::default();
    for _ in 0..runs {
        let (before, busy) = (rx_frames(dst)?, cpu_busy()?);
        let (took, generator) = generate_with_napi(src, frame.to_vec(), burst)?;
        std::thread::sleep(Duration::from_millis(200));
        let got = rx_frames(dst)? - before;
        let run = Run {
            generator,
            offered_pps: f64::from(burst) / took.as_secs_f64(),
            received_pps: got as f64 / took.as_secs_f64(),
            cpu_ns: (cpu_busy()? - busy).as_nanos() as f64 / got.max(1) as f64,
        };
        if run.received_pps > best.received_pps {
            best = run;
        }
    }
    ensure!(
        best.received_pps > 0.0,
        "the receiving VM's sink counted no generator frame"
    );
    Ok(best)
}

/// CPU time per frame of the generator in `src` and what carries its frames to the far side,
/// from the least of `runs` bursts of `frame`, which the far side should drop at once.
pub fn cost_alone(src: &Netns, frame: &[u8], burst: u32, runs: usize) -> Result<f64> {
    let _napi = NapiOn::first_hop(src)?;
    let mut least = f64::MAX;
    for _ in 0..runs {
        let busy = cpu_busy()?;
        generate_with_napi(src, frame.to_vec(), burst)?;
        least = least.min((cpu_busy()? - busy).as_nanos() as f64 / f64::from(burst));
    }
    Ok(least)
}

/// Where the small packets come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Generator {
    /// In the kernel: BPF_PROG_RUN live frames of an XDP_TX program (frames, no skb).
    #[default]
    LiveFrames,
    /// In the kernel, where it refuses live frames: BPF_PROG_TEST_RUN of a TC program that sends a
    /// clone of its frame out of the VM's eth0 each run (`bpf_clone_redirect`: an skb, as a VM's
    /// frames from its tap are).
    CloneRedirect,
    /// From user space (`ALIOTH_BENCH_GENERATOR=af_packet`): AF_PACKET past the qdisc, 64 frames
    /// per `sendmmsg`.
    AfPacket,
}

impl Generator {
    /// What the generator is, for a bench's header.
    pub fn name(self) -> &'static str {
        match self {
            Generator::LiveFrames => "BPF_PROG_RUN live frames",
            Generator::CloneRedirect => {
                "skb clones sent out of the VM's eth0 by BPF_PROG_TEST_RUN (bpf_clone_redirect; this kernel refuses live frames)"
            }
            Generator::AfPacket => "AF_PACKET sendmmsg from user space",
        }
    }
}

/// `count` copies of `frame` out of interface `ifindex` (see `Generator::CloneRedirect`).
fn clone_burst(prog: &SchedClassifier, ifindex: u32, frame: &[u8], count: u32) -> Result<()> {
    // On the interface, arrived on none.
    let ctx = alioth::dataplane::test_run::skb_context(0, ifindex, 0);
    prog.test_run(TestRunOptions {
        data_in: Some(frame),
        ctx_in: Some(&ctx),
        repeat: count,
        ..Default::default()
    })
    .context("BPF_PROG_TEST_RUN of the skb generator")?;
    Ok(())
}

/// `count` copies of `frame` out of interface `ifindex` (see `Generator::AfPacket`).
fn af_packet_burst(ifindex: u32, frame: &[u8], count: u32) -> Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket(2); the descriptor is owned right below.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    ensure!(raw >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let one: libc::c_int = 1;
    // SAFETY: an int option of the right size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_QDISC_BYPASS,
            std::ptr::addr_of!(one).cast(),
            size_of::<libc::c_int>() as u32,
        )
    };
    // SAFETY: all-zero sockaddr_ll, mmsghdr and iovec are valid; the fields used are set below.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_ifindex = ifindex as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&frame[..6]);
    let mut iov = libc::iovec {
        iov_base: frame.as_ptr() as *mut libc::c_void,
        iov_len: frame.len(),
    };
    // SAFETY: as above.
    let mut msgs: Vec<libc::mmsghdr> = (0..64).map(|_| unsafe { std::mem::zeroed() }).collect();
    for m in &mut msgs {
        m.msg_hdr.msg_name = std::ptr::addr_of_mut!(to).cast();
        m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
        m.msg_hdr.msg_iov = std::ptr::addr_of_mut!(iov);
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut sent = 0u32;
    while sent < count {
        let batch = (count - sent).min(64);
        // SAFETY: `msgs` holds `batch` valid headers pointing at live memory.
        let n = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), batch, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            // A full device queue: try again.
            if e.raw_os_error() == Some(libc::ENOBUFS) || e.raw_os_error() == Some(libc::EAGAIN) {
                continue;
            }
            bail!("sendmmsg: {e}");
        }
        sent += n as u32;
    }
    Ok(())
}

/// `PACKET_QDISC_BYPASS` (linux/if_packet.h).
const PACKET_QDISC_BYPASS: libc::c_int = 20;
