//! Prometheus metrics for anyone who monitors a fleet of boxes (`GET /metrics`, text format).
//! Counters are kept where things happen (uploads, processing); levels (connections, queue,
//! disk) are read at scrape time from a [`Snapshot`].
//!
//! Door: [`Metrics::new`], the counters' `record_*` methods, then [`Metrics::render`].

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Processing time buckets, in seconds: a short clip on a Pi 4 up to a long 1080p film.
const PROCESSING_BUCKETS: [f64; 10] = [1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    connections: Family<TransportLabel, Gauge>,
    jobs: Family<StateLabel, Gauge>,
    processing_seconds: Histogram,
    videos: Family<OutcomeLabel, Counter>,
    upload_bytes: Counter,
    disk_free: Gauge,
    disk_total: Gauge,
    healthy: Gauge,
    durable_writes: Counter,
    flushes: Counter,
}

/// The levels read at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub polling: usize,
    pub websocket: usize,
    pub jobs_queued: usize,
    pub jobs_running: usize,
    pub disk_free_bytes: u64,
    pub disk_total_bytes: u64,
    pub healthy: bool,
    /// Writes that waited to be durable, and the flushes that made them so (the store counts).
    pub durable_writes: u64,
    pub flushes: u64,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tally");
        let connections = Family::<TransportLabel, Gauge>::default();
        registry.register("connections", "Open Engine.IO sessions by transport", connections.clone());
        let jobs = Family::<StateLabel, Gauge>::default();
        registry.register("jobs", "Processing jobs by state", jobs.clone());
        let processing_seconds = Histogram::new(PROCESSING_BUCKETS);
        registry.register_with_unit(
            "processing",
            "Time to process one video (metadata, analysis, thumbnails)",
            Unit::Seconds,
            processing_seconds.clone(),
        );
        let videos = Family::<OutcomeLabel, Counter>::default();
        registry.register("videos", "Videos whose processing ended, by outcome", videos.clone());
        let upload_bytes = Counter::default();
        registry.register_with_unit("upload", "Bytes of videos uploaded and stored", Unit::Bytes, upload_bytes.clone());
        let disk_free = Gauge::default();
        registry.register_with_unit("disk_free", "Free space for the data directory", Unit::Bytes, disk_free.clone());
        let disk_total = Gauge::default();
        registry.register_with_unit(
            "disk_size",
            "Size of the data directory's filesystem",
            Unit::Bytes,
            disk_total.clone(),
        );
        let healthy = Gauge::default();
        registry.register("healthy", "1 when storage and the job workers are healthy", healthy.clone());
        let durable_writes = Counter::default();
        registry.register("storage_durable_writes", "Writes acknowledged once durable", durable_writes.clone());
        let flushes = Counter::default();
        registry.register("storage_flushes", "Database flushes, each for every write waiting", flushes.clone());
        Metrics {
            registry: Mutex::new(registry),
            connections,
            jobs,
            processing_seconds,
            videos,
            upload_bytes,
            disk_free,
            disk_total,
            healthy,
            durable_writes,
            flushes,
        }
    }

    pub fn record_upload(&self, bytes: u64) {
        self.upload_bytes.inc_by(bytes);
    }

    /// A video finished processing (`ok`) or failed for good after `seconds`.
    pub fn record_processing(&self, ok: bool, seconds: f64) {
        if ok {
            self.processing_seconds.observe(seconds);
        }
        self.videos.get_or_create(&OutcomeLabel { outcome: if ok { "processed" } else { "failed" } }).inc();
    }

    /// The registry in the Prometheus text format.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let level = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.connections.get_or_create(&TransportLabel { transport: "polling" }).set(level(snapshot.polling));
        self.connections.get_or_create(&TransportLabel { transport: "websocket" }).set(level(snapshot.websocket));
        self.jobs.get_or_create(&StateLabel { state: "queued" }).set(level(snapshot.jobs_queued));
        self.jobs.get_or_create(&StateLabel { state: "running" }).set(level(snapshot.jobs_running));
        self.disk_free.set(i64::try_from(snapshot.disk_free_bytes).unwrap_or(i64::MAX));
        self.disk_total.set(i64::try_from(snapshot.disk_total_bytes).unwrap_or(i64::MAX));
        self.healthy.set(i64::from(snapshot.healthy));
        let mut out = String::new();
        let Ok(registry) = self.registry.lock() else { return out };
        // The store keeps the totals; the counters catch up with them, one scrape at a time
        // (under the registry's lock), so two scrapes never both add the same gap.
        for (counter, total) in [(&self.durable_writes, snapshot.durable_writes), (&self.flushes, snapshot.flushes)] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        if let Err(error) = encode(&mut out, &registry) {
            tracing::error!(%error, "encoding metrics failed");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
