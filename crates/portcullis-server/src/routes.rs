//! The JSON API (docs/API.md). Handlers parse, call [`portcullis_service::Service`], and answer.

use axum::Json;
use axum::Router;
use axum::extract::{FromRequest, Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use portcullis_core::{AuthMode, SessionRecord, Timestamp, User};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use portcullis_service::{Actor, Authenticated, Creator, TokenPair};

use crate::cookies::CookieKind;
use crate::error::ApiError;
use crate::http::{
    Admin, AnyAuth, ApiJson, Auth, Client, JsonOrForm, X_EMAIL, X_ROLES, X_USER, json_bytes_no_store, json_no_store,
    no_store,
};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(crate::feed::routes())
        .merge(crate::oauth::routes())
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
        .route("/v1/token/refresh", post(token_refresh))
        .route("/v1/token/revoke", post(token_revoke))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/v1/verify", get(verify))
        .route("/v1/admin/users", get(admin_list_users).post(admin_create_user))
        .route("/v1/admin/users/{id}", get(admin_get_user).patch(admin_update_user).delete(admin_delete_user))
        .route("/v1/admin/users/{id}/logout", post(admin_force_logout))
        .route("/v1/admin/users/{id}/verify-email", post(admin_verify_email))
        .route("/v1/admin/audit", get(admin_audit))
        .route("/v1/admin/clients", get(admin_list_clients).post(admin_create_client))
        .route("/v1/admin/clients/{id}", delete(admin_remove_client))
        .route("/v1/admin/clients/{id}/secret", post(admin_rotate_client_secret))
}

/// `GET /metrics` (when `metrics = true`).
pub async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics.render(&state.service);
    let mut res = body.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    res
}

/// Liveness: the process answers. A fixed body from static bytes, nothing serialised.
async fn healthz() -> Response {
    let mut res = Response::new(axum::body::Body::from(r#"{"status":"ok"}"#));
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

/// Ready when every store answers. Also tells whether the revocation feed is connected, and
/// for how long it has not been (JWT verification goes on meanwhile, on what the node knows).
async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let feed = state.service.feed_status();
    let lost_for_ms = feed.lost_since.map(|t| state.service.clock.now().since(t).as_millis());
    for (name, ping) in [("user", state.service.users.ping().await), ("session", state.service.sessions.ping().await)] {
        if let Err(e) = ping {
            tracing::warn!(error = %e, store = name, "not ready");
            let feed = match lost_for_ms {
                Some(ms) => format!("; the revocation feed has been lost for {ms} ms"),
                None => String::new(),
            };
            return Err(ApiError::store_unavailable().with_detail(format!("the {name} store is unreachable{feed}")));
        }
    }
    Ok(Json(json!({
        "status": "ready",
        "revocation_feed": {"connected": feed.connected, "lost_for_ms": lost_for_ms},
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    email: String,
    password: String,
}

async fn register(
    State(state): State<AppState>,
    Client(client): Client,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Response, ApiError> {
    if !state.settings.registration.open {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "registration_closed")
            .with_detail("self-service registration is turned off"));
    }
    let user =
        state.service.create_account(&body.email, body.password, &[], Creator::Registration("registration"), &client);
    let user = user.await?;
    if state.service.verify_email && !user.email_verified {
        crate::recovery::send_verification(&state, user.clone(), client);
    }
    Ok((StatusCode::CREATED, Json(json!({ "user": user }))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    email: String,
    password: String,
    #[serde(default)]
    mode: Option<String>,
    /// JWT mode: `"body"` (default) or `"cookie"` (tokens in HttpOnly cookies, for browsers).
    #[serde(default)]
    transport: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    Body,
    Cookie,
}

fn parse_transport(t: Option<&str>) -> Result<Transport, ApiError> {
    match t {
        None | Some("body") => Ok(Transport::Body),
        Some("cookie") => Ok(Transport::Cookie),
        Some(other) => Err(ApiError::bad_request(
            "unsupported_transport",
            format!("transport must be \"body\" or \"cookie\", not {other:?}"),
        )),
    }
}

async fn login(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonOrForm(body): JsonOrForm<LoginRequest>,
) -> Result<Response, ApiError> {
    let (mode, transport) = login_mode(body.mode.as_deref(), body.transport.as_deref())?;
    // A browser signing in again gets a fresh session; the service ends the one it held.
    let previous = state.cookies.session(&headers);
    let res = match mode {
        AuthMode::Session => {
            let login = state.service.login(&body.email, body.password, client, previous.as_ref()).await?;
            session_response(&state, login, Extra::new())
        }
        AuthMode::Jwt => {
            let cookies = transport == Transport::Cookie;
            let pair = state.service.login_jwt(&body.email, body.password, client, previous.as_ref(), cookies).await?;
            token_response(&state, pair, transport, Extra::new())
        }
    };
    Ok(no_store(res))
}

/// A login's `mode` (`session`, the default, or `jwt`) and, for JWT, its `transport`.
pub(crate) fn login_mode(mode: Option<&str>, transport: Option<&str>) -> Result<(AuthMode, Transport), ApiError> {
    let mode = match mode {
        None | Some("session") => AuthMode::Session,
        Some("jwt") => AuthMode::Jwt,
        Some(other) => {
            return Err(ApiError::bad_request(
                "unsupported_mode",
                format!("mode must be \"session\" or \"jwt\", not {other:?}"),
            ));
        }
    };
    Ok((mode, parse_transport(transport)?))
}

/// The answer to a login that passed, in the mode and transport it asked for, with `extra`
/// members in its body (an enrolment's recovery codes).
pub(crate) fn signed_in_response(
    state: &AppState,
    signed_in: portcullis_service::SignedIn,
    cookies: bool,
    extra: Extra,
) -> Response {
    let res = match signed_in {
        portcullis_service::SignedIn::Session(login) => session_response(state, login, extra),
        portcullis_service::SignedIn::Jwt(pair) => {
            token_response(state, pair, if cookies { Transport::Cookie } else { Transport::Body }, extra)
        }
    };
    no_store(res)
}

/// Members a login's answer carries beside its own.
pub(crate) type Extra = serde_json::Map<String, serde_json::Value>;

/// The session-mode answer to a login: the user, and the session cookie.
pub(crate) fn session_response(state: &AppState, login: portcullis_service::Login, extra: Extra) -> Response {
    let mut body = json!({
        "user": login.user,
        "mode": "session",
        "expires_at": login.session.expires_at,
    });
    if let Some(members) = body.as_object_mut() {
        members.extend(extra);
    }
    let mut res = Json(body).into_response();
    let max_age = state.settings.session.absolute_timeout;
    res.headers_mut().insert(header::SET_COOKIE, state.cookies.set_session(&login.token, max_age));
    res
}

/// The JWT-mode answer to a login or refresh, in the body or in cookies.
pub(crate) fn token_response(state: &AppState, pair: TokenPair, transport: Transport, extra: Extra) -> Response {
    let now = state.service.clock.now();
    let expires_in = pair.access.claims.exp.saturating_sub(now.unix_seconds()).max(0);
    let refresh_expires_in = pair.refresh_expires_at.since(now).as_secs();
    let mut body = json!({
        "mode": "jwt",
        "token_type": "Bearer",
        "expires_in": expires_in,
        "refresh_expires_in": refresh_expires_in,
        "user": pair.user,
    });
    if transport == Transport::Body {
        body["access_token"] = json!(pair.access.token);
        body["refresh_token"] = json!(pair.refresh.expose());
    }
    if let Some(members) = body.as_object_mut() {
        members.extend(extra);
    }
    let mut res = Json(body).into_response();
    if transport == Transport::Cookie {
        let h = res.headers_mut();
        let access_age = std::time::Duration::from_secs(u64::try_from(expires_in).unwrap_or(0));
        h.append(header::SET_COOKIE, state.cookies.set(CookieKind::Access, &pair.access.token, access_age));
        let refresh_age = std::time::Duration::from_secs(refresh_expires_in);
        h.append(header::SET_COOKIE, state.cookies.set(CookieKind::Refresh, &pair.refresh.expose(), refresh_age));
    }
    no_store(res)
}

/// Fields other OAuth clients send (`client_id`, `scope`) are ignored, as RFC 6749 §3.2 says.
#[derive(Deserialize)]
struct RefreshRequest {
    /// `refresh_token` when given (OAuth clients send it; ours may leave it out).
    #[serde(default)]
    grant_type: Option<String>,
    refresh_token: String,
}

/// `POST /v1/token/refresh`: the refresh token in a JSON or form body (`grant_type=refresh_token
/// &refresh_token=...`, as OAuth clients send it), or (cookie transport) in the refresh cookie
/// with no body. Errors carry RFC 6749 §5.2's `error` beside the problem fields.
async fn token_refresh(
    State(state): State<AppState>,
    Client(client): Client,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    let headers = req.headers().clone();
    let from_cookie = state.cookies.values(&headers, CookieKind::Refresh).next().map(str::to_owned);
    let has_body = headers.contains_key(header::CONTENT_TYPE)
        || headers.get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0");
    let (presented, transport) = if has_body || from_cookie.is_none() {
        let JsonOrForm(body) =
            JsonOrForm::<RefreshRequest>::from_request(req, &state).await.map_err(ApiError::oauth)?;
        if body.grant_type.as_deref().is_some_and(|g| g != "refresh_token") {
            let detail = "this endpoint takes grant_type=refresh_token only";
            return Err(ApiError::bad_request("unsupported_grant_type", detail).oauth());
        }
        (body.refresh_token, Transport::Body)
    } else {
        (from_cookie.unwrap_or_default(), Transport::Cookie)
    };
    match state.service.refresh(&presented, client.ip.as_deref()).await {
        Ok(pair) => Ok(token_response(&state, pair, transport, Extra::new())),
        Err(e) => {
            let mut res = ApiError::from(e).oauth().into_response();
            if transport == Transport::Cookie {
                res.headers_mut().append(header::SET_COOKIE, state.cookies.clear(CookieKind::Refresh));
                res.headers_mut().append(header::SET_COOKIE, state.cookies.clear(CookieKind::Access));
            }
            Ok(res)
        }
    }
}

/// `token_type_hint`, `client_id` and anything else a client sends besides `token` are ignored
/// (RFC 7009 §2.1, RFC 6749 §3.2): the token says what it is.
#[derive(Deserialize)]
struct RevokeRequest {
    token: String,
}

/// `POST /v1/token/revoke` (RFC 7009): always 200 for a well-formed request; errors carry RFC
/// 6749 §5.2's `error` beside the problem fields.
async fn token_revoke(
    State(state): State<AppState>,
    body: Result<JsonOrForm<RevokeRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let JsonOrForm(body) = body.map_err(ApiError::oauth)?;
    state.service.revoke_token(&body.token).await.map_err(|e| ApiError::from(e).oauth())?;
    Ok(json_no_store(&json!({})))
}

async fn jwks(State(state): State<AppState>) -> Response {
    let keys = state.service.tokens.keys.current();
    let mut res = (StatusCode::OK, keys.jwks_json.to_string()).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    res
}

#[cfg_attr(test, derive(Serialize))]
struct AuthView<'a> {
    mode: AuthMode,
    session_id: &'a portcullis_core::SessionId,
    expires_at: Timestamp,
}

/// The body of `GET /v1/me`, the hottest authenticated route. Its serde form (built only for
/// the tests) is the reference [`MeView::to_json`] is held to.
#[cfg_attr(test, derive(Serialize))]
struct MeView<'a> {
    id: &'a portcullis_core::UserId,
    email: &'a portcullis_core::Email,
    roles: &'a std::collections::BTreeSet<portcullis_core::Role>,
    auth: AuthView<'a>,
}

impl MeView<'_> {
    /// The same JSON as serde's (a test holds them equal), written piece by piece: the member
    /// names are fixed text; the user's id and email are escaped by serde_json only where they
    /// need it (they come from the store as they are), and the rest is written as it is, because
    /// its types hold nothing a JSON string must escape: a role name and a session id are
    /// checked characters from the moment they exist, the mode is a fixed word and the time is
    /// digits and separators. Through serde every byte was scanned for escapes, a tenth of the
    /// request's instructions.
    fn to_json(&self) -> Vec<u8> {
        fn value(out: &mut Vec<u8>, s: &str) {
            if needs_escape(s.as_bytes()) {
                if serde_json::to_writer(&mut *out, s).is_err() {
                    // Writing to a Vec cannot fail; should it ever, the answer stays valid JSON.
                    out.extend_from_slice(b"null");
                }
            } else {
                verbatim(out, s.as_bytes());
            }
        }
        fn verbatim(out: &mut Vec<u8>, s: &[u8]) {
            out.push(b'"');
            out.extend_from_slice(s);
            out.push(b'"');
        }
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(br#"{"id":"#);
        value(&mut out, self.id.as_str());
        out.extend_from_slice(br#","email":"#);
        value(&mut out, self.email.as_str());
        out.extend_from_slice(br#","roles":["#);
        for (i, role) in self.roles.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            verbatim(&mut out, role.as_str().as_bytes());
        }
        out.extend_from_slice(br#"],"auth":{"mode":"#);
        verbatim(&mut out, self.auth.mode.as_str().as_bytes());
        out.extend_from_slice(br#","session_id":"#);
        verbatim(&mut out, self.auth.session_id.as_str().as_bytes());
        out.extend_from_slice(br#","expires_at":""#);
        self.auth.expires_at.push_rfc3339(&mut out);
        out.extend_from_slice(b"\"}}");
        out
    }
}

/// Whether a JSON string must escape a byte of `s`: a control character, `"` or `\\`. Eight
/// bytes at a time (a word whose bytes are tested together, as in "Bit Twiddling Hacks"'
/// `hasless` and `haszero`, exact for the word as a whole), then the last few one by one.
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = ONES * 0x80;
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS;
    let mut chunks = s.chunks_exact(8);
    let mut found = 0;
    for chunk in &mut chunks {
        if let Ok(bytes) = <[u8; 8]>::try_from(chunk) {
            let w = u64::from_ne_bytes(bytes);
            found |= below(w, 0x20) | below(w ^ (ONES * u64::from(b'"')), 1) | below(w ^ (ONES * u64::from(b'\\')), 1);
        }
    }
    found != 0 || chunks.remainder().iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

async fn me(Auth(who): Auth) -> Response {
    let body = MeView {
        id: &who.user_id,
        email: &who.email,
        roles: &who.roles,
        auth: AuthView { mode: who.mode, session_id: &who.session_id, expires_at: who.expires_at },
    };
    json_bytes_no_store(body.to_json())
}

/// 204 that makes the browser forget every credential cookie.
fn cleared_cookies(state: &AppState) -> Response {
    let mut res = StatusCode::NO_CONTENT.into_response();
    for kind in [CookieKind::Session, CookieKind::Access, CookieKind::Refresh] {
        res.headers_mut().append(header::SET_COOKIE, state.cookies.clear(kind));
    }
    res
}

async fn logout(State(state): State<AppState>, Client(client): Client, Auth(who): Auth) -> Result<Response, ApiError> {
    state.service.logout(&who, &client).await?;
    Ok(cleared_cookies(&state))
}

async fn logout_all(
    State(state): State<AppState>,
    Client(client): Client,
    Auth(who): Auth,
) -> Result<Response, ApiError> {
    state.service.logout_all(&who, &client).await?;
    Ok(cleared_cookies(&state))
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
    /// An application's sign-in through the provider: the client that holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
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
        current: s.id == who.session_id,
        client_id: s.grant.as_ref().map(|g| g.client_id.as_str()),
    }
}

async fn list_sessions(State(state): State<AppState>, Auth(who): Auth) -> Result<Response, ApiError> {
    let sessions = state.service.sessions_of(&who.user_id).await?;
    let views: Vec<SessionView<'_>> = sessions.iter().map(|s| session_view(s, &who)).collect();
    Ok(json_no_store(&json!({ "sessions": views })))
}

async fn end_session(
    State(state): State<AppState>,
    Client(client): Client,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    state.service.end_own_session(&who, &id, &client).await?;
    if id == who.session_id.as_str() {
        return Ok(cleared_cookies(&state));
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
    Client(client): Client,
    Auth(who): Auth,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<Response, ApiError> {
    let renewed = state.service.change_password(&who, body.current_password, body.new_password, &client).await?;
    let mut res = StatusCode::NO_CONTENT.into_response();
    // A browser session gets a new id with the new password (OWASP: renew the id at every
    // privilege change); the cookie that made this request stops working.
    if let Some(token) = renewed {
        let max_age = who.expires_at.since(state.service.clock.now());
        res.headers_mut().insert(header::SET_COOKIE, state.cookies.set_session(&token, max_age));
    }
    Ok(no_store(res))
}

/// Other query parameters are ignored: proxies may add their own.
#[derive(Deserialize)]
struct VerifyQuery {
    role: Option<String>,
    /// `1` (or `true`): the route needs a sign-in with a second factor.
    mfa: Option<String>,
}

const X_SIGN_IN: HeaderName = HeaderName::from_static("x-portcullis-sign-in");

/// The address the proxy asked about, as it sends it (`X-Original-URL`): the one header
/// `/v1/verify` reads besides the credential, taken alone (every protected request passes
/// here, so the rest of the headers are not copied).
struct OriginalUrl(Option<HeaderValue>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for OriginalUrl {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        const X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
        Ok(Self(parts.headers.get(X_ORIGINAL_URL).cloned()))
    }
}

/// Where a browser without a session goes to sign in and come back to `original` (the whole
/// URL, query included): `/login?return_to=<original, percent-encoded>`. Sign-in checks the
/// return address against the trusted origins, so this is never an open redirect.
fn sign_in_location(original: &HeaderValue) -> Option<HeaderValue> {
    let original = original.to_str().ok().filter(|s| s.len() <= 2048)?;
    let url = url::Url::parse(original).ok().filter(|u| matches!(u.scheme(), "http" | "https"))?;
    let encoded: String = url::form_urlencoded::byte_serialize(url.as_str().as_bytes()).collect();
    HeaderValue::from_str(&format!("/login?return_to={encoded}")).ok()
}

/// Forward-auth: 200 with identity headers, 401 without a live session, 403 without the role.
/// With `X-Original-URL` (the URL the proxy is guarding), a 401 also says where to sign in:
/// `X-Portcullis-Sign-In: /login?return_to=...`, for the proxy to send browsers to.
async fn verify(
    auth: Result<AnyAuth, ApiError>,
    OriginalUrl(original): OriginalUrl,
    query: Result<Query<VerifyQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let AnyAuth(who) = match auth {
        Ok(auth) => auth,
        Err(e) => {
            let mut res = e.into_response();
            if res.status() == StatusCode::UNAUTHORIZED
                && let Some(location) = original.as_ref().and_then(sign_in_location)
            {
                res.headers_mut().insert(X_SIGN_IN, location);
            }
            return Ok(res);
        }
    };
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    if let Some(role) = query.role.as_deref()
        && !who.has_role(role)
    {
        return Err(ApiError::forbidden().with_detail(format!("this needs the {role:?} role")));
    }
    if query.mfa.as_deref().is_some_and(|m| m == "1" || m == "true") && !who.amr.is_multi_factor() {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "mfa_required")
            .with_detail("this needs a sign-in with a second factor"));
    }
    let mut headers = crate::http::verified_headers();
    let roles = who.roles_joined();
    // Filled in where the prebuilt map holds them, found by walking it (cheaper than a lookup).
    for (name, slot) in headers.iter_mut() {
        let value = if name == X_USER {
            who.user_id.as_str()
        } else if name == X_EMAIL {
            who.email.as_str()
        } else if name == X_ROLES {
            roles.as_str()
        } else {
            continue;
        };
        // Emails may hold non-ASCII characters; header values carry them as UTF-8 bytes.
        *slot = HeaderValue::from_bytes(value.as_bytes()).map_err(|_| ApiError::internal())?;
    }
    let mut res = Response::new(axum::body::Body::empty());
    *res.headers_mut() = headers;
    Ok(res)
}

fn user_body(user: &User) -> Json<serde_json::Value> {
    Json(json!({ "user": user }))
}

async fn admin_list_users(State(state): State<AppState>, _: Admin) -> Result<Response, ApiError> {
    let users = state.service.list_users().await?;
    Ok(json_no_store(&json!({ "users": users })))
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
    Client(client): Client,
    Admin(admin): Admin,
    ApiJson(body): ApiJson<NewUserRequest>,
) -> Result<Response, ApiError> {
    let by = Creator::Admin(&admin.user_id);
    let user = state.service.create_account(&body.email, body.password, &body.roles, by, &client).await?;
    Ok((StatusCode::CREATED, user_body(&user)).into_response())
}

async fn admin_get_user(State(state): State<AppState>, _: Admin, Path(id): Path<String>) -> Result<Response, ApiError> {
    let user = state.service.user(&id).await?;
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
    Client(client): Client,
    Admin(admin): Admin,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UserPatch>,
) -> Result<Response, ApiError> {
    let user = state.service.update_user(Actor::Admin(&admin.user_id), &id, body.roles, body.disabled, &client).await?;
    Ok(no_store(user_body(&user).into_response()))
}

/// `POST /v1/admin/users/{id}/verify-email`: the administrator vouches for the address.
async fn admin_verify_email(
    State(state): State<AppState>,
    Client(client): Client,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let user = state.service.confirm_email(Actor::Admin(&admin.user_id), &id, &client).await?;
    Ok(no_store(user_body(&user).into_response()))
}

async fn admin_force_logout(
    State(state): State<AppState>,
    Client(client): Client,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.service.force_logout(Actor::Admin(&admin.user_id), &id, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn admin_delete_user(
    State(state): State<AppState>,
    Client(client): Client,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.service.delete_user(Actor::Admin(&admin.user_id), &id, &client).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn admin_list_clients(State(state): State<AppState>, _: Admin) -> Result<Response, ApiError> {
    let clients = state.service.clients().await?;
    Ok(json_no_store(&json!({ "clients": clients })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewClientRequest {
    name: String,
    /// `service`, `confidential` or `public`.
    kind: String,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    post_logout_redirect_uris: Vec<String>,
    #[serde(default)]
    backchannel_logout_uri: Option<String>,
    /// Consent is skipped for first-party clients (the default).
    #[serde(default)]
    first_party: Option<bool>,
}

/// A client with its secret: answered once, when it is made or its secret rotated.
fn client_with_secret(client: &portcullis_core::Client, secret: Option<&portcullis_core::ClientSecret>) -> Value {
    json!({"client_id": client.id, "client_secret": secret.map(portcullis_core::ClientSecret::expose), "client": client})
}

async fn admin_create_client(
    State(state): State<AppState>,
    Client(from): Client,
    Admin(admin): Admin,
    ApiJson(body): ApiJson<NewClientRequest>,
) -> Result<Response, ApiError> {
    let actor = Actor::Admin(&admin.user_id);
    let registered = match body.kind.as_str() {
        "service" => {
            let oidc_only = !body.redirect_uris.is_empty()
                || !body.post_logout_redirect_uris.is_empty()
                || body.backchannel_logout_uri.is_some()
                || body.first_party.is_some();
            if oidc_only {
                let detail = "a service client has no redirect URIs, logout URIs or first-party flag";
                return Err(ApiError::bad_request("invalid_client_metadata", detail));
            }
            state.service.register_client(actor, &body.name, portcullis_core::ClientKind::Service, &from).await?
        }
        kind @ ("confidential" | "public") => {
            let spec = portcullis_service::OidcClientSpec {
                name: body.name,
                public: kind == "public",
                redirect_uris: body.redirect_uris,
                post_logout_redirect_uris: body.post_logout_redirect_uris,
                backchannel_logout_uri: body.backchannel_logout_uri,
                first_party: body.first_party.unwrap_or(true),
            };
            state.service.register_oidc_client(actor, spec, &from).await?
        }
        _ => {
            let detail = "kind must be \"service\", \"confidential\" or \"public\"";
            return Err(ApiError::bad_request("unsupported_client_kind", detail));
        }
    };
    let mut res = json_no_store(&client_with_secret(&registered.client, registered.secret.as_ref()));
    *res.status_mut() = StatusCode::CREATED;
    Ok(res)
}

async fn admin_remove_client(
    State(state): State<AppState>,
    Client(from): Client,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.service.remove_client(Actor::Admin(&admin.user_id), &id, &from).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn admin_rotate_client_secret(
    State(state): State<AppState>,
    Client(from): Client,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let overlap = state.settings.clients.secret_overlap;
    let actor = Actor::Admin(&admin.user_id);
    let (client, secret) = state.service.rotate_client_secret(actor, &id, overlap, &from).await?;
    Ok(json_no_store(&client_with_secret(&client, Some(&secret))))
}

/// `GET /v1/admin/audit?limit=&before=&user=`: newest first; `next` is the `before` of the
/// following page, `null` on the last.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    limit: Option<u32>,
    before: Option<i64>,
    user: Option<String>,
}

/// The largest page of audit events.
pub const MAX_AUDIT_PAGE: u32 = 500;

#[derive(Serialize)]
struct AuditView<'a> {
    id: i64,
    at: Timestamp,
    kind: &'a str,
    outcome: &'a str,
    user_id: Option<&'a str>,
    actor: Option<&'a str>,
    ip: Option<&'a str>,
    detail: Option<&'a str>,
}

async fn admin_audit(
    State(state): State<AppState>,
    _: Admin,
    query: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > MAX_AUDIT_PAGE {
        return Err(ApiError::bad_request("invalid_query", format!("limit must be between 1 and {MAX_AUDIT_PAGE}")));
    }
    let user_id = match q.user.as_deref() {
        Some(u) => Some(
            portcullis_core::UserId::parse(u)
                .ok_or_else(|| ApiError::bad_request("invalid_query", "user must be a user id"))?,
        ),
        None => None,
    };
    let query = portcullis_store::AuditQuery { before: q.before, user_id, limit };
    let events = state.service.audit_events(&query).await?;
    let next = (events.len() == limit as usize).then(|| events.last().map(|e| e.id)).flatten();
    let views: Vec<AuditView<'_>> = events
        .iter()
        .map(|e| AuditView {
            id: e.id,
            at: e.event.at,
            kind: &e.event.kind,
            outcome: &e.event.outcome,
            user_id: e.event.user_id.as_ref().map(|u| u.as_str()),
            actor: e.event.actor.as_deref(),
            ip: e.event.ip.as_deref(),
            detail: e.event.detail.as_deref(),
        })
        .collect();
    Ok(json_no_store(&json!({ "events": views, "next": next })))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use portcullis_core::{Email, Role, SessionId, UserId};

    use super::*;

    proptest::proptest! {
        #[test]
        fn a_json_string_needs_escaping_exactly_when_a_byte_does(s in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            let byte_by_byte = s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
            proptest::prop_assert_eq!(needs_escape(&s), byte_by_byte);
        }

        #[test]
        fn mostly_plain_strings_are_scanned_exactly(
            plain in "[ -~&&[^\"\\\\]]{0,30}",
            odd in proptest::prelude::any::<u8>(),
            at in 0usize..31,
        ) {
            let mut s = plain.into_bytes();
            s.insert(at.min(s.len()), odd);
            let byte_by_byte = s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
            proptest::prop_assert_eq!(needs_escape(&s), byte_by_byte);
        }
    }

    #[test]
    fn the_me_body_is_what_serde_writes_whatever_the_values_hold() {
        let plain = ["a@example.com", "user", "admin"];
        let awkward = [
            "quo\"te@example.com",
            "back\\slash@example.com",
            "tab\t@example.com",
            "ünï©ødé@example.com",
            "\u{7f}\u{1}",
        ];
        for (i, email) in plain.iter().chain(&awkward).enumerate() {
            let roles: BTreeSet<Role> =
                ["user", "admin", "ops:read"].iter().take(i % 4).filter_map(|r| Role::parse(r).ok()).collect();
            let id = UserId::from_stored(format!("id-{email}"));
            let email = Email::from_canonical(email);
            let session_id = SessionId::generate();
            for (mode, at) in [
                (AuthMode::Session, 0),
                (AuthMode::Jwt, 1_765_000_000_123),
                (AuthMode::Jwt, -1),
                (AuthMode::Session, i64::MAX),
            ] {
                let view = MeView {
                    id: &id,
                    email: &email,
                    roles: &roles,
                    auth: AuthView { mode, session_id: &session_id, expires_at: Timestamp::from_unix_millis(at) },
                };
                let ours = view.to_json();
                let serde = serde_json::to_vec(&view).expect("serialise");
                assert_eq!(String::from_utf8_lossy(&ours), String::from_utf8_lossy(&serde));
                let parsed: Value = serde_json::from_slice(&ours).expect("valid JSON");
                assert_eq!(parsed["email"], email.as_str());
            }
        }
    }
}
