//! `portcullis lab` end to end: every claim it tests comes out as measured, and every process
//! it started is gone when it ends.

use std::process::Command;

/// The programs the lab starts besides its own `portcullis` processes.
const STARTED: [&str; 3] = ["nginx", "redis-server", "postgres"];

/// Whether a process is one of the lab's own `portcullis` processes: a node (its settings file
/// is the lab's `node<i>-<port>.toml`) or a service of the chain. Other tests of this binary run
/// `portcullis` processes of their own at the same time, so the name alone does not tell.
fn is_labs_own(pid: u32) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let node = regex::Regex::new(r"/node\d+-\d+\.toml$").expect("a valid pattern");
    args.iter().any(|a| a == "lab-service" || node.is_match(a))
}

#[test]
fn the_lab_reproduces_every_claim() {
    // Orphans of anything this test starts become this process's children instead of init's,
    // so that whatever the lab leaves behind can be found.
    rustix::process::set_child_subreaper(Some(rustix::process::getpid())).expect("become a subreaper");
    let me = std::process::id();
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("lab.md");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .current_dir(dir.path())
        .args(["lab", "--nodes", "3", "--services", "3", "--load-seconds", "1", "--samples", "5", "--report"])
        .arg(&report)
        .output()
        .expect("run the lab");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("is not installed") {
        let required = std::env::var("PORTCULLIS_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1");
        assert!(!required, "the lab needs Redis, PostgreSQL and nginx: {stderr}");
        eprintln!("\n!!! SKIPPED the lab: {stderr} !!!\n");
        return;
    }
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for n in 1..=11 {
        assert!(stdout.contains(&format!("{n}. ")), "scenario {n} missing:\n{stdout}");
    }
    assert_eq!(stdout.matches("| confirmed").count(), 11, "{stdout}");
    let md = std::fs::read_to_string(&report).expect("report written");
    assert_eq!(md.matches("| confirmed |").count(), 11, "{md}");
    // The microservice designs side by side: a row each, with figures.
    let designs = md.split_once("## Microservices").map(|(_, t)| t).unwrap_or_default();
    for design in ["| (a) session cookie", "| (b) JWT verified locally", "| (c) JWT verified locally, following"] {
        let row = designs.lines().find(|l| l.starts_with(design)).unwrap_or_default();
        assert!(row.contains(" ms"), "{design} has no figures in the report:\n{md}");
    }
    let left: Vec<_> = portcullis_lab::processes()
        .into_iter()
        .filter(|p| p.parent == me && (STARTED.iter().any(|name| p.name.starts_with(name)) || is_labs_own(p.pid)))
        .collect();
    // Whatever was left is stopped here, so that a failure does not leave it running as well.
    for p in &left {
        if let Some(pid) = rustix::process::Pid::from_raw(p.pid.cast_signed()) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    assert!(left.is_empty(), "the lab left processes running: {left:?}");
}

#[test]
fn lab_flags_it_cannot_honour_are_refused_with_their_range() {
    let refused = [
        ("--nodes", "1"),
        ("--nodes", "17"),
        ("--load-seconds", "0"),
        ("--samples", "0"),
        ("--services", "0"),
        ("--services", "9"),
    ];
    for (flag, value) in refused {
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis")).args(["lab", flag, value]).output().expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag) && stderr.contains("not in"), "{flag} {value}: {stderr}");
    }
    let help = Command::new(env!("CARGO_BIN_EXE_portcullis")).args(["lab", "--help"]).output().expect("run");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in ["--nodes", "--load-seconds", "--samples", "--services", "--report"] {
        // `--nodes <NODES>  Portcullis nodes ... [default: 3]`: something besides the value and
        // the default.
        let line = help.lines().map(str::trim_start).find(|l| l.starts_with(flag)).unwrap_or_default();
        let described =
            line.split_whitespace().skip(2).filter(|w| !w.starts_with("[default:") && !w.ends_with(']')).count();
        assert!(described >= 3, "{flag} has no help: {line:?}");
    }
}
