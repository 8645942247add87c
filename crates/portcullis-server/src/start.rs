//! Start-up: the data directory and its lock, the stores the settings name, and a [`Server`]
//! bound to its address with the service composed over them.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use portcullis_core::{Clock, PasswordHasher};
use portcullis_service::{KeyRingError, OpenError, Purpose, Service, Stores, server_secret};
use portcullis_store::cache::{CachedSessions, CachedUsers, USER_CACHE_FRESH};
use portcullis_store::memory::MemorySessionStore;
use portcullis_store::postgres::PostgresStore;
use portcullis_store::redis::RedisStore;
use portcullis_store::sqlite::SqliteStore;
use portcullis_store::timed::{StoreObserver, Timed};
use portcullis_store::{
    AuditStore, ClientStore, ClusterFeed, FactorStore, KeyStore, RevocationStore, SessionStore, StoreError, Sweep,
    ThrottleStore, UserStore,
};
use tokio::net::TcpListener;
use url::Url;

use crate::cookies::Cookies;
use crate::metrics::Metrics;
use crate::pages::csrf::{CSRF_KEY_NAME, Csrf};
use crate::pages::return_to::ReturnTo;
use crate::proxies::TrustedProxies;
use crate::settings::{SessionBackend, Settings, SettingsError, UserBackend};
use crate::state::{AppState, Inner};
use crate::{layers, serve};

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
    #[error(
        "no Portcullis database at {}: check --data-dir and --config (they must name the server's data); \
         `portcullis serve` creates it on its first start", path.display()
    )]
    NoDatabase { path: PathBuf },
    #[error("cannot connect to the {role} store ({backend} at {address}): {source}")]
    Connect { role: &'static str, backend: &'static str, address: String, source: StoreError },
    #[error("cannot start the password hashing pool")]
    Hasher,
    #[error("cannot load the signing keys: {0}")]
    Keys(#[from] KeyRingError),
    #[error(
        "data directory {} is in use by another portcullis server: sessions and revocations on SQLite \
         are seen by one node only; run several nodes with store.sessions on Redis (docs/CLUSTER.md), \
         or give each its own data_dir", path.display()
    )]
    DataDirInUse { path: PathBuf },
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

/// The error for a store that could not be reached at `url` (named without its password).
fn unreachable(role: &'static str, backend: &'static str, url: &str) -> impl FnOnce(StoreError) -> StartError {
    let address = crate::settings::redact(url);
    move |source| StartError::Connect { role, backend, address, source }
}

/// Whether opening the stores may create the embedded database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Creation {
    /// A server: creates the data directory and the database on its first start.
    Create,
    /// The other commands: the database must exist already, so a mistyped `--data-dir` or a
    /// forgotten `--config` is an error, not a fresh empty database.
    Existing,
}

/// Opens (migrating as needed, and creating the embedded database when `creation` allows) the
/// stores the settings name; with `observer`, every store operation is timed.
pub async fn open_stores(
    settings: &Settings,
    clock: Arc<dyn Clock>,
    observer: Option<Arc<dyn StoreObserver>>,
    creation: Creation,
) -> Result<Stores, StartError> {
    let user_backend = settings.user_backend()?;
    let session_backend = settings.session_backend()?;
    let needs_sqlite = user_backend == UserBackend::Sqlite || session_backend == SessionBackend::Sqlite;
    let sqlite = if needs_sqlite {
        let path = settings.database_path();
        match creation {
            Creation::Create => ensure_data_dir(settings)?,
            Creation::Existing if !path.is_file() => return Err(StartError::NoDatabase { path }),
            Creation::Existing => {}
        }
        Some(SqliteStore::open(path).await?)
    } else {
        None
    };
    let sqlite_store = || sqlite.clone().ok_or_else(|| StartError::Store(StoreError::Unavailable("sqlite".into())));
    type UserSide =
        (Arc<dyn UserStore>, Arc<dyn KeyStore>, Arc<dyn AuditStore>, Arc<dyn ClientStore>, Arc<dyn FactorStore>);
    fn user_side<S>(s: Arc<S>) -> UserSide
    where
        S: UserStore + KeyStore + AuditStore + ClientStore + FactorStore,
    {
        (s.clone(), s.clone(), s.clone(), s.clone(), s)
    }
    let (users, keys, audit, clients, factors): UserSide = match user_backend {
        UserBackend::Sqlite => user_side(Arc::new(sqlite_store()?)),
        UserBackend::Postgres(url) => {
            user_side(Arc::new(PostgresStore::connect(&url).await.map_err(unreachable("user", "PostgreSQL", &url))?))
        }
    };
    type SessionSide =
        (Arc<dyn SessionStore>, Arc<dyn RevocationStore>, Arc<dyn ThrottleStore>, Arc<dyn ClusterFeed>, Arc<dyn Sweep>);
    fn side<S>(s: Arc<S>) -> SessionSide
    where
        S: SessionStore + RevocationStore + ThrottleStore + ClusterFeed + Sweep,
    {
        (s.clone(), s.clone(), s.clone(), s.clone(), s)
    }
    let (sessions, revocations, throttles, feed, sweep): SessionSide = match session_backend {
        SessionBackend::Sqlite => side(Arc::new(sqlite_store()?)),
        SessionBackend::Memory => side(Arc::new(MemorySessionStore::new())),
        SessionBackend::Redis(url) => {
            let redis = RedisStore::connect(&url, Arc::clone(&clock)).await;
            side(Arc::new(redis.map_err(unreachable("session", "Redis", &url))?))
        }
    };
    let (users, keys, audit, clients, factors, sessions, revocations, throttles, feed, sweep) = match observer {
        None => (users, keys, audit, clients, factors, sessions, revocations, throttles, feed, sweep),
        Some(o) => {
            let m = || Arc::clone(&o);
            (
                Timed::new(users, m(), "users") as Arc<dyn UserStore>,
                Timed::new(keys, m(), "keys") as Arc<dyn KeyStore>,
                Timed::new(audit, m(), "audit") as Arc<dyn AuditStore>,
                Timed::new(clients, m(), "clients") as Arc<dyn ClientStore>,
                Timed::new(factors, m(), "factors") as Arc<dyn FactorStore>,
                Timed::new(sessions, m(), "sessions") as Arc<dyn SessionStore>,
                Timed::new(revocations, m(), "revocations") as Arc<dyn RevocationStore>,
                Timed::new(throttles, m(), "throttles") as Arc<dyn ThrottleStore>,
                Timed::new(feed, m(), "feed") as Arc<dyn ClusterFeed>,
                Timed::new(sweep, m(), "sweep") as Arc<dyn Sweep>,
            )
        }
    };
    let cache_for = settings.store.session_cache_in_effect();
    // Ends are announced wherever another node may cache the record (a shared store), whether
    // or not this node (or this command) caches it itself: with no staleness allowed the cache
    // keeps nothing and only announces.
    let announce = !cache_for.is_zero() || settings.store.sessions_are_shared();
    let session_cache = announce.then(|| {
        Arc::new(CachedSessions::new(
            Arc::clone(&sessions),
            Arc::clone(&feed),
            Some(Arc::clone(&sweep)),
            cache_for,
            Arc::clone(&clock),
        ))
    });
    let (sessions, sweep): (Arc<dyn SessionStore>, Arc<dyn Sweep>) = match &session_cache {
        Some(cache) => (cache.clone(), cache.clone()),
        None => (sessions, sweep),
    };
    let users: Arc<dyn UserStore> = Arc::new(CachedUsers::new(users, USER_CACHE_FRESH, clock));
    Ok(Stores {
        users,
        keys,
        sessions,
        revocations,
        throttles,
        audit,
        clients,
        factors,
        feed,
        sweep: Some(sweep),
        session_cache,
    })
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
        let public_url = settings.public_url_or(local)?;
        if let Some(warning) = settings.public_url_warning(local) {
            tracing::warn!("{warning}");
        }
        let own_origins = settings.own_origins(&public_url, local);
        let metrics = Arc::new(Metrics::new());
        let stores = open_stores(&settings, Arc::clone(&clock), Some(metrics.clone()), Creation::Create).await?;
        let hasher = PasswordHasher::with_default_size().map_err(|_| StartError::Hasher)?;
        let config = settings.service_config(&public_url)?;
        let service = Service::open(config, &stores, clock, hasher, metrics.clone(), Purpose::Serve).await.map_err(
            |e| match e {
                OpenError::Store(e) => StartError::Store(e),
                OpenError::Keys(e) => StartError::Keys(e),
            },
        )?;
        let cookies = Cookies { secure: settings.session.cookie_secure };
        let public_origin = public_url.origin().ascii_serialization();
        let cors_origins = settings.cors_origins()?;
        let csrf_secret = server_secret(stores.keys.as_ref(), CSRF_KEY_NAME).await?;
        let mut return_origins = own_origins.clone();
        return_origins.extend(cors_origins.iter().cloned());
        return_origins.extend(settings.return_to_origins()?);
        let return_to = ReturnTo::new(&public_origin, &return_origins);
        let page_csp = return_to.page_csp();
        let trusted_proxies = TrustedProxies::parse(&settings.trusted_proxies).map_err(SettingsError::Invalid)?;
        let mailer = Arc::new(crate::mailer::Mailer::from_settings(&settings)?);
        tracing::info!("{}", mailer.describe());
        match service.passkey_rp_id() {
            Some(rp_id) => tracing::info!(rp_id, "passkeys work on pages at this domain"),
            None => tracing::info!("passkeys are off: public_url is an IP address, not a domain name"),
        }
        settings.check_enrolment_possible(&service.enrolment_methods())?;
        let state = AppState::new(Inner {
            settings,
            service,
            cookies,
            public_origin,
            own_origins,
            cors_origins,
            trusted_proxies,
            metrics,
            csrf: Csrf::new(&csrf_secret),
            return_to,
            page_csp,
            mailer,
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
        let background = self.state.service.start_background();
        let delivery = crate::backchannel::start(&self.state.service);
        let connections = self.state.settings.connections.clone();
        // Streams of the revocation feed never end by themselves: end them when shutting down,
        // so the connections they hold close now rather than at the shutdown deadline.
        let log = std::sync::Arc::clone(&self.state.service.feed_log);
        let shutdown = async move {
            shutdown.await;
            log.end_streams();
        };
        let result = serve::serve(self.listener, layers::app(self.state), &connections, shutdown).await;
        drop(background);
        drop(delivery);
        drop(self.lock);
        result
    }
}
