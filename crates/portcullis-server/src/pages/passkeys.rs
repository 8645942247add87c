//! Passkeys on the pages: the list and "Add a passkey" on `/account`, "Sign in with a passkey"
//! on `/login`, and "Use a passkey" on the second step. Each button is a form that
//! `passkeys.js` completes with the authenticator's answer; the answer is posted here like any
//! other form, so what follows (a page, a redirect, an error) is the server's.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use maud::{Markup, html};
use portcullis_service::{AuthError, PasskeyInfo};
use serde::Deserialize;

use super::layout::{PageResult, layout, render, when};
use super::session::form_person;
use crate::http::{Client, JsonOrForm};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/account/passkeys", post(add)).route("/account/passkeys/remove", post(remove))
}

/// Whether a passkey can be used on the page this request is for. On the zero-configuration
/// default the relying party is `localhost`, and a page opened at `127.0.0.1` cannot use it:
/// those pages leave the buttons out. With a `public_url`, every page can.
pub fn usable_here(state: &AppState, headers: &HeaderMap) -> bool {
    match state.service.passkey_rp_id() {
        Some("localhost") => headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| h == "localhost" || h.starts_with("localhost:")),
        Some(_) => true,
        None => false,
    }
}

/// Where the passkey buttons work, for a page opened elsewhere on the default (`localhost`
/// at this server's port).
pub(super) fn localhost_address(state: &AppState) -> String {
    state.public_origin.replacen("127.0.0.1", "localhost", 1).replacen("[::1]", "localhost", 1)
}

/// The hidden fields the script fills, and where it says what went wrong.
fn answer_fields() -> Markup {
    html! {
        input type="hidden" name="state" value="";
        input type="hidden" name="credential" value="";
        p.error role="alert" data-passkey-error hidden {}
    }
}

/// The account page's passkey section; `here`: passkeys can be added on this page.
pub fn passkeys_section(state: &AppState, passkeys: &[PasskeyInfo], csrf: &str, here: bool) -> Markup {
    html! {
        section.card #passkeys {
            h2 { "Passkeys" }
            p.muted {
                "Sign in with your fingerprint, face or screen lock instead of your password. "
                "After a password, a passkey is also a second step."
            }
            @if !passkeys.is_empty() {
                table.devices {
                    thead { tr { th { "Passkey" } th { "Added" } th { "Last used" } th {} } }
                    tbody {
                        @for p in passkeys {
                            tr {
                                td data-label="Passkey" { (p.name) }
                                td data-label="Added" { (when(p.created_at)) }
                                td data-label="Last used" { @match p.last_used_at { Some(t) => (when(t)), None => "Never" } }
                                td {
                                    form method="post" action="/account/passkeys/remove" {
                                        input type="hidden" name="csrf" value=(csrf);
                                        input type="hidden" name="id" value=(p.id);
                                        button.secondary type="submit" { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if here {
                @let hidden = html! { input type="hidden" name="csrf" value=(csrf); };
                (create_form("add-passkey", "/account/passkeys", "/v1/mfa/webauthn/register", hidden))
            } @else {
                @let address = format!("{}/account", localhost_address(state));
                p { "To add a passkey, open this page at " a href=(address) { (address) } "." }
            }
        }
    }
}

/// "Add a passkey", with its name: the script asks `begin` for the options to create one, and
/// posts the answer to `action` with the `hidden` fields.
pub fn create_form(id: &str, action: &str, begin: &str, hidden: Markup) -> Markup {
    html! {
        form id=(id) method="post" action=(action) data-passkey="create" data-begin=(begin) {
            (hidden)
            label { "Name" input type="text" name="name" maxlength="64" placeholder="Laptop, phone, security key"; }
            (answer_fields())
            button type="submit" { "Add a passkey" }
        }
        (super::layout::passkey_script_tag())
    }
}

/// The authenticator's answer as the script posts it.
pub fn credential(json: &str) -> Result<serde_json::Value, AuthError> {
    serde_json::from_str(json).map_err(|_| AuthError::PasskeyRefused)
}

/// "Sign in with a passkey" on the sign-in page.
pub fn sign_in_button(return_to: Option<&str>) -> Markup {
    get_button("passkey-sign-in", "/login/passkey", "/v1/login/webauthn", return_to, "Sign in with a passkey")
}

/// "Use a passkey" on the second step.
pub fn second_step_button(return_to: Option<&str>) -> Markup {
    get_button("passkey-second-step", "/login/mfa", "/login/mfa/webauthn", return_to, "Use a passkey")
}

/// A button that signs in with a passkey: the script asks `begin` for the options, and posts
/// the answer to `action`.
fn get_button(id: &str, action: &str, begin: &str, return_to: Option<&str>, label: &str) -> Markup {
    html! {
        form id=(id) method="post" action=(action) data-passkey="get" data-begin=(begin) {
            @if let Some(r) = return_to { input type="hidden" name="return_to" value=(r); }
            (answer_fields())
            button.secondary type="submit" { (label) }
        }
        (super::layout::passkey_script_tag())
    }
}

fn page(
    state: &AppState,
    who: &portcullis_service::Authenticated,
    csrf: &str,
    status: StatusCode,
    body: Markup,
) -> Response {
    let body =
        html! { section.card.narrow { h1 { "Passkeys" } (body) p { a href="/account" { "Back to your account" } } } };
    render(state, status, layout("Passkeys", Some(who), Some(csrf), body))
}

/// What the page says when a passkey cannot be added or removed; `None`: an error for the
/// general page.
fn refusal(e: &AuthError) -> Option<(StatusCode, Markup)> {
    let (status, message) = match e {
        AuthError::ReauthenticationRequired => {
            let body = html! {
                p { "For your security, sign in again before you change your passkeys." }
                p { a href="/login?reauth=1&return_to=%2Faccount" { "Sign in again" } }
            };
            return Some((StatusCode::FORBIDDEN, body));
        }
        AuthError::PasskeyRefused => (StatusCode::BAD_REQUEST, "The passkey was not accepted. Try again."),
        AuthError::InvalidCeremony => {
            (StatusCode::BAD_REQUEST, "That took too long, or the page was sent twice. Try again.")
        }
        AuthError::PasskeyExists => (StatusCode::CONFLICT, "That passkey is already registered."),
        AuthError::PasskeyNotFound => (StatusCode::NOT_FOUND, "That passkey is already gone."),
        AuthError::InvalidPasskeyName => (StatusCode::BAD_REQUEST, "A passkey's name is at most 64 characters."),
        AuthError::PasskeysUnavailable => {
            (StatusCode::CONFLICT, "Passkeys need this server's address to be a name, not an IP address.")
        }
        _ => return None,
    };
    Some((status, html! { p.error role="alert" { (message) } }))
}

/// The page for a change refused ([`refusal`]), or the error for the general page.
fn refused(
    state: &AppState,
    who: &portcullis_service::Authenticated,
    csrf: &str,
    e: AuthError,
) -> Result<Response, AuthError> {
    match refusal(&e) {
        Some((status, body)) => Ok(page(state, who, csrf, status, body)),
        None => Err(e),
    }
}

#[derive(Deserialize)]
struct AddForm {
    csrf: String,
    #[serde(default)]
    name: Option<String>,
    state: String,
    credential: String,
}

async fn add(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonOrForm(form): JsonOrForm<AddForm>,
) -> PageResult {
    let who = form_person(&state, &headers, &form.csrf).await?;
    let result = match credential(&form.credential) {
        Ok(answer) => {
            state.service.finish_passkey_registration(&who, &form.state, &answer, form.name.as_deref(), &client).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok((_, Some(codes))) => Ok(super::mfa::codes_page_for(&state, &who, &form.csrf, &codes, true)),
        Ok((_, None)) => Ok(Redirect::to("/account?done=passkey").into_response()),
        Err(e) => Ok(refused(&state, &who, &form.csrf, e)?),
    }
}

#[derive(Deserialize)]
struct RemoveForm {
    csrf: String,
    id: String,
}

async fn remove(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonOrForm(form): JsonOrForm<RemoveForm>,
) -> PageResult {
    let who = form_person(&state, &headers, &form.csrf).await?;
    match state.service.remove_passkey(&who, &form.id, &client).await {
        Ok(()) => Ok(Redirect::to("/account?done=passkey-removed").into_response()),
        Err(e) => Ok(refused(&state, &who, &form.csrf, e)?),
    }
}
