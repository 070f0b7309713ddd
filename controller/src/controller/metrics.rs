//! What the controller counts: apply latency, answers by status, data-plane events, and the damage
//! the record had at start (`api::exporter` serves them with the rest).

use std::time::Duration;

use alioth_proto::schema::OperationStatus;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

/// Upper bounds (seconds) of the apply-latency histogram buckets.
const BUCKETS: [f64; 10] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

/// A label set of one label.
pub type Label = Vec<(&'static str, &'static str)>;

#[derive(Debug)]
pub struct Metrics {
    /// Time to validate, plan and apply one message.
    pub apply_seconds: Histogram,
    /// Answers by status.
    pub operations: Family<Label, Counter>,
    /// DHCPDECLINEs the data plane reported (those held back included).
    pub dhcp_declines: Counter,
    /// What was wrong with the record at start, and whether the pinned data plane was adopted.
    pub record: crate::store::Damage,
    pub adopted: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            apply_seconds: Histogram::new(BUCKETS),
            operations: Family::default(),
            dhcp_declines: Counter::default(),
            record: Default::default(),
            adopted: false,
        }
    }
}

impl Metrics {
    pub fn observe(&mut self, took: Duration, statuses: impl Iterator<Item = OperationStatus>) {
        self.apply_seconds.observe(took.as_secs_f64());
        for s in statuses {
            self.operations.get_or_create(&vec![("status", s.as_str_name())]).inc();
        }
    }
}
