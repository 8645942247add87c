//! The audit log: security events stored with the users (`GET /v1/admin/audit`) and emitted as
//! structured log events (target `portcullis::audit`). Entries name accounts by id, never hold
//! a password, token or session id, and never hold what was typed as an email for a login that
//! matched no account (people type passwords into that field).

use std::sync::Arc;

use portcullis_core::{Clock, UserId};
use portcullis_store::{AuditStore, NewAuditEvent};

/// The kinds of events, as stored.
pub mod kind {
    pub const LOGIN: &str = "login";
    pub const LOGOUT: &str = "logout";
    pub const LOGOUT_ALL: &str = "logout_all";
    pub const SESSION_END: &str = "session_end";
    pub const APPLICATION_REVOKED: &str = "application_revoked";
    pub const REFRESH_REUSE: &str = "refresh_reuse";
    pub const PASSWORD_CHANGE: &str = "password_change";
    pub const USER_CREATED: &str = "user_created";
    pub const ROLE_CHANGE: &str = "role_change";
    pub const USER_DISABLED: &str = "user_disabled";
    pub const USER_ENABLED: &str = "user_enabled";
    pub const FORCE_LOGOUT: &str = "force_logout";
    pub const PASSWORD_SET: &str = "password_set";
    pub const USER_DELETED: &str = "user_deleted";
    pub const CLIENT_CREATED: &str = "client_created";
    pub const CLIENT_REMOVED: &str = "client_removed";
    pub const CLIENT_SECRET_ROTATED: &str = "client_secret_rotated";
    pub const FEED_ACCESS: &str = "feed_access";
    pub const KEY_ROTATION: &str = "key_rotation";
    /// The second step of a sign-in (detail: the method).
    pub const MFA: &str = "mfa";
    pub const MFA_ENROLLED: &str = "mfa_enrolled";
    pub const MFA_REMOVED: &str = "mfa_removed";
    /// An administrator or the command line removed a user's second factors.
    pub const MFA_RESET: &str = "mfa_reset";
    pub const RECOVERY_CODES: &str = "recovery_codes_regenerated";
    /// A reset link was made (and is being sent) for an account.
    pub const PASSWORD_RESET_REQUESTED: &str = "password_reset_requested";
    /// A password was set with a reset link.
    pub const PASSWORD_RESET: &str = "password_reset";
    /// A verification link was made for a registration awaiting it.
    pub const EMAIL_VERIFICATION_REQUESTED: &str = "email_verification_requested";
    /// A verification link was followed: the address is the person's.
    pub const EMAIL_VERIFIED: &str = "email_verified";
}

/// Outcomes, as stored.
pub mod outcome {
    pub const SUCCESS: &str = "success";
    pub const FAILURE: &str = "failure";
    pub const THROTTLED: &str = "throttled";
    pub const DENIED: &str = "denied";
}

/// One event, built up before it is recorded.
#[derive(Debug, Clone)]
pub struct Entry {
    kind: &'static str,
    outcome: &'static str,
    user: Option<UserId>,
    actor: Option<String>,
    ip: Option<String>,
    detail: Option<String>,
}

impl Entry {
    pub fn new(kind: &'static str, outcome: &'static str) -> Self {
        Self { kind, outcome, user: None, actor: None, ip: None, detail: None }
    }

    pub fn user(mut self, user: &UserId) -> Self {
        self.user = Some(user.clone());
        self
    }

    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    pub fn ip(mut self, ip: Option<&str>) -> Self {
        self.ip = ip.map(str::to_owned);
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

#[derive(Clone)]
pub struct Audit {
    pub store: Arc<dyn AuditStore>,
    pub clock: Arc<dyn Clock>,
}

impl Audit {
    /// Logs the event and stores it. A store failure is logged, not returned: the operation
    /// the event describes has already happened.
    pub async fn record(&self, e: Entry) {
        Self::log(&e);
        self.store_entry(e).await;
    }

    /// Logs the event without storing it (for events a client can repeat cheaply, beyond the
    /// first of a kind that is stored).
    pub fn log_only(&self, e: Entry) {
        Self::log(&e);
    }

    fn log(e: &Entry) {
        tracing::info!(
            target: "portcullis::audit",
            kind = e.kind,
            outcome = e.outcome,
            user = e.user.as_ref().map(UserId::as_str),
            actor = e.actor.as_deref(),
            ip = e.ip.as_deref(),
            detail = e.detail.as_deref(),
            "audit"
        );
    }

    async fn store_entry(&self, e: Entry) {
        let event = NewAuditEvent {
            at: self.clock.now(),
            kind: e.kind.to_owned(),
            outcome: e.outcome.to_owned(),
            user_id: e.user,
            actor: e.actor,
            ip: e.ip,
            detail: e.detail,
        };
        if let Err(err) = self.store.append(&event).await {
            tracing::error!(error = %err, kind = event.kind, "could not store an audit event");
        }
    }
}

/// Refusals already audited in the current minute, by address and reason: refusals cost an
/// attacker nothing, so the audit log keeps the first of each per minute (the rest are still
/// logged and refused).
pub struct Refusals {
    seen: quick_cache::sync::Cache<(String, &'static str, i64), ()>,
}

impl Default for Refusals {
    fn default() -> Self {
        Self { seen: quick_cache::sync::Cache::new(10_000) }
    }
}

impl Refusals {
    /// Whether this is the first refusal for `reason` from `ip` in the minute of `now`.
    pub fn first_this_minute(&self, ip: Option<&str>, reason: &'static str, now: portcullis_core::Timestamp) -> bool {
        let key = (ip.unwrap_or("").to_owned(), reason, now.unix_seconds().div_euclid(60));
        if self.seen.get(&key).is_some() {
            return false;
        }
        self.seen.insert(key, ());
        true
    }
}
