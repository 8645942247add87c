//! Email verification on the pages (`registration.verify_email`): the emailed link opens
//! `/verify-email?token=`, whose button confirms the address (a button, so that a mail scanner
//! fetching the link confirms nothing); a sign-in that waits for it says so and offers a new
//! link; `/verify-email/resend` sends one, answering the same whatever the email.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use maud::{Markup, html};
use portcullis_service::AuthError;
use serde::Deserialize;

use super::layout::{PageResult, card, render};
use super::password::EmailForm;
use crate::http::{Client, JsonOrForm};
use crate::recovery::{VERIFY_PAGE, resend_verification};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route(VERIFY_PAGE, get(page).post(confirm)).route("/verify-email/resend", post(resend))
}

/// "Send the link again" for `email` (hidden), or with an email field when it is not known.
fn resend_form(email: Option<&str>) -> Markup {
    html! {
        form method="post" action="/verify-email/resend" {
            @match email {
                Some(email) => { input type="hidden" name="email" value=(email); }
                None => { label { "Email" input type="email" name="email" autocomplete="username" required; } }
            }
            button.secondary type="submit" { "Send the link again" }
        }
    }
}

/// The page after a right password for an account whose address awaits its link.
pub fn waiting_page(state: &AppState, email: &str) -> Response {
    let body = html! {
        p.error role="alert" { "Confirm your email address first: open the link we sent to " strong { (email) } "." }
        (resend_form(Some(email)))
        p.center { a href="/login" { "Back to sign in" } }
    };
    render(state, StatusCode::FORBIDDEN, card("Confirm your email address", body))
}

/// The page after a registration whose address awaits its link.
pub fn check_your_email(state: &AppState, email: &str) -> Response {
    let hours = portcullis_service::VERIFY_TOKEN_TTL.as_secs() / 3600;
    let body = html! {
        p role="status" {
            "Your account is made. We sent a link to " strong { (email) } ": open it within " (hours)
            " hours to confirm the address, then sign in."
        }
        (resend_form(Some(email)))
        p.center { a href="/login" { "Sign in" } }
    };
    render(state, StatusCode::OK, card("Check your email", body))
}

#[derive(Deserialize, Default)]
struct TokenQuery {
    token: Option<String>,
}

fn link_refused(state: &AppState) -> Response {
    let body = html! {
        p.error role="alert" { "This link is not valid or has expired." }
        (resend_form(None))
    };
    render(state, StatusCode::BAD_REQUEST, card("Confirm your email address", body))
}

async fn page(
    State(state): State<AppState>,
    query: Result<Query<TokenQuery>, axum::extract::rejection::QueryRejection>,
) -> PageResult {
    let Some(token) = query.ok().and_then(|q| q.0.token).filter(|t| !t.is_empty()) else {
        return Ok(link_refused(&state));
    };
    let body = html! {
        form method="post" action=(VERIFY_PAGE) {
            input type="hidden" name="token" value=(token);
            button type="submit" autofocus { "Confirm my email address" }
        }
    };
    Ok(render(&state, StatusCode::OK, card("Confirm your email address", body)))
}

#[derive(Deserialize)]
struct TokenForm {
    token: String,
}

async fn confirm(
    State(state): State<AppState>,
    Client(client): Client,
    JsonOrForm(form): JsonOrForm<TokenForm>,
) -> PageResult {
    match state.service.verify_email(&form.token, &client).await {
        Ok(user) => {
            let body = html! {
                p role="status" { "Your email address " strong { (user.email.as_str()) } " is confirmed." }
                p.center { a href="/login" { "Sign in" } }
            };
            Ok(render(&state, StatusCode::OK, card("Email address confirmed", body)))
        }
        Err(AuthError::InvalidVerificationToken) => Ok(link_refused(&state)),
        Err(e) => Err(e.into()),
    }
}

/// The same page whatever the email: whether an account exists is not told here.
async fn resend(
    State(state): State<AppState>,
    Client(client): Client,
    JsonOrForm(form): JsonOrForm<EmailForm>,
) -> PageResult {
    resend_verification(&state, form.email, client);
    let body = html! {
        p role="status" {
            "If an account with that address waits for its confirmation, a new link is on its way."
        }
        p.center { a href="/login" { "Back to sign in" } }
    };
    Ok(render(&state, StatusCode::OK, card("Check your email", body)))
}
