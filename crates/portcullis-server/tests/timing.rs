//! Timing parity of failed logins. In a test binary of its own: cargo runs test binaries one
//! after another, so no other test's hashing competes for the CPU while this one measures.

#[path = "it/common/mod.rs"]
mod common;

use std::time::Duration;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn an_unknown_email_costs_as_much_as_a_wrong_password() {
    // Throttling would answer the later attempts 429 before any hashing; it is tested apart.
    let s = TestServer::start_with(|s| s.throttle.enabled = false).await;
    s.register("timing@example.com").await;
    async fn login_time(s: &TestServer, email: &str) -> Duration {
        let started = std::time::Instant::now();
        let res = s.post_json("/v1/login", &json!({"email": email, "password": "wrong password"})).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        started.elapsed()
    }
    // Interleaved, and the fastest of each kept: other tests running beside this one only ever
    // add time, so the minimum is the cleanest view of what the server itself spends.
    let (mut wrong, mut unknown) = (Duration::MAX, Duration::MAX);
    for _ in 0..7 {
        wrong = wrong.min(login_time(&s, "timing@example.com").await);
        unknown = unknown.min(login_time(&s, "nobody-here@example.com").await);
    }
    // Without the dummy hash an unknown email answers in well under a tenth of the time.
    let ratio = unknown.as_secs_f64() / wrong.as_secs_f64();
    assert!((0.5..2.0).contains(&ratio), "unknown {unknown:?} vs wrong password {wrong:?}");
}

#[tokio::test]
async fn forgot_answers_as_fast_for_an_unknown_email() {
    let s = TestServer::start().await;
    s.register("reset-timing@example.com").await;
    async fn forgot_time(s: &TestServer, email: &str) -> Duration {
        let started = std::time::Instant::now();
        let res = s.post_json("/v1/password/forgot", &json!({"email": email})).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        started.elapsed()
    }
    // More rounds than the hour's three links: a throttled account must not answer differently.
    let (mut known, mut unknown) = (Duration::MAX, Duration::MAX);
    for _ in 0..7 {
        known = known.min(forgot_time(&s, "reset-timing@example.com").await);
        unknown = unknown.min(forgot_time(&s, "nobody-here@example.com").await);
    }
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    assert!((0.5..2.0).contains(&ratio), "unknown {unknown:?} vs known {known:?}");
}
