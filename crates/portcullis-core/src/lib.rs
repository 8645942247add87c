//! # portcullis-core
//!
//! The domain of Portcullis: users and their canonical emails, roles, session records and their
//! timeouts, the secrets that identify sessions, password hashing, and the [`Clock`].
//!
//! This crate must not depend on HTTP (axum, hyper) or on any database driver. The store crate
//! implements persistence for these types; the server crate maps them to HTTP.
//!
//! ## Layout
//!
//! - [`clock`], [`jwt`]: re-exported from `portcullis-token` (the clock, signing keys and the
//!   one token verification).
//! - [`client`]: the client registry's records (services, OpenID Connect clients) and their
//!   secrets.
//! - [`email`]: canonical email addresses ([`Email`]) and their look-alike skeletons.
//! - `password`: the password policy and the bounded Argon2id hashing pool ([`PasswordHasher`]).
//! - [`secret`]: CSPRNG values, SHA-256, and the session credential ([`SessionToken`]).
//! - [`mfa`]: second factors without a store: `amr`, authenticator codes (RFC 6238),
//!   recovery codes, the sealed box for TOTP secrets and the ticket between password and code.
//! - [`oidc`]: the OpenID Connect provider's rules without a store: scopes, PKCE, sealed
//!   authorization codes, `at_hash`.
//! - `session`: [`SessionRecord`], an application's [`Grant`] on one, and the idle/absolute
//!   timeout rules ([`SessionPolicy`]).
//! - [`user`]: [`User`], [`UserId`] and [`Role`].

pub mod client;
pub mod email;
pub mod mfa;
pub mod oidc;
mod password;
pub mod refresh;
pub mod revocation;
pub mod secret;
mod session;
pub mod user;

/// Access tokens and the clock live in `portcullis-token`, so a service that only verifies
/// tokens links neither password hashing nor the Unicode tables; re-exported here for the rest
/// of Portcullis.
pub use portcullis_token::{clock, jwt};

pub use client::{Client, ClientId, ClientKind, ClientSecret};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use email::{Email, EmailError};
pub use password::{Password, PasswordError, PasswordHash, PasswordHasher};
pub use secret::{SecretHash, SessionId, SessionToken};
pub use session::{AuthMode, ClientInfo, Grant, SessionPolicy, SessionRecord};
pub use smol_str::SmolStr;
pub use user::{Role, RoleError, User, UserId, role_set};
