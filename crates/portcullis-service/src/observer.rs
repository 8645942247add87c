//! What the service reports as it works, for whoever counts it (the server's metrics). Every
//! method does nothing by default, so an observer implements only what it records.

use std::time::Duration;

pub trait Observer: Send + Sync {
    /// A login attempt in `mode` (`session`, `jwt`) ended with `outcome` (`success`,
    /// `invalid_credentials`, `throttled`).
    fn login(&self, _mode: &'static str, _outcome: &'static str) {}
    /// An attempt was refused by the throttle counter of `scope`.
    fn throttled(&self, _scope: &'static str) {}
    /// A rotated refresh token came back; its session was revoked.
    fn refresh_reuse(&self) {}
    /// This node revoked something of `kind` (`token`, `session`, `user`).
    fn revocation(&self, _kind: &'static str) {}
    /// A revocation arrived on the feed; for a sign-out-everywhere, `lag` since it was made.
    fn feed_event(&self, _lag: Option<Duration>) {}
    /// The revocation state was re-read in full (the feed may have missed events).
    fn feed_resync(&self) {}
}

/// An observer that records nothing (the CLI, tests).
pub struct Quiet;

impl Observer for Quiet {}
