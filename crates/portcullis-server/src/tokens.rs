//! JWT mode: issuing access tokens, verifying them (with the verified-token cache and the
//! revocation rules of `jwt.revocation`), and the refresh-token flows.

use std::sync::Arc;
use std::time::Duration;

use portcullis_core::jwt::{self, AccessClaims, Audience, Expectations, TokenError};
use portcullis_core::refresh::{self, RefreshCheck, RefreshKey, RefreshToken};
use portcullis_core::revocation::{Denied, RevocationEvent};
use portcullis_core::secret::{SessionId, b64, fill_random};
use portcullis_core::{AuthMode, ClientInfo, Email, Timestamp, User, role_set};
use portcullis_store::{Attempt, ThrottleRule};
use quick_cache::sync::Cache;

use crate::audit::{Entry, kind, outcome};
use crate::auth::{Auth, AuthError, Authenticated};
use crate::keyring::KeyRing;
use crate::settings::Revocation;

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

pub struct Tokens {
    pub keys: Arc<KeyRing>,
    pub expect: Expectations,
    pub access_ttl: Duration,
    pub revocation: Revocation,
    pub refresh_key: RefreshKey,
    pub refresh_grace: Duration,
    cache: Option<Cache<String, Arc<AccessClaims>>>,
}

/// Name of the stored secret the refresh chain is keyed with.
pub const REFRESH_KEY_NAME: &str = "refresh_chain_key";

impl Tokens {
    pub fn new(
        keys: Arc<KeyRing>,
        expect: Expectations,
        access_ttl: Duration,
        revocation: Revocation,
        refresh_key: RefreshKey,
        refresh_grace: Duration,
        cache_size: usize,
    ) -> Self {
        let cache = (cache_size > 0).then(|| Cache::new(cache_size));
        Self { keys, expect, access_ttl, revocation, refresh_key, refresh_grace, cache }
    }

    /// Signs an access token for `user` in session `sid`.
    pub fn issue(&self, auth: &Auth, user: &User, sid: &SessionId) -> Result<IssuedAccess, AuthError> {
        let now = auth.clock.now();
        let iat = auth.replica.issue_time(&user.id, now);
        let mut jti = [0u8; 16];
        fill_random(&mut jti);
        let ttl = i64::try_from(self.access_ttl.as_secs()).unwrap_or(i64::MAX);
        let claims = AccessClaims {
            iss: self.expect.issuer.clone(),
            sub: user.id.to_string(),
            aud: Audience::One(self.expect.audience.clone()),
            exp: iat.saturating_add(ttl),
            iat,
            nbf: Some(now.unix_seconds()),
            jti: b64(&jti),
            sid: sid.to_string(),
            roles: user.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            email: user.email.to_string(),
        };
        let signing = self.keys.current().signing.clone();
        let token = jwt::issue(&signing, &claims).map_err(|e| {
            tracing::error!(error = %e, kid = signing.kid(), "signing failed");
            AuthError::Internal("signing failed")
        })?;
        Ok(IssuedAccess { token, claims })
    }

    /// Signature and claims, through the cache. Expiry is re-checked on every hit.
    pub fn verify_signature(&self, token: &str, now: Timestamp) -> Result<Arc<AccessClaims>, TokenError> {
        if let Some(cache) = &self.cache
            && let Some(claims) = cache.get(token)
        {
            jwt::check_claims(&claims, &self.expect, now)?;
            return Ok(claims);
        }
        let keys = self.keys.current();
        let claims = Arc::new(jwt::verify(token, &keys.keys, &self.expect, now)?);
        if let Some(cache) = &self.cache {
            cache.insert(token.to_owned(), Arc::clone(&claims));
        }
        Ok(claims)
    }

    /// Verifies an access token and applies `jwt.revocation`.
    pub async fn authenticate(&self, auth: &Auth, token: &str) -> Result<Authenticated, AuthError> {
        let now = auth.clock.now();
        let claims = self.verify_signature(token, now).map_err(|e| {
            tracing::debug!(reason = %e, "access token refused");
            AuthError::InvalidToken
        })?;
        let session_id = SessionId::parse(&claims.sid).ok_or(AuthError::InvalidToken)?;
        match self.revocation {
            Revocation::Off => {}
            Revocation::Replica => {
                if auth.replica.is_revoked(&claims, now) {
                    return Err(AuthError::InvalidToken);
                }
            }
            Revocation::Strict => {
                let record = auth.sessions.get(&session_id).await?;
                let alive = record
                    .is_some_and(|r| r.is_live(now) && r.mode == AuthMode::Jwt && r.user_id.as_str() == claims.sub);
                if !alive || auth.replica.is_revoked(&claims, now) {
                    return Err(AuthError::InvalidToken);
                }
            }
        }
        let roles = role_set(claims.roles.iter().map(String::as_str)).map_err(|_| AuthError::InvalidToken)?;
        Ok(Authenticated {
            user_id: portcullis_core::UserId::from_stored(claims.sub.clone()),
            email: Email::from_canonical(claims.email.clone()),
            roles,
            mode: AuthMode::Jwt,
            session_id,
            expires_at: claims.expires_at(),
            access: Some(claims),
        })
    }

    /// A JWT-mode login: one session record, an access token and the first refresh token.
    pub async fn login(
        &self,
        auth: &Auth,
        email: &str,
        password: String,
        client: ClientInfo,
    ) -> Result<TokenPair, AuthError> {
        let user = auth.check_credentials(email, password, &client, AuthMode::Jwt).await?;
        let refresh = RefreshToken::first(SessionId::generate());
        let now = auth.clock.now();
        let record = auth.policy.new_record_with(
            refresh.id().clone(),
            refresh.hash(),
            user.id.clone(),
            AuthMode::Jwt,
            now,
            client,
        );
        auth.sessions.create(&record).await?;
        tracing::info!(user = %user.id, session = %record.id, mode = "jwt", "login");
        let access = self.issue(auth, &user, &record.id)?;
        Ok(TokenPair { user, access, refresh, refresh_expires_at: record.expires_at })
    }

    /// Rotates a refresh token (RFC 9700 §4.14): one winner among concurrent uses, the same
    /// answer for a retry of the token just replaced within the grace window, and the whole
    /// session revoked when an older token comes back.
    pub async fn refresh(&self, auth: &Auth, presented: &str, ip: Option<&str>) -> Result<TokenPair, RefreshError> {
        let presented = RefreshToken::parse(presented).ok_or(RefreshError::Invalid)?;
        // Two passes at most: a lost race re-reads the record once and then sees the winner.
        for _ in 0..2 {
            let now = auth.clock.now();
            let Some(record) = auth.sessions.get(presented.id()).await.map_err(AuthError::from)? else {
                return Err(RefreshError::Invalid);
            };
            if record.mode != AuthMode::Jwt || !record.is_live(now) {
                return Err(RefreshError::Invalid);
            }
            let check = refresh::check(&presented, &record, &self.refresh_key, now, self.refresh_grace);
            // Only genuine refreshes are limited and counted: a made-up token creates nothing.
            let key = format!("refresh:{}", record.id);
            if matches!(check, RefreshCheck::Current | RefreshCheck::RetryInGrace(_))
                && let Some(until) = auth
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
                    auth.end_record(&record).await?;
                    auth.metrics.refresh_reuse();
                    let entry = Entry::new(kind::REFRESH_REUSE, outcome::FAILURE).user(&record.user_id).ip(ip);
                    auth.audit.record(entry.detail("session revoked")).await;
                    return Err(RefreshError::Reused);
                }
                RefreshCheck::RetryInGrace(current) => current,
                RefreshCheck::Current => {
                    let next = presented.next(&self.refresh_key);
                    match auth.sessions.rotate_refresh(&record.id, record.refresh_generation, next.hash(), now).await {
                        Ok(true) => next,
                        Ok(false) => continue,
                        Err(e) => {
                            // The client gets a 503 and keeps the token it presented; a rotation
                            // that still lands later is taken back, so its retry is not a reuse.
                            if let Err(undo) = auth.sessions.undo_rotation(&record, next.hash(), now).await {
                                tracing::warn!(session = %record.id, error = %undo, "could not send the undo of a failed rotation");
                            }
                            return Err(AuthError::from(e).into());
                        }
                    }
                }
            };
            // Counted once it succeeded (a refresh that failed is no use to a loop).
            if let Err(e) = auth.limits.begin_attempt(&key, &REFRESH_LIMIT, now).await {
                tracing::warn!(session = %record.id, error = %e, "could not count a refresh");
            }
            let user = match auth.users.user(&record.user_id).await.map_err(AuthError::from)? {
                Some(u) if !u.disabled => u,
                _ => return Err(RefreshError::Invalid),
            };
            let access = self.issue(auth, &user, &record.id)?;
            return Ok(TokenPair { user, access, refresh: next, refresh_expires_at: record.expires_at });
        }
        Err(RefreshError::Invalid)
    }

    /// RFC 7009: ends what the token grants, if it is one of ours. Anything else is ignored.
    pub async fn revoke(&self, auth: &Auth, token: &str) -> Result<(), AuthError> {
        let now = auth.clock.now();
        if let Some(rt) = RefreshToken::parse(token) {
            if let Some(record) = auth.sessions.get(rt.id()).await?
                && record.mode == AuthMode::Jwt
                && !matches!(
                    refresh::check(&rt, &record, &self.refresh_key, now, Duration::ZERO),
                    RefreshCheck::Invalid
                )
            {
                auth.end_record(&record).await?;
            }
            return Ok(());
        }
        // An access token: revoke it even if it has expired in the meantime (harmless), but
        // only if it is genuinely ours.
        let keys = self.keys.current();
        let lenient = Expectations { leeway: jwt::token::MAX_LEEWAY, ..self.expect.clone() };
        let Ok(claims) = jwt::verify(token, &keys.keys, &lenient, now) else { return Ok(()) };
        if auth.replica.is_revoked(&claims, now) {
            return Ok(());
        }
        // Each session may deny a few of its tokens one by one; past that, the session ends.
        let horizon = self.access_ttl + jwt::token::MAX_LEEWAY + Duration::from_secs(60);
        let rule = ThrottleRule {
            free: MAX_DENIED_TOKENS_PER_SESSION,
            base_delay: horizon,
            max_delay: horizon,
            window: horizon,
        };
        let key = format!("revoke:{}", claims.sid);
        if let Attempt::Refused { .. } = auth.limits.begin_attempt(&key, &rule, now).await? {
            let record = match SessionId::parse(&claims.sid) {
                Some(sid) => auth.sessions.get(&sid).await?,
                None => None,
            };
            tracing::info!(session = %claims.sid, "too many access tokens revoked one by one; ending the session");
            return match record {
                Some(record) => auth.end_record(&record).await,
                None => {
                    let until = claims.expires_at().plus(Duration::from_secs(60));
                    auth.revoke(RevocationEvent::Deny { what: Denied::Session(claims.sid), until }).await
                }
            };
        }
        let until = claims.expires_at().plus(Duration::from_secs(60));
        auth.revoke(RevocationEvent::Deny { what: Denied::Token(claims.jti), until }).await?;
        Ok(())
    }
}
