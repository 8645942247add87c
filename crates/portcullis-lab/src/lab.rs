//! `portcullis lab`: reproduce, with numbers, what people claim about sessions and JWTs when one
//! server becomes many behind a load balancer.
//!
//! Every scenario starts what it needs on loopback — Portcullis nodes as separate processes of
//! the `portcullis` binary, Redis, PostgreSQL, nginx with the configuration from
//! `deploy/nginx/balancer.conf` — runs, measures, and stops it all. Nothing leaves 127.0.0.1.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::procs::{Nginx, Postgres, Proc, ProcError, Redis, free_port};

mod fanout;

pub use fanout::Design;

const BALANCER: &str = include_str!("../../../deploy/nginx/balancer.conf");
const PASSWORD: &str = "lab password, long enough";

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error("{0}")]
    Failed(String),
}

fn failed(e: impl std::fmt::Display) -> LabError {
    LabError::Failed(e.to_string())
}

pub struct LabOptions {
    /// The `portcullis` binary the nodes run.
    pub portcullis: PathBuf,
    /// Nodes in the cluster scenarios: at least 2 (the claims are about another node).
    pub nodes: usize,
    /// How long each load measurement runs.
    pub load: Duration,
    /// Logouts measured for each revocation-propagation figure.
    pub samples: usize,
    /// Services in the microservice chain (scenarios 9 to 11).
    pub services: usize,
}

/// What a run of the lab found.
#[derive(Debug, Clone)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// The microservice designs side by side.
    pub designs: Vec<Design>,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Finding {
    pub number: usize,
    pub claim: String,
    pub outcome: String,
    pub figure: String,
    /// Whether what was measured is what the claim says.
    pub confirmed: bool,
}

/// A Portcullis node running as its own process.
struct Node {
    child: Option<Proc>,
    base: String,
    /// Its settings file, for the CLI.
    config: PathBuf,
}

impl Node {
    fn kill(&mut self) {
        drop(self.child.take());
    }
}

/// What the nodes of one scenario share.
struct Setup<'a> {
    bin: &'a Path,
    dir: &'a Path,
    users: String,
    sessions: String,
    revocation: &'a str,
}

async fn start_node(setup: &Setup<'_>, index: usize) -> Result<Node, LabError> {
    let port = free_port()?;
    let data = setup.dir.join(format!("node{index}-{port}"));
    let config = setup.dir.join(format!("node{index}-{port}.toml"));
    let toml = format!(
        "data_dir = {data:?}\npublic_url = \"http://portcullis.lab\"\n[store]\nusers = {:?}\nsessions = {:?}\n\
         session_cache = \"0s\"\n[jwt]\nrevocation = {:?}\n",
        setup.users, setup.sessions, setup.revocation
    );
    std::fs::write(&config, toml).map_err(failed)?;
    let child = Proc::spawn(
        Command::new(setup.bin)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .map_err(|e| failed(format!("{}: {e}", setup.bin.display())))?;
    let node = Node { child: Some(child), base: format!("http://127.0.0.1:{port}"), config };
    wait_healthy(&node.base, || format!("node {index} did not start within 30 s")).await?;
    Ok(node)
}

/// Waits (at most 30 s) until `<base>/healthz` answers with a success.
async fn wait_healthy(base: &str, timed_out: impl FnOnce() -> String) -> Result<(), LabError> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(failed(timed_out()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start_nodes(setup: &Setup<'_>, n: usize) -> Result<Vec<Node>, LabError> {
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(start_node(setup, i).await?);
    }
    Ok(nodes)
}

fn balancer(nodes: &[Node], sticky: bool) -> Result<Nginx, LabError> {
    let servers: String = nodes
        .iter()
        .map(|n| format!("    server {} max_fails=1 fail_timeout=5s;\n", n.base.trim_start_matches("http://")))
        .collect();
    let open = "upstream portcullis {\n";
    let start = BALANCER.find(open).ok_or_else(|| failed("balancer.conf has no upstream"))? + open.len();
    let end = start + BALANCER[start..].find('}').ok_or_else(|| failed("balancer.conf upstream"))?;
    let hash = if sticky { "    ip_hash;\n" } else { "" };
    // The nodes replace the shipped servers; everything else in the block (keepalive) stays.
    let kept: String = BALANCER[start..end]
        .lines()
        .filter(|l| !l.trim_start().starts_with("server "))
        .map(|l| format!("{l}\n"))
        .collect();
    let conf = format!("{}{hash}{servers}{kept}{}", &BALANCER[..start], &BALANCER[end..])
        .replace("listen 8080;", "listen 127.0.0.1:{port};");
    Ok(Nginx::start(&conf)?)
}

struct Client {
    http: reqwest::Client,
}

impl Client {
    /// `POST /v1/<path>` with a JSON body, as this lab's user.
    async fn post(&self, base: &str, path: &str, body: Value) -> Result<reqwest::Response, LabError> {
        self.http.post(format!("{base}{path}")).json(&body).send().await.map_err(failed)
    }

    async fn register(&self, base: &str, email: &str) -> Result<(), LabError> {
        let r = self.post(base, "/v1/register", json!({"email": email, "password": PASSWORD})).await?;
        match r.status().as_u16() {
            201 | 409 => Ok(()),
            other => Err(failed(format!("register: {other}"))),
        }
    }

    async fn session(&self, base: &str, email: &str) -> Result<String, LabError> {
        let r = self.post(base, "/v1/login", json!({"email": email, "password": PASSWORD})).await?;
        let cookie = r.headers().get("set-cookie").and_then(|v| v.to_str().ok()).and_then(|v| v.split(';').next());
        cookie.map(str::to_owned).ok_or_else(|| failed(format!("login: {}", r.status())))
    }

    async fn jwt(&self, base: &str, email: &str) -> Result<Value, LabError> {
        let r = self.post(base, "/v1/login", json!({"email": email, "password": PASSWORD, "mode": "jwt"})).await?;
        if !r.status().is_success() {
            return Err(failed(format!("jwt login: {}", r.status())));
        }
        r.json().await.map_err(failed)
    }

    /// `POST /v1/logout` with the credential in `header`; its status.
    async fn logout(&self, base: &str, header: (&str, &str)) -> Result<u16, LabError> {
        let r = self.http.post(format!("{base}/v1/logout")).header(header.0, header.1).send().await.map_err(failed)?;
        Ok(r.status().as_u16())
    }

    /// Signs out the credential in `header`, which must succeed (`204`).
    async fn sign_out(&self, base: &str, header: (&str, &str)) -> Result<(), LabError> {
        match self.logout(base, header).await? {
            204 => Ok(()),
            other => Err(failed(format!("logout answered {other}"))),
        }
    }

    /// How many of `urls` accept the credential in `header` (answer `200`).
    async fn accepted_by(&self, urls: &[String], header: (&str, &str)) -> usize {
        let mut ok = 0;
        for url in urls {
            if self.status(url, header).await == 200 {
                ok += 1;
            }
        }
        ok
    }

    /// Asks each of `urls` in turn until it refuses the credential in `header` (at most 10 s
    /// from `start`): the time from `start` to the last refusal, and the requests that took.
    async fn until_refused(
        &self,
        urls: &[String],
        header: (&str, &str),
        start: Instant,
    ) -> Result<(Duration, usize), LabError> {
        let mut asked = 0;
        for url in urls {
            loop {
                asked += 1;
                if self.status(url, header).await != 200 {
                    break;
                }
                if start.elapsed() > Duration::from_secs(10) {
                    return Err(failed(format!("a logout did not reach {url} within 10 s")));
                }
            }
        }
        Ok((start.elapsed(), asked))
    }

    /// The status of `GET path` with one header (0 when the request failed outright).
    async fn status(&self, url: &str, header: (&str, &str)) -> u16 {
        match self.http.get(url).header(header.0, header.1).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }

    async fn share_ok(&self, url: &str, header: (&str, &str), n: usize) -> (usize, usize) {
        let mut ok = 0;
        for _ in 0..n {
            if self.status(url, header).await == 200 {
                ok += 1;
            }
        }
        (ok, n)
    }
}

fn bearer(token: &Value) -> String {
    format!("Bearer {}", token["access_token"].as_str().unwrap_or(""))
}

fn pct(ok: usize, n: usize) -> String {
    format!("{ok}/{n} ({:.0} %)", 100.0 * ok as f64 / n.max(1) as f64)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// `p50 … / p99 … / max …` of `delays` (sorted in place).
fn spread(delays: &mut [Duration]) -> String {
    delays.sort();
    let max = delays.last().copied().unwrap_or_default();
    format!("p50 {} / p99 {} / max {}", ms(percentile(delays, 0.5)), ms(percentile(delays, 0.99)), ms(max))
}

/// Runs every scenario and returns the findings.
pub async fn run(opts: &LabOptions) -> Result<Report, LabError> {
    if opts.nodes < 2 || opts.samples == 0 || opts.load.is_zero() || opts.services == 0 {
        return Err(failed(
            "the lab needs at least 2 nodes, 1 sample, 1 service and a load measurement longer than 0 s",
        ));
    }
    let dir = tempfile::tempdir().map_err(failed)?;
    let postgres = Postgres::start()?;
    let mut redis = Redis::start()?;
    let c = Client { http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build().map_err(failed)? };
    let n = opts.nodes;
    let mut findings = Vec::new();
    let probes = 30;

    // 1 and 2: per-node memory sessions.
    {
        let setup = Setup {
            bin: &opts.portcullis,
            dir: dir.path(),
            users: postgres.url(),
            sessions: "memory".into(),
            revocation: "replica",
        };
        let mut nodes = start_nodes(&setup, n).await?;
        let lb = balancer(&nodes, false)?;
        c.register(&lb.url(), "one@lab.test").await?;
        let cookie = c.session(&lb.url(), "one@lab.test").await?;
        let (ok, total) = c.share_ok(&format!("{}/v1/me", lb.url()), ("cookie", &cookie), probes).await;
        findings.push(Finding {
            number: 1,
            claim: format!("With per-node session stores behind round robin, requests that land on another node are refused ({n} nodes)"),
            outcome: format!("{} of requests authenticated", pct(ok, total)),
            figure: format!("expected about 1/{n}"),
            confirmed: ok < total,
        });
        drop(lb);
        let lb = balancer(&nodes, true)?;
        let cookie = c.session(&lb.url(), "one@lab.test").await?;
        let (ok, total) = c.share_ok(&format!("{}/v1/me", lb.url()), ("cookie", &cookie), probes).await;
        // Find the node that holds it and kill it.
        let mut holder = None;
        for (i, node) in nodes.iter().enumerate() {
            if c.status(&format!("{}/v1/me", node.base), ("cookie", &cookie)).await == 200 {
                holder = Some(i);
            }
        }
        let holder = holder.ok_or_else(|| failed("no node holds the sticky session"))?;
        nodes[holder].kill();
        let (after, total_after) = c.share_ok(&format!("{}/v1/me", lb.url()), ("cookie", &cookie), probes).await;
        findings.push(Finding {
            number: 2,
            claim: "Sticky balancing (ip_hash) fixes that — until the node holding the session dies".into(),
            outcome: format!("{} before, {} after its node died", pct(ok, total), pct(after, total_after)),
            figure: "session lost with its node".into(),
            confirmed: ok == total && after == 0,
        });
    }

    // 3, 4 and 5: shared Redis.
    {
        let setup = Setup {
            bin: &opts.portcullis,
            dir: dir.path(),
            users: postgres.url(),
            sessions: redis.url(),
            revocation: "replica",
        };
        let mut nodes = start_nodes(&setup, n).await?;
        let lb = balancer(&nodes, false)?;
        c.register(&lb.url(), "three@lab.test").await?;
        let cookie = c.session(&lb.url(), "three@lab.test").await?;
        let token = c.jwt(&lb.url(), "three@lab.test").await?;
        let (ok, total) = c.share_ok(&format!("{}/v1/me", lb.url()), ("cookie", &cookie), probes).await;
        nodes[0].kill();
        let (after, total_after) = c.share_ok(&format!("{}/v1/me", lb.url()), ("cookie", &cookie), probes).await;
        // What one session costs Redis: its record (the per-user index adds a set member).
        let me: Value = c
            .http
            .get(format!("{}/v1/me", lb.url()))
            .header("cookie", &cookie)
            .send()
            .await
            .map_err(failed)?
            .json()
            .await
            .map_err(failed)?;
        let sid = me["auth"]["session_id"].as_str().unwrap_or("");
        let bytes = redis.cli(&["MEMORY", "USAGE", &format!("pc:sess:{{{sid}}}")])?;
        findings.push(Finding {
            number: 3,
            claim: "With a shared Redis store any node serves any session, and a node's death loses nothing".into(),
            outcome: format!("{} before, {} after a node died", pct(ok, total), pct(after, total_after)),
            figure: format!("no session lost; {bytes} bytes of Redis memory per session record"),
            confirmed: ok == total && after == total_after,
        });

        let live = &nodes[1].base;
        redis.kill();
        let session_down = c.status(&format!("{live}/v1/me"), ("cookie", &cookie)).await;
        let jwt_down = c.status(&format!("{live}/v1/me"), ("authorization", &bearer(&token))).await;
        let restarted = Instant::now();
        redis.restart()?;
        let recovery = loop {
            if c.status(&format!("{live}/v1/me"), ("cookie", &cookie)).await == 200 {
                break restarted.elapsed();
            }
            if restarted.elapsed() > Duration::from_secs(30) {
                return Err(failed("sessions did not recover within 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        findings.push(Finding {
            number: 4,
            claim: "If Redis goes down, session auth goes down everywhere — while JWT auth keeps serving".into(),
            outcome: format!(
                "Redis down: session {session_down}, JWT {jwt_down}; back by itself after Redis restarted"
            ),
            figure: format!("recovery {}", ms(recovery)),
            confirmed: session_down == 503 && jwt_down == 200,
        });

        // 5: nothing shared per request: Redis and PostgreSQL both stopped.
        redis.kill();
        let mut statuses = Vec::new();
        for node in &nodes[1..] {
            statuses.push(c.status(&format!("{}/v1/me", node.base), ("authorization", &bearer(&token))).await);
        }
        redis.restart()?;
        let all_ok = statuses.iter().all(|s| *s == 200);
        findings.push(Finding {
            number: 5,
            claim: "JWTs verify on every node with no shared state: no store is asked per request".into(),
            outcome: format!(
                "with Redis stopped, {} of {} live nodes accepted the token",
                statuses.iter().filter(|s| **s == 200).count(),
                statuses.len()
            ),
            figure: "0 store lookups per request".into(),
            confirmed: all_ok,
        });
    }

    // 6: revocation off.
    {
        let setup = Setup {
            bin: &opts.portcullis,
            dir: dir.path(),
            users: postgres.url(),
            sessions: redis.url(),
            revocation: "off",
        };
        let nodes = start_nodes(&setup, 2).await?;
        c.register(&nodes[0].base, "six@lab.test").await?;
        let token = c.jwt(&nodes[0].base, "six@lab.test").await?;
        let logout = c.logout(&nodes[0].base, ("authorization", &bearer(&token))).await?;
        let mut accepted = 0;
        for node in &nodes {
            if c.status(&format!("{}/v1/me", node.base), ("authorization", &bearer(&token))).await == 200 {
                accepted += 1;
            }
        }
        findings.push(Finding {
            number: 6,
            claim: "With jwt.revocation = off, a logged-out JWT keeps working until it expires".into(),
            outcome: format!("after logout ({logout}), {accepted} of {} nodes still accepted it", nodes.len()),
            figure: "valid until exp (15 min)".into(),
            confirmed: accepted == nodes.len(),
        });
    }

    // 7 and 8: replica revocation, and per-request cost.
    {
        let setup = Setup {
            bin: &opts.portcullis,
            dir: dir.path(),
            users: postgres.url(),
            sessions: redis.url(),
            revocation: "replica",
        };
        let nodes = start_nodes(&setup, n).await?;
        c.register(&nodes[0].base, "seven@lab.test").await?;
        let mut delays = Vec::new();
        for _ in 0..opts.samples {
            let token = c.jwt(&nodes[0].base, "seven@lab.test").await?;
            let auth = bearer(&token);
            let others: Vec<String> = nodes[1..].iter().map(|n| format!("{}/v1/me", n.base)).collect();
            if c.accepted_by(&others, ("authorization", &auth)).await != others.len() {
                return Err(failed("a fresh token was refused"));
            }
            let start = Instant::now();
            c.sign_out(&nodes[0].base, ("authorization", &auth)).await?;
            delays.push(c.until_refused(&others, ("authorization", &auth), start).await?.0);
        }
        let figure = spread(&mut delays);
        let max = delays.last().copied().unwrap_or_default();
        findings.push(Finding {
            number: 7,
            claim: format!(
                "With jwt.revocation = replica, a logout is refused on every node shortly after ({} nodes, {} logouts)",
                n,
                delays.len()
            ),
            outcome: "refused everywhere after the push".into(),
            figure,
            confirmed: max < Duration::from_secs(1),
        });

        let node = &nodes[1].base;
        let cookie = c.session(node, "seven@lab.test").await?;
        let token = c.jwt(node, "seven@lab.test").await?;
        let floor = load(&format!("{node}/healthz"), None, opts.load).await;
        let session = load(&format!("{node}/v1/me"), Some(("cookie", cookie.clone())), opts.load).await;
        let jwt = load(&format!("{node}/v1/me"), Some(("authorization", bearer(&token))), opts.load).await;
        let ratio = |x: &LoadResult| x.rps / floor.rps.max(1.0);
        findings.push(Finding {
            number: 8,
            claim: "Per-request cost of each mode (one node, keep-alive load from this process)".into(),
            outcome: format!(
                "floor /healthz {:.0} req/s; session (Redis) {:.0} req/s ({:.2}× floor); JWT replica {:.0} req/s ({:.2}× floor)",
                floor.rps, session.rps, ratio(&session), jwt.rps, ratio(&jwt)
            ),
            figure: format!("p99: floor {}, session {}, JWT {}", ms(floor.p99), ms(session.p99), ms(jwt.p99)),
            confirmed: session.errors == 0 && jwt.errors == 0,
        });
    }

    // 9, 10 and 11: a request fanning out to a chain of services.
    let (more, designs) = fanout::run(opts, dir.path(), &postgres, &redis, &c).await?;
    findings.extend(more);
    Ok(Report { findings, designs })
}

struct LoadResult {
    /// Requests answered with a success.
    ok: usize,
    rps: f64,
    p99: Duration,
    errors: usize,
}

/// A short closed-loop load: 16 keep-alive connections for `duration`.
async fn load(url: &str, header: Option<(&'static str, String)>, duration: Duration) -> LoadResult {
    let client = reqwest::Client::builder().pool_max_idle_per_host(32).build().unwrap_or_default();
    let url = Arc::new(url.to_owned());
    let header = Arc::new(header);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (client, url, header) = (client.clone(), Arc::clone(&url), Arc::clone(&header));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0;
            while start.elapsed() < duration {
                let t = Instant::now();
                let mut req = client.get(url.as_str());
                if let Some((k, v)) = header.as_ref() {
                    req = req.header(*k, v);
                }
                match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((lat, e)) = t.await {
            all.extend(lat);
            errors += e;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    LoadResult { ok: all.len(), rps: all.len() as f64 / elapsed, p99: percentile(&all, 0.99), errors }
}

/// The findings as a table for the terminal.
pub fn table(report: &Report) -> String {
    let mut out = String::new();
    for f in &report.findings {
        let verdict = if f.confirmed { "confirmed" } else { "NOT confirmed" };
        let _ = writeln!(out, "{}. {}\n   → {} | {} | {verdict}", f.number, f.claim, f.outcome, f.figure);
    }
    out
}

/// The findings as a markdown report: the claims, then the microservice designs side by side
/// with what the figures show.
pub fn markdown(report: &Report, opts: &LabOptions, machine: &str) -> String {
    let mut out = String::from("# Portcullis lab report\n\n");
    let _ = writeln!(
        out,
        "Produced by `portcullis lab --nodes {} --services {}` on {machine}. Every row was measured in \
         this run, on loopback, with real Portcullis processes, Redis, PostgreSQL and nginx. The nodes look \
         every session up in its store on every request (`store.session_cache = \"0s\"`), as the claims \
         describe sessions; in front of Redis Portcullis otherwise keeps a copy on each node for up to 5 s, \
         dropped everywhere at a logout through the feed (docs/CLUSTER.md).\n",
        opts.nodes, opts.services
    );
    out.push_str("| # | claim | measured | figure | verdict |\n|---|---|---|---|---|\n");
    for f in &report.findings {
        let verdict = if f.confirmed { "confirmed" } else { "not confirmed" };
        let _ = writeln!(out, "| {} | {} | {} | {} | {verdict} |", f.number, f.claim, f.outcome, f.figure);
    }
    let [a, b, c] = report.designs.as_slice() else { return out };
    let _ = writeln!(
        out,
        "\n## Microservices: one user request through a chain of {n} services\n\n\
         Rows 9 to 11 side by side. Each service is its own process (`portcullis lab-service`, \
         verifying with `portcullis-verify`), authenticates the request, then passes it on; the \
         figures are for the whole chain, under a closed-loop load of 16 keep-alive connections \
         for {load} s per design, in five rounds the designs take in turns (the median round's \
         requests/s and p99). Calls and store operations are what every Portcullis node \
         counted (`/metrics`) during that load, per user request; the services' calls to each other \
         ({hops} per request) are the same in every design. A logout is timed from the logout \
         request's start to the last service refusing, over {samples} logouts taken by node 0, \
         while the following services read the feed of the other nodes.\n\n\
         | design | requests/s | p99 | Portcullis calls / request | store operations / request | from a logout to the last service refusing |\n\
         |---|---|---|---|---|---|",
        n = opts.services,
        load = opts.load.as_secs(),
        hops = opts.services - 1,
        samples = opts.samples,
    );
    for d in &report.designs {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} | {:.2} | {:.2} | {} |",
            d.name,
            d.rps,
            ms(d.p99),
            d.portcullis_calls,
            d.store_operations,
            d.after_logout
        );
    }
    let times = |x: &Design, y: &Design| x.rps / y.rps.max(1.0);
    let _ = writeln!(
        out,
        "\nWhat this shows: asking Portcullis from every service costs {:.1} calls and {:.1} store \
         operations per user request, and that cost is what makes a logout visible on the next \
         request ({}). Verifying locally removes it ({:.2}× the requests/s of the session design without \
         the feed, {:.2}× with it) but, alone, leaves a logged-out token working until it expires \
         ({}). Following the feed keeps the local cost ({:.2} calls per request) and brings the \
         logout to every service in {}: the gap between the two JWT rows is the feed.",
        a.portcullis_calls,
        a.store_operations,
        a.after_logout,
        times(b, a),
        times(c, a),
        b.after_logout,
        c.portcullis_calls,
        c.after_logout,
    );
    out
}
