//! The library's modules depend one way: every `crate::` path in a module names a
//! module of a lower layer (or its own). A new upward import fails here, with the
//! file and the line.

use std::path::{Path, PathBuf};

/// The layers, lowest first; `lib.rs` and `main.rs` sit above them all.
const LAYERS: &[&[&str]] = &[
    &[
        "text",
        "progress",
        "timeline",
        "case",
        "expected_logs",
        "routes",
        "topology",
    ],
    &["observation"],
    &["harness", "matrix", "report"],
    &["cases"],
    &["runner"],
];

/// The top-level module a source file belongs to: `harness/app.rs` → `harness`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_owned())
}

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read the source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn modules_depend_only_on_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut upward = Vec::new();
    let mut checked = 0;
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let Some(own) = layer(&module) else {
            assert!(
                module == "lib" || module == "main",
                "{} is in no layer: add `{module}` to LAYERS",
                file.display()
            );
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read a source file");
        for (n, line) in text.lines().enumerate() {
            for (i, _) in line.match_indices("crate::") {
                let used: String = line[i + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                checked += 1;
                match layer(&used) {
                    Some(theirs) if theirs < own || used == module => {}
                    // Items re-exported at the root (`crate::CASE_LIMIT` in a doc link).
                    None if used.chars().next().is_some_and(|c| c.is_ascii_uppercase()) => {}
                    _ => upward.push(format!("{}:{}: {}", file.display(), n + 1, line.trim())),
                }
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} crate:: paths found: is the walk right?"
    );
    assert!(
        upward.is_empty(),
        "imports against the layers:\n{}",
        upward.join("\n")
    );
}
