//! # portcullis-store
//!
//! The store traits Portcullis persists through, and their backends:
//!
//! - [`UserStore`]: accounts, roles and password hashes.
//! - [`SessionStore`]: session records with a per-user index (list a user's sessions, end them
//!   all), and expiry.
//!
//! Backends: [`memory::MemorySessionStore`] (sessions only, lost on restart) and, behind the
//! `sqlite` feature, [`sqlite::SqliteStore`] (both traits, one database file). Every backend
//! passes the conformance suite in `tests/conformance.rs`.
//!
//! This crate knows nothing of HTTP. Stores keep only hashes of secrets.

pub mod cache;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::collections::BTreeSet;

use std::fmt;

use async_trait::async_trait;
use portcullis_core::revocation::{RevocationEvent, RevocationSnapshot};
use portcullis_core::secret::SecretHash;
use portcullis_core::{Email, PasswordHash, Role, SessionId, SessionRecord, Timestamp, User, UserId};
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
}

/// A change to an account; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    pub roles: Option<BTreeSet<Role>>,
    pub disabled: Option<bool>,
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
    /// Deletes every record dead at `now`; returns how many.
    async fn purge_expired(&self, now: Timestamp) -> StoreResult<u64>;
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
}

impl FeedStatus {
    pub const CONNECTED: FeedStatus = FeedStatus { connected: true, lost_since: None };
}

/// Capacity of the in-process revocation feed; a subscriber that falls further behind is told
/// it lagged and must re-read a snapshot.
pub const FEED_CAPACITY: usize = 1024;

/// The deny-list and not-before epochs, persisted, and a feed of changes.
///
/// Every change goes through [`RevocationStore::revoke`], which persists it and then publishes
/// it to every subscriber. A subscriber starts from [`RevocationStore::snapshot`] and re-reads it
/// whenever it may have missed events (lagging now; a lost connection in a cluster backend).
#[async_trait]
pub trait RevocationStore: Send + Sync + 'static {
    async fn revoke(&self, event: &RevocationEvent) -> StoreResult<()>;
    /// Everything still in force at `now`.
    async fn snapshot(&self, now: Timestamp) -> StoreResult<RevocationSnapshot>;
    /// Changes from now on.
    fn subscribe(&self) -> broadcast::Receiver<FeedItem>;
    /// Whether the feed is connected (in-process feeds always are).
    fn feed_status(&self) -> FeedStatus {
        FeedStatus::CONNECTED
    }
    /// Tells every node that these sessions ended (for their session caches). Stores that serve
    /// one node only need not do anything.
    async fn announce_ended(&self, _ids: &[SessionId]) -> StoreResult<()> {
        Ok(())
    }
    /// Tells every node that the signing keys changed.
    async fn announce_keys_changed(&self) -> StoreResult<()> {
        Ok(())
    }
    /// Forgets deny-list entries that lapsed before `now`.
    async fn purge_revocations(&self, now: Timestamp) -> StoreResult<u64>;
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
}
