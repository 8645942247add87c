//! # portcullis-store
//!
//! The store traits Portcullis persists through, and their backends:
//!
//! - [`UserStore`]: accounts, roles and password hashes.
//! - [`SessionStore`]: session records with a per-user index (list a user's sessions, end them
//!   all), and expiry.
//! - [`RevocationStore`]: the deny-list and per-user epochs.
//! - [`ThrottleStore`]: failed-login counters (kept with the sessions, so they are cluster-wide
//!   on Redis).
//! - [`AuditStore`]: the audit log (kept with the users), with its retention.
//! - [`KeyStore`]: signing keys and server secrets (kept with the users).
//! - [`ClientStore`]: the client registry, services and OpenID Connect clients (kept with the
//!   users).
//! - [`FactorStore`]: second factors (authenticator apps, recovery codes) and password-reset
//!   tokens (kept with the users, and removed with them).
//!
//! Two concerns stand apart from what is stored, each a trait of its own that a session backend
//! implements beside the others:
//!
//! - [`ClusterFeed`]: what every node must hear (revocations as [`RevocationStore::revoke`]
//!   publishes them, ended sessions, new signing keys), and whether the feed is connected. An
//!   in-process feed for the single-node backends, Redis pub/sub in a cluster.
//! - [`Sweep`]: removing what has expired (dead session records, lapsed deny-list entries, old
//!   throttle counters), run once a minute by a serving node. Optional, as tower-sessions'
//!   `ExpiredDeletion` is: a backend that expires everything by itself need not have one.
//!
//! Backends: [`memory::MemorySessionStore`] (sessions, revocations and counters, lost on
//! restart), [`sqlite::SqliteStore`] (everything, one database file), [`postgres::PostgresStore`]
//! (users, keys, audit) and [`redis::RedisStore`] (sessions, revocations and counters, with the
//! cluster feed), each behind a feature. In front of a backend: the per-node caches
//! ([`cache`]) and the timing wrapper ([`timed::Timed`]). Every backend and wrapper passes the
//! conformance suite in `tests/conformance.rs`.
//!
//! This crate must not depend on HTTP (axum, hyper), the service or the server: it persists the
//! core's types and nothing else. Stores keep only hashes of secrets.

pub mod cache;
mod clients;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod timed;

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use portcullis_core::revocation::{RevocationEvent, RevocationSnapshot};
use portcullis_core::secret::SecretHash;
use portcullis_core::{Client, ClientId, Email, PasswordHash, Role, SessionId, SessionRecord, Timestamp, User, UserId};
use tokio::sync::broadcast;

/// What can go wrong in a store. None of these carry secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The email (or a look-alike of it) belongs to another account.
    #[error("the email address is already registered")]
    EmailTaken,
    /// A record with this id exists already.
    #[error("a record with this id already exists")]
    Duplicate,
    /// The backend cannot be reached or failed; callers answer 503, never 500.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// Data read back from the store does not make sense.
    #[error("the store returned malformed data: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A new account.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: Email,
    pub password_hash: PasswordHash,
    pub roles: BTreeSet<Role>,
    /// Whether the address is known to be the person's (see [`User::email_verified`]).
    pub email_verified: bool,
}

impl NewUser {
    /// The account as a store creates it (a new id, enabled, created `now`), and the hash to
    /// store beside it.
    pub fn into_user(self, now: Timestamp) -> (User, PasswordHash) {
        let user = User {
            id: UserId::generate(),
            email: self.email,
            roles: self.roles.into(),
            disabled: false,
            email_verified: self.email_verified,
            created_at: now,
        };
        (user, self.password_hash)
    }
}

/// A change to an account; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    pub roles: Option<BTreeSet<Role>>,
    pub disabled: Option<bool>,
    /// Set when the person follows a verification link (or resets their password by email).
    pub email_verified: Option<bool>,
}

/// Accounts.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    /// Creates an account. [`StoreError::EmailTaken`] when the email, or another whose
    /// [`Email::skeleton`] is the same, is registered.
    async fn create_user(&self, new: NewUser, now: Timestamp) -> StoreResult<User>;
    async fn user(&self, id: &UserId) -> StoreResult<Option<User>>;
    /// The account with this canonical email and its password hash.
    async fn user_by_email(&self, email: &Email) -> StoreResult<Option<(User, PasswordHash)>>;
    async fn password_hash(&self, id: &UserId) -> StoreResult<Option<PasswordHash>>;
    /// All accounts, oldest first.
    async fn list_users(&self) -> StoreResult<Vec<User>>;
    /// Applies `update`; `None` when there is no such account.
    async fn update_user(&self, id: &UserId, update: UserUpdate, now: Timestamp) -> StoreResult<Option<User>>;
    /// Replaces the password hash; `false` when there is no such account.
    async fn set_password_hash(&self, id: &UserId, hash: PasswordHash, now: Timestamp) -> StoreResult<bool>;
    /// Deletes the account (its email becomes free again); `false` when there is no such
    /// account. Sessions and audit events are not the user store's: the caller ends the first,
    /// and the second keep the id as history.
    async fn delete_user(&self, id: &UserId) -> StoreResult<bool>;
    /// Succeeds when the backend is reachable.
    async fn ping(&self) -> StoreResult<()>;
}

/// Session records, indexed by id and by user.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new record. [`StoreError::Duplicate`] if its id exists.
    async fn create(&self, record: &SessionRecord) -> StoreResult<()>;
    /// The record with this id, live or not (callers check liveness against their clock).
    async fn get(&self, id: &SessionId) -> StoreResult<Option<SessionRecord>>;
    /// Records a use: sets `last_seen_at` and `idle_expires_at`. No-op for an unknown id.
    async fn touch(&self, id: &SessionId, last_seen_at: Timestamp, idle_expires_at: Timestamp) -> StoreResult<()>;
    /// Deletes one record; `true` when it existed.
    async fn delete(&self, id: &SessionId) -> StoreResult<bool>;
    /// Every record of a user, oldest first.
    async fn list_for_user(&self, user: &UserId) -> StoreResult<Vec<SessionRecord>>;
    /// Deletes every record of a user except `keep`; returns how many were deleted.
    async fn delete_for_user(&self, user: &UserId, keep: Option<&SessionId>) -> StoreResult<u64>;
    /// Rotates a JWT-mode record's refresh token atomically: only if its generation is still
    /// `from_generation`, sets the new hash, generation + 1, `rotated_at = last_seen_at = now`.
    /// `true` for the one caller that wins; every concurrent caller with the same generation
    /// gets `false`.
    async fn rotate_refresh(
        &self,
        id: &SessionId,
        from_generation: u64,
        new_hash: SecretHash,
        now: Timestamp,
    ) -> StoreResult<bool>;
    /// Takes back `rotate_refresh(before.id, before.refresh_generation, new_hash, now)` whose
    /// outcome the caller does not know (it failed or timed out, and the client was answered
    /// 503, so it never received the new token): only if the record is still exactly as that
    /// rotation left it, its refresh state is restored from `before`. Sent after the rotation on
    /// the same connection, it is applied after it even when both land late, so the client's
    /// retry with the token it holds is a plain rotation, never a reuse. `true` when undone.
    async fn undo_rotation(&self, before: &SessionRecord, new_hash: SecretHash, now: Timestamp) -> StoreResult<bool>;
    /// Succeeds when the backend is reachable.
    async fn ping(&self) -> StoreResult<()>;
}

/// What a revocation feed delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedItem {
    /// One change.
    Event(RevocationEvent),
    /// Changes may have been missed (the feed reconnected): re-read the snapshot, and forget
    /// any cached session records.
    Resync,
    /// Sessions ended on some node: forget cached copies of them.
    SessionsEnded(Vec<SessionId>),
    /// The signing keys changed: re-read them now.
    KeysChanged,
}

/// Whether a store's feed is connected, and since when it is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedStatus {
    pub connected: bool,
    /// When the feed was lost, while it is.
    pub lost_since: Option<Timestamp>,
    /// Which connection this is: counts up each time the feed connects (in-process feeds keep
    /// one for ever). Whatever was heard on an earlier connection may have missed messages.
    pub connection: u64,
}

impl FeedStatus {
    pub const CONNECTED: FeedStatus = FeedStatus { connected: true, lost_since: None, connection: 0 };
}

/// Capacity of the in-process revocation feed; a subscriber that falls further behind is told
/// it lagged and must re-read a snapshot.
pub const FEED_CAPACITY: usize = 1024;

/// The deny-list and not-before epochs, persisted.
///
/// Every change goes through [`RevocationStore::revoke`], which persists it and then publishes
/// it on the backend's [`ClusterFeed`]. A subscriber starts from [`RevocationStore::snapshot`]
/// and re-reads it whenever it may have missed events (lagging now; a lost connection in a
/// cluster backend).
#[async_trait]
pub trait RevocationStore: Send + Sync + 'static {
    async fn revoke(&self, event: &RevocationEvent) -> StoreResult<()>;
    /// Everything still in force at `now`.
    async fn snapshot(&self, now: Timestamp) -> StoreResult<RevocationSnapshot>;
    /// Writes back entries a node holds that the store lacks (it lost its data: a Redis
    /// restarted without persistence). Nothing is announced: every node merges its own replica
    /// with the snapshot, and nodes that start later read these from the store.
    async fn restore(&self, missing: &RevocationSnapshot) -> StoreResult<()> {
        for (what, until) in &missing.denied {
            self.revoke(&RevocationEvent::Deny { what: what.clone(), until: *until }).await?;
        }
        for (user, at) in &missing.not_before {
            self.revoke(&RevocationEvent::NotBefore { user: user.clone(), at: *at }).await?;
        }
        Ok(())
    }
}

/// What every node serving from one backend must hear of, as it happens: revocations (published
/// by [`RevocationStore::revoke`]), sessions ended on some node (for the session caches), and new
/// signing keys. Backends that serve one node only keep an in-process feed and announce nothing.
#[async_trait]
pub trait ClusterFeed: Send + Sync + 'static {
    /// Changes from now on.
    fn subscribe(&self) -> broadcast::Receiver<FeedItem>;
    /// Whether the feed is connected (in-process feeds always are).
    fn feed_status(&self) -> FeedStatus {
        FeedStatus::CONNECTED
    }
    /// Tells every node that these sessions ended (for their session caches).
    async fn announce_ended(&self, _ids: &[SessionId]) -> StoreResult<()> {
        Ok(())
    }
    /// Tells every node that the signing keys changed.
    async fn announce_keys_changed(&self) -> StoreResult<()> {
        Ok(())
    }
    /// Tells every node to re-read the revocation snapshot ([`FeedItem::Resync`]): a node wrote
    /// back revocations the store had lost, which the others may have merged too early to see.
    async fn announce_resync(&self) -> StoreResult<()> {
        Ok(())
    }
}

/// How many entries of each kind one [`Sweep::sweep`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub sessions: u64,
    pub revocations: u64,
    pub throttles: u64,
}

impl Swept {
    pub fn total(&self) -> u64 {
        self.sessions + self.revocations + self.throttles
    }
}

/// Removes what is dead at a given moment, by the caller's clock: session records past their
/// idle or absolute deadline (with their index entries), deny-list entries that lapsed, and
/// throttle counters that expired. Stored data never depends on it for correctness (every read
/// checks liveness against the clock); it only keeps the store from growing.
#[async_trait]
pub trait Sweep: Send + Sync + 'static {
    async fn sweep(&self, now: Timestamp) -> StoreResult<Swept>;
}

/// A signing key as stored. `Debug` leaves out the private key.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub kid: String,
    /// JWA name.
    pub alg: String,
    /// PKCS#8 DER, or the raw HS256 secret.
    pub private: Vec<u8>,
    pub created_at: Timestamp,
    /// When it stops being published and accepted; `None` while it is the signing key.
    pub retire_at: Option<Timestamp>,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("retire_at", &self.retire_at)
            .finish_non_exhaustive()
    }
}

/// Signing keys and other server secrets, kept with the users so every node shares them.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Every key, newest first.
    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>>;
    /// Adds a new signing key; every key that was signing until now gets `retire_at`.
    async fn add_signing_key(&self, key: StoredKey, retire_others_at: Timestamp) -> StoreResult<()>;
    /// The secret called `name`, created from `candidate` if there is none yet (the first writer
    /// wins, and every caller gets the winner's value).
    async fn secret(&self, name: &str, candidate: Vec<u8>) -> StoreResult<Vec<u8>>;
    /// The secret called `name`, if one was created.
    async fn find_secret(&self, name: &str) -> StoreResult<Option<Vec<u8>>>;
}

/// A user's authenticator app (TOTP), as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredTotp {
    /// The secret, sealed under a key kept outside the store (`portcullis_core::mfa::SecretBox`).
    pub sealed_secret: Vec<u8>,
    /// Confirmed by a first code; until then it is an enrolment, not a factor.
    pub confirmed: bool,
    /// The last time step a code was accepted for: a code is accepted once.
    pub last_step: Option<u64>,
    pub created_at: Timestamp,
}

impl fmt::Debug for StoredTotp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredTotp")
            .field("confirmed", &self.confirmed)
            .field("last_step", &self.last_step)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// A user's second factors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Factors {
    pub totp: Option<StoredTotp>,
    /// Recovery codes not used yet.
    pub recovery_codes: u32,
    /// Passkeys registered.
    pub passkeys: u32,
}

/// A registered passkey (WebAuthn credential), as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPasskey {
    /// The credential id, base64url: unique among every user's passkeys.
    pub id: String,
    pub user_id: UserId,
    /// What the person called it ("Laptop", "Phone").
    pub name: String,
    /// The credential as the WebAuthn library keeps it (public key, signature counter, flags),
    /// JSON. Public material only.
    pub credential: String,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
}

/// Second factors and account recovery (docs/API.md, "Second factors" and "Password reset by email"), kept with the users so every node shares
/// them. Each use of a one-time value is a single conditional write, so two nodes cannot both
/// accept it.
#[async_trait]
pub trait FactorStore: Send + Sync + 'static {
    async fn factors(&self, user: &UserId) -> StoreResult<Factors>;
    /// Begins an authenticator enrolment, replacing one not confirmed yet; `false` (and nothing
    /// changed) when the user has a confirmed one.
    async fn begin_totp(&self, user: &UserId, sealed_secret: Vec<u8>, now: Timestamp) -> StoreResult<bool>;
    /// Accepts a code's time step. `confirm`: the enrolment's first code, which confirms it
    /// (`false` when there is no enrolment waiting). Otherwise: a sign-in's code, accepted only
    /// on a confirmed authenticator and only for a step later than the last one accepted.
    async fn accept_totp_step(&self, user: &UserId, step: u64, confirm: bool) -> StoreResult<bool>;
    /// Removes the authenticator (confirmed or not); `true` when there was one.
    async fn delete_totp(&self, user: &UserId) -> StoreResult<bool>;
    /// Replaces the user's recovery codes with these (their SHA-256).
    async fn set_recovery_codes(&self, user: &UserId, hashes: Vec<[u8; 32]>, now: Timestamp) -> StoreResult<()>;
    /// Uses up a recovery code: `true` if it was one of the user's and unused.
    async fn use_recovery_code(&self, user: &UserId, hash: [u8; 32]) -> StoreResult<bool>;
    /// Removes every factor of the user; `true` when there was any.
    async fn delete_factors(&self, user: &UserId) -> StoreResult<bool>;
    /// Registers a passkey. [`StoreError::Duplicate`] if its credential id exists (for anyone).
    async fn add_passkey(&self, passkey: &StoredPasskey) -> StoreResult<()>;
    /// The user's passkeys, oldest first.
    async fn passkeys(&self, user: &UserId) -> StoreResult<Vec<StoredPasskey>>;
    /// The passkey with this credential id, whoever's it is.
    async fn passkey(&self, id: &str) -> StoreResult<Option<StoredPasskey>>;
    /// Records a sign-in with the passkey: its updated credential (the signature counter) and
    /// when; `false` when it is gone.
    async fn passkey_used(&self, id: &str, credential: String, now: Timestamp) -> StoreResult<bool>;
    /// Removes one of the user's passkeys; `true` when it was theirs.
    async fn delete_passkey(&self, user: &UserId, id: &str) -> StoreResult<bool>;
    /// Keeps a password-reset token (its SHA-256) for `user` until `expires_at`; reset tokens
    /// expired by `now` are forgotten.
    async fn add_reset_token(
        &self,
        user: &UserId,
        hash: [u8; 32],
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// Uses up a reset token: its user, when it was kept and has not expired by `now`.
    async fn take_reset_token(&self, hash: [u8; 32], now: Timestamp) -> StoreResult<Option<UserId>>;
    /// Forgets every reset token of the user.
    async fn delete_reset_tokens(&self, user: &UserId) -> StoreResult<()>;
}

/// The client registry (docs/OIDC.md), kept with the users so every node shares it.
#[async_trait]
pub trait ClientStore: Send + Sync + 'static {
    /// Registers a client. [`StoreError::Duplicate`] if its id exists.
    async fn create_client(&self, client: &Client) -> StoreResult<()>;
    async fn client(&self, id: &ClientId) -> StoreResult<Option<Client>>;
    /// Every client, oldest first.
    async fn list_clients(&self) -> StoreResult<Vec<Client>>;
    /// Removes a client; `true` when it existed.
    async fn delete_client(&self, id: &ClientId) -> StoreResult<bool>;
    /// Gives the client a new secret: the current one becomes the previous one, accepted until
    /// `previous_until`. The client as it is now; `None` when there is no such client.
    async fn rotate_client_secret(
        &self,
        id: &ClientId,
        new_hash: SecretHash,
        previous_until: Timestamp,
    ) -> StoreResult<Option<Client>>;
    /// Records a use. No-op for an unknown id.
    async fn touch_client(&self, id: &ClientId, at: Timestamp) -> StoreResult<()>;
}

/// A limit on the failures counted under one key: `free` attempts without any wait, then a
/// delay that starts at `base_delay` and doubles with each further failure up to `max_delay`. A
/// key's failures are forgotten `window` after its last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleRule {
    pub free: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    pub window: Duration,
}

impl ThrottleRule {
    /// The wait imposed after the `failures`-th failure: none after the first `free - 1`, then
    /// `base_delay` after the `free`-th, doubling with each one after that.
    pub fn delay_after(&self, failures: u32) -> Duration {
        let free = self.free.max(1);
        if failures < free {
            return Duration::ZERO;
        }
        let doublings = (failures - free).min(31);
        self.base_delay.saturating_mul(1u32 << doublings).min(self.max_delay)
    }

    /// The most failures one key can record within `period` from a clean start, by someone who
    /// retries the moment each delay ends.
    pub fn max_failures_in(&self, period: Duration) -> u64 {
        if self.base_delay.is_zero() {
            return u64::MAX;
        }
        let mut at = Duration::ZERO;
        let mut n: u64 = 0;
        loop {
            if at >= period {
                return n;
            }
            n += 1;
            let delay = self.delay_after(u32::try_from(n).unwrap_or(u32::MAX));
            if delay.is_zero() {
                continue;
            }
            if delay >= self.max_delay {
                // Every further failure waits max_delay.
                let rest = (period - at).as_nanos().div_ceil(self.max_delay.as_nanos()) - 1;
                return n + u64::try_from(rest).unwrap_or(u64::MAX);
            }
            at += delay;
        }
    }

    /// [`Self::delay_after`] in Redis' scripting language: sets `delay` from `f` and the rule's
    /// `free`, `base` and `max` (milliseconds), for backends that cannot run Rust next to their
    /// data.
    pub const DELAY_LUA: &'static str = "
local delay = 0
if f >= math.max(free, 1) then
  local d = f - math.max(free, 1)
  if d > 31 then d = 31 end
  delay = math.min(base * (2 ^ d), max)
end";
}

/// The failures on record under one throttle key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleState {
    pub failures: u32,
    pub last_failure_at: Timestamp,
    /// No attempt is allowed before this moment.
    pub blocked_until: Timestamp,
    /// When the entry may be forgotten.
    pub expires_at: Timestamp,
}

/// What [`ThrottleStore::begin_attempt`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The attempt may go ahead; it is counted as a failure already (the new state).
    Admitted(ThrottleState),
    /// The key is waiting: nothing was counted, and no attempt may be made before `until`.
    Refused { until: Timestamp },
}

impl ThrottleState {
    /// `previous`, unless it was forgotten by `now` (expired, or a whole window without
    /// failures).
    fn live<'a>(previous: Option<&'a ThrottleState>, rule: &ThrottleRule, now: Timestamp) -> Option<&'a ThrottleState> {
        previous.filter(|p| now < p.expires_at && now.since(p.last_failure_at) < rule.window)
    }

    /// The state after one more failure at `now`.
    pub fn after_failure(previous: Option<&ThrottleState>, rule: &ThrottleRule, now: Timestamp) -> ThrottleState {
        let failures = Self::live(previous, rule, now).map_or(1, |p| p.failures.saturating_add(1));
        let blocked_until = now.plus(rule.delay_after(failures));
        let expires_at = now.plus(rule.window).max(blocked_until);
        ThrottleState { failures, last_failure_at: now, blocked_until, expires_at }
    }

    /// An attempt at `now`, counted before it is checked: refused while `previous` waits,
    /// otherwise admitted with one more failure on record. Backends run this atomically (Redis
    /// runs the same arithmetic in a script), so that concurrent attempts are admitted exactly as
    /// many as sequential ones would be.
    ///
    /// A key's time never runs backwards: attempts made together reach the store in any order,
    /// and one carrying an earlier `now` than the last one counted is taken as made at that
    /// last moment. (Otherwise the zero wait of a free attempt, which ends at its own `now`,
    /// refused every concurrent attempt that read the clock a moment before it.)
    pub fn begin_attempt(previous: Option<&ThrottleState>, rule: &ThrottleRule, now: Timestamp) -> Attempt {
        let now = previous.map_or(now, |p| now.max(p.last_failure_at));
        let live = Self::live(previous, rule, now);
        match live.and_then(|p| p.blocked_at(now)) {
            Some(until) => Attempt::Refused { until },
            None => Attempt::Admitted(Self::after_failure(live, rule, now)),
        }
    }

    /// The state once one counted attempt is given back (it succeeded, or another counter
    /// refused it): one failure fewer and a wait no longer than the rest impose; `None` when no
    /// failure is left.
    pub fn refunded(&self, rule: &ThrottleRule) -> Option<ThrottleState> {
        let failures = self.failures.checked_sub(1).filter(|f| *f > 0)?;
        let blocked_until = self.blocked_until.min(self.last_failure_at.plus(rule.delay_after(failures)));
        Some(ThrottleState { failures, blocked_until, ..*self })
    }

    /// Whether an attempt at `now` must wait, and until when.
    pub fn blocked_at(&self, now: Timestamp) -> Option<Timestamp> {
        (now < self.blocked_until).then_some(self.blocked_until)
    }
}

/// Failed-attempt counters under opaque keys (the server hashes what it counts by).
///
/// An attempt is counted *before* it is checked ([`ThrottleStore::begin_attempt`]) and given back
/// after a success ([`ThrottleStore::refund_attempt`]), so a burst of parallel attempts cannot
/// all pass a limit that none of them has reached yet.
#[async_trait]
pub trait ThrottleStore: Send + Sync + 'static {
    /// The failures on record under `key`, unless they expired by `now`.
    async fn throttle_state(&self, key: &str, now: Timestamp) -> StoreResult<Option<ThrottleState>>;
    /// [`ThrottleState::begin_attempt`] on the state under `key`, atomically.
    async fn begin_attempt(&self, key: &str, rule: &ThrottleRule, now: Timestamp) -> StoreResult<Attempt>;
    /// [`ThrottleState::refunded`] on the state under `key`, atomically; nothing when there is
    /// none.
    async fn refund_attempt(&self, key: &str, rule: &ThrottleRule, now: Timestamp) -> StoreResult<()>;
    /// Forgets the failures under `key` (after a success).
    async fn clear_failures(&self, key: &str) -> StoreResult<()>;
}

/// What happened, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEvent {
    pub at: Timestamp,
    /// `login`, `logout`, `logout_all`, `refresh_reuse`, `password_change`, … (docs/API.md).
    pub kind: String,
    /// `success`, `failure`, `throttled`, `denied`, ….
    pub outcome: String,
    /// The account the event is about, when there is one.
    pub user_id: Option<UserId>,
    /// Who did it, when it is someone other than `user_id` (an admin), or `cli`.
    pub actor: Option<String>,
    /// The client address.
    pub ip: Option<String>,
    /// A short reason or change description. Never a secret.
    pub detail: Option<String>,
}

/// An audit event as stored, with its position in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Increases with every event; pages are cut at an id.
    pub id: i64,
    pub event: NewAuditEvent,
}

/// A query on the audit log: newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only events older than this id (the `next` cursor of the previous page).
    pub before: Option<i64>,
    /// Only events about this account.
    pub user_id: Option<UserId>,
    pub limit: u32,
}

/// The audit log: append-only, read newest first.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    async fn append(&self, event: &NewAuditEvent) -> StoreResult<()>;
    async fn audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>>;
    /// The log's retention (`audit.retention`): deletes events from before `cutoff`; returns how
    /// many. A policy of the log, not expiry, so it is here and not in [`Sweep`].
    async fn purge_audit(&self, cutoff: Timestamp) -> StoreResult<u64>;
}
