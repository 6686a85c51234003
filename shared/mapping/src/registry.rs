//! The mappings of a directory (`mappings/<vendor>/<object>.yaml`, the name is the path),
//! loaded and checked at start, listed, and swapped without a restart: [`Registry::refresh`]
//! re-reads the directory when a file changed (its list, sizes and modification times), and
//! keeps the mappings in force when a changed file does not load — saying which and why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::spec::{Mapping, SpecError};

type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// Loaded mappings by name.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The mappings in force.
    pub mappings: BTreeMap<String, Arc<Mapping>>,
    /// Files that did not load at the last reading, with why (the previous version, if
    /// any, stays in force).
    pub problems: Vec<SpecError>,
}

/// A directory of mappings.
#[derive(Debug)]
pub struct Registry {
    dir: PathBuf,
    state: RwLock<(Fingerprint, Loaded)>,
}

fn files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn fingerprint(dir: &Path) -> std::io::Result<Fingerprint> {
    files(dir)?
        .into_iter()
        .map(|p| {
            let m = std::fs::metadata(&p)?;
            Ok((p, m.len(), m.modified().ok()))
        })
        .collect()
}

/// One mapping file's text, which must be named by its path (`expected`).
fn load_one(file: &str, expected: &str, text: &str) -> Result<Mapping, SpecError> {
    let m = Mapping::from_yaml(file, text)?;
    if m.name == expected {
        Ok(m)
    } else {
        Err(SpecError { file: file.to_owned(), problems: vec![format!("`mapping: {}` must be its path, {expected}", m.name)] })
    }
}

impl Loaded {
    /// Mappings given as `(name, text)` — compiled into a binary (the AWS ingestion
    /// function) — checked as a directory's are: each must load and be named `name`.
    /// Fails with every problem (nothing is in force to fall back on).
    pub fn from_sources<'a>(sources: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, String> {
        let mut out = Self::default();
        for (name, text) in sources {
            match load_one(&format!("{name}.yaml"), name, text) {
                Ok(m) => {
                    out.mappings.insert(m.name.clone(), Arc::new(m));
                }
                Err(e) => out.problems.push(e),
            }
        }
        if out.problems.is_empty() { Ok(out) } else { Err(out.problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")) }
    }
}

fn load_all(dir: &Path, previous: &Loaded) -> std::io::Result<Loaded> {
    let mut out = Loaded::default();
    for p in files(dir)? {
        let rel = p.strip_prefix(dir).unwrap_or(&p).with_extension("");
        let expected = rel.to_string_lossy().replace('\\', "/");
        // A file that cannot be read (not UTF-8, removed mid-walk) is a problem of that file,
        // not of the directory.
        let text = std::fs::read_to_string(&p)
            .map_err(|e| SpecError { file: p.display().to_string(), problems: vec![format!("cannot read it: {e}")] });
        let loaded = text.and_then(|text| load_one(&p.display().to_string(), &expected, &text));
        match loaded {
            Ok(m) => {
                out.mappings.insert(m.name.clone(), Arc::new(m));
            }
            Err(e) => {
                if let Some(old) = previous.mappings.get(&expected) {
                    out.mappings.insert(expected, old.clone());
                }
                out.problems.push(e);
            }
        }
    }
    Ok(out)
}

impl Registry {
    /// Loads every mapping under `dir`; fails when the directory cannot be read or any file
    /// does not load (at start nothing is in force to fall back on).
    pub fn open(dir: &Path) -> Result<Self, String> {
        let fp = fingerprint(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let loaded = load_all(dir, &Loaded::default()).map_err(|e| format!("{}: {e}", dir.display()))?;
        if !loaded.problems.is_empty() {
            return Err(loaded.problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"));
        }
        Ok(Self { dir: dir.to_owned(), state: RwLock::new((fp, loaded)) })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-reads the directory if a file was added, removed or changed.
    pub fn refresh(&self) {
        let Ok(fp) = fingerprint(&self.dir) else { return };
        let stale = self.state.read().map(|s| s.0 != fp).unwrap_or(false);
        if !stale {
            return;
        }
        let Ok(mut state) = self.state.write() else { return };
        if let Ok(loaded) = load_all(&self.dir, &state.1) {
            for p in &loaded.problems {
                tracing::error!(file = %p.file, problems = ?p.problems, "mapping not loaded; the previous version stays in force");
            }
            *state = (fp, loaded);
        }
    }

    /// A mapping by name.
    pub fn get(&self, name: &str) -> Option<Arc<Mapping>> {
        self.state.read().ok()?.1.mappings.get(name).cloned()
    }

    /// What is loaded and what is not.
    pub fn loaded(&self) -> Loaded {
        self.state.read().map(|s| s.1.clone()).unwrap_or_default()
    }
}
