//! Signing in and creating an account.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::{Markup, html};
use portcullis_service::{AuthError, Creator, Proof, SignedIn};
use serde::Deserialize;

use super::layout::{PageError, PageResult, capitalise, layout, origin_of, render, render_posting_to};
use super::session::signed_in;
use crate::cookies::CookieKind;
use crate::error::ApiError;
use crate::http::{Client, JsonOrForm};
use crate::state::AppState;

/// The sign-in and registration pages.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_page).post(login_submit))
        .route("/login/mfa", get(second_step_page).post(second_step_submit))
        .route("/register", get(register_page).post(register_submit))
}

#[derive(Deserialize, Default)]
struct LoginQuery {
    return_to: Option<String>,
    /// The provider asks for a fresh sign-in (`prompt=login`, `max_age`): show the form even to
    /// someone signed in.
    reauth: Option<String>,
    /// The email an application suggested (`login_hint`).
    login_hint: Option<String>,
}

#[derive(Deserialize)]
struct LoginForm {
    email: String,
    password: String,
    #[serde(default)]
    return_to: Option<String>,
}

fn login_form(return_to: Option<&str>, email: &str, message: Option<&str>, app: Option<&str>) -> Markup {
    html! {
        section.card.narrow {
            h1 { "Sign in" }
            @if let Some(app) = app { p.app { "to continue to " strong { (app) } } }
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
    let return_to = query.return_to.as_deref().and_then(|r| state.return_to.check(r));
    if query.reauth.is_none() && signed_in(&state, &headers).await?.is_some() {
        return Ok(Redirect::to(return_to.as_deref().unwrap_or("/account")).into_response());
    }
    let hint = query.login_hint.as_deref().unwrap_or("");
    Ok(sign_in_page(&state, return_to.as_deref(), hint, None).await)
}

/// The sign-in form, naming the application the sign-in is for (if any) and letting its answer
/// go on to that application's registered redirect URI.
async fn sign_in_page(state: &AppState, return_to: Option<&str>, email: &str, message: Option<&str>) -> Response {
    let app = application(state, return_to).await;
    let (name, origin) = (app.as_ref().map(|a| a.0.as_str()), app.as_ref().and_then(|a| a.1.as_deref()));
    let body = html! {
        (login_form(return_to, email, message, name))
        p.center { a href="/password/forgot" { "Forgot your password?" } }
        @if message.is_none() && state.settings.registration {
            p.center { "New here? " a href="/register" { "Create an account" } }
        }
    };
    render_posting_to(state, StatusCode::OK, layout("Sign in", None, None, body), origin)
}

/// The application a sign-in is for, when it comes back to the provider's authorization
/// endpoint: its name, and the origin of the (registered) redirect URI the browser will be sent
/// to afterwards.
async fn application(state: &AppState, return_to: Option<&str>) -> Option<(String, Option<String>)> {
    let query = return_to?.strip_prefix(crate::oauth::AUTHORIZE_PATH)?.strip_prefix('?')?;
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let find = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let id = portcullis_core::ClientId::parse(find("client_id")?)?;
    let client = state.service.clients.client(&id).await.ok()??;
    let origin = find("redirect_uri").filter(|r| client.redirect_uris.iter().any(|u| u == r)).and_then(origin_of);
    Some((client.name, origin))
}

async fn login_submit(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonOrForm(form): JsonOrForm<LoginForm>,
) -> PageResult {
    let return_to = form.return_to.as_deref().and_then(|r| state.return_to.check(r));
    let previous = state.cookies.session(&headers);
    match state.service.login(&form.email, form.password, client, previous.as_ref()).await {
        Ok(login) => {
            let mut res = Redirect::to(return_to.as_deref().unwrap_or("/account")).into_response();
            let cookie = state.cookies.set_session(&login.token, state.settings.session.absolute_timeout);
            res.headers_mut().insert(header::SET_COOKIE, cookie);
            res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(res)
        }
        Err(AuthError::MfaRequired(challenge)) => Ok(to_second_step(&state, &challenge.token, return_to.as_deref())),
        Err(AuthError::InvalidCredentials) => {
            let message = Some("Invalid email or password.");
            Ok(sign_in_page(&state, return_to.as_deref(), &form.email, message).await)
        }
        Err(AuthError::Throttled { retry_after }) => {
            let body = login_form(return_to.as_deref(), &form.email, Some(&throttled(retry_after)), None);
            Ok(throttled_page(&state, body, retry_after))
        }
        Err(e) => Err(e.into()),
    }
}

fn throttled(retry_after: std::time::Duration) -> String {
    format!("Too many failed attempts. Try again in {} seconds.", retry_after.as_secs())
}

fn throttled_page(state: &AppState, body: Markup, retry_after: std::time::Duration) -> Response {
    let mut res = render(state, StatusCode::TOO_MANY_REQUESTS, layout("Sign in", None, None, body));
    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs()));
    res
}

/// `?return_to=` for a sign-in page's address.
fn with_return_to(path: &str, return_to: Option<&str>) -> String {
    match return_to {
        Some(r) => {
            let q: String = url::form_urlencoded::Serializer::new(String::new()).append_pair("return_to", r).finish();
            format!("{path}?{q}")
        }
        None => path.to_owned(),
    }
}

/// After a correct password of someone with a second factor: on to `/login/mfa`, holding the
/// ticket in a short-lived HttpOnly cookie.
fn to_second_step(state: &AppState, ticket: &str, return_to: Option<&str>) -> Response {
    let mut res = Redirect::to(&with_return_to("/login/mfa", return_to)).into_response();
    let lifetime = std::time::Duration::from_secs(portcullis_core::mfa::MFA_TICKET_SECONDS.unsigned_abs());
    let h = res.headers_mut();
    h.insert(header::SET_COOKIE, state.cookies.set(CookieKind::Mfa, ticket, lifetime));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn second_step_form(return_to: Option<&str>, message: Option<&str>, app: Option<&str>) -> Markup {
    html! {
        section.card.narrow {
            h1 { "Two-step sign-in" }
            @if let Some(app) = app { p.app { "to continue to " strong { (app) } } }
            @if let Some(m) = message { p.error role="alert" { (m) } }
            form method="post" action="/login/mfa" {
                @if let Some(r) = return_to { input type="hidden" name="return_to" value=(r); }
                label {
                    "Code"
                    input type="text" name="code" autocomplete="one-time-code" maxlength="64" required autofocus;
                    small { "The 6-digit code from your authenticator app, or one of your recovery codes." }
                }
                button type="submit" { "Continue" }
            }
            p.center { a href=(with_return_to("/login", return_to)) { "Start over" } }
        }
    }
}

/// The second step's page, naming the application the sign-in is for.
async fn second_step(state: &AppState, status: StatusCode, return_to: Option<&str>, message: Option<&str>) -> Response {
    let app = application(state, return_to).await;
    let (name, origin) = (app.as_ref().map(|a| a.0.as_str()), app.as_ref().and_then(|a| a.1.as_deref()));
    let body = second_step_form(return_to, message, name);
    render_posting_to(state, status, layout("Two-step sign-in", None, None, body), origin)
}

#[derive(Deserialize, Default)]
struct SecondStepQuery {
    return_to: Option<String>,
}

async fn second_step_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<SecondStepQuery>, axum::extract::rejection::QueryRejection>,
) -> PageResult {
    let query = query.map(|q| q.0).unwrap_or_default();
    let return_to = query.return_to.as_deref().and_then(|r| state.return_to.check(r));
    if state.cookies.values(&headers, CookieKind::Mfa).next().is_none() {
        return Ok(Redirect::to(&with_return_to("/login", return_to.as_deref())).into_response());
    }
    Ok(second_step(&state, StatusCode::OK, return_to.as_deref(), None).await)
}

#[derive(Deserialize)]
struct SecondStepForm {
    code: String,
    #[serde(default)]
    return_to: Option<String>,
}

async fn second_step_submit(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonOrForm(form): JsonOrForm<SecondStepForm>,
) -> PageResult {
    let return_to = form.return_to.as_deref().and_then(|r| state.return_to.check(r));
    let ticket = state.cookies.values(&headers, CookieKind::Mfa).next().unwrap_or_default().to_owned();
    let code = form.code.trim();
    // Six digits are an authenticator's code; anything else is tried as a recovery code.
    let proof = if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
        Proof::Totp(code.to_owned())
    } else {
        Proof::RecoveryCode(code.to_owned())
    };
    let previous = state.cookies.session(&headers);
    let mut res = match state.service.complete_mfa(&ticket, proof, client, previous.as_ref()).await {
        Ok((SignedIn::Session(login), _)) => {
            let mut res = Redirect::to(return_to.as_deref().unwrap_or("/account")).into_response();
            let cookie = state.cookies.set_session(&login.token, state.settings.session.absolute_timeout);
            res.headers_mut().insert(header::SET_COOKIE, cookie);
            res
        }
        // The pages make session tickets only; a JWT one did not come from them.
        Ok((SignedIn::Jwt(_), _)) | Err(AuthError::InvalidMfaToken) => {
            let message = Some("That sign-in expired. Sign in again.");
            sign_in_page(&state, return_to.as_deref(), "", message).await
        }
        Err(AuthError::WrongCode) => {
            let message = Some("That code is not right, or was already used.");
            return Ok(second_step(&state, StatusCode::UNAUTHORIZED, return_to.as_deref(), message).await);
        }
        Err(AuthError::Throttled { retry_after }) => {
            let body = second_step_form(return_to.as_deref(), Some(&throttled(retry_after)), None);
            return Ok(throttled_page(&state, body, retry_after));
        }
        Err(e) => return Err(e.into()),
    };
    let h = res.headers_mut();
    h.append(header::SET_COOKIE, state.cookies.clear(CookieKind::Mfa));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
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
    match state.service.create_account(&form.email, form.password.clone(), &[], by, &client).await {
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
    let login = state.service.login(&form.email, form.password, client, None).await?;
    let mut res = Redirect::to("/account").into_response();
    let cookie = state.cookies.set_session(&login.token, state.settings.session.absolute_timeout);
    res.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(res)
}
