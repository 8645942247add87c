//! Throttling, client addresses behind trusted proxies, the audit log, security headers and
//! CORS, against a real server on port 0 with a manual clock.

use std::time::Duration;

use crate::common::{PASSWORD, TestServer, expect_problem};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};

/// A login attempt as if from `ip` (through a trusted proxy at 127.0.0.1).
async fn attempt_from(s: &TestServer, ip: &str, email: &str, password: &str) -> Response {
    s.post("/v1/login")
        .header("x-forwarded-for", ip)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("send")
}

async fn proxied_server() -> TestServer {
    TestServer::start_with(|s| s.trusted_proxies = vec!["127.0.0.1".into()]).await
}

fn retry_after(res: &Response) -> u64 {
    res.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("429 carries Retry-After in seconds")
}

#[tokio::test]
async fn failed_logins_are_slowed_per_account_and_address_and_a_success_clears_them() {
    let s = proxied_server().await;
    s.register("victim@example.com").await;
    let attacker = "198.51.100.1";
    // Five free attempts, then each failure earns a growing wait: 1 s, then 2 s.
    for _ in 0..5 {
        let res = attempt_from(&s, attacker, "victim@example.com", "wrong password").await;
        expect_problem(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    // Refused before the password is even looked at: the right one is refused too.
    let res = attempt_from(&s, attacker, "victim@example.com", PASSWORD).await;
    assert_eq!(retry_after(&res), 1);
    expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts").await;
    s.advance(Duration::from_secs(1));
    expect_problem(
        attempt_from(&s, attacker, "victim@example.com", "wrong again").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    let res = attempt_from(&s, attacker, "victim@example.com", PASSWORD).await;
    assert_eq!(retry_after(&res), 2, "the wait doubles");
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // Meanwhile the owner, elsewhere, is not held up by the attacker's guesses.
    let res = attempt_from(&s, "203.0.113.5", "victim@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK, "another address is not throttled");
    // Once the wait is over the right password works, and clears the account's counters.
    s.advance(Duration::from_secs(2));
    assert_eq!(attempt_from(&s, attacker, "victim@example.com", PASSWORD).await.status(), StatusCode::OK);
    for _ in 0..5 {
        let res = attempt_from(&s, attacker, "victim@example.com", "wrong password").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "free failures again after a success");
    }
}

/// Sends `n` login attempts at once and counts the answers by status.
async fn burst(s: &TestServer, n: usize, attempt: impl Fn(usize) -> (String, String)) -> (usize, usize) {
    let sends = (0..n).map(|i| {
        let (ip, email) = attempt(i);
        async move { attempt_from(s, &ip, &email, "wrong password").await.status() }
    });
    let statuses = futures_util::future::join_all(sends).await;
    let count = |code| statuses.iter().filter(|s| **s == code).count();
    assert_eq!(count(StatusCode::UNAUTHORIZED) + count(StatusCode::TOO_MANY_REQUESTS), n, "{statuses:?}");
    (count(StatusCode::UNAUTHORIZED), count(StatusCode::TOO_MANY_REQUESTS))
}

/// An attempt is counted before its password is checked, so a burst sent all at once gets no
/// further than the same attempts sent one after another. (It may get less far: an attempt
/// refused on one counter holds its count on the others until it gives it back, and a
/// neighbour in the burst can be refused meanwhile. Never further.)
#[tokio::test]
async fn a_parallel_burst_checks_no_more_passwords_than_the_free_allowance() {
    let s = proxied_server().await;
    s.register("victim@example.com").await;
    let (checked, refused) = burst(&s, 40, |_| ("198.51.100.30".into(), "victim@example.com".into())).await;
    assert!((1..=5).contains(&checked), "one account from one address: five free attempts, not {checked}");
    assert_eq!(checked + refused, 40);
    // What the refused attempts had counted on the address's own counter was given back: the
    // address has five failures on record, not twenty, and may still try another account.
    let res = attempt_from(&s, "198.51.100.30", "someone.else@example.com", "wrong password").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // One address trying many accounts at once: the address's twenty.
    let (checked, refused) = burst(&s, 60, |i| ("198.51.100.31".into(), format!("user{i}@example.com"))).await;
    assert!((15..=20).contains(&checked), "one address: twenty free attempts, not {checked}");
    assert_eq!(checked + refused, 60);
}

/// A client that sends a login and hangs up before the answer cannot leave a failure counted
/// against the account: the check runs to the end and a success gives its count back.
#[tokio::test]
async fn logins_whose_clients_hang_up_still_settle_their_count() {
    use tokio::io::AsyncWriteExt;
    let s = proxied_server().await;
    s.register("hangup@example.com").await;
    let body = json!({"email": "hangup@example.com", "password": PASSWORD}).to_string();
    let request = format!(
        "POST /v1/login HTTP/1.1\r\nHost: portcullis.test\r\nX-Forwarded-For: 198.51.100.40\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    for _ in 0..12 {
        let mut c = tokio::net::TcpStream::connect(raw_addr(&s)).await.expect("connect");
        c.write_all(request.as_bytes()).await.expect("write");
        // Let the server take the request, then reset the connection (as a client killed
        // mid-request does), which drops the request's future on the server.
        tokio::time::sleep(Duration::from_millis(5)).await;
        c.set_zero_linger().expect("linger");
        drop(c);
    }
    // Once the abandoned checks have finished, the right password is let in from that address:
    // nothing of them stayed counted (twelve would have blocked the account and address pair).
    let start = std::time::Instant::now();
    loop {
        let res = attempt_from(&s, "198.51.100.40", "hangup@example.com", PASSWORD).await;
        if res.status() == StatusCode::OK {
            break;
        }
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "only in-flight checks may hold it up");
        assert!(start.elapsed() < Duration::from_secs(20), "abandoned logins stayed counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn unknown_and_known_emails_are_throttled_alike() {
    let s = proxied_server().await;
    s.register("known@example.com").await;
    let mut answers = Vec::new();
    for email in ["known@example.com", "unknown@example.com"] {
        let mut statuses = Vec::new();
        for _ in 0..7 {
            statuses.push(attempt_from(&s, "198.51.100.2", email, "wrong password").await.status().as_u16());
        }
        answers.push(statuses);
        s.advance(Duration::from_secs(3600));
    }
    assert_eq!(answers[0], answers[1], "throttling must not tell which emails exist");
    assert_eq!(answers[0], [401, 401, 401, 401, 401, 429, 429]);
}

#[tokio::test]
async fn one_address_trying_many_accounts_is_slowed() {
    let s = proxied_server().await;
    for i in 0..20 {
        let res = attempt_from(&s, "198.51.100.3", &format!("user{i}@example.com"), "guess").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "attempt {i} is free");
    }
    let res = attempt_from(&s, "198.51.100.3", "user21@example.com", "guess").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "the address is throttled on every account");
    let res = attempt_from(&s, "198.51.100.4", "user21@example.com", "guess").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "other addresses are not");
}

/// ASVS: at most 100 failed attempts per account per hour, whatever the attacker does; and the
/// owner never waits more than a minute because of someone else.
#[tokio::test]
async fn an_account_takes_at_most_100_failures_an_hour_and_its_owner_waits_at_most_a_minute() {
    let s = proxied_server().await;
    s.register("target@example.com").await;
    let (mut failures, mut longest_wait, mut elapsed) = (0u32, 0u64, Duration::ZERO);
    let mut i = 0u32;
    while elapsed < Duration::from_secs(3600) {
        // A new address every time: only the account's own counter can stop this.
        i += 1;
        let ip = format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256);
        let res = attempt_from(&s, &ip, "target@example.com", "guess").await;
        match res.status() {
            StatusCode::UNAUTHORIZED => failures += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                let wait = retry_after(&res);
                longest_wait = longest_wait.max(wait);
                s.advance(Duration::from_secs(wait));
                elapsed += Duration::from_secs(wait);
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(failures <= 100, "{failures} failures in an hour");
    assert!(failures >= 50, "the limit should not be far stricter than needed: {failures}");
    assert!(longest_wait <= 60, "the owner could be kept waiting {longest_wait} s");
}

#[tokio::test]
async fn x_forwarded_for_is_believed_only_from_trusted_proxies() {
    async fn recorded_ip(s: &TestServer, email: &str, xff: Option<&str>) -> Value {
        let mut req = s.post("/v1/login").json(&json!({"email": email, "password": PASSWORD}));
        if let Some(v) = xff {
            req = req.header("x-forwarded-for", v);
        }
        let res = req.send().await.expect("send");
        assert_eq!(res.status(), StatusCode::OK);
        let cookie = crate::common::session_cookie(&res).expect("cookie");
        let sessions: Value = s.get_as("/v1/sessions", &cookie).await.json().await.expect("json");
        let current = sessions["sessions"].as_array().expect("list").iter().find(|x| x["current"] == true).cloned();
        current.expect("current session")["ip"].clone()
    }
    let direct = TestServer::start().await;
    direct.register("a@example.com").await;
    assert_eq!(recorded_ip(&direct, "a@example.com", Some("203.0.113.9")).await, "127.0.0.1", "untrusted peer");

    let proxied = proxied_server().await;
    proxied.register("b@example.com").await;
    assert_eq!(recorded_ip(&proxied, "b@example.com", None).await, "127.0.0.1", "no header: the peer");
    assert_eq!(recorded_ip(&proxied, "b@example.com", Some("203.0.113.9")).await, "203.0.113.9");
    // Only the hops our proxies appended count: a client's own prefix is skipped past.
    let spoofed = recorded_ip(&proxied, "b@example.com", Some("192.0.2.66, 203.0.113.9")).await;
    assert_eq!(spoofed, "203.0.113.9");
    // Trusted proxies are skipped; garbage stops the walk at the last trusted hop.
    assert_eq!(recorded_ip(&proxied, "b@example.com", Some("203.0.113.9, 127.0.0.1")).await, "203.0.113.9");
    assert_eq!(recorded_ip(&proxied, "b@example.com", Some("not-an-ip")).await, "127.0.0.1");
}

async fn audit(s: &TestServer, admin: &str, query: &str) -> Value {
    let res = s.get_as(&format!("/v1/admin/audit{query}"), admin).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.expect("json")
}

fn kinds(page: &Value) -> Vec<(String, String)> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| (e["kind"].as_str().unwrap_or("").to_owned(), e["outcome"].as_str().unwrap_or("").to_owned()))
        .collect()
}

#[tokio::test]
async fn security_events_are_audited_without_secrets_and_paged_for_admins() {
    let s = proxied_server().await;
    let admin_user = s.register("admin@example.com").await;
    s.make_admin(&admin_user).await;
    let admin = s.login("admin@example.com").await;
    let (user, cookie) = s.user("user@example.com").await;
    let user_id = user["id"].as_str().expect("id").to_owned();
    let forwarded = |m: Method, p: &str| s.request(m, p).header("x-forwarded-for", "203.0.113.77");

    // Failures, a refresh token reuse, a password change, and everything an admin does.
    expect_problem(
        attempt_from(&s, "203.0.113.77", "user@example.com", "wrong password").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    attempt_from(&s, "203.0.113.77", "nobody@example.com", "hunter2-typed-as-email").await;
    let jwt = s.jwt_login("user@example.com").await;
    let rt = jwt["refresh_token"].as_str().expect("rt").to_owned();
    assert_eq!(s.refresh(&rt).await.status(), StatusCode::OK);
    s.advance(Duration::from_secs(10));
    expect_problem(s.refresh(&rt).await, StatusCode::UNAUTHORIZED, "refresh_reused").await;
    let new_password = "a brand new passphrase";
    let res = forwarded(Method::POST, "/v1/password")
        .header("cookie", &cookie)
        .json(&json!({"current_password": PASSWORD, "new_password": new_password}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let patch = |body: Value| {
        s.request(Method::PATCH, &format!("/v1/admin/users/{user_id}")).header("cookie", &admin).json(&body).send()
    };
    assert_eq!(patch(json!({"roles": ["editor"]})).await.expect("send").status(), StatusCode::OK);
    assert_eq!(patch(json!({"disabled": true})).await.expect("send").status(), StatusCode::OK);
    let res = s.post_as(&format!("/v1/admin/users/{user_id}/logout"), &admin).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(s.post_as("/v1/logout-all", &admin).await.status(), StatusCode::NO_CONTENT);

    let admin = s.login("admin@example.com").await;
    assert_eq!(s.post_as("/v1/logout", &admin).await.status(), StatusCode::NO_CONTENT);
    let admin = s.login("admin@example.com").await;
    let all = audit(&s, &admin, "?limit=500").await;
    let seen = kinds(&all);
    for expected in [
        ("login", "success"),
        ("login", "failure"),
        ("refresh_reuse", "failure"),
        ("password_change", "success"),
        ("role_change", "success"),
        ("user_disabled", "success"),
        ("force_logout", "success"),
        ("logout_all", "success"),
        ("logout", "success"),
        ("user_created", "success"),
    ] {
        let expected = (expected.0.to_owned(), expected.1.to_owned());
        assert!(seen.contains(&expected), "no {expected:?} in {seen:?}");
    }
    let text = all.to_string();
    for secret in [PASSWORD, new_password, "hunter2-typed-as-email", &rt, "nobody@example.com"] {
        assert!(!text.contains(secret), "the audit log holds {secret:?}");
    }
    let failure = all["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "login" && e["outcome"] == "failure" && e["user_id"] == user_id.as_str())
        .expect("the wrong password for a known account");
    assert_eq!(failure["ip"], "203.0.113.77", "the client address, through the trusted proxy");
    let role = all["events"].as_array().expect("events").iter().find(|e| e["kind"] == "role_change").expect("role");
    assert_eq!(role["actor"], admin_user["id"]);
    assert_eq!(role["user_id"], user_id.as_str());

    // Paging: newest first, `next` continues, the last page says null.
    let first = audit(&s, &admin, "?limit=3").await;
    assert_eq!(first["events"].as_array().expect("events").len(), 3);
    let next = first["next"].as_i64().expect("a next cursor");
    let second = audit(&s, &admin, &format!("?limit=3&before={next}")).await;
    let ids = |p: &Value| p["events"].as_array().expect("e").iter().map(|e| e["id"].as_i64()).collect::<Vec<_>>();
    assert!(ids(&second).iter().all(|id| id.expect("id") < next));
    let of_user = audit(&s, &admin, &format!("?user={user_id}&limit=500")).await;
    assert!(of_user["events"].as_array().expect("e").iter().all(|e| e["user_id"] == user_id.as_str()));
    assert!(of_user["next"].is_null());

    // Bad queries are 400; people without the admin role get 403.
    for q in ["?limit=0", "?limit=100000", "?before=abc", "?user=not-a-uuid", "?colour=blue"] {
        let res = s.get_as(&format!("/v1/admin/audit{q}"), &admin).await;
        expect_problem(res, StatusCode::BAD_REQUEST, "invalid_query").await;
    }
    let (_, plain) = s.user("plain@example.com").await;
    expect_problem(s.get_as("/v1/admin/audit", &plain).await, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test]
async fn throttled_logins_are_audited_once_per_wait() {
    let s = proxied_server().await;
    let admin_user = s.register("admin@example.com").await;
    s.make_admin(&admin_user).await;
    for _ in 0..5 {
        attempt_from(&s, "198.51.100.9", "someone@example.com", "guess").await;
    }
    // Refusals cost a client nothing: a flood of them stores one event per wait, not one each.
    for _ in 0..20 {
        let res = attempt_from(&s, "198.51.100.9", "someone@example.com", "guess").await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    let admin = s.login("admin@example.com").await;
    let seen = kinds(&audit(&s, &admin, "").await);
    let throttled = seen.iter().filter(|k| *k == &("login".to_owned(), "throttled".to_owned())).count();
    assert_eq!(throttled, 1, "{seen:?}");
    // The next wait is a new one, and is stored again.
    s.advance(Duration::from_secs(1));
    attempt_from(&s, "198.51.100.9", "someone@example.com", "guess").await;
    attempt_from(&s, "198.51.100.9", "someone@example.com", "guess").await;
    let seen = kinds(&audit(&s, &admin, "").await);
    let throttled = seen.iter().filter(|k| *k == &("login".to_owned(), "throttled".to_owned())).count();
    assert_eq!(throttled, 2, "{seen:?}");
}

fn assert_security_headers(res: &Response, what: &str) {
    let h = res.headers();
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(get("referrer-policy"), "no-referrer", "{what}");
    assert_eq!(get("x-frame-options"), "DENY", "{what}");
    let csp = get("content-security-policy");
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let s = TestServer::start().await;
    let (_, cookie) = s.user("h@example.com").await;
    let answers = [
        ("healthz", s.get("/healthz").send().await.expect("send")),
        ("me", s.me(&cookie).await),
        ("401", s.get("/v1/me").send().await.expect("send")),
        ("404", s.get("/nowhere").send().await.expect("send")),
        ("405", s.request(Method::PUT, "/v1/me").send().await.expect("send")),
        ("400", s.post("/v1/login").header("content-type", "application/json").body("{").send().await.expect("s")),
        ("jwks", s.get("/.well-known/jwks.json").send().await.expect("send")),
    ];
    for (what, res) in &answers {
        assert_security_headers(res, what);
    }
    // HSTS only where the public address is https.
    assert!(!answers[0].1.headers().contains_key("strict-transport-security"));
    let tls = TestServer::start_with(|s| s.public_url = Some("https://auth.example.com".parse().expect("url"))).await;
    let res = tls.get("/healthz").send().await.expect("send");
    assert!(res.headers().get("strict-transport-security").is_some_and(|v| v.as_bytes().starts_with(b"max-age=")));
}

async fn preflight(s: &TestServer, origin: &str) -> Response {
    s.request(Method::OPTIONS, "/v1/logout")
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .expect("send")
}

#[tokio::test]
async fn cors_is_off_by_default() {
    let s = TestServer::start().await;
    let res = preflight(&s, "https://app.example.com").await;
    assert!(!res.headers().contains_key("access-control-allow-origin"));
    let res = s.get("/healthz").header("origin", "https://app.example.com").send().await.expect("send");
    assert!(!res.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn cors_admits_listed_origins_with_credentials_and_no_others() {
    let s = TestServer::start_with(|s| s.cors.allowed_origins = vec!["https://app.example.com".into()]).await;
    let res = preflight(&s, "https://app.example.com").await;
    let h = res.headers();
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!(get("access-control-allow-origin"), "https://app.example.com", "the origin itself, never *");
    assert_eq!(get("access-control-allow-credentials"), "true");
    assert!(get("access-control-allow-methods").contains("POST"));
    assert!(get("vary").to_ascii_lowercase().contains("origin"));
    let other = preflight(&s, "https://evil.example.net").await;
    assert!(!other.headers().contains_key("access-control-allow-origin"));

    // A cookie-authenticated state change from the listed origin passes the cross-site guard;
    // from any other origin it is refused.
    let (_, cookie) = s.user("c@example.com").await;
    let from = |origin: &str| {
        s.post("/v1/logout")
            .header("cookie", &cookie)
            .header("origin", origin.to_owned())
            .header("sec-fetch-site", "cross-site")
            .send()
    };
    let refused = from("https://evil.example.net").await.expect("send");
    expect_problem(refused, StatusCode::FORBIDDEN, "cross_site_request").await;
    let res = from("https://app.example.com").await.expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        res.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()),
        Some("https://app.example.com")
    );
}

/// The value of one series in a Prometheus text exposition.
fn series(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_logins_throttling_reuse_and_store_operations() {
    let s = proxied_server().await;
    let (_, cookie) = s.user("m@example.com").await;
    assert_eq!(s.me(&cookie).await.status(), StatusCode::OK);
    assert_eq!(s.me(&cookie).await.status(), StatusCode::OK);
    assert_eq!(s.get("/no/such/path").send().await.expect("send").status(), StatusCode::NOT_FOUND);
    for _ in 0..6 {
        attempt_from(&s, "198.51.100.20", "m@example.com", "wrong password").await;
    }
    let jwt = s.jwt_login("m@example.com").await;
    let rt = jwt["refresh_token"].as_str().expect("rt").to_owned();
    assert_eq!(s.refresh(&rt).await.status(), StatusCode::OK);
    s.advance(Duration::from_secs(10));
    assert_eq!(s.refresh(&rt).await.status(), StatusCode::UNAUTHORIZED);

    let res = s.get("/metrics").send().await.expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    let ct = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = res.text().await.expect("text");
    let value = |series_name: &str| series(&text, series_name).unwrap_or_else(|| panic!("no {series_name} in\n{text}"));
    assert_eq!(value(r#"portcullis_http_requests_total{route="/v1/me",method="GET",status="200"}"#), 2.0);
    assert_eq!(value(r#"portcullis_http_requests_total{route="unrouted",method="GET",status="404"}"#), 1.0);
    assert_eq!(value(r#"portcullis_http_requests_total{route="/v1/login",method="POST",status="429"}"#), 1.0);
    assert_eq!(value(r#"portcullis_logins_total{mode="session",outcome="success"}"#), 1.0);
    assert_eq!(value(r#"portcullis_logins_total{mode="session",outcome="invalid_credentials"}"#), 5.0);
    assert_eq!(value(r#"portcullis_logins_total{mode="session",outcome="throttled"}"#), 1.0);
    assert_eq!(value(r#"portcullis_logins_total{mode="jwt",outcome="success"}"#), 1.0);
    assert_eq!(value(r#"portcullis_login_throttled_total{scope="account_address"}"#), 1.0);
    assert_eq!(value("portcullis_refresh_reuses_total"), 1.0);
    assert_eq!(value(r#"portcullis_revocations_total{kind="session"}"#), 1.0);
    assert!(value(r#"portcullis_store_operations_total{store="sessions",op="get"}"#) >= 2.0);
    assert!(value(r#"portcullis_store_operation_duration_seconds_count{store="users",op="user_by_email"}"#) >= 7.0);
    assert_eq!(value("portcullis_revocation_feed_connected"), 1.0);
    assert_eq!(value("portcullis_revocation_feed_lost_seconds"), 0.0);
    assert!(value("portcullis_password_hashing_workers") >= 1.0);
    assert_eq!(value("portcullis_password_hashing_queue_depth"), 0.0);
    assert!(text.contains("# TYPE portcullis_http_request_duration_seconds histogram"));
    assert!(!text.contains("m@example.com") && !text.contains(&rt), "metrics name no one");

    // It can be turned off.
    let off = TestServer::start_with(|s| s.metrics = false).await;
    assert_eq!(off.get("/metrics").send().await.expect("send").status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn session_credentials_are_never_taken_from_a_url() {
    let s = TestServer::start_with(|s| s.jwt.allow_query_token = true).await;
    let (_, cookie) = s.user("url@example.com").await;
    let token = cookie.split_once('=').expect("name=value").1.to_owned();
    assert_eq!(s.me(&cookie).await.status(), StatusCode::OK, "the credential itself is good");
    // Even with query tokens allowed (for access tokens), a session credential in the URL,
    // under any name, authenticates nothing.
    for name in ["session", "session_id", "__Host-portcullis", "portcullis", "access_token", "sid"] {
        let res = s.get(&format!("/v1/me?{name}={token}")).send().await.expect("send");
        expect_problem(
            res,
            StatusCode::UNAUTHORIZED,
            if name == "access_token" { "invalid_token" } else { "unauthenticated" },
        )
        .await;
    }
}

/// Reads from a raw connection until the server closes it (or a generous bound passes);
/// returns what it sent and how long the wait was.
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> (String, Duration) {
    use tokio::io::AsyncReadExt;
    let start = std::time::Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the server kept the connection open: {:?}", String::from_utf8_lossy(&got));
    (String::from_utf8_lossy(&got).into_owned(), start.elapsed())
}

fn raw_addr(s: &TestServer) -> String {
    s.base.trim_start_matches("http://").to_owned()
}

/// A client that sends half a request (slowloris), or keeps a connection open doing nothing,
/// is cut off at the header-read timeout instead of holding the connection for ever.
#[tokio::test]
async fn slow_and_idle_connections_are_closed_at_the_header_read_timeout() {
    use tokio::io::AsyncWriteExt;
    let s = TestServer::start_with(|s| s.connections.header_read_timeout = Duration::from_secs(1)).await;
    let mut slow = tokio::net::TcpStream::connect(raw_addr(&s)).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: portcullis.test\r\nX-Slow: ").await.expect("write");
    let (_, waited) = read_until_closed(&mut slow).await;
    assert!(waited >= Duration::from_millis(900), "closed before the timeout: {waited:?}");

    let mut idle = tokio::net::TcpStream::connect(raw_addr(&s)).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: portcullis.test\r\n\r\n").await.expect("write");
    let (answer, waited) = read_until_closed(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "the request itself is served: {answer}");
    assert!(waited >= Duration::from_millis(900), "the kept-alive connection was closed at once: {waited:?}");
}

/// Beyond `connections.max`, clients wait for a free connection instead of taking the server's
/// descriptors: the next one is served as soon as one closes.
#[tokio::test]
async fn connections_beyond_the_limit_wait_until_one_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start_with(|s| s.connections.max = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = tokio::net::TcpStream::connect(raw_addr(&s)).await.expect("connect");
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: portcullis.test\r\n\r\n").await.expect("write");
        let mut buf = [0u8; 512];
        let n = c.read(&mut buf).await.expect("answer");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
        held.push(c);
    }
    let client = reqwest::Client::builder().timeout(Duration::from_millis(800)).build().expect("client");
    let fourth = client.get(s.url("/healthz")).send().await;
    assert!(fourth.is_err_and(|e| e.is_timeout()), "a fourth connection was served while three were open");
    drop(held.pop());
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
    let res = client.get(s.url("/healthz")).send().await.expect("served once a connection closed");
    assert_eq!(res.status(), StatusCode::OK);
}

/// The edge layer in front of every route, around routes that misbehave: a handler that panics
/// gets a bare 500 problem and the server goes on; one that never answers gets a 408 at the
/// (here very short) request timeout; both are counted under their route, with the security
/// headers on.
#[tokio::test]
async fn the_edge_answers_for_panicking_and_hanging_routes() {
    use axum::routing::get;

    async fn panics() -> &'static str {
        panic!("a handler bug")
    }

    let s = TestServer::start().await;
    let timeout = Duration::from_millis(200);
    let app: axum::Router = axum::Router::new()
        .route("/panics", get(panics))
        .route("/hangs", get(std::future::pending::<&'static str>))
        .route("/fine", get(|| async { "fine" }))
        .layer(portcullis_server::EdgeLayer::new(s.state.clone(), timeout));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(format!("{base}{path}")).send();

    let res = get("/panics").await.expect("an answer, not a dropped connection");
    assert_eq!(res.headers().get("x-content-type-options").map(|v| v.as_bytes()), Some(&b"nosniff"[..]));
    let body = expect_problem(res, StatusCode::INTERNAL_SERVER_ERROR, "internal_error").await;
    assert!(!body.to_string().contains("a handler bug"), "the cause leaked: {body}");

    let started = std::time::Instant::now();
    let res = get("/hangs").await.expect("an answer");
    assert!(started.elapsed() >= timeout, "answered before the timeout");
    expect_problem(res, StatusCode::REQUEST_TIMEOUT, "request_timeout").await;

    let res = get("/fine").await.expect("the server goes on");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.expect("text"), "fine");

    let metrics = s.state.metrics.render(&s.service);
    for (route, status) in [("/panics", 500), ("/hangs", 408), ("/fine", 200)] {
        let name = format!(r#"portcullis_http_requests_total{{route="{route}",method="GET",status="{status}"}}"#);
        assert_eq!(series(&metrics, &name), Some(1.0), "{name} in\n{metrics}");
    }
    server.abort();
}
