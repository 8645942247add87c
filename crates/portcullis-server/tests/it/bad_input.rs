//! Bad input of every kind gets a clear 4xx problem+json answer, never a 5xx, and leaves what
//! is stored intact.

use crate::common::{COOKIE, PASSWORD, TestServer, expect_problem};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn malformed_bodies_get_clear_400s() {
    let s = TestServer::start().await;
    let (_, cookie) = s.user("victim@example.com").await;
    let json_endpoints = ["/v1/register", "/v1/login", "/v1/password", "/v1/password/forgot", "/v1/password/reset"];
    let cases: Vec<(&str, &str, StatusCode, &str)> = vec![
        ("application/json", "{", StatusCode::BAD_REQUEST, "invalid_json"),
        ("application/json", "", StatusCode::BAD_REQUEST, "invalid_json"),
        ("application/json", "[]", StatusCode::BAD_REQUEST, "invalid_body"),
        ("application/json", "null", StatusCode::BAD_REQUEST, "invalid_body"),
        ("application/json", "{\"email\": 5, \"password\": true}", StatusCode::BAD_REQUEST, "invalid_body"),
        ("application/json", "{\"unexpected\": 1}", StatusCode::BAD_REQUEST, "invalid_body"),
        ("application/json", "{\"\\ud800\": 1}", StatusCode::BAD_REQUEST, "invalid_json"),
        ("application/json", "\u{feff}{}", StatusCode::BAD_REQUEST, "invalid_json"),
        ("text/plain", "{}", StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        ("application/xml", "<a/>", StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
    ];
    for path in json_endpoints {
        for (ct, body, status, code) in &cases {
            let res = s
                .post(path)
                .header("cookie", &cookie)
                .header("content-type", *ct)
                .body(body.to_string())
                .send()
                .await
                .expect("send");
            let got = expect_problem(res, *status, code).await;
            assert!(got["detail"].is_string(), "{path} {body:?}: {got}");
        }
        let res = s.post(path).header("cookie", &cookie).body("{}").send().await.expect("send");
        expect_problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;
    }
    // Missing fields are named.
    let res = s.post_json("/v1/login", &json!({"email": "victim@example.com"})).await;
    let body = expect_problem(res, StatusCode::BAD_REQUEST, "invalid_body").await;
    assert!(body["detail"].as_str().expect("detail").contains("password"), "{body}");
    // Unknown modes are refused clearly.
    for mode in [json!("cookie"), json!(""), json!(1), json!(null)] {
        let res =
            s.post_json("/v1/login", &json!({"email": "victim@example.com", "password": PASSWORD, "mode": mode})).await;
        assert_eq!(res.status(), if mode.is_null() { StatusCode::OK } else { StatusCode::BAD_REQUEST }, "{mode}");
    }
    // A broken form body.
    let res = s
        .post("/v1/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=a%40example.com&mode=session")
        .send()
        .await
        .expect("send");
    expect_problem(res, StatusCode::BAD_REQUEST, "invalid_body").await;

    // After all that, the account is as it was.
    assert_eq!(s.me(&cookie).await.status(), StatusCode::OK);
    s.login("victim@example.com").await;
}

#[tokio::test]
async fn oversized_bodies_are_refused_before_parsing() {
    let s = TestServer::start().await;
    let big = format!("{{\"email\":\"a@example.com\",\"password\":\"{}\"}}", "x".repeat(70 * 1024));
    for path in ["/v1/register", "/v1/login"] {
        let res = s.post(path).header("content-type", "application/json").body(big.clone()).send().await.expect("send");
        expect_problem(res, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    }
    // Without a Content-Length (chunked), the cap still holds.
    let response = raw_chunked_post(&s, "/v1/login", 80, 1024).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("application/problem+json"), "{response}");
    assert!(response.contains("payload_too_large"), "{response}");
}

/// Sends `chunks` chunks of `size` spaces as a chunked JSON body over a raw socket and returns
/// what the server answered.
async fn raw_chunked_post(s: &TestServer, path: &str, chunks: usize, size: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = s.base.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.expect("write head");
    let chunk = format!("{size:x}\r\n{}\r\n", " ".repeat(size));
    for _ in 0..chunks {
        // The server may answer and stop reading before the body ends.
        if sock.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = sock.write_all(b"0\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), sock.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn unknown_routes_methods_and_odd_credentials() {
    let s = TestServer::start().await;
    let (_, cookie) = s.user("odd@example.com").await;
    expect_problem(s.get("/nope").send().await.expect("send"), StatusCode::NOT_FOUND, "not_found").await;
    expect_problem(
        s.get("/v1/login").send().await.expect("send"),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    let res = s.request(Method::PUT, "/v1/me").send().await.expect("send");
    assert!(res.headers().contains_key("allow"));
    expect_problem(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;

    let value = cookie.split_once('=').expect("pair").1.to_owned();
    let odd_cookies = [
        format!("{COOKIE}="),
        COOKIE.to_string(),
        format!("{COOKIE}={}", "A".repeat(4000)),
        format!("{COOKIE}={value}x"),
        format!("{COOKIE}= {value}"),
        format!("{COOKIE}={}", value.replace('.', "%2E")),
        format!("{COOKIE}=../../etc/passwd"),
        format!("{COOKIE}=\u{e9}\u{e9}"),
        format!("{}={value}", COOKIE.to_lowercase()),
        format!("portcullis={value}"),
    ];
    for c in &odd_cookies {
        let res = s.get("/v1/me").header("cookie", c.as_bytes()).send().await.expect("send");
        expect_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    }
    // Among several cookies, ours is found.
    let res = s.get("/v1/me").header("cookie", format!("a=b; {cookie}; c=d")).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    for auth in ["Bearer", "Basic Zm9vOmJhcg==", "Bearer \u{e9}", ""] {
        let res = s.get("/v1/me").header("authorization", auth.as_bytes()).send().await.expect("send");
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
    }
    let res = s.get_as("/v1/verify?role=%ZZ", &cookie).await;
    assert!(res.status().is_client_error(), "{}", res.status());
}

#[tokio::test]
async fn hostile_strings_are_stored_and_answered_safely() {
    let s = TestServer::start().await;
    let emails = [
        "a@b",
        "\"quoted\"@example.com",
        "x@[127.0.0.1]",
        "<script>@example.com",
        "a@b@c.com",
        "robert'); DROP TABLE users;--@example.com",
    ];
    for e in emails {
        let res = s.post_json("/v1/register", &json!({"email": e, "password": PASSWORD})).await;
        assert!(
            res.status() == StatusCode::CREATED || res.status() == StatusCode::BAD_REQUEST,
            "{e}: {}",
            res.status()
        );
    }
    let long_email = format!("{}@example.com", "a".repeat(10_000));
    let res = s.post_json("/v1/register", &json!({"email": long_email, "password": PASSWORD})).await;
    expect_problem(res, StatusCode::BAD_REQUEST, "invalid_email").await;
    // A user agent far beyond any real one is stored cut, not refused.
    s.register("ua@example.com").await;
    let res = s
        .post("/v1/login")
        .header("user-agent", "U".repeat(8000))
        .json(&json!({"email": "ua@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = crate::common::session_cookie(&res).expect("cookie");
    let list: serde_json::Value = s.get_as("/v1/sessions", &cookie).await.json().await.expect("json");
    assert_eq!(list["sessions"][0]["user_agent"].as_str().expect("ua").len(), 512);
    // The users table survived every attempt.
    assert_eq!(s.me(&cookie).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn token_endpoints_refuse_bad_input_clearly() {
    let s = TestServer::start().await;
    for path in ["/v1/token/refresh", "/v1/token/revoke"] {
        let res = s.post(path).header("content-type", "application/json").body("{").send().await.expect("send");
        expect_problem(res, StatusCode::BAD_REQUEST, "invalid_json").await;
        let res = s
            .post(path)
            .header("content-type", "application/json")
            .body("{\"refresh_token\":5,\"token\":5}")
            .send()
            .await
            .expect("send");
        expect_problem(res, StatusCode::BAD_REQUEST, "invalid_body").await;
        let big = format!("{{\"token\":\"{}\"}}", "x".repeat(70 * 1024));
        let res = s.post(path).header("content-type", "application/json").body(big).send().await.expect("send");
        expect_problem(res, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    }
    // No body and no refresh cookie.
    let res = s.post("/v1/token/refresh").send().await.expect("send");
    expect_problem(res, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;
    for junk in [
        "",
        "a.b.c",
        "....",
        &"A".repeat(5000),
        "AAAAAAAAAAAAAAAAAAAAAA.-1.AAAA",
        "AAAAAAAAAAAAAAAAAAAAAA.99999999999999999999999.AAAA",
    ] {
        let res = s.post_json("/v1/token/refresh", &json!({"refresh_token": junk})).await;
        expect_problem(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    }
    let res = s
        .post_json(
            "/v1/login",
            &json!({"email": "a@example.com", "password": PASSWORD, "mode": "jwt", "transport": "pigeon"}),
        )
        .await;
    expect_problem(res, StatusCode::BAD_REQUEST, "unsupported_transport").await;
    let res = s.get(&format!("/v1/me?access_token={}", "A".repeat(10_000))).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res =
        s.get("/v1/me").header("authorization", format!("Bearer {}", "A".repeat(20_000))).send().await.expect("send");
    assert!(
        res.status() == StatusCode::UNAUTHORIZED || res.status() == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "{}",
        res.status()
    );
}

/// The provider's endpoints answer malformed requests with a clear 4xx: problem+json carrying
/// RFC 6749's `error` at the client endpoints, pages at the person's, `413` past the body limit; never a 500.
#[tokio::test]
async fn provider_endpoints_refuse_bad_input_clearly() {
    let s = TestServer::start().await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let big = format!("token={}", "x".repeat(70 * 1024));
    for path in ["/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"] {
        for (content_type, body) in [
            ("application/json", "{\"grant_type\":\"client_credentials\"}".to_owned()),
            ("application/x-www-form-urlencoded", "grant_type=a&grant_type=b&token=x&token=y".to_owned()),
            ("application/x-www-form-urlencoded", "%ZZ=%%%&=&&&".to_owned()),
            ("text/plain", String::new()),
        ] {
            let res = client.post(s.url(path)).header("content-type", content_type).body(body.clone()).send();
            let res = res.await.expect("send");
            assert!(res.status().is_client_error(), "{path} {body:?}: {}", res.status());
            let status = res.status();
            assert_eq!(
                res.headers().get("content-type").and_then(|v| v.to_str().ok()),
                Some("application/problem+json")
            );
            let answer: serde_json::Value = res.json().await.expect("json");
            assert!(answer["error"].is_string(), "{path}: {answer}");
            assert_eq!(answer["code"], answer["error"], "{path}: {answer}");
            assert_eq!(answer["status"], status.as_u16(), "{path}: {answer}");
        }
        let res =
            client.post(s.url(path)).header("content-type", "application/x-www-form-urlencoded").body(big.clone());
        expect_problem(res.send().await.expect("send"), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
        let invalid_utf8 = client
            .post(s.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(vec![b't', b'o', b'k', b'e', b'n', b'=', 0xff, 0xfe]);
        assert!(invalid_utf8.send().await.expect("send").status().is_client_error(), "{path}");
    }
    for query in [
        "client_id=a&client_id=b",
        "%ZZ",
        &format!("client_id={}", "x".repeat(10_000)),
        "response_type=code&client_id=%00&redirect_uri=%FF",
        "",
    ] {
        for path in ["/oauth2/authorize", "/oauth2/logout"] {
            let res = client.get(s.url(&format!("{path}?{query}"))).send().await.expect("send");
            let status = res.status();
            assert!(status.is_client_error() || status == StatusCode::OK, "{path}?{query}: {status}");
            assert!(res.headers().get("location").is_none(), "{path}?{query} must not redirect");
        }
    }
    let res =
        client.post(s.url("/oauth2/authorize")).header("content-type", "application/x-www-form-urlencoded").body(big);
    expect_problem(res.send().await.expect("send"), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let res = client.get(s.url("/oauth2/userinfo")).header("authorization", "Bearer ....").send().await.expect("send");
    expect_problem(res, StatusCode::UNAUTHORIZED, "invalid_token").await;
}
