//! Email flows over the JSON API (docs/API.md). Password reset: `POST /v1/password/forgot`
//! answers `202` at once, whatever the email, and the reset link is made and sent after the
//! answer; `POST /v1/password/reset` sets the new password with the link's token. Email
//! verification (`registration.verify_email`): a registration's link is sent after its answer,
//! `POST /v1/email/verify` follows one, and `POST /v1/email/verify/resend` asks for another
//! (`202`, whatever the email).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use portcullis_core::{ClientInfo, User};
use portcullis_service::VerifyLetter;
use serde::Deserialize;

use crate::error::ApiError;
use crate::http::{ApiJson, Client};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/password/forgot", post(forgot))
        .route("/v1/password/reset", post(reset))
        .route("/v1/email/verify", post(verify))
        .route("/v1/email/verify/resend", post(resend))
}

/// Where verification links point: `{public_url}/verify-email?token=...`.
pub const VERIFY_PAGE: &str = "/verify-email";

/// Sends the verification link of `user`, just registered, after the caller has answered (if
/// their address awaits one).
pub fn send_verification(state: &AppState, user: User, client: ClientInfo) {
    let service = state.service.clone();
    verify_later(state, async move { service.verification_letter(&user, &client).await });
}

/// Makes and sends another verification link for `email` after the caller has answered,
/// for an unverified account only: the caller's answer is the same either way.
pub fn resend_verification(state: &AppState, email: String, client: ClientInfo) {
    let service = state.service.clone();
    verify_later(state, async move { service.resend_verification(&email, &client).await });
}

/// Runs `letter` on a task of its own and sends what it makes.
fn verify_later(
    state: &AppState,
    letter: impl Future<Output = Result<Option<VerifyLetter>, portcullis_service::AuthError>> + Send + 'static,
) {
    let state = state.clone();
    tokio::spawn(async move {
        match letter.await {
            Ok(Some(letter)) => deliver_verification(&state, letter).await,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "a verification link could not be made"),
        }
    });
}

async fn deliver_verification(state: &AppState, letter: VerifyLetter) {
    let link = format!("{}{VERIFY_PAGE}?token={}", state.service.tokens.expect.issuer, letter.token);
    let hours = portcullis_service::VERIFY_TOKEN_TTL.as_secs() / 3600;
    let body = format!(
        "Someone created an account with this address, {email}.\n\n\
         To confirm it is yours and finish the account, open this link within {hours} hours:\n\n{link}\n\n\
         If you did not create it, ignore this message: the account cannot be used without the link.\n",
        email = letter.user.email.as_str(),
    );
    let now = state.service.clock.now();
    if let Err(e) = state.mailer.send(letter.user.email.as_str(), "Confirm your email address", body, now).await {
        tracing::warn!(user = %letter.user.id, error = %e, "the verification message could not be sent");
    }
}

/// Where reset links point: `{public_url}/password/reset?token=...`.
pub const RESET_PAGE: &str = "/password/reset";

/// Makes and sends a reset link for `email` after the caller has answered: nothing the caller
/// does depends on whether the account exists, so neither its answer nor its timing can.
pub fn send_reset_link(state: &AppState, email: String, client: ClientInfo) {
    let state = state.clone();
    tokio::spawn(async move {
        let letter = match state.service.begin_password_reset(&email, &client).await {
            Ok(Some(letter)) => letter,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "a password reset could not be started");
                return;
            }
        };
        let link = format!("{}{RESET_PAGE}?token={}", state.service.tokens.expect.issuer, letter.token);
        let minutes = portcullis_service::RESET_TOKEN_TTL.as_secs() / 60;
        let body = format!(
            "Someone asked to reset the password of your account {email}.\n\n\
             To choose a new password, open this link within {minutes} minutes:\n\n{link}\n\n\
             The link works once. Using it signs you out everywhere.\n\
             If you did not ask for this, ignore this message: your password stays as it is.\n",
            email = letter.user.email.as_str(),
        );
        if let Err(e) =
            state.mailer.send(letter.user.email.as_str(), "Reset your password", body, state.service.clock.now()).await
        {
            tracing::warn!(user = %letter.user.id, error = %e, "the password-reset message could not be sent");
        }
    });
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Forgot {
    email: String,
}

/// `POST /v1/password/forgot`: always `202`.
async fn forgot(State(state): State<AppState>, Client(client): Client, ApiJson(body): ApiJson<Forgot>) -> StatusCode {
    send_reset_link(&state, body.email, client);
    StatusCode::ACCEPTED
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reset {
    token: String,
    new_password: String,
}

/// `POST /v1/password/reset`: `204`; every session and token of the user has ended.
async fn reset(
    State(state): State<AppState>,
    Client(client): Client,
    ApiJson(body): ApiJson<Reset>,
) -> Result<StatusCode, ApiError> {
    state.service.reset_password(&body.token, body.new_password, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Verify {
    token: String,
}

/// `POST /v1/email/verify`: `200 {"user"}`; the account signs in from now on.
async fn verify(
    State(state): State<AppState>,
    Client(client): Client,
    ApiJson(body): ApiJson<Verify>,
) -> Result<axum::response::Response, ApiError> {
    let user = state.service.verify_email(&body.token, &client).await?;
    Ok(crate::http::json_no_store(&serde_json::json!({ "user": user })))
}

/// `POST /v1/email/verify/resend`: always `202`.
async fn resend(State(state): State<AppState>, Client(client): Client, ApiJson(body): ApiJson<Forgot>) -> StatusCode {
    resend_verification(&state, body.email, client);
    StatusCode::ACCEPTED
}
