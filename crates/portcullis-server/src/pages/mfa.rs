//! Two-step sign-in on `/account`: adding an authenticator app (a QR code in SVG and the secret
//! to type, confirmed by a first code), the recovery codes shown once, new recovery codes, and
//! turning it off. Each change needs a recent sign-in; the page says so and links to one.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use maud::{Markup, PreEscaped, html};
use portcullis_service::{AuthError, Authenticated, FactorSummary, TotpEnrolment};
use serde::Deserialize;

use super::layout::{PageResult, layout, render};
use super::session::form_person;
use crate::http::{Client, JsonOrForm};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/account/mfa/totp", post(begin))
        .route("/account/mfa/totp/confirm", post(confirm))
        .route("/account/mfa/totp/remove", post(remove))
        .route("/account/mfa/recovery-codes", post(recovery_codes))
}

/// The account page's section.
pub fn factors_section(summary: &FactorSummary, csrf: &str) -> Markup {
    html! {
        section.card #two-step {
            h2 { "Two-step sign-in" }
            @if summary.has_factor() {
                p { "On: after your password, signing in asks for a code from your authenticator app or a passkey." }
                p.muted { (summary.recovery_codes_left) " recovery codes left." }
            } @else {
                p { "Off. With an authenticator app or a passkey, a stolen password is not enough to sign in as you." }
            }
            div.actions {
                @if summary.totp {
                    form method="post" action="/account/mfa/totp/remove" {
                        input type="hidden" name="csrf" value=(csrf);
                        button.danger type="submit" { "Remove the authenticator app" }
                    }
                } @else {
                    form method="post" action="/account/mfa/totp" {
                        input type="hidden" name="csrf" value=(csrf);
                        button type="submit" { "Add an authenticator app" }
                    }
                }
                @if summary.has_factor() {
                    form method="post" action="/account/mfa/recovery-codes" {
                        input type="hidden" name="csrf" value=(csrf);
                        button.secondary type="submit" { "New recovery codes" }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

fn page(state: &AppState, who: &Authenticated, csrf: &str, status: StatusCode, body: Markup) -> Response {
    render(state, status, layout("Two-step sign-in", Some(who), Some(csrf), body))
}

/// What the page says when a change cannot be made now; `None`: an error for the general page.
fn refusal(e: &AuthError) -> Option<(StatusCode, Markup)> {
    let message = match e {
        AuthError::ReauthenticationRequired => html! {
            p { "For your security, sign in again before you change two-step sign-in." }
            p { a href="/login?reauth=1&return_to=%2Faccount" { "Sign in again" } }
        },
        AuthError::TotpExists | AuthError::NoFactor | AuthError::NoPendingTotp => html! {
            p { "Two-step sign-in changed in the meantime." }
        },
        AuthError::MfaUnavailable => html! {
            p { "Authenticator apps are not set up on this server. Ask an administrator (mfa.encryption_key)." }
        },
        _ => return None,
    };
    let status = match e {
        AuthError::ReauthenticationRequired => StatusCode::FORBIDDEN,
        _ => StatusCode::CONFLICT,
    };
    Some((
        status,
        html! { section.card.narrow { h1 { "Two-step sign-in" } (message) p { a href="/account" { "Back to your account" } } } },
    ))
}

/// Renders `result`'s page, or the page for a refusal; other errors are the caller's.
fn answer(
    state: &AppState,
    who: &Authenticated,
    csrf: &str,
    result: Result<Markup, AuthError>,
) -> Result<Response, AuthError> {
    match result {
        Ok(body) => Ok(page(state, who, csrf, StatusCode::OK, body)),
        Err(e) => match refusal(&e) {
            Some((status, body)) => Ok(page(state, who, csrf, status, body)),
            None => Err(e),
        },
    }
}

fn confirm_form(csrf: &str) -> Markup {
    code_form("/account/mfa/totp/confirm", html! { input type="hidden" name="csrf" value=(csrf); })
}

/// The form for an authenticator's first code, posting to `action` with `hidden` fields.
pub(super) fn code_form(action: &str, hidden: Markup) -> Markup {
    html! {
        form method="post" action=(action) {
            (hidden)
            label {
                "Code from the app"
                input type="text" name="code" inputmode="numeric" autocomplete="one-time-code" pattern="[0-9 ]{6,8}" maxlength="8" required autofocus;
            }
            button type="submit" { "Turn on" }
        }
    }
}

/// The QR code's SVG without its XML prolog, to sit inside the page.
fn inline_svg(svg: &str) -> &str {
    svg.find("<svg").map_or(svg, |i| &svg[i..])
}

async fn begin(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonOrForm(form): JsonOrForm<CsrfForm>,
) -> PageResult {
    let who = form_person(&state, &headers, &form.csrf).await?;
    let result = match state.service.begin_totp(&who).await {
        Ok(enrolment) => Ok(totp_setup(&enrolment, confirm_form(&form.csrf))?),
        Err(e) => Err(e),
    };
    Ok(answer(&state, &who, &form.csrf, result)?)
}

/// A new authenticator secret to scan (an inline SVG QR code) or type, and `form` for its
/// first code.
pub(super) fn totp_setup(enrolment: &TotpEnrolment, form: Markup) -> Result<Markup, crate::error::ApiError> {
    let svg = crate::mfa::qr_svg(&enrolment.otpauth_uri)?;
    Ok(html! {
        section.card.narrow {
            h1 { "Add an authenticator app" }
            p { "Scan this code with your authenticator app, then type the code it shows." }
            div.qr { (PreEscaped(inline_svg(&svg))) }
            p.muted { "Cannot scan? Type this key into the app:" }
            p { code.secret { (enrolment.secret.to_base32()) } }
            p { a.otpauth href=(enrolment.otpauth_uri) { "On this phone? Open it in your authenticator app." } }
            (form)
        }
    })
}

fn codes_page(codes: &[String], first: bool) -> Markup {
    codes_body(codes, first, "/account", "Back to your account")
}

/// The recovery codes, shown once, and a link on (`next`, saying `label`).
pub(super) fn codes_body(codes: &[String], first: bool, next: &str, label: &str) -> Markup {
    html! {
        section.card.narrow {
            h1 { "Your recovery codes" }
            @if first { p.notice role="status" { "Two-step sign-in is on." } }
            p { "Each code signs you in once if you lose your phone. Keep them somewhere safe: they are shown only now." }
            ul.codes { @for c in codes { li { code { (c) } } } }
            p { a href=(next) { (label) } }
        }
    }
}

/// The recovery codes' page, shown once (after the first factor, or when asked for anew).
pub fn codes_page_for(state: &AppState, who: &Authenticated, csrf: &str, codes: &[String], first: bool) -> Response {
    page(state, who, csrf, StatusCode::OK, codes_page(codes, first))
}

#[derive(Deserialize)]
struct ConfirmForm {
    csrf: String,
    code: String,
}

async fn confirm(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonOrForm(form): JsonOrForm<ConfirmForm>,
) -> PageResult {
    let who = form_person(&state, &headers, &form.csrf).await?;
    let code: String = form.code.chars().filter(|c| !c.is_whitespace()).collect();
    match state.service.confirm_totp(&who, &code, &client).await {
        Ok(Some(codes)) => Ok(answer(&state, &who, &form.csrf, Ok(codes_page(&codes, true)))?),
        Ok(None) => Ok(Redirect::to("/account?done=totp").into_response()),
        Err(AuthError::WrongCode) => {
            let body = html! {
                section.card.narrow {
                    h1 { "Add an authenticator app" }
                    p.error role="alert" { "That code is not right. Type the code the app shows now." }
                    (confirm_form(&form.csrf))
                }
            };
            Ok(page(&state, &who, &form.csrf, StatusCode::UNAUTHORIZED, body))
        }
        Err(e) => Ok(answer(&state, &who, &form.csrf, Err(e))?),
    }
}

async fn remove(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonOrForm(form): JsonOrForm<CsrfForm>,
) -> PageResult {
    let who = form_person(&state, &headers, &form.csrf).await?;
    match state.service.remove_totp(&who, &client).await {
        Ok(()) => Ok(Redirect::to("/account?done=totp-removed").into_response()),
        Err(e) => Ok(answer(&state, &who, &form.csrf, Err(e))?),
    }
}

async fn recovery_codes(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonOrForm(form): JsonOrForm<CsrfForm>,
) -> PageResult {
    let who = form_person(&state, &headers, &form.csrf).await?;
    let result = state.service.regenerate_recovery_codes(&who, &client).await.map(|codes| codes_page(&codes, false));
    Ok(answer(&state, &who, &form.csrf, result)?)
}
