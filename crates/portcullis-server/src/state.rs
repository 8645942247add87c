//! The shared state every handler sees.

use std::ops::Deref;
use std::sync::Arc;

use portcullis_service::Service;

use crate::cookies::Cookies;
use crate::metrics::Metrics;
use crate::pages::csrf::Csrf;
use crate::pages::return_to::ReturnTo;
use crate::proxies::TrustedProxies;
use crate::settings::Settings;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub settings: Settings,
    /// Every operation: handlers only translate HTTP to these calls and back.
    pub service: Service,
    pub cookies: Cookies,
    /// The ASCII origin of `public_url` (`https://auth.example.com`).
    pub public_origin: String,
    /// The origins that are this server, whose browser requests may change state:
    /// `public_origin` first, then (zero configuration on loopback) the other loopback spellings
    /// of its port (`Settings::own_origins`).
    pub own_origins: Vec<String>,
    /// `cors.allowed_origins`, as browsers write them: also trusted by the cross-site guard.
    pub cors_origins: Vec<String>,
    pub trusted_proxies: TrustedProxies,
    pub metrics: Arc<Metrics>,
    /// The pages' CSRF tokens.
    pub csrf: Csrf,
    /// Where a sign-in may send people afterwards.
    pub return_to: ReturnTo,
    /// The pages' `Content-Security-Policy`.
    pub page_csp: axum::http::HeaderValue,
    /// Where email goes.
    pub mailer: Arc<crate::mailer::Mailer>,
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
