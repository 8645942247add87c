//! One conformance suite, run against every backend.
//!
//! Each backend gets a module from `session_store_suite!` (and `user_store_suite!` where it
//! stores users) with a constructor expression; every test in the suite then runs against it.

use std::sync::Arc;
use std::time::Duration;

use portcullis_core::{
    AuthMode, ClientInfo, Email, PasswordHash, SessionPolicy, SessionRecord, SessionToken,
    Timestamp, UserId, role_set,
};
use portcullis_store::{NewUser, SessionStore, StoreError, UserStore, UserUpdate};

const T0: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

fn policy() -> SessionPolicy {
    SessionPolicy {
        idle_timeout: Duration::from_secs(60),
        absolute_timeout: Duration::from_secs(600),
    }
}

fn record_for(user: &UserId, at: Timestamp) -> SessionRecord {
    let client = ClientInfo {
        ip: Some("192.0.2.7".into()),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0".into()),
    };
    policy().new_record(
        &SessionToken::generate(),
        user.clone(),
        AuthMode::Session,
        at,
        client,
    )
}

pub async fn session_round_trip(store: Arc<dyn SessionStore>) {
    let user = UserId::generate();
    let r = record_for(&user, T0);
    store.create(&r).await.expect("create");
    assert_eq!(store.get(&r.id).await.expect("get"), Some(r.clone()));
    assert!(matches!(store.create(&r).await, Err(StoreError::Duplicate)));
    let unknown = SessionToken::generate();
    assert_eq!(store.get(unknown.id()).await.expect("get"), None);
}

pub async fn session_touch_updates_only_use(store: Arc<dyn SessionStore>) {
    let user = UserId::generate();
    let r = record_for(&user, T0);
    store.create(&r).await.expect("create");
    let seen = T0.plus(Duration::from_secs(30));
    let idle = seen.plus(Duration::from_secs(60));
    store.touch(&r.id, seen, idle).await.expect("touch");
    let back = store.get(&r.id).await.expect("get").expect("present");
    assert_eq!(back.last_seen_at, seen);
    assert_eq!(back.idle_expires_at, idle);
    assert_eq!(back.expires_at, r.expires_at);
    assert_eq!(back.created_at, r.created_at);
    assert!(back.secret_hash.matches(&r.secret_hash));
    // Touching a record that does not exist creates nothing.
    let ghost = SessionToken::generate();
    store
        .touch(ghost.id(), seen, idle)
        .await
        .expect("touch unknown");
    assert_eq!(store.get(ghost.id()).await.expect("get"), None);
}

pub async fn session_per_user_index(store: Arc<dyn SessionStore>) {
    let alice = UserId::generate();
    let bob = UserId::generate();
    let a1 = record_for(&alice, T0);
    let a2 = record_for(&alice, T0.plus(Duration::from_secs(1)));
    let a3 = record_for(&alice, T0.plus(Duration::from_secs(2)));
    let b1 = record_for(&bob, T0);
    for r in [&a1, &a2, &a3, &b1] {
        store.create(r).await.expect("create");
    }
    let ids = |v: Vec<SessionRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_for_user(&alice).await.expect("list")),
        vec![a1.id.clone(), a2.id.clone(), a3.id.clone()]
    );
    assert_eq!(
        ids(store.list_for_user(&bob).await.expect("list")),
        vec![b1.id.clone()]
    );

    assert!(store.delete(&a2.id).await.expect("delete"));
    assert!(!store.delete(&a2.id).await.expect("delete again"));
    assert_eq!(
        ids(store.list_for_user(&alice).await.expect("list")),
        vec![a1.id.clone(), a3.id.clone()]
    );

    // End all but one.
    assert_eq!(
        store
            .delete_for_user(&alice, Some(&a3.id))
            .await
            .expect("end others"),
        1
    );
    assert_eq!(
        ids(store.list_for_user(&alice).await.expect("list")),
        vec![a3.id.clone()]
    );
    // End all.
    assert_eq!(
        store.delete_for_user(&alice, None).await.expect("end all"),
        1
    );
    assert!(store.list_for_user(&alice).await.expect("list").is_empty());
    assert_eq!(store.get(&a3.id).await.expect("get"), None);
    // Bob is untouched throughout.
    assert_eq!(store.get(&b1.id).await.expect("get"), Some(b1));
}

pub async fn session_purge_expired(store: Arc<dyn SessionStore>) {
    let user = UserId::generate();
    let old = record_for(&user, T0);
    let fresh = record_for(&user, T0.plus(Duration::from_secs(59)));
    store.create(&old).await.expect("create");
    store.create(&fresh).await.expect("create");
    // At T0+60s the first record's idle deadline has passed, the second's has not.
    let now = T0.plus(Duration::from_secs(60));
    assert_eq!(store.purge_expired(now).await.expect("purge"), 1);
    assert_eq!(store.get(&old.id).await.expect("get"), None);
    assert!(store.get(&fresh.id).await.expect("get").is_some());
    assert_eq!(store.list_for_user(&user).await.expect("list").len(), 1);
    store.ping().await.expect("ping");
}

pub async fn session_concurrent_creates(store: Arc<dyn SessionStore>) {
    let user = UserId::generate();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let store = Arc::clone(&store);
        let r = record_for(&user, T0.plus(Duration::from_millis(i)));
        tasks.push(tokio::spawn(async move { store.create(&r).await }));
    }
    for t in tasks {
        t.await.expect("join").expect("create");
    }
    assert_eq!(store.list_for_user(&user).await.expect("list").len(), 32);
    assert_eq!(
        store.delete_for_user(&user, None).await.expect("end all"),
        32
    );
}

fn new_user(email: &str) -> NewUser {
    NewUser {
        email: Email::parse(email).expect("valid email"),
        password_hash: PasswordHash::from_phc(
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".into(),
        ),
        roles: role_set([]).expect("roles"),
    }
}

pub async fn users_round_trip(store: Arc<dyn UserStore>) {
    let created = store
        .create_user(new_user("Alice@Example.com"), T0)
        .await
        .expect("create");
    assert_eq!(created.email.as_str(), "alice@example.com");
    assert!(created.has_role("user"));
    assert!(!created.disabled);
    assert_eq!(
        store.user(&created.id).await.expect("get"),
        Some(created.clone())
    );
    let (by_email, hash) = store
        .user_by_email(&Email::parse("alice@example.com").expect("valid"))
        .await
        .expect("by email")
        .expect("present");
    assert_eq!(by_email, created);
    assert!(hash.as_phc().starts_with("$argon2id$"));
    assert_eq!(store.user(&UserId::generate()).await.expect("get"), None);
    assert_eq!(
        store
            .user_by_email(&Email::parse("nobody@example.com").expect("valid"))
            .await
            .expect("get"),
        None
    );
    store.ping().await.expect("ping");
}

pub async fn users_email_and_lookalikes_are_unique(store: Arc<dyn UserStore>) {
    store
        .create_user(new_user("alice@example.com"), T0)
        .await
        .expect("create");
    for dup in [
        "ALICE@example.com",
        "\u{0430}lice@example.com",
        "alice@examp1e.com",
    ] {
        let err = store.create_user(new_user(dup), T0).await.expect_err(dup);
        assert!(matches!(err, StoreError::EmailTaken), "{dup}: {err:?}");
    }
    assert_eq!(store.list_users().await.expect("list").len(), 1);
}

pub async fn users_update_and_password(store: Arc<dyn UserStore>) {
    let a = store
        .create_user(new_user("a@example.com"), T0)
        .await
        .expect("create");
    let b = store
        .create_user(new_user("b@example.com"), T0.plus(Duration::from_secs(1)))
        .await
        .expect("create");
    let listed: Vec<_> = store
        .list_users()
        .await
        .expect("list")
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(listed, vec![a.id.clone(), b.id.clone()]);

    let later = T0.plus(Duration::from_secs(5));
    let updated = store
        .update_user(
            &a.id,
            UserUpdate {
                roles: Some(role_set(["admin"]).expect("roles")),
                disabled: None,
            },
            later,
        )
        .await
        .expect("update")
        .expect("present");
    assert!(updated.is_admin());
    assert!(!updated.disabled);
    let updated = store
        .update_user(
            &a.id,
            UserUpdate {
                roles: None,
                disabled: Some(true),
            },
            later,
        )
        .await
        .expect("update")
        .expect("present");
    assert!(updated.is_admin() && updated.disabled);
    assert_eq!(store.user(&a.id).await.expect("get"), Some(updated));
    assert_eq!(
        store
            .update_user(&UserId::generate(), UserUpdate::default(), later)
            .await
            .expect("update"),
        None
    );

    let new_hash =
        PasswordHash::from_phc("$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdA$bmV3aGFzaA".into());
    assert!(
        store
            .set_password_hash(&b.id, new_hash.clone(), later)
            .await
            .expect("set")
    );
    assert_eq!(
        store.password_hash(&b.id).await.expect("get"),
        Some(new_hash)
    );
    assert!(
        !store
            .set_password_hash(
                &UserId::generate(),
                PasswordHash::from_phc("x".into()),
                later
            )
            .await
            .expect("set")
    );
    // b's other fields are unchanged.
    assert!(
        !store
            .user(&b.id)
            .await
            .expect("get")
            .expect("present")
            .is_admin()
    );
}

macro_rules! session_store_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;
            session_store_suite!(@tests $make;
                session_round_trip, session_touch_updates_only_use, session_per_user_index,
                session_purge_expired, session_concurrent_creates);
        }
    };
    (@tests $make:expr; $($test:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let (store, _guard) = $make.await;
                super::$test(store).await;
            }
        )*
    };
}

macro_rules! user_store_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;
            session_store_suite!(@tests $make;
                users_round_trip, users_email_and_lookalikes_are_unique, users_update_and_password);
        }
    };
}

async fn memory() -> (Arc<dyn SessionStore>, ()) {
    (
        Arc::new(portcullis_store::memory::MemorySessionStore::new()),
        (),
    )
}

async fn sqlite() -> (portcullis_store::sqlite::SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = portcullis_store::sqlite::SqliteStore::open(dir.path().join("test.db"))
        .await
        .expect("open");
    (store, dir)
}

async fn sqlite_sessions() -> (Arc<dyn SessionStore>, tempfile::TempDir) {
    let (s, d) = sqlite().await;
    (Arc::new(s), d)
}

async fn sqlite_users() -> (Arc<dyn UserStore>, tempfile::TempDir) {
    let (s, d) = sqlite().await;
    (Arc::new(s), d)
}

session_store_suite!(memory_sessions, memory());
session_store_suite!(sqlite_session_store, sqlite_sessions());
user_store_suite!(sqlite_user_store, sqlite_users());

#[tokio::test]
async fn sqlite_survives_reopening_and_keeps_its_file_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.db");
    let user;
    let record;
    {
        let store = portcullis_store::sqlite::SqliteStore::open(&path)
            .await
            .expect("open");
        user = store
            .create_user(new_user("keep@example.com"), T0)
            .await
            .expect("create");
        record = record_for(&user.id, T0);
        SessionStore::create(&store, &record)
            .await
            .expect("create session");
    }
    let store = portcullis_store::sqlite::SqliteStore::open(&path)
        .await
        .expect("reopen");
    assert_eq!(store.user(&user.id).await.expect("get"), Some(user));
    assert_eq!(
        SessionStore::get(&store, &record.id).await.expect("get"),
        Some(record)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "database file mode {mode:o}");
    }
}
