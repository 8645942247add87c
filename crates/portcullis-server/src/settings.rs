//! One typed settings struct: defaults, then an optional TOML file, then `PORTCULLIS_*`
//! environment variables, then command-line flags. Unknown keys and bad values stop start-up
//! with a message that names them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use portcullis_core::SessionPolicy;
use portcullis_core::jwt::{Algorithm, Expectations, MIN_HMAC_SECRET};
use serde::{Deserialize, Serialize};
use url::Url;

mod problem;

/// Environment variables with this prefix set settings: `PORTCULLIS_SESSION__IDLE_TIMEOUT=2s`.
pub const ENV_PREFIX: &str = "PORTCULLIS_";

/// Bare origins (`https://app.example.com`), written as browsers send them in `Origin`.
fn origins(key: &str, list: &[String]) -> Result<Vec<String>, SettingsError> {
    list.iter()
        .map(|o| {
            let bad =
                || SettingsError::Invalid(format!("{key}: {o:?} is not an origin like \"https://app.example.com\""));
            let url = Url::parse(o).map_err(|_| bad())?;
            let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none();
            if !matches!(url.scheme(), "http" | "https") || !bare || !url.username().is_empty() {
                return Err(bad());
            }
            Ok(url.origin().ascii_serialization())
        })
        .collect()
}

/// ASVS 5.0 (6.3.1 / 4.0.3 2.2.1): no more than 100 failed attempts per account per hour.
pub const MAX_ACCOUNT_FAILURES_PER_HOUR: u64 = 100;

/// `PORTCULLIS_TEST_*` variables belong to the test suite, not to the settings.
const ENV_RESERVED: &str = "test_";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// The address to listen on (a host name is resolved at start-up).
    #[serde(deserialize_with = "problem::listen")]
    pub listen: SocketAddr,
    /// Where the embedded database and keys live.
    pub data_dir: PathBuf,
    /// The URL clients reach Portcullis at: the JWT issuer and the only origin trusted for
    /// cookie-authenticated requests. Defaults to `http://<listen>`.
    pub public_url: Option<Url>,
    /// Self-service registration: `registration = true | false` (open or not), or the table
    /// `[registration]` with `open` and `verify_email`.
    pub registration: RegistrationSettings,
    /// Whether `GET /metrics` is served (on the main listener: keep it away from the public in
    /// the proxy, as the nginx examples do).
    pub metrics: bool,
    /// Reverse proxies whose `X-Forwarded-For` is believed, as addresses or CIDR ranges
    /// (`["127.0.0.1", "10.0.0.0/8"]`). Empty (the default): the client is the socket peer.
    #[serde(deserialize_with = "problem::list")]
    pub trusted_proxies: Vec<String>,
    pub store: StoreSettings,
    pub session: SessionSettings,
    pub jwt: JwtSettings,
    pub cors: CorsSettings,
    pub pages: PagesSettings,
    pub throttle: ThrottleSettings,
    pub audit: AuditSettings,
    pub connections: ConnectionSettings,
    pub clients: ClientSettings,
    pub mfa: MfaSettings,
    pub smtp: SmtpSettings,
}

/// Self-service registration (`POST /v1/register`, `/register`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RegistrationSettings {
    /// Whether anyone may create an account.
    pub open: bool,
    /// Whether a new account signs in only after its owner followed a link sent to its email
    /// address. Accounts that administrators make are verified.
    pub verify_email: bool,
}

impl Default for RegistrationSettings {
    fn default() -> Self {
        Self { open: true, verify_email: false }
    }
}

/// `[registration]` written as a table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RegistrationTable {
    open: bool,
    verify_email: bool,
}

impl Default for RegistrationTable {
    fn default() -> Self {
        let d = RegistrationSettings::default();
        Self { open: d.open, verify_email: d.verify_email }
    }
}

impl<'de> Deserialize<'de> for RegistrationSettings {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RegistrationSettings;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false, or a table with open and verify_email")
            }
            fn visit_bool<E: serde::de::Error>(self, open: bool) -> Result<Self::Value, E> {
                Ok(RegistrationSettings { open, ..RegistrationSettings::default() })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let table = RegistrationTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RegistrationSettings { open: table.open, verify_email: table.verify_email })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Where email goes (password-reset links).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSettings {
    /// `smtp://[user:password@]host[:port]`. Unset (the default): each message is written to a
    /// file in `data_dir/outbox/` and the log says which, so the flows work with no mail server.
    pub url: Option<String>,
    /// The sender, as `Name <address>` or a bare address.
    pub from: String,
    /// `starttls` (the default: upgrade, and refuse a server that cannot), `tls` (TLS from the
    /// first byte, usually port 465), or `none` (plain: only for a relay on the same machine).
    pub tls: SmtpTls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    Starttls,
    Tls,
    None,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self { url: None, from: "Portcullis <portcullis@localhost>".into(), tls: SmtpTls::Starttls }
    }
}

/// A 32-byte key in the file at `path`, made (mode 0600, never replaced) if there is none.
fn read_or_make_key(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(mut file) => {
            let mut key = vec![0u8; 32];
            portcullis_core::secret::fill_random(&mut key);
            file.write_all(&key)?;
            file.sync_all()?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(path),
        Err(e) => Err(e),
    }
}

/// Second factors (authenticator apps, recovery codes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MfaSettings {
    /// The key (32 bytes, base64url) authenticator secrets are sealed with, kept out of the
    /// database so that a leaked database does not reveal them. Unset with SQLite users: a key
    /// file `mfa.key` in `data_dir`, made on first start. Unset with PostgreSQL users:
    /// authenticator apps cannot be enrolled (every node needs the same key; set it).
    pub encryption_key: Option<String>,
    /// The name authenticator apps show beside the account.
    pub issuer: String,
    /// How recent a sign-in must be to add or remove a factor.
    #[serde(with = "humantime_serde")]
    pub reauth_within: Duration,
    /// Roles whose holders must have a second factor: one who has none sets one up (an
    /// authenticator app or a passkey) at their next password sign-in before it finishes.
    /// `[]` turns this off.
    #[serde(deserialize_with = "problem::list")]
    pub required_for_roles: Vec<String>,
}

impl Default for MfaSettings {
    fn default() -> Self {
        Self {
            encryption_key: None,
            issuer: "Portcullis".into(),
            reauth_within: Duration::from_secs(300),
            required_for_roles: vec![portcullis_core::Role::ADMIN.to_owned()],
        }
    }
}

/// The client registry (services that follow the revocation feed; OpenID Connect clients).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientSettings {
    /// How long a client's previous secret keeps working after `client rotate-secret`.
    #[serde(with = "humantime_serde")]
    pub secret_overlap: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self { secret_overlap: Duration::from_secs(24 * 3600) }
    }
}

/// Limits on client connections (see `serve.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionSettings {
    /// A request's headers must arrive within this, counted from when the connection opened or
    /// the previous answer went out: it is also how long a kept-alive connection may sit idle.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Connections served at once; further clients wait in the listen backlog. 0 (the
    /// default): three quarters of the open-file limit, which is raised to its hard limit at
    /// start.
    pub max: usize,
    /// How long requests in flight may take to finish after a shutdown signal; connections
    /// still open then are dropped.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self { header_read_timeout: Duration::from_secs(30), max: 0, shutdown_timeout: Duration::from_secs(10) }
    }
}

/// Cross-origin requests from browsers (off unless origins are listed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsSettings {
    /// Origins (`https://app.example.com`) whose pages may call the API with credentials.
    /// They are also trusted by the cross-site request guard.
    #[serde(deserialize_with = "problem::list")]
    pub allowed_origins: Vec<String>,
}

/// The pages for people (`/login`, `/account`, `/admin`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PagesSettings {
    /// Origins besides `public_url`'s (and `cors.allowed_origins`) that sign-in may send people
    /// back to with `?return_to=` (the applications behind forward auth).
    #[serde(deserialize_with = "problem::list")]
    pub return_to_origins: Vec<String>,
}

/// Limits on failed logins (see docs/SECURITY.md for how they combine).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleSettings {
    pub enabled: bool,
    /// Failures are forgotten after this long without a new one.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// The first delay once a key's free attempts are used up; each further failure doubles it.
    #[serde(with = "humantime_serde")]
    pub base_delay: Duration,
    /// Failures on one account from anywhere.
    pub account: ThrottleRuleSettings,
    /// Failures from one client address on any account.
    pub address: ThrottleRuleSettings,
    /// Failures on one account from one client address.
    pub account_address: ThrottleRuleSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleRuleSettings {
    /// Failures allowed before delays start.
    pub free: u32,
    /// The longest delay.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
}

/// The audit log of security events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Events older than this are deleted (`0s` keeps them forever).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// `sqlite` or `postgres://…`.
    pub users: String,
    /// `sqlite`, `memory` or `redis://…`.
    pub sessions: String,
    /// A node-local cache of session records in front of the session store: how old a copy may
    /// get before it is read again (`0s` turns it off). Unset, it is
    /// [`DEFAULT_REDIS_SESSION_CACHE`] in front of Redis and off in front of the others (memory
    /// needs none; SQLite's file is also written by `portcullis` commands, which announce
    /// nothing). Ended sessions are dropped from every node's cache through the revocation feed,
    /// and a node answers from its cache only while it hears that feed; this bound holds even
    /// if an announcement could not be published. See [`StoreSettings::session_cache_in_effect`].
    #[serde(with = "humantime_serde::option")]
    pub session_cache: Option<Duration>,
}

/// How a `store.sessions` URL names Redis: standalone (plain or TLS), Cluster, Sentinel.
const REDIS_SCHEMES: [&str; 4] = ["redis://", "rediss://", "redis+cluster://", "redis+sentinel://"];

/// The session cache in front of Redis when `store.session_cache` is not set.
pub const DEFAULT_REDIS_SESSION_CACHE: Duration = Duration::from_secs(5);

impl StoreSettings {
    /// The session cache in effect: the setting, or its default for this session store.
    pub fn session_cache_in_effect(&self) -> Duration {
        match self.session_cache {
            Some(d) => d,
            None if self.sessions_are_shared() => DEFAULT_REDIS_SESSION_CACHE,
            None => Duration::ZERO,
        }
    }

    /// Whether other nodes read the same session records (Redis), so that they may hold copies.
    pub fn sessions_are_shared(&self) -> bool {
        REDIS_SCHEMES.iter().any(|p| self.sessions.starts_with(p))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionSettings {
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub absolute_timeout: Duration,
    /// `false` only for plain-HTTP development: drops `Secure` and the `__Host-` prefix.
    pub cookie_secure: bool,
}

pub use portcullis_service::Revocation;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtSettings {
    /// The algorithm new signing keys use.
    pub algorithm: Algorithm,
    /// Lifetime of an access token.
    #[serde(with = "humantime_serde")]
    pub access_ttl: Duration,
    /// Lifetime of a JWT-mode login and its refresh token.
    #[serde(with = "humantime_serde")]
    pub refresh_ttl: Duration,
    pub revocation: Revocation,
    /// Accept `?access_token=` in URLs (RFC 6750 §2.3); off because URLs end up in logs.
    pub allow_query_token: bool,
    /// HS256 only: the shared secret, base64url, at least 32 bytes decoded. Generated and
    /// stored with the users when unset.
    pub secret: Option<String>,
    /// The `aud` of issued tokens and the audience verifiers expect. Defaults to the issuer.
    pub audience: Option<String>,
    /// Clock skew tolerated when checking `exp`, `nbf` and `iat` (at most 60 s).
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// How long the refresh token just rotated away is still answered (racing tabs).
    #[serde(with = "humantime_serde")]
    pub refresh_grace: Duration,
    /// Verified access tokens remembered (by exact token) so repeats skip the signature check;
    /// expiry and revocation are still checked every time. 0 turns the cache off.
    pub token_cache_size: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("portcullis-data"),
            public_url: None,
            registration: RegistrationSettings::default(),
            metrics: true,
            trusted_proxies: Vec::new(),
            store: StoreSettings::default(),
            session: SessionSettings::default(),
            jwt: JwtSettings::default(),
            cors: CorsSettings::default(),
            pages: PagesSettings::default(),
            throttle: ThrottleSettings::default(),
            audit: AuditSettings::default(),
            connections: ConnectionSettings::default(),
            clients: ClientSettings::default(),
            mfa: MfaSettings::default(),
            smtp: SmtpSettings::default(),
        }
    }
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        Self {
            enabled: true,
            window: minutes(60),
            base_delay: Duration::from_secs(1),
            account: ThrottleRuleSettings { free: 10, max_delay: minutes(1) },
            address: ThrottleRuleSettings { free: 20, max_delay: minutes(15) },
            account_address: ThrottleRuleSettings { free: 5, max_delay: minutes(15) },
        }
    }
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self { retention: Duration::from_secs(90 * 86400) }
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self { users: "sqlite".into(), sessions: "sqlite".into(), session_cache: None }
    }
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_timeout: Duration::from_secs(12 * 3600),
            cookie_secure: true,
        }
    }
}

impl Default for JwtSettings {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::EdDSA,
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 86400),
            revocation: Revocation::Replica,
            allow_query_token: false,
            secret: None,
            audience: None,
            leeway: Duration::from_secs(30),
            refresh_grace: Duration::from_secs(5),
            token_cache_size: 10_000,
        }
    }
}

/// Where session records and revocations live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionBackend {
    Memory,
    Sqlite,
    /// A standalone Redis server, `redis://[user:password@]host:port[/db]` (or `rediss://`); a
    /// Redis Cluster, `redis+cluster://host:port,host:port`; or the master that Sentinel names,
    /// `redis+sentinel://[user:password@]host:port[,host:port]/service`.
    Redis(String),
}

/// Where users and signing keys live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserBackend {
    Sqlite,
    /// `postgres://user[:password]@host[:port]/database`.
    Postgres(String),
}

/// Settings overridden on the command line.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Settings {
    /// Loads defaults, then `file`, then the process environment, then `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, SettingsError> {
        Self::load_from(file, overrides, ENV_PREFIX)
    }

    /// Settings from TOML text alone (defaults underneath, no environment), checked like a file.
    pub fn from_toml_str(text: &str) -> Result<Self, SettingsError> {
        Self::extract(Figment::from(Serialized::defaults(Settings::default())).merge(Toml::string(text)))
    }

    fn extract(fig: Figment) -> Result<Self, SettingsError> {
        Self::extract_with(fig, ENV_PREFIX)
    }

    /// Extracts and validates; every problem is one line naming the key, where it was set (the
    /// file, or the environment variable itself) and, for an unknown key, the closest known one.
    fn extract_with(fig: Figment, prefix: &str) -> Result<Self, SettingsError> {
        let problems = |lines: Vec<String>| match lines.as_slice() {
            [one] => SettingsError::Invalid(one.clone()),
            many => SettingsError::Invalid(format!("{} problems:\n  {}", many.len(), many.join("\n  "))),
        };
        let unknown = problem::unknown_keys(&fig, &Self::known_keys(), prefix);
        if !unknown.is_empty() {
            return Err(problems(unknown));
        }
        let settings: Settings = fig
            .extract()
            .map_err(|errors| problems(errors.into_iter().map(|e| problem::describe(&fig, &e, prefix)).collect()))?;
        settings.validate().map_err(|e| match e {
            SettingsError::Invalid(msg) => SettingsError::Invalid(problem::with_source(&fig, &msg, prefix)),
            other => other,
        })?;
        Ok(settings)
    }

    /// Every setting's key: the defaults, with every optional setting given a value.
    fn known_keys() -> figment::value::Dict {
        let mut all = Settings { public_url: Url::parse("http://all.invalid").ok(), ..Settings::default() };
        all.jwt.secret = Some(String::new());
        all.jwt.audience = Some(String::new());
        Figment::from(Serialized::defaults(all)).extract().unwrap_or_default()
    }

    fn load_from(file: Option<&Path>, overrides: &Overrides, prefix: &str) -> Result<Self, SettingsError> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(SettingsError::MissingFile(path.to_owned()));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        let owned = prefix.to_owned();
        let env = Env::prefixed(prefix)
            .filter(move |k| {
                let key = k.as_str().to_ascii_lowercase();
                if key.starts_with(ENV_RESERVED) {
                    return false;
                }
                let value = std::env::var(format!("{owned}{}", k.as_str())).unwrap_or_default();
                if problem::is_service_link(&key, &value) {
                    tracing::debug!(variable = %format!("{owned}{}", k.as_str()), "ignoring a service-link variable (Kubernetes, Docker links)");
                    return false;
                }
                true
            })
            .split("__");
        fig = fig.merge(env);
        if let Some(listen) = overrides.listen {
            fig = fig.merge(("listen", listen.to_string()));
        }
        if let Some(dir) = &overrides.data_dir {
            fig = fig.merge(("data_dir", dir));
        }
        Self::extract_with(fig, prefix)
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let bad = |msg: String| Err(SettingsError::Invalid(msg));
        if self.session.idle_timeout.is_zero() {
            return bad("session.idle_timeout must be longer than zero".into());
        }
        if self.session.absolute_timeout.is_zero() {
            return bad("session.absolute_timeout must be longer than zero".into());
        }
        if self.session.idle_timeout > self.session.absolute_timeout {
            return bad(format!(
                "session.idle_timeout ({}) is longer than session.absolute_timeout ({}): a session ends at the absolute \
                 timeout whatever its use, so the idle timeout could never apply; lower session.idle_timeout or raise \
                 session.absolute_timeout",
                humantime::format_duration(self.session.idle_timeout),
                humantime::format_duration(self.session.absolute_timeout)
            ));
        }
        if let Some(url) = &self.public_url
            && (!matches!(url.scheme(), "http" | "https") || url.host().is_none())
        {
            return bad(format!("public_url must be an http or https URL with a host, not {url}"));
        }
        if self.jwt.access_ttl.is_zero() || self.jwt.refresh_ttl.is_zero() {
            return bad("jwt.access_ttl and jwt.refresh_ttl must be longer than zero".into());
        }
        if self.jwt.access_ttl > self.jwt.refresh_ttl {
            return bad(format!(
                "jwt.access_ttl ({}) is longer than jwt.refresh_ttl ({}): a JWT login ends with its refresh token, so \
                 its first access token would outlive it; lower jwt.access_ttl or raise jwt.refresh_ttl",
                humantime::format_duration(self.jwt.access_ttl),
                humantime::format_duration(self.jwt.refresh_ttl)
            ));
        }
        if self.jwt.leeway > portcullis_core::jwt::token::MAX_LEEWAY {
            return bad("jwt.leeway must be at most 60s".into());
        }
        self.hmac_secret()?;
        self.user_backend()?;
        self.session_backend()?;
        crate::proxies::TrustedProxies::parse(&self.trusted_proxies).map_err(SettingsError::Invalid)?;
        self.cors_origins()?;
        self.return_to_origins()?;
        self.validate_throttle()?;
        if let Some(role) = self.mfa.required_for_roles.iter().find(|r| portcullis_core::Role::parse(r).is_err()) {
            return bad(format!("mfa.required_for_roles: {role:?} is not a role name"));
        }
        if self.connections.header_read_timeout.is_zero() {
            return Err(SettingsError::Invalid("connections.header_read_timeout must be longer than zero".into()));
        }
        Ok(())
    }

    /// `cors.allowed_origins`, each checked to be a bare origin and written as browsers send it.
    pub fn cors_origins(&self) -> Result<Vec<String>, SettingsError> {
        origins("cors.allowed_origins", &self.cors.allowed_origins)
    }

    /// `pages.return_to_origins`, checked like `cors.allowed_origins`.
    pub fn return_to_origins(&self) -> Result<Vec<String>, SettingsError> {
        origins("pages.return_to_origins", &self.pages.return_to_origins)
    }

    fn validate_throttle(&self) -> Result<(), SettingsError> {
        let t = &self.throttle;
        if !t.enabled {
            return Ok(());
        }
        if t.window.is_zero() || t.base_delay.is_zero() {
            return Err(SettingsError::Invalid(
                "throttle.window and throttle.base_delay must be longer than zero".into(),
            ));
        }
        let rule = self.throttle_rule(t.account);
        let per_hour = rule.max_failures_in(Duration::from_secs(3600));
        if per_hour > MAX_ACCOUNT_FAILURES_PER_HOUR {
            return Err(SettingsError::Invalid(format!(
                "throttle.account lets {per_hour} failed logins through per account per hour; at most {MAX_ACCOUNT_FAILURES_PER_HOUR} are allowed (raise max_delay or lower free)"
            )));
        }
        Ok(())
    }

    /// One throttle rule with the shared window and base delay.
    /// `public_url`, or `http://<addr>` when it is not set (the address the server is bound to).
    pub fn public_url_or(&self, addr: SocketAddr) -> Result<Url, SettingsError> {
        match &self.public_url {
            Some(u) => Ok(u.clone()),
            None => {
                // Listening on every address says nothing of how people reach it: the loopback
                // spelling at least works on this machine (start-up warns to set public_url).
                let addr =
                    if addr.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], addr.port())) } else { addr };
                Url::parse(&format!("http://{addr}")).map_err(|e| SettingsError::Invalid(format!("public_url: {e}")))
            }
        }
    }

    /// The origins that are this server, for the cross-site guard and sign-in's `return_to`:
    /// `public_url`'s; and when nobody set `public_url` and the server listens on a loopback
    /// address (or on every address), also the other loopback spellings of the same port, since
    /// `http://localhost:8080`, `http://127.0.0.1:8080` and `http://[::1]:8080` are one server
    /// to the person who typed any of them.
    pub fn own_origins(&self, public_url: &Url, local: SocketAddr) -> Vec<String> {
        let mut origins = vec![public_url.origin().ascii_serialization()];
        if self.public_url.is_none() && (local.ip().is_loopback() || local.ip().is_unspecified()) {
            let port = local.port();
            for host in ["127.0.0.1", "localhost", "[::1]"] {
                let origin = format!("http://{host}:{port}");
                if !origins.contains(&origin) {
                    origins.push(origin);
                }
            }
        }
        origins
    }

    /// What to tell the operator at start-up about `public_url`, if anything: listening on every
    /// address without it, browsers on other machines would be refused.
    pub fn public_url_warning(&self, local: SocketAddr) -> Option<String> {
        (self.public_url.is_none() && local.ip().is_unspecified()).then(|| {
            format!(
                "listening on {local} without public_url: sign-in pages work only at http://127.0.0.1:{port} \
                 (or localhost) on this machine; for browsers on other machines set public_url (for example \
                 PORTCULLIS_PUBLIC_URL=http://<this host>:{port}) and, over plain HTTP, session.cookie_secure = false",
                port = local.port()
            )
        })
    }

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

    /// What the service needs of these settings, for a server whose public address is
    /// `public_url`.
    pub fn service_config(&self, public_url: &Url) -> Result<portcullis_service::Config, SettingsError> {
        let issuer = Self::issuer(public_url);
        let t = &self.throttle;
        Ok(portcullis_service::Config {
            policy: self.session_policy(),
            expect: Expectations {
                audience: self.jwt.audience.clone().unwrap_or_else(|| issuer.clone()),
                issuer,
                leeway: self.jwt.leeway,
            },
            access_ttl: self.jwt.access_ttl,
            algorithm: self.jwt.algorithm,
            hmac_secret: self.hmac_secret()?,
            revocation: self.jwt.revocation,
            refresh_grace: self.jwt.refresh_grace,
            token_cache_size: self.jwt.token_cache_size,
            throttle: t.enabled.then(|| portcullis_service::ThrottleRules {
                account: self.throttle_rule(t.account),
                address: self.throttle_rule(t.address),
                account_address: self.throttle_rule(t.account_address),
            }),
            audit_retention: self.audit.retention,
            mfa: portcullis_service::MfaPolicy {
                secret_box: self.mfa_secret_box()?.map(Arc::new),
                issuer: self.mfa.issuer.clone(),
                reauth_within: self.mfa.reauth_within,
                required_for_roles: self.mfa.required_for_roles.clone(),
                passkeys: self.relying_party(public_url)?.map(Arc::new),
            },
            verify_email: self.registration.verify_email,
        })
    }

    /// `mfa.required_for_roles` needs a factor people can set up (`methods`, as
    /// [`portcullis_service::Service::enrolment_methods`] says): without one, those roles
    /// could never sign in, and the server refuses to start, saying what to set.
    pub fn check_enrolment_possible(&self, methods: &[&str]) -> Result<(), SettingsError> {
        if self.mfa.required_for_roles.is_empty() || !methods.is_empty() {
            return Ok(());
        }
        Err(SettingsError::Invalid(format!(
            "mfa.required_for_roles ({}) needs a second factor people can set up: set mfa.encryption_key \
             (authenticator apps) or a public_url with a domain name (passkeys), or set mfa.required_for_roles = []",
            self.mfa.required_for_roles.join(", ")
        )))
    }

    /// The WebAuthn relying party for a server at `public_url`: its host is the RP ID. A
    /// loopback address (the zero-configuration default) becomes `localhost`, the one name
    /// browsers allow passkeys on over plain HTTP, at the same port. Any other IP address
    /// cannot be an RP ID: then `None`, and passkeys are refused (`409 passkeys_unavailable`).
    pub fn relying_party(&self, public_url: &Url) -> Result<Option<portcullis_service::RelyingParty>, SettingsError> {
        let (rp_id, origin) = match public_url.host() {
            Some(url::Host::Domain(domain)) => (domain.to_owned(), public_url.clone()),
            Some(url::Host::Ipv4(ip)) if ip.is_loopback() => Self::localhost(public_url)?,
            Some(url::Host::Ipv6(ip)) if ip.is_loopback() => Self::localhost(public_url)?,
            _ => return Ok(None),
        };
        let origin = Url::parse(&origin.origin().ascii_serialization())
            .map_err(|e| SettingsError::Invalid(format!("public_url: {e}")))?;
        portcullis_service::RelyingParty::new(&rp_id, &[origin], &self.mfa.issuer)
            .map(Some)
            .map_err(|e| SettingsError::Invalid(format!("public_url: {e}")))
    }

    fn localhost(public_url: &Url) -> Result<(String, Url), SettingsError> {
        let mut url = public_url.clone();
        url.set_host(Some("localhost")).map_err(|e| SettingsError::Invalid(format!("public_url: {e}")))?;
        Ok(("localhost".into(), url))
    }

    /// Where messages go without `[smtp]`.
    pub fn outbox_dir(&self) -> PathBuf {
        self.data_dir.join("outbox")
    }

    /// The key file kept beside the SQLite database when `mfa.encryption_key` is unset.
    pub fn mfa_key_path(&self) -> PathBuf {
        self.data_dir.join("mfa.key")
    }

    /// What seals authenticator secrets: `mfa.encryption_key`, else (SQLite users) the key
    /// file in `data_dir`, made here the first time; else none.
    fn mfa_secret_box(&self) -> Result<Option<portcullis_core::mfa::SecretBox>, SettingsError> {
        use base64::Engine as _;
        let key = match &self.mfa.encryption_key {
            Some(s) => base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s.trim_end_matches('='))
                .map_err(|_| SettingsError::Invalid("mfa.encryption_key must be base64url".into()))?,
            None if self.store.users == "sqlite" && self.data_dir.is_dir() => read_or_make_key(&self.mfa_key_path())
                .map_err(|e| {
                    SettingsError::Invalid(format!("cannot read or make {}: {e}", self.mfa_key_path().display()))
                })?,
            None => return Ok(None),
        };
        portcullis_core::mfa::SecretBox::new(&key)
            .map(Some)
            .map_err(|_| SettingsError::Invalid("mfa.encryption_key must be 32 bytes once decoded".into()))
    }

    pub fn throttle_rule(&self, r: ThrottleRuleSettings) -> portcullis_store::ThrottleRule {
        portcullis_store::ThrottleRule {
            free: r.free,
            base_delay: self.throttle.base_delay,
            max_delay: r.max_delay.max(self.throttle.base_delay),
            window: self.throttle.window,
        }
    }

    pub fn session_backend(&self) -> Result<SessionBackend, SettingsError> {
        let s = self.store.sessions.as_str();
        match s {
            "sqlite" => Ok(SessionBackend::Sqlite),
            "memory" => Ok(SessionBackend::Memory),
            _ if self.store.sessions_are_shared() => Ok(SessionBackend::Redis(s.to_owned())),
            other => Err(SettingsError::Invalid(format!(
                "store.sessions = {other:?} is not supported; use \"sqlite\", \"memory\", \"redis://…\", \"redis+cluster://…\" or \"redis+sentinel://…\""
            ))),
        }
    }

    pub fn user_backend(&self) -> Result<UserBackend, SettingsError> {
        let s = self.store.users.as_str();
        match s {
            "sqlite" => Ok(UserBackend::Sqlite),
            _ if s.starts_with("postgres://") || s.starts_with("postgresql://") => {
                Ok(UserBackend::Postgres(s.to_owned()))
            }
            other => Err(SettingsError::Invalid(format!(
                "store.users = {other:?} is not supported; use \"sqlite\" or \"postgres://…\""
            ))),
        }
    }

    /// The decoded `jwt.secret`, if set; shorter than 256 bits is an error.
    pub fn hmac_secret(&self) -> Result<Option<Vec<u8>>, SettingsError> {
        use base64::Engine as _;
        let Some(s) = &self.jwt.secret else { return Ok(None) };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| SettingsError::Invalid("jwt.secret must be base64url".into()))?;
        if bytes.len() < MIN_HMAC_SECRET {
            return Err(SettingsError::Invalid(format!(
                "jwt.secret must be at least {MIN_HMAC_SECRET} bytes (256 bits) once decoded, not {}",
                bytes.len()
            )));
        }
        Ok(Some(bytes))
    }

    /// The SQLite database file inside `data_dir`.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("portcullis.db")
    }

    /// Where users and sessions live, for the start-up line, with passwords hidden:
    /// `data in portcullis-data`, or `users on postgres://app:***@db/portcullis, sessions on
    /// redis://cache:6379/`.
    pub fn describe_stores(&self) -> String {
        let (users, sessions) = (self.store.users.as_str(), self.store.sessions.as_str());
        let sqlite = || format!("SQLite in {}", self.data_dir.display());
        match (users, sessions) {
            ("sqlite", "sqlite") => format!("data in {}", self.data_dir.display()),
            _ => {
                let users = if users == "sqlite" { sqlite() } else { redact(users) };
                let sessions = match sessions {
                    "sqlite" => sqlite(),
                    "memory" => "memory (this process)".to_owned(),
                    url => redact(url),
                };
                let cache = match self.store.session_cache_in_effect() {
                    d if d.is_zero() => String::new(),
                    d => format!(" (each node caches a record for {})", humantime::format_duration(d)),
                };
                format!("users on {users}, sessions on {sessions}{cache}")
            }
        }
    }
}

/// A store URL with its password replaced by `***` (`redis://:pw@host` and
/// `postgres://user:pw@host/db` alike; several hosts, as Cluster and Sentinel URLs have, too).
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            let hidden = if userinfo.contains(':') { format!("{user}:***") } else { user.to_owned() };
            format!("{scheme}://{hidden}@{hosts}{tail}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Environment variables are covered by the binary's tests (`crates/portcullis/tests/it/cli.rs`), which set them
    /// on a child process; here an empty prefix-free provider keeps the tests hermetic.
    fn load_with(toml: Option<&str>, overrides: Overrides) -> Result<Settings, SettingsError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = toml.map(|t| {
            let p = dir.path().join("portcullis.toml");
            std::fs::write(&p, t).expect("write");
            p
        });
        Settings::load_from(file.as_deref(), &overrides, "PORTCULLIS_UNIT_TEST_NONE_")
    }

    #[test]
    fn defaults_match_the_design() {
        let s = load_with(None, Overrides::default()).expect("defaults load");
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.data_dir, PathBuf::from("portcullis-data"));
        assert_eq!(s.registration, RegistrationSettings { open: true, verify_email: false });
        assert_eq!(s.store.users, "sqlite");
        assert_eq!(s.store.sessions, "sqlite");
        assert_eq!(s.session.idle_timeout, Duration::from_secs(1800));
        assert_eq!(s.session.absolute_timeout, Duration::from_secs(43200));
        assert!(s.session.cookie_secure);
        assert_eq!(s.jwt.algorithm, Algorithm::EdDSA);
        assert_eq!(s.jwt.revocation, Revocation::Replica);
        assert!(!s.jwt.allow_query_token);
    }

    #[test]
    fn file_values_and_durations_are_read() {
        let s = load_with(
            Some("registration = false\n[session]\nidle_timeout = \"90s\"\nabsolute_timeout = \"30d\"\n[store]\nsessions = \"memory\"\n"),
            Overrides::default(),
        )
        .expect("loads");
        assert!(!s.registration.open);
        assert_eq!(s.session.idle_timeout, Duration::from_secs(90));
        assert_eq!(s.session.absolute_timeout, Duration::from_secs(30 * 86400));
        assert_eq!(s.session_backend().expect("backend"), SessionBackend::Memory);
    }

    #[test]
    fn flags_override_the_file() {
        let s = load_with(
            Some("listen = \"127.0.0.1:9000\"\ndata_dir = \"/tmp/a\"\n"),
            Overrides { listen: Some("127.0.0.1:9100".parse().expect("addr")), data_dir: Some("/tmp/b".into()) },
        )
        .expect("loads");
        assert_eq!(s.listen.to_string(), "127.0.0.1:9100");
        assert_eq!(s.data_dir, PathBuf::from("/tmp/b"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = load_with(Some("[session]\nidle_timout = \"5m\"\n"), Overrides::default()).expect_err("unknown key");
        assert!(err.to_string().contains("idle_timout"), "{err}");
        let err = load_with(Some("colour = \"blue\"\n"), Overrides::default()).expect_err("unknown key");
        assert!(err.to_string().contains("colour"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = load_with(Some("[session]\nidle_timeout = \"soon\"\n"), Overrides::default()).expect_err("bad");
        assert!(err.to_string().contains("idle_timeout"), "{err}");
        let err = load_with(Some("[jwt]\nalgorithm = \"none\"\n"), Overrides::default()).expect_err("bad");
        assert!(err.to_string().contains("algorithm"), "{err}");
        let err = load_with(Some("[store]\nsessions = \"mongodb://x\"\n"), Overrides::default()).expect_err("bad");
        assert!(err.to_string().contains("store.sessions"), "{err}");
        let err = load_with(Some("public_url = \"ftp://x\"\n"), Overrides::default()).expect_err("bad");
        assert!(err.to_string().contains("public_url"), "{err}");
        let err = load_with(Some("[session]\nidle_timeout = \"0s\"\n"), Overrides::default()).expect_err("bad");
        assert!(err.to_string().contains("idle_timeout"), "{err}");
    }

    #[test]
    fn short_hmac_secrets_refuse_to_start() {
        let err = load_with(Some("[jwt]\nalgorithm = \"HS256\"\nsecret = \"c2hvcnQ\"\n"), Overrides::default())
            .expect_err("short");
        assert!(err.to_string().contains("jwt.secret"), "{err}");
        let ok = format!("[jwt]\nalgorithm = \"HS256\"\nsecret = \"{}\"\n", "A".repeat(43));
        let s = load_with(Some(&ok), Overrides::default()).expect("32 bytes is enough");
        assert_eq!(s.hmac_secret().expect("valid").map(|b| b.len()), Some(32));
        let err = load_with(Some("[jwt]\nleeway = \"2m\"\n"), Overrides::default()).expect_err("leeway");
        assert!(err.to_string().contains("leeway"), "{err}");
    }

    #[test]
    fn hardening_settings_are_checked() {
        let ok = load_with(
            Some("trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n[cors]\nallowed_origins = [\"https://app.example.com\", \"http://localhost:3000/\"]\n"),
            Overrides::default(),
        )
        .expect("loads");
        assert_eq!(
            ok.cors_origins().expect("origins"),
            ["https://app.example.com", "http://localhost:3000"],
            "written as browsers send them"
        );
        for (toml, key) in [
            ("trusted_proxies = [\"10.0.0.0/33\"]", "trusted_proxies"),
            ("trusted_proxies = [\"proxy.local\"]", "trusted_proxies"),
            ("[cors]\nallowed_origins = [\"*\"]", "cors.allowed_origins"),
            ("[cors]\nallowed_origins = [\"https://app.example.com/path\"]", "cors.allowed_origins"),
            ("[cors]\nallowed_origins = [\"ftp://app.example.com\"]", "cors.allowed_origins"),
            ("[throttle]\naccount = { free = 90, max_delay = \"1m\" }", "throttle.account"),
            ("[throttle]\naccount = { free = 10, max_delay = \"5s\" }", "throttle.account"),
            ("[throttle]\nbase_delay = \"0s\"", "throttle"),
        ] {
            let err = load_with(Some(toml), Overrides::default()).expect_err(toml);
            assert!(err.to_string().contains(key), "{toml}: {err}");
        }
        // Turned off, the limits are not checked.
        let off = "[throttle]\nenabled = false\naccount = { free = 1000, max_delay = \"1s\" }";
        assert!(load_with(Some(off), Overrides::default()).is_ok());
    }

    #[test]
    fn required_roles_are_role_names_and_need_a_factor_to_set_up() {
        assert_eq!(Settings::default().mfa.required_for_roles, ["admin"]);
        let s = load_with(Some("[mfa]\nrequired_for_roles = [\"admin\", \"ops\"]\n"), Overrides::default());
        assert_eq!(s.expect("loads").mfa.required_for_roles, ["admin", "ops"]);
        let s = load_with(Some("[mfa]\nrequired_for_roles = \"\"\n"), Overrides::default());
        assert!(s.expect("an empty list").mfa.required_for_roles.is_empty());
        let err = load_with(Some("[mfa]\nrequired_for_roles = [\"Ops Team\"]\n"), Overrides::default());
        assert!(err.expect_err("not a role").to_string().contains("mfa.required_for_roles"));

        let s = Settings::default();
        assert!(s.check_enrolment_possible(&["totp"]).is_ok());
        assert!(s.check_enrolment_possible(&["webauthn"]).is_ok());
        let err = s.check_enrolment_possible(&[]).expect_err("nothing to set up");
        assert!(err.to_string().contains("mfa.encryption_key"), "{err}");
        let off = Settings { mfa: MfaSettings { required_for_roles: Vec::new(), ..MfaSettings::default() }, ..s };
        assert!(off.check_enrolment_possible(&[]).is_ok());
    }

    #[test]
    fn registration_is_a_switch_or_a_table() {
        let s = load_with(Some("registration = false\n"), Overrides::default()).expect("a switch");
        assert_eq!(s.registration, RegistrationSettings { open: false, verify_email: false });
        let s = load_with(Some("[registration]\nverify_email = true\n"), Overrides::default()).expect("a table");
        assert_eq!(s.registration, RegistrationSettings { open: true, verify_email: true });
        let s = load_with(Some("[registration]\nopen = false\n"), Overrides::default()).expect("a table");
        assert!(!s.registration.open && !s.registration.verify_email);
        let err = load_with(Some("[registration]\nverify_emails = true\n"), Overrides::default());
        assert!(err.expect_err("unknown key").to_string().contains("verify_emails"));
        let err = load_with(Some("registration = \"yes\"\n"), Overrides::default());
        assert!(err.expect_err("not a switch").to_string().contains("registration"));
    }

    #[test]
    fn the_session_cache_is_on_in_front_of_redis_unless_turned_off() {
        let cache = |toml: &str| load_with(Some(toml), Overrides::default()).expect("settings").store;
        let redis = cache("[store]\nsessions = \"redis://cache:6379/\"\n");
        assert_eq!(redis.session_cache, None, "unset");
        assert_eq!(redis.session_cache_in_effect(), DEFAULT_REDIS_SESSION_CACHE);
        let sentinel = cache("[store]\nsessions = \"redis+sentinel://s1:26379/portcullis\"\n");
        assert_eq!(sentinel.session_cache_in_effect(), DEFAULT_REDIS_SESSION_CACHE);
        let off = cache("[store]\nsessions = \"redis://cache:6379/\"\nsession_cache = \"0s\"\n");
        assert_eq!(off.session_cache_in_effect(), Duration::ZERO, "turned off");
        let longer = cache("[store]\nsessions = \"redis://cache:6379/\"\nsession_cache = \"30s\"\n");
        assert_eq!(longer.session_cache_in_effect(), Duration::from_secs(30));
        for local in ["sqlite", "memory"] {
            let s = cache(&format!("[store]\nsessions = \"{local}\"\n"));
            assert_eq!(s.session_cache_in_effect(), Duration::ZERO, "{local}: nothing announces its ends");
        }
        assert_eq!(Settings::default().store.session_cache_in_effect(), Duration::ZERO);
        let err = load_with(Some("[store]\nsession_cache = \"soon\"\n"), Overrides::default());
        assert!(err.expect_err("not a duration").to_string().contains("session_cache"));
    }

    #[test]
    fn the_default_account_limit_meets_asvs() {
        let s = Settings::default();
        let per_hour = s.throttle_rule(s.throttle.account).max_failures_in(Duration::from_secs(3600));
        assert!(per_hour <= MAX_ACCOUNT_FAILURES_PER_HOUR, "{per_hour}");
        // 10 free attempts, then six growing waits (1+2+…+32 = 63 s): 16 failures by 63 s,
        // then one a minute.
        assert_eq!(per_hour, 16 + 58);
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let err = Settings::load_from(Some(Path::new("/nonexistent/p.toml")), &Overrides::default(), "PCNONE_")
            .expect_err("missing");
        assert!(matches!(err, SettingsError::MissingFile(_)));
    }

    #[test]
    fn loopback_spellings_are_this_server_only_when_nobody_set_public_url() {
        let default = Settings::default();
        let local: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let url = default.public_url_or(local).expect("url");
        assert_eq!(url.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(
            default.own_origins(&url, local),
            ["http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"]
        );
        assert_eq!(default.public_url_warning(local), None);

        // Every address, no public_url: loopback works, and start-up says what to set.
        let every: SocketAddr = "0.0.0.0:9000".parse().expect("addr");
        let url = default.public_url_or(every).expect("url");
        assert_eq!(url.as_str(), "http://127.0.0.1:9000/");
        assert_eq!(
            default.own_origins(&url, every),
            ["http://127.0.0.1:9000", "http://localhost:9000", "http://[::1]:9000"]
        );
        let warning = default.public_url_warning(every).expect("a warning");
        assert!(warning.contains("public_url") && warning.contains("cookie_secure"), "{warning}");

        // A public URL someone chose is the one origin, whatever the listener.
        let chosen =
            Settings { public_url: Some("https://auth.example.com".parse().expect("url")), ..Settings::default() };
        let url = chosen.public_url_or(every).expect("url");
        assert_eq!(chosen.own_origins(&url, local), ["https://auth.example.com"]);
        assert_eq!(chosen.public_url_warning(every), None);
        // Not loopback: no other spellings.
        let lan: SocketAddr = "192.0.2.1:8080".parse().expect("addr");
        assert_eq!(default.own_origins(&default.public_url_or(lan).expect("url"), lan), ["http://192.0.2.1:8080"]);
    }

    #[test]
    fn each_problem_is_one_line_with_its_file_key_and_the_closest_name() {
        let err = load_with(Some("colour = 1\n[sesion]\nidle_timeout = \"5m\"\n"), Overrides::default())
            .expect_err("two problems")
            .to_string();
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 3, "{err}");
        assert!(lines[1].trim_start().starts_with("/") && lines[1].contains("portcullis.toml: "), "{err}");
        assert!(err.contains("unknown setting `sesion`; did you mean `session`?"), "{err}");
        assert!(err.contains("unknown setting `colour` (known here: audit, clients, connections, "), "{err}");
        assert!(!err.contains("default.") && !err.contains("``"), "{err}");
        let err = load_with(Some("[session]\nidle_timout = \"5m\"\n"), Overrides::default()).expect_err("typo");
        assert!(err.to_string().contains("did you mean `session.idle_timeout`?"), "{err}");
    }

    #[test]
    fn contradictory_timeouts_are_refused() {
        let toml = "[session]\nidle_timeout = \"24h\"\nabsolute_timeout = \"12h\"\n";
        let err = load_with(Some(toml), Overrides::default()).expect_err("idle beyond absolute").to_string();
        assert!(err.contains("portcullis.toml: session.idle_timeout (1day) is longer than"), "{err}");
        let toml = "[jwt]\naccess_ttl = \"2h\"\nrefresh_ttl = \"1h\"\n";
        let err = load_with(Some(toml), Overrides::default()).expect_err("access beyond refresh").to_string();
        assert!(err.contains("jwt.access_ttl"), "{err}");
        let fine = "[session]\nidle_timeout = \"12h\"\nabsolute_timeout = \"12h\"\n";
        assert!(load_with(Some(fine), Overrides::default()).is_ok());
    }

    #[test]
    fn host_names_listen_and_lists_may_be_comma_separated() {
        let s = load_with(Some("listen = \"localhost:8081\"\n"), Overrides::default()).expect("host name");
        assert!(s.listen.ip().is_loopback() && s.listen.port() == 8081, "{}", s.listen);
        let err = load_with(Some("listen = \"no-such-host.invalid:80\"\n"), Overrides::default()).expect_err("bad");
        assert!(err.to_string().contains("listen"), "{err}");
        let s = load_with(Some("trusted_proxies = \"127.0.0.1, 10.0.0.0/8\"\n"), Overrides::default()).expect("list");
        assert_eq!(s.trusted_proxies, ["127.0.0.1", "10.0.0.0/8"]);
        let s =
            load_with(Some("[cors]\nallowed_origins = [\"https://a.example\"]\n"), Overrides::default()).expect("list");
        assert_eq!(s.cors.allowed_origins, ["https://a.example"]);
    }

    #[test]
    fn store_urls_are_described_without_their_passwords() {
        assert_eq!(redact("postgres://app:s3cret@db:5432/portcullis"), "postgres://app:***@db:5432/portcullis");
        assert_eq!(redact("redis://:s3cret@cache:6379/0"), "redis://:***@cache:6379/0");
        assert_eq!(redact("redis://cache:6379/"), "redis://cache:6379/");
        assert_eq!(redact("redis://user@cache/"), "redis://user@cache/");
        assert_eq!(
            redact("redis+sentinel://:pw@a:26379,b:26379/portcullis"),
            "redis+sentinel://:***@a:26379,b:26379/portcullis"
        );
        assert_eq!(redact("postgres://u:p@ss@db/x"), "postgres://u:***@db/x", "an @ in the password");
        assert_eq!(Settings::default().describe_stores(), "data in portcullis-data");
        let mut cluster = Settings::default();
        cluster.store.users = "postgres://app:s3cret@db/portcullis".into();
        cluster.store.sessions = "redis+cluster://:pw@r1:7000,r2:7000".into();
        let line = cluster.describe_stores();
        assert_eq!(
            line,
            "users on postgres://app:***@db/portcullis, sessions on redis+cluster://:***@r1:7000,r2:7000 \
             (each node caches a record for 5s)"
        );
        cluster.store.session_cache = Some(Duration::ZERO);
        let line = cluster.describe_stores();
        assert_eq!(line, "users on postgres://app:***@db/portcullis, sessions on redis+cluster://:***@r1:7000,r2:7000");
    }
}
