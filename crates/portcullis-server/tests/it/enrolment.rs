//! The second factor a role requires (`mfa.required_for_roles`, `["admin"]` by default): an
//! administrator without one sets one up at sign-in, over the API and on the pages, before any
//! session opens. The `totp-rs` crate plays the authenticator app; a real authenticator makes
//! a passkey in `browser.rs`.

use std::time::Duration;

use portcullis_server::settings::Settings;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestServer, expect_problem, session_cookie, set_cookies};

/// A server with the default `mfa.required_for_roles` (the harness clears it for other tests).
async fn server() -> TestServer {
    TestServer::start_with(|s| s.mfa.required_for_roles = Settings::default().mfa.required_for_roles).await
}

/// An administrator with no second factor.
async fn admin(s: &TestServer, email: &str) -> Value {
    let user = s.register(email).await;
    s.make_admin(&user).await;
    user
}

async fn login(s: &TestServer, email: &str, mode: &str) -> reqwest::Response {
    s.post_json("/v1/login", &json!({"email": email, "password": PASSWORD, "mode": mode})).await
}

/// The enrolment challenge of a password sign-in: the ticket and the methods.
async fn asked_to_enrol(s: &TestServer, email: &str, mode: &str) -> (String, Value) {
    let res = login(s, email, mode).await;
    assert!(session_cookie(&res).is_none(), "no session before a second factor is set up");
    let body = expect_problem(res, StatusCode::UNAUTHORIZED, "mfa_enrolment_required").await;
    (body["mfa_token"].as_str().expect("mfa_token").to_owned(), body["methods"].clone())
}

/// The authenticator app, set up from the URI an enrolment gave.
async fn app_from(res: reqwest::Response) -> totp_rs::TOTP {
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.expect("json");
    assert!(body["qr_svg"].as_str().is_some_and(|svg| svg.contains("<svg")), "{body}");
    totp_rs::TOTP::from_url_unchecked(body["otpauth_uri"].as_str().expect("uri")).expect("an otpauth URI")
}

fn code(s: &TestServer, app: &totp_rs::TOTP) -> String {
    app.generate(u64::try_from(portcullis_core::Clock::now(&s.clock).unix_seconds()).expect("after 1970"))
}

fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("payload");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("b64"))
        .expect("json")
}

#[tokio::test]
async fn an_administrator_without_a_second_factor_sets_one_up_before_signing_in() {
    assert_eq!(Settings::default().mfa.required_for_roles, ["admin"], "the default");
    let s = server().await;
    // A session opened before the role was given is left alone: the rule is for sign-ins.
    let user = s.register("root@example.com").await;
    let before = s.login("root@example.com").await;
    s.make_admin(&user).await;
    assert_eq!(s.me(&before).await.status(), StatusCode::OK);
    // Someone without the role signs in with a password alone.
    s.register("plain@example.com").await;
    assert_eq!(login(&s, "plain@example.com", "session").await.status(), StatusCode::OK);

    let (ticket, methods) = asked_to_enrol(&s, "root@example.com", "session").await;
    assert_eq!(methods, json!(["totp", "webauthn"]));
    // The enrolment ticket is no second step's.
    let res = s.post_json("/v1/login/mfa", &json!({"mfa_token": ticket, "totp": "123456"})).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "invalid_mfa_token").await;
    let res = s.post_json("/v1/login/mfa/webauthn", &json!({"mfa_token": ticket})).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "invalid_mfa_token").await;

    // An authenticator app: its first code finishes the sign-in, with the recovery codes.
    let app = app_from(s.post_json("/v1/login/mfa/enrol/totp", &json!({"mfa_token": ticket})).await).await;
    let confirm = |code: String| {
        let req = s.post("/v1/login/mfa/enrol/totp/confirm");
        req.json(&json!({"mfa_token": ticket, "code": code})).send()
    };
    let wrong = confirm("000000".into()).await.expect("send");
    expect_problem(wrong, StatusCode::UNAUTHORIZED, "invalid_code").await;
    let res = confirm(code(&s, &app)).await.expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers().get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
    let cookie = session_cookie(&res).expect("a session");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["mode"], "session");
    assert_eq!(body["user"]["email"], "root@example.com");
    assert_eq!(body["recovery_codes"].as_array().map(Vec::len), Some(10), "{body}");
    let admin_api = s.send_as(Method::GET, "/v1/admin/users", &cookie, &Value::Null).await;
    assert_eq!(admin_api.status(), StatusCode::OK);
    // The ticket is used up.
    s.advance(Duration::from_secs(30));
    let again = confirm(code(&s, &app)).await.expect("send");
    expect_problem(again, StatusCode::UNAUTHORIZED, "invalid_mfa_token").await;

    // From now on the factor is asked for, as for anyone who has one.
    let res = login(&s, "root@example.com", "session").await;
    let asked = expect_problem(res, StatusCode::UNAUTHORIZED, "mfa_required").await;
    assert_eq!(asked["methods"], json!(["totp", "recovery_code"]));
    let audit = s.service.audit_events(&portcullis_store::AuditQuery { limit: 100, ..Default::default() }).await;
    let audit = audit.expect("audit");
    assert!(
        audit.iter().any(|e| e.event.kind == "mfa_enrolled" && e.event.detail.as_deref() == Some("totp")),
        "{audit:?}"
    );
    assert!(
        audit.iter().any(|e| e.event.kind == "mfa" && e.event.outcome == "failure"),
        "the wrong first code: {audit:?}"
    );

    // An administrator's reset puts them back at the start.
    let id = user["id"].as_str().expect("id");
    let res = s.send_as(Method::POST, &format!("/v1/admin/users/{id}/reset-mfa"), &cookie, &Value::Null).await;
    assert_eq!(res.status(), StatusCode::OK);
    asked_to_enrol(&s, "root@example.com", "session").await;
}

#[tokio::test]
async fn an_enrolment_in_jwt_mode_ends_in_tokens_that_say_both_factors() {
    let s = server().await;
    admin(&s, "jwt@example.com").await;
    let (ticket, _) = asked_to_enrol(&s, "jwt@example.com", "jwt").await;
    let app = app_from(s.post_json("/v1/login/mfa/enrol/totp", &json!({"mfa_token": ticket})).await).await;
    let res =
        s.post_json("/v1/login/mfa/enrol/totp/confirm", &json!({"mfa_token": ticket, "code": code(&s, &app)})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(session_cookie(&res).is_none(), "JWT mode sets no session cookie");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["mode"], "jwt");
    assert_eq!(body["recovery_codes"].as_array().map(Vec::len), Some(10));
    let token = body["access_token"].as_str().expect("access token");
    assert_eq!(claims(token)["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(s.me_bearer(token).await, StatusCode::OK);
    let res = s.bearer(Method::GET, "/v1/verify?mfa=1", token).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::OK, "forward-auth's ?mfa=1 admits it");
}

#[tokio::test]
async fn enrolment_tickets_last_fifteen_minutes_and_pass_nowhere_else() {
    let s = server().await;
    admin(&s, "slow@example.com").await;
    // Longer than a second step's five minutes: time to install an app.
    let (ticket, _) = asked_to_enrol(&s, "slow@example.com", "session").await;
    s.advance(Duration::from_secs(10 * 60));
    let app = app_from(s.post_json("/v1/login/mfa/enrol/totp", &json!({"mfa_token": ticket})).await).await;
    s.advance(Duration::from_secs(5 * 60 + 1));
    let res =
        s.post_json("/v1/login/mfa/enrol/totp/confirm", &json!({"mfa_token": ticket, "code": code(&s, &app)})).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "invalid_mfa_token").await;

    // Made up, or a second step's ticket.
    for path in ["/v1/login/mfa/enrol/totp", "/v1/login/mfa/enrol/webauthn"] {
        let res = s.post_json(path, &json!({"mfa_token": "made.up"})).await;
        expect_problem(res, StatusCode::UNAUTHORIZED, "invalid_mfa_token").await;
    }
    let (ticket, _) = asked_to_enrol(&s, "slow@example.com", "session").await;
    let app = app_from(s.post_json("/v1/login/mfa/enrol/totp", &json!({"mfa_token": ticket})).await).await;
    let res =
        s.post_json("/v1/login/mfa/enrol/totp/confirm", &json!({"mfa_token": ticket, "code": code(&s, &app)})).await;
    assert_eq!(res.status(), StatusCode::OK);
    s.advance(Duration::from_secs(30));
    let res = login(&s, "slow@example.com", "session").await;
    let second_step = expect_problem(res, StatusCode::UNAUTHORIZED, "mfa_required").await;
    let res = s.post_json("/v1/login/mfa/enrol/totp", &json!({"mfa_token": second_step["mfa_token"]})).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "invalid_mfa_token").await;

    // A ticket whose holder was disabled meanwhile.
    let user = admin(&s, "gone@example.com").await;
    let (ticket, _) = asked_to_enrol(&s, "gone@example.com", "session").await;
    let id = portcullis_core::UserId::parse(user["id"].as_str().expect("id")).expect("id");
    let update = portcullis_store::UserUpdate { disabled: Some(true), ..Default::default() };
    let now = portcullis_core::Clock::now(&s.clock);
    s.service.users.update_user(&id, update, now).await.expect("update").expect("user");
    let res = s.post_json("/v1/login/mfa/enrol/totp", &json!({"mfa_token": ticket})).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "invalid_mfa_token").await;

    // Malformed bodies.
    for body in [json!({}), json!({"mfa_token": 5}), json!({"mfa_token": "x", "extra": 1})] {
        let res = s.post_json("/v1/login/mfa/enrol/totp/confirm", &body).await;
        expect_problem(res, StatusCode::BAD_REQUEST, "invalid_body").await;
    }
}

#[tokio::test]
async fn a_passkey_enrolment_asks_for_a_discoverable_passkey_and_refuses_forged_answers() {
    let s = server().await;
    admin(&s, "key@example.com").await;
    let (ticket, _) = asked_to_enrol(&s, "key@example.com", "session").await;
    let res = s.post_json("/v1/login/mfa/enrol/webauthn", &json!({"mfa_token": ticket})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let ceremony: Value = res.json().await.expect("json");
    let options = &ceremony["options"]["publicKey"];
    assert_eq!(options["rp"]["id"], "localhost");
    assert_eq!(options["user"]["name"], "key@example.com");
    assert_eq!(options["authenticatorSelection"]["residentKey"], "required");
    let forged = json!({
        "id": "AAAA", "rawId": "AAAA", "type": "public-key", "extensions": {},
        "response": {"clientDataJSON": "e30", "attestationObject": "AAAA"},
    });
    let finish = |state: &Value| {
        let body = json!({"mfa_token": ticket, "state": state, "credential": forged});
        s.post("/v1/login/mfa/enrol/webauthn/finish").json(&body).send()
    };
    expect_problem(finish(&ceremony["state"]).await.expect("send"), StatusCode::UNAUTHORIZED, "passkey_refused").await;
    // The state is spent, and a signed-in person's registration state is not an enrolment's.
    expect_problem(finish(&ceremony["state"]).await.expect("send"), StatusCode::BAD_REQUEST, "invalid_webauthn_state")
        .await;
    let (_, cookie) = s.user("other@example.com").await;
    let theirs = s.send_as(Method::POST, "/v1/mfa/webauthn/register", &cookie, &Value::Null).await;
    let theirs: Value = theirs.json().await.expect("json");
    expect_problem(finish(&theirs["state"]).await.expect("send"), StatusCode::BAD_REQUEST, "invalid_webauthn_state")
        .await;
    // Nothing was enrolled, and the ticket still works.
    assert_eq!(asked_to_enrol(&s, "key@example.com", "session").await.1, json!(["totp", "webauthn"]));
    let res = s.post_json("/v1/login/mfa/enrol/totp", &json!({"mfa_token": ticket})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn other_roles_can_be_required_and_the_requirement_turned_off() {
    let s = TestServer::start_with(|s| s.mfa.required_for_roles = vec!["ops".into()]).await;
    admin(&s, "admin@example.com").await;
    assert_eq!(login(&s, "admin@example.com", "session").await.status(), StatusCode::OK, "admin is not listed");
    let user = s.register("ops@example.com").await;
    let id = portcullis_core::UserId::parse(user["id"].as_str().expect("id")).expect("id");
    let roles = portcullis_core::role_set(["ops"]).expect("roles");
    let update = portcullis_store::UserUpdate { roles: Some(roles), ..Default::default() };
    s.service.users.update_user(&id, update, portcullis_core::Clock::now(&s.clock)).await.expect("update");
    asked_to_enrol(&s, "ops@example.com", "session").await;

    let off = TestServer::start().await;
    admin(&off, "admin@example.com").await;
    assert_eq!(login(&off, "admin@example.com", "session").await.status(), StatusCode::OK, "[] turns it off");
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

fn cookie_named(res: &reqwest::Response, name: &str) -> Option<String> {
    set_cookies(res).into_iter().find(|c| c.starts_with(&format!("{name}=")))
}

#[tokio::test]
async fn the_pages_set_up_an_authenticator_app_at_sign_in_and_go_on() {
    let s = server().await;
    admin(&s, "page@example.com").await;
    let fields = [("email", "page@example.com"), ("password", PASSWORD), ("return_to", "/admin")];
    let res = client().post(s.url("/login")).form(&fields).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/login/enrol?return_to=%2Fadmin");
    assert!(session_cookie(&res).is_none(), "no session yet");
    let ticket = cookie_named(&res, "__Host-portcullis-mfa").expect("the ticket cookie");
    assert!(ticket.contains("HttpOnly") && ticket.contains("Max-Age=900"), "{ticket}");
    let ticket = ticket.split(';').next().expect("pair").to_owned();

    let get = |path: &str| client().get(s.url(path)).header("cookie", &ticket).send();
    let page = get("/login/enrol?return_to=%2Fadmin").await.expect("send").text().await.expect("html");
    assert!(page.contains("Set up two-step sign-in") && page.contains("Use an authenticator app"), "{page}");
    // Opened at 127.0.0.1, the page points to localhost for a passkey.
    assert!(page.contains("To use a passkey instead") && !page.contains("data-passkey"), "{page}");
    let anonymous = client().get(s.url("/login/enrol")).send().await.expect("send");
    assert_eq!(anonymous.headers()["location"], "/login");

    let post = |path: &str, fields: Vec<(&'static str, String)>| {
        client().post(s.url(path)).header("cookie", &ticket).form(&fields).send()
    };
    let back = || ("return_to", "/admin".to_owned());
    let res = post("/login/enrol/totp", vec![back()]).await.expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    let setup = res.text().await.expect("html");
    assert!(setup.contains("<svg"), "an inline QR code");
    let uri = setup.split("href=\"otpauth://").nth(1).and_then(|r| r.split('"').next()).expect("an otpauth link");
    let app = totp_rs::TOTP::from_url_unchecked(format!("otpauth://{}", uri.replace("&amp;", "&"))).expect("app");
    let wrong = post("/login/enrol/totp/confirm", vec![back(), ("code", "000000".into())]).await.expect("send");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.text().await.expect("html").contains("That code is not right"));
    let res = post("/login/enrol/totp/confirm", vec![back(), ("code", code(&s, &app))]).await.expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    let cookie = session_cookie(&res).expect("a session");
    assert!(cookie_named(&res, "__Host-portcullis-mfa").is_some_and(|c| c.starts_with("__Host-portcullis-mfa=;")));
    let done = res.text().await.expect("html");
    assert_eq!(done.matches("<li><code>").count(), 10, "the recovery codes, once");
    assert!(done.contains("href=\"/admin\""), "on to where the sign-in was going: {done}");
    assert_eq!(s.get_as("/admin", &cookie).await.status(), StatusCode::OK);

    // The same ticket again: start over.
    s.advance(Duration::from_secs(30));
    let again = post("/login/enrol/totp/confirm", vec![back(), ("code", code(&s, &app))]).await.expect("send");
    assert!(again.text().await.expect("html").contains("That sign-in expired"));
}
