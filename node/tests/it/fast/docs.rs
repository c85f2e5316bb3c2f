//! The documentation stays true to the code it describes: every option of
//! `sumu-node` (from its clap command) has exactly one row in
//! `node/README.md`'s option table, with its environment variable, and the
//! table has no row for an option that does not exist; every metric the
//! node registers has exactly one row in the metrics table; and every
//! relative link of every Markdown file in the repository reaches a file
//! that exists and, with a `#fragment`, a heading of that file. The README
//! was split into a map and the READMEs beside the code (issue 21): these
//! checks keep "documented once" and the links from drifting.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use sumu_node::config::Cli;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("node/ has a parent")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The lines of `## heading` in `markdown`, up to the next `## `.
fn section<'a>(markdown: &'a str, heading: &str) -> Vec<&'a str> {
    let mut lines = markdown.lines().skip_while(|l| *l != heading);
    assert!(lines.next().is_some(), "no section {heading:?}");
    lines.take_while(|l| !l.starts_with("## ")).collect()
}

/// The backticked words of a table row's cells: `| a | b |` -> [[a..], [b..]].
fn cells(row: &str) -> Vec<Vec<String>> {
    row.trim()
        .trim_matches('|')
        .split(" | ")
        .map(|cell| {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

#[test]
fn every_node_option_has_exactly_one_row_with_its_env_var() {
    let readme = read(&repo_root().join("node/README.md"));
    let table = section(&readme, "## Configuration");

    // Every long flag of the command (its options; `--config` too), with
    // its env var. A subcommand's own flags (`cluster status --json`) are
    // not node options: the page names them where it describes the command.
    let mut options: BTreeMap<String, Option<String>> = BTreeMap::new();
    let command = Cli::command();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") {
            continue;
        }
        let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
        options.insert(format!("--{long}"), env);
    }
    let mut subcommands: Vec<_> = command.get_subcommands().cloned().collect();
    while let Some(sub) = subcommands.pop() {
        for arg in sub.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let flag = format!("--{long}");
            if matches!(long, "help" | "version") || options.contains_key(&flag) {
                continue;
            }
            assert!(
                readme.contains(&format!("`{flag}`")),
                "`sumu-node {}`'s {flag} is not described in node/README.md",
                sub.get_name()
            );
        }
        subcommands.extend(sub.get_subcommands().cloned());
    }
    assert!(
        options.len() > 50,
        "the command has its options: {options:?}"
    );

    let mut rows: BTreeMap<String, usize> = BTreeMap::new();
    for row in table.iter().filter(|l| l.starts_with("| `--")) {
        let cells = cells(row);
        let flag = cells[0][0].clone();
        *rows.entry(flag.clone()).or_default() += 1;
        match options.get(&flag) {
            None => panic!("node/README.md documents {flag}, which sumu-node does not have"),
            Some(Some(env)) => assert!(
                cells.get(1).is_some_and(|c| c.contains(env)),
                "{flag}'s row does not name its variable {env}: {row}"
            ),
            Some(None) => {}
        }
    }
    let missing: Vec<_> = options.keys().filter(|o| !rows.contains_key(*o)).collect();
    assert!(
        missing.is_empty(),
        "options with no row in node/README.md's Configuration: {missing:?}"
    );
    let twice: Vec<_> = rows.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "options documented more than once: {twice:?}"
    );
}

#[test]
fn every_metric_has_exactly_one_row() {
    let source = read(&repo_root().join("node/src/metrics.rs"));
    let registered: BTreeSet<String> = source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.starts_with("sumu_") && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        })
        .map(str::to_owned)
        .collect();
    assert!(
        registered.len() > 15,
        "metrics found in metrics.rs: {registered:?}"
    );

    let readme = read(&repo_root().join("node/README.md"));
    let mut rows: BTreeMap<String, usize> = BTreeMap::new();
    for row in section(&readme, "## Metrics")
        .iter()
        .filter(|l| l.starts_with("| `sumu_"))
    {
        let name = cells(row)[0][0]
            .split('{')
            .next()
            .unwrap_or_default()
            .to_owned();
        assert!(
            registered.contains(&name),
            "node/README.md documents {name}, which the node does not register"
        );
        *rows.entry(name).or_default() += 1;
    }
    let missing: Vec<_> = registered
        .iter()
        .filter(|m| !rows.contains_key(*m))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics with no row in node/README.md's Metrics: {missing:?}"
    );
    let twice: Vec<_> = rows.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "metrics documented more than once: {twice:?}"
    );
}

/// GitHub's anchor of a heading: lower case, punctuation dropped (but `-`
/// and `_`), spaces to `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The Markdown of `text` outside fenced code blocks.
fn prose(text: &str) -> String {
    let mut fenced = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn anchors(markdown: &str) -> BTreeSet<String> {
    prose(markdown)
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect()
}

/// `](target)` links of `markdown`, outside code blocks and inline code.
fn links(markdown: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in prose(markdown).lines() {
        // Inline code spans hold examples, not links.
        let text: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = text.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            if let Some(end) = rest.find(')') {
                found.push(rest[..end].to_owned());
                rest = &rest[end..];
            }
        }
    }
    found
}

fn markdown_files(dir: &Path, into: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            // Not ours to check: build output, installed tools, upstream sources.
            let skip = name.starts_with('.')
                || matches!(name.as_str(), "target" | "node_modules" | "src" | "out");
            let vendored =
                path.parent().is_some_and(|p| p.ends_with("node/vendor")) && name != "patches";
            if !skip && !vendored {
                markdown_files(&path, into);
            }
        } else if name.ends_with(".md") {
            into.push(path);
        }
    }
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let root = repo_root();
    let mut files = Vec::new();
    markdown_files(&root, &mut files);
    for vendored in ["node/vendor/actix-http", "node/vendor/rustls"] {
        files.push(root.join(vendored).join("SUMU-PATCH.md"));
    }
    assert!(files.len() >= 8, "markdown files found: {files:?}");

    let mut broken = Vec::new();
    for file in &files {
        let text = read(file);
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (path, fragment) = match link.split_once('#') {
                Some((p, f)) => (p, Some(f)),
                None => (link.as_str(), None),
            };
            let target = if path.is_empty() {
                file.clone()
            } else {
                file.parent().expect("a file has a folder").join(path)
            };
            let shown = file
                .strip_prefix(&root)
                .unwrap_or(file)
                .display()
                .to_string();
            if !target.exists() {
                broken.push(format!("{shown}: {link} (no such file)"));
            } else if let Some(fragment) = fragment {
                if target.extension().is_some_and(|e| e == "md")
                    && !anchors(&read(&target)).contains(fragment)
                {
                    broken.push(format!("{shown}: {link} (no such heading)"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_anchor_of_a_heading_is_githubs() {
    assert_eq!(
        anchor(" sumu.js, the browser client"),
        "sumujs-the-browser-client"
    );
    assert_eq!(
        anchor(" The test commands (`test-fast`, `test-all`)"),
        "the-test-commands-test-fast-test-all"
    );
    assert_eq!(
        anchor(" Notification requests (backend → users)"),
        "notification-requests-backend--users"
    );
    assert_eq!(
        links("see [a](b.md#c) and `[x](not-a-link)`\n```\n[y](z)\n```\n"),
        vec!["b.md#c"]
    );
}
