//! Pages for people: sign in, register, your account (devices, password), and admin. Rendered
//! on the server (maud), plain HTML forms, no JavaScript; readable from phone to desktop widths.
//!
//! Pages use the session cookie only. Every form of a signed-in page carries a per-session CSRF
//! token (an HMAC of the session id with a server secret), checked on submit, on top of the
//! cross-site guard's `Origin`/`Sec-Fetch-Site` check that every unsafe request passes. Sign-in
//! redirects only to relative paths or to origins Portcullis trusts ([`Pages::return_to`]).

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use portcullis_core::secret::KeyedDigest;
use portcullis_core::{AuthMode, Role, SessionRecord, Timestamp, User};
use serde::Deserialize;
use url::Url;

use crate::auth::{AuthError, Authenticated, Creator};
use crate::error::ApiError;
use crate::http::{Client, CookieKind, JsonOrForm};
use crate::state::AppState;

/// The name of the server secret that keys CSRF tokens.
pub const CSRF_KEY_NAME: &str = "csrf-key";

/// The stylesheet, served at `/assets/portcullis.css`.
const STYLESHEET: &str = include_str!("pages/portcullis.css");

/// What the pages need besides the shared state.
pub struct Pages {
    csrf: KeyedDigest,
    /// Origins a sign-in may send people back to (besides relative paths).
    return_origins: Vec<String>,
    /// The page `Content-Security-Policy`.
    csp: HeaderValue,
}

impl Pages {
    pub fn new(csrf_secret: &[u8], public_origin: &str, extra_origins: &[String]) -> Self {
        let mut return_origins = vec![public_origin.to_owned()];
        return_origins.extend(extra_origins.iter().filter(|o| o.as_str() != public_origin).cloned());
        // No scripts at all; styles only from here; forms post only here (and their redirects go
        // only to the origins sign-in may return to).
        let csp = format!(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self' {}; frame-ancestors 'none'; base-uri 'none'",
            return_origins.join(" ")
        );
        let csp = HeaderValue::from_str(&csp).unwrap_or_else(|_| HeaderValue::from_static(STRICT_CSP));
        Self { csrf: KeyedDigest::new(csrf_secret), return_origins, csp }
    }

    fn csrf_token(&self, who: &Authenticated) -> String {
        self.csrf.digest(&[b"csrf", who.session_id.as_str().as_bytes()])
    }

    fn csrf_ok(&self, who: &Authenticated, token: &str) -> bool {
        self.csrf.verify(&[b"csrf", who.session_id.as_str().as_bytes()], token)
    }

    /// Where a sign-in may send someone: a path on this server (`/account`, not `//host` or
    /// `/\host`), or an absolute http(s) URL on a trusted origin. Anything else is refused, so
    /// the sign-in page is never an open redirect.
    pub fn return_to(&self, raw: &str) -> Option<String> {
        let raw = raw.trim();
        if raw.is_empty() || raw.len() > 2048 || raw.chars().any(|c| c.is_control() || c == '\\') {
            return None;
        }
        if raw.starts_with('/') {
            return (!raw.starts_with("//")).then(|| raw.to_owned());
        }
        let url = Url::parse(raw).ok()?;
        let origin = url.origin().ascii_serialization();
        let trusted = matches!(url.scheme(), "http" | "https")
            && url.username().is_empty()
            && url.password().is_none()
            && self.return_origins.contains(&origin);
        trusted.then(|| url.to_string())
    }
}

/// Used only if the configured origins cannot form a header (they are validated at start-up).
const STRICT_CSP: &str =
    "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/account") }))
        .route("/login", get(login_page).post(login_submit))
        .route("/register", get(register_page).post(register_submit))
        .route("/account", get(account_page))
        .route("/account/logout", post(account_logout))
        .route("/account/logout-all", post(account_logout_all))
        .route("/account/sessions/{id}/end", post(account_end_session))
        .route("/account/password", post(account_password))
        .route("/admin", get(admin_page))
        .route("/admin/users/{id}", post(admin_action))
        .route("/assets/portcullis.css", get(stylesheet))
}

async fn stylesheet() -> Response {
    let mut res = STYLESHEET.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    res
}

/// A whole page around `body`.
fn layout(title: &str, who: Option<&Authenticated>, csrf: Option<&str>, body: Markup) -> Markup {
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

fn render(state: &AppState, status: StatusCode, markup: Markup) -> Response {
    let mut res = (status, Html(markup.into_string())).into_response();
    page_headers(res.headers_mut(), state.pages.csp.clone());
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
enum PageError {
    Error(ApiError),
    Detour(Response),
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        Self::Error(e)
    }
}

impl From<AuthError> for PageError {
    fn from(e: AuthError) -> Self {
        Self::Error(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let e = match self {
            PageError::Error(e) => e,
            PageError::Detour(res) => return res,
        };
        let title = e.status.canonical_reason().unwrap_or("Error");
        let message = match e.code {
            "csrf_token_invalid" => "This form has expired. Go back, reload the page and try again.".to_owned(),
            "store_unavailable" | "overloaded" => {
                "Portcullis is busy or cannot reach its storage. Try again shortly.".into()
            }
            _ => e.detail.clone().unwrap_or_else(|| title.to_owned()),
        };
        let markup = layout(
            title,
            None,
            None,
            html! {
                section.card {
                    h1 { (title) }
                    p.error role="alert" { (message) }
                    p { a href="/account" { "Back to your account" } }
                }
            },
        );
        let mut res = (e.status, Html(markup.into_string())).into_response();
        let h = res.headers_mut();
        page_headers(h, HeaderValue::from_static(STRICT_CSP));
        if let Some(secs) = e.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

type PageResult = Result<Response, PageError>;

/// The signed-in person, if the session cookie names a live session.
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<Option<Authenticated>, PageError> {
    let Some(token) = state.cookies.session(headers) else { return Ok(None) };
    match state.auth.authenticate(&token).await {
        Ok(who) => Ok(Some(who)),
        Err(AuthError::Unauthenticated) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// To the sign-in page, coming back to `path` afterwards.
fn to_login(path: &str) -> Response {
    let q: String = url::form_urlencoded::Serializer::new(String::new()).append_pair("return_to", path).finish();
    Redirect::to(&format!("/login?{q}")).into_response()
}

/// The signed-in person, or a detour to the sign-in page.
async fn require_person(state: &AppState, headers: &HeaderMap, path: &str) -> Result<Authenticated, PageError> {
    signed_in(state, headers).await?.ok_or_else(|| PageError::Detour(to_login(path)))
}

#[derive(Deserialize, Default)]
struct LoginQuery {
    return_to: Option<String>,
}

#[derive(Deserialize)]
struct LoginForm {
    email: String,
    password: String,
    #[serde(default)]
    return_to: Option<String>,
}

fn login_form(return_to: Option<&str>, email: &str, message: Option<&str>) -> Markup {
    html! {
        section.card.narrow {
            h1 { "Sign in" }
            @if let Some(m) = message { p.error role="alert" { (m) } }
            form method="post" action="/login" {
                @if let Some(r) = return_to { input type="hidden" name="return_to" value=(r); }
                label { "Email" input type="email" name="email" value=(email) autocomplete="username" required autofocus[email.is_empty()]; }
                label { "Password" input type="password" name="password" autocomplete="current-password" required autofocus[!email.is_empty()]; }
                button type="submit" { "Sign in" }
            }
        }
    }
}

async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<LoginQuery>, axum::extract::rejection::QueryRejection>,
) -> PageResult {
    let query = query.map(|q| q.0).unwrap_or_default();
    let return_to = query.return_to.as_deref().and_then(|r| state.pages.return_to(r));
    if signed_in(&state, &headers).await?.is_some() {
        return Ok(Redirect::to(return_to.as_deref().unwrap_or("/account")).into_response());
    }
    let body = html! {
        (login_form(return_to.as_deref(), "", None))
        @if state.settings.registration { p.center { "New here? " a href="/register" { "Create an account" } } }
    };
    Ok(render(&state, StatusCode::OK, layout("Sign in", None, None, body)))
}

async fn login_submit(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonOrForm(form): JsonOrForm<LoginForm>,
) -> PageResult {
    let return_to = form.return_to.as_deref().and_then(|r| state.pages.return_to(r));
    let previous = state.cookies.session(&headers);
    match state.auth.login(&form.email, form.password, client).await {
        Ok(login) => {
            if let Some(previous) = previous {
                state.auth.end_presented(&previous).await?;
            }
            let mut res = Redirect::to(return_to.as_deref().unwrap_or("/account")).into_response();
            let cookie = state.cookies.set_session(&login.token, state.settings.session.absolute_timeout);
            res.headers_mut().insert(header::SET_COOKIE, cookie);
            res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(res)
        }
        Err(AuthError::InvalidCredentials) => {
            let body = login_form(return_to.as_deref(), &form.email, Some("Invalid email or password."));
            Ok(render(&state, StatusCode::OK, layout("Sign in", None, None, body)))
        }
        Err(AuthError::Throttled { retry_after }) => {
            let message = format!("Too many failed attempts. Try again in {} seconds.", retry_after.as_secs());
            let body = login_form(return_to.as_deref(), &form.email, Some(&message));
            let mut res = render(&state, StatusCode::TOO_MANY_REQUESTS, layout("Sign in", None, None, body));
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs()));
            Ok(res)
        }
        Err(e) => Err(e.into()),
    }
}

fn register_form(email: &str, message: Option<&str>) -> Markup {
    html! {
        section.card.narrow {
            h1 { "Create an account" }
            @if let Some(m) = message { p.error role="alert" { (m) } }
            form method="post" action="/register" {
                label { "Email" input type="email" name="email" value=(email) autocomplete="username" required autofocus; }
                label {
                    "Password"
                    input type="password" name="password" autocomplete="new-password" minlength="8" required;
                    small { "At least 8 characters; a passphrase of several words is best." }
                }
                button type="submit" { "Create account" }
            }
            p.center { "Already registered? " a href="/login" { "Sign in" } }
        }
    }
}

fn registration_closed() -> PageError {
    PageError::Error(
        ApiError::new(StatusCode::NOT_FOUND, "registration_closed")
            .with_detail("Registration is closed. Ask an administrator for an account."),
    )
}

async fn register_page(State(state): State<AppState>) -> PageResult {
    if !state.settings.registration {
        return Err(registration_closed());
    }
    Ok(render(&state, StatusCode::OK, layout("Create an account", None, None, register_form("", None))))
}

#[derive(Deserialize)]
struct RegisterForm {
    email: String,
    password: String,
}

async fn register_submit(
    State(state): State<AppState>,
    Client(client): Client,
    JsonOrForm(form): JsonOrForm<RegisterForm>,
) -> PageResult {
    if !state.settings.registration {
        return Err(registration_closed());
    }
    let by = Creator::Registration("registration page");
    match state.auth.create_account(&form.email, form.password.clone(), &[], by, &client).await {
        Ok(_) => {}
        Err(
            e @ (AuthError::Email(_)
            | AuthError::Password(_)
            | AuthError::Store(portcullis_store::StoreError::EmailTaken)),
        ) => {
            let message = match e {
                AuthError::Store(_) => "That email address is already registered.".to_owned(),
                other => format!("{}.", capitalise(&other.to_string())),
            };
            let body = register_form(&form.email, Some(&message));
            return Ok(render(&state, StatusCode::OK, layout("Create an account", None, None, body)));
        }
        Err(e) => return Err(e.into()),
    }
    let login = state.auth.login(&form.email, form.password, client).await?;
    let mut res = Redirect::to("/account").into_response();
    let cookie = state.cookies.set_session(&login.token, state.settings.session.absolute_timeout);
    res.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(res)
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// "Firefox 140 on Linux", from a `User-Agent`.
pub fn describe_device(user_agent: Option<&str>) -> String {
    let Some(ua) = user_agent.filter(|u| !u.trim().is_empty()) else { return "Unknown device".into() };
    match woothee::parser::Parser::new().parse(ua) {
        Some(r) if r.name != "UNKNOWN" && matches!(r.category, "pc" | "smartphone" | "mobilephone" | "appliance") => {
            let major = r.version.split('.').next().filter(|v| !v.is_empty() && *v != "UNKNOWN");
            let name = match major {
                Some(v) => format!("{} {v}", r.name),
                None => r.name.to_owned(),
            };
            if r.os == "UNKNOWN" { name } else { format!("{name} on {}", r.os) }
        }
        _ => ua.chars().take(60).collect(),
    }
}

/// `2026-11-22 13:40 UTC`.
fn when(t: Timestamp) -> String {
    let s = t.to_rfc3339();
    match s.get(..16) {
        Some(prefix) => format!("{} UTC", prefix.replacen('T', " ", 1)),
        None => s,
    }
}

#[derive(Deserialize, Default)]
struct AccountQuery {
    done: Option<String>,
}

fn done_message(done: Option<&str>) -> Option<&'static str> {
    match done? {
        "password" => Some("Your password was changed. Every other device was signed out."),
        "ended" => Some("That device was signed out."),
        _ => None,
    }
}

fn account_body(
    who: &Authenticated,
    sessions: &[SessionRecord],
    csrf: &str,
    notice: Option<&str>,
    error: Option<&str>,
) -> Markup {
    let roles: Vec<&str> = who.roles.iter().map(Role::as_str).collect();
    html! {
        @if let Some(n) = notice { p.notice role="status" { (n) } }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        section.card {
            h1 { "Your account" }
            p { "Signed in as " strong.email { (who.email.as_str()) } }
            p.muted { "Roles: " (roles.join(", ")) }
        }
        section.card {
            h2 { "Your devices" }
            table.devices {
                thead { tr { th { "Device" } th { "Address" } th { "Signed in" } th { "Last seen" } th {} } }
                tbody {
                    @for s in sessions {
                        @let current = s.id == who.session_id;
                        tr.current[current] {
                            td data-label="Device" {
                                (describe_device(s.user_agent.as_deref()))
                                @if s.mode == AuthMode::Jwt { " " span.badge { "app" } }
                                @if current { " " span.badge.this { "This device" } }
                            }
                            td data-label="Address" { (s.ip.as_deref().unwrap_or("unknown")) }
                            td data-label="Signed in" { (when(s.created_at)) }
                            td data-label="Last seen" { (when(s.last_seen_at)) }
                            td {
                                form method="post" action={ "/account/sessions/" (s.id.as_str()) "/end" } {
                                    input type="hidden" name="csrf" value=(csrf);
                                    button.secondary type="submit" { "Sign out" }
                                }
                            }
                        }
                    }
                }
            }
            div.actions {
                form method="post" action="/account/logout" {
                    input type="hidden" name="csrf" value=(csrf);
                    button.secondary type="submit" { "Sign out" }
                }
                form method="post" action="/account/logout-all" {
                    input type="hidden" name="csrf" value=(csrf);
                    button.danger type="submit" { "Sign out everywhere" }
                }
            }
        }
        section.card {
            h2 { "Change password" }
            form method="post" action="/account/password" {
                input type="hidden" name="csrf" value=(csrf);
                label { "Current password" input type="password" name="current_password" autocomplete="current-password" required; }
                label { "New password" input type="password" name="new_password" autocomplete="new-password" minlength="8" required; }
                button type="submit" { "Change password" }
            }
        }
    }
}

async fn render_account(
    state: &AppState,
    who: &Authenticated,
    status: StatusCode,
    notice: Option<&str>,
    error: Option<&str>,
) -> PageResult {
    let sessions = state.auth.sessions_of(&who.user_id).await?;
    let csrf = state.pages.csrf_token(who);
    let body = account_body(who, &sessions, &csrf, notice, error);
    Ok(render(state, status, layout("Your account", Some(who), Some(&csrf), body)))
}

async fn account_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AccountQuery>, axum::extract::rejection::QueryRejection>,
) -> PageResult {
    let who = require_person(&state, &headers, "/account").await?;
    let done = query.map(|q| q.0).unwrap_or_default().done;
    render_account(&state, &who, StatusCode::OK, done_message(done.as_deref()), None).await
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

/// The signed-in person behind a form post, with a valid CSRF token.
async fn form_person(state: &AppState, headers: &HeaderMap, csrf: &str) -> Result<Authenticated, PageError> {
    let who = require_person(state, headers, "/account").await?;
    if !state.pages.csrf_ok(&who, csrf) {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "csrf_token_invalid").into());
    }
    Ok(who)
}

/// To the sign-in page with every credential cookie cleared.
fn signed_out(state: &AppState) -> Response {
    let mut res = Redirect::to("/login").into_response();
    for kind in [CookieKind::Session, CookieKind::Access, CookieKind::Refresh] {
        res.headers_mut().append(header::SET_COOKIE, state.cookies.clear(kind));
    }
    res
}

async fn account_logout(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonOrForm(form): JsonOrForm<CsrfForm>,
) -> PageResult {
    let who = form_person(&state, &headers, &form.csrf).await?;
    state.auth.logout(&who, &client).await?;
    Ok(signed_out(&state))
}

async fn account_logout_all(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonOrForm(form): JsonOrForm<CsrfForm>,
) -> PageResult {
    let who = form_person(&state, &headers, &form.csrf).await?;
    state.auth.logout_all(&who, &client).await?;
    Ok(signed_out(&state))
}

async fn account_end_session(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonOrForm(form): JsonOrForm<CsrfForm>,
) -> PageResult {
    let who = form_person(&state, &headers, &form.csrf).await?;
    match state.auth.end_own_session(&who, &id, &client).await {
        Ok(()) => {}
        Err(AuthError::SessionNotFound) => {
            return render_account(
                &state,
                &who,
                StatusCode::NOT_FOUND,
                None,
                Some("That device is already signed out."),
            )
            .await;
        }
        Err(e) => return Err(e.into()),
    }
    if id == who.session_id.as_str() {
        return Ok(signed_out(&state));
    }
    Ok(Redirect::to("/account?done=ended").into_response())
}

#[derive(Deserialize)]
struct PasswordForm {
    csrf: String,
    current_password: String,
    new_password: String,
}

async fn account_password(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonOrForm(form): JsonOrForm<PasswordForm>,
) -> PageResult {
    let who = form_person(&state, &headers, &form.csrf).await?;
    let renewed = match state.auth.change_password(&who, form.current_password, form.new_password, &client).await {
        Ok(renewed) => renewed,
        Err(AuthError::WrongPassword) => {
            let message = "The current password is not right; nothing was changed.";
            return render_account(&state, &who, StatusCode::FORBIDDEN, None, Some(message)).await;
        }
        Err(AuthError::Password(e)) => {
            let message = format!("{}.", capitalise(&e.to_string()));
            return render_account(&state, &who, StatusCode::BAD_REQUEST, None, Some(&message)).await;
        }
        Err(e) => return Err(e.into()),
    };
    // A new session id with the new password; this browser follows with a new cookie.
    let mut res = Redirect::to("/account?done=password").into_response();
    if let Some(token) = renewed {
        let max_age = who.expires_at.since(state.auth.clock.now());
        res.headers_mut().insert(header::SET_COOKIE, state.cookies.set_session(&token, max_age));
    }
    Ok(res)
}

/// How many audit events the admin page shows.
const ADMIN_PAGE_EVENTS: u32 = 50;

fn admin_body(
    users: &[User],
    me: &Authenticated,
    events: &[portcullis_store::AuditEvent],
    csrf: &str,
    error: Option<&str>,
) -> Markup {
    let email_of =
        |id: &portcullis_core::UserId| users.iter().find(|u| &u.id == id).map(|u| u.email.as_str().to_owned());
    html! {
        @if let Some(e) = error { p.error role="alert" { (e) } }
        section.card {
            h1 { "Users" }
            table.users {
                thead { tr { th { "Email" } th { "Roles" } th { "Status" } th { "Actions" } } }
                tbody {
                    @for u in users {
                        @let admin = u.is_admin();
                        @let is_me = u.id == me.user_id;
                        tr {
                            td data-label="Email" { (u.email.as_str()) @if is_me { " " span.badge.this { "you" } } }
                            td data-label="Roles" { (u.roles_joined().replace(',', ", ")) }
                            td data-label="Status" { @if u.disabled { span.badge.off { "disabled" } } @else { "active" } }
                            td.buttons {
                                form method="post" action={ "/admin/users/" (u.id.as_str()) } {
                                    input type="hidden" name="csrf" value=(csrf);
                                    @if admin {
                                        button.secondary type="submit" name="action" value="remove_admin" disabled[is_me] { "Remove admin" }
                                    } @else {
                                        button.secondary type="submit" name="action" value="grant_admin" { "Make admin" }
                                    }
                                    @if u.disabled {
                                        button.secondary type="submit" name="action" value="enable" { "Enable" }
                                    } @else {
                                        button.danger type="submit" name="action" value="disable" disabled[is_me] { "Disable" }
                                    }
                                    button.secondary type="submit" name="action" value="logout" { "Sign out everywhere" }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.card {
            h2 { "Recent events" }
            table.events {
                thead { tr { th { "When" } th { "Event" } th { "Account" } th { "Address" } th { "Detail" } } }
                tbody {
                    @for e in events {
                        @let ev = &e.event;
                        tr {
                            td data-label="When" { (when(ev.at)) }
                            td data-label="Event" { (ev.kind) " " span.badge.{(ev.outcome)} { (ev.outcome) } }
                            td data-label="Account" { (ev.user_id.as_ref().and_then(&email_of).unwrap_or_else(|| "—".into())) }
                            td data-label="Address" { (ev.ip.as_deref().unwrap_or("—")) }
                            td data-label="Detail" { (ev.detail.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}

async fn render_admin(state: &AppState, who: &Authenticated, status: StatusCode, error: Option<&str>) -> PageResult {
    let users = state.auth.list_users().await?;
    let query = portcullis_store::AuditQuery { limit: ADMIN_PAGE_EVENTS, ..Default::default() };
    let events = state.auth.audit.store.audit_events(&query).await.map_err(ApiError::from)?;
    let csrf = state.pages.csrf_token(who);
    let body = admin_body(&users, who, &events, &csrf, error);
    Ok(render(state, status, layout("Admin", Some(who), Some(&csrf), body)))
}

fn not_admin() -> PageError {
    PageError::Error(ApiError::forbidden().with_detail("This page needs the admin role."))
}

async fn admin_page(State(state): State<AppState>, headers: HeaderMap) -> PageResult {
    let who = require_person(&state, &headers, "/admin").await?;
    if !who.is_admin() {
        return Err(not_admin());
    }
    render_admin(&state, &who, StatusCode::OK, None).await
}

#[derive(Deserialize)]
struct AdminForm {
    csrf: String,
    action: String,
}

async fn admin_action(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonOrForm(form): JsonOrForm<AdminForm>,
) -> PageResult {
    let who = form_person(&state, &headers, &form.csrf).await?;
    if !who.is_admin() {
        return Err(not_admin());
    }
    let user = state.auth.user(&id).await?;
    let with_admin = |grant: bool| -> Vec<String> {
        let mut roles: Vec<String> =
            user.roles.iter().map(|r| r.as_str().to_owned()).filter(|r| r != Role::ADMIN).collect();
        if grant {
            roles.push(Role::ADMIN.to_owned());
        }
        roles
    };
    let (roles, disabled) = match form.action.as_str() {
        "grant_admin" => (Some(with_admin(true)), None),
        "remove_admin" => (Some(with_admin(false)), None),
        "disable" => (None, Some(true)),
        "enable" => (None, Some(false)),
        "logout" => {
            state.auth.force_logout(&who.user_id, &id, &client).await?;
            return Ok(Redirect::to("/admin").into_response());
        }
        other => {
            return Err(PageError::Error(ApiError::bad_request("invalid_body", format!("unknown action {other:?}"))));
        }
    };
    match state.auth.update_user(&who.user_id, &id, roles, disabled, &client).await {
        Ok(_) => Ok(Redirect::to("/admin").into_response()),
        Err(AuthError::SelfLockout) => {
            let message = "You cannot disable yourself or remove your own admin role.";
            render_admin(&state, &who, StatusCode::CONFLICT, Some(message)).await
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pages() -> Pages {
        Pages::new(b"secret", "https://auth.example.com", &["https://app.example.com".into()])
    }

    #[test]
    fn return_to_is_never_an_open_redirect() {
        let p = pages();
        for ok in ["/account", "/app?x=1&y=2", "https://auth.example.com/account", "https://app.example.com/page?q=1"] {
            assert!(p.return_to(ok).is_some(), "{ok}");
        }
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example/",
            "https://app.example.com.evil.example/",
            "https://user@app.example.com/",
            "http://app.example.com/",
            "javascript:alert(1)",
            "data:text/html,hi",
            "evil.example",
            "",
            "/ok\r\nSet-Cookie: x=y",
        ] {
            assert_eq!(p.return_to(bad), None, "{bad}");
        }
    }

    #[test]
    fn devices_are_described_from_the_user_agent() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";
        assert_eq!(describe_device(Some(firefox)), "Firefox 140 on Linux");
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
        assert_eq!(describe_device(Some(chrome)), "Chrome 131 on Windows 10");
        assert_eq!(describe_device(None), "Unknown device");
        assert_eq!(describe_device(Some("curl/8.5.0")), "curl/8.5.0");
    }

    #[test]
    fn csrf_tokens_are_per_session() {
        let p = pages();
        let who = |sid: &str| Authenticated {
            user_id: portcullis_core::UserId::generate(),
            email: portcullis_core::Email::parse("a@example.com").expect("email"),
            roles: Default::default(),
            mode: AuthMode::Session,
            session_id: portcullis_core::SessionId::parse(sid).expect("sid"),
            expires_at: Timestamp::from_unix_millis(0),
            access: None,
        };
        let a = who("AAAAAAAAAAAAAAAAAAAAAA");
        let b = who("BBBBBBBBBBBBBBBBBBBBBA");
        let token = p.csrf_token(&a);
        assert!(p.csrf_ok(&a, &token));
        assert!(!p.csrf_ok(&b, &token));
        assert!(!p.csrf_ok(&a, ""));
    }
}
