//! The revocation feed for services (`GET /v1/revocations`) and the client registry behind it,
//! over real HTTP: who may read the feed, what it carries, and secret rotation with its overlap.

use std::time::Duration;

use crate::common::{TestServer, expect_problem};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// An admin's cookie on a fresh server.
async fn with_admin() -> (TestServer, String) {
    let s = TestServer::start().await;
    let admin = s.register("root@example.com").await;
    s.make_admin(&admin).await;
    let cookie = s.login("root@example.com").await;
    (s, cookie)
}

/// Registers a service client through the admin API: `(client_id, client_secret)`.
async fn service_client(s: &TestServer, cookie: &str, name: &str) -> (String, String) {
    let res = s.send_as(Method::POST, "/v1/admin/clients", cookie, &json!({"name": name, "kind": "service"})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["client"]["kind"], "service");
    assert_eq!(body["client"]["name"], name);
    assert!(body["client"].get("secret_hash").is_none(), "{body}");
    let id = body["client_id"].as_str().expect("client_id").to_owned();
    let secret = body["client_secret"].as_str().expect("client_secret").to_owned();
    assert_eq!(secret.len(), 43, "256 bits, base64url");
    (id, secret)
}

async fn feed(s: &TestServer, id: &str, secret: &str) -> reqwest::Response {
    s.get("/v1/revocations").basic_auth(id, Some(secret)).send().await.expect("send")
}

async fn feed_access_events(s: &TestServer, cookie: &str) -> Vec<Value> {
    let audit: Value = s.get_as("/v1/admin/audit?limit=500", cookie).await.json().await.expect("json");
    audit["events"].as_array().expect("events").iter().filter(|e| e["kind"] == "feed_access").cloned().collect()
}

#[tokio::test]
async fn only_registered_service_clients_read_the_feed_and_every_refusal_is_audited() {
    let (s, cookie) = with_admin().await;
    let (id, secret) = service_client(&s, &cookie, "billing").await;
    let res = feed(&s, &id, &secret).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");

    let anonymous = s.get("/v1/revocations").send().await.expect("send");
    assert!(anonymous.headers()["www-authenticate"].to_str().expect("ascii").starts_with("Basic"));
    expect_problem(anonymous, StatusCode::UNAUTHORIZED, "invalid_client").await;
    expect_problem(feed(&s, &id, "not-the-secret").await, StatusCode::UNAUTHORIZED, "invalid_client").await;
    expect_problem(feed(&s, "no-such-client", &secret).await, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let garbled = s.get("/v1/revocations").header("authorization", "Basic %%%").send().await.expect("send");
    expect_problem(garbled, StatusCode::UNAUTHORIZED, "invalid_client").await;
    // A user's credentials, session or bearer, are not a service's.
    expect_problem(s.get_as("/v1/revocations", &cookie).await, StatusCode::FORBIDDEN, "forbidden").await;
    let jwt = s.jwt_login("root@example.com").await;
    let bearer = s.bearer(Method::GET, "/v1/revocations", jwt["access_token"].as_str().expect("token"));
    expect_problem(bearer.send().await.expect("send"), StatusCode::FORBIDDEN, "forbidden").await;

    // Refusals cost nothing to make: the first of each reason from one address each minute is
    // stored (wrong secret and unknown client are one reason, session and bearer another).
    let refusals = feed_access_events(&s, &cookie).await;
    assert_eq!(refusals.len(), 4, "{refusals:?}");
    let outcomes: Vec<&str> = refusals.iter().filter_map(|e| e["outcome"].as_str()).collect();
    assert_eq!(outcomes.iter().filter(|o| **o == "failure").count(), 2, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == "denied").count(), 2, "{outcomes:?}");
    assert!(refusals.iter().any(|e| e["actor"] == id.as_str()), "the client named: {refusals:?}");
    for _ in 0..20 {
        assert_eq!(s.get("/v1/revocations").send().await.expect("send").status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(feed_access_events(&s, &cookie).await.len(), 4, "a flood adds nothing within the minute");
    s.advance(Duration::from_secs(60));
    assert_eq!(s.get("/v1/revocations").send().await.expect("send").status(), StatusCode::UNAUTHORIZED);
    assert_eq!(feed_access_events(&s, &cookie).await.len(), 5, "the next minute's first is stored");

    // A removed client is refused at once.
    let res = s.request(Method::DELETE, &format!("/v1/admin/clients/{id}")).header("cookie", &cookie).send();
    assert_eq!(res.await.expect("send").status(), StatusCode::NO_CONTENT);
    expect_problem(feed(&s, &id, &secret).await, StatusCode::UNAUTHORIZED, "invalid_client").await;
}

#[tokio::test]
async fn the_feed_carries_exactly_what_the_replica_holds() {
    let (s, cookie) = with_admin().await;
    let (id, secret) = service_client(&s, &cookie, "reports").await;
    let empty: Value = feed(&s, &id, &secret).await.json().await.expect("json");
    assert_eq!(empty["denied"], json!([]));
    assert!(empty["cursor"].as_str().is_some_and(|c| c.contains('.')), "{empty}");

    // A JWT login logged out (its session denied, its access token denied by jti), and a user
    // who signed out everywhere (an epoch).
    let alice = s.register("alice@example.com").await;
    let a = s.jwt_login("alice@example.com").await;
    let access = a["access_token"].as_str().expect("token").to_owned();
    let res = s.bearer(Method::POST, "/v1/logout", &access).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let bob = s.register("bob@example.com").await;
    let b = s.jwt_login("bob@example.com").await;
    let res = s.bearer(Method::POST, "/v1/logout-all", b["access_token"].as_str().expect("token")).send();
    assert_eq!(res.await.expect("send").status(), StatusCode::NO_CONTENT);

    let snapshot: Value = feed(&s, &id, &secret).await.json().await.expect("json");
    let keys: Vec<&str> = snapshot.as_object().expect("object").keys().map(String::as_str).collect();
    assert_eq!(keys, ["cursor", "denied", "not_before"], "nothing else: {snapshot}");
    let claims = |token: &str| -> Value {
        use base64::Engine as _;
        let payload = token.split('.').nth(1).expect("payload");
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("b64"))
            .expect("json")
    };
    let a_claims = claims(&access);
    let denied = snapshot["denied"].as_array().expect("denied");
    assert!(denied.iter().any(|d| d["jti"] == a_claims["jti"] && d["until"].as_f64().is_some()), "{snapshot}");
    assert!(denied.iter().any(|d| d["sid"] == a_claims["sid"]), "{snapshot}");
    for d in denied {
        let fields = d.as_object().expect("entry").len();
        assert_eq!(fields, 2, "jti or sid, and until: {d}");
        assert!(d["until"].as_f64().expect("seconds") > a_claims["iat"].as_f64().expect("iat"), "{d}");
    }
    let epochs = snapshot["not_before"].as_array().expect("not_before");
    assert_eq!(epochs.len(), 1, "{snapshot}");
    assert_eq!(epochs[0]["sub"], bob["id"]);
    assert!(epochs[0]["at"].as_f64().is_some());
    assert!(!snapshot.to_string().contains(alice["email"].as_str().expect("email")), "no emails: {snapshot}");

    // An epoch older than a token lifetime can stop nothing: it is left out.
    s.advance(Duration::from_secs(16 * 60));
    let later: Value = feed(&s, &id, &secret).await.json().await.expect("json");
    assert_eq!(later["not_before"], json!([]), "{later}");
    let res = s.get_as("/metrics", &cookie).await.text().await.expect("text");
    assert!(res.contains("portcullis_service_feed_snapshots_total 3"), "{res}");
}

#[tokio::test]
async fn a_rotated_secret_works_alongside_the_old_one_for_the_overlap() {
    let s = TestServer::start_with(|c| c.clients.secret_overlap = Duration::from_secs(600)).await;
    let admin = s.register("root@example.com").await;
    s.make_admin(&admin).await;
    let cookie = s.login("root@example.com").await;
    let (id, old) = service_client(&s, &cookie, "search").await;
    let res = s.post_as(&format!("/v1/admin/clients/{id}/secret"), &cookie).await;
    assert_eq!(res.status(), StatusCode::OK);
    let rotated: Value = res.json().await.expect("json");
    let new = rotated["client_secret"].as_str().expect("secret").to_owned();
    assert_ne!(new, old);
    assert_eq!(feed(&s, &id, &new).await.status(), StatusCode::OK);
    assert_eq!(feed(&s, &id, &old).await.status(), StatusCode::OK, "the old secret within the overlap");
    s.advance(Duration::from_secs(601));
    assert_eq!(feed(&s, &id, &new).await.status(), StatusCode::OK);
    expect_problem(feed(&s, &id, &old).await, StatusCode::UNAUTHORIZED, "invalid_client").await;

    // The admin API lists clients (no secrets), refuses what it cannot make, and is for admins.
    let listed: Value = s.get_as("/v1/admin/clients", &cookie).await.json().await.expect("json");
    let clients = listed["clients"].as_array().expect("clients");
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0]["id"], id.as_str());
    assert!(clients[0]["last_used_at"].is_string(), "{listed}");
    assert!(!listed.to_string().contains(&new), "{listed}");
    let res = s.send_as(Method::POST, "/v1/admin/clients", &cookie, &json!({"name": "x", "kind": "robot"})).await;
    expect_problem(res, StatusCode::BAD_REQUEST, "unsupported_client_kind").await;
    let res = s.send_as(Method::POST, "/v1/admin/clients", &cookie, &json!({"name": " ", "kind": "service"})).await;
    expect_problem(res, StatusCode::BAD_REQUEST, "invalid_client_name").await;
    let res = s.request(Method::DELETE, "/v1/admin/clients/nope").header("cookie", &cookie).send().await.expect("send");
    expect_problem(res, StatusCode::NOT_FOUND, "client_not_found").await;
    let (_, user) = s.user("plain@example.com").await;
    expect_problem(s.get_as("/v1/admin/clients", &user).await, StatusCode::FORBIDDEN, "forbidden").await;
}

/// One Server-Sent Event: its name, id and data (comments are left out).
#[derive(Debug, Clone)]
pub struct Sse {
    pub event: String,
    pub id: String,
    pub data: Value,
}

/// A stream of the feed being read.
pub struct Following {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>>,
    buffer: String,
}

impl Following {
    async fn open(s: &TestServer, id: &str, secret: &str, last: Option<&str>) -> Self {
        Self::open_at(&s.base, id, secret, last).await
    }

    /// Follows the feed of the server at `base`.
    pub async fn open_at(base: &str, id: &str, secret: &str, last: Option<&str>) -> Self {
        let mut req = reqwest::Client::new().get(format!("{base}/v1/revocations/stream")).basic_auth(id, Some(secret));
        if let Some(last) = last {
            req = req.header("last-event-id", last);
        }
        let res = req.send().await.expect("send");
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers()["content-type"].to_str().expect("ascii").starts_with("text/event-stream"));
        Self { body: Box::pin(res.bytes_stream()), buffer: String::new() }
    }

    /// Waits (at most 20 s) for the server to end the stream, skipping events and heartbeats.
    pub async fn ended(&mut self) -> bool {
        use futures_util::StreamExt as _;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return false,
                Ok(None | Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// The next event (bounded: a stream that goes quiet fails the test instead of hanging it).
    pub async fn next(&mut self) -> Sse {
        use futures_util::StreamExt as _;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name).map(|v| v.trim_start().to_owned()))
                        .unwrap_or_default()
                };
                if field("event:").is_empty() && field("data:").is_empty() {
                    continue; // a heartbeat comment
                }
                let data = serde_json::from_str(&field("data:")).expect("data is JSON");
                return Sse { event: field("event:"), id: field("id:"), data };
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.body.next())
                .await
                .expect("an event within 10 s")
                .expect("the stream goes on")
                .expect("bytes");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test]
async fn the_stream_sends_a_snapshot_then_each_revocation_and_resumes_where_it_stopped() {
    let (s, cookie) = with_admin().await;
    let (id, secret) = service_client(&s, &cookie, "gateway").await;
    let anonymous = s.get("/v1/revocations/stream").send().await.expect("send");
    expect_problem(anonymous, StatusCode::UNAUTHORIZED, "invalid_client").await;

    s.register("carol@example.com").await;
    let mut follow = Following::open(&s, &id, &secret, None).await;
    let first = follow.next().await;
    assert_eq!(first.event, "snapshot");
    assert_eq!(first.data["cursor"], first.id.as_str());
    let metrics = s.get_as("/metrics", &cookie).await.text().await.expect("text");
    assert!(metrics.contains("portcullis_service_feed_followers 1"), "{metrics}");

    // A logout is heard as it happens: the token by jti, its session by sid.
    let token = s.jwt_login("carol@example.com").await;
    let access = token["access_token"].as_str().expect("token").to_owned();
    assert_eq!(
        s.bearer(Method::POST, "/v1/logout", &access).send().await.expect("send").status(),
        StatusCode::NO_CONTENT
    );
    let a = follow.next().await;
    let b = follow.next().await;
    assert_eq!((a.event.as_str(), b.event.as_str()), ("revocation", "revocation"));
    assert!(a.data["deny"]["jti"].is_string() && b.data["deny"]["sid"].is_string(), "{a:?} {b:?}");
    drop(follow);

    // Disconnected, a sign-out everywhere happens; resuming from the last id gets just that.
    let again = s.jwt_login("carol@example.com").await;
    let res = s.bearer(Method::POST, "/v1/logout-all", again["access_token"].as_str().expect("token")).send();
    assert_eq!(res.await.expect("send").status(), StatusCode::NO_CONTENT);
    let mut resumed = Following::open(&s, &id, &secret, Some(&b.id)).await;
    let missed = resumed.next().await;
    assert_eq!(missed.event, "revocation", "resumed, not a snapshot: {missed:?}");
    assert!(missed.data["not_before"]["sub"].is_string(), "{missed:?}");
    drop(resumed);

    // An id this node cannot resume from gets a fresh snapshot, never an error.
    for last in ["garbage", "nope.1", &b.id.replace('.', ".9")] {
        let mut fresh = Following::open(&s, &id, &secret, Some(last)).await;
        let first = fresh.next().await;
        assert_eq!(first.event, "snapshot", "{last}");
        assert!(first.data["not_before"].as_array().is_some_and(|n| !n.is_empty()), "{first:?}");
    }
}

/// A raw follower of the stream that reads nothing until told to: its receive buffer is made
/// small, so the server soon cannot write to it.
struct Stalled {
    socket: tokio::net::TcpStream,
}

impl Stalled {
    async fn open(s: &TestServer, id: &str, secret: &str) -> Self {
        use base64::Engine as _;
        use tokio::io::AsyncWriteExt as _;
        let addr: std::net::SocketAddr =
            s.base.trim_start_matches("http://").trim_end_matches('/').parse().expect("the server's address");
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("a small receive buffer");
        let mut socket = socket.connect(addr).await.expect("connect");
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        let request =
            format!("GET /v1/revocations/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {basic}\r\n\r\n");
        socket.write_all(request.as_bytes()).await.expect("send the request");
        Self { socket }
    }

    /// Reads what the server wrote until it ended the stream (the last chunk), at most 60 s.
    async fn read_to_end_of_stream(&mut self) -> String {
        use tokio::io::AsyncReadExt as _;
        let mut text = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut buf = vec![0u8; 256 * 1024];
        while !text.ends_with(b"\r\n0\r\n\r\n") {
            let read = tokio::time::timeout_at(deadline, self.socket.read(&mut buf)).await;
            let n = read.expect("the server ends the stream of a follower that fell behind").expect("read");
            assert!(n > 0, "the connection closed without ending the stream");
            text.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&text).into_owned()
    }
}

/// Counts the `revocation` events of a stream as they come, into `heard`.
async fn count_revocations(
    mut body: impl futures_util::Stream<Item = reqwest::Result<axum::body::Bytes>> + Unpin,
    heard: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use futures_util::StreamExt as _;
    const NEEDLE: &str = "event: revocation\n";
    let mut tail = String::new();
    while let Some(Ok(chunk)) = body.next().await {
        tail.push_str(&String::from_utf8_lossy(&chunk));
        let n = tail.matches(NEEDLE).count();
        heard.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        // Keep only what could be the start of a needle cut by the chunk's end.
        let keep = tail.rfind(NEEDLE).map_or(0, |i| i + NEEDLE.len()).max(tail.len().saturating_sub(NEEDLE.len()));
        tail = tail.split_off(tail.floor_char_boundary(keep));
    }
}

#[tokio::test]
async fn a_follower_that_stops_reading_delays_no_logout_and_no_other_follower_and_starts_over() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (s, cookie) = with_admin().await;
    let (id, secret) = service_client(&s, &cookie, "stuck").await;
    let user = s.register("dave@example.com").await;
    let logout = format!("/v1/admin/users/{}/logout", user["id"].as_str().expect("id"));

    let mut stalled = Stalled::open(&s, &id, &secret).await;
    let live = reqwest::Client::new()
        .get(format!("{}/v1/revocations/stream", s.base))
        .basic_auth(&id, Some(&secret))
        .send()
        .await
        .expect("follow");
    let heard = Arc::new(AtomicUsize::new(0));
    let reader = tokio::spawn(count_revocations(live.bytes_stream(), Arc::clone(&heard)));
    let metrics = || async { s.get_as("/metrics", &cookie).await.text().await.expect("metrics") };
    let followers = "portcullis_service_feed_followers 2";
    for _ in 0..100 {
        if metrics().await.contains(followers) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metrics().await.contains(followers), "both followers connected");

    // Far more revocations than the stalled follower's socket and the server's write buffer
    // hold, plus the events one follower may fall behind: the node hears them as a busy
    // cluster's other nodes would send them, in batches the live follower keeps up with; among
    // them, real logouts, each answered at once although one follower reads nothing.
    let batch = portcullis_service::FEED_FOLLOWER_BUFFER / 2;
    let mut total = 0;
    for round in 0..120 {
        s.advance(Duration::from_millis(1));
        let res = s.send_as(Method::POST, &logout, &cookie, &Value::Null).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT, "logout {round}");
        total += 1;
        for i in 0..batch {
            let user = portcullis_core::UserId::parse(&format!("0190c3c4-0000-7000-8000-{:012}", round * batch + i))
                .expect("a user id");
            let at = portcullis_core::Clock::now(&s.clock);
            s.service.feed_log.push(portcullis_core::revocation::RevocationEvent::NotBefore { user, at });
        }
        total += batch;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while heard.load(Ordering::SeqCst) < total {
            assert!(tokio::time::Instant::now() < deadline, "the live follower fell behind: {heard:?} of {total}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    assert_eq!(heard.load(Ordering::SeqCst), total, "the live follower heard each event once");
    reader.abort();

    // The stalled follower got the start, then its stream ended instead of holding the rest.
    let text = stalled.read_to_end_of_stream().await;
    let got = text.matches("event: revocation\n").count();
    assert!(text.contains("event: snapshot"), "{}", &text[..text.len().min(2000)]);
    assert!(got < total, "a stalled follower was not dropped: it heard all {got}");
    // Its last id has left the node's log: it starts over from a snapshot, which has the
    // user's sign-outs.
    let last = text.lines().filter_map(|l| l.strip_prefix("id: ")).next_back().expect("an id").to_owned();
    let mut again = Following::open(&s, &id, &secret, Some(&last)).await;
    let first = again.next().await;
    assert_eq!(first.event, "snapshot", "{first:?}");
    let epochs = first.data["not_before"].as_array().expect("not_before");
    assert!(epochs.iter().any(|e| e["sub"] == user["id"]), "{first:?}");
}
