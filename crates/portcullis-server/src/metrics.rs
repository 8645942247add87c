//! Prometheus metrics, served at `GET /metrics` in the OpenMetrics text format.
//!
//! Every series is named `portcullis_*`; docs/API.md lists them. Labels take values from small
//! fixed sets (route templates, not paths; known methods; store operation names), so a client
//! cannot blow up the number of series.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use axum::http::Method;
use foldhash::fast::FixedState;
use portcullis_service::{Observer, Service};
use portcullis_store::timed::StoreObserver;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabels {
    mode: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    store: &'static str,
    op: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs … ~0.8 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 15))
}

fn lag_histogram() -> Histogram {
    // 1 ms … ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    /// Each route template's series, resolved once: templates come from the router, never from
    /// a request, so this is bounded.
    routes: RwLock<HashMap<String, &'static RouteMetrics, FixedState>>,
    /// Each store operation's series, resolved once (store and operation names are constants).
    store_ops: RwLock<HashMap<(&'static str, &'static str), StoreOpMetrics, FixedState>>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Histograms<RouteLabels>,
    logins: Family<LoginLabels, Counter>,
    throttled: Family<ScopeLabels, Counter>,
    refresh_reuses: Counter,
    revocations: Family<KindLabels, Counter>,
    feed_events: Counter,
    feed_resyncs: Counter,
    feed_connected: Gauge,
    feed_lost_seconds: Gauge<f64, AtomicU64>,
    feed_lag_seconds: Histogram,
    store_operations: Family<StoreLabels, Counter>,
    store_errors: Family<StoreLabels, Counter>,
    store_seconds: Histograms<StoreLabels>,
    hashing_queue: Gauge,
    hashing_workers: Gauge,
    service_feed_snapshots: Counter,
    service_feed_followers: Gauge,
    service_feed_events: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let m = Metrics {
            requests: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            logins: Family::default(),
            throttled: Family::default(),
            refresh_reuses: Counter::default(),
            revocations: Family::default(),
            feed_events: Counter::default(),
            feed_resyncs: Counter::default(),
            feed_connected: Gauge::default(),
            feed_lost_seconds: Gauge::default(),
            feed_lag_seconds: lag_histogram(),
            store_operations: Family::default(),
            store_errors: Family::default(),
            store_seconds: Family::new_with_constructor(latency_histogram),
            hashing_queue: Gauge::default(),
            hashing_workers: Gauge::default(),
            service_feed_snapshots: Counter::default(),
            service_feed_followers: Gauge::default(),
            service_feed_events: Counter::default(),
            registry: Registry::default(),
            routes: Default::default(),
            store_ops: Default::default(),
        };
        let r = &mut registry;
        r.register("http_requests", "HTTP requests by route template, method and status", m.requests.clone());
        r.register("http_request_duration_seconds", "Time to answer, by route template", m.request_seconds.clone());
        r.register("logins", "Login attempts by mode and outcome", m.logins.clone());
        r.register(
            "login_throttled",
            "Login attempts refused by throttling, by the counter that refused",
            m.throttled.clone(),
        );
        r.register(
            "refresh_reuses",
            "Rotated refresh tokens presented again (their sessions are revoked)",
            m.refresh_reuses.clone(),
        );
        r.register("revocations", "Revocations made on this node, by kind", m.revocations.clone());
        r.register("revocation_feed_events", "Revocation events received from the feed", m.feed_events.clone());
        r.register("revocation_feed_resyncs", "Full re-reads of the revocation state", m.feed_resyncs.clone());
        r.register("revocation_feed_connected", "1 while the revocation feed is connected", m.feed_connected.clone());
        r.register(
            "revocation_feed_lost_seconds",
            "How long the revocation feed has been lost (0 while connected)",
            m.feed_lost_seconds.clone(),
        );
        r.register(
            "revocation_feed_lag_seconds",
            "Delay from a sign-out-everywhere to this node hearing of it",
            m.feed_lag_seconds.clone(),
        );
        r.register("store_operations", "Store operations by store and operation", m.store_operations.clone());
        r.register(
            "store_errors",
            "Store operations that failed (unreachable or malformed data)",
            m.store_errors.clone(),
        );
        r.register("store_operation_duration_seconds", "Store operation latency", m.store_seconds.clone());
        r.register("password_hashing_queue_depth", "Password hashes waiting for a worker", m.hashing_queue.clone());
        r.register("password_hashing_workers", "Password hashing workers", m.hashing_workers.clone());
        r.register(
            "service_feed_snapshots",
            "Revocation snapshots served to service clients (GET /v1/revocations)",
            m.service_feed_snapshots.clone(),
        );
        r.register(
            "service_feed_followers",
            "Service clients following the revocation stream now",
            m.service_feed_followers.clone(),
        );
        r.register(
            "service_feed_events",
            "Revocation events sent to following services",
            m.service_feed_events.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The series of requests to the route `template` (`None`: requests no route matched,
    /// labelled `unrouted`), resolved once and kept for the life of the process (there is one
    /// per route template, so this is bounded); the edge layer keeps the handle per route, so a
    /// request costs no label look-up and no reference counting.
    pub fn route(&self, template: Option<&str>) -> &'static RouteMetrics {
        let template = template.unwrap_or("unrouted");
        // The map stays whole whatever panicked while holding its lock: take it back.
        if let Some(r) = self.routes.read().unwrap_or_else(PoisonError::into_inner).get(template).copied() {
            return r;
        }
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        routes
            .entry(template.to_owned())
            .or_insert_with(|| Box::leak(Box::new(self.route_metrics(Box::leak(template.into())))))
    }

    fn route_metrics(&self, route: &'static str) -> RouteMetrics {
        RouteMetrics {
            route,
            seconds: self.request_seconds.get_or_create(&RouteLabels { route }).clone(),
            requests: self.requests.clone(),
            by_outcome: RwLock::default(),
        }
    }

    /// A revocation snapshot was served to a service client.
    pub fn feed_snapshot_served(&self) {
        self.service_feed_snapshots.inc();
    }

    /// A stream of the feed opened (`1`) or closed (`-1`).
    pub fn feed_follower(&self, change: i64) {
        self.service_feed_followers.inc_by(change);
    }

    /// Events sent to following services.
    pub fn feed_events_sent(&self, n: usize) {
        self.service_feed_events.inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// The text exposition, with the gauges read now.
    pub fn render(&self, service: &Service) -> String {
        let feed = service.feed_status();
        self.feed_connected.set(i64::from(feed.connected));
        let lost = feed.lost_since.map_or(0.0, |t| service.clock.now().since(t).as_secs_f64());
        self.feed_lost_seconds.set(lost);
        self.hashing_queue.set(i64::try_from(service.hasher.queue_depth()).unwrap_or(i64::MAX));
        self.hashing_workers.set(i64::try_from(service.hasher.workers()).unwrap_or(i64::MAX));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::error!("could not encode the metrics");
        }
        out
    }
}

impl Observer for Metrics {
    fn login(&self, mode: &'static str, outcome: &'static str) {
        self.logins.get_or_create(&LoginLabels { mode, outcome }).inc();
    }

    fn throttled(&self, scope: &'static str) {
        self.throttled.get_or_create(&ScopeLabels { scope }).inc();
    }

    fn refresh_reuse(&self) {
        self.refresh_reuses.inc();
    }

    fn revocation(&self, kind: &'static str) {
        self.revocations.get_or_create(&KindLabels { kind }).inc();
    }

    fn feed_event(&self, lag: Option<Duration>) {
        self.feed_events.inc();
        if let Some(lag) = lag {
            self.feed_lag_seconds.observe(lag.as_secs_f64());
        }
    }

    fn feed_resync(&self) {
        self.feed_resyncs.inc();
    }
}

impl StoreObserver for Metrics {
    fn operation(&self, store: &'static str, op: &'static str, elapsed: Duration, failed: bool) {
        let record = |series: &StoreOpMetrics| {
            series.seconds.observe(elapsed.as_secs_f64());
            series.operations.inc();
        };
        // Counted under the read lock: no handle is cloned (and reference-counted) per operation.
        let known =
            self.store_ops.read().unwrap_or_else(PoisonError::into_inner).get(&(store, op)).map(record).is_some();
        if !known {
            let labels = StoreLabels { store, op };
            let series = StoreOpMetrics {
                seconds: self.store_seconds.get_or_create(&labels).clone(),
                operations: self.store_operations.get_or_create(&labels).clone(),
            };
            record(&series);
            self.store_ops.write().unwrap_or_else(PoisonError::into_inner).insert((store, op), series);
        }
        if failed {
            self.store_errors.get_or_create(&StoreLabels { store, op }).inc();
        }
    }
}

/// One store operation's series.
struct StoreOpMetrics {
    seconds: Histogram,
    operations: Counter,
}

/// The request series of one route template, resolved once ([`Metrics::route`]).
pub struct RouteMetrics {
    route: &'static str,
    seconds: Histogram,
    requests: Family<RequestLabels, Counter>,
    /// The counters of the (method, status) pairs seen so far: a handful per route.
    by_outcome: RwLock<Vec<(&'static str, u16, Counter)>>,
}

impl RouteMetrics {
    /// The route template these series are labelled with.
    pub fn template(&self) -> &str {
        self.route
    }

    /// Counts and times one answered request.
    pub fn record(&self, method: &Method, status: u16, seconds: f64) {
        self.seconds.observe(seconds);
        let method = method_label(method);
        let inc = |v: &[(&'static str, u16, Counter)]| {
            v.iter().find(|(m, s, _)| *s == status && *m == method).map(|(_, _, c)| c.inc()).is_some()
        };
        if inc(&self.by_outcome.read().unwrap_or_else(PoisonError::into_inner)) {
            return;
        }
        let mut v = self.by_outcome.write().unwrap_or_else(PoisonError::into_inner);
        if !inc(&v) {
            let counter = self.requests.get_or_create(&RequestLabels { route: self.route, method, status }).clone();
            counter.inc();
            v.push((method, status, counter));
        }
    }
}

/// The `method` label: the methods the server knows, and `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
