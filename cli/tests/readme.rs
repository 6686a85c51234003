//! Every command in the README runs: each ```sh block is executed line by line, in order,
//! as a user would paste it — the embedded blocks on a fresh directory, the AWS blocks
//! against the test's moto_server under a stage of their own. A line's exit code must be
//! 0 unless its comment says `(exit N)`. Lines that cannot run here are skipped for a
//! stated reason (a fixed list below); any other line that is not an `o2c` command fails
//! the test, so the README cannot drift from the CLI again.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

mod common;

use common::repo;

/// One runnable line of a block.
#[derive(Debug, Clone)]
struct Line {
    /// The block's heading and the line's number in the README.
    at: String,
    /// The command, continuation lines joined, comment removed.
    command: String,
    /// The exit code the README promises (`(exit N)` in the comment), else 0.
    exit: i32,
    /// Text the README says the output holds (`(prints "…")` in the comment).
    prints: Option<String>,
}

/// The ```sh blocks of the README, each a list of lines.
fn blocks(readme: &str) -> Vec<Vec<Line>> {
    let mut out = Vec::new();
    let (mut heading, mut current, mut pending): (String, Option<Vec<Line>>, Option<(usize, String)>) = (String::new(), None, None);
    for (n, raw) in readme.lines().enumerate() {
        if current.is_none() {
            if let Some(h) = raw.strip_prefix("## ") {
                heading = h.to_owned();
            }
            if raw.trim() == "```sh" {
                current = Some(Vec::new());
            }
            continue;
        }
        if raw.trim() == "```" {
            out.push(current.take().unwrap());
            continue;
        }
        let (start, mut text) = pending.take().unwrap_or((n + 1, String::new()));
        let raw = if text.is_empty() { raw } else { raw.trim_start() };
        if let Some(head) = raw.trim_end().strip_suffix('\\') {
            text.push_str(head.trim_end());
            text.push(' ');
            pending = Some((start, text));
            continue;
        }
        text.push_str(raw);
        let (command, comment) = split_comment(&text);
        if command.trim().is_empty() {
            continue;
        }
        let exit = comment.split("(exit ").nth(1).and_then(|r| r.split(')').next()).and_then(|c| c.trim().parse().ok()).unwrap_or(0);
        let prints = comment.split("(prints \"").nth(1).and_then(|r| r.split("\")").next()).map(str::to_owned);
        current.as_mut().unwrap().push(Line {
            at: format!("{heading}, README.md:{start}"),
            command: command.trim().to_owned(),
            exit,
            prints,
        });
    }
    out
}

/// The command and its trailing comment (`#` outside quotes, after a space).
fn split_comment(line: &str) -> (String, String) {
    let mut quote = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev == ' ' => return (line[..i].to_owned(), line[i..].to_owned()),
            _ => {}
        }
        prev = c;
    }
    (line.to_owned(), String::new())
}

/// Why a line is not run here, or `None` when it must run.
fn skipped(command: &str) -> Option<&'static str> {
    let reasons: [(&str, &str); 8] = [
        ("make test", "it is the command that runs this test"),
        ("cargo build -p o2c-cli", "the test runs the o2c binary cargo built for it"),
        ("export PATH=", "the test puts that binary on PATH"),
        ("sam build", "needs cargo-lambda's 25-minute release build and an AWS account (scripts/lambda_smoke.sh builds the same binaries)"),
        ("sam deploy", "needs an AWS account: `o2c bootstrap` creates the template's resources for the stage instead"),
        (".venv/bin/python scripts/moto_server.py", "the test's moto_server (started by scripts/test.sh) is used"),
        ("export AWS_", "the test's AWS environment (its moto_server) is used"),
        ("cargo lambda", "builds the release bootstraps: scripts/lambda_smoke.sh runs them under the runtime interface emulator"),
    ];
    reasons.iter().find(|(p, _)| command.starts_with(p)).map(|(_, r)| *r)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The README's fixed ports and stage, replaced by free ones and a stage of this run.
struct Substitutions(Vec<(String, String)>);

impl Substitutions {
    fn new(stage: &str) -> Self {
        let mut s = vec![("--stage dev".to_owned(), format!("--stage {stage}")), ("--stage local".to_owned(), format!("--stage {stage}l"))];
        for port in ["4010", "4011", "4020", "5000"] {
            s.push((format!("127.0.0.1:{port}"), format!("127.0.0.1:{}", free_port())));
        }
        Self(s)
    }

    fn apply(&self, command: &str) -> String {
        self.0.iter().fold(command.to_owned(), |c, (from, to)| c.replace(from, to))
    }
}

struct Shell {
    cwd: PathBuf,
    path: String,
    background: Vec<Child>,
}

impl Drop for Shell {
    fn drop(&mut self) {
        for c in &mut self.background {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Shell {
    fn bash(&self, command: &str) -> Command {
        let mut c = Command::new("bash");
        c.args(["-c", command]).current_dir(&self.cwd).env("PATH", &self.path).env("RUST_LOG", "warn").env("NO_COLOR", "1");
        c
    }

    fn run(&mut self, line: &Line, command: &str) {
        if let Some(dir) = command.strip_prefix("cd ") {
            self.cwd = self.cwd.join(dir.trim());
            return;
        }
        if let Some(bg) = command.strip_suffix('&') {
            let log = self.cwd.join(format!("background-{}.log", self.background.len()));
            let file = std::fs::File::create(&log).unwrap();
            let child = self.bash(bg).stdout(file.try_clone().unwrap()).stderr(file).spawn().unwrap();
            self.background.push(child);
            // A server is ready when its address accepts connections; a queue consumer
            // (`serve --target aws`) needs no wait: messages wait for it in their queues.
            let Some(addr) = bg.split("--addr ").nth(1).and_then(|r| r.split_whitespace().next()) else { return };
            let start = Instant::now();
            while TcpStream::connect(addr).is_err() {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(start.elapsed() < Duration::from_secs(30), "{}: `{command}` never listened on {addr}:\n{said}", line.at);
                std::thread::sleep(Duration::from_millis(100));
            }
            return;
        }
        let started = Instant::now();
        let out = self.bash(command).output().unwrap();
        let code = out.status.code().unwrap_or(-1);
        eprintln!("[{:>5} ms] exit {code}  {command}", started.elapsed().as_millis());
        assert_eq!(
            code,
            line.exit,
            "{}: `{command}` exited {code}, the README promises {}\n--- stdout\n{}\n--- stderr\n{}",
            line.at,
            line.exit,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(expected) = &line.prints {
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains(expected.as_str()), "{}: `{command}` does not print {expected:?}:\n{stdout}", line.at);
        }
    }
}

#[test]
fn when_the_readme_blocks_are_run_in_order_should_every_command_do_what_it_says() {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let blocks = blocks(&readme);
    assert!(blocks.len() >= 4, "README blocks: {}", blocks.len());
    std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL must point at moto_server (scripts/test.sh)");
    let bin = Path::new(env!("CARGO_BIN_EXE_o2c")).parent().unwrap().to_owned();
    let stage = format!("readme{}", std::process::id());
    let subs = Substitutions::new(&stage);
    let (mut ran, mut skips) = (0, Vec::new());
    for block in &blocks {
        // Each block starts in a fresh directory that sees the repository's files.
        let dir = tempfile::tempdir().unwrap();
        for entry in ["events", "shared", "infra", "scripts", "mappings", "Makefile"] {
            std::os::unix::fs::symlink(repo(entry), dir.path().join(entry)).unwrap();
        }
        let mut shell = Shell {
            cwd: dir.path().to_owned(),
            path: format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            background: Vec::new(),
        };
        for line in block {
            let command = subs.apply(&line.command);
            if let Some(why) = skipped(&command) {
                // What a skipped line names must still exist: its files, its binaries.
                for word in
                    command.split_whitespace().filter(|w| w.ends_with(".json") || w.starts_with("infra/") || w.starts_with("events/"))
                {
                    assert!(shell.cwd.join(word).exists(), "{}: `{}` names {word}, which does not exist", line.at, line.command);
                }
                if let Some(bin) = command.strip_prefix("cargo lambda invoke ").and_then(|r| r.split_whitespace().next()) {
                    assert!(repo(&format!("functions/{bin}/Cargo.toml")).exists(), "{}: no function binary {bin}", line.at);
                }
                skips.push(format!("{}: `{}` — {why}", line.at, line.command));
                if command.starts_with("sam deploy") {
                    shell.run(line, &format!("o2c bootstrap --stage {stage}"));
                }
                continue;
            }
            let command = match command.as_str() {
                "make demo" => "o2c demo".to_owned(),
                _ => command,
            };
            let program = command.split_whitespace().find(|w| !w.contains('=')).unwrap_or_default();
            assert!(
                ["o2c", "cd", "scripts/sam_local.sh"].contains(&program),
                "{}: `{}` is neither an o2c command nor on the test's skip list",
                line.at,
                line.command
            );
            shell.run(line, &command);
            ran += 1;
        }
    }
    eprintln!("ran {ran} README commands; skipped:\n  {}", skips.join("\n  "));
    assert!(ran >= 40, "only {ran} README commands ran");
}

#[test]
fn when_a_readme_line_has_a_comment_continuations_or_an_exit_code_should_parse_it() {
    let text = "## T\n```sh\no2c run --db x.db a.json   # one (exit 4) (prints \"a (b)\")\no2c rules test --pattern '{\"a\":[\"#b\"]}' \\\n  --event e.json\n# only a comment\n```\n";
    let b = blocks(text);
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].len(), 2);
    assert_eq!((b[0][0].command.as_str(), b[0][0].exit), ("o2c run --db x.db a.json", 4));
    assert_eq!(b[0][1].command, "o2c rules test --pattern '{\"a\":[\"#b\"]}' --event e.json");
    assert_eq!(b[0][1].exit, 0);
    assert_eq!((b[0][0].prints.as_deref(), b[0][1].prints.as_deref()), (Some("a (b)"), None));
    assert_eq!(b[0][0].at, "T, README.md:3");
}
