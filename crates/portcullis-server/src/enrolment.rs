//! Setting up the second factor a role requires, at sign-in, over the JSON API
//! (`mfa.required_for_roles`). `POST /v1/login` answers `401 mfa_enrolment_required` with an
//! `mfa_token` and the `methods` that can be set up; with the token the client sets up an
//! authenticator app (`.../enrol/totp`, then its first code at `.../enrol/totp/confirm`) or a
//! passkey (`.../enrol/webauthn`, then the authenticator's answer at `.../finish`). The second
//! call answers as the login would have, in its mode, with `recovery_codes` in the body.

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use portcullis_service::Enrolled;
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::http::{ApiJson, Client, json_no_store};
use crate::mfa::totp_enrolment;
use crate::routes::{Extra, signed_in_response};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/login/mfa/enrol/totp", post(begin_totp))
        .route("/v1/login/mfa/enrol/totp/confirm", post(confirm_totp))
        .route("/v1/login/mfa/enrol/webauthn", post(begin_passkey))
        .route("/v1/login/mfa/enrol/webauthn/finish", post(finish_passkey))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Ticket {
    mfa_token: String,
}

/// `POST /v1/login/mfa/enrol/totp`: `201` with a new authenticator secret (as
/// `POST /v1/mfa/totp` gives it), pending until its first code.
async fn begin_totp(State(state): State<AppState>, ApiJson(body): ApiJson<Ticket>) -> Result<Response, ApiError> {
    totp_enrolment(&state.service.begin_enrolment_totp(&body.mfa_token).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Confirm {
    mfa_token: String,
    code: String,
}

/// The login's answer, with the recovery codes (and what else `extra` holds).
fn enrolled_response(state: &AppState, enrolled: Enrolled, mut extra: Extra) -> Response {
    extra.insert("recovery_codes".into(), json!(enrolled.recovery_codes));
    signed_in_response(state, enrolled.signed_in, enrolled.intent.cookies, extra)
}

/// `POST /v1/login/mfa/enrol/totp/confirm`: the app's first code; the login's answer.
async fn confirm_totp(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Confirm>,
) -> Result<Response, ApiError> {
    let previous = state.cookies.session(&headers);
    let enrolled = state.service.finish_enrolment_totp(&body.mfa_token, &body.code, client, previous.as_ref()).await?;
    Ok(enrolled_response(&state, enrolled, Extra::new()))
}

/// `POST /v1/login/mfa/enrol/webauthn`: the options to create a passkey with.
async fn begin_passkey(State(state): State<AppState>, ApiJson(body): ApiJson<Ticket>) -> Result<Response, ApiError> {
    Ok(json_no_store(&state.service.begin_enrolment_passkey(&body.mfa_token).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    mfa_token: String,
    state: String,
    credential: serde_json::Value,
    #[serde(default)]
    name: Option<String>,
}

/// `POST /v1/login/mfa/enrol/webauthn/finish`: the new passkey's answer; the login's answer,
/// with the passkey.
async fn finish_passkey(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Registration>,
) -> Result<Response, ApiError> {
    let previous = state.cookies.session(&headers);
    let (enrolled, passkey) = state
        .service
        .finish_enrolment_passkey(
            &body.mfa_token,
            &body.state,
            &body.credential,
            body.name.as_deref(),
            client,
            previous.as_ref(),
        )
        .await?;
    let mut extra = Extra::new();
    extra.insert("passkey".into(), json!(passkey));
    Ok(enrolled_response(&state, enrolled, extra))
}
