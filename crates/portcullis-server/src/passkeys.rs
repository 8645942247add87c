//! Passkeys over the JSON API (docs/API.md): list, register (two calls: the options for
//! `navigator.credentials.create`, then its answer), remove; sign in with a passkey alone (the
//! options for `navigator.credentials.get`, then its answer); and the challenge for a passkey
//! as the second step of a password login (answered at `POST /v1/login/mfa`).
//!
//! Options are WebAuthn's JSON (`{"publicKey": {...}}`, binary fields in base64url) and
//! answers are the credential as `PublicKeyCredential.toJSON()` gives it; the `state` each
//! first call returns goes back with the answer, once, within five minutes.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, post};
use portcullis_service::{Ceremony, LoginIntent};
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::http::{ApiJson, Auth, Client, json_no_store};
use crate::routes::{Transport, login_mode, signed_in_response};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/mfa/webauthn", get(list))
        .route("/v1/mfa/webauthn/register", post(begin_registration))
        .route("/v1/mfa/webauthn/register/finish", post(finish_registration))
        .route("/v1/mfa/webauthn/{id}", delete(remove))
        .route("/v1/login/webauthn", post(begin_login))
        .route("/v1/login/webauthn/finish", post(finish_login))
        .route("/v1/login/mfa/webauthn", post(begin_second_step))
}

/// An authenticator's answer with the state of the ceremony it answers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    pub state: String,
    pub credential: serde_json::Value,
}

fn ceremony(c: &Ceremony) -> Response {
    json_no_store(c)
}

/// `GET /v1/mfa/webauthn`: the person's passkeys, oldest first.
async fn list(State(state): State<AppState>, Auth(who): Auth) -> Result<Response, ApiError> {
    Ok(json_no_store(&json!({ "passkeys": state.service.passkeys(&who.user_id).await? })))
}

/// `POST /v1/mfa/webauthn/register`: the options to create a passkey with.
async fn begin_registration(State(state): State<AppState>, Auth(who): Auth) -> Result<Response, ApiError> {
    Ok(ceremony(&state.service.begin_passkey_registration(&who).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    state: String,
    credential: serde_json::Value,
    #[serde(default)]
    name: Option<String>,
}

/// `POST /v1/mfa/webauthn/register/finish`: `201` with the passkey, and the recovery codes
/// when it is the first second factor.
async fn finish_registration(
    State(state): State<AppState>,
    Client(client): Client,
    Auth(who): Auth,
    ApiJson(body): ApiJson<Registration>,
) -> Result<Response, ApiError> {
    let (passkey, codes) = state
        .service
        .finish_passkey_registration(&who, &body.state, &body.credential, body.name.as_deref(), &client)
        .await?;
    let mut body = json!({ "passkey": passkey });
    if let Some(codes) = codes {
        body["recovery_codes"] = json!(codes);
    }
    let mut res = json_no_store(&body);
    *res.status_mut() = StatusCode::CREATED;
    Ok(res)
}

/// `DELETE /v1/mfa/webauthn/{id}`: `204`; the person's other sessions end.
async fn remove(
    State(state): State<AppState>,
    Client(client): Client,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.service.remove_passkey(&who, &id, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/login/webauthn`: the options to sign in with a passkey alone.
async fn begin_login(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(ceremony(&state.service.begin_passkey_login()?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginAnswer {
    state: String,
    credential: serde_json::Value,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    transport: Option<String>,
}

/// `POST /v1/login/webauthn/finish`: the login, as `POST /v1/login` answers it.
async fn finish_login(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    ApiJson(body): ApiJson<LoginAnswer>,
) -> Result<Response, ApiError> {
    let (mode, transport) = login_mode(body.mode.as_deref(), body.transport.as_deref())?;
    let intent = LoginIntent { mode, cookies: transport == Transport::Cookie };
    let previous = state.cookies.session(&headers);
    let signed_in =
        state.service.passkey_login(&body.state, &body.credential, intent, client, previous.as_ref()).await?;
    Ok(signed_in_response(&state, signed_in, intent.cookies, Default::default()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Ticket {
    mfa_token: String,
}

/// `POST /v1/login/mfa/webauthn`: the options for a passkey as the second step of the login
/// `mfa_token` stands for.
async fn begin_second_step(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Ticket>,
) -> Result<Response, ApiError> {
    Ok(ceremony(&state.service.begin_passkey_second_step(&body.mfa_token).await?))
}
