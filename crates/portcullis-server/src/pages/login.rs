//! Signing in and creating an account.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use portcullis_core::AuthMode;
use portcullis_service::{AuthError, Creator, LoginIntent, Proof, SignedIn};
use serde::Deserialize;

use super::layout::{PageError, PageResult, capitalise, layout, origin_of, render, render_posting_to};
use super::session::signed_in;
use crate::cookies::CookieKind;
use crate::error::ApiError;
use crate::http::{Client, JsonOrForm, json_no_store};
use crate::state::AppState;

/// The sign-in and registration pages.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_page).post(login_submit))
        .route("/login/mfa", get(second_step_page).post(second_step_submit))
        .route("/register", get(register_page).post(register_submit))
        .route("/login/passkey", post(passkey_sign_in))
        .route("/login/mfa/webauthn", post(second_step_options))
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
    Ok(sign_in_page(&state, &headers, return_to.as_deref(), hint, None).await)
}

/// The sign-in form, naming the application the sign-in is for (if any) and letting its answer
/// go on to that application's registered redirect URI.
async fn sign_in_page(
    state: &AppState,
    headers: &HeaderMap,
    return_to: Option<&str>,
    email: &str,
    message: Option<&str>,
) -> Response {
    let app = application(state, return_to).await;
    let (name, origin) = (app.as_ref().map(|a| a.0.as_str()), app.as_ref().and_then(|a| a.1.as_deref()));
    let passkeys = super::passkeys::usable_here(state, headers);
    let body = html! {
        (login_form(return_to, email, message, name))
        @if passkeys { section.card.narrow.alternative { (super::passkeys::sign_in_button(return_to)) } }
        p.center { a href="/password/forgot" { "Forgot your password?" } }
        @if message.is_none() && state.settings.registration.open {
            p.center { "New here? " a href="/register" { "Create an account" } }
        }
    };
    let mut res = render_posting_to(state, StatusCode::OK, layout("Sign in", None, None, body), origin);
    if passkeys {
        super::layout::allow_passkey_script(&mut res);
    }
    res
}

/// The sign-in page with a message (a passkey that was not accepted).
pub(super) async fn sign_in_page_with(
    state: &AppState,
    headers: &HeaderMap,
    return_to: Option<&str>,
    message: &str,
) -> Response {
    sign_in_page(state, headers, return_to, "", Some(message)).await
}

/// The application a sign-in is for, when it comes back to the provider's authorization
/// endpoint: its name, and the origin of the (registered) redirect URI the browser will be sent
/// to afterwards.
pub(super) async fn application(state: &AppState, return_to: Option<&str>) -> Option<(String, Option<String>)> {
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
        Ok(login) => Ok(signed_in_redirect(&state, &login, return_to.as_deref())),
        Err(AuthError::MfaRequired(challenge)) => Ok(to_second_step(&state, &challenge.token, return_to.as_deref())),
        Err(AuthError::MfaEnrolmentRequired(challenge)) => {
            let lifetime = std::time::Duration::from_secs(portcullis_core::mfa::ENROL_TICKET_SECONDS.unsigned_abs());
            Ok(to_next_step(&state, "/login/enrol", &challenge.token, lifetime, return_to.as_deref()))
        }
        Err(AuthError::EmailNotVerified) => Ok(super::verify::waiting_page(&state, &form.email)),
        Err(AuthError::InvalidCredentials) => {
            let message = Some("Invalid email or password.");
            Ok(sign_in_page(&state, &headers, return_to.as_deref(), &form.email, message).await)
        }
        Err(AuthError::Throttled { retry_after }) => {
            let body = login_form(return_to.as_deref(), &form.email, Some(&throttled(retry_after)), None);
            Ok(throttled_page(&state, body, retry_after))
        }
        Err(e) => Err(e.into()),
    }
}

/// After a sign-in on the pages: on to `return_to` (checked) or `/account`, with the session
/// cookie.
pub(super) fn signed_in_redirect(
    state: &AppState,
    login: &portcullis_service::Login,
    return_to: Option<&str>,
) -> Response {
    let mut res = Redirect::to(return_to.unwrap_or("/account")).into_response();
    let cookie = state.cookies.set_session(&login.token, state.settings.session.absolute_timeout);
    res.headers_mut().insert(header::SET_COOKIE, cookie);
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
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
pub(super) fn with_return_to(path: &str, return_to: Option<&str>) -> String {
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
    let lifetime = std::time::Duration::from_secs(portcullis_core::mfa::MFA_TICKET_SECONDS.unsigned_abs());
    to_next_step(state, "/login/mfa", ticket, lifetime, return_to)
}

/// On to the next step of a sign-in at `path`, holding its ticket in an HttpOnly cookie that
/// lives as long as the ticket.
pub(super) fn to_next_step(
    state: &AppState,
    path: &str,
    ticket: &str,
    lifetime: std::time::Duration,
    return_to: Option<&str>,
) -> Response {
    let mut res = Redirect::to(&with_return_to(path, return_to)).into_response();
    let h = res.headers_mut();
    h.insert(header::SET_COOKIE, state.cookies.set(CookieKind::Mfa, ticket, lifetime));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

fn second_step_form(return_to: Option<&str>, message: Option<&str>, app: Option<&str>, passkey: bool) -> Markup {
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
            @if passkey { (super::passkeys::second_step_button(return_to)) }
            p.center { a href=(with_return_to("/login", return_to)) { "Start over" } }
        }
    }
}

/// The second step's page, naming the application the sign-in is for, with "Use a passkey"
/// for someone who has one.
async fn second_step(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    return_to: Option<&str>,
    message: Option<&str>,
) -> Response {
    let app = application(state, return_to).await;
    let (name, origin) = (app.as_ref().map(|a| a.0.as_str()), app.as_ref().and_then(|a| a.1.as_deref()));
    let ticket = state.cookies.values(headers, CookieKind::Mfa).next().unwrap_or_default();
    let passkey = super::passkeys::usable_here(state, headers)
        && state.service.second_step_methods(ticket).await.is_ok_and(|m| m.contains(&"webauthn"));
    let body = second_step_form(return_to, message, name, passkey);
    let mut res = render_posting_to(state, status, layout("Two-step sign-in", None, None, body), origin);
    if passkey {
        super::layout::allow_passkey_script(&mut res);
    }
    res
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
    Ok(second_step(&state, &headers, StatusCode::OK, return_to.as_deref(), None).await)
}

#[derive(Deserialize)]
struct SecondStepForm {
    /// A code, or a passkey's answer (`state` and `credential`, as `passkeys.js` sends them).
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    credential: Option<String>,
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
    let proof = match (form.code.as_deref().map(str::trim), form.state, form.credential) {
        (None, Some(state), Some(credential)) => {
            Proof::Passkey { state, credential: serde_json::from_str(&credential).unwrap_or(serde_json::Value::Null) }
        }
        // Six digits are an authenticator's code; anything else is tried as a recovery code.
        (Some(code), _, _) if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) => {
            Proof::Totp(code.to_owned())
        }
        (code, _, _) => Proof::RecoveryCode(code.unwrap_or_default().to_owned()),
    };
    let passkey = matches!(proof, Proof::Passkey { .. });
    let previous = state.cookies.session(&headers);
    let mut res = match state.service.complete_mfa(&ticket, proof, client, previous.as_ref()).await {
        Ok((SignedIn::Session(login), _)) => signed_in_redirect(&state, &login, return_to.as_deref()),
        // The pages make session tickets only; a JWT one did not come from them.
        Ok((SignedIn::Jwt(_), _)) | Err(AuthError::InvalidMfaToken) => {
            let message = Some("That sign-in expired. Sign in again.");
            sign_in_page(&state, &headers, return_to.as_deref(), "", message).await
        }
        Err(AuthError::WrongCode) => {
            let message = Some(if passkey {
                "That passkey was not accepted. Try again, or type a code."
            } else {
                "That code is not right, or was already used."
            });
            return Ok(second_step(&state, &headers, StatusCode::UNAUTHORIZED, return_to.as_deref(), message).await);
        }
        Err(AuthError::Throttled { retry_after }) => {
            let body = second_step_form(return_to.as_deref(), Some(&throttled(retry_after)), None, false);
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
    if !state.settings.registration.open {
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
    if !state.settings.registration.open {
        return Err(registration_closed());
    }
    let by = Creator::Registration("registration page");
    match state.service.create_account(&form.email, form.password.clone(), &[], by, &client).await {
        Ok(user) if state.service.verify_email => {
            let page = super::verify::check_your_email(&state, user.email.as_str());
            crate::recovery::send_verification(&state, user, client);
            return Ok(page);
        }
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

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    return_to: Option<String>,
    state: String,
    credential: String,
}

/// `POST /login/passkey`: a session from a passkey alone.
async fn passkey_sign_in(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonOrForm(form): JsonOrForm<SignInForm>,
) -> PageResult {
    let return_to = form.return_to.as_deref().and_then(|r| state.return_to.check(r));
    let previous = state.cookies.session(&headers);
    let intent = LoginIntent { mode: AuthMode::Session, cookies: false };
    let result = match super::passkeys::credential(&form.credential) {
        Ok(answer) => state.service.passkey_login(&form.state, &answer, intent, client, previous.as_ref()).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(SignedIn::Session(login)) => Ok(signed_in_redirect(&state, &login, return_to.as_deref())),
        Ok(SignedIn::Jwt(_)) => Err(ApiError::internal().into()),
        Err(AuthError::PasskeyRefused | AuthError::InvalidCeremony) => {
            let message = "That passkey was not accepted. Try again, or sign in with your password.";
            Ok(sign_in_page_with(&state, &headers, return_to.as_deref(), message).await)
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /login/mfa/webauthn`: the options for a passkey as the second step of the sign-in
/// in this browser's second-step cookie (JSON, for the script).
async fn second_step_options(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let ticket = state.cookies.values(&headers, CookieKind::Mfa).next().unwrap_or_default().to_owned();
    let ceremony = state.service.begin_passkey_second_step(&ticket).await?;
    Ok(json_no_store(&ceremony))
}
