//! Second factors over the JSON API (docs/API.md): the second step of a login, enrolling and
//! removing an authenticator app, recovery codes, and the administrators' reset.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use portcullis_service::{Actor, Proof};
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::http::{Admin, ApiJson, Auth, Client, JsonOrForm, json_no_store};
use crate::routes::signed_in_response;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/login/mfa", post(login_mfa))
        .route("/v1/mfa", axum::routing::get(summary))
        .route("/v1/mfa/totp", post(begin_totp).delete(remove_totp))
        .route("/v1/mfa/totp/confirm", post(confirm_totp))
        .route("/v1/mfa/recovery-codes", post(recovery_codes))
        .route("/v1/admin/users/{id}/reset-mfa", post(admin_reset_mfa))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecondStep {
    mfa_token: String,
    #[serde(default)]
    totp: Option<String>,
    #[serde(default)]
    recovery_code: Option<String>,
    #[serde(default)]
    webauthn: Option<crate::passkeys::Answer>,
}

/// `POST /v1/login/mfa`: the ticket from `POST /v1/login` and one proof; the answer is the
/// login's, in the mode (and JWT transport) the first step asked for.
async fn login_mfa(
    State(state): State<AppState>,
    Client(client): Client,
    headers: axum::http::HeaderMap,
    JsonOrForm(body): JsonOrForm<SecondStep>,
) -> Result<Response, ApiError> {
    let proof = match (body.totp, body.recovery_code, body.webauthn) {
        (Some(code), None, None) => Proof::Totp(code),
        (None, Some(code), None) => Proof::RecoveryCode(code),
        (None, None, Some(answer)) => Proof::Passkey { state: answer.state, credential: answer.credential },
        _ => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "send exactly one of \"totp\", \"recovery_code\" and \"webauthn\"",
            ));
        }
    };
    let previous = state.cookies.session(&headers);
    let (signed_in, intent) = state.service.complete_mfa(&body.mfa_token, proof, client, previous.as_ref()).await?;
    Ok(signed_in_response(&state, signed_in, intent.cookies, Default::default()))
}

/// `GET /v1/mfa`: the person's factors.
async fn summary(State(state): State<AppState>, Auth(who): Auth) -> Result<Response, ApiError> {
    Ok(json_no_store(&state.service.factor_summary(&who.user_id).await?))
}

/// `POST /v1/mfa/totp`: a new authenticator secret, pending until confirmed.
async fn begin_totp(State(state): State<AppState>, Auth(who): Auth) -> Result<Response, ApiError> {
    totp_enrolment(&state.service.begin_totp(&who).await?)
}

/// `201` with a pending authenticator: its `otpauth://` URI, the secret to type and the QR code.
pub(crate) fn totp_enrolment(enrolment: &portcullis_service::TotpEnrolment) -> Result<Response, ApiError> {
    let body = json!({
        "otpauth_uri": enrolment.otpauth_uri,
        "secret": enrolment.secret.to_base32(),
        "qr_svg": qr_svg(&enrolment.otpauth_uri)?,
    });
    let mut res = json_no_store(&body);
    *res.status_mut() = StatusCode::CREATED;
    Ok(res)
}

/// The QR code of `text` as an SVG document (black on white, scalable).
pub(crate) fn qr_svg(text: &str) -> Result<String, ApiError> {
    let code = qrcode::QrCode::new(text.as_bytes()).map_err(|e| {
        tracing::error!(error = %e, "QR code");
        ApiError::internal()
    })?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .build())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeBody {
    code: String,
}

/// `POST /v1/mfa/totp/confirm`: the first code; the first factor's recovery codes, shown once.
async fn confirm_totp(
    State(state): State<AppState>,
    Client(client): Client,
    Auth(who): Auth,
    ApiJson(body): ApiJson<CodeBody>,
) -> Result<Response, ApiError> {
    Ok(match state.service.confirm_totp(&who, &body.code, &client).await? {
        Some(codes) => json_no_store(&json!({ "recovery_codes": codes })),
        None => json_no_store(&json!({})),
    })
}

/// `DELETE /v1/mfa/totp`: removes the authenticator app; the person's other sessions end.
async fn remove_totp(
    State(state): State<AppState>,
    Client(client): Client,
    Auth(who): Auth,
) -> Result<StatusCode, ApiError> {
    state.service.remove_totp(&who, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/mfa/recovery-codes`: a new set, which voids the old one.
async fn recovery_codes(
    State(state): State<AppState>,
    Client(client): Client,
    Auth(who): Auth,
) -> Result<Response, ApiError> {
    let codes = state.service.regenerate_recovery_codes(&who, &client).await?;
    Ok(json_no_store(&json!({ "recovery_codes": codes })))
}

/// `POST /v1/admin/users/{id}/reset-mfa`: removes every second factor of a user; their
/// sessions end.
async fn admin_reset_mfa(
    State(state): State<AppState>,
    Client(client): Client,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let had = state.service.reset_mfa(Actor::Admin(&admin.user_id), &id, &client).await?;
    Ok(json_no_store(&json!({ "removed": had })).into_response())
}
