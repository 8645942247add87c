//! axum integration: the [`Claims`] extractor and the [`VerifyLayer`] tower layer.
//!
//! Both read `Authorization: Bearer <token>` and answer a missing or invalid token with
//! `401`, `WWW-Authenticate: Bearer error="invalid_token"` and a problem+json body, as
//! Portcullis itself does.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::{FromRef, FromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderValue, Request, StatusCode, header};

use crate::{AccessClaims, Verifier, VerifyError};

/// Why a request was refused.
#[derive(Debug)]
pub struct Rejection {
    status: StatusCode,
    code: &'static str,
}

impl Rejection {
    fn unauthenticated(code: &'static str) -> Self {
        Self { status: StatusCode::UNAUTHORIZED, code }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "code": self.code,
        });
        let mut res = (self.status, body.to_string()).into_response();
        let h = res.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = if self.code == "invalid_token" { "Bearer error=\"invalid_token\"" } else { "Bearer" };
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        res
    }
}

fn bearer(headers: &http::HeaderMap) -> Result<&str, Rejection> {
    let value = headers.get(header::AUTHORIZATION).ok_or(Rejection::unauthenticated("unauthenticated"))?;
    let v = value.to_str().map_err(|_| Rejection::unauthenticated("invalid_token"))?;
    match v.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() => Ok(token),
        _ => Err(Rejection::unauthenticated("invalid_token")),
    }
}

async fn check(verifier: &Verifier, headers: &http::HeaderMap) -> Result<AccessClaims, Rejection> {
    let token = bearer(headers)?;
    verifier.verify(token).await.map_err(|e| match e {
        VerifyError::Invalid(reason) => {
            tracing::debug!(%reason, "token refused");
            Rejection::unauthenticated("invalid_token")
        }
        VerifyError::Revoked => Rejection::unauthenticated("invalid_token"),
        VerifyError::FeedLost => {
            tracing::warn!("the revocation feed is lost; refusing tokens");
            Rejection { status: StatusCode::SERVICE_UNAVAILABLE, code: "revocation_feed_lost" }
        }
        other => {
            tracing::warn!(error = %other, "cannot verify tokens");
            Rejection { status: StatusCode::SERVICE_UNAVAILABLE, code: "keys_unavailable" }
        }
    })
}

/// The verified claims of the request's bearer token. The state must give a [`Verifier`]
/// (`impl FromRef<S> for Verifier`); a request already checked by [`VerifyLayer`] is not
/// verified twice.
pub struct Claims(pub AccessClaims);

impl<S> FromRequestParts<S> for Claims
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(claims) = parts.extensions.get::<AccessClaims>() {
            return Ok(Claims(claims.clone()));
        }
        let verifier = Verifier::from_ref(state);
        check(&verifier, &parts.headers).await.map(Claims)
    }
}

/// A tower layer that lets through only requests with a valid bearer token (optionally with a
/// role), and puts the [`AccessClaims`] in the request's extensions.
#[derive(Clone)]
pub struct VerifyLayer {
    verifier: Verifier,
    role: Option<String>,
}

impl VerifyLayer {
    pub fn new(verifier: Verifier) -> Self {
        Self { verifier, role: None }
    }

    /// Also require this role (`403` without it).
    pub fn require_role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }
}

impl<S> tower_layer::Layer<S> for VerifyLayer {
    type Service = VerifyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        VerifyService { inner, verifier: self.verifier.clone(), role: self.role.clone() }
    }
}

#[derive(Clone)]
pub struct VerifyService<S> {
    inner: S,
    verifier: Verifier,
    role: Option<String>,
}

impl<S, B> tower_service::Service<Request<B>> for VerifyService<S>
where
    S: tower_service::Service<Request<B>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // The clone that was polled ready does the work; a fresh clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        let role = self.role.clone();
        Box::pin(async move {
            let claims = match check(&verifier, req.headers()).await {
                Ok(c) => c,
                Err(rejection) => return Ok(rejection.into_response()),
            };
            if let Some(role) = role
                && !claims.has_role(&role)
            {
                return Ok(Rejection { status: StatusCode::FORBIDDEN, code: "forbidden" }.into_response());
            }
            req.extensions_mut().insert(claims);
            inner.call(req).await
        })
    }
}
