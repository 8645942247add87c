//! One conformance suite, run against every backend, and against the wrappers that stand in
//! front of one: the local session cache, the user cache, and the timing wrapper (`Timed`).
//!
//! Each backend gets a module from `session_store_suite!` (and `user_store_suite!` where it
//! stores users) with a constructor expression; every test in the suite then runs against it.

use std::sync::Arc;
use std::time::Duration;

use portcullis_core::revocation::{Denied, RevocationEvent, RevocationSnapshot};
use portcullis_core::secret::SecretHash;
use portcullis_core::{
    AuthMode, Client, ClientId, ClientInfo, ClientKind, ClientSecret, Email, Grant, PasswordHash, SessionPolicy,
    SessionRecord, SessionToken, SystemClock, Timestamp, UserId, role_set,
};
use portcullis_store::{
    Attempt, AuditQuery, AuditStore, ClientStore, ClusterFeed, FactorStore, FeedItem, KeyStore, NewAuditEvent, NewUser,
    RevocationStore, SessionStore, StoreError, StoreResult, StoredKey, StoredPasskey, Sweep, ThrottleRule,
    ThrottleState, ThrottleStore, UserStore, UserUpdate,
};

/// Far in the future (2096): Redis expires keys by its own clock, so every deadline the tests
/// write must still be ahead of it when they run.
const T0: Timestamp = Timestamp::from_unix_millis(4_000_000_000_000);

fn policy() -> SessionPolicy {
    SessionPolicy {
        idle_timeout: Duration::from_secs(60),
        absolute_timeout: Duration::from_secs(600),
        refresh_ttl: Duration::from_secs(600),
    }
}

fn record_for(user: &UserId, at: Timestamp) -> SessionRecord {
    let client = ClientInfo {
        ip: Some("192.0.2.7".into()),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0".into()),
    };
    policy().new_record(&SessionToken::generate(), user.clone(), AuthMode::Session, at, client)
}

/// A session backend as a node composes it: one object seen through each of its traits, or a
/// wrapper of each (the caches, `Timed`). The session, revocation and throttle suites run on it.
#[derive(Clone)]
pub struct Backend {
    sessions: Arc<dyn SessionStore>,
    revocations: Arc<dyn RevocationStore>,
    throttles: Arc<dyn ThrottleStore>,
    feed: Arc<dyn ClusterFeed>,
    sweep: Arc<dyn Sweep>,
}

fn backend<S>(s: Arc<S>) -> Backend
where
    S: SessionStore + RevocationStore + ThrottleStore + ClusterFeed + Sweep,
{
    Backend { sessions: s.clone(), revocations: s.clone(), throttles: s.clone(), feed: s.clone(), sweep: s }
}

pub async fn session_round_trip(backend: Backend) {
    let store = backend.sessions.clone();
    let user = UserId::generate();
    let r = record_for(&user, T0);
    store.create(&r).await.expect("create");
    assert_eq!(store.get(&r.id).await.expect("get"), Some(r.clone()));
    assert!(matches!(store.create(&r).await, Err(StoreError::Duplicate)));
    let unknown = SessionToken::generate();
    assert_eq!(store.get(unknown.id()).await.expect("get"), None);
    // An application's record keeps its grant, and lists with the user's others.
    let grant = Grant {
        client_id: ClientId::generate(),
        parent: r.id.clone(),
        auth_time: T0,
        scope: "openid email offline_access".into(),
    };
    // An application's record keeps its grant, and a second factor's sign-in its methods.
    let amr = portcullis_core::mfa::Amr::PWD.union(portcullis_core::mfa::Amr::OTP);
    let app = SessionRecord { grant: Some(Box::new(grant)), amr, ..record_for(&user, T0.plus(Duration::from_secs(1))) };
    store.create(&app).await.expect("create");
    assert_eq!(store.get(&app.id).await.expect("get"), Some(app.clone()));
    assert_eq!(store.list_for_user(&user).await.expect("list"), vec![r, app]);
}

pub async fn session_touch_updates_only_use(backend: Backend) {
    let store = backend.sessions.clone();
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
    store.touch(ghost.id(), seen, idle).await.expect("touch unknown");
    assert_eq!(store.get(ghost.id()).await.expect("get"), None);
}

/// A use moves the record's death for the sweep too: swept after its old idle deadline but
/// before the new one it stays (and stays for a later sweep), swept at the new one it goes; a
/// use near or past the absolute deadline never lets it live past that.
pub async fn session_touched_lives_until_its_new_deadline(backend: Backend) {
    let (store, sweep) = (backend.sessions.clone(), backend.sweep.clone());
    let user = UserId::generate();
    let secs = |s: u64| T0.plus(Duration::from_secs(s));
    // Idle 60 s, absolute 600 s; used at T0+50 s, so it idles out at T0+110 s.
    let r = record_for(&user, T0);
    store.create(&r).await.expect("create");
    store.touch(&r.id, secs(50), secs(110)).await.expect("touch");
    for at in [secs(100), secs(109)] {
        assert_eq!(sweep.sweep(at).await.expect("sweep").sessions, 0, "swept at {at:?}");
        let back = store.get(&r.id).await.expect("get").expect("a used session outlives its old deadline");
        assert_eq!(back.idle_expires_at, secs(110));
        assert_eq!(store.list_for_user(&user).await.expect("list").len(), 1);
    }
    // Used again, and again the sweep follows.
    store.touch(&r.id, secs(105), secs(165)).await.expect("touch");
    assert_eq!(sweep.sweep(secs(160)).await.expect("sweep").sessions, 0);
    assert!(store.get(&r.id).await.expect("get").is_some());
    assert_eq!(sweep.sweep(secs(165)).await.expect("sweep").sessions, 1, "gone at its idle deadline");
    assert_eq!(store.get(&r.id).await.expect("get"), None);
    assert!(store.list_for_user(&user).await.expect("list").is_empty());

    // Used 10 s before its absolute deadline with a full idle timeout: it dies at the absolute
    // deadline all the same. (The policy clamps the idle deadline; the store must not need it.)
    let late = record_for(&user, T0);
    store.create(&late).await.expect("create");
    for (seen, idle) in [(secs(40), secs(100)), (secs(90), secs(150))] {
        store.touch(&late.id, seen, idle).await.expect("touch");
    }
    let touched_past = record_for(&user, T0);
    store.create(&touched_past).await.expect("create");
    store.touch(&touched_past.id, secs(590), secs(650)).await.expect("touch");
    assert_eq!(sweep.sweep(secs(149)).await.expect("sweep").sessions, 0);
    assert_eq!(store.list_for_user(&user).await.expect("list").len(), 2);
    assert_eq!(sweep.sweep(secs(150)).await.expect("sweep").sessions, 1, "the first at its idle deadline");
    assert_eq!(store.get(&late.id).await.expect("get"), None);
    assert_eq!(sweep.sweep(secs(599)).await.expect("sweep").sessions, 0);
    assert!(store.get(&touched_past.id).await.expect("get").is_some());
    // A use written after the absolute deadline does not bring it back either.
    store.touch(&touched_past.id, secs(601), secs(661)).await.expect("touch");
    assert_eq!(sweep.sweep(secs(602)).await.expect("sweep").sessions, 1, "never past its absolute deadline");
    assert_eq!(store.get(&touched_past.id).await.expect("get"), None);
    assert!(store.list_for_user(&user).await.expect("list").is_empty());
}

pub async fn session_per_user_index(backend: Backend) {
    let store = backend.sessions.clone();
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
    assert_eq!(ids(store.list_for_user(&bob).await.expect("list")), vec![b1.id.clone()]);

    assert!(store.delete(&a2.id).await.expect("delete"));
    assert!(!store.delete(&a2.id).await.expect("delete again"));
    assert_eq!(ids(store.list_for_user(&alice).await.expect("list")), vec![a1.id.clone(), a3.id.clone()]);

    // End all but one.
    assert_eq!(store.delete_for_user(&alice, Some(&a3.id)).await.expect("end others"), 1);
    assert_eq!(ids(store.list_for_user(&alice).await.expect("list")), vec![a3.id.clone()]);
    // End all.
    assert_eq!(store.delete_for_user(&alice, None).await.expect("end all"), 1);
    assert!(store.list_for_user(&alice).await.expect("list").is_empty());
    assert_eq!(store.get(&a3.id).await.expect("get"), None);
    // Bob is untouched throughout.
    assert_eq!(store.get(&b1.id).await.expect("get"), Some(b1));
}

pub async fn session_purge_expired(backend: Backend) {
    let store = backend.sessions.clone();
    let user = UserId::generate();
    let old = record_for(&user, T0);
    let fresh = record_for(&user, T0.plus(Duration::from_secs(59)));
    store.create(&old).await.expect("create");
    store.create(&fresh).await.expect("create");
    // At T0+60s the first record's idle deadline has passed, the second's has not.
    let now = T0.plus(Duration::from_secs(60));
    assert_eq!(backend.sweep.sweep(now).await.expect("sweep").sessions, 1);
    assert_eq!(store.get(&old.id).await.expect("get"), None);
    assert!(store.get(&fresh.id).await.expect("get").is_some());
    assert_eq!(store.list_for_user(&user).await.expect("list").len(), 1);
    store.ping().await.expect("ping");
}

pub async fn session_concurrent_creates(backend: Backend) {
    let store = backend.sessions.clone();
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
    assert_eq!(store.delete_for_user(&user, None).await.expect("end all"), 32);
}

/// A rotation whose caller gave up is taken back only while the record is exactly as it left
/// it: the refresh state is restored, and a record that moved on is never touched.
pub async fn session_undo_rotation_restores_only_an_untouched_rotation(backend: Backend) {
    let store = backend.sessions.clone();
    let user = UserId::generate();
    let mut before = record_for(&user, T0);
    before.mode = AuthMode::Jwt;
    store.create(&before).await.expect("create");
    let at = T0.plus(Duration::from_secs(5));
    assert!(store.rotate_refresh(&before.id, 0, SecretHash([7; 32]), at).await.expect("rotate"));
    // Not the rotation that happened: nothing changes.
    assert!(!store.undo_rotation(&before, SecretHash([8; 32]), at).await.expect("undo"));
    assert!(!store.undo_rotation(&before, SecretHash([7; 32]), at.plus(Duration::from_millis(1))).await.expect("undo"));
    assert_eq!(store.get(&before.id).await.expect("get").expect("present").refresh_generation, 1);
    // The rotation that happened: back to where it was.
    assert!(store.undo_rotation(&before, SecretHash([7; 32]), at).await.expect("undo"));
    let back = store.get(&before.id).await.expect("get").expect("present");
    assert_eq!(back.refresh_generation, 0);
    assert!(back.secret_hash.matches(&before.secret_hash));
    assert_eq!(back.rotated_at, before.rotated_at);
    assert_eq!(back.last_seen_at, before.last_seen_at);
    // Undone once only; and after the record moved on, never.
    assert!(!store.undo_rotation(&before, SecretHash([7; 32]), at).await.expect("undo"));
    assert!(store.rotate_refresh(&before.id, 0, SecretHash([7; 32]), at).await.expect("rotate"));
    assert!(store.rotate_refresh(&before.id, 1, SecretHash([9; 32]), at).await.expect("rotate"));
    assert!(!store.undo_rotation(&before, SecretHash([7; 32]), at).await.expect("undo"));
    assert_eq!(store.get(&before.id).await.expect("get").expect("present").refresh_generation, 2);
}

pub async fn session_refresh_rotation_has_one_winner(backend: Backend) {
    let store = backend.sessions.clone();
    let user = UserId::generate();
    let mut r = record_for(&user, T0);
    r.mode = AuthMode::Jwt;
    store.create(&r).await.expect("create");
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let store = Arc::clone(&store);
        let id = r.id.clone();
        tasks.push(tokio::spawn(async move {
            store.rotate_refresh(&id, 0, SecretHash([i; 32]), T0.plus(Duration::from_secs(1))).await
        }));
    }
    let mut winners = 0;
    for t in tasks {
        if t.await.expect("join").expect("rotate") {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "exactly one concurrent rotation wins");
    let back = store.get(&r.id).await.expect("get").expect("present");
    assert_eq!(back.refresh_generation, 1);
    assert_eq!(back.rotated_at, Some(T0.plus(Duration::from_secs(1))));
    assert_eq!(back.last_seen_at, T0.plus(Duration::from_secs(1)));
    assert!(!back.secret_hash.matches(&r.secret_hash));
    // A stale generation never rotates; the next one does.
    assert!(!store.rotate_refresh(&r.id, 0, SecretHash([99; 32]), T0).await.expect("rotate"));
    assert!(store.rotate_refresh(&r.id, 1, SecretHash([98; 32]), T0).await.expect("rotate"));
    let back = store.get(&r.id).await.expect("get").expect("present");
    assert_eq!(back.refresh_generation, 2);
    assert!(back.secret_hash.matches(&SecretHash([98; 32])));
    let ghost = SessionToken::generate();
    assert!(!store.rotate_refresh(ghost.id(), 0, SecretHash([1; 32]), T0).await.expect("rotate unknown"));
}

/// What a node writes back to a store that lost its data is kept, and never lowers what the
/// store has.
pub async fn revocations_restored_from_a_replica_are_kept_and_never_lowered(backend: Backend) {
    let store = backend.revocations.clone();
    let user = UserId::generate();
    let later = T0.plus(Duration::from_secs(120));
    store
        .revoke(&RevocationEvent::Deny { what: Denied::Session("s-later".into()), until: later })
        .await
        .expect("revoke");
    let missing = RevocationSnapshot {
        denied: vec![
            (Denied::Token("j-restored".into()), T0.plus(Duration::from_secs(60))),
            (Denied::Session("s-later".into()), T0.plus(Duration::from_secs(30))),
        ],
        not_before: vec![(user.clone(), T0)],
    };
    store.restore(&missing).await.expect("restore");
    let snap = store.snapshot(T0).await.expect("snapshot");
    assert!(snap.denied.contains(&(Denied::Token("j-restored".into()), T0.plus(Duration::from_secs(60)))));
    assert!(snap.denied.contains(&(Denied::Session("s-later".into()), later)), "a later lapse is kept");
    assert!(snap.not_before.contains(&(user, T0)));
}

pub async fn revocations_persist_publish_and_lapse(backend: Backend) {
    let store = backend.revocations.clone();
    let mut feed = backend.feed.subscribe();
    let user = UserId::generate();
    let until = T0.plus(Duration::from_secs(60));
    let deny = RevocationEvent::Deny { what: Denied::Token("j1".into()), until };
    let epoch = RevocationEvent::NotBefore { user: user.clone(), at: T0 };
    store.revoke(&deny).await.expect("deny");
    store.revoke(&epoch).await.expect("epoch");
    assert_eq!(feed.recv().await.expect("event"), FeedItem::Event(deny.clone()));
    assert_eq!(feed.recv().await.expect("event"), FeedItem::Event(epoch.clone()));
    // Entries only ever extend; an older epoch does not move it back.
    store
        .revoke(&RevocationEvent::NotBefore { user: user.clone(), at: T0.plus(Duration::from_secs(5)) })
        .await
        .expect("epoch");
    store.revoke(&RevocationEvent::NotBefore { user: user.clone(), at: T0 }).await.expect("epoch");
    store
        .revoke(&RevocationEvent::Deny { what: Denied::Session("s1".into()), until: T0.plus(Duration::from_secs(10)) })
        .await
        .expect("deny");
    let snap = store.snapshot(T0).await.expect("snapshot");
    let mut denied = snap.denied.clone();
    denied.sort_by_key(|(d, _)| d.key());
    assert_eq!(
        denied,
        vec![(Denied::Token("j1".into()), until), (Denied::Session("s1".into()), T0.plus(Duration::from_secs(10)))]
    );
    assert_eq!(snap.not_before, vec![(user.clone(), T0.plus(Duration::from_secs(5)))]);
    // Lapsed entries leave the snapshot and are swept.
    let later = T0.plus(Duration::from_secs(30));
    assert_eq!(store.snapshot(later).await.expect("snapshot").denied, vec![(Denied::Token("j1".into()), until)]);
    assert_eq!(backend.sweep.sweep(later).await.expect("sweep").revocations, 1);
    assert_eq!(store.snapshot(T0).await.expect("snapshot").denied.len(), 1);
}

pub async fn keys_rotate_and_secrets_are_created_once(store: Arc<dyn KeyStore>) {
    assert!(store.signing_keys().await.expect("keys").is_empty());
    let key = |kid: &str, at: Timestamp| StoredKey {
        kid: kid.into(),
        alg: "EdDSA".into(),
        private: vec![1, 2, 3],
        created_at: at,
        retire_at: None,
    };
    store.add_signing_key(key("k1", T0), T0).await.expect("add");
    let later = T0.plus(Duration::from_secs(10));
    store.add_signing_key(key("k2", later), later.plus(Duration::from_secs(900))).await.expect("add");
    let keys = store.signing_keys().await.expect("keys");
    assert_eq!(keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(), ["k2", "k1"]);
    assert_eq!(keys[0].retire_at, None);
    assert_eq!(keys[1].retire_at, Some(later.plus(Duration::from_secs(900))));
    assert_eq!(keys[1].private, vec![1, 2, 3]);
    assert!(!format!("{:?}", keys[1]).contains("[1, 2, 3]"), "Debug must not print the private key");

    assert_eq!(store.find_secret("refresh").await.expect("find"), None);
    let first = store.secret("refresh", vec![7; 32]).await.expect("secret");
    assert_eq!(first, vec![7; 32]);
    assert_eq!(store.secret("refresh", vec![8; 32]).await.expect("secret"), vec![7; 32]);
    assert_eq!(store.find_secret("refresh").await.expect("find"), Some(vec![7; 32]));
}

fn new_user(email: &str) -> NewUser {
    NewUser {
        email: Email::parse(email).expect("valid email"),
        password_hash: PasswordHash::from_phc("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".into()),
        roles: role_set([]).expect("roles"),
        email_verified: true,
    }
}

pub async fn users_round_trip(store: Arc<dyn UserStore>) {
    let created = store.create_user(new_user("Alice@Example.com"), T0).await.expect("create");
    assert_eq!(created.email.as_str(), "alice@example.com");
    assert!(created.has_role("user"));
    assert!(!created.disabled);
    assert_eq!(store.user(&created.id).await.expect("get"), Some(created.clone()));
    let (by_email, hash) = store
        .user_by_email(&Email::parse("alice@example.com").expect("valid"))
        .await
        .expect("by email")
        .expect("present");
    assert_eq!(by_email, created);
    assert!(hash.as_phc().starts_with("$argon2id$"));
    assert_eq!(store.user(&UserId::generate()).await.expect("get"), None);
    assert_eq!(store.user_by_email(&Email::parse("nobody@example.com").expect("valid")).await.expect("get"), None);
    store.ping().await.expect("ping");
}

pub async fn users_email_and_lookalikes_are_unique(store: Arc<dyn UserStore>) {
    store.create_user(new_user("alice@example.com"), T0).await.expect("create");
    for dup in ["ALICE@example.com", "\u{0430}lice@example.com", "alice@examp1e.com"] {
        let err = store.create_user(new_user(dup), T0).await.expect_err(dup);
        assert!(matches!(err, StoreError::EmailTaken), "{dup}: {err:?}");
    }
    assert_eq!(store.list_users().await.expect("list").len(), 1);
}

pub async fn users_update_and_password(store: Arc<dyn UserStore>) {
    let a = store.create_user(new_user("a@example.com"), T0).await.expect("create");
    let b = store.create_user(new_user("b@example.com"), T0.plus(Duration::from_secs(1))).await.expect("create");
    let listed: Vec<_> = store.list_users().await.expect("list").into_iter().map(|u| u.id).collect();
    assert_eq!(listed, vec![a.id.clone(), b.id.clone()]);

    let later = T0.plus(Duration::from_secs(5));
    let updated = store
        .update_user(
            &a.id,
            UserUpdate { roles: Some(role_set(["admin"]).expect("roles")), ..UserUpdate::default() },
            later,
        )
        .await
        .expect("update")
        .expect("present");
    assert!(updated.is_admin());
    assert!(!updated.disabled);
    let updated = store
        .update_user(&a.id, UserUpdate { disabled: Some(true), ..UserUpdate::default() }, later)
        .await
        .expect("update")
        .expect("present");
    assert!(updated.is_admin() && updated.disabled);
    assert_eq!(store.user(&a.id).await.expect("get"), Some(updated));
    assert_eq!(store.update_user(&UserId::generate(), UserUpdate::default(), later).await.expect("update"), None);

    let new_hash = PasswordHash::from_phc("$argon2id$v=19$m=19456,t=2,p=1$bmV3c2FsdA$bmV3aGFzaA".into());
    assert!(store.set_password_hash(&b.id, new_hash.clone(), later).await.expect("set"));
    assert_eq!(store.password_hash(&b.id).await.expect("get"), Some(new_hash));
    assert!(
        !store.set_password_hash(&UserId::generate(), PasswordHash::from_phc("x".into()), later).await.expect("set")
    );
    // b's other fields are unchanged.
    assert!(!store.user(&b.id).await.expect("get").expect("present").is_admin());
}

/// An account made unverified reads back so by id, by email and in the list, until it is
/// marked verified; other changes leave the mark alone.
pub async fn users_email_verification_is_kept(store: Arc<dyn UserStore>) {
    let unverified = NewUser { email_verified: false, ..new_user("new@example.com") };
    let user = store.create_user(unverified, T0).await.expect("create");
    assert!(!user.email_verified);
    assert_eq!(store.user(&user.id).await.expect("get"), Some(user.clone()));
    let email = Email::parse("new@example.com").expect("email");
    assert!(!store.user_by_email(&email).await.expect("by email").expect("present").0.email_verified);
    assert!(!store.list_users().await.expect("list")[0].email_verified);
    let later = T0.plus(Duration::from_secs(5));
    let disabled = UserUpdate { disabled: Some(true), ..UserUpdate::default() };
    assert!(!store.update_user(&user.id, disabled, later).await.expect("update").expect("present").email_verified);
    let verify = UserUpdate { email_verified: Some(true), ..UserUpdate::default() };
    let verified = store.update_user(&user.id, verify, later).await.expect("update").expect("present");
    assert!(verified.email_verified && verified.disabled);
    assert_eq!(store.user_by_email(&email).await.expect("by email").expect("present").0, verified);
}

/// A deleted account is gone by id and by email, once, and its email can be registered again.
pub async fn users_delete_frees_the_email(store: Arc<dyn UserStore>) {
    let gone = store.create_user(new_user("gone@example.com"), T0).await.expect("create");
    let kept = store.create_user(new_user("kept@example.com"), T0).await.expect("create");
    assert!(store.delete_user(&gone.id).await.expect("delete"));
    assert!(!store.delete_user(&gone.id).await.expect("delete again"));
    assert_eq!(store.user(&gone.id).await.expect("get"), None);
    let email = Email::parse("gone@example.com").expect("email");
    assert!(store.user_by_email(&email).await.expect("by email").is_none());
    assert_eq!(store.list_users().await.expect("list").len(), 1);
    assert!(store.user(&kept.id).await.expect("get").is_some());
    let again = store.create_user(new_user("gone@example.com"), T0).await.expect("the email is free again");
    assert_ne!(again.id, gone.id);
}

/// Clients round-trip with every field, list oldest first, rotate with an overlap, record
/// their use, and are removed once.
pub async fn clients_register_rotate_and_remove(store: Arc<dyn ClientStore>) {
    let (mut oidc, secret) = Client::new("grafana".into(), ClientKind::Confidential, T0);
    oidc.redirect_uris = vec!["https://grafana.example/login/generic_oauth".into(), "http://localhost:3000/cb".into()];
    oidc.post_logout_redirect_uris = vec!["https://grafana.example/".into()];
    oidc.backchannel_logout_uri = Some("https://grafana.example/bcl".into());
    oidc.first_party = true;
    let secret = secret.expect("a confidential client has a secret");
    store.create_client(&oidc).await.expect("create");
    assert!(matches!(store.create_client(&oidc).await, Err(StoreError::Duplicate)));
    let (service, _) = Client::new("billing".into(), ClientKind::Service, T0.plus(Duration::from_secs(1)));
    store.create_client(&service).await.expect("create");
    let (public, none) = Client::new("spa".into(), ClientKind::Public, T0.plus(Duration::from_secs(2)));
    assert!(none.is_none());
    store.create_client(&public).await.expect("create");
    assert_eq!(store.client(&oidc.id).await.expect("get"), Some(oidc.clone()));
    assert_eq!(store.client(&public.id).await.expect("get"), Some(public.clone()));
    let listed: Vec<ClientId> = store.list_clients().await.expect("list").into_iter().map(|c| c.id).collect();
    assert_eq!(listed, [oidc.id.clone(), service.id.clone(), public.id.clone()]);

    let next = ClientSecret::generate();
    let until = T0.plus(Duration::from_secs(3600));
    let rotated = store.rotate_client_secret(&oidc.id, next.hash(), until).await.expect("rotate").expect("exists");
    assert!(rotated.secret_matches(next.expose(), T0) && rotated.secret_matches(secret.expose(), T0));
    assert!(!rotated.secret_matches(secret.expose(), until));
    assert_eq!(store.client(&oidc.id).await.expect("get"), Some(rotated));
    let ghost = ClientId::generate();
    assert_eq!(store.rotate_client_secret(&ghost, next.hash(), until).await.expect("rotate"), None);

    let used = T0.plus(Duration::from_secs(60));
    store.touch_client(&service.id, used).await.expect("touch");
    store.touch_client(&ghost, used).await.expect("touching nothing is harmless");
    assert_eq!(store.client(&service.id).await.expect("get").expect("exists").last_used_at, Some(used));

    assert!(store.delete_client(&service.id).await.expect("delete"));
    assert!(!store.delete_client(&service.id).await.expect("delete again"));
    assert_eq!(store.client(&service.id).await.expect("get"), None);
    assert_eq!(store.list_clients().await.expect("list").len(), 2);
}

/// A store of users and their second factors (one backend, both traits).
type FactorBackend = (Arc<dyn UserStore>, Arc<dyn FactorStore>);

/// An authenticator is enrolled, confirmed once, accepts each later step once and never an
/// earlier one; recovery codes are replaced as a set and used once; everything goes with a
/// reset and with the user.
pub async fn factors_enrol_accept_once_and_go_with_the_user((users, store): FactorBackend) {
    let user = users.create_user(new_user("mfa@example.com"), T0).await.expect("create").id;
    assert_eq!(store.factors(&user).await.expect("factors"), portcullis_store::Factors::default());
    assert!(store.begin_totp(&user, vec![1; 40], T0).await.expect("begin"));
    assert!(!store.accept_totp_step(&user, 10, false).await.expect("accept"), "not confirmed yet");
    // A second enrolment before confirmation replaces the first.
    assert!(store.begin_totp(&user, vec![2; 40], T0).await.expect("begin again"));
    let pending = store.factors(&user).await.expect("factors").totp.expect("pending");
    assert_eq!((pending.sealed_secret, pending.confirmed, pending.last_step), (vec![2; 40], false, None));
    assert!(store.accept_totp_step(&user, 10, true).await.expect("confirm"));
    assert!(!store.accept_totp_step(&user, 11, true).await.expect("confirm again"), "confirmed once");
    assert!(!store.begin_totp(&user, vec![3; 40], T0).await.expect("begin"), "a confirmed one stays");
    assert!(!store.accept_totp_step(&user, 10, false).await.expect("accept"), "the confirming step is used");
    assert!(store.accept_totp_step(&user, 11, false).await.expect("accept"));
    assert!(!store.accept_totp_step(&user, 11, false).await.expect("accept"), "a step is accepted once");
    assert!(!store.accept_totp_step(&user, 9, false).await.expect("accept"), "never an earlier one");
    let totp = store.factors(&user).await.expect("factors").totp.expect("confirmed");
    assert_eq!((totp.sealed_secret, totp.confirmed, totp.last_step), (vec![2; 40], true, Some(11)));
    // Two nodes racing for one step: one wins.
    let (a, b) = tokio::join!(store.accept_totp_step(&user, 12, false), store.accept_totp_step(&user, 12, false));
    assert_eq!([a.expect("a"), b.expect("b")].iter().filter(|w| **w).count(), 1);

    let first: Vec<[u8; 32]> = (0..10u8).map(|i| [i; 32]).collect();
    store.set_recovery_codes(&user, first.clone(), T0).await.expect("codes");
    assert_eq!(store.factors(&user).await.expect("factors").recovery_codes, 10);
    assert!(store.use_recovery_code(&user, first[3]).await.expect("use"));
    assert!(!store.use_recovery_code(&user, first[3]).await.expect("use again"), "once");
    assert_eq!(store.factors(&user).await.expect("factors").recovery_codes, 9);
    let other = users.create_user(new_user("other@example.com"), T0).await.expect("create").id;
    assert!(!store.use_recovery_code(&other, first[4]).await.expect("use"), "not another user's");
    let second: Vec<[u8; 32]> = (20..30u8).map(|i| [i; 32]).collect();
    store.set_recovery_codes(&user, second.clone(), T0).await.expect("new set");
    assert!(!store.use_recovery_code(&user, first[4]).await.expect("use"), "the old set is void");
    assert!(store.use_recovery_code(&user, second[0]).await.expect("use"));

    assert!(store.delete_totp(&user).await.expect("delete"));
    assert!(!store.delete_totp(&user).await.expect("delete again"));
    assert!(store.delete_factors(&user).await.expect("reset"), "the codes were left");
    assert!(!store.delete_factors(&user).await.expect("reset again"));
    assert_eq!(store.factors(&user).await.expect("factors"), portcullis_store::Factors::default());
    // Deleting the user deletes their factors.
    assert!(store.begin_totp(&other, vec![4; 40], T0).await.expect("begin"));
    store.set_recovery_codes(&other, first, T0).await.expect("codes");
    assert!(users.delete_user(&other).await.expect("delete user"));
    assert_eq!(store.factors(&other).await.expect("factors"), portcullis_store::Factors::default());
}

/// A password-reset token works once, for its user, until it expires; a user's tokens can be
/// forgotten together, and go with the user.
pub async fn reset_tokens_work_once_until_they_expire((users, store): FactorBackend) {
    let ada = users.create_user(new_user("reset@example.com"), T0).await.expect("create").id;
    let bob = users.create_user(new_user("reset2@example.com"), T0).await.expect("create").id;
    let later = T0.plus(Duration::from_secs(1800));
    store.add_reset_token(&ada, [1; 32], later, T0).await.expect("add");
    store.add_reset_token(&ada, [2; 32], later, T0).await.expect("add");
    store.add_reset_token(&bob, [3; 32], later, T0).await.expect("add");
    assert_eq!(store.take_reset_token([9; 32], T0).await.expect("take"), None, "an unknown token");
    assert_eq!(store.take_reset_token([1; 32], T0).await.expect("take"), Some(ada.clone()));
    assert_eq!(store.take_reset_token([1; 32], T0).await.expect("take"), None, "once");
    assert_eq!(store.take_reset_token([3; 32], later).await.expect("take"), None, "expired at its deadline");
    store.delete_reset_tokens(&ada).await.expect("forget");
    assert_eq!(store.take_reset_token([2; 32], T0).await.expect("take"), None, "forgotten with the others");
    store.add_reset_token(&bob, [4; 32], later, T0).await.expect("add");
    assert!(users.delete_user(&bob).await.expect("delete"));
    assert_eq!(store.take_reset_token([4; 32], T0).await.expect("take"), None, "gone with the user");
}

/// Passkeys: one credential id in the whole store, listed per user oldest first, updated on
/// use, removed only by their owner, counted among the factors, and gone with the factors or
/// the user.
pub async fn passkeys_are_unique_listed_updated_and_removed((users, store): FactorBackend) {
    let ada = users.create_user(new_user("keys@example.com"), T0).await.expect("create").id;
    let bob = users.create_user(new_user("keys2@example.com"), T0).await.expect("create").id;
    let key = |id: &str, user: &UserId, at: Timestamp| StoredPasskey {
        id: id.into(),
        user_id: user.clone(),
        name: format!("key {id}"),
        credential: format!("{{\"id\":\"{id}\"}}"),
        created_at: at,
        last_used_at: None,
    };
    let later = T0.plus(Duration::from_secs(60));
    store.add_passkey(&key("b", &ada, later)).await.expect("add");
    store.add_passkey(&key("a", &ada, T0)).await.expect("add");
    store.add_passkey(&key("c", &bob, T0)).await.expect("add");
    let dup = store.add_passkey(&key("a", &bob, T0)).await;
    assert!(matches!(dup, Err(StoreError::Duplicate)), "{dup:?}");
    let listed: Vec<String> = store.passkeys(&ada).await.expect("list").into_iter().map(|k| k.id).collect();
    assert_eq!(listed, ["a", "b"], "oldest first, only hers");
    assert_eq!(store.factors(&ada).await.expect("factors").passkeys, 2);
    assert_eq!(store.passkey("c").await.expect("get"), Some(key("c", &bob, T0)));
    assert_eq!(store.passkey("nope").await.expect("get"), None);
    assert!(store.passkey_used("a", "{\"counter\":5}".into(), later).await.expect("use"));
    let used = store.passkey("a").await.expect("get").expect("there");
    assert_eq!((used.credential.as_str(), used.last_used_at), ("{\"counter\":5}", Some(later)));
    assert!(!store.passkey_used("nope", "{}".into(), later).await.expect("use"));
    assert!(!store.delete_passkey(&bob, "a").await.expect("delete"), "not his");
    assert!(store.delete_passkey(&ada, "a").await.expect("delete"));
    assert!(!store.delete_passkey(&ada, "a").await.expect("delete"), "already gone");
    assert!(store.delete_factors(&ada).await.expect("delete factors"), "b was a factor");
    assert_eq!(store.factors(&ada).await.expect("factors").passkeys, 0);
    assert!(users.delete_user(&bob).await.expect("delete"));
    assert_eq!(store.passkey("c").await.expect("get"), None, "gone with the user");
}

fn throttle_rule() -> ThrottleRule {
    ThrottleRule {
        free: 2,
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(4),
        window: Duration::from_secs(60),
    }
}

fn admitted(attempt: Attempt) -> ThrottleState {
    match attempt {
        Attempt::Admitted(st) => st,
        Attempt::Refused { until } => panic!("refused until {until:?}"),
    }
}

pub async fn throttle_counts_delays_and_forgets(backend: Backend) {
    let store = backend.throttles.clone();
    let rule = throttle_rule();
    let key = format!("acct:{}", UserId::generate());
    let other = format!("acct:{}", UserId::generate());
    assert_eq!(store.throttle_state(&key, T0).await.expect("state"), None);
    // Two free attempts, then waits of 1 s, 2 s, 4 s, and 4 s again (the cap).
    let mut now = T0;
    for (n, delay) in [(1, 0), (2, 1), (3, 2), (4, 4), (5, 4)] {
        let st = admitted(store.begin_attempt(&key, &rule, now).await.expect("attempt"));
        assert_eq!(st.failures, n);
        assert_eq!(st.blocked_until, now.plus(Duration::from_secs(delay)), "attempt {n}");
        assert_eq!(st.blocked_at(now).is_some(), delay > 0);
        assert_eq!(store.throttle_state(&key, now).await.expect("state"), Some(st));
        if delay > 0 {
            // While it waits, an attempt is refused and not counted.
            let early = now.plus(Duration::from_millis(999));
            let refused = store.begin_attempt(&key, &rule, early).await.expect("attempt");
            assert_eq!(refused, Attempt::Refused { until: st.blocked_until });
            assert_eq!(store.throttle_state(&key, early).await.expect("state"), Some(st), "nothing counted");
        }
        now = st.blocked_until;
        assert_eq!(st.blocked_at(now), None, "the wait ends at blocked_until");
    }
    assert_eq!(store.throttle_state(&other, now).await.expect("state"), None, "keys are separate");
    // Giving an attempt back: one failure fewer, and the wait the rest impose from the last one.
    let st = store.throttle_state(&key, now).await.expect("state").expect("on record");
    store.refund_attempt(&key, &rule, now).await.expect("refund");
    let back = store.throttle_state(&key, now).await.expect("state").expect("on record");
    assert_eq!(back.failures, st.failures - 1);
    assert_eq!(back.blocked_until, st.last_failure_at.plus(Duration::from_secs(4)));
    // A window without failures forgets them.
    let later = now.plus(Duration::from_secs(61));
    assert_eq!(store.throttle_state(&key, later).await.expect("state"), None);
    assert_eq!(admitted(store.begin_attempt(&key, &rule, later).await.expect("attempt")).failures, 1);
    // The last failure given back leaves nothing on record.
    store.refund_attempt(&key, &rule, later).await.expect("refund");
    assert_eq!(store.throttle_state(&key, later).await.expect("state"), None);
    store.refund_attempt(&key, &rule, later).await.expect("a refund of nothing is harmless");
    // A success clears the key.
    store.begin_attempt(&key, &rule, later).await.expect("attempt");
    store.clear_failures(&key).await.expect("clear");
    assert_eq!(store.throttle_state(&key, later).await.expect("state"), None);
    // Sweeping forgets entries that expired, and keeps live ones.
    store.begin_attempt(&other, &rule, later).await.expect("attempt");
    backend.sweep.sweep(later.plus(Duration::from_secs(1))).await.expect("sweep");
    assert!(store.throttle_state(&other, later).await.expect("state").is_some());
    backend.sweep.sweep(later.plus(Duration::from_secs(120))).await.expect("sweep");
    assert_eq!(store.throttle_state(&other, later.plus(Duration::from_secs(120))).await.expect("state"), None);
}

/// A burst of parallel attempts is admitted exactly as far as the same attempts one after
/// another: the free ones, and no more.
pub async fn throttle_parallel_attempts_pass_only_the_free_ones(backend: Backend) {
    let store = backend.throttles.clone();
    let rule = throttle_rule();
    let key = format!("ip:{}", UserId::generate());
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = Arc::clone(&store);
            let key = key.clone();
            tokio::spawn(async move { store.begin_attempt(&key, &rule, T0).await.expect("attempt") })
        })
        .collect();
    let mut counted = Vec::new();
    for t in tasks {
        match t.await.expect("join") {
            Attempt::Admitted(st) => counted.push(st.failures),
            Attempt::Refused { until } => assert_eq!(until, T0.plus(rule.base_delay)),
        }
    }
    counted.sort_unstable();
    assert_eq!(counted, [1, 2], "the two free attempts, each counted once");
    assert_eq!(store.throttle_state(&key, T0).await.expect("state").expect("on record").failures, 2);
}

/// Attempts made together reach the store in any order, each with the time its node read a
/// moment before: within the free allowance every one is admitted, whatever the order (a free
/// attempt's zero wait, ending at its own time, once refused the attempts that read the clock
/// just before it), and every one given back leaves nothing on record, as logins that succeed.
pub async fn throttle_attempts_in_any_order_within_the_free_ones_are_admitted(backend: Backend) {
    let store = backend.throttles.clone();
    let rule = ThrottleRule { free: 6, ..throttle_rule() };
    let ms = |n: u64| T0.plus(Duration::from_millis(n));
    let key = format!("i:{}", UserId::generate());
    for (n, at) in [4, 1, 3, 0, 2].into_iter().enumerate() {
        let st = admitted(store.begin_attempt(&key, &rule, ms(at)).await.expect("attempt"));
        assert_eq!(st.failures, u32::try_from(n + 1).expect("small"), "the attempt made at +{at} ms");
        assert_eq!(st.last_failure_at, ms(4), "time on a key never runs backwards");
        assert_eq!(store.throttle_state(&key, ms(4)).await.expect("state"), Some(st));
    }
    // The sixth is admitted with a wait from the latest time, and one older than it still waits.
    let sixth = admitted(store.begin_attempt(&key, &rule, ms(1)).await.expect("attempt"));
    assert_eq!(sixth.blocked_until, ms(4).plus(rule.base_delay));
    assert_eq!(
        store.begin_attempt(&key, &rule, ms(2)).await.expect("attempt"),
        Attempt::Refused { until: sixth.blocked_until }
    );
    // Concurrent sign-ins that all succeed: each counts, then gives its attempt back.
    let key = format!("i:{}", UserId::generate());
    let tasks: Vec<_> = (0..5u64)
        .map(|i| {
            let (store, key) = (Arc::clone(&store), key.clone());
            tokio::spawn(async move {
                let attempt = store.begin_attempt(&key, &rule, ms(i * 3 % 5)).await.expect("attempt");
                store.refund_attempt(&key, &rule, ms(5)).await.expect("refund");
                attempt
            })
        })
        .collect();
    for t in tasks {
        admitted(t.await.expect("join"));
    }
    assert_eq!(store.throttle_state(&key, ms(5)).await.expect("state"), None);
}

fn audit_event(at: Timestamp, kind: &str, user: Option<&UserId>) -> NewAuditEvent {
    NewAuditEvent {
        at,
        kind: kind.into(),
        outcome: "success".into(),
        user_id: user.cloned(),
        actor: None,
        ip: Some("192.0.2.7".into()),
        detail: Some("via test".into()),
    }
}

pub async fn audit_appends_pages_and_filters(store: Arc<dyn AuditStore>) {
    let (a, b) = (UserId::generate(), UserId::generate());
    let kinds = ["login", "logout", "login", "password_change", "login"];
    for (i, kind) in kinds.iter().enumerate() {
        let user = if i % 2 == 0 { &a } else { &b };
        let at = T0.plus(Duration::from_secs(i as u64));
        store.append(&audit_event(at, kind, Some(user))).await.expect("append");
    }
    store.append(&audit_event(T0.plus(Duration::from_secs(9)), "key_rotation", None)).await.expect("append");
    let page = store.audit_events(&AuditQuery { limit: 4, ..AuditQuery::default() }).await.expect("list");
    assert_eq!(page.len(), 4);
    assert_eq!(page[0].event, audit_event(T0.plus(Duration::from_secs(9)), "key_rotation", None), "newest first");
    assert!(page.windows(2).all(|w| w[0].id > w[1].id));
    let rest = store
        .audit_events(&AuditQuery { before: page.last().map(|e| e.id), limit: 4, ..AuditQuery::default() })
        .await
        .expect("list");
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[1].event, audit_event(T0, "login", Some(&a)), "the oldest comes last, unchanged");
    let query = AuditQuery { user_id: Some(a.clone()), limit: 10, ..AuditQuery::default() };
    let of_a = store.audit_events(&query).await.expect("list");
    assert_eq!(of_a.len(), 3);
    assert!(of_a.iter().all(|e| e.event.user_id.as_ref() == Some(&a)));
    // Purging drops what is older than the cutoff only.
    assert_eq!(store.purge_audit(T0.plus(Duration::from_secs(2))).await.expect("purge"), 2);
    let left = store.audit_events(&AuditQuery { limit: 10, ..AuditQuery::default() }).await.expect("list");
    assert_eq!(left.len(), 4);
}

macro_rules! audit_store_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;
            tests!($make; audit_appends_pages_and_filters);
        }
    };
}

/// Every session, revocation and throttle test, on a [`Backend`].
macro_rules! backend_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;
            tests!($make;
                session_round_trip, session_touch_updates_only_use, session_touched_lives_until_its_new_deadline,
                session_per_user_index,
                session_purge_expired, session_concurrent_creates, session_refresh_rotation_has_one_winner,
                session_undo_rotation_restores_only_an_untouched_rotation,
                revocations_persist_publish_and_lapse,
                revocations_restored_from_a_replica_are_kept_and_never_lowered,
                throttle_counts_delays_and_forgets, throttle_parallel_attempts_pass_only_the_free_ones,
                throttle_attempts_in_any_order_within_the_free_ones_are_admitted);
        }
    };
}

/// One test per name, each on a fresh store from `$make`.
macro_rules! tests {
    ($make:expr; $($test:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                // `None`: the backend's program is not installed (and not required).
                let Some((store, _guard)) = $make.await else { return };
                super::$test(store).await;
            }
        )*
    };
}

macro_rules! user_store_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;
            tests!($make;
                users_round_trip, users_email_and_lookalikes_are_unique, users_update_and_password,
                users_delete_frees_the_email, users_email_verification_is_kept);
        }
    };
}

macro_rules! key_store_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;
            tests!($make; keys_rotate_and_secrets_are_created_once);
        }
    };
}

/// Pages of two entries: every snapshot the suite reads on Redis crosses pages.
fn small_pages() -> portcullis_store::redis::RedisOptions {
    portcullis_store::redis::RedisOptions { snapshot_page: 2, ..Default::default() }
}

async fn redis() -> Option<(portcullis_store::redis::RedisStore, portcullis_lab::Redis)> {
    let server = portcullis_lab::require("redis conformance", portcullis_lab::Redis::start())?;
    let store = portcullis_store::redis::RedisStore::connect_with(&server.url(), Arc::new(SystemClock), small_pages())
        .await
        .expect("connect");
    // The feed connects in the background; wait (bounded) so events published by the test
    // are not missed.
    for _ in 0..200 {
        if portcullis_store::ClusterFeed::feed_status(&store).connected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Some((store, server))
}

/// When Redis will expire `key` (ms), -1 for never, -2 when there is no such key.
async fn pexpiretime(store: &portcullis_store::redis::RedisStore, key: &str) -> i64 {
    store.command(redis::cmd("PEXPIRETIME").arg(key)).await.expect("pexpiretime")
}

/// What Redis holds for one session: its record's `PEXPIRETIME`, its score in the expiry
/// index, and whether the user's index lists it.
async fn redis_session_state(
    store: &portcullis_store::redis::RedisStore,
    r: &SessionRecord,
) -> (Option<Timestamp>, Option<Timestamp>, bool) {
    let keys = portcullis_store::redis::RedisStore::session_keys(&r.id, &r.user_id);
    let expires = pexpiretime(store, &keys.record).await;
    let score: Option<f64> =
        store.command(redis::cmd("ZSCORE").arg(keys.expiry).arg(r.id.as_str())).await.expect("zscore");
    let listed: bool =
        store.command(redis::cmd("SISMEMBER").arg(&keys.user_index).arg(r.id.as_str())).await.expect("sismember");
    #[allow(clippy::cast_possible_truncation)]
    let score = score.map(|s| Timestamp::from_unix_millis(s as i64));
    ((expires > 0).then(|| Timestamp::from_unix_millis(expires)), score, listed)
}

/// Every script's answer is held against what it stored: the record's expiry and its entry in
/// the expiry index agree after a login, a use, a rotation and its undoing; a deletion and a
/// sweep leave nothing behind; a throttle counter expires when its state says.
pub async fn redis_stored_state_follows_every_write(store: Arc<portcullis_store::redis::RedisStore>) {
    let user = UserId::generate();
    let secs = |s: u64| T0.plus(Duration::from_secs(s));
    let mut r = record_for(&user, T0);
    r.mode = AuthMode::Jwt;
    store.create(&r).await.expect("create");
    assert_eq!(redis_session_state(&store, &r).await, (Some(secs(60)), Some(secs(60)), true), "created");
    store.touch(&r.id, secs(30), secs(90)).await.expect("touch");
    assert_eq!(redis_session_state(&store, &r).await, (Some(secs(90)), Some(secs(90)), true), "used");
    // A use whose write arrives after a later one's: the record takes what it is told, the
    // index never moves back, so it never says the record dies before it does.
    store.touch(&r.id, secs(20), secs(80)).await.expect("touch");
    let (expires, score, _) = redis_session_state(&store, &r).await;
    assert_eq!((expires, score), (Some(secs(80)), Some(secs(90))));
    store.touch(&r.id, secs(560), secs(620)).await.expect("touch");
    assert_eq!(redis_session_state(&store, &r).await, (Some(secs(600)), Some(secs(600)), true), "absolute");
    // Rotation and its undoing change the refresh state, not when the record dies.
    assert!(store.rotate_refresh(&r.id, 0, SecretHash([5; 32]), secs(561)).await.expect("rotate"));
    let rotated = store.get(&r.id).await.expect("get").expect("present");
    assert_eq!((rotated.refresh_generation, rotated.rotated_at), (1, Some(secs(561))));
    assert_eq!(redis_session_state(&store, &r).await, (Some(secs(600)), Some(secs(600)), true), "rotated");
    let before = SessionRecord { last_seen_at: secs(560), idle_expires_at: secs(600), ..r.clone() };
    assert!(store.undo_rotation(&before, SecretHash([5; 32]), secs(561)).await.expect("undo"));
    assert_eq!(store.get(&r.id).await.expect("get").expect("present").refresh_generation, 0);
    assert_eq!(redis_session_state(&store, &r).await, (Some(secs(600)), Some(secs(600)), true), "undone");
    // Deleted: the record, its index entry and its expiry entry are gone.
    assert!(store.delete(&r.id).await.expect("delete"));
    assert_eq!(redis_session_state(&store, &r).await, (None, None, false), "deleted");
    // Swept: likewise.
    let swept = record_for(&user, T0);
    store.create(&swept).await.expect("create");
    assert_eq!(store.sweep(secs(60)).await.expect("sweep").sessions, 1);
    assert_eq!(redis_session_state(&store, &swept).await, (None, None, false), "swept");

    // An early entry in the expiry index (earlier versions wrote `1` after a use) costs no
    // live session: the sweep keeps the record and moves the entry to its real deadline.
    let kept = record_for(&user, T0);
    store.create(&kept).await.expect("create");
    store.touch(&kept.id, secs(50), secs(110)).await.expect("touch");
    let keys = portcullis_store::redis::RedisStore::session_keys(&kept.id, &user);
    let _: i64 = store.command(redis::cmd("ZADD").arg(keys.expiry).arg(1).arg(kept.id.as_str())).await.expect("zadd");
    assert_eq!(store.sweep(secs(100)).await.expect("sweep").sessions, 0);
    assert_eq!(redis_session_state(&store, &kept).await, (Some(secs(110)), Some(secs(110)), true), "repaired");
    assert_eq!(store.sweep(secs(110)).await.expect("sweep").sessions, 1);

    // A throttle counter expires when the state it answered says, and a refund keeps that.
    let rule = throttle_rule();
    let key = format!("acct:{}", UserId::generate());
    let counter = portcullis_store::redis::RedisStore::throttle_counter_key(&key);
    let first = admitted(store.begin_attempt(&key, &rule, T0).await.expect("attempt"));
    assert_eq!(pexpiretime(&store, &counter).await, first.expires_at.unix_millis());
    let second = admitted(store.begin_attempt(&key, &rule, secs(1)).await.expect("attempt"));
    assert_eq!((second.failures, pexpiretime(&store, &counter).await), (2, second.expires_at.unix_millis()));
    store.refund_attempt(&key, &rule, secs(1)).await.expect("refund");
    assert_eq!(store.throttle_state(&key, secs(1)).await.expect("state").map(|s| s.failures), Some(1));
    assert_eq!(pexpiretime(&store, &counter).await, second.expires_at.unix_millis());
    store.refund_attempt(&key, &rule, secs(1)).await.expect("refund");
    assert_eq!(pexpiretime(&store, &counter).await, -2, "the last failure given back deletes the counter");
}

/// A deny-list far larger than one command could read within the response timeout is read
/// whole, in pages: with a timeout that a single read of the whole set cannot meet (shown
/// first, on a connection of its own), a node still loads every entry, among them a run of
/// entries with one lapse time longer than a page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_snapshot_of_a_large_deny_list_is_read_in_pages_within_a_tight_timeout() {
    let Some((store, server)) = redis().await else { return };
    let entries = 200_000u64;
    let until = |i: u64| T0.plus(Duration::from_millis(if i.is_multiple_of(2) { 3_600_000 } else { i }));
    let denied: Vec<_> = (0..entries).map(|i| (Denied::Token(format!("jti-{i:08}")), until(i))).collect();
    store.restore(&RevocationSnapshot { denied, not_before: vec![(UserId::generate(), T0)] }).await.expect("seed");
    let url = server.url();
    let options =
        portcullis_store::redis::RedisOptions { response_timeout: Duration::from_millis(100), snapshot_page: 1000 };
    let connect = || portcullis_store::redis::RedisStore::connect_with(&url, Arc::new(SystemClock), options);
    let whole: StoreResult<Vec<(String, f64)>> = connect()
        .await
        .expect("connect")
        .command(redis::cmd("ZRANGE").arg("pc:{revocations}:deny").arg(0).arg(-1).arg("WITHSCORES"))
        .await;
    assert!(matches!(whole, Err(StoreError::Unavailable(_))), "the whole set in one read must not fit the timeout");
    // Redis runs one command at a time: once it answers a PING, it is done with that read.
    SessionStore::ping(&store).await.expect("ping");
    let snap = connect().await.expect("connect").snapshot(T0).await.expect("the snapshot is read in pages");
    let mut read: Vec<(String, Timestamp)> = snap.denied.iter().map(|(d, t)| (d.key(), *t)).collect();
    read.sort_unstable();
    read.dedup();
    assert_eq!(read.len(), usize::try_from(entries).expect("small"), "every entry once");
    for (i, (key, at)) in (0..entries).zip(&read) {
        assert_eq!((key.as_str(), *at), (format!("jti:jti-{i:08}").as_str(), until(i)));
    }
    assert_eq!(snap.not_before.len(), 1);
}

macro_rules! redis_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;
            tests!($make; redis_stored_state_follows_every_write);
        }
    };
}

async fn redis_arc() -> Option<(Arc<portcullis_store::redis::RedisStore>, portcullis_lab::Redis)> {
    redis().await.map(|(s, g)| (Arc::new(s), g))
}

async fn redis_cluster_arc() -> Option<(Arc<portcullis_store::redis::RedisStore>, portcullis_lab::RedisCluster)> {
    redis_cluster().await.map(|(s, g)| (Arc::new(s), g))
}

async fn redis_sentinel_arc() -> Option<(Arc<portcullis_store::redis::RedisStore>, portcullis_lab::RedisSentinel)> {
    redis_sentinel().await.map(|(s, g)| (Arc::new(s), g))
}

redis_suite!(redis_stored_state, redis_arc());
redis_suite!(redis_cluster_stored_state, redis_cluster_arc());
redis_suite!(redis_sentinel_stored_state, redis_sentinel_arc());

async fn sqlite_keys() -> Option<(Arc<dyn KeyStore>, tempfile::TempDir)> {
    let (s, d) = sqlite().await;
    Some((Arc::new(s), d))
}

async fn postgres() -> Option<(portcullis_store::postgres::PostgresStore, portcullis_lab::Postgres)> {
    let server = portcullis_lab::require("postgres conformance", portcullis_lab::Postgres::start())?;
    let store = portcullis_store::postgres::PostgresStore::connect(&server.url()).await.expect("connect");
    Some((store, server))
}

async fn postgres_users() -> Option<(Arc<dyn UserStore>, portcullis_lab::Postgres)> {
    postgres().await.map(|(s, g)| (Arc::new(s) as Arc<dyn UserStore>, g))
}

async fn postgres_keys() -> Option<(Arc<dyn KeyStore>, portcullis_lab::Postgres)> {
    postgres().await.map(|(s, g)| (Arc::new(s) as Arc<dyn KeyStore>, g))
}

async fn redis_cluster() -> Option<(portcullis_store::redis::RedisStore, portcullis_lab::RedisCluster)> {
    let cluster = portcullis_lab::require("redis cluster conformance", portcullis_lab::RedisCluster::start())?;
    let store = portcullis_store::redis::RedisStore::connect_with(&cluster.url(), Arc::new(SystemClock), small_pages())
        .await
        .expect("connect");
    for _ in 0..200 {
        if portcullis_store::ClusterFeed::feed_status(&store).connected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Some((store, cluster))
}

async fn redis_sentinel() -> Option<(portcullis_store::redis::RedisStore, portcullis_lab::RedisSentinel)> {
    let group = portcullis_lab::require("redis sentinel conformance", portcullis_lab::RedisSentinel::start())?;
    let store = portcullis_store::redis::RedisStore::connect_with(&group.url(), Arc::new(SystemClock), small_pages())
        .await
        .expect("connect");
    for _ in 0..200 {
        if portcullis_store::ClusterFeed::feed_status(&store).connected {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Some((store, group))
}

async fn memory() -> Option<(Backend, ())> {
    Some((backend(Arc::new(portcullis_store::memory::MemorySessionStore::new())), ()))
}

async fn sqlite_backend() -> Option<(Backend, tempfile::TempDir)> {
    let (s, d) = sqlite().await;
    Some((backend(Arc::new(s)), d))
}

async fn redis_backend() -> Option<(Backend, portcullis_lab::Redis)> {
    redis().await.map(|(s, g)| (backend(Arc::new(s)), g))
}

async fn redis_cluster_backend() -> Option<(Backend, portcullis_lab::RedisCluster)> {
    redis_cluster().await.map(|(s, g)| (backend(Arc::new(s)), g))
}

async fn redis_sentinel_backend() -> Option<(Backend, portcullis_lab::RedisSentinel)> {
    redis_sentinel().await.map(|(s, g)| (backend(Arc::new(s)), g))
}

async fn sqlite() -> (portcullis_store::sqlite::SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = portcullis_store::sqlite::SqliteStore::open(dir.path().join("test.db")).await.expect("open");
    (store, dir)
}

async fn sqlite_users() -> Option<(Arc<dyn UserStore>, tempfile::TempDir)> {
    let (s, d) = sqlite().await;
    Some((Arc::new(s), d))
}

async fn sqlite_audit() -> Option<(Arc<dyn AuditStore>, tempfile::TempDir)> {
    let (s, d) = sqlite().await;
    Some((Arc::new(s), d))
}

async fn postgres_audit() -> Option<(Arc<dyn AuditStore>, portcullis_lab::Postgres)> {
    postgres().await.map(|(s, g)| (Arc::new(s) as Arc<dyn AuditStore>, g))
}

backend_suite!(memory_backend, memory());
backend_suite!(sqlite_backend, sqlite_backend());
backend_suite!(redis_backend, redis_backend());
backend_suite!(redis_cluster_backend, redis_cluster_backend());
backend_suite!(redis_sentinel_backend, redis_sentinel_backend());
user_store_suite!(sqlite_user_store, sqlite_users());
user_store_suite!(postgres_user_store, postgres_users());
key_store_suite!(sqlite_key_store, sqlite_keys());
key_store_suite!(postgres_key_store, postgres_keys());
audit_store_suite!(sqlite_audit_store, sqlite_audit());
audit_store_suite!(postgres_audit_store, postgres_audit());

#[tokio::test]
async fn sqlite_survives_reopening_and_keeps_its_file_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("p.db");
    let user;
    let record;
    {
        let store = portcullis_store::sqlite::SqliteStore::open(&path).await.expect("open");
        user = store.create_user(new_user("keep@example.com"), T0).await.expect("create");
        record = record_for(&user.id, T0);
        SessionStore::create(&store, &record).await.expect("create session");
    }
    let store = portcullis_store::sqlite::SqliteStore::open(&path).await.expect("reopen");
    assert_eq!(store.user(&user.id).await.expect("get"), Some(user));
    assert_eq!(SessionStore::get(&store, &record.id).await.expect("get"), Some(record));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "database file mode {mode:o}");
    }
}

#[tokio::test]
async fn postgres_nodes_starting_together_migrate_once() {
    let Some(server) = portcullis_lab::require("postgres migrations", portcullis_lab::Postgres::start()) else {
        return;
    };
    let url = server.url();
    let (a, b, c) = tokio::join!(
        portcullis_store::postgres::PostgresStore::connect(&url),
        portcullis_store::postgres::PostgresStore::connect(&url),
        portcullis_store::postgres::PostgresStore::connect(&url),
    );
    let (a, b) = (a.expect("first node"), b.expect("second node"));
    c.expect("third node");
    let user = a.create_user(new_user("shared@example.com"), T0).await.expect("create");
    assert_eq!(b.user(&user.id).await.expect("get"), Some(user));
}

// The wrappers a server puts in front of a backend behave as the backend does.

/// Counts what a `Timed` store reports.
#[derive(Default)]
struct Counting {
    operations: std::sync::atomic::AtomicU64,
    failures: std::sync::atomic::AtomicU64,
}

impl portcullis_store::timed::StoreObserver for Counting {
    fn operation(&self, _store: &'static str, _op: &'static str, _elapsed: Duration, failed: bool) {
        self.operations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

fn timed<T: ?Sized>(inner: Arc<T>) -> Arc<portcullis_store::timed::Timed<T>> {
    portcullis_store::timed::Timed::new(inner, Arc::new(Counting::default()), "test")
}

/// The session cache over the memory backend: reads, writes and sweeps go through the cache.
async fn cached_sessions() -> Option<(Backend, ())> {
    let memory = Arc::new(portcullis_store::memory::MemorySessionStore::new());
    let cache = Arc::new(portcullis_store::cache::CachedSessions::new(
        memory.clone(),
        memory.clone(),
        Some(memory.clone()),
        Duration::from_secs(3600),
        Arc::new(SystemClock),
    ));
    Some((Backend { sessions: cache.clone(), sweep: cache, ..backend(memory) }, ()))
}

async fn cached_users() -> Option<(Arc<dyn UserStore>, tempfile::TempDir)> {
    let (s, d) = sqlite().await;
    let cache =
        portcullis_store::cache::CachedUsers::new(Arc::new(s), Duration::from_secs(3600), Arc::new(SystemClock));
    Some((Arc::new(cache), d))
}

/// Every trait of the memory backend, each through its own `Timed`.
async fn timed_backend() -> Option<(Backend, ())> {
    let memory = Arc::new(portcullis_store::memory::MemorySessionStore::new());
    let b = backend(memory);
    let backend = Backend {
        sessions: timed(b.sessions),
        revocations: timed(b.revocations),
        throttles: timed(b.throttles),
        feed: timed(b.feed),
        sweep: timed(b.sweep),
    };
    Some((backend, ()))
}

async fn timed_users() -> Option<(Arc<dyn UserStore>, tempfile::TempDir)> {
    let (s, d) = sqlite().await;
    let inner: Arc<dyn UserStore> = Arc::new(s);
    Some((timed(inner), d))
}

async fn timed_keys() -> Option<(Arc<dyn KeyStore>, tempfile::TempDir)> {
    let (s, d) = sqlite().await;
    let inner: Arc<dyn KeyStore> = Arc::new(s);
    Some((timed(inner), d))
}

async fn timed_audit() -> Option<(Arc<dyn AuditStore>, tempfile::TempDir)> {
    let (s, d) = sqlite().await;
    let inner: Arc<dyn AuditStore> = Arc::new(s);
    Some((timed(inner), d))
}

backend_suite!(cached_session_backend, cached_sessions());
user_store_suite!(cached_user_store, cached_users());
backend_suite!(timed_backend, timed_backend());
user_store_suite!(timed_user_store, timed_users());
key_store_suite!(timed_key_store, timed_keys());
audit_store_suite!(timed_audit_store, timed_audit());

/// `Timed` reports every operation once, and an answer of "no" (a duplicate, a missing record)
/// is not a failure of the store.
#[tokio::test]
async fn timed_reports_every_operation_and_no_refusal_as_a_failure() {
    let counting = Arc::new(Counting::default());
    let inner: Arc<dyn SessionStore> = Arc::new(portcullis_store::memory::MemorySessionStore::new());
    let store = portcullis_store::timed::Timed::new(inner, counting.clone(), "sessions");
    let record = record_for(&UserId::generate(), T0);
    store.create(&record).await.expect("create");
    assert!(matches!(store.create(&record).await, Err(StoreError::Duplicate)), "a second create is a duplicate");
    assert!(store.get(&record.id).await.expect("get").is_some());
    assert!(store.delete(&record.id).await.expect("delete"));
    assert!(store.get(&record.id).await.expect("get").is_none());
    let ops = counting.operations.load(std::sync::atomic::Ordering::Relaxed);
    let failures = counting.failures.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((ops, failures), (5, 0));
}

macro_rules! client_store_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;
            tests!($make; clients_register_rotate_and_remove);
        }
    };
}

async fn sqlite_clients() -> Option<(Arc<dyn ClientStore>, tempfile::TempDir)> {
    let (s, d) = sqlite().await;
    Some((Arc::new(s), d))
}

async fn postgres_clients() -> Option<(Arc<dyn ClientStore>, portcullis_lab::Postgres)> {
    postgres().await.map(|(s, g)| (Arc::new(s) as Arc<dyn ClientStore>, g))
}

async fn timed_clients() -> Option<(Arc<dyn ClientStore>, tempfile::TempDir)> {
    let (s, d) = sqlite().await;
    let inner: Arc<dyn ClientStore> = Arc::new(s);
    Some((timed(inner), d))
}

macro_rules! factor_store_suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;
            tests!($make; factors_enrol_accept_once_and_go_with_the_user, reset_tokens_work_once_until_they_expire, passkeys_are_unique_listed_updated_and_removed);
        }
    };
}

async fn sqlite_factors() -> Option<(FactorBackend, tempfile::TempDir)> {
    let (s, d) = sqlite().await;
    let s = Arc::new(s);
    Some(((s.clone(), s), d))
}

async fn postgres_factors() -> Option<(FactorBackend, portcullis_lab::Postgres)> {
    postgres().await.map(|(s, g)| {
        let s = Arc::new(s);
        ((s.clone() as Arc<dyn UserStore>, s as Arc<dyn FactorStore>), g)
    })
}

async fn timed_factors() -> Option<(FactorBackend, tempfile::TempDir)> {
    let (s, d) = sqlite().await;
    let s = Arc::new(s);
    let inner: Arc<dyn FactorStore> = s.clone();
    Some(((s, timed(inner)), d))
}

factor_store_suite!(sqlite_factor_store, sqlite_factors());
factor_store_suite!(postgres_factor_store, postgres_factors());
factor_store_suite!(timed_factor_store, timed_factors());

client_store_suite!(sqlite_client_store, sqlite_clients());
client_store_suite!(postgres_client_store, postgres_clients());
client_store_suite!(timed_client_store, timed_clients());
