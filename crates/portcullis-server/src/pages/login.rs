//! Signing in and creating an account.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::{Markup, html};
use portcullis_service::{AuthError, Creator};
use serde::Deserialize;

use super::layout::{PageError, PageResult, capitalise, layout, origin_of, render, render_posting_to};
use super::session::signed_in;
use crate::error::ApiError;
use crate::http::{Client, JsonOrForm};
use crate::state::AppState;

/// The sign-in and registration pages.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_page).post(login_submit))
        .route("/register", get(register_page).post(register_submit))
}

#[derive(Deserialize, Default)]
struct LoginQuery {
    return_to: Option<String>,
    /// The provider asks for a fresh sign-in (`prompt=login`, `max_age`): show the form even to
    /// someone signed in.
    reauth: Option<String>,
    /// The email an application suggested (`login_hint`).
    login_hint: Option<String>,
}

#[derive(Deserialize)]
struct LoginForm {
    email: String,
    password: String,
    #[serde(default)]
    return_to: Option<String>,
}

fn login_form(return_to: Option<&str>, email: &str, message: Option<&str>, app: Option<&str>) -> Markup {
    html! {
        section.card.narrow {
            h1 { "Sign in" }
            @if let Some(app) = app { p.app { "to continue to " strong { (app) } } }
            @if let Some(m) = message { p.error role="alert" { (m) } }
            form method="post" action="/login" {
                @if let Some(r) = return_to { input type="hidden" name="return_to" value=(r); }
                label { "Email" input type="email" name="email" value=(email) autocomplete="username" required autofocus[email.is_empty()]; }
                label { "Password" input type="password" name="password" autocomplete="current-password" required autofocus[!email.is_empty()]; }
                button type="submit" { "Sign in" }
            }
        }
    }
}

async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<LoginQuery>, axum::extract::rejection::QueryRejection>,
) -> PageResult {
    let query = query.map(|q| q.0).unwrap_or_default();
    let return_to = query.return_to.as_deref().and_then(|r| state.return_to.check(r));
    if query.reauth.is_none() && signed_in(&state, &headers).await?.is_some() {
        return Ok(Redirect::to(return_to.as_deref().unwrap_or("/account")).into_response());
    }
    let hint = query.login_hint.as_deref().unwrap_or("");
    Ok(sign_in_page(&state, return_to.as_deref(), hint, None).await)
}

/// The sign-in form, naming the application the sign-in is for (if any) and letting its answer
/// go on to that application's registered redirect URI.
async fn sign_in_page(state: &AppState, return_to: Option<&str>, email: &str, message: Option<&str>) -> Response {
    let app = application(state, return_to).await;
    let (name, origin) = (app.as_ref().map(|a| a.0.as_str()), app.as_ref().and_then(|a| a.1.as_deref()));
    let body = html! {
        (login_form(return_to, email, message, name))
        @if message.is_none() && state.settings.registration {
            p.center { "New here? " a href="/register" { "Create an account" } }
        }
    };
    render_posting_to(state, StatusCode::OK, layout("Sign in", None, None, body), origin)
}

/// The application a sign-in is for, when it comes back to the provider's authorization
/// endpoint: its name, and the origin of the (registered) redirect URI the browser will be sent
/// to afterwards.
async fn application(state: &AppState, return_to: Option<&str>) -> Option<(String, Option<String>)> {
    let query = return_to?.strip_prefix(crate::oauth::AUTHORIZE_PATH)?.strip_prefix('?')?;
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let find = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let id = portcullis_core::ClientId::parse(find("client_id")?)?;
    let client = state.service.clients.client(&id).await.ok()??;
    let origin = find("redirect_uri").filter(|r| client.redirect_uris.iter().any(|u| u == r)).and_then(origin_of);
    Some((client.name, origin))
}

async fn login_submit(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonOrForm(form): JsonOrForm<LoginForm>,
) -> PageResult {
    let return_to = form.return_to.as_deref().and_then(|r| state.return_to.check(r));
    let previous = state.cookies.session(&headers);
    match state.service.login(&form.email, form.password, client, previous.as_ref()).await {
        Ok(login) => {
            let mut res = Redirect::to(return_to.as_deref().unwrap_or("/account")).into_response();
            let cookie = state.cookies.set_session(&login.token, state.settings.session.absolute_timeout);
            res.headers_mut().insert(header::SET_COOKIE, cookie);
            res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(res)
        }
        Err(AuthError::InvalidCredentials) => {
            let message = Some("Invalid email or password.");
            Ok(sign_in_page(&state, return_to.as_deref(), &form.email, message).await)
        }
        Err(AuthError::Throttled { retry_after }) => {
            let message = format!("Too many failed attempts. Try again in {} seconds.", retry_after.as_secs());
            let body = login_form(return_to.as_deref(), &form.email, Some(&message), None);
            let mut res = render(&state, StatusCode::TOO_MANY_REQUESTS, layout("Sign in", None, None, body));
            res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs()));
            Ok(res)
        }
        Err(e) => Err(e.into()),
    }
}

fn register_form(email: &str, message: Option<&str>) -> Markup {
    html! {
        section.card.narrow {
            h1 { "Create an account" }
            @if let Some(m) = message { p.error role="alert" { (m) } }
            form method="post" action="/register" {
                label { "Email" input type="email" name="email" value=(email) autocomplete="username" required autofocus; }
                label {
                    "Password"
                    input type="password" name="password" autocomplete="new-password" minlength="8" required;
                    small { "At least 8 characters; a passphrase of several words is best." }
                }
                button type="submit" { "Create account" }
            }
            p.center { "Already registered? " a href="/login" { "Sign in" } }
        }
    }
}

fn registration_closed() -> PageError {
    PageError::Error(
        ApiError::new(StatusCode::NOT_FOUND, "registration_closed")
            .with_detail("Registration is closed. Ask an administrator for an account."),
    )
}

async fn register_page(State(state): State<AppState>) -> PageResult {
    if !state.settings.registration {
        return Err(registration_closed());
    }
    Ok(render(&state, StatusCode::OK, layout("Create an account", None, None, register_form("", None))))
}

#[derive(Deserialize)]
struct RegisterForm {
    email: String,
    password: String,
}

async fn register_submit(
    State(state): State<AppState>,
    Client(client): Client,
    JsonOrForm(form): JsonOrForm<RegisterForm>,
) -> PageResult {
    if !state.settings.registration {
        return Err(registration_closed());
    }
    let by = Creator::Registration("registration page");
    match state.service.create_account(&form.email, form.password.clone(), &[], by, &client).await {
        Ok(_) => {}
        Err(
            e @ (AuthError::Email(_)
            | AuthError::Password(_)
            | AuthError::Store(portcullis_store::StoreError::EmailTaken)),
        ) => {
            let message = match e {
                AuthError::Store(_) => "That email address is already registered.".to_owned(),
                other => format!("{}.", capitalise(&other.to_string())),
            };
            let body = register_form(&form.email, Some(&message));
            return Ok(render(&state, StatusCode::OK, layout("Create an account", None, None, body)));
        }
        Err(e) => return Err(e.into()),
    }
    let login = state.service.login(&form.email, form.password, client, None).await?;
    let mut res = Redirect::to("/account").into_response();
    let cookie = state.cookies.set_session(&login.token, state.settings.session.absolute_timeout);
    res.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(res)
}
