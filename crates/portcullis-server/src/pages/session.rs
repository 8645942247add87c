//! Who is signed in on a page: the session cookie checked, the detour to the sign-in page, the
//! CSRF check of a form post, and signing out.

use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use portcullis_service::{AuthError, Authenticated};

use super::layout::PageError;
use crate::cookies::CookieKind;
use crate::state::AppState;

/// The signed-in person, if the session cookie names a live session.
pub async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<Option<Authenticated>, PageError> {
    let Some(token) = state.cookies.session(headers) else { return Ok(None) };
    match state.service.authenticate(&token).await {
        Ok(who) => Ok(Some(who)),
        Err(AuthError::Unauthenticated) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// To the sign-in page, coming back to `path` afterwards.
pub fn to_login(path: &str) -> Response {
    let q: String = url::form_urlencoded::Serializer::new(String::new()).append_pair("return_to", path).finish();
    Redirect::to(&format!("/login?{q}")).into_response()
}

/// The signed-in person, or a detour to the sign-in page.
pub async fn require_person(state: &AppState, headers: &HeaderMap, path: &str) -> Result<Authenticated, PageError> {
    signed_in(state, headers).await?.ok_or_else(|| PageError::Detour(to_login(path)))
}

/// The signed-in person behind a form post, with a valid CSRF token.
pub async fn form_person(state: &AppState, headers: &HeaderMap, csrf: &str) -> Result<Authenticated, PageError> {
    let who = require_person(state, headers, "/account").await?;
    if !state.csrf.verify(&who.session_id, csrf) {
        return Err(PageError::FormExpired);
    }
    Ok(who)
}

/// To the sign-in page with every credential cookie cleared.
pub fn signed_out(state: &AppState) -> Response {
    let mut res = Redirect::to("/login").into_response();
    for kind in [CookieKind::Session, CookieKind::Access, CookieKind::Refresh] {
        res.headers_mut().append(header::SET_COOKIE, state.cookies.clear(kind));
    }
    res
}
