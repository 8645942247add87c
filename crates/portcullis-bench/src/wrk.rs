//! Load from `wrk`, a separate process, so the generator's work is not counted as the server's.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// What one load run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Non-2xx/3xx answers and socket errors.
    pub errors: u64,
    /// Requests answered in the run.
    pub requests: u64,
    /// The CPU time per request of the processes watched during the run ([`Wrk::watch`]),
    /// where there were any and the system reports it.
    pub watched_cpu: Option<Duration>,
}

pub struct Wrk<'a> {
    pub url: &'a str,
    pub headers: &'a [(&'a str, String)],
    pub connections: usize,
    pub duration: Duration,
    /// A Lua script (for POST bodies).
    pub script: Option<&'a Path>,
    /// Processes whose CPU time is measured over the run (nginx's workers, for instance).
    pub watch: &'a [u32],
}

/// The CPU time the processes `pids` (every thread of each) have had so far, from
/// `/proc/<pid>/task/<tid>/schedstat` (nanoseconds on a CPU); `None` where any is unreadable.
fn cpu_time(pids: &[u32]) -> Option<Duration> {
    let mut ns: u64 = 0;
    for pid in pids {
        for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
            let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
            ns += stat.split_whitespace().next()?.parse::<u64>().ok()?;
        }
    }
    Some(Duration::from_nanos(ns))
}

fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    let secs = match unit {
        "us" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "m" => v * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

impl Wrk<'_> {
    pub fn run(&self) -> Result<Load, String> {
        let mut cmd = Command::new("wrk");
        cmd.args([
            "-t",
            "1",
            "-c",
            &self.connections.to_string(),
            "-d",
            &format!("{}s", self.duration.as_secs().max(1)),
        ])
        .arg("--latency");
        for (k, v) in self.headers {
            cmd.arg("-H").arg(format!("{k}: {v}"));
        }
        if let Some(script) = self.script {
            cmd.arg("-s").arg(script);
        }
        cmd.arg(self.url);
        let before = if self.watch.is_empty() { None } else { cpu_time(self.watch) };
        let out =
            cmd.output().map_err(|e| format!("wrk could not run ({e}); install it (Debian: apt-get install wrk)"))?;
        let spent = before.and_then(|b| Some(cpu_time(self.watch)?.saturating_sub(b)));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr)));
        }
        let mut load = parse(&text).ok_or_else(|| format!("could not read wrk's output:\n{text}"))?;
        load.watched_cpu = spent.and_then(|spent| {
            let requests = u32::try_from(load.requests).ok().filter(|&n| n > 0)?;
            Some(spent / requests)
        });
        Ok(load)
    }
}

pub fn parse(text: &str) -> Option<Load> {
    let mut load = Load::default();
    let mut in_distribution = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("Latency Distribution") {
            in_distribution = true;
            continue;
        }
        if in_distribution {
            if let Some(rest) = t.strip_prefix("50%") {
                load.p50 = parse_duration(rest)?;
            } else if let Some(rest) = t.strip_prefix("99%") {
                load.p99 = parse_duration(rest)?;
                in_distribution = false;
            }
        }
        if let Some((n, _)) = t.split_once(" requests in ") {
            load.requests = n.trim().parse().ok()?;
        }
        if let Some(rest) = t.strip_prefix("Requests/sec:") {
            load.rps = rest.trim().parse().ok()?;
        }
        if let Some(rest) = t.strip_prefix("Non-2xx or 3xx responses:") {
            load.errors += rest.trim().parse::<u64>().ok()?;
        }
        if let Some(rest) = t.strip_prefix("Socket errors:") {
            for part in rest.split(',') {
                load.errors += part.split_whitespace().last().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
            }
        }
    }
    (load.rps > 0.0).then_some(load)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let out = "Running 2s test @ http://127.0.0.1:1/healthz\n  1 threads and 16 connections\n  Latency Distribution\n     50%  210.00us\n     75%  300.00us\n     90%    1.10ms\n     99%    2.50ms\n  80000 requests in 2.00s, 9.00MB read\n  Non-2xx or 3xx responses: 3\nRequests/sec:  40000.50\nTransfer/sec:      4.50MB\n";
        let l = parse(out).expect("parses");
        assert_eq!(l.rps, 40000.5);
        assert_eq!(l.p50, Duration::from_micros(210));
        assert_eq!(l.p99, Duration::from_micros(2500));
        assert_eq!(l.errors, 3);
        assert_eq!(l.requests, 80000);
        assert!(parse("nothing").is_none());
    }

    #[test]
    fn counts_the_cpu_time_of_watched_processes() {
        let me = [std::process::id()];
        let before = cpu_time(&me).expect("this process' schedstat");
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let after = cpu_time(&me).expect("this process' schedstat");
        assert!(after > before, "{after:?} after work, {before:?} before");
        assert!(cpu_time(&[u32::MAX]).is_none(), "no such process");
    }
}
