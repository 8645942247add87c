//! Password reset by email (docs/SECURITY.md, "Password reset"; OWASP's Forgot Password cheat sheet).
//!
//! [`Service::begin_password_reset`] makes a single-use token (256 random bits; the store keeps
//! its SHA-256) valid for [`RESET_TOKEN_TTL`], for an enabled account only, at most
//! [`RESETS_PER_HOUR`] an hour per account. Whoever calls it must answer the person the same way
//! whatever it returns, and without waiting for it (the server runs it after answering), so
//! neither the answer nor its timing tells whether an account exists.
//! [`Service::reset_password`] uses the token up, sets the new password and ends every session
//! and token of the user.

use std::time::Duration;

use portcullis_core::secret::{b64, fill_random, sha256};
use portcullis_core::{ClientInfo, Email, Password, User};
use portcullis_store::{Attempt, ThrottleRule};

use crate::accounts::AuthError;
use crate::audit::{Entry, kind, outcome};
use crate::service::Service;

/// How long a reset link works.
pub const RESET_TOKEN_TTL: Duration = Duration::from_secs(30 * 60);
/// Reset emails sent for one account in an hour, at most.
pub const RESETS_PER_HOUR: u32 = 3;
/// The longest token accepted (a real one is 43 characters).
const MAX_TOKEN_LEN: usize = 128;

/// A reset to send: to whom, and the token for the link (never logged).
#[derive(Debug)]
pub struct ResetLetter {
    pub user: User,
    pub token: String,
}

impl Service {
    /// A reset token for the account with this email, if there is an enabled one and it has not
    /// asked too often; `None` otherwise (the caller answers the same either way).
    pub async fn begin_password_reset(
        &self,
        email: &str,
        client: &ClientInfo,
    ) -> Result<Option<ResetLetter>, AuthError> {
        let Ok(email) = Email::parse(email) else { return Ok(None) };
        let Some((user, _)) = self.users.user_by_email(&email).await? else { return Ok(None) };
        if user.disabled {
            return Ok(None);
        }
        let now = self.clock.now();
        let hour = Duration::from_secs(3600);
        let rule = ThrottleRule { free: RESETS_PER_HOUR, base_delay: hour, max_delay: hour, window: hour };
        if let Attempt::Refused { .. } = self.limits.begin_attempt(&format!("reset:{}", user.id), &rule, now).await? {
            let entry = Entry::new(kind::PASSWORD_RESET_REQUESTED, outcome::THROTTLED).user(&user.id);
            self.audit.record(entry.ip(client.ip.as_deref())).await;
            return Ok(None);
        }
        let mut secret = [0u8; 32];
        fill_random(&mut secret);
        let token = b64(&secret);
        self.factors.add_reset_token(&user.id, sha256(token.as_bytes()), now.plus(RESET_TOKEN_TTL), now).await?;
        let entry = Entry::new(kind::PASSWORD_RESET_REQUESTED, outcome::SUCCESS).user(&user.id);
        self.audit.record(entry.ip(client.ip.as_deref())).await;
        Ok(Some(ResetLetter { user, token }))
    }

    /// Sets a new password with a reset token: a password the policy accepts uses the token up,
    /// every session and token of the user ends, and their other reset links stop working.
    pub async fn reset_password(
        &self,
        token: &str,
        new_password: String,
        client: &ClientInfo,
    ) -> Result<User, AuthError> {
        // The policy first, so a too-short password does not spend the link.
        let password = Password::new(new_password)?;
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::InvalidResetToken);
        }
        let now = self.clock.now();
        let user_id =
            self.factors.take_reset_token(sha256(token.as_bytes()), now).await?.ok_or(AuthError::InvalidResetToken)?;
        let user = self.users.user(&user_id).await?.filter(|u| !u.disabled).ok_or(AuthError::InvalidResetToken)?;
        let hash = self.hasher.hash(password).await?;
        if !self.users.set_password_hash(&user.id, hash, now).await? {
            return Err(AuthError::InvalidResetToken);
        }
        self.factors.delete_reset_tokens(&user.id).await?;
        if !user.email_verified {
            // The link came to the address: it is the person's.
            self.mark_email_verified(&user.id).await?;
        }
        let ended = self.end_sessions(&user.id, None).await?;
        let entry = Entry::new(kind::PASSWORD_RESET, outcome::SUCCESS).user(&user.id).ip(client.ip.as_deref());
        self.audit.record(entry.detail(format!("{ended} sessions ended"))).await;
        tracing::info!(user = %user.id, "password reset by email");
        Ok(user)
    }
}
