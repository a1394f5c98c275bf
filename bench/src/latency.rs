//! Latency percentiles (HdrHistogram, microsecond resolution, up to one minute).

use std::time::Duration;

use hdrhistogram::Histogram;

#[derive(Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"))
    }
}

impl Latency {
    pub fn record(&mut self, d: Duration) {
        self.0.saturating_record(d.as_micros().max(1) as u64);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The q-quantile (0.5, 0.99) in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn summary(&self) -> String {
        format!("p50 {:.2} ms, p99 {:.2} ms", self.ms(0.5), self.ms(0.99))
    }
}
