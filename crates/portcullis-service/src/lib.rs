//! # portcullis-service
//!
//! What Portcullis *does*, without HTTP: register, log in (session or JWT), authenticate a
//! credential, list and end sessions, change passwords, the admin operations, refresh-token
//! rotation, RFC 7009 revocation, signing-key rotation, throttling and the audit log, and the
//! background work that keeps a node in step with the others (the revocation feed, the key
//! reload, the sweeps).
//!
//! Everything sits behind one front type, [`Service`]. The HTTP API, the pages and the CLI call
//! the same operation, so their rules cannot drift apart; they only translate requests into
//! calls and results into answers.
//!
//! This crate must not depend on HTTP (axum, http, hyper, cookies), on the settings file, or on
//! metrics: what it has to report goes to an [`Observer`], which the server implements with its
//! Prometheus registry.
//!
//! ## Layout
//!
//! Each module can be read knowing only the ones listed before it:
//!
//! - `observer.rs`: what the service reports ([`Observer`]).
//! - `audit.rs`: the audit log; `throttle.rs`: the failed-login counters; `keyring.rs`: the
//!   signing keys a node uses; `tokens.rs`: JWT mode's state (keys, expectations, the
//!   verified-token cache).
//! - `feed_log.rs`: this node's log of recent revocation events, for services that follow the
//!   feed and reconnect.
//! - `backchannel.rs`: the bounded queue of back-channel logout notices the server delivers.
//! - `service.rs`: [`Service`], its [`Config`] and [`Stores`], and opening it.
//! - `accounts.rs`: accounts and sessions: registration, the password check, the session check,
//!   logout, ending sessions, password changes, admin changes.
//! - `clients.rs`: the client registry: registering, removing and rotating the secret of
//!   services and OpenID Connect clients, and checking their credentials.
//! - `token_flows.rs`: JWT mode's operations: issuing and verifying access tokens, refresh
//!   rotation with reuse detection, RFC 7009 revocation, signing-key rotation.
//! - `mfa.rs`: the password logins (opening the records `accounts.rs` and `token_flows.rs`
//!   make), second factors and their enrolment, and the second step of a sign-in.
//! - `passkeys.rs`, `webauthn.rs`: passkeys (registration, sign-in alone and as a second
//!   step) and the sealed WebAuthn ceremony state.
//! - `enrolment.rs`: the second factor `mfa.required_for_roles` makes someone set up at sign-in.
//! - `recovery.rs`: password reset by email: the single-use reset tokens.
//! - `verification.rs`: email verification at registration: the sealed links.
//! - `provider.rs`: the OpenID Connect provider: authorization requests, sealed codes, the
//!   token grants, ID tokens and userinfo.
//! - `background.rs`: the revocation feed, the key reload and the sweeps, as tasks.

mod accounts;
mod audit;
mod backchannel;
mod background;
mod clients;
mod enrolment;
mod feed_log;
mod keyring;
mod mfa;
mod observer;
mod passkeys;
mod provider;
mod recovery;
mod service;
mod throttle;
mod token_flows;
mod tokens;
mod verification;
mod webauthn;

pub use accounts::{Actor, AuthError, Authenticated, Creator, Login, MfaChallenge};
pub use audit::{Audit, Entry, kind, outcome};
pub use backchannel::{BACKCHANNEL_QUEUE, BackchannelQueue, LogoutNotice};
pub use background::Background;
pub use clients::{
    ClientAuthError, MAX_CLIENT_NAME, MAX_REDIRECT_URIS, OidcClientSpec, Registered, redirect_uri_problem,
};
pub use enrolment::Enrolled;
pub use feed_log::{FEED_FOLLOWER_BUFFER, FEED_LOG_CAPACITY, FeedLog, LogItem, Resume};
pub use keyring::{KEY_RELOAD_INTERVAL, KeyRing, KeyRingError, KeyState, KeyStatus, Purpose, key_status};
pub use mfa::{FactorSummary, LoginIntent, Proof, SignedIn, TotpEnrolment};
pub use observer::{Observer, Quiet};
pub use passkeys::PasskeyInfo;
pub use provider::{
    Application, Authorization, AuthorizePageError, AuthorizeParams, AuthorizeRequest, AuthorizeTarget,
    BACKCHANNEL_LOGOUT_EVENT, CODE_TTL, FRESH_SIGN_IN_WINDOW, IdTokenHint, Introspection, LOGOUT_TOKEN_TTL, OAuthError,
    PersonClaims, ProviderTokens, UserInfo,
};
pub use recovery::{RESET_TOKEN_TTL, RESETS_PER_HOUR, ResetLetter};
pub use service::{
    Config, MFA_TICKET_KEY_NAME, MfaPolicy, OpenError, PROVIDER_KEY_NAME, Service, Stores, server_secret,
};
pub use throttle::{Blocked, Scope, THROTTLE_KEY_NAME, Throttle, ThrottleRules};
pub use token_flows::RotatedKey;
pub use token_flows::{IssuedAccess, MAX_DENIED_TOKENS_PER_SESSION, REFRESH_LIMIT, RefreshError, TokenPair};
pub use tokens::{REFRESH_KEY_NAME, Revocation, Tokens};
pub use verification::{VERIFICATIONS_PER_HOUR, VERIFY_TOKEN_TTL, VerifyLetter};
pub use webauthn::{CEREMONY_TTL, Ceremony, RelyingParty};
