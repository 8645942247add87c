//! Second factors over the API (docs/API.md): an authenticator app enrolled from its otpauth URI
//! (the `totp-rs` crate plays the app, so the codes do not come from our own implementation),
//! recovery codes, the second step of a login in both modes, `amr`, forward-auth's `?mfa=1`,
//! recent sign-in for changes, throttling, and the administrators' reset.

use std::time::Duration;

use portcullis_core::Clock as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestServer, expect_problem, session_cookie};

/// The authenticator app, set up from the URI the server gave.
fn app(uri: &str) -> totp_rs::TOTP {
    totp_rs::TOTP::from_url_unchecked(uri).expect("an otpauth URI an app reads")
}

/// The app's code at the server's time.
fn code(s: &TestServer, app: &totp_rs::TOTP) -> String {
    app.generate(u64::try_from(s.clock.now().unix_seconds()).expect("after 1970"))
}

/// Enrols an authenticator for the signed-in `cookie`; the app and the recovery codes.
async fn enrol(s: &TestServer, cookie: &str) -> (totp_rs::TOTP, Vec<String>) {
    let res = s.post_as("/v1/mfa/totp", cookie).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.expect("json");
    let uri = body["otpauth_uri"].as_str().expect("uri");
    let app = app(uri);
    assert_eq!(app.get_secret_base32(), body["secret"].as_str().expect("secret"), "the secret to type in is the URI's");
    let res = s.send_as(Method::POST, "/v1/mfa/totp/confirm", cookie, &json!({"code": code(s, &app)})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("json");
    let codes: Vec<String> =
        body["recovery_codes"].as_array().expect("codes").iter().map(|c| c.as_str().expect("code").into()).collect();
    (app, codes)
}

/// `POST /v1/login` for someone with a second factor: the ticket.
async fn first_step(s: &TestServer, email: &str, mode: &str) -> String {
    let res = s.post_json("/v1/login", &json!({"email": email, "password": PASSWORD, "mode": mode})).await;
    assert!(session_cookie(&res).is_none(), "no session before the second factor");
    let body = expect_problem(res, StatusCode::UNAUTHORIZED, "mfa_required").await;
    body["mfa_token"].as_str().expect("mfa_token").to_owned()
}

/// A whole sign-in with the app's code, one step later than the last one used.
async fn sign_in(s: &TestServer, email: &str, app: &totp_rs::TOTP) -> String {
    s.advance(Duration::from_secs(30));
    let ticket = first_step(s, email, "session").await;
    let res = s.post_json("/v1/login/mfa", &json!({"mfa_token": ticket, "totp": code(s, app)})).await;
    assert_eq!(res.status(), StatusCode::OK);
    session_cookie(&res).expect("a session")
}

/// The audit log's latest events.
async fn audit(s: &TestServer) -> Vec<portcullis_store::AuditEvent> {
    let query = portcullis_store::AuditQuery { limit: 500, ..Default::default() };
    s.service.audit_events(&query).await.expect("audit")
}

/// The claims of a JWT, unverified (the server verified it; this reads what it says).
fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("b64"))
        .expect("json")
}

#[tokio::test]
async fn an_authenticator_app_is_enrolled_and_asked_for_at_every_sign_in() {
    let s = TestServer::start().await;
    let (_, cookie) = s.user("ada@example.com").await;
    let summary: Value = s.get_as("/v1/mfa", &cookie).await.json().await.expect("json");
    assert_eq!(summary, json!({"totp": false, "totp_pending": false, "recovery_codes_left": 0, "passkeys": 0}));

    // Enrolment: a URI the app reads, the same secret to type in, and a QR code in SVG.
    let res = s.post_as("/v1/mfa/totp", &cookie).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.expect("json");
    let uri = body["otpauth_uri"].as_str().expect("uri");
    assert!(uri.starts_with("otpauth://totp/Portcullis:ada%40example.com?secret="), "{uri}");
    let totp = app(uri);
    assert_eq!(totp.secret.len() * 8, 160, "160-bit secrets");
    assert_eq!((totp.digits, totp.step, totp.issuer.as_deref()), (6, 30, Some("Portcullis")));
    assert!(body["qr_svg"].as_str().expect("svg").contains("<svg"), "{}", body["qr_svg"]);
    // Until confirmed it is not a factor: sign-in asks for nothing more.
    let pending: Value = s.get_as("/v1/mfa", &cookie).await.json().await.expect("json");
    assert_eq!(pending["totp_pending"], true);
    assert_eq!(
        s.post_json("/v1/login", &json!({"email": "ada@example.com", "password": PASSWORD})).await.status(),
        200
    );
    let wrong = s.send_as(Method::POST, "/v1/mfa/totp/confirm", &cookie, &json!({"code": "000000"})).await;
    expect_problem(wrong, StatusCode::UNAUTHORIZED, "invalid_code").await;
    let first = code(&s, &totp);
    let res = s.send_as(Method::POST, "/v1/mfa/totp/confirm", &cookie, &json!({"code": first})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let codes = res.json::<Value>().await.expect("json")["recovery_codes"].clone();
    assert_eq!(codes.as_array().expect("codes").len(), 10, "ten recovery codes with the first factor");
    let again = s.post_as("/v1/mfa/totp", &cookie).await;
    expect_problem(again, StatusCode::CONFLICT, "totp_exists").await;

    // Every sign-in now asks for a code, with the methods it can use.
    let res = s.post_json("/v1/login", &json!({"email": "ada@example.com", "password": PASSWORD})).await;
    let challenge = expect_problem(res, StatusCode::UNAUTHORIZED, "mfa_required").await;
    assert_eq!(challenge["methods"], json!(["totp", "recovery_code"]));
    let ticket = challenge["mfa_token"].as_str().expect("ticket");
    // The code that confirmed the enrolment was used: it is not accepted again.
    let replay = s.post_json("/v1/login/mfa", &json!({"mfa_token": ticket, "totp": first})).await;
    expect_problem(replay, StatusCode::UNAUTHORIZED, "invalid_code").await;
    s.advance(Duration::from_secs(30));
    let next = code(&s, &totp);
    let res = s.post_json("/v1/login/mfa", &json!({"mfa_token": ticket, "totp": next})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let signed_in = session_cookie(&res).expect("a session");
    assert_eq!(s.me(&signed_in).await.status(), StatusCode::OK);
    // The ticket worked once; the code too.
    let reused = s.post_json("/v1/login/mfa", &json!({"mfa_token": ticket, "totp": next})).await;
    expect_problem(reused, StatusCode::UNAUTHORIZED, "invalid_mfa_token").await;

    // Forward auth: `?mfa=1` lets the two-factor session through and not a password-only one.
    let verify = |cookie: &str| s.get("/v1/verify?mfa=1").header("cookie", cookie).send();
    assert_eq!(verify(&signed_in).await.expect("send").status(), StatusCode::OK);
    let (_, password_only) = s.user("bob@example.com").await;
    expect_problem(verify(&password_only).await.expect("send"), StatusCode::FORBIDDEN, "mfa_required").await;
    let plain = s.get("/v1/verify").header("cookie", &password_only).send().await.expect("send");
    assert_eq!(plain.status(), StatusCode::OK, "routes that do not ask let a password through");

    // JWT mode: the tokens come after the second step, with amr naming both methods; a
    // recovery code works once.
    let ticket = first_step(&s, "ada@example.com", "jwt").await;
    let recovery = codes[0].as_str().expect("code");
    let res = s.post_json("/v1/login/mfa", &json!({"mfa_token": ticket, "recovery_code": recovery})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let tokens: Value = res.json().await.expect("json");
    let access = tokens["access_token"].as_str().expect("access token");
    assert_eq!(claims(access)["amr"], json!(["pwd", "otp", "mfa"]));
    let ok = s.bearer(Method::GET, "/v1/verify?mfa=1", access).send().await.expect("send");
    assert_eq!(ok.status(), StatusCode::OK);
    let refreshed: Value =
        s.refresh(tokens["refresh_token"].as_str().expect("refresh")).await.json().await.expect("json");
    let access = refreshed["access_token"].as_str().expect("access");
    assert_eq!(claims(access)["amr"], json!(["pwd", "otp", "mfa"]), "refreshing keeps the sign-in's methods");
    let ticket = first_step(&s, "ada@example.com", "jwt").await;
    let res = s.post_json("/v1/login/mfa", &json!({"mfa_token": ticket, "recovery_code": recovery})).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "invalid_code").await;
    let left: Value = s.get_as("/v1/mfa", &signed_in).await.json().await.expect("json");
    assert_eq!(left["recovery_codes_left"], 9);
    // A password-only JWT login says so.
    let bob = s.jwt_login("bob@example.com").await;
    assert_eq!(claims(bob["access_token"].as_str().expect("access"))["amr"], json!(["pwd"]));
}

#[tokio::test]
async fn tickets_are_sealed_short_lived_and_need_exactly_one_proof() {
    let s = TestServer::start().await;
    let (_, cookie) = s.user("ada@example.com").await;
    let (totp, _) = enrol(&s, &cookie).await;
    let ticket = first_step(&s, "ada@example.com", "session").await;
    // Changed, or made up: refused.
    let (payload, tag) = ticket.rsplit_once('.').expect("sealed");
    let forged = format!("{payload}x.{tag}");
    for bad in [forged.as_str(), "x.y", "", &"a".repeat(5000)] {
        s.advance(Duration::from_secs(30));
        let res = s.post_json("/v1/login/mfa", &json!({"mfa_token": bad, "totp": code(&s, &totp)})).await;
        expect_problem(res, StatusCode::UNAUTHORIZED, "invalid_mfa_token").await;
    }
    for body in [
        json!({"mfa_token": ticket}),
        json!({"mfa_token": ticket, "totp": "123456", "recovery_code": "x"}),
        json!({"mfa_token": ticket, "webauthn": {}}),
    ] {
        expect_problem(s.post_json("/v1/login/mfa", &body).await, StatusCode::BAD_REQUEST, "invalid_body").await;
    }
    // Five minutes later the ticket is dead, even with a right code.
    s.advance(Duration::from_secs(301));
    let res = s.post_json("/v1/login/mfa", &json!({"mfa_token": ticket, "totp": code(&s, &totp)})).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "invalid_mfa_token").await;
}

#[tokio::test]
async fn wrong_codes_are_throttled_like_passwords() {
    // Waits of a minute and more, so the test can move to the next code within one.
    let s = TestServer::start_with(|s| s.throttle.base_delay = Duration::from_secs(60)).await;
    let (_, cookie) = s.user("ada@example.com").await;
    let (totp, _) = enrol(&s, &cookie).await;
    let ticket = first_step(&s, "ada@example.com", "session").await;
    let mut throttled = None;
    for attempt in 0..20 {
        let res = s.post_json("/v1/login/mfa", &json!({"mfa_token": ticket, "totp": "000000"})).await;
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled = Some(attempt);
            assert!(res.headers().contains_key("retry-after"));
            break;
        }
        expect_problem(res, StatusCode::UNAUTHORIZED, "invalid_code").await;
    }
    let attempt = throttled.expect("wrong codes are throttled");
    assert!(attempt <= 10, "throttled after {attempt} wrong codes");
    // While the wait lasts, even the right code waits; after it, the right code signs in.
    s.advance(Duration::from_secs(30));
    let res = s.post_json("/v1/login/mfa", &json!({"mfa_token": ticket, "totp": code(&s, &totp)})).await;
    expect_problem(res, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts").await;
    s.advance(Duration::from_secs(3600));
    let ticket = first_step(&s, "ada@example.com", "session").await;
    let res = s.post_json("/v1/login/mfa", &json!({"mfa_token": ticket, "totp": code(&s, &totp)})).await;
    assert_eq!(res.status(), StatusCode::OK);
    // The refusals are in the audit log.
    let events = audit(&s).await;
    assert!(events.iter().any(|e| e.event.kind == "mfa" && e.event.outcome == "failure"));
    assert!(events.iter().any(|e| e.event.kind == "mfa" && e.event.outcome == "throttled"));
}

#[tokio::test]
async fn changing_factors_needs_a_recent_sign_in_and_removing_one_ends_the_other_sessions() {
    let s = TestServer::start().await;
    let (_, cookie) = s.user("ada@example.com").await;
    let (totp, first_codes) = enrol(&s, &cookie).await;
    let here = sign_in(&s, "ada@example.com", &totp).await;
    let elsewhere = sign_in(&s, "ada@example.com", &totp).await;
    // Six minutes on, the sign-in is too old to change anything.
    s.advance(Duration::from_secs(360));
    for (method, path) in [(Method::DELETE, "/v1/mfa/totp"), (Method::POST, "/v1/mfa/recovery-codes")] {
        let res = s.send_as(method, path, &here, &Value::Null).await;
        expect_problem(res, StatusCode::FORBIDDEN, "reauthentication_required").await;
    }
    // Signed in again: a new set of recovery codes voids the old one.
    let here = sign_in(&s, "ada@example.com", &totp).await;
    let res = s.post_as("/v1/mfa/recovery-codes", &here).await;
    assert_eq!(res.status(), StatusCode::OK);
    let fresh = res.json::<Value>().await.expect("json")["recovery_codes"].clone();
    assert_eq!(fresh.as_array().expect("codes").len(), 10);
    let ticket = first_step(&s, "ada@example.com", "session").await;
    let old = s.post_json("/v1/login/mfa", &json!({"mfa_token": ticket, "recovery_code": first_codes[1]})).await;
    expect_problem(old, StatusCode::UNAUTHORIZED, "invalid_code").await;
    // Removing the app ends the other sessions, keeps this one, and sign-in asks for a password only.
    let res = s.request(Method::DELETE, "/v1/mfa/totp").header("cookie", &here).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(s.me(&elsewhere).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(s.me(&here).await.status(), StatusCode::OK);
    let summary: Value = s.get_as("/v1/mfa", &here).await.json().await.expect("json");
    assert_eq!(summary, json!({"totp": false, "totp_pending": false, "recovery_codes_left": 0, "passkeys": 0}));
    s.login("ada@example.com").await;
    let res = s.send_as(Method::DELETE, "/v1/mfa/totp", &here, &Value::Null).await;
    expect_problem(res, StatusCode::CONFLICT, "no_factor").await;
    let events = audit(&s).await;
    for kind in ["mfa_enrolled", "recovery_codes_regenerated", "mfa_removed"] {
        assert!(events.iter().any(|e| e.event.kind == kind), "{kind} is audited");
    }
}

#[tokio::test]
async fn administrators_reset_a_users_second_factors() {
    let s = TestServer::start().await;
    let (admin, admin_cookie) = s.user("admin@example.com").await;
    s.make_admin(&admin).await;
    let (ada, cookie) = s.user("ada@example.com").await;
    let (totp, _) = enrol(&s, &cookie).await;
    let signed_in = sign_in(&s, "ada@example.com", &totp).await;
    let path = format!("/v1/admin/users/{}/reset-mfa", ada["id"].as_str().expect("id"));
    expect_problem(s.post_as(&path, &signed_in).await, StatusCode::FORBIDDEN, "forbidden").await;
    let res = s.post_as(&path, &admin_cookie).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.expect("json")["removed"], true);
    assert_eq!(s.me(&signed_in).await.status(), StatusCode::UNAUTHORIZED, "their sessions end");
    s.login("ada@example.com").await;
    let events = audit(&s).await;
    let reset = events.iter().find(|e| e.event.kind == "mfa_reset").expect("audited");
    assert_eq!(reset.event.actor.as_deref(), admin["id"].as_str());
}

#[tokio::test]
async fn a_leaked_database_does_not_reveal_authenticator_secrets() {
    let s = TestServer::start().await;
    let (_, cookie) = s.user("ada@example.com").await;
    let (totp, _) = enrol(&s, &cookie).await;
    let key = s.data_dir().join("mfa.key");
    let meta = std::fs::metadata(&key).expect("a key file beside the database");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(s.data_dir()).expect("data dir") {
        let path = entry.expect("entry").path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("portcullis.db")) {
            stored.extend(std::fs::read(&path).expect("read"));
        }
    }
    assert!(!stored.is_empty());
    let secret = &totp.secret;
    assert!(!stored.windows(secret.len()).any(|w| w == secret.as_slice()), "the secret is stored sealed");
    let b32 = totp.get_secret_base32();
    assert!(!stored.windows(b32.len()).any(|w| w == b32.as_bytes()));
    // The same key after a restart: the app keeps working.
    let s = s.restart().await;
    sign_in(&s, "ada@example.com", &totp).await;
}
