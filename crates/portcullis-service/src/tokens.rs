//! JWT mode's state on a node: the signing keys, what tokens are checked against, the
//! revocation rule, the refresh-chain key and the verified-token cache.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::jwt::{self, AccessClaims, Expectations, TokenError};
use portcullis_core::refresh::RefreshKey;
use portcullis_core::{Role, SessionId, Timestamp, role_set};
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
    cache: Option<Cache<String, Verified>>,
}

/// An access token whose signature and claims checked out, with what its claims say parsed
/// once: kept in the verified-token cache as it is, so a cached token is not parsed again.
#[derive(Clone)]
pub struct Verified {
    pub claims: Arc<AccessClaims>,
    pub session_id: SessionId,
    pub roles: BTreeSet<Role>,
}

impl Verified {
    fn of(claims: AccessClaims) -> Result<Self, TokenError> {
        let session_id = SessionId::parse(&claims.sid).ok_or(TokenError::Claims("sid".into()))?;
        let roles =
            role_set(claims.roles.iter().map(String::as_str)).map_err(|_| TokenError::Claims("roles".into()))?;
        Ok(Self { claims: Arc::new(claims), session_id, roles })
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
    pub fn verify_signature(&self, token: &str, now: Timestamp) -> Result<Verified, TokenError> {
        if let Some(cache) = &self.cache
            && let Some(verified) = cache.get(token)
        {
            jwt::check_claims(&verified.claims, &self.expect, now)?;
            return Ok(verified);
        }
        let keys = self.keys.current();
        let verified = Verified::of(jwt::verify(token, &keys.keys, &self.expect, now)?)?;
        if let Some(cache) = &self.cache {
            cache.insert(token.to_owned(), verified.clone());
        }
        Ok(verified)
    }
}
