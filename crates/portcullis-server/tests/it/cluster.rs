//! Several nodes sharing PostgreSQL and Redis: shared sessions and keys, revocations pushed to
//! every node, and what happens when Redis or PostgreSQL goes away and comes back.
//!
//! These start real `redis-server` and PostgreSQL processes (skipped with a loud message when
//! they are not installed, unless PORTCULLIS_TEST_REQUIRE_ALL=1).

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_core::{Clock, ManualClock, SystemClock};
use portcullis_lab::{Postgres, Redis, require};
use portcullis_server::settings::Settings;
use portcullis_server::spawn::{Running, spawn};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";

struct Cluster {
    nodes: Vec<Running>,
    redis: Redis,
    postgres: Postgres,
    _dir: tempfile::TempDir,
    c: reqwest::Client,
}

async fn cluster(n: usize) -> Option<Cluster> {
    cluster_with(n, Arc::new(SystemClock), |_| {}).await
}

async fn cluster_with_clock(n: usize, clock: Arc<dyn Clock>) -> Option<Cluster> {
    cluster_with(n, clock, |_| {}).await
}

async fn cluster_with(n: usize, clock: Arc<dyn Clock>, edit: impl Fn(&mut Settings)) -> Option<Cluster> {
    let redis = require("cluster: redis", Redis::start())?;
    let postgres = require("cluster: postgres", Postgres::start())?;
    let dir = tempfile::tempdir().expect("tempdir");
    let c = reqwest::Client::new();
    let mut k = Cluster { nodes: Vec::new(), redis, postgres, _dir: dir, c };
    for _ in 0..n {
        k.add_node(Arc::clone(&clock), &edit).await;
    }
    Some(k)
}

impl Cluster {
    /// Starts one more node on the cluster's PostgreSQL and Redis.
    async fn add_node(&mut self, clock: Arc<dyn Clock>, edit: impl Fn(&mut Settings)) {
        let data_dir = self._dir.path().join(format!("node{}", self.nodes.len()));
        let mut settings = Settings { data_dir, ..Settings::default() };
        settings.store.users = self.postgres.url();
        settings.store.sessions = self.redis.url();
        // Every node has the same public address (the balancer's), so the same issuer.
        settings.public_url = Some("http://portcullis.test".parse().expect("url"));
        edit(&mut settings);
        self.nodes.push(spawn(settings, clock).await.expect("node starts"));
    }

    fn url(&self, node: usize, path: &str) -> String {
        format!("{}{path}", self.nodes[node].base)
    }

    async fn post(&self, node: usize, path: &str, body: Value) -> reqwest::Response {
        self.c.post(self.url(node, path)).json(&body).send().await.expect("send")
    }

    async fn get(&self, node: usize, path: &str, header: (&str, &str)) -> reqwest::Response {
        self.c.get(self.url(node, path)).header(header.0, header.1).send().await.expect("send")
    }

    async fn session(&self, node: usize, email: &str) -> String {
        let res = self.post(node, "/v1/login", json!({"email": email, "password": PASSWORD})).await;
        assert_eq!(res.status(), StatusCode::OK);
        let set = res.headers()["set-cookie"].to_str().expect("ascii").to_owned();
        set.split(';').next().expect("pair").to_owned()
    }

    async fn jwt(&self, node: usize, email: &str) -> Value {
        let res = self.post(node, "/v1/login", json!({"email": email, "password": PASSWORD, "mode": "jwt"})).await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.expect("json")
    }

    /// Polls `check` until it holds or `limit` passes; returns how long it took.
    async fn within<F, Fut>(&self, limit: Duration, mut check: F) -> Duration
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        loop {
            if check().await {
                return start.elapsed();
            }
            assert!(start.elapsed() < limit, "condition not reached within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn bearer(token: &Value) -> String {
    format!("Bearer {}", token["access_token"].as_str().expect("access token"))
}

#[tokio::test]
async fn any_node_serves_any_session_and_revocations_reach_every_node() {
    let Some(k) = cluster(3).await else { return };
    let res = k.post(0, "/v1/register", json!({"email": "multi@example.com", "password": PASSWORD})).await;
    assert_eq!(res.status(), StatusCode::CREATED);

    // A session made on node 1 is known on nodes 0 and 2.
    let cookie = k.session(1, "multi@example.com").await;
    for node in 0..3 {
        assert_eq!(k.get(node, "/v1/me", ("cookie", &cookie)).await.status(), StatusCode::OK, "node {node}");
    }
    // Every node publishes the same key set and accepts the others' tokens.
    let jwks: Vec<String> = {
        let mut v = Vec::new();
        for node in 0..3 {
            v.push(
                k.c.get(k.url(node, "/.well-known/jwks.json")).send().await.expect("send").text().await.expect("text"),
            );
        }
        v
    };
    assert!(jwks.windows(2).all(|w| w[0] == w[1]), "{jwks:?}");
    let token = k.jwt(0, "multi@example.com").await;
    for node in 0..3 {
        assert_eq!(k.get(node, "/v1/me", ("authorization", &bearer(&token))).await.status(), StatusCode::OK);
    }
    // A refresh on node 2 of a token issued on node 0.
    let res = k.post(2, "/v1/token/refresh", json!({"refresh_token": token["refresh_token"]})).await;
    assert_eq!(res.status(), StatusCode::OK);

    // Logout on node 2: the token is refused by nodes 0 and 1 once the push arrives.
    let doomed = k.jwt(1, "multi@example.com").await;
    let res = k.c.post(k.url(2, "/v1/logout")).header("authorization", bearer(&doomed)).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    for node in [0, 1] {
        let auth = bearer(&doomed);
        k.within(Duration::from_secs(5), || async {
            k.get(node, "/v1/me", ("authorization", &auth)).await.status() == StatusCode::UNAUTHORIZED
        })
        .await;
    }
    // Sign out everywhere on node 0: the session cookie and every token die on every node. Node 0
    // refuses the cookie at once; nodes 1 and 2 hold a copy in their session caches (on by
    // default in front of Redis) and drop it when the announcement arrives.
    let res = k.c.post(k.url(0, "/v1/logout-all")).header("cookie", &cookie).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(k.get(0, "/v1/me", ("cookie", &cookie)).await.status(), StatusCode::UNAUTHORIZED);
    for node in 0..3 {
        k.within(Duration::from_secs(5), || async {
            k.get(node, "/v1/me", ("cookie", &cookie)).await.status() == StatusCode::UNAUTHORIZED
        })
        .await;
        let auth = bearer(&token);
        k.within(Duration::from_secs(5), || async {
            k.get(node, "/v1/me", ("authorization", &auth)).await.status() == StatusCode::UNAUTHORIZED
        })
        .await;
    }
}

/// With `store.session_cache = "0s"` every session check reads Redis, so a session ended on
/// one node is refused by every other node on its very next request.
#[tokio::test]
async fn without_the_session_cache_a_session_ended_on_one_node_is_refused_everywhere_at_once() {
    let Some(k) = cluster_with(3, Arc::new(SystemClock), |s| s.store.session_cache = Some(Duration::ZERO)).await else {
        return;
    };
    k.post(0, "/v1/register", json!({"email": "strict@example.com", "password": PASSWORD})).await;
    for ending in ["/v1/logout", "/v1/logout-all"] {
        let cookie = k.session(0, "strict@example.com").await;
        for node in 0..3 {
            assert_eq!(k.get(node, "/v1/me", ("cookie", &cookie)).await.status(), StatusCode::OK, "node {node}");
        }
        let res = k.c.post(k.url(1, ending)).header("cookie", &cookie).send().await.expect("send");
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        for node in 0..3 {
            let status = k.get(node, "/v1/me", ("cookie", &cookie)).await.status();
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{ending} on node 1, then node {node}");
        }
    }
}

/// A session used after the touch interval, then swept by another node after the login's own
/// idle deadline but before the use's, stays signed in on both. The use goes through the Redis
/// script that writes it back; the sweep is the other node's own. (Earlier versions wrote `1`
/// into the expiry index after a use, and the next sweep on any node deleted the live session.)
#[tokio::test]
async fn a_session_used_and_then_swept_by_another_node_stays_signed_in() {
    let clock = ManualClock::starting_now();
    // Without the session cache, every check below reads Redis.
    let no_cache = |s: &mut Settings| s.store.session_cache = Some(Duration::ZERO);
    let Some(k) = cluster_with(2, Arc::new(clock.clone()), no_cache).await else { return };
    k.post(0, "/v1/register", json!({"email": "swept@example.com", "password": PASSWORD})).await;
    let cookie = k.session(0, "swept@example.com").await;
    let idle = Settings::default().session.idle_timeout;
    // Past the touch interval (a minute with the default 30-minute idle timeout), a use is
    // written back.
    clock.advance(Duration::from_secs(61));
    assert_eq!(k.get(0, "/v1/me", ("cookie", &cookie)).await.status(), StatusCode::OK);
    let sweep = |node: usize| {
        let sweep = k.nodes[node].state.service.sweep.clone().expect("a Redis node sweeps");
        let now = clock.now();
        async move { sweep.sweep(now).await.expect("sweep") }
    };
    // Swept at once, and again past the login's own idle deadline: nothing to delete.
    assert_eq!(sweep(1).await.sessions, 0);
    clock.advance(idle - Duration::from_secs(30));
    assert_eq!(sweep(1).await.sessions, 0, "a used session is not swept at its login's deadline");
    for node in [1, 0] {
        assert_eq!(k.get(node, "/v1/me", ("cookie", &cookie)).await.status(), StatusCode::OK, "node {node}");
    }
    // Left alone past the last use's idle deadline, it is swept, and refused everywhere.
    clock.advance(idle);
    assert_eq!(sweep(1).await.sessions, 1);
    for node in [0, 1] {
        assert_eq!(k.get(node, "/v1/me", ("cookie", &cookie)).await.status(), StatusCode::UNAUTHORIZED, "node {node}");
    }
}

#[tokio::test]
async fn redis_down_fails_sessions_closed_keeps_jwts_and_recovers_by_itself() {
    // Node 0 caches sessions (the default in front of Redis), node 1 does not.
    let Some(mut k) = cluster(1).await else { return };
    k.add_node(Arc::new(SystemClock), |s| s.store.session_cache = Some(Duration::ZERO)).await;
    k.post(0, "/v1/register", json!({"email": "r@example.com", "password": PASSWORD})).await;
    let cookie = k.session(0, "r@example.com").await;
    for node in 0..2 {
        assert_eq!(k.get(node, "/v1/me", ("cookie", &cookie)).await.status(), StatusCode::OK);
    }
    let token = k.jwt(0, "r@example.com").await;
    let auth = bearer(&token);

    k.redis.kill();
    // Node 1 fails closed on the next request. Node 0 answers nothing from its cache once it
    // knows its feed is gone (a copy could hide an end it did not hear), so from then on it
    // fails closed too.
    k.within(Duration::from_secs(5), || async {
        let res = k.c.get(k.url(0, "/readyz")).send().await.expect("send");
        let problem: Value = res.json().await.expect("json");
        problem["detail"].as_str().is_some_and(|d| d.contains("the revocation feed has been lost"))
    })
    .await;
    for node in 0..2 {
        let res = k.get(node, "/v1/me", ("cookie", &cookie)).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "fail closed, never 500 or a false 200");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["code"], "store_unavailable");
        assert_eq!(k.get(node, "/v1/me", ("authorization", &auth)).await.status(), StatusCode::OK, "JWTs go on");
        let res = k.c.get(k.url(node, "/readyz")).send().await.expect("send");
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(k.c.get(k.url(node, "/healthz")).send().await.expect("send").status(), StatusCode::OK);
    }
    let res = k.post(1, "/v1/login", json!({"email": "r@example.com", "password": PASSWORD})).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Operators see it: failed store operations are counted.
    let metrics = k.c.get(k.url(0, "/metrics")).send().await.expect("send").text().await.expect("text");
    let errors = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"portcullis_store_errors_total{store="sessions",op="get"} "#))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(errors.is_some_and(|n| n >= 1.0), "store errors not counted:\n{metrics}");

    // Back again: no node is restarted, and nothing stored before the crash is lost.
    k.redis.restart().expect("redis restarts");
    for node in 0..2 {
        k.within(Duration::from_secs(10), || async {
            k.get(node, "/v1/me", ("cookie", &cookie)).await.status() == StatusCode::OK
        })
        .await;
    }
    // The feed is back too: a revocation on node 1 reaches node 0.
    let res = k.c.post(k.url(1, "/v1/logout")).header("authorization", &auth).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    k.within(Duration::from_secs(5), || async {
        k.get(0, "/v1/me", ("authorization", &auth)).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
    let ready: Value = k.c.get(k.url(0, "/readyz")).send().await.expect("send").json().await.expect("json");
    assert_eq!(ready["revocation_feed"]["connected"], true, "{ready}");
}

#[tokio::test]
async fn postgres_down_stops_logins_but_not_existing_sessions_and_tokens() {
    let clock = ManualClock::starting_now();
    let Some(mut k) = cluster_with_clock(1, Arc::new(clock.clone())).await else { return };
    k.post(0, "/v1/register", json!({"email": "pg@example.com", "password": PASSWORD})).await;
    let cookie = k.session(0, "pg@example.com").await;
    let token = k.jwt(0, "pg@example.com").await;
    k.postgres.kill();
    assert_eq!(k.get(0, "/v1/me", ("cookie", &cookie)).await.status(), StatusCode::OK);
    assert_eq!(k.get(0, "/v1/me", ("authorization", &bearer(&token))).await.status(), StatusCode::OK);
    let res = k.post(0, "/v1/login", json!({"email": "pg@example.com", "password": PASSWORD})).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.json::<Value>().await.expect("json")["code"], "store_unavailable");
    let res = k.post(0, "/v1/register", json!({"email": "new@example.com", "password": PASSWORD})).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Even after the cached user is no longer fresh, the session keeps working.
    clock.advance(portcullis_store::cache::USER_CACHE_FRESH + Duration::from_secs(1));
    assert_eq!(k.get(0, "/v1/me", ("cookie", &cookie)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn local_session_caches_are_dropped_everywhere_when_a_session_ends() {
    // The cache as shipped: on in front of Redis, copies at most five seconds old.
    let clock = ManualClock::starting_now();
    let Some(k) = cluster_with_clock(2, Arc::new(clock.clone())).await else { return };
    k.post(0, "/v1/register", json!({"email": "cache@example.com", "password": PASSWORD})).await;
    let cookie = k.session(0, "cache@example.com").await;
    assert_eq!(k.get(1, "/v1/me", ("cookie", &cookie)).await.status(), StatusCode::OK, "node 1 caches it");
    // Ended on node 0: node 1 drops its copy on the announcement (the clock does not move).
    let res = k.c.post(k.url(0, "/v1/logout")).header("cookie", &cookie).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    k.within(Duration::from_secs(5), || async {
        k.get(1, "/v1/me", ("cookie", &cookie)).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;

    // A record removed without any announcement (as if the message were lost) is served from
    // the cache at most for the configured staleness.
    let cookie = k.session(0, "cache@example.com").await;
    assert_eq!(k.get(1, "/v1/me", ("cookie", &cookie)).await.status(), StatusCode::OK);
    let me: Value = k.get(1, "/v1/me", ("cookie", &cookie)).await.json().await.expect("json");
    let sid = portcullis_core::SessionId::parse(me["auth"]["session_id"].as_str().expect("sid")).expect("sid");
    let redis =
        portcullis_store::redis::RedisStore::connect(&k.redis.url(), Arc::new(SystemClock)).await.expect("connect");
    assert!(portcullis_store::SessionStore::delete(&redis, &sid).await.expect("delete"));
    assert_eq!(k.get(1, "/v1/me", ("cookie", &cookie)).await.status(), StatusCode::OK, "stale copy");
    clock.advance(Duration::from_secs(4));
    assert_eq!(k.get(1, "/v1/me", ("cookie", &cookie)).await.status(), StatusCode::OK, "still within 5 s");
    clock.advance(Duration::from_secs(1));
    assert_eq!(k.get(1, "/v1/me", ("cookie", &cookie)).await.status(), StatusCode::UNAUTHORIZED, "bound honoured");
}

/// Ends made on a node that keeps no copies (`session_cache = "0s"`) are announced all the same,
/// so a node that caches drops its copy. The clock stands still, so only the announcement can
/// end a copy before its 60 s bound.
#[tokio::test]
async fn a_node_without_the_cache_still_announces_the_ends_it_makes() {
    let clock = ManualClock::starting_now();
    let cached = |s: &mut Settings| s.store.session_cache = Some(Duration::from_secs(60));
    let Some(mut k) = cluster_with(1, Arc::new(clock.clone()), cached).await else { return };
    k.add_node(Arc::new(clock.clone()), |s| s.store.session_cache = Some(Duration::ZERO)).await;
    k.post(0, "/v1/register", json!({"email": "mixed@example.com", "password": PASSWORD})).await;
    for ending in ["/v1/logout", "/v1/logout-all"] {
        let cookie = k.session(1, "mixed@example.com").await;
        assert_eq!(k.get(0, "/v1/me", ("cookie", &cookie)).await.status(), StatusCode::OK, "node 0 caches it");
        let res = k.c.post(k.url(1, ending)).header("cookie", &cookie).send().await.expect("send");
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        assert_eq!(k.get(1, "/v1/me", ("cookie", &cookie)).await.status(), StatusCode::UNAUTHORIZED);
        k.within(Duration::from_secs(5), || async {
            k.get(0, "/v1/me", ("cookie", &cookie)).await.status() == StatusCode::UNAUTHORIZED
        })
        .await;
    }
}

/// A Redis that stops answering without closing anything (a partition, a frozen host) does not
/// leave a node answering from its session cache: the feed's heartbeat notices the silence
/// within two seconds, long before the copies' own bound (60 s here), and the cache works again
/// once Redis does.
#[tokio::test]
async fn a_node_whose_feed_goes_silent_stops_answering_from_its_session_cache() {
    let Some(k) =
        cluster_with(2, Arc::new(SystemClock), |s| s.store.session_cache = Some(Duration::from_secs(60))).await
    else {
        return;
    };
    k.post(0, "/v1/register", json!({"email": "silent@example.com", "password": PASSWORD})).await;
    let cookie = k.session(0, "silent@example.com").await;
    assert_eq!(k.get(1, "/v1/me", ("cookie", &cookie)).await.status(), StatusCode::OK, "node 1 caches it");

    k.redis.freeze().expect("SIGSTOP");
    let silent = Instant::now();
    k.within(Duration::from_secs(10), || async {
        k.get(1, "/v1/me", ("cookie", &cookie)).await.status() == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let ready: Value = k.c.get(k.url(1, "/readyz")).send().await.expect("send").json().await.expect("json");
    assert!(
        ready["detail"].as_str().is_some_and(|d| d.contains("the revocation feed has been lost")),
        "after {:?}: {ready}",
        silent.elapsed()
    );

    k.redis.thaw().expect("SIGCONT");
    k.within(Duration::from_secs(10), || async {
        let ready: Value = k.c.get(k.url(1, "/readyz")).send().await.expect("send").json().await.expect("json");
        ready["revocation_feed"]["connected"] == true
    })
    .await;
    assert_eq!(k.get(1, "/v1/me", ("cookie", &cookie)).await.status(), StatusCode::OK, "served again");
}

/// A node answers from its session cache only while it hears the feed: once the feed is lost,
/// a copy made before could hide an end announced meanwhile, so it is never answered again.
#[tokio::test]
async fn a_node_that_loses_the_feed_answers_nothing_from_its_session_cache() {
    let Some(k) =
        cluster_with(2, Arc::new(SystemClock), |s| s.store.session_cache = Some(Duration::from_secs(60))).await
    else {
        return;
    };
    k.post(0, "/v1/register", json!({"email": "deaf@example.com", "password": PASSWORD})).await;
    let redis =
        portcullis_store::redis::RedisStore::connect(&k.redis.url(), Arc::new(SystemClock)).await.expect("connect");
    let session_id =
        |me: Value| portcullis_core::SessionId::parse(me["auth"]["session_id"].as_str().expect("sid")).expect("sid");
    let cookie = k.session(0, "deaf@example.com").await;
    let me: Value = k.get(1, "/v1/me", ("cookie", &cookie)).await.json().await.expect("node 1 caches it");
    let sid = session_id(me);

    // Redis drops every subscriber (the nodes' command connections stay), and the record goes
    // without any announcement: node 1 refuses it, whether it has heard the feed again or not.
    let killed = k.redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]).expect("redis-cli");
    assert!(killed.parse::<u32>().is_ok_and(|n| n >= 2), "subscribers killed: {killed}");
    assert!(portcullis_store::SessionStore::delete(&redis, &sid).await.expect("delete"));
    assert_eq!(k.get(1, "/v1/me", ("cookie", &cookie)).await.status(), StatusCode::UNAUTHORIZED, "no stale copy");

    // Heard again, the cache works again: a copy made now is answered (here even after the same
    // silent delete, within its 60 s bound).
    k.within(Duration::from_secs(5), || async {
        let ready: Value = k.c.get(k.url(1, "/readyz")).send().await.expect("send").json().await.expect("json");
        ready["revocation_feed"]["connected"] == true
    })
    .await;
    let cookie = k.session(0, "deaf@example.com").await;
    let me: Value = k.get(1, "/v1/me", ("cookie", &cookie)).await.json().await.expect("json");
    assert!(portcullis_store::SessionStore::delete(&redis, &session_id(me)).await.expect("delete"));
    assert_eq!(k.get(1, "/v1/me", ("cookie", &cookie)).await.status(), StatusCode::OK, "answered from the cache");
}

#[tokio::test]
async fn nodes_share_sessions_and_revocations_through_a_redis_cluster() {
    let Some(redis_cluster) = require("cluster: redis cluster", portcullis_lab::RedisCluster::start()) else { return };
    let Some(k) = cluster_with(2, Arc::new(SystemClock), |s| s.store.sessions = redis_cluster.url()).await else {
        return;
    };
    k.post(0, "/v1/register", json!({"email": "rc@example.com", "password": PASSWORD})).await;
    let cookie = k.session(0, "rc@example.com").await;
    assert_eq!(k.get(1, "/v1/me", ("cookie", &cookie)).await.status(), StatusCode::OK);
    let token = k.jwt(1, "rc@example.com").await;
    let res = k.post(0, "/v1/token/refresh", json!({"refresh_token": token["refresh_token"]})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let auth = bearer(&res.json::<Value>().await.expect("json"));
    assert_eq!(k.get(1, "/v1/me", ("authorization", &auth)).await.status(), StatusCode::OK);
    let res = k.c.post(k.url(0, "/v1/logout-all")).header("cookie", &cookie).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    k.within(Duration::from_secs(5), || async {
        k.get(1, "/v1/me", ("cookie", &cookie)).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
    k.within(Duration::from_secs(5), || async {
        k.get(1, "/v1/me", ("authorization", &auth)).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
}

#[tokio::test]
async fn a_sentinel_failover_loses_no_session() {
    let Some(mut group) = require("cluster: redis sentinel", portcullis_lab::RedisSentinel::start()) else { return };
    let Some(k) = cluster_with(2, Arc::new(SystemClock), |s| s.store.sessions = group.url()).await else { return };
    k.post(0, "/v1/register", json!({"email": "sent@example.com", "password": PASSWORD})).await;
    let cookie = k.session(0, "sent@example.com").await;
    let token = k.jwt(1, "sent@example.com").await;
    assert_eq!(k.get(1, "/v1/me", ("cookie", &cookie)).await.status(), StatusCode::OK);
    group.wait_replicated().expect("replica caught up");

    // The master dies; Sentinel promotes the replica; the nodes follow without a restart.
    group.master.kill();
    for node in 0..2 {
        k.within(Duration::from_secs(30), || async {
            k.get(node, "/v1/me", ("cookie", &cookie)).await.status() == StatusCode::OK
        })
        .await;
    }
    // Writes work on the new master: refresh, and a revocation that reaches the other node.
    let res = k.post(0, "/v1/token/refresh", json!({"refresh_token": token["refresh_token"]})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let auth = bearer(&res.json::<Value>().await.expect("json"));
    let res = k.c.post(k.url(0, "/v1/logout")).header("authorization", &auth).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    k.within(Duration::from_secs(10), || async {
        k.get(1, "/v1/me", ("authorization", &auth)).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
}

#[tokio::test]
async fn failed_logins_are_counted_across_nodes_through_redis() {
    let clock = ManualClock::starting_now();
    let Some(k) = cluster_with_clock(2, Arc::new(clock.clone())).await else { return };
    k.post(0, "/v1/register", json!({"email": "shared@example.com", "password": PASSWORD})).await;
    let wrong = json!({"email": "shared@example.com", "password": "wrong password"});
    // Five failures spread over both nodes use up the free ones (five per account and address)…
    for i in 0..5 {
        assert_eq!(k.post(i % 2, "/v1/login", wrong.clone()).await.status(), StatusCode::UNAUTHORIZED);
    }
    // …so both nodes refuse the next attempt, even with the right password.
    let right = json!({"email": "shared@example.com", "password": PASSWORD});
    for node in 0..2 {
        let res = k.post(node, "/v1/login", right.clone()).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "node {node}");
        assert_eq!(res.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    }
    clock.advance(Duration::from_secs(1));
    assert_eq!(k.post(1, "/v1/login", right).await.status(), StatusCode::OK);
}

/// A burst of wrong passwords sent at once to two nodes sharing Redis checks no more passwords
/// than the free allowance: every attempt is counted in Redis before it is checked.
#[tokio::test]
async fn a_parallel_burst_over_two_nodes_checks_only_the_free_attempts() {
    let clock = ManualClock::starting_now();
    let Some(k) = cluster_with_clock(2, Arc::new(clock.clone())).await else { return };
    k.post(0, "/v1/register", json!({"email": "burst@example.com", "password": PASSWORD})).await;
    let wrong = json!({"email": "burst@example.com", "password": "wrong password"});
    let sends = (0..40).map(|i| k.post(i % 2, "/v1/login", wrong.clone()));
    let statuses: Vec<StatusCode> = futures_util::future::join_all(sends).await.iter().map(|r| r.status()).collect();
    let count = |code| statuses.iter().filter(|s| **s == code).count();
    // At most the five free ones are checked (a refund racing the burst may leave one fewer).
    let checked = count(StatusCode::UNAUTHORIZED);
    assert!((1..=5).contains(&checked), "{statuses:?}");
    assert_eq!(count(StatusCode::TOO_MANY_REQUESTS), 40 - checked, "{statuses:?}");
}

/// Whether every one of `nodes` refuses every token in `dead`.
async fn refused_everywhere(k: &Cluster, nodes: usize, dead: &[String]) -> bool {
    let checks = (0..nodes).flat_map(|n| dead.iter().map(move |t| (n, t)));
    let statuses = futures_util::future::join_all(checks.map(|(n, t)| k.get(n, "/v1/me", ("authorization", t)))).await;
    statuses.iter().all(|r| r.status() == StatusCode::UNAUTHORIZED)
}

/// Revocation state is never lost by a store restart: Redis coming back empty (no persistence)
/// does not bring logged-out tokens back to life, because every node merges what it knew with
/// the store's snapshot and writes back what the store lacks, so a node started afterwards
/// refuses them too.
#[tokio::test]
async fn revoked_tokens_stay_revoked_when_redis_restarts_empty() {
    let Some(mut k) = cluster(2).await else { return };
    for email in ["a@example.com", "b@example.com"] {
        k.post(0, "/v1/register", json!({"email": email, "password": PASSWORD})).await;
    }
    let logged_out = bearer(&k.jwt(0, "a@example.com").await);
    let kept = bearer(&k.jwt(0, "a@example.com").await);
    let everywhere = [bearer(&k.jwt(1, "b@example.com").await), bearer(&k.jwt(0, "b@example.com").await)];
    let res = k.c.post(k.url(0, "/v1/logout")).header("authorization", &logged_out).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = k.c.post(k.url(1, "/v1/logout-all")).header("authorization", &everywhere[0]).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let dead = [logged_out, everywhere[0].clone(), everywhere[1].clone()];
    k.within(Duration::from_secs(10), || refused_everywhere(&k, 2, &dead)).await;

    k.redis.restart_empty().expect("redis restarts");
    // The nodes notice the lost data when their feeds reconnect, and write it back.
    k.within(Duration::from_secs(15), || async {
        let denied: u64 =
            k.redis.cli(&["ZCARD", "pc:{revocations}:deny"]).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        let epochs: u64 =
            k.redis.cli(&["HLEN", "pc:{revocations}:not_before"]).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        denied >= 1 && epochs >= 1
    })
    .await;
    assert!(refused_everywhere(&k, 2, &dead).await, "a logged-out token came back to life after the restart");
    assert_eq!(k.get(0, "/v1/me", ("authorization", &kept)).await.status(), StatusCode::OK, "others still pass");
    // A node that starts now has only the store to go by.
    k.add_node(Arc::new(SystemClock), |_| {}).await;
    assert!(refused_everywhere(&k, 3, &dead).await, "a node started after the restart accepts a revoked token");
    assert_eq!(k.get(2, "/v1/me", ("authorization", &kept)).await.status(), StatusCode::OK);
}

/// A refresh that answered 503 because Redis stalled its write is never taken for theft later:
/// the rotation that lands after the stall is taken back, so the client's retry with the token
/// it still holds, well after the grace window and on another node, is a plain rotation.
#[tokio::test]
async fn a_refresh_that_answered_503_in_a_write_stall_is_not_a_reuse_when_retried() {
    let clock = ManualClock::starting_now();
    let Some(k) = cluster_with_clock(2, Arc::new(clock.clone())).await else { return };
    k.post(0, "/v1/register", json!({"email": "stall@example.com", "password": PASSWORD})).await;
    let login = k.jwt(0, "stall@example.com").await;
    // One rotation first, so Redis knows the rotation script as it would in production.
    let res = k.post(0, "/v1/token/refresh", json!({"refresh_token": login["refresh_token"]})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let pair: Value = res.json().await.expect("json");
    let held = pair["refresh_token"].as_str().expect("refresh token").to_owned();

    assert_eq!(k.redis.cli(&["CLIENT", "PAUSE", "3000", "WRITE"]).expect("pause"), "OK");
    let res = k.post(0, "/v1/token/refresh", json!({"refresh_token": held})).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "the rotation timed out in the stall");
    // A read on node 0's connection is answered only once the stall is over and everything the
    // node sent before it has been applied (the late rotation, and its undo).
    let auth = bearer(&pair);
    k.within(Duration::from_secs(15), || async {
        k.get(0, "/v1/sessions", ("authorization", &auth)).await.status() == StatusCode::OK
    })
    .await;

    // The client retries much later than the grace window, on the other node.
    clock.advance(Duration::from_secs(60));
    let res = k.post(1, "/v1/token/refresh", json!({"refresh_token": held})).await;
    let status = res.status();
    let body: Value = res.json().await.expect("json");
    assert_eq!(status, StatusCode::OK, "the retry after a 503 was taken for a reuse: {body}");
    let next = body["refresh_token"].as_str().expect("refresh token");
    assert_eq!(next.split('.').nth(1), Some("2"), "one rotation from the held token: {next}");
    let res = k.post(0, "/v1/token/refresh", json!({"refresh_token": next})).await;
    assert_eq!(res.status(), StatusCode::OK, "the session lives on");
}

/// A service reading the feed from one node sees a logout made on another: the feed carries
/// what every node's replica holds, and the client registry is shared through PostgreSQL.
#[tokio::test]
async fn a_logout_on_one_node_reaches_the_feed_of_another() {
    let Some(k) = cluster(2).await else { return };
    let res = k.post(0, "/v1/register", json!({"email": "svc@example.com", "password": PASSWORD})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // Registered through node 0's service, read through node 1.
    let registered = k.nodes[0]
        .state
        .service
        .register_client(
            portcullis_service::Actor::Cli,
            "audit-log",
            portcullis_core::ClientKind::Service,
            &Default::default(),
        )
        .await
        .expect("register");
    let id = registered.client.id.to_string();
    let secret = registered.secret.expect("secret").expose().to_owned();
    let token = k.jwt(0, "svc@example.com").await;
    let claims = token["access_token"].as_str().expect("token").split('.').nth(1).expect("payload").to_owned();
    let claims: Value = {
        use base64::Engine as _;
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims).expect("b64"))
            .expect("json")
    };
    let res = k.c.post(k.url(0, "/v1/logout")).header("authorization", bearer(&token)).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let sid = claims["sid"].as_str().expect("sid").to_owned();
    let mut follow = crate::feed::Following::open_at(&k.nodes[1].base, &id, &secret, None).await;
    assert_eq!(follow.next().await.event, "snapshot");
    k.within(Duration::from_secs(5), || {
        let (c, url, id, secret, sid) =
            (k.c.clone(), k.url(1, "/v1/revocations"), id.clone(), secret.clone(), sid.clone());
        async move {
            let res = c.get(url).basic_auth(id, Some(secret)).send().await.expect("send");
            assert_eq!(res.status(), StatusCode::OK);
            let snapshot: Value = res.json().await.expect("json");
            snapshot["denied"].as_array().expect("denied").iter().any(|d| d["sid"] == sid.as_str())
        }
    })
    .await;
    // A second logout on node 0 is streamed by node 1 as it happens.
    let again = k.jwt(0, "svc@example.com").await;
    let res = k.c.post(k.url(0, "/v1/logout-all")).header("authorization", bearer(&again)).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    loop {
        let event = follow.next().await;
        if event.data["not_before"]["sub"].is_string() {
            break;
        }
    }
}

/// A logout attempted while Redis is down is kept by the node that took it and, once Redis is
/// back, reaches every other node and the services following them: the node writes it back and
/// asks every node to merge again, which starts each follower over from a fresh snapshot.
#[tokio::test]
async fn a_revocation_made_while_redis_is_down_reaches_every_node_and_their_followers() {
    let Some(mut k) = cluster(2).await else { return };
    let res = k.post(0, "/v1/register", json!({"email": "out@example.com", "password": PASSWORD})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let registered = k.nodes[1]
        .state
        .service
        .register_client(
            portcullis_service::Actor::Cli,
            "follower",
            portcullis_core::ClientKind::Service,
            &Default::default(),
        )
        .await
        .expect("register");
    let (id, secret) = (registered.client.id.to_string(), registered.secret.expect("secret").expose().to_owned());
    let token = bearer(&k.jwt(0, "out@example.com").await);
    let mut follow = crate::feed::Following::open_at(&k.nodes[1].base, &id, &secret, None).await;
    let first = follow.next().await;
    assert_eq!(first.event, "snapshot");

    k.redis.kill();
    // Node 0 keeps the revocation (its replica refuses the token at once) although Redis could
    // not take it; node 1 cannot know yet.
    let res = k.c.post(k.url(0, "/v1/logout")).header("authorization", &token).send().await.expect("send");
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "the store is down");
    assert_eq!(k.get(0, "/v1/me", ("authorization", &token)).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(k.get(1, "/v1/me", ("authorization", &token)).await.status(), StatusCode::OK);

    k.redis.restart().expect("redis restarts");
    k.within(Duration::from_secs(20), || async {
        k.get(1, "/v1/me", ("authorization", &token)).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
    // Node 1's follower was started over (node 1 may have missed events while Redis was down):
    // its stream ended, and resuming from where it was gives a fresh snapshot with the entry.
    assert!(follow.ended().await, "the stream of a node that resynced ends");
    let mut again = crate::feed::Following::open_at(&k.nodes[1].base, &id, &secret, Some(&first.id)).await;
    let snapshot = again.next().await;
    assert_eq!(snapshot.event, "snapshot", "the old log cannot be resumed from");
    assert!(!snapshot.data["denied"].as_array().expect("denied").is_empty(), "{:?}", snapshot.data);
}

/// The OpenID Connect provider on two nodes: a code made on one is redeemed on the other, once
/// only across both (its reuse there revokes what it issued, everywhere), and the ID-token key
/// one node made is published by the other.
#[tokio::test]
async fn an_application_signs_in_across_nodes_and_a_code_works_once_in_the_cluster() {
    let Some(k) = cluster(2).await else { return };
    let res = k.post(0, "/v1/register", json!({"email": "ada@example.com", "password": PASSWORD})).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let redirect = "http://127.0.0.1:9/callback";
    let spec = portcullis_service::OidcClientSpec {
        name: "Wiki".into(),
        redirect_uris: vec![redirect.into()],
        first_party: true,
        ..Default::default()
    };
    let registered = k.nodes[0]
        .state
        .service
        .register_oidc_client(portcullis_service::Actor::Cli, spec, &Default::default())
        .await
        .expect("register");
    let (id, secret) = (registered.client.id.to_string(), registered.secret.expect("secret").expose().to_owned());
    let cookie = k.session(0, "ada@example.com").await;
    let verifier = "v".repeat(50);
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &id)
        .append_pair("redirect_uri", redirect)
        .append_pair("scope", "openid offline_access")
        .append_pair("code_challenge", &portcullis_core::oidc::code_challenge(&verifier))
        .append_pair("code_challenge_method", "S256")
        .finish();
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let res = no_redirects
        .get(k.url(0, &format!("/oauth2/authorize?{q}")))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("send");
    let back = res.headers()["location"].to_str().expect("ascii").to_owned();
    let code = url::Url::parse(&back)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("a code");
    let redeem = |node: usize| {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect),
            ("code_verifier", verifier.as_str()),
        ];
        k.c.post(k.url(node, "/oauth2/token")).basic_auth(&id, Some(&secret)).form(&form).send()
    };
    let res = redeem(1).await.expect("send");
    assert_eq!(res.status(), StatusCode::OK, "a code from node 0 works on node 1");
    let tokens: Value = res.json().await.expect("json");
    let access = format!("Bearer {}", tokens["access_token"].as_str().expect("access"));
    assert_eq!(k.get(0, "/oauth2/userinfo", ("authorization", &access)).await.status(), StatusCode::OK);
    // The ID-token key node 1 signed with is published by node 0 within its key reload.
    let id_token = tokens["id_token"].as_str().expect("id token");
    let kid = portcullis_core::jwt::token::peek_kid(id_token).expect("kid");
    k.within(Duration::from_secs(10), || async {
        let jwks: Value =
            k.get(0, "/.well-known/jwks.json", ("accept", "application/json")).await.json().await.expect("jwks");
        jwks["keys"].as_array().is_some_and(|keys| keys.iter().any(|key| key["kid"] == kid.as_str()))
    })
    .await;
    // The same code on node 0: refused, and node 1 refuses the tokens it issued.
    let res = redeem(0).await.expect("send");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(res.json::<Value>().await.expect("json")["error"], "invalid_grant");
    k.within(Duration::from_secs(5), || async {
        k.get(1, "/oauth2/userinfo", ("authorization", &access)).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
}
