//! JWT mode's state on a node: the signing keys, what tokens are checked against, the
//! revocation rule, the refresh-chain key and the verified-token cache.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::jwt::{self, AccessClaims, Expectations, TokenError};
use portcullis_core::refresh::RefreshKey;
use portcullis_core::{Email, Role, SessionId, Timestamp, UserId, role_set};
use quick_cache::Equivalent;
use quick_cache::sync::Cache;

use crate::keyring::KeyRing;

/// How access tokens are checked for revocation (`jwt.revocation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Revocation {
    /// Signature and claims only: a revoked token works until it expires.
    Off,
    /// This node's replica of the deny-list and not-before epochs, without a store call.
    Replica,
    /// The replica, and the session record looked up on every request.
    Strict,
}

pub struct Tokens {
    pub keys: Arc<KeyRing>,
    pub expect: Expectations,
    pub access_ttl: Duration,
    pub revocation: Revocation,
    pub refresh_key: RefreshKey,
    pub refresh_grace: Duration,
    cache: Option<Cache<CachedToken, Verified>>,
}

/// How many bytes at a token's end the verified-token cache hashes: the end of its signature,
/// which no one can choose without the signing key. Lookups compare the whole token.
const HASHED_TAIL: usize = 32;

fn hash_tail<H: Hasher>(token: &[u8], state: &mut H) {
    token[token.len().saturating_sub(HASHED_TAIL)..].hash(state);
}

/// A token in the verified-token cache. Only tokens that verified are inserted, so the hashed
/// tails are signature bytes; a lookup hashes the same tail of what was presented and then
/// compares every byte, so a token that differs anywhere is a miss.
#[derive(PartialEq, Eq)]
struct CachedToken(Box<[u8]>);

impl Hash for CachedToken {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_tail(&self.0, state);
    }
}

/// A presented token, looked up without copying it.
struct Presented<'a>(&'a [u8]);

impl Hash for Presented<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_tail(self.0, state);
    }
}

impl Equivalent<CachedToken> for Presented<'_> {
    fn equivalent(&self, key: &CachedToken) -> bool {
        *self.0 == *key.0
    }
}

/// An access token whose signature and claims checked out, with what its claims say parsed
/// once: kept in the verified-token cache as it is, so a cached token is not parsed again.
#[derive(Clone)]
pub struct Verified {
    pub claims: Arc<AccessClaims>,
    pub session_id: SessionId,
    pub roles: Arc<BTreeSet<Role>>,
    pub user_id: UserId,
    pub email: Email,
}

impl Verified {
    fn of(claims: AccessClaims) -> Result<Self, TokenError> {
        let session_id = SessionId::parse(&claims.sid).ok_or(TokenError::Claims("sid".into()))?;
        let roles =
            role_set(claims.roles.iter().map(String::as_str)).map_err(|_| TokenError::Claims("roles".into()))?;
        let user_id = UserId::from_stored(&claims.sub);
        let email = Email::from_canonical(&claims.email);
        Ok(Self { claims: Arc::new(claims), session_id, roles: roles.into(), user_id, email })
    }
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

    /// Signature and claims, through the cache. Expiry is re-checked on every hit.
    ///
    /// The token comes as bytes, as it arrived: a cached one is found by comparing bytes, and
    /// only one that is not cached is read as text, by the strict verifier (which refuses
    /// anything but three segments of base64url).
    pub fn verify_signature(&self, token: &[u8], now: Timestamp) -> Result<Verified, TokenError> {
        if let Some(cache) = &self.cache
            && let Some(verified) = cache.get(&Presented(token))
        {
            jwt::check_claims(&verified.claims, &self.expect, now)?;
            return Ok(verified);
        }
        let text = std::str::from_utf8(token).map_err(|_| TokenError::Malformed("base64url"))?;
        let keys = self.keys.current();
        let verified = Verified::of(jwt::verify(text, &keys.keys, &self.expect, now)?)?;
        if let Some(cache) = &self.cache {
            cache.insert(CachedToken(token.into()), verified.clone());
        }
        Ok(verified)
    }
}
