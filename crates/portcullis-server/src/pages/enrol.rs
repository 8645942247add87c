//! Setting up the second factor a role requires, at sign-in (`mfa.required_for_roles`): after a
//! right password, `/login/enrol` offers an authenticator app (a QR code, then its first code)
//! or a passkey; either finishes the sign-in and shows the recovery codes once, with a link on to
//! where the sign-in was going. The enrolment ticket travels in the same short-lived HttpOnly
//! cookie as a second step's.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use portcullis_service::{AuthError, Enrolled, SignedIn};
use serde::Deserialize;

use super::layout::{PageResult, layout, render_posting_to};
use super::login::{application, sign_in_page_with, with_return_to};
use super::mfa::{code_form, codes_body, totp_setup};
use super::passkeys::{create_form, credential, localhost_address, usable_here};
use crate::cookies::CookieKind;
use crate::error::ApiError;
use crate::http::{Client, JsonOrForm, json_no_store};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login/enrol", get(page))
        .route("/login/enrol/totp", post(begin_totp))
        .route("/login/enrol/totp/confirm", post(confirm_totp))
        .route("/login/enrol/webauthn", post(passkey_options))
        .route("/login/enrol/passkey", post(add_passkey))
}

const TITLE: &str = "Set up two-step sign-in";

fn ticket(state: &AppState, headers: &HeaderMap) -> String {
    state.cookies.values(headers, CookieKind::Mfa).next().unwrap_or_default().to_owned()
}

fn return_field(return_to: Option<&str>) -> Markup {
    html! { @if let Some(r) = return_to { input type="hidden" name="return_to" value=(r); } }
}

/// A page of the enrolment, naming the application the sign-in is for.
async fn enrol_page(
    state: &AppState,
    status: StatusCode,
    return_to: Option<&str>,
    body: Markup,
    passkey_script: bool,
) -> Response {
    let app = application(state, return_to).await;
    let (name, origin) = (app.as_ref().map(|a| a.0.as_str()), app.as_ref().and_then(|a| a.1.as_deref()));
    let body = html! {
        @if let Some(name) = name { p.app.center { "Signing in to continue to " strong { (name) } } }
        (body)
    };
    let mut res = render_posting_to(state, status, layout(TITLE, None, None, body), origin);
    if passkey_script {
        super::layout::allow_passkey_script(&mut res);
    }
    res
}

/// The sign-in page again, for a ticket that expired or was used.
async fn start_over(state: &AppState, headers: &HeaderMap, return_to: Option<&str>) -> Response {
    sign_in_page_with(state, headers, return_to, "That sign-in expired. Sign in again.").await
}

/// The choice: an authenticator app, a passkey (where one works on this page), or both.
fn choice(state: &AppState, headers: &HeaderMap, return_to: Option<&str>, message: Option<&str>) -> (Markup, bool) {
    let methods = state.service.enrolment_methods();
    let passkey_here = methods.contains(&"webauthn") && usable_here(state, headers);
    let body = html! {
        section.card.narrow {
            h1 { (TITLE) }
            @if let Some(m) = message { p.error role="alert" { (m) } }
            p { "Your account needs a second step after the password. Set one up now to finish signing in." }
            @if methods.contains(&"totp") {
                h2 { "An authenticator app" }
                p.muted { "A six-digit code from an app on your phone." }
                form method="post" action="/login/enrol/totp" {
                    (return_field(return_to))
                    button type="submit" { "Use an authenticator app" }
                }
            }
            @if passkey_here {
                h2 { "A passkey" }
                p.muted { "Your fingerprint, face or screen lock, or a security key." }
                (create_form("enrol-passkey", "/login/enrol/passkey", "/login/enrol/webauthn", return_field(return_to)))
            } @else if methods.contains(&"webauthn") {
                @let address = with_return_to(&format!("{}/login", localhost_address(state)), return_to);
                p.muted { "To use a passkey instead, sign in at " a href=(address) { (localhost_address(state)) } "." }
            }
            p.center { a href=(with_return_to("/login", return_to)) { "Start over" } }
        }
    };
    (body, passkey_here)
}

#[derive(Deserialize, Default)]
struct PageQuery {
    return_to: Option<String>,
}

async fn page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> PageResult {
    let query = query.map(|q| q.0).unwrap_or_default();
    let return_to = query.return_to.as_deref().and_then(|r| state.return_to.check(r));
    if state.cookies.values(&headers, CookieKind::Mfa).next().is_none() {
        return Ok(Redirect::to(&with_return_to("/login", return_to.as_deref())).into_response());
    }
    let (body, script) = choice(&state, &headers, return_to.as_deref(), None);
    Ok(enrol_page(&state, StatusCode::OK, return_to.as_deref(), body, script).await)
}

#[derive(Deserialize)]
struct ReturnForm {
    #[serde(default)]
    return_to: Option<String>,
}

async fn begin_totp(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonOrForm(form): JsonOrForm<ReturnForm>,
) -> PageResult {
    let return_to = form.return_to.as_deref().and_then(|r| state.return_to.check(r));
    match state.service.begin_enrolment_totp(&ticket(&state, &headers)).await {
        Ok(enrolment) => {
            let body = totp_setup(&enrolment, confirm_form(return_to.as_deref()))?;
            Ok(enrol_page(&state, StatusCode::OK, return_to.as_deref(), body, false).await)
        }
        Err(AuthError::InvalidMfaToken) => Ok(start_over(&state, &headers, return_to.as_deref()).await),
        Err(e) => Err(e.into()),
    }
}

fn confirm_form(return_to: Option<&str>) -> Markup {
    code_form("/login/enrol/totp/confirm", return_field(return_to))
}

#[derive(Deserialize)]
struct ConfirmForm {
    code: String,
    #[serde(default)]
    return_to: Option<String>,
}

async fn confirm_totp(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonOrForm(form): JsonOrForm<ConfirmForm>,
) -> PageResult {
    let return_to = form.return_to.as_deref().and_then(|r| state.return_to.check(r));
    let code: String = form.code.chars().filter(|c| !c.is_whitespace()).collect();
    let previous = state.cookies.session(&headers);
    match state.service.finish_enrolment_totp(&ticket(&state, &headers), &code, client, previous.as_ref()).await {
        Ok(enrolled) => Ok(signed_in(&state, enrolled, return_to.as_deref())?),
        Err(AuthError::WrongCode) => {
            let body = html! {
                section.card.narrow {
                    h1 { "Add an authenticator app" }
                    p.error role="alert" { "That code is not right. Type the code the app shows now." }
                    (confirm_form(return_to.as_deref()))
                }
            };
            Ok(enrol_page(&state, StatusCode::UNAUTHORIZED, return_to.as_deref(), body, false).await)
        }
        Err(AuthError::InvalidMfaToken) => Ok(start_over(&state, &headers, return_to.as_deref()).await),
        Err(AuthError::NoPendingTotp) => {
            let message = Some("Start the authenticator app again.");
            let (body, script) = choice(&state, &headers, return_to.as_deref(), message);
            Ok(enrol_page(&state, StatusCode::CONFLICT, return_to.as_deref(), body, script).await)
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /login/enrol/webauthn`: the options to create a passkey with, for the enrolment in
/// this browser's cookie (JSON, for the script).
async fn passkey_options(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    Ok(json_no_store(&state.service.begin_enrolment_passkey(&ticket(&state, &headers)).await?))
}

#[derive(Deserialize)]
struct PasskeyForm {
    #[serde(default)]
    return_to: Option<String>,
    #[serde(default)]
    name: Option<String>,
    state: String,
    credential: String,
}

async fn add_passkey(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonOrForm(form): JsonOrForm<PasskeyForm>,
) -> PageResult {
    let return_to = form.return_to.as_deref().and_then(|r| state.return_to.check(r));
    let previous = state.cookies.session(&headers);
    let ticket = ticket(&state, &headers);
    let result = match credential(&form.credential) {
        Ok(answer) => {
            let name = form.name.as_deref();
            state.service.finish_enrolment_passkey(&ticket, &form.state, &answer, name, client, previous.as_ref()).await
        }
        Err(e) => Err(e),
    };
    let message = match result {
        Ok((enrolled, _)) => return Ok(signed_in(&state, enrolled, return_to.as_deref())?),
        Err(AuthError::InvalidMfaToken) => return Ok(start_over(&state, &headers, return_to.as_deref()).await),
        Err(AuthError::PasskeyRefused | AuthError::PasskeyExists) => "That passkey was not accepted. Try again.",
        Err(AuthError::InvalidCeremony) => "That took too long, or the page was sent twice. Try again.",
        Err(AuthError::InvalidPasskeyName) => "A passkey's name is at most 64 characters.",
        Err(e) => return Err(e.into()),
    };
    let (body, script) = choice(&state, &headers, return_to.as_deref(), Some(message));
    Ok(enrol_page(&state, StatusCode::BAD_REQUEST, return_to.as_deref(), body, script).await)
}

/// The sign-in is done: the recovery codes, shown once, with the session cookie and a link on.
fn signed_in(state: &AppState, enrolled: Enrolled, return_to: Option<&str>) -> Result<Response, ApiError> {
    let SignedIn::Session(login) = enrolled.signed_in else {
        // The pages make session tickets only; a JWT one did not come from them.
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_mfa_token"));
    };
    let next = return_to.unwrap_or("/account");
    let body = codes_body(&enrolled.recovery_codes, true, next, "Continue");
    let mut res = super::layout::render(state, StatusCode::OK, layout(TITLE, None, None, body));
    let h = res.headers_mut();
    h.append(header::SET_COOKIE, state.cookies.set_session(&login.token, state.settings.session.absolute_timeout));
    h.append(header::SET_COOKIE, state.cookies.clear(CookieKind::Mfa));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}
