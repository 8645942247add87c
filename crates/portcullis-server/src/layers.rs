//! The application: the routes of the API and the pages, and the one layer around each of them
//! (the [`Edge`]), plus CORS where it is configured.
//!
//! Everything every request needs is done by the edge in one service with one future, without
//! boxing, cloning a stack of services or allocating: request metrics (with each route's series
//! resolved once), security headers, problem+json for every error answer, request tracing, the
//! request timeout, the panic catcher and the cross-site guard. The body limit is applied where
//! bodies are read ([`crate::http`]), and a form's `access_token` is read only for the API's
//! form posts, the one path that takes an allocation. A stack of generic middlewares
//! (`from_fn`, tower-http's headers, trace, timeout and panic layers) did the same work for
//! three times the instructions of a bare axum route (docs/BENCHMARKS.md).

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::error::{self, ApiError};
use crate::http::API_SECURITY_HEADERS;
use crate::metrics::RouteMetrics;
use crate::state::AppState;
use crate::{cross_site, http, pages, routes};

/// How long one request may take before it is answered 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The application: routes and every layer around them.
pub fn app(state: AppState) -> Router {
    let mut router = routes::router()
        .merge(crate::mfa::routes())
        .merge(crate::passkeys::routes())
        .merge(crate::enrolment::routes())
        .merge(crate::recovery::routes())
        .merge(pages::router());
    if state.settings.metrics {
        router = router.route("/metrics", axum::routing::get(routes::metrics));
    }
    router = router.fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found") });
    if let Some(cors) = cors_layer(&state.cors_origins) {
        router = router.layer(cors);
    }
    router.layer(EdgeLayer::new(state.clone(), REQUEST_TIMEOUT)).with_state(state)
}

/// CORS for `cors.allowed_origins` (none: no CORS headers at all, so browsers refuse every
/// cross-origin read). Allowed origins may send credentials (cookies, `Authorization`); the
/// answer names the one requesting origin, never `*`, and varies on `Origin`.
fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let list: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(list))
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .expose_headers([header::WWW_AUTHENTICATE, header::RETRY_AFTER])
            .max_age(Duration::from_secs(600)),
    )
}

/// Puts an [`Edge`] around each route (axum's `Router::layer` layers every route and the
/// fallback on their own, after routing, so the edge sees which route matched).
#[derive(Clone)]
pub struct EdgeLayer {
    shared: Arc<Shared>,
}

struct Shared {
    state: AppState,
    timeout: Duration,
    hsts: bool,
}

impl EdgeLayer {
    pub fn new(state: AppState, timeout: Duration) -> Self {
        let hsts = state.public_origin.starts_with("https://");
        Self { shared: Arc::new(Shared { state, timeout, hsts }) }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge { inner, shared: Arc::clone(&self.shared), route: Arc::default() }
    }
}

/// The edge of one route: see the module's documentation.
#[derive(Clone)]
pub struct Edge<S> {
    inner: S,
    shared: Arc<Shared>,
    /// This route's metric series, resolved at its first request and shared by every clone.
    route: Arc<OnceLock<&'static RouteMetrics>>,
}

impl<S> Edge<S> {
    fn route_metrics(&self, req: &Request) -> &'static RouteMetrics {
        let template = req.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
        let wanted = template.unwrap_or("unrouted");
        match self.route.get() {
            Some(known) if known.template() == wanted => known,
            // An edge serves one route; should it ever serve more, each is still counted right.
            Some(_) => self.shared.state.metrics.route(template),
            None => self.route.get_or_init(|| self.shared.state.metrics.route(template)),
        }
    }
}

type BoxedResponse = Pin<Box<dyn Future<Output = Response> + Send>>;

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let started = Instant::now();
        let span = tracing::debug_span!("request", method = %req.method(), path = %req.uri().path());
        let answer = Answer {
            route: self.route_metrics(&req),
            method: req.method().clone(),
            started,
            timeout: self.shared.timeout,
            hsts: self.shared.hsts,
        };
        let kind = if let Some(refused) = cross_site::refusal(&self.shared.state, &req) {
            Kind::Ready { res: Some(refused) }
        } else if http::carries_form_access_token(&req) {
            // The rare path: read the form first, then call the route (made ready by our caller).
            let ready = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, ready);
            Kind::Boxed {
                fut: Box::pin(async move {
                    match http::with_form_access_token(req).await {
                        Ok(req) => match inner.call(req).await {
                            Ok(res) => res,
                            Err(never) => match never {},
                        },
                        Err(refused) => refused,
                    }
                }),
            }
        } else {
            match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
                Ok(fut) => Kind::Inner { fut },
                Err(_) => Kind::Ready { res: Some(error::panic_response()) },
            }
        };
        EdgeFuture { kind, timer: None, span, answer }
    }
}

pin_project! {
    /// The future of one request through the [`Edge`].
    pub struct EdgeFuture<F> {
        #[pin]
        kind: Kind<F>,
        // Made only when the route does not answer at its first poll: most answers need no timer.
        #[pin]
        timer: Option<tokio::time::Sleep>,
        span: tracing::Span,
        answer: Answer,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] fut: F },
        Boxed { fut: BoxedResponse },
        Ready { res: Option<Response> },
    }
}

/// What the edge needs to finish an answer.
struct Answer {
    route: &'static RouteMetrics,
    method: Method,
    started: Instant,
    timeout: Duration,
    hsts: bool,
}

impl<F> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.enter();
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| match this.kind.as_mut().project() {
            KindProj::Inner { fut } => fut.poll(cx).map(|r| match r {
                Ok(res) => res,
                Err(never) => match never {},
            }),
            KindProj::Boxed { fut } => fut.as_mut().poll(cx),
            KindProj::Ready { res } => Poll::Ready(res.take().unwrap_or_else(error::panic_response)),
        }));
        let res = match polled {
            Ok(Poll::Ready(res)) => res,
            Err(_) => error::panic_response(),
            Ok(Poll::Pending) => {
                if this.timer.is_none() {
                    let deadline = this.answer.started + this.answer.timeout;
                    this.timer.set(Some(tokio::time::sleep_until(deadline.into())));
                }
                if let Some(timer) = this.timer.as_mut().as_pin_mut() {
                    ready!(timer.poll(cx));
                }
                tracing::warn!(timeout = ?this.answer.timeout, "a request took too long and was answered 408");
                ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout").into_response()
            }
        };
        Poll::Ready(Ok(this.answer.finish(res)))
    }
}

impl Answer {
    /// Every answer's last step: problem+json for error answers that are not yet, the security
    /// headers, the metrics and the trace.
    fn finish(&self, res: Response) -> Response {
        let mut res = error::as_problem(res);
        let h = res.headers_mut();
        // HSTS, then the others in the order they have always been written in (an answer built
        // from a prebuilt map already holds the others, so HSTS comes after them there).
        if self.hsts
            && let header::Entry::Vacant(v) = h.entry(header::STRICT_TRANSPORT_SECURITY)
        {
            v.insert(HeaderValue::from_static("max-age=31536000"));
        }
        if h.contains_key(header::X_CONTENT_TYPE_OPTIONS) {
            // Only a prebuilt map (`http::api_answer_headers`, `http::verified_headers`) sets it
            // before here, together with the rest.
            debug_assert!(API_SECURITY_HEADERS.iter().all(|(name, _)| h.contains_key(name)));
        } else {
            for (name, value) in API_SECURITY_HEADERS {
                if let header::Entry::Vacant(v) = h.entry(name) {
                    v.insert(HeaderValue::from_static(value));
                }
            }
            h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        }
        let status = res.status();
        let elapsed = self.started.elapsed();
        self.route.record(&self.method, status.as_u16(), elapsed.as_secs_f64());
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), latency = ?elapsed, route = self.route.template(), "answered with a server error");
        } else {
            tracing::debug!(status = status.as_u16(), latency = ?elapsed, "answered");
        }
        res
    }
}
