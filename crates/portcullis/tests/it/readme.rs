//! The README's walk-throughs, run for real: every `console` block is run with bash against a
//! fresh `portcullis serve`, command by command, and what each printed must match the README
//! once the parts that differ on every run (ids, times, tokens, lengths) are masked. An `…` in
//! the README stands for anything (a shortened token, elided headers).
//!
//! On a mismatch the test prints what the commands really printed, ready to paste.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use regex::Regex;

const README: &str = include_str!("../../../../README.md");

/// One `$ command` of a block and what the README says it prints.
#[derive(Debug)]
struct Step {
    command: String,
    expected: String,
}

/// The `console` blocks of `text`, each as its steps.
fn console_blocks(text: &str) -> Vec<Vec<Step>> {
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```console" {
            continue;
        }
        let mut steps: Vec<Step> = Vec::new();
        let mut continuing = false;
        for line in lines.by_ref() {
            if line.trim() == "```" {
                break;
            }
            if continuing {
                let step = steps.last_mut().expect("a command before its continuation");
                step.command.push('\n');
                step.command.push_str(line);
                continuing = line.ends_with('\\');
            } else if let Some(command) = line.strip_prefix("$ ") {
                steps.push(Step { command: command.to_owned(), expected: String::new() });
                continuing = command.ends_with('\\');
            } else if let Some(step) = steps.last_mut() {
                step.expected.push_str(line);
                step.expected.push('\n');
            }
        }
        blocks.push(steps);
    }
    blocks
}

/// Masks what differs on every run, the same way on both sides.
fn mask(text: &str) -> String {
    let rules: [(&str, &str); 9] = [
        (r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*", "<jwt>"),
        // A token the README shortened: `eyJhbGciOi…`.
        (r"eyJ[A-Za-z0-9_.-]*…", "<jwt>"),
        (r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "<time>"),
        (r"(?m)^date: .*$", "date: <date>"),
        (r"(?m)^content-length: \d+$", "content-length: <n>"),
        (r#""refresh_expires_in":\d+"#, "\"refresh_expires_in\":<n>"),
        (r"[A-Za-z0-9_-]{20,}", "<b64>"),
        (r"[ \t]+\n", "\n"),
    ];
    let mut out = text.replace('\r', "");
    for (pattern, with) in rules {
        out = Regex::new(pattern).expect("pattern").replace_all(&out, with).into_owned();
    }
    out.trim_end().to_owned()
}

/// Whether `actual` is what `expected` says, `…` in `expected` standing for anything.
fn matches(expected: &str, actual: &str) -> bool {
    let pattern: Vec<String> = mask(expected).split('…').map(regex::escape).collect();
    Regex::new(&format!("^{}$", pattern.join(r"[\s\S]*?"))).expect("pattern").is_match(&mask(actual))
}

#[test]
fn the_masking_keeps_what_matters() {
    assert!(matches(
        "{\"id\":\"01a202d8-0132-7384-aa33-80652f09bd87\"}",
        "{\"id\":\"01b3c4d5-0132-7384-aa33-80652f09bd88\"}"
    ));
    assert!(!matches("{\"code\":\"unauthenticated\"}", "{\"code\":\"invalid_token\"}"));
    assert!(matches("HTTP/1.1 401 Unauthorized\n…\n{\"a\":1}", "HTTP/1.1 401 Unauthorized\nx: y\nz: w\n\n{\"a\":1}"));
    assert!(!matches("HTTP/1.1 200 OK\nset-cookie: a=b; Secure", "HTTP/1.1 200 OK\nset-cookie: a=b"));
    assert!(matches("{\"access_token\":\"eyJhbGciOi…\"}", "{\"access_token\":\"eyJa.eyJb.sig\"}"));
    assert!(matches(
        "\"refresh_token\":\"Xkt94BVaydO6dkymfVo7DQ.1.sRxyDWQHic_YwFaR8YWiLW6fNH4X0sx6qLFODxx8-54\"",
        "\"refresh_token\":\"AAAAAAAAAAAAAAAAAAAAAA.1.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\""
    ));
    assert!(!matches(
        "\"refresh_token\":\"Xkt94BVaydO6dkymfVo7DQ.1.sRxyDWQHic_YwFaR8YWiLW6fNH4X0sx6qLFODxx8-54\"",
        "\"refresh_token\":\"AAAAAAAAAAAAAAAAAAAAAA.2.BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\""
    ));
}

#[test]
fn the_readme_walk_throughs_print_what_they_say() {
    let blocks = console_blocks(README);
    assert!(blocks.len() >= 2 && blocks.iter().all(|b| !b.is_empty()), "no walk-throughs found: {blocks:?}");
    if Command::new("curl").arg("--version").output().is_err() || Command::new("jq").arg("--version").output().is_err()
    {
        let required = std::env::var("PORTCULLIS_TEST_REQUIRE_ALL").is_ok_and(|v| v == "1");
        assert!(!required, "the README walk-through needs curl and jq");
        eprintln!("\n!!! SKIPPED the README walk-through: curl or jq is not installed !!!\n");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // The README waits out the 5 s refresh grace; here it lasts 1 s, and the wait is shortened.
    let mut server = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("serve")
        .current_dir(dir.path())
        .env("PORTCULLIS_LISTEN", "127.0.0.1:0")
        .env("PORTCULLIS_JWT__REFRESH_GRACE", "1s")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn portcullis");
    let mut banner = String::new();
    BufReader::new(server.stdout.take().expect("stdout")).read_line(&mut banner).expect("banner");
    let addr = banner.split_whitespace().find_map(|w| w.strip_prefix("http://")).expect("address").to_owned();
    let as_in_readme = |text: &str| text.replace(&addr, "127.0.0.1:8080");
    let mut failures = Vec::new();
    // The start-up line, as the README shows it.
    let shown = README.split("it prints where it listens:").nth(1).and_then(|rest| rest.split("```").nth(1));
    let shown = shown.expect("the start-up line in the README").trim();
    if shown != as_in_readme(banner.trim()) {
        failures.push(format!("start-up line:\n  README: {shown}\n  real:   {}", as_in_readme(banner.trim())));
    }
    let mut transcript = String::new();
    for steps in &blocks {
        let mut script = String::from("set -u\n");
        for (i, step) in steps.iter().enumerate() {
            let command = step.command.replace("127.0.0.1:8080", &addr).replace("sleep 6", "sleep 1.5");
            script.push_str(&format!("printf '\\n@@@{i}@@@\\n'\n{command}\n"));
        }
        let out = Command::new("bash").arg("-c").arg(&script).current_dir(dir.path()).output().expect("bash");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        transcript.push_str("```console\n");
        for (i, step) in steps.iter().enumerate() {
            let start = format!("\n@@@{i}@@@\n");
            let printed = stdout
                .split_once(&start)
                .map(|(_, rest)| rest.split("\n@@@").next().unwrap_or(rest))
                .unwrap_or_default();
            let printed = as_in_readme(printed);
            transcript.push_str(&format!("$ {}\n", step.command));
            if !printed.trim().is_empty() {
                transcript.push_str(&format!("{}\n", printed.trim_end()));
            }
            if !matches(&step.expected, &printed) {
                failures.push(format!(
                    "$ {}\n  README says:\n{}\n  it printed:\n{}",
                    step.command,
                    step.expected.trim_end(),
                    printed.trim_end()
                ));
            }
        }
        transcript.push_str("```\n");
    }
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        failures.is_empty(),
        "the README's walk-through is stale:\n\n{}\n\nwhat it really prints:\n\n{transcript}",
        failures.join("\n\n")
    );
}
