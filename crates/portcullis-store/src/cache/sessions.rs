//! A node-local cache of session records in front of a shared session store (Redis).
//!
//! Reads of a record younger than the configured staleness are answered from memory. Every
//! write goes to the store and updates or drops the local copy; ending sessions is announced on
//! the store's feed so every other node drops its copies too ([`CachedSessions::forget`]). If an
//! announcement is lost (the feed was down), a copy is still never older than the staleness
//! bound; on a feed resync the whole cache is dropped ([`CachedSessions::clear`]).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use portcullis_core::secret::SecretHash;
use portcullis_core::{Clock, SessionId, SessionRecord, Timestamp, UserId};
use quick_cache::sync::Cache;

use crate::{ClusterFeed, SessionStore, StoreResult, Sweep, Swept};

/// How many records one node keeps.
pub const SESSION_CACHE_SIZE: usize = 100_000;

pub struct CachedSessions {
    inner: Arc<dyn SessionStore>,
    feed: Arc<dyn ClusterFeed>,
    sweep: Option<Arc<dyn Sweep>>,
    stale_after: Duration,
    clock: Arc<dyn Clock>,
    cache: Cache<SessionId, (SessionRecord, Timestamp)>,
}

impl CachedSessions {
    /// A cache in front of `inner`, announcing ended sessions on `feed`. Sweeps go through the
    /// cache to the backend's `sweep`, if it has one, so a swept record is never served from here.
    pub fn new(
        inner: Arc<dyn SessionStore>,
        feed: Arc<dyn ClusterFeed>,
        sweep: Option<Arc<dyn Sweep>>,
        stale_after: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self { inner, feed, sweep, stale_after, clock, cache: Cache::new(SESSION_CACHE_SIZE) }
    }

    /// Drops local copies of these records (another node ended them).
    pub fn forget(&self, ids: &[SessionId]) {
        for id in ids {
            self.cache.remove(id);
        }
    }

    /// Drops every local copy.
    pub fn clear(&self) {
        self.cache.clear();
    }

    async fn ended(&self, ids: Vec<SessionId>) -> StoreResult<()> {
        self.forget(&ids);
        self.feed.announce_ended(&ids).await
    }
}

#[async_trait]
impl SessionStore for CachedSessions {
    async fn create(&self, record: &SessionRecord) -> StoreResult<()> {
        self.inner.create(record).await?;
        self.cache.insert(record.id.clone(), (record.clone(), self.clock.now()));
        Ok(())
    }

    async fn get(&self, id: &SessionId) -> StoreResult<Option<SessionRecord>> {
        let now = self.clock.now();
        if let Some((record, at)) = self.cache.get(id)
            && now.since(at) < self.stale_after
        {
            return Ok(Some(record));
        }
        let found = self.inner.get(id).await?;
        match &found {
            Some(r) => self.cache.insert(id.clone(), (r.clone(), now)),
            None => {
                self.cache.remove(id);
            }
        }
        Ok(found)
    }

    async fn touch(&self, id: &SessionId, last_seen_at: Timestamp, idle_expires_at: Timestamp) -> StoreResult<()> {
        self.inner.touch(id, last_seen_at, idle_expires_at).await?;
        if let Some((mut record, at)) = self.cache.get(id) {
            record.last_seen_at = last_seen_at;
            record.idle_expires_at = idle_expires_at;
            self.cache.insert(id.clone(), (record, at));
        }
        Ok(())
    }

    async fn delete(&self, id: &SessionId) -> StoreResult<bool> {
        let deleted = self.inner.delete(id).await?;
        self.ended(vec![id.clone()]).await?;
        Ok(deleted)
    }

    async fn list_for_user(&self, user: &UserId) -> StoreResult<Vec<SessionRecord>> {
        self.inner.list_for_user(user).await
    }

    async fn delete_for_user(&self, user: &UserId, keep: Option<&SessionId>) -> StoreResult<u64> {
        let ids: Vec<SessionId> =
            self.inner.list_for_user(user).await?.into_iter().map(|r| r.id).filter(|id| Some(id) != keep).collect();
        let n = self.inner.delete_for_user(user, keep).await?;
        self.ended(ids).await?;
        Ok(n)
    }

    async fn rotate_refresh(
        &self,
        id: &SessionId,
        from_generation: u64,
        new_hash: SecretHash,
        now: Timestamp,
    ) -> StoreResult<bool> {
        // Rotation must see the shared state: drop the copy, then compare-and-set in the store.
        self.cache.remove(id);
        self.inner.rotate_refresh(id, from_generation, new_hash, now).await
    }

    async fn undo_rotation(&self, before: &SessionRecord, new_hash: SecretHash, now: Timestamp) -> StoreResult<bool> {
        self.cache.remove(&before.id);
        self.inner.undo_rotation(before, new_hash, now).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
}

#[async_trait]
impl Sweep for CachedSessions {
    async fn sweep(&self, now: Timestamp) -> StoreResult<Swept> {
        let Some(sweep) = &self.sweep else { return Ok(Swept::default()) };
        // Swept records must not live on here: drop every copy once some were swept (the sweep
        // runs once a minute, so this costs one re-read per live session at most).
        let swept = sweep.sweep(now).await?;
        if swept.sessions > 0 {
            self.cache.clear();
        }
        Ok(swept)
    }
}
