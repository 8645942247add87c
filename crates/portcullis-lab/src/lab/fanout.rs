//! Scenarios 9 to 11: microservices. One user request enters the first of a chain of N services
//! (each its own process, `portcullis lab-service`, verifying with `portcullis-verify`) and
//! travels down it; every service authenticates it first. The same processes serve the three
//! designs side by side, so the figures come from one run:
//!
//! - (a) a session cookie, and every service asks Portcullis (`GET /v1/verify`, through the
//!   balancer);
//! - (b) a JWT each service verifies alone, not following the feed;
//! - (c) a JWT each service verifies alone, following the revocation feed of a node other than
//!   the one that takes the logouts.
//!
//! For each: requests/s and p99 of the whole chain, the calls Portcullis answered and the store
//! operations it made per user request (read from every node's `/metrics`), and how long after
//! a logout the last service still accepted the credential.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{
    Client, Finding, LabError, LabOptions, LoadResult, Node, Setup, balancer, bearer, failed, load, ms, spread,
    start_nodes, wait_healthy,
};
use crate::procs::{Postgres, Proc, Redis, free_port};

/// The issuer every node signs as (their `public_url`).
const ISSUER: &str = "http://portcullis.lab";

/// One design's row of the side-by-side table.
#[derive(Debug, Clone)]
pub struct Design {
    pub name: &'static str,
    /// Whole chains per second, and the p99 of one.
    pub rps: f64,
    pub p99: Duration,
    /// Requests Portcullis answered, per user request (all nodes, `/metrics` scrapes left out).
    pub portcullis_calls: f64,
    /// Store operations Portcullis made, per user request (all nodes).
    pub store_operations: f64,
    /// From a logout to the last service refusing the credential.
    pub after_logout: String,
}

/// A service of the chain.
struct Service {
    _process: Proc,
    base: String,
}

async fn start_service(
    bin: &Path,
    lb: &str,
    feed: &str,
    next: Option<&str>,
    credentials: &(String, String),
) -> Result<Service, LabError> {
    let port = free_port()?;
    let mut command = Command::new(bin);
    command
        .args(["lab-service", "--listen", &format!("127.0.0.1:{port}"), "--issuer", ISSUER])
        .args(["--jwks-url", &format!("{lb}/.well-known/jwks.json"), "--verify-url", &format!("{lb}/v1/verify")])
        .args(["--feed-url", &format!("{feed}/v1/revocations/stream")])
        .env("PORTCULLIS_CLIENT_ID", &credentials.0)
        .env("PORTCULLIS_CLIENT_SECRET", &credentials.1)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(next) = next {
        command.args(["--next", next]);
    }
    let process = Proc::spawn(&mut command).map_err(|e| failed(format!("{}: {e}", bin.display())))?;
    let service = Service { _process: process, base: format!("http://127.0.0.1:{port}") };
    // Healthy once its following verifier has the snapshot.
    wait_healthy(&service.base, || "a service of the chain did not start (or hear the feed) within 30 s".into())
        .await?;
    Ok(service)
}

/// Registers the chain's service client with the CLI, as an operator would.
fn register_client(bin: &Path, config: &Path) -> Result<(String, String), LabError> {
    let out = Command::new(bin)
        .args(["client", "add", "lab chain", "--service", "--json", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .map_err(failed)?;
    if !out.status.success() {
        return Err(failed(format!("client add: {}", String::from_utf8_lossy(&out.stderr))));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(failed)?;
    match (v["client_id"].as_str(), v["client_secret"].as_str()) {
        (Some(id), Some(secret)) => Ok((id.to_owned(), secret.to_owned())),
        _ => Err(failed("client add printed no credentials")),
    }
}

/// Requests answered and store operations made, summed over every node's `/metrics`.
async fn counters(c: &Client, nodes: &[Node]) -> Result<(f64, f64), LabError> {
    let (mut calls, mut store) = (0.0, 0.0);
    for node in nodes {
        let text = c.http.get(format!("{}/metrics", node.base)).send().await.map_err(failed)?;
        let text = text.text().await.map_err(failed)?;
        for line in text.lines() {
            let value = || line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            if line.starts_with("portcullis_http_requests_total{") && !line.contains("route=\"/metrics\"") {
                calls += value();
            } else if line.starts_with("portcullis_store_operations_total{") {
                store += value();
            }
        }
    }
    Ok((calls, store))
}

/// Rounds each design's load is cut into, the designs taking turns, so that a machine whose
/// speed drifts during the run slows them alike.
const ROUNDS: u32 = 5;

/// One design's measured load through the whole chain, with what it cost Portcullis.
struct Measured {
    /// The median round's requests/s and p99.
    rps: f64,
    p99: Duration,
    errors: usize,
    /// Per user request, over every round.
    calls: f64,
    store: f64,
}

/// Loads each design's chain in turns ([`ROUNDS`] rounds of `total / ROUNDS` each).
async fn measure(
    c: &Client,
    nodes: &[Node],
    designs: &[(String, (&'static str, String))],
    total: Duration,
) -> Result<Vec<Measured>, LabError> {
    let mut rounds: Vec<Vec<LoadResult>> = designs.iter().map(|_| Vec::new()).collect();
    let mut cost = vec![(0.0, 0.0); designs.len()];
    for _ in 0..ROUNDS {
        for (i, (url, header)) in designs.iter().enumerate() {
            let (calls0, store0) = counters(c, nodes).await?;
            rounds[i].push(load(url, Some(header.clone()), total / ROUNDS).await);
            let (calls1, store1) = counters(c, nodes).await?;
            cost[i].0 += calls1 - calls0;
            cost[i].1 += store1 - store0;
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(rounds
        .into_iter()
        .zip(cost)
        .map(|(r, (calls, store))| {
            let ok = r.iter().map(|x| x.ok).sum::<usize>().max(1) as f64;
            Measured {
                rps: median(r.iter().map(|x| x.rps).collect()),
                p99: Duration::from_secs_f64(median(r.iter().map(|x| x.p99.as_secs_f64()).collect())),
                errors: r.iter().map(|x| x.errors).sum(),
                calls: calls / ok,
                store: store / ok,
            }
        })
        .collect())
}

/// Each service's `/{design}/check`: authentication alone, not passed on.
fn checks(services: &[Service], design: &str) -> Vec<String> {
    services.iter().map(|s| format!("{}/{design}/check", s.base)).collect()
}

pub(super) async fn run(
    opts: &LabOptions,
    dir: &Path,
    postgres: &Postgres,
    redis: &Redis,
    c: &Client,
) -> Result<(Vec<Finding>, Vec<Design>), LabError> {
    let setup =
        Setup { bin: &opts.portcullis, dir, users: postgres.url(), sessions: redis.url(), revocation: "replica" };
    let nodes = start_nodes(&setup, opts.nodes).await?;
    let lb = balancer(&nodes, false)?;
    let credentials = register_client(&opts.portcullis, &nodes[0].config)?;
    // Node 0 takes the logouts; the services follow the others, so every revocation crosses Redis.
    let mut services: Vec<Service> = Vec::new();
    for i in (0..opts.services).rev() {
        let feed = &nodes[1 + i % (nodes.len() - 1)].base;
        let next = services.last().map(|s| s.base.clone());
        services.push(start_service(&opts.portcullis, &lb.url(), feed, next.as_deref(), &credentials).await?);
    }
    services.reverse();
    let n = services.len();
    let entry = &services[0].base;
    let email = "chain@lab.test";
    c.register(&lb.url(), email).await?;

    // Throughput and cost: the three designs on the same processes, taking turns.
    let cookie = c.session(&lb.url(), email).await?;
    let token = bearer(&c.jwt(&lb.url(), email).await?);
    let mut chains = Vec::new();
    for (design, header) in
        [("session", ("cookie", cookie)), ("jwt", ("authorization", token.clone())), ("feed", ("authorization", token))]
    {
        let url = format!("{entry}/{design}/chain");
        if c.status(&url, (header.0, &header.1)).await != 200 {
            return Err(failed(format!("design {design}: the chain refused a fresh credential")));
        }
        chains.push((url, header));
    }
    let measured = measure(c, &nodes, &chains, opts.load).await?;

    // (a) Logouts with the session cookie: every service asks, so the next request is refused.
    let (session_checks, jwt_checks, feed_checks) =
        (checks(&services, "session"), checks(&services, "jwt"), checks(&services, "feed"));
    let mut session_delays = Vec::new();
    let mut first_round = 0;
    for _ in 0..opts.samples {
        let cookie = c.session(&nodes[0].base, email).await?;
        if c.accepted_by(&session_checks, ("cookie", &cookie)).await != n {
            return Err(failed("a fresh session was refused by a service"));
        }
        let start = Instant::now();
        c.sign_out(&nodes[0].base, ("cookie", &cookie)).await?;
        let (delay, asked) = c.until_refused(&session_checks, ("cookie", &cookie), start).await?;
        first_round += usize::from(asked == n);
        session_delays.push(delay);
    }

    // (b) and (c) on the same logouts: each token is refused by every following verifier, then
    // asked of the verifiers that do not follow the feed.
    let mut feed_delays = Vec::new();
    let mut still_accepted = 0;
    let mut lifetime = 0;
    for _ in 0..opts.samples {
        let login = c.jwt(&nodes[0].base, email).await?;
        lifetime = login["expires_in"].as_u64().unwrap_or(0);
        let auth = bearer(&login);
        if c.accepted_by(&feed_checks, ("authorization", &auth)).await != n {
            return Err(failed("a fresh token was refused by a following service"));
        }
        let start = Instant::now();
        c.sign_out(&nodes[0].base, ("authorization", &auth)).await?;
        feed_delays.push(c.until_refused(&feed_checks, ("authorization", &auth), start).await?.0);
        still_accepted += c.accepted_by(&jwt_checks, ("authorization", &auth)).await;
    }
    let samples = opts.samples;
    let mut designs = Vec::new();
    let mut findings = Vec::new();
    let names = [
        "(a) session cookie, every service asks Portcullis",
        "(b) JWT verified locally, no feed",
        "(c) JWT verified locally, following the feed",
    ];
    let after = [
        spread(&mut session_delays),
        format!("not before exp, {lifetime} s ({still_accepted} of {} checks after a logout accepted)", samples * n),
        spread(&mut feed_delays),
    ];
    for ((name, after), m) in names.into_iter().zip(after).zip(&measured) {
        designs.push(Design {
            name,
            rps: m.rps,
            p99: m.p99,
            portcullis_calls: m.calls,
            store_operations: m.store,
            after_logout: after,
        });
    }
    let cost = |d: &Design| {
        format!(
            "{:.0} req/s, p99 {}; {:.2} Portcullis calls and {:.2} store operations per user request",
            d.rps,
            ms(d.p99),
            d.portcullis_calls,
            d.store_operations
        )
    };
    let clean = measured.iter().all(|m| m.errors == 0);
    let (a, b, cc) = (&designs[0], &designs[1], &designs[2]);
    let feed_max = feed_delays.last().copied().unwrap_or_default();
    findings.push(Finding {
        number: 9,
        claim: format!(
            "A request fanning out to {n} services with a session cookie costs a call to Portcullis per service, and a logout is seen at once"
        ),
        outcome: cost(a),
        figure: format!("{}; {first_round} of {samples} logouts refused on the first request to each service", a.after_logout),
        confirmed: clean && a.portcullis_calls >= n as f64 - 0.05 && first_round == samples,
    });
    findings.push(Finding {
        number: 10,
        claim: format!(
            "JWTs verified locally by {n} services cost Portcullis nothing per request, and without the feed a logged-out token works until it expires"
        ),
        outcome: cost(b),
        figure: b.after_logout.clone(),
        confirmed: clean && b.portcullis_calls < 0.01 && still_accepted == samples * n,
    });
    findings.push(Finding {
        number: 11,
        claim: format!(
            "Following the revocation feed, {n} services still verify alone, and a logout reaches the last of them within milliseconds ({samples} logouts)"
        ),
        outcome: cost(cc),
        figure: cc.after_logout.clone(),
        confirmed: clean && cc.portcullis_calls < 0.01 && feed_max < Duration::from_secs(1),
    });
    Ok((findings, designs))
}
