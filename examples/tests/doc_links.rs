//! The book (`docs/`) and the README hold together:
//!
//! - every relative link points at a file or directory that exists, and
//!   every `#anchor` at a heading of the page it names;
//! - a page of the book links only inside `docs/` (the rendered book holds
//!   nothing else) or to a public `http(s)` site;
//! - every page of the book is in `SUMMARY.md`;
//! - every Rust block of the book is an `{{#include}}` of a file that
//!   exists, with an anchor (`ANCHOR: name`) that exists: the snippets are
//!   compiled code, never `ignore`d text.
//!
//! `scripts/book.sh` runs this after building the book; the second test
//! proves the checker finds each kind of breakage in a broken sample.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

/// A problem found, as `file: message`.
type Problems = Vec<String>;

/// Checks `root/README.md` and every page under `root/docs`.
fn check_repository(root: &Path) -> Problems {
    let docs = root.join("docs");
    let mut problems = Problems::new();
    let mut pages = Vec::new();
    collect_markdown(&docs, &mut pages, &mut problems);
    pages.sort();
    let summary = docs.join("SUMMARY.md");
    let listed = match fs::read_to_string(&summary) {
        Ok(text) => links_of(&text)
            .into_iter()
            .filter_map(|l| split_target(&l.target).0.map(|p| normalize(&docs.join(p))))
            .collect::<BTreeSet<_>>(),
        Err(e) => {
            problems.push(format!("{}: cannot read: {e}", summary.display()));
            BTreeSet::new()
        }
    };
    for page in &pages {
        if *page != summary && !listed.contains(&normalize(page)) {
            problems.push(format!(
                "{}: not in SUMMARY.md (the book would not render it)",
                page.display()
            ));
        }
        check_page(page, Some(&docs), &mut problems);
    }
    check_page(&root.join("README.md"), None, &mut problems);
    problems
}

fn collect_markdown(dir: &Path, out: &mut Vec<PathBuf>, problems: &mut Problems) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            problems.push(format!("{}: cannot list: {e}", dir.display()));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_markdown(&path, out, problems);
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
}

/// Checks one page. `book` is the book's directory when the page is in it.
fn check_page(page: &Path, book: Option<&Path>, problems: &mut Problems) {
    let text = match fs::read_to_string(page) {
        Ok(text) => text,
        Err(e) => {
            problems.push(format!("{}: cannot read: {e}", page.display()));
            return;
        }
    };
    let dir = page.parent().unwrap_or(Path::new("."));
    let here = page.display();
    for link in links_of(&text) {
        let target = link.target.as_str();
        if target.starts_with("https://") || target.starts_with("http://") || target.starts_with("mailto:") {
            continue;
        }
        if target.contains("://") {
            problems.push(format!("{here}:{}: link to a non-public scheme: {target}", link.line));
            continue;
        }
        let (path, anchor) = split_target(target);
        let file = match path {
            Some(p) => normalize(&dir.join(p)),
            None => page.to_path_buf(),
        };
        if let Some(book) = book {
            if !file.starts_with(normalize(book)) {
                problems.push(format!(
                    "{here}:{}: links outside the book: {target} (name the file as `code`, or link a public site)",
                    link.line
                ));
                continue;
            }
        }
        if !file.exists() {
            problems.push(format!("{here}:{}: broken link: {target}", link.line));
            continue;
        }
        if let Some(anchor) = anchor {
            if file.is_dir() || file.extension().is_none_or(|e| e != "md") {
                problems.push(format!(
                    "{here}:{}: anchor on a non-markdown target: {target}",
                    link.line
                ));
                continue;
            }
            match fs::read_to_string(&file) {
                Ok(target_text) if heading_ids(&target_text).contains(anchor) => {}
                Ok(_) => problems.push(format!(
                    "{here}:{}: no heading #{anchor} in {}",
                    link.line,
                    file.display()
                )),
                Err(e) => problems.push(format!("{here}:{}: cannot read {}: {e}", link.line, file.display())),
            }
        }
    }
    if book.is_some() {
        check_rust_blocks(page, &text, problems);
    }
}

/// Every Rust block holds `{{#include FILE:ANCHOR}}` lines only, and each
/// names an existing file holding that anchor.
fn check_rust_blocks(page: &Path, text: &str, problems: &mut Problems) {
    let dir = page.parent().unwrap_or(Path::new("."));
    let here = page.display();
    for block in fenced_blocks(text) {
        let lang = block.info.split([',', ' ']).next().unwrap_or("");
        if lang != "rust" {
            continue;
        }
        if block.info.contains("ignore") {
            problems.push(format!("{here}:{}: an `ignore`d Rust block", block.line));
        }
        let mut includes = 0;
        for (offset, line) in block.body.iter().enumerate() {
            let line_no = block.line + 1 + offset;
            let trimmed = line.trim();
            if trimmed.is_empty() {
                continue;
            }
            let Some(inner) = trimmed
                .strip_prefix("{{#include ")
                .or_else(|| trimmed.strip_prefix("{{#rustdoc_include "))
                .and_then(|s| s.strip_suffix("}}"))
            else {
                problems.push(format!(
                    "{here}:{line_no}: Rust text that is not compiled (include it from the examples crate)"
                ));
                continue;
            };
            includes += 1;
            let (file, anchor) = match inner.trim().split_once(':') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (inner.trim(), None),
            };
            let path = dir.join(file);
            let Ok(source) = fs::read_to_string(&path) else {
                problems.push(format!("{here}:{line_no}: included file missing: {file}"));
                continue;
            };
            match anchor {
                Some(anchor) if anchor.chars().all(|c| c.is_ascii_digit()) || anchor.contains(':') => {
                    problems.push(format!(
                        "{here}:{line_no}: include by line numbers ({anchor}) breaks silently; use an ANCHOR"
                    ));
                }
                Some(anchor) => {
                    let start = format!("ANCHOR: {anchor}\n");
                    let end = format!("ANCHOR_END: {anchor}\n");
                    if !source.contains(&start) || !source.contains(&end) {
                        problems.push(format!("{here}:{line_no}: no ANCHOR {anchor} in {file}"));
                    }
                }
                None => {}
            }
        }
        if includes == 0 && block.body.iter().all(|l| l.trim().is_empty()) {
            problems.push(format!("{here}:{}: an empty Rust block", block.line));
        }
    }
}

/// A link found in markdown text (outside code).
struct Link {
    line: usize,
    target: String,
}

/// A fenced code block.
struct Block {
    line: usize,
    info: String,
    body: Vec<String>,
}

fn fenced_blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, Block)> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match open.take() {
            Some((fence, mut block)) => {
                if trimmed.starts_with(&fence) && trimmed.trim_start_matches(fence.as_str()).trim().is_empty() {
                    blocks.push(block);
                } else {
                    block.body.push(line.to_owned());
                    open = Some((fence, block));
                }
            }
            None => {
                for mark in ["```", "~~~"] {
                    if trimmed.starts_with(mark) {
                        let width = trimmed
                            .chars()
                            .take_while(|c| *c == mark.chars().next().unwrap_or('`'))
                            .count();
                        let fence = mark[..1].repeat(width);
                        let info = trimmed[width..].trim().to_owned();
                        open = Some((
                            fence,
                            Block {
                                line: i + 1,
                                info,
                                body: Vec::new(),
                            },
                        ));
                        break;
                    }
                }
            }
        }
    }
    blocks
}

/// The lines of `text` outside fenced code blocks, with their numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut fence: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        match &fence {
            Some(f) => {
                if trimmed.starts_with(f.as_str()) && trimmed.trim_start_matches(f.as_str()).trim().is_empty() {
                    fence = None;
                }
            }
            None => {
                if let Some(mark) = ["```", "~~~"].into_iter().find(|m| trimmed.starts_with(m)) {
                    let c = mark.chars().next().unwrap_or('`');
                    fence = Some(std::iter::repeat_n(c, trimmed.chars().take_while(|x| *x == c).count()).collect());
                } else {
                    out.push((i + 1, line));
                }
            }
        }
    }
    out
}

/// Removes inline code spans (`` `...` ``) from a line.
fn without_code(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out.push_str(&rest[..start]);
        let ticks = rest[start..].chars().take_while(|c| *c == '`').count();
        let after = &rest[start + ticks..];
        let closing = "`".repeat(ticks);
        if let Some(end) = after.find(&closing) {
            rest = &after[end + ticks..];
        } else {
            out.push_str(&rest[start..]);
            rest = "";
        }
    }
    out.push_str(rest);
    out
}

/// Inline links and images `[text](target)` and reference definitions
/// `[label]: target`, outside code.
fn links_of(text: &str) -> Vec<Link> {
    let mut links = Vec::new();
    for (line_no, line) in prose_lines(text) {
        let line = without_code(line);
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            if let Some(close) = trimmed.find("]:") {
                let target = trimmed[close + 2..].split_whitespace().next().unwrap_or("");
                if !target.is_empty() && !trimmed[..close].contains('(') {
                    links.push(Link {
                        line: line_no,
                        target: target.trim_matches(['<', '>']).to_owned(),
                    });
                    continue;
                }
            }
        }
        let bytes = line.as_bytes();
        let mut i = 0;
        while let Some(pos) = line[i..].find("](") {
            let start = i + pos + 2;
            let mut depth = 0usize;
            let mut end = start;
            while end < bytes.len() {
                match bytes[end] {
                    b'(' => depth += 1,
                    b')' if depth == 0 => break,
                    b')' => depth -= 1,
                    _ => {}
                }
                end += 1;
            }
            let inside = line[start..end].trim();
            let target = if let Some(rest) = inside.strip_prefix('<') {
                rest.split('>').next().unwrap_or("")
            } else {
                inside.split_whitespace().next().unwrap_or("")
            };
            if !target.is_empty() {
                links.push(Link {
                    line: line_no,
                    target: target.to_owned(),
                });
            }
            i = end.min(bytes.len());
            if i >= bytes.len() {
                break;
            }
        }
    }
    links
}

/// The path and the anchor of a link target (`None` path: this page).
fn split_target(target: &str) -> (Option<&str>, Option<&str>) {
    let (path, anchor) = match target.split_once('#') {
        Some((p, a)) => (p, Some(a)),
        None => (target, None),
    };
    let path = path.split('?').next().unwrap_or(path);
    ((!path.is_empty()).then_some(path), anchor.filter(|a| !a.is_empty()))
}

/// The ids mdBook (and GitHub) give the page's headings: the text without
/// markup, lowercased, spaces as `-`, other punctuation dropped; a repeated
/// id gets `-1`, `-2`, ...
fn heading_ids(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let trimmed = line.trim_start();
        let hashes = trimmed.chars().take_while(|c| *c == '#').count();
        if hashes == 0 || hashes > 6 || !trimmed[hashes..].starts_with(' ') {
            continue;
        }
        let title = trimmed[hashes..].trim().trim_end_matches('#').trim();
        let id = normalize_id(&plain_text(title));
        let count = seen.entry(id.clone()).or_insert(0);
        ids.insert(if *count == 0 {
            id.clone()
        } else {
            format!("{id}-{count}")
        });
        *count += 1;
    }
    ids
}

/// Heading text as rendered: code spans keep their text, links their label.
fn plain_text(title: &str) -> String {
    let mut out = String::new();
    let mut chars = title.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' | '*' => {}
            ']' if chars.peek() == Some(&'(') => {
                for c in chars.by_ref() {
                    if c == ')' {
                        break;
                    }
                }
            }
            '[' => {}
            c => out.push(c),
        }
    }
    out
}

fn normalize_id(text: &str) -> String {
    text.chars()
        .filter_map(|c| {
            if c.is_alphanumeric() || c == '_' || c == '-' {
                Some(c.to_lowercase().next().unwrap_or(c))
            } else if c.is_whitespace() {
                Some('-')
            } else {
                None
            }
        })
        .collect()
}

/// `a/b/../c` as `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn the_book_and_the_readme_hold_together() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let problems = check_repository(&normalize(&root));
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_checker_finds_each_kind_of_breakage() -> std::io::Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let root = std::env::temp_dir().join(format!("es-doc-links-{}-{nanos}", std::process::id()));
    let docs = root.join("docs");
    fs::create_dir_all(docs.join("part"))?;
    fs::create_dir_all(root.join("src"))?;
    fs::write(
        root.join("src/code.rs"),
        "// ANCHOR: good\nfn good() {}\n// ANCHOR_END: good\n",
    )?;
    fs::write(
        root.join("README.md"),
        "# Readme\n[book](docs/a.md#first-part) [gone](docs/gone.md)\n",
    )?;
    fs::write(docs.join("SUMMARY.md"), "# Summary\n- [A](a.md)\n- [B](part/b.md)\n")?;
    fs::write(
        docs.join("a.md"),
        "# First part\n\
         ## Second `part` (again)\n\
         [ok](part/b.md#b-title) [self](#second-part-again) [site](https://example.org/x)\n\
         [missing](nope.md) [bad anchor](part/b.md#no-such-heading) [outside](../src/code.rs)\n\
         `[not a link](in-code.md)`\n\
         ```text\n[not a link](in-block.md)\n```\n\
         ```rust\n{{#include ../src/code.rs:good}}\n```\n\
         ```rust,ignore\nfn text_only() {}\n```\n\
         ```rust\n{{#include ../src/code.rs:missing_anchor}}\n{{#include ../src/code.rs:1:2}}\n```\n\
         [ref]: part/b.md#b-title\n\
         [ref2]: part/c.md\n",
    )?;
    fs::write(docs.join("part/b.md"), "# B title\n[back](../a.md#first-part)\n")?;
    fs::write(docs.join("orphan.md"), "# Orphan\n")?;

    let problems = check_repository(&root);
    fs::remove_dir_all(&root)?;
    let expected = [
        "gone.md",                        // README: broken link
        "nope.md",                        // broken link
        "no heading #no-such-heading",    // broken anchor
        "links outside the book",         // ../src/code.rs from a book page
        "an `ignore`d Rust block",        // rust,ignore
        "Rust text that is not compiled", // its body
        "no ANCHOR missing_anchor",       // include of a missing anchor
        "by line numbers",                // include by lines
        "part/c.md",                      // broken reference definition
        "orphan.md: not in SUMMARY.md",   // a page the book would not render
    ];
    for needle in expected {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "expected a problem mentioning {needle:?}, got:\n{}",
            problems.join("\n")
        );
    }
    assert_eq!(
        problems.len(),
        expected.len(),
        "unexpected problems:\n{}",
        problems.join("\n")
    );
    Ok(())
}
