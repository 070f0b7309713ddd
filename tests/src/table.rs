//! The benchmarks' side-by-side table: one row per figure, the peer's value, alioth's, their ratio
//! and the target.

use crate::generator::Run;

/// A table whose first column is `width` characters wide.
pub struct Table {
    width: usize,
}

impl Table {
    /// Prints the header: the peer's column is named `peer`.
    pub fn new(width: usize, peer: &str) -> Table {
        println!(
            "{:<width$} {:>16} {:>16} {:>8} {:>8}",
            "", peer, "alioth", "ratio", "target"
        );
        Table { width }
    }

    pub fn line(&self, name: &str, peer: String, ours: String, ratio: f64, target: &str) {
        let width = self.width;
        println!("{name:<width$} {peer:>16} {ours:>16} {ratio:>7.2}x {target:>8}");
    }

    /// The kernel's CPU per frame (`peer`) against a bare forwarder's along the same path (see
    /// `overlay::Lab::bare_path`): their ratio is the most a data plane on the skb path can show
    /// there.
    pub fn bare_forwarder(&self, peer: &Run, bare: &Run) {
        let name = "  bare forwarder: CPU per frame";
        self.line(name, ns(peer.cpu_ns), ns(bare.cpu_ns), peer.cpu_ns / bare.cpu_ns, "");
        println!("  (the same frames redirected unread along the same path on TC: the most a data plane on the skb");
        println!("  path can show here; native XDP skips the skbs the bare forwarder still builds)");
    }

    /// One small-packet measurement: the received rate against `target`, what the generator
    /// offered, CPU per frame, and with `g` (the generator's own cost per frame, in both columns
    /// where the kernel refuses live frames) the same net of it and the rate one core would carry.
    pub fn small_packets(&self, name: &str, peer: &Run, ours: &Run, g: Option<f64>, target: &str) {
        let (k, a) = (peer, ours);
        self.line(
            name,
            mpps(k.received_pps),
            mpps(a.received_pps),
            a.received_pps / k.received_pps,
            target,
        );
        let (ko, ao) = (k.offered_pps, a.offered_pps);
        self.line("  offered by the generator", mpps(ko), mpps(ao), ao / ko, "");
        // Lower is better: the ratio printed is the peer's / alioth's.
        let cpu = "  CPU time per received frame";
        self.line(cpu, ns(k.cpu_ns), ns(a.cpu_ns), k.cpu_ns / a.cpu_ns, "");
        if let Some(g) = g {
            let (kn, an) = (k.cpu_ns - g, a.cpu_ns - g);
            self.line(
                &format!("  net of the generator ({g:.0} ns)"),
                ns(kn),
                ns(an),
                kn / an,
                "",
            );
            let cap = |net: f64| mpps(1e9 / net);
            self.line("  capacity of one core, net", cap(kn), cap(an), kn / an, "");
        }
    }
}

pub fn mpps(v: f64) -> String {
    format!("{:.3} Mpps", v / 1e6)
}

pub fn ns(v: f64) -> String {
    format!("{v:.1} ns")
}

pub fn gbit(v: f64) -> String {
    format!("{v:.2} Gbit/s")
}

pub fn us(v: f64) -> String {
    format!("{v:.1} us")
}
