//! A real Portcullis server on port 0 for the integration tests, with a manual clock.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use portcullis_core::ManualClock;
use portcullis_server::settings::Settings;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

pub const PASSWORD: &str = "correct horse battery staple";
pub const COOKIE: &str = "__Host-portcullis";

pub struct TestServer {
    pub base: String,
    pub clock: ManualClock,
    pub settings: Settings,
    pub client: reqwest::Client,
    /// The server's operations, for test set-up that has no HTTP route (granting the first admin).
    pub service: portcullis_service::Service,
    /// The whole shared state (signing keys, token service).
    pub state: portcullis_server::AppState,
    dir: Arc<TempDir>,
    running: portcullis_server::spawn::Running,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts with the default settings, changed by `edit`, in a fresh data directory. One
    /// default is changed first: administrators need no second factor
    /// (`mfa.required_for_roles = []`), so that tests of other things can sign one in with a
    /// password; `enrolment.rs` tests the default.
    pub async fn start_with(edit: impl FnOnce(&mut Settings)) -> Self {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let mut settings = Settings { data_dir: dir.path().join("data"), ..Settings::default() };
        settings.mfa.required_for_roles.clear();
        edit(&mut settings);
        Self::launch(settings, dir, ManualClock::starting_now()).await
    }

    async fn launch(settings: Settings, dir: Arc<TempDir>, clock: ManualClock) -> Self {
        let running =
            portcullis_server::spawn::spawn(settings.clone(), Arc::new(clock.clone())).await.expect("server starts");
        let client = reqwest::Client::builder().build().expect("client");
        Self {
            base: running.base.clone(),
            service: running.state.service.clone(),
            state: running.state.clone(),
            clock,
            settings,
            client,
            dir,
            running,
        }
    }

    /// Stops the server and starts a new one on the same data directory and clock.
    pub async fn restart(self) -> Self {
        self.restart_with(|_| {}).await
    }

    /// Stops the server and starts a new one on the same data directory and clock, with its
    /// settings changed by `edit`.
    pub async fn restart_with(mut self, edit: impl FnOnce(&mut Settings)) -> Self {
        self.running.stop().await.expect("server ran");
        let (mut settings, dir, clock) = (self.settings.clone(), Arc::clone(&self.dir), self.clock.clone());
        edit(&mut settings);
        Self::launch(settings, dir, clock).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, self.url(path))
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    /// `GET path` with a session cookie.
    pub async fn get_as(&self, path: &str, cookie: &str) -> Response {
        self.get(path).header("cookie", cookie).send().await.expect("send")
    }

    /// `POST path` with a session cookie and no body.
    pub async fn post_as(&self, path: &str, cookie: &str) -> Response {
        self.post(path).header("cookie", cookie).send().await.expect("send")
    }

    /// `POST path` with a JSON body and no cookie.
    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.post(path).json(body).send().await.expect("send")
    }

    /// Any method with a session cookie, and a JSON body unless `body` is null.
    pub async fn send_as(&self, method: Method, path: &str, cookie: &str, body: &Value) -> Response {
        let mut req = self.request(method, path).header("cookie", cookie);
        if !body.is_null() {
            req = req.json(body);
        }
        req.send().await.expect("send")
    }

    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    pub async fn register(&self, email: &str) -> Value {
        let res =
            self.post("/v1/register").json(&json!({"email": email, "password": PASSWORD})).send().await.expect("send");
        assert_eq!(res.status(), StatusCode::CREATED, "register {email}");
        res.json::<Value>().await.expect("json")["user"].clone()
    }

    /// Logs in and returns the session cookie (`name=value`).
    pub async fn login(&self, email: &str) -> String {
        self.login_with(email, PASSWORD).await
    }

    pub async fn login_with(&self, email: &str, password: &str) -> String {
        let res =
            self.post("/v1/login").json(&json!({"email": email, "password": password})).send().await.expect("send");
        assert_eq!(res.status(), StatusCode::OK, "login {email}");
        session_cookie(&res).expect("login sets the session cookie")
    }

    /// Registers and logs in a new user.
    pub async fn user(&self, email: &str) -> (Value, String) {
        let user = self.register(email).await;
        let cookie = self.login(email).await;
        (user, cookie)
    }

    /// `GET /v1/me` with a cookie.
    pub async fn me(&self, cookie: &str) -> Response {
        self.get("/v1/me").header("cookie", cookie).send().await.expect("send")
    }

    /// Grants `admin` to a user directly through the store (as `portcullis user add --role
    /// admin` would have).
    pub async fn make_admin(&self, user: &Value) {
        let id = portcullis_core::UserId::parse(user["id"].as_str().expect("id")).expect("user id");
        let roles = portcullis_core::role_set(["admin"]).expect("roles");
        let update = portcullis_store::UserUpdate { roles: Some(roles), ..Default::default() };
        let now = portcullis_core::Clock::now(&self.clock);
        self.service.users.update_user(&id, update, now).await.expect("update").expect("user exists");
    }

    /// Logs in in JWT mode; returns the whole JSON answer.
    pub async fn jwt_login(&self, email: &str) -> Value {
        let res = self.post_json("/v1/login", &json!({"email": email, "password": PASSWORD, "mode": "jwt"})).await;
        assert_eq!(res.status(), StatusCode::OK, "jwt login {email}");
        res.json().await.expect("json")
    }

    /// A request with `Authorization: Bearer`.
    pub fn bearer(&self, method: Method, path: &str, token: &str) -> RequestBuilder {
        self.request(method, path).header("authorization", format!("Bearer {token}"))
    }

    /// `GET /v1/me` with a bearer token; the status.
    pub async fn me_bearer(&self, token: &str) -> StatusCode {
        self.bearer(Method::GET, "/v1/me", token).send().await.expect("send").status()
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post_json("/v1/token/refresh", &json!({"refresh_token": refresh_token})).await
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self.settings.data_dir.clone()
    }
}

/// The `name=value` of the session cookie set by a response, if any.
pub fn session_cookie(res: &Response) -> Option<String> {
    set_cookies(res).into_iter().find_map(|c| {
        let pair = c.split(';').next()?.trim();
        let (name, value) = pair.split_once('=')?;
        ((name == COOKIE || name == "portcullis") && !value.is_empty()).then(|| pair.to_owned())
    })
}

pub fn set_cookies(res: &Response) -> Vec<String> {
    res.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok().map(str::to_owned)).collect()
}

/// Asserts a problem+json answer with this status and code; returns the body.
pub async fn expect_problem(res: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(res.status(), status, "status for expected code {code}");
    let ct = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!(ct, "application/problem+json", "content type for {code}");
    if status == StatusCode::UNAUTHORIZED {
        assert!(res.headers().contains_key("www-authenticate"), "401 without WWW-Authenticate");
    }
    let body: Value = res.json().await.expect("problem body is JSON");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(body["title"].is_string(), "{body}");
    body
}
