//! The front type, [`Service`], and what it is opened with: the stores, the [`Config`], and
//! the shared secrets every node reads.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use portcullis_core::jwt::{Algorithm, Expectations};
use portcullis_core::mfa::SecretBox;
use portcullis_core::refresh::RefreshKey;
use portcullis_core::revocation::Revocations;
use portcullis_core::secret::KeyedDigest;
use portcullis_core::{Clock, PasswordHasher, SessionPolicy, Timestamp};
use portcullis_store::cache::CachedSessions;
use portcullis_store::{
    AuditStore, ClientStore, ClusterFeed, FactorStore, FeedStatus, KeyStore, RevocationStore, SessionStore, StoreError,
    Sweep, ThrottleStore, UserStore,
};

use crate::audit::Audit;
use crate::backchannel::BackchannelQueue;
use crate::feed_log::FeedLog;
use crate::keyring::{KeyRing, KeyRingError, Purpose};
use crate::observer::Observer;
use crate::throttle::{THROTTLE_KEY_NAME, Throttle, ThrottleRules};
use crate::tokens::{REFRESH_KEY_NAME, Revocation, Tokens};

/// The stores a service works on, opened by whoever composes it (the server from its settings).
pub struct Stores {
    pub users: Arc<dyn UserStore>,
    pub keys: Arc<dyn KeyStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub revocations: Arc<dyn RevocationStore>,
    /// Failed-login counters and the per-session limits, kept with the sessions.
    pub throttles: Arc<dyn ThrottleStore>,
    /// The audit log, kept with the users.
    pub audit: Arc<dyn AuditStore>,
    /// The client registry, kept with the users.
    pub clients: Arc<dyn ClientStore>,
    /// Second factors, kept with the users.
    pub factors: Arc<dyn FactorStore>,
    /// What every node hears: the session backend's feed.
    pub feed: Arc<dyn ClusterFeed>,
    /// What sweeps the session backend, if it needs sweeping (through the session cache when
    /// one is on).
    pub sweep: Option<Arc<dyn Sweep>>,
    /// The local session cache, when one is on (also in `sessions`).
    pub session_cache: Option<Arc<CachedSessions>>,
}

/// What a service needs to know, taken from the settings by whoever composes it.
#[derive(Debug, Clone)]
pub struct Config {
    pub policy: SessionPolicy,
    /// What access tokens carry and are checked against (`iss`, `aud`, leeway).
    pub expect: Expectations,
    pub access_ttl: Duration,
    /// The algorithm new signing keys use.
    pub algorithm: Algorithm,
    /// An HS256 key from the settings, used instead of stored keys.
    pub hmac_secret: Option<Vec<u8>>,
    pub revocation: Revocation,
    pub refresh_grace: Duration,
    /// Verified access tokens remembered by exact token (0: off).
    pub token_cache_size: usize,
    /// Failed-login limits; `None` turns throttling off.
    pub throttle: Option<ThrottleRules>,
    /// How long audit events are kept (zero: forever).
    pub audit_retention: Duration,
    /// Second factors.
    pub mfa: MfaPolicy,
    /// Accounts made by registration wait for their email address to be verified before they
    /// sign in (`registration.verify_email`).
    pub verify_email: bool,
}

impl Config {
    /// How long after a revocation an access token it must stop can still be presented.
    pub fn access_token_horizon(&self) -> Duration {
        self.access_ttl + self.expect.leeway
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot load the signing keys: {0}")]
    Keys(#[from] KeyRingError),
}

/// The operations of Portcullis, over its stores. Cheap to clone (everything is shared).
#[derive(Clone)]
pub struct Service {
    pub users: Arc<dyn UserStore>,
    pub clients: Arc<dyn ClientStore>,
    pub factors: Arc<dyn FactorStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub revocations: Arc<dyn RevocationStore>,
    /// The cluster feed: revocations, ended sessions and key changes from every node.
    pub feed: Arc<dyn ClusterFeed>,
    pub sweep: Option<Arc<dyn Sweep>>,
    /// Recent revocation events, for the services that follow the feed.
    pub feed_log: Arc<FeedLog>,
    /// Refused client credentials audited this minute.
    pub client_refusals: Arc<crate::audit::Refusals>,
    /// This node's copy of the revocation state, updated at once by its own revocations and by
    /// the store's feed for everyone else's.
    pub replica: Arc<Revocations>,
    /// Whether the replica holds the whole snapshot of the feed's current connection.
    pub(crate) replica_sync: Arc<ReplicaSync>,
    pub hasher: PasswordHasher,
    pub clock: Arc<dyn Clock>,
    pub policy: SessionPolicy,
    /// How long a revoked session's access tokens can still be around: the access token
    /// lifetime plus leeway.
    pub access_token_horizon: Duration,
    pub observer: Arc<dyn Observer>,
    /// Failed-login limits; `None` when throttling is off.
    pub throttle: Option<Arc<Throttle>>,
    /// Counters for the per-session limits on refreshing and revoking (`tokens.rs`), kept with
    /// the sessions like the login throttle's.
    pub limits: Arc<dyn ThrottleStore>,
    pub audit: Audit,
    /// JWT mode: keys, expectations and the verified-token cache.
    pub tokens: Arc<Tokens>,
    /// The local session cache, if on: the revocation feed drops ended sessions from it.
    pub session_cache: Option<Arc<CachedSessions>>,
    pub audit_retention: Duration,
    /// The OpenID Connect provider's key: seals authorization codes.
    pub provider_key: Arc<KeyedDigest>,
    /// Back-channel logout notices waiting for the server to deliver them.
    pub backchannel: Arc<BackchannelQueue>,
    /// Seals the tickets between a password and its second factor.
    pub mfa_key: Arc<KeyedDigest>,
    pub mfa: MfaPolicy,
    /// Registrations wait for their email address to be verified.
    pub verify_email: bool,
}

/// Which feed connection ([`FeedStatus::connection`]) the replica holds the whole snapshot of,
/// and since when it has been reading one.
pub(crate) struct ReplicaSync {
    /// The connection; [`ReplicaSync::READING`] while a snapshot is read.
    synced: AtomicU64,
    /// When the current read began (ms since the epoch), while there is one.
    since: AtomicI64,
}

impl ReplicaSync {
    const READING: u64 = u64::MAX;

    fn new(connection: u64) -> Self {
        Self { synced: AtomicU64::new(connection), since: AtomicI64::new(0) }
    }

    /// A snapshot is being read: until [`ReplicaSync::done`], the replica may lack entries.
    pub(crate) fn reading(&self, now: Timestamp) {
        self.since.store(now.unix_millis(), Ordering::Release);
        self.synced.store(Self::READING, Ordering::Release);
    }

    /// The whole snapshot read while the feed was on `connection` is merged.
    pub(crate) fn done(&self, connection: u64) {
        self.synced.store(connection, Ordering::Release);
    }
}

impl Service {
    /// The revocation feed as this node has it: connected only once the replica holds the
    /// whole snapshot read on the store's current connection. While a snapshot is read (after
    /// a reconnect, a lag, or another node's write-back) the feed counts as lost since the read
    /// began, and JWT checks go on from the last complete replica.
    pub fn feed_status(&self) -> FeedStatus {
        let status = self.feed.feed_status();
        if !status.connected || self.replica_sync.synced.load(Ordering::Acquire) == status.connection {
            return status;
        }
        let since = Timestamp::from_unix_millis(self.replica_sync.since.load(Ordering::Acquire));
        FeedStatus { connected: false, lost_since: Some(since), ..status }
    }
}

/// The stored name of the key that seals second-step tickets.
pub const MFA_TICKET_KEY_NAME: &str = "mfa_ticket_key";

/// The rules for second factors (the `[mfa]` settings).
#[derive(Clone)]
pub struct MfaPolicy {
    /// Seals TOTP secrets; `None` when no key is configured (enrolment is then refused).
    pub secret_box: Option<Arc<SecretBox>>,
    /// The issuer authenticator apps show beside the account.
    pub issuer: String,
    /// How recent a sign-in must be to change factors.
    pub reauth_within: Duration,
    /// Roles whose holders must have a second factor: a password sign-in of one who has none
    /// ends in enrolment ([`crate::AuthError::MfaEnrolmentRequired`]).
    pub required_for_roles: Vec<String>,
    /// This server as a WebAuthn relying party; `None` when it cannot be one (its public
    /// address is not a domain name), and passkeys are then refused.
    pub passkeys: Option<Arc<crate::webauthn::RelyingParty>>,
}

impl std::fmt::Debug for MfaPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MfaPolicy")
            .field("secret_box", &self.secret_box.is_some())
            .field("issuer", &self.issuer)
            .field("reauth_within", &self.reauth_within)
            .field("required_for_roles", &self.required_for_roles)
            .field("passkeys", &self.passkeys)
            .finish()
    }
}

/// The stored secret the OpenID Connect provider seals authorization codes with.
pub const PROVIDER_KEY_NAME: &str = "oidc_code_key";

/// A 256-bit secret named `name`, shared by every node: made by the first to ask, read by the
/// rest (the refresh-token chain key, the throttle key, the CSRF key).
pub async fn server_secret(keys: &dyn KeyStore, name: &str) -> Result<Vec<u8>, StoreError> {
    let mut candidate = vec![0u8; 32];
    portcullis_core::secret::fill_random(&mut candidate);
    keys.secret(name, candidate).await
}

impl Service {
    /// Opens the service: reads the shared secrets (made by the first node to ask), the
    /// revocation state into this node's replica, and the signing keys.
    pub async fn open(
        config: Config,
        stores: &Stores,
        clock: Arc<dyn Clock>,
        hasher: PasswordHasher,
        observer: Arc<dyn Observer>,
        purpose: Purpose,
    ) -> Result<Self, OpenError> {
        let throttle = match &config.throttle {
            Some(rules) => {
                let secret = server_secret(stores.keys.as_ref(), THROTTLE_KEY_NAME).await?;
                Some(Arc::new(Throttle::new(rules.clone(), Arc::clone(&stores.throttles), &secret)))
            }
            None => None,
        };
        let replica = Arc::new(Revocations::new());
        let connection = stores.feed.feed_status().connection;
        replica.replace(stores.revocations.snapshot(clock.now()).await?);
        let horizon = config.access_token_horizon();
        let keys = KeyRing::open(
            Arc::clone(&stores.keys),
            Arc::clone(&clock),
            config.algorithm,
            config.hmac_secret.clone(),
            horizon,
            purpose,
        )
        .await?;
        let refresh_key = server_secret(stores.keys.as_ref(), REFRESH_KEY_NAME).await?;
        let provider_key = server_secret(stores.keys.as_ref(), PROVIDER_KEY_NAME).await?;
        let mfa_key = server_secret(stores.keys.as_ref(), MFA_TICKET_KEY_NAME).await?;
        let tokens = Tokens::new(
            Arc::new(keys),
            config.expect.clone(),
            config.access_ttl,
            config.revocation,
            RefreshKey::new(&refresh_key),
            config.refresh_grace,
            config.token_cache_size,
        );
        Ok(Self {
            users: Arc::clone(&stores.users),
            clients: Arc::clone(&stores.clients),
            factors: Arc::clone(&stores.factors),
            sessions: Arc::clone(&stores.sessions),
            revocations: Arc::clone(&stores.revocations),
            feed: Arc::clone(&stores.feed),
            sweep: stores.sweep.clone(),
            replica,
            replica_sync: Arc::new(ReplicaSync::new(connection)),
            feed_log: Arc::new(FeedLog::default()),
            client_refusals: Arc::default(),
            hasher,
            audit: Audit { store: Arc::clone(&stores.audit), clock: Arc::clone(&clock) },
            clock,
            policy: config.policy,
            access_token_horizon: horizon,
            observer,
            throttle,
            limits: Arc::clone(&stores.throttles),
            tokens: Arc::new(tokens),
            session_cache: stores.session_cache.clone(),
            audit_retention: config.audit_retention,
            provider_key: Arc::new(KeyedDigest::new(&provider_key)),
            backchannel: Arc::default(),
            mfa_key: Arc::new(KeyedDigest::new(&mfa_key)),
            mfa: config.mfa,
            verify_email: config.verify_email,
        })
    }
}
