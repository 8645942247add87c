//! The admin page: the accounts (roles, disabling, force logout), the registered clients
//! (registering an OpenID Connect application, removing a client), and the latest audit events.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use maud::{Markup, html};
use portcullis_core::{Role, User};
use portcullis_service::{Actor, AuthError, Authenticated};
use serde::Deserialize;

use super::layout::{PageError, PageResult, layout, render, when};
use super::session::{form_person, require_person};
use crate::error::ApiError;
use crate::http::{Client, JsonOrForm};
use crate::state::AppState;

/// The admin page and its forms.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin", get(admin_page))
        .route("/admin/users/{id}", post(admin_action))
        .route("/admin/clients", post(add_application))
        .route("/admin/clients/{id}", post(client_action))
}

/// How many audit events the admin page shows.
const ADMIN_PAGE_EVENTS: u32 = 50;

fn admin_body(
    users: &[User],
    clients: &[portcullis_core::Client],
    me: &Authenticated,
    events: &[portcullis_store::AuditEvent],
    csrf: &str,
    error: Option<&str>,
    verifying: bool,
) -> Markup {
    let email_of =
        |id: &portcullis_core::UserId| users.iter().find(|u| &u.id == id).map(|u| u.email.as_str().to_owned());
    html! {
        @if let Some(e) = error { p.error role="alert" { (e) } }
        section.card {
            h1 { "Users" }
            table.users {
                thead { tr { th { "Email" } th { "Roles" } th { "Status" } th { "Actions" } } }
                tbody {
                    @for u in users {
                        @let admin = u.is_admin();
                        @let is_me = u.id == me.user_id;
                        tr {
                            td data-label="Email" { (u.email.as_str()) @if is_me { " " span.badge.this { "you" } } }
                            td data-label="Roles" { (u.roles_joined().replace(',', ", ")) }
                            td data-label="Status" {
                                @if u.disabled { span.badge.off { "disabled" } } @else { "active" }
                                @if verifying && !u.email_verified { " " span.badge.off { "email not verified" } }
                            }
                            td.buttons {
                                form method="post" action={ "/admin/users/" (u.id.as_str()) } {
                                    input type="hidden" name="csrf" value=(csrf);
                                    @if admin {
                                        button.secondary type="submit" name="action" value="remove_admin" disabled[is_me] { "Remove admin" }
                                    } @else {
                                        button.secondary type="submit" name="action" value="grant_admin" { "Make admin" }
                                    }
                                    @if u.disabled {
                                        button.secondary type="submit" name="action" value="enable" { "Enable" }
                                    } @else {
                                        button.danger type="submit" name="action" value="disable" disabled[is_me] { "Disable" }
                                    }
                                    button.secondary type="submit" name="action" value="logout" { "Sign out everywhere" }
                                    @if verifying && !u.email_verified {
                                        button.secondary type="submit" name="action" value="verify_email" { "Mark email verified" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.card {
            h2 { "Clients" }
            @if clients.is_empty() {
                p { "No clients yet. Register a service with " code { "portcullis client add NAME --service" } "." }
            } @else {
                table.clients {
                    thead { tr { th { "Name" } th { "Kind" } th { "Client ID" } th { "Last used" } th { "Actions" } } }
                    tbody {
                        @for c in clients {
                            tr {
                                td data-label="Name" { (c.name) }
                                td data-label="Kind" { (c.kind.as_str()) }
                                td data-label="Client ID" { code { (c.id.as_str()) } }
                                td data-label="Last used" { (c.last_used_at.map_or_else(|| "never".to_owned(), when)) }
                                td.buttons {
                                    form method="post" action={ "/admin/clients/" (c.id.as_str()) } {
                                        input type="hidden" name="csrf" value=(csrf);
                                        button.danger type="submit" name="action" value="remove" { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.card {
            h2 { "Register an application" }
            p.muted { "An OpenID Connect application that signs people in through Portcullis. Services that follow the revocation feed are registered with " code { "portcullis client add NAME --service" } "." }
            form method="post" action="/admin/clients" {
                input type="hidden" name="csrf" value=(csrf);
                label { "Name" input type="text" name="name" required maxlength="100"; }
                label { "Redirect URIs (one per line)" textarea name="redirect_uris" rows="2" required {} }
                label { "Post-logout redirect URIs (one per line)" textarea name="post_logout_redirect_uris" rows="2" {} }
                label { "Back-channel logout URI" input type="url" name="backchannel_logout_uri"; }
                label.check { input type="checkbox" name="public" value="on"; " Public (a browser or mobile app: no secret, PKCE)" }
                label.check { input type="checkbox" name="third_party" value="on"; " Third-party (ask people for consent)" }
                button type="submit" { "Register" }
            }
        }
        section.card {
            h2 { "Recent events" }
            table.events {
                thead { tr { th { "When" } th { "Event" } th { "Account" } th { "Address" } th { "Detail" } } }
                tbody {
                    @for e in events {
                        @let ev = &e.event;
                        tr {
                            td data-label="When" { (when(ev.at)) }
                            td data-label="Event" { (ev.kind) " " span.badge.{(ev.outcome)} { (ev.outcome) } }
                            td data-label="Account" { (ev.user_id.as_ref().and_then(&email_of).unwrap_or_else(|| "—".into())) }
                            td data-label="Address" { (ev.ip.as_deref().unwrap_or("—")) }
                            td data-label="Detail" { (ev.detail.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}

async fn render_admin(state: &AppState, who: &Authenticated, status: StatusCode, error: Option<&str>) -> PageResult {
    let users = state.service.list_users().await?;
    let clients = state.service.clients().await?;
    let query = portcullis_store::AuditQuery { limit: ADMIN_PAGE_EVENTS, ..Default::default() };
    let events = state.service.audit_events(&query).await?;
    let csrf = state.csrf.token(&who.session_id);
    let body = admin_body(&users, &clients, who, &events, &csrf, error, state.service.verify_email);
    Ok(render(state, status, layout("Admin", Some(who), Some(&csrf), body)))
}

fn not_admin() -> PageError {
    PageError::Error(ApiError::forbidden().with_detail("This page needs the admin role."))
}

async fn admin_page(State(state): State<AppState>, headers: HeaderMap) -> PageResult {
    let who = require_person(&state, &headers, "/admin").await?;
    if !who.is_admin() {
        return Err(not_admin());
    }
    render_admin(&state, &who, StatusCode::OK, None).await
}

/// The administrator who sent a form of the admin page (its CSRF token checked).
async fn form_admin(state: &AppState, headers: &HeaderMap, csrf: &str) -> Result<Authenticated, PageError> {
    let who = form_person(state, headers, csrf).await?;
    if !who.is_admin() {
        return Err(not_admin());
    }
    Ok(who)
}

fn unknown_action(action: &str) -> PageError {
    PageError::Error(ApiError::bad_request("invalid_body", format!("unknown action {action:?}")))
}

#[derive(Deserialize)]
struct AdminForm {
    csrf: String,
    action: String,
}

async fn admin_action(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonOrForm(form): JsonOrForm<AdminForm>,
) -> PageResult {
    let who = form_admin(&state, &headers, &form.csrf).await?;
    let user = state.service.user(&id).await?;
    let with_admin = |grant: bool| -> Vec<String> {
        let mut roles: Vec<String> =
            user.roles.iter().map(|r| r.as_str().to_owned()).filter(|r| r != Role::ADMIN).collect();
        if grant {
            roles.push(Role::ADMIN.to_owned());
        }
        roles
    };
    let (roles, disabled) = match form.action.as_str() {
        "grant_admin" => (Some(with_admin(true)), None),
        "remove_admin" => (Some(with_admin(false)), None),
        "disable" => (None, Some(true)),
        "enable" => (None, Some(false)),
        "logout" => {
            state.service.force_logout(Actor::Admin(&who.user_id), &id, &client).await?;
            return Ok(Redirect::to("/admin").into_response());
        }
        "verify_email" => {
            state.service.confirm_email(Actor::Admin(&who.user_id), &id, &client).await?;
            return Ok(Redirect::to("/admin").into_response());
        }
        other => return Err(unknown_action(other)),
    };
    match state.service.update_user(Actor::Admin(&who.user_id), &id, roles, disabled, &client).await {
        Ok(_) => Ok(Redirect::to("/admin").into_response()),
        Err(AuthError::SelfLockout) => {
            let message = "You cannot disable yourself or remove your own admin role.";
            render_admin(&state, &who, StatusCode::CONFLICT, Some(message)).await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
struct ApplicationForm {
    csrf: String,
    name: String,
    #[serde(default)]
    redirect_uris: String,
    #[serde(default)]
    post_logout_redirect_uris: String,
    #[serde(default)]
    backchannel_logout_uri: String,
    #[serde(default)]
    public: Option<String>,
    #[serde(default)]
    third_party: Option<String>,
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

/// Registers an OpenID Connect application and shows its id and secret, this once.
async fn add_application(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonOrForm(form): JsonOrForm<ApplicationForm>,
) -> PageResult {
    let who = form_admin(&state, &headers, &form.csrf).await?;
    let backchannel = form.backchannel_logout_uri.trim();
    let spec = portcullis_service::OidcClientSpec {
        name: form.name,
        public: form.public.is_some(),
        redirect_uris: lines(&form.redirect_uris),
        post_logout_redirect_uris: lines(&form.post_logout_redirect_uris),
        backchannel_logout_uri: (!backchannel.is_empty()).then(|| backchannel.to_owned()),
        first_party: form.third_party.is_none(),
    };
    let registered = match state.service.register_oidc_client(Actor::Admin(&who.user_id), spec, &client).await {
        Ok(r) => r,
        Err(e @ (AuthError::InvalidClient(_) | AuthError::InvalidClientName)) => {
            let message = format!("{}.", super::layout::capitalise(&e.to_string()));
            return render_admin(&state, &who, StatusCode::BAD_REQUEST, Some(&message)).await;
        }
        Err(e) => return Err(e.into()),
    };
    let c = &registered.client;
    let body = html! {
        section.card {
            h1 { "Registered " (c.name) }
            p { "Give the application Portcullis' issuer, " code { (state.service.tokens.expect.issuer) } ", and:" }
            dl.credentials {
                dt { "Client ID" } dd { code id="client-id" { (c.id.as_str()) } }
                @if let Some(secret) = &registered.secret {
                    dt { "Client secret" } dd { code id="client-secret" { (secret.expose()) } }
                }
            }
            @if registered.secret.is_some() { p.notice { "The secret is shown only now: it is stored hashed." } }
            p { a href="/admin" { "Back to admin" } }
        }
    };
    Ok(render(&state, StatusCode::CREATED, layout("Application registered", Some(&who), None, body)))
}

/// Removes a client (secrets of services are made on the command line or through the admin
/// API, which can show them once).
async fn client_action(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonOrForm(form): JsonOrForm<AdminForm>,
) -> PageResult {
    let who = form_admin(&state, &headers, &form.csrf).await?;
    if form.action != "remove" {
        return Err(unknown_action(&form.action));
    }
    state.service.remove_client(Actor::Admin(&who.user_id), &id, &client).await?;
    Ok(Redirect::to("/admin").into_response())
}
