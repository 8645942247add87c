//! Instructions per request, counted by callgrind: the figure that decides, because it is the
//! same from run to run whatever else the machine is doing (wall-clock figures on a shared
//! machine drift by 10–20 %).
//!
//! Each target is a server in a process of its own (this binary, `--serve-target NAME`) run
//! under `valgrind --tool=callgrind` with instrumentation off. This process signs in (where the
//! target needs it), sends warm-up requests on one keep-alive connection, switches
//! instrumentation on (`callgrind_control -i on`), sends the measured requests on the same
//! connection one after the other, and dumps the counts (`callgrind_control -d`): instructions
//! per request are the dump's total over the requests. The client is outside valgrind, so only
//! the server's instructions count.
//!
//! Beside Portcullis' paths, in the same run: a bare axum route and axum with tower-sessions'
//! `MemoryStore`, the anchors the targets are stated against. They are dependencies of this
//! benchmark alone, which nothing depends on, never of the product.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::SystemClock;
use portcullis_core::jwt::Algorithm;
use portcullis_server::settings::Settings;

/// Requests measured per target, after [`WARM_UP`] requests that are not.
pub const MEASURED: usize = 2_000;
pub const WARM_UP: usize = 200;

/// A server to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Axum,
    AxumTowerSessions,
    Healthz,
    SessionMemory,
    SessionSqlite,
    JwtEdDsa,
    JwtHs256,
    Verify,
}

impl Target {
    pub const ALL: [Target; 8] = [
        Target::Axum,
        Target::AxumTowerSessions,
        Target::Healthz,
        Target::SessionMemory,
        Target::SessionSqlite,
        Target::JwtEdDsa,
        Target::JwtHs256,
        Target::Verify,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Target::Axum => "axum",
            Target::AxumTowerSessions => "axum-tower-sessions",
            Target::Healthz => "healthz",
            Target::SessionMemory => "session-memory",
            Target::SessionSqlite => "session-sqlite",
            Target::JwtEdDsa => "jwt-eddsa",
            Target::JwtHs256 => "jwt-hs256",
            Target::Verify => "verify",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// What the row says.
    pub fn label(self) -> &'static str {
        match self {
            Target::Axum => "bare axum 0.8, `GET /healthz`",
            Target::AxumTowerSessions => "axum + tower-sessions 0.14 (`MemoryStore`), session read",
            Target::Healthz => "Portcullis `GET /healthz` (unauthenticated)",
            Target::SessionMemory => "Portcullis session, memory store (`GET /v1/me`)",
            Target::SessionSqlite => "Portcullis session, SQLite (`GET /v1/me`)",
            Target::JwtEdDsa => "Portcullis JWT EdDSA, verified-token cache (`GET /v1/me`)",
            Target::JwtHs256 => "Portcullis JWT HS256, verified-token cache (`GET /v1/me`)",
            Target::Verify => "Portcullis forward auth, session on memory (`GET /v1/verify`)",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Target::Axum | Target::Healthz => "/healthz",
            Target::AxumTowerSessions => "/me",
            Target::Verify => "/v1/verify",
            _ => "/v1/me",
        }
    }
}

/// A Portcullis target's server, in this process: prints its port on standard output, then
/// serves until the process is killed. The anchors are served by `bench-anchors`. `sessions`
/// replaces the target's session store (a URL, and the local cache's staleness): the wrk
/// side-by-side rows run Portcullis on Redis this way.
pub async fn serve(target: Target, dir: &Path, sessions: Option<(String, Duration)>) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let mut s = Settings { data_dir: dir.to_path_buf(), ..Settings::default() };
    // Memory sessions, as in the anchor, except where SQLite is the point.
    s.store.sessions = if target == Target::SessionSqlite { "sqlite".into() } else { "memory".into() };
    if let Some((url, cache)) = sessions {
        s.store.sessions = url;
        s.store.session_cache = Some(cache);
    }
    match target {
        Target::JwtEdDsa | Target::JwtHs256 => {
            s.jwt.algorithm = if target == Target::JwtEdDsa { Algorithm::EdDSA } else { Algorithm::HS256 };
            s.jwt.token_cache_size = 10_000;
        }
        _ => {}
    }
    let _running =
        portcullis_server::spawn::spawn_on(s, Arc::new(SystemClock), listener).await.map_err(|e| e.to_string())?;
    println!("{port}");
    std::future::pending::<()>().await;
    Ok(())
}

/// One keep-alive HTTP/1.1 connection, read and written by hand so that the client does the
/// same work for every target.
struct Connection {
    reader: BufReader<TcpStream>,
}

/// One answer: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Connection {
    fn open(port: u16) -> Result<Self, String> {
        let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        // Under valgrind a server is slow, but never this slow.
        stream.set_read_timeout(Some(Duration::from_secs(120))).map_err(|e| e.to_string())?;
        Ok(Self { reader: BufReader::new(stream) })
    }

    fn send(&mut self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Result<Answer, String> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        req.push_str(body);
        self.reader.get_mut().write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        self.read_answer()
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("the server closed the connection".into());
        }
        Ok(line.trim_end().to_owned())
    }

    fn read_answer(&mut self) -> Result<Answer, String> {
        let status_line = self.line()?;
        let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or("no status line")?;
        let mut headers = Vec::new();
        loop {
            let line = self.line()?;
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                let size = usize::from_str_radix(&self.line()?, 16).map_err(|e| e.to_string())?;
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk).map_err(|e| e.to_string())?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            body = vec![0; len];
            self.reader.read_exact(&mut body).map_err(|e| e.to_string())?;
        }
        Ok(Answer { status, headers, body })
    }
}

impl Answer {
    fn cookie(&self) -> Option<String> {
        let (_, v) = self.headers.iter().find(|(k, _)| k == "set-cookie")?;
        v.split(';').next().map(str::to_owned)
    }
}

/// Signs in as the target needs: the header every measured request carries.
fn credential(target: Target, c: &mut Connection) -> Result<Option<(&'static str, String)>, String> {
    const LOGIN: &str = r#"{"email":"bench@example.com","password":"benchmark password, long enough"}"#;
    let login = |c: &mut Connection, mode: &str| -> Result<Answer, String> {
        let r = c.send("POST", "/v1/register", &[], LOGIN)?;
        if r.status != 201 {
            return Err(format!("register answered {}", r.status));
        }
        let body = LOGIN.replace('}', &format!(",\"mode\":\"{mode}\"}}"));
        let r = c.send("POST", "/v1/login", &[], &body)?;
        if r.status != 200 {
            return Err(format!("login answered {}", r.status));
        }
        Ok(r)
    };
    match target {
        Target::Axum | Target::Healthz => Ok(None),
        Target::AxumTowerSessions => {
            let r = c.send("GET", "/login", &[], "")?;
            Ok(Some(("Cookie", r.cookie().ok_or("tower-sessions set no cookie")?)))
        }
        Target::SessionMemory | Target::SessionSqlite | Target::Verify => {
            Ok(Some(("Cookie", login(c, "session")?.cookie().ok_or("login set no cookie")?)))
        }
        Target::JwtEdDsa | Target::JwtHs256 => {
            let r = login(c, "jwt")?;
            let body: serde_json::Value = serde_json::from_slice(&r.body).map_err(|e| e.to_string())?;
            let token = body["access_token"].as_str().ok_or("no access token")?;
            Ok(Some(("Authorization", format!("Bearer {token}"))))
        }
    }
}

fn callgrind_control(args: &[&str], pid: u32) -> Result<(), String> {
    let out = Command::new("callgrind_control").args(args).arg(pid.to_string()).output().map_err(|e| e.to_string())?;
    if out.status.success() { Ok(()) } else { Err(format!("callgrind_control {args:?}: {}", out.status)) }
}

/// The total instructions of a callgrind dump (its `summary:` or `totals:` line).
fn total_of(dump: &Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(dump).map_err(|e| format!("{}: {e}", dump.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("summary:").or_else(|| l.strip_prefix("totals:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("{}: no total", dump.display()))
}

/// Whether valgrind and callgrind_control are installed.
pub fn available() -> bool {
    let works = |p: &str| Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success());
    works("valgrind") && works("callgrind_control")
}

/// The `bench-anchors` binary, built beside this one.
pub fn anchors_exe() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let anchors = exe.with_file_name(format!("bench-anchors{}", std::env::consts::EXE_SUFFIX));
    if anchors.is_file() {
        Ok(anchors)
    } else {
        Err(format!("{} is missing: build it with `cargo build --release -p portcullis-bench`", anchors.display()))
    }
}

/// Starts `command`, a server that prints its port (the target `name`), and reads the port. The
/// process stops when the returned handle is dropped.
pub fn spawn_server(name: &str, command: &mut Command) -> Result<(portcullis_lab::Proc, u16), String> {
    let mut child =
        portcullis_lab::Proc::spawn(command.env("RUST_LOG", "warn").stdout(Stdio::piped()).stderr(Stdio::null()))
            .map_err(|e| format!("{name}: {e}"))?;
    let stdout = child.stdout().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).map_err(|e| e.to_string())?;
    let port = line.trim().parse().map_err(|_| format!("{name}: the server printed no port"))?;
    Ok((child, port))
}

/// Counts one target: instructions per request.
pub fn count(target: Target, dir: &Path) -> Result<f64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out: PathBuf = dir.join(format!("{}.callgrind", target.name()));
    // `callgrind_control -d` writes the first dump beside the output file, numbered.
    let dump = PathBuf::from(format!("{}.1", out.display()));
    let data = dir.join(format!("{}.data", target.name()));
    // A kept directory may hold an earlier run's data and dumps: this run starts clean.
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&dump);
    let mut valgrind = Command::new("valgrind");
    valgrind
        .args(["--tool=callgrind", "--instr-atstart=no", "--quiet"])
        .arg(format!("--callgrind-out-file={}", out.display()));
    match target {
        Target::Axum | Target::AxumTowerSessions => valgrind.arg(anchors_exe()?).arg(target.name()),
        _ => valgrind.arg(&exe).args(["--serve-target", target.name(), "--serve-dir"]).arg(&data),
    };
    let (child, port) = spawn_server(target.name(), &mut valgrind)?;
    let mut c = Connection::open(port)?;
    let header = credential(target, &mut c)?;
    let headers: Vec<(&str, &str)> = header.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let request = |c: &mut Connection| -> Result<(), String> {
        let r = c.send("GET", target.path(), &headers, "")?;
        if r.status == 200 { Ok(()) } else { Err(format!("{}: answered {}", target.name(), r.status)) }
    };
    for _ in 0..WARM_UP {
        request(&mut c)?;
    }
    callgrind_control(&["-i", "on"], child.id())?;
    for _ in 0..MEASURED {
        request(&mut c)?;
    }
    callgrind_control(&["-d"], child.id())?;
    drop(child);
    Ok(total_of(&dump)? as f64 / MEASURED as f64)
}

/// What a target is compared with, and its bound there (at most that many times the anchor's
/// instructions), where it has one.
fn bound(target: Target) -> Option<(Target, Option<f64>)> {
    match target {
        Target::Healthz => Some((Target::Axum, Some(1.5))),
        Target::SessionMemory => Some((Target::AxumTowerSessions, Some(1.0))),
        Target::SessionSqlite => Some((Target::AxumTowerSessions, Some(1.5))),
        Target::JwtEdDsa | Target::JwtHs256 => Some((Target::AxumTowerSessions, Some(0.8))),
        // Forward auth's target is through nginx, in requests/s (the side-by-side table).
        Target::Verify => Some((Target::AxumTowerSessions, None)),
        Target::Axum | Target::AxumTowerSessions => None,
    }
}

/// The markdown section: each target, its instructions, its ratio to its anchor, met or missed.
pub fn section(counted: &[(Target, f64)]) -> String {
    let of = |t: Target| counted.iter().find(|(x, _)| *x == t).map(|(_, n)| *n);
    let mut out = format!(
        "{HEAD}\n\n\
         Counted by `portcullis-bench --instructions`: each server in its own process under \
         `valgrind --tool=callgrind`, {MEASURED} keep-alive requests one after the other after \
         {WARM_UP} not counted, release build; the server's instructions only (the client is \
         outside valgrind). Counts repeat from run to run, so they decide; wrk confirms. Every \
         production layer of Portcullis is on (security headers, cross-site guard, metrics, \
         request tracing, timeouts, panic catch, body limit).\n\n\
         | path | instructions / request | ratio | target | |\n|---|---|---|---|---|\n"
    );
    for &(target, n) in counted {
        let (ratio, goal, verdict) = match bound(target).and_then(|(anchor, r)| Some((anchor, r, of(anchor)?))) {
            Some((anchor, r, base)) => {
                let ratio = n / base.max(1.0);
                let name = if anchor == Target::Axum { "bare axum" } else { "axum + tower-sessions" };
                // Three decimals: a ratio a hair over its bound must not read as equal to it.
                let (goal, verdict) = match r {
                    Some(r) => (format!("≤ {r}×"), if ratio <= r { "met" } else { "missed" }),
                    None => (String::new(), ""),
                };
                (format!("{ratio:.3}× {name}"), goal, verdict)
            }
            None => ("anchor".into(), String::new(), ""),
        };
        out.push_str(&format!("| {} | {:.1}k | {ratio} | {goal} | {verdict} |\n", target.label(), n / 1000.0));
    }
    out
}

const HEAD: &str = "## Instructions per request (callgrind)";

/// Where the instruction section of `text` starts and ends.
fn span(text: &str) -> Option<(usize, usize)> {
    let start = text.find(HEAD)?;
    let rest = &text[start + HEAD.len()..];
    Some((start, rest.find("\n## ").map_or(text.len(), |i| start + HEAD.len() + i + 1)))
}

/// The instruction section of the report at `path`, if it has one.
pub fn section_of(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    span(&text).map(|(start, end)| text[start..end].trim_end().to_owned() + "\n")
}

/// The written record under the instruction table (`### What changed`: each optimisation and
/// what it bought), kept from one run to the next.
const RECORD: &str = "\n### What changed";

/// Puts `section` into the report at `path` in place of its previous instruction section (or at
/// its end), leaving the rest as it was, and the old section's written record under it.
pub fn write_into(path: &Path, section: &str) -> Result<(), String> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match span(&old) {
        Some((start, end)) => {
            let record = old[start..end].find(RECORD).map_or("", |i| old[start + i..end].trim_end());
            let section = if record.is_empty() { section.to_owned() } else { format!("{section}{record}\n") };
            format!("{}{section}\n{}", &old[..start], &old[end..])
        }
        None => format!("{}\n{section}", old.trim_end_matches('\n').to_owned() + "\n"),
    };
    std::fs::write(path, new).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_replaces_its_old_self_and_keeps_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("B.md");
        std::fs::write(&path, "# B\n\n## wrk\nfigures\n").expect("write");
        write_into(&path, "## Instructions per request (callgrind)\n\nfirst\n").expect("first");
        std::fs::write(&path, std::fs::read_to_string(&path).expect("read") + "\n## later\nkept\n").expect("write");
        write_into(&path, "## Instructions per request (callgrind)\n\nsecond\n").expect("second");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("## wrk\nfigures") && text.contains("## later\nkept"), "{text}");
        assert!(text.contains("second") && !text.contains("first"), "{text}");
        assert_eq!(text.matches("## Instructions").count(), 1, "{text}");
        assert_eq!(section_of(&path).as_deref(), Some("## Instructions per request (callgrind)\n\nsecond\n"));

        // The written record under the table stays when the table is counted again.
        let text = text.replace("second\n", "second\n\n### What changed\n\n- one thing, 10k -> 5k\n");
        std::fs::write(&path, text).expect("write");
        write_into(&path, "## Instructions per request (callgrind)\n\nthird\n").expect("third");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.contains("third\n\n### What changed\n\n- one thing, 10k -> 5k\n") && !text.contains("second"),
            "{text}"
        );
        assert!(text.contains("## later\nkept"), "{text}");
    }

    #[test]
    fn ratios_are_marked_against_their_anchor() {
        let counted = [
            (Target::Axum, 10_000.0),
            (Target::AxumTowerSessions, 20_000.0),
            (Target::Healthz, 16_000.0),
            (Target::SessionMemory, 21_000.0),
        ];
        let text = section(&counted);
        let row = |label: &str| text.lines().find(|l| l.contains(label)).unwrap_or_default().to_owned();
        assert!(
            row("`GET /healthz` (unauth").contains("1.600× bare axum")
                && row("`GET /healthz` (unauth").ends_with("missed |"),
            "{text}"
        );
        assert!(
            row("memory store").contains("1.050× axum + tower-sessions") && row("memory store").ends_with("missed |"),
            "{text}"
        );
        let met = section(&[(Target::Axum, 10_000.0), (Target::Healthz, 14_000.0)]);
        assert!(met.lines().any(|l| l.contains("1.400× bare axum") && l.ends_with("met |")), "{met}");
    }

    #[test]
    fn a_dump_total_is_read_from_its_summary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cg.1");
        std::fs::write(&path, "version: 1\nevents: Ir\nsummary: 123456\nfl=x\n").expect("write");
        assert_eq!(total_of(&path), Ok(123_456));
        std::fs::write(&path, "events: Ir\n").expect("write");
        assert!(total_of(&path).is_err());
    }
}
