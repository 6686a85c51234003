//! What the `o2c` binary's tests share: run the binary as a user would, find repository files.
// Each test binary uses a subset of these.
#![allow(dead_code, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `o2c` binary cargo built for the tests, quiet but for warnings.
pub fn o2c() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_o2c"));
    c.env("RUST_LOG", "warn");
    c
}

/// A path under the repository root.
pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Runs `o2c` with `args` to the end.
pub fn run(args: &[&str]) -> Output {
    o2c().args(args).output().expect("o2c runs")
}

/// Output bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
