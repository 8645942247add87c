//! A web application that signs people in through Portcullis with OpenID Connect, as any
//! application would: discovery, the authorization code flow with PKCE, the ID token verified
//! by the `openidconnect` crate, a session of its own in a cookie, and sign-out through
//! Portcullis' RP-initiated logout (`end_session_endpoint`, with the ID token as the hint).
//!
//! It keeps its sessions in memory; it is an example, not a framework.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use maud::html;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl,
    Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};

/// The name of the application's own session cookie.
pub const COOKIE: &str = "oidc_app_session";

/// What the application is told at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Portcullis' `public_url`.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// Where this application is reached (`{public_url}/callback` is its redirect URI, and
    /// `{public_url}/` its post-logout redirect URI).
    pub public_url: String,
}

type Client =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

/// A person signed in here.
#[derive(Clone)]
struct Person {
    email: String,
    id_token: String,
}

struct Inner {
    config: Config,
    client: Client,
    http: reqwest::Client,
    end_session: Option<String>,
    /// Sign-ins under way, by `state`: the PKCE verifier and the nonce.
    pending: Mutex<HashMap<String, (PkceCodeVerifier, Nonce)>>,
    sessions: Mutex<HashMap<String, Person>>,
}

#[derive(Clone)]
pub struct App(Arc<Inner>);

/// Discovers the provider and builds the application's routes.
pub async fn app(config: Config) -> Result<Router, String> {
    let http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().map_err(|e| e.to_string())?;
    let issuer = IssuerUrl::new(config.issuer.clone()).map_err(|e| e.to_string())?;
    let metadata = CoreProviderMetadata::discover_async(issuer, &http).await.map_err(|e| format!("discovery: {e}"))?;
    // RP-initiated logout is not in the core metadata: read it from the document itself.
    let document: serde_json::Value = http
        .get(format!("{}/.well-known/openid-configuration", config.issuer.trim_end_matches('/')))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let end_session = document["end_session_endpoint"].as_str().map(str::to_owned);
    let redirect = RedirectUrl::new(format!("{}/callback", config.public_url)).map_err(|e| e.to_string())?;
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(config.client_id.clone()),
        Some(ClientSecret::new(config.client_secret.clone())),
    )
    .set_redirect_uri(redirect);
    let state = App(Arc::new(Inner {
        config,
        client,
        http,
        end_session,
        pending: Mutex::default(),
        sessions: Mutex::default(),
    }));
    Ok(Router::new()
        .route("/", get(home))
        .route("/login", get(login))
        .route("/callback", get(callback))
        .route("/logout", get(logout))
        .with_state(state))
}

fn page(title: &str, body: maud::Markup) -> Response {
    let doc = html! {
        (maud::DOCTYPE)
        html lang="en" { head { meta charset="utf-8"; title { (title) } } body { main { (body) } } }
    };
    Html(doc.into_string()).into_response()
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (name, value) = c.trim().split_once('=')?;
        (name == COOKIE).then(|| value.to_owned())
    })
}

fn person(app: &App, headers: &HeaderMap) -> Option<(String, Person)> {
    let id = cookie_value(headers)?;
    let sessions = app.0.sessions.lock().ok()?;
    sessions.get(&id).cloned().map(|p| (id, p))
}

async fn home(State(app): State<App>, headers: HeaderMap) -> Response {
    match person(&app, &headers) {
        Some((_, p)) => page(
            "Example app",
            html! {
                h1 { "Example app" }
                p id="who" { "Signed in as " strong { (p.email) } }
                a id="sign-out" href="/logout" { "Sign out" }
            },
        ),
        None => page(
            "Example app",
            html! {
                h1 { "Example app" }
                p id="who" { "Not signed in" }
                a id="sign-in" href="/login" { "Sign in with Portcullis" }
            },
        ),
    }
}

async fn login(State(app): State<App>) -> Response {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = app
        .0
        .client
        .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge)
        .url();
    if let Ok(mut pending) = app.0.pending.lock() {
        pending.insert(state.secret().clone(), (verifier, nonce));
    }
    Redirect::to(url.as_str()).into_response()
}

fn failed(why: &str) -> Response {
    tracing::warn!(why, "sign-in failed");
    (axum::http::StatusCode::BAD_REQUEST, page("Sign-in failed", html! { h1 { "Sign-in failed" } p { (why) } }))
        .into_response()
}

async fn callback(State(app): State<App>, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Some(error) = q.get("error") {
        return failed(error);
    }
    let (Some(code), Some(state)) = (q.get("code"), q.get("state")) else { return failed("no code") };
    let Some((verifier, nonce)) = app.0.pending.lock().ok().and_then(|mut p| p.remove(state)) else {
        return failed("unknown state");
    };
    let request = match app.0.client.exchange_code(AuthorizationCode::new(code.clone())) {
        Ok(r) => r,
        Err(e) => return failed(&e.to_string()),
    };
    let tokens = match request.set_pkce_verifier(verifier).request_async(&app.0.http).await {
        Ok(t) => t,
        Err(e) => return failed(&format!("token endpoint: {e}")),
    };
    let Some(id_token) = tokens.id_token() else { return failed("no ID token") };
    let claims = match id_token.claims(&app.0.client.id_token_verifier(), &nonce) {
        Ok(c) => c,
        Err(e) => return failed(&format!("ID token: {e}")),
    };
    let email = claims.email().map(|e| e.to_string()).unwrap_or_else(|| claims.subject().to_string());
    let session = CsrfToken::new_random().secret().clone();
    if let Ok(mut sessions) = app.0.sessions.lock() {
        sessions.insert(session.clone(), Person { email, id_token: id_token.to_string() });
    }
    let mut res = Redirect::to("/").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&format!("{COOKIE}={session}; HttpOnly; SameSite=Lax; Path=/")) {
        res.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    res
}

async fn logout(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some((id, person)) = person(&app, &headers) else { return Redirect::to("/").into_response() };
    if let Ok(mut sessions) = app.0.sessions.lock() {
        sessions.remove(&id);
    }
    let mut res = match &app.0.end_session {
        Some(end) => {
            let mut url = match url::Url::parse(end) {
                Ok(u) => u,
                Err(_) => return Redirect::to("/").into_response(),
            };
            url.query_pairs_mut()
                .append_pair("id_token_hint", &person.id_token)
                .append_pair("post_logout_redirect_uri", &format!("{}/", app.0.config.public_url))
                .append_pair("client_id", &app.0.config.client_id);
            Redirect::to(url.as_str()).into_response()
        }
        None => Redirect::to("/").into_response(),
    };
    res.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_static("oidc_app_session=; Max-Age=0; Path=/"));
    res
}
