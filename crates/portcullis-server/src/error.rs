//! Every error leaves the server as `application/problem+json` (RFC 9457) with a stable `code`.
//!
//! Handlers return [`ApiError`]; [`as_problem`] (in the edge layer) turns any other error
//! response (unknown route, wrong method, body too large, timeout, panic) into the same shape,
//! so no client ever has to parse two kinds of error.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use portcullis_core::{EmailError, PasswordError};
use portcullis_store::StoreError;
use serde::Serialize;

pub const PROBLEM_JSON: &str = "application/problem+json";

/// The `WWW-Authenticate` challenge on a 401 without a usable credential.
pub const WWW_AUTHENTICATE: &str = "Bearer realm=\"portcullis\"";

/// The challenge to a client refused after it authenticated with HTTP Basic.
pub const WWW_AUTHENTICATE_BASIC: &str = r#"Basic realm="portcullis""#;

/// The challenge on every refused access token (RFC 6750 §3.1): one answer whatever the reason.
pub const WWW_AUTHENTICATE_INVALID_TOKEN: &str = "Bearer realm=\"portcullis\", error=\"invalid_token\"";

/// An error answer: status, stable code, and an optional human-readable detail.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: Option<String>,
    pub retry_after: Option<u64>,
    /// On the OAuth endpoints: the RFC 6749 §5.2 `error`, written beside the problem fields.
    pub oauth_error: Option<&'static str>,
    /// A 401 to a client that authenticated with HTTP Basic challenges it with Basic (RFC 6749
    /// §5.2), not with a bearer token's challenge.
    pub basic_challenge: bool,
    /// Members written beside the problem's own (`mfa_required`'s `mfa_token` and `methods`).
    pub extra: Option<Box<serde_json::Map<String, serde_json::Value>>>,
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'a str,
    status: u16,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_description: Option<&'a str>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    extra: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str) -> Self {
        Self { status, code, detail: None, retry_after: None, oauth_error: None, basic_challenge: false, extra: None }
    }

    /// The same error as an OAuth endpoint answers it (RFC 6749 §5.2): `error` and
    /// `error_description` beside the problem fields, so OAuth client libraries read it too.
    pub fn oauth(mut self) -> Self {
        self.oauth_error = Some(match self.code {
            "invalid_refresh_token" | "refresh_reused" => "invalid_grant",
            "unsupported_grant_type" => "unsupported_grant_type",
            _ if self.status == StatusCode::SERVICE_UNAVAILABLE || self.status == StatusCode::TOO_MANY_REQUESTS => {
                "temporarily_unavailable"
            }
            _ if self.status.is_server_error() => "server_error",
            _ if self.status == StatusCode::UNAUTHORIZED => "invalid_grant",
            _ => "invalid_request",
        });
        self
    }

    /// A client that authenticated with HTTP Basic is challenged with Basic.
    pub fn basic_challenge(mut self) -> Self {
        self.basic_challenge = true;
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// A `401` that carries a sign-in's ticket (`mfa_token`) and `methods`.
    fn challenge(code: &'static str, detail: &'static str, challenge: portcullis_service::MfaChallenge) -> Self {
        let mut extra = serde_json::Map::new();
        extra.insert("mfa_token".into(), challenge.token.into());
        extra.insert("methods".into(), challenge.methods.into());
        let mut err = Self::new(StatusCode::UNAUTHORIZED, code).with_detail(detail);
        err.extra = Some(Box::new(extra));
        err
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code).with_detail(detail)
    }

    pub fn unauthenticated() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated")
    }

    pub fn invalid_credentials() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_credentials")
    }

    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden")
    }

    pub fn store_unavailable() -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
        e.retry_after = Some(1);
        e
    }

    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = Problem {
            kind: "about:blank",
            title,
            status: self.status.as_u16(),
            code: self.code,
            detail: self.detail.as_deref(),
            error: self.oauth_error,
            error_description: self.oauth_error.map(|_| self.detail.as_deref().unwrap_or(title)),
            extra: self.extra.as_deref(),
        };
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut res = (self.status, json).into_response();
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.oauth_error.is_some() {
            h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = if self.basic_challenge {
                WWW_AUTHENTICATE_BASIC
            } else if self.code == "invalid_token" {
                WWW_AUTHENTICATE_INVALID_TOKEN
            } else {
                WWW_AUTHENTICATE
            };
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::EmailTaken => Self::new(StatusCode::CONFLICT, "email_taken"),
            other => {
                tracing::error!(error = %other, "store error");
                Self::store_unavailable()
            }
        }
    }
}

impl From<EmailError> for ApiError {
    fn from(e: EmailError) -> Self {
        Self::bad_request("invalid_email", e.to_string())
    }
}

impl From<PasswordError> for ApiError {
    fn from(e: PasswordError) -> Self {
        match e {
            PasswordError::TooShort | PasswordError::TooLong => Self::bad_request("invalid_password", e.to_string()),
            PasswordError::Busy => {
                let mut err = Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded").with_detail(e.to_string());
                err.retry_after = Some(1);
                err
            }
            PasswordError::Internal => {
                tracing::error!("password hashing failed");
                Self::internal()
            }
        }
    }
}

fn code_for_status(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthenticated",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal_error",
        _ => "error",
    }
}

fn is_problem(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()))
}

/// A page for people (they get HTML error pages, not problem+json).
fn is_page(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/html"))
}

/// Rewrites any error response that is not problem+json (or a page) yet (from the router, a tower layer or
/// an extractor we do not own) into one, keeping its status and headers such as `Allow`.
pub fn as_problem(res: Response) -> Response {
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) || is_problem(res.headers()) || is_page(res.headers()) {
        return res;
    }
    let (parts, _) = res.into_parts();
    let mut fresh = ApiError::new(status, code_for_status(status)).into_response();
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = parts.headers.get(&name) {
            fresh.headers_mut().insert(name, v.clone());
        }
    }
    fresh
}

/// The answer to a handler that panicked: a bare 500 that says nothing of the cause.
pub fn panic_response() -> Response<Body> {
    tracing::error!("a request handler panicked");
    ApiError::internal().into_response()
}

impl From<portcullis_service::AuthError> for ApiError {
    fn from(e: portcullis_service::AuthError) -> Self {
        use portcullis_service::AuthError as E;
        match e {
            E::InvalidCredentials => Self::invalid_credentials(),
            E::Unauthenticated => Self::unauthenticated(),
            E::InvalidToken => Self::new(StatusCode::UNAUTHORIZED, "invalid_token"),
            E::WrongPassword => {
                Self::new(StatusCode::FORBIDDEN, "wrong_password").with_detail("the current password is wrong")
            }
            E::Email(e) => e.into(),
            E::Password(e) => e.into(),
            E::Role(e) => Self::bad_request("invalid_role", e.to_string()),
            E::SessionNotFound => Self::new(StatusCode::NOT_FOUND, "session_not_found"),
            E::UserNotFound => Self::new(StatusCode::NOT_FOUND, "user_not_found"),
            E::ClientNotFound => Self::new(StatusCode::NOT_FOUND, "client_not_found"),
            E::InvalidClientName => Self::bad_request("invalid_client_name", e.to_string()),
            E::InvalidClient(_) => Self::bad_request("invalid_client_metadata", e.to_string()),
            E::PublicClient => Self::new(StatusCode::CONFLICT, "public_client").with_detail(e.to_string()),
            E::SelfLockout => Self::new(StatusCode::CONFLICT, "self_lockout").with_detail(e.to_string()),
            E::Throttled { retry_after } => {
                let mut err = Self::new(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts").with_detail(e.to_string());
                err.retry_after = Some(retry_after.as_secs());
                err
            }
            E::MfaRequired(challenge) => Self::challenge(
                "mfa_required",
                "the password is right; a second factor is required (POST /v1/login/mfa)",
                *challenge,
            ),
            E::MfaEnrolmentRequired(challenge) => Self::challenge(
                "mfa_enrolment_required",
                "the password is right; your role requires a second factor: set one up to finish signing in \
                 (POST /v1/login/mfa/enrol/totp or /v1/login/mfa/enrol/webauthn)",
                *challenge,
            ),
            E::InvalidMfaToken => Self::new(StatusCode::UNAUTHORIZED, "invalid_mfa_token").with_detail(e.to_string()),
            E::WrongCode => Self::new(StatusCode::UNAUTHORIZED, "invalid_code").with_detail(e.to_string()),
            E::ReauthenticationRequired => {
                Self::new(StatusCode::FORBIDDEN, "reauthentication_required").with_detail(e.to_string())
            }
            E::MfaUnavailable => Self::new(StatusCode::CONFLICT, "mfa_unavailable").with_detail(e.to_string()),
            E::TotpExists => Self::new(StatusCode::CONFLICT, "totp_exists").with_detail(e.to_string()),
            E::NoPendingTotp => Self::new(StatusCode::CONFLICT, "no_pending_totp").with_detail(e.to_string()),
            E::NoFactor => Self::new(StatusCode::CONFLICT, "no_factor").with_detail(e.to_string()),
            E::InvalidResetToken => Self::bad_request("invalid_reset_token", e.to_string()),
            E::EmailNotVerified => Self::new(StatusCode::FORBIDDEN, "email_not_verified").with_detail(e.to_string()),
            E::InvalidVerificationToken => Self::bad_request("invalid_verification_token", e.to_string()),
            E::PasskeysUnavailable => {
                Self::new(StatusCode::CONFLICT, "passkeys_unavailable").with_detail(e.to_string())
            }
            E::InvalidCeremony => Self::bad_request("invalid_webauthn_state", e.to_string()),
            E::PasskeyRefused => Self::new(StatusCode::UNAUTHORIZED, "passkey_refused").with_detail(e.to_string()),
            E::PasskeyExists => Self::new(StatusCode::CONFLICT, "passkey_exists").with_detail(e.to_string()),
            E::PasskeyNotFound => Self::new(StatusCode::NOT_FOUND, "passkey_not_found").with_detail(e.to_string()),
            E::InvalidPasskeyName => Self::bad_request("invalid_passkey_name", e.to_string()),
            E::Store(e) => e.into(),
            E::Internal(_) => Self::internal(),
        }
    }
}

impl From<portcullis_service::RefreshError> for ApiError {
    fn from(e: portcullis_service::RefreshError) -> Self {
        use portcullis_service::RefreshError as E;
        match e {
            E::Invalid => Self::new(StatusCode::UNAUTHORIZED, "invalid_refresh_token"),
            E::Reused => Self::new(StatusCode::UNAUTHORIZED, "refresh_reused").with_detail(e.to_string()),
            E::Auth(e) => e.into(),
        }
    }
}

/// An error of the provider's client endpoints: its OAuth `error` is the problem's `code` too.
impl From<portcullis_service::OAuthError> for ApiError {
    fn from(e: portcullis_service::OAuthError) -> Self {
        let status = match e.error {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            "temporarily_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        let mut err = Self::new(status, e.error).with_detail(e.description);
        err.oauth_error = Some(e.error);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            err.retry_after = Some(1);
        }
        err
    }
}
