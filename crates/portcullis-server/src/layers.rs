//! The application: the routes of the API and the pages, and every layer around them (request
//! metrics, security headers, CORS, tracing, the request timeout, the panic catcher, the body
//! limit and the cross-site guard).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::http::MAX_BODY_BYTES;
use crate::state::AppState;
use crate::{error, http, metrics, pages, routes};

/// How long one request may take before it is answered 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The application: routes and every layer around them.
pub fn app(state: AppState) -> Router {
    let guard = middleware::from_fn_with_state(state.clone(), crate::cross_site::cross_site_guard);
    let hsts = state.public_origin.starts_with("https://").then(|| {
        SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static("strict-transport-security"),
            HeaderValue::from_static("max-age=31536000"),
        )
    });
    let count = middleware::from_fn_with_state(Arc::clone(&state.metrics), metrics::count_requests);
    let mut router = routes::router().merge(pages::router());
    if state.settings.metrics {
        router = router.route("/metrics", axum::routing::get(routes::metrics));
    }
    router
        .route_layer(middleware::from_fn(metrics::tag_route))
        .fallback(|| async { error::ApiError::new(StatusCode::NOT_FOUND, "not_found") })
        .layer(
            ServiceBuilder::new()
                .layer(count)
                .layer(SetResponseHeaderLayer::overriding(
                    HeaderName::from_static("x-content-type-options"),
                    HeaderValue::from_static("nosniff"),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    HeaderName::from_static("referrer-policy"),
                    HeaderValue::from_static("no-referrer"),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    HeaderName::from_static("x-frame-options"),
                    HeaderValue::from_static("DENY"),
                ))
                // API answers are data, never documents: nothing may load from them or frame
                // them. Pages set their own policy.
                .layer(SetResponseHeaderLayer::if_not_present(
                    HeaderName::from_static("content-security-policy"),
                    HeaderValue::from_static(API_CSP),
                ))
                .option_layer(hsts)
                .option_layer(cors_layer(&state.cors_origins))
                .layer(middleware::from_fn(error::problem_fallback))
                .layer(CatchPanicLayer::custom(error::panic_response))
                .layer(TraceLayer::new_for_http())
                .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
                .layer(guard)
                .layer(middleware::from_fn(http::form_access_token)),
        )
        .with_state(state)
}

/// The `Content-Security-Policy` of every API answer.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// CORS for `cors.allowed_origins` (none: no CORS headers at all, so browsers refuse every
/// cross-origin read). Allowed origins may send credentials (cookies, `Authorization`); the
/// answer names the one requesting origin, never `*`, and varies on `Origin`.
fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{Method, header};
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
