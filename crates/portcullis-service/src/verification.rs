//! Email verification at registration (`registration.verify_email`).
//!
//! An account made by registration starts unverified. On a server with the setting its password
//! is right but signs nothing in ([`AuthError::EmailNotVerified`], told only after the right
//! password, so it tells nobody else whether the address is registered) until the link sent to
//! the address is followed; turned on later, the setting asks the same of every account not
//! verified yet (as Keycloak's "verify email" does), and each can ask for a link. Without the
//! setting nothing waits, and the ID token's `email_verified` says `false` until a link is
//! followed. The link's token is sealed by the server (HMAC-SHA256 under a stored key) and
//! names the account, its address and when it stops working ([`VERIFY_TOKEN_TTL`]); nothing is
//! stored for it, and following it again changes nothing. A token for another address (the
//! account deleted and made again) or another account does not verify this one.
//!
//! Accounts an administrator or the command line makes are verified (they vouch for the
//! address); accounts from before verification existed are not. A password reset by email
//! verifies the address too, since the reset link went to it.

use std::time::Duration;

use portcullis_core::{ClientInfo, Email, User, UserId};
use portcullis_store::{Attempt, ThrottleRule, UserUpdate};
use serde::{Deserialize, Serialize};

use crate::accounts::{Actor, AuthError};
use crate::audit::{Entry, kind, outcome};
use crate::service::Service;

/// How long a verification link works.
pub const VERIFY_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// Verification messages sent for one account in an hour, at most.
pub const VERIFICATIONS_PER_HOUR: u32 = 3;
/// The longest token accepted (a real one is about two hundred characters).
const MAX_TOKEN_LEN: usize = 1024;
const CONTEXT: &[u8] = b"portcullis email verification v1";

/// What a verification link's token says.
#[derive(Serialize, Deserialize)]
struct Claims {
    #[serde(rename = "u")]
    user: String,
    #[serde(rename = "e")]
    email: String,
    /// When the link stops working (Unix milliseconds).
    #[serde(rename = "x")]
    expires_at: i64,
}

/// A verification to send: to whom, and the token for the link (never logged).
#[derive(Debug)]
pub struct VerifyLetter {
    pub user: User,
    pub token: String,
}

impl Service {
    /// A verification link for `user`: `None` when their address is verified (or the account
    /// disabled) or it has asked too often. Counts against the account's hourly limit.
    pub async fn verification_letter(
        &self,
        user: &User,
        client: &ClientInfo,
    ) -> Result<Option<VerifyLetter>, AuthError> {
        if user.email_verified || user.disabled {
            return Ok(None);
        }
        let now = self.clock.now();
        let hour = Duration::from_secs(3600);
        let rule = ThrottleRule { free: VERIFICATIONS_PER_HOUR, base_delay: hour, max_delay: hour, window: hour };
        let entry = |result| Entry::new(kind::EMAIL_VERIFICATION_REQUESTED, result).user(&user.id);
        if let Attempt::Refused { .. } = self.limits.begin_attempt(&format!("verify:{}", user.id), &rule, now).await? {
            self.audit.record(entry(outcome::THROTTLED).ip(client.ip.as_deref())).await;
            return Ok(None);
        }
        let claims = Claims {
            user: user.id.to_string(),
            email: user.email.as_str().to_owned(),
            expires_at: now.plus(VERIFY_TOKEN_TTL).unix_millis(),
        };
        self.audit.record(entry(outcome::SUCCESS).ip(client.ip.as_deref())).await;
        Ok(Some(VerifyLetter { user: user.clone(), token: self.mfa_key.seal_json(CONTEXT, &claims) }))
    }

    /// Another verification link for the account with this email, if it is enabled and still
    /// unverified and has not asked too often; `None` otherwise. The caller answers the same
    /// either way, without waiting for this, so nothing tells whether the account exists.
    pub async fn resend_verification(
        &self,
        email: &str,
        client: &ClientInfo,
    ) -> Result<Option<VerifyLetter>, AuthError> {
        let Ok(email) = Email::parse(email) else { return Ok(None) };
        let Some((user, _)) = self.users.user_by_email(&email).await? else { return Ok(None) };
        self.verification_letter(&user, client).await
    }

    /// Follows a verification link: the account's address is verified (again, harmlessly, for
    /// a link followed twice).
    pub async fn verify_email(&self, token: &str, client: &ClientInfo) -> Result<User, AuthError> {
        let claims: Claims =
            self.mfa_key.open_json(CONTEXT, token, MAX_TOKEN_LEN).ok_or(AuthError::InvalidVerificationToken)?;
        let now = self.clock.now();
        if now.unix_millis() >= claims.expires_at {
            return Err(AuthError::InvalidVerificationToken);
        }
        let id = UserId::from_stored(&claims.user);
        let user = self.users.user(&id).await?.filter(|u| u.email.as_str() == claims.email);
        let user = user.ok_or(AuthError::InvalidVerificationToken)?;
        if user.email_verified {
            return Ok(user);
        }
        let user = self.mark_email_verified(&user.id).await?.ok_or(AuthError::InvalidVerificationToken)?;
        let entry = Entry::new(kind::EMAIL_VERIFIED, outcome::SUCCESS).user(&user.id).ip(client.ip.as_deref());
        self.audit.record(entry).await;
        tracing::info!(user = %user.id, "email address verified");
        Ok(user)
    }

    /// An administrator (or the command line) vouches for a user's address: it is verified,
    /// as if they had followed the link.
    pub async fn confirm_email(&self, actor: Actor<'_>, id: &str, client: &ClientInfo) -> Result<User, AuthError> {
        let user = self.user(id).await?;
        let user = self.mark_email_verified(&user.id).await?.ok_or(AuthError::UserNotFound)?;
        let entry = Entry::new(kind::EMAIL_VERIFIED, outcome::SUCCESS).user(&user.id).actor(actor.name());
        self.audit.record(entry.ip(client.ip.as_deref())).await;
        Ok(user)
    }

    /// Records that the account's address is the person's.
    pub(crate) async fn mark_email_verified(&self, id: &UserId) -> Result<Option<User>, AuthError> {
        let update = UserUpdate { email_verified: Some(true), ..UserUpdate::default() };
        Ok(self.users.update_user(id, update, self.clock.now()).await?)
    }
}
