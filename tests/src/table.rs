//! The benchmarks' side-by-side table: one row per figure, the peer's value, alioth's, their ratio
//! and the target.

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
