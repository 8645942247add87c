//! The `portcullis` binary: zero-configuration start, settings from file, environment and flags,
//! and the user commands working on the same data as the server.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
const PASSWORD: &str = "correct horse battery staple";

/// A `portcullis serve` child process, killed when dropped.
struct Running {
    child: Child,
    base: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn command(cwd: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd).env_remove("RUST_LOG");
    cmd
}

/// Starts `portcullis serve` and waits for the line that says where it listens.
fn serve(mut cmd: Command) -> Running {
    cmd.stderr(Stdio::null());
    serve_with(cmd)
}

fn serve_with(mut cmd: Command) -> Running {
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn portcullis");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).expect("portcullis printed where it listens");
    let base = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    assert!(line.contains("listening on"), "{line}");
    Running { child, base }
}

fn failing(mut cmd: Command) -> String {
    let out: Output = cmd.output().expect("run portcullis");
    assert!(!out.status.success(), "expected failure, got success: {}", String::from_utf8_lossy(&out.stdout));
    // Key names are compared without case: the environment provider reports them upper-cased.
    String::from_utf8_lossy(&out.stderr).to_lowercase()
}

/// `portcullis serve` on a free port with `env` set; it must refuse to start. Its message.
fn serve_refused(cwd: &Path, env: &[(&str, &str)]) -> String {
    let mut cmd = command(cwd);
    cmd.args(["serve", "--listen", "127.0.0.1:0"]).envs(env.iter().copied());
    failing(cmd)
}

/// The `name=value` of the first cookie a response sets.
fn cookie_of(res: &reqwest::Response) -> String {
    res.headers()["set-cookie"].to_str().expect("ascii").split(';').next().expect("pair").to_owned()
}

/// The latest 100 audit events, read by the administrator `email` through the admin API.
async fn audit_log(base: &str, email: &str, password: &str) -> Value {
    let res = post_json(format!("{base}/v1/login"), json!({"email": email, "password": password, "mode": "jwt"})).await;
    let token: Value = res.json().await.expect("json");
    reqwest::Client::new()
        .get(format!("{base}/v1/admin/audit?limit=100"))
        .bearer_auth(token["access_token"].as_str().expect("token"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json")
}

async fn post_json(url: String, body: Value) -> reqwest::Response {
    reqwest::Client::new().post(url).json(&body).send().await.expect("send")
}

#[tokio::test]
async fn zero_configuration_start_creates_its_data_and_serves() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No file, no flags: only the port is moved off 8080 (through the environment) so the test
    // can run beside anything else.
    let mut cmd = command(dir.path());
    cmd.arg("serve").env("PORTCULLIS_LISTEN", "127.0.0.1:0").env("PORTCULLIS_TEST_REQUIRE_ALL", "1");
    let server = serve(cmd);
    assert!(server.base.starts_with("http://127.0.0.1:"), "{}", server.base);
    let db = dir.path().join("portcullis-data").join("portcullis.db");
    assert!(db.is_file(), "the SQLite database is created in ./portcullis-data");

    let health = reqwest::get(format!("{}/healthz", server.base)).await.expect("healthz");
    assert_eq!(health.status(), 200);
    let res =
        post_json(format!("{}/v1/register", server.base), json!({"email": "z@example.com", "password": PASSWORD}))
            .await;
    assert_eq!(res.status(), 201);
    let res =
        post_json(format!("{}/v1/login", server.base), json!({"email": "z@example.com", "password": PASSWORD})).await;
    assert_eq!(res.status(), 200);
}

/// Two servers on one SQLite data directory would each keep their own revocation replica: the
/// second would never see the first's logouts. It refuses to start and says what to do instead;
/// once the first has stopped, the directory is free again.
#[tokio::test]
async fn a_second_server_on_the_same_sqlite_data_directory_refuses_to_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let serve_cmd = || {
        let mut cmd = command(dir.path());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir", "shared"]);
        cmd
    };
    let first = serve(serve_cmd());
    let message = failing(serve_cmd());
    assert!(message.contains("in use by another portcullis server"), "{message}");
    assert!(message.contains("shared"), "names the directory: {message}");
    assert!(message.contains("redis"), "says what to use for several nodes: {message}");
    // The first is unaffected.
    let health = reqwest::get(format!("{}/healthz", first.base)).await.expect("healthz");
    assert_eq!(health.status(), 200);
    drop(first);
    let again = serve(serve_cmd());
    assert_eq!(reqwest::get(format!("{}/healthz", again.base)).await.expect("healthz").status(), 200);
}

/// Sends SIGTERM to a child process.
fn terminate(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
}

/// Waits (within a generous bound) for a child to exit.
fn exits_within(child: &mut Child, bound: Duration) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(start.elapsed() < bound, "portcullis did not exit within {bound:?} of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client holding a half-sent request cannot keep the server from stopping: after SIGTERM
/// it finishes what it can within `connections.shutdown_timeout` and exits.
#[test]
fn sigterm_stops_the_server_by_the_shutdown_deadline_whatever_clients_hold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = command(dir.path());
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .env("PORTCULLIS_CONNECTIONS__HEADER_READ_TIMEOUT", "10m")
        .env("PORTCULLIS_CONNECTIONS__SHUTDOWN_TIMEOUT", "1s");
    let mut server = serve(cmd);
    let mut half = std::net::TcpStream::connect(server.base.trim_start_matches("http://")).expect("connect");
    half.write_all(b"POST /v1/login HTTP/1.1\r\nHost: portcullis.test\r\nContent-Length: 100\r\n\r\n{").expect("write");
    // The server has taken the connection when it answers another one.
    let health = std::net::TcpStream::connect(server.base.trim_start_matches("http://")).expect("connect");
    drop(health);
    std::thread::sleep(Duration::from_millis(200));
    terminate(&server.child);
    let status = exits_within(&mut server.child, Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
}

/// Under a low open-file limit, many connections cannot exhaust the server's descriptors: it
/// stops accepting below the limit (and raises the soft limit where it can), so it never fails
/// to accept for want of descriptors, and serves again once the clients let go.
#[tokio::test]
async fn many_connections_under_a_low_descriptor_limit_never_exhaust_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("stderr.log");
    let mut cmd = Command::new("sh");
    cmd.current_dir(dir.path())
        .env_remove("RUST_LOG")
        .args(["-c", "ulimit -n 100 && exec \"$0\" serve --listen 127.0.0.1:0", BIN])
        .env("PORTCULLIS_CONNECTIONS__HEADER_READ_TIMEOUT", "10m")
        .stderr(std::fs::File::create(&log).expect("log"));
    let server = serve_with(cmd);
    let addr = server.base.trim_start_matches("http://").to_owned();
    let held: Vec<std::net::TcpStream> =
        (0..150).map(|_| std::net::TcpStream::connect(&addr).expect("connect (the backlog takes it)")).collect();
    std::thread::sleep(Duration::from_millis(500));
    drop(held);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
    let res = client.get(format!("{}/healthz", server.base)).send().await.expect("served again");
    assert_eq!(res.status(), 200);
    drop(server);
    let stderr = std::fs::read_to_string(&log).expect("log");
    assert!(!stderr.contains("Too many open files"), "{stderr}");
}

/// The resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number")
}

/// Argon2's 19 MiB of working memory is kept per hashing thread and reused, not allocated and
/// freed per hash (which left it with the allocator: 228 MB after 30 logins).
#[tokio::test]
async fn password_hashing_memory_is_reused_not_accumulated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = command(dir.path());
    cmd.args(["serve", "--listen", "127.0.0.1:0"]);
    let server = serve(cmd);
    let body = json!({"email": "rss@example.com", "password": PASSWORD});
    assert_eq!(post_json(format!("{}/v1/register", server.base), body.clone()).await.status(), 201);
    let before = rss_kib(server.child.id());
    for _ in 0..30 {
        assert_eq!(post_json(format!("{}/v1/login", server.base), body.clone()).await.status(), 200);
    }
    let after = rss_kib(server.child.id());
    let workers = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1);
    // Each hashing thread may take one buffer of its own (19 MiB); nothing more may pile up.
    let bound = before + workers * 20 * 1024 + 16 * 1024;
    assert!(after <= bound, "RSS {before} KiB -> {after} KiB after 30 logins ({workers} hashing threads)");
}

#[tokio::test]
async fn flags_beat_environment_beat_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("p.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:1\"\nregistration = false\ndata_dir = \"from-file\"\n")
        .expect("write");
    let mut cmd = command(dir.path());
    cmd.args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--data-dir", "from-flag"])
        .env("PORTCULLIS_LISTEN", "127.0.0.1:2")
        .env("PORTCULLIS_DATA_DIR", "from-env")
        .env("PORTCULLIS_REGISTRATION", "true");
    let server = serve(cmd);
    assert!(dir.path().join("from-flag/portcullis.db").is_file());
    assert!(!dir.path().join("from-env").exists() && !dir.path().join("from-file").exists());
    // The environment overrode the file's `registration = false`.
    let res =
        post_json(format!("{}/v1/register", server.base), json!({"email": "e@example.com", "password": PASSWORD}))
            .await;
    assert_eq!(res.status(), 201);
}

#[test]
fn unknown_keys_and_bad_values_stop_start_up_with_their_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("p.toml");
    std::fs::write(&config, "[session]\nidle_timout = \"5m\"\n").expect("write");
    let mut cmd = command(dir.path());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"]).arg(&config);
    let err = failing(cmd);
    assert!(err.contains("idle_timout"), "{err}");

    let err = serve_refused(dir.path(), &[("PORTCULLIS_SESSION__IDLE_TIMEOUT", "whenever")]);
    assert!(err.contains("idle_timeout"), "{err}");

    let err = serve_refused(dir.path(), &[("PORTCULLIS_SESION__IDLE_TIMEOUT", "5m")]);
    assert!(err.contains("sesion"), "{err}");

    let mut cmd = command(dir.path());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--config", "missing.toml"]);
    let err = failing(cmd);
    assert!(err.contains("missing.toml"), "{err}");

    let err = serve_refused(dir.path(), &[("PORTCULLIS_STORE__SESSIONS", "cassandra://x")]);
    assert!(err.contains("store.sessions"), "{err}");
    assert!(!dir.path().join("portcullis-data").exists(), "nothing is created when the settings are wrong");
}

fn user_add(cwd: &Path, data_dir: &Path, args: &[&str], password: &str) -> Output {
    let mut child = command(cwd)
        .args(["user", "add"])
        .args(args)
        .arg("--password-stdin")
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(format!("{password}\n").as_bytes()).expect("write");
    child.wait_with_output().expect("wait")
}

#[tokio::test]
async fn user_commands_share_the_servers_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("shared-data");
    // The server creates the data on its first start; the commands work on it afterwards.
    let mut cmd = command(dir.path());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&data);
    drop(serve(cmd));
    let out = user_add(dir.path(), &data, &["Boss@Example.com", "--role", "admin"], PASSWORD);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("boss@example.com"));

    // Refusals are clear and leave nothing behind.
    let out = user_add(dir.path(), &data, &["boss@example.com"], PASSWORD);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already registered"));
    let out = user_add(dir.path(), &data, &["short@example.com"], "short");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 8"));
    let out = user_add(dir.path(), &data, &["x@example.com", "--role", "Bad Role"], PASSWORD);
    assert!(!out.status.success());
    let mut no_tty = command(dir.path());
    no_tty.args(["user", "add", "tty@example.com", "--data-dir"]).arg(&data).stdin(Stdio::null());
    let err = failing(no_tty);
    assert!(err.contains("--password-stdin"), "{err}");

    let out = command(dir.path()).args(["user", "list", "--data-dir"]).arg(&data).output().expect("run");
    assert!(out.status.success());
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listing.lines().count(), 2, "{listing}");
    // Aligned: every column starts where its header does.
    let header = listing.lines().next().expect("header");
    let row = listing.lines().nth(1).expect("row");
    for name in ["EMAIL", "ROLES", "STATUS", "CREATED"] {
        let at = header.find(name).expect("column");
        assert!(row[..at].ends_with("  ") && !row[at..].starts_with(' '), "{name} misaligned:\n{listing}");
    }
    assert!(listing.contains("boss@example.com") && listing.contains("admin,user"), "{listing}");

    // The server started on the same data directory knows the user and their role.
    let mut cmd = command(dir.path());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&data);
    let server = serve(cmd);
    // An administrator needs a second factor (mfa.required_for_roles): the first sign-in sets
    // one up, here an authenticator app, and only then opens a session.
    let res =
        post_json(format!("{}/v1/login", server.base), json!({"email": "boss@example.com", "password": PASSWORD}))
            .await;
    assert_eq!(res.status(), 401);
    assert!(res.headers().get("set-cookie").is_none(), "no session before the second factor");
    let asked: Value = res.json().await.expect("json");
    assert_eq!(asked["code"], "mfa_enrolment_required", "{asked}");
    let ticket = asked["mfa_token"].clone();
    let url = |p: &str| format!("{}{p}", server.base);
    let enrolment: Value =
        post_json(url("/v1/login/mfa/enrol/totp"), json!({"mfa_token": ticket})).await.json().await.expect("json");
    let app = totp_rs::TOTP::from_url_unchecked(enrolment["otpauth_uri"].as_str().expect("uri")).expect("app");
    let code = app.generate_current().expect("code");
    let res = post_json(url("/v1/login/mfa/enrol/totp/confirm"), json!({"mfa_token": ticket, "code": code})).await;
    assert_eq!(res.status(), 200);
    let cookie = cookie_of(&res);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["recovery_codes"].as_array().map(Vec::len), Some(10), "{body}");
    let res = reqwest::Client::new()
        .get(format!("{}/v1/admin/users", server.base))
        .header("cookie", cookie)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 200);

    // A user added while the server runs can log in at once.
    let out = user_add(dir.path(), &data, &["late@example.com"], PASSWORD);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let res =
        post_json(format!("{}/v1/login", server.base), json!({"email": "late@example.com", "password": PASSWORD}))
            .await;
    assert_eq!(res.status(), 200);
}

fn keys(cwd: &Path, data: &Path, args: &[&str]) -> Output {
    command(cwd).arg("keys").args(args).arg("--data-dir").arg(data).output().expect("run")
}

async fn jwks_kids(base: &str) -> Vec<String> {
    let jwks: Value =
        reqwest::get(format!("{base}/.well-known/jwks.json")).await.expect("jwks").json().await.expect("json");
    jwks["keys"].as_array().expect("keys").iter().filter_map(|k| k["kid"].as_str().map(str::to_owned)).collect()
}

#[tokio::test]
async fn keys_rotate_reaches_a_running_server_within_seconds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let out = keys(dir.path(), &data, &["list"]);
    assert!(!out.status.success(), "no database before the first start");
    assert!(!data.exists(), "keys list created nothing");

    let mut cmd = command(dir.path());
    // The auditor below signs in with a password alone.
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("PORTCULLIS_MFA__REQUIRED_FOR_ROLES", "");
    let server = serve(cmd);
    let before = jwks_kids(&server.base).await;
    assert_eq!(before.len(), 1, "a signing key is made on first start");

    let out = keys(dir.path(), &data, &["rotate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let new_kid = printed.split_whitespace().last().expect("kid").to_owned();
    assert!(printed.contains("EdDSA"), "{printed}");

    // The server re-reads the keys every 2 s; give it a bounded while.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let kids = jwks_kids(&server.base).await;
        if kids.contains(&new_kid) {
            assert!(kids.contains(&before[0]), "the old key stays published: {kids:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "rotation not picked up: {kids:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let c = reqwest::Client::new();
    let res = c
        .post(format!("{}/v1/register", server.base))
        .json(&json!({"email": "k@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("send");
    assert_eq!(res.status(), 201);
    let res = post_json(
        format!("{}/v1/login", server.base),
        json!({"email": "k@example.com", "password": PASSWORD, "mode": "jwt"}),
    )
    .await;
    let body: Value = res.json().await.expect("json");
    let header = body["access_token"].as_str().expect("token").split('.').next().expect("header").to_owned();
    use base64::Engine as _;
    let header: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).expect("b64"))
            .expect("json");
    assert_eq!(header["kid"], new_kid.as_str());

    let out = keys(dir.path(), &data, &["list"]);
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(listing.lines().any(|l| l.starts_with(&new_kid) && l.ends_with("signing")), "{listing}");
    assert!(listing.lines().any(|l| l.starts_with(&before[0]) && l.contains("published until")), "{listing}");
    let out = keys(dir.path(), &data, &["rotate", "--algorithm", "none"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown algorithm"));

    // The rotation is in the audit log, made by the command line.
    let out = user_add(dir.path(), &data, &["auditor@example.com", "--role", "admin"], PASSWORD);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let audit = audit_log(&server.base, "auditor@example.com", PASSWORD).await;
    let rotation = audit["events"].as_array().expect("events").iter().find(|e| e["kind"] == "key_rotation").cloned();
    let rotation = rotation.unwrap_or_else(|| panic!("no key_rotation in {audit}"));
    assert_eq!(rotation["actor"], "cli");
    assert!(rotation["detail"].as_str().is_some_and(|d| d.contains(&new_kid)), "{rotation}");
}

/// Logs at the most detailed level carry events (the audit log among them) and never a
/// password, a session credential or a token.
#[tokio::test]
async fn logs_carry_audit_events_and_never_a_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("server.log");
    let mut cmd = command(dir.path());
    cmd.arg("serve")
        .env("PORTCULLIS_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "trace")
        .stderr(std::fs::File::create(&log_path).expect("log file"));
    let server = serve_with(cmd);
    let url = |p: &str| format!("{}{p}", server.base);
    let c = reqwest::Client::new();
    let wrong = "not the right passphrase";
    assert_eq!(
        post_json(url("/v1/register"), json!({"email": "log@example.com", "password": PASSWORD})).await.status(),
        201
    );
    let res = post_json(url("/v1/login"), json!({"email": "log@example.com", "password": wrong})).await;
    assert_eq!(res.status(), 401);
    let res = post_json(url("/v1/login"), json!({"email": "log@example.com", "password": PASSWORD})).await;
    let cookie = cookie_of(&res);
    let secret = cookie.split_once('=').expect("name=value").1.to_owned();
    assert_eq!(c.get(url("/v1/me")).header("cookie", &cookie).send().await.expect("send").status(), 200);
    let jwt: Value =
        post_json(url("/v1/login"), json!({"email": "log@example.com", "password": PASSWORD, "mode": "jwt"}))
            .await
            .json()
            .await
            .expect("json");
    let access = jwt["access_token"].as_str().expect("access").to_owned();
    let refresh = jwt["refresh_token"].as_str().expect("refresh").to_owned();
    let me = c.get(url("/v1/me")).bearer_auth(&access).send().await.expect("send");
    assert_eq!(me.status(), 200);
    let res = post_json(url("/v1/token/refresh"), json!({"refresh_token": refresh})).await;
    assert_eq!(res.status(), 200);
    let res = c.post(url("/v1/logout")).header("cookie", &cookie).send().await.expect("send");
    assert_eq!(res.status(), 204);
    drop(server);
    let log = std::fs::read_to_string(&log_path).expect("log");
    assert!(log.contains("portcullis::audit"), "audit events are logged:\n{log}");
    assert!(log.contains("kind=\"login\"") || log.contains("kind=login"), "{log}");
    for (what, secret) in [
        ("password", PASSWORD),
        ("wrong password", wrong),
        ("session secret", &secret),
        ("access token", &access),
        ("refresh token", &refresh),
    ] {
        assert!(!log.contains(secret), "the log holds the {what}");
    }
    // Not even a part of a token: its signature or its secret half.
    let signature = access.rsplit('.').next().expect("signature");
    assert!(!log.contains(signature), "the log holds an access token signature");
    let session_secret = secret.rsplit('.').next().expect("secret half");
    assert!(!log.contains(session_secret), "the log holds the session secret");
}

/// Listening on every address without `public_url`: the server still starts, says at once
/// which setting makes sign-in work from other machines, and serves this machine's loopback.
#[tokio::test]
async fn listening_on_every_address_without_public_url_warns_and_names_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("server.log");
    let mut cmd = command(dir.path());
    cmd.args(["serve", "--listen", "0.0.0.0:0"]).stderr(std::fs::File::create(&log_path).expect("log file"));
    let server = serve_with(cmd);
    let port = server.base.rsplit(':').next().expect("port").to_owned();
    let res = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await.expect("send");
    assert_eq!(res.status(), 200);
    let log = std::fs::read_to_string(&log_path).expect("log");
    assert!(log.contains("WARN") && log.contains("without public_url"), "{log}");
    assert!(log.contains("PORTCULLIS_PUBLIC_URL") && log.contains("cookie_secure"), "{log}");
}

/// A Kubernetes Service named `portcullis` injects `PORTCULLIS_PORT=tcp://...` and friends:
/// the server starts anyway. Environment problems name the variable itself; lists may be
/// comma-separated; `listen` takes a host name.
#[tokio::test]
async fn service_link_variables_are_ignored_and_environment_problems_name_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = command(dir.path());
    cmd.arg("serve")
        .env("PORTCULLIS_LISTEN", "localhost:0")
        .env("PORTCULLIS_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8")
        .env("PORTCULLIS_PORT", "tcp://10.96.0.10:8080")
        .env("PORTCULLIS_PORT_8080_TCP", "tcp://10.96.0.10:8080")
        .env("PORTCULLIS_PORT_8080_TCP_ADDR", "10.96.0.10")
        .env("PORTCULLIS_PORT_8080_TCP_PORT", "8080")
        .env("PORTCULLIS_PORT_8080_TCP_PROTO", "tcp")
        .env("PORTCULLIS_SERVICE_HOST", "10.96.0.10")
        .env("PORTCULLIS_SERVICE_PORT", "8080")
        .env("PORTCULLIS_SERVICE_PORT_HTTP", "8080");
    let server = serve(cmd);
    assert!(server.base.starts_with("http://127.0.0.1:"), "localhost resolved to IPv4 first: {}", server.base);
    let res = reqwest::get(format!("{}/healthz", server.base)).await.expect("send");
    assert_eq!(res.status(), 200);
    drop(server);

    // Any other unknown variable still stops start-up, named as it was set.
    let err = serve_refused(dir.path(), &[("PORTCULLIS_PORT", "8080")]);
    assert!(err.contains("portcullis_port: unknown setting `port`"), "{err}");
    let err = serve_refused(dir.path(), &[("PORTCULLIS_SESSION__IDLE_TIMOUT", "5m")]);
    assert!(
        err.contains("portcullis_session__idle_timout: unknown setting `session.idle_timout`; did you mean `session.idle_timeout`?"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// Commands other than `serve` never create a data directory or database: a mistyped
/// `--data-dir` or a forgotten `--config` is an error that names the path looked at.
#[test]
fn commands_other_than_serve_refuse_to_create_a_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let typo = dir.path().join("portcullis-dta");
    for args in [vec!["user", "list"], vec!["keys", "list"], vec!["user", "disable", "a@example.com"]] {
        let mut cmd = command(dir.path());
        cmd.args(&args).arg("--data-dir").arg(&typo);
        let err = failing(cmd);
        assert!(err.contains("no portcullis database at") && err.contains("portcullis-dta"), "{args:?}: {err}");
        assert!(err.contains("--data-dir") && err.contains("--config"), "{err}");
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
    }
    let out = user_add(dir.path(), &typo, &["new@example.com"], PASSWORD);
    assert!(!out.status.success());
    assert!(!typo.exists());
}

fn cli(cwd: &Path, data: &Path, args: &[&str]) -> Output {
    command(cwd).args(args).arg("--data-dir").arg(data).output().expect("run")
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The operator's way back: every account change on the command line goes through the admin
/// API's audited operation, and a running server sees it at once.
#[tokio::test]
async fn user_commands_change_accounts_as_the_admin_api_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut cmd = command(dir.path());
    // Administrators sign in with a password alone here (an empty mfa.required_for_roles).
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("PORTCULLIS_MFA__REQUIRED_FOR_ROLES", "");
    let server = serve(cmd);
    let login = |email: &'static str, password: &'static str| {
        let url = format!("{}/v1/login", server.base);
        async move { post_json(url, json!({"email": email, "password": password})).await }
    };
    ok(user_add(dir.path(), &data, &["root@example.com"], PASSWORD));
    ok(user_add(dir.path(), &data, &["other@example.com"], PASSWORD));
    let res = login("root@example.com", PASSWORD).await;
    assert_eq!(res.status(), 200);
    let cookie = cookie_of(&res);
    let me = |cookie: String| {
        let url = format!("{}/v1/me", server.base);
        async move { reqwest::Client::new().get(url).header("cookie", cookie).send().await.expect("send").status() }
    };
    assert_eq!(me(cookie.clone()).await, 200);

    // A forgotten password: set it; the old sessions end.
    let mut set = command(dir.path());
    set.args(["user", "set-password", "root@example.com", "--password-stdin", "--data-dir"])
        .arg(&data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = set.spawn().expect("spawn");
    child.stdin.take().expect("stdin").write_all(b"a brand new passphrase\n").expect("write");
    let printed = ok(child.wait_with_output().expect("wait"));
    assert!(printed.contains("1 sessions ended"), "{printed}");
    assert_eq!(me(cookie).await, 401, "the old session ended");
    assert_eq!(login("root@example.com", PASSWORD).await.status(), 401);
    assert_eq!(login("root@example.com", "a brand new passphrase").await.status(), 200);

    // Roles: grant admin (the admin API answers), revoke it (it does not).
    ok(cli(dir.path(), &data, &["user", "grant", "root@example.com", "admin"]));
    let admin_list = |password: &'static str| {
        let base = server.base.clone();
        async move {
            let res =
                post_json(format!("{base}/v1/login"), json!({"email": "root@example.com", "password": password})).await;
            let cookie = cookie_of(&res);
            reqwest::Client::new()
                .get(format!("{base}/v1/admin/users"))
                .header("cookie", cookie)
                .send()
                .await
                .expect("send")
        }
    };
    assert_eq!(admin_list("a brand new passphrase").await.status(), 200);
    let users: Value = serde_json::from_str(&ok(cli(dir.path(), &data, &["user", "list", "--json"]))).expect("json");
    let root = users["users"].as_array().expect("users").iter().find(|u| u["email"] == "root@example.com").cloned();
    assert_eq!(root.expect("root listed")["roles"], json!(["admin", "user"]));

    // Disable: no sign-in; enable: back.
    ok(cli(dir.path(), &data, &["user", "disable", "other@example.com"]));
    assert_eq!(login("other@example.com", PASSWORD).await.status(), 401);
    ok(cli(dir.path(), &data, &["user", "enable", "other@example.com"]));
    let res = login("other@example.com", PASSWORD).await;
    assert_eq!(res.status(), 200);
    let other = cookie_of(&res);

    // Force logout, then delete: the email is free again.
    let printed = ok(cli(dir.path(), &data, &["user", "logout", "other@example.com"]));
    assert!(printed.contains("1 sessions ended"), "{printed}");
    assert_eq!(me(other).await, 401);
    ok(cli(dir.path(), &data, &["user", "delete", "other@example.com"]));
    assert_eq!(login("other@example.com", PASSWORD).await.status(), 401);
    let err =
        String::from_utf8_lossy(&cli(dir.path(), &data, &["user", "delete", "other@example.com"]).stderr).into_owned();
    assert!(err.contains("no user with the email"), "{err}");
    ok(user_add(dir.path(), &data, &["other@example.com"], PASSWORD));

    ok(cli(dir.path(), &data, &["user", "revoke", "root@example.com", "admin"]));
    assert_eq!(admin_list("a brand new passphrase").await.status(), 403);

    // Each change is in the audit log, made by the command line.
    ok(cli(dir.path(), &data, &["user", "grant", "root@example.com", "admin"]));
    let audit = audit_log(&server.base, "root@example.com", "a brand new passphrase").await;
    let by_cli: Vec<&str> = audit["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["actor"] == "cli")
        .filter_map(|e| e["kind"].as_str())
        .collect();
    for kind in ["password_set", "role_change", "user_disabled", "user_enabled", "force_logout", "user_deleted"] {
        assert!(by_cli.contains(&kind), "{kind} not audited as cli: {by_cli:?}");
    }
}

/// A person who lost their authenticator: `portcullis user reset-mfa` removes their second
/// factors and ends their sessions; they sign in with the password alone next.
#[tokio::test]
async fn user_reset_mfa_removes_second_factors_and_ends_sessions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut cmd = command(dir.path());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&data);
    let server = serve(cmd);
    ok(user_add(dir.path(), &data, &["ada@example.com"], PASSWORD));
    let login =
        || post_json(format!("{}/v1/login", server.base), json!({"email": "ada@example.com", "password": PASSWORD}));
    let cookie = cookie_of(&login().await);
    let http = reqwest::Client::new();
    let enrolment: Value = http
        .post(format!("{}/v1/mfa/totp", server.base))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let app = totp_rs::TOTP::from_url_unchecked(enrolment["otpauth_uri"].as_str().expect("uri")).expect("app");
    let confirm = http
        .post(format!("{}/v1/mfa/totp/confirm", server.base))
        .header("cookie", &cookie)
        .json(&json!({"code": app.generate_current().expect("code")}))
        .send()
        .await
        .expect("send");
    assert_eq!(confirm.status(), 200);
    let asked: Value = login().await.json().await.expect("json");
    assert_eq!(asked["code"], "mfa_required");

    let printed = ok(cli(dir.path(), &data, &["user", "reset-mfa", "ada@example.com"]));
    assert!(printed.contains("second factors removed"), "{printed}");
    let me = http.get(format!("{}/v1/me", server.base)).header("cookie", &cookie).send().await.expect("send");
    assert_eq!(me.status(), 401, "their sessions ended");
    assert_eq!(login().await.status(), 200, "the password alone signs in");
    let printed = ok(cli(dir.path(), &data, &["user", "reset-mfa", "ada@example.com"]));
    assert!(printed.contains("had no second factor"), "{printed}");
}

/// `registration.verify_email` set through the environment: a registration waits for its link;
/// `portcullis user verify-email` vouches for the address instead.
#[tokio::test]
async fn user_verify_email_lets_a_waiting_registration_sign_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut cmd = command(dir.path());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&data);
    cmd.env("PORTCULLIS_REGISTRATION__VERIFY_EMAIL", "true");
    let server = serve(cmd);
    let url = |p: &str| format!("{}{p}", server.base);
    let body = json!({"email": "wait@example.com", "password": PASSWORD});
    assert_eq!(post_json(url("/v1/register"), body.clone()).await.status(), 201);
    let refused: Value = post_json(url("/v1/login"), body.clone()).await.json().await.expect("json");
    assert_eq!(refused["code"], "email_not_verified", "{refused}");
    let printed = ok(cli(dir.path(), &data, &["user", "verify-email", "wait@example.com"]));
    assert!(printed.contains("email address verified"), "{printed}");
    assert_eq!(post_json(url("/v1/login"), body).await.status(), 200);
    let err = String::from_utf8_lossy(&cli(dir.path(), &data, &["user", "verify-email", "no@example.com"]).stderr)
        .into_owned();
    assert!(err.contains("no user with the email"), "{err}");
}

/// On PostgreSQL and Redis the start-up line names the stores in use, passwords hidden, and
/// whether sessions are cached (by default, not with `PORTCULLIS_STORE__SESSION_CACHE=0s`); a
/// second start logs no PostgreSQL notices; a store that cannot be reached is named with the
/// address tried.
#[tokio::test]
async fn cluster_start_up_names_its_stores_and_stays_quiet() {
    let Some(pg) = portcullis_lab::require("cli: postgres banner", portcullis_lab::Postgres::start()) else { return };
    let Some(redis) = portcullis_lab::require("cli: redis banner", portcullis_lab::Redis::start()) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    // Trust authentication takes any password: this one must never be printed.
    let users = pg.url().replace("postgres@", "postgres:s3cret-pw@");
    let sessions = redis.url();
    for round in 0..2 {
        let log_path = dir.path().join(format!("start{round}.log"));
        let mut cmd = command(dir.path());
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .env("PORTCULLIS_STORE__USERS", &users)
            .env("PORTCULLIS_STORE__SESSIONS", &sessions)
            .stderr(std::fs::File::create(&log_path).expect("log"));
        // The second start turns the session cache off, as an operator would.
        if round == 1 {
            cmd.env("PORTCULLIS_STORE__SESSION_CACHE", "0s");
        }
        cmd.stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("banner");
        let _ = child.kill();
        let _ = child.wait();
        let expected = format!("users on {}, sessions on {sessions}", pg.url().replace("postgres@", "postgres:***@"));
        assert!(line.contains(&expected), "{line}");
        assert!(!line.contains("s3cret-pw") && !line.contains("data in"), "{line}");
        let cached = line.contains("(each node caches a record for 5s)");
        assert_eq!(cached, round == 0, "the cache is on by default in front of Redis, off with 0s: {line}");
        let log = std::fs::read_to_string(&log_path).expect("log");
        assert!(!log.contains("NOTICE") && !log.contains("already exists"), "round {round}:\n{log}");
        assert!(!log.contains("s3cret-pw"), "{log}");
    }
    let closed = portcullis_lab::free_port().expect("port");
    let mut cmd = command(dir.path());
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .env("PORTCULLIS_STORE__USERS", &users)
        .env("PORTCULLIS_STORE__SESSIONS", format!("redis://:hidden-pw@127.0.0.1:{closed}/"));
    let err = failing(cmd);
    assert!(err.contains(&format!("session store (redis at redis://:***@127.0.0.1:{closed}/)")), "{err}");
    assert!(!err.contains("hidden-pw"), "{err}");
}

/// `portcullis client ...`: a service client made on the command line reads a running server's
/// revocation feed; rotating its secret and removing it take effect there at once.
#[tokio::test]
async fn client_commands_manage_the_services_that_read_the_feed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut cmd = command(dir.path());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&data);
    let server = serve(cmd);
    let feed = |id: String, secret: String| {
        let url = format!("{}/v1/revocations", server.base);
        async move { reqwest::Client::new().get(url).basic_auth(id, Some(secret)).send().await.expect("send").status() }
    };
    let err = String::from_utf8_lossy(&cli(dir.path(), &data, &["client", "add", "billing"]).stderr).into_owned();
    assert!(err.contains("--service"), "says what to choose: {err}");
    let made: Value =
        serde_json::from_str(&ok(cli(dir.path(), &data, &["client", "add", "billing", "--service", "--json"])))
            .expect("json");
    let id = made["client_id"].as_str().expect("id").to_owned();
    let secret = made["client_secret"].as_str().expect("secret").to_owned();
    assert_eq!(made["client"]["kind"], "service");
    assert_eq!(feed(id.clone(), secret.clone()).await, 200);

    let listing = ok(cli(dir.path(), &data, &["client", "list"]));
    assert!(listing.starts_with("CLIENT_ID") && listing.contains(&id) && listing.contains("billing"), "{listing}");
    assert!(!listing.contains(&secret), "{listing}");
    let listed: Value = serde_json::from_str(&ok(cli(dir.path(), &data, &["client", "list", "--json"]))).expect("json");
    assert_eq!(listed["clients"][0]["id"], id.as_str());

    let rotated: Value = serde_json::from_str(&ok(cli(
        dir.path(),
        &data,
        &["client", "rotate-secret", &id, "--overlap", "0s", "--json"],
    )))
    .expect("json");
    let new = rotated["client_secret"].as_str().expect("secret").to_owned();
    assert_eq!(feed(id.clone(), new.clone()).await, 200);
    assert_eq!(feed(id.clone(), secret).await, 401, "no overlap asked: the old secret is done");

    let printed = ok(cli(dir.path(), &data, &["client", "remove", &id]));
    assert!(printed.contains("removed"), "{printed}");
    assert_eq!(feed(id.clone(), new).await, 401);
    let err = String::from_utf8_lossy(&cli(dir.path(), &data, &["client", "remove", &id]).stderr).into_owned();
    assert!(err.contains("no client with the id"), "{err}");
}

/// `portcullis client add NAME --redirect-uri ...`: an OpenID Connect application registered on
/// the command line is one the running server knows: its secret works at the token endpoint, a
/// public one has none, and bad redirect URIs are refused with the reason.
#[tokio::test]
async fn client_add_registers_openid_connect_applications() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut cmd = command(dir.path());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&data);
    let server = serve(cmd);
    let made: Value = serde_json::from_str(&ok(cli(
        dir.path(),
        &data,
        &[
            "client",
            "add",
            "Grafana",
            "--redirect-uri",
            "https://grafana.example.com/login/generic_oauth",
            "--post-logout-redirect-uri",
            "https://grafana.example.com/login",
            "--backchannel-logout-uri",
            "https://grafana.example.com/logout/backchannel",
            "--json",
        ],
    )))
    .expect("json");
    assert_eq!(made["client"]["kind"], "confidential");
    assert_eq!(made["client"]["first_party"], true);
    assert_eq!(made["client"]["redirect_uris"], serde_json::json!(["https://grafana.example.com/login/generic_oauth"]));
    assert_eq!(made["client"]["backchannel_logout_uri"], "https://grafana.example.com/logout/backchannel");
    let id = made["client_id"].as_str().expect("id").to_owned();
    let secret = made["client_secret"].as_str().expect("secret").to_owned();
    let token = |secret: String| {
        let url = format!("{}/oauth2/token", server.base);
        let id = id.clone();
        async move {
            let form = [("grant_type", "client_credentials")];
            reqwest::Client::new()
                .post(url)
                .basic_auth(id, Some(secret))
                .form(&form)
                .send()
                .await
                .expect("send")
                .status()
        }
    };
    assert_eq!(token(secret.clone()).await, 200);
    assert_eq!(token("wrong".into()).await, 401);

    let public: Value = serde_json::from_str(&ok(cli(
        dir.path(),
        &data,
        &["client", "add", "SPA", "--public", "--third-party", "--redirect-uri", "http://localhost:3000/cb", "--json"],
    )))
    .expect("json");
    assert_eq!(public["client"]["kind"], "public");
    assert_eq!(public["client"]["first_party"], false);
    assert!(public["client_secret"].is_null(), "{public}");

    for (uri, reason) in [
        ("http://grafana.example.com/cb", "https"),
        ("https://grafana.example.com/cb#x", "fragment"),
        ("/relative", "absolute"),
    ] {
        let out = cli(dir.path(), &data, &["client", "add", "Bad", "--redirect-uri", uri]);
        assert!(!out.status.success(), "{uri}");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(err.contains(reason), "{uri}: {err}");
    }
    let out = cli(dir.path(), &data, &["client", "add", "Both", "--service", "--redirect-uri", "https://a.example/cb"]);
    assert!(!out.status.success(), "a service has no redirect URIs");
}

/// `portcullis user logout` ends an application's grant from the command line, beside a running
/// server, and the application still hears of it: the command delivers its back-channel logout
/// before it exits.
#[tokio::test]
async fn user_commands_deliver_back_channel_logouts_before_they_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut cmd = command(dir.path());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&data);
    let server = serve(cmd);
    let (tx, mut received) = tokio::sync::mpsc::unbounded_channel::<String>();
    let receiver = axum::Router::new().route(
        "/backchannel",
        axum::routing::post(move |body: String| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let backchannel = format!("http://{}/backchannel", listener.local_addr().expect("addr"));
    let receiving = tokio::spawn(async move {
        let _ = axum::serve(listener, receiver).await;
    });
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let body = serde_json::json!({"email": "ada@example.com", "password": "correct horse battery staple"});
    let res = http.post(format!("{}/v1/register", server.base)).json(&body).send().await.expect("send");
    assert_eq!(res.status(), 201);
    let redirect = "http://127.0.0.1:9/cb";
    let made: Value = serde_json::from_str(&ok(cli(
        dir.path(),
        &data,
        &["client", "add", "Wiki", "--redirect-uri", redirect, "--backchannel-logout-uri", &backchannel, "--json"],
    )))
    .expect("json");
    let (id, secret) = (made["client_id"].as_str().expect("id"), made["client_secret"].as_str().expect("secret"));
    let res = http.post(format!("{}/v1/login", server.base)).json(&body).send().await.expect("send");
    let cookie = cookie_of(&res);
    let authorize = format!(
        "{}/oauth2/authorize?response_type=code&client_id={id}&redirect_uri={redirect}&scope=openid",
        server.base
    );
    let res = http.get(authorize).header("cookie", &cookie).send().await.expect("send");
    let location = res.headers()["location"].to_str().expect("ascii").to_owned();
    let code = location.split("code=").nth(1).and_then(|c| c.split('&').next()).expect("a code");
    let form = [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirect)];
    let res = http.post(format!("{}/oauth2/token", server.base)).basic_auth(id, Some(secret)).form(&form).send();
    assert_eq!(res.await.expect("send").status(), 200);

    ok(cli(dir.path(), &data, &["user", "logout", "ada@example.com"]));
    let posted = tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("the command delivered a logout token")
        .expect("open");
    let token = posted.strip_prefix("logout_token=").expect("a form with logout_token");
    assert_eq!(token.split('.').count(), 3, "{token}");
    receiving.abort();
}

/// The resident memory of a process, in bytes (`VmRSS` in `/proc`).
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// Many idle followers of the revocation stream cost a bounded, small amount of memory each,
/// and a logout still reaches every one of them.
#[test]
fn many_idle_feed_followers_are_held_in_bounded_memory() {
    use std::io::Read as _;
    use std::net::TcpStream;
    const FOLLOWERS: usize = 500;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut cmd = command(dir.path());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(&data);
    let server = serve(cmd);
    let made: Value =
        serde_json::from_str(&ok(cli(dir.path(), &data, &["client", "add", "idle", "--service", "--json"])))
            .expect("json");
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        made["client_id"].as_str().expect("id"),
        made["client_secret"].as_str().expect("secret")
    ));
    let addr = server.base.trim_start_matches("http://").to_owned();
    let request =
        format!("GET /v1/revocations/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {basic}\r\n\r\n");
    let open = || {
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        s.write_all(request.as_bytes()).expect("request");
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("event: snapshot") {
            let n = s.read(&mut buf).expect("the snapshot arrives");
            assert!(n > 0, "closed before the snapshot: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        s
    };
    // Warm up (thread pools, buffers), then measure what the rest add.
    let mut streams: Vec<TcpStream> = (0..50).map(|_| open()).collect();
    let pid = server.child.id();
    let before = resident_bytes(pid);
    streams.extend((0..FOLLOWERS).map(|_| open()));
    let after = resident_bytes(pid);
    let per_follower = after.saturating_sub(before) / FOLLOWERS as u64;
    eprintln!(
        "{FOLLOWERS} idle followers: {} KiB resident in all, {} bytes each",
        (after - before.min(after)) / 1024,
        per_follower
    );
    assert!(per_follower < 128 * 1024, "{per_follower} bytes per idle follower");

    // A logout reaches every follower.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let res = post_json(
            format!("{}/v1/register", server.base),
            json!({"email": "idle@example.com", "password": PASSWORD}),
        )
        .await;
        assert_eq!(res.status(), 201);
        let login: Value = post_json(
            format!("{}/v1/login", server.base),
            json!({"email": "idle@example.com", "password": PASSWORD, "mode": "jwt"}),
        )
        .await
        .json()
        .await
        .expect("json");
        let res = reqwest::Client::new()
            .post(format!("{}/v1/logout", server.base))
            .bearer_auth(login["access_token"].as_str().expect("token"))
            .send()
            .await
            .expect("send");
        assert_eq!(res.status(), 204);
    });
    let mut buf = [0u8; 4096];
    for s in &mut streams {
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("event: revocation") {
            let n = s.read(&mut buf).expect("the revocation arrives");
            assert!(n > 0, "closed before the revocation");
            got.extend_from_slice(&buf[..n]);
        }
    }
}
