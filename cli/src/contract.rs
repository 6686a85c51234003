//! The CLI contract (README, "CLI contract"), checked over the whole command tree: every
//! command has examples that parse, every command that lists or shows has `--json`, the
//! same flag names the same thing everywhere, and `--help` states the exit codes.

use clap::CommandFactory;

use crate::Cli;

/// Commands that list or show something: each takes `--json`.
const LISTS_OR_SHOWS: [&str; 16] = [
    "rules test",
    "rules list",
    "status",
    "engagements",
    "receivables",
    "reconcile",
    "rejections",
    "resubmit",
    "exceptions list",
    "exceptions show",
    "invoice list",
    "revenue show",
    "dlq list",
    "sim show",
    "sim calls",
    "reference check",
];

/// Every command path (`exceptions list`, …) with its definition.
fn commands() -> Vec<(String, clap::Command)> {
    fn walk(prefix: &str, c: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
        for s in c.get_subcommands().filter(|s| s.get_name() != "help") {
            let path = if prefix.is_empty() { s.get_name().to_owned() } else { format!("{prefix} {}", s.get_name()) };
            out.push((path.clone(), s.clone()));
            walk(&path, s, out);
        }
    }
    let mut out = Vec::new();
    walk("", &Cli::command(), &mut out);
    out
}

/// Splits an example line like a POSIX shell would for these simple cases: leading
/// `VAR=value` assignments dropped, single- and double-quoted words kept together.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut cur, mut quote, mut any) = (String::new(), None::<char>, false);
    for ch in line.chars() {
        match (quote, ch) {
            (None, '"' | '\'') => {
                quote = Some(ch);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, ' ') => {
                if any {
                    out.push(std::mem::take(&mut cur));
                }
                any = false;
            }
            (_, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    let start = out.iter().position(|w| w == "o2c").unwrap_or(0);
    out.split_off(start)
}

#[test]
fn when_any_command_at_any_level_is_listed_should_show_examples_that_parse() {
    fn walk(c: &clap::Command, path: &str, checked: &mut usize) {
        for s in c.get_subcommands().filter(|s| s.get_name() != "help") {
            let path = format!("{path} {}", s.get_name());
            let help = s.get_after_help().map(|h| h.to_string()).unwrap_or_default();
            assert!(help.starts_with("Examples:"), "`{path}` has no examples in --help");
            let examples: Vec<&str> = help.lines().skip(1).take_while(|l| !l.trim().is_empty()).collect();
            assert!(!examples.is_empty(), "`{path}`: no example lines");
            for line in examples {
                let argv = words(line.trim());
                // The example runs this command (by its name or an alias: `o2c drain`).
                let depth = path.split(' ').count() - 1;
                let named = argv.get(depth).is_some_and(|w| w == s.get_name() || s.get_all_aliases().any(|a| a == w));
                assert!(named, "`{path}`: example `{line}` runs another command");
                if let Err(e) = <Cli as clap::Parser>::try_parse_from(&argv) {
                    panic!("example `{line}` of `{path}` does not parse: {e}");
                }
                *checked += 1;
            }
            walk(s, &path, checked);
        }
    }
    let mut checked = 0;
    walk(&crate::command(), "o2c", &mut checked);
    assert!(checked >= 60, "{checked} examples");
}

#[test]
fn when_a_command_lists_or_shows_should_take_json() {
    let all = commands();
    for path in LISTS_OR_SHOWS {
        let (_, c) = all.iter().find(|(p, _)| p == path).unwrap_or_else(|| panic!("no command `{path}`"));
        assert!(c.get_arguments().any(|a| a.get_long() == Some("json")), "`o2c {path}` has no --json");
    }
}

#[test]
fn when_flags_name_the_same_thing_should_have_the_same_name_everywhere() {
    for (path, c) in commands() {
        for a in c.get_arguments() {
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default().to_lowercase();
            let long = a.get_long().unwrap_or_default();
            if help.starts_with("reference data") {
                assert_eq!(long, "reference", "`o2c {path}`: reference data is --reference");
            }
            if matches!(a.get_id().as_str(), "actor" | "requested_by" | "approver" | "user") {
                assert_eq!(long, "as", "`o2c {path}`: the acting user is --as");
            }
            if long == "db" {
                assert!(help.contains("database"), "`o2c {path}`: --db is the database file");
            }
            assert_ne!(long, "file", "`o2c {path}`: --file is not a flag of the contract");
        }
    }
}

#[test]
fn when_help_is_printed_should_state_the_exit_codes() {
    fn walk(c: &mut clap::Command, path: &str, out: &mut Vec<(String, String)>) {
        out.push((path.to_owned(), c.render_long_help().to_string()));
        for s in c.get_subcommands_mut().filter(|s| s.get_name() != "help") {
            let p = format!("{path} {}", s.get_name());
            walk(s, &p, out);
        }
    }
    let mut helps = Vec::new();
    walk(&mut crate::command(), "o2c", &mut helps);
    assert!(helps.len() > 40, "{}", helps.len());
    for (name, help) in helps {
        for code in ["0  done", "1  failed", "2  usage", "3  refused", "4  attention", "5  incomplete"] {
            assert!(help.contains(code), "`{name} --help` lacks `{code}`");
        }
    }
}

#[test]
fn when_an_example_line_has_quotes_or_variables_should_split_like_a_shell() {
    assert_eq!(words(r#"AWS_ENDPOINT_URL=http://x o2c bootstrap --stage dev"#), ["o2c", "bootstrap", "--stage", "dev"]);
    assert_eq!(words(r#"o2c invoice reject X --reason "wrong rate""#), ["o2c", "invoice", "reject", "X", "--reason", "wrong rate"]);
    assert_eq!(words(r#"o2c rules test --pattern '{"a":["b c"]}'"#), ["o2c", "rules", "test", "--pattern", r#"{"a":["b c"]}"#]);
}
