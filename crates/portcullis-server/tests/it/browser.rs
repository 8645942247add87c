//! The pages in a real browser: headless Chromium driven over WebDriver (chromedriver), against
//! a real server on port 0. Skipped with a loud message when Chromium or chromedriver is not
//! installed, unless PORTCULLIS_TEST_REQUIRE_ALL=1. The screenshots in docs/screenshots are
//! taken here.

use std::path::PathBuf;
use std::sync::Arc;

use crate::common::{PASSWORD, TestServer};
use fantoccini::{Client, ClientBuilder, Locator};
use portcullis_core::SystemClock;
use portcullis_lab::{ChromeDriver, Nginx, require};
use portcullis_server::settings::Settings;
use serde_json::json;

const DESKTOP: (u32, u32) = (1280, 860);
const PHONE: (u32, u32) = (390, 844);

/// A browser with a fresh profile of its own, at this window size.
async fn browser(driver: &ChromeDriver, (width, height): (u32, u32)) -> Client {
    // Already installed by an earlier browser of this process: fine.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let profile = driver.profile_dir().expect("profile");
    let args = [
        "--headless=new".to_owned(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-dev-shm-usage".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--disable-extensions".into(),
        "--hide-scrollbars".into(),
        format!("--user-data-dir={}", profile.display()),
        format!("--window-size={width},{height}"),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert("goog:chromeOptions".into(), json!({"binary": driver.browser, "args": args}));
    ClientBuilder::rustls().expect("client").capabilities(caps).connect(&driver.url()).await.expect("browser session")
}

async fn driver(what: &str) -> Option<ChromeDriver> {
    require(what, ChromeDriver::start())
}

/// The path (and query) the browser is on.
async fn path(b: &Client) -> String {
    let url = b.current_url().await.expect("url");
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

async fn text(b: &Client) -> String {
    b.find(Locator::Css("body")).await.expect("body").text().await.expect("text")
}

async fn fill(b: &Client, css: &str, value: &str) {
    let field = b.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
    field.clear().await.expect("clear");
    field.send_keys(value).await.expect("type");
}

/// Clicks a button that submits a form, and waits until the browser is on the next page: the
/// old document gone (its root element stale) and the new one loaded.
async fn click(b: &Client, css: &str) {
    let button = b.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
    submit(b, button).await;
}

async fn submit(b: &Client, button: fantoccini::elements::Element) {
    let old = b.find(Locator::Css("html")).await.expect("document");
    button.click().await.expect("click");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while old.tag_name().await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "no new page after the click");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    b.wait().for_element(Locator::Css("body")).await.expect("the new page");
    loop {
        let state = b.execute("return document.readyState", vec![]).await.expect("script");
        if state == "complete" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the new page did not finish loading");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn sign_in(b: &Client, email: &str, password: &str) {
    fill(b, "input[name=email]", email).await;
    fill(b, "input[name=password]", password).await;
    click(b, "form[action='/login'] button[type=submit]").await;
}

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    dir
}

async fn screenshot(b: &Client, name: &str) {
    let png = b.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).expect("write screenshot");
}

#[tokio::test]
async fn sign_in_devices_password_and_sign_out_in_a_real_browser() {
    let Some(driver) = driver("browser: pages").await else { return };
    let s = TestServer::start().await;
    s.register("alice@example.com").await;
    let a = browser(&driver, DESKTOP).await;

    // Anonymous: /account sends the visitor to sign in, and back afterwards.
    a.goto(&s.url("/account")).await.expect("goto");
    assert_eq!(path(&a).await, "/login?return_to=%2Faccount");
    screenshot(&a, "login").await;
    sign_in(&a, "alice@example.com", "not the password").await;
    assert!(path(&a).await.starts_with("/login"));
    assert!(text(&a).await.contains("Invalid email or password"), "{}", text(&a).await);
    screenshot(&a, "login-error").await;
    sign_in(&a, "alice@example.com", PASSWORD).await;
    assert_eq!(path(&a).await, "/account");
    let page = text(&a).await;
    assert!(page.contains("alice@example.com") && page.contains("This device"), "{page}");

    // The session cookie is there, HttpOnly: scripts cannot read it.
    let cookies = a.get_all_cookies().await.expect("cookies");
    let session = cookies.iter().find(|c| c.name() == "__Host-portcullis").expect("the session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(session.secure(), Some(true));
    let visible = a.execute("return document.cookie", vec![]).await.expect("script");
    assert!(!visible.as_str().unwrap_or_default().contains("portcullis"), "document.cookie = {visible}");

    // A second browser (another profile, a phone) signs in: the first sees two devices.
    let b = browser(&driver, PHONE).await;
    b.goto(&s.url("/login")).await.expect("goto");
    sign_in(&b, "alice@example.com", PASSWORD).await;
    assert_eq!(path(&b).await, "/account");
    screenshot(&b, "account-phone").await;
    a.refresh().await.expect("reload");
    assert_eq!(a.find_all(Locator::Css("table.devices tbody tr")).await.expect("rows").len(), 2);
    screenshot(&a, "account").await;

    // The first browser signs the second one out.
    click(&a, "table.devices tbody tr:not(.current) button").await;
    assert_eq!(path(&a).await, "/account?done=ended");
    assert!(text(&a).await.contains("That device was signed out"));
    assert_eq!(a.find_all(Locator::Css("table.devices tbody tr")).await.expect("rows").len(), 1);
    b.goto(&s.url("/account")).await.expect("goto");
    assert!(path(&b).await.starts_with("/login"), "the phone is signed out");

    // Change password: a wrong current one is refused; the right one works and keeps this
    // browser signed in (under a new session id).
    fill(&a, "input[name=current_password]", "wrong").await;
    fill(&a, "input[name=new_password]", "a whole new passphrase").await;
    click(&a, "form[action='/account/password'] button").await;
    assert!(text(&a).await.contains("The current password is not right"));
    fill(&a, "input[name=current_password]", PASSWORD).await;
    fill(&a, "input[name=new_password]", "a whole new passphrase").await;
    click(&a, "form[action='/account/password'] button").await;
    assert_eq!(path(&a).await, "/account?done=password");
    assert!(text(&a).await.contains("Your password was changed"));
    let renewed = a.get_named_cookie("__Host-portcullis").await.expect("cookie");
    assert_ne!(renewed.value(), session.value(), "a new session id after the password change");

    // Sign out: back to the sign-in page, and /account is closed again.
    click(&a, "div.actions form[action='/account/logout'] button").await;
    assert_eq!(path(&a).await, "/login");
    a.goto(&s.url("/account")).await.expect("goto");
    assert!(path(&a).await.starts_with("/login"));
    sign_in(&a, "alice@example.com", "a whole new passphrase").await;
    assert_eq!(path(&a).await, "/account");

    // "Sign out everywhere" from the phone ends the desktop session too.
    b.goto(&s.url("/login")).await.expect("goto");
    sign_in(&b, "alice@example.com", "a whole new passphrase").await;
    click(&b, "form[action='/account/logout-all'] button").await;
    assert_eq!(path(&b).await, "/login");
    a.goto(&s.url("/account")).await.expect("goto");
    assert!(path(&a).await.starts_with("/login"));
    a.close().await.expect("close");
    b.close().await.expect("close");
}

#[tokio::test]
async fn registration_page_creates_an_account_and_signs_in() {
    let Some(driver) = driver("browser: register").await else { return };
    let s = TestServer::start().await;
    s.register("taken@example.com").await;
    let b = browser(&driver, DESKTOP).await;
    b.goto(&s.url("/register")).await.expect("goto");
    fill(&b, "input[name=email]", "taken@example.com").await;
    fill(&b, "input[name=password]", PASSWORD).await;
    click(&b, "form[action='/register'] button").await;
    assert!(text(&b).await.contains("already registered"));
    fill(&b, "input[name=email]", "new@example.com").await;
    fill(&b, "input[name=password]", PASSWORD).await;
    screenshot(&b, "register").await;
    click(&b, "form[action='/register'] button").await;
    assert_eq!(path(&b).await, "/account");
    assert!(text(&b).await.contains("new@example.com"));
    b.close().await.expect("close");
}

/// The server prints `http://127.0.0.1:PORT`; a person types `localhost`. On the zero-
/// configuration default both are this server: signing in and registering work there.
#[tokio::test]
async fn signing_in_and_registering_at_localhost_work_on_the_default() {
    let Some(driver) = driver("browser: localhost").await else { return };
    let s = TestServer::start().await;
    s.register("local@example.com").await;
    let localhost = s.base.replace("127.0.0.1", "localhost");
    let b = browser(&driver, DESKTOP).await;
    b.goto(&format!("{localhost}/login")).await.expect("goto");
    sign_in(&b, "local@example.com", PASSWORD).await;
    assert_eq!(path(&b).await, "/account", "{}", text(&b).await);
    assert!(text(&b).await.contains("local@example.com"));
    let c = browser(&driver, DESKTOP).await;
    c.goto(&format!("{localhost}/register")).await.expect("goto");
    fill(&c, "input[name=email]", "typed-localhost@example.com").await;
    fill(&c, "input[name=password]", PASSWORD).await;
    click(&c, "form[action='/register'] button").await;
    assert_eq!(path(&c).await, "/account", "{}", text(&c).await);
    assert!(c.current_url().await.expect("url").as_str().starts_with(&localhost));
    b.close().await.expect("close");
    c.close().await.expect("close");
}

#[tokio::test]
async fn the_admin_page_is_for_admins_only() {
    let Some(driver) = driver("browser: admin").await else { return };
    let s = TestServer::start().await;
    let admin = s.register("admin@example.com").await;
    s.make_admin(&admin).await;
    s.register("bob@example.com").await;
    s.register("carol@example.com").await;

    let a = browser(&driver, DESKTOP).await;
    a.goto(&s.url("/admin")).await.expect("goto");
    assert_eq!(path(&a).await, "/login?return_to=%2Fadmin");
    sign_in(&a, "admin@example.com", PASSWORD).await;
    assert_eq!(path(&a).await, "/admin", "back where the admin was going");
    let page = text(&a).await;
    for expected in ["bob@example.com", "carol@example.com", "Recent events", "login"] {
        assert!(page.contains(expected), "{expected} missing from {page}");
    }
    // Make bob an admin; disable carol.
    let bob_row = "//tr[td[contains(., 'bob@example.com')]]";
    let button = a.find(Locator::XPath(&format!("{bob_row}//button[@value='grant_admin']"))).await.expect("button");
    submit(&a, button).await;
    assert_eq!(path(&a).await, "/admin");
    let bob = a.find(Locator::XPath(bob_row)).await.expect("row").text().await.expect("text");
    assert!(bob.contains("admin"), "{bob}");
    let carol_row = "//tr[td[contains(., 'carol@example.com')]]";
    let button = a.find(Locator::XPath(&format!("{carol_row}//button[@value='disable']"))).await.expect("button");
    submit(&a, button).await;
    let carol = a.find(Locator::XPath(carol_row)).await.expect("row").text().await.expect("text");
    assert!(carol.contains("disabled"), "{carol}");
    screenshot(&a, "admin").await;

    // A signed-in person without the role is refused.
    let c = browser(&driver, DESKTOP).await;
    let res = s.post_json("/v1/admin/users", &json!({})).await;
    assert_eq!(res.status(), 401);
    s.register("dave@example.com").await;
    c.goto(&s.url("/login")).await.expect("goto");
    sign_in(&c, "dave@example.com", PASSWORD).await;
    c.goto(&s.url("/admin")).await.expect("goto");
    assert_eq!(path(&c).await, "/admin");
    let page = text(&c).await;
    assert!(page.contains("needs the admin role"), "{page}");
    assert!(!page.contains("bob@example.com"), "no user list for non-admins");
    // Disabled carol cannot sign in.
    c.goto(&s.url("/account")).await.expect("goto");
    click(&c, "div.actions form[action='/account/logout'] button").await;
    sign_in(&c, "carol@example.com", PASSWORD).await;
    assert!(text(&c).await.contains("Invalid email or password"));
    a.close().await.expect("close");
    c.close().await.expect("close");
}

/// nginx `auth_request` sends an anonymous visitor of the protected app to the sign-in page,
/// and after signing in they land on the page they asked for, as the signed-in user.
#[tokio::test]
async fn forward_auth_sends_people_to_sign_in_and_back_to_the_app() {
    let Some(driver) = driver("browser: forward auth").await else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    // The protected application: greets whoever nginx says is signed in.
    let app = axum::Router::new().fallback(|headers: axum::http::HeaderMap, uri: axum::http::Uri| async move {
        let email = headers.get("x-portcullis-email").and_then(|v| v.to_str().ok()).unwrap_or("nobody").to_owned();
        axum::response::Html(format!(
            "<!doctype html><title>App</title><h1>Hello {email}</h1><p>You asked for {uri}</p>"
        ))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app_addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    // Portcullis on a port known before nginx starts; nginx's address is its public_url.
    let portcullis_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = portcullis_listener.local_addr().expect("addr").port();
    let conf = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/nginx/forward-auth.conf"))
        .expect("conf")
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:9000", &app_addr)
        .replace("listen 8090;", "listen 127.0.0.1:{port};");
    let Some(nginx) = require("browser: forward auth nginx", Nginx::start(&conf)) else { return };
    let mut settings = Settings { data_dir: dir.path().join("data"), ..Settings::default() };
    settings.public_url = Some(nginx.url().parse().expect("url"));
    settings.trusted_proxies = vec!["127.0.0.1".into()];
    let portcullis = portcullis_server::spawn::spawn_on(settings, Arc::new(SystemClock), portcullis_listener)
        .await
        .expect("portcullis");
    let res = reqwest::Client::new()
        .post(format!("{}/v1/register", portcullis.base))
        .json(&json!({"email": "fa@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 201);

    let b = browser(&driver, DESKTOP).await;
    let wanted = format!("{}/reports/2026?view=summary&x=1&y=2", nginx.url());
    b.goto(&wanted).await.expect("goto");
    let at = b.current_url().await.expect("url");
    assert_eq!(at.path(), "/login", "sent to sign in: {at}: {}", text(&b).await);
    let back: Vec<(String, String)> = at.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    assert_eq!(back, [("return_to".to_owned(), wanted.clone())]);
    sign_in(&b, "fa@example.com", PASSWORD).await;
    assert_eq!(b.current_url().await.expect("url").as_str(), wanted, "back at the page asked for");
    let page = text(&b).await;
    assert!(page.contains("Hello fa@example.com"), "{page}");
    b.close().await.expect("close");
}

/// The example application (`examples/oidc-app`), a real OpenID Connect relying party, signs a
/// person in through Portcullis' sign-in page and out again through RP-initiated logout.
#[tokio::test]
async fn an_application_signs_a_person_in_through_portcullis_and_out_again_in_a_real_browser() {
    let Some(driver) = driver("browser: OpenID Connect application").await else { return };
    let s = TestServer::start().await;
    s.register("ada@example.com").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app_url = format!("http://{}", listener.local_addr().expect("addr"));
    let spec = portcullis_service::OidcClientSpec {
        name: "Example app".into(),
        redirect_uris: vec![format!("{app_url}/callback")],
        post_logout_redirect_uris: vec![format!("{app_url}/")],
        first_party: true,
        ..Default::default()
    };
    let registered = s
        .service
        .register_oidc_client(portcullis_service::Actor::Cli, spec, &Default::default())
        .await
        .expect("register");
    let config = oidc_app::Config {
        issuer: s.base.clone(),
        client_id: registered.client.id.to_string(),
        client_secret: registered.secret.expect("secret").expose().to_owned(),
        public_url: app_url.clone(),
    };
    let app = oidc_app::app(config).await.expect("the application discovers Portcullis");
    struct Serving(tokio::task::JoinHandle<()>);
    impl Drop for Serving {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _serving = Serving(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }));

    let b = browser(&driver, DESKTOP).await;
    b.goto(&app_url).await.expect("goto");
    assert!(text(&b).await.contains("Not signed in"));
    click(&b, "#sign-in").await;
    assert!(path(&b).await.starts_with("/login?return_to=%2Foauth2%2Fauthorize"), "{}", path(&b).await);
    assert!(text(&b).await.contains("to continue to Example app"), "{}", text(&b).await);
    screenshot(&b, "login-application").await;
    sign_in(&b, "ada@example.com", PASSWORD).await;
    let here = b.current_url().await.expect("url");
    assert_eq!(format!("{}://{}", here.scheme(), here.authority()), app_url, "back at the application");
    assert!(text(&b).await.contains("Signed in as ada@example.com"), "{}", text(&b).await);
    // Signed in to Portcullis as well; the application is listed on the account page.
    b.goto(&s.url("/account")).await.expect("goto");
    assert!(text(&b).await.contains("Example app"), "{}", text(&b).await);

    // Sign out from the application: through Portcullis, back to the application, signed out
    // of both.
    b.goto(&app_url).await.expect("goto");
    click(&b, "#sign-out").await;
    let here = b.current_url().await.expect("url");
    assert_eq!(format!("{}://{}{}", here.scheme(), here.authority(), here.path()), format!("{app_url}/"));
    assert!(text(&b).await.contains("Not signed in"), "{}", text(&b).await);
    b.goto(&s.url("/account")).await.expect("goto");
    assert!(path(&b).await.starts_with("/login"), "signed out of Portcullis too");
    b.close().await.expect("close");
}

/// Two-step sign-in as a person meets it: adding an authenticator app on `/account` from the
/// page's key (the QR code is there to scan), the recovery codes, then signing in with the
/// password and a code at `/login/mfa`, and with a recovery code.
#[tokio::test]
async fn two_step_sign_in_is_added_and_used_in_a_real_browser() {
    let Some(driver) = driver("browser: two-step sign-in").await else { return };
    let s = TestServer::start().await;
    s.register("two@example.com").await;
    let b = browser(&driver, DESKTOP).await;
    b.goto(&s.url("/login")).await.expect("goto");
    sign_in(&b, "two@example.com", PASSWORD).await;
    click(&b, "form[action='/account/mfa/totp'] button").await;
    assert!(b.find(Locator::Css(".qr svg")).await.is_ok(), "a QR code to scan");
    let uri = b.find(Locator::Css("a.otpauth")).await.expect("link").attr("href").await.expect("href");
    let app = totp_rs::TOTP::from_url_unchecked(uri.expect("an otpauth URI")).expect("the app reads it");
    let key = b.find(Locator::Css("code.secret")).await.expect("key").text().await.expect("text");
    assert_eq!(key, app.get_secret_base32(), "the key to type is the QR code's");
    screenshot(&b, "two-step-enrol").await;
    let now = || u64::try_from(portcullis_core::Clock::now(&s.clock).unix_seconds()).expect("time");
    fill(&b, "input[name=code]", &app.generate(now())).await;
    click(&b, "form[action='/account/mfa/totp/confirm'] button").await;
    let codes: Vec<String> = {
        let mut codes = Vec::new();
        for li in b.find_all(Locator::Css("ul.codes li")).await.expect("codes") {
            codes.push(li.text().await.expect("text"));
        }
        codes
    };
    assert_eq!(codes.len(), 10);
    b.goto(&s.url("/account")).await.expect("goto");
    assert!(text(&b).await.contains("10 recovery codes left"));

    // Sign out, then in: the password leads to the second step.
    click(&b, "form[action='/account/logout'] button").await;
    sign_in(&b, "two@example.com", PASSWORD).await;
    assert_eq!(path(&b).await, "/login/mfa");
    fill(&b, "input[name=code]", "000000").await;
    click(&b, "form[action='/login/mfa'] button").await;
    assert!(text(&b).await.contains("That code is not right"));
    screenshot(&b, "two-step-sign-in").await;
    s.advance(std::time::Duration::from_secs(30));
    fill(&b, "input[name=code]", &app.generate(now())).await;
    click(&b, "form[action='/login/mfa'] button").await;
    assert_eq!(path(&b).await, "/account");
    // And with a recovery code, typed without its dashes.
    click(&b, "form[action='/account/logout'] button").await;
    sign_in(&b, "two@example.com", PASSWORD).await;
    fill(&b, "input[name=code]", &codes[0].replace('-', "")).await;
    click(&b, "form[action='/login/mfa'] button").await;
    assert_eq!(path(&b).await, "/account");
    assert!(text(&b).await.contains("9 recovery codes left"));
    b.close().await.expect("close");
}

/// Password reset by email, end to end: the message comes through a real SMTP server started
/// here, the browser follows its link, and every earlier sign-in is dead afterwards.
#[tokio::test]
async fn a_forgotten_password_is_reset_from_an_emailed_link_in_a_real_browser() {
    let Some(driver) = driver("browser: password reset by email").await else { return };
    let Some(smtp) = require("browser: password reset by email", portcullis_lab::Smtp::start()) else { return };
    let s = TestServer::start_with(|settings| {
        settings.smtp.url = Some(smtp.url());
        settings.smtp.tls = portcullis_server::settings::SmtpTls::None;
    })
    .await;
    let (_, elsewhere) = s.user("forgot@example.com").await;
    let b = browser(&driver, PHONE).await;
    b.goto(&s.url("/login")).await.expect("goto");
    b.find(Locator::LinkText("Forgot your password?")).await.expect("the link").click().await.expect("click");
    b.wait().for_element(Locator::Css("form[action='/password/forgot']")).await.expect("the form");
    fill(&b, "input[name=email]", "forgot@example.com").await;
    click(&b, "form[action='/password/forgot'] button").await;
    assert!(text(&b).await.contains("Check your email"));

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let message = loop {
        if let Some(m) = smtp.messages().pop() {
            break m;
        }
        assert!(std::time::Instant::now() < deadline, "no message arrived");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let message = message.replace("\r\n", "\n");
    let (_, body) = message.split_once("\n\n").expect("a body");
    let body = quoted_printable::decode(body, quoted_printable::ParseMode::Robust).expect("quoted-printable");
    let body = String::from_utf8(body).expect("text");
    let link = body.split_whitespace().find(|w| w.contains("/password/reset?token=")).expect("a link").to_owned();
    assert!(link.starts_with(&s.base), "{link}");

    b.goto(&link).await.expect("goto");
    fill(&b, "input[name=new_password]", "a brand new passphrase").await;
    screenshot(&b, "password-reset").await;
    click(&b, "form[action='/password/reset'] button").await;
    assert!(text(&b).await.contains("Your password is changed"));
    assert_eq!(s.me(&elsewhere).await.status(), reqwest::StatusCode::UNAUTHORIZED, "the other sign-in ended");
    b.goto(&s.url("/login")).await.expect("goto");
    sign_in(&b, "forgot@example.com", "a brand new passphrase").await;
    assert_eq!(path(&b).await, "/account");
    // The link was used up.
    b.goto(&link).await.expect("goto");
    fill(&b, "input[name=new_password]", "another new passphrase").await;
    click(&b, "form[action='/password/reset'] button").await;
    assert!(text(&b).await.contains("expired or was already used"));
    b.close().await.expect("close");
}

/// WebDriver's virtual authenticator (the WebAuthn spec's automation extension): a platform
/// authenticator that keeps discoverable credentials and verifies the user without a prompt.
#[derive(Debug)]
struct AddVirtualAuthenticator;

impl fantoccini::wd::WebDriverCompatibleCommand for AddVirtualAuthenticator {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/webauthn/authenticator", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        let body = json!({
            "protocol": "ctap2",
            "transport": "internal",
            "hasResidentKey": true,
            "hasUserVerification": true,
            "isUserConsenting": true,
            "isUserVerified": true,
        });
        (axum::http::Method::POST, Some(body.to_string()))
    }
}

async fn add_authenticator(b: &Client) {
    b.issue_cmd(AddVirtualAuthenticator).await.expect("a virtual authenticator");
}

/// `http://localhost:PORT/...`: passkeys need a domain name, and on the zero-configuration
/// default Portcullis is their relying party at `localhost`.
fn at_localhost(s: &TestServer, path: &str) -> String {
    s.url(path).replacen("127.0.0.1", "localhost", 1)
}

/// Clicks a passkey button and waits for the page its answer leads to.
async fn passkey_click(b: &Client, form: &str) {
    click(b, &format!("form#{form} button")).await;
}

/// Passkeys as a person meets them: one added on `/account`, then signing in with it alone
/// (no email typed), as the second step after a password, and refused once removed.
#[tokio::test]
async fn a_passkey_is_added_signs_in_alone_and_as_a_second_step_and_is_refused_once_removed() {
    let Some(driver) = driver("browser: passkeys").await else { return };
    let s = TestServer::start().await;
    s.register("keys@example.com").await;
    let b = browser(&driver, DESKTOP).await;
    add_authenticator(&b).await;
    b.goto(&at_localhost(&s, "/login")).await.expect("goto");
    sign_in(&b, "keys@example.com", PASSWORD).await;
    fill(&b, "form#add-passkey input[name=name]", "Test laptop").await;
    passkey_click(&b, "add-passkey").await;
    let page = text(&b).await;
    assert!(page.contains("Your recovery codes"), "the first factor comes with recovery codes: {page}");
    b.goto(&at_localhost(&s, "/account")).await.expect("goto");
    let page = text(&b).await;
    assert!(page.contains("Test laptop") && page.contains("Never"), "{page}");
    b.execute("document.getElementById('passkeys').scrollIntoView()", vec![]).await.expect("scroll");
    screenshot(&b, "passkeys").await;

    // At 127.0.0.1 the relying party (localhost) cannot be used: no button there.
    b.goto(&s.url("/login")).await.expect("goto");
    assert!(b.find(Locator::Css("form#passkey-sign-in")).await.is_err(), "no passkey button at 127.0.0.1");
    b.goto(&at_localhost(&s, "/account")).await.expect("goto");

    // Signed out, the passkey alone signs in.
    click(&b, "form[action='/account/logout'] button").await;
    screenshot(&b, "passkey-sign-in").await;
    passkey_click(&b, "passkey-sign-in").await;
    assert_eq!(path(&b).await, "/account");
    assert!(!text(&b).await.contains("Never"), "last use recorded");

    // After a password, the passkey is the second step.
    click(&b, "form[action='/account/logout'] button").await;
    sign_in(&b, "keys@example.com", PASSWORD).await;
    assert_eq!(path(&b).await, "/login/mfa");
    passkey_click(&b, "passkey-second-step").await;
    assert_eq!(path(&b).await, "/account");

    // Removed, it is refused, though the authenticator still holds it.
    click(&b, "form[action='/account/passkeys/remove'] button").await;
    assert!(text(&b).await.contains("The passkey was removed"));
    click(&b, "form[action='/account/logout'] button").await;
    passkey_click(&b, "passkey-sign-in").await;
    assert_eq!(path(&b).await, "/login/passkey");
    assert!(text(&b).await.contains("That passkey was not accepted"));
    // And the password alone signs in again: no second factor is left.
    sign_in(&b, "keys@example.com", PASSWORD).await;
    assert_eq!(path(&b).await, "/account");
    b.close().await.expect("close");
}

/// An administrator with no second factor (`mfa.required_for_roles`' default) signing in:
/// after the password, `/login/enrol` has them add a passkey, which finishes the sign-in where
/// it was going; the next sign-in asks for that passkey.
#[tokio::test]
async fn an_administrator_adds_a_passkey_at_first_sign_in_and_is_asked_for_it_next_time() {
    let Some(driver) = driver("browser: enrolment at sign-in").await else { return };
    let s = TestServer::start_with(|s| {
        s.mfa.required_for_roles = portcullis_server::settings::Settings::default().mfa.required_for_roles;
    })
    .await;
    let admin = s.register("boss@example.com").await;
    s.make_admin(&admin).await;
    let b = browser(&driver, DESKTOP).await;
    add_authenticator(&b).await;
    b.goto(&at_localhost(&s, "/admin")).await.expect("goto");
    sign_in(&b, "boss@example.com", PASSWORD).await;
    assert_eq!(path(&b).await, "/login/enrol?return_to=%2Fadmin");
    let page = text(&b).await;
    assert!(page.contains("Set up two-step sign-in") && page.contains("Use an authenticator app"), "{page}");
    screenshot(&b, "enrol-at-sign-in").await;
    fill(&b, "form#enrol-passkey input[name=name]", "Boss's key").await;
    passkey_click(&b, "enrol-passkey").await;
    let page = text(&b).await;
    assert!(page.contains("Your recovery codes"), "{page}");
    click(&b, "a[href='/admin']").await;
    assert_eq!(path(&b).await, "/admin", "signed in, on where the sign-in was going");

    click(&b, "form[action='/account/logout'] button").await;
    sign_in(&b, "boss@example.com", PASSWORD).await;
    assert_eq!(path(&b).await, "/login/mfa", "the passkey is asked for now");
    passkey_click(&b, "passkey-second-step").await;
    assert_eq!(path(&b).await, "/account");
    assert!(text(&b).await.contains("Boss's key"));
    b.close().await.expect("close");
}

/// Asks the browser's authenticator, on the page it is on, for an answer to `options` (a
/// server's `navigator.credentials.get` options): the credential as JSON.
async fn assertion_here(b: &Client, options: &serde_json::Value) -> serde_json::Value {
    let script = r#"
        const [options, done] = arguments;
        const from = s => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/')), c => c.charCodeAt(0)).buffer;
        const to = b => btoa(String.fromCharCode(...new Uint8Array(b))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
        const p = Object.assign({}, options.publicKey, { challenge: from(options.publicKey.challenge) });
        p.allowCredentials = (p.allowCredentials || []).map(c => Object.assign({}, c, { id: from(c.id) }));
        navigator.credentials.get({ publicKey: p }).then(c => done({
            id: c.id, rawId: to(c.rawId), type: c.type, extensions: {},
            response: {
                clientDataJSON: to(c.response.clientDataJSON), authenticatorData: to(c.response.authenticatorData),
                signature: to(c.response.signature), userHandle: c.response.userHandle ? to(c.response.userHandle) : null,
            },
        }), e => done({ error: String(e) }));
    "#;
    let answer = b.execute_async(script, vec![options.clone()]).await.expect("script");
    assert!(answer.get("error").is_none(), "{answer}");
    answer
}

/// Hostile passkey answers over the API, made by a real authenticator in the browser: one
/// made on another site's page (another origin, as a phishing page would relay it), one sent
/// twice, one changed, are refused; the genuine one signs in with amr hwk, user, mfa.
#[tokio::test]
async fn passkey_answers_from_another_origin_replayed_or_changed_are_refused() {
    let Some(driver) = driver("browser: hostile passkey answers").await else { return };
    let s = TestServer::start().await;
    let elsewhere = TestServer::start().await;
    s.register("victim@example.com").await;
    let b = browser(&driver, DESKTOP).await;
    add_authenticator(&b).await;
    b.goto(&at_localhost(&s, "/login")).await.expect("goto");
    sign_in(&b, "victim@example.com", PASSWORD).await;
    passkey_click(&b, "add-passkey").await;
    assert!(text(&b).await.contains("Your recovery codes"));

    let begin = || async {
        let res = s.post("/v1/login/webauthn").send().await.expect("send");
        assert_eq!(res.status(), reqwest::StatusCode::OK);
        res.json::<serde_json::Value>().await.expect("json")
    };
    let finish = |state: &serde_json::Value, credential: &serde_json::Value| {
        let body = json!({"state": state, "credential": credential, "mode": "jwt"});
        s.post("/v1/login/webauthn/finish").json(&body).send()
    };

    // Made on another origin (the same RP ID, localhost, at another port).
    let ceremony = begin().await;
    b.goto(&at_localhost(&elsewhere, "/login")).await.expect("goto");
    let relayed = assertion_here(&b, &ceremony["options"]).await;
    let res = finish(&ceremony["state"], &relayed).await.expect("send");
    crate::common::expect_problem(res, reqwest::StatusCode::UNAUTHORIZED, "passkey_refused").await;

    // Changed: one byte of the signature.
    b.goto(&at_localhost(&s, "/login")).await.expect("goto");
    let ceremony = begin().await;
    let mut changed = assertion_here(&b, &ceremony["options"]).await;
    let signature = changed["response"]["signature"].as_str().expect("signature").to_owned();
    let flipped = if signature.ends_with('A') { 'B' } else { 'A' };
    changed["response"]["signature"] = json!(format!("{}{flipped}", &signature[..signature.len() - 1]));
    let res = finish(&ceremony["state"], &changed).await.expect("send");
    crate::common::expect_problem(res, reqwest::StatusCode::UNAUTHORIZED, "passkey_refused").await;

    // The genuine answer signs in, once.
    let ceremony = begin().await;
    let genuine = assertion_here(&b, &ceremony["options"]).await;
    let res = finish(&ceremony["state"], &genuine).await.expect("send");
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = res.json().await.expect("json");
    let token = body["access_token"].as_str().expect("an access token");
    let payload = token.split('.').nth(1).expect("payload");
    use base64::Engine as _;
    let claims: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url"))
            .expect("claims");
    assert_eq!(claims["amr"], json!(["hwk", "user", "mfa"]), "{claims}");
    let res = finish(&ceremony["state"], &genuine).await.expect("send");
    crate::common::expect_problem(res, reqwest::StatusCode::BAD_REQUEST, "invalid_webauthn_state").await;
    b.close().await.expect("close");
}
