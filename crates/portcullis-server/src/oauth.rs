//! The OpenID Connect provider's machine endpoints (docs/OIDC.md): discovery (OpenID Connect
//! Discovery 1.0 and RFC 8414), the token endpoint and userinfo. The authorization endpoint is
//! a page (`pages/authorize.rs`).
//!
//! Errors here are problem+json like every other, with RFC 6749 §5.2's `error` and
//! `error_description` beside the problem fields (the OAuth `error` is the `code` too):
//! relying-party libraries read those two members and no content type.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use portcullis_core::oidc::SCOPES;
use portcullis_service::{OAuthError, ProviderTokens};
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::http::{AnyAuth, Client, LimitedBody, basic_credentials, json_no_store, media_type};
use crate::state::AppState;

/// Where the provider's endpoints are (read by clients from discovery).
pub const AUTHORIZE_PATH: &str = "/oauth2/authorize";
pub const TOKEN_PATH: &str = "/oauth2/token";
pub const USERINFO_PATH: &str = "/oauth2/userinfo";
pub const INTROSPECT_PATH: &str = "/oauth2/introspect";
pub const REVOKE_PATH: &str = "/oauth2/revoke";
/// RP-initiated logout: a page (`pages/end_session.rs`).
pub const END_SESSION_PATH: &str = "/oauth2/logout";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/oauth-authorization-server", get(discovery))
        .route(TOKEN_PATH, post(token))
        .route(USERINFO_PATH, get(userinfo).post(userinfo))
        .route(INTROSPECT_PATH, post(introspect))
        .route(REVOKE_PATH, post(revoke))
}

/// Whether `path` is one of the provider's endpoints that clients call from their own servers
/// (or a browser app, under CORS) with their own credentials, never with the person's cookie:
/// the cross-site guard has nothing to protect there.
pub fn is_client_endpoint(path: &str) -> bool {
    matches!(path, TOKEN_PATH | USERINFO_PATH | INTROSPECT_PATH | REVOKE_PATH)
}

/// `GET /.well-known/openid-configuration` (and RFC 8414's name for the same document). Only
/// what works is listed. The ID-token key is made first, so the JWKS a relying party fetches
/// next holds it.
async fn discovery(State(state): State<AppState>) -> Result<Response, ApiError> {
    state.service.ensure_id_token_key().await?;
    let issuer = &state.service.tokens.expect.issuer;
    let doc = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}{AUTHORIZE_PATH}"),
        "token_endpoint": format!("{issuer}{TOKEN_PATH}"),
        "userinfo_endpoint": format!("{issuer}{USERINFO_PATH}"),
        "introspection_endpoint": format!("{issuer}{INTROSPECT_PATH}"),
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint": format!("{issuer}{REVOKE_PATH}"),
        "end_session_endpoint": format!("{issuer}{END_SESSION_PATH}"),
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
        "frontchannel_logout_supported": false,
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "scopes_supported": SCOPES,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "prompt_values_supported": ["none", "login", "consent", "select_account"],
        "claims_supported": [
            "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "sid", "amr", "azp", "at_hash",
            "email", "email_verified", "preferred_username", "roles"
        ],
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
    });
    let mut res = (StatusCode::OK, doc.to_string()).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    Ok(res)
}

/// The form the token endpoint reads. Every member optional: what is missing is an
/// `invalid_request` in OAuth's words, not a deserialisation error.
#[derive(Debug, Default, Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// The client's credentials as presented: HTTP Basic (RFC 6749 §2.3.1: each half
/// form-urlencoded) or the form's `client_id` (and `client_secret`). Using both is refused.
fn client_credentials(
    headers: &HeaderMap,
    form_id: &Option<String>,
    form_secret: &Option<String>,
) -> Result<(String, Option<String>, bool), ApiError> {
    // `Some(None)`: an `Authorization` header that is not Basic client credentials.
    let basic = headers.contains_key(header::AUTHORIZATION).then(|| basic_credentials(headers).and_then(Result::ok));
    match (basic, form_id, form_secret) {
        (Some(Some((id, secret))), None | Some(_), None) if form_id.as_ref().is_none_or(|f| *f == id) => {
            Ok((id, Some(secret), true))
        }
        (Some(None), _, _) => Err(ApiError::from(OAuthError::new(
            "invalid_client",
            "the Authorization header is not HTTP Basic client credentials",
        ))
        .basic_challenge()),
        (Some(Some(_)), _, _) => {
            Err(OAuthError::invalid_request("use one client authentication method, not two").into())
        }
        (None, Some(id), secret) => Ok((id.clone(), secret.clone(), false)),
        (None, None, _) => Err(OAuthError::new("invalid_client", "the client did not say who it is").into()),
    }
}

/// A form body of one of the client endpoints, or `invalid_request`.
fn read_form<T: serde::de::DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, ApiError> {
    if media_type(headers).is_none_or(|m| m != "application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request("the body must be application/x-www-form-urlencoded").into());
    }
    serde_urlencoded::from_bytes(body)
        .map_err(|_| OAuthError::invalid_request("the form is malformed or repeats a parameter").into())
}

/// The client behind a request to a client endpoint, authenticated.
async fn client_of(
    state: &AppState,
    headers: &HeaderMap,
    id: &Option<String>,
    secret: &Option<String>,
) -> Result<portcullis_core::Client, ApiError> {
    let (id, secret, basic) = client_credentials(headers, id, secret)?;
    state
        .service
        .authenticate_oauth_client(&id, secret.as_deref())
        .await
        .map_err(|error| if basic { ApiError::from(error).basic_challenge() } else { error.into() })
}

/// `POST /oauth2/token` (RFC 6749 §3.2): `authorization_code`, `refresh_token` and
/// `client_credentials`.
async fn token(
    State(state): State<AppState>,
    Client(from): Client,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let form: TokenForm = read_form(&headers, &body)?;
    let client = client_of(&state, &headers, &form.client_id, &form.client_secret).await?;
    let tokens = match form.grant_type.as_deref() {
        Some("authorization_code") => {
            let code = form.code.as_deref().ok_or_else(|| OAuthError::invalid_request("code is required"))?;
            state
                .service
                .redeem_code(&client, code, form.redirect_uri.as_deref(), form.code_verifier.as_deref(), from)
                .await?
        }
        Some("refresh_token") => {
            let token = form
                .refresh_token
                .as_deref()
                .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
            state.service.refresh_for_client(&client, token, from.ip.as_deref()).await?
        }
        Some("client_credentials") => state.service.client_credentials(&client, form.scope.as_deref())?,
        Some(_) => return Err(OAuthError::new("unsupported_grant_type", "this grant type is not supported").into()),
        None => return Err(OAuthError::invalid_request("grant_type is required").into()),
    };
    Ok(token_answer(&state, tokens))
}

fn token_answer(state: &AppState, t: ProviderTokens) -> Response {
    let mut body = json!({
        "access_token": t.access.token,
        "token_type": "Bearer",
        "expires_in": state.service.tokens.access_ttl.as_secs(),
    });
    if let Some(refresh) = &t.refresh {
        body["refresh_token"] = json!(refresh.expose());
    }
    if let Some(id_token) = &t.id_token {
        body["id_token"] = json!(id_token);
    }
    if !t.scope.is_empty() {
        body["scope"] = json!(t.scope);
    }
    let mut res = json_no_store(&body);
    res.headers_mut().insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

/// The form of introspection and revocation.
#[derive(Debug, Default, Deserialize)]
struct TokenQuestion {
    token: Option<String>,
    /// Accepted and not needed: the token's shape says what it is.
    #[serde(rename = "token_type_hint")]
    _hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// The authenticated client and the token it asks about, from an introspection or revocation form.
async fn token_question(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(portcullis_core::Client, String), ApiError> {
    let form: TokenQuestion = read_form(headers, body)?;
    let client = client_of(state, headers, &form.client_id, &form.client_secret).await?;
    let token = form.token.ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    Ok((client, token))
}

/// `POST /oauth2/introspect` (RFC 7662): confidential and service clients (resource servers)
/// ask whether a token is active. Anything not active is `{"active":false}`.
async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let (client, token) = token_question(&state, &headers, &body).await?;
    if client.kind == portcullis_core::ClientKind::Public {
        return Err(OAuthError::new("unauthorized_client", "a public client cannot introspect tokens").into());
    }
    let answer = match state.service.introspect(&client, &token).await {
        Ok(Some(active)) => serde_json::to_value(active).unwrap_or_else(|_| json!({"active": false})),
        Ok(None) => json!({"active": false}),
        Err(e) => return Err(OAuthError::server_error(&e).into()),
    };
    Ok(json_no_store(&answer))
}

/// `POST /oauth2/revoke` (RFC 7009): a client revokes a token issued to it; any other token,
/// or none of ours, is answered the same `200`.
async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> Result<Response, ApiError> {
    let (client, token) = token_question(&state, &headers, &body).await?;
    state.service.revoke_token_of(&token, Some(&client.id)).await.map_err(|e| OAuthError::server_error(&e))?;
    Ok(json_no_store(&json!({})))
}

/// `GET`/`POST /oauth2/userinfo` with an application's access token (scope `openid`).
async fn userinfo(State(state): State<AppState>, AnyAuth(who): AnyAuth) -> Result<Response, ApiError> {
    Ok(json_no_store(&state.service.userinfo(&who).await?))
}
