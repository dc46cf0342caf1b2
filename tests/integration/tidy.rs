//! Tidy checks over the source tree (rust-analyzer's habit): every Rust file says what it is, the
//! crate graph is the one `crates/ARCHITECTURE.md` documents, and every rejection code and metric
//! name appears in the docs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    rust_files(&root.join("tests"), &mut files);
    assert!(files.len() > 20, "found only {} files", files.len());
    let undocumented: Vec<_> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().starts_with("//!"))
        .map(|f| f.strip_prefix(&root).unwrap_or(f).display().to_string())
        .collect();
    assert!(
        undocumented.is_empty(),
        "files without a //! doc: {undocumented:?}"
    );
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every Markdown document of the repository, as one text.
fn docs() -> String {
    let root = root();
    let mut text = read(&root.join("README.md"));
    text += &read(&root.join("crates/ARCHITECTURE.md"));
    text += &read(&root.join("deploy/README.md"));
    for entry in std::fs::read_dir(root.join("crates")).unwrap().flatten() {
        let readme = entry.path().join("README.md");
        if readme.is_file() {
            text += &read(&readme);
        }
    }
    text
}

/// The crate graph as `crates/ARCHITECTURE.md` states it: crate → the crates of ours it
/// depends on.
fn documented_graph() -> BTreeMap<String, BTreeSet<String>> {
    let doc = read(&root().join("crates/ARCHITECTURE.md"));
    let block = doc
        .split("```crates\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("crates/ARCHITECTURE.md has a ```crates block");
    block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let (name, deps) = line.split_once(':').expect("`crate: deps` lines");
            let deps = deps
                .split_whitespace()
                .map(|d| format!("fundflow-{d}"))
                .collect();
            (name.trim().to_owned(), deps)
        })
        .collect()
}

/// The crate graph as the manifests have it (normal dependencies only).
fn actual_graph() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| {
            let deps = package["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].is_null())
                .filter_map(|d| d["name"].as_str())
                .filter(|name| name.starts_with("fundflow-"))
                .map(str::to_owned)
                .collect();
            (package["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

#[test]
fn the_crate_graph_is_the_documented_one() {
    let documented = documented_graph();
    let actual = actual_graph();
    assert!(actual.len() >= 10, "{actual:?}");
    for (name, deps) in &actual {
        assert_eq!(
            documented.get(name),
            Some(deps),
            "{name}: crates/ARCHITECTURE.md's crate graph says {:?}, Cargo.toml says {deps:?}; an arrow between crates is a design decision: change both on purpose",
            documented.get(name)
        );
    }
    let gone: Vec<_> = documented
        .keys()
        .filter(|n| !actual.contains_key(*n))
        .collect();
    assert!(
        gone.is_empty(),
        "documented crates that do not exist: {gone:?}"
    );
    // testkit is for tests only.
    for (name, deps) in &actual {
        assert!(
            !deps.contains("fundflow-testkit"),
            "{name} depends on the testkit outside its tests"
        );
    }
}

#[test]
fn every_rejection_code_is_documented() {
    let docs = docs();
    let missing: Vec<_> = fundflow_domain::RejectCode::ALL
        .iter()
        .map(|code| code.as_str())
        .filter(|code| !docs.contains(&format!("`{code}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "rejection codes no document names: {missing:?}"
    );
}

/// The names given to `counter!`, `gauge!` and `histogram!` anywhere in `crates/*/src`.
fn metric_names() -> BTreeSet<String> {
    let mut files = Vec::new();
    rust_files(&root().join("crates"), &mut files);
    let mut names = BTreeSet::new();
    for file in files
        .iter()
        .filter(|f| f.components().any(|c| c.as_os_str() == "src"))
    {
        let text = read(file);
        for macro_name in ["counter!(", "gauge!(", "histogram!("] {
            for (at, _) in text.match_indices(macro_name) {
                let rest = text[at + macro_name.len()..].trim_start();
                if let Some(rest) = rest.strip_prefix('"')
                    && let Some(end) = rest.find('"')
                {
                    names.insert(rest[..end].to_owned());
                }
            }
        }
    }
    names
}

#[test]
fn every_metric_is_documented() {
    let names = metric_names();
    assert!(names.len() >= 10, "found only {names:?}");
    let docs = docs();
    let missing: Vec<_> = names
        .iter()
        .filter(|name| !docs.contains(&format!("`{name}")))
        .collect();
    assert!(missing.is_empty(), "metrics no document names: {missing:?}");
}
