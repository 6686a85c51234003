//! `o2c rules test|list`: the local EventBridge matcher from the command line — answer
//! like `aws events test-event-pattern` before a rule is deployed, and list the template's
//! rules with their patterns (every one compiled, so an unsupported construct is named).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Subcommand;
use o2c_topology::pattern::{Pattern, test_event_pattern};
use serde_json::{Value, json};

use crate::template;

/// Subcommands.
#[derive(Subcommand)]
pub enum Cmd {
    /// Does an event match a pattern? Prints `true` or `false` (like `aws events
    /// test-event-pattern`; the event needs `id`, `account`, `source`, `time`, `region` and
    /// `detail-type`). With `--batch`, one JSON line per input line, in order.
    Test {
        /// The event pattern: a file, or inline JSON.
        #[arg(long, required_unless_present = "batch", conflicts_with = "batch")]
        pattern: Option<String>,
        /// The event: a file, or inline JSON.
        #[arg(long, required_unless_present = "batch", conflicts_with = "batch")]
        event: Option<String>,
        /// JSON Lines of `{"pattern": …, "event": …}` (`-` for standard input); writes
        /// `{"match": true|false}` or `{"error": "line N: …"}` per input line, blank ones
        /// included, in order (exit 3 when a line got an error).
        #[arg(long)]
        batch: Option<PathBuf>,
        /// Print `{"Result": true|false}` (the API's answer) instead of `true`/`false`.
        #[arg(long, conflicts_with = "batch")]
        json: bool,
    },
    /// The template's rules with their patterns and targets.
    List {
        /// SAM template (default: the repository's `infra/template.yaml`, else the built-in copy).
        #[arg(long)]
        template: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command.
pub async fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Test { batch: Some(file), .. } => batch(&file),
        Cmd::Test { pattern: Some(p), event: Some(e), json, .. } => {
            let (pattern, event) = (json_arg("--pattern", &p)?, json_arg("--event", &e)?);
            match test_event_pattern(&pattern, &event) {
                Ok(m) if json => outln!("{}", json!({ "Result": m })),
                Ok(m) => outln!("{m}"),
                Err(e) => usage!("{e}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Test { .. } => usage!("--pattern and --event, or --batch FILE"),
        Cmd::List { template: path, json } => list(path.as_deref(), json),
    }
}

/// Inline JSON (starts with `{` or `[`), else a file holding it.
fn json_arg(flag: &str, arg: &str) -> Result<Value> {
    let text = if arg.trim_start().starts_with(['{', '[']) {
        arg.to_owned()
    } else {
        match std::fs::read_to_string(arg) {
            Ok(text) => text,
            Err(e) => usage!("{flag} {arg}: not inline JSON and not a readable file ({e})"),
        }
    };
    match serde_json::from_str(&text) {
        Ok(v) => Ok(v),
        Err(e) => usage!("{flag}: not JSON: {e}"),
    }
}

/// One answer per input line, in order; a bad line gets an error, never stops the rest.
fn batch(file: &Path) -> Result<ExitCode> {
    let reader: Box<dyn BufRead> = if file == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?))
    };
    let mut errors = 0;
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("{} line {}", file.display(), n + 1))?;
        let answer = match answer(&line) {
            Ok(m) => json!({ "match": m }),
            Err(e) => {
                errors += 1;
                json!({ "error": format!("line {}: {e}", n + 1) })
            }
        };
        outln!("{answer}");
    }
    Ok(if errors > 0 { ExitCode::from(crate::exit::REFUSED) } else { ExitCode::SUCCESS })
}

/// One batch line's answer.
fn answer(line: &str) -> std::result::Result<bool, String> {
    if line.trim().is_empty() {
        return Err("empty line".into());
    }
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    match (v.get("pattern"), v.get("event")) {
        (Some(p), Some(e)) => test_event_pattern(p, e).map_err(|e| e.to_string()),
        _ => Err("needs \"pattern\" and \"event\"".into()),
    }
}

fn list(path: Option<&Path>, json: bool) -> Result<ExitCode> {
    let t = template(path)?;
    let topo = o2c_topology::Topology::from_sam_yaml(&t.text).map_err(anyhow::Error::msg)?;
    let mut rows = Vec::new();
    for r in &topo.rules {
        Pattern::parse(&r.pattern).with_context(|| format!("rule {}", r.logical_id))?;
        let targets: Vec<&str> = r.targets.iter().map(|t| t.queue.as_str()).collect();
        rows.push(json!({ "rule": r.logical_id, "pattern": r.pattern, "targets": targets }));
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for r in &rows {
            outln!("{:<34} {} → {}", r["rule"].as_str().unwrap_or_default(), r["pattern"], r["targets"]);
        }
    }
    Ok(ExitCode::SUCCESS)
}
