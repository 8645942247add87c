//! PostgreSQL: users, roles and signing keys shared by every node.
//!
//! Migrations run at start-up inside a transaction holding an advisory lock, so nodes starting
//! together do not race. Connections come from a pool whose waits, connects and recycles all
//! time out ([`TIMEOUT`]): an unreachable database answers `Unavailable` quickly, never hangs.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use portcullis_core::user::join_roles;
use portcullis_core::{Client, ClientId, Email, PasswordHash, Role, SecretHash, Timestamp, User, UserId};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::clients::{CLIENT_COLUMNS, ClientRow};
use crate::{
    AuditEvent, AuditQuery, AuditStore, ClientStore, FactorStore, Factors, KeyStore, NewAuditEvent, NewUser,
    StoreError, StoreResult, StoredKey, StoredPasskey, StoredTotp, UserStore, UserUpdate,
};

/// How long getting, opening or recycling a connection may take.
pub const TIMEOUT: Duration = Duration::from_secs(2);

const MIGRATIONS: &[&str] = &[
    r"
    CREATE TABLE users (
        id             TEXT PRIMARY KEY,
        email          TEXT NOT NULL UNIQUE,
        email_skeleton TEXT NOT NULL UNIQUE,
        password_hash  TEXT NOT NULL,
        roles          TEXT NOT NULL,
        disabled       BOOLEAN NOT NULL DEFAULT FALSE,
        created_at     BIGINT NOT NULL,
        updated_at     BIGINT NOT NULL
    );
    CREATE TABLE signing_keys (
        kid         TEXT PRIMARY KEY,
        alg         TEXT NOT NULL,
        private_key BYTEA NOT NULL,
        created_at  BIGINT NOT NULL,
        retire_at   BIGINT
    );
    CREATE TABLE secrets (
        name  TEXT PRIMARY KEY,
        value BYTEA NOT NULL
    );
",
    r"
    CREATE TABLE audit (
        id      BIGSERIAL PRIMARY KEY,
        at      BIGINT NOT NULL,
        kind    TEXT NOT NULL,
        outcome TEXT NOT NULL,
        user_id TEXT,
        actor   TEXT,
        ip      TEXT,
        detail  TEXT
    );
    CREATE INDEX audit_by_user ON audit (user_id, id);
    CREATE INDEX audit_by_time ON audit (at);
",
    r"
    CREATE TABLE clients (
        id                        TEXT PRIMARY KEY,
        name                      TEXT NOT NULL,
        kind                      TEXT NOT NULL,
        secret_hash               BYTEA,
        previous_secret_hash      BYTEA,
        previous_until            BIGINT,
        redirect_uris             TEXT NOT NULL,
        post_logout_redirect_uris TEXT NOT NULL,
        backchannel_logout_uri    TEXT,
        first_party               BOOLEAN NOT NULL,
        created_at                BIGINT NOT NULL,
        last_used_at              BIGINT
    );
",
    r"
    CREATE TABLE totp (
        user_id       TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
        sealed_secret BYTEA NOT NULL,
        confirmed     BOOLEAN NOT NULL,
        last_step     BIGINT,
        created_at    BIGINT NOT NULL
    );
    CREATE TABLE recovery_codes (
        user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        hash       BYTEA NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (user_id, hash)
    );
",
    r"
    CREATE TABLE reset_tokens (
        hash       BYTEA PRIMARY KEY,
        user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX reset_tokens_by_user ON reset_tokens (user_id);
",
    r"
    CREATE TABLE passkeys (
        id           TEXT PRIMARY KEY,
        user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
        name         TEXT NOT NULL,
        credential   TEXT NOT NULL,
        created_at   BIGINT NOT NULL,
        last_used_at BIGINT
    );
    CREATE INDEX passkeys_by_user ON passkeys (user_id);
",
    r"
    ALTER TABLE users ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT FALSE;
",
];

/// An arbitrary constant naming Portcullis' migration lock.
const MIGRATION_LOCK: i64 = 0x706f_7274_6375_6c6c;

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn map_pg(e: tokio_postgres::Error) -> StoreError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) { StoreError::Duplicate } else { unavailable(e) }
}

#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
}

impl PostgresStore {
    /// Connects to `postgres://…` and runs the migrations.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let mut config: tokio_postgres::Config = url.parse().map_err(unavailable)?;
        config.connect_timeout(TIMEOUT);
        // Notices (`relation ... already exists, skipping` from the idempotent migrations) are
        // not news: only warnings and errors come back from the server.
        let options = match config.get_options() {
            Some(given) => format!("{given} -c client_min_messages=warning"),
            None => "-c client_min_messages=warning".to_owned(),
        };
        config.options(options);
        let manager = Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(16)
            .wait_timeout(Some(TIMEOUT))
            .create_timeout(Some(TIMEOUT))
            .recycle_timeout(Some(TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(unavailable)?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(unavailable)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_pg)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(map_pg)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS portcullis_migrations (version INT PRIMARY KEY)")
            .await
            .map_err(map_pg)?;
        let done: i32 = tx
            .query_one("SELECT COALESCE(MAX(version), 0) FROM portcullis_migrations", &[])
            .await
            .map_err(map_pg)?
            .get(0);
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(done).unwrap_or(0)) {
            tx.batch_execute(sql).await.map_err(map_pg)?;
            let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
            tx.execute("INSERT INTO portcullis_migrations (version) VALUES ($1)", &[&version]).await.map_err(map_pg)?;
        }
        tx.commit().await.map_err(map_pg)
    }
}

fn parse_roles(s: &str) -> StoreResult<BTreeSet<Role>> {
    portcullis_core::role_set(s.split(',').filter(|n| !n.is_empty())).map_err(|e| StoreError::Corrupt(e.to_string()))
}

const USER_COLUMNS: &str = "id, email, roles, disabled, created_at, email_verified";

fn user_from_row(row: &tokio_postgres::Row) -> StoreResult<User> {
    Ok(User {
        id: UserId::from_stored(row.get::<_, &str>(0)),
        email: Email::from_canonical(row.get::<_, &str>(1)),
        roles: parse_roles(row.get(2))?.into(),
        disabled: row.get(3),
        email_verified: row.get(5),
        created_at: Timestamp::from_unix_millis(row.get(4)),
    })
}

fn client_from_row(row: &tokio_postgres::Row) -> StoreResult<Client> {
    ClientRow {
        id: row.get(0),
        name: row.get(1),
        kind: row.get(2),
        secret_hash: row.get(3),
        previous_secret_hash: row.get(4),
        previous_until: row.get(5),
        redirect_uris: row.get(6),
        post_logout_redirect_uris: row.get(7),
        backchannel_logout_uri: row.get(8),
        first_party: row.get(9),
        created_at: row.get(10),
        last_used_at: row.get(11),
    }
    .into_client()
}

#[async_trait]
impl ClientStore for PostgresStore {
    async fn create_client(&self, client: &Client) -> StoreResult<()> {
        let r = ClientRow::of(client);
        self.client()
            .await?
            .execute(
                &format!(
                    "INSERT INTO clients ({CLIENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                ),
                &[
                    &r.id,
                    &r.name,
                    &r.kind,
                    &r.secret_hash,
                    &r.previous_secret_hash,
                    &r.previous_until,
                    &r.redirect_uris,
                    &r.post_logout_redirect_uris,
                    &r.backchannel_logout_uri,
                    &r.first_party,
                    &r.created_at,
                    &r.last_used_at,
                ],
            )
            .await
            .map(drop)
            .map_err(map_pg)
    }

    async fn client(&self, id: &ClientId) -> StoreResult<Option<Client>> {
        let sql = format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE id = $1");
        let row = self.client().await?.query_opt(&sql, &[&id.as_str()]).await.map_err(map_pg)?;
        row.as_ref().map(client_from_row).transpose()
    }

    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        let sql = format!("SELECT {CLIENT_COLUMNS} FROM clients ORDER BY created_at, id");
        let rows = self.client().await?.query(&sql, &[]).await.map_err(map_pg)?;
        rows.iter().map(client_from_row).collect()
    }

    async fn delete_client(&self, id: &ClientId) -> StoreResult<bool> {
        let n =
            self.client().await?.execute("DELETE FROM clients WHERE id = $1", &[&id.as_str()]).await.map_err(map_pg)?;
        Ok(n > 0)
    }

    async fn rotate_client_secret(
        &self,
        id: &ClientId,
        new_hash: SecretHash,
        previous_until: Timestamp,
    ) -> StoreResult<Option<Client>> {
        let sql = format!(
            "UPDATE clients SET previous_secret_hash = secret_hash, previous_until = $2, secret_hash = $3 \
             WHERE id = $1 RETURNING {CLIENT_COLUMNS}"
        );
        let hash = new_hash.0.to_vec();
        let row = self
            .client()
            .await?
            .query_opt(&sql, &[&id.as_str(), &previous_until.unix_millis(), &hash])
            .await
            .map_err(map_pg)?;
        row.as_ref().map(client_from_row).transpose()
    }

    async fn touch_client(&self, id: &ClientId, at: Timestamp) -> StoreResult<()> {
        self.client()
            .await?
            .execute("UPDATE clients SET last_used_at = $2 WHERE id = $1", &[&id.as_str(), &at.unix_millis()])
            .await
            .map(drop)
            .map_err(map_pg)
    }
}

const PASSKEY_COLUMNS: &str = "SELECT id, user_id, name, credential, created_at, last_used_at FROM passkeys";

fn passkey_row(r: &tokio_postgres::Row) -> StoredPasskey {
    StoredPasskey {
        id: r.get(0),
        user_id: UserId::from_stored(r.get::<_, String>(1)),
        name: r.get(2),
        credential: r.get(3),
        created_at: Timestamp::from_unix_millis(r.get(4)),
        last_used_at: r.get::<_, Option<i64>>(5).map(Timestamp::from_unix_millis),
    }
}

#[async_trait]
impl FactorStore for PostgresStore {
    async fn factors(&self, user: &UserId) -> StoreResult<Factors> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT sealed_secret, confirmed, last_step, created_at FROM totp WHERE user_id = $1",
                &[&user.as_str()],
            )
            .await
            .map_err(map_pg)?;
        let totp = row.map(|r| StoredTotp {
            sealed_secret: r.get(0),
            confirmed: r.get(1),
            last_step: r.get::<_, Option<i64>>(2).and_then(|s| u64::try_from(s).ok()),
            created_at: Timestamp::from_unix_millis(r.get(3)),
        });
        let counts = c
            .query_one(
                "SELECT (SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1), (SELECT COUNT(*) FROM passkeys WHERE user_id = $1)",
                &[&user.as_str()],
            )
            .await
            .map_err(map_pg)?;
        let count = |i: usize| u32::try_from(counts.get::<_, i64>(i)).unwrap_or(u32::MAX);
        Ok(Factors { totp, recovery_codes: count(0), passkeys: count(1) })
    }

    async fn begin_totp(&self, user: &UserId, sealed_secret: Vec<u8>, now: Timestamp) -> StoreResult<bool> {
        let n = self
            .client()
            .await?
            .execute(
                "INSERT INTO totp (user_id, sealed_secret, confirmed, last_step, created_at) VALUES ($1, $2, FALSE, NULL, $3)
                 ON CONFLICT (user_id) DO UPDATE SET sealed_secret = $2, created_at = $3 WHERE totp.confirmed = FALSE",
                &[&user.as_str(), &sealed_secret, &now.unix_millis()],
            )
            .await
            .map_err(map_pg)?;
        Ok(n > 0)
    }

    async fn accept_totp_step(&self, user: &UserId, step: u64, confirm: bool) -> StoreResult<bool> {
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        let sql = if confirm {
            "UPDATE totp SET confirmed = TRUE, last_step = $2 WHERE user_id = $1 AND confirmed = FALSE"
        } else {
            "UPDATE totp SET last_step = $2 WHERE user_id = $1 AND confirmed AND (last_step IS NULL OR last_step < $2)"
        };
        let n = self.client().await?.execute(sql, &[&user.as_str(), &step]).await.map_err(map_pg)?;
        Ok(n > 0)
    }

    async fn delete_totp(&self, user: &UserId) -> StoreResult<bool> {
        let n = self
            .client()
            .await?
            .execute("DELETE FROM totp WHERE user_id = $1", &[&user.as_str()])
            .await
            .map_err(map_pg)?;
        Ok(n > 0)
    }

    async fn set_recovery_codes(&self, user: &UserId, hashes: Vec<[u8; 32]>, now: Timestamp) -> StoreResult<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_pg)?;
        tx.execute("DELETE FROM recovery_codes WHERE user_id = $1", &[&user.as_str()]).await.map_err(map_pg)?;
        for hash in &hashes {
            tx.execute(
                "INSERT INTO recovery_codes (user_id, hash, created_at) VALUES ($1, $2, $3)",
                &[&user.as_str(), &&hash[..], &now.unix_millis()],
            )
            .await
            .map_err(map_pg)?;
        }
        tx.commit().await.map_err(map_pg)
    }

    async fn use_recovery_code(&self, user: &UserId, hash: [u8; 32]) -> StoreResult<bool> {
        let n = self
            .client()
            .await?
            .execute("DELETE FROM recovery_codes WHERE user_id = $1 AND hash = $2", &[&user.as_str(), &&hash[..]])
            .await
            .map_err(map_pg)?;
        Ok(n > 0)
    }

    async fn delete_factors(&self, user: &UserId) -> StoreResult<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(map_pg)?;
        let totp = tx.execute("DELETE FROM totp WHERE user_id = $1", &[&user.as_str()]).await.map_err(map_pg)?;
        let codes =
            tx.execute("DELETE FROM recovery_codes WHERE user_id = $1", &[&user.as_str()]).await.map_err(map_pg)?;
        let passkeys =
            tx.execute("DELETE FROM passkeys WHERE user_id = $1", &[&user.as_str()]).await.map_err(map_pg)?;
        tx.commit().await.map_err(map_pg)?;
        Ok(totp + codes + passkeys > 0)
    }

    async fn add_passkey(&self, p: &StoredPasskey) -> StoreResult<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO passkeys (id, user_id, name, credential, created_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6)",
                &[&p.id, &p.user_id.as_str(), &p.name, &p.credential, &p.created_at.unix_millis(), &p.last_used_at.map(Timestamp::unix_millis)],
            )
            .await
            .map(drop)
            .map_err(map_pg)
    }

    async fn passkeys(&self, user: &UserId) -> StoreResult<Vec<StoredPasskey>> {
        let sql = format!("{PASSKEY_COLUMNS} WHERE user_id = $1 ORDER BY created_at, id");
        let rows = self.client().await?.query(&sql, &[&user.as_str()]).await.map_err(map_pg)?;
        Ok(rows.iter().map(passkey_row).collect())
    }

    async fn passkey(&self, id: &str) -> StoreResult<Option<StoredPasskey>> {
        let sql = format!("{PASSKEY_COLUMNS} WHERE id = $1");
        let row = self.client().await?.query_opt(&sql, &[&id]).await.map_err(map_pg)?;
        Ok(row.as_ref().map(passkey_row))
    }

    async fn passkey_used(&self, id: &str, credential: String, now: Timestamp) -> StoreResult<bool> {
        self.client()
            .await?
            .execute(
                "UPDATE passkeys SET credential = $2, last_used_at = $3 WHERE id = $1",
                &[&id, &credential, &now.unix_millis()],
            )
            .await
            .map(|n| n > 0)
            .map_err(map_pg)
    }

    async fn delete_passkey(&self, user: &UserId, id: &str) -> StoreResult<bool> {
        self.client()
            .await?
            .execute("DELETE FROM passkeys WHERE user_id = $1 AND id = $2", &[&user.as_str(), &id])
            .await
            .map(|n| n > 0)
            .map_err(map_pg)
    }

    async fn add_reset_token(
        &self,
        user: &UserId,
        hash: [u8; 32],
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute("DELETE FROM reset_tokens WHERE expires_at <= $1", &[&now.unix_millis()]).await.map_err(map_pg)?;
        c.execute(
            "INSERT INTO reset_tokens (hash, user_id, expires_at) VALUES ($1, $2, $3)",
            &[&&hash[..], &user.as_str(), &expires_at.unix_millis()],
        )
        .await
        .map(drop)
        .map_err(map_pg)
    }

    async fn take_reset_token(&self, hash: [u8; 32], now: Timestamp) -> StoreResult<Option<UserId>> {
        let row = self
            .client()
            .await?
            .query_opt(
                "DELETE FROM reset_tokens WHERE hash = $1 AND expires_at > $2 RETURNING user_id",
                &[&&hash[..], &now.unix_millis()],
            )
            .await
            .map_err(map_pg)?;
        Ok(row.map(|r| UserId::from_stored(r.get::<_, String>(0))))
    }

    async fn delete_reset_tokens(&self, user: &UserId) -> StoreResult<()> {
        self.client()
            .await?
            .execute("DELETE FROM reset_tokens WHERE user_id = $1", &[&user.as_str()])
            .await
            .map(drop)
            .map_err(map_pg)
    }
}

#[async_trait]
impl UserStore for PostgresStore {
    async fn create_user(&self, new: NewUser, now: Timestamp) -> StoreResult<User> {
        let (user, password_hash) = new.into_user(now);
        let client = self.client().await?;
        // The unique constraints on email and its skeleton are the check: no read-then-write.
        client
            .execute(
                "INSERT INTO users (id, email, email_skeleton, password_hash, roles, disabled, created_at, updated_at, \
                 email_verified) VALUES ($1, $2, $3, $4, $5, FALSE, $6, $6, $7)",
                &[
                    &user.id.as_str(),
                    &user.email.as_str(),
                    &user.email.skeleton(),
                    &password_hash.as_phc(),
                    &join_roles(&user.roles),
                    &now.unix_millis(),
                    &user.email_verified,
                ],
            )
            .await
            .map_err(|e| match map_pg(e) {
                StoreError::Duplicate => StoreError::EmailTaken,
                other => other,
            })?;
        Ok(user)
    }

    async fn user(&self, id: &UserId) -> StoreResult<Option<User>> {
        let client = self.client().await?;
        let row = client
            .query_opt(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"), &[&id.as_str()])
            .await
            .map_err(map_pg)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn user_by_email(&self, email: &Email) -> StoreResult<Option<(User, PasswordHash)>> {
        let client = self.client().await?;
        let row = client
            .query_opt(&format!("SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = $1"), &[&email.as_str()])
            .await
            .map_err(map_pg)?;
        row.map(|r| Ok((user_from_row(&r)?, PasswordHash::from_phc(r.get(6))))).transpose()
    }

    async fn password_hash(&self, id: &UserId) -> StoreResult<Option<PasswordHash>> {
        let client = self.client().await?;
        let row =
            client.query_opt("SELECT password_hash FROM users WHERE id = $1", &[&id.as_str()]).await.map_err(map_pg)?;
        Ok(row.map(|r| PasswordHash::from_phc(r.get(0))))
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        let client = self.client().await?;
        let rows = client
            .query(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY created_at, id"), &[])
            .await
            .map_err(map_pg)?;
        rows.iter().map(user_from_row).collect()
    }

    async fn update_user(&self, id: &UserId, update: UserUpdate, now: Timestamp) -> StoreResult<Option<User>> {
        let client = self.client().await?;
        let roles = update.roles.as_ref().map(join_roles);
        let row = client
            .query_opt(
                &format!(
                    "UPDATE users SET roles = COALESCE($2, roles), disabled = COALESCE($3, disabled), \
                     email_verified = COALESCE($5, email_verified), updated_at = $4 WHERE id = $1 RETURNING {USER_COLUMNS}"
                ),
                &[&id.as_str(), &roles, &update.disabled, &now.unix_millis(), &update.email_verified],
            )
            .await
            .map_err(map_pg)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn set_password_hash(&self, id: &UserId, hash: PasswordHash, now: Timestamp) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1",
                &[&id.as_str(), &hash.as_phc(), &now.unix_millis()],
            )
            .await
            .map_err(map_pg)?;
        Ok(n > 0)
    }

    async fn delete_user(&self, id: &UserId) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = client.execute("DELETE FROM users WHERE id = $1", &[&id.as_str()]).await.map_err(map_pg)?;
        Ok(n > 0)
    }

    async fn ping(&self) -> StoreResult<()> {
        self.client().await?.execute("SELECT 1", &[]).await.map(drop).map_err(map_pg)
    }
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT kid, alg, private_key, created_at, retire_at FROM signing_keys ORDER BY created_at DESC, kid DESC",
                &[],
            )
            .await
            .map_err(map_pg)?;
        Ok(rows
            .iter()
            .map(|r| StoredKey {
                kid: r.get(0),
                alg: r.get(1),
                private: r.get(2),
                created_at: Timestamp::from_unix_millis(r.get(3)),
                retire_at: r.get::<_, Option<i64>>(4).map(Timestamp::from_unix_millis),
            })
            .collect())
    }

    async fn add_signing_key(&self, key: StoredKey, retire_others_at: Timestamp) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_pg)?;
        tx.execute(
            "UPDATE signing_keys SET retire_at = $1 WHERE retire_at IS NULL",
            &[&retire_others_at.unix_millis()],
        )
        .await
        .map_err(map_pg)?;
        tx.execute(
            "INSERT INTO signing_keys (kid, alg, private_key, created_at, retire_at) VALUES ($1, $2, $3, $4, $5)",
            &[
                &key.kid,
                &key.alg,
                &key.private,
                &key.created_at.unix_millis(),
                &key.retire_at.map(Timestamp::unix_millis),
            ],
        )
        .await
        .map_err(map_pg)?;
        tx.commit().await.map_err(map_pg)
    }

    async fn secret(&self, name: &str, candidate: Vec<u8>) -> StoreResult<Vec<u8>> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &candidate],
            )
            .await
            .map_err(map_pg)?;
        let row = client.query_one("SELECT value FROM secrets WHERE name = $1", &[&name]).await.map_err(map_pg)?;
        Ok(row.get(0))
    }

    async fn find_secret(&self, name: &str) -> StoreResult<Option<Vec<u8>>> {
        let client = self.client().await?;
        let row = client.query_opt("SELECT value FROM secrets WHERE name = $1", &[&name]).await.map_err(map_pg)?;
        Ok(row.map(|r| r.get(0)))
    }
}

#[async_trait]
impl AuditStore for PostgresStore {
    async fn append(&self, e: &NewAuditEvent) -> StoreResult<()> {
        let client = self.client().await?;
        let st = client
            .prepare_cached(
                "INSERT INTO audit (at, kind, outcome, user_id, actor, ip, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .await
            .map_err(map_pg)?;
        let user = e.user_id.as_ref().map(UserId::as_str);
        client
            .execute(&st, &[&e.at.unix_millis(), &e.kind, &e.outcome, &user, &e.actor, &e.ip, &e.detail])
            .await
            .map_err(map_pg)?;
        Ok(())
    }

    async fn audit_events(&self, q: &AuditQuery) -> StoreResult<Vec<AuditEvent>> {
        let client = self.client().await?;
        let st = client
            .prepare_cached(
                "SELECT id, at, kind, outcome, user_id, actor, ip, detail FROM audit \
                 WHERE ($1::BIGINT IS NULL OR id < $1) AND ($2::TEXT IS NULL OR user_id = $2) \
                 ORDER BY id DESC LIMIT $3",
            )
            .await
            .map_err(map_pg)?;
        let user = q.user_id.as_ref().map(UserId::as_str);
        let rows = client.query(&st, &[&q.before, &user, &i64::from(q.limit)]).await.map_err(map_pg)?;
        Ok(rows
            .iter()
            .map(|r| AuditEvent {
                id: r.get(0),
                event: NewAuditEvent {
                    at: Timestamp::from_unix_millis(r.get(1)),
                    kind: r.get(2),
                    outcome: r.get(3),
                    user_id: r.get::<_, Option<String>>(4).map(UserId::from_stored),
                    actor: r.get(5),
                    ip: r.get(6),
                    detail: r.get(7),
                },
            })
            .collect())
    }

    async fn purge_audit(&self, cutoff: Timestamp) -> StoreResult<u64> {
        let client = self.client().await?;
        client.execute("DELETE FROM audit WHERE at < $1", &[&cutoff.unix_millis()]).await.map_err(map_pg)
    }
}
