//! What the metrics of both binaries share: the Prometheus text of a registry,
//! the process collector, and handles resolved once per label set.
//!
//! Each binary keeps its own [`Registry`] (passed through its state, no global),
//! registers its metrics on it at start, and serves [`encode`] of it at
//! `/metrics`. Code on a hot path holds a handle (a [`Counter`] or [`Gauge`]
//! clone is an `Arc` of one atomic) made with [`handles`] at start, so counting
//! a frame is one atomic add: no label hashing, lock or allocation.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

pub use prometheus_client;

/// The `Content-Type` of [`encode`]'s text (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// A registry with the process collector on it: every binary's starting point.
pub fn registry() -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Process));
    registry
}

/// The registry's metrics in the Prometheus text format, as a scrape gets them.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail; a metric that fails to encode is left out.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, registry) {
        tracing::warn!(error = %e, "a metric could not be encoded");
    }
    text
}

/// The metric of each of `labels`, made once: a hot path then holds these
/// handles (indexed by its own enum) instead of looking the labels up per event.
pub fn handles<S, M, C, const N: usize>(family: &Family<S, M, C>, labels: [S; N]) -> [M; N]
where
    S: Clone + std::hash::Hash + Eq,
    M: Clone,
    C: MetricConstructor<M>,
{
    labels.map(|l| family.get_or_create_owned(&l))
}

/// Writes one unlabelled gauge read at scrape time (a collector's value).
///
/// # Errors
/// When the text cannot be written.
pub fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// The standard `process_*` metrics (the names every Prometheus dashboard knows),
/// read from `/proc/self` at each scrape; nothing where there is no `/proc`.
#[derive(Debug)]
struct Process;

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(own) = crate::procfs::own() else {
            return Ok(());
        };
        let counter = ConstCounter::new(own.usage.cpu_secs);
        counter.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            None,
            MetricType::Counter,
        )?)?;
        // Counts as integers; the start time keeps its fraction.
        let counts = [
            (
                "process_resident_memory_bytes",
                "Resident memory size, in bytes",
                Some(own.usage.rss_bytes),
            ),
            (
                "process_open_fds",
                "File descriptors open",
                Some(own.open_fds),
            ),
            (
                "process_max_fds",
                "The limit on open file descriptors",
                own.max_fds,
            ),
        ];
        for (name, help, value) in counts {
            let Some(value) = value else { continue };
            gauge(
                &mut encoder,
                name,
                help,
                i64::try_from(value).unwrap_or(i64::MAX),
            )?;
        }
        ConstGauge::new(own.start_time_secs).encode(encoder.encode_descriptor(
            "process_start_time_seconds",
            "When the process started, in seconds since the Unix epoch",
            None,
            MetricType::Gauge,
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct Label {
        value: &'static str,
    }

    #[test]
    fn the_text_has_the_process_metrics_and_the_registered_ones() {
        let mut registry = registry();
        let family = Family::<Label, Counter>::default();
        registry.register("logi_test_things", "Things", family.clone());
        let [a, b] = handles(&family, [Label { value: "a" }, Label { value: "b" }]);
        a.inc();
        a.inc();
        b.inc();
        let text = encode(&registry);
        assert!(
            text.contains("logi_test_things_total{value=\"a\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("logi_test_things_total{value=\"b\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE process_cpu_seconds_total counter\n"),
            "{text}"
        );
        let fds = text
            .lines()
            .find_map(|l| l.strip_prefix("process_open_fds "))
            .expect("open fds");
        assert!(fds.parse::<f64>().unwrap() >= 3.0, "{fds}");
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
        assert!(text.contains("\nprocess_start_time_seconds "), "{text}");
    }
}
