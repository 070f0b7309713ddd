//! What the controller counts between scrapes: apply latency, answers by status, data-plane events,
//! and the damage the record had at start (`api::exporter` serves them).

use std::time::Duration;

use alioth_proto::schema::OperationStatus;

/// Upper bounds (seconds) of the apply-latency histogram buckets.
pub(crate) const BUCKETS: [f64; 10] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// What the controller accumulates between scrapes.
#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) buckets: [u64; BUCKETS.len()],
    pub(crate) count: u64,
    pub(crate) sum: f64,
    /// Answers by status, indexed by `OperationStatus as usize`.
    pub(crate) outcomes: [u64; 5],
    /// DHCPDECLINE events the data plane reported.
    pub dhcp_declines: u64,
    /// What was wrong with the record at start, and whether the pinned data plane was adopted.
    pub record: crate::store::Damage,
    pub adopted: bool,
}

impl Metrics {
    pub fn observe(&mut self, took: Duration, statuses: impl Iterator<Item = OperationStatus>) {
        let secs = took.as_secs_f64();
        for (b, le) in self.buckets.iter_mut().zip(BUCKETS) {
            if secs <= le {
                *b += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
        for s in statuses {
            self.outcomes[s as usize] += 1;
        }
    }
}
