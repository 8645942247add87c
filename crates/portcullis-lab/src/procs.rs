//! The processes.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("{0} is not installed")]
    Missing(&'static str),
    #[error("{what}: {detail}")]
    Failed { what: &'static str, detail: String },
}

fn failed(what: &'static str, detail: impl std::fmt::Display) -> ProcError {
    ProcError::Failed { what, detail: detail.to_string() }
}

/// The environment variable that turns a missing program into a failure.
pub const REQUIRE_ALL: &str = "PORTCULLIS_TEST_REQUIRE_ALL";

fn find_program(names: &[&str], extra_dirs: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .chain(extra_dirs.iter().cloned())
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].iter().map(PathBuf::from));
    let dirs: Vec<PathBuf> = dirs.collect();
    names.iter().find_map(|n| dirs.iter().map(|d| d.join(n)).find(|p| p.is_file()))
}

/// PostgreSQL's server binaries live in a versioned directory on Debian.
fn postgres_bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort();
    dirs.reverse();
    dirs
}

/// For a test: `Some(value)` when the service could be started; `None` (after a loud message)
/// when its program is missing and `PORTCULLIS_TEST_REQUIRE_ALL` is not set.
///
/// # Panics
/// When the program is missing and required, or installed but failing to start.
pub fn require<T>(what: &str, started: Result<T, ProcError>) -> Option<T> {
    match started {
        Ok(v) => Some(v),
        Err(ProcError::Missing(program)) => {
            let required = std::env::var(REQUIRE_ALL).is_ok_and(|v| v == "1");
            assert!(!required, "{what}: {program} is not installed and {REQUIRE_ALL}=1");
            eprintln!(
                "\n!!! SKIPPED {what}: {program} is not installed (set {REQUIRE_ALL}=1 to make this a failure) !!!\n"
            );
            None
        }
        Err(e) => panic!("{what}: {e}"),
    }
}

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after).
pub fn free_port() -> Result<u16, ProcError> {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).map_err(|e| failed("free port", e))
}

/// A child process in a process group of its own, so that everything it starts (nginx's
/// workers, PostgreSQL's backends, the browsers chromedriver opens) stops with it: dropping it
/// sends SIGKILL to the whole group, then reaps the leader. A SIGKILL to the leader alone would
/// leave its children running, still holding their ports.
#[derive(Debug)]
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Spawns `command` as the leader of a new process group.
    pub fn spawn(command: &mut Command) -> std::io::Result<Self> {
        use std::os::unix::process::CommandExt;
        Ok(Self { child: command.process_group(0).spawn()? })
    }

    /// The leader's process id, which is also the group's.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The leader's standard output, when it was piped (once).
    pub fn stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// Whether the leader has exited, and how.
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let group = rustix::process::Pid::from_child(&self.child);
        // The group is gone already when every member exited: nothing to do then.
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_port(port: u16, child: &mut Proc, what: &'static str, log: &Path) -> Result<(), ProcError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            return Err(failed(what, format!("exited with {status} before listening: {log}")));
        }
        if Instant::now() > deadline {
            return Err(failed(what, format!("not listening on {port} after 30 s")));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn log_file(dir: &Path, name: &str) -> Result<(PathBuf, std::fs::File), ProcError> {
    let path = dir.join(name);
    let file = std::fs::File::create(&path).map_err(|e| failed("log file", e))?;
    Ok((path, file))
}

/// A `redis-server` on a loopback port, with an append-only file fsynced on every write.
pub struct Redis {
    child: Option<Proc>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Result<Self, ProcError> {
        let dir = tempfile::tempdir().map_err(|e| failed("redis dir", e))?;
        let port = free_port()?;
        let child = Self::spawn(port, dir.path(), &[])?;
        Ok(Self { child: Some(child), port, dir })
    }

    fn spawn(port: u16, dir: &Path, extra: &[&str]) -> Result<Proc, ProcError> {
        let bin = find_program(&["redis-server"], &[]).ok_or(ProcError::Missing("redis-server"))?;
        let (log, file) = log_file(dir, "redis.log")?;
        let mut child = Proc::spawn(
            Command::new(bin)
                // Every write is on disk before it is acknowledged, so a killed server restarted on
                // the same directory has lost nothing (as a production Redis with AOF would).
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
                .args(["--appendonly", "yes", "--appendfsync", "always"])
                .args(extra)
                .arg("--dir")
                .arg(dir)
                .stdout(Stdio::from(file.try_clone().map_err(|e| failed("redis log", e))?))
                .stderr(Stdio::from(file)),
        )
        .map_err(|e| failed("redis-server", e))?;
        wait_for_port(port, &mut child, "redis-server", &log)?;
        Ok(child)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Runs one command with `redis-cli` and returns its output.
    pub fn cli(&self, args: &[&str]) -> Result<String, ProcError> {
        let bin = find_program(&["redis-cli"], &[]).ok_or(ProcError::Missing("redis-cli"))?;
        let out = Command::new(bin)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .map_err(|e| failed("redis-cli", e))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Kills the server (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        drop(self.child.take());
    }

    /// Stops the server (SIGSTOP) without closing anything: its connections stay open and
    /// nothing on them is answered, as with a partition or a server stuck on the host.
    pub fn freeze(&self) -> Result<(), ProcError> {
        self.signal(rustix::process::Signal::STOP)
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) -> Result<(), ProcError> {
        self.signal(rustix::process::Signal::CONT)
    }

    fn signal(&self, signal: rustix::process::Signal) -> Result<(), ProcError> {
        let child = self.child.as_ref().ok_or_else(|| failed("redis-server", "not running"))?;
        let pid =
            rustix::process::Pid::from_raw(child.id().cast_signed()).ok_or_else(|| failed("redis-server", "pid"))?;
        rustix::process::kill_process(pid, signal).map_err(|e| failed("redis-server", e))
    }

    /// Starts it again on the same port and directory: it reloads its append-only file.
    pub fn restart(&mut self) -> Result<(), ProcError> {
        self.kill();
        self.child = Some(Self::spawn(self.port, self.dir.path(), &[])?);
        Ok(())
    }

    /// Kills it and starts it again on the same port with none of its data, as a Redis without
    /// persistence comes back from a crash.
    pub fn restart_empty(&mut self) -> Result<(), ProcError> {
        self.kill();
        let dir = tempfile::tempdir().map_err(|e| failed("redis dir", e))?;
        self.child = Some(Self::spawn(self.port, dir.path(), &[])?);
        self.dir = dir;
        Ok(())
    }
}

/// A free port whose cluster-bus companion (port + 10000) is free too.
fn free_cluster_port() -> Result<u16, ProcError> {
    for _ in 0..100 {
        let port = free_port()?;
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    Err(failed("free port", "no port with a free cluster-bus port"))
}

/// A three-master Redis Cluster (no replicas) on loopback.
pub struct RedisCluster {
    nodes: Vec<Redis>,
}

impl RedisCluster {
    pub fn start() -> Result<Self, ProcError> {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().map_err(|e| failed("redis dir", e))?;
            let port = free_cluster_port()?;
            let args =
                ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"];
            let child = Redis::spawn(port, dir.path(), &args)?;
            nodes.push(Redis { child: Some(child), port, dir });
        }
        let cli = find_program(&["redis-cli"], &[]).ok_or(ProcError::Missing("redis-cli"))?;
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new(&cli)
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .map_err(|e| failed("redis-cli --cluster create", e))?;
        if !out.status.success() {
            return Err(failed("redis-cli --cluster create", String::from_utf8_lossy(&out.stdout)));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = nodes.iter().all(|n| n.cli(&["CLUSTER", "INFO"]).is_ok_and(|i| i.contains("cluster_state:ok")));
            if ok {
                return Ok(Self { nodes });
            }
            if Instant::now() > deadline {
                return Err(failed("redis cluster", "not ok after 30 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        format!("redis+cluster://{}", hosts.join(","))
    }
}

/// A Redis master, one replica, and one Sentinel watching them (quorum 1, failover after 1 s).
pub struct RedisSentinel {
    pub master: Redis,
    pub replica: Redis,
    sentinel: Redis,
}

/// The service name the sentinel knows the master by.
pub const SENTINEL_SERVICE: &str = "portcullis";

impl RedisSentinel {
    pub fn start() -> Result<Self, ProcError> {
        let master = Redis::start()?;
        let dir = tempfile::tempdir().map_err(|e| failed("redis dir", e))?;
        let port = free_port()?;
        let master_port = master.port.to_string();
        let child = Redis::spawn(port, dir.path(), &["--replicaof", "127.0.0.1", &master_port])?;
        let replica = Redis { child: Some(child), port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !replica.cli(&["INFO", "replication"])?.contains("master_link_status:up") {
            if Instant::now() > deadline {
                return Err(failed("redis replica", "not in sync after 30 s"));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let sdir = tempfile::tempdir().map_err(|e| failed("sentinel dir", e))?;
        let sport = free_port()?;
        let conf = sdir.path().join("sentinel.conf");
        let text = format!(
            "port {sport}\nbind 127.0.0.1\ndir {}\nsentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {} 1\n\
             sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\nsentinel failover-timeout {SENTINEL_SERVICE} 3000\n",
            sdir.path().display(),
            master.port
        );
        std::fs::write(&conf, text).map_err(|e| failed("sentinel.conf", e))?;
        let bin = find_program(&["redis-server"], &[]).ok_or(ProcError::Missing("redis-server"))?;
        let (log, file) = log_file(sdir.path(), "sentinel.log")?;
        let mut child = Proc::spawn(
            Command::new(bin)
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::from(file.try_clone().map_err(|e| failed("sentinel log", e))?))
                .stderr(Stdio::from(file)),
        )
        .map_err(|e| failed("redis sentinel", e))?;
        wait_for_port(sport, &mut child, "redis sentinel", &log)?;
        let sentinel = Redis { child: Some(child), port: sport, dir: sdir };
        // Wait until the sentinel has found the replica, so a failover can happen.
        while !sentinel.cli(&["SENTINEL", "REPLICAS", SENTINEL_SERVICE])?.contains(&replica.port.to_string()) {
            if Instant::now() > deadline {
                return Err(failed("redis sentinel", "has not seen the replica after 30 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self { master, replica, sentinel })
    }

    /// `redis+sentinel://127.0.0.1:<sentinel port>/portcullis`.
    pub fn url(&self) -> String {
        format!("redis+sentinel://127.0.0.1:{}/{SENTINEL_SERVICE}", self.sentinel.port)
    }

    /// Waits until the replica has everything the master has (bounded).
    pub fn wait_replicated(&self) -> Result<(), ProcError> {
        let offset = |info: &str, key: &str| {
            info.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse::<u64>().ok())
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let m = offset(&self.master.cli(&["INFO", "replication"])?, "master_repl_offset:");
            let r = offset(&self.replica.cli(&["INFO", "replication"])?, "slave_repl_offset:");
            if m.is_some() && m == r {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(failed("redis replica", "did not catch up"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A throwaway PostgreSQL cluster. `initdb` refuses to run as root, so as root the cluster is
/// created and run as `nobody`.
pub struct Postgres {
    child: Option<Proc>,
    pub port: u16,
    dir: tempfile::TempDir,
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn as_postgres_user(program: &Path, root: bool) -> Command {
    if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    pub fn start() -> Result<Self, ProcError> {
        let dirs = postgres_bin_dirs();
        let initdb = find_program(&["initdb"], &dirs).ok_or(ProcError::Missing("initdb (postgresql)"))?;
        let postgres = find_program(&["postgres"], &dirs).ok_or(ProcError::Missing("postgres (postgresql)"))?;
        let root = is_root();
        let dir = tempfile::Builder::new().prefix("portcullis-pg").tempdir().map_err(|e| failed("postgres dir", e))?;
        let data = dir.path().join("data");
        if root {
            // The whole temporary directory belongs to the unprivileged user.
            let status = Command::new("chown")
                .args(["-R", "nobody:nogroup"])
                .arg(dir.path())
                .status()
                .map_err(|e| failed("chown", e))?;
            if !status.success() {
                return Err(failed("chown", status));
            }
        }
        let out = as_postgres_user(&initdb, root)
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"])
            .output()
            .map_err(|e| failed("initdb", e))?;
        if !out.status.success() {
            return Err(failed("initdb", String::from_utf8_lossy(&out.stderr)));
        }
        let port = free_port()?;
        let log = dir.path().join("postgres.log");
        let file = std::fs::File::create(&log).map_err(|e| failed("postgres log", e))?;
        let mut child = Proc::spawn(
            as_postgres_user(&postgres, root)
                .arg("-D")
                .arg(&data)
                .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k", ""])
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
                .stdout(Stdio::from(file.try_clone().map_err(|e| failed("postgres log", e))?))
                .stderr(Stdio::from(file)),
        )
        .map_err(|e| failed("postgres", e))?;
        wait_for_port(port, &mut child, "postgres", &log)?;
        // Listening is not ready: PostgreSQL refuses connections while it starts up.
        let ready = find_program(&["pg_isready"], &dirs).ok_or(ProcError::Missing("pg_isready (postgresql)"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(&ready)
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            if Instant::now() > deadline {
                return Err(failed("postgres", "not accepting connections after 30 s"));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(Self { child: Some(child), port, dir })
    }

    /// A URL for the `postgres` database as the `postgres` superuser (trust authentication).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn kill(&mut self) {
        drop(self.child.take());
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// An nginx master process with a configuration given as text; `{port}` and `{dir}` in it are
/// replaced by its listening port and its temporary directory.
pub struct Nginx {
    child: Option<Proc>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// `http_block` is the body of the `http { }` block.
    pub fn start(http_block: &str) -> Result<Self, ProcError> {
        let bin = find_program(&["nginx"], &[]).ok_or(ProcError::Missing("nginx"))?;
        let dir = tempfile::tempdir().map_err(|e| failed("nginx dir", e))?;
        let port = free_port()?;
        let d = dir.path().display().to_string();
        let body = http_block.replace("{port}", &port.to_string()).replace("{dir}", &d);
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n{body}\n}}\n"
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| failed("nginx.conf", e))?;
        let log = dir.path().join("error.log");
        let mut child = Proc::spawn(
            Command::new(bin)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf_path)
                .arg("-e")
                .arg(&log)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .map_err(|e| failed("nginx", e))?;
        wait_for_port(port, &mut child, "nginx", &log)?;
        Ok(Self { child: Some(child), port, dir })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The master's process id (also its process group's).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Proc::id)
    }

    /// The worker processes' ids (the master's children, from `/proc`; none where the system
    /// does not list them).
    pub fn workers(&self) -> Vec<u32> {
        let Some(master) = self.pid() else { return Vec::new() };
        std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .map(|s| s.split_whitespace().filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default()
    }
}

/// A `chromedriver` on a free port, driving the system's Chromium (Debian's `chromium` and
/// `chromium-driver`) headless. Each WebDriver session gets its own fresh browser profile.
pub struct ChromeDriver {
    /// Held for its `Drop`: the driver and every browser it opened stop with it.
    _process: Proc,
    pub port: u16,
    /// The Chromium binary sessions should start.
    pub browser: PathBuf,
    dir: tempfile::TempDir,
}

impl ChromeDriver {
    pub fn start() -> Result<Self, ProcError> {
        let driver = find_program(&["chromedriver"], &[PathBuf::from("/usr/lib/chromium")])
            .ok_or(ProcError::Missing("chromedriver (chromium-driver)"))?;
        let browser = find_program(&["chromium", "chromium-browser", "google-chrome"], &[])
            .ok_or(ProcError::Missing("chromium"))?;
        let dir = tempfile::tempdir().map_err(|e| failed("chromedriver dir", e))?;
        let port = free_port()?;
        let log = dir.path().join("chromedriver.log");
        let mut child = Proc::spawn(
            Command::new(driver)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .map_err(|e| failed("chromedriver", e))?;
        wait_for_port(port, &mut child, "chromedriver", &log)?;
        Ok(Self { _process: child, port, browser, dir })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A new, empty profile directory for one browser session.
    pub fn profile_dir(&self) -> Result<PathBuf, ProcError> {
        let dir =
            tempfile::Builder::new().prefix("profile").tempdir_in(self.dir.path()).map_err(|e| failed("profile", e))?;
        Ok(dir.keep())
    }
}

/// An SMTP server on a loopback port (Python's `aiosmtpd`, Debian's `python3-aiosmtpd`) that
/// keeps every message it receives in a Maildir, for the tests to read.
pub struct Smtp {
    _process: Proc,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Smtp {
    pub fn start() -> Result<Self, ProcError> {
        // The system's Python first: that is where the Debian package installs the module.
        let python = ["/usr/bin/python3", "python3"]
            .into_iter()
            .find(|p| {
                Command::new(p)
                    .args(["-c", "import aiosmtpd"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .ok_or(ProcError::Missing("aiosmtpd (python3-aiosmtpd)"))?;
        let dir = tempfile::tempdir().map_err(|e| failed("smtp dir", e))?;
        let port = free_port()?;
        let (log, file) = log_file(dir.path(), "smtp.log")?;
        let mut child = Proc::spawn(
            Command::new(python)
                .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(dir.path().join("mail"))
                .stdout(Stdio::from(file.try_clone().map_err(|e| failed("smtp log", e))?))
                .stderr(Stdio::from(file)),
        )
        .map_err(|e| failed("aiosmtpd", e))?;
        wait_for_port(port, &mut child, "aiosmtpd", &log)?;
        Ok(Self { _process: child, port, dir })
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far, as received (headers and body), oldest first.
    pub fn messages(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.dir.path().join("mail").join("new")) else { return Vec::new() };
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        files.sort();
        files.into_iter().filter_map(|(_, p)| std::fs::read_to_string(p).ok()).collect()
    }
}

/// One process as `/proc` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub parent: u32,
    pub group: u32,
    /// The program name (at most 15 bytes, as the kernel keeps it).
    pub name: String,
}

/// Every live process on this machine (zombies, already dead, left out), read from `/proc`;
/// empty where there is no `/proc`. For tests that check nothing was left behind.
pub fn processes() -> Vec<ProcessInfo> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            // `pid (name) state parent group ...`; the name may hold spaces and parentheses.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_owned();
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let parent = fields.next()?.parse().ok()?;
            let group = fields.next()?.parse().ok()?;
            (state != "Z" && state != "X").then_some(ProcessInfo { pid, parent, group, name })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bounded wait for `done`; whether it came true.
    fn eventually(mut done: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if done() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        done()
    }

    #[test]
    fn nginx_names_its_workers_and_they_are_gone_when_it_is_dropped() {
        let conf = "server { listen 127.0.0.1:{port}; location / { return 200; } }";
        let Some(nginx) = require("nginx clean-up", Nginx::start(conf)) else { return };
        let master = nginx.pid().expect("running");
        let workers = || -> Vec<u32> { processes().iter().filter(|p| p.parent == master).map(|p| p.pid).collect() };
        assert!(eventually(|| !workers().is_empty()), "nginx started no worker");
        assert_eq!(nginx.workers(), workers(), "the workers nginx reports are its master's children");
        let mut ours = workers();
        ours.push(master);
        drop(nginx);
        let alive = || -> Vec<u32> { processes().iter().map(|p| p.pid).filter(|p| ours.contains(p)).collect() };
        assert!(eventually(|| alive().is_empty()), "left running: {:?}", alive());
    }
}
