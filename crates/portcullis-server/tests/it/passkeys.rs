//! Passkeys over the API and on the pages, without a browser: what the ceremonies ask the
//! browser for, and every way a state or an answer that did not come from a real ceremony is
//! refused. A real authenticator answers in `browser.rs` (WebDriver's virtual authenticator).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestServer, expect_problem};

async fn ceremony(res: reqwest::Response) -> Value {
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers().get("cache-control").and_then(|v| v.to_str().ok()), Some("no-store"));
    res.json().await.expect("json")
}

/// A credential shaped like a browser's, that no authenticator made.
fn made_up_credential() -> Value {
    json!({
        "id": "AAAA", "rawId": "AAAA", "type": "public-key", "extensions": {},
        "response": {"clientDataJSON": "e30", "authenticatorData": "AAAA", "signature": "AAAA", "userHandle": null},
    })
}

#[tokio::test]
async fn registration_asks_for_a_discoverable_verified_passkey_for_this_person() {
    let s = TestServer::start().await;
    let (user, cookie) = s.user("opts@example.com").await;
    let c = ceremony(s.send_as(Method::POST, "/v1/mfa/webauthn/register", &cookie, &Value::Null).await).await;
    let options = &c["options"]["publicKey"];
    assert_eq!(options["rp"]["id"], "localhost", "{options}");
    assert_eq!(options["user"]["name"], "opts@example.com");
    assert_eq!(options["authenticatorSelection"]["residentKey"], "required");
    assert_eq!(options["authenticatorSelection"]["userVerification"], "required");
    assert!(options["challenge"].as_str().is_some_and(|c| c.len() >= 43), "{options}");
    // The user handle is the account's id (its 16 bytes, base64url).
    use base64::Engine as _;
    let handle = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(options["user"]["id"].as_str().expect("user id"))
        .expect("base64url");
    let hex: String = user["id"].as_str().expect("id").chars().filter(|c| *c != '-').collect();
    let id: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect();
    assert_eq!(handle, id);
    assert!(c["state"].as_str().is_some_and(|s| !s.is_empty()));

    // Two ceremonies never share a challenge.
    let again = ceremony(s.send_as(Method::POST, "/v1/mfa/webauthn/register", &cookie, &Value::Null).await).await;
    assert_ne!(again["options"]["publicKey"]["challenge"], options["challenge"]);

    let list = s.send_as(Method::GET, "/v1/mfa/webauthn", &cookie, &Value::Null).await;
    assert_eq!(list.json::<Value>().await.expect("json"), json!({"passkeys": []}));
}

#[tokio::test]
async fn states_and_answers_that_no_ceremony_made_are_refused() {
    let s = TestServer::start().await;
    let (_, alice) = s.user("alice@example.com").await;
    let (_, bob) = s.user("bob@example.com").await;
    async fn finish(s: &TestServer, cookie: &str, state: &Value, credential: Value, name: Value) -> reqwest::Response {
        let body = json!({"state": state, "credential": credential, "name": name});
        s.send_as(Method::POST, "/v1/mfa/webauthn/register/finish", cookie, &body).await
    }
    let c = ceremony(s.send_as(Method::POST, "/v1/mfa/webauthn/register", &alice, &Value::Null).await).await;

    // A made-up state, and Alice's state in Bob's hands.
    let res = finish(&s, &alice, &json!("not.a-state"), made_up_credential(), Value::Null).await;
    expect_problem(res, StatusCode::BAD_REQUEST, "invalid_webauthn_state").await;
    let res = finish(&s, &bob, &c["state"], made_up_credential(), Value::Null).await;
    expect_problem(res, StatusCode::BAD_REQUEST, "invalid_webauthn_state").await;
    // A name too long is refused before the state is spent.
    let c = ceremony(s.send_as(Method::POST, "/v1/mfa/webauthn/register", &alice, &Value::Null).await).await;
    let res = finish(&s, &alice, &c["state"], made_up_credential(), json!("x".repeat(65))).await;
    expect_problem(res, StatusCode::BAD_REQUEST, "invalid_passkey_name").await;
    // A credential no authenticator made; then the state is used up.
    let res = finish(&s, &alice, &c["state"], made_up_credential(), Value::Null).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "passkey_refused").await;
    let res = finish(&s, &alice, &c["state"], made_up_credential(), Value::Null).await;
    expect_problem(res, StatusCode::BAD_REQUEST, "invalid_webauthn_state").await;
    // A registration state is not a sign-in state, and states expire.
    let c = ceremony(s.send_as(Method::POST, "/v1/mfa/webauthn/register", &alice, &Value::Null).await).await;
    let res = s
        .post_json("/v1/login/webauthn/finish", &json!({"state": c["state"], "credential": made_up_credential()}))
        .await;
    expect_problem(res, StatusCode::BAD_REQUEST, "invalid_webauthn_state").await;
    let login = ceremony(s.post("/v1/login/webauthn").send().await.expect("send")).await;
    assert_eq!(login["options"]["publicKey"]["rpId"], "localhost");
    assert_eq!(login["options"]["publicKey"]["allowCredentials"], json!([]), "the passkey names the account");
    s.advance(portcullis_service::CEREMONY_TTL);
    let res = s
        .post_json("/v1/login/webauthn/finish", &json!({"state": login["state"], "credential": made_up_credential()}))
        .await;
    expect_problem(res, StatusCode::BAD_REQUEST, "invalid_webauthn_state").await;
    // A fresh sign-in state with a made-up answer; a malformed body.
    let login = ceremony(s.post("/v1/login/webauthn").send().await.expect("send")).await;
    let res = s
        .post_json("/v1/login/webauthn/finish", &json!({"state": login["state"], "credential": made_up_credential()}))
        .await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "passkey_refused").await;
    let res = s.post_json("/v1/login/webauthn/finish", &json!({"state": 1})).await;
    expect_problem(res, StatusCode::BAD_REQUEST, "invalid_body").await;

    // Removing a passkey that is not there; and after a while, changes need a fresh sign-in.
    let res = s.send_as(Method::DELETE, "/v1/mfa/webauthn/AAAA", &alice, &Value::Null).await;
    expect_problem(res, StatusCode::NOT_FOUND, "passkey_not_found").await;
    s.advance(Duration::from_secs(301));
    let res = s.send_as(Method::POST, "/v1/mfa/webauthn/register", &alice, &Value::Null).await;
    expect_problem(res, StatusCode::FORBIDDEN, "reauthentication_required").await;
}

#[tokio::test]
async fn the_second_step_offers_passkeys_only_to_a_valid_ticket_of_someone_with_one() {
    let s = TestServer::start().await;
    let res = s.post_json("/v1/login/mfa/webauthn", &json!({"mfa_token": "forged"})).await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "invalid_mfa_token").await;
    let res = s
        .post_json("/v1/login/mfa", &json!({"mfa_token": "forged", "webauthn": {"state": "x", "credential": {}}}))
        .await;
    expect_problem(res, StatusCode::UNAUTHORIZED, "invalid_mfa_token").await;
    let res = s
        .post_json(
            "/v1/login/mfa",
            &json!({"mfa_token": "t", "totp": "123456", "webauthn": {"state": "x", "credential": {}}}),
        )
        .await;
    expect_problem(res, StatusCode::BAD_REQUEST, "invalid_body").await;
}

#[tokio::test]
async fn without_a_domain_name_passkeys_are_unavailable_and_the_pages_leave_them_out() {
    let s =
        TestServer::start_with(|settings| settings.public_url = Some("http://192.0.2.1:8080".parse().expect("url")))
            .await;
    let res = s.post("/v1/login/webauthn").send().await.expect("send");
    expect_problem(res, StatusCode::CONFLICT, "passkeys_unavailable").await;
    let page = s.get("/login").send().await.expect("send").text().await.expect("text");
    assert!(!page.contains("passkey"), "{page}");
}

#[tokio::test]
async fn pages_load_the_passkey_script_only_where_a_passkey_works() {
    let s = TestServer::start().await;
    let (_, cookie) = s.user("pages@example.com").await;
    let port = s.base.rsplit(':').next().expect("port").to_owned();
    let csp = |res: &reqwest::Response| {
        res.headers().get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
    };
    // At 127.0.0.1 (not the relying party, localhost): no script, no button, a pointer.
    let login = s.get("/login").send().await.expect("send");
    assert!(!csp(&login).contains("script-src"), "{}", csp(&login));
    assert!(!login.text().await.expect("text").contains("passkeys.js"));
    let account = s.get_as("/account", &cookie).await;
    assert!(!csp(&account).contains("script-src"));
    let account = account.text().await.expect("text");
    assert!(account.contains(&format!("open this page at <a href=\"http://localhost:{port}/account\"")), "{account}");
    assert!(!account.contains("add-passkey"));

    // At localhost: the button, and the script allowed from this origin only.
    let host = format!("localhost:{port}");
    let login = s.get("/login").header("host", &host).send().await.expect("send");
    assert!(csp(&login).contains("script-src 'self'; connect-src 'self'"), "{}", csp(&login));
    let login = login.text().await.expect("text");
    assert!(login.contains("id=\"passkey-sign-in\"") && login.contains("src=\"/assets/passkeys.js\""), "{login}");
    let account = s.get("/account").header("cookie", &cookie).header("host", &host).send().await.expect("send");
    assert!(csp(&account).contains("script-src 'self'"));
    assert!(account.text().await.expect("text").contains("id=\"add-passkey\""));

    let script = s.get("/assets/passkeys.js").send().await.expect("send");
    assert_eq!(script.status(), StatusCode::OK);
    let ct = script.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!(ct, "text/javascript; charset=utf-8");
    assert!(script.text().await.expect("text").contains("navigator.credentials"));
}
