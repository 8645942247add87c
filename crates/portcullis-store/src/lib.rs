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

pub mod memory;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::collections::BTreeSet;

use async_trait::async_trait;
use portcullis_core::{
    Email, PasswordHash, Role, SessionId, SessionRecord, Timestamp, User, UserId,
};

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
    async fn update_user(
        &self,
        id: &UserId,
        update: UserUpdate,
        now: Timestamp,
    ) -> StoreResult<Option<User>>;
    /// Replaces the password hash; `false` when there is no such account.
    async fn set_password_hash(
        &self,
        id: &UserId,
        hash: PasswordHash,
        now: Timestamp,
    ) -> StoreResult<bool>;
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
    async fn touch(
        &self,
        id: &SessionId,
        last_seen_at: Timestamp,
        idle_expires_at: Timestamp,
    ) -> StoreResult<()>;
    /// Deletes one record; `true` when it existed.
    async fn delete(&self, id: &SessionId) -> StoreResult<bool>;
    /// Every record of a user, oldest first.
    async fn list_for_user(&self, user: &UserId) -> StoreResult<Vec<SessionRecord>>;
    /// Deletes every record of a user except `keep`; returns how many were deleted.
    async fn delete_for_user(&self, user: &UserId, keep: Option<&SessionId>) -> StoreResult<u64>;
    /// Deletes every record dead at `now`; returns how many.
    async fn purge_expired(&self, now: Timestamp) -> StoreResult<u64>;
    /// Succeeds when the backend is reachable.
    async fn ping(&self) -> StoreResult<()>;
}
