//! # portcullis-server
//!
//! The Portcullis HTTP server as a library: settings, routes, extractors and middleware.
//! Handlers are thin: they parse the request and call [`auth::Auth`], which holds the rules and
//! talks to the stores. The `portcullis` binary (`crates/portcullis`) composes this crate with
//! the lab; this crate must not depend on the lab, the bench or the binary's command line.
//! ARCHITECTURE.md at the project root follows one request through these files.
//!
//! ## Layout
//!
//! - [`settings`]: the one settings struct (file, environment, flags).
//! - [`auth`]: the operations (register, login, authenticate, sessions, admin) without HTTP.
//! - [`http`]: request bodies, the session cookie, authentication extractors, the cross-site guard.
//! - [`routes`]: the API of DESIGN §3.
//! - [`error`]: problem+json answers.
//! - [`serve`]: accepting connections, with the header-read timeout, connection limit and
//!   shutdown deadline.
//! - [`throttle`], [`tokens`], [`audit`], [`keyring`], [`metrics`], [`pages`]: login limits, JWT
//!   flows, the audit log, signing keys, Prometheus metrics, the pages for people.
//! - [`Server`]: opens the stores, binds, serves until told to stop.

pub mod audit;
pub mod auth;
pub mod error;
pub mod http;
pub mod instrumented;
pub mod keyring;
pub mod metrics;
pub mod pages;
pub mod routes;
pub mod serve;
pub mod settings;
pub mod spawn;
pub mod state;
pub mod throttle;
pub mod tokens;
pub mod user_cache;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware;
use portcullis_core::jwt::Expectations;
use portcullis_core::refresh::RefreshKey;
use portcullis_core::revocation::Revocations;
use portcullis_core::{Clock, PasswordHasher, SessionPolicy};
use portcullis_store::cache::CachedSessions;
use portcullis_store::memory::MemorySessionStore;
use portcullis_store::postgres::PostgresStore;
use portcullis_store::redis::RedisStore;
use portcullis_store::sqlite::SqliteStore;
use portcullis_store::{
    AuditStore, FeedItem, KeyStore, RevocationStore, SessionStore, StoreError, ThrottleStore, UserStore,
};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use url::Url;

use crate::auth::Auth;
use crate::http::{Cookies, MAX_BODY_BYTES};
use crate::keyring::KeyRing;
use crate::settings::{SessionBackend, Settings, SettingsError, UserBackend};
use crate::state::{AppState, Inner};
use crate::tokens::Tokens;
use crate::user_cache::{CachedUsers, USER_CACHE_FRESH};

/// How long one request may take before it is answered 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How often dead session records are swept from the store.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("cannot use data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot start the password hashing pool")]
    Hasher,
    #[error("cannot load the signing keys: {0}")]
    Keys(String),
    #[error(
        "data directory {} is in use by another portcullis server: sessions and revocations on SQLite \
         are seen by one node only; run several nodes with store.sessions on Redis (docs/CLUSTER.md), \
         or give each its own data_dir", path.display()
    )]
    DataDirInUse { path: PathBuf },
}

/// The stores named by the settings.
pub struct Stores {
    pub users: Arc<dyn UserStore>,
    pub keys: Arc<dyn KeyStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub revocations: Arc<dyn RevocationStore>,
    /// Failed-login counters, kept with the sessions.
    pub throttles: Arc<dyn ThrottleStore>,
    /// The audit log, kept with the users.
    pub audit: Arc<dyn AuditStore>,
    /// The local session cache, when `store.session_cache` turns it on (also in `sessions`).
    pub session_cache: Option<Arc<CachedSessions>>,
}

/// Creates `data_dir` (mode 0700) if needed.
pub fn ensure_data_dir(settings: &Settings) -> Result<(), StartError> {
    let dir = &settings.data_dir;
    let err = |source| StartError::DataDir { path: dir.clone(), source };
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(dir).map_err(err)?;
    }
    Ok(())
}

/// The name of the lock file a server holds in `data_dir` while it serves from SQLite.
pub const LOCK_FILE: &str = "portcullis.lock";

/// Holds `data_dir/portcullis.lock` while a server serves sessions from SQLite: two servers on
/// one SQLite database would each keep their own revocation replica and never hear of the
/// other's logouts. The lock is the operating system's (`flock`), so it goes with the process.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    /// Takes the lock, or says which directory is in use.
    pub fn acquire(settings: &Settings) -> Result<Self, StartError> {
        ensure_data_dir(settings)?;
        let path = settings.data_dir.join(LOCK_FILE);
        let err = |source| StartError::DataDir { path: path.clone(), source };
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(err)?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StartError::DataDirInUse { path: settings.data_dir.clone() }),
            Err(std::fs::TryLockError::Error(e)) => Err(err(e)),
        }
    }
}

/// Opens (creating and migrating as needed) the stores the settings name; with `metrics`, every
/// store operation is timed.
pub async fn open_stores(
    settings: &Settings,
    clock: Arc<dyn Clock>,
    metrics: Option<&Arc<metrics::Metrics>>,
) -> Result<Stores, StartError> {
    let user_backend = settings.user_backend()?;
    let session_backend = settings.session_backend()?;
    let needs_sqlite = user_backend == UserBackend::Sqlite || session_backend == SessionBackend::Sqlite;
    let sqlite = if needs_sqlite {
        ensure_data_dir(settings)?;
        Some(SqliteStore::open(settings.database_path()).await?)
    } else {
        None
    };
    let sqlite_store = || sqlite.clone().ok_or_else(|| StartError::Store(StoreError::Unavailable("sqlite".into())));
    let (users, keys, audit): (Arc<dyn UserStore>, Arc<dyn KeyStore>, Arc<dyn AuditStore>) = match user_backend {
        UserBackend::Sqlite => {
            let s = Arc::new(sqlite_store()?);
            (s.clone(), s.clone(), s)
        }
        UserBackend::Postgres(url) => {
            let pg = Arc::new(PostgresStore::connect(&url).await?);
            (pg.clone(), pg.clone(), pg)
        }
    };
    type SessionSide = (Arc<dyn SessionStore>, Arc<dyn RevocationStore>, Arc<dyn ThrottleStore>);
    let (sessions, revocations, throttles): SessionSide = match session_backend {
        SessionBackend::Sqlite => {
            let s = Arc::new(sqlite_store()?);
            (s.clone(), s.clone(), s)
        }
        SessionBackend::Memory => {
            let memory = Arc::new(MemorySessionStore::new());
            (memory.clone(), memory.clone(), memory)
        }
        SessionBackend::Redis(url) => {
            let redis = Arc::new(RedisStore::connect(&url, Arc::clone(&clock)).await?);
            (redis.clone(), redis.clone(), redis)
        }
    };
    let (users, keys, audit, sessions, revocations, throttles) = match metrics {
        None => (users, keys, audit, sessions, revocations, throttles),
        Some(m) => {
            use instrumented::Timed;
            let m = || Arc::clone(m);
            (
                Timed::new(users, m(), "users") as Arc<dyn UserStore>,
                Timed::new(keys, m(), "keys") as Arc<dyn KeyStore>,
                Timed::new(audit, m(), "audit") as Arc<dyn AuditStore>,
                Timed::new(sessions, m(), "sessions") as Arc<dyn SessionStore>,
                Timed::new(revocations, m(), "revocations") as Arc<dyn RevocationStore>,
                Timed::new(throttles, m(), "throttles") as Arc<dyn ThrottleStore>,
            )
        }
    };
    let session_cache = (!settings.store.session_cache.is_zero()).then(|| {
        Arc::new(CachedSessions::new(
            Arc::clone(&sessions),
            Arc::clone(&revocations),
            settings.store.session_cache,
            Arc::clone(&clock),
        ))
    });
    let sessions: Arc<dyn SessionStore> = match &session_cache {
        Some(cache) => cache.clone(),
        None => sessions,
    };
    let users: Arc<dyn UserStore> = Arc::new(CachedUsers::new(users, USER_CACHE_FRESH, clock));
    Ok(Stores { users, keys, sessions, revocations, throttles, audit, session_cache })
}

impl Settings {
    /// The JWT issuer: `public_url` without a trailing slash.
    pub fn issuer(public_url: &Url) -> String {
        public_url.as_str().trim_end_matches('/').to_owned()
    }

    pub fn session_policy(&self) -> SessionPolicy {
        SessionPolicy {
            idle_timeout: self.session.idle_timeout,
            absolute_timeout: self.session.absolute_timeout,
            refresh_ttl: self.jwt.refresh_ttl,
        }
    }

    /// How long after a revocation an access token it must stop can still be presented.
    pub fn access_token_horizon(&self) -> Duration {
        self.jwt.access_ttl + self.jwt.leeway
    }
}

/// The operations, over the stores the settings name.
pub fn auth_for(
    settings: &Settings,
    stores: &Stores,
    clock: Arc<dyn Clock>,
    hasher: PasswordHasher,
    metrics: Arc<metrics::Metrics>,
) -> Auth {
    Auth {
        metrics,
        users: Arc::clone(&stores.users),
        sessions: Arc::clone(&stores.sessions),
        revocations: Arc::clone(&stores.revocations),
        replica: Arc::new(Revocations::new()),
        hasher,
        audit: audit::Audit { store: Arc::clone(&stores.audit), clock: Arc::clone(&clock) },
        clock,
        policy: settings.session_policy(),
        access_token_horizon: settings.access_token_horizon(),
        throttle: None,
        limits: Arc::clone(&stores.throttles),
    }
}

/// The application: routes and every layer around them.
pub fn app(state: AppState) -> Router {
    let guard = middleware::from_fn_with_state(state.clone(), http::cross_site_guard);
    let hsts = state.public_origin.starts_with("https://").then(|| {
        SetResponseHeaderLayer::if_not_present(
            HeaderName::from_static("strict-transport-security"),
            HeaderValue::from_static("max-age=31536000"),
        )
    });
    let count = middleware::from_fn_with_state(Arc::clone(&state.metrics), metrics::count_requests);
    let mut router = routes::router().merge(pages::router());
    if state.settings.metrics {
        router = router.route("/metrics", axum::routing::get(metrics::serve));
    }
    router
        .route_layer(middleware::from_fn(metrics::tag_route))
        .fallback(|| async { error::ApiError::new(StatusCode::NOT_FOUND, "not_found") })
        .layer(
            ServiceBuilder::new()
                .layer(count)
                .layer(SetResponseHeaderLayer::overriding(
                    HeaderName::from_static("x-content-type-options"),
                    HeaderValue::from_static("nosniff"),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    HeaderName::from_static("referrer-policy"),
                    HeaderValue::from_static("no-referrer"),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    HeaderName::from_static("x-frame-options"),
                    HeaderValue::from_static("DENY"),
                ))
                // API answers are data, never documents: nothing may load from them or frame
                // them. Pages set their own policy.
                .layer(SetResponseHeaderLayer::if_not_present(
                    HeaderName::from_static("content-security-policy"),
                    HeaderValue::from_static(API_CSP),
                ))
                .option_layer(hsts)
                .option_layer(cors_layer(&state.cors_origins))
                .layer(middleware::from_fn(error::problem_fallback))
                .layer(CatchPanicLayer::custom(error::panic_response))
                .layer(TraceLayer::new_for_http())
                .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
                .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
                .layer(guard)
                .layer(middleware::from_fn(http::form_access_token)),
        )
        .with_state(state)
}

/// The `Content-Security-Policy` of every API answer.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// CORS for `cors.allowed_origins` (none: no CORS headers at all, so browsers refuse every
/// cross-origin read). Allowed origins may send credentials (cookies, `Authorization`); the
/// answer names the one requesting origin, never `*`, and varies on `Origin`.
fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{Method, header};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return None;
    }
    let list: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(list))
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .expose_headers([header::WWW_AUTHENTICATE, header::RETRY_AFTER])
            .max_age(Duration::from_secs(600)),
    )
}

/// A 256-bit secret named `name`, shared by every node: made by the first to ask, read by the
/// rest (the refresh-token chain key, the throttle key, the CSRF key).
async fn server_secret(keys: &dyn KeyStore, name: &str) -> Result<Vec<u8>, StoreError> {
    let mut candidate = vec![0u8; 32];
    portcullis_core::secret::fill_random(&mut candidate);
    keys.secret(name, candidate).await
}

/// A server bound to its address, ready to run.
pub struct Server {
    listener: TcpListener,
    state: AppState,
    public_url: Url,
    /// Held while serving sessions from SQLite; released when [`Server::run`] ends.
    lock: Option<DataDirLock>,
}

impl Server {
    /// Binds `settings.listen` and opens the stores.
    pub async fn bind(settings: Settings, clock: Arc<dyn Clock>) -> Result<Self, StartError> {
        let addr = settings.listen;
        let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Listen { addr, source })?;
        Self::with_listener(settings, clock, listener).await
    }

    /// Uses an already bound listener (tests bind port 0). An unset `public_url` becomes
    /// `http://<the bound address>`.
    pub async fn with_listener(
        settings: Settings,
        clock: Arc<dyn Clock>,
        listener: TcpListener,
    ) -> Result<Self, StartError> {
        settings.validate()?;
        let lock = match settings.session_backend()? {
            SessionBackend::Sqlite => Some(DataDirLock::acquire(&settings)?),
            SessionBackend::Memory | SessionBackend::Redis(_) => None,
        };
        let local = listener.local_addr().map_err(|source| StartError::Listen { addr: settings.listen, source })?;
        let public_url = match &settings.public_url {
            Some(u) => u.clone(),
            None => Url::parse(&format!("http://{local}"))
                .map_err(|e| SettingsError::Invalid(format!("public_url: {e}")))?,
        };
        let metrics = Arc::new(metrics::Metrics::new());
        let stores = open_stores(&settings, Arc::clone(&clock), Some(&metrics)).await?;
        let hasher = PasswordHasher::with_default_size().map_err(|_| StartError::Hasher)?;
        let mut auth = auth_for(&settings, &stores, Arc::clone(&clock), hasher, Arc::clone(&metrics));
        if settings.throttle.enabled {
            let secret = server_secret(stores.keys.as_ref(), throttle::THROTTLE_KEY_NAME).await?;
            auth.throttle = Some(Arc::new(throttle::Throttle::new(&settings, Arc::clone(&stores.throttles), &secret)));
        }
        auth.replica.replace(stores.revocations.snapshot(clock.now()).await?);
        let keys = KeyRing::open(
            Arc::clone(&stores.keys),
            Arc::clone(&clock),
            settings.jwt.algorithm,
            settings.hmac_secret()?,
            settings.access_token_horizon(),
        )
        .await
        .map_err(|e| StartError::Keys(e.to_string()))?;
        let refresh_key = server_secret(stores.keys.as_ref(), tokens::REFRESH_KEY_NAME).await?;
        let issuer = Settings::issuer(&public_url);
        let expect = Expectations {
            audience: settings.jwt.audience.clone().unwrap_or_else(|| issuer.clone()),
            issuer,
            leeway: settings.jwt.leeway,
        };
        let tokens = Arc::new(Tokens::new(
            Arc::new(keys),
            expect,
            settings.jwt.access_ttl,
            settings.jwt.revocation,
            RefreshKey::new(&refresh_key),
            settings.jwt.refresh_grace,
            settings.jwt.token_cache_size,
        ));
        let cookies = Cookies { secure: settings.session.cookie_secure };
        let public_origin = public_url.origin().ascii_serialization();
        let session_cache = stores.session_cache.clone();
        let cors_origins = settings.cors_origins()?;
        let csrf_secret = server_secret(stores.keys.as_ref(), pages::CSRF_KEY_NAME).await?;
        let mut return_origins = cors_origins.clone();
        return_origins.extend(settings.return_to_origins()?);
        let pages = pages::Pages::new(&csrf_secret, &public_origin, &return_origins);
        let trusted_proxies = http::TrustedProxies::parse(&settings.trusted_proxies).map_err(SettingsError::Invalid)?;
        let state = AppState::new(Inner {
            settings,
            auth,
            tokens,
            cookies,
            public_origin,
            cors_origins,
            trusted_proxies,
            session_cache,
            metrics,
            pages,
        });
        Ok(Self { listener, state, public_url, lock })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn public_url(&self) -> &Url {
        &self.public_url
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then finishes the requests in flight.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let background = [
            tokio::spawn(purge_loop(self.state.clone())),
            tokio::spawn(key_reload_loop(self.state.clone())),
            tokio::spawn(revocation_feed(self.state.clone())),
        ];
        let connections = self.state.settings.connections.clone();
        let result = serve::serve(self.listener, app(self.state), &connections, shutdown).await;
        for task in background {
            task.abort();
        }
        drop(self.lock);
        result
    }
}

async fn key_reload_loop(state: AppState) {
    let mut tick = tokio::time::interval(keyring::KEY_RELOAD_INTERVAL);
    loop {
        tick.tick().await;
        match state.tokens.keys.reload().await {
            Ok(true) => tracing::info!(kid = state.tokens.keys.current().signing.kid(), "signing keys reloaded"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not reload the signing keys"),
        }
    }
}

/// Keeps this node's revocation replica in step with the store: events as they come, and a
/// full snapshot whenever some may have been missed.
async fn revocation_feed(state: AppState) {
    let auth = &state.auth;
    let mut feed = auth.revocations.subscribe();
    loop {
        let resync = match feed.recv().await {
            Ok(FeedItem::Event(event)) => {
                let lag = match &event {
                    portcullis_core::revocation::RevocationEvent::NotBefore { at, .. } => {
                        Some(auth.clock.now().since(*at))
                    }
                    portcullis_core::revocation::RevocationEvent::Deny { .. } => None,
                };
                state.metrics.feed_event(lag);
                auth.replica.apply(&event);
                false
            }
            Ok(FeedItem::SessionsEnded(ids)) => {
                if let Some(cache) = &state.session_cache {
                    cache.forget(&ids);
                }
                false
            }
            Ok(FeedItem::KeysChanged) => {
                if let Err(e) = state.tokens.keys.reload().await {
                    tracing::warn!(error = %e, "could not reload the signing keys");
                }
                false
            }
            Ok(FeedItem::Resync) => true,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "revocation feed lagged; re-reading the snapshot");
                true
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        // Until the snapshot is read, the replica keeps what it knew (JWT checks go on).
        if !resync {
            continue;
        }
        state.metrics.feed_resync();
        if let Some(cache) = &state.session_cache {
            cache.clear();
        }
        while let Err(e) = merge_snapshot(auth).await {
            tracing::warn!(error = %e, "could not re-read revocations; retrying");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Merges the store's revocation state into this node's replica, and writes back what the
/// store lacks: revocations are never undone, so a store that restarted empty must not bring a
/// revoked token back to life, and the nodes that saw the revocations hand them back to it.
async fn merge_snapshot(auth: &Auth) -> Result<(), StoreError> {
    let now = auth.clock.now();
    let snapshot = auth.revocations.snapshot(now).await?;
    let missing = auth.replica.merge(snapshot, now);
    if !missing.is_empty() {
        tracing::warn!(
            denied = missing.denied.len(),
            not_before = missing.not_before.len(),
            "the revocation store lacked entries this node holds (it lost its data); writing them back"
        );
        auth.revocations.restore(&missing).await?;
    }
    Ok(())
}

async fn purge_loop(state: AppState) {
    let mut tick = tokio::time::interval(PURGE_INTERVAL);
    loop {
        tick.tick().await;
        let now = state.auth.clock.now();
        match state.auth.sessions.purge_expired(now).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "expired sessions removed"),
            Err(e) => tracing::warn!(error = %e, "could not purge expired sessions"),
        }
        if let Err(e) = state.auth.revocations.purge_revocations(now).await {
            tracing::warn!(error = %e, "could not purge lapsed revocations");
        }
        if let Some(throttle) = &state.auth.throttle
            && let Err(e) = throttle.purge(now).await
        {
            tracing::warn!(error = %e, "could not purge expired throttle counters");
        }
        let retention = state.settings.audit.retention;
        if !retention.is_zero()
            && let Some(cutoff) =
                now.unix_millis().checked_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX))
            && let Err(e) =
                state.auth.audit.store.purge_audit(portcullis_core::Timestamp::from_unix_millis(cutoff)).await
        {
            tracing::warn!(error = %e, "could not purge old audit events");
        }
        state.auth.replica.prune(now);
    }
}
