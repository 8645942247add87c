//! The signing keys a node uses: the newest key signs, every key not yet retired verifies and
//! is published in the JWKS. Keys live in the users store so every node shares them; each node
//! re-reads them every [`KEY_RELOAD_INTERVAL`], so `portcullis keys rotate` reaches a running
//! server within seconds.
//!
//! ID tokens of the OpenID Connect provider are signed with RS256, which Discovery requires
//! every provider to offer: with the signing key when it is RS256, otherwise with one RSA key
//! kept as a stored secret ([`ID_TOKEN_KEY_NAME`]), made the first time the provider is used
//! (an RSA key takes a moment to make) and published in the JWKS from then on.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use portcullis_core::jwt::{Algorithm, KeySet, SigningKey};
use portcullis_core::{Clock, Timestamp};
use portcullis_store::{KeyStore, StoreError, StoredKey};

/// How often the stored keys are re-read.
pub const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// The stored secret holding the RS256 key ID tokens are signed with when the signing key is of
/// another algorithm.
pub const ID_TOKEN_KEY_NAME: &str = "oidc_id_token_rs256";

#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] portcullis_core::jwt::KeyError),
    #[error("no signing key is available")]
    NoSigningKey,
}

/// What a node signs and verifies with at one moment.
pub struct KeyState {
    pub signing: Arc<SigningKey>,
    /// What access tokens are verified with.
    pub keys: KeySet,
    /// The RS256 key ID tokens are signed with, once there is one.
    pub id_token: Option<Arc<SigningKey>>,
    /// What ID tokens (and `id_token_hint`s) are verified with: `keys` and the ID-token key.
    pub id_token_keys: KeySet,
    /// The JWKS document (every key above), serialised once per change.
    pub jwks_json: Arc<str>,
}

/// How a key ring is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A node that serves: signing keys are switched to the configured algorithm if needed.
    Serve,
    /// A command run beside the nodes (the CLI): a signing key is made only when there is none,
    /// so a command never undoes a `keys rotate` to another algorithm.
    Command,
}

/// How a stored key stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    Signing,
    Retiring(Timestamp),
    Retired,
}

pub fn key_status(key: &StoredKey, now: Timestamp) -> KeyStatus {
    match key.retire_at {
        None => KeyStatus::Signing,
        Some(at) if now < at => KeyStatus::Retiring(at),
        Some(_) => KeyStatus::Retired,
    }
}

pub struct KeyRing {
    store: Arc<dyn KeyStore>,
    clock: Arc<dyn Clock>,
    /// An HS256 key from `jwt.secret`: configured, not stored.
    configured: Option<Arc<SigningKey>>,
    /// How long a replaced key stays published: the longest an access token it signed lives.
    retire_after: Duration,
    state: RwLock<Arc<KeyState>>,
}

impl KeyRing {
    /// Loads the stored keys, creating a key of `algorithm` if none is signing with it.
    pub async fn open(
        store: Arc<dyn KeyStore>,
        clock: Arc<dyn Clock>,
        algorithm: Algorithm,
        hmac_secret: Option<Vec<u8>>,
        retire_after: Duration,
        purpose: Purpose,
    ) -> Result<Self, KeyRingError> {
        let configured = match (algorithm, hmac_secret) {
            (Algorithm::HS256, Some(secret)) => Some(Arc::new(SigningKey::from_private(Algorithm::HS256, &secret)?)),
            _ => None,
        };
        if configured.is_none() {
            let stored = store.signing_keys().await?;
            let signing_alg = stored.iter().find(|k| k.retire_at.is_none()).map(|k| k.alg.as_str());
            let switch = match purpose {
                Purpose::Serve => signing_alg != Some(algorithm.as_str()),
                Purpose::Command => signing_alg.is_none(),
            };
            if switch {
                rotate(store.as_ref(), clock.as_ref(), algorithm, retire_after).await?;
            }
        }
        let id_token = store.find_secret(ID_TOKEN_KEY_NAME).await?;
        let state = build(&store.signing_keys().await?, configured.clone(), id_token, clock.now())?;
        Ok(Self { store, clock, configured, retire_after, state: RwLock::new(Arc::new(state)) })
    }

    pub fn current(&self) -> Arc<KeyState> {
        match self.state.read() {
            Ok(s) => Arc::clone(&s),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Re-reads the stored keys; `true` when the published set changed.
    pub async fn reload(&self) -> Result<bool, KeyRingError> {
        let id_token = self.store.find_secret(ID_TOKEN_KEY_NAME).await?;
        let state = build(&self.store.signing_keys().await?, self.configured.clone(), id_token, self.clock.now())?;
        let changed =
            state.jwks_json != self.current().jwks_json || state.signing.kid() != self.current().signing.kid();
        if let Ok(mut s) = self.state.write() {
            *s = Arc::new(state);
        }
        Ok(changed)
    }

    /// The key ID tokens are signed with: made (and stored for every node) the first time it is
    /// asked for, unless another node made it already.
    pub async fn id_token_key(&self) -> Result<Arc<SigningKey>, KeyRingError> {
        if let Some(key) = &self.current().id_token {
            return Ok(Arc::clone(key));
        }
        // Another node may have made it since the last reload.
        self.reload().await?;
        if let Some(key) = &self.current().id_token {
            return Ok(Arc::clone(key));
        }
        let candidate = tokio::task::spawn_blocking(|| SigningKey::generate(Algorithm::RS256))
            .await
            .map_err(|_| KeyRingError::NoSigningKey)??;
        self.store.secret(ID_TOKEN_KEY_NAME, candidate.private_bytes().to_vec()).await?;
        self.reload().await?;
        let key = self.current().id_token.clone().ok_or(KeyRingError::NoSigningKey)?;
        tracing::info!(kid = key.kid(), "new ID-token signing key (RS256)");
        Ok(key)
    }

    /// Makes a new signing key of `algorithm` and switches to it at once.
    pub(crate) async fn rotate(&self, algorithm: Algorithm) -> Result<String, KeyRingError> {
        let kid = rotate(self.store.as_ref(), self.clock.as_ref(), algorithm, self.retire_after).await?;
        self.reload().await?;
        Ok(kid)
    }

    /// The stored keys, newest first.
    pub async fn stored(&self) -> Result<Vec<StoredKey>, KeyRingError> {
        Ok(self.store.signing_keys().await?)
    }

    /// Whether the signing key comes from the settings (`jwt.secret`) rather than the store.
    pub fn is_configured(&self) -> bool {
        self.configured.is_some()
    }
}

/// Generates and stores a new signing key; the keys it replaces retire once every token they
/// signed has expired.
async fn rotate(
    store: &dyn KeyStore,
    clock: &dyn Clock,
    algorithm: Algorithm,
    retire_after: Duration,
) -> Result<String, KeyRingError> {
    let key = tokio::task::spawn_blocking(move || SigningKey::generate(algorithm))
        .await
        .map_err(|_| KeyRingError::NoSigningKey)??;
    let now = clock.now();
    let stored = StoredKey {
        kid: key.kid().to_owned(),
        alg: algorithm.as_str().to_owned(),
        private: key.private_bytes().to_vec(),
        created_at: now,
        retire_at: None,
    };
    store.add_signing_key(stored, now.plus(retire_after)).await?;
    tracing::info!(kid = key.kid(), alg = %algorithm, "new signing key");
    Ok(key.kid().to_owned())
}

fn build(
    stored: &[StoredKey],
    configured: Option<Arc<SigningKey>>,
    id_token: Option<Vec<u8>>,
    now: Timestamp,
) -> Result<KeyState, KeyRingError> {
    let mut live = Vec::new();
    for k in stored {
        if key_status(k, now) == KeyStatus::Retired {
            continue;
        }
        let Some(alg) = Algorithm::parse(&k.alg) else {
            tracing::warn!(kid = %k.kid, alg = %k.alg, "stored key with an unknown algorithm skipped");
            continue;
        };
        match SigningKey::from_private(alg, &k.private) {
            Ok(key) => live.push((k.retire_at.is_none(), Arc::new(key))),
            Err(e) => tracing::warn!(kid = %k.kid, error = %e, "stored key could not be loaded"),
        }
    }
    // Stored keys come newest first; a configured key outranks them.
    let signing = match &configured {
        Some(k) => Arc::clone(k),
        None => {
            live.iter().find(|(signing, _)| *signing).map(|(_, k)| Arc::clone(k)).ok_or(KeyRingError::NoSigningKey)?
        }
    };
    let mut verifying: Vec<_> = live.iter().map(|(_, k)| k.verifying_key().clone()).collect();
    verifying.push(signing.verifying_key().clone());
    let keys = KeySet::new(verifying.iter().cloned());
    let id_token = if signing.alg() == Algorithm::RS256 {
        Some(Arc::clone(&signing))
    } else {
        match id_token.map(|private| SigningKey::from_private(Algorithm::RS256, &private)) {
            None => None,
            Some(Ok(key)) => Some(Arc::new(key)),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "the stored ID-token key could not be loaded");
                None
            }
        }
    };
    verifying.extend(id_token.as_ref().map(|k| k.verifying_key().clone()));
    let id_token_keys = KeySet::new(verifying);
    let jwks_json: Arc<str> =
        serde_json::to_string(&id_token_keys.jwks()).unwrap_or_else(|_| "{\"keys\":[]}".into()).into();
    Ok(KeyState { signing, keys, id_token, id_token_keys, jwks_json })
}
