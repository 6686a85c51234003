//! `o2c sources add|list|revoke|refusals`: the API keys `o2c serve` accepts — one per
//! source system (what it may publish) or operator (reads and exception actions) — and the
//! requests it refused.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use o2c_embedded::access::{self, Credential, Grants, NewCredential};
use o2c_embedded::db::Db;

use crate::{Target, TargetKind};

/// Subcommands.
#[derive(Subcommand)]
pub enum Cmd {
    /// Create a key for a source system or an operator; the key is shown once.
    Add {
        #[command(flatten)]
        target: Target,
        /// The system or person (an operator action's actor is this name).
        name: String,
        /// A `source` the key may publish (repeat; `*` for any).
        #[arg(long = "source", value_name = "SOURCE")]
        sources: Vec<String>,
        /// A detail-type the key may publish (repeat; `*` for any).
        #[arg(long = "detail-type", value_name = "TYPE")]
        detail_types: Vec<String>,
        /// The key reads the API and acts on exceptions as NAME.
        #[arg(long)]
        operator: bool,
        /// Largest request body for this key in bytes (below `serve --max-body`).
        #[arg(long, value_name = "BYTES")]
        max_body: Option<u64>,
        /// Requests per second for this key (default: `serve --rate-limit`).
        #[arg(long, value_name = "PER_SEC")]
        rate: Option<u32>,
        /// A vendor whose signed webhooks authenticate as this key (`stripe`, `docusign`):
        /// `POST /v1/ingest/<vendor>/…` with the vendor's signature header and no key.
        #[arg(long, value_name = "VENDOR", requires = "webhook_secret_file")]
        webhook: Option<String>,
        /// The vendor's webhook signing secret, read from this file (stored in the database:
        /// a signature check needs the secret itself; never listed).
        #[arg(long, value_name = "PATH", requires = "webhook")]
        webhook_secret_file: Option<PathBuf>,
        /// Write the key to this new file (mode 0600) instead of printing it.
        #[arg(long, value_name = "PATH")]
        key_file: Option<PathBuf>,
        /// Print JSON (the record, and the key unless `--key-file`).
        #[arg(long)]
        json: bool,
    },
    /// Every key's record (never the key): name, id, grants, created, revoked.
    List {
        #[command(flatten)]
        target: Target,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke NAME's active keys (or the one `--key-id`): refused from the next request on.
    Revoke {
        #[command(flatten)]
        target: Target,
        /// The system or person.
        name: String,
        /// Only this key (rotation: the new key stays active).
        #[arg(long)]
        key_id: Option<String>,
    },
    /// Requests `o2c serve` refused (401, 403, 408, 413, 429), newest first, with reasons.
    Refusals {
        #[command(flatten)]
        target: Target,
        /// At most this many (the count covers all of them).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn embedded(target: &Target) -> Result<&Path> {
    if target.target == TargetKind::Aws {
        usage!(
            "on AWS a source is an IAM principal: the bus's resource policy grants each one events:PutEvents for its own \
             events:source (the template's PublisherPrincipals parameters), and operators use their own AWS credentials"
        );
    }
    target.db()
}

/// Runs the command.
pub async fn run(cmd: Cmd) -> Result<ExitCode> {
    match cmd {
        Cmd::Add { target, name, sources, detail_types, operator, max_body, rate, webhook, webhook_secret_file, key_file, json } => {
            let webhook_secret = webhook_secret_file
                .as_deref()
                .map(|f| std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display())))
                .transpose()?;
            let db = Db::open(embedded(&target)?)?;
            let grants = Grants { sources, detail_types, operator, max_body, rate_per_second: rate, webhook };
            // The file first: a key is never created that could not be handed over.
            let mut file = key_file.as_deref().map(new_key_file).transpose()?;
            let (cred, key) = match access::add(&db, NewCredential { name, grants, webhook_secret }).await {
                Ok(k) => k,
                Err(e) => {
                    if let Some(path) = &key_file {
                        let _ = std::fs::remove_file(path);
                    }
                    return Err(e.into());
                }
            };
            if let (Some(f), Some(path)) = (file.as_mut(), &key_file) {
                writeln!(f, "{key}").and_then(|()| f.sync_all()).with_context(|| format!("cannot write {}", path.display()))?;
            }
            if json {
                let mut v = serde_json::to_value(&cred)?;
                if key_file.is_none() {
                    v["key"] = key.clone().into();
                }
                outln!("{}", serde_json::to_string_pretty(&v)?);
            } else if let Some(path) = &key_file {
                outln!("{} key {} created; the key is in {} (shown nowhere else)", cred.name, cred.key_id, path.display());
            } else {
                eprintln!("o2c: {} key {} created; store it now, it is shown only once:", cred.name, cred.key_id);
                outln!("{key}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::List { target, json } => {
            let db = crate::open_existing(embedded(&target)?)?;
            let keys = access::list(&db).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                outln!("{} key(s), {} active", keys.len(), keys.iter().filter(|k| k.revoked_at.is_none()).count());
                for k in &keys {
                    outln!("{}", line(k));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Revoke { target, name, key_id } => {
            let db = crate::open_existing(embedded(&target)?)?;
            let revoked = access::revoke(&db, &name, key_id.as_deref()).await?;
            if revoked.is_empty() {
                bail!("no active key {}{name}", key_id.map(|k| format!("{k} of ")).unwrap_or_default());
            }
            for k in &revoked {
                outln!("revoked {} key {}", k.name, k.key_id);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Refusals { target, limit, json } => {
            let db = crate::open_existing(embedded(&target)?)?;
            let found = access::refusals(&db, limit).await?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&found)?);
                return Ok(ExitCode::SUCCESS);
            }
            outln!("{} request(s) refused", found.total);
            for r in &found.latest {
                let who = match (&r.name, &r.key_id) {
                    (Some(n), Some(k)) => format!("{n} ({k})"),
                    (None, Some(k)) => format!("key {k}"),
                    _ => "no key".into(),
                };
                outln!(
                    "{}  {} {}  {} {}  {who}  from {}: {}",
                    r.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    r.status,
                    r.code,
                    r.method,
                    r.path,
                    r.remote.as_deref().unwrap_or("?"),
                    r.reason
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn line(k: &Credential) -> String {
    let g = &k.grants;
    let mut can = Vec::new();
    if !g.sources.is_empty() {
        can.push(format!("publishes {} / {}", g.sources.join(","), g.detail_types.join(",")));
    }
    if g.operator {
        can.push("operator".into());
    }
    if let Some(v) = &g.webhook {
        can.push(format!("signed {v} webhooks"));
    }
    let state = match k.revoked_at {
        Some(at) => format!("revoked {}", at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        None => "active".into(),
    };
    let limits =
        [g.max_body.map(|b| format!("max {b} B")), g.rate_per_second.map(|r| format!("{r}/s"))].into_iter().flatten().collect::<Vec<_>>();
    format!(
        "{:<16} {}  {:<7}  created {}  {}{}",
        k.name,
        k.key_id,
        state.split(' ').next().unwrap_or_default(),
        k.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        can.join("; "),
        if limits.is_empty() { String::new() } else { format!("  ({})", limits.join(", ")) }
    ) + &k.revoked_at.map(|_| format!("  [{state}]")).unwrap_or_default()
}

/// A new file only its owner can read (refused when it exists).
fn new_key_file(path: &Path) -> Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path).with_context(|| format!("cannot create the key file {} (it must not exist)", path.display()))
}
