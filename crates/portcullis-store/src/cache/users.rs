//! A user cache in front of the user store, for the per-request session check.
//!
//! Session mode looks the user up on every request (roles, disabled). The cache keeps that off
//! the database, and keeps existing sessions working while the user store (PostgreSQL in a
//! cluster) is unreachable: a fresh entry (younger than [`USER_CACHE_FRESH`]) is used as is; an
//! older one is re-read, and served stale only if the store cannot answer. Changes made through
//! this node update the cache at once; changes made on another node show within
//! [`USER_CACHE_FRESH`] (disabling a user also ends their sessions, so it takes effect at once).

use std::sync::Arc;
use std::time::Duration;

use crate::{NewUser, StoreError, StoreResult, UserStore, UserUpdate};
use async_trait::async_trait;
use portcullis_core::{Clock, Email, PasswordHash, Timestamp, User, UserId};
use quick_cache::sync::Cache;

/// How long a cached user is used without asking the store.
pub const USER_CACHE_FRESH: Duration = Duration::from_secs(5);

/// How many users are remembered.
pub const USER_CACHE_SIZE: usize = 100_000;

pub struct CachedUsers {
    inner: Arc<dyn UserStore>,
    fresh_for: Duration,
    clock: Arc<dyn Clock>,
    cache: Cache<UserId, (User, Timestamp)>,
}

impl CachedUsers {
    pub fn new(inner: Arc<dyn UserStore>, fresh_for: Duration, clock: Arc<dyn Clock>) -> Self {
        Self { inner, fresh_for, clock, cache: Cache::new(USER_CACHE_SIZE) }
    }

    fn remember(&self, user: &User) {
        self.cache.insert(user.id.clone(), (user.clone(), self.clock.now()));
    }
}

#[async_trait]
impl UserStore for CachedUsers {
    async fn create_user(&self, new: NewUser, now: Timestamp) -> StoreResult<User> {
        let user = self.inner.create_user(new, now).await?;
        self.remember(&user);
        Ok(user)
    }

    async fn user(&self, id: &UserId) -> StoreResult<Option<User>> {
        let cached = self.cache.get(id);
        if let Some((user, at)) = &cached
            && self.clock.now().since(*at) < self.fresh_for
        {
            return Ok(Some(user.clone()));
        }
        match self.inner.user(id).await {
            Ok(Some(user)) => {
                self.remember(&user);
                Ok(Some(user))
            }
            Ok(None) => {
                self.cache.remove(id);
                Ok(None)
            }
            Err(StoreError::Unavailable(e)) => match cached {
                Some((user, _)) => {
                    tracing::debug!(error = %e, user = %id, "user store unavailable; serving the cached user");
                    Ok(Some(user))
                }
                None => Err(StoreError::Unavailable(e)),
            },
            Err(e) => Err(e),
        }
    }

    async fn user_by_email(&self, email: &Email) -> StoreResult<Option<(User, PasswordHash)>> {
        let found = self.inner.user_by_email(email).await?;
        if let Some((user, _)) = &found {
            self.remember(user);
        }
        Ok(found)
    }

    async fn password_hash(&self, id: &UserId) -> StoreResult<Option<PasswordHash>> {
        self.inner.password_hash(id).await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.inner.list_users().await
    }

    async fn update_user(&self, id: &UserId, update: UserUpdate, now: Timestamp) -> StoreResult<Option<User>> {
        let updated = self.inner.update_user(id, update, now).await;
        match &updated {
            Ok(Some(user)) => self.remember(user),
            _ => {
                self.cache.remove(id);
            }
        }
        updated
    }

    async fn set_password_hash(&self, id: &UserId, hash: PasswordHash, now: Timestamp) -> StoreResult<bool> {
        self.inner.set_password_hash(id, hash, now).await
    }

    async fn delete_user(&self, id: &UserId) -> StoreResult<bool> {
        let deleted = self.inner.delete_user(id).await;
        self.cache.remove(id);
        deleted
    }

    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
}
