//! JWT mode's operations: issuing access tokens, verifying them (with the verified-token cache
//! and the revocation rules of `jwt.revocation`), login, refresh rotation with reuse detection,
//! RFC 7009 revocation, and signing-key rotation.

use std::time::Duration;

use portcullis_core::jwt::{self, AccessClaims, Algorithm, Audience, Expectations};
use portcullis_core::mfa::Amr;
use portcullis_core::refresh::{self, RefreshCheck, RefreshToken};
use portcullis_core::revocation::{Denied, RevocationEvent};
use portcullis_core::secret::{SessionId, b64, fill_random};
use portcullis_core::{AuthMode, ClientId, ClientInfo, SessionRecord, SessionToken, Timestamp, User};
use portcullis_store::{Attempt, ThrottleRule};

use crate::accounts::{AuthError, Authenticated};
use crate::audit::{Entry, kind, outcome};
use crate::keyring::KeyRingError;
use crate::service::Service;
use crate::tokens::{Revocation, Verified};

/// Refreshes one session may make: ten at once (racing tabs, a client restarting), then waits
/// of 1 s doubling up to a minute; forgotten after ten quiet minutes. An honest client refreshes
/// once an access-token lifetime; this stops a loop minting tokens to revoke.
pub const REFRESH_LIMIT: ThrottleRule = ThrottleRule {
    free: 10,
    base_delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(60),
    window: Duration::from_secs(600),
};

/// Access tokens of one session that `POST /v1/token/revoke` denies one by one within a token
/// lifetime; revoking one more ends the whole session (one deny-list entry for all its tokens),
/// so no session can grow the deny-list by more than this plus one.
pub const MAX_DENIED_TOKENS_PER_SESSION: u32 = 8;

/// Waits until `until`, for `Retry-After`: whole seconds, at least one.
fn retry_after(until: Timestamp, now: Timestamp) -> Duration {
    Duration::from_secs(u64::try_from(until.since(now).as_millis().div_ceil(1000)).unwrap_or(u64::MAX).max(1))
}

/// A token id (`jti`): 128 random bits, base64url.
pub(crate) fn random_jti() -> String {
    let mut jti = [0u8; 16];
    fill_random(&mut jti);
    b64(&jti)
}

/// An access token and what it says.
#[derive(Debug)]
pub struct IssuedAccess {
    pub token: String,
    pub claims: AccessClaims,
}

/// The answer to a JWT login or refresh.
#[derive(Debug)]
pub struct TokenPair {
    pub user: User,
    pub access: IssuedAccess,
    pub refresh: RefreshToken,
    /// When the login (and so the refresh token) ends.
    pub refresh_expires_at: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("the refresh token is not valid")]
    Invalid,
    #[error("the refresh token was already used; the session is revoked")]
    Reused,
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl Service {
    /// Signs an access token for `user` in session `sid`, from Portcullis' own login.
    pub fn issue_access(&self, user: &User, sid: &SessionId, amr: Amr) -> Result<IssuedAccess, AuthError> {
        self.issue_access_to(user, sid, jwt::FIRST_PARTY_CLIENT_ID, "", amr)
    }

    /// Signs an access token for `user` in session `sid`, issued to `client_id` with `scope`.
    pub(crate) fn issue_access_to(
        &self,
        user: &User,
        sid: &SessionId,
        client_id: &str,
        scope: &str,
        amr: Amr,
    ) -> Result<IssuedAccess, AuthError> {
        let now = self.clock.now();
        let iat = self.replica.issue_time(&user.id, now);
        let claims = AccessClaims {
            sub: user.id.to_string(),
            sid: sid.to_string(),
            roles: user.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            email: user.email.to_string(),
            amr: amr.names().into_iter().map(str::to_owned).collect(),
            ..self.access_claims(iat, now, client_id, scope)
        };
        self.sign_access(claims)
    }

    /// The claims every access token has, for `client_id` and `scope`, issued at `iat`; `sub`,
    /// `sid`, `roles` and `email` are left empty for the caller.
    pub(crate) fn access_claims(&self, iat: i64, now: Timestamp, client_id: &str, scope: &str) -> AccessClaims {
        let ttl = i64::try_from(self.tokens.access_ttl.as_secs()).unwrap_or(i64::MAX);
        AccessClaims {
            iss: self.tokens.expect.issuer.clone(),
            sub: String::new(),
            aud: Audience::One(self.tokens.expect.audience.clone()),
            exp: iat.saturating_add(ttl),
            iat,
            nbf: Some(now.unix_seconds()),
            jti: random_jti(),
            sid: String::new(),
            client_id: client_id.to_owned(),
            roles: Vec::new(),
            email: String::new(),
            scope: scope.to_owned(),
            amr: Vec::new(),
        }
    }

    /// Signs `claims` with the current signing key.
    pub(crate) fn sign_access(&self, claims: AccessClaims) -> Result<IssuedAccess, AuthError> {
        let signing = self.tokens.keys.current().signing.clone();
        let token = jwt::issue(&signing, &claims).map_err(|e| {
            tracing::error!(error = %e, kid = signing.kid(), "signing failed");
            AuthError::Internal("signing failed")
        })?;
        Ok(IssuedAccess { token, claims })
    }

    /// Verifies an access token and applies `jwt.revocation`.
    pub async fn authenticate_access(&self, token: &[u8]) -> Result<Authenticated, AuthError> {
        let now = self.clock.now();
        let Verified { claims, session_id, roles, user_id, email } =
            self.tokens.verify_signature(token, now).map_err(|e| {
                tracing::debug!(reason = %e, "access token refused");
                AuthError::InvalidToken
            })?;
        match self.tokens.revocation {
            Revocation::Off => {}
            Revocation::Replica => {
                if self.replica.is_revoked(&claims, now) {
                    return Err(AuthError::InvalidToken);
                }
            }
            // A client's own token (client credentials) has no session record to look up.
            Revocation::Strict if claims.sub == claims.client_id => {
                if self.replica.is_revoked(&claims, now) {
                    return Err(AuthError::InvalidToken);
                }
            }
            Revocation::Strict => {
                let record = self.sessions.get(&session_id).await?;
                let alive = record
                    .is_some_and(|r| r.is_live(now) && r.mode == AuthMode::Jwt && r.user_id.as_str() == claims.sub);
                if !alive || self.replica.is_revoked(&claims, now) {
                    return Err(AuthError::InvalidToken);
                }
            }
        }
        Ok(Authenticated {
            user_id,
            email,
            roles,
            mode: AuthMode::Jwt,
            session_id,
            expires_at: claims.expires_at(),
            signed_in_at: None,
            amr: Amr::from_names(claims.amr.iter().map(String::as_str)),
            access: Some(claims),
        })
    }

    /// Opens a JWT-mode record for `user`, signed in with `amr`, and its first tokens.
    pub(crate) async fn open_jwt(
        &self,
        user: User,
        amr: Amr,
        client: ClientInfo,
        previous: Option<&SessionToken>,
    ) -> Result<TokenPair, AuthError> {
        let refresh = RefreshToken::first(SessionId::generate());
        let now = self.clock.now();
        let mut record = self.policy.new_record_with(
            refresh.id().clone(),
            refresh.hash(),
            user.id.clone(),
            AuthMode::Jwt,
            now,
            client,
        );
        record.amr = amr;
        self.sessions.create(&record).await?;
        tracing::info!(user = %user.id, session = %record.id, mode = "jwt", "login");
        let access = self.issue_access(&user, &record.id, amr)?;
        self.end_previous(previous).await?;
        Ok(TokenPair { user, access, refresh, refresh_expires_at: record.expires_at })
    }

    /// Rotates a refresh token from Portcullis' own login (`POST /v1/token/refresh`). An
    /// application's refresh token is refused here: it is redeemed at the provider's token
    /// endpoint, by the client it was issued to.
    pub async fn refresh(&self, presented: &str, ip: Option<&str>) -> Result<TokenPair, RefreshError> {
        let (record, next, user) = self.rotate_refresh(presented, ip, None).await?;
        let access = self.issue_access(&user, &record.id, record.amr)?;
        Ok(TokenPair { user, access, refresh: next, refresh_expires_at: record.expires_at })
    }

    /// Rotates a refresh token (RFC 9700 §4.14): one winner among concurrent uses, the same
    /// answer for a retry of the token just replaced within the grace window, and the whole
    /// session revoked when an older token comes back. `client`: the application the token
    /// must have been issued to (`None`: Portcullis' own login). The record, the token that
    /// replaces the presented one, and its user.
    pub(crate) async fn rotate_refresh(
        &self,
        presented: &str,
        ip: Option<&str>,
        client: Option<&ClientId>,
    ) -> Result<(SessionRecord, RefreshToken, User), RefreshError> {
        let presented = RefreshToken::parse(presented).ok_or(RefreshError::Invalid)?;
        // Two passes at most: a lost race re-reads the record once and then sees the winner.
        for _ in 0..2 {
            let now = self.clock.now();
            let Some(record) = self.sessions.get(presented.id()).await.map_err(AuthError::from)? else {
                return Err(RefreshError::Invalid);
            };
            if record.mode != AuthMode::Jwt || !record.is_live(now) {
                return Err(RefreshError::Invalid);
            }
            if record.grant.as_ref().map(|g| &g.client_id) != client {
                return Err(RefreshError::Invalid);
            }
            let check = refresh::check(&presented, &record, &self.tokens.refresh_key, now, self.tokens.refresh_grace);
            // Only genuine refreshes are limited and counted: a made-up token creates nothing.
            let key = format!("refresh:{}", record.id);
            if matches!(check, RefreshCheck::Current | RefreshCheck::RetryInGrace(_))
                && let Some(until) = self
                    .limits
                    .throttle_state(&key, now)
                    .await
                    .map_err(AuthError::from)?
                    .and_then(|t| t.blocked_at(now))
            {
                return Err(AuthError::Throttled { retry_after: retry_after(until, now) }.into());
            }
            let next = match check {
                RefreshCheck::Invalid => return Err(RefreshError::Invalid),
                RefreshCheck::Reused => {
                    tracing::warn!(user = %record.user_id, session = %record.id, "refresh token reused; session revoked");
                    self.end_record(&record).await?;
                    self.observer.refresh_reuse();
                    let entry = Entry::new(kind::REFRESH_REUSE, outcome::FAILURE).user(&record.user_id).ip(ip);
                    self.audit.record(entry.detail("session revoked")).await;
                    return Err(RefreshError::Reused);
                }
                RefreshCheck::RetryInGrace(current) => current,
                RefreshCheck::Current => {
                    let next = presented.next(&self.tokens.refresh_key);
                    match self.sessions.rotate_refresh(&record.id, record.refresh_generation, next.hash(), now).await {
                        Ok(true) => next,
                        Ok(false) => continue,
                        Err(e) => {
                            // The client gets a 503 and keeps the token it presented; a rotation
                            // that still lands later is taken back, so its retry is not a reuse.
                            if let Err(undo) = self.sessions.undo_rotation(&record, next.hash(), now).await {
                                tracing::warn!(session = %record.id, error = %undo, "could not send the undo of a failed rotation");
                            }
                            return Err(AuthError::from(e).into());
                        }
                    }
                }
            };
            // Counted once it succeeded (a refresh that failed is no use to a loop).
            if let Err(e) = self.limits.begin_attempt(&key, &REFRESH_LIMIT, now).await {
                tracing::warn!(session = %record.id, error = %e, "could not count a refresh");
            }
            let user = match self.users.user(&record.user_id).await.map_err(AuthError::from)? {
                Some(u) if !u.disabled => u,
                _ => return Err(RefreshError::Invalid),
            };
            return Ok((record, next, user));
        }
        Err(RefreshError::Invalid)
    }

    /// RFC 7009: ends what the token grants, if it is one of ours. Anything else is ignored.
    pub async fn revoke_token(&self, token: &str) -> Result<(), AuthError> {
        self.revoke_token_of(token, None).await
    }

    /// RFC 7009 at the provider: as [`Self::revoke_token`], but only a token issued to
    /// `client` is revoked (§2.1); another client's is ignored, with the same answer.
    pub async fn revoke_token_of(&self, token: &str, client: Option<&ClientId>) -> Result<(), AuthError> {
        let now = self.clock.now();
        if let Some(rt) = RefreshToken::parse(token) {
            if let Some(record) = self.sessions.get(rt.id()).await?
                && record.mode == AuthMode::Jwt
                && client.is_none_or(|c| record.grant.as_ref().is_some_and(|g| &g.client_id == c))
                && !matches!(
                    refresh::check(&rt, &record, &self.tokens.refresh_key, now, Duration::ZERO),
                    RefreshCheck::Invalid
                )
            {
                self.end_record(&record).await?;
            }
            return Ok(());
        }
        // An access token: revoke it even if it has expired in the meantime (harmless), but
        // only if it is genuinely ours.
        let keys = self.tokens.keys.current();
        let lenient = Expectations { leeway: jwt::token::MAX_LEEWAY, ..self.tokens.expect.clone() };
        let Ok(claims) = jwt::verify(token, &keys.keys, &lenient, now) else { return Ok(()) };
        if client.is_some_and(|c| c.as_str() != claims.client_id) || self.replica.is_revoked(&claims, now) {
            return Ok(());
        }
        // Each session may deny a few of its tokens one by one; past that, the session ends.
        let horizon = self.tokens.access_ttl + jwt::token::MAX_LEEWAY + Duration::from_secs(60);
        let rule = ThrottleRule {
            free: MAX_DENIED_TOKENS_PER_SESSION,
            base_delay: horizon,
            max_delay: horizon,
            window: horizon,
        };
        let key = format!("revoke:{}", claims.sid);
        if let Attempt::Refused { .. } = self.limits.begin_attempt(&key, &rule, now).await? {
            let record = match SessionId::parse(&claims.sid) {
                Some(sid) => self.sessions.get(&sid).await?,
                None => None,
            };
            tracing::info!(session = %claims.sid, "too many access tokens revoked one by one; ending the session");
            return match record {
                Some(record) => self.end_record(&record).await,
                None => {
                    let until = claims.expires_at().plus(Duration::from_secs(60));
                    self.revoke(RevocationEvent::Deny { what: Denied::Session(claims.sid), until }).await
                }
            };
        }
        let until = claims.expires_at().plus(Duration::from_secs(60));
        self.revoke(RevocationEvent::Deny { what: Denied::Token(claims.jti), until }).await?;
        Ok(())
    }
}

/// A key rotation that happened.
#[derive(Debug, Clone)]
pub struct RotatedKey {
    pub kid: String,
    pub algorithm: Algorithm,
    /// Whether the other nodes were told at once (they re-read the keys within
    /// [`KEY_RELOAD_INTERVAL`] anyway).
    pub announced: bool,
}

impl Service {
    /// Rotates the signing key: a new key of `algorithm` signs from now on, here at once and on
    /// every node as soon as it hears of it; the keys it replaces stay published until every
    /// token they signed has expired. Audited with `actor` (`cli`, or an administrator's id).
    pub async fn rotate_keys(&self, algorithm: Algorithm, actor: &str) -> Result<RotatedKey, KeyRingError> {
        let kid = self.tokens.keys.rotate(algorithm).await?;
        let entry = Entry::new(kind::KEY_ROTATION, outcome::SUCCESS).actor(actor).detail(format!("{algorithm} {kid}"));
        self.audit.record(entry).await;
        let announced = match self.feed.announce_keys_changed().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "could not announce the new key; nodes pick it up within seconds");
                false
            }
        };
        Ok(RotatedKey { kid, algorithm, announced })
    }
}
