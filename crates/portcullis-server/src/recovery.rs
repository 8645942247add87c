//! Password reset by email over the JSON API (DESIGN §9): `POST /v1/password/forgot` answers
//! `202` at once, whatever the email, and the reset link is made and sent after the answer;
//! `POST /v1/password/reset` sets the new password with the link's token.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use portcullis_core::ClientInfo;
use serde::Deserialize;

use crate::error::ApiError;
use crate::http::{ApiJson, Client};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/password/forgot", post(forgot)).route("/v1/password/reset", post(reset))
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
