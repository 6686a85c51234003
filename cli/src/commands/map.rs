//! `o2c map`: what a vendor payload becomes under a mapping — the canonical event(s), or
//! the refusal with every failing path — without processing anything, so an integrator
//! tests a mapping before switching it on. `o2c map --list` names the mappings;
//! `o2c map --publish --target aws` switches them on in a stage without a rebuild (the
//! ingestion function reads them within `MAPPINGS_REFRESH_SECONDS`), once every file loads.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use o2c_mapping::Registry;

/// Arguments.
#[derive(ClapArgs)]
pub struct Args {
    /// The mappings directory.
    #[arg(long, default_value = "mappings", value_name = "DIR")]
    mappings: PathBuf,
    /// The mapping (`vendor/object`, e.g. `salesforce/opportunity`).
    #[arg(long, required_unless_present_any = ["list", "publish"])]
    mapping: Option<String>,
    /// Name the mappings (with their version and what they map) and the files that do not load.
    #[arg(long, conflicts_with = "mapping")]
    list: bool,
    /// Publish the mappings (every file, or `--mapping`'s) to an AWS stage (`--target aws`):
    /// its ingestion function takes them without a rebuild. Nothing is published unless
    /// every file loads.
    #[arg(long, conflicts_with = "list")]
    publish: bool,
    #[command(flatten)]
    target: crate::Target,
    /// Vendor payloads (JSON or XML, as the mapping reads).
    files: Vec<PathBuf>,
}

/// Runs the command.
pub async fn run(args: Args) -> Result<ExitCode> {
    let registry = Registry::open(&args.mappings).map_err(anyhow::Error::msg)?;
    if args.list {
        let loaded = registry.loaded();
        for m in loaded.mappings.values() {
            outln!("{:<36} v{:<3} {} / {}  {}", m.name, m.version, m.emit.source, m.emit.event_type.detail_type(), m.description);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.publish {
        if args.target.target != crate::TargetKind::Aws {
            usage!("--publish writes to an AWS stage: add --target aws --stage NAME (`o2c serve` reads --mappings itself)");
        }
        if !args.files.is_empty() {
            usage!("--publish takes no payload files (map them without --publish first)");
        }
        let names: Vec<String> = match &args.mapping {
            Some(n) if registry.get(n).is_none() => usage!("no mapping `{n}` in {}", args.mappings.display()),
            Some(n) => vec![n.clone()],
            None => registry.loaded().mappings.keys().cloned().collect(),
        };
        // Each file read once, and exactly that text checked and published.
        let mut files = Vec::with_capacity(names.len());
        for n in names {
            let path = ["yaml", "yml"].iter().map(|ext| args.mappings.join(format!("{n}.{ext}"))).find(|p| p.is_file());
            let Some(path) = path else { anyhow::bail!("{n}: its file is gone from {}", args.mappings.display()) };
            files.push((n, std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?));
        }
        o2c_mapping::registry::Loaded::from_sources(files.iter().map(|(n, t)| (n.as_str(), t.as_str()))).map_err(anyhow::Error::msg)?;
        return crate::backend::aws::publish_mappings(&args.target, &files).await;
    }
    let name = args.mapping.unwrap_or_default();
    let Some(mapping) = registry.get(&name) else {
        let known: Vec<String> = registry.loaded().mappings.keys().cloned().collect();
        usage!("no mapping `{name}` in {} (known: {})", args.mappings.display(), known.join(", "));
    };
    if args.files.is_empty() {
        usage!("name the vendor payload file(s) to map");
    }
    let mut refused = 0;
    let mut events = Vec::new();
    for f in &args.files {
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        let result = mapping.read(&bytes).map_err(|i| vec![i]).and_then(|doc| mapping.apply(&doc));
        match result {
            Ok(mapped) => events.extend(
                mapped
                    .into_iter()
                    .map(|m| serde_json::json!({"Source": m.source, "DetailType": m.detail_type, "Detail": m.detail.to_string()})),
            ),
            Err(issues) => {
                refused += 1;
                eprintln!("o2c: {} cannot be mapped by {} v{}:", f.display(), mapping.name, mapping.version);
                for i in issues {
                    let from = if i.path.is_empty() { String::new() } else { format!(" (from {})", i.path) };
                    eprintln!("  {}{from}: {}", if i.field.is_empty() { "$" } else { &i.field }, i.message);
                }
            }
        }
    }
    // PutEvents entries, one per line: `o2c send` and `o2c run` read them as they are.
    for e in &events {
        outln!("{e}");
    }
    Ok(if refused > 0 { ExitCode::from(crate::exit::REFUSED) } else { ExitCode::SUCCESS })
}
