//! Every setting the server reads from the environment is documented in
//! `.env.example`.

use std::path::Path;

/// The names passed as string literals to the settings readers
/// (`get("NAME")`, `num("NAME", ..)`, `std::env::var("NAME")`) in `dir`.
fn names_read_in(dir: &Path, names: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            names_read_in(&path, names);
            continue;
        }
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for reader in ["get(\"", "num(\"", "var(\""] {
            for (at, _) in text.match_indices(reader) {
                let rest = &text[at + reader.len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if name.len() > 1 && rest[name.len()..].starts_with('"') {
                    names.push(name);
                }
            }
        }
    }
}

#[test]
fn every_setting_read_is_in_the_env_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names = Vec::new();
    names_read_in(&root.join("src"), &mut names);
    names.sort();
    names.dedup();
    assert!(names.len() > 30, "the scan found too few settings: {names:?}");
    let example = std::fs::read_to_string(root.join(".env.example")).unwrap();
    let documented = |name: &str| {
        example.lines().any(|line| {
            let line = line.trim_start_matches('#').trim_start();
            line.starts_with(&format!("{name}="))
                || line
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .any(|w| w == name)
        })
    };
    let missing: Vec<&String> = names.iter().filter(|n| !documented(n)).collect();
    assert!(missing.is_empty(), "settings read but not in .env.example: {missing:?}");
}
