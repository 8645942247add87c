//! Password reset by email on the pages: `/password/forgot` asks for the email and answers the
//! same whatever it is; `/password/reset?token=` (the emailed link) sets a new password.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use maud::{Markup, html};
use portcullis_service::AuthError;
use serde::Deserialize;

use super::layout::{PageResult, capitalise, card, render};
use crate::http::{Client, JsonOrForm};
use crate::recovery::send_reset_link;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/password/forgot", get(forgot_page).post(forgot_submit))
        .route(crate::recovery::RESET_PAGE, get(reset_page).post(reset_submit))
}

async fn forgot_page(State(state): State<AppState>) -> PageResult {
    let body = html! {
        p { "Type the email address of your account. We will send you a link to choose a new password." }
        form method="post" action="/password/forgot" {
            label { "Email" input type="email" name="email" autocomplete="username" required autofocus; }
            button type="submit" { "Send the link" }
        }
        p.center { a href="/login" { "Back to sign in" } }
    };
    Ok(render(&state, StatusCode::OK, card("Forgot your password?", body)))
}

/// A form with only an email address: asking for a reset link, or for a new verification link.
#[derive(Deserialize)]
pub(super) struct EmailForm {
    pub(super) email: String,
}

/// The same page whatever the email: whether an account exists is not told here.
async fn forgot_submit(
    State(state): State<AppState>,
    Client(client): Client,
    JsonOrForm(form): JsonOrForm<EmailForm>,
) -> PageResult {
    send_reset_link(&state, form.email, client);
    let minutes = portcullis_service::RESET_TOKEN_TTL.as_secs() / 60;
    let body = html! {
        p role="status" {
            "If an account has that email address, a message with a link to choose a new password is on its way. "
            "The link works once, for " (minutes) " minutes."
        }
        p.center { a href="/login" { "Back to sign in" } }
    };
    Ok(render(&state, StatusCode::OK, card("Check your email", body)))
}

#[derive(Deserialize, Default)]
struct ResetQuery {
    token: Option<String>,
}

fn reset_form(token: &str, message: Option<&str>) -> Markup {
    html! {
        @if let Some(m) = message { p.error role="alert" { (m) } }
        form method="post" action=(crate::recovery::RESET_PAGE) {
            input type="hidden" name="token" value=(token);
            label {
                "New password"
                input type="password" name="new_password" autocomplete="new-password" minlength="8" required autofocus;
                small { "At least 8 characters; a passphrase of several words is best." }
            }
            button type="submit" { "Set the new password" }
        }
        p.muted { "Setting it signs you out everywhere." }
    }
}

fn link_used_up(state: &AppState) -> axum::response::Response {
    let body = html! {
        p.error role="alert" { "This link has expired or was already used." }
        p { a href="/password/forgot" { "Ask for a new link" } }
    };
    render(state, StatusCode::BAD_REQUEST, card("Choose a new password", body))
}

async fn reset_page(
    State(state): State<AppState>,
    query: Result<Query<ResetQuery>, axum::extract::rejection::QueryRejection>,
) -> PageResult {
    let Some(token) = query.ok().and_then(|q| q.0.token).filter(|t| !t.is_empty()) else {
        return Ok(link_used_up(&state));
    };
    Ok(render(&state, StatusCode::OK, card("Choose a new password", reset_form(&token, None))))
}

#[derive(Deserialize)]
struct ResetForm {
    token: String,
    new_password: String,
}

async fn reset_submit(
    State(state): State<AppState>,
    Client(client): Client,
    JsonOrForm(form): JsonOrForm<ResetForm>,
) -> PageResult {
    match state.service.reset_password(&form.token, form.new_password, &client).await {
        Ok(_) => {
            let body = html! {
                p role="status" { "Your password is changed, and every earlier sign-in has ended." }
                p.center { a href="/login" { "Sign in" } }
            };
            Ok(render(&state, StatusCode::OK, card("Password changed", body)))
        }
        Err(AuthError::InvalidResetToken) => Ok(link_used_up(&state)),
        Err(e @ AuthError::Password(_)) => {
            let message = format!("{}.", capitalise(&e.to_string()));
            let body = reset_form(&form.token, Some(&message));
            Ok(render(&state, StatusCode::BAD_REQUEST, card("Choose a new password", body)))
        }
        Err(e) => Err(e.into()),
    }
}
