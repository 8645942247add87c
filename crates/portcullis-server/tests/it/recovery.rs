//! Password reset by email (docs/API.md): the link read from the zero-configuration outbox and
//! from a real SMTP server (Python's aiosmtpd) started by the test, used over the API, on the
//! pages and in a real browser; every earlier sign-in dead afterwards; hostile uses of a link
//! (twice, expired, for another account, unknown emails) refused.

use std::path::Path;
use std::time::{Duration, Instant};

use portcullis_core::{ClientInfo, Clock as _};
use portcullis_lab::{Smtp, require};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestServer, expect_problem, session_cookie};

const NEW_PASSWORD: &str = "a brand new passphrase";

/// Waits (at most ten seconds) until `read` finds `count` messages; they, oldest first. The
/// message is sent after the answer, so it may take a moment to arrive.
pub(crate) async fn wait_for_messages(count: usize, read: impl Fn() -> Vec<String>) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let messages = read();
        if messages.len() >= count {
            return messages;
        }
        assert!(Instant::now() < deadline, "{count} messages expected, {} arrived", messages.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The messages in the server's outbox directory, oldest first (the file names start with the
/// time they were written).
pub(crate) fn outbox(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut paths: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    paths.sort();
    paths.iter().filter_map(|p| std::fs::read_to_string(p).ok()).collect()
}

/// The reset link in a message, its transfer encoding undone (a long link is quoted-printable).
fn link_in(message: &str, base: &str) -> String {
    link_to(message, base, "/password/reset")
}

/// The link to `path` in a message, its transfer encoding undone.
pub(crate) fn link_to(message: &str, base: &str, path: &str) -> String {
    // The outbox keeps the message's CRLFs; a Maildir has plain line ends.
    let message = message.replace("\r\n", "\n");
    let (headers, body) = message.split_once("\n\n").expect("headers and a body");
    let body = if headers.to_ascii_lowercase().contains("content-transfer-encoding: quoted-printable") {
        let bytes = quoted_printable::decode(body, quoted_printable::ParseMode::Robust).expect("quoted-printable");
        String::from_utf8(bytes).expect("text")
    } else {
        body.to_owned()
    };
    let start = body.find(&format!("{base}{path}?token=")).unwrap_or_else(|| panic!("no link in {body}"));
    body[start..].split_whitespace().next().expect("the link").to_owned()
}

pub(crate) fn token_of(link: &str) -> String {
    link.split_once("token=").expect("a token").1.to_owned()
}

async fn forgot(s: &TestServer, email: &str) {
    let res = s.post_json("/v1/password/forgot", &json!({"email": email})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED, "forgot {email}");
}

async fn reset(s: &TestServer, token: &str, password: &str) -> reqwest::Response {
    s.post_json("/v1/password/reset", &json!({"token": token, "new_password": password})).await
}

async fn login_status(s: &TestServer, email: &str, password: &str) -> StatusCode {
    s.post_json("/v1/login", &json!({"email": email, "password": password})).await.status()
}

async fn audit_kinds(s: &TestServer) -> Vec<(String, String)> {
    let query = portcullis_store::AuditQuery { limit: 500, ..Default::default() };
    let events = s.service.audit_events(&query).await.expect("audit");
    events.into_iter().map(|e| (e.event.kind, e.event.outcome)).collect()
}

#[tokio::test]
async fn a_forgotten_password_is_reset_with_the_outbox_link_and_every_sign_in_ends() {
    let s = TestServer::start().await;
    let (_, cookie) = s.user("forgetful@example.com").await;
    let jwt = s.jwt_login("forgetful@example.com").await;
    let access = jwt["access_token"].as_str().expect("access token");
    let refresh = jwt["refresh_token"].as_str().expect("refresh token");

    forgot(&s, "forgetful@example.com").await;
    let dir = s.data_dir().join("outbox");
    let messages = wait_for_messages(1, || outbox(&dir)).await;
    assert_eq!(messages.len(), 1);
    assert!(messages[0].contains("To: forgetful@example.com"), "{}", messages[0]);
    assert!(messages[0].contains("Subject: Reset your password"), "{}", messages[0]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700, "the outbox holds live links");
        let file = std::fs::read_dir(&dir).expect("outbox").next().expect("a file").expect("entry").path();
        assert_eq!(mode(&file), 0o600);
    }
    let token = token_of(&link_in(&messages[0], &s.base));
    assert_eq!(token.len(), 43, "256 bits, base64url");

    // A password the policy refuses does not spend the link.
    expect_problem(reset(&s, &token, "short").await, StatusCode::BAD_REQUEST, "invalid_password").await;
    assert_eq!(s.me(&cookie).await.status(), StatusCode::OK, "nothing changed yet");

    let res = reset(&s, &token, NEW_PASSWORD).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(s.me(&cookie).await.status(), StatusCode::UNAUTHORIZED, "the session ended");
    assert_eq!(s.me_bearer(access).await, StatusCode::UNAUTHORIZED, "the access token was revoked");
    assert_eq!(s.refresh(refresh).await.status(), StatusCode::UNAUTHORIZED, "the refresh token was revoked");
    assert_eq!(login_status(&s, "forgetful@example.com", PASSWORD).await, StatusCode::UNAUTHORIZED);
    assert_eq!(login_status(&s, "forgetful@example.com", NEW_PASSWORD).await, StatusCode::OK);

    // The link works once.
    expect_problem(reset(&s, &token, "yet another passphrase").await, StatusCode::BAD_REQUEST, "invalid_reset_token")
        .await;
    assert_eq!(login_status(&s, "forgetful@example.com", NEW_PASSWORD).await, StatusCode::OK);
    let kinds = audit_kinds(&s).await;
    assert!(kinds.contains(&("password_reset_requested".into(), "success".into())), "{kinds:?}");
    assert!(kinds.contains(&("password_reset".into(), "success".into())), "{kinds:?}");
}

#[tokio::test]
async fn reset_links_expire_belong_to_one_account_and_are_not_made_for_unknown_emails() {
    let s = TestServer::start().await;
    s.register("alice@example.com").await;
    s.register("bob@example.com").await;
    let client = ClientInfo::default();

    // Unknown and malformed emails answer like a known one, and make no link.
    forgot(&s, "nobody@example.com").await;
    forgot(&s, "not an email").await;
    assert!(s.service.begin_password_reset("nobody@example.com", &client).await.expect("store").is_none());
    assert!(s.service.begin_password_reset("not an email", &client).await.expect("store").is_none());

    // An expired link.
    let letter = s.service.begin_password_reset("alice@example.com", &client).await.expect("store").expect("a link");
    s.advance(portcullis_service::RESET_TOKEN_TTL + Duration::from_secs(1));
    expect_problem(reset(&s, &letter.token, NEW_PASSWORD).await, StatusCode::BAD_REQUEST, "invalid_reset_token").await;
    assert_eq!(login_status(&s, "alice@example.com", PASSWORD).await, StatusCode::OK);

    // Alice's link changes Alice's password, never Bob's; her other links stop working.
    let first = s.service.begin_password_reset("alice@example.com", &client).await.expect("store").expect("a link");
    let second = s.service.begin_password_reset("alice@example.com", &client).await.expect("store").expect("a link");
    assert_ne!(first.token, second.token);
    assert_eq!(reset(&s, &first.token, NEW_PASSWORD).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(login_status(&s, "alice@example.com", NEW_PASSWORD).await, StatusCode::OK);
    assert_eq!(login_status(&s, "bob@example.com", PASSWORD).await, StatusCode::OK);
    assert_eq!(login_status(&s, "bob@example.com", NEW_PASSWORD).await, StatusCode::UNAUTHORIZED);
    expect_problem(
        reset(&s, &second.token, "third passphrase here").await,
        StatusCode::BAD_REQUEST,
        "invalid_reset_token",
    )
    .await;

    // Made-up and oversized tokens.
    for token in ["", "x", &"A".repeat(43), &"A".repeat(10_000)] {
        expect_problem(reset(&s, token, NEW_PASSWORD).await, StatusCode::BAD_REQUEST, "invalid_reset_token").await;
    }

    // At most three links an hour for one account (two were made above, and the expired one).
    let fourth = s.service.begin_password_reset("alice@example.com", &client).await.expect("store");
    assert!(fourth.is_none(), "a fourth link within the hour");
    s.advance(Duration::from_secs(3600));
    assert!(s.service.begin_password_reset("alice@example.com", &client).await.expect("store").is_some());

    // A disabled account gets no link.
    let email = portcullis_core::Email::parse("bob@example.com").expect("email");
    let bob = s.service.users.user_by_email(&email).await.expect("store").expect("bob").0;
    let update = portcullis_store::UserUpdate { disabled: Some(true), ..Default::default() };
    s.service.users.update_user(&bob.id, update, s.clock.now()).await.expect("store").expect("bob");
    assert!(s.service.begin_password_reset("bob@example.com", &client).await.expect("store").is_none());
}

#[tokio::test]
async fn forgot_and_reset_refuse_malformed_requests_with_problems() {
    let s = TestServer::start().await;
    let bad = [
        ("/v1/password/forgot", json!({})),
        ("/v1/password/forgot", json!({"email": 5})),
        ("/v1/password/forgot", json!({"email": "a@example.com", "extra": 1})),
        ("/v1/password/reset", json!({"token": "x"})),
        ("/v1/password/reset", json!({"new_password": NEW_PASSWORD})),
    ];
    for (path, body) in bad {
        expect_problem(s.post_json(path, &body).await, StatusCode::BAD_REQUEST, "invalid_body").await;
    }
    let res = s.request(Method::POST, "/v1/password/forgot").body("{").header("content-type", "application/json");
    expect_problem(res.send().await.expect("send"), StatusCode::BAD_REQUEST, "invalid_json").await;
}

#[tokio::test]
async fn the_pages_reset_a_password_from_the_link_in_the_outbox() {
    let s = TestServer::start().await;
    let (_, cookie) = s.user("pages@example.com").await;
    let login = s.get("/login").send().await.expect("send").text().await.expect("text");
    assert!(login.contains("href=\"/password/forgot\""), "the sign-in page links to the reset");
    let page = s.get("/password/forgot").send().await.expect("send");
    assert_eq!(page.status(), StatusCode::OK);
    let form = [("email", "pages@example.com")];
    let res = s.post("/password/forgot").form(&form).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    let answered = res.text().await.expect("text");
    let unknown = s.post("/password/forgot").form(&[("email", "nobody@example.com")]).send().await.expect("send");
    assert_eq!(unknown.status(), StatusCode::OK);
    assert_eq!(unknown.text().await.expect("text"), answered, "the same page whatever the email");

    let dir = s.data_dir().join("outbox");
    let link = link_in(&wait_for_messages(1, || outbox(&dir)).await[0], &s.base);
    let page = s.client.get(&link).send().await.expect("send");
    assert_eq!(page.status(), StatusCode::OK);
    let token = token_of(&link);
    assert!(page.text().await.expect("text").contains(&format!("value=\"{token}\"")), "the form carries the token");
    let res = s.post("/password/reset").form(&[("token", token.as_str()), ("new_password", "short")]);
    assert_eq!(res.send().await.expect("send").status(), StatusCode::BAD_REQUEST);
    let res = s.post("/password/reset").form(&[("token", token.as_str()), ("new_password", NEW_PASSWORD)]);
    let res = res.send().await.expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.expect("text").contains("Your password is changed"));
    assert_eq!(s.me(&cookie).await.status(), StatusCode::UNAUTHORIZED);
    assert!(
        session_cookie(
            &s.post_json("/v1/login", &json!({"email": "pages@example.com", "password": NEW_PASSWORD})).await
        )
        .is_some()
    );
    let again = s.post("/password/reset").form(&[("token", token.as_str()), ("new_password", NEW_PASSWORD)]);
    let again = again.send().await.expect("send");
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    assert!(again.text().await.expect("text").contains("expired or was already used"));
}

#[tokio::test]
async fn the_reset_link_arrives_through_a_real_smtp_server() {
    let Some(smtp) = require("password reset over SMTP", Smtp::start()) else { return };
    let s = TestServer::start_with(|settings| {
        settings.smtp.url = Some(smtp.url());
        settings.smtp.tls = portcullis_server::settings::SmtpTls::None;
        settings.smtp.from = "Accounts <accounts@example.com>".into();
    })
    .await;
    let (_, cookie) = s.user("mailed@example.com").await;
    forgot(&s, "mailed@example.com").await;
    let messages = wait_for_messages(1, || smtp.messages()).await;
    assert!(messages[0].contains("From: Accounts <accounts@example.com>"), "{}", messages[0]);
    assert!(messages[0].contains("To: mailed@example.com"), "{}", messages[0]);
    assert!(!s.data_dir().join("outbox").exists(), "with SMTP nothing goes to the outbox");
    let token = token_of(&link_in(&messages[0], &s.base));
    assert_eq!(reset(&s, &token, NEW_PASSWORD).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(s.me(&cookie).await.status(), StatusCode::UNAUTHORIZED);
    let _: Value =
        expect_problem(reset(&s, &token, NEW_PASSWORD).await, StatusCode::BAD_REQUEST, "invalid_reset_token").await;
}
