//! The example's room plan, read from its sources: HTTP (axum) lives in
//! `api/` only, and no two rooms import each other in a circle.
//!
//! A room is a source file's module; a module and its own submodules
//! count as one place (a `mod.rs` re-exporting its children, a child using
//! its parent's items), every other `crate::`, `super::` or `self::` path
//! is an edge from the file that names it to the module that holds it.
//! Comments and `#[cfg(test)]` modules are left out: a doc link or a test
//! is not an import.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A module's path below the crate root (`["api", "access"]`).
type Module = Vec<String>;

/// The library's source files, by module (the binaries under `src/bin`
/// and `src/main.rs` are crates of their own).
fn library_sources() -> BTreeMap<Module, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&root, &mut files);
    let mut modules = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&root).expect("a file below src");
        let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        if parts.first().map(String::as_str) == Some("bin") || parts == ["main.rs"] {
            continue;
        }
        let last = parts.pop().expect("a file name");
        let stem = last.trim_end_matches(".rs");
        if stem != "mod" && stem != "lib" {
            parts.push(stem.to_owned());
        }
        let text = fs::read_to_string(&file).expect("readable source");
        modules.insert(parts, code_only(&text));
    }
    // A file declared `#[cfg(test)] mod name;` is a test, not a room.
    let tests: Vec<Module> = modules
        .iter()
        .flat_map(|(module, text)| {
            test_files(text).into_iter().map(move |name| {
                let mut child = module.clone();
                child.push(name);
                child
            })
        })
        .collect();
    for test in tests {
        modules.remove(&test);
    }
    modules
}

/// The modules `code` declares test-only in files of their own
/// (`#[cfg(test)] mod name;`).
fn test_files(code: &str) -> Vec<String> {
    test_attributes(code)
        .filter_map(|(_, item)| {
            let name = item.strip_prefix("mod ")?.split(';').next()?.trim();
            name.chars().all(is_ident).then(|| name.to_owned())
        })
        .collect()
}

/// Each `#[cfg(test)]` in `code`: where it starts, and the item after it.
fn test_attributes(code: &str) -> impl Iterator<Item = (usize, &str)> {
    const ATTRIBUTE: &str = "#[cfg(test)]";
    code.match_indices(ATTRIBUTE)
        .map(move |(at, _)| (at, code[at + ATTRIBUTE.len()..].trim_start()))
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable src directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `text` without comments and without its inline `#[cfg(test)]` modules
/// (`mod tests { ... }`, which close the file in this crate).
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |end| &after[end + 2..]);
        } else if rest.starts_with("//") {
            rest = rest.find('\n').map_or("", |end| &rest[end..]);
        } else if let Some(raw) = raw_string_len(rest) {
            out.push_str(&rest[..raw]);
            rest = &rest[raw..];
        } else if let Some(quoted) = char_literal_len(rest) {
            out.push_str(&rest[..quoted]);
            rest = &rest[quoted..];
        } else if rest.starts_with('"') {
            // A string literal is kept whole ("http://" is no comment).
            let mut end = 1;
            let bytes = rest.as_bytes();
            while end < bytes.len() && bytes[end] != b'"' {
                end += if bytes[end] == b'\\' { 2 } else { 1 };
            }
            let end = (end + 1).min(rest.len());
            out.push_str(&rest[..end]);
            rest = &rest[end..];
        } else {
            let c = rest.chars().next().expect("not empty");
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    let inline_tests = test_attributes(&out).find_map(|(at, item)| {
        let declaration = item.strip_prefix("mod ")?;
        let opens = declaration.find('{')?;
        (declaration.find(';').is_none_or(|end| opens < end)).then_some(at)
    });
    if let Some(at) = inline_tests {
        out.truncate(at);
    }
    out
}

/// The length of the raw string literal (`r"..."`, `r#"..."#`) that
/// starts `text`, if one does.
fn raw_string_len(text: &str) -> Option<usize> {
    let after_r = text.strip_prefix('r')?;
    let hashes = after_r.len() - after_r.trim_start_matches('#').len();
    let body = after_r[hashes..].strip_prefix('"')?;
    let close = format!("\"{}", "#".repeat(hashes));
    let end = body.find(&close)?;
    Some(1 + hashes + 1 + end + close.len())
}

/// The length of the character literal (`'"'`, `'\''`) that starts
/// `text`, if one does (a lifetime such as `'a` is none).
fn char_literal_len(text: &str) -> Option<usize> {
    let rest = text.strip_prefix('\'')?;
    if let Some(escaped) = rest.strip_prefix('\\') {
        let c = escaped.chars().next()?;
        let end = escaped[c.len_utf8()..].find('\'')?;
        return Some(2 + c.len_utf8() + end + 1);
    }
    let c = rest.chars().next()?;
    rest[c.len_utf8()..].starts_with('\'').then(|| 1 + c.len_utf8() + 1)
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path `text` names from `crate`, `super` or `self`, resolved
/// against `module` (braced groups expanded).
fn named_paths(module: &Module, text: &str) -> Vec<Module> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices("::") {
        // The segment before this `::` must be a whole `crate`/`super`/`self`
        // that starts the path.
        let head_start = text[..at].rfind(|c: char| !is_ident(c)).map_or(0, |i| i + 1);
        let head = &text[head_start..at];
        let base: Module = match head {
            "crate" => Vec::new(),
            "super" => module[..module.len().saturating_sub(1)].to_vec(),
            "self" => module.clone(),
            _ => continue,
        };
        if text[..head_start].ends_with("::") {
            continue;
        }
        expand(&base, &text[at + 2..], &mut found);
    }
    found
}

/// Adds the paths of the use tree at the start of `text` below `base`.
fn expand(base: &Module, text: &str, found: &mut Vec<Module>) {
    let mut path = base.clone();
    let mut rest = text.trim_start();
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        expand(&path, &group[start..i], found);
                        return;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(&path, &group[start..i], found);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            return;
        }
        let end = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        let segment = &rest[..end];
        match segment {
            "super" => {
                path.pop();
            }
            "self" => {}
            _ => path.push(segment.to_owned()),
        }
        rest = rest[end..].trim_start();
        match rest.strip_prefix("::") {
            Some(after) => rest = after.trim_start(),
            None => break,
        }
    }
    found.push(path);
}

/// The module holding `path`: its longest prefix that is a source file.
fn holder<'a>(modules: &'a BTreeMap<Module, String>, path: &[String]) -> Option<&'a Module> {
    (0..=path.len())
        .rev()
        .find_map(|n| modules.get_key_value(&path[..n]).map(|(k, _)| k))
}

fn related(a: &Module, b: &Module) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn edges(modules: &BTreeMap<Module, String>) -> BTreeMap<Module, BTreeSet<Module>> {
    modules
        .iter()
        .map(|(module, text)| {
            let targets = named_paths(module, text)
                .iter()
                .filter_map(|path| holder(modules, path))
                .filter(|target| !related(module, target))
                .cloned()
                .collect();
            (module.clone(), targets)
        })
        .collect()
}

fn name(module: &Module) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

/// A cycle through `graph`, as the modules along it, if there is one.
fn find_cycle(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &Module,
        graph: &BTreeMap<Module, BTreeSet<Module>>,
        marks: &mut BTreeMap<Module, Mark>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        marks.insert(node.clone(), Mark::Open);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            match marks.get(next) {
                Some(Mark::Open) => {
                    let from = stack.iter().position(|m| m == next).unwrap_or(0);
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(cycle) = visit(next, graph, marks, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        marks.insert(node.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if !marks.contains_key(node) {
            if let Some(cycle) = visit(node, graph, &mut marks, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

#[test]
fn no_two_rooms_import_each_other_in_a_circle() {
    let modules = library_sources();
    assert!(modules.len() > 20, "read too few sources: {:?}", modules.keys());
    let graph = edges(&modules);
    if let Some(cycle) = find_cycle(&graph) {
        let names: Vec<String> = cycle.iter().map(name).collect();
        panic!("import cycle: {}", names.join(" -> "));
    }
}

#[test]
fn http_lives_in_api_only() {
    let below: Vec<String> = library_sources()
        .iter()
        .filter(|(module, text)| module.first().map(String::as_str) != Some("api") && text.contains("axum"))
        .map(|(module, _)| name(module))
        .collect();
    assert!(below.is_empty(), "axum outside api/: {below:?}");
}

/// The checker itself: the cycle the example once had (`app` ->
/// `backends` -> `publishing` -> `app`) is found, a parent re-exporting
/// its child is not one, and a doc link is not an import.
#[test]
fn the_checker_sees_a_cycle_and_only_a_real_one() {
    let module = |path: &str| -> Module { path.split("::").map(str::to_owned).collect() };
    let sources = |files: &[(&str, &str)]| -> BTreeMap<Module, String> {
        files.iter().map(|(m, t)| (module(m), code_only(t))).collect()
    };
    let circle = sources(&[
        ("app", "use crate::backends::Backends;"),
        ("backends", "use crate::{publishing::{self, Relay}, config};"),
        ("publishing", "fn f(s: &super::app::State) {}"),
        ("config", ""),
    ]);
    let cycle = find_cycle(&edges(&circle)).expect("the circle is found");
    assert_eq!(cycle.len(), 4, "{cycle:?}");
    let fine = sources(&[
        ("api", "pub use self::access::owner_of; use crate::domain::Account;"),
        ("api::access", "use super::ApiError; /// see [`crate::app`]\nfn f() {}"),
        (
            "app",
            "// crate::api::access\nconst URL: &str = \"http://x\"; use crate::api::access;",
        ),
        ("domain", ""),
    ]);
    assert_eq!(find_cycle(&edges(&fine)), None);
    assert_eq!(
        code_only("a // b\nc /* d */ e \"// f\"\n#[cfg(test)]\nmod tests { g }"),
        "a \nc  e \"// f\"\n"
    );
    // A quote inside a character or raw string literal opens no string, so
    // a `//` in a string after it is no comment hiding the rest of its line.
    let quoted = sources(&[
        (
            "api",
            "fn f<'a>(s: &'a str) { s.split('\"'); let u = \"http://x\"; use crate::app::X; }",
        ),
        (
            "app",
            "const J: &str = r#\"a\"b\"#; const U: &str = \"http://y\"; use crate::api::Y;",
        ),
    ]);
    assert!(find_cycle(&edges(&quoted)).is_some(), "{:?}", edges(&quoted));
    // A test module in a file of its own is no room, and code after its
    // declaration is still read.
    assert_eq!(
        code_only("#[cfg(test)]\nmod tests;\nuse crate::x;"),
        "#[cfg(test)]\nmod tests;\nuse crate::x;"
    );
    assert_eq!(test_files("#[cfg(test)]\nmod tests;\nmod real;"), ["tests"]);
    assert!(
        !library_sources().contains_key(&module("domain::tests")),
        "domain/tests.rs is a test"
    );
    assert_eq!(code_only("'\"' // x"), "'\"' ");
    assert_eq!(code_only("'\\\"' // x"), "'\\\"' ");
}
