//! SQLite: users and sessions in one database file, the embedded default.
//!
//! The file is created with mode 0600 (it holds password hashes) and migrated on open. The
//! database runs in WAL mode so readers never wait for the writer; every call runs on a small
//! pool of connections on Tokio's blocking threads, never on the async workers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use portcullis_core::mfa::Amr;
use portcullis_core::revocation::{Denied, RevocationEvent, RevocationSnapshot};
use portcullis_core::{
    AuthMode, Client, ClientId, Email, Grant, PasswordHash, Role, SecretHash, SessionId, SessionRecord, SmolStr,
    Timestamp, User, UserId,
};
use rusqlite::{Connection, OptionalExtension, Row, params};
use tokio::sync::{Semaphore, broadcast};

use crate::clients::{CLIENT_COLUMNS, ClientRow};
use crate::{
    Attempt, AuditEvent, AuditQuery, AuditStore, ClientStore, ClusterFeed, FEED_CAPACITY, FactorStore, Factors,
    FeedItem, KeyStore, NewAuditEvent, NewUser, RevocationStore, SessionStore, StoreError, StoreResult, StoredKey,
    StoredPasskey, StoredTotp, Sweep, Swept, ThrottleRule, ThrottleState, ThrottleStore, UserStore, UserUpdate,
};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    r"
    CREATE TABLE users (
        id             TEXT PRIMARY KEY,
        email          TEXT NOT NULL UNIQUE,
        email_skeleton TEXT NOT NULL UNIQUE,
        password_hash  TEXT NOT NULL,
        roles          TEXT NOT NULL,
        disabled       INTEGER NOT NULL DEFAULT 0,
        created_at     INTEGER NOT NULL,
        updated_at     INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE sessions (
        id              TEXT PRIMARY KEY,
        secret_hash     BLOB NOT NULL,
        user_id         TEXT NOT NULL,
        mode            TEXT NOT NULL,
        created_at      INTEGER NOT NULL,
        last_seen_at    INTEGER NOT NULL,
        idle_expires_at INTEGER NOT NULL,
        expires_at      INTEGER NOT NULL,
        ip              TEXT,
        user_agent      TEXT
    ) STRICT;
    CREATE INDEX sessions_by_user ON sessions (user_id, created_at);
    CREATE INDEX sessions_by_death ON sessions (MIN(idle_expires_at, expires_at));
",
    r"
    ALTER TABLE sessions ADD COLUMN refresh_generation INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN rotated_at INTEGER;
    CREATE TABLE denylist (
        key   TEXT PRIMARY KEY,
        until INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE not_before (
        user_id TEXT PRIMARY KEY,
        at      INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE signing_keys (
        kid         TEXT PRIMARY KEY,
        alg         TEXT NOT NULL,
        private_key BLOB NOT NULL,
        created_at  INTEGER NOT NULL,
        retire_at   INTEGER
    ) STRICT;
    CREATE TABLE secrets (
        name  TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) STRICT;
",
    r"
    CREATE TABLE throttles (
        key             TEXT PRIMARY KEY,
        failures        INTEGER NOT NULL,
        last_failure_at INTEGER NOT NULL,
        blocked_until   INTEGER NOT NULL,
        expires_at      INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE audit (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        at      INTEGER NOT NULL,
        kind    TEXT NOT NULL,
        outcome TEXT NOT NULL,
        user_id TEXT,
        actor   TEXT,
        ip      TEXT,
        detail  TEXT
    ) STRICT;
    CREATE INDEX audit_by_user ON audit (user_id, id);
    CREATE INDEX audit_by_time ON audit (at);
",
    r"
    CREATE TABLE clients (
        id                        TEXT PRIMARY KEY,
        name                      TEXT NOT NULL,
        kind                      TEXT NOT NULL,
        secret_hash               BLOB,
        previous_secret_hash      BLOB,
        previous_until            INTEGER,
        redirect_uris             TEXT NOT NULL,
        post_logout_redirect_uris TEXT NOT NULL,
        backchannel_logout_uri    TEXT,
        first_party               INTEGER NOT NULL,
        created_at                INTEGER NOT NULL,
        last_used_at              INTEGER
    ) STRICT;
",
    r"
    ALTER TABLE sessions ADD COLUMN grant_line TEXT;
",
    r"
    ALTER TABLE sessions ADD COLUMN amr INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE totp (
        user_id       TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
        sealed_secret BLOB NOT NULL,
        confirmed     INTEGER NOT NULL,
        last_step     INTEGER,
        created_at    INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE recovery_codes (
        user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        hash       BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (user_id, hash)
    ) STRICT;
",
    r"
    CREATE TABLE reset_tokens (
        hash       BLOB PRIMARY KEY,
        user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        expires_at INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX reset_tokens_by_user ON reset_tokens (user_id);
",
    r"
    CREATE TABLE passkeys (
        id           TEXT PRIMARY KEY,
        user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        name         TEXT NOT NULL,
        credential   TEXT NOT NULL,
        created_at   INTEGER NOT NULL,
        last_used_at INTEGER
    ) STRICT;
    CREATE INDEX passkeys_by_user ON passkeys (user_id);
",
    r"
    ALTER TABLE users ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 0;
",
];

/// A SQLite database holding users and sessions.
#[derive(Clone)]
pub struct SqliteStore {
    pool: Arc<Pool>,
}

struct Pool {
    feed: broadcast::Sender<FeedItem>,
    conns: Vec<Mutex<Connection>>,
    free: Mutex<Vec<usize>>,
    permits: Arc<Semaphore>,
    path: PathBuf,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn map_sql(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            StoreError::Duplicate
        }
        _ => unavailable(e),
    }
}

fn open_connection(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let done: usize = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i + 1)?;
    }
    tx.commit()
}

/// Creates the database file with mode 0600 if it does not exist yet.
fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path).map(drop)
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub async fn open(path: impl Into<PathBuf>) -> StoreResult<Self> {
        let path = path.into();
        let size = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(2, 8);
        tokio::task::spawn_blocking(move || Self::open_blocking(path, size)).await.map_err(unavailable)?
    }

    fn open_blocking(path: PathBuf, size: usize) -> StoreResult<Self> {
        create_private_file(&path).map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
        let mut first = open_connection(&path).map_err(unavailable)?;
        migrate(&mut first).map_err(unavailable)?;
        let mut conns = vec![Mutex::new(first)];
        for _ in 1..size {
            conns.push(Mutex::new(open_connection(&path).map_err(unavailable)?));
        }
        Ok(Self {
            pool: Arc::new(Pool {
                feed: broadcast::channel(FEED_CAPACITY).0,
                free: Mutex::new((0..conns.len()).collect()),
                permits: Arc::new(Semaphore::new(conns.len())),
                conns,
                path,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.pool.path
    }

    /// Runs `f` on a pooled connection on a blocking thread.
    async fn run<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let permit = Arc::clone(&self.pool.permits).acquire_owned().await.map_err(unavailable)?;
        let pool = Arc::clone(&self.pool);
        // Everything, including giving the connection back, happens on the blocking thread, so a
        // caller that stops waiting cannot leak a connection.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let idx = pool.free.lock().map_err(unavailable)?.pop();
            let idx = idx.ok_or_else(|| unavailable("connection pool exhausted"))?;
            let result = match pool.conns[idx].lock() {
                Ok(mut conn) => f(&mut conn),
                Err(_) => Err(unavailable("connection lock poisoned")),
            };
            if let Ok(mut free) = pool.free.lock() {
                free.push(idx);
            }
            result
        })
        .await
        .map_err(unavailable)?
    }

    /// Runs a point read by primary key. In WAL mode readers never wait for the writer, and such
    /// a read takes microseconds, less than handing it to a blocking thread; so when a
    /// connection is free at once the read runs right here, and otherwise goes through [`run`].
    /// "Free" is simply a connection whose lock is free: the read holds it only for its
    /// microseconds, so it needs neither a permit nor a place in the free list (a [`run`] that
    /// picks the same connection meanwhile waits that long for its lock).
    ///
    /// [`run`]: SqliteStore::run
    async fn run_read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        for conn in &self.pool.conns {
            if let Ok(mut conn) = conn.try_lock() {
                return f(&mut conn);
            }
        }
        self.run(f).await
    }
}

const USER_COLUMNS: &str = "id, email, roles, disabled, created_at, email_verified";

/// A user row as read, before its roles are parsed.
type UserRow = (String, String, String, bool, i64, bool);

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<UserRow> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?))
}

fn build_user((id, email, roles, disabled, created_at, email_verified): UserRow) -> StoreResult<User> {
    let roles = parse_roles(&roles)?;
    Ok(User {
        id: UserId::from_stored(id),
        email: Email::from_canonical(email),
        roles: roles.into(),
        disabled,
        email_verified,
        created_at: Timestamp::from_unix_millis(created_at),
    })
}

fn parse_roles(s: &str) -> StoreResult<BTreeSet<Role>> {
    let names = s.split(',').filter(|n| !n.is_empty());
    portcullis_core::role_set(names).map_err(|e| StoreError::Corrupt(e.to_string()))
}

use portcullis_core::user::join_roles;

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, new: NewUser, now: Timestamp) -> StoreResult<User> {
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(map_sql)?;
            let skeleton = new.email.skeleton();
            let taken: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM users WHERE email = ?1 OR email_skeleton = ?2)",
                    params![new.email.as_str(), skeleton],
                    |r| r.get(0),
                )
                .map_err(map_sql)?;
            if taken {
                return Err(StoreError::EmailTaken);
            }
            let (user, password_hash) = new.into_user(now);
            tx.execute(
                "INSERT INTO users (id, email, email_skeleton, password_hash, roles, disabled, created_at, updated_at,
                                    email_verified)
                 VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?6, ?7)",
                params![
                    user.id.as_str(),
                    user.email.as_str(),
                    skeleton,
                    password_hash.as_phc(),
                    join_roles(&user.roles),
                    now.unix_millis(),
                    user.email_verified
                ],
            )
            .map_err(|e| match map_sql(e) {
                StoreError::Duplicate => StoreError::EmailTaken,
                other => other,
            })?;
            tx.commit().map_err(map_sql)?;
            Ok(user)
        })
        .await
    }

    async fn user(&self, id: &UserId) -> StoreResult<Option<User>> {
        let id = id.as_str().to_owned();
        self.run(move |conn| {
            let row = conn
                .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"))
                .and_then(|mut st| st.query_row([id], user_from_row).optional())
                .map_err(map_sql)?;
            row.map(build_user).transpose()
        })
        .await
    }

    async fn user_by_email(&self, email: &Email) -> StoreResult<Option<(User, PasswordHash)>> {
        let email = email.as_str().to_owned();
        self.run(move |conn| {
            let row = conn
                .prepare_cached(&format!("SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = ?1"))
                .and_then(|mut st| {
                    st.query_row([email], |r| Ok((user_from_row(r)?, r.get::<_, String>(6)?))).optional()
                })
                .map_err(map_sql)?;
            row.map(|(u, h)| Ok((build_user(u)?, PasswordHash::from_phc(h)))).transpose()
        })
        .await
    }

    async fn password_hash(&self, id: &UserId) -> StoreResult<Option<PasswordHash>> {
        let id = id.as_str().to_owned();
        self.run(move |conn| {
            conn.query_row("SELECT password_hash FROM users WHERE id = ?1", [id], |r| r.get(0))
                .optional()
                .map(|h| h.map(PasswordHash::from_phc))
                .map_err(map_sql)
        })
        .await
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        self.run(|conn| {
            let mut st = conn
                .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY created_at, id"))
                .map_err(map_sql)?;
            let rows = st.query_map([], user_from_row).map_err(map_sql)?;
            rows.map(|r| r.map_err(map_sql).and_then(build_user)).collect()
        })
        .await
    }

    async fn update_user(&self, id: &UserId, update: UserUpdate, now: Timestamp) -> StoreResult<Option<User>> {
        let id = id.as_str().to_owned();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(map_sql)?;
            if let Some(roles) = &update.roles {
                tx.execute(
                    "UPDATE users SET roles = ?2, updated_at = ?3 WHERE id = ?1",
                    params![id, join_roles(roles), now.unix_millis()],
                )
                .map_err(map_sql)?;
            }
            if let Some(disabled) = update.disabled {
                tx.execute(
                    "UPDATE users SET disabled = ?2, updated_at = ?3 WHERE id = ?1",
                    params![id, disabled, now.unix_millis()],
                )
                .map_err(map_sql)?;
            }
            if let Some(verified) = update.email_verified {
                tx.execute(
                    "UPDATE users SET email_verified = ?2, updated_at = ?3 WHERE id = ?1",
                    params![id, verified, now.unix_millis()],
                )
                .map_err(map_sql)?;
            }
            let row = tx
                .query_row(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"), [&id], user_from_row)
                .optional()
                .map_err(map_sql)?;
            tx.commit().map_err(map_sql)?;
            row.map(build_user).transpose()
        })
        .await
    }

    async fn set_password_hash(&self, id: &UserId, hash: PasswordHash, now: Timestamp) -> StoreResult<bool> {
        let id = id.as_str().to_owned();
        self.run(move |conn| {
            conn.execute(
                "UPDATE users SET password_hash = ?2, updated_at = ?3 WHERE id = ?1",
                params![id, hash.as_phc(), now.unix_millis()],
            )
            .map(|n| n > 0)
            .map_err(map_sql)
        })
        .await
    }

    async fn delete_user(&self, id: &UserId) -> StoreResult<bool> {
        let id = id.as_str().to_owned();
        self.run(move |conn| conn.execute("DELETE FROM users WHERE id = ?1", [id]).map(|n| n > 0).map_err(map_sql))
            .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.run(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).map_err(map_sql)).await
    }
}

/// The session columns, in the order [`session_from_row`] reads them. A macro, so the statements
/// below are constants: the hottest one (a lookup by id) is then not formatted on every call.
macro_rules! session_columns {
    () => {
        "id, secret_hash, user_id, mode, created_at, last_seen_at, idle_expires_at, \
         expires_at, ip, user_agent, refresh_generation, rotated_at, grant_line, amr"
    };
}

const INSERT_SESSION: &str = concat!(
    "INSERT INTO sessions (",
    session_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
);
/// The lookup on every session check. `*` rather than the column list: rusqlite keys its statement
/// cache by the SQL text, hashing it on every use, and the table's own columns are the list above
/// in its order (the migrations created them so, and SQLite only ever appends columns; a test
/// holds them equal), so the short text reads the same row for a third of the hashing.
const SELECT_SESSION: &str = "SELECT * FROM sessions WHERE id = ?1";
const SELECT_USER_SESSIONS: &str =
    concat!("SELECT ", session_columns!(), " FROM sessions WHERE user_id = ?1 ORDER BY created_at, id");

fn session_from_row(row: &Row<'_>) -> rusqlite::Result<StoreResult<SessionRecord>> {
    session_from_row_of(row, None)
}

/// A session row; `known` is the id it was looked up by (the row's own is then not parsed again:
/// the statement matched it exactly).
fn session_from_row_of(row: &Row<'_>, known: Option<&SessionId>) -> rusqlite::Result<StoreResult<SessionRecord>> {
    let id = match known {
        Some(id) => Some(id.clone()),
        None => SessionId::parse(row.get_ref(0)?.as_str()?),
    };
    let hash: Result<[u8; 32], _> = row.get_ref(1)?.as_blob()?.try_into();
    let mode = AuthMode::parse(row.get_ref(3)?.as_str()?);
    let (id, hash, mode) = match (id, hash, mode) {
        (Some(id), Ok(hash), Some(mode)) => (id, hash, mode),
        (None, _, _) => return Ok(Err(StoreError::Corrupt("session id".into()))),
        (_, Err(_), _) => return Ok(Err(StoreError::Corrupt("session hash".into()))),
        (_, _, None) => return Ok(Err(StoreError::Corrupt("session mode".into()))),
    };
    Ok(Ok(SessionRecord {
        id,
        secret_hash: SecretHash(hash),
        user_id: UserId::from_stored(row.get_ref(2)?.as_str()?),
        mode,
        created_at: Timestamp::from_unix_millis(row.get(4)?),
        last_seen_at: Timestamp::from_unix_millis(row.get(5)?),
        idle_expires_at: Timestamp::from_unix_millis(row.get(6)?),
        expires_at: Timestamp::from_unix_millis(row.get(7)?),
        ip: row.get_ref(8)?.as_str_or_null()?.map(SmolStr::new),
        user_agent: row.get_ref(9)?.as_str_or_null()?.map(SmolStr::new),
        refresh_generation: u64::try_from(row.get::<_, i64>(10)?).unwrap_or(0),
        rotated_at: row.get::<_, Option<i64>>(11)?.map(Timestamp::from_unix_millis),
        grant: match row.get_ref(12)?.as_str_or_null()? {
            None => None,
            Some(line) => match Grant::decode(line) {
                Some(grant) => Some(Box::new(grant)),
                None => return Ok(Err(StoreError::Corrupt("session grant".into()))),
            },
        },
        amr: Amr::from_bits(u8::try_from(row.get::<_, i64>(13)?).unwrap_or(0)),
    }))
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create(&self, record: &SessionRecord) -> StoreResult<()> {
        let r = record.clone();
        self.run(move |conn| {
            conn.prepare_cached(INSERT_SESSION)
                .and_then(|mut st| {
                    st.execute(params![
                        r.id.as_str(),
                        &r.secret_hash.0[..],
                        r.user_id.as_str(),
                        r.mode.as_str(),
                        r.created_at.unix_millis(),
                        r.last_seen_at.unix_millis(),
                        r.idle_expires_at.unix_millis(),
                        r.expires_at.unix_millis(),
                        r.ip.as_deref(),
                        r.user_agent.as_deref(),
                        i64::try_from(r.refresh_generation).unwrap_or(i64::MAX),
                        r.rotated_at.map(Timestamp::unix_millis),
                        r.grant.as_deref().map(Grant::encode),
                        i64::from(r.amr.bits()),
                    ])
                })
                .map(drop)
                .map_err(map_sql)
        })
        .await
    }

    async fn get(&self, id: &SessionId) -> StoreResult<Option<SessionRecord>> {
        let id = id.clone();
        self.run_read(move |conn| {
            conn.prepare_cached(SELECT_SESSION)
                .and_then(|mut st| st.query_row([id.as_str()], |row| session_from_row_of(row, Some(&id))).optional())
                .map_err(map_sql)?
                .transpose()
        })
        .await
    }

    async fn touch(&self, id: &SessionId, last_seen_at: Timestamp, idle_expires_at: Timestamp) -> StoreResult<()> {
        let id = id.as_str().to_owned();
        self.run(move |conn| {
            conn.prepare_cached("UPDATE sessions SET last_seen_at = ?2, idle_expires_at = ?3 WHERE id = ?1")
                .and_then(|mut st| st.execute(params![id, last_seen_at.unix_millis(), idle_expires_at.unix_millis()]))
                .map(drop)
                .map_err(map_sql)
        })
        .await
    }

    async fn delete(&self, id: &SessionId) -> StoreResult<bool> {
        let id = id.as_str().to_owned();
        self.run(move |conn| conn.execute("DELETE FROM sessions WHERE id = ?1", [id]).map(|n| n > 0).map_err(map_sql))
            .await
    }

    async fn list_for_user(&self, user: &UserId) -> StoreResult<Vec<SessionRecord>> {
        let user = user.as_str().to_owned();
        self.run(move |conn| {
            let mut st = conn.prepare_cached(SELECT_USER_SESSIONS).map_err(map_sql)?;
            let rows = st.query_map([user], session_from_row).map_err(map_sql)?;
            rows.map(|r| r.map_err(map_sql).and_then(|x| x)).collect()
        })
        .await
    }

    async fn delete_for_user(&self, user: &UserId, keep: Option<&SessionId>) -> StoreResult<u64> {
        let user = user.as_str().to_owned();
        let keep = keep.map(|k| k.as_str().to_owned());
        self.run(move |conn| {
            conn.execute("DELETE FROM sessions WHERE user_id = ?1 AND id IS NOT ?2", params![user, keep])
                .map(|n| n as u64)
                .map_err(map_sql)
        })
        .await
    }

    async fn rotate_refresh(
        &self,
        id: &SessionId,
        from_generation: u64,
        new_hash: SecretHash,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let id = id.as_str().to_owned();
        let from = i64::try_from(from_generation).unwrap_or(i64::MAX);
        self.run(move |conn| {
            conn.prepare_cached(
                "UPDATE sessions SET secret_hash = ?3, refresh_generation = ?2 + 1, rotated_at = ?4, \
                 last_seen_at = ?4 WHERE id = ?1 AND refresh_generation = ?2",
            )
            .and_then(|mut st| st.execute(params![id, from, &new_hash.0[..], now.unix_millis()]))
            .map(|n| n == 1)
            .map_err(map_sql)
        })
        .await
    }

    async fn undo_rotation(&self, before: &SessionRecord, new_hash: SecretHash, now: Timestamp) -> StoreResult<bool> {
        let id = before.id.as_str().to_owned();
        let generation = i64::try_from(before.refresh_generation).unwrap_or(i64::MAX);
        let (old_hash, rotated_at, last_seen) =
            (before.secret_hash, before.rotated_at.map(Timestamp::unix_millis), before.last_seen_at.unix_millis());
        self.run(move |conn| {
            conn.prepare_cached(
                "UPDATE sessions SET secret_hash = ?5, refresh_generation = ?2, rotated_at = ?6, last_seen_at = ?7 \
                 WHERE id = ?1 AND refresh_generation = ?2 + 1 AND secret_hash = ?3 AND rotated_at = ?4",
            )
            .and_then(|mut st| {
                st.execute(params![
                    id,
                    generation,
                    &new_hash.0[..],
                    now.unix_millis(),
                    &old_hash.0[..],
                    rotated_at,
                    last_seen
                ])
            })
            .map(|n| n == 1)
            .map_err(map_sql)
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        UserStore::ping(self).await
    }
}

#[async_trait]
impl RevocationStore for SqliteStore {
    async fn revoke(&self, event: &RevocationEvent) -> StoreResult<()> {
        let ev = event.clone();
        self.run(move |conn| {
            match &ev {
                RevocationEvent::Deny { what, until } => conn.execute(
                    "INSERT INTO denylist (key, until) VALUES (?1, ?2) \
                     ON CONFLICT (key) DO UPDATE SET until = MAX(until, excluded.until)",
                    params![what.key(), until.unix_millis()],
                ),
                RevocationEvent::NotBefore { user, at } => conn.execute(
                    "INSERT INTO not_before (user_id, at) VALUES (?1, ?2) \
                     ON CONFLICT (user_id) DO UPDATE SET at = MAX(at, excluded.at)",
                    params![user.as_str(), at.unix_millis()],
                ),
            }
            .map(drop)
            .map_err(map_sql)
        })
        .await?;
        let _ = self.pool.feed.send(FeedItem::Event(event.clone()));
        Ok(())
    }

    async fn snapshot(&self, now: Timestamp) -> StoreResult<RevocationSnapshot> {
        self.run(move |conn| {
            let mut snap = RevocationSnapshot::default();
            let mut st = conn.prepare_cached("SELECT key, until FROM denylist WHERE until > ?1").map_err(map_sql)?;
            let rows = st
                .query_map([now.unix_millis()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(map_sql)?;
            for row in rows {
                let (key, until) = row.map_err(map_sql)?;
                let what = Denied::from_key(&key).ok_or_else(|| StoreError::Corrupt("deny-list key".into()))?;
                snap.denied.push((what, Timestamp::from_unix_millis(until)));
            }
            let mut st = conn.prepare_cached("SELECT user_id, at FROM not_before").map_err(map_sql)?;
            let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))).map_err(map_sql)?;
            for row in rows {
                let (user, at) = row.map_err(map_sql)?;
                snap.not_before.push((UserId::from_stored(user), Timestamp::from_unix_millis(at)));
            }
            Ok(snap)
        })
        .await
    }
}

fn client_from_row(row: &Row<'_>) -> rusqlite::Result<ClientRow> {
    Ok(ClientRow {
        id: row.get(0)?,
        name: row.get(1)?,
        kind: row.get(2)?,
        secret_hash: row.get(3)?,
        previous_secret_hash: row.get(4)?,
        previous_until: row.get(5)?,
        redirect_uris: row.get(6)?,
        post_logout_redirect_uris: row.get(7)?,
        backchannel_logout_uri: row.get(8)?,
        first_party: row.get(9)?,
        created_at: row.get(10)?,
        last_used_at: row.get(11)?,
    })
}

#[async_trait]
impl ClientStore for SqliteStore {
    async fn create_client(&self, client: &Client) -> StoreResult<()> {
        let r = ClientRow::of(client);
        self.run(move |conn| {
            conn.execute(
                &format!(
                    "INSERT INTO clients ({CLIENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                ),
                params![
                    r.id,
                    r.name,
                    r.kind,
                    r.secret_hash,
                    r.previous_secret_hash,
                    r.previous_until,
                    r.redirect_uris,
                    r.post_logout_redirect_uris,
                    r.backchannel_logout_uri,
                    r.first_party,
                    r.created_at,
                    r.last_used_at
                ],
            )
            .map(drop)
            .map_err(map_sql)
        })
        .await
    }

    async fn client(&self, id: &ClientId) -> StoreResult<Option<Client>> {
        let id = id.as_str().to_owned();
        let row = self
            .run(move |conn| {
                conn.prepare_cached(&format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE id = ?1"))
                    .and_then(|mut st| st.query_row([id], client_from_row).optional())
                    .map_err(map_sql)
            })
            .await?;
        row.map(ClientRow::into_client).transpose()
    }

    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        let rows = self
            .run(|conn| {
                let mut st = conn
                    .prepare_cached(&format!("SELECT {CLIENT_COLUMNS} FROM clients ORDER BY created_at, id"))
                    .map_err(map_sql)?;
                let rows = st.query_map([], client_from_row).map_err(map_sql)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_sql)
            })
            .await?;
        rows.into_iter().map(ClientRow::into_client).collect()
    }

    async fn delete_client(&self, id: &ClientId) -> StoreResult<bool> {
        let id = id.as_str().to_owned();
        self.run(move |conn| conn.execute("DELETE FROM clients WHERE id = ?1", [id]).map(|n| n > 0).map_err(map_sql))
            .await
    }

    async fn rotate_client_secret(
        &self,
        id: &ClientId,
        new_hash: SecretHash,
        previous_until: Timestamp,
    ) -> StoreResult<Option<Client>> {
        let key = id.as_str().to_owned();
        let changed = self
            .run(move |conn| {
                conn.execute(
                    "UPDATE clients SET previous_secret_hash = secret_hash, previous_until = ?2, secret_hash = ?3 \
                     WHERE id = ?1",
                    params![key, previous_until.unix_millis(), &new_hash.0[..]],
                )
                .map_err(map_sql)
            })
            .await?;
        if changed == 0 {
            return Ok(None);
        }
        self.client(id).await
    }

    async fn touch_client(&self, id: &ClientId, at: Timestamp) -> StoreResult<()> {
        let id = id.as_str().to_owned();
        self.run(move |conn| {
            conn.execute("UPDATE clients SET last_used_at = ?2 WHERE id = ?1", params![id, at.unix_millis()])
                .map(drop)
                .map_err(map_sql)
        })
        .await
    }
}

const PASSKEY_COLUMNS: &str = "SELECT id, user_id, name, credential, created_at, last_used_at FROM passkeys";

fn passkey_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredPasskey> {
    Ok(StoredPasskey {
        id: r.get(0)?,
        user_id: UserId::from_stored(r.get::<_, String>(1)?),
        name: r.get(2)?,
        credential: r.get(3)?,
        created_at: Timestamp::from_unix_millis(r.get(4)?),
        last_used_at: r.get::<_, Option<i64>>(5)?.map(Timestamp::from_unix_millis),
    })
}

#[async_trait]
impl FactorStore for SqliteStore {
    async fn factors(&self, user: &UserId) -> StoreResult<Factors> {
        let user = user.as_str().to_owned();
        self.run_read(move |conn| {
            let totp = conn
                .prepare_cached("SELECT sealed_secret, confirmed, last_step, created_at FROM totp WHERE user_id = ?1")
                .and_then(|mut st| {
                    st.query_row([&user], |r| {
                        Ok(StoredTotp {
                            sealed_secret: r.get(0)?,
                            confirmed: r.get(1)?,
                            last_step: r.get::<_, Option<i64>>(2)?.and_then(|s| u64::try_from(s).ok()),
                            created_at: Timestamp::from_unix_millis(r.get(3)?),
                        })
                    })
                    .optional()
                })
                .map_err(map_sql)?;
            let recovery_codes = conn
                .prepare_cached("SELECT COUNT(*) FROM recovery_codes WHERE user_id = ?1")
                .and_then(|mut st| st.query_row([&user], |r| r.get(0)))
                .map_err(map_sql)?;
            let passkeys = conn
                .prepare_cached("SELECT COUNT(*) FROM passkeys WHERE user_id = ?1")
                .and_then(|mut st| st.query_row([&user], |r| r.get(0)))
                .map_err(map_sql)?;
            Ok(Factors { totp, recovery_codes, passkeys })
        })
        .await
    }

    async fn begin_totp(&self, user: &UserId, sealed_secret: Vec<u8>, now: Timestamp) -> StoreResult<bool> {
        let user = user.as_str().to_owned();
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO totp (user_id, sealed_secret, confirmed, last_step, created_at) VALUES (?1, ?2, 0, NULL, ?3)
                 ON CONFLICT (user_id) DO UPDATE SET sealed_secret = ?2, created_at = ?3 WHERE confirmed = 0",
                params![user, sealed_secret, now.unix_millis()],
            )
            .map(|n| n > 0)
            .map_err(map_sql)
        })
        .await
    }

    async fn accept_totp_step(&self, user: &UserId, step: u64, confirm: bool) -> StoreResult<bool> {
        let (user, step) = (user.as_str().to_owned(), i64::try_from(step).unwrap_or(i64::MAX));
        let sql = if confirm {
            "UPDATE totp SET confirmed = 1, last_step = ?2 WHERE user_id = ?1 AND confirmed = 0"
        } else {
            "UPDATE totp SET last_step = ?2 WHERE user_id = ?1 AND confirmed = 1 AND (last_step IS NULL OR last_step < ?2)"
        };
        self.run(move |conn| conn.execute(sql, params![user, step]).map(|n| n > 0).map_err(map_sql)).await
    }

    async fn delete_totp(&self, user: &UserId) -> StoreResult<bool> {
        let user = user.as_str().to_owned();
        self.run(move |conn| {
            conn.execute("DELETE FROM totp WHERE user_id = ?1", [user]).map(|n| n > 0).map_err(map_sql)
        })
        .await
    }

    async fn set_recovery_codes(&self, user: &UserId, hashes: Vec<[u8; 32]>, now: Timestamp) -> StoreResult<()> {
        let user = user.as_str().to_owned();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(map_sql)?;
            tx.execute("DELETE FROM recovery_codes WHERE user_id = ?1", [&user]).map_err(map_sql)?;
            for hash in &hashes {
                tx.execute(
                    "INSERT INTO recovery_codes (user_id, hash, created_at) VALUES (?1, ?2, ?3)",
                    params![user, &hash[..], now.unix_millis()],
                )
                .map_err(map_sql)?;
            }
            tx.commit().map_err(map_sql)
        })
        .await
    }

    async fn use_recovery_code(&self, user: &UserId, hash: [u8; 32]) -> StoreResult<bool> {
        let user = user.as_str().to_owned();
        self.run(move |conn| {
            conn.execute("DELETE FROM recovery_codes WHERE user_id = ?1 AND hash = ?2", params![user, &hash[..]])
                .map(|n| n > 0)
                .map_err(map_sql)
        })
        .await
    }

    async fn delete_factors(&self, user: &UserId) -> StoreResult<bool> {
        let user = user.as_str().to_owned();
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(map_sql)?;
            let totp = tx.execute("DELETE FROM totp WHERE user_id = ?1", [&user]).map_err(map_sql)?;
            let codes = tx.execute("DELETE FROM recovery_codes WHERE user_id = ?1", [&user]).map_err(map_sql)?;
            let passkeys = tx.execute("DELETE FROM passkeys WHERE user_id = ?1", [&user]).map_err(map_sql)?;
            tx.commit().map_err(map_sql)?;
            Ok(totp + codes + passkeys > 0)
        })
        .await
    }

    async fn add_passkey(&self, passkey: &StoredPasskey) -> StoreResult<()> {
        let p = passkey.clone();
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO passkeys (id, user_id, name, credential, created_at, last_used_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![p.id, p.user_id.as_str(), p.name, p.credential, p.created_at.unix_millis(), p.last_used_at.map(Timestamp::unix_millis)],
            )
            .map(drop)
            .map_err(map_sql)
        })
        .await
    }

    async fn passkeys(&self, user: &UserId) -> StoreResult<Vec<StoredPasskey>> {
        let user = user.as_str().to_owned();
        self.run_read(move |conn| {
            let mut st = conn
                .prepare_cached(&format!("{PASSKEY_COLUMNS} WHERE user_id = ?1 ORDER BY created_at, id"))
                .map_err(map_sql)?;
            let rows = st.query_map([&user], passkey_row).map_err(map_sql)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(map_sql)
        })
        .await
    }

    async fn passkey(&self, id: &str) -> StoreResult<Option<StoredPasskey>> {
        let id = id.to_owned();
        self.run_read(move |conn| {
            conn.query_row(&format!("{PASSKEY_COLUMNS} WHERE id = ?1"), [&id], passkey_row).optional().map_err(map_sql)
        })
        .await
    }

    async fn passkey_used(&self, id: &str, credential: String, now: Timestamp) -> StoreResult<bool> {
        let id = id.to_owned();
        self.run(move |conn| {
            conn.execute(
                "UPDATE passkeys SET credential = ?2, last_used_at = ?3 WHERE id = ?1",
                params![id, credential, now.unix_millis()],
            )
            .map(|n| n > 0)
            .map_err(map_sql)
        })
        .await
    }

    async fn delete_passkey(&self, user: &UserId, id: &str) -> StoreResult<bool> {
        let (user, id) = (user.as_str().to_owned(), id.to_owned());
        self.run(move |conn| {
            conn.execute("DELETE FROM passkeys WHERE user_id = ?1 AND id = ?2", [user, id])
                .map(|n| n > 0)
                .map_err(map_sql)
        })
        .await
    }

    async fn add_reset_token(
        &self,
        user: &UserId,
        hash: [u8; 32],
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        let user = user.as_str().to_owned();
        self.run(move |conn| {
            conn.execute("DELETE FROM reset_tokens WHERE expires_at <= ?1", [now.unix_millis()]).map_err(map_sql)?;
            conn.execute(
                "INSERT INTO reset_tokens (hash, user_id, expires_at) VALUES (?1, ?2, ?3)",
                params![&hash[..], user, expires_at.unix_millis()],
            )
            .map(drop)
            .map_err(map_sql)
        })
        .await
    }

    async fn take_reset_token(&self, hash: [u8; 32], now: Timestamp) -> StoreResult<Option<UserId>> {
        self.run(move |conn| {
            conn.query_row(
                "DELETE FROM reset_tokens WHERE hash = ?1 AND expires_at > ?2 RETURNING user_id",
                params![&hash[..], now.unix_millis()],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map(|id| id.map(UserId::from_stored))
            .map_err(map_sql)
        })
        .await
    }

    async fn delete_reset_tokens(&self, user: &UserId) -> StoreResult<()> {
        let user = user.as_str().to_owned();
        self.run(move |conn| {
            conn.execute("DELETE FROM reset_tokens WHERE user_id = ?1", [user]).map(drop).map_err(map_sql)
        })
        .await
    }
}

#[async_trait]
impl ClusterFeed for SqliteStore {
    fn subscribe(&self) -> broadcast::Receiver<FeedItem> {
        self.pool.feed.subscribe()
    }
}

#[async_trait]
impl Sweep for SqliteStore {
    async fn sweep(&self, now: Timestamp) -> StoreResult<Swept> {
        let now = now.unix_millis();
        self.run(move |conn| {
            let count = |sql: &str| conn.execute(sql, [now]).map(|n| n as u64).map_err(map_sql);
            Ok(Swept {
                sessions: count("DELETE FROM sessions WHERE MIN(idle_expires_at, expires_at) <= ?1")?,
                revocations: count("DELETE FROM denylist WHERE until <= ?1")?,
                throttles: count("DELETE FROM throttles WHERE expires_at <= ?1")?,
            })
        })
        .await
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        self.run(|conn| {
            let mut st = conn
                .prepare_cached(
                    "SELECT kid, alg, private_key, created_at, retire_at FROM signing_keys \
                     ORDER BY created_at DESC, kid DESC",
                )
                .map_err(map_sql)?;
            let rows = st
                .query_map([], |r| {
                    Ok(StoredKey {
                        kid: r.get(0)?,
                        alg: r.get(1)?,
                        private: r.get(2)?,
                        created_at: Timestamp::from_unix_millis(r.get(3)?),
                        retire_at: r.get::<_, Option<i64>>(4)?.map(Timestamp::from_unix_millis),
                    })
                })
                .map_err(map_sql)?;
            rows.map(|r| r.map_err(map_sql)).collect()
        })
        .await
    }

    async fn add_signing_key(&self, key: StoredKey, retire_others_at: Timestamp) -> StoreResult<()> {
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(map_sql)?;
            tx.execute(
                "UPDATE signing_keys SET retire_at = ?1 WHERE retire_at IS NULL",
                [retire_others_at.unix_millis()],
            )
            .map_err(map_sql)?;
            tx.execute(
                "INSERT INTO signing_keys (kid, alg, private_key, created_at, retire_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    key.kid,
                    key.alg,
                    key.private,
                    key.created_at.unix_millis(),
                    key.retire_at.map(Timestamp::unix_millis)
                ],
            )
            .map_err(map_sql)?;
            tx.commit().map_err(map_sql)
        })
        .await
    }

    async fn secret(&self, name: &str, candidate: Vec<u8>) -> StoreResult<Vec<u8>> {
        let name = name.to_owned();
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO secrets (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
                params![name, candidate],
            )
            .map_err(map_sql)?;
            conn.query_row("SELECT value FROM secrets WHERE name = ?1", [name], |r| r.get(0)).map_err(map_sql)
        })
        .await
    }

    async fn find_secret(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        let name = name.to_owned();
        self.run(move |conn| {
            conn.query_row("SELECT value FROM secrets WHERE name = ?1", [name], |r| r.get(0))
                .optional()
                .map_err(map_sql)
        })
        .await
    }
}

fn throttle_from_row(r: &Row<'_>) -> rusqlite::Result<ThrottleState> {
    Ok(ThrottleState {
        failures: r.get(0)?,
        last_failure_at: Timestamp::from_unix_millis(r.get(1)?),
        blocked_until: Timestamp::from_unix_millis(r.get(2)?),
        expires_at: Timestamp::from_unix_millis(r.get(3)?),
    })
}

const THROTTLE_SELECT: &str =
    "SELECT failures, last_failure_at, blocked_until, expires_at FROM throttles WHERE key = ?1 AND expires_at > ?2";

fn throttle_row(tx: &rusqlite::Transaction<'_>, key: &str, now: Timestamp) -> StoreResult<Option<ThrottleState>> {
    tx.query_row(THROTTLE_SELECT, params![key, now.unix_millis()], throttle_from_row).optional().map_err(map_sql)
}

fn put_throttle(tx: &rusqlite::Transaction<'_>, key: &str, t: &ThrottleState) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO throttles (key, failures, last_failure_at, blocked_until, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (key) DO UPDATE SET failures = excluded.failures, \
         last_failure_at = excluded.last_failure_at, blocked_until = excluded.blocked_until, \
         expires_at = excluded.expires_at",
        params![
            key,
            t.failures,
            t.last_failure_at.unix_millis(),
            t.blocked_until.unix_millis(),
            t.expires_at.unix_millis()
        ],
    )
    .map(drop)
    .map_err(map_sql)
}

#[async_trait]
impl ThrottleStore for SqliteStore {
    async fn throttle_state(&self, key: &str, now: Timestamp) -> StoreResult<Option<ThrottleState>> {
        let key = key.to_owned();
        self.run_read(move |conn| {
            let mut st = conn.prepare_cached(THROTTLE_SELECT).map_err(map_sql)?;
            st.query_row(params![key, now.unix_millis()], throttle_from_row).optional().map_err(map_sql)
        })
        .await
    }

    async fn begin_attempt(&self, key: &str, rule: &ThrottleRule, now: Timestamp) -> StoreResult<Attempt> {
        let (key, rule) = (key.to_owned(), *rule);
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(map_sql)?;
            let previous = throttle_row(&tx, &key, now)?;
            let attempt = ThrottleState::begin_attempt(previous.as_ref(), &rule, now);
            if let Attempt::Admitted(next) = &attempt {
                put_throttle(&tx, &key, next)?;
            }
            tx.commit().map_err(map_sql)?;
            Ok(attempt)
        })
        .await
    }

    async fn refund_attempt(&self, key: &str, rule: &ThrottleRule, now: Timestamp) -> StoreResult<()> {
        let (key, rule) = (key.to_owned(), *rule);
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(map_sql)?;
            match throttle_row(&tx, &key, now)?.and_then(|t| t.refunded(&rule)) {
                Some(next) => put_throttle(&tx, &key, &next)?,
                None => drop(tx.execute("DELETE FROM throttles WHERE key = ?1", [&key]).map_err(map_sql)?),
            }
            tx.commit().map_err(map_sql)
        })
        .await
    }

    async fn clear_failures(&self, key: &str) -> StoreResult<()> {
        let key = key.to_owned();
        self.run(move |conn| conn.execute("DELETE FROM throttles WHERE key = ?1", [key]).map(drop).map_err(map_sql))
            .await
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append(&self, event: &NewAuditEvent) -> StoreResult<()> {
        let e = event.clone();
        self.run(move |conn| {
            conn.prepare_cached(
                "INSERT INTO audit (at, kind, outcome, user_id, actor, ip, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    e.at.unix_millis(),
                    e.kind,
                    e.outcome,
                    e.user_id.as_ref().map(UserId::as_str),
                    e.actor,
                    e.ip,
                    e.detail
                ])
            })
            .map(drop)
            .map_err(map_sql)
        })
        .await
    }

    async fn audit_events(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        let q = query.clone();
        self.run(move |conn| {
            let mut st = conn
                .prepare_cached(
                    "SELECT id, at, kind, outcome, user_id, actor, ip, detail FROM audit \
                     WHERE (?1 IS NULL OR id < ?1) AND (?2 IS NULL OR user_id = ?2) ORDER BY id DESC LIMIT ?3",
                )
                .map_err(map_sql)?;
            let rows = st
                .query_map(params![q.before, q.user_id.as_ref().map(UserId::as_str), q.limit], |r| {
                    Ok(AuditEvent {
                        id: r.get(0)?,
                        event: NewAuditEvent {
                            at: Timestamp::from_unix_millis(r.get(1)?),
                            kind: r.get(2)?,
                            outcome: r.get(3)?,
                            user_id: r.get::<_, Option<String>>(4)?.map(UserId::from_stored),
                            actor: r.get(5)?,
                            ip: r.get(6)?,
                            detail: r.get(7)?,
                        },
                    })
                })
                .map_err(map_sql)?;
            rows.map(|r| r.map_err(map_sql)).collect()
        })
        .await
    }

    async fn purge_audit(&self, cutoff: Timestamp) -> StoreResult<u64> {
        self.run(move |conn| {
            conn.execute("DELETE FROM audit WHERE at < ?1", [cutoff.unix_millis()]).map(|n| n as u64).map_err(map_sql)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SELECT_SESSION` reads `*`: the table's columns must start with the session columns, in
    /// their order.
    #[tokio::test]
    async fn the_session_table_has_the_session_columns_in_their_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path().join("t.db")).await.expect("open");
        let names = store
            .run(|conn| {
                let st = conn.prepare(SELECT_SESSION).map_err(map_sql)?;
                Ok(st.column_names().into_iter().map(str::to_owned).collect::<Vec<_>>())
            })
            .await
            .expect("columns");
        let wanted: Vec<&str> = session_columns!().split(',').map(str::trim).collect();
        assert_eq!(&names[..wanted.len()], &wanted[..], "{names:?}");
    }
}
