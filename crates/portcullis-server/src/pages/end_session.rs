//! RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0) at `/oauth2/logout`: an
//! application sends the person here to sign out of Portcullis, and gets them back at one of
//! its registered post-logout redirect URIs.
//!
//! A request whose `id_token_hint` names the person's current browser session signs it out at
//! once. Anything else (no hint, or a hint for another session) asks the person first, with a
//! form carrying the session's CSRF token: a page elsewhere cannot sign people out. A
//! `post_logout_redirect_uri` that is not registered for the client is refused with a page,
//! never followed, so this is not an open redirect.

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::html;
use serde::{Deserialize, Serialize};

use super::layout::{PageError, PageResult, layout, render};
use super::session::signed_in;
use crate::cookies::CookieKind;
use crate::error::ApiError;
use crate::http::{Client, LimitedBody};
use crate::oauth::END_SESSION_PATH;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route(END_SESSION_PATH, get(end_session_get).post(end_session_post))
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct EndSessionParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id_token_hint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    post_logout_redirect_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    logout_hint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ui_locales: Option<String>,
}

#[derive(Deserialize)]
struct EndSessionForm {
    #[serde(flatten)]
    params: EndSessionParams,
    csrf: Option<String>,
}

fn refused(code: &'static str, detail: &str) -> PageError {
    PageError::Error(ApiError::bad_request(code, format!("{detail} The sign-out request cannot be followed.")))
}

async fn end_session_get(
    State(state): State<AppState>,
    Client(from): Client,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> PageResult {
    let params: EndSessionParams = serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
        .map_err(|_| refused("invalid_request", "The request is malformed or repeats a parameter."))?;
    end_session(&state, from, &headers, params, None).await
}

async fn end_session_post(
    State(state): State<AppState>,
    Client(from): Client,
    headers: HeaderMap,
    LimitedBody(body): LimitedBody,
) -> PageResult {
    let form: EndSessionForm = serde_urlencoded::from_bytes(&body)
        .map_err(|_| refused("invalid_request", "The request is malformed or repeats a parameter."))?;
    end_session(&state, from, &headers, form.params, form.csrf).await
}

async fn end_session(
    state: &AppState,
    from: portcullis_core::ClientInfo,
    headers: &HeaderMap,
    params: EndSessionParams,
    csrf: Option<String>,
) -> PageResult {
    let hint = match params.id_token_hint.as_deref().filter(|h| !h.is_empty()) {
        Some(h) => Some(
            state
                .service
                .check_id_token_hint(h)
                .ok_or_else(|| refused("invalid_id_token_hint", "The id_token_hint is not an ID token from here."))?,
        ),
        None => None,
    };
    let client_id = match (hint.as_ref().map(|h| h.client_id.as_str()), params.client_id.as_deref()) {
        (Some(a), Some(b)) if a != b => {
            return Err(refused("invalid_request", "client_id is not the audience of the id_token_hint."));
        }
        (a, b) => a.or(b),
    };
    let client = match client_id.and_then(portcullis_core::ClientId::parse) {
        Some(id) => state
            .service
            .clients
            .client(&id)
            .await
            .map_err(|e| PageError::from(ApiError::from(portcullis_service::AuthError::from(e))))?,
        None => None,
    };
    if client_id.is_some() && client.is_none() {
        return Err(refused("invalid_client", "The application is not registered."));
    }
    let back = match (&params.post_logout_redirect_uri, &client) {
        (None, _) => None,
        (Some(uri), Some(c)) if c.post_logout_redirect_uris.iter().any(|r| r == uri) => Some(uri.clone()),
        (Some(_), _) => {
            return Err(refused(
                "invalid_post_logout_redirect_uri",
                "The post-logout redirect URI is not registered for this application.",
            ));
        }
    };
    let mut cleared = false;
    if let Some(who) = signed_in(state, headers).await? {
        let hinted = hint.as_ref().is_some_and(|h| h.sid == who.session_id.as_str() && h.sub == who.user_id.as_str());
        let confirmed = csrf.is_some_and(|c| state.csrf.verify(&who.session_id, &c));
        if !hinted && !confirmed {
            let name = client.as_ref().map(|c| c.name.as_str());
            let origin = back.as_deref().and_then(super::layout::origin_of);
            return Ok(confirm_page(state, &who, name, &params, origin.as_deref()));
        }
        state.service.logout(&who, &from).await?;
        cleared = true;
    }
    let mut res = match back {
        Some(uri) => {
            let mut url = url::Url::parse(&uri).map_err(|_| refused("invalid_request", "Bad redirect URI."))?;
            if let Some(s) = &params.state {
                url.query_pairs_mut().append_pair("state", s);
            }
            Redirect::to(url.as_str()).into_response()
        }
        None => {
            let body =
                html! { section.card.narrow { h1 { "You are signed out" } p { a href="/login" { "Sign in again" } } } };
            render(state, StatusCode::OK, layout("Signed out", None, None, body))
        }
    };
    if cleared {
        for kind in [CookieKind::Session, CookieKind::Access, CookieKind::Refresh] {
            res.headers_mut().append(header::SET_COOKIE, state.cookies.clear(kind));
        }
    }
    res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

fn confirm_page(
    state: &AppState,
    who: &portcullis_service::Authenticated,
    application: Option<&str>,
    params: &EndSessionParams,
    back: Option<&str>,
) -> Response {
    let csrf = state.csrf.token(&who.session_id);
    let fields = super::layout::form_fields(params);
    let body = html! {
        section.card.narrow {
            h1 { "Sign out?" }
            p {
                @if let Some(app) = application { (app) " asks to sign you out of Portcullis" } @else { "Sign out of Portcullis" }
                " (" strong { (who.email.as_str()) } ")?"
            }
            form method="post" action=(END_SESSION_PATH) {
                @for (k, v) in &fields { input type="hidden" name=(k) value=(v); }
                input type="hidden" name="csrf" value=(csrf);
                button type="submit" { "Sign out" }
            }
        }
    };
    super::layout::render_posting_to(state, StatusCode::OK, layout("Sign out", Some(who), None, body), back)
}
