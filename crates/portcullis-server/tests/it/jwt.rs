//! JWT mode over real HTTP: login, bearer use, refresh rotation and reuse detection, the
//! racing-tabs grace, revocation in each `jwt.revocation` mode, cookie transport, key sets and
//! rotation, and a third-party library verifying our tokens from the published JWKS.

use std::time::Duration;

use crate::common::{PASSWORD, TestServer, expect_problem};
use portcullis_core::jwt::Algorithm;
use portcullis_server::settings::Revocation;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn token(v: &Value, name: &str) -> String {
    v[name].as_str().unwrap_or_else(|| panic!("{name} in {v}")).to_owned()
}

async fn expect_invalid_token(res: reqwest::Response) {
    let challenge = res.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    expect_problem(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[tokio::test]
async fn jwt_login_answers_as_designed_and_tokens_work_everywhere() {
    let s = TestServer::start().await;
    let user = s.register("jwt@example.com").await;
    let res = s.post_json("/v1/login", &json!({"email": "jwt@example.com", "password": PASSWORD, "mode": "jwt"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert!(res.headers().get("set-cookie").is_none(), "body transport sets no cookie");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["mode"], "jwt");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["refresh_expires_in"], 30 * 86400);
    assert_eq!(body["user"]["id"], user["id"]);
    let access = token(&body, "access_token");
    let refresh = token(&body, "refresh_token");

    let res = s.bearer(Method::GET, "/v1/me", &access).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    let me: Value = res.json().await.expect("json");
    assert_eq!(me["id"], user["id"]);
    assert_eq!(me["email"], "jwt@example.com");
    assert_eq!(me["auth"]["mode"], "jwt");
    let sid = me["auth"]["session_id"].as_str().expect("sid").to_owned();
    assert!(refresh.starts_with(&format!("{sid}.0.")), "the refresh token is bound to the session record");

    // The session list shows the JWT login, marked current.
    let res = s.bearer(Method::GET, "/v1/sessions", &access).send().await.expect("send");
    let list: Value = res.json().await.expect("json");
    assert_eq!(list["sessions"][0]["id"], sid.as_str());
    assert_eq!(list["sessions"][0]["mode"], "jwt");
    assert_eq!(list["sessions"][0]["current"], true);

    // Forward auth accepts bearer tokens.
    let res = s.bearer(Method::GET, "/v1/verify", &access).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-portcullis-user"], user["id"].as_str().expect("id"));
    assert_eq!(res.headers()["x-portcullis-roles"], "user");
    let res = s.bearer(Method::GET, "/v1/verify?role=admin", &access).send().await.expect("send");
    expect_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test]
async fn tampered_forged_and_misplaced_tokens_get_one_answer() {
    let s = TestServer::start().await;
    s.register("t@example.com").await;
    let body = s.jwt_login("t@example.com").await;
    let access = token(&body, "access_token");
    let refresh = token(&body, "refresh_token");
    let (h, rest) = access.split_once('.').expect("dot");
    let (p, sig) = rest.split_once('.').expect("dot");
    let flipped = {
        let mut c: Vec<char> = sig.chars().collect();
        c[3] = if c[3] == 'A' { 'B' } else { 'A' };
        c.into_iter().collect::<String>()
    };
    let session_cookie = s.login("t@example.com").await;
    let cookie_value = session_cookie.split_once('=').expect("pair").1.to_owned();
    for bad in [
        format!("{h}.{p}.{flipped}"),
        format!("{h}.{p}."),
        format!("{h}.{p}"),
        "not-a-token".to_owned(),
        refresh.clone(),
        cookie_value,
        format!("{}.{p}.{sig}", portcullis_core::secret::b64(br#"{"alg":"none","typ":"at+jwt"}"#)),
    ] {
        expect_invalid_token(s.bearer(Method::GET, "/v1/me", &bad).send().await.expect("send")).await;
    }
    for header in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer  two spaces", "bearer"] {
        let res = s.get("/v1/me").header("authorization", header).send().await.expect("send");
        expect_invalid_token(res).await;
    }
    // An access token is not a refresh token.
    expect_problem(s.refresh(&access).await, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    // The lower-case scheme is accepted (RFC 7235: schemes are case-insensitive).
    let res = s.get("/v1/me").header("authorization", format!("bearer {access}")).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::OK);
}

/// The verified-token cache finds a token by its signature's last bytes but accepts only the
/// whole token: anything else with the same signature is verified, and refused.
#[tokio::test]
async fn a_cached_token_is_matched_whole_not_by_its_signature() {
    let s = TestServer::start().await;
    s.register("c@example.com").await;
    let access = token(&s.jwt_login("c@example.com").await, "access_token");
    for _ in 0..2 {
        let res = s.bearer(Method::GET, "/v1/me", &access).send().await.expect("send");
        assert_eq!(res.status(), StatusCode::OK, "verified, then from the cache");
    }
    let (h, rest) = access.split_once('.').expect("dot");
    let (p, sig) = rest.split_once('.').expect("dot");
    let mut payload: Vec<char> = p.chars().collect();
    let middle = payload.len() / 2;
    payload[middle] = if payload[middle] == 'A' { 'B' } else { 'A' };
    let payload: String = payload.into_iter().collect();
    for bad in [
        format!("{h}.{payload}.{sig}"),
        format!("x{access}"),
        access[1..].to_owned(),
        format!("{h}A.{p}.{sig}"),
        format!("{}.{p}.{sig}", portcullis_core::secret::b64(br#"{"alg":"none","typ":"at+jwt"}"#)),
    ] {
        expect_invalid_token(s.bearer(Method::GET, "/v1/me", &bad).send().await.expect("send")).await;
    }
    // Bytes that are not text are refused like any other stranger.
    let mut raw = b"Bearer ".to_vec();
    raw.extend_from_slice(access.as_bytes());
    raw.push(0xff);
    let value = reqwest::header::HeaderValue::from_bytes(&raw).expect("obs-text is a valid header value");
    expect_invalid_token(s.get("/v1/me").header("authorization", value).send().await.expect("send")).await;
    let res = s.bearer(Method::GET, "/v1/me", &access).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::OK, "the token itself still works");
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_session() {
    let s = TestServer::start().await;
    s.register("r@example.com").await;
    let first = s.jwt_login("r@example.com").await;
    let rt0 = token(&first, "refresh_token");
    let res = s.refresh(&rt0).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let second: Value = res.json().await.expect("json");
    let rt1 = token(&second, "refresh_token");
    let at1 = token(&second, "access_token");
    assert_ne!(rt1, rt0);
    assert_ne!(at1, token(&first, "access_token"));
    assert_eq!(s.me_bearer(&at1).await, StatusCode::OK);
    let rt2 = token(&s.refresh(&rt1).await.json::<Value>().await.expect("json"), "refresh_token");

    // Past the grace window, presenting an old token is theft: the whole session goes.
    s.advance(Duration::from_secs(6));
    expect_problem(s.refresh(&rt0).await, StatusCode::UNAUTHORIZED, "refresh_reused").await;
    expect_problem(s.refresh(&rt2).await, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    expect_invalid_token(s.bearer(Method::GET, "/v1/me", &at1).send().await.expect("send")).await;
    // A guess that names the session but was never issued does not log anyone out.
    let other = s.jwt_login("r@example.com").await;
    let rt = token(&other, "refresh_token");
    let mut parts: Vec<&str> = rt.split('.').collect();
    let fake_secret = "A".repeat(43);
    parts[2] = &fake_secret;
    expect_problem(s.refresh(&parts.join(".")).await, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    assert_eq!(s.refresh(&rt).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn racing_tabs_share_one_rotation() {
    let s = TestServer::start().await;
    s.register("race@example.com").await;
    let rt0 = token(&s.jwt_login("race@example.com").await, "refresh_token");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let req = s.post("/v1/token/refresh").json(&json!({"refresh_token": rt0}));
        tasks.push(tokio::spawn(async move {
            let res = req.send().await.expect("send");
            (res.status(), res.json::<Value>().await.expect("json"))
        }));
    }
    let mut refresh_tokens = Vec::new();
    for t in tasks {
        let (status, body) = t.await.expect("join");
        assert_eq!(status, StatusCode::OK, "no racing tab is logged out: {body}");
        refresh_tokens.push(token(&body, "refresh_token"));
    }
    refresh_tokens.dedup();
    assert_eq!(refresh_tokens.len(), 1, "every tab got the same next token: one branch");
    let rt1 = &refresh_tokens[0];
    assert!(rt1.split('.').nth(1) == Some("1"), "exactly one rotation happened: {rt1}");
    // That one branch lives on.
    assert_eq!(s.refresh(rt1).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn logout_kills_this_token_and_its_refresh_token_only() {
    let s = TestServer::start().await;
    s.register("out@example.com").await;
    let a = s.jwt_login("out@example.com").await;
    let b = s.jwt_login("out@example.com").await;
    let res = s.bearer(Method::POST, "/v1/logout", &token(&a, "access_token")).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    expect_invalid_token(s.bearer(Method::GET, "/v1/me", &token(&a, "access_token")).send().await.expect("send")).await;
    expect_problem(s.refresh(&token(&a, "refresh_token")).await, StatusCode::UNAUTHORIZED, "invalid_refresh_token")
        .await;
    assert_eq!(s.me_bearer(&token(&b, "access_token")).await, StatusCode::OK);
    // A token refreshed from the ended session before logout is dead too (the session is).
    let c = s.jwt_login("out@example.com").await;
    let c2: Value = s.refresh(&token(&c, "refresh_token")).await.json().await.expect("json");
    let res = s.bearer(Method::POST, "/v1/logout", &token(&c2, "access_token")).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(s.me_bearer(&token(&c, "access_token")).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logout_all_kills_every_token_and_a_new_login_works_at_once() {
    let s = TestServer::start().await;
    s.register("all@example.com").await;
    let tokens: Vec<Value> = vec![s.jwt_login("all@example.com").await, s.jwt_login("all@example.com").await];
    let cookie = s.login("all@example.com").await;
    let res = s.bearer(Method::POST, "/v1/logout-all", &token(&tokens[0], "access_token")).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    for t in &tokens {
        assert_eq!(s.me_bearer(&token(t, "access_token")).await, StatusCode::UNAUTHORIZED);
        expect_problem(s.refresh(&token(t, "refresh_token")).await, StatusCode::UNAUTHORIZED, "invalid_refresh_token")
            .await;
    }
    assert_eq!(s.me(&cookie).await.status(), StatusCode::UNAUTHORIZED);
    // Same clock instant: the new token is not caught by the epoch just set.
    let fresh = s.jwt_login("all@example.com").await;
    assert_eq!(s.me_bearer(&token(&fresh, "access_token")).await, StatusCode::OK);
}

#[tokio::test]
async fn password_change_kills_the_other_tokens_and_keeps_this_one() {
    let s = TestServer::start().await;
    s.register("pwd@example.com").await;
    let here = s.jwt_login("pwd@example.com").await;
    let there = s.jwt_login("pwd@example.com").await;
    let res = s
        .bearer(Method::POST, "/v1/password", &token(&here, "access_token"))
        .json(&json!({"current_password": PASSWORD, "new_password": "another good password"}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(s.me_bearer(&token(&here, "access_token")).await, StatusCode::OK);
    assert_eq!(s.me_bearer(&token(&there, "access_token")).await, StatusCode::UNAUTHORIZED);
    expect_problem(s.refresh(&token(&there, "refresh_token")).await, StatusCode::UNAUTHORIZED, "invalid_refresh_token")
        .await;
    assert_eq!(s.refresh(&token(&here, "refresh_token")).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn admin_force_logout_disable_and_role_changes_reach_tokens() {
    let s = TestServer::start().await;
    let admin = s.register("boss@example.com").await;
    s.make_admin(&admin).await;
    let admin_cookie = s.login("boss@example.com").await;
    let victim = s.register("v@example.com").await;
    let path = format!("/v1/admin/users/{}", victim["id"].as_str().expect("id"));

    let t = s.jwt_login("v@example.com").await;
    assert_eq!(
        s.send_as(Method::POST, &format!("{path}/logout"), &admin_cookie, &Value::Null).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(s.me_bearer(&token(&t, "access_token")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.refresh(&token(&t, "refresh_token")).await.status(), StatusCode::UNAUTHORIZED);

    s.advance(Duration::from_secs(1));
    let t = s.jwt_login("v@example.com").await;
    let res = s.send_as(Method::PATCH, &path, &admin_cookie, &json!({"disabled": true})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(s.me_bearer(&token(&t, "access_token")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        s.send_as(Method::PATCH, &path, &admin_cookie, &json!({"disabled": false})).await.status(),
        StatusCode::OK
    );

    // A role granted: the old token (without it) dies, the refreshed one carries it.
    s.advance(Duration::from_secs(1));
    let t = s.jwt_login("v@example.com").await;
    let res = s.send_as(Method::PATCH, &path, &admin_cookie, &json!({"roles": ["billing"]})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(s.me_bearer(&token(&t, "access_token")).await, StatusCode::UNAUTHORIZED);
    let res = s.refresh(&token(&t, "refresh_token")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let fresh = token(&res.json::<Value>().await.expect("json"), "access_token");
    let me: Value = s.bearer(Method::GET, "/v1/me", &fresh).send().await.expect("send").json().await.expect("json");
    assert_eq!(me["roles"], json!(["billing", "user"]));
}

#[tokio::test]
async fn ending_a_jwt_session_from_the_device_list_kills_its_tokens() {
    let s = TestServer::start().await;
    s.register("dl@example.com").await;
    let phone = s.jwt_login("dl@example.com").await;
    let laptop = s.login("dl@example.com").await;
    let list: Value = s.get_as("/v1/sessions", &laptop).await.json().await.expect("json");
    let phone_entry =
        list["sessions"].as_array().expect("array").iter().find(|x| x["mode"] == "jwt").expect("jwt session").clone();
    let res = s
        .send_as(
            Method::DELETE,
            &format!("/v1/sessions/{}", phone_entry["id"].as_str().expect("id")),
            &laptop,
            &Value::Null,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(s.me_bearer(&token(&phone, "access_token")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(s.refresh(&token(&phone, "refresh_token")).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.me(&laptop).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn with_revocation_off_a_logged_out_token_lives_until_exp() {
    let s = TestServer::start_with(|c| c.jwt.revocation = Revocation::Off).await;
    s.register("off@example.com").await;
    let t = s.jwt_login("off@example.com").await;
    let access = token(&t, "access_token");
    let res = s.bearer(Method::POST, "/v1/logout", &access).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // The textbook caveat: the token is still accepted...
    assert_eq!(s.me_bearer(&access).await, StatusCode::OK);
    // ...but cannot be refreshed, and dies at exp (15 min + 30 s leeway).
    assert_eq!(s.refresh(&token(&t, "refresh_token")).await.status(), StatusCode::UNAUTHORIZED);
    s.advance(Duration::from_secs(15 * 60 + 31));
    expect_invalid_token(s.bearer(Method::GET, "/v1/me", &access).send().await.expect("send")).await;
}

#[tokio::test]
async fn strict_revocation_looks_the_session_up() {
    let s = TestServer::start_with(|c| c.jwt.revocation = Revocation::Strict).await;
    s.register("strict@example.com").await;
    let t = s.jwt_login("strict@example.com").await;
    let access = token(&t, "access_token");
    assert_eq!(s.me_bearer(&access).await, StatusCode::OK);
    // Deleting the record behind the server's back (as another node or an operator would)
    // is enough in strict mode: no revocation event is needed.
    let me: Value = s.bearer(Method::GET, "/v1/me", &access).send().await.expect("send").json().await.expect("json");
    let sid = portcullis_core::SessionId::parse(me["auth"]["session_id"].as_str().expect("sid")).expect("sid");
    assert!(s.service.sessions.delete(&sid).await.expect("delete"));
    expect_invalid_token(s.bearer(Method::GET, "/v1/me", &access).send().await.expect("send")).await;
}

#[tokio::test]
async fn access_tokens_expire_and_refresh_goes_on() {
    let s = TestServer::start_with(|c| {
        c.jwt.access_ttl = Duration::from_secs(60);
        c.jwt.leeway = Duration::from_secs(0);
    })
    .await;
    s.register("exp@example.com").await;
    let t = s.jwt_login("exp@example.com").await;
    assert_eq!(t["expires_in"], 60);
    s.advance(Duration::from_secs(59));
    assert_eq!(s.me_bearer(&token(&t, "access_token")).await, StatusCode::OK);
    s.advance(Duration::from_secs(2));
    expect_invalid_token(s.bearer(Method::GET, "/v1/me", &token(&t, "access_token")).send().await.expect("send")).await;
    let res = s.refresh(&token(&t, "refresh_token")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let fresh = token(&res.json::<Value>().await.expect("json"), "access_token");
    assert_eq!(s.me_bearer(&fresh).await, StatusCode::OK);
}

#[tokio::test]
async fn the_login_itself_expires_after_refresh_ttl() {
    let s = TestServer::start_with(|c| c.jwt.refresh_ttl = Duration::from_secs(3600)).await;
    s.register("life@example.com").await;
    let t = s.jwt_login("life@example.com").await;
    assert_eq!(t["refresh_expires_in"], 3600);
    s.advance(Duration::from_secs(3601));
    expect_problem(s.refresh(&token(&t, "refresh_token")).await, StatusCode::UNAUTHORIZED, "invalid_refresh_token")
        .await;
}

#[tokio::test]
async fn cookie_transport_for_browser_apps() {
    let s = TestServer::start().await;
    s.register("c@example.com").await;
    let res = s
        .post_json(
            "/v1/login",
            &json!({"email": "c@example.com", "password": PASSWORD, "mode": "jwt", "transport": "cookie"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let set = crate::common::set_cookies(&res);
    let body: Value = res.json().await.expect("json");
    assert!(body.get("access_token").is_none() && body.get("refresh_token").is_none(), "{body}");
    let find = |name: &str| {
        set.iter().find(|c| c.starts_with(&format!("{name}="))).cloned().unwrap_or_else(|| panic!("{name} in {set:?}"))
    };
    let at = find("__Host-portcullis-at");
    let rt = find("__Host-portcullis-rt");
    for c in [&at, &rt] {
        assert!(
            c.contains("HttpOnly") && c.contains("Secure") && c.contains("SameSite=Lax") && c.contains("Path=/"),
            "{c}"
        );
    }
    let at_pair = at.split(';').next().expect("pair").to_owned();
    let rt_pair = rt.split(';').next().expect("pair").to_owned();
    let me = s.get_as("/v1/me", &at_pair).await;
    assert_eq!(me.status(), StatusCode::OK);
    assert_eq!(me.json::<Value>().await.expect("json")["auth"]["mode"], "jwt");

    // Refresh from the cookie alone; a cross-site attempt is refused first.
    let res = s
        .post("/v1/token/refresh")
        .header("cookie", &rt_pair)
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("send");
    expect_problem(res, StatusCode::FORBIDDEN, "cross_site_request").await;
    let res = s.post_as("/v1/token/refresh", &rt_pair).await;
    assert_eq!(res.status(), StatusCode::OK);
    let set = crate::common::set_cookies(&res);
    assert!(
        set.iter().any(|c| c.starts_with("__Host-portcullis-at="))
            && set.iter().any(|c| c.starts_with("__Host-portcullis-rt=")),
        "{set:?}"
    );
    // Logging out clears all credential cookies.
    let res = s.post_as("/v1/logout", &at_pair).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let cleared = crate::common::set_cookies(&res);
    assert_eq!(cleared.iter().filter(|c| c.contains("Max-Age=0")).count(), 3, "{cleared:?}");
}

#[tokio::test]
async fn form_field_and_query_parameter_tokens() {
    let s = TestServer::start().await;
    s.register("f@example.com").await;
    let access = token(&s.jwt_login("f@example.com").await, "access_token");
    // A query parameter is refused by default (RFC 6750 §2.3, OWASP).
    let res = s.get(&format!("/v1/me?access_token={access}")).send().await.expect("send");
    expect_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    // A form field works (RFC 6750 §2.2).
    let res = s
        .post("/v1/logout")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("access_token={access}"))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(s.me_bearer(&access).await, StatusCode::UNAUTHORIZED);

    let s = TestServer::start_with(|c| c.jwt.allow_query_token = true).await;
    s.register("q@example.com").await;
    let access = token(&s.jwt_login("q@example.com").await, "access_token");
    let res = s.get(&format!("/v1/me?access_token={access}")).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn token_revocation_endpoint_follows_rfc_7009() {
    let s = TestServer::start().await;
    s.register("rv@example.com").await;
    let t = s.jwt_login("rv@example.com").await;
    let revoke = |tok: String| s.post("/v1/token/revoke").json(&json!({"token": tok})).send();
    assert_eq!(revoke(token(&t, "access_token")).await.expect("send").status(), StatusCode::OK);
    assert_eq!(s.me_bearer(&token(&t, "access_token")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        s.refresh(&token(&t, "refresh_token")).await.status(),
        StatusCode::OK,
        "revoking an access token leaves the login"
    );
    let t = s.jwt_login("rv@example.com").await;
    assert_eq!(revoke(token(&t, "refresh_token")).await.expect("send").status(), StatusCode::OK);
    assert_eq!(s.refresh(&token(&t, "refresh_token")).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.me_bearer(&token(&t, "access_token")).await, StatusCode::UNAUTHORIZED, "and its access tokens");
    // Unknown and malformed tokens: still 200. A form body works too.
    assert_eq!(revoke("garbage".into()).await.expect("send").status(), StatusCode::OK);
    let res = s
        .post("/v1/token/revoke")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=abc&token_type_hint=refresh_token")
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    expect_problem(s.post_json("/v1/token/revoke", &json!({})).await, StatusCode::BAD_REQUEST, "invalid_body").await;
}

/// What public-client libraries send: `client_id` beside the token (authlib's `revoke_token`),
/// form bodies with `grant_type=refresh_token`. Unknown parameters are ignored (RFC 6749 §3.2),
/// and errors carry RFC 6749 §5.2's `error` and `error_description` beside the problem fields.
#[tokio::test]
async fn oauth_clients_can_refresh_and_revoke_as_the_rfcs_say() {
    let s = TestServer::start().await;
    s.register("oc@example.com").await;
    let form = |path: &str, body: String| {
        s.post(path).header("content-type", "application/x-www-form-urlencoded").body(body).send()
    };
    // Revocation with client_id (form and JSON): the token is revoked, not left valid.
    let t = s.jwt_login("oc@example.com").await;
    let res = form(
        "/v1/token/revoke",
        format!("token={}&token_type_hint=access_token&client_id=app", token(&t, "access_token")),
    )
    .await
    .expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(s.me_bearer(&token(&t, "access_token")).await, StatusCode::UNAUTHORIZED);
    let res = s.post_json("/v1/token/revoke", &json!({"token": token(&t, "refresh_token"), "client_id": "app"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(s.refresh(&token(&t, "refresh_token")).await.status(), StatusCode::UNAUTHORIZED);

    // Refresh as an OAuth client sends it.
    let t = s.jwt_login("oc@example.com").await;
    let res = form(
        "/v1/token/refresh",
        format!("grant_type=refresh_token&refresh_token={}&client_id=app&scope=openid", token(&t, "refresh_token")),
    )
    .await
    .expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    let next: Value = res.json().await.expect("json");
    assert_eq!(next["token_type"], "Bearer");
    assert_eq!(s.me_bearer(&token(&next, "access_token")).await, StatusCode::OK);

    // Errors in both shapes.
    // Past the racing-tabs grace, the rotated-away token is a reuse.
    s.advance(Duration::from_secs(10));
    let res = form("/v1/token/refresh", "grant_type=password&refresh_token=x".into()).await.expect("send");
    let body = expect_problem(res, StatusCode::BAD_REQUEST, "unsupported_grant_type").await;
    assert_eq!(body["error"], "unsupported_grant_type");
    let res =
        form("/v1/token/refresh", format!("grant_type=refresh_token&refresh_token={}", token(&t, "refresh_token")))
            .await
            .expect("send");
    let body = expect_problem(res, StatusCode::UNAUTHORIZED, "refresh_reused").await;
    assert_eq!(body["error"], "invalid_grant");
    assert!(body["error_description"].as_str().is_some_and(|d| !d.is_empty()), "{body}");
    let body = expect_problem(
        s.post_json("/v1/token/revoke", &json!({"client_id": "app"})).await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    )
    .await;
    assert_eq!(body["error"], "invalid_request");
    // Other endpoints keep the problem fields only.
    let body =
        expect_problem(s.post_json("/v1/login", &json!({})).await, StatusCode::BAD_REQUEST, "invalid_body").await;
    assert!(body.get("error").is_none(), "{body}");
}

/// A real OAuth 2.0 client library (the `oauth2` crate) refreshes with our token endpoint and
/// reads our errors as RFC 6749 errors.
#[tokio::test]
async fn the_oauth2_crate_refreshes_and_reads_errors() {
    use oauth2::basic::{BasicClient, BasicErrorResponseType};
    use oauth2::{ClientId, RefreshToken, RequestTokenError, TokenResponse, TokenUrl};
    let s = TestServer::start().await;
    s.register("lib@example.com").await;
    let t = s.jwt_login("lib@example.com").await;
    let client = BasicClient::new(ClientId::new("some-app".into()))
        .set_token_uri(TokenUrl::new(s.url("/v1/token/refresh")).expect("url"));
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let refreshed = client
        .exchange_refresh_token(&RefreshToken::new(token(&t, "refresh_token")))
        .request_async(&http)
        .await
        .expect("refreshed");
    assert_eq!(s.me_bearer(refreshed.access_token().secret()).await, StatusCode::OK);
    assert!(refreshed.refresh_token().is_some() && refreshed.expires_in().is_some());
    s.advance(Duration::from_secs(10));
    let again =
        client.exchange_refresh_token(&RefreshToken::new(token(&t, "refresh_token"))).request_async(&http).await;
    match again {
        Err(RequestTokenError::ServerResponse(e)) => assert_eq!(*e.error(), BasicErrorResponseType::InvalidGrant),
        other => panic!("expected invalid_grant, got {other:?}"),
    }
}

/// Access tokens carry RFC 9068's required `client_id`: the first-party client's for logins
/// through Portcullis itself.
#[tokio::test]
async fn access_tokens_name_their_client() {
    let s = TestServer::start().await;
    s.register("cid@example.com").await;
    let t = s.jwt_login("cid@example.com").await;
    let payload = token(&t, "access_token").split('.').nth(1).expect("payload").to_owned();
    use base64::Engine as _;
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url"))
            .expect("json");
    assert_eq!(claims["client_id"], "portcullis");
    let next: Value = s.refresh(&token(&t, "refresh_token")).await.json().await.expect("json");
    let payload = token(&next, "access_token").split('.').nth(1).expect("payload").to_owned();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url"))
            .expect("json");
    assert_eq!(claims["client_id"], "portcullis", "refreshed tokens too");
}

#[tokio::test]
async fn every_algorithm_issues_verifiable_tokens_and_publishes_only_public_keys() {
    for alg in Algorithm::ALL {
        let s = TestServer::start_with(|c| c.jwt.algorithm = alg).await;
        s.register("alg@example.com").await;
        let access = token(&s.jwt_login("alg@example.com").await, "access_token");
        assert_eq!(s.me_bearer(&access).await, StatusCode::OK, "{alg}");
        let header: Value =
            serde_json::from_slice(&base64_decode(access.split('.').next().expect("header"))).expect("json");
        assert_eq!(header["alg"], alg.as_str());
        assert_eq!(header["typ"], "at+jwt");
        let res = s.get("/.well-known/jwks.json").send().await.expect("send");
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers()["cache-control"].to_str().expect("ascii").contains("max-age"));
        let jwks: Value = res.json().await.expect("json");
        let keys = jwks["keys"].as_array().expect("keys");
        if alg == Algorithm::HS256 {
            assert!(keys.is_empty(), "a shared secret is never published: {jwks}");
            continue;
        }
        assert_eq!(keys.len(), 1, "{jwks}");
        assert_eq!(keys[0]["kid"], header["kid"]);
        assert_eq!(keys[0]["alg"], alg.as_str());
        assert_eq!(keys[0]["use"], "sig");
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(keys[0].get(private).is_none(), "{alg}: {private} published");
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).expect("base64url")
}

#[tokio::test]
async fn a_third_party_library_verifies_our_tokens_from_the_jwks() {
    for alg in [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256] {
        let s = TestServer::start_with(|c| c.jwt.algorithm = alg).await;
        s.register("3p@example.com").await;
        let access = token(&s.jwt_login("3p@example.com").await, "access_token");
        let jwks: jsonwebtoken::jwk::JwkSet =
            s.get("/.well-known/jwks.json").send().await.expect("send").json().await.expect("jwks");
        let header = jsonwebtoken::decode_header(&access).expect("header");
        let jwk = jwks.find(header.kid.as_deref().expect("kid")).expect("kid in jwks");
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("key");
        let lib_alg = match alg {
            Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            _ => jsonwebtoken::Algorithm::RS256,
        };
        let mut validation = jsonwebtoken::Validation::new(lib_alg);
        validation.set_issuer(&[s.base.as_str()]);
        validation.set_audience(&[s.base.as_str()]);
        let data = jsonwebtoken::decode::<Value>(&access, &key, &validation).expect("third-party verification");
        assert_eq!(data.claims["email"], "3p@example.com");
        assert_eq!(data.header.typ.as_deref(), Some("at+jwt"));
        // And it refuses a tampered one.
        let mut tampered = access.clone();
        tampered.pop();
        tampered.push(if access.ends_with('A') { 'B' } else { 'A' });
        assert!(jsonwebtoken::decode::<Value>(&tampered, &key, &validation).is_err());
    }
}

#[tokio::test]
async fn hs256_with_a_configured_secret() {
    let secret = portcullis_core::secret::b64(&[42u8; 32]);
    let s = TestServer::start_with(|c| {
        c.jwt.algorithm = Algorithm::HS256;
        c.jwt.secret = Some(secret.clone());
    })
    .await;
    s.register("hs@example.com").await;
    let access = token(&s.jwt_login("hs@example.com").await, "access_token");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&[s.base.as_str()]);
    let key = jsonwebtoken::DecodingKey::from_secret(&[42u8; 32]);
    assert!(jsonwebtoken::decode::<Value>(&access, &key, &validation).is_ok());
    let wrong = jsonwebtoken::DecodingKey::from_secret(&[43u8; 32]);
    assert!(jsonwebtoken::decode::<Value>(&access, &wrong, &validation).is_err());
}

#[tokio::test]
async fn key_rotation_keeps_old_tokens_valid_and_signs_with_the_new_key() {
    let s = TestServer::start_with(|c| c.jwt.access_ttl = Duration::from_secs(120)).await;
    s.register("rot@example.com").await;
    let old = token(&s.jwt_login("rot@example.com").await, "access_token");
    let old_kid = jsonwebtoken::decode_header(&old).expect("header").kid.expect("kid");
    let new_kid = s.state.service.rotate_keys(Algorithm::ES256, "test").await.expect("rotate").kid;
    assert_ne!(new_kid, old_kid);
    let jwks: Value = s.get("/.well-known/jwks.json").send().await.expect("send").json().await.expect("json");
    let kids: Vec<&str> = jwks["keys"].as_array().expect("keys").iter().filter_map(|k| k["kid"].as_str()).collect();
    assert!(kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()), "{kids:?}");
    assert_eq!(s.me_bearer(&old).await, StatusCode::OK, "tokens signed before the rotation stay valid");
    let new = token(&s.jwt_login("rot@example.com").await, "access_token");
    let header = jsonwebtoken::decode_header(&new).expect("header");
    assert_eq!(header.kid.as_deref(), Some(new_kid.as_str()));
    assert_eq!(format!("{:?}", header.alg), "ES256");
    // Once every token the old key signed has expired, it leaves the key set.
    s.advance(Duration::from_secs(120 + 31));
    s.state.service.tokens.keys.reload().await.expect("reload");
    let jwks: Value = s.get("/.well-known/jwks.json").send().await.expect("send").json().await.expect("json");
    let kids: Vec<&str> = jwks["keys"].as_array().expect("keys").iter().filter_map(|k| k["kid"].as_str()).collect();
    assert_eq!(kids, [new_kid.as_str()]);
}

#[tokio::test]
async fn jwt_sessions_survive_a_restart_with_the_same_keys() {
    // A restarted test server gets a new port; the issuer must not change with it.
    let s = TestServer::start_with(|c| c.public_url = Some("http://portcullis.test".parse().expect("url"))).await;
    s.register("keep@example.com").await;
    let t = s.jwt_login("keep@example.com").await;
    let s = s.restart().await;
    assert_eq!(s.me_bearer(&token(&t, "access_token")).await, StatusCode::OK);
    assert_eq!(s.refresh(&token(&t, "refresh_token")).await.status(), StatusCode::OK);
    // Revocations survive too.
    let t2 = s.jwt_login("keep@example.com").await;
    let res = s.bearer(Method::POST, "/v1/logout", &token(&t2, "access_token")).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let s = s.restart().await;
    assert_eq!(s.me_bearer(&token(&t2, "access_token")).await, StatusCode::UNAUTHORIZED);
}

/// One session may refresh ten times at once; after that it waits, like a failed login.
#[tokio::test]
async fn refreshing_is_rate_limited_per_session() {
    let s = TestServer::start().await;
    s.register("fast@example.com").await;
    let mut rt = token(&s.jwt_login("fast@example.com").await, "refresh_token");
    let other = token(&s.jwt_login("fast@example.com").await, "refresh_token");
    for i in 0..10 {
        let res = s.refresh(&rt).await;
        assert_eq!(res.status(), StatusCode::OK, "refresh {i}");
        rt = token(&res.json().await.expect("json"), "refresh_token");
    }
    let res = s.refresh(&rt).await;
    assert_eq!(res.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts").await;
    assert_eq!(s.refresh(&other).await.status(), StatusCode::OK, "another session is not held up");
    s.advance(Duration::from_secs(1));
    assert_eq!(s.refresh(&rt).await.status(), StatusCode::OK, "the same token works once the wait is over");
}

/// A refresh-then-revoke loop cannot grow the deny-list without bound: a session denies at most
/// eight of its access tokens one by one, and revoking a ninth ends the session.
#[tokio::test]
async fn one_session_cannot_grow_the_deny_list_without_bound() {
    let s = TestServer::start().await;
    s.register("loop@example.com").await;
    let login = s.jwt_login("loop@example.com").await;
    let (before, _) = s.service.replica.sizes();
    let mut rt = token(&login, "refresh_token");
    let mut rounds = 0;
    while rounds < 40 {
        // Past the refresh limit's longest wait, so only the revocation bound can stop this.
        s.advance(Duration::from_secs(61));
        let res = s.refresh(&rt).await;
        if res.status() == StatusCode::UNAUTHORIZED {
            break;
        }
        assert_eq!(res.status(), StatusCode::OK, "round {rounds}");
        let pair: Value = res.json().await.expect("json");
        rt = token(&pair, "refresh_token");
        let res = s.post("/v1/token/revoke").json(&json!({"token": token(&pair, "access_token")})).send().await;
        assert_eq!(res.expect("send").status(), StatusCode::OK);
        rounds += 1;
    }
    assert_eq!(rounds, 9, "the ninth revocation ended the session");
    let (after, _) = s.service.replica.sizes();
    assert_eq!(after - before, 9, "eight tokens and then the session: nine entries");
    assert_eq!(s.me_bearer(&token(&login, "access_token")).await, StatusCode::UNAUTHORIZED);
}
