//! Pages for people: sign in, register, your account (devices, password), and admin. Rendered
//! on the server (maud), plain HTML forms, no JavaScript; readable from phone to desktop widths.
//!
//! Pages use the session cookie only. Every form of a signed-in page carries a per-session CSRF
//! token (an HMAC of the session id with a server secret), checked on submit, on top of the
//! cross-site guard's `Origin`/`Sec-Fetch-Site` check that every unsafe request passes. Sign-in
//! redirects only to relative paths or to origins Portcullis trusts (`return_to.rs`).
//!
//! One module per family: `login.rs` (sign in and its second step, register), `enrol.rs` (the
//! second factor a role requires, set up at sign-in), `account.rs`
//! (and `mfa.rs`, its two-step sign-in forms), `admin.rs`,
//! `authorize.rs` (the OpenID Connect provider's authorization endpoint and consent page),
//! `end_session.rs` (its RP-initiated logout), `password.rs` (password reset by email), `verify.rs` (email verification), `passkeys.rs` (passkey forms, with the one
//! script the pages load, `passkeys.js`); what they
//! share in `layout.rs` (the page around a body, errors as pages) and `session.rs` (who is
//! signed in); the guards on their own, with their tests: `csrf.rs` and `return_to.rs`.

mod account;
mod admin;
mod authorize;
pub mod csrf;
mod end_session;
mod enrol;
mod layout;
mod login;
mod mfa;
mod passkeys;
mod password;
pub mod return_to;
mod session;
mod verify;

use axum::Router;
use axum::routing::get;

pub use layout::PageError;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(login::routes())
        .merge(enrol::routes())
        .merge(account::routes())
        .merge(mfa::routes())
        .merge(admin::routes())
        .merge(authorize::routes())
        .merge(end_session::routes())
        .merge(password::routes())
        .merge(verify::routes())
        .merge(passkeys::routes())
        .route("/assets/portcullis.css", get(layout::stylesheet))
        .route("/assets/passkeys.js", get(layout::passkey_script))
}
