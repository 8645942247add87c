//! A node-local cache of session records in front of a shared session store (Redis).
//!
//! Reads of a record younger than the configured staleness are answered from memory, and only
//! while this node hears the store's feed: every write goes to the store and updates or drops
//! the local copy; ending sessions is announced on the feed so every other node drops its
//! copies too ([`CachedSessions::forget`]). While the feed is lost, nothing is answered from
//! memory (a node that cannot hear announcements reads through), and what was cached before a
//! loss is never answered after it: a copy is tagged with the feed connection it was made
//! under ([`crate::FeedStatus::connection`]). A read that saw an announcement arrive while it
//! waited for the store is not kept. The staleness bound is the last resort, for an
//! announcement lost while the feed seemed connected (or landing in the instant between that
//! check and the insert); on a feed resync the whole cache is dropped ([`CachedSessions::clear`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Each copy with when it was read and the feed connection it was read under.
    cache: Cache<SessionId, (SessionRecord, Timestamp, u64)>,
    /// Counts copies dropped for announcements: a read that saw it move does not keep what it
    /// read (the end may have been announced between the store's answer and the insert).
    forgotten: AtomicU64,
}

impl CachedSessions {
    /// A cache in front of `inner`, announcing ended sessions on `feed`. Sweeps go through the
    /// cache to the backend's `sweep`, if it has one, so a swept record is never served from here.
    /// With a zero `stale_after` it keeps nothing and only announces ends, for the other nodes'
    /// caches.
    pub fn new(
        inner: Arc<dyn SessionStore>,
        feed: Arc<dyn ClusterFeed>,
        sweep: Option<Arc<dyn Sweep>>,
        stale_after: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            inner,
            feed,
            sweep,
            stale_after,
            clock,
            cache: Cache::new(SESSION_CACHE_SIZE),
            forgotten: AtomicU64::new(0),
        }
    }

    /// Drops local copies of these records (another node ended them).
    pub fn forget(&self, ids: &[SessionId]) {
        self.forgotten.fetch_add(1, Ordering::AcqRel);
        for id in ids {
            self.cache.remove(id);
        }
    }

    /// Drops every local copy.
    pub fn clear(&self) {
        self.forgotten.fetch_add(1, Ordering::AcqRel);
        self.cache.clear();
    }

    /// The feed connection copies may be made under and answered from, while there is one.
    fn listening(&self) -> Option<u64> {
        let status = self.feed.feed_status();
        status.connected.then_some(status.connection)
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
        if self.stale_after.is_zero() {
            return Ok(());
        }
        if let Some(connection) = self.listening() {
            self.cache.insert(record.id.clone(), (record.clone(), self.clock.now(), connection));
        }
        Ok(())
    }

    async fn get(&self, id: &SessionId) -> StoreResult<Option<SessionRecord>> {
        if self.stale_after.is_zero() {
            // Announcing only: this node keeps no copies.
            return self.inner.get(id).await;
        }
        let Some(connection) = self.listening() else {
            // Deaf to announcements: read through, keep nothing.
            return self.inner.get(id).await;
        };
        let now = self.clock.now();
        if let Some((record, at, made_under)) = self.cache.get(id)
            && made_under == connection
            && now.since(at) < self.stale_after
        {
            return Ok(Some(record));
        }
        let forgotten = self.forgotten.load(Ordering::Acquire);
        let found = self.inner.get(id).await?;
        match &found {
            Some(r) if self.forgotten.load(Ordering::Acquire) == forgotten => {
                self.cache.insert(id.clone(), (r.clone(), now, connection));
            }
            _ => {
                self.cache.remove(id);
            }
        }
        Ok(found)
    }

    async fn touch(&self, id: &SessionId, last_seen_at: Timestamp, idle_expires_at: Timestamp) -> StoreResult<()> {
        self.inner.touch(id, last_seen_at, idle_expires_at).await?;
        let forgotten = self.forgotten.load(Ordering::Acquire);
        if let Some((mut record, at, made_under)) = self.cache.get(id) {
            record.last_seen_at = last_seen_at;
            record.idle_expires_at = idle_expires_at;
            if self.forgotten.load(Ordering::Acquire) == forgotten {
                self.cache.insert(id.clone(), (record, at, made_under));
            }
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
            self.clear();
        }
        Ok(swept)
    }
}
