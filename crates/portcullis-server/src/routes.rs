//! The HTTP API of DESIGN §3. Handlers parse, call [`crate::auth::Auth`], and answer.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use portcullis_core::{AuthMode, SessionRecord, Timestamp, User};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::http::{Admin, ApiJson, Auth, JsonOrForm, Peer, client_info};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/register", post(register))
        .route("/v1/login", post(login))
        .route("/v1/me", get(me))
        .route("/v1/logout", post(logout))
        .route("/v1/logout-all", post(logout_all))
        .route("/v1/sessions", get(list_sessions))
        .route("/v1/sessions/{id}", delete(end_session))
        .route("/v1/password", post(change_password))
        .route("/v1/verify", get(verify))
        .route(
            "/v1/admin/users",
            get(admin_list_users).post(admin_create_user),
        )
        .route(
            "/v1/admin/users/{id}",
            get(admin_get_user).patch(admin_update_user),
        )
        .route("/v1/admin/users/{id}/logout", post(admin_force_logout))
}

fn no_store(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    state.auth.users.ping().await?;
    state.auth.sessions.ping().await?;
    Ok(Json(json!({"status": "ready"})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    email: String,
    password: String,
}

async fn register(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Response, ApiError> {
    if !state.settings.registration {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "registration_closed")
            .with_detail("self-service registration is turned off"));
    }
    let user = state
        .auth
        .create_user(&body.email, body.password, &[])
        .await?;
    Ok((StatusCode::CREATED, Json(json!({ "user": user }))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    email: String,
    password: String,
    #[serde(default)]
    mode: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    JsonOrForm(body): JsonOrForm<LoginRequest>,
) -> Result<Response, ApiError> {
    let mode = match body.mode.as_deref() {
        None | Some("session") => AuthMode::Session,
        Some("jwt") => {
            return Err(ApiError::bad_request(
                "unsupported_mode",
                "JWT mode is not enabled in this build",
            ));
        }
        Some(other) => {
            return Err(ApiError::bad_request(
                "unsupported_mode",
                format!("mode must be \"session\" or \"jwt\", not {other:?}"),
            ));
        }
    };
    // A browser signing in again gets a fresh session; the one it held before is ended, so a
    // session planted on it earlier cannot survive into the new login.
    let previous = state.cookie.read(&headers);
    let login = state
        .auth
        .login(
            &body.email,
            body.password,
            mode,
            client_info(&headers, peer),
        )
        .await?;
    if let Some(previous) = previous {
        state.auth.end_presented(&previous).await?;
    }
    let body = json!({
        "user": login.user,
        "mode": "session",
        "expires_at": login.session.expires_at,
    });
    let mut res = Json(body).into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, state.cookie.set(&login.token));
    Ok(no_store(res))
}

#[derive(Serialize)]
struct AuthView {
    mode: AuthMode,
    session_id: String,
    expires_at: Timestamp,
}

async fn me(Auth(who): Auth) -> Response {
    let body = json!({
        "id": who.user.id,
        "email": who.user.email,
        "roles": who.user.roles,
        "auth": AuthView {
            mode: who.session.mode,
            session_id: who.session.id.to_string(),
            expires_at: who.session.expires_at,
        },
    });
    no_store(Json(body).into_response())
}

fn cleared_cookie(state: &AppState) -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, state.cookie.clear());
    res
}

async fn logout(State(state): State<AppState>, Auth(who): Auth) -> Result<Response, ApiError> {
    state.auth.logout(&who.session.id).await?;
    Ok(cleared_cookie(&state))
}

async fn logout_all(State(state): State<AppState>, Auth(who): Auth) -> Result<Response, ApiError> {
    state.auth.end_sessions(&who.user.id, None).await?;
    Ok(cleared_cookie(&state))
}

#[derive(Serialize)]
struct SessionView<'a> {
    id: &'a str,
    mode: AuthMode,
    created_at: Timestamp,
    last_seen_at: Timestamp,
    expires_at: Timestamp,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    current: bool,
}

fn session_view<'a>(s: &'a SessionRecord, who: &Authenticated) -> SessionView<'a> {
    SessionView {
        id: s.id.as_str(),
        mode: s.mode,
        created_at: s.created_at,
        last_seen_at: s.last_seen_at,
        expires_at: s.expires_at,
        ip: s.ip.as_deref(),
        user_agent: s.user_agent.as_deref(),
        current: s.id == who.session.id,
    }
}

async fn list_sessions(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> Result<Response, ApiError> {
    let sessions = state.auth.sessions_of(&who.user.id).await?;
    let views: Vec<SessionView<'_>> = sessions.iter().map(|s| session_view(s, &who)).collect();
    Ok(no_store(Json(json!({ "sessions": views })).into_response()))
}

async fn end_session(
    State(state): State<AppState>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.auth.end_own_session(&who.user.id, &id).await?;
    if id == who.session.id.as_str() {
        return Ok(cleared_cookie(&state));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

async fn change_password(
    State(state): State<AppState>,
    Auth(who): Auth,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<StatusCode, ApiError> {
    state
        .auth
        .change_password(&who, body.current_password, body.new_password)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Other query parameters are ignored: proxies may add their own.
#[derive(Deserialize)]
struct VerifyQuery {
    role: Option<String>,
}

const X_USER: HeaderName = HeaderName::from_static("x-portcullis-user");
const X_EMAIL: HeaderName = HeaderName::from_static("x-portcullis-email");
const X_ROLES: HeaderName = HeaderName::from_static("x-portcullis-roles");

/// Forward-auth: 200 with identity headers, 401 without a live session, 403 without the role.
async fn verify(
    Auth(who): Auth,
    query: Result<Query<VerifyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    if let Some(role) = query.role.as_deref()
        && !who.user.has_role(role)
    {
        return Err(ApiError::forbidden().with_detail(format!("this needs the {role:?} role")));
    }
    let mut res = StatusCode::OK.into_response();
    let h = res.headers_mut();
    for (name, value) in [
        (X_USER, who.user.id.as_str().to_owned()),
        (X_EMAIL, who.user.email.as_str().to_owned()),
        (X_ROLES, who.user.roles_joined()),
    ] {
        // Emails may hold non-ASCII characters; header values carry them as UTF-8 bytes.
        let value = HeaderValue::from_bytes(value.as_bytes()).map_err(|_| ApiError::internal())?;
        h.insert(name, value);
    }
    Ok(no_store(res))
}

fn user_body(user: &User) -> Json<serde_json::Value> {
    Json(json!({ "user": user }))
}

async fn admin_list_users(State(state): State<AppState>, _: Admin) -> Result<Response, ApiError> {
    let users = state.auth.list_users().await?;
    Ok(no_store(Json(json!({ "users": users })).into_response()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUserRequest {
    email: String,
    password: String,
    #[serde(default)]
    roles: Vec<String>,
}

async fn admin_create_user(
    State(state): State<AppState>,
    _: Admin,
    ApiJson(body): ApiJson<NewUserRequest>,
) -> Result<Response, ApiError> {
    let user = state
        .auth
        .create_user(&body.email, body.password, &body.roles)
        .await?;
    Ok((StatusCode::CREATED, user_body(&user)).into_response())
}

async fn admin_get_user(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let user = state.auth.user(&id).await?;
    Ok(no_store(user_body(&user).into_response()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserPatch {
    roles: Option<Vec<String>>,
    disabled: Option<bool>,
}

async fn admin_update_user(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UserPatch>,
) -> Result<Response, ApiError> {
    let user = state
        .auth
        .update_user(&admin.user, &id, body.roles, body.disabled)
        .await?;
    Ok(no_store(user_body(&user).into_response()))
}

async fn admin_force_logout(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.auth.force_logout(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
