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
    let settings = Settings { data_dir: dir.path().join("data"), ..Settings::default() };
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
