//! Compiles the repository's mapping files (`mappings/<vendor>/<object>.yaml`) into the
//! function: a deployment carries exactly the mappings reviewed with it. `make test` loads
//! and checks every one (`shared/mapping/tests/vendors.rs`); the function loads them again at
//! cold start and refuses to start if one does not load.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            yaml_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../mappings").canonicalize()?;
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    yaml_files(&root, &mut files)?;
    files.sort();
    let mut code = String::from("/// Every mapping file of the repository's `mappings/`, by name (its path without `.yaml`).\n");
    code.push_str("pub static MAPPINGS: &[(&str, &str)] = &[\n");
    for f in &files {
        let name = f.strip_prefix(&root)?.with_extension("").to_string_lossy().replace('\\', "/");
        writeln!(code, "    ({name:?}, include_str!({:?})),", f.display().to_string())?;
    }
    code.push_str("];\n");
    std::fs::write(PathBuf::from(std::env::var("OUT_DIR")?).join("mappings.rs"), code)?;
    Ok(())
}
