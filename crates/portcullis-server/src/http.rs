//! HTTP plumbing shared by the routes: request bodies, the client's address, the
//! authentication extractors and the cross-site request guard.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portcullis_core::ClientInfo;
use serde::Serialize;
use serde::de::DeserializeOwned;

use portcullis_service::{AuthError, Authenticated};

use crate::cookies::CookieKind;
use crate::error::ApiError;
use crate::state::AppState;

/// The largest request body accepted; larger ones are refused before parsing.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Where the request came from: the client's address (see [`crate::proxies::TrustedProxies::client_ip`]) and
/// the `User-Agent`.
pub struct Client(pub ClientInfo);

impl Client {
    pub fn of(parts: &Parts, state: &AppState) -> ClientInfo {
        // Where the app is served by another loop than ours (an embedding program with axum's
        // `into_make_service_with_connect_info`), axum's `ConnectInfo`.
        let connect_info = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        let peer = connect_info.or_else(crate::serve::peer).map(|a| a.ip());
        ClientInfo {
            ip: state.trusted_proxies.client_ip(peer, &parts.headers).map(|ip| ip.to_string()),
            user_agent: parts.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned),
        }
    }
}

impl FromRequestParts<AppState> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Client(Client::of(parts, state)))
    }
}

pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

fn is_json(mt: &str) -> bool {
    mt == "application/json" || (mt.starts_with("application/") && mt.ends_with("+json"))
}

/// `client_id` and `client_secret` from `Authorization: Basic`, percent-decoded as RFC 6749
/// §2.3.1 asks. `None` when the header is not Basic credentials.
pub fn basic_credentials(headers: &HeaderMap) -> Option<Result<(String, String), ()>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decode = || -> Option<(String, String)> {
        let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded.trim()).ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (id, secret) = raw.split_once(':')?;
        let unescape =
            |s: &str| url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned());
        Some((unescape(id)?, unescape(secret)?))
    };
    Some(decode().ok_or(()))
}

/// The whole body, at most [`MAX_BODY_BYTES`] (a larger `Content-Length` is refused before
/// anything is read).
async fn body_bytes(req: Request) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if err.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            source = err.source();
        }
        ApiError::bad_request("invalid_body", "the request body could not be read")
    })
}

/// A request body read whole, within [`MAX_BODY_BYTES`] (`413 payload_too_large` past it), for
/// handlers that parse it themselves (the provider's forms).
pub struct LimitedBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for LimitedBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        body_bytes(req).await.map(LimitedBody)
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::bad_request("invalid_body", e.to_string()),
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
            }
        }
    })
}

fn unsupported_media_type(accepted: &str) -> ApiError {
    ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
        .with_detail(format!("send the body as {accepted}"))
}

/// A JSON request body, with problem+json answers for every way it can be wrong.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if !media_type(req.headers()).is_some_and(|m| is_json(&m)) {
            return Err(unsupported_media_type("application/json"));
        }
        let bytes = body_bytes(req).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// A JSON or HTML-form (`application/x-www-form-urlencoded`) request body.
pub struct JsonOrForm<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonOrForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        match media_type(req.headers()) {
            Some(m) if is_json(&m) => {
                let bytes = body_bytes(req).await?;
                parse_json(&bytes).map(JsonOrForm)
            }
            Some(m) if m == "application/x-www-form-urlencoded" => {
                let bytes = body_bytes(req).await?;
                serde_urlencoded::from_bytes(&bytes)
                    .map(JsonOrForm)
                    .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))
            }
            _ => Err(unsupported_media_type("application/json or application/x-www-form-urlencoded")),
        }
    }
}

/// An access token carried in a form body's `access_token` field (RFC 6750 §2.2), put aside by
/// [`form_access_token`].
#[derive(Clone)]
pub struct FormAccessToken(pub String);

/// The bearer token of an `Authorization` header; anything else there is refused.
///
/// Only the scheme is checked here: what follows it is compared byte for byte with the tokens
/// the verified-token cache holds, or read by the strict verifier, which accepts nothing but three
/// segments of base64url, so a space, a control character or any other stray byte is refused
/// there with the same answer, without a pass over the token here on every request.
pub fn bearer(value: &HeaderValue) -> Result<&[u8], ApiError> {
    let invalid = || ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token");
    let v = value.as_bytes();
    let token = match v.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => &v[7..],
        _ => return Err(invalid()),
    };
    if token.is_empty() {
        return Err(invalid());
    }
    Ok(token)
}

fn query_token(parts: &Parts) -> Option<String> {
    let q = parts.uri.query()?;
    url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "access_token").map(|(_, v)| v.into_owned())
}

/// Finds the request's credential, in the order docs/API.md gives, and verifies it.
async fn authenticate(parts: &mut Parts, state: &AppState) -> Result<Authenticated, ApiError> {
    if let Some(v) = parts.headers.get(header::AUTHORIZATION) {
        let token = bearer(v)?;
        return Ok(state.service.authenticate_access(token).await?);
    }
    if let Some(token) = state.cookies.session(&parts.headers) {
        match state.service.authenticate(&token).await {
            Ok(who) => return Ok(who),
            Err(AuthError::Unauthenticated) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let access_cookie = state.cookies.values(&parts.headers, CookieKind::Access).next().map(str::to_owned);
    let form = parts.extensions.get::<FormAccessToken>().map(|f| f.0.clone());
    let query = if state.settings.jwt.allow_query_token { query_token(parts) } else { None };
    if let Some(token) = access_cookie.or(form).or(query) {
        return Ok(state.service.authenticate_access(token.as_bytes()).await?);
    }
    Err(ApiError::unauthenticated())
}

/// A request with a valid credential of Portcullis' own (a session, or an access token from
/// its own login): what the account API takes. An access token issued to an application
/// through the provider is refused here (401 `invalid_token`): it is for userinfo and the
/// services behind Portcullis, not for managing the person's account.
pub struct Auth(pub Authenticated);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let who = authenticate(parts, state).await?;
        if let Some(claims) = &who.access
            && !claims.client_id.is_empty()
            && claims.client_id != portcullis_core::jwt::FIRST_PARTY_CLIENT_ID
        {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token")
                .with_detail("this access token was issued to an application; it does not manage the account"));
        }
        Ok(Auth(who))
    }
}

/// A request with any valid credential, an application's access token included: forward-auth
/// and userinfo.
pub struct AnyAuth(pub Authenticated);

impl FromRequestParts<AppState> for AnyAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        authenticate(parts, state).await.map(AnyAuth)
    }
}

/// Whether `req` is a form post to an API route, whose `access_token` field (RFC 6750 §2.2)
/// [`with_form_access_token`] must put aside before the route reads the request. Login, the
/// token endpoints and the pages read their own forms.
pub fn carries_form_access_token(req: &Request) -> bool {
    let path = req.uri().path();
    let api = path.starts_with("/v1/") && path != "/v1/login" && !path.starts_with("/v1/token/");
    api && media_type(req.headers()).is_some_and(|m| m == "application/x-www-form-urlencoded")
}

/// Reads a form body, puts its `access_token` field aside for the authentication extractor,
/// and hands the request on with the body unchanged; a body over the limit is refused.
pub async fn with_form_access_token(req: Request) -> Result<Request, Response> {
    let (mut parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| too_large().into_response())?;
    if let Some((_, v)) = url::form_urlencoded::parse(&bytes).find(|(k, _)| k == "access_token") {
        parts.extensions.insert(FormAccessToken(v.into_owned()));
    }
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

fn too_large() -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
        .with_detail(format!("request bodies are limited to {MAX_BODY_BYTES} bytes"))
}

/// An authenticated request whose user has the `admin` role; 403 otherwise.
pub struct Admin(pub Authenticated);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Auth(who) = Auth::from_request_parts(parts, state).await?;
        if !who.is_admin() {
            return Err(ApiError::forbidden().with_detail("this needs the admin role"));
        }
        Ok(Admin(who))
    }
}

/// An answer that no cache may keep.
pub fn no_store(mut res: Response) -> Response {
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// A `200` JSON answer with `Cache-Control: no-store`. Serialised into one growable buffer (not
/// chunk by chunk into a `BytesMut` writer), with room reserved up front for the headers every
/// layer adds, so the header map is allocated once instead of growing while the answer leaves.
pub fn json_no_store<T: Serialize>(body: &T) -> Response {
    let mut buf = Vec::with_capacity(256);
    if let Err(e) = serde_json::to_writer(&mut buf, body) {
        tracing::error!(error = %e, "an answer could not be serialised");
        return ApiError::internal().into_response();
    }
    json_bytes_no_store(buf)
}

/// The `Content-Security-Policy` of every API answer.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// What every answer carries unless its route set its own (pages set their own policy), in the
/// order they are written; `X-Content-Type-Options: nosniff` follows and always wins. API
/// answers are data, never documents: nothing may load from them or frame them.
pub const API_SECURITY_HEADERS: [(header::HeaderName, &str); 3] = [
    (header::CONTENT_SECURITY_POLICY, API_CSP),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
];

/// A map of headers an answer starts from whole: `first`, every security header the edge would
/// add (so the edge adds none; it recognises such an answer by its `nosniff`, which nothing
/// else sets before the edge), then `last`. Built once per kind of answer and copied: on the
/// hottest routes, inserting headers one by one was a tenth of the request's instructions. The
/// edge may still add HSTS, after them.
fn prebuilt(first: &[(HeaderName, &'static str)], last: &[(HeaderName, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(first.len() + API_SECURITY_HEADERS.len() + 1 + last.len());
    let security = API_SECURITY_HEADERS.iter().chain([&(header::X_CONTENT_TYPE_OPTIONS, "nosniff")]);
    for (name, value) in first.iter().chain(security).chain(last) {
        h.insert(name.clone(), HeaderValue::from_static(value));
    }
    h
}

/// The headers of a JSON answer no cache may keep, with a `Content-Length` for the route to
/// fill in (so axum does not add one).
pub fn api_answer_headers() -> HeaderMap {
    static HEADERS: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(|| {
        prebuilt(
            &[(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")],
            &[(header::CONTENT_LENGTH, "0")],
        )
    });
    HEADERS.clone()
}

/// Forward auth's identity headers on a `200` from `GET /v1/verify`.
pub const X_USER: HeaderName = HeaderName::from_static("x-portcullis-user");
pub const X_EMAIL: HeaderName = HeaderName::from_static("x-portcullis-email");
pub const X_ROLES: HeaderName = HeaderName::from_static("x-portcullis-roles");

/// The headers of forward auth's `200` (no body, not to be stored), with the identity headers
/// for the route to fill in.
pub fn verified_headers() -> HeaderMap {
    static HEADERS: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(|| {
        prebuilt(
            &[(header::CACHE_CONTROL, "no-store")],
            &[(header::CONTENT_LENGTH, "0"), (X_USER, ""), (X_EMAIL, ""), (X_ROLES, "")],
        )
    });
    HEADERS.clone()
}

/// `Content-Length: len`. The lengths of most JSON answers come ready-made (a shared copy costs
/// a few instructions; `HeaderValue::from` formats and allocates, 0.25k of them); longer
/// ones are written out.
fn content_length(len: usize) -> HeaderValue {
    const READY: usize = 2048;
    static LENGTHS: std::sync::LazyLock<Vec<HeaderValue>> = std::sync::LazyLock::new(|| {
        // Every number's digits in one string that lives as long as the process (once, 7 KiB).
        let ends: Vec<usize> = (0..READY)
            .scan(0, |end, n| {
                *end += n.to_string().len();
                Some(*end)
            })
            .collect();
        let digits: &'static str = String::leak((0..READY).map(|n| n.to_string()).collect());
        let starts = std::iter::once(0).chain(ends.iter().copied());
        starts.zip(&ends).map(|(start, &end)| HeaderValue::from_static(&digits[start..end])).collect()
    });
    LENGTHS.get(len).cloned().unwrap_or_else(|| HeaderValue::from(len))
}

/// A `200` answer with `Cache-Control: no-store` whose body is JSON already. Its headers come
/// whole from [`api_answer_headers`], with its length in place.
pub fn json_bytes_no_store(json: Vec<u8>) -> Response {
    let mut headers = api_answer_headers();
    if let Some(length) = headers.get_mut(header::CONTENT_LENGTH) {
        *length = content_length(json.len());
    }
    let mut res = Response::new(axum::body::Body::from(json));
    *res.headers_mut() = headers;
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_made_lengths_are_the_written_out_ones() {
        for n in [0, 1, 9, 10, 99, 100, 236, 999, 1000, 2047, 2048, 2049, 1 << 20] {
            assert_eq!(content_length(n), HeaderValue::from(n), "{n}");
        }
        assert!((0..2048).all(|n| content_length(n).to_str().ok() == Some(n.to_string().as_str())));
    }
}
