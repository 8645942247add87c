//! The example service and Portcullis working together over real HTTP.

use std::sync::Arc;

use portcullis_core::SystemClock;
use portcullis_server::settings::Settings;
use portcullis_verify::Verifier;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test]
async fn tokens_from_portcullis_open_the_service_and_nothing_else_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut settings = Settings { data_dir: dir.path().join("data"), ..Settings::default() };
    // The administrator below signs in with a password alone: no second factor is required.
    settings.mfa.required_for_roles.clear();
    let portcullis = portcullis_server::spawn::spawn(settings, Arc::new(SystemClock)).await.expect("portcullis");
    let base = portcullis.base.clone();

    let verifier = Verifier::builder(&base).build().expect("verifier");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let service = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, protected_service::app(verifier)).await });

    let c = reqwest::Client::new();
    for email in ["alice@example.com", "root@example.com"] {
        let res = c
            .post(format!("{base}/v1/register"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), 201);
    }
    // The first admin is made outside the API (as `portcullis user add --role admin` does).
    let root = portcullis
        .state
        .service
        .users
        .user_by_email(&portcullis_core::Email::parse("root@example.com").expect("email"))
        .await
        .expect("lookup")
        .expect("user")
        .0;
    portcullis
        .state
        .service
        .update_user(
            portcullis_service::Actor::Cli,
            root.id.as_str(),
            Some(vec!["admin".into()]),
            None,
            &Default::default(),
        )
        .await
        .expect("grant");
    let login = |email: &str| {
        c.post(format!("{base}/v1/login")).json(&json!({"email": email, "password": PASSWORD, "mode": "jwt"})).send()
    };
    let alice: Value = login("alice@example.com").await.expect("send").json().await.expect("json");
    let alice_token = alice["access_token"].as_str().expect("token");

    assert_eq!(c.get(format!("{service}/public")).send().await.expect("send").status(), 200);
    let res = c.get(format!("{service}/hello")).bearer_auth(alice_token).send().await.expect("send");
    assert_eq!(res.status(), 200);
    let hello: Value = res.json().await.expect("json");
    assert_eq!(hello["message"], "hello, alice@example.com");

    // No token, a tampered one, a refresh token: refused the way Portcullis refuses them.
    let res = c.get(format!("{service}/hello")).send().await.expect("send");
    assert_eq!(res.status(), 401);
    let mut tampered = alice_token.to_owned();
    tampered.pop();
    tampered.push(if alice_token.ends_with('A') { 'B' } else { 'A' });
    for bad in [tampered.as_str(), alice["refresh_token"].as_str().expect("rt")] {
        let res = c.get(format!("{service}/hello")).bearer_auth(bad).send().await.expect("send");
        assert_eq!(res.status(), 401);
        assert_eq!(res.headers()["www-authenticate"], "Bearer error=\"invalid_token\"");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
    // The admin route needs the role.
    let res = c.get(format!("{service}/admin/report")).bearer_auth(alice_token).send().await.expect("send");
    assert_eq!(res.status(), 403);
    let root: Value = login("root@example.com").await.expect("send").json().await.expect("json");
    let res = c
        .get(format!("{service}/admin/report"))
        .bearer_auth(root["access_token"].as_str().expect("token"))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.expect("json")["viewer"], "root@example.com");
}

/// Following the revocation feed, the service refuses a token within milliseconds of its
/// logout at Portcullis, and its health check shows the feed.
#[tokio::test]
async fn following_the_feed_a_logout_closes_the_service_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Settings { data_dir: dir.path().join("data"), ..Settings::default() };
    let portcullis = portcullis_server::spawn::spawn(settings, Arc::new(SystemClock)).await.expect("portcullis");
    let base = portcullis.base.clone();
    let registered = portcullis
        .state
        .service
        .register_client(
            portcullis_service::Actor::Cli,
            "example",
            portcullis_core::ClientKind::Service,
            &Default::default(),
        )
        .await
        .expect("register");
    let (id, secret) = (registered.client.id.to_string(), registered.secret.expect("secret").expose().to_owned());
    let verifier = Verifier::builder(&base).follow_revocations(id, secret).build().expect("verifier");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let service = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, protected_service::app(verifier)).await });

    let c = reqwest::Client::new();
    let res = c.post(format!("{base}/v1/register")).json(&json!({"email": "eve@example.com", "password": PASSWORD}));
    assert_eq!(res.send().await.expect("send").status(), 201);
    let login: Value = c
        .post(format!("{base}/v1/login"))
        .json(&json!({"email": "eve@example.com", "password": PASSWORD, "mode": "jwt"}))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let token = login["access_token"].as_str().expect("token").to_owned();
    let health = || async {
        let h: Value = c.get(format!("{service}/healthz")).send().await.expect("send").json().await.expect("json");
        h
    };
    let start = std::time::Instant::now();
    while health().await["revocation_feed"]["connected"] != true {
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "the feed never connected");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let hello = || c.get(format!("{service}/hello")).bearer_auth(&token).send();
    assert_eq!(hello().await.expect("send").status(), 200);
    let res = c.post(format!("{base}/v1/logout")).bearer_auth(&token).send().await.expect("send");
    assert_eq!(res.status(), 204);
    let start = std::time::Instant::now();
    while hello().await.expect("send").status() != 401 {
        assert!(start.elapsed() < std::time::Duration::from_secs(10), "the logout never reached the service");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    eprintln!("the service refused the logged-out token {:?} after the logout", start.elapsed());
}
