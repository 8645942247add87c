//! The cross-site guard: state-changing requests that a browser marks as coming from another
//! site or origin are refused. API clients get problem+json (`cross_site_request`); a person
//! whose page form was refused gets a page that says which address to use instead.

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::pages::PageError;
use crate::state::AppState;

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// Refuses unsafe requests that a browser marks as coming from another site or origin.
///
/// Browsers send `Sec-Fetch-Site` and/or `Origin` on state-changing requests; other clients
/// send neither and pass. Requests carrying `Authorization` pass too: a cross-site page cannot
/// attach one without a CORS preflight, which this server grants only to `cors.allowed_origins`.
/// Those origins pass whatever `Sec-Fetch-Site` says, and so do the server's own origins
/// ([`crate::settings::Settings::own_origins`]). The provider's token and userinfo endpoints
/// pass: clients call them with their own credentials, never with the person's cookie. So does
/// RP-initiated logout, which applications may post from their own pages: it signs out only
/// with an `id_token_hint` for the person's current session or the session's CSRF token.
///
/// Returns the refusal to answer with, or `None` when the request may go on.
pub fn refusal(state: &AppState, req: &Request) -> Option<Response> {
    let h = req.headers();
    if is_safe(req.method())
        || h.contains_key(header::AUTHORIZATION)
        || crate::oauth::is_client_endpoint(req.uri().path())
    {
        return None;
    }
    let origin = h.get(header::ORIGIN).map(HeaderValue::as_bytes);
    // An origin on the CORS allow-list is trusted like our own, whatever site it is on.
    if origin.is_some_and(|o| state.cors_origins.iter().any(|allowed| allowed.as_bytes() == o)) {
        return None;
    }
    let fetch_site = h.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    let refusal = if matches!(fetch_site, Some("cross-site" | "same-site")) {
        Some("the request came from another site")
    } else if origin.is_some_and(|o| !state.own_origins.iter().any(|own| own.as_bytes() == o)) {
        Some("the request's Origin is not this server's public_url")
    } else {
        None
    };
    let detail = refusal?;
    if req.uri().path().starts_with("/v1/") {
        return Some(ApiError::new(StatusCode::FORBIDDEN, "cross_site_request").with_detail(detail).into_response());
    }
    // A page's form: tell the person where to sign in instead.
    let from = origin.map(|o| String::from_utf8_lossy(o).into_owned());
    Some(PageError::WrongAddress { from, public_origin: state.public_origin.clone() }.into_response())
}
