//! # portcullis-server
//!
//! The Portcullis HTTP server as a library: settings, the API, the pages, and the layers and
//! connection handling around them, over the service core (`portcullis-service`), which holds
//! every rule. Handlers only translate: a request into a call of [`portcullis_service::Service`],
//! its result into an answer. The `portcullis` binary (`crates/portcullis`) composes this crate
//! with the lab; this crate must not depend on the lab, the bench or the binary's command line.
//! ARCHITECTURE.md at the project root follows one request through these files.
//!
//! ## Layout
//!
//! Each module can be read knowing only the ones listed before it:
//!
//! - [`settings`]: the one settings struct (file, environment, flags), and what the service
//!   needs of it.
//! - `cookies.rs`, `proxies.rs`: the cookies Portcullis sets; the client address behind trusted
//!   proxies.
//! - `error.rs`: problem+json answers, and how service errors map to them.
//! - `metrics.rs`: Prometheus metrics; it is the service's observer and the stores' timer.
//! - `pages/` (the pages for people: CSRF, the open-redirect guard, layout, and one module per
//!   page family) and `state.rs` (what every handler sees).
//! - `http.rs`: request bodies, the client's address, the authentication extractors.
//! - `oauth.rs`: the OpenID Connect provider's machine endpoints (discovery, token, userinfo),
//!   with RFC 6749 errors; its authorization endpoint is a page (`pages/authorize.rs`).
//! - `cross_site.rs`: the cross-site guard (problem+json for the API, a page for a person).
//! - `feed.rs`: the revocation feed for service clients (HTTP Basic).
//! - `routes.rs`: the JSON API; beside it, its second-factor parts: `mfa.rs` (the second step,
//!   authenticator apps, recovery codes), `passkeys.rs`, `enrolment.rs` (the factor a role
//!   requires, set up at sign-in) and `recovery.rs` with `mailer.rs` (password reset by email).
//! - `layers.rs`: the application: routes and pages inside every layer.
//! - `backchannel.rs`: delivering the service's back-channel logout notices to applications.
//! - `serve.rs`: accepting connections, with the header-read timeout, connection limit and
//!   shutdown deadline.
//! - `start.rs`: the data directory and its lock, the stores, and [`Server`]: binds, composes,
//!   serves until told to stop.
//! - [`spawn`]: a server on a Tokio task, for tests and embedding.

mod backchannel;
mod coarse_timer;
mod cookies;
mod cross_site;
mod enrolment;
mod error;
mod feed;
mod http;
mod layers;
mod mailer;
mod metrics;
mod mfa;
mod oauth;
mod pages;
mod passkeys;
mod proxies;
mod recovery;
mod routes;
mod serve;
pub mod settings;
pub mod spawn;
mod start;
mod state;

pub use backchannel::deliver_queued as deliver_queued_logouts;
pub use cookies::{CookieKind, Cookies};
pub use http::API_CSP;
pub use http::bearer;
pub use layers::{EdgeLayer, REQUEST_TIMEOUT, app};
pub use metrics::Metrics;
pub use pages::csrf::CSRF_KEY_NAME;
pub use proxies::TrustedProxies;
pub use start::{Creation, DataDirLock, LOCK_FILE, Server, StartError, ensure_data_dir, open_stores};
pub use state::{AppState, Inner};
