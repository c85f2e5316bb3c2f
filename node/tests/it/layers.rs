//! The import graph of `node/src`: no cycle between files, and no import
//! that points up the layers `lib.rs` states (leaves → hub → engine →
//! session → http → server). It reads the sources as text: every
//! `crate::…` and `super::…` path and every `use` of a child module is an
//! edge from the file that names it to the module file it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layer of each top-level module; a module may use its own layer and
/// those below.
fn layer(top: &str) -> usize {
    match top {
        "sys" | "clock" | "config" | "logging" | "metrics" | "close" | "outbound" | "auth"
        | "limits" | "proxy_protocol" | "tls" => 0,
        "hub" => 1,
        "engine" => 2,
        "session" | "demo" => 3,
        "http" => 4,
        "server" => 5,
        "lib" | "main" => 6,
        other => panic!("module {other} has no layer: add it to lib.rs's list and to this test"),
    }
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `engine/aws/mesh.rs` → `engine::aws::mesh`; `engine/mod.rs` → `engine`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without comments and string literals.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let mut in_str = false;
        let mut prev = ' ';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if !in_str && c == '/' && chars.peek() == Some(&'/') {
                break;
            }
            if c == '"' && prev != '\\' {
                in_str = !in_str;
            } else if !in_str {
                out.push(c);
            }
            prev = c;
        }
        out.push('\n');
    }
    out
}

/// The code without `#[cfg(test)]` modules: tests are not part of the
/// graph (and `super` inside them means the file's own module).
fn without_tests(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(i) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let Some(open) = after.find('{') else {
            rest = "";
            break;
        };
        let mut depth = 0;
        let mut end = after.len();
        for (j, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + j + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Expands `use` trees: `a::{b, c::{d, e}}` → [a::b, a::c::d, a::c::e].
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or("").trim().to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .filter(|i| !i.trim().is_empty())
        .flat_map(expand)
        .map(|p| format!("{prefix}{p}"))
        .collect()
}

/// Every path the code names: `use` trees expanded, plus inline
/// `crate::…`/`super::…` paths.
fn paths_in(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().last();
        let after = &rest[i + 4..];
        let end = after.find(';').unwrap_or(after.len());
        if before.is_none_or(|c| !c.is_alphanumeric() && c != '_') {
            paths.extend(expand(&after[..end]));
        }
        rest = &after[end.min(after.len())..];
    }
    for anchor in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(i) = rest.find(anchor) {
            let tail = &rest[i..];
            let len = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            paths.push(tail[..len].trim_end_matches(':').to_string());
            rest = &rest[i + anchor.len()..];
        }
    }
    paths
}

#[test]
fn node_src_imports_point_down_and_never_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let modules: BTreeMap<String, PathBuf> = files
        .iter()
        .map(|f| (module_of(&src, f), f.clone()))
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &modules {
        let code = without_tests(&code_of(&std::fs::read_to_string(file).expect("read")));
        let here: Vec<&str> = if module == "lib" || module == "main" {
            Vec::new()
        } else {
            module.split("::").collect()
        };
        let children: BTreeSet<String> = code
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                let l = l.strip_prefix("pub(crate) ").unwrap_or(l);
                let l = l.strip_prefix("pub ").unwrap_or(l);
                l.strip_prefix("mod ")?
                    .strip_suffix(';')
                    .map(str::to_string)
            })
            .collect();
        for path in paths_in(&code) {
            let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            let mut base: Vec<&str> = match segs.first() {
                Some(&"crate") => Vec::new(),
                Some(&"super") => {
                    let mut b = here.clone();
                    b.pop();
                    b
                }
                Some(first) if children.contains(*first) => here.clone(),
                _ => continue,
            };
            let skip = usize::from(matches!(segs.first(), Some(&"crate") | Some(&"super")));
            let mut target = None;
            for seg in &segs[skip..] {
                if *seg == "super" {
                    base.pop();
                    continue;
                }
                base.push(seg);
                let candidate = base.join("::");
                if modules.contains_key(&candidate) {
                    target = Some(candidate);
                } else {
                    break;
                }
            }
            let target = target.unwrap_or_else(|| {
                if base.len() > 1 {
                    base[..base.len() - 1].join("::")
                } else {
                    "lib".to_string()
                }
            });
            if &target != module && modules.contains_key(&target) && target != "lib" {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }

    let top = |m: &str| m.split("::").next().unwrap_or(m).to_string();
    let mut upward = Vec::new();
    for (from, tos) in &edges {
        for to in tos {
            if layer(&top(to)) > layer(&top(from)) {
                upward.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that point up a layer:\n{}",
        upward.join("\n")
    );

    // Depth-first search for a cycle among files.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(m) {
            Some(1) => {
                let start = stack.iter().position(|s| s == m).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(m.to_string());
                return Some(cycle);
            }
            Some(2) => return None,
            _ => {}
        }
        state.insert(m.to_string(), 1);
        stack.push(m.to_string());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, edges, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(m.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in modules.keys() {
        let mut stack = Vec::new();
        if let Some(cycle) = visit(m, &edges, &mut state, &mut stack) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
    // The graph is not empty by accident: the hub is used by the engines.
    assert!(edges
        .get("engine::aws::router")
        .is_some_and(|t| t.contains("hub")));
}

#[test]
fn use_trees_expand() {
    assert_eq!(
        expand("super::{a, b::{C, d as e}}"),
        vec!["super::a", "super::b::C", "super::b::d"]
    );
}
