//! Your account: your devices (sessions), the applications signed in with it (and removing
//! their access), signing out here or everywhere, two-step sign-in (its forms are in
//! `mfa.rs`), and changing your password.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use maud::{Markup, html};
use portcullis_core::{AuthMode, Role, SessionRecord};
use portcullis_service::{Application, AuthError, Authenticated, FactorSummary};
use serde::Deserialize;

use super::layout::{PageResult, capitalise, layout, render, when};
use super::session::{form_person, require_person, signed_out};
use crate::http::{Client, JsonOrForm};
use crate::state::AppState;

/// The account page and its forms.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/account") }))
        .route("/account", get(account_page))
        .route("/account/logout", post(account_logout))
        .route("/account/logout-all", post(account_logout_all))
        .route("/account/sessions/{id}/end", post(account_end_session))
        .route("/account/applications/{client_id}/revoke", post(account_revoke_application))
        .route("/account/password", post(account_password))
}

/// "Firefox 140 on Linux", from a `User-Agent`.
pub fn describe_device(user_agent: Option<&str>) -> String {
    let Some(ua) = user_agent.filter(|u| !u.trim().is_empty()) else { return "Unknown device".into() };
    match woothee::parser::Parser::new().parse(ua) {
        Some(r) if r.name != "UNKNOWN" && matches!(r.category, "pc" | "smartphone" | "mobilephone" | "appliance") => {
            let major = r.version.split('.').next().filter(|v| !v.is_empty() && *v != "UNKNOWN");
            let name = match major {
                Some(v) => format!("{} {v}", r.name),
                None => r.name.to_owned(),
            };
            if r.os == "UNKNOWN" { name } else { format!("{name} on {}", r.os) }
        }
        _ => ua.chars().take(60).collect(),
    }
}

#[derive(Deserialize, Default)]
struct AccountQuery {
    done: Option<String>,
}

fn done_message(done: Option<&str>) -> Option<&'static str> {
    match done? {
        "password" => Some("Your password was changed. Every other device was signed out."),
        "ended" => Some("That device was signed out."),
        "revoked" => Some("That application no longer has access to your account."),
        "totp" => Some("Two-step sign-in is on."),
        "totp-removed" => Some("The authenticator app was removed. Every other device was signed out."),
        "passkey" => Some("The passkey was added."),
        "passkey-removed" => Some("The passkey was removed. Every other device was signed out."),
        _ => None,
    }
}

fn account_body(
    who: &Authenticated,
    sessions: &[SessionRecord],
    applications: &[Application],
    (factors, passkeys): (&FactorSummary, Option<Markup>),
    csrf: &str,
    notice: Option<&str>,
    error: Option<&str>,
) -> Markup {
    let roles: Vec<&str> = who.roles.iter().map(Role::as_str).collect();
    html! {
        @if let Some(n) = notice { p.notice role="status" { (n) } }
        @if let Some(e) = error { p.error role="alert" { (e) } }
        section.card {
            h1 { "Your account" }
            p { "Signed in as " strong.email { (who.email.as_str()) } }
            p.muted { "Roles: " (roles.join(", ")) }
        }
        section.card {
            h2 { "Your devices" }
            table.devices {
                thead { tr { th { "Device" } th { "Address" } th { "Signed in" } th { "Last seen" } th {} } }
                tbody {
                    @for s in sessions.iter().filter(|s| s.grant.is_none()) {
                        @let current = s.id == who.session_id;
                        tr.current[current] {
                            td data-label="Device" {
                                (describe_device(s.user_agent.as_deref()))
                                @if s.mode == AuthMode::Jwt { " " span.badge { "app" } }
                                @if current { " " span.badge.this { "This device" } }
                            }
                            td data-label="Address" { (s.ip.as_deref().unwrap_or("unknown")) }
                            td data-label="Signed in" { (when(s.created_at)) }
                            td data-label="Last seen" { (when(s.last_seen_at)) }
                            td {
                                form method="post" action={ "/account/sessions/" (s.id.as_str()) "/end" } {
                                    input type="hidden" name="csrf" value=(csrf);
                                    button.secondary type="submit" { "Sign out" }
                                }
                            }
                        }
                    }
                }
            }
            div.actions {
                form method="post" action="/account/logout" {
                    input type="hidden" name="csrf" value=(csrf);
                    button.secondary type="submit" { "Sign out" }
                }
                form method="post" action="/account/logout-all" {
                    input type="hidden" name="csrf" value=(csrf);
                    button.danger type="submit" { "Sign out everywhere" }
                }
            }
        }
        @if !applications.is_empty() {
            section.card {
                h2 { "Applications" }
                p.muted { "Applications you signed in to with this account." }
                table.devices {
                    thead { tr { th { "Application" } th { "Can" } th { "Signed in" } th { "Last used" } th {} } }
                    tbody {
                        @for a in applications {
                            tr {
                                td data-label="Application" { (a.name) }
                                td data-label="Can" { (a.scope) }
                                td data-label="Signed in" { (when(a.signed_in_at)) }
                                td data-label="Last used" { (when(a.last_used_at)) }
                                td {
                                    form method="post" action={ "/account/applications/" (a.client_id.as_str()) "/revoke" } {
                                        input type="hidden" name="csrf" value=(csrf);
                                        button.secondary type="submit" { "Remove access" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        (super::mfa::factors_section(factors, csrf))
        @if let Some(passkeys) = passkeys { (passkeys) }
        section.card {
            h2 { "Change password" }
            form method="post" action="/account/password" {
                input type="hidden" name="csrf" value=(csrf);
                label { "Current password" input type="password" name="current_password" autocomplete="current-password" required; }
                label { "New password" input type="password" name="new_password" autocomplete="new-password" minlength="8" required; }
                button type="submit" { "Change password" }
            }
        }
    }
}

async fn render_account(
    state: &AppState,
    who: &Authenticated,
    headers: &HeaderMap,
    status: StatusCode,
    notice: Option<&str>,
    error: Option<&str>,
) -> PageResult {
    let sessions = state.service.sessions_of(&who.user_id).await?;
    let applications = state.service.applications_of(&who.user_id).await?;
    let factors = state.service.factor_summary(&who.user_id).await?;
    let csrf = state.csrf.token(&who.session_id);
    let here = super::passkeys::usable_here(state, headers);
    let passkeys = match state.service.passkeys_available() {
        true => {
            let list = state.service.passkeys(&who.user_id).await?;
            Some(super::passkeys::passkeys_section(state, &list, &csrf, here))
        }
        false => None,
    };
    let body = account_body(who, &sessions, &applications, (&factors, passkeys), &csrf, notice, error);
    let mut res = render(state, status, layout("Your account", Some(who), Some(&csrf), body));
    if here {
        super::layout::allow_passkey_script(&mut res);
    }
    Ok(res)
}

async fn account_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<AccountQuery>, axum::extract::rejection::QueryRejection>,
) -> PageResult {
    let who = require_person(&state, &headers, "/account").await?;
    let done = query.map(|q| q.0).unwrap_or_default().done;
    render_account(&state, &who, &headers, StatusCode::OK, done_message(done.as_deref()), None).await
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn account_logout(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonOrForm(form): JsonOrForm<CsrfForm>,
) -> PageResult {
    let who = form_person(&state, &headers, &form.csrf).await?;
    state.service.logout(&who, &client).await?;
    Ok(signed_out(&state))
}

async fn account_logout_all(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonOrForm(form): JsonOrForm<CsrfForm>,
) -> PageResult {
    let who = form_person(&state, &headers, &form.csrf).await?;
    state.service.logout_all(&who, &client).await?;
    Ok(signed_out(&state))
}

async fn account_end_session(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonOrForm(form): JsonOrForm<CsrfForm>,
) -> PageResult {
    let who = form_person(&state, &headers, &form.csrf).await?;
    match state.service.end_own_session(&who, &id, &client).await {
        Ok(()) => {}
        Err(AuthError::SessionNotFound) => {
            return render_account(
                &state,
                &who,
                &headers,
                StatusCode::NOT_FOUND,
                None,
                Some("That device is already signed out."),
            )
            .await;
        }
        Err(e) => return Err(e.into()),
    }
    if id == who.session_id.as_str() {
        return Ok(signed_out(&state));
    }
    Ok(Redirect::to("/account?done=ended").into_response())
}

#[derive(Deserialize)]
struct PasswordForm {
    csrf: String,
    current_password: String,
    new_password: String,
}

async fn account_password(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    JsonOrForm(form): JsonOrForm<PasswordForm>,
) -> PageResult {
    let who = form_person(&state, &headers, &form.csrf).await?;
    let renewed = match state.service.change_password(&who, form.current_password, form.new_password, &client).await {
        Ok(renewed) => renewed,
        Err(AuthError::WrongPassword) => {
            let message = "The current password is not right; nothing was changed.";
            return render_account(&state, &who, &headers, StatusCode::FORBIDDEN, None, Some(message)).await;
        }
        Err(AuthError::Password(e)) => {
            let message = format!("{}.", capitalise(&e.to_string()));
            return render_account(&state, &who, &headers, StatusCode::BAD_REQUEST, None, Some(&message)).await;
        }
        Err(e) => return Err(e.into()),
    };
    // A new session id with the new password; this browser follows with a new cookie.
    let mut res = Redirect::to("/account?done=password").into_response();
    if let Some(token) = renewed {
        let max_age = who.expires_at.since(state.service.clock.now());
        res.headers_mut().insert(header::SET_COOKIE, state.cookies.set_session(&token, max_age));
    }
    Ok(res)
}

async fn account_revoke_application(
    State(state): State<AppState>,
    Client(client): Client,
    headers: HeaderMap,
    Path(client_id): Path<String>,
    JsonOrForm(form): JsonOrForm<CsrfForm>,
) -> PageResult {
    let who = form_person(&state, &headers, &form.csrf).await?;
    match state.service.revoke_application(&who, &client_id, &client).await {
        Ok(()) => Ok(Redirect::to("/account?done=revoked").into_response()),
        Err(AuthError::ClientNotFound) => {
            let message = Some("That application has no access to your account.");
            render_account(&state, &who, &headers, StatusCode::NOT_FOUND, None, message).await
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_described_from_the_user_agent() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";
        assert_eq!(describe_device(Some(firefox)), "Firefox 140 on Linux");
        let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
        assert_eq!(describe_device(Some(chrome)), "Chrome 131 on Windows 10");
        assert_eq!(describe_device(None), "Unknown device");
        assert_eq!(describe_device(Some("curl/8.5.0")), "curl/8.5.0");
    }
}
