//! [`GaugeRecorder`]: a `metrics` recorder that keeps the gauges recorded
//! through it, for tests that a backend's gauge says what it should.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit};

/// Keeps every gauge recorded through it (counters and histograms are
/// dropped). Install it for the test's thread with
/// `metrics::set_default_local_recorder`, on a current-thread runtime so
/// the backend's tasks record on that thread too.
///
/// ```
/// use es_core::testing::GaugeRecorder;
/// let gauges = GaugeRecorder::default();
/// {
///     let _installed = metrics::set_default_local_recorder(&gauges);
///     metrics::gauge!("queue_length").set(3.0);
///     metrics::gauge!("lag_seconds", "shard" => "0").set(1.5);
/// }
/// assert_eq!(gauges.get("queue_length", &[]), Some(3.0));
/// assert_eq!(gauges.get("lag_seconds", &[("shard", "0")]), Some(1.5));
/// assert_eq!(gauges.get("never_set", &[]), None);
/// ```
#[derive(Debug, Default)]
pub struct GaugeRecorder(Mutex<HashMap<Key, Arc<AtomicU64>>>);

impl GaugeRecorder {
    /// The last value of gauge `name` with exactly `labels`, if it was
    /// ever recorded.
    pub fn get(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Option<f64> {
        let key = Key::from_parts(name, labels.iter().map(|(k, v)| Label::new(*k, *v)).collect::<Vec<_>>());
        let gauges = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        gauges.get(&key).map(|v| f64::from_bits(v.load(Ordering::SeqCst)))
    }
}

impl Recorder for GaugeRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut gauges = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Gauge::from_arc(Arc::clone(gauges.entry(key.clone()).or_default()))
    }
    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}
