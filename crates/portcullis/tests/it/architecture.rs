//! Rules the code of every crate keeps (ARCHITECTURE.md): no import circle among a crate's
//! modules, so each one can be read knowing only the modules it names, never one that names it
//! back.
//!
//! The check reads the sources: every `crate::` and `super::` path (in `use` trees too) is an
//! edge from the module whose file it is in to the deepest module it names. A module that
//! composes its own children (`pages/mod.rs` naming `pages::login`) is not an edge: children are
//! below their parent by construction. Unit-test modules (`#[cfg(test)] mod tests`) are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// The workspace root, two levels above this crate.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file under `src`, with its module path (`lib.rs` and `main.rs` are the root).
fn modules(src: &Path) -> BTreeMap<Module, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read a source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            // A `main.rs` beside a `lib.rs` is a crate of its own, which uses the library by name.
            if path.extension().is_none_or(|e| e != "rs")
                || (path == src.join("main.rs") && src.join("lib.rs").exists())
            {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src").with_extension("");
            let mut module: Module = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
            if matches!(module.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).expect("read a source file");
            let text = match text.find("#[cfg(test)]\nmod tests") {
                Some(i) => text[..i].to_owned(),
                None => text,
            };
            out.insert(module, text);
        }
    }
    out
}

/// The identifier at the start of `s`, and the rest.
fn ident(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    s.split_at(end)
}

/// The paths a path or `use` tree starting at `s` names (after `crate::` or `super::`), each as
/// its segments. Only the module-like prefix matters, so a path ends at anything that is not
/// `ident::`.
fn paths(s: &str, prefix: &Module, out: &mut Vec<Module>) {
    let mut segments = prefix.clone();
    let mut rest = s;
    loop {
        let (id, after) = ident(rest);
        if id.is_empty() {
            if let Some(group) = rest.strip_prefix('{') {
                // A use group: each item, separated by commas at this depth.
                let mut depth = 0;
                let mut start = 0;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            paths(group[start..i].trim_start(), &segments, out);
                            return;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            paths(group[start..i].trim_start(), &segments, out);
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
            }
            out.push(segments);
            return;
        }
        segments.push(id.to_owned());
        match after.strip_prefix("::") {
            Some(next) => rest = next,
            None => {
                out.push(segments);
                return;
            }
        }
    }
}

/// The modules `module`'s source names through `crate::` and `super::`.
fn references(module: &Module, text: &str, known: &BTreeSet<Module>) -> BTreeSet<Module> {
    let mut named = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        // `portcullis_crate::` or `$crate::` are not this crate's root.
        if text[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        paths(&text[i + "crate::".len()..], &Vec::new(), &mut named);
    }
    for (i, _) in text.match_indices("super::") {
        if text[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        // `super` of `a::b` (from `a/b.rs` or `a/b/mod.rs` alike) is `a`.
        let mut base = module.clone();
        base.pop();
        let mut rest = &text[i + "super::".len()..];
        while let Some(next) = rest.strip_prefix("super::") {
            base.pop();
            rest = next;
        }
        paths(rest, &base, &mut named);
    }
    named
        .into_iter()
        .filter_map(|path| (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| known.contains(p)))
        .filter(|target| !target.starts_with(module) && target != module)
        .collect()
}

/// An import circle among `edges`, if there is one, as the modules along it.
fn circle(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    fn visit(
        at: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        state: &mut BTreeMap<Module, bool>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        state.insert(at.clone(), false);
        stack.push(at.clone());
        for next in edges.get(at).into_iter().flatten() {
            match state.get(next) {
                Some(false) => {
                    let from = stack.iter().position(|m| m == next).unwrap_or(0);
                    return Some(stack[from..].to_vec());
                }
                Some(true) => {}
                None => {
                    if let Some(c) = visit(next, edges, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(at.clone(), true);
        None
    }
    let mut state = BTreeMap::new();
    for start in edges.keys() {
        if !state.contains_key(start)
            && let Some(c) = visit(start, edges, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

fn graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let modules = modules(src);
    let known: BTreeSet<Module> = modules.keys().cloned().collect();
    modules.iter().map(|(module, text)| (module.clone(), references(module, text, &known))).collect()
}

fn show(c: &[Module]) -> String {
    c.iter().map(|m| format!("crate::{}", m.join("::"))).collect::<Vec<_>>().join(" -> ")
}

#[test]
fn no_crate_has_an_import_circle() {
    let root = workspace();
    let mut crates: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .expect("the crates directory")
        .map(|e| e.expect("an entry").path().join("src"))
        .collect();
    crates.push(root.join("examples/protected-service/src"));
    crates.sort();
    let mut checked = 0;
    for src in crates.iter().filter(|s| s.is_dir()) {
        let edges = graph(src);
        assert!(!edges.is_empty(), "no modules found in {}", src.display());
        if let Some(c) = circle(&edges) {
            let name = src.strip_prefix(&root).unwrap_or(src);
            panic!("import circle in {}: {} -> back to the first", name.display(), show(&c));
        }
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} crates found");
}

/// The check finds a circle where there is one, through `use` groups and `super::`, and not
/// where a parent only composes its children.
#[test]
fn the_circle_check_sees_circles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path();
    let write = |path: &str, text: &str| {
        let path = src.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    write("lib.rs", "mod a;\nmod b;\nmod pages;\npub use pages::router;\n");
    write("a.rs", "use crate::{b::{Thing, other}, pages};\n");
    write("b.rs", "pub struct Thing;\n");
    write("pages/mod.rs", "mod login;\npub fn router() { login::page() }\n");
    write("pages/login.rs", "use super::super::b::Thing;\npub fn page() {}\n");
    let edges = graph(src);
    assert_eq!(circle(&edges), None, "{edges:?}");
    let a = vec!["a".to_owned()];
    assert_eq!(edges[&a], BTreeSet::from([vec!["b".to_owned()], vec!["pages".to_owned()]]));

    // b names pages::login, which names b: a circle, found through `super::super::`.
    write("b.rs", "pub struct Thing;\nfn f() { crate::pages::login::page() }\n");
    let c = circle(&graph(src)).expect("a circle");
    assert_eq!(show(&c), "crate::b -> crate::pages::login");
    // A unit-test module is not part of the module's reading.
    write("b.rs", "pub struct Thing;\n#[cfg(test)]\nmod tests {\n    use crate::pages::login::page;\n}\n");
    assert_eq!(circle(&graph(src)), None);
}
