//! A store wrapper that times every operation and reports it to a [`StoreObserver`] (the
//! server's metrics). It sits directly on a backend, under the local caches, so a cache hit is
//! not a store operation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use portcullis_core::revocation::{RevocationEvent, RevocationSnapshot};
use portcullis_core::secret::SecretHash;
use portcullis_core::{Client, ClientId, Email, PasswordHash, SessionId, SessionRecord, Timestamp, User, UserId};
use tokio::sync::broadcast;

use crate::{
    Attempt, AuditEvent, AuditQuery, AuditStore, ClientStore, ClusterFeed, FactorStore, Factors, FeedItem, FeedStatus,
    KeyStore, NewAuditEvent, NewUser, RevocationStore, SessionStore, StoreError, StoreResult, StoredKey, StoredPasskey,
    Sweep, Swept, ThrottleRule, ThrottleState, ThrottleStore, UserStore, UserUpdate,
};

/// Hears of every store operation a [`Timed`] store makes.
pub trait StoreObserver: Send + Sync {
    /// One operation `op` on the store labelled `store` took `elapsed`; `failed` when the store
    /// failed (unreachable or malformed data), not when it answered "no".
    fn operation(&self, store: &'static str, op: &'static str, elapsed: Duration, failed: bool);
}

/// A store of kind `T` whose operations are reported under the label `store`.
pub struct Timed<T: ?Sized> {
    inner: Arc<T>,
    observer: Arc<dyn StoreObserver>,
    store: &'static str,
}

impl<T: ?Sized> Timed<T> {
    pub fn new(inner: Arc<T>, observer: Arc<dyn StoreObserver>, store: &'static str) -> Arc<Self> {
        Arc::new(Self { inner, observer, store })
    }

    async fn time<R>(&self, op: &'static str, fut: impl Future<Output = StoreResult<R>>) -> StoreResult<R> {
        let started = Instant::now();
        let result = fut.await;
        let failed = matches!(result, Err(StoreError::Unavailable(_) | StoreError::Corrupt(_)));
        self.observer.operation(self.store, op, started.elapsed(), failed);
        result
    }
}

macro_rules! timed {
    ($self:ident, $op:literal, $call:expr) => {
        $self.time($op, $call).await
    };
}

#[async_trait]
impl UserStore for Timed<dyn UserStore> {
    async fn create_user(&self, new: NewUser, now: Timestamp) -> StoreResult<User> {
        timed!(self, "create_user", self.inner.create_user(new, now))
    }
    async fn user(&self, id: &UserId) -> StoreResult<Option<User>> {
        timed!(self, "user", self.inner.user(id))
    }
    async fn user_by_email(&self, email: &Email) -> StoreResult<Option<(User, PasswordHash)>> {
        timed!(self, "user_by_email", self.inner.user_by_email(email))
    }
    async fn password_hash(&self, id: &UserId) -> StoreResult<Option<PasswordHash>> {
        timed!(self, "password_hash", self.inner.password_hash(id))
    }
    async fn list_users(&self) -> StoreResult<Vec<User>> {
        timed!(self, "list_users", self.inner.list_users())
    }
    async fn update_user(&self, id: &UserId, update: UserUpdate, now: Timestamp) -> StoreResult<Option<User>> {
        timed!(self, "update_user", self.inner.update_user(id, update, now))
    }
    async fn set_password_hash(&self, id: &UserId, hash: PasswordHash, now: Timestamp) -> StoreResult<bool> {
        timed!(self, "set_password_hash", self.inner.set_password_hash(id, hash, now))
    }
    async fn delete_user(&self, id: &UserId) -> StoreResult<bool> {
        timed!(self, "delete_user", self.inner.delete_user(id))
    }
    async fn ping(&self) -> StoreResult<()> {
        timed!(self, "ping", self.inner.ping())
    }
}

#[async_trait]
impl SessionStore for Timed<dyn SessionStore> {
    async fn create(&self, record: &SessionRecord) -> StoreResult<()> {
        timed!(self, "create", self.inner.create(record))
    }
    async fn get(&self, id: &SessionId) -> StoreResult<Option<SessionRecord>> {
        timed!(self, "get", self.inner.get(id))
    }
    async fn touch(&self, id: &SessionId, last_seen_at: Timestamp, idle_expires_at: Timestamp) -> StoreResult<()> {
        timed!(self, "touch", self.inner.touch(id, last_seen_at, idle_expires_at))
    }
    async fn delete(&self, id: &SessionId) -> StoreResult<bool> {
        timed!(self, "delete", self.inner.delete(id))
    }
    async fn list_for_user(&self, user: &UserId) -> StoreResult<Vec<SessionRecord>> {
        timed!(self, "list_for_user", self.inner.list_for_user(user))
    }
    async fn delete_for_user(&self, user: &UserId, keep: Option<&SessionId>) -> StoreResult<u64> {
        timed!(self, "delete_for_user", self.inner.delete_for_user(user, keep))
    }
    async fn rotate_refresh(
        &self,
        id: &SessionId,
        from_generation: u64,
        new_hash: SecretHash,
        now: Timestamp,
    ) -> StoreResult<bool> {
        timed!(self, "rotate_refresh", self.inner.rotate_refresh(id, from_generation, new_hash, now))
    }
    async fn undo_rotation(&self, before: &SessionRecord, new_hash: SecretHash, now: Timestamp) -> StoreResult<bool> {
        timed!(self, "undo_rotation", self.inner.undo_rotation(before, new_hash, now))
    }
    async fn ping(&self) -> StoreResult<()> {
        timed!(self, "ping", self.inner.ping())
    }
}

#[async_trait]
impl RevocationStore for Timed<dyn RevocationStore> {
    async fn revoke(&self, event: &RevocationEvent) -> StoreResult<()> {
        timed!(self, "revoke", self.inner.revoke(event))
    }
    async fn snapshot(&self, now: Timestamp) -> StoreResult<RevocationSnapshot> {
        timed!(self, "snapshot", self.inner.snapshot(now))
    }
    async fn restore(&self, missing: &RevocationSnapshot) -> StoreResult<()> {
        timed!(self, "restore", self.inner.restore(missing))
    }
}

#[async_trait]
impl ClusterFeed for Timed<dyn ClusterFeed> {
    fn subscribe(&self) -> broadcast::Receiver<FeedItem> {
        self.inner.subscribe()
    }
    fn feed_status(&self) -> FeedStatus {
        self.inner.feed_status()
    }
    async fn announce_ended(&self, ids: &[SessionId]) -> StoreResult<()> {
        timed!(self, "announce_ended", self.inner.announce_ended(ids))
    }
    async fn announce_keys_changed(&self) -> StoreResult<()> {
        timed!(self, "announce_keys_changed", self.inner.announce_keys_changed())
    }
    async fn announce_resync(&self) -> StoreResult<()> {
        timed!(self, "announce_resync", self.inner.announce_resync())
    }
}

#[async_trait]
impl Sweep for Timed<dyn Sweep> {
    async fn sweep(&self, now: Timestamp) -> StoreResult<Swept> {
        timed!(self, "sweep", self.inner.sweep(now))
    }
}

#[async_trait]
impl ThrottleStore for Timed<dyn ThrottleStore> {
    async fn throttle_state(&self, key: &str, now: Timestamp) -> StoreResult<Option<ThrottleState>> {
        timed!(self, "throttle_state", self.inner.throttle_state(key, now))
    }
    async fn begin_attempt(&self, key: &str, rule: &ThrottleRule, now: Timestamp) -> StoreResult<Attempt> {
        timed!(self, "begin_attempt", self.inner.begin_attempt(key, rule, now))
    }
    async fn refund_attempt(&self, key: &str, rule: &ThrottleRule, now: Timestamp) -> StoreResult<()> {
        timed!(self, "refund_attempt", self.inner.refund_attempt(key, rule, now))
    }
    async fn clear_failures(&self, key: &str) -> StoreResult<()> {
        timed!(self, "clear_failures", self.inner.clear_failures(key))
    }
}

#[async_trait]
impl AuditStore for Timed<dyn AuditStore> {
    async fn append(&self, event: &NewAuditEvent) -> StoreResult<()> {
        timed!(self, "append", self.inner.append(event))
    }
    async fn audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        timed!(self, "audit_events", self.inner.audit_events(query))
    }
    async fn purge_audit(&self, cutoff: Timestamp) -> StoreResult<u64> {
        timed!(self, "purge_audit", self.inner.purge_audit(cutoff))
    }
}

#[async_trait]
impl ClientStore for Timed<dyn ClientStore> {
    async fn create_client(&self, client: &Client) -> StoreResult<()> {
        timed!(self, "create_client", self.inner.create_client(client))
    }
    async fn client(&self, id: &ClientId) -> StoreResult<Option<Client>> {
        timed!(self, "client", self.inner.client(id))
    }
    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        timed!(self, "list_clients", self.inner.list_clients())
    }
    async fn delete_client(&self, id: &ClientId) -> StoreResult<bool> {
        timed!(self, "delete_client", self.inner.delete_client(id))
    }
    async fn rotate_client_secret(
        &self,
        id: &ClientId,
        new_hash: SecretHash,
        previous_until: Timestamp,
    ) -> StoreResult<Option<Client>> {
        timed!(self, "rotate_client_secret", self.inner.rotate_client_secret(id, new_hash, previous_until))
    }
    async fn touch_client(&self, id: &ClientId, at: Timestamp) -> StoreResult<()> {
        timed!(self, "touch_client", self.inner.touch_client(id, at))
    }
}

#[async_trait]
impl FactorStore for Timed<dyn FactorStore> {
    async fn factors(&self, user: &UserId) -> StoreResult<Factors> {
        timed!(self, "factors", self.inner.factors(user))
    }
    async fn begin_totp(&self, user: &UserId, sealed_secret: Vec<u8>, now: Timestamp) -> StoreResult<bool> {
        timed!(self, "begin_totp", self.inner.begin_totp(user, sealed_secret, now))
    }
    async fn accept_totp_step(&self, user: &UserId, step: u64, confirm: bool) -> StoreResult<bool> {
        timed!(self, "accept_totp_step", self.inner.accept_totp_step(user, step, confirm))
    }
    async fn delete_totp(&self, user: &UserId) -> StoreResult<bool> {
        timed!(self, "delete_totp", self.inner.delete_totp(user))
    }
    async fn set_recovery_codes(&self, user: &UserId, hashes: Vec<[u8; 32]>, now: Timestamp) -> StoreResult<()> {
        timed!(self, "set_recovery_codes", self.inner.set_recovery_codes(user, hashes, now))
    }
    async fn use_recovery_code(&self, user: &UserId, hash: [u8; 32]) -> StoreResult<bool> {
        timed!(self, "use_recovery_code", self.inner.use_recovery_code(user, hash))
    }
    async fn delete_factors(&self, user: &UserId) -> StoreResult<bool> {
        timed!(self, "delete_factors", self.inner.delete_factors(user))
    }
    async fn add_passkey(&self, passkey: &StoredPasskey) -> StoreResult<()> {
        timed!(self, "add_passkey", self.inner.add_passkey(passkey))
    }
    async fn passkeys(&self, user: &UserId) -> StoreResult<Vec<StoredPasskey>> {
        timed!(self, "passkeys", self.inner.passkeys(user))
    }
    async fn passkey(&self, id: &str) -> StoreResult<Option<StoredPasskey>> {
        timed!(self, "passkey", self.inner.passkey(id))
    }
    async fn passkey_used(&self, id: &str, credential: String, now: Timestamp) -> StoreResult<bool> {
        timed!(self, "passkey_used", self.inner.passkey_used(id, credential, now))
    }
    async fn delete_passkey(&self, user: &UserId, id: &str) -> StoreResult<bool> {
        timed!(self, "delete_passkey", self.inner.delete_passkey(user, id))
    }
    async fn add_reset_token(
        &self,
        user: &UserId,
        hash: [u8; 32],
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        timed!(self, "add_reset_token", self.inner.add_reset_token(user, hash, expires_at, now))
    }
    async fn take_reset_token(&self, hash: [u8; 32], now: Timestamp) -> StoreResult<Option<UserId>> {
        timed!(self, "take_reset_token", self.inner.take_reset_token(hash, now))
    }
    async fn delete_reset_tokens(&self, user: &UserId) -> StoreResult<()> {
        timed!(self, "delete_reset_tokens", self.inner.delete_reset_tokens(user))
    }
}

#[async_trait]
impl KeyStore for Timed<dyn KeyStore> {
    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        timed!(self, "signing_keys", self.inner.signing_keys())
    }
    async fn add_signing_key(&self, key: StoredKey, retire_others_at: Timestamp) -> StoreResult<()> {
        timed!(self, "add_signing_key", self.inner.add_signing_key(key, retire_others_at))
    }
    async fn secret(&self, name: &str, candidate: Vec<u8>) -> StoreResult<Vec<u8>> {
        timed!(self, "secret", self.inner.secret(name, candidate))
    }

    async fn find_secret(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        timed!(self, "find_secret", self.inner.find_secret(name))
    }
}
