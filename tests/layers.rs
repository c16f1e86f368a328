//! The crate's layers, checked from its source: which module may name which.
//!
//! `files`, `sync`, `error`, `identity` and `batch` are leaves; `wal/`
//! (files, frames, LSNs, syncs) and `state/` (redb and the overlay) know
//! nothing of each other nor of anything above them; `checkpoint/` runs
//! passes over any store that implements its trait; `core` joins the WAL,
//! the state and the checkpoint; `store` is the façade and nothing but
//! `lib.rs` names it. The import graph between top-level modules has no
//! cycle. Comments and `#[cfg(test)]` modules are not imports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `crate::<module>` paths named by each top-level module of `src/` (the
/// command line, a separate crate over the public API, is left out).
fn imports() -> BTreeMap<String, BTreeSet<(String, String)>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if relative != "cli" {
                    stack.push(path);
                }
                continue;
            }
            if !relative.ends_with(".rs") || relative == "main.rs" || relative == "lib.rs" {
                continue;
            }
            let module = relative.split('/').next().unwrap().trim_end_matches(".rs").to_string();
            // `super` from a top-level file or a mod.rs reaches the crate
            // root; from a file one directory down, `super::super` does.
            let depth = if relative.contains('/') && !relative.ends_with("mod.rs") { 2 } else { 1 };
            let code = without_test_items(&code_only(&std::fs::read_to_string(&path).unwrap()));
            let named = graph.entry(module.clone()).or_default();
            for target in crate_paths(&code, depth) {
                if target != module {
                    named.insert((target, relative.clone()));
                }
            }
        }
    }
    graph
}

/// `source` with comments removed and the contents of string and char
/// literals blanked, so that neither can look like a path or a brace.
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            out.push('"');
            i += 1;
        } else if c == '\'' && (chars.get(i + 2) == Some(&'\'') || next == Some('\\')) {
            // A char literal ('x' or '\n'); a lifetime ('a) is left alone.
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            out.push_str("' '");
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The top-level modules a piece of code names through `crate::` paths
/// (grouped imports `crate::{a::X, b}` included) and through `super::`
/// paths that climb to the crate root. A root item (`crate::Store`, a
/// re-export) counts as naming `lib`.
fn crate_paths(code: &str, depth: usize) -> Vec<String> {
    let first_segment = |path: &str| -> String {
        let name: String = path
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
            "lib".to_string()
        } else {
            name
        }
    };
    let mut named = Vec::new();
    let root = "super::".repeat(depth);
    for prefix in ["crate::", root.as_str()] {
        for (at, _) in code.match_indices(prefix) {
            // `super::super::x` also contains `super::x`: only whole climbs.
            if prefix.starts_with("super") && code[..at].ends_with("super::") {
                continue;
            }
            let rest = &code[at + prefix.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let mut depth = 0;
                let mut item = String::new();
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            named.push(first_segment(&item));
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    item.push(c);
                }
                named.push(first_segment(&item));
            } else {
                named.push(first_segment(rest));
            }
        }
    }
    named.retain(|name| !name.is_empty() && name != "self");
    named
}

/// `code` without the items under `#[cfg(test)]` (up to the end of the
/// braces that follow, or of the statement).
fn without_test_items(code: &str) -> String {
    let mut kept = String::new();
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        kept.push_str(&rest[..at]);
        let item = &rest[at..];
        let (open, end) = (item.find('{'), item.find(';'));
        let skip = match (open, end) {
            (Some(open), end) if end.is_none_or(|end| open < end) => {
                let mut depth = 0;
                let mut close = item.len();
                for (index, c) in item.char_indices().skip(open) {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    if depth == 0 {
                        close = index + 1;
                        break;
                    }
                }
                close
            }
            (_, Some(end)) => end + 1,
            _ => item.len(),
        };
        rest = &item[skip..];
    }
    kept.push_str(rest);
    kept
}

fn names(
    graph: &BTreeMap<String, BTreeSet<(String, String)>>,
    module: &str,
) -> BTreeSet<(String, String)> {
    graph.get(module).cloned().unwrap_or_default()
}

#[test]
fn only_lib_rs_names_the_store_facade() {
    let graph = imports();
    let offenders: Vec<_> = graph
        .values()
        .flatten()
        .filter(|(target, _)| target == "store")
        .map(|(_, file)| file.clone())
        .collect();
    assert!(offenders.is_empty(), "crate::store named outside lib.rs by {offenders:?}");
}

#[test]
fn the_wal_knows_nothing_of_state_or_the_layers_above() {
    // Not even `batch`: the scan decodes payloads with the decoder the layer
    // above hands it.
    let allowed = ["error", "files", "identity", "sync"];
    let graph = imports();
    let offending: Vec<_> = names(&graph, "wal")
        .into_iter()
        .filter(|(target, _)| !allowed.contains(&target.as_str()))
        .collect();
    assert!(offending.is_empty(), "wal/ names {offending:?}");
}

#[test]
fn the_state_knows_nothing_of_the_wal_or_the_layers_above() {
    let allowed = ["batch", "error", "files", "identity", "sync"];
    let graph = imports();
    let offending: Vec<_> = names(&graph, "state")
        .into_iter()
        .filter(|(target, _)| !allowed.contains(&target.as_str()))
        .collect();
    assert!(offending.is_empty(), "state/ names {offending:?}");
}

#[test]
fn checkpoint_runs_passes_without_knowing_the_store() {
    let allowed = ["config", "error", "sync"];
    let graph = imports();
    let offending: Vec<_> = names(&graph, "checkpoint")
        .into_iter()
        .filter(|(target, _)| !allowed.contains(&target.as_str()))
        .collect();
    assert!(offending.is_empty(), "checkpoint/ names {offending:?}");
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = imports();
    let edges: BTreeMap<&str, BTreeSet<&str>> = graph
        .iter()
        .map(|(module, named)| {
            (module.as_str(), named.iter().map(|(target, _)| target.as_str()).collect())
        })
        .collect();
    // Depth-first search; a module met again on the current path closes a cycle.
    fn visit<'a>(
        module: &'a str,
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if let Some(at) = path.iter().position(|m| *m == module) {
            panic!("import cycle: {}", [&path[at..], &[module]].concat().join(" -> "));
        }
        if !done.insert(module) {
            return;
        }
        path.push(module);
        for next in edges.get(module).into_iter().flatten() {
            visit(next, edges, path, done);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for module in edges.keys() {
        visit(module, &edges, &mut Vec::new(), &mut done);
    }
    assert!(done.len() >= 15, "the scan found only {done:?}");
}

/// Who may name whom, module by module: the table of docs/DESIGN.md ("Where
/// things are"). A new edge is a design decision: make it here and there.
const ALLOWED: &[(&str, &[&str])] = &[
    ("identity", &[]),
    ("sync", &[]),
    ("error", &["identity"]),
    ("files", &["error"]),
    ("batch", &["error"]),
    ("wal", &["error", "files", "identity", "sync"]),
    ("state", &["batch", "error", "files", "identity", "sync"]),
    ("config", &["error", "wal"]),
    ("checkpoint", &["config", "error", "sync"]),
    ("report", &["checkpoint", "error", "state", "wal"]),
    ("open", &["batch", "config", "error", "files", "identity", "report", "state", "wal"]),
    ("ticket", &["error", "wal"]),
    ("held", &["checkpoint", "core", "error", "sync", "wal"]),
    (
        "core",
        &["batch", "checkpoint", "config", "error", "identity", "report", "state", "sync", "wal"],
    ),
    (
        "store",
        &[
            "batch",
            "checkpoint",
            "config",
            "core",
            "error",
            "held",
            "identity",
            "open",
            "report",
            "state",
            "sync",
            "ticket",
            "wal",
        ],
    ),
    ("inspect", &["batch", "config", "error", "files", "identity", "open", "state", "wal"]),
    ("salvage", &["batch", "config", "error", "files", "identity", "state", "wal"]),
    // Above everything, for tests only: the public API (through the crate
    // root, `lib`) and the seams it puts the simulated disk under.
    ("testing", &["lib", "state", "sync", "wal"]),
];

#[test]
fn every_module_names_only_what_the_design_allows() {
    let graph = imports();
    let mut offending = Vec::new();
    for (module, named) in &graph {
        let Some((_, allowed)) = ALLOWED.iter().find(|(name, _)| name == module) else {
            offending.push(format!("{module}: a module the table does not list"));
            continue;
        };
        for (target, file) in named {
            if !allowed.contains(&target.as_str()) {
                offending.push(format!("{file} names {target}"));
            }
        }
    }
    assert!(offending.is_empty(), "{offending:#?}");
}
