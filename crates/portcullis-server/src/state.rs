//! The shared state every handler sees.

use std::ops::Deref;
use std::sync::Arc;

use crate::auth::Auth;
use crate::http::{Cookies, TrustedProxies};
use crate::settings::Settings;
use crate::tokens::Tokens;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub settings: Settings,
    pub auth: Auth,
    pub tokens: Arc<Tokens>,
    pub cookies: Cookies,
    /// The ASCII origin of `public_url` (`https://auth.example.com`), the only origin whose
    /// browser requests may change state.
    pub public_origin: String,
    /// `cors.allowed_origins`, as browsers write them: also trusted by the cross-site guard.
    pub cors_origins: Vec<String>,
    pub trusted_proxies: TrustedProxies,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub pages: crate::pages::Pages,
    /// The local session cache, if turned on: the revocation feed drops ended sessions from it.
    pub session_cache: Option<Arc<portcullis_store::cache::CachedSessions>>,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}
