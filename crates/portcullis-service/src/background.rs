//! The work a serving node does on its own: keeping its revocation replica and session cache in
//! step with the store's feed, re-reading the signing keys, and sweeping what has expired.

use std::time::Duration;

use portcullis_core::Timestamp;
use portcullis_core::revocation::RevocationEvent;
use portcullis_store::{FeedItem, StoreError};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use crate::keyring::KEY_RELOAD_INTERVAL;
use crate::service::Service;

/// How often dead session records, lapsed revocations, old throttle counters and (with a
/// retention) old audit events are swept from the stores.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// The background tasks of one node; they stop when this is dropped.
pub struct Background {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Service {
    /// Starts the background tasks of a serving node.
    pub fn start_background(&self) -> Background {
        let tasks = vec![
            tokio::spawn(self.clone().purge_loop()),
            tokio::spawn(self.clone().key_reload_loop()),
            tokio::spawn(self.clone().follow_revocations()),
        ];
        Background { tasks }
    }

    async fn key_reload_loop(self) {
        let keys = &self.tokens.keys;
        let mut tick = tokio::time::interval(KEY_RELOAD_INTERVAL);
        loop {
            tick.tick().await;
            match keys.reload().await {
                Ok(true) => tracing::info!(kid = keys.current().signing.kid(), "signing keys reloaded"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "could not reload the signing keys"),
            }
        }
    }

    /// Keeps this node's revocation replica in step with the store: events as they come, and a
    /// full snapshot whenever some may have been missed.
    async fn follow_revocations(self) {
        let mut feed = self.feed.subscribe();
        loop {
            let resync = match feed.recv().await {
                Ok(FeedItem::Event(event)) => {
                    let lag = match &event {
                        RevocationEvent::NotBefore { at, .. } => Some(self.clock.now().since(*at)),
                        RevocationEvent::Deny { .. } => None,
                    };
                    self.observer.feed_event(lag);
                    self.replica.apply(&event);
                    self.feed_log.push(event);
                    false
                }
                Ok(FeedItem::SessionsEnded(ids)) => {
                    if let Some(cache) = &self.session_cache {
                        cache.forget(&ids);
                    }
                    false
                }
                Ok(FeedItem::KeysChanged) => {
                    if let Err(e) = self.tokens.keys.reload().await {
                        tracing::warn!(error = %e, "could not reload the signing keys");
                    }
                    false
                }
                Ok(FeedItem::Resync) => true,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "revocation feed lagged; re-reading the snapshot");
                    true
                }
                Err(RecvError::Closed) => return,
            };
            // Until the snapshot is read, the replica keeps what it knew (JWT checks go on).
            if !resync {
                continue;
            }
            self.observer.feed_resync();
            // Services following this node may have missed events too: they start over.
            self.feed_log.reset();
            if let Some(cache) = &self.session_cache {
                cache.clear();
            }
            // Until the whole snapshot is merged, the feed does not count as connected.
            self.replica_sync.reading(self.clock.now());
            let started = std::time::Instant::now();
            loop {
                let connection = self.feed.feed_status().connection;
                match self.merge_snapshot().await {
                    Ok(entries) => {
                        self.replica_sync.done(connection);
                        tracing::debug!(entries, elapsed = ?started.elapsed(), "revocations re-read");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not re-read revocations; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
    }

    /// Merges the store's revocation state into this node's replica, and writes back what the
    /// store lacks: revocations are never undone, so a store that restarted empty must not bring
    /// a revoked token back to life, and the nodes that saw the revocations hand them back to it.
    /// Answers how many entries the snapshot had.
    async fn merge_snapshot(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let snapshot = self.revocations.snapshot(now).await?;
        let entries = snapshot.denied.len() + snapshot.not_before.len();
        let missing = self.replica.merge(snapshot, now);
        if !missing.is_empty() {
            tracing::warn!(
                denied = missing.denied.len(),
                not_before = missing.not_before.len(),
                "the revocation store lacked entries this node holds (it lost its data); writing them back"
            );
            self.revocations.restore(&missing).await?;
            // Nodes that merged before this write-back have not seen these: they merge again.
            if let Err(e) = self.feed.announce_resync().await {
                tracing::warn!(error = %e, "could not ask the other nodes to re-read the revocations");
            }
        }
        Ok(entries)
    }

    async fn purge_loop(self) {
        let mut tick = tokio::time::interval(PURGE_INTERVAL);
        loop {
            tick.tick().await;
            self.sweep().await;
        }
    }

    /// One sweep of everything that has expired.
    async fn sweep(&self) {
        let now = self.clock.now();
        if let Some(sweep) = &self.sweep {
            match sweep.sweep(now).await {
                Ok(swept) if swept.total() == 0 => {}
                Ok(swept) => tracing::debug!(
                    sessions = swept.sessions,
                    revocations = swept.revocations,
                    throttles = swept.throttles,
                    "expired entries removed"
                ),
                Err(e) => tracing::warn!(error = %e, "could not sweep expired entries"),
            }
        }
        if !self.audit_retention.is_zero()
            && let Some(cutoff) =
                now.unix_millis().checked_sub(i64::try_from(self.audit_retention.as_millis()).unwrap_or(i64::MAX))
            && let Err(e) = self.audit.store.purge_audit(Timestamp::from_unix_millis(cutoff)).await
        {
            tracing::warn!(error = %e, "could not purge old audit events");
        }
        self.replica.prune(now);
    }
}
