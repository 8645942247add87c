//! Session mode over real HTTP: register, login, me, logout, the device list, password change,
//! timeouts, durability, fixation and cross-site refusal.

use std::time::Duration;

use crate::common::{COOKIE, PASSWORD, TestServer, expect_problem, session_cookie, set_cookies};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

#[tokio::test]
async fn register_login_me_logout() {
    let s = TestServer::start().await;
    let user = s.register("  Alice@Example.COM ").await;
    assert_eq!(user["email"], "alice@example.com");
    assert_eq!(user["roles"], json!(["user"]));
    assert_eq!(user["disabled"], false);
    assert!(user.get("password_hash").is_none() && user.get("password").is_none(), "{user}");

    let res = s.post_json("/v1/login", &json!({"email": "alice@example.com", "password": PASSWORD})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let set = set_cookies(&res);
    assert_eq!(set.len(), 1, "{set:?}");
    let attrs: Vec<&str> = set[0].split(';').map(str::trim).collect();
    assert!(attrs[0].starts_with(&format!("{COOKIE}=")), "{attrs:?}");
    for required in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(attrs.contains(&required), "missing {required}: {attrs:?}");
    }
    assert!(!attrs.iter().any(|a| a.to_ascii_lowercase().starts_with("domain")), "{attrs:?}");
    let cookie = session_cookie(&res).expect("cookie");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["mode"], "session");
    assert_eq!(body["user"]["id"], user["id"]);
    assert!(body["expires_at"].is_string());

    let res = s.me(&cookie).await;
    assert_eq!(res.status(), StatusCode::OK);
    let me: Value = res.json().await.expect("json");
    assert_eq!(me["id"], user["id"]);
    assert_eq!(me["email"], "alice@example.com");
    assert_eq!(me["roles"], json!(["user"]));
    assert_eq!(me["auth"]["mode"], "session");
    assert_eq!(me["auth"]["expires_at"], body["expires_at"]);
    let session_id = me["auth"]["session_id"].as_str().expect("session id").to_owned();
    // The public session id alone is not a credential.
    let id_only = format!("{COOKIE}={session_id}");
    expect_problem(s.me(&id_only).await, StatusCode::UNAUTHORIZED, "unauthenticated").await;

    let res = s.post_as("/v1/logout", &cookie).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let cleared = set_cookies(&res);
    assert!(cleared.iter().any(|c| c.starts_with(&format!("{COOKIE}=;")) && c.contains("Max-Age=0")), "{cleared:?}");
    expect_problem(s.me(&cookie).await, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    expect_problem(s.get("/v1/me").send().await.expect("send"), StatusCode::UNAUTHORIZED, "unauthenticated").await;
}

#[tokio::test]
async fn registration_can_be_closed() {
    let s = TestServer::start_with(|c| c.registration.open = false).await;
    let res = s.post_json("/v1/register", &json!({"email": "a@example.com", "password": PASSWORD})).await;
    expect_problem(res, StatusCode::FORBIDDEN, "registration_closed").await;
}

#[tokio::test]
async fn one_account_per_canonical_email_and_no_look_alikes() {
    let s = TestServer::start().await;
    s.register("alice@example.com").await;
    for dup in ["ALICE@EXAMPLE.COM", "ａｌｉｃｅ@example.com", "\u{0430}lice@example.com", " alice@example.com"] {
        let res = s.post_json("/v1/register", &json!({"email": dup, "password": PASSWORD})).await;
        expect_problem(res, StatusCode::CONFLICT, "email_taken").await;
    }
    for invisible in ["al\u{200B}ice@example.com", "alice\u{2060}@example.com", "\u{FEFF}bob@example.com"] {
        let res = s.post_json("/v1/register", &json!({"email": invisible, "password": PASSWORD})).await;
        expect_problem(res, StatusCode::BAD_REQUEST, "invalid_email").await;
    }
    // A full-width spelling logs in to the same account.
    s.login("ＡＬＩＣＥ@example.com").await;
}

#[tokio::test]
async fn password_length_is_checked_before_hashing_and_never_truncated() {
    let s = TestServer::start().await;
    let reg = |email: &str, pw: String| s.post("/v1/register").json(&json!({"email": email, "password": pw})).send();
    expect_problem(
        reg("a@example.com", "1234567".into()).await.expect("send"),
        StatusCode::BAD_REQUEST,
        "invalid_password",
    )
    .await;
    expect_problem(
        reg("a@example.com", "x".repeat(1025)).await.expect("send"),
        StatusCode::BAD_REQUEST,
        "invalid_password",
    )
    .await;
    let long = "y".repeat(1024);
    assert_eq!(reg("b@example.com", long.clone()).await.expect("send").status(), StatusCode::CREATED);
    s.login_with("b@example.com", &long).await;
    // Only the exact password works: not a prefix, not a longer one.
    for wrong in [&long[..1023], &format!("{long}y")] {
        let res = s.post_json("/v1/login", &json!({"email": "b@example.com", "password": wrong})).await;
        expect_problem(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
}

/// Status, body and headers of a failed login, with the date removed.
async fn failure_fingerprint(s: &TestServer, email: &str, password: &str) -> (u16, Vec<(String, String)>, String) {
    let res = s.post_json("/v1/login", &json!({"email": email, "password": password})).await;
    let status = res.status().as_u16();
    let mut headers: Vec<(String, String)> = res
        .headers()
        .iter()
        .filter(|(k, _)| *k != "date")
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    headers.sort();
    (status, headers, res.text().await.expect("body"))
}

#[tokio::test]
async fn failed_logins_look_the_same_whatever_the_reason() {
    let s = TestServer::start().await;
    let admin = s.register("admin@example.com").await;
    s.make_admin(&admin).await;
    let admin_cookie = s.login("admin@example.com").await;
    let victim = s.register("off@example.com").await;
    s.register("on@example.com").await;
    let res = s
        .request(Method::PATCH, &format!("/v1/admin/users/{}", victim["id"].as_str().expect("id")))
        .header("cookie", &admin_cookie)
        .json(&json!({"disabled": true}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::OK);

    let unknown = failure_fingerprint(&s, "nobody@example.com", PASSWORD).await;
    let wrong = failure_fingerprint(&s, "on@example.com", "not the password").await;
    let disabled = failure_fingerprint(&s, "off@example.com", PASSWORD).await;
    let malformed = failure_fingerprint(&s, "not an email", PASSWORD).await;
    assert_eq!(unknown.0, 401);
    assert!(unknown.2.contains("\"code\":\"invalid_credentials\""), "{}", unknown.2);
    assert_eq!(unknown, wrong);
    assert_eq!(unknown, disabled);
    assert_eq!(unknown, malformed);
}

#[tokio::test]
async fn login_accepts_an_html_form_post() {
    let s = TestServer::start().await;
    s.register("form@example.com").await;
    let res = s
        .post("/v1/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("email=form%40example.com&password={}", PASSWORD.replace(' ', "+")))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = session_cookie(&res).expect("cookie");
    assert_eq!(s.me(&cookie).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn device_list_and_ending_one_session() {
    let s = TestServer::start().await;
    s.register("dev@example.com").await;
    let laptop = s.login("dev@example.com").await;
    let res = s
        .post("/v1/login")
        .header("user-agent", "PhoneBrowser/1.0")
        .json(&json!({"email": "dev@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("send");
    let phone = session_cookie(&res).expect("cookie");

    let res = s.get_as("/v1/sessions", &laptop).await;
    assert_eq!(res.status(), StatusCode::OK);
    let list: Value = res.json().await.expect("json");
    let sessions = list["sessions"].as_array().expect("array");
    assert_eq!(sessions.len(), 2, "{list}");
    let current: Vec<&Value> = sessions.iter().filter(|x| x["current"] == true).collect();
    assert_eq!(current.len(), 1);
    let phone_entry = sessions.iter().find(|x| x["user_agent"] == "PhoneBrowser/1.0").expect("phone listed");
    assert_eq!(phone_entry["current"], false);
    assert_eq!(phone_entry["mode"], "session");
    assert_eq!(phone_entry["ip"], "127.0.0.1");
    for key in ["id", "created_at", "last_seen_at", "expires_at"] {
        assert!(phone_entry[key].is_string(), "{key} in {phone_entry}");
    }

    // Someone else cannot see or end these sessions.
    let (_, mallory) = s.user("mallory@example.com").await;
    let phone_id = phone_entry["id"].as_str().expect("id");
    let res = s.send_as(Method::DELETE, &format!("/v1/sessions/{phone_id}"), &mallory, &serde_json::Value::Null).await;
    expect_problem(res, StatusCode::NOT_FOUND, "session_not_found").await;
    assert_eq!(s.me(&phone).await.status(), StatusCode::OK);
    let res = s.get_as("/v1/sessions", &mallory).await;
    let theirs: Value = res.json().await.expect("json");
    assert_eq!(theirs["sessions"].as_array().expect("array").len(), 1);

    // The owner ends the phone's session from the laptop.
    let res = s.send_as(Method::DELETE, &format!("/v1/sessions/{phone_id}"), &laptop, &serde_json::Value::Null).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    expect_problem(s.me(&phone).await, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    assert_eq!(s.me(&laptop).await.status(), StatusCode::OK);
    for junk in ["nope", "..%2F..%2Fetc%2Fpasswd", &"A".repeat(500)] {
        let res = s.send_as(Method::DELETE, &format!("/v1/sessions/{junk}"), &laptop, &serde_json::Value::Null).await;
        expect_problem(res, StatusCode::NOT_FOUND, "session_not_found").await;
    }
}

#[tokio::test]
async fn logout_all_ends_every_session_of_the_user_only() {
    let s = TestServer::start().await;
    s.register("many@example.com").await;
    let cookies =
        [s.login("many@example.com").await, s.login("many@example.com").await, s.login("many@example.com").await];
    let (_, other) = s.user("other@example.com").await;
    let res = s.post_as("/v1/logout-all", &cookies[1]).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    for c in &cookies {
        expect_problem(s.me(c).await, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    }
    assert_eq!(s.me(&other).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn password_change_ends_the_other_sessions() {
    let s = TestServer::start().await;
    s.register("pw@example.com").await;
    let here = s.login("pw@example.com").await;
    let elsewhere = s.login("pw@example.com").await;
    let change = |current: &str, new: &str| {
        s.post("/v1/password")
            .header("cookie", &here)
            .json(&json!({"current_password": current, "new_password": new}))
            .send()
    };
    expect_problem(
        change("wrong password", "a new password").await.expect("send"),
        StatusCode::FORBIDDEN,
        "wrong_password",
    )
    .await;
    expect_problem(change(PASSWORD, "short").await.expect("send"), StatusCode::BAD_REQUEST, "invalid_password").await;
    // Nothing changed yet.
    assert_eq!(s.me(&elsewhere).await.status(), StatusCode::OK);

    let res = change(PASSWORD, "a much better password").await.expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // The session that changed it lives on under a new id; its old credential is dead.
    let renewed = crate::common::session_cookie(&res).expect("a renewed session cookie");
    assert_ne!(renewed, here);
    assert_eq!(s.me(&renewed).await.status(), StatusCode::OK, "the session that changed it lives on");
    expect_problem(s.me(&here).await, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let sessions: serde_json::Value = s.get_as("/v1/sessions", &renewed).await.json().await.expect("json");
    assert_eq!(sessions["sessions"].as_array().map(Vec::len), Some(1), "{sessions}");
    expect_problem(s.me(&elsewhere).await, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let res = s.post_json("/v1/login", &json!({"email": "pw@example.com", "password": PASSWORD})).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    s.login_with("pw@example.com", "a much better password").await;
}

#[tokio::test]
async fn idle_timeout_is_enforced_and_use_extends_it() {
    let s = TestServer::start_with(|c| {
        c.session.idle_timeout = Duration::from_secs(2);
        c.session.absolute_timeout = Duration::from_secs(3600);
    })
    .await;
    s.register("idle@example.com").await;
    let cookie = s.login("idle@example.com").await;
    // Used every 1.5 s, the session stays alive well past the idle timeout.
    for _ in 0..4 {
        s.advance(Duration::from_millis(1500));
        assert_eq!(s.me(&cookie).await.status(), StatusCode::OK);
    }
    // Left alone for longer than the idle timeout, it dies.
    s.advance(Duration::from_millis(2001));
    expect_problem(s.me(&cookie).await, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    // And stays dead (it was deleted, not just refused once).
    let res = s.get_as("/v1/sessions", &cookie).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
}

#[tokio::test]
async fn last_seen_is_written_lazily() {
    let s = TestServer::start_with(|c| c.session.idle_timeout = Duration::from_secs(40)).await;
    s.register("lazy@example.com").await;
    let cookie = s.login("lazy@example.com").await;
    let listed = |s: &TestServer| {
        let c = cookie.clone();
        let req = s.get("/v1/sessions").header("cookie", c);
        async move {
            let v: Value = req.send().await.expect("send").json().await.expect("json");
            v["sessions"][0]["last_seen_at"].as_str().expect("last_seen_at").to_owned()
        }
    };
    let first = listed(&s).await;
    // The touch interval is a quarter of the idle timeout (10 s): no write before it.
    s.advance(Duration::from_secs(5));
    assert_eq!(listed(&s).await, first);
    s.advance(Duration::from_secs(6));
    assert_ne!(listed(&s).await, first);
}

#[tokio::test]
async fn absolute_timeout_is_enforced_even_for_a_busy_session() {
    let s = TestServer::start_with(|c| {
        c.session.idle_timeout = Duration::from_secs(2);
        c.session.absolute_timeout = Duration::from_secs(5);
    })
    .await;
    s.register("abs@example.com").await;
    let cookie = s.login("abs@example.com").await;
    for _ in 0..4 {
        s.advance(Duration::from_secs(1));
        assert_eq!(s.me(&cookie).await.status(), StatusCode::OK);
    }
    s.advance(Duration::from_secs(1));
    expect_problem(s.me(&cookie).await, StatusCode::UNAUTHORIZED, "unauthenticated").await;
}

#[tokio::test]
async fn sqlite_sessions_survive_a_restart() {
    let s = TestServer::start().await;
    let (user, cookie) = s.user("durable@example.com").await;
    let s = s.restart().await;
    let res = s.me(&cookie).await;
    assert_eq!(res.status(), StatusCode::OK);
    let me: Value = res.json().await.expect("json");
    assert_eq!(me["id"], user["id"]);
    // The key files are private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let dir_mode = std::fs::metadata(s.data_dir()).expect("stat").permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        let db_mode = std::fs::metadata(s.data_dir().join("portcullis.db")).expect("stat").permissions().mode() & 0o777;
        assert_eq!(db_mode, 0o600);
    }
}

#[tokio::test]
async fn memory_sessions_work_and_are_forgotten_on_restart_while_users_stay() {
    let s = TestServer::start_with(|c| c.store.sessions = "memory".into()).await;
    let (_, cookie) = s.user("mem@example.com").await;
    assert_eq!(s.me(&cookie).await.status(), StatusCode::OK);
    let s = s.restart().await;
    expect_problem(s.me(&cookie).await, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    s.login("mem@example.com").await;
}

#[tokio::test]
async fn an_invented_session_id_is_never_adopted() {
    let s = TestServer::start().await;
    s.register("fix@example.com").await;
    let invented = format!("{COOKIE}=AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    expect_problem(s.me(&invented).await, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    let res = s
        .send_as(Method::POST, "/v1/login", &invented, &json!({"email": "fix@example.com", "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let issued = session_cookie(&res).expect("cookie");
    assert_ne!(issued, invented);
    expect_problem(s.me(&invented).await, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    assert_eq!(s.me(&issued).await.status(), StatusCode::OK);

    // Logging in again while holding a session replaces it with a new one.
    let res =
        s.send_as(Method::POST, "/v1/login", &issued, &json!({"email": "fix@example.com", "password": PASSWORD})).await;
    let second = session_cookie(&res).expect("cookie");
    assert_ne!(second, issued);
    expect_problem(s.me(&issued).await, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    assert_eq!(s.me(&second).await.status(), StatusCode::OK);

    // A real session id with a forged secret is refused.
    let me: Value = s.me(&second).await.json().await.expect("json");
    let sid = me["auth"]["session_id"].as_str().expect("sid");
    let forged = format!("{COOKIE}={sid}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    expect_problem(s.me(&forged).await, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    // Session ids are never taken from the URL.
    let credential = second.split_once('=').expect("pair").1;
    for q in [format!("/v1/me?session={credential}"), format!("/v1/me?{COOKIE}={credential}")] {
        expect_problem(s.get(&q).send().await.expect("send"), StatusCode::UNAUTHORIZED, "unauthenticated").await;
    }
}

#[tokio::test]
async fn cross_site_unsafe_requests_are_refused() {
    let s = TestServer::start().await;
    let (_, cookie) = s.user("csrf@example.com").await;
    let attempts: Vec<(&str, &str)> = vec![
        ("origin", "https://evil.example"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ];
    for (name, value) in &attempts {
        for path in ["/v1/logout", "/v1/logout-all"] {
            let res = s.post(path).header("cookie", &cookie).header(*name, *value).send().await.expect("send");
            expect_problem(res, StatusCode::FORBIDDEN, "cross_site_request").await;
        }
        let res = s
            .post("/v1/password")
            .header("cookie", &cookie)
            .header(*name, *value)
            .json(&json!({"current_password": PASSWORD, "new_password": "attacker chosen"}))
            .send()
            .await
            .expect("send");
        expect_problem(res, StatusCode::FORBIDDEN, "cross_site_request").await;
        // Login CSRF (signing the victim in as the attacker) is refused the same way.
        let res = s
            .post("/v1/login")
            .header(*name, *value)
            .json(&json!({"email": "csrf@example.com", "password": PASSWORD}))
            .send()
            .await
            .expect("send");
        expect_problem(res, StatusCode::FORBIDDEN, "cross_site_request").await;
    }
    // None of it took effect.
    assert_eq!(s.me(&cookie).await.status(), StatusCode::OK);
    s.login("csrf@example.com").await;

    // Same-origin browser requests pass.
    let res = s
        .post("/v1/logout")
        .header("cookie", &cookie)
        .header("origin", &s.base)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn a_login_storm_does_not_starve_other_requests() {
    // The storm is one account from one address: with throttling on, all but five would be
    // refused before hashing. This is about the hashing pool, so throttling is off.
    let s = TestServer::start_with(|s| s.throttle.enabled = false).await;
    s.register("storm@example.com").await;
    let cookie = s.login("storm@example.com").await;
    let mut logins = Vec::new();
    for _ in 0..24 {
        let req = s.post("/v1/login").json(&json!({"email": "storm@example.com", "password": "wrong password"}));
        logins.push(tokio::spawn(async move { req.send().await.map(|r| r.status()) }));
    }
    // While two dozen Argon2 verifications queue on the pool, ordinary requests are answered.
    for _ in 0..5 {
        assert_eq!(s.me(&cookie).await.status(), StatusCode::OK);
        assert_eq!(s.get("/healthz").send().await.expect("send").status(), StatusCode::OK);
    }
    let still_running = logins.iter().filter(|t| !t.is_finished()).count();
    assert!(still_running > 0, "the storm finished before ordinary requests were answered");
    for t in logins {
        assert_eq!(t.await.expect("join").expect("send"), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn health_and_readiness() {
    let s = TestServer::start().await;
    let res = s.get("/healthz").send().await.expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.expect("json")["status"], "ok");
    let res = s.get("/readyz").send().await.expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.expect("json")["status"], "ready");
}

#[tokio::test]
async fn plain_http_development_cookie() {
    let s = TestServer::start_with(|c| c.session.cookie_secure = false).await;
    s.register("dev@example.com").await;
    let res = s.post_json("/v1/login", &json!({"email": "dev@example.com", "password": PASSWORD})).await;
    let set = set_cookies(&res).join("\n");
    assert!(set.starts_with("portcullis="), "{set}");
    assert!(!set.contains("Secure"), "{set}");
    assert!(set.contains("HttpOnly"), "{set}");
    let cookie = session_cookie(&res).expect("cookie");
    assert_eq!(s.me(&cookie).await.status(), StatusCode::OK);
    // The secure name is not accepted by a plain-HTTP server, and vice versa.
    let renamed = cookie.replacen("portcullis=", &format!("{COOKIE}="), 1);
    expect_problem(s.me(&renamed).await, StatusCode::UNAUTHORIZED, "unauthenticated").await;
}
