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
    let s = TestServer::start_with(|s| s.registration = false).await;
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
