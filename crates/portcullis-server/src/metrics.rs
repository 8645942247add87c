//! Prometheus metrics, served at `GET /metrics` in the OpenMetrics text format.
//!
//! Every series is named `portcullis_*`; docs/API.md lists them. Labels take values from small
//! fixed sets (route templates, not paths; known methods; store operation names), so a client
//! cannot blow up the number of series.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
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
    /// Route templates seen so far, kept for the life of the process so request labels need
    /// no allocation. Templates come from the router, never from a request, so this is bounded.
    routes: std::sync::RwLock<std::collections::HashMap<String, &'static str>>,
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

    fn route_label(&self, route: &str) -> &'static str {
        if let Some(r) = self.routes.read().ok().and_then(|m| m.get(route).copied()) {
            return r;
        }
        let Ok(mut routes) = self.routes.write() else { return "unknown" };
        routes.entry(route.to_owned()).or_insert_with(|| Box::leak(route.to_owned().into_boxed_str()))
    }

    fn request(&self, route: &str, method: &Method, status: u16, seconds: f64) {
        let method = match *method {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::PATCH => "PATCH",
            Method::DELETE => "DELETE",
            Method::PUT => "PUT",
            Method::HEAD => "HEAD",
            Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        let route = self.route_label(route);
        self.requests.get_or_create(&RequestLabels { route, method, status }).inc();
        self.request_seconds.get_or_create(&RouteLabels { route }).observe(seconds);
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
        let feed = service.feed.feed_status();
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
        let labels = StoreLabels { store, op };
        self.store_seconds.get_or_create(&labels).observe(elapsed.as_secs_f64());
        self.store_operations.get_or_create(&labels).inc();
        if failed {
            self.store_errors.get_or_create(&labels).inc();
        }
    }
}

/// The route template a request matched, handed outwards on the response.
#[derive(Clone)]
struct Routed(MatchedPath);

/// Inner layer (on the routes): tags the response with the route template.
pub async fn tag_route(req: Request, next: Next) -> Response {
    let path = req.extensions().get::<MatchedPath>().cloned();
    let mut res = next.run(req).await;
    if let Some(p) = path {
        res.extensions_mut().insert(Routed(p));
    }
    res
}

/// Outer layer: counts and times every request, with the route template the inner layer
/// found, or `unrouted` (unknown paths, and requests refused before routing).
pub async fn count_requests(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let res = next.run(req).await;
    let route = res.extensions().get::<Routed>().map_or("unrouted", |r| r.0.as_str());
    metrics.request(route, &method, res.status().as_u16(), started.elapsed().as_secs_f64());
    res
}
