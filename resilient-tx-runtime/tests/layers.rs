//! The runtime's modules form layers: `lib.rs` lists them bottom first, and a module
//! may use only the modules listed before it. This test reads that list and every
//! module's sources, and fails on a `crate::` path that names a module listed at or
//! after the module using it (a cycle, or a lower layer reaching up).

use std::fs;
use std::path::{Path, PathBuf};

/// The crate's top-level modules, in the order `lib.rs` declares them.
fn declared_modules(lib: &str) -> Vec<String> {
    lib.lines()
        .map(str::trim)
        .filter_map(|line| {
            let rest = line
                .strip_prefix("mod ")
                .or_else(|| line.strip_prefix("pub mod "))
                .or_else(|| line.strip_prefix("pub(crate) mod "))?;
            Some(rest.strip_suffix(';')?.trim().to_owned())
        })
        .collect()
}

/// The source files of module `name`: `src/name.rs`, or everything under `src/name/`.
fn module_files(src: &Path, name: &str) -> Vec<PathBuf> {
    let file = src.join(format!("{name}.rs"));
    if file.is_file() {
        return vec![file];
    }
    let mut files = Vec::new();
    let mut dirs = vec![src.join(name)];
    while let Some(dir) = dirs.pop() {
        let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files
}

/// The top-level modules a source file names through `crate::` paths, outside comments.
fn crate_paths(source: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((number + 1, name.clone()));
            }
            // `use crate::{a, b}`: every name in the braces.
            if let Some(group) = after.strip_prefix('{') {
                let group = group.split('}').next().unwrap_or_default();
                for item in group.split(',') {
                    let item: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !item.is_empty() {
                        found.push((number + 1, item));
                    }
                }
            }
            rest = after;
        }
    }
    found
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let order = declared_modules(&lib);
    assert!(
        order.len() > 10 && order.iter().any(|m| m == "call"),
        "lib.rs lists its modules: {order:?}"
    );
    let mut violations = Vec::new();
    for (rank, module) in order.iter().enumerate() {
        for file in module_files(&src, module) {
            let source = fs::read_to_string(&file).expect("module source");
            for (line, used) in crate_paths(&source) {
                let Some(used_rank) = order.iter().position(|m| *m == used) else {
                    continue; // a re-export of lib.rs, such as `crate::Db`
                };
                if used_rank >= rank && used != *module {
                    violations.push(format!(
                        "{}:{line}: `{module}` uses `{used}`, which lib.rs lists after it",
                        file.strip_prefix(&src).unwrap_or(&file).display()
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports that point up the layers:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_check_sees_an_upward_import() {
    let found = crate_paths("use crate::call::Call;\nuse crate::{pool::Pool, tx};\n// crate::db");
    let names: Vec<&str> = found.iter().map(|(_, name)| name.as_str()).collect();
    assert_eq!(names, ["call", "pool", "tx"]);
    assert_eq!(
        declared_modules("mod a;\n#[doc(hidden)]\npub mod b;\nmod c {\n"),
        ["a", "b"]
    );
}
