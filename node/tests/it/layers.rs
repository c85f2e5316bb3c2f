//! The import graph of `node/src`: no cycle between files, and no import
//! that points up the layers `lib.rs` states (leaves → hub → engine →
//! session → http → server). It reads the sources as text: every
//! `crate::…`, `super::…` and `self::…` path and every path through a child
//! module (`memory::Bus`), in a `use` or written inline in code, is an edge
//! from the file that names it to the module file it names. A parent that
//! names its child inline while the child imports the parent is a loop like
//! any other.

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
    paths.extend(inline_paths(&without_uses(code)));
    paths
}

/// The code without its `use` statements (their trees are read by
/// [`expand`]; scanned inline, `use a::{b::c}` would look like a path `b::c`).
fn without_uses(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().last();
        if before.is_none_or(|c| !c.is_alphanumeric() && c != '_') {
            out.push_str(&rest[..i]);
            let after = &rest[i..];
            rest = &after[after.find(';').map_or(after.len(), |e| e + 1)..];
        } else {
            out.push_str(&rest[..i + 4]);
            rest = &rest[i + 4..];
        }
    }
    out.push_str(rest);
    out
}

/// Every path written inline in code, `a::b::c`: `crate::…`, `super::…`,
/// `self::…`, and paths through a child module (`memory::Bus`); the caller
/// keeps those whose first segment names a module.
fn inline_paths(code: &str) -> Vec<String> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("::") {
        // The start of the path this `::` belongs to.
        let start = rest[..i]
            .char_indices()
            .rev()
            .find(|&(_, c)| !(ident(c) || c == ':'))
            .map_or(0, |(j, c)| j + c.len_utf8());
        let tail = &rest[start..];
        let len = tail
            .find(|c: char| !(ident(c) || c == ':'))
            .unwrap_or(tail.len());
        let path = tail[..len].trim_matches(':');
        if path.contains("::") {
            paths.push(path.to_string());
        }
        rest = &rest[start + len.max(i - start + 2)..];
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
                Some(&"self") => here.clone(),
                Some(&"super") => {
                    let mut b = here.clone();
                    b.pop();
                    b
                }
                Some(first) if children.contains(*first) => here.clone(),
                _ => continue,
            };
            let skip = usize::from(matches!(
                segs.first(),
                Some(&"crate") | Some(&"super") | Some(&"self")
            ));
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

    // Files that reach each other through imports are in a loop; name every
    // loop (its files), so one run shows them all.
    fn reach(m: &str, edges: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![m.to_string()];
        while let Some(n) = todo.pop() {
            for next in edges.get(&n).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    }
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        modules.keys().map(|m| (m, reach(m, &edges))).collect();
    let loops: BTreeSet<Vec<&String>> = modules
        .keys()
        .filter(|m| reaches[m].contains(*m))
        .map(|m| {
            modules
                .keys()
                .filter(|n| reaches[m].contains(*n) && reaches[n].contains(m))
                .collect()
        })
        .collect();
    let loops: Vec<String> = loops
        .iter()
        .map(|l| l.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", "))
        .collect();
    assert!(
        loops.is_empty(),
        "import cycles (files that import each other):\n{}",
        loops.join("\n")
    );
    // The graph is not empty by accident: the hub is used by the engines,
    // and a path written inline counts (`engine` names `bus::Bus` only in a
    // field's type).
    assert!(edges
        .get("engine::aws::router")
        .is_some_and(|t| t.contains("hub")));
    assert!(edges
        .get("engine")
        .is_some_and(|t| t.contains("engine::bus")));
}

#[test]
fn use_trees_expand() {
    assert_eq!(
        expand("super::{a, b::{C, d as e}}"),
        vec!["super::a", "super::b::C", "super::b::d"]
    );
}

#[test]
fn inline_paths_are_found_outside_use_statements() {
    let code = "use a::{b::c};\nlet bus: Option<memory::Bus> = crate::x::y(super::z::W);\nVec::<u8>::new()";
    assert_eq!(
        inline_paths(&without_uses(code)),
        vec!["memory::Bus", "crate::x::y", "super::z::W"]
    );
}
