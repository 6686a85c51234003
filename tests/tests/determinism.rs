//! The deterministic core: time and ids come only from the `Clock` and `IdGenerator`
//! implementations (`shared/app/src/clock.rs`), so a seeded run is reproducible. A source
//! scan keeps it that way.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "tests" || n == "target") {
                continue;
            }
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn when_production_code_reads_time_or_draws_ids_should_do_it_only_through_the_clock_and_id_ports() {
    let root = o2c_tests::repo_root();
    let mut files = Vec::new();
    for d in ["shared", "cli/src", "functions"] {
        rust_files(&root.join(d), &mut files);
    }
    assert!(files.len() > 40, "scanned {} files", files.len());
    let mut offenders = Vec::new();
    for f in &files {
        if f.ends_with("shared/app/src/clock.rs") {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        // Unit tests at the bottom of a file may use the wall clock.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (n, line) in code.lines().enumerate() {
            for token in ["Utc::now", "SystemTime::now", "Uuid::new_v4", "Uuid::now_v7", "Uuid::new_v7", "thread_rng", "rand::random"] {
                if line.contains(token) {
                    offenders.push(format!("{}:{}: {}", f.strip_prefix(&root).unwrap_or(f).display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(offenders.is_empty(), "time or ids outside the Clock / IdGenerator ports:\n{}", offenders.join("\n"));
}
