//! The pages over plain HTTP (the browser tests in browser.rs cover them as people use them):
//! CSRF tokens, redirects that never leave trusted origins, headers, and error pages.

use crate::common::{PASSWORD, TestServer};
use reqwest::StatusCode;
use reqwest::redirect::Policy;

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(Policy::none()).build().expect("client")
}

fn location(res: &reqwest::Response) -> String {
    res.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned()
}

async fn form_login(s: &TestServer, fields: &[(&str, &str)]) -> reqwest::Response {
    client().post(s.url("/login")).form(fields).send().await.expect("send")
}

/// The `csrf` value in a page's forms.
fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().expect("value").to_owned()
}

#[tokio::test]
async fn sign_in_redirects_only_to_paths_here_and_trusted_origins() {
    let s = TestServer::start_with(|s| {
        s.public_url = Some("http://auth.test".parse().expect("url"));
        s.pages.return_to_origins = vec!["https://app.example.com".into()];
    })
    .await;
    s.register("r@example.com").await;
    for (asked, landed) in [
        ("/account", "/account"),
        ("/admin?tab=users", "/admin?tab=users"),
        ("https://app.example.com/reports?x=1", "https://app.example.com/reports?x=1"),
        ("http://auth.test/account", "http://auth.test/account"),
        ("https://evil.example/", "/account"),
        ("//evil.example/", "/account"),
        ("/\\evil.example", "/account"),
        ("javascript:alert(1)", "/account"),
        ("https://app.example.com.evil.example/", "/account"),
    ] {
        let res = form_login(&s, &[("email", "r@example.com"), ("password", PASSWORD), ("return_to", asked)]).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "{asked}");
        assert_eq!(location(&res), landed, "return_to={asked}");
    }
}

#[tokio::test]
async fn signed_in_forms_need_the_sessions_csrf_token() {
    let s = TestServer::start().await;
    let (_, cookie) = s.user("c@example.com").await;
    let (_, other) = s.user("d@example.com").await;
    let page = client().get(s.url("/account")).header("cookie", &cookie).send().await.expect("send");
    assert_eq!(page.status(), StatusCode::OK);
    let token = csrf_in(&page.text().await.expect("html"));
    let other_page = client().get(s.url("/account")).header("cookie", &other).send().await.expect("send");
    let other_token = csrf_in(&other_page.text().await.expect("html"));
    assert_ne!(token, other_token, "one token per session");
    for bad in ["", "forged", other_token.as_str()] {
        let res = client()
            .post(s.url("/account/logout-all"))
            .header("cookie", &cookie)
            .form(&[("csrf", bad)])
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "csrf={bad:?}");
        assert!(res.text().await.expect("html").contains("This form has expired"));
    }
    assert_eq!(s.me(&cookie).await.status(), StatusCode::OK, "nothing happened");
    // A missing field is a clear 400, not a 500.
    let res = client().post(s.url("/account/logout")).header("cookie", &cookie).form(&[("x", "y")]).send().await;
    assert_eq!(res.expect("send").status(), StatusCode::BAD_REQUEST);
    // The right token works; and a cross-site post is refused even with it.
    let res = client()
        .post(s.url("/account/logout"))
        .header("cookie", &cookie)
        .header("origin", "https://evil.example")
        .form(&[("csrf", token.as_str())])
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = client()
        .post(s.url("/account/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", token.as_str())])
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/login");
    assert_eq!(s.me(&cookie).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn pages_send_strict_headers_and_anonymous_visitors_go_to_sign_in() {
    let s = TestServer::start().await;
    for (path, back) in [("/account", "%2Faccount"), ("/admin", "%2Fadmin")] {
        let res = client().get(s.url(path)).send().await.expect("send");
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(location(&res), format!("/login?return_to={back}"));
    }
    let res = client().get(s.url("/login")).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers();
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert!(get("content-type").starts_with("text/html"));
    let csp = get("content-security-policy");
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("script-src"), "no script may run: {csp}");
    assert_eq!(get("x-frame-options"), "DENY");
    assert_eq!(get("x-content-type-options"), "nosniff");
    assert_eq!(get("cache-control"), "no-store");
    let css = client().get(s.url("/assets/portcullis.css")).send().await.expect("send");
    assert!(css.headers()["content-type"].to_str().expect("ascii").starts_with("text/css"));
}

#[tokio::test]
async fn wrong_passwords_throttling_and_closed_registration_are_pages() {
    let s = TestServer::start_with(|s| s.registration.open = false).await;
    let res = client().get(s.url("/register")).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(res.text().await.expect("html").contains("Registration is closed"));
    for _ in 0..5 {
        let res = form_login(&s, &[("email", "who@example.com"), ("password", "guess guess")]).await;
        assert_eq!(res.status(), StatusCode::OK);
        let html = res.text().await.expect("html");
        assert!(html.contains("Invalid email or password."));
        assert!(html.contains("value=\"who@example.com\""), "the email is kept in the form");
    }
    let res = form_login(&s, &[("email", "who@example.com"), ("password", "guess guess")]).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(res.headers().contains_key("retry-after"));
    assert!(res.text().await.expect("html").contains("Too many failed attempts"));
}

/// On the zero-configuration default (no `public_url`, a loopback address), the loopback
/// spellings of the port are one site: a form posted from `http://localhost:PORT` signs in. A
/// form from anywhere else is refused with a page (never JSON) that names the address to use;
/// the API keeps its problem+json.
#[tokio::test]
async fn loopback_spellings_are_one_site_and_refused_forms_get_a_page() {
    let s = TestServer::start().await;
    s.register("lh@example.com").await;
    let port = s.base.rsplit(':').next().expect("port").to_owned();
    for origin in [format!("http://localhost:{port}"), format!("http://[::1]:{port}"), s.base.clone()] {
        let res = client()
            .post(s.url("/login"))
            .header("origin", &origin)
            .form(&[("email", "lh@example.com"), ("password", PASSWORD)])
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "signing in from {origin}");
        assert_eq!(location(&res), "/account");
    }
    for origin in ["http://evil.example", &format!("http://localhost:{}", port.parse::<u16>().expect("port") ^ 1)] {
        let res = client()
            .post(s.url("/login"))
            .header("origin", origin)
            .form(&[("email", "lh@example.com"), ("password", PASSWORD)])
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{origin}");
        let kind = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        assert!(kind.starts_with("text/html"), "a page, not {kind}");
        let page = res.text().await.expect("html");
        assert!(page.contains(origin), "names where the form came from: {page}");
        assert!(page.contains(&format!("{}/login", s.base)), "names the address to use: {page}");
    }
    let api = client()
        .post(s.url("/v1/login"))
        .header("origin", "http://evil.example")
        .json(&serde_json::json!({"email": "lh@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("send");
    crate::common::expect_problem(api, StatusCode::FORBIDDEN, "cross_site_request").await;
}

/// With `public_url` set, only its origin is this server: `localhost` is another site then.
#[tokio::test]
async fn a_configured_public_url_is_the_only_origin_of_forms() {
    let s = TestServer::start_with(|s| s.public_url = Some("http://auth.test".parse().expect("url"))).await;
    let port = s.base.rsplit(':').next().expect("port").to_owned();
    let res = client()
        .post(s.url("/register"))
        .header("origin", format!("http://localhost:{port}"))
        .form(&[("email", "x@example.com"), ("password", PASSWORD)])
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let page = res.text().await.expect("html");
    assert!(page.contains("http://auth.test/login"), "{page}");
}

/// The admin page lists the registered clients and removes one with its form.
#[tokio::test]
async fn the_admin_page_lists_clients_and_removes_one() {
    let s = TestServer::start().await;
    let admin = s.register("root@example.com").await;
    s.make_admin(&admin).await;
    let cookie = s.login("root@example.com").await;
    let none = portcullis_core::ClientInfo::default();
    let actor = portcullis_service::Actor::Cli;
    let kind = portcullis_core::ClientKind::Service;
    let kept = s.service.register_client(actor, "inventory", kind, &none).await.expect("register").client;
    let gone = s.service.register_client(actor, "old-billing", kind, &none).await.expect("register").client;
    let page = client().get(s.url("/admin")).header("cookie", &cookie).send().await.expect("send");
    let html = page.text().await.expect("html");
    for expected in ["Clients", "inventory", "old-billing", kept.id.as_str(), gone.id.as_str()] {
        assert!(html.contains(expected), "{expected} missing");
    }
    let token = csrf_in(&html);
    let res = client()
        .post(s.url(&format!("/admin/clients/{}", gone.id)))
        .header("cookie", &cookie)
        .form(&[("csrf", token.as_str()), ("action", "remove")])
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let left: Vec<String> = s.service.clients().await.expect("clients").into_iter().map(|c| c.name).collect();
    assert_eq!(left, ["inventory"]);
    // Without the page's CSRF token, nothing is removed.
    let res = client()
        .post(s.url(&format!("/admin/clients/{}", kept.id)))
        .header("cookie", &cookie)
        .form(&[("csrf", "forged"), ("action", "remove")])
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(s.service.clients().await.expect("clients").len(), 1);
}

/// The `href` of the link with class `class` in a page.
fn link_in(html: &str, class: &str) -> String {
    let marker = format!("class=\"{class}\" href=\"");
    let at = html.find(&marker).expect("the link") + marker.len();
    html[at..].split('"').next().expect("value").replace("&amp;", "&")
}

/// The pages' two-step sign-in: enrolment on `/account` (QR code, key, otpauth link, a first
/// code, recovery codes shown once), the second step at `/login/mfa` going on to `return_to`,
/// a wrong code and an expired sign-in as pages, and turning it off.
#[tokio::test]
async fn two_step_sign_in_is_added_used_and_removed_on_the_pages() {
    let s = TestServer::start().await;
    let (_, cookie) = s.user("p@example.com").await;
    let get = |path: &str, cookie: &str| client().get(s.url(path)).header("cookie", cookie).send();
    let page = get("/account", &cookie).await.expect("send").text().await.expect("html");
    assert!(page.contains("Add an authenticator app"), "{page}");
    let csrf = csrf_in(&page);
    let post = |path: &str, cookie: &str, fields: Vec<(&'static str, String)>| {
        client().post(s.url(path)).header("cookie", cookie).form(&fields).send()
    };
    let res = post("/account/mfa/totp", &cookie, vec![("csrf", csrf.clone())]).await.expect("send");
    assert_eq!(res.status(), StatusCode::OK);
    let enrolment = res.text().await.expect("html");
    assert!(enrolment.contains("<svg") && !enrolment.contains("<?xml"), "an inline QR code");
    let app = totp_rs::TOTP::from_url_unchecked(link_in(&enrolment, "otpauth")).expect("an otpauth link");
    assert!(enrolment.contains(&app.get_secret_base32()), "the key to type in");
    let now = || u64::try_from(portcullis_core::Clock::now(&s.clock).unix_seconds()).expect("time");
    let wrong = post("/account/mfa/totp/confirm", &cookie, vec![("csrf", csrf.clone()), ("code", "000000".into())]);
    let wrong = wrong.await.expect("send");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.text().await.expect("html").contains("That code is not right"));
    let res = post("/account/mfa/totp/confirm", &cookie, vec![("csrf", csrf.clone()), ("code", app.generate(now()))]);
    let codes_page = res.await.expect("send").text().await.expect("html");
    assert!(codes_page.contains("Your recovery codes") && codes_page.contains("shown only now"), "{codes_page}");
    assert_eq!(codes_page.matches("<li><code>").count(), 10);
    let account = get("/account", &cookie).await.expect("send").text().await.expect("html");
    assert!(account.contains("10 recovery codes left"), "{account}");

    // Signing in: the password leads to /login/mfa (keeping return_to), a wrong code stays there,
    // the right one goes on with a session and the ticket cookie cleared.
    let res = form_login(&s, &[("email", "p@example.com"), ("password", PASSWORD), ("return_to", "/admin")]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/login/mfa?return_to=%2Fadmin");
    assert!(crate::common::session_cookie(&res).is_none(), "no session yet");
    let ticket = crate::common::set_cookies(&res)
        .into_iter()
        .find(|c| c.starts_with("__Host-portcullis-mfa="))
        .expect("the ticket cookie");
    assert!(ticket.contains("HttpOnly") && ticket.contains("Max-Age=300"), "{ticket}");
    let ticket = ticket.split(';').next().expect("pair").to_owned();
    let step = get("/login/mfa?return_to=%2Fadmin", &ticket).await.expect("send");
    assert_eq!(step.status(), StatusCode::OK);
    assert!(step.text().await.expect("html").contains("Two-step sign-in"));
    let anonymous = client().get(s.url("/login/mfa")).send().await.expect("send");
    assert_eq!(location(&anonymous), "/login", "without a ticket, back to the password");
    let submit = |code: String| {
        client()
            .post(s.url("/login/mfa"))
            .header("cookie", &ticket)
            .form(&[("code", code.as_str()), ("return_to", "/admin")])
            .send()
    };
    let res = submit("123 456".into()).await.expect("send");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(res.text().await.expect("html").contains("That code is not right"));
    s.advance(std::time::Duration::from_secs(30));
    let res = submit(app.generate(now())).await.expect("send");
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&res), "/admin");
    let cleared = crate::common::set_cookies(&res).into_iter().any(|c| c.starts_with("__Host-portcullis-mfa=;"));
    assert!(cleared, "the ticket cookie is cleared");
    let signed_in = crate::common::session_cookie(&res).expect("a session");
    assert_eq!(s.me(&signed_in).await.status(), StatusCode::OK);
    // The same ticket again: the sign-in page, asking to start over.
    let again = submit(app.generate(now() + 30)).await.expect("send");
    assert!(again.text().await.expect("html").contains("That sign-in expired"));

    // Turning it off: a recent sign-in needed (six minutes is too old), then it is off.
    s.advance(std::time::Duration::from_secs(360));
    let page = get("/account", &signed_in).await.expect("send").text().await.expect("html");
    let csrf = csrf_in(&page);
    let res = post("/account/mfa/totp/remove", &signed_in, vec![("csrf", csrf.clone())]).await.expect("send");
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(res.text().await.expect("html").contains("sign in again"));
    let fresh = form_login(&s, &[("email", "p@example.com"), ("password", PASSWORD)]).await;
    let ticket = crate::common::set_cookies(&fresh).into_iter().find(|c| c.starts_with("__Host-portcullis-mfa="));
    let ticket = ticket.expect("ticket").split(';').next().expect("pair").to_owned();
    let code = codes_page.split("<li><code>").nth(3).and_then(|c| c.split('<').next()).expect("a recovery code");
    let res = client().post(s.url("/login/mfa")).header("cookie", &ticket).form(&[("code", code)]).send();
    let fresh = crate::common::session_cookie(&res.await.expect("send")).expect("a recovery code signs in");
    let csrf = csrf_in(&get("/account", &fresh).await.expect("send").text().await.expect("html"));
    let res = post("/account/mfa/totp/remove", &fresh, vec![("csrf", csrf)]).await.expect("send");
    assert_eq!(location(&res), "/account?done=totp-removed");
    assert_eq!(s.me(&signed_in).await.status(), StatusCode::UNAUTHORIZED, "the other session ended");
    let res = form_login(&s, &[("email", "p@example.com"), ("password", PASSWORD)]).await;
    assert_eq!(location(&res), "/account", "the password alone signs in again");
}
