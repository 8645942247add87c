//! The report: a table for the terminal, and `BENCHMARKS.md` with an SVG chart beside it.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;
use portcullis_core::jwt::Algorithm;

use crate::wrk::Load;

/// One configuration: rounds of (`GET /healthz` on its server, then `GET /v1/me` on it).
pub struct Measured {
    pub name: String,
    pub rounds: Vec<(Load, Load)>,
}

impl Measured {
    fn ratios(&self) -> Vec<f64> {
        let mut r: Vec<f64> = self.rounds.iter().map(|(floor, me)| me.rps / floor.rps.max(1.0)).collect();
        r.sort_by(f64::total_cmp);
        r
    }

    /// The median of the rounds' ratios to their floors.
    pub fn ratio(&self) -> f64 {
        median(self.ratios()).unwrap_or(0.0)
    }

    /// The lowest and highest ratio over the rounds.
    pub fn spread(&self) -> (f64, f64) {
        let r = self.ratios();
        (r.first().copied().unwrap_or(0.0), r.last().copied().unwrap_or(0.0))
    }

    fn median_by_rps(loads: impl Iterator<Item = Load>) -> Load {
        let mut v: Vec<Load> = loads.collect();
        v.sort_by(|a, b| a.rps.total_cmp(&b.rps));
        v.get(v.len() / 2).copied().unwrap_or_default()
    }

    /// The median `/v1/me` round (by throughput).
    pub fn load(&self) -> Load {
        Self::median_by_rps(self.rounds.iter().map(|r| r.1))
    }

    /// The median floor round.
    pub fn floor(&self) -> Load {
        Self::median_by_rps(self.rounds.iter().map(|r| r.0))
    }

    /// The median CPU time per request of the watched processes under the floor (baseline)
    /// loads and under the measured ones, where every round measured it.
    pub fn watched(&self) -> Option<(Duration, Duration)> {
        let side = |load: fn(&(Load, Load)) -> Load| -> Option<Duration> {
            let ns = self.rounds.iter().map(|r| Some(load(r).watched_cpu?.as_nanos() as f64)).collect::<Option<_>>()?;
            Some(Duration::from_nanos(median(ns)?.round() as u64))
        };
        Some((side(|r| r.0)?, side(|r| r.1)?))
    }
}

/// The median of `v` (of an even count, the mean of the middle two); `None` when it is empty.
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 0 => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        n => Some(v[n / 2]),
    }
}

/// A Portcullis path beside a baseline, in alternating rounds: each round is (the baseline, then
/// Portcullis), with the same wrk settings; the ratio is Portcullis' requests/s over the
/// baseline's.
pub struct Beside {
    pub what: String,
    pub baseline: String,
    pub measured: Measured,
    /// The lowest ratio the target accepts, where there is one.
    pub target: Option<f64>,
}

pub struct Report {
    pub beside: Vec<Beside>,
    pub connections: usize,
    pub seconds: u64,
    pub rounds: usize,
    /// The cores of this machine, which bound the hashing.
    pub cores: usize,
    pub floor: Load,
    pub me: Vec<Measured>,
    pub hash_time: Duration,
    pub argon2_bound: f64,
    /// The bound as measured before and after the storms.
    pub bound_samples: (f64, f64),
    /// The login storm alone.
    pub logins: Load,
    /// The same storm again, while the probe runs.
    pub logins_probed: Load,
    pub me_during_storm: Load,
    pub propagation: Vec<Duration>,
    /// From a logout on one node to a service following another node's feed refusing the token.
    pub service_propagation: Vec<Duration>,
    pub memory_bytes: f64,
    pub redis_bytes: f64,
    pub hashing_memory: HashingMemory,
    pub token_sizes: Vec<(Algorithm, usize)>,
}

/// Resident memory of a fresh process with a hashing pool: after its first hash, and after
/// `verifications` more spread over its `workers` threads.
#[derive(Debug, Clone, Copy, Default)]
pub struct HashingMemory {
    pub verifications: usize,
    pub before: u64,
    pub after: u64,
    pub workers: usize,
}

impl HashingMemory {
    fn mib(bytes: u64) -> f64 {
        bytes as f64 / (1024.0 * 1024.0)
    }

    /// The markdown row.
    fn row(&self) -> String {
        format!(
            "| hashing pool ({} threads): process memory after its first hash → after {} more verifications | {:.1} MiB → {:.1} MiB (bound: one 19 MiB buffer per thread) |",
            self.workers,
            self.verifications,
            Self::mib(self.before),
            Self::mib(self.after)
        )
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

/// The target ratio to the floor, where the issue sets one.
fn target(name: &str) -> Option<f64> {
    match name {
        "session, memory" => Some(0.8),
        "session, SQLite" => Some(0.6),
        "session, Redis (local cache, the default)" => Some(0.7),
        n if n.starts_with("JWT ") && n.ends_with(", token cache") => Some(0.8),
        _ => None,
    }
}

impl Report {
    pub fn new(connections: usize, seconds: u64, rounds: usize, cores: usize) -> Self {
        Self {
            beside: Vec::new(),
            connections,
            seconds,
            rounds,
            cores,
            floor: Load::default(),
            me: Vec::new(),
            hash_time: Duration::ZERO,
            argon2_bound: 0.0,
            bound_samples: (0.0, 0.0),
            logins: Load::default(),
            logins_probed: Load::default(),
            me_during_storm: Load::default(),
            propagation: Vec::new(),
            service_propagation: Vec::new(),
            memory_bytes: 0.0,
            redis_bytes: 0.0,
            hashing_memory: HashingMemory::default(),
            token_sizes: Vec::new(),
        }
    }

    /// The side-by-side table: Portcullis beside the anchor and behind nginx.
    pub fn beside_section(&self) -> String {
        if self.beside.is_empty() {
            return String::new();
        }
        let mut md = String::from(
            "\n## Beside axum + tower-sessions, and behind nginx\n\n\
             Users see absolute requests/s, so here Portcullis is measured beside a baseline rather than its own \
             floor: each row alternates rounds of the baseline and of Portcullis with the same wrk settings, at \
             least six, with the baseline first in every other round. The ratio is Portcullis' requests/s over \
             the baseline's: the median of the rounds (of an even count, the mean of the middle two), with the \
             lowest and highest beside it. The anchor is a separate process (`bench-anchors`) on the system \
             allocator, as a plain axum user runs it; Portcullis runs in a process of its own too, as the \
             `portcullis` binary ships (mimalloc).\n\n\
             | Portcullis | req/s | baseline | req/s | ratio | rounds | target |\n|---|---|---|---|---|---|---|\n",
        );
        for b in &self.beside {
            let (lo, hi) = b.measured.spread();
            let ratio = b.measured.ratio();
            let target = match b.target {
                Some(t) if ratio >= t => format!("≥ {t} met"),
                Some(t) => format!("≥ {t} **missed**"),
                None => "—".into(),
            };
            let _ = writeln!(
                md,
                "| {} | {:.0} | {} | {:.0} | {ratio:.2} | {lo:.2}–{hi:.2} | {target} |",
                b.what,
                b.measured.load().rps,
                b.baseline,
                b.measured.floor().rps,
            );
        }
        let watched: Vec<_> = self.beside.iter().filter_map(|b| Some((b, b.measured.watched()?))).collect();
        if !watched.is_empty() {
            md.push_str(
                "\nnginx's own CPU time per request in the same rounds (its worker's time on a CPU over each \
                 load, from `/proc`; the median of the rounds). nginx's one worker is what the forward-auth rows \
                 wait on, so the last column, the baseline's time over the row's, is the ratio the row could reach \
                 if its check cost nothing and nginx had a core to itself in both loads:\n\n\
                 | row | nginx µs/request, baseline | nginx µs/request, the row | at most |\n|---|---|---|---|\n",
            );
            for (b, (baseline, row)) in watched {
                let _ = writeln!(
                    md,
                    "| {} | {:.1} | {:.1} | {:.2} |",
                    b.what,
                    baseline.as_secs_f64() * 1e6,
                    row.as_secs_f64() * 1e6,
                    baseline.as_secs_f64() / row.as_secs_f64().max(1e-9),
                );
            }
        }
        md
    }

    fn verdict(&self, m: &Measured) -> String {
        match target(&m.name) {
            Some(t) if m.ratio() >= t => format!("≥ {t} met"),
            Some(t) => format!("≥ {t} **missed**"),
            None => "—".into(),
        }
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{:<48} {:>10} {:>7} {:>10} {:>10}", "GET /v1/me", "req/s", "×floor", "p50", "p99");
        let _ = writeln!(
            out,
            "{:<48} {:>10.0} {:>7.2} {:>10} {:>10}",
            "floor: GET /healthz",
            self.floor.rps,
            1.0,
            ms(self.floor.p50),
            ms(self.floor.p99)
        );
        for m in &self.me {
            let me = m.load();
            let _ = writeln!(
                out,
                "{:<48} {:>10.0} {:>7.2} {:>10} {:>10}  {}",
                m.name,
                me.rps,
                m.ratio(),
                ms(me.p50),
                ms(me.p99),
                self.verdict(m)
            );
        }
        let _ = writeln!(
            out,
            "logins: {:.1}/s alone and {:.1}/s with the probe, against an Argon2 bound of {:.1}/s ({:.2}, {:.2}); \
             one hash {}; /v1/me p99 during the storm {}",
            self.logins.rps,
            self.logins_probed.rps,
            self.argon2_bound,
            self.logins.rps / self.argon2_bound.max(0.001),
            self.logins_probed.rps / self.argon2_bound.max(0.001),
            ms(self.hash_time),
            ms(self.me_during_storm.p99)
        );
        let p = &self.propagation;
        let _ = writeln!(
            out,
            "revocation propagation (3 nodes, {} logouts): p50 {} p99 {} max {}",
            p.len(),
            ms(percentile(p, 0.5)),
            ms(percentile(p, 0.99)),
            ms(p.last().copied().unwrap_or_default())
        );
        let s = &self.service_propagation;
        let _ = writeln!(
            out,
            "revocation propagation to a service following the feed ({} logouts): p50 {} p99 {} max {}",
            s.len(),
            ms(percentile(s, 0.5)),
            ms(percentile(s, 0.99)),
            ms(s.last().copied().unwrap_or_default())
        );
        let _ = writeln!(
            out,
            "memory per session: {:.0} B in the memory store, {:.0} B in Redis",
            self.memory_bytes, self.redis_bytes
        );
        let h = &self.hashing_memory;
        let _ = writeln!(
            out,
            "hashing pool ({} threads): {:.1} MiB after one hash, {:.1} MiB after {} more",
            h.workers,
            HashingMemory::mib(h.before),
            HashingMemory::mib(h.after),
            h.verifications
        );
        for (alg, size) in &self.token_sizes {
            let _ = writeln!(out, "access token, {alg}: {size} bytes");
        }
        out
    }

    fn machine(&self) -> String {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines().find_map(|l| {
                    l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
                })
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m.lines().find_map(|l| l.strip_prefix("MemTotal:").map(|v| v.trim().to_owned())))
            .unwrap_or_default();
        format!("{} cores ({cpu}), {mem} of memory, Linux", self.cores)
    }

    fn chart(&self, path: &Path) -> Result<(), String> {
        let rows: Vec<(&str, f64)> = std::iter::once(("floor: /healthz", 1.0))
            .chain(self.me.iter().map(|m| (m.name.as_str(), m.ratio())))
            .collect();
        let height = 40 + 26 * rows.len() as u32;
        let root = SVGBackend::new(path, (900, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let max = rows.iter().map(|r| r.1).fold(1.0_f64, f64::max) * 1.1;
        let label_w = 330;
        for (i, (name, ratio)) in rows.iter().enumerate() {
            let y = 20 + 26 * i as i32;
            let w = ((900 - label_w - 80) as f64 * ratio / max) as i32;
            let color = if i == 0 { RGBColor(120, 120, 120) } else { RGBColor(52, 101, 164) };
            root.draw(&Text::new(name.to_string(), (10, y + 4), ("sans-serif", 14).into_font()))
                .map_err(|e| e.to_string())?;
            root.draw(&Rectangle::new([(label_w, y), (label_w + w, y + 18)], color.filled()))
                .map_err(|e| e.to_string())?;
            root.draw(&Text::new(format!("{ratio:.2}×"), (label_w + w + 6, y + 4), ("sans-serif", 13).into_font()))
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())
    }

    /// The median ratio to the floor of the configuration with this name.
    fn ratio_of(&self, name: &str) -> Option<f64> {
        self.me.iter().find(|m| m.name == name).map(Measured::ratio)
    }

    /// What the figures of this run say, in words computed from them (not written in advance).
    fn conclusions(&self) -> String {
        let mut md = String::from("## What this run says when choosing\n\n");
        let r = |name: &str| self.ratio_of(name).unwrap_or(0.0);
        let compare = |a: f64, b: f64| {
            if (a - b).abs() < 0.05 {
                "about as fast as"
            } else if a > b {
                "faster than"
            } else {
                "slower than"
            }
        };
        let mem = r("session, memory");
        let cached: Vec<(Algorithm, f64)> =
            Algorithm::ALL.into_iter().map(|a| (a, r(&format!("JWT {a}, token cache")))).collect();
        let lo = cached.iter().map(|c| c.1).fold(f64::INFINITY, f64::min);
        let hi = cached.iter().map(|c| c.1).fold(0.0, f64::max);
        let mean = cached.iter().map(|c| c.1).sum::<f64>() / cached.len().max(1) as f64;
        md.push_str(
            "Differences smaller than a configuration's spread over its rounds (the table's \"rounds\" column) \
             are noise of this shared machine, not findings.\n\n",
        );
        let verdict = if (mem - mean).abs() < 0.1 {
            "With the caches, the two ways cost about the same."
        } else if mem > mean {
            "With the caches, an in-memory session is cheaper than a cached JWT."
        } else {
            "With the caches, a cached JWT is cheaper than an in-memory session."
        };
        let _ = writeln!(
            md,
            "- **{verdict}** An in-memory session check runs at {mem:.2}× the floor and a JWT check with the \
             verified-token cache at {lo:.2}–{hi:.2}×. Either way the HTTP request itself costs more than the \
             check: the in-memory session pays a SHA-256 of the presented secret, a store read and a user \
             lookup; the cached JWT a cache lookup and the revocation checks."
        );
        let mut uncached: Vec<(Algorithm, f64)> =
            Algorithm::ALL.into_iter().map(|a| (a, r(&format!("JWT {a}, no token cache")))).collect();
        uncached.sort_by(|a, b| b.1.total_cmp(&a.1));
        let list: Vec<String> = uncached.iter().map(|(a, x)| format!("{a} {x:.2}×")).collect();
        let slower: Vec<String> =
            uncached.iter().filter(|(_, x)| mem - x >= 0.05).map(|(a, _)| a.to_string()).collect();
        let _ = writeln!(
            md,
            "- **Without the token cache, the signature is the cost.** Verifying on every request gives, cheapest \
             first: {}. {} The cache makes repeated requests with the same token cheap while expiry and \
             revocation are still checked on every request.",
            list.join(", "),
            match slower.len() {
                0 => format!("None of them is slower than an in-memory session ({mem:.2}×) here."),
                n if n == uncached.len() => {
                    format!("Every one of them is slower than an in-memory session ({mem:.2}×) here.")
                }
                _ => format!("Slower than an in-memory session ({mem:.2}×) here: {}.", slower.join(", ")),
            }
        );
        let (sqlite, redis, redis_cached) =
            (r("session, SQLite"), r("session, Redis, no local cache"), r("session, Redis (local cache, the default)"));
        let _ = writeln!(
            md,
            "- **A store lookup per request is what makes sessions cost.** SQLite sessions run at {sqlite:.2}× the \
             floor and Redis sessions without the local cache at {redis:.2}× (a network round trip per request); \
             the local cache, on by default in front of Redis (a copy at most 5 s old, dropped on every node at \
             a logout through the feed), brings Redis to {redis_cached:.2}×, {} an in-memory session.",
            compare(redis_cached, mem)
        );
        let (off, replica, strict) = (
            r("JWT EdDSA, token cache, revocation off"),
            r("JWT EdDSA, token cache"),
            r("JWT EdDSA, token cache, revocation strict (Redis)"),
        );
        let p99 = percentile(&self.propagation, 0.99);
        let _ = writeln!(
            md,
            "- **Revocation does not need a lookup per request.** With EdDSA and the token cache: `off` (a \
             logged-out token works until `exp`) {off:.2}×, `replica` (the default; logouts pushed to every node, \
             p99 {} across three nodes) {replica:.2}×, `strict` (the session record looked up in Redis on every \
             request) {strict:.2}×.",
            ms(p99)
        );
        let _ = writeln!(
            md,
            "- **Logins are bounded by Argon2 by design.** One hash takes {} with every core hashing, so this \
             machine does about {:.0} logins/s at most (measured {:.0}/s before the storms and {:.0}/s after); \
             the hashing pool delivered {:.0}/s, and ordinary requests stayed fast meanwhile (p99 {} during \
             the storm), because hashes queue on their own low-priority threads.",
            ms(self.hash_time),
            self.argon2_bound,
            self.bound_samples.0,
            self.bound_samples.1,
            self.logins.rps,
            ms(self.me_during_storm.p99)
        );
        md
    }

    pub fn write(&self, out: &Path) -> Result<(), String> {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let svg = out.with_file_name("bench-throughput.svg");
        self.chart(&svg)?;
        let p = &self.propagation;
        let mut md = String::from("# Benchmarks: what each way of staying logged in costs\n\n");
        let _ = writeln!(
            md,
            "Generated by `target/release/portcullis-bench --out docs/BENCHMARKS.md` (after `cargo build --release -p portcullis-bench`) on {}. \
             Load comes from `wrk` (a separate process, {} keep-alive connections) against a Portcullis server in \
             the bench process; the machine is shared by both, so absolute figures drift between runs and \
             machines — the ratios to the floor are the figures to compare. Each configuration runs on its own \
             server, in {} rounds of {} s: `GET /healthz` on that server (its floor), then `GET /v1/me`. The ratio \
             is the median of the rounds' ratios, and the range beside it is the lowest and highest round; \
             req/s, p50 and p99 are from the median round. A run in which any `/v1/me` answer is not `200` \
             stops the bench.\n",
            self.machine(),
            self.connections,
            self.rounds,
            self.seconds
        );
        md.push_str("## Authenticated `GET /v1/me`\n\n![throughput relative to the floor](bench-throughput.svg)\n\n");
        md.push_str(
            "| configuration | req/s | its floor, req/s | × floor | rounds | p50 | p99 | target |\n\
             |---|---|---|---|---|---|---|---|\n",
        );
        let _ = writeln!(
            md,
            "| floor: `GET /healthz` (no authentication), first server, before and after | {:.0} | | 1.00 | | {} | {} | |",
            self.floor.rps,
            ms(self.floor.p50),
            ms(self.floor.p99)
        );
        for m in &self.me {
            let ((lo, hi), me) = (m.spread(), m.load());
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.0} | {:.2} | {lo:.2}–{hi:.2} | {} | {} | {} |",
                m.name,
                me.rps,
                m.floor().rps,
                m.ratio(),
                ms(me.p50),
                ms(me.p99),
                self.verdict(m)
            );
        }
        md.push_str(&self.beside_section());
        let cores = self.cores;
        let bound = self.argon2_bound.max(0.001);
        let _ = writeln!(
            md,
            "\n## Logins\n\nOne Argon2id hash (m = 19 MiB, t = 2, p = 1) takes {} here while every core hashes (measured \
             for 3 s on all {cores} cores right before the storms and again right after: {:.1}/s and {:.1}/s; the \
             mean of the two), so {cores} cores bound logins at **{:.1}/s**. A storm of 16 connections logging in (64 accounts in turn, throttling on) reaches **{:.1} logins/s** ({:.2} of the bound; \
             target ≥ 0.9). The same storm again, with a paced probe beside it (one `GET /v1/me`, session on \
             memory, every 5 ms, on its own keep-alive connection): {:.1} logins/s ({:.2} of the bound), and the \
             probe's p50 **{}**, p99 **{}** (target < 5 ms). The probe is paced rather than a second saturating \
             load, which would measure two load generators fighting for the same two cores rather than the \
             server.\n",
            ms(self.hash_time),
            self.bound_samples.0,
            self.bound_samples.1,
            self.argon2_bound,
            self.logins.rps,
            self.logins.rps / bound,
            self.logins_probed.rps,
            self.logins_probed.rps / bound,
            ms(self.me_during_storm.p50),
            ms(self.me_during_storm.p99)
        );
        let _ = writeln!(
            md,
            "## Revocation propagation\n\nThree nodes sharing Redis; a JWT logout on one node, then both others polled \
             until they refuse the token ({} logouts): p50 **{}**, p99 **{}**, max **{}** (target p99 ≤ 50 ms). The \
             time includes the logout request itself.\n",
            p.len(),
            ms(percentile(p, 0.5)),
            ms(percentile(p, 0.99)),
            ms(p.last().copied().unwrap_or_default())
        );
        let s = &self.service_propagation;
        let _ = writeln!(
            md,
            "To a service: a `portcullis-verify` verifier following the revocation feed of the third node \
             (`follow_revocations`), polled in memory from the logout's start on the first node until it refuses \
             the token ({} logouts): p50 **{}**, p99 **{}**, max **{}**. Without the feed the same service accepts \
             the token until it expires (15 minutes by default).\n",
            s.len(),
            ms(percentile(s, 0.5)),
            ms(percentile(s, 0.99)),
            ms(s.last().copied().unwrap_or_default())
        );
        let _ = writeln!(
            md,
            "## Memory and sizes\n\n| what | size |\n|---|---|\n| one live session, memory store (process memory) | {:.0} bytes |\n\
             | one live session, Redis (`used_memory` growth over all keys: record, per-user index, expiry set; four sessions per user) | {:.0} bytes |",
            self.memory_bytes, self.redis_bytes
        );
        let _ = writeln!(md, "{}", self.hashing_memory.row());
        for (alg, size) in &self.token_sizes {
            let _ = writeln!(md, "| access token, {alg} | {size} bytes |");
        }
        let _ = writeln!(
            md,
            "\nArgon2's working memory is one buffer per hashing thread, reused from hash to hash. Before that \
             (each hash allocated and freed its 19 MiB, which glibc then kept), a server measured here grew from \
             45 MB to 240 MB of resident memory over 30 logins."
        );
        md.push('\n');
        md.push_str(&self.conclusions());
        std::fs::write(out, md).map_err(|e| format!("{}: {e}", out.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(rps: f64) -> Load {
        Load { rps, ..Load::default() }
    }

    fn measured(name: &str, rounds: &[(f64, f64)]) -> Measured {
        Measured { name: name.into(), rounds: rounds.iter().map(|&(f, m)| (load(f), load(m))).collect() }
    }

    #[test]
    fn the_ratio_is_the_median_of_the_rounds_and_the_spread_their_range() {
        let m = measured("session, memory", &[(100.0, 90.0), (100.0, 50.0), (200.0, 160.0)]);
        assert_eq!(m.ratio(), 0.8);
        assert_eq!(m.spread(), (0.5, 0.9));
        assert_eq!(m.load().rps, 90.0);
        assert_eq!(m.floor().rps, 100.0);
        assert_eq!(measured("none", &[]).ratio(), 0.0);
        let even = measured("beside", &[(100.0, 90.0), (100.0, 120.0), (100.0, 100.0), (100.0, 80.0)]);
        assert!((even.ratio() - 0.95).abs() < 1e-9, "the mean of the middle two: {}", even.ratio());
    }

    #[test]
    fn watched_cpu_is_the_median_of_each_side_and_only_where_every_round_has_it() {
        let us = |n: u64| Some(Duration::from_micros(n));
        let round = |base: Option<Duration>, ours: Option<Duration>| {
            (Load { watched_cpu: base, ..load(100.0) }, Load { watched_cpu: ours, ..load(60.0) })
        };
        let m = Measured {
            name: "forward".into(),
            rounds: vec![round(us(12), us(21)), round(us(13), us(20)), round(us(11), us(25)), round(us(14), us(22))],
        };
        assert_eq!(m.watched(), Some((Duration::from_nanos(12_500), Duration::from_nanos(21_500))));
        let mut r = Report::new(32, 2, 6, 2);
        r.beside.push(Beside { what: "forward".into(), baseline: "plain".into(), measured: m, target: Some(0.6) });
        let md = r.beside_section();
        assert!(md.contains("| forward | 12.5 | 21.5 | 0.58 |"), "{md}");
        let partial = Measured { name: "x".into(), rounds: vec![round(us(12), us(21)), round(None, us(20))] };
        assert_eq!(partial.watched(), None);
        assert!(!report(0.9, 0.9).beside_section().contains("at most"));
    }

    fn report(session: f64, jwt: f64) -> Report {
        let mut r = Report::new(32, 2, 1, 2);
        r.me.push(measured("session, memory", &[(100.0, session * 100.0)]));
        for alg in Algorithm::ALL {
            r.me.push(measured(&format!("JWT {alg}, token cache"), &[(100.0, jwt * 100.0)]));
            r.me.push(measured(&format!("JWT {alg}, no token cache"), &[(100.0, 30.0)]));
        }
        r
    }

    #[test]
    fn conclusions_follow_the_figures() {
        let same = report(0.9, 0.92).conclusions();
        assert!(same.contains("cost about the same"), "{same}");
        assert!(same.contains("Every one of them is slower than an in-memory session (0.90×)"), "{same}");
        let jwt = report(0.6, 0.95).conclusions();
        assert!(jwt.contains("a cached JWT is cheaper than an in-memory session"), "{jwt}");
        let session = report(0.95, 0.6).conclusions();
        assert!(session.contains("an in-memory session is cheaper than a cached JWT"), "{session}");
        let target = report(0.79, 0.9);
        assert!(target.verdict(&target.me[0]).contains("missed"));
        assert!(target.verdict(&target.me[1]).contains("met"));
    }
}
