//! The verifier against a real Portcullis server: good, tampered and expired tokens, key
//! rotation picked up through an unknown `kid`, and the refetch rate limit.

use std::sync::Arc;
use std::time::Duration;

use portcullis_server::settings::Settings;
use portcullis_server::spawn::{Running, spawn};
use portcullis_token::clock::ManualClock;
use portcullis_token::jwt::Algorithm;
use portcullis_verify::{FeedLoss, Verifier, VerifyError};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

async fn portcullis(dir: &tempfile::TempDir, clock: &ManualClock) -> Running {
    let settings = Settings { data_dir: dir.path().join("data"), ..Settings::default() };
    spawn(settings, Arc::new(clock.clone())).await.expect("portcullis starts")
}

async fn access_token(base: &str, email: &str) -> String {
    let c = reqwest::Client::new();
    let res = c
        .post(format!("{base}/v1/register"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 201);
    let res = c
        .post(format!("{base}/v1/login"))
        .json(&json!({"email": email, "password": PASSWORD, "mode": "jwt"}))
        .send()
        .await
        .expect("send");
    let body: Value = res.json().await.expect("json");
    body["access_token"].as_str().expect("token").to_owned()
}

#[tokio::test]
async fn verifies_tokens_with_the_servers_own_checks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::starting_now();
    let p = portcullis(&dir, &clock).await;
    let token = access_token(&p.base, "v@example.com").await;
    let verifier = Verifier::builder(&p.base).clock(Arc::new(clock.clone())).build().expect("verifier");
    let claims = verifier.verify(&token).await.expect("valid");
    assert_eq!(claims.email, "v@example.com");
    assert_eq!(claims.iss, p.base);
    assert_eq!(verifier.fetch_count().await, 1);
    // Repeats use the held key set.
    verifier.verify(&token).await.expect("valid");
    assert_eq!(verifier.fetch_count().await, 1);

    let mut tampered = token.clone();
    tampered.insert(token.find('.').expect("dot") + 5, 'x');
    assert!(matches!(verifier.verify(&tampered).await, Err(VerifyError::Invalid(_))));
    // Another issuer or audience is refused.
    let other =
        Verifier::builder(&p.base).audience("https://other.example").clock(Arc::new(clock.clone())).build().expect("v");
    assert!(matches!(other.verify(&token).await, Err(VerifyError::Invalid(_))));
    // Expiry follows the clock.
    clock.advance(Duration::from_secs(15 * 60 + 31));
    assert!(matches!(verifier.verify(&token).await, Err(VerifyError::Invalid(_))));
}

#[tokio::test]
async fn rotation_is_picked_up_and_unknown_kids_cannot_flood_the_jwks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::starting_now();
    let p = portcullis(&dir, &clock).await;
    let before = access_token(&p.base, "rot@example.com").await;
    let verifier = Verifier::builder(&p.base)
        .clock(Arc::new(clock.clone()))
        .min_refetch_interval(Duration::from_millis(300))
        .build()
        .expect("verifier");
    verifier.verify(&before).await.expect("valid");
    assert_eq!(verifier.fetch_count().await, 1);

    p.state.service.rotate_keys(Algorithm::ES256, "test").await.expect("rotate");
    let c = reqwest::Client::new();
    let res = c
        .post(format!("{}/v1/login", p.base))
        .json(&json!({"email": "rot@example.com", "password": PASSWORD, "mode": "jwt"}))
        .send()
        .await
        .expect("send");
    let after = res.json::<Value>().await.expect("json")["access_token"].as_str().expect("token").to_owned();
    // The new kid is unknown to the held set: one refetch, then it verifies.
    verifier.verify(&after).await.expect("valid after rotation");
    assert_eq!(verifier.fetch_count().await, 2);
    verifier.verify(&before).await.expect("old tokens still valid");

    // Tokens naming made-up kids cause at most one fetch per interval.
    let (_, rest) = after.split_once('.').expect("dot");
    for i in 0..20 {
        let header = portcullis_token::encoding::b64(
            format!(r#"{{"alg":"ES256","typ":"at+jwt","kid":"made-up-{i}"}}"#).as_bytes(),
        );
        let forged = format!("{header}.{rest}");
        assert!(matches!(verifier.verify(&forged).await, Err(VerifyError::Invalid(_))));
    }
    assert!(verifier.fetch_count().await <= 3, "fetches: {}", verifier.fetch_count().await);
}

#[tokio::test]
async fn an_unreachable_jwks_is_an_error_not_a_pass() {
    let verifier = Verifier::builder("http://127.0.0.1:9").build().expect("verifier");
    assert!(matches!(verifier.verify("a.b.c").await, Err(VerifyError::KeysUnavailable(_))));
    assert!(Verifier::builder("not a url").build().is_err());
}

/// A service client registered on the server: `(client_id, client_secret)`.
async fn service_client(p: &Running, name: &str) -> (String, String) {
    let registered = p
        .state
        .service
        .register_client(
            portcullis_service::Actor::Cli,
            name,
            portcullis_core::ClientKind::Service,
            &Default::default(),
        )
        .await
        .expect("register");
    (registered.client.id.to_string(), registered.secret.expect("secret").expose().to_owned())
}

/// Polls `check` every 10 ms for at most `limit` (a guard against hanging, not a timing claim).
async fn eventually<F: std::future::Future<Output = bool>>(limit: Duration, mut check: impl FnMut() -> F) -> Duration {
    let start = std::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "not reached within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn following_the_feed_refuses_a_logged_out_token_without_asking_per_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::starting_now();
    let p = portcullis(&dir, &clock).await;
    let (id, secret) = service_client(&p, "orders").await;
    let token = access_token(&p.base, "f@example.com").await;
    let verifier = Verifier::builder(&p.base)
        .clock(Arc::new(clock.clone()))
        .follow_revocations(&id, &secret)
        .build()
        .expect("verifier");
    let state = |v: &Verifier| v.feed_state().expect("following");
    eventually(Duration::from_secs(10), || async { state(&verifier).connected }).await;
    verifier.verify(&token).await.expect("valid before the logout");
    let fetches = verifier.fetch_count().await;

    let res =
        reqwest::Client::new().post(format!("{}/v1/logout", p.base)).bearer_auth(&token).send().await.expect("send");
    assert_eq!(res.status(), 204);
    let took = eventually(Duration::from_secs(10), || async {
        matches!(verifier.verify(&token).await, Err(VerifyError::Revoked))
    })
    .await;
    eprintln!("a logout reached the verifier in {took:?}");
    assert_eq!(verifier.fetch_count().await, fetches, "no request to Portcullis per verification");

    // A sign-out everywhere of another user is heard with its lag.
    let other = access_token(&p.base, "g@example.com").await;
    verifier.verify(&other).await.expect("valid");
    let res = reqwest::Client::new()
        .post(format!("{}/v1/logout-all", p.base))
        .bearer_auth(&other)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 204);
    eventually(Duration::from_secs(10), || async {
        matches!(verifier.verify(&other).await, Err(VerifyError::Revoked))
    })
    .await;
    assert!(state(&verifier).last_lag.is_some());

    // Without following, the same token still verifies (the trade-off this feed removes).
    let plain = Verifier::builder(&p.base).clock(Arc::new(clock.clone())).build().expect("verifier");
    plain.verify(&token).await.expect("a plain verifier cannot know");
    assert!(plain.feed_state().is_none());
    // A wrong secret never connects: past the staleness bound, every token is refused.
    let wrong = Verifier::builder(&p.base)
        .clock(Arc::new(clock.clone()))
        .follow_revocations(&id, "wrong")
        .build()
        .expect("verifier");
    let fresh = access_token(&p.base, "h@example.com").await;
    wrong.verify(&fresh).await.expect("within the bound from the start");
    clock.advance(Duration::from_secs(31));
    assert!(matches!(wrong.verify(&fresh).await, Err(VerifyError::FeedLost)));
    assert!(!wrong.feed_state().expect("following").connected);
}

#[tokio::test]
async fn a_lost_feed_refuses_after_the_staleness_bound_or_keeps_accepting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::starting_now();
    let mut p = portcullis(&dir, &clock).await;
    let (id, secret) = service_client(&p, "reports").await;
    let token = access_token(&p.base, "l@example.com").await;
    let build = |policy: FeedLoss| {
        Verifier::builder(&p.base)
            .clock(Arc::new(clock.clone()))
            .follow_revocations(&id, &secret)
            .when_feed_lost(policy)
            .build()
            .expect("verifier")
    };
    let strict = build(FeedLoss::RefuseAfter(Duration::from_secs(30)));
    let lenient = build(FeedLoss::KeepAccepting);
    for v in [&strict, &lenient] {
        eventually(Duration::from_secs(10), || async { v.feed_state().expect("following").connected }).await;
        v.verify(&token).await.expect("valid");
    }
    p.stop().await.expect("stopped");
    for v in [&strict, &lenient] {
        eventually(Duration::from_secs(10), || async { !v.feed_state().expect("following").connected }).await;
        v.verify(&token).await.expect("within the staleness bound");
    }
    clock.advance(Duration::from_secs(31));
    assert!(matches!(strict.verify(&token).await, Err(VerifyError::FeedLost)));
    lenient.verify(&token).await.expect("keeps accepting");
    let lost = strict.feed_state().expect("following").lost_for.expect("lost");
    assert!(lost >= Duration::from_secs(31), "{lost:?}");
}
