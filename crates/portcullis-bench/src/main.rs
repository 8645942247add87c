//! `portcullis-bench`: what each way of staying logged in costs, measured in one run on one
//! machine, and written to `docs/BENCHMARKS.md` (with an SVG chart).
//!
//! Build with `cargo build --release -p portcullis-bench` (which also builds the anchors'
//! binary, `bench-anchors`, that `cargo run` would not), then run
//! `target/release/portcullis-bench --out docs/BENCHMARKS.md`. Needs `wrk`, `redis-server`,
//! PostgreSQL and nginx (Debian: `apt-get install wrk redis-server postgresql nginx-light`).
//!
//! It drives the server library and the lab from outside; nothing may depend on it.

mod instructions;
mod report;
mod wrk;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use portcullis_core::jwt::Algorithm;
use portcullis_core::{Password, PasswordHasher, SystemClock};
use portcullis_server::settings::{DEFAULT_REDIS_SESSION_CACHE, Revocation, Settings};
use portcullis_server::spawn::{Running, spawn};
use serde_json::{Value, json};

use crate::report::{Beside, Measured, Report};
use crate::wrk::{Load, Wrk};

/// The allocator of the `portcullis` binary (see its `main.rs`), so that the servers measured
/// here run as shipped; the anchors run on the system allocator (`bench-anchors`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PASSWORD: &str = "benchmark password, long enough";

/// Rounds of each side-by-side comparison at least: a pair's ratio moves by 10 % from round to
/// round here, so the median needs more of them than a floor-relative row.
const BESIDE_ROUNDS: usize = 6;

#[derive(Parser)]
struct Args {
    /// Seconds per load run.
    #[arg(long, default_value_t = 2)]
    seconds: u64,
    /// Rounds per configuration, each a floor run followed by a `/v1/me` run on the same server;
    /// the reported ratio is the median of the rounds' ratios.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Sessions created for the memory measurements.
    #[arg(long, default_value_t = 100_000)]
    sessions: usize,
    /// Where to write the markdown report (an SVG chart is written beside it).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Count instructions per request with callgrind (valgrind) for Portcullis' paths and the
    /// axum anchors, instead of the wrk run; with --out, the report's instruction section is
    /// replaced and the rest kept.
    #[arg(long)]
    instructions: bool,
    /// With --instructions: keep each target's callgrind dump in this directory (for
    /// `callgrind_annotate`), instead of a temporary one.
    #[arg(long, value_name = "DIR")]
    dumps: Option<PathBuf>,
    /// Internal: serve one target of the instruction count in this process.
    #[arg(long, hide = true)]
    serve_target: Option<String>,
    /// Internal: the served target's data directory.
    #[arg(long, hide = true)]
    serve_dir: Option<PathBuf>,
    /// Internal: the served target's session store instead of its own (a Redis URL).
    #[arg(long, hide = true)]
    serve_sessions: Option<String>,
    /// Internal: the served target's local session cache, in seconds.
    #[arg(long, hide = true, default_value_t = 0)]
    serve_session_cache: u64,
    /// Internal: measure the memory store in this (fresh) process and print bytes per session.
    #[arg(long, hide = true)]
    memory_probe: Option<usize>,
    /// Internal: measure the hashing pool's memory over this many verifications in this
    /// (fresh) process and print the resident bytes before and after, and the pool's size.
    #[arg(long, hide = true)]
    hashing_probe: Option<usize>,
}

/// How a server under test is configured.
#[derive(Clone)]
struct Config {
    name: String,
    sessions: String,
    session_cache: Duration,
    jwt: Option<(Algorithm, usize, Revocation)>,
}

struct Bench {
    args: Args,
    dir: tempfile::TempDir,
    redis: portcullis_lab::Redis,
    http: reqwest::Client,
}

impl Bench {
    fn duration(&self) -> Duration {
        Duration::from_secs(self.args.seconds)
    }

    async fn server(&self, cfg: &Config) -> Result<Running, String> {
        let mut s = Settings { data_dir: self.dir.path().join(format!("d{}", rand_suffix())), ..Settings::default() };
        s.store.sessions = cfg.sessions.clone();
        s.store.session_cache = Some(cfg.session_cache);
        if let Some((alg, cache, revocation)) = cfg.jwt {
            s.jwt.algorithm = alg;
            s.jwt.token_cache_size = cache;
            s.jwt.revocation = revocation;
        }
        spawn(s, Arc::new(SystemClock)).await.map_err(|e| e.to_string())
    }

    async fn credential(&self, base: &str, jwt: bool) -> Result<(&'static str, String), String> {
        let email = format!("bench{}@example.com", rand_suffix());
        let r = self
            .http
            .post(format!("{base}/v1/register"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await;
        r.map_err(|e| e.to_string())?;
        let mode = if jwt { "jwt" } else { "session" };
        let res = self
            .http
            .post(format!("{base}/v1/login"))
            .json(&json!({"email": email, "password": PASSWORD, "mode": mode}))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if jwt {
            let body: Value = res.json().await.map_err(|e| e.to_string())?;
            Ok(("Authorization", format!("Bearer {}", body["access_token"].as_str().unwrap_or(""))))
        } else {
            let cookie = res.headers().get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or("");
            Ok(("Cookie", cookie.split(';').next().unwrap_or("").to_owned()))
        }
    }

    fn load(&self, url: &str, headers: &[(&str, String)], watch: &[u32]) -> Result<Load, String> {
        Wrk { url, headers, connections: self.args.connections, duration: self.duration(), script: None, watch }.run()
    }

    /// Rounds of the baseline, then Portcullis, one after the other: `(baseline, ours)` each.
    fn alternate(
        &self,
        baseline: (&str, &[(&str, String)]),
        ours: (&str, &[(&str, String)]),
    ) -> Result<Vec<(Load, Load)>, String> {
        self.rounds_of(self.args.rounds.max(1), false, baseline, ours, &[])
    }

    /// A side-by-side comparison: at least [`BESIDE_ROUNDS`] rounds, each side first in turn,
    /// with the CPU time of the processes `watch` measured in each load.
    fn beside(
        &self,
        baseline: (&str, &[(&str, String)]),
        ours: (&str, &[(&str, String)]),
        watch: &[u32],
    ) -> Result<Vec<(Load, Load)>, String> {
        self.rounds_of(self.args.rounds.max(BESIDE_ROUNDS), true, baseline, ours, watch)
    }

    /// `rounds` rounds of a load on `baseline` and one on `ours`; the baseline goes first, or
    /// with `in_turns` only in every other round.
    fn rounds_of(
        &self,
        rounds: usize,
        in_turns: bool,
        baseline: (&str, &[(&str, String)]),
        ours: (&str, &[(&str, String)]),
        watch: &[u32],
    ) -> Result<Vec<(Load, Load)>, String> {
        let mut out = Vec::new();
        for round in 0..rounds {
            // In turns, so that whatever favours the first (or second) load of a pair favours
            // each side equally often.
            let (theirs, mine) = if !in_turns || round % 2 == 0 {
                let theirs = self.load(baseline.0, baseline.1, watch)?;
                (theirs, self.load(ours.0, ours.1, watch)?)
            } else {
                let mine = self.load(ours.0, ours.1, watch)?;
                (self.load(baseline.0, baseline.1, watch)?, mine)
            };
            if theirs.errors + mine.errors > 0 {
                return Err(format!(
                    "{} or {}: answers that were not 200: the load measured refusals",
                    baseline.0, ours.0
                ));
            }
            out.push((theirs, mine));
        }
        Ok(out)
    }
}

/// Portcullis beside its baselines (docs/BENCHMARKS.md, "Beside axum + tower-sessions, and
/// behind nginx"): an in-memory session beside axum + tower-sessions' `MemoryStore`, and the
/// forward-auth path through nginx with the shipped configuration beside the same nginx
/// proxying without authentication.
async fn beside(bench: &Bench) -> Result<Vec<Beside>, String> {
    // Portcullis in a process of its own, as the anchors are and as it ships: the `portcullis`
    // binary's allocator and runtime, with nothing else of this bench's in the process.
    let (_memory, base) = portcullis_process(bench, None)?;
    let cookie = [bench.credential(&base, false).await?];
    let me = format!("{base}/v1/me");
    let mut out = Vec::new();

    let ((anchor, anchor_cookie), _memory_anchor) = tower_sessions_anchor(bench, &[]).await?;
    let rounds = bench.beside((&format!("{anchor}/me"), &anchor_cookie), (&me, &cookie), &[])?;
    out.push(Beside {
        what: "session on memory, `GET /v1/me`".into(),
        baseline: "axum + tower-sessions 0.14 (`MemoryStore`), `GET /me`".into(),
        measured: Measured { name: "session, memory beside tower-sessions".into(), rounds },
        target: Some(1.0),
    });

    // On Redis: the anchor on tower-sessions-redis-store, beside Portcullis on the same Redis
    // as it ships (the local session cache on), and with the cache turned off.
    let redis = bench.redis.url();
    let ((anchor, anchor_cookie), _redis_anchor) = tower_sessions_anchor(bench, &[&redis]).await?;
    let default_cache = DEFAULT_REDIS_SESSION_CACHE.as_secs();
    for (cache, what, target) in [
        (
            default_cache,
            format!("session on Redis, as shipped (local cache {default_cache} s), `GET /v1/me`"),
            Some(1.3),
        ),
        (0, "session on Redis, `session_cache = \"0s\"`, `GET /v1/me`".into(), None),
    ] {
        let (_server, base) = portcullis_process(bench, Some((&redis, cache)))?;
        let cookie = [bench.credential(&base, false).await?];
        let rounds =
            bench.beside((&format!("{anchor}/me"), &anchor_cookie), (&format!("{base}/v1/me"), &cookie), &[])?;
        out.push(Beside {
            baseline: "axum + tower-sessions 0.14 on Redis (tower-sessions-redis-store 0.16), `GET /me`".into(),
            measured: Measured { name: what.clone(), rounds },
            what,
            target,
        });
    }

    let app = portcullis_lab::free_port().map_err(|e| e.to_string())?;
    let plain = portcullis_lab::free_port().map_err(|e| e.to_string())?;
    let nginx = portcullis_lab::Nginx::start(&forward_auth_conf(&base, app, plain)?).map_err(|e| e.to_string())?;
    let rounds = bench.beside(
        (&format!("http://127.0.0.1:{plain}/app"), &[]),
        (&format!("{}/app", nginx.url()), &cookie),
        &nginx.workers(),
    )?;
    out.push(Beside {
        what: "forward-auth through nginx (`deploy/nginx/forward-auth.conf`), session on memory".into(),
        baseline: "the same nginx proxying to the same application without authentication".into(),
        measured: Measured { name: "forward-auth beside plain nginx".into(), rounds },
        target: Some(0.6),
    });

    // What the design costs nginx itself: the same configuration with a check that does nothing
    // in place of Portcullis (nginx's own `return 200` with the three identity headers, in a
    // process of its own as Portcullis is). Portcullis cannot bring the ratio above this row by
    // costing less.
    let free_check = portcullis_lab::Nginx::start(
        "server {\n    listen 127.0.0.1:{port};\n    location / {\n        add_header X-Portcullis-User \
         01a24524-4153-72d2-826e-5749859a5854;\n        add_header X-Portcullis-Email bench@example.com;\n        \
         add_header X-Portcullis-Roles user;\n        return 200;\n    }\n}\n",
    )
    .map_err(|e| e.to_string())?;
    let (app, plain) = (
        portcullis_lab::free_port().map_err(|e| e.to_string())?,
        portcullis_lab::free_port().map_err(|e| e.to_string())?,
    );
    let nginx =
        portcullis_lab::Nginx::start(&forward_auth_conf(&free_check.url(), app, plain)?).map_err(|e| e.to_string())?;
    let rounds = bench.beside(
        (&format!("http://127.0.0.1:{plain}/app"), &[]),
        (&format!("{}/app", nginx.url()), &[]),
        &nginx.workers(),
    )?;
    out.push(Beside {
        what: "the same forward-auth configuration with a check that does nothing: nginx `return 200` (and the identity headers) in place of Portcullis".into(),
        baseline: "the same nginx proxying to the same application without authentication".into(),
        measured: Measured { name: "forward-auth, a check that does nothing, beside plain nginx".into(), rounds },
        target: None,
    });
    Ok(out)
}

/// A Portcullis server with memory sessions, or with `redis` (a URL and the local cache's
/// staleness in seconds), in a process of its own (this binary serving the instruction count's
/// session target): the process, which stops when dropped, and its base URL.
fn portcullis_process(bench: &Bench, redis: Option<(&str, u64)>) -> Result<(portcullis_lab::Proc, String), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = bench.dir.path().join(format!("p{}", rand_suffix()));
    let mut command = std::process::Command::new(exe);
    command.args(["--serve-target", instructions::Target::SessionMemory.name(), "--serve-dir"]).arg(&dir);
    if let Some((url, cache)) = redis {
        command.args(["--serve-sessions", url, "--serve-session-cache", &cache.to_string()]);
    }
    let (process, port) = instructions::spawn_server("portcullis", &mut command)?;
    Ok((process, format!("http://127.0.0.1:{port}")))
}

/// The axum + tower-sessions anchor (`bench-anchors`, with `extra` arguments: a Redis URL for
/// its Redis store), signed in: its address and the cookie of its session, and the process,
/// which stops when dropped.
async fn tower_sessions_anchor(
    bench: &Bench,
    extra: &[&str],
) -> Result<((String, [(&'static str, String); 1]), portcullis_lab::Proc), String> {
    let name = if extra.is_empty() { "axum-tower-sessions" } else { "axum-tower-sessions-redis" };
    let (proc, port) =
        instructions::spawn_server(name, Command::new(instructions::anchors_exe()?).arg(name).args(extra))?;
    let anchor = format!("http://127.0.0.1:{port}");
    let res = bench.http.get(format!("{anchor}/login")).send().await.map_err(|e| e.to_string())?;
    let set = res.headers().get("set-cookie").and_then(|v| v.to_str().ok()).ok_or("tower-sessions set no cookie")?;
    let cookie = [("Cookie", set.split(';').next().unwrap_or("").to_owned())];
    Ok(((anchor, cookie), proc))
}

/// The shipped forward-auth configuration for Portcullis at `portcullis` (`http://host:port`),
/// on nginx's `{port}`, with two more servers in the same nginx: the application (`return
/// 200`) on `app`, and the same application proxied without authentication on `plain`.
fn forward_auth_conf(portcullis: &str, app: u16, plain: u16) -> Result<String, String> {
    const SHIPPED: &str = include_str!("../../../deploy/nginx/forward-auth.conf");
    let portcullis = portcullis.trim_start_matches("http://");
    let mut conf = SHIPPED.to_owned();
    for (from, to) in [
        ("127.0.0.1:8080", portcullis.to_owned()),
        ("127.0.0.1:9000", format!("127.0.0.1:{app}")),
        ("listen 8090;", "listen 127.0.0.1:{port};".to_owned()),
    ] {
        if !conf.contains(from) {
            return Err(format!("deploy/nginx/forward-auth.conf no longer has {from:?}: update the bench"));
        }
        conf = conf.replace(from, &to);
    }
    Ok(format!(
        "{conf}\nserver {{\n    listen 127.0.0.1:{app};\n    location / {{ return 200 \"ok\"; }}\n}}\n\
         server {{\n    listen 127.0.0.1:{plain};\n    location / {{\n        proxy_set_header Host $host;\n        \
         proxy_http_version 1.1;\n        proxy_set_header Connection \"\";\n        proxy_pass http://protected_application;\n    }}\n}}\n"
    ))
}

fn rand_suffix() -> String {
    let mut b = [0u8; 6];
    portcullis_core::secret::fill_random(&mut b);
    portcullis_core::secret::b64(&b).replace(['-', '_'], "x")
}

fn me_configs(redis: &str) -> Vec<Config> {
    let session = |name: &str, sessions: &str, cache: u64| Config {
        name: name.into(),
        sessions: sessions.into(),
        session_cache: Duration::from_secs(cache),
        jwt: None,
    };
    let mut v = vec![
        session("session, memory", "memory", 0),
        session("session, SQLite", "sqlite", 0),
        session("session, Redis, no local cache", redis, 0),
        session("session, Redis (local cache, the default)", redis, DEFAULT_REDIS_SESSION_CACHE.as_secs()),
    ];
    for alg in Algorithm::ALL {
        for (cache, label) in [(10_000, "token cache"), (0, "no token cache")] {
            v.push(Config {
                name: format!("JWT {alg}, {label}"),
                sessions: "memory".into(),
                session_cache: Duration::ZERO,
                jwt: Some((alg, cache, Revocation::Replica)),
            });
        }
    }
    for (rev, label) in [(Revocation::Off, "off"), (Revocation::Strict, "strict (Redis)")] {
        v.push(Config {
            name: format!("JWT EdDSA, token cache, revocation {label}"),
            sessions: if rev == Revocation::Strict { redis.into() } else { "memory".into() },
            session_cache: Duration::ZERO,
            jwt: Some((Algorithm::EdDSA, 10_000, rev)),
        });
    }
    v
}

async fn run(args: Args) -> Result<(), String> {
    let redis = portcullis_lab::Redis::start().map_err(|e| e.to_string())?;
    let bench =
        Bench { args, dir: tempfile::tempdir().map_err(|e| e.to_string())?, redis, http: reqwest::Client::new() };
    let redis_url = bench.redis.url();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut report = Report::new(bench.args.connections, bench.args.seconds, bench.args.rounds.max(1), cores);

    // The floor: an unauthenticated endpoint of the same server, before and after.
    let floor_server = bench.server(&me_configs(&redis_url)[0]).await?;
    let floor_a = bench.load(&format!("{}/healthz", floor_server.base), &[], &[])?;
    eprintln!("floor: {:.0} req/s", floor_a.rps);

    for cfg in me_configs(&redis_url) {
        let server = bench.server(&cfg).await?;
        let cred = [bench.credential(&server.base, cfg.jwt.is_some()).await?];
        // The floor again, on this server, right before each round: the ratio compares like
        // with like even when the machine's speed drifts during the run.
        let rounds = bench
            .alternate((&format!("{}/healthz", server.base), &[]), (&format!("{}/v1/me", server.base), &cred))
            .map_err(|e| format!("{}: {e}", cfg.name))?;
        let measured = Measured { name: cfg.name.clone(), rounds };
        let (lo, hi) = measured.spread();
        eprintln!(
            "{}: {:.0} req/s, {:.2} of the floor ({lo:.2}–{hi:.2} over {} rounds), p99 {:?}",
            cfg.name,
            measured.load().rps,
            measured.ratio(),
            measured.rounds.len(),
            measured.load().p99
        );
        report.me.push(measured);
    }
    report.beside = beside(&bench).await?;
    eprint!("{}", report.beside_section());
    let floor_b = bench.load(&format!("{}/healthz", floor_server.base), &[], &[])?;
    report.floor = Load {
        rps: (floor_a.rps + floor_b.rps) / 2.0,
        p50: (floor_a.p50 + floor_b.p50) / 2,
        p99: (floor_a.p99 + floor_b.p99) / 2,
        errors: floor_a.errors + floor_b.errors,
        requests: floor_a.requests + floor_b.requests,
        watched_cpu: None,
    };

    // Logins against the Argon2 bound, and /v1/me while logins saturate the pool. The bound is
    // measured on every core at once, right before and right after the storms, so that it sees
    // the machine in the state the storms see it (all cores busy, the same moment's speed).
    let bound_before = argon2_bound(cores, Duration::from_secs(3)).await?;
    let login_server = bench.server(&me_configs(&redis_url)[0]).await?;
    // Many accounts, taken in turn: the throttle counts every attempt before it is checked, so
    // more than five logins in flight for one account from one address would be refused.
    let suffix = rand_suffix();
    let mut bodies = Vec::new();
    for i in 0..STORM_ACCOUNTS {
        let body = json!({"email": format!("storm{i}-{suffix}@example.com"), "password": PASSWORD});
        let res = bench
            .http
            .post(format!("{}/v1/register", login_server.base))
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if res.status() != reqwest::StatusCode::CREATED {
            return Err(format!("registering a storm account answered {}", res.status()));
        }
        bodies.push(format!("'{body}'"));
    }
    let script = bench.dir.path().join("login.lua");
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nlocal bodies = {{ {} }}\n\
             local n = 0\nrequest = function()\n  n = n + 1\n  return wrk.format(nil, nil, nil, bodies[(n % #bodies) + 1])\nend",
            bodies.join(", ")
        ),
    )
    .map_err(|e| e.to_string())?;
    let cookie = bench.credential(&login_server.base, false).await?;
    let storm_url = format!("{}/v1/login", login_server.base);
    let me_url = format!("{}/v1/me", login_server.base);
    // Storms run longer than the `/v1/me` rounds: a login takes tens of milliseconds, and the
    // probe needs a few hundred samples for its p99.
    let duration = bench.duration().max(Duration::from_secs(2)) * 3;
    let storm = |script: PathBuf| {
        let url = storm_url.clone();
        std::thread::spawn(move || {
            Wrk { url: &url, headers: &[], connections: 16, duration, script: Some(&script), watch: &[] }.run()
        })
    };
    // Logins/s with nothing else running: what the hashing pool delivers.
    let logins = storm(script.clone()).join().map_err(|_| "login storm thread failed".to_string())??;
    // The logins wrk left in flight still run to the end and count on the address until they
    // do (every attempt counts until it settles): let them finish before the next storm.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Then the same storm again, and what an ordinary request sees meanwhile: a paced probe
    // (one request every 5 ms on a keep-alive connection), not a second saturating load, which
    // would measure CPU contention between two load generators rather than the server.
    let running = storm(script);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = probe(&bench.http, &me_url, &cookie, duration.saturating_sub(Duration::from_millis(600))).await?;
    let probed = running.join().map_err(|_| "login storm thread failed".to_string())??;
    if logins.errors + probed.errors + during.errors > 0 {
        return Err(format!(
            "the login storm had {} refused logins and the probe {} failed requests",
            logins.errors + probed.errors,
            during.errors
        ));
    }
    let bound_after = argon2_bound(cores, Duration::from_secs(3)).await?;
    report.hash_time = (bound_before.0 + bound_after.0) / 2;
    report.argon2_bound = (bound_before.1 + bound_after.1) / 2.0;
    report.bound_samples = (bound_before.1, bound_after.1);
    report.logins = logins;
    report.logins_probed = probed;
    report.me_during_storm = during;
    eprintln!(
        "logins: {:.1}/s alone, {:.1}/s with the probe (bound {:.1}/s); /v1/me p99 during the storm {:?}",
        logins.rps, probed.rps, report.argon2_bound, during.p99
    );

    (report.propagation, report.service_propagation) = propagation(&bench).await?;
    report.memory_bytes = memory_probe(bench.args.sessions)?;
    report.hashing_memory = hashing_probe(HASHING_PROBE_VERIFICATIONS)?;
    report.redis_bytes = redis_per_session(&bench, bench.args.sessions.min(100_000)).await?;
    report.token_sizes = token_sizes();

    print!("{}", report.table());
    if let Some(out) = &bench.args.out {
        // The instruction count (`--instructions`) is a run of its own: its section stays.
        let kept = instructions::section_of(out);
        report.write(out)?;
        if let Some(section) = kept {
            instructions::write_into(out, &section)?;
        }
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

/// What Argon2 alone can do here: `cores` hashes at a time for `length`, on a pool of `cores`
/// threads. Returns one hash's time (while every core hashes) and the hashes per second, which
/// is cores ÷ that time.
async fn argon2_bound(cores: usize, length: Duration) -> Result<(Duration, f64), String> {
    let hasher = PasswordHasher::new(cores, cores).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..cores {
        let hasher = hasher.clone();
        tasks.push(tokio::spawn(async move {
            let (mut count, mut spent) = (0u32, Duration::ZERO);
            while started.elapsed() < length {
                let pw = Password::new(PASSWORD.into()).map_err(|e| e.to_string())?;
                let t = Instant::now();
                hasher.hash(pw).await.map_err(|e| e.to_string())?;
                spent += t.elapsed();
                count += 1;
            }
            Ok::<_, String>((count, spent))
        }));
    }
    let (mut count, mut spent) = (0u32, Duration::ZERO);
    for t in tasks {
        let (c, s) = t.await.map_err(|e| e.to_string())??;
        count += c;
        spent += s;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let one = spent / count.max(1);
    eprintln!("argon2: {count} hashes on {cores} threads in {elapsed:.1} s, one takes {one:?}");
    Ok((one, f64::from(count) / elapsed))
}

/// Revocation propagation across three nodes sharing Redis (and PostgreSQL for users), and to a
/// service following the feed of a node other than the one that took the logout.
async fn propagation(bench: &Bench) -> Result<(Vec<Duration>, Vec<Duration>), String> {
    let pg = portcullis_lab::Postgres::start().map_err(|e| e.to_string())?;
    let mut nodes = Vec::new();
    for i in 0..3 {
        let mut s = Settings { data_dir: bench.dir.path().join(format!("p{i}")), ..Settings::default() };
        s.store.users = pg.url();
        s.store.sessions = bench.redis.url();
        s.public_url = Some("http://portcullis.bench".parse().map_err(|e: url::ParseError| e.to_string())?);
        nodes.push(spawn(s, Arc::new(SystemClock)).await.map_err(|e| e.to_string())?);
    }
    let c = &bench.http;
    let email = "prop@example.com";
    c.post(format!("{}/v1/register", nodes[0].base))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let registered = nodes[0]
        .state
        .service
        .register_client(
            portcullis_service::Actor::Cli,
            "bench",
            portcullis_core::ClientKind::Service,
            &portcullis_core::ClientInfo::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let secret = registered.secret.map(|s| s.expose().to_owned()).unwrap_or_default();
    // The service follows node 2; the logouts are taken by node 0.
    let verifier = portcullis_verify::Verifier::builder("http://portcullis.bench")
        .jwks_url(format!("{}/.well-known/jwks.json", nodes[2].base))
        .feed_url(format!("{}/v1/revocations/stream", nodes[2].base))
        .follow_revocations(registered.client.id.to_string(), secret)
        .build()
        .map_err(|e| e.to_string())?;
    let connected = Instant::now();
    while !verifier.feed_state().is_some_and(|f| f.connected) {
        if connected.elapsed() > Duration::from_secs(10) {
            return Err("the bench's service never connected to the feed".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut delays = Vec::new();
    let mut to_service = Vec::new();
    for _ in 0..100 {
        let body: Value = c
            .post(format!("{}/v1/login", nodes[0].base))
            .json(&json!({"email": email, "password": PASSWORD, "mode": "jwt"}))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let token = body["access_token"].as_str().unwrap_or("").to_owned();
        verifier.verify(&token).await.map_err(|e| format!("the service refused a fresh token: {e}"))?;
        let auth = format!("Bearer {token}");
        for n in &nodes[1..] {
            c.get(format!("{}/v1/me", n.base))
                .header("authorization", &auth)
                .send()
                .await
                .map_err(|e| e.to_string())?;
        }
        let start = Instant::now();
        c.post(format!("{}/v1/logout", nodes[0].base))
            .header("authorization", &auth)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        // Time from the logout's start until the service refuses the token, in memory.
        let service = tokio::spawn({
            let verifier = verifier.clone();
            let token = token.clone();
            async move {
                while verifier.verify(&token).await.is_ok() {
                    if start.elapsed() > Duration::from_secs(5) {
                        return None;
                    }
                    tokio::task::yield_now().await;
                }
                Some(start.elapsed())
            }
        });
        // Time from the logout answer's start until both other nodes refuse.
        for n in &nodes[1..] {
            loop {
                let s = c
                    .get(format!("{}/v1/me", n.base))
                    .header("authorization", &auth)
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if s.status().as_u16() == 401 {
                    break;
                }
                if start.elapsed() > Duration::from_secs(5) {
                    return Err("revocation did not propagate within 5 s".into());
                }
            }
        }
        delays.push(start.elapsed());
        let reached = service.await.map_err(|e| e.to_string())?;
        to_service.push(reached.ok_or("a revocation did not reach the service within 5 s")?);
    }
    delays.sort();
    to_service.sort();
    Ok((delays, to_service))
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// Runs the memory-store measurement in a fresh process, so memory freed by the load runs
/// cannot hide the growth.
fn memory_probe(n: usize) -> Result<f64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out =
        std::process::Command::new(exe).args(["--memory-probe", &n.to_string()]).output().map_err(|e| e.to_string())?;
    String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|_| "the memory probe printed no figure".into())
}

/// Accounts the login storms take in turn (one in flight per account, well under the
/// throttle's five per account and address).
const STORM_ACCOUNTS: usize = 64;

/// Verifications the hashing-pool memory probe runs (the defect report's 30 logins).
const HASHING_PROBE_VERIFICATIONS: usize = 30;

/// Runs the hashing-pool measurement in a fresh process.
fn hashing_probe(n: usize) -> Result<report::HashingMemory, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .args(["--hashing-probe", &n.to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u64> = text.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    match v.as_slice() {
        [before, after, workers] => Ok(report::HashingMemory {
            verifications: n,
            before: *before,
            after: *after,
            workers: usize::try_from(*workers).unwrap_or(0),
        }),
        _ => Err("the hashing probe printed no figures".into()),
    }
}

/// Resident bytes with a fresh hashing pool that has hashed once, then after `n` verifications
/// spread over its threads; and the pool's size.
async fn hashing_memory(n: usize) -> Result<(u64, u64, usize), String> {
    use portcullis_core::{Password, PasswordHasher};
    let hasher = PasswordHasher::with_default_size().map_err(|e| e.to_string())?;
    let pw = Password::new("correct horse battery staple".into()).map_err(|e| e.to_string())?;
    let hash = hasher.hash(pw.clone()).await.map_err(|e| e.to_string())?;
    let before = resident_bytes();
    let checks = (0..n).map(|_| hasher.verify_or_dummy(pw.clone(), Some(hash.clone())));
    for ok in futures_util::future::join_all(checks).await {
        if !ok.map_err(|e| e.to_string())? {
            return Err("a verification failed".into());
        }
    }
    Ok((before, resident_bytes(), hasher.workers()))
}

/// Bytes of process memory per live session in the memory store.
async fn memory_per_session(n: usize) -> f64 {
    use portcullis_core::{AuthMode, ClientInfo, SessionPolicy, SessionToken, Timestamp, UserId};
    use portcullis_store::SessionStore;
    let store = portcullis_store::memory::MemorySessionStore::new();
    let policy = SessionPolicy {
        idle_timeout: Duration::from_secs(1800),
        absolute_timeout: Duration::from_secs(43200),
        refresh_ttl: Duration::from_secs(86400),
    };
    let now = Timestamp::from_unix_millis(1_800_000_000_000);
    let users: Vec<UserId> = (0..n / 4 + 1).map(|_| UserId::generate()).collect();
    let before = resident_bytes();
    for i in 0..n {
        let client = ClientInfo {
            ip: Some("203.0.113.7".into()),
            user_agent: Some("Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0".into()),
        };
        let r = policy.new_record(&SessionToken::generate(), users[i / 4].clone(), AuthMode::Session, now, client);
        let _ = store.create(&r).await;
    }
    let after = resident_bytes();
    std::hint::black_box(&store);
    after.saturating_sub(before) as f64 / n as f64
}

/// Bytes of Redis memory per session (records, index and expiry entries).
async fn redis_per_session(bench: &Bench, n: usize) -> Result<f64, String> {
    use portcullis_core::{AuthMode, ClientInfo, SessionPolicy, SessionToken, UserId};
    use portcullis_store::SessionStore;
    let used = || -> Result<u64, String> {
        let info = bench.redis.cli(&["INFO", "memory"]).map_err(|e| e.to_string())?;
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or("no used_memory".into())
    };
    let store = Arc::new(
        portcullis_store::redis::RedisStore::connect(&bench.redis.url(), Arc::new(SystemClock))
            .await
            .map_err(|e| e.to_string())?,
    );
    let _ = bench.redis.cli(&["FLUSHALL"]);
    let before = used()?;
    let policy = SessionPolicy {
        idle_timeout: Duration::from_secs(1800),
        absolute_timeout: Duration::from_secs(43200),
        refresh_ttl: Duration::from_secs(86400),
    };
    let now = portcullis_core::Clock::now(&SystemClock);
    let mut tasks = Vec::new();
    for t in 0..32 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let user = UserId::generate();
            for i in (t..n).step_by(32) {
                let client = ClientInfo {
                    ip: Some("203.0.113.7".into()),
                    user_agent: Some("Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0".into()),
                };
                let owner = if i % 4 == 0 { UserId::generate() } else { user.clone() };
                let r = policy.new_record(&SessionToken::generate(), owner, AuthMode::Session, now, client);
                let _ = store.create(&r).await;
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())?;
    }
    Ok(used()?.saturating_sub(before) as f64 / n as f64)
}

/// Sizes of a typical access token per algorithm.
fn token_sizes() -> Vec<(Algorithm, usize)> {
    use portcullis_core::jwt::{AccessClaims, Audience, SigningKey, issue};
    let claims = AccessClaims {
        iss: "https://auth.example.com".into(),
        sub: "01a202d8-0132-7384-aa33-80652f09bd87".into(),
        aud: Audience::One("https://auth.example.com".into()),
        exp: 1_800_000_900,
        iat: 1_800_000_000,
        nbf: Some(1_800_000_000),
        jti: "Kwctw1pYAOYm1EUnUgazxw".into(),
        sid: "Xkt94BVaydO6dkymfVo7DQ".into(),
        client_id: "portcullis".into(),
        roles: vec!["user".into()],
        email: "alice@example.com".into(),
        scope: String::new(),
        amr: vec!["pwd".into()],
    };
    Algorithm::ALL
        .into_iter()
        .filter_map(|alg| {
            let key = SigningKey::generate(alg).ok()?;
            issue(&key, &claims).ok().map(|t| (alg, t.len()))
        })
        .collect()
}

/// Sequential GETs every 5 ms for `length`: latency percentiles of an ordinary request.
async fn probe(http: &reqwest::Client, url: &str, header: &(&str, String), length: Duration) -> Result<Load, String> {
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut latencies, mut errors) = (Vec::new(), 0u64);
    while started.elapsed() < length.max(Duration::from_secs(1)) {
        tick.tick().await;
        let t = Instant::now();
        match http.get(url).header(header.0, header.1.as_str()).send().await {
            Ok(res) if res.status().is_success() => {
                let _ = res.bytes().await;
                latencies.push(t.elapsed());
            }
            _ => errors += 1,
        }
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default();
    let requests = latencies.len() as u64;
    Ok(Load {
        rps: requests as f64 / started.elapsed().as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
        errors,
        requests,
        watched_cpu: None,
    })
}

/// `--instructions`: every target counted, printed, and written into the report.
fn count_instructions(out: Option<&std::path::Path>, dumps: Option<&std::path::Path>) -> Result<(), String> {
    if !instructions::available() {
        eprintln!("!!! SKIPPED the instruction count: valgrind (with callgrind_control) is not installed !!!");
        return Ok(());
    }
    let temporary = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = match dumps {
        Some(d) => {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
            d
        }
        None => temporary.path(),
    };
    let mut counted = Vec::new();
    for target in instructions::Target::ALL {
        let n = instructions::count(target, dir)?;
        eprintln!("{}: {:.0} instructions per request", target.name(), n);
        counted.push((target, n));
    }
    let section = instructions::section(&counted);
    print!("{section}");
    if let Some(path) = out {
        instructions::write_into(path, &section)?;
        println!("written into {}", path.display());
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(n) = args.hashing_probe {
        return match rt.block_on(hashing_memory(n.max(1))) {
            Ok((before, after, workers)) => {
                println!("{before} {after} {workers}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    if let Some(name) = &args.serve_target {
        let dir = args.serve_dir.clone().unwrap_or_else(std::env::temp_dir);
        return finish(match instructions::Target::parse(name) {
            Some(target) => {
                let store = args.serve_sessions.clone().map(|url| (url, Duration::from_secs(args.serve_session_cache)));
                rt.block_on(instructions::serve(target, &dir, store))
            }
            None => Err(format!("no target {name}")),
        });
    }
    if args.instructions {
        return finish(count_instructions(args.out.as_deref(), args.dumps.as_deref()));
    }
    if let Some(n) = args.memory_probe {
        println!("{:.0}", rt.block_on(memory_per_session(n.max(1))));
        return std::process::ExitCode::SUCCESS;
    }
    finish(rt.block_on(run(args)))
}

/// The exit status of a mode, with its error on standard error.
fn finish(result: Result<(), String>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
