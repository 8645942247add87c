//! In-process session store: fast, shared by nothing, forgotten on restart.

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;

use async_trait::async_trait;
use portcullis_core::revocation::{Denied, RevocationEvent, RevocationSnapshot};
use portcullis_core::secret::SecretHash;
use portcullis_core::{SessionId, SessionRecord, Timestamp, UserId};
use tokio::sync::broadcast;

use crate::{
    Attempt, ClusterFeed, FEED_CAPACITY, FeedItem, RevocationStore, SessionStore, StoreError, StoreResult, Sweep,
    Swept, ThrottleRule, ThrottleState, ThrottleStore,
};

#[derive(Default)]
struct State {
    /// Keyed by ids from the CSPRNG, never chosen by a client: a fast hasher (foldhash, seeded
    /// per map) is safe here, and a session check hashes one id.
    records: HashMap<SessionId, SessionRecord, foldhash::fast::RandomState>,
    by_user: HashMap<UserId, BTreeSet<SessionId>>,
    denied: HashMap<Denied, Timestamp>,
    not_before: HashMap<UserId, Timestamp>,
    throttles: HashMap<String, ThrottleState>,
}

impl State {
    fn remove(&mut self, id: &SessionId) -> Option<SessionRecord> {
        let record = self.records.remove(id)?;
        if let Some(ids) = self.by_user.get_mut(&record.user_id) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_user.remove(&record.user_id);
            }
        }
        Some(record)
    }
}

/// Session records in a map, with a per-user index, and the revocation state.
pub struct MemorySessionStore {
    state: RwLock<State>,
    feed: broadcast::Sender<FeedItem>,
}

impl Default for MemorySessionStore {
    fn default() -> Self {
        Self { state: RwLock::default(), feed: broadcast::channel(FEED_CAPACITY).0 }
    }
}

impl MemorySessionStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many records are held (live or not yet purged).
    pub fn len(&self) -> usize {
        self.read().map(|s| s.records.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> StoreResult<std::sync::RwLockReadGuard<'_, State>> {
        self.state.read().map_err(|_| poisoned())
    }

    fn write(&self) -> StoreResult<std::sync::RwLockWriteGuard<'_, State>> {
        self.state.write().map_err(|_| poisoned())
    }
}

fn poisoned() -> StoreError {
    StoreError::Unavailable("memory store lock poisoned".into())
}

#[async_trait]
impl SessionStore for MemorySessionStore {
    async fn create(&self, record: &SessionRecord) -> StoreResult<()> {
        let mut s = self.write()?;
        if s.records.contains_key(&record.id) {
            return Err(StoreError::Duplicate);
        }
        s.by_user.entry(record.user_id.clone()).or_default().insert(record.id.clone());
        s.records.insert(record.id.clone(), record.clone());
        Ok(())
    }

    async fn get(&self, id: &SessionId) -> StoreResult<Option<SessionRecord>> {
        Ok(self.read()?.records.get(id).cloned())
    }

    async fn touch(&self, id: &SessionId, last_seen_at: Timestamp, idle_expires_at: Timestamp) -> StoreResult<()> {
        if let Some(r) = self.write()?.records.get_mut(id) {
            r.last_seen_at = last_seen_at;
            r.idle_expires_at = idle_expires_at;
        }
        Ok(())
    }

    async fn delete(&self, id: &SessionId) -> StoreResult<bool> {
        Ok(self.write()?.remove(id).is_some())
    }

    async fn list_for_user(&self, user: &UserId) -> StoreResult<Vec<SessionRecord>> {
        let s = self.read()?;
        let mut out: Vec<SessionRecord> =
            s.by_user.get(user).into_iter().flatten().filter_map(|id| s.records.get(id).cloned()).collect();
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn delete_for_user(&self, user: &UserId, keep: Option<&SessionId>) -> StoreResult<u64> {
        let mut s = self.write()?;
        let ids: Vec<SessionId> =
            s.by_user.get(user).into_iter().flatten().filter(|id| Some(*id) != keep).cloned().collect();
        let mut n = 0;
        for id in ids {
            if s.remove(&id).is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    async fn rotate_refresh(
        &self,
        id: &SessionId,
        from_generation: u64,
        new_hash: SecretHash,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let mut s = self.write()?;
        match s.records.get_mut(id) {
            Some(r) if r.refresh_generation == from_generation => {
                r.secret_hash = new_hash;
                r.refresh_generation = from_generation + 1;
                r.rotated_at = Some(now);
                r.last_seen_at = now;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn undo_rotation(&self, before: &SessionRecord, new_hash: SecretHash, now: Timestamp) -> StoreResult<bool> {
        let mut s = self.write()?;
        match s.records.get_mut(&before.id) {
            Some(r)
                if r.refresh_generation == before.refresh_generation + 1
                    && r.secret_hash == new_hash
                    && r.rotated_at == Some(now) =>
            {
                r.secret_hash = before.secret_hash;
                r.refresh_generation = before.refresh_generation;
                r.rotated_at = before.rotated_at;
                r.last_seen_at = before.last_seen_at;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read().map(|_| ())
    }
}

#[async_trait]
impl RevocationStore for MemorySessionStore {
    async fn revoke(&self, event: &RevocationEvent) -> StoreResult<()> {
        {
            let mut s = self.write()?;
            match event {
                RevocationEvent::Deny { what, until } => {
                    let e = s.denied.entry(what.clone()).or_insert(*until);
                    *e = (*e).max(*until);
                }
                RevocationEvent::NotBefore { user, at } => {
                    let e = s.not_before.entry(user.clone()).or_insert(*at);
                    *e = (*e).max(*at);
                }
            }
        }
        // No subscriber is not an error.
        let _ = self.feed.send(FeedItem::Event(event.clone()));
        Ok(())
    }

    async fn snapshot(&self, now: Timestamp) -> StoreResult<RevocationSnapshot> {
        let s = self.read()?;
        Ok(RevocationSnapshot {
            denied: s.denied.iter().filter(|(_, u)| now < **u).map(|(d, u)| (d.clone(), *u)).collect(),
            not_before: s.not_before.iter().map(|(u, t)| (u.clone(), *t)).collect(),
        })
    }
}

#[async_trait]
impl ThrottleStore for MemorySessionStore {
    async fn throttle_state(&self, key: &str, now: Timestamp) -> StoreResult<Option<ThrottleState>> {
        Ok(self.read()?.throttles.get(key).filter(|t| now < t.expires_at).copied())
    }

    async fn begin_attempt(&self, key: &str, rule: &ThrottleRule, now: Timestamp) -> StoreResult<Attempt> {
        let mut s = self.write()?;
        let attempt = ThrottleState::begin_attempt(s.throttles.get(key), rule, now);
        if let Attempt::Admitted(next) = attempt {
            s.throttles.insert(key.to_owned(), next);
        }
        Ok(attempt)
    }

    async fn refund_attempt(&self, key: &str, rule: &ThrottleRule, _now: Timestamp) -> StoreResult<()> {
        let mut s = self.write()?;
        match s.throttles.get(key).and_then(|t| t.refunded(rule)) {
            Some(next) => s.throttles.insert(key.to_owned(), next),
            None => s.throttles.remove(key),
        };
        Ok(())
    }

    async fn clear_failures(&self, key: &str) -> StoreResult<()> {
        self.write()?.throttles.remove(key);
        Ok(())
    }
}

#[async_trait]
impl ClusterFeed for MemorySessionStore {
    fn subscribe(&self) -> broadcast::Receiver<FeedItem> {
        self.feed.subscribe()
    }
}

#[async_trait]
impl Sweep for MemorySessionStore {
    async fn sweep(&self, now: Timestamp) -> StoreResult<Swept> {
        let mut s = self.write()?;
        let dead: Vec<SessionId> = s.records.values().filter(|r| !r.is_live(now)).map(|r| r.id.clone()).collect();
        for id in &dead {
            s.remove(id);
        }
        let (denied, throttles) = (s.denied.len(), s.throttles.len());
        s.denied.retain(|_, until| now < *until);
        s.throttles.retain(|_, t| now < t.expires_at);
        Ok(Swept {
            sessions: dead.len() as u64,
            revocations: (denied - s.denied.len()) as u64,
            throttles: (throttles - s.throttles.len()) as u64,
        })
    }
}
