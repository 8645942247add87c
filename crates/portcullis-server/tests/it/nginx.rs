//! The nginx configurations in deploy/nginx, run for real: round-robin balancing of three nodes
//! (and routing around a dead one), and protecting an application with auth_request.
//!
//! The files are used as shipped; only their addresses are replaced by the test's own.

use std::sync::Arc;

use portcullis_core::SystemClock;
use portcullis_lab::{Nginx, Postgres, Redis, require};
use portcullis_server::settings::Settings;
use portcullis_server::spawn::{Running, spawn};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

fn deploy_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nginx").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `POST url` with a JSON body.
async fn post(c: &reqwest::Client, url: String, body: Value) -> reqwest::Response {
    c.post(url).json(&body).send().await.expect("send")
}

/// A JWT-mode login; the whole answer.
async fn jwt_login(c: &reqwest::Client, url: String, email: &str) -> Value {
    post(c, url, json!({"email": email, "password": PASSWORD, "mode": "jwt"})).await.json().await.expect("json")
}

fn addr(running: &Running) -> String {
    running.base.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn round_robin_over_three_nodes_survives_losing_one() {
    let Some(redis) = require("nginx balancer: redis", Redis::start()) else { return };
    let Some(postgres) = require("nginx balancer: postgres", Postgres::start()) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = Vec::new();
    for i in 0..3 {
        let mut settings = Settings { data_dir: dir.path().join(format!("n{i}")), ..Settings::default() };
        settings.store.users = postgres.url();
        settings.store.sessions = redis.url();
        settings.public_url = Some("http://portcullis.test".parse().expect("url"));
        settings.trusted_proxies = vec!["127.0.0.1".into()];
        nodes.push(spawn(settings, Arc::new(SystemClock)).await.expect("node"));
    }
    let conf = deploy_file("balancer.conf")
        .replace("127.0.0.1:8081", &addr(&nodes[0]))
        .replace("127.0.0.1:8082", &addr(&nodes[1]))
        .replace("127.0.0.1:8083", &addr(&nodes[2]))
        .replace("listen 8080;", "listen 127.0.0.1:{port};");
    let Some(nginx) = require("nginx balancer", Nginx::start(&conf)) else { return };
    let c = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", nginx.url());
    let res = post(&c, url("/v1/register"), json!({"email": "lb@example.com", "password": PASSWORD})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // The client's address as a proxy in front of nginx would report it.
    let res = c
        .post(url("/v1/login"))
        .header("x-forwarded-for", "203.0.113.44")
        .json(&json!({"email": "lb@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = res.headers()["set-cookie"].to_str().expect("ascii").split(';').next().expect("pair").to_owned();
    // nginx appended its peer (127.0.0.1, trusted): the session records the hop before it.
    let sessions: Value =
        c.get(url("/v1/sessions")).header("cookie", &cookie).send().await.expect("send").json().await.expect("json");
    assert_eq!(sessions["sessions"][0]["ip"], "203.0.113.44", "{sessions}");
    // Metrics are not served to the public through the balancer.
    assert_eq!(c.get(url("/metrics")).send().await.expect("send").status(), StatusCode::NOT_FOUND);
    let token = jwt_login(&c, url("/v1/login"), "lb@example.com").await;
    let bearer = format!("Bearer {}", token["access_token"].as_str().expect("token"));
    // Round robin spreads these over every node; each must know the session and the token.
    for _ in 0..9 {
        assert_eq!(c.get(url("/v1/me")).header("cookie", &cookie).send().await.expect("send").status(), StatusCode::OK);
        assert_eq!(
            c.get(url("/v1/me")).header("authorization", &bearer).send().await.expect("send").status(),
            StatusCode::OK
        );
    }
    // One node dies: nginx routes around it and nothing is lost.
    nodes[1].stop().await.expect("node stops");
    for _ in 0..9 {
        assert_eq!(c.get(url("/v1/me")).header("cookie", &cookie).send().await.expect("send").status(), StatusCode::OK);
        assert_eq!(
            c.get(url("/v1/me")).header("authorization", &bearer).send().await.expect("send").status(),
            StatusCode::OK
        );
    }
    let res = post(&c, url("/v1/token/refresh"), json!({"refresh_token": token["refresh_token"]})).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn auth_request_protects_an_application() {
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = Settings { data_dir: dir.path().join("data"), ..Settings::default() };
    let portcullis = spawn(settings, Arc::new(SystemClock)).await.expect("portcullis");
    // The protected application: echoes the identity headers nginx gives it.
    let app = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        axum::Json(
            json!({"user": h("x-portcullis-user"), "email": h("x-portcullis-email"), "roles": h("x-portcullis-roles")}),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app_addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let conf = deploy_file("forward-auth.conf")
        .replace("127.0.0.1:8080", &addr(&portcullis))
        .replace("127.0.0.1:9000", &app_addr)
        .replace("listen 8090;", "listen 127.0.0.1:{port};");
    let Some(nginx) = require("nginx forward auth", Nginx::start(&conf)) else { return };
    let c = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", nginx.url());

    assert_eq!(c.get(url("/dashboard")).send().await.expect("send").status(), StatusCode::UNAUTHORIZED);
    // An API client gets Portcullis' own answer, not nginx's HTML page, whatever its method.
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let res = c.request(method, url("/dashboard")).header("accept", "application/json").send().await.expect("send");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let problem: Value = res.json().await.expect("problem+json");
        assert_eq!(problem["code"], "unauthenticated");
    }
    // A browser is sent to sign in, with the whole address it asked for (every query parameter).
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let asked = url("/reports/2026?x=1&y=2&q=a%20b");
    let res = no_redirects.get(&asked).header("accept", "text/html").send().await.expect("send");
    assert_eq!(res.status(), StatusCode::FOUND);
    let location = res.headers()["location"].to_str().expect("ascii").to_owned();
    let to = reqwest::Url::parse(&nginx.url()).and_then(|base| base.join(&location)).expect("location");
    assert_eq!(to.path(), "/login");
    let back: Vec<(String, String)> = to.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    assert_eq!(back, [("return_to".to_owned(), asked.clone())], "{location}");
    let res = post(&c, url("/v1/register"), json!({"email": "fa@example.com", "password": PASSWORD})).await;
    let user: Value = res.json().await.expect("json");
    let res = post(&c, url("/v1/login"), json!({"email": "fa@example.com", "password": PASSWORD})).await;
    let cookie = res.headers()["set-cookie"].to_str().expect("ascii").split(';').next().expect("pair").to_owned();
    let res = c.get(url("/dashboard")).header("cookie", &cookie).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    let seen: Value = res.json().await.expect("json");
    assert_eq!(seen["user"], user["user"]["id"]);
    assert_eq!(seen["email"], "fa@example.com");
    assert_eq!(seen["roles"], "user");
    // A client cannot smuggle its own identity headers past nginx.
    let res = c
        .get(url("/dashboard"))
        .header("cookie", &cookie)
        .header("x-portcullis-user", "someone-else")
        .header("x-portcullis-roles", "admin")
        .send()
        .await
        .expect("send");
    let seen: Value = res.json().await.expect("json");
    assert_eq!(seen["user"], user["user"]["id"]);
    assert_eq!(seen["roles"], "user");
    // Bearer tokens work through nginx too; after logout the app is closed again.
    let token = jwt_login(&c, url("/v1/login"), "fa@example.com").await;
    let bearer = format!("Bearer {}", token["access_token"].as_str().expect("token"));
    assert_eq!(
        c.get(url("/dashboard")).header("authorization", &bearer).send().await.expect("send").status(),
        StatusCode::OK
    );
    let res = c.post(url("/v1/logout")).header("cookie", &cookie).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        c.get(url("/dashboard")).header("cookie", &cookie).send().await.expect("send").status(),
        StatusCode::UNAUTHORIZED
    );

    // With a role required, a signed-in user without it gets Portcullis' 403.
    let conf = conf_with_role(&deploy_file("forward-auth.conf"), &addr(&portcullis), &app_addr);
    let Some(strict) = require("nginx forward auth with a role", Nginx::start(&conf)) else { return };
    let res = c
        .get(format!("{}/dashboard", strict.url()))
        .header("authorization", &bearer)
        .header("accept", "application/json")
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let problem: Value = res.json().await.expect("problem+json");
    assert_eq!(problem["code"], "forbidden");
}

/// The forward-auth configuration with `?role=admin` on its check.
fn conf_with_role(conf: &str, portcullis: &str, app: &str) -> String {
    let with_role = conf.replace("/v1/verify;", "/v1/verify?role=admin;");
    assert_ne!(with_role, conf, "the shipped configuration names /v1/verify");
    with_role
        .replace("127.0.0.1:8080", portcullis)
        .replace("127.0.0.1:9000", app)
        .replace("listen 8090;", "listen 127.0.0.1:{port};")
}
