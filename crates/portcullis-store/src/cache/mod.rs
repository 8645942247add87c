//! Per-node caches in front of a store: [`CachedSessions`] (the local session cache,
//! `store.session_cache`, kept honest by the cluster feed) and [`CachedUsers`] (the user look-up
//! of every session check). Both run through the conformance suite like the backends.

mod sessions;
mod users;

pub use sessions::CachedSessions;
pub use users::{CachedUsers, USER_CACHE_FRESH, USER_CACHE_SIZE};
