//! The provider's authorization endpoint (`/oauth2/authorize`): an application sends a person
//! here to sign in. It uses Portcullis' own sign-in page and session cookie, asks a third-party
//! application's person for consent, and sends the person back to the application with a code
//! or an error.
//!
//! Where the error goes follows RFC 6749 §4.1.2.1: an unknown client or a redirect URI that is
//! not the client's own is shown here as a page and never redirected (it would make Portcullis
//! an open redirect); every other error goes back to the application's redirect URI.

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::html;
use portcullis_service::{Authorization, AuthorizePageError, AuthorizeParams, AuthorizeTarget, OAuthError};
use serde::Deserialize;

use super::layout::{PageError, PageResult, layout};
use super::session::signed_in;
use crate::error::ApiError;
use crate::http::LimitedBody;
use crate::oauth::AUTHORIZE_PATH;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route(AUTHORIZE_PATH, get(authorize_get).post(authorize_post))
}

fn malformed() -> PageError {
    PageError::Error(
        ApiError::bad_request("invalid_request", "The sign-in request is malformed or repeats a parameter.")
            .with_detail(
                "The sign-in request is malformed or repeats a parameter. Go back to the application and try again.",
            ),
    )
}

/// `GET /oauth2/authorize`: the request in the query.
async fn authorize_get(State(state): State<AppState>, headers: HeaderMap, RawQuery(query): RawQuery) -> PageResult {
    let params: AuthorizeParams =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).map_err(|_| malformed())?;
    authorize(&state, &headers, params, None).await
}

/// What the consent page posts back, besides the request itself.
#[derive(Deserialize)]
struct ConsentForm {
    #[serde(flatten)]
    params: AuthorizeParams,
    decision: Option<String>,
    csrf: Option<String>,
}

/// `POST /oauth2/authorize`: a request sent as a form (OpenID Connect Core §3.1.2.1), or the
/// consent page's answer.
async fn authorize_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> PageResult {
    let form: ConsentForm = serde_urlencoded::from_bytes(&body).map_err(|_| malformed())?;
    let decision = match (form.decision, form.csrf) {
        (Some(decision), Some(csrf)) => Some((decision, csrf)),
        (None, None) => None,
        _ => return Err(malformed()),
    };
    authorize(&state, &headers, form.params, decision).await
}

fn page_error(e: AuthorizePageError) -> PageError {
    let code = match e {
        AuthorizePageError::Unavailable => {
            return PageError::Busy(ApiError::store_unavailable().with_detail("Try again in a moment."));
        }
        AuthorizePageError::MissingClient | AuthorizePageError::UnknownClient => "invalid_client",
        AuthorizePageError::BadRedirectUri => "invalid_redirect_uri",
    };
    PageError::Error(ApiError::bad_request(
        code,
        format!("{}. The application cannot be signed in to.", super::layout::capitalise(&e.to_string())),
    ))
}

/// Back to the application: `redirect_uri` with `pairs`, its `state` and our `iss` (RFC 9207)
/// added to whatever query it has.
fn to_client(state: &AppState, target: &AuthorizeTarget, pairs: &[(&str, &str)]) -> Response {
    let mut url = match url::Url::parse(&target.redirect_uri) {
        Ok(url) => url,
        // Registered URIs are checked when they are registered; this is a guard, not a path.
        Err(_) => return malformed().into_response(),
    };
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
        if let Some(s) = &target.state {
            q.append_pair("state", s);
        }
        q.append_pair("iss", &state.service.tokens.expect.issuer);
    }
    let mut res = Redirect::to(url.as_str()).into_response();
    res.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    res
}

fn error_to_client(state: &AppState, target: &AuthorizeTarget, e: &OAuthError) -> Response {
    to_client(state, target, &[("error", e.error), ("error_description", &e.description)])
}

async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    params: AuthorizeParams,
    decision: Option<(String, String)>,
) -> PageResult {
    let target = state.service.authorize_target(&params).await.map_err(page_error)?;
    let request = match state.service.check_authorize(target.clone(), &params) {
        Ok(r) => r,
        Err(e) => return Ok(error_to_client(state, &target, &e)),
    };
    let who = signed_in(state, headers).await?;
    let mut consented = false;
    if let (Some((decision, csrf)), Some(who)) = (&decision, &who) {
        if !state.csrf.verify(&who.session_id, csrf) {
            return Err(PageError::FormExpired);
        }
        match decision.as_str() {
            "allow" => consented = true,
            "deny" => {
                let e = OAuthError::new("access_denied", "the person did not allow this application");
                return Ok(error_to_client(state, &target, &e));
            }
            _ => return Err(malformed()),
        }
    }
    match state.service.authorize(&request, who.as_ref(), consented).await {
        Ok(Authorization::Code(code)) => Ok(to_client(state, &target, &[("code", &code)])),
        Ok(Authorization::SignIn { fresh_after }) => {
            let again = AuthorizeParams { fresh_after: Some(fresh_after), ..params };
            let back = format!("{AUTHORIZE_PATH}?{}", serde_urlencoded::to_string(&again).unwrap_or_default());
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            q.append_pair("return_to", &back);
            if who.is_some() {
                q.append_pair("reauth", "1");
            }
            if let Some(hint) = &request.login_hint {
                q.append_pair("login_hint", hint);
            }
            Ok(Redirect::to(&format!("/login?{}", q.finish())).into_response())
        }
        Ok(Authorization::Consent) => {
            let Some(who) = who else { return Err(malformed()) };
            Ok(consent_page(state, &who, &target, &request.scope, &params))
        }
        Err(e) => Ok(error_to_client(state, &target, &e)),
    }
}

/// What a scope lets the application do, in words.
fn scope_words(scope: &str) -> &'static str {
    match scope {
        "openid" => "Know who you are (your account id)",
        "profile" => "See your user name",
        "email" => "See your email address",
        "offline_access" => "Stay signed in while you are away",
        "roles" => "See your roles",
        _ => "",
    }
}

fn consent_page(
    state: &AppState,
    who: &portcullis_service::Authenticated,
    target: &AuthorizeTarget,
    scope: &str,
    params: &AuthorizeParams,
) -> Response {
    let csrf = state.csrf.token(&who.session_id);
    let fields = super::layout::form_fields(params);
    let body = html! {
        section.card.narrow {
            h1 { "Allow " (target.client.name) "?" }
            p { (target.client.name) " asks to use your account " strong { (who.email.as_str()) } ":" }
            ul { @for s in scope.split(' ').filter(|s| !s.is_empty()) { li { (scope_words(s)) } } }
            form method="post" action=(AUTHORIZE_PATH) {
                @for (k, v) in &fields { input type="hidden" name=(k) value=(v); }
                input type="hidden" name="csrf" value=(csrf);
                button type="submit" name="decision" value="allow" { "Allow" }
                " "
                button.secondary type="submit" name="decision" value="deny" { "Deny" }
            }
        }
    };
    let origin = super::layout::origin_of(&target.redirect_uri);
    super::layout::render_posting_to(
        state,
        StatusCode::OK,
        layout("Allow access", Some(who), None, body),
        origin.as_deref(),
    )
}
