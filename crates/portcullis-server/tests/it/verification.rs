//! Email verification at registration (`registration.verify_email`): the link read from the
//! zero-configuration outbox and from a real SMTP server (aiosmtpd), followed over the API and on
//! the pages; sign-ins refused until then; hostile links (made up, changed, expired, for an
//! account made again) refused; new links limited; administrators vouching for an address.

use std::time::{Duration, Instant};

use portcullis_core::ClientInfo;
use portcullis_lab::{Smtp, require};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestServer, expect_problem, session_cookie};
use crate::recovery::{link_to, outbox, token_of, wait_for_messages};

async fn verifying() -> TestServer {
    TestServer::start_with(|s| s.registration.verify_email = true).await
}

async fn register(s: &TestServer, email: &str) -> Value {
    let res = s.post_json("/v1/register", &json!({"email": email, "password": PASSWORD})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json::<Value>().await.expect("json")["user"].clone()
}

async fn login(s: &TestServer, email: &str, password: &str, mode: &str) -> reqwest::Response {
    s.post_json("/v1/login", &json!({"email": email, "password": password, "mode": mode})).await
}

async fn verify(s: &TestServer, token: &str) -> reqwest::Response {
    s.post_json("/v1/email/verify", &json!({"token": token})).await
}

/// The verification tokens in the outbox once `count` messages are there, oldest first.
async fn tokens(s: &TestServer, count: usize) -> Vec<String> {
    let dir = s.data_dir().join("outbox");
    let messages = wait_for_messages(count, || outbox(&dir)).await;
    messages.iter().map(|m| token_of(&link_to(m, &s.base, "/verify-email"))).collect()
}

async fn audit(s: &TestServer) -> Vec<(String, String, Option<String>)> {
    let query = portcullis_store::AuditQuery { limit: 500, ..Default::default() };
    let events = s.service.audit_events(&query).await.expect("audit");
    events.into_iter().map(|e| (e.event.kind, e.event.outcome, e.event.detail)).collect()
}

#[tokio::test]
async fn a_registration_signs_in_only_after_its_emailed_link_is_followed() {
    let s = verifying().await;
    let user = register(&s, "new@example.com").await;
    assert_eq!(user["email_verified"], false);
    let dir = s.data_dir().join("outbox");
    let message = wait_for_messages(1, || outbox(&dir)).await.remove(0);
    assert!(message.contains("To: new@example.com") && message.contains("Subject: Confirm your email address"));

    // The right password is told apart only once it is right; wrong ones stay anonymous.
    for mode in ["session", "jwt"] {
        let res = login(&s, "new@example.com", PASSWORD, mode).await;
        assert!(session_cookie(&res).is_none());
        expect_problem(res, StatusCode::FORBIDDEN, "email_not_verified").await;
    }
    let wrong = login(&s, "new@example.com", "not the password", "session").await;
    expect_problem(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials").await;

    let token = token_of(&link_to(&message, &s.base, "/verify-email"));
    let res = verify(&s, &token).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.expect("json")["user"]["email_verified"], true);
    assert_eq!(verify(&s, &token).await.status(), StatusCode::OK, "following it again changes nothing");
    assert_eq!(login(&s, "new@example.com", PASSWORD, "session").await.status(), StatusCode::OK);

    let events = audit(&s).await;
    let has = |kind: &str, outcome: &str| events.iter().any(|(k, o, _)| k == kind && o == outcome);
    assert!(has("email_verification_requested", "success") && has("email_verified", "success"), "{events:?}");
    let refused = events
        .iter()
        .any(|(k, o, d)| k == "login" && o == "failure" && d.as_deref() == Some("session email_unverified"));
    assert!(refused, "{events:?}");
    assert_eq!(events.iter().filter(|(k, _, _)| k == "email_verified").count(), 1, "verified once");
}

#[tokio::test]
async fn links_that_are_made_up_changed_expired_or_for_an_account_made_again_are_refused() {
    let s = verifying().await;
    let first = register(&s, "again@example.com").await;
    let old = tokens(&s, 1).await.remove(0);

    let mut changed = old.clone();
    let last = changed.pop().expect("a character");
    changed.push(if last == 'A' { 'B' } else { 'A' });
    for bad in ["made.up".to_owned(), changed, "x".repeat(5000), String::new()] {
        expect_problem(verify(&s, &bad).await, StatusCode::BAD_REQUEST, "invalid_verification_token").await;
    }

    // Deleted and registered again: the first account's link does not verify the second.
    s.service
        .delete_user(portcullis_service::Actor::Cli, first["id"].as_str().expect("id"), &ClientInfo::default())
        .await
        .expect("delete");
    register(&s, "again@example.com").await;
    expect_problem(verify(&s, &old).await, StatusCode::BAD_REQUEST, "invalid_verification_token").await;
    let fresh = tokens(&s, 2).await.remove(1);

    // A day later the link has expired; a new one works.
    s.advance(Duration::from_secs(24 * 3600));
    expect_problem(verify(&s, &fresh).await, StatusCode::BAD_REQUEST, "invalid_verification_token").await;
    let res = s.post_json("/v1/email/verify/resend", &json!({"email": "again@example.com"})).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let newest = tokens(&s, 3).await.remove(2);
    assert_eq!(verify(&s, &newest).await.status(), StatusCode::OK);
    assert_eq!(login(&s, "again@example.com", PASSWORD, "session").await.status(), StatusCode::OK);

    // Malformed bodies.
    for (path, body) in [
        ("/v1/email/verify", json!({})),
        ("/v1/email/verify", json!({"token": 1})),
        ("/v1/email/verify/resend", json!({"mail": "x@example.com"})),
    ] {
        expect_problem(s.post_json(path, &body).await, StatusCode::BAD_REQUEST, "invalid_body").await;
    }
}

#[tokio::test]
async fn new_links_go_only_to_unverified_accounts_three_an_hour() {
    let s = verifying().await;
    register(&s, "wait@example.com").await;
    let client = ClientInfo::default();
    // Nothing for an address with no account, or a verified one; the API answers 202 anyway.
    assert!(s.service.resend_verification("nobody@example.com", &client).await.expect("resend").is_none());
    let by = portcullis_service::Creator::Cli;
    s.service.create_account("vouched@example.com", PASSWORD.into(), &[], by, &client).await.expect("create");
    assert!(s.service.resend_verification("vouched@example.com", &client).await.expect("resend").is_none());
    for email in ["nobody@example.com", "vouched@example.com", "not an email"] {
        let res = s.post_json("/v1/email/verify/resend", &json!({"email": email})).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
    }

    // The registration's link and two more within the hour; the fourth is not sent.
    for _ in 0..3 {
        let res = s.post_json("/v1/email/verify/resend", &json!({"email": "wait@example.com"})).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !audit(&s).await.iter().any(|(k, o, _)| k == "email_verification_requested" && o == "throttled") {
        assert!(Instant::now() < deadline, "the fourth request is refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sent = tokens(&s, 3).await;
    assert_eq!(outbox(&s.data_dir().join("outbox")).len(), 3, "no fourth message");
    assert!(sent.iter().all(|t| t.len() > 40));
    s.advance(Duration::from_secs(3601));
    assert!(s.service.resend_verification("wait@example.com", &client).await.expect("resend").is_some());
}

#[tokio::test]
async fn without_the_setting_nobody_waits_and_turned_on_later_it_asks_the_unverified() {
    let s = TestServer::start().await;
    let plain = register(&s, "plain@example.com").await;
    assert_eq!(plain["email_verified"], false, "a registration's address is not verified by itself");
    let reset = register(&s, "reset@example.com").await;
    let listed = register(&s, "listed@example.com").await;
    assert_eq!(login(&s, "plain@example.com", PASSWORD, "session").await.status(), StatusCode::OK);
    assert!(!s.data_dir().join("outbox").exists(), "no link is sent without the setting");
    let admin = s.register("admin@example.com").await;
    s.make_admin(&admin).await;
    let cookie = s.login("admin@example.com").await;
    let body = json!({"email": "made@example.com", "password": PASSWORD, "roles": []});
    let made = s.send_as(Method::POST, "/v1/admin/users", &cookie, &body).await;
    assert_eq!(made.json::<Value>().await.expect("json")["user"]["email_verified"], true, "an admin vouches");

    // The administrator registered too: the command line vouches for their address first.
    let admin_id = admin["id"].as_str().expect("id");
    let cli = portcullis_service::Actor::Cli;
    s.service.confirm_email(cli, admin_id, &ClientInfo::default()).await.expect("confirmed");
    let s = s.restart_with(|settings| settings.registration.verify_email = true).await;
    expect_problem(
        login(&s, "plain@example.com", PASSWORD, "session").await,
        StatusCode::FORBIDDEN,
        "email_not_verified",
    )
    .await;
    assert_eq!(login(&s, "made@example.com", PASSWORD, "session").await.status(), StatusCode::OK);
    // An administrator vouches for the address.
    let cookie = s.login("admin@example.com").await;
    let id = plain["id"].as_str().expect("id");
    let res = s.send_as(Method::POST, &format!("/v1/admin/users/{id}/verify-email"), &cookie, &Value::Null).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.expect("json")["user"]["email_verified"], true);
    assert_eq!(login(&s, "plain@example.com", PASSWORD, "session").await.status(), StatusCode::OK);
    // Or on the admin page, which marks the addresses not verified.
    let page = s.get_as("/admin", &cookie).await.text().await.expect("html");
    assert_eq!(page.matches("email not verified").count(), 2, "reset@ and listed@: {page}");
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|r| r.split('"').next()).expect("csrf");
    let id = listed["id"].as_str().expect("id");
    let form = [("csrf", csrf), ("action", "verify_email")];
    let res = client().post(s.url(&format!("/admin/users/{id}"))).header("cookie", &cookie).form(&form).send();
    assert_eq!(res.await.expect("send").status(), StatusCode::SEE_OTHER);
    assert_eq!(login(&s, "listed@example.com", PASSWORD, "session").await.status(), StatusCode::OK);
    // A password reset by email verifies the address too: its link went there.
    let client = ClientInfo::default();
    let letter = s.service.begin_password_reset("reset@example.com", &client).await.expect("reset").expect("letter");
    s.service.reset_password(&letter.token, "a brand new passphrase".into(), &client).await.expect("reset");
    let user = s.service.user(reset["id"].as_str().expect("id")).await.expect("user");
    assert!(user.email_verified);
    assert_eq!(login(&s, "reset@example.com", "a brand new passphrase", "session").await.status(), StatusCode::OK);
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

#[tokio::test]
async fn the_pages_register_then_confirm_the_address_from_the_outbox_link() {
    let s = verifying().await;
    let form = [("email", "page@example.com"), ("password", PASSWORD)];
    let res = client().post(s.url("/register")).form(&form).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(session_cookie(&res).is_none(), "no session before the address is confirmed");
    let page = res.text().await.expect("html");
    assert!(page.contains("Check your email") && page.contains("page@example.com"), "{page}");

    let res = client().post(s.url("/login")).form(&form).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let page = res.text().await.expect("html");
    assert!(page.contains("Confirm your email address first") && page.contains("Send the link again"), "{page}");

    let token = tokens(&s, 1).await.remove(0);
    // Opening the link confirms nothing by itself (a mail scanner may fetch it): the button does.
    let page = client().get(s.url(&format!("/verify-email?token={token}"))).send().await.expect("send");
    assert!(page.text().await.expect("html").contains("Confirm my email address"));
    assert_eq!(client().post(s.url("/login")).form(&form).send().await.expect("send").status(), StatusCode::FORBIDDEN);
    let res = client().post(s.url("/verify-email")).form(&[("token", token.as_str())]).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.expect("html").contains("is confirmed"));
    let res = client().post(s.url("/login")).form(&form).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(session_cookie(&res).is_some());

    // A bad link, and asking for a new one.
    let res = client().post(s.url("/verify-email")).form(&[("token", "made.up")]).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert!(res.text().await.expect("html").contains("not valid or has expired"));
    let res = client().get(s.url("/verify-email")).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = client()
        .post(s.url("/verify-email/resend"))
        .form(&[("email", "anyone@example.com")])
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.text().await.expect("html").contains("a new link is on its way"));
}

#[tokio::test]
async fn the_verification_link_arrives_through_a_real_smtp_server() {
    let Some(smtp) = require("email verification over SMTP", Smtp::start()) else { return };
    let s = TestServer::start_with(|settings| {
        settings.registration.verify_email = true;
        settings.smtp.url = Some(smtp.url());
        settings.smtp.tls = portcullis_server::settings::SmtpTls::None;
    })
    .await;
    register(&s, "mailed@example.com").await;
    let messages = wait_for_messages(1, || smtp.messages()).await;
    assert!(messages[0].contains("To: mailed@example.com"), "{}", messages[0]);
    let token = token_of(&link_to(&messages[0], &s.base, "/verify-email"));
    assert_eq!(verify(&s, &token).await.status(), StatusCode::OK);
    assert_eq!(login(&s, "mailed@example.com", PASSWORD, "jwt").await.status(), StatusCode::OK);
}
