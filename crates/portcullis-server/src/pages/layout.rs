//! What every page shares: the layout around a page's body, the page headers, the stylesheet,
//! how a page error is shown, and the formatting helpers.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use portcullis_core::Timestamp;
use portcullis_service::{AuthError, Authenticated};

use super::return_to::STRICT_CSP;
use crate::error::ApiError;
use crate::state::AppState;

/// The stylesheet, served at `/assets/portcullis.css`.
const STYLESHEET: &str = include_str!("portcullis.css");

pub async fn stylesheet() -> Response {
    let mut res = STYLESHEET.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    res
}

/// The passkey script, served at `/assets/passkeys.js`.
const PASSKEY_SCRIPT: &str = include_str!("passkeys.js");

pub async fn passkey_script() -> Response {
    let mut res = PASSKEY_SCRIPT.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    res
}

/// The `<script>` element of a page with a passkey button; the page's answer goes through
/// [`allow_passkey_script`].
pub fn passkey_script_tag() -> Markup {
    html! { script src="/assets/passkeys.js" defer {} }
}

/// Lets a page run the passkey script (ours, from this origin) and call this origin: the
/// page policy gains `script-src 'self'; connect-src 'self'`, for this page only.
pub fn allow_passkey_script(res: &mut Response) {
    let h = res.headers_mut();
    if let Some(csp) = h.get(header::CONTENT_SECURITY_POLICY).and_then(|v| v.to_str().ok())
        && let Ok(csp) = HeaderValue::from_str(&format!("{csp}; script-src 'self'; connect-src 'self'"))
    {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
}

/// A whole page around `body`.
pub fn layout(title: &str, who: Option<&Authenticated>, csrf: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Portcullis" }
                link rel="stylesheet" href="/assets/portcullis.css";
            }
            body {
                header.top {
                    a.brand href="/account" { "Portcullis" }
                    @if let Some(who) = who {
                        nav {
                            a href="/account" { "Account" }
                            @if who.is_admin() { a href="/admin" { "Admin" } }
                            @if let Some(csrf) = csrf {
                                form.inline method="post" action="/account/logout" {
                                    input type="hidden" name="csrf" value=(csrf);
                                    button.link type="submit" { "Sign out" }
                                }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A page of one narrow card titled `title`, for someone not signed in.
pub fn card(title: &str, body: Markup) -> Markup {
    layout(title, None, None, html! { section.card.narrow { h1 { (title) } (body) } })
}

pub fn render(state: &AppState, status: StatusCode, markup: Markup) -> Response {
    let mut res = (status, Html(markup.into_string())).into_response();
    page_headers(res.headers_mut(), state.page_csp.clone());
    res
}

/// The origin of `uri` when it is an http(s) URL, for a page's `form-action`.
pub fn origin_of(uri: &str) -> Option<String> {
    let url = url::Url::parse(uri).ok()?;
    matches!(url.scheme(), "http" | "https").then(|| url.origin().ascii_serialization())
}

/// [`render`] for a page whose form's answer sends the browser on to an application at
/// `origin` (a registered redirect URI's): browsers hold the redirects after a form post to the
/// page's `form-action`, so that origin is added to it, for this page only.
pub fn render_posting_to(state: &AppState, status: StatusCode, markup: Markup, origin: Option<&str>) -> Response {
    let mut res = render(state, status, markup);
    if let Some(origin) = origin
        && let Ok(csp) = state.page_csp.to_str()
        && let Ok(csp) =
            HeaderValue::from_str(&csp.replacen("form-action 'self'", &format!("form-action 'self' {origin}"), 1))
    {
        res.headers_mut().insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    res
}

/// Pages may not be cached and keep `Origin` on their own form posts: under the API's
/// `no-referrer` policy browsers would send `Origin: null`, which the cross-site guard refuses.
fn page_headers(h: &mut HeaderMap, csp: HeaderValue) {
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
}

/// What stops a page: an error shown as a page (anything a person's browser may run into), or
/// a detour (to the sign-in page).
pub enum PageError {
    /// The form's CSRF token is not its session's: the page it came from is stale.
    FormExpired,
    /// A store or the hashing pool cannot answer now (a 503): try again shortly.
    Busy(ApiError),
    /// Anything else, shown with its detail.
    Error(ApiError),
    /// Not an error: somewhere else to go (the sign-in page).
    Detour(Response),
    /// The form was sent from a page at another address (`from`, when the browser said) than
    /// this server's: its cookies and CSRF protection belong to `public_origin`.
    WrongAddress { from: Option<String>, public_origin: String },
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        if e.status == StatusCode::SERVICE_UNAVAILABLE { Self::Busy(e) } else { Self::Error(e) }
    }
}

impl From<AuthError> for PageError {
    fn from(e: AuthError) -> Self {
        Self::Error(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (e, message) = match self {
            PageError::Detour(res) => return res,
            PageError::WrongAddress { from, public_origin } => return wrong_address(from, &public_origin),
            PageError::FormExpired => (
                ApiError::new(StatusCode::FORBIDDEN, "csrf_token_invalid"),
                "This form has expired. Go back, reload the page and try again.".to_owned(),
            ),
            PageError::Busy(e) => (e, "Portcullis is busy or cannot reach its storage. Try again shortly.".to_owned()),
            PageError::Error(e) => {
                let message =
                    e.detail.clone().unwrap_or_else(|| e.status.canonical_reason().unwrap_or("Error").to_owned());
                (e, message)
            }
        };
        let title = e.status.canonical_reason().unwrap_or("Error");
        let body = html! {
            p.error role="alert" { (message) }
            p { a href="/account" { "Back to your account" } }
        };
        let mut res = error_page(e.status, title, body);
        if let Some(secs) = e.retry_after {
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

/// An error as a page: `title` over `body` in a card, with the strict page policy.
fn error_page(status: StatusCode, title: &str, body: Markup) -> Response {
    let markup = layout(title, None, None, html! { section.card { h1 { (title) } (body) } });
    let mut res = (status, Html(markup.into_string())).into_response();
    page_headers(res.headers_mut(), HeaderValue::from_static(STRICT_CSP));
    res
}

/// The page for a form refused by the cross-site guard: which address to use instead.
fn wrong_address(from: Option<String>, public_origin: &str) -> Response {
    let login = format!("{public_origin}/login");
    let body = html! {
        p.error role="alert" {
            @match &from {
                Some(from) => { "This form was sent from " code { (from) } ", but Portcullis answers at " code { (public_origin) } ". " }
                None => { "This form was sent from another site, not from Portcullis at " code { (public_origin) } ". " }
            }
            "For your safety it was not accepted."
        }
        p { "Open " a href=(login) { (login) } " and sign in there. (Operators: the address people use must be Portcullis' " code { "public_url" } " setting.)" }
    };
    error_page(StatusCode::FORBIDDEN, "Use this server's address", body)
}

pub type PageResult = Result<Response, PageError>;

/// A request's parameters as name/value pairs, for the hidden fields of a form that sends the
/// request on (the consent and sign-out confirmations).
pub fn form_fields(params: &impl serde::Serialize) -> Vec<(String, String)> {
    serde_urlencoded::to_string(params)
        .ok()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

pub fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// `2026-11-22 13:40 UTC`.
pub fn when(t: Timestamp) -> String {
    let s = t.to_rfc3339();
    match s.get(..16) {
        Some(prefix) => format!("{} UTC", prefix.replacen('T', " ", 1)),
        None => s,
    }
}
