//! CPU cost of one request through the whole application (router, middleware, extractors,
//! handler), without sockets: the per-request work `portcullis-bench` measures under load,
//! but repeatable. Run with `cargo bench -p portcullis-server --bench requests`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_core::SystemClock;
use portcullis_core::jwt::Algorithm;
use portcullis_server::settings::Settings;
use portcullis_server::{Server, app};
use tower::ServiceExt;

const PASSWORD: &str = "benchmark password, long enough";

async fn router(dir: &std::path::Path, sessions: &str, alg: Algorithm) -> Option<axum::Router> {
    let mut s = Settings { data_dir: dir.to_owned(), ..Settings::default() };
    s.store.sessions = sessions.into();
    s.jwt.algorithm = alg;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.ok()?;
    let server = Server::with_listener(s, Arc::new(SystemClock), listener).await.ok()?;
    Some(app(server.state().clone()))
}

async fn send(app: &axum::Router, req: Request<Body>) -> axum::response::Response {
    app.clone().oneshot(req).await.unwrap_or_else(|e| match e {})
}

async fn credentials(app: &axum::Router) -> Option<(String, String)> {
    let body = format!(r#"{{"email":"b@example.com","password":"{PASSWORD}"}}"#);
    let post = |path: &str, body: String| {
        Request::post(path).header("content-type", "application/json").body(Body::from(body)).ok()
    };
    send(app, post("/v1/register", body.clone())?).await;
    let res = send(app, post("/v1/login", body.clone())?).await;
    let cookie = res.headers().get("set-cookie")?.to_str().ok()?.split(';').next()?.to_owned();
    let jwt_body = body.replacen('}', r#","mode":"jwt"}"#, 1);
    let res = send(app, post("/v1/login", jwt_body)?).await;
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some((cookie, format!("Bearer {}", v["access_token"].as_str()?)))
}

fn requests(c: &mut Criterion) {
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() else { return };
    let Ok(dir) = tempfile::tempdir() else { return };
    for (name, sessions, alg) in [
        ("memory", "memory", Algorithm::EdDSA),
        ("sqlite", "sqlite", Algorithm::EdDSA),
        ("es256", "memory", Algorithm::ES256),
    ] {
        let Some(app) = rt.block_on(router(&dir.path().join(name), sessions, alg)) else { return };
        let Some((cookie, bearer)) = rt.block_on(credentials(&app)) else { return };
        let get = |path: &str, header: Option<(&str, &str)>| {
            let mut b = Request::get(path);
            if let Some((k, v)) = header {
                b = b.header(k, v);
            }
            b.body(Body::empty()).unwrap_or_default()
        };
        c.bench_function(&format!("{name}: GET /healthz"), |b| {
            b.to_async(&rt).iter(|| send(&app, get("/healthz", None)))
        });
        c.bench_function(&format!("{name}: GET /v1/me, session"), |b| {
            b.to_async(&rt).iter(|| send(&app, get("/v1/me", Some(("cookie", &cookie)))))
        });
        c.bench_function(&format!("{name}: GET /v1/me, JWT {alg} (cached)"), |b| {
            b.to_async(&rt).iter(|| send(&app, get("/v1/me", Some(("authorization", &bearer)))))
        });
    }
}

criterion_group!(benches, requests);
criterion_main!(benches);
