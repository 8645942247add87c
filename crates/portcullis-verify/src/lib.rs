//! # portcullis-verify
//!
//! For services that sit behind Portcullis: verify its access tokens locally, with the same
//! checks the server makes (`portcullis_token::jwt::verify`), from its published JWKS.
//!
//! ```no_run
//! # async fn run() -> Result<(), portcullis_verify::VerifyError> {
//! let verifier = portcullis_verify::Verifier::builder("https://auth.example.com").build()?;
//! let claims = verifier.verify("eyJhbGciOi...").await?;
//! println!("{} has roles {:?}", claims.sub, claims.roles);
//! # Ok(()) }
//! ```
//!
//! - The key set is fetched from `<issuer>/.well-known/jwks.json` (or a URL you give), kept,
//!   re-read every [`DEFAULT_MAX_AGE`], and re-read at once when a token names a `kid` it does not
//!   know (a key rotation) — but at most once per [`DEFAULT_MIN_REFETCH`], so a flood of tokens
//!   with made-up key ids cannot turn into a flood of JWKS requests.
//! - Only asymmetric keys are published; HS256 tokens cannot be verified by other services.
//! - Verification is local. By itself, a token revoked at Portcullis (logout, sign out
//!   everywhere) stays valid here until it expires; with
//!   [`VerifierBuilder::follow_revocations`] the verifier follows Portcullis' revocation feed
//!   and refuses it within milliseconds, still without a network call per request (the
//!   `follow` module: a replica fed by `GET /v1/revocations/stream`, and [`FeedLoss`] for
//!   while the feed is lost).
//!
//! With the `axum` feature (on by default): [`axum_support::Claims`], an extractor, and
//! [`axum_support::VerifyLayer`], a tower layer that refuses requests without a valid token.
//!
//! This crate depends on `portcullis-token` only (`cargo tree -p portcullis-verify` shows no
//! password hashing and no Unicode tables); it must not depend on the core, the stores or the
//! server, which its tests alone use.

#[cfg(feature = "axum")]
pub mod axum_support;
mod follow;

pub use follow::{DEFAULT_STALENESS, FeedLoss, FeedState, MAX_EVENT_BYTES, SILENCE_LIMIT};

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_token::clock::{Clock, SystemClock};
pub use portcullis_token::jwt::AccessClaims;
use portcullis_token::jwt::{self, Expectations, Jwks, KeySet, TokenError};
use tokio::sync::{Mutex, RwLock};

/// How long a fetched key set is used before it is re-read.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// The least time between two fetches caused by unknown key ids.
pub const DEFAULT_MIN_REFETCH: Duration = Duration::from_secs(30);
/// The largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The token is not valid; the reason is for logs, never for the client.
    #[error("invalid token: {0}")]
    Invalid(#[from] TokenError),
    /// The key set could not be fetched and none is known yet.
    #[error("the key set is unavailable: {0}")]
    KeysUnavailable(String),
    #[error("invalid verifier configuration: {0}")]
    Config(String),
    /// The token is valid but was revoked at Portcullis (the revocation feed said so).
    #[error("the token was revoked")]
    Revoked,
    /// The revocation feed has been lost for longer than the staleness bound
    /// ([`FeedLoss::RefuseAfter`]): no token is accepted until it is back.
    #[error("the revocation feed is lost; tokens are refused until it is back")]
    FeedLost,
}

pub struct VerifierBuilder {
    issuer: String,
    jwks_url: Option<String>,
    audience: Option<String>,
    leeway: Duration,
    max_age: Duration,
    min_refetch: Duration,
    clock: Arc<dyn Clock>,
    follow: Option<(String, String)>,
    feed_url: Option<String>,
    feed_loss: FeedLoss,
}

impl VerifierBuilder {
    /// Follow Portcullis' revocation feed as the service client `client_id` (registered with
    /// `portcullis client add NAME --service`): a snapshot at start, then every revocation as
    /// it happens, into a replica each verification consults (no network call per request).
    /// Needs a Tokio runtime when [`build`](Self::build) is called.
    pub fn follow_revocations(mut self, client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        self.follow = Some((client_id.into(), client_secret.into()));
        self
    }

    /// Where the revocation stream is, if not at `<issuer>/v1/revocations/stream` (a node's own
    /// address when the issuer is a balancer's).
    pub fn feed_url(mut self, url: impl Into<String>) -> Self {
        self.feed_url = Some(url.into());
        self
    }

    /// What to do while the feed is lost (default: accept for [`DEFAULT_STALENESS`], then
    /// refuse).
    pub fn when_feed_lost(mut self, policy: FeedLoss) -> Self {
        self.feed_loss = policy;
        self
    }
    /// Where the JWKS is, if not at `<issuer>/.well-known/jwks.json`.
    pub fn jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = Some(url.into());
        self
    }

    /// The expected `aud`; defaults to the issuer, as Portcullis does.
    pub fn audience(mut self, aud: impl Into<String>) -> Self {
        self.audience = Some(aud.into());
        self
    }

    /// Clock skew tolerated (at most 60 s; default 30 s).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway.min(jwt::token::MAX_LEEWAY);
        self
    }

    pub fn max_age(mut self, d: Duration) -> Self {
        self.max_age = d;
        self
    }

    pub fn min_refetch_interval(mut self, d: Duration) -> Self {
        self.min_refetch = d;
        self
    }

    /// The clock expiry is checked against (tests move it).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn build(self) -> Result<Verifier, VerifyError> {
        let issuer = self.issuer.trim_end_matches('/').to_owned();
        if !(issuer.starts_with("http://") || issuer.starts_with("https://")) {
            return Err(VerifyError::Config(format!("the issuer must be an http(s) URL, not {issuer:?}")));
        }
        let jwks_url = self.jwks_url.unwrap_or_else(|| format!("{issuer}/.well-known/jwks.json"));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| VerifyError::Config(e.to_string()))?;
        let follower = match self.follow {
            None => None,
            Some((client_id, secret)) => {
                let runtime = tokio::runtime::Handle::try_current()
                    .map_err(|_| VerifyError::Config("follow_revocations needs a Tokio runtime".into()))?;
                // The stream lives as long as the verifier: no overall timeout, only one to connect.
                let stream_client = reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| VerifyError::Config(e.to_string()))?;
                let follower = Arc::new(follow::Follower::new(self.feed_loss, Arc::clone(&self.clock)));
                let source = follow::FeedSource {
                    url: self.feed_url.unwrap_or_else(|| format!("{issuer}/v1/revocations/stream")),
                    client_id,
                    secret,
                    client: stream_client,
                };
                runtime.spawn(follow::follow(Arc::downgrade(&follower), source));
                Some(follower)
            }
        };
        Ok(Verifier {
            inner: Arc::new(Inner {
                follower,
                expect: Expectations {
                    audience: self.audience.unwrap_or_else(|| issuer.clone()),
                    issuer,
                    leeway: self.leeway,
                },
                jwks_url,
                client,
                max_age: self.max_age,
                min_refetch: self.min_refetch,
                clock: self.clock,
                keys: RwLock::new(None),
                fetching: Mutex::new(FetchState { last_unknown_kid: None, fetches: 0 }),
            }),
        })
    }
}

struct Fetched {
    keys: KeySet,
    at: Instant,
}

struct FetchState {
    /// The last fetch caused by an unknown `kid` (the rate-limited kind).
    last_unknown_kid: Option<Instant>,
    fetches: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Why {
    /// None held yet, or older than `max_age`.
    Stale,
    /// A token named a key id the held set lacks.
    UnknownKid,
}

struct Inner {
    /// The revocation replica, when following the feed.
    follower: Option<Arc<follow::Follower>>,
    expect: Expectations,
    jwks_url: String,
    client: reqwest::Client,
    max_age: Duration,
    min_refetch: Duration,
    clock: Arc<dyn Clock>,
    keys: RwLock<Option<Fetched>>,
    fetching: Mutex<FetchState>,
}

/// Verifies Portcullis access tokens. Cheap to clone; clones share the key set.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

impl Verifier {
    /// A verifier for tokens issued by `issuer` (Portcullis' `public_url`).
    pub fn builder(issuer: impl Into<String>) -> VerifierBuilder {
        VerifierBuilder {
            issuer: issuer.into(),
            jwks_url: None,
            audience: None,
            leeway: Duration::from_secs(30),
            max_age: DEFAULT_MAX_AGE,
            min_refetch: DEFAULT_MIN_REFETCH,
            clock: Arc::new(SystemClock),
            follow: None,
            feed_url: None,
            feed_loss: FeedLoss::RefuseAfter(DEFAULT_STALENESS),
        }
    }

    /// The revocation feed's state, when following it: for the service's health check and
    /// metrics (`last_lag` is the revocation lag).
    pub fn feed_state(&self) -> Option<FeedState> {
        self.inner.follower.as_ref().map(|f| f.state())
    }

    /// How many times the key set has been fetched.
    pub async fn fetch_count(&self) -> u64 {
        self.inner.fetching.lock().await.fetches
    }

    /// Fetches the key set, one fetch at a time. A stale set is re-read unless another caller
    /// just did; an unknown `kid` causes at most one fetch per `min_refetch`.
    async fn fetch(&self, why: Why) -> Result<(), VerifyError> {
        let mut state = self.inner.fetching.lock().await;
        match why {
            Why::Stale => {
                let fresh = self.inner.keys.read().await.as_ref().is_some_and(|f| f.at.elapsed() < self.inner.max_age);
                if fresh {
                    return Ok(());
                }
            }
            Why::UnknownKid => {
                if state.last_unknown_kid.is_some_and(|at| at.elapsed() < self.inner.min_refetch) {
                    return Ok(());
                }
                state.last_unknown_kid = Some(Instant::now());
            }
        }
        state.fetches += 1;
        let jwks = self.download().await?;
        let keys = KeySet::from_jwks(&jwks);
        tracing::debug!(keys = keys.len(), url = %self.inner.jwks_url, "key set fetched");
        *self.inner.keys.write().await = Some(Fetched { keys, at: Instant::now() });
        Ok(())
    }

    async fn download(&self) -> Result<Jwks, VerifyError> {
        let unavailable = |e: String| VerifyError::KeysUnavailable(e);
        let mut res =
            self.inner.client.get(&self.inner.jwks_url).send().await.map_err(|e| unavailable(e.to_string()))?;
        if !res.status().is_success() {
            return Err(unavailable(format!("{} answered {}", self.inner.jwks_url, res.status())));
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| unavailable(e.to_string()))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(unavailable("the key set is too large".into()));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| unavailable(format!("not a JWKS: {e}")))
    }

    /// Verifies an access token: signature with a key from the JWKS, `typ`, `exp`, `nbf`,
    /// `iss`, `aud` and every other rule of `portcullis_token::jwt::verify`; when following the
    /// revocation feed, also the replica (deny-list and not-before epochs) and the feed-loss
    /// policy, in memory.
    pub async fn verify(&self, token: &str) -> Result<AccessClaims, VerifyError> {
        let claims = self.verify_signed(token).await?;
        if let Some(f) = &self.inner.follower {
            if !f.usable() {
                return Err(VerifyError::FeedLost);
            }
            if f.is_revoked(&claims) {
                return Err(VerifyError::Revoked);
            }
        }
        Ok(claims)
    }

    async fn verify_signed(&self, token: &str) -> Result<AccessClaims, VerifyError> {
        let stale = match &*self.inner.keys.read().await {
            None => true,
            Some(f) => f.at.elapsed() >= self.inner.max_age,
        };
        if stale && let Err(e) = self.fetch(Why::Stale).await {
            // Keep working on the keys we have, if any.
            if self.inner.keys.read().await.is_none() {
                return Err(e);
            }
            tracing::warn!(error = %e, "could not re-read the key set; using the one held");
        }
        match self.verify_with_held(token).await {
            Err(VerifyError::Invalid(TokenError::UnknownKey)) => {
                // Perhaps a rotation: re-read the key set, at most once per min_refetch.
                if let Err(e) = self.fetch(Why::UnknownKid).await {
                    tracing::warn!(error = %e, "could not re-read the key set");
                }
                self.verify_with_held(token).await
            }
            other => other,
        }
    }

    async fn verify_with_held(&self, token: &str) -> Result<AccessClaims, VerifyError> {
        let held = self.inner.keys.read().await;
        let keys = &held.as_ref().ok_or_else(|| VerifyError::KeysUnavailable("no key set yet".into()))?.keys;
        Ok(jwt::verify(token, keys, &self.inner.expect, self.inner.clock.now())?)
    }
}
