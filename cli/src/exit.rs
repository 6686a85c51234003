//! The CLI contract's exit codes, usage errors, standard output that survives a closed
//! pipe, and one-line hints for the usual AWS failures.
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | done |
//! | 1 | failed (I/O, AWS, a missing record) |
//! | 2 | usage: a bad flag, value or combination (clap's code, and ours) |
//! | 3 | refused: some entries or an action were refused (PutEvents, segregation of duties) |
//! | 4 | attention: done, but something needs an operator (dead letter, parked message, reconciliation break) |
//! | 5 | incomplete: a result this command waited for did not arrive |

use std::fmt;
use std::io::Write;
use std::process::ExitCode;

/// Exit code: some entries or an action were refused.
pub const REFUSED: u8 = 3;
/// Exit code: done, but something needs an operator's attention.
pub const ATTENTION: u8 = 4;
/// Exit code: a result this command waited for did not arrive.
pub const INCOMPLETE: u8 = 5;
/// Exit code: usage error.
pub const USAGE: u8 = 2;

/// The verdict of a command that put events on the bus and processed them: 3 when entries
/// were refused, else 4 (said on stderr, with where to look) when messages were parked or
/// dead-lettered on the way, else 0.
pub fn verdict(refused: u64, parked: u64, dead_lettered: u64) -> ExitCode {
    if parked > 0 || dead_lettered > 0 {
        eprintln!(
            "o2c: {parked} message(s) parked, {dead_lettered} dead-lettered: see `o2c rejections`, `o2c dlq list` and `o2c exceptions list`"
        );
    }
    match (refused, parked + dead_lettered) {
        (1.., _) => ExitCode::from(REFUSED),
        (0, 1..) => ExitCode::from(ATTENTION),
        (0, 0) => ExitCode::SUCCESS,
    }
}

/// The exit codes as `--help` prints them.
pub const HELP: &str = "Exit codes:
  0  done
  1  failed (I/O, AWS, a missing record)
  2  usage: a bad flag, value or combination
  3  refused: some entries or an action were refused
  4  attention: done, but something needs an operator (a dead letter, a parked message, a reconciliation break)
  5  incomplete: a result the command waited for did not arrive";

/// A usage error: a flag, value or combination the command cannot take (exit 2).
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Returns early with a [`Usage`] error.
macro_rules! usage {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::exit::Usage(format!($($arg)*))))
    };
}

/// Set once standard output is gone (its reader closed the pipe).
static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes to standard output. When the reader has closed the pipe (`o2c … | head -1`) the
/// rest of the output is dropped quietly — never a panic — and the command still finishes
/// its work (a resubmit still publishes, a run still processes) and exits with its own
/// code. Any other write error (a full disk) ends the process with exit 1.
pub fn out(args: fmt::Arguments<'_>) {
    use std::sync::atomic::Ordering;
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut o = std::io::stdout().lock();
    if let Err(e) = o.write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
            return;
        }
        eprintln!("o2c: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// `outln!` through [`out`].
macro_rules! outln {
    () => { $crate::exit::out(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::exit::out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// The exit code and the message for an error that ended a command.
pub fn report(e: &anyhow::Error) -> (ExitCode, String) {
    let code = if e.chain().any(|c| c.is::<Usage>()) { USAGE } else { 1 };
    let mut msg = format!("o2c: {e:#}");
    if let Some(h) = hint(&msg) {
        msg.push_str("\nhint: ");
        msg.push_str(h);
    }
    (ExitCode::from(code), msg)
}

/// A one-line hint for the usual causes of an AWS failure, from the error's text (an AWS
/// SDK call's failure arrives as "<service> unavailable: <error: its causes>"); none for
/// other errors.
pub fn hint(message: &str) -> Option<&'static str> {
    let m = message.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
    if !has(&["dynamodb unavailable", "sqs unavailable", "eventbridge unavailable", "scheduler unavailable"]) {
        return None;
    }
    if has(&["missing region", "no region", "region is required", "invalid region"]) {
        Some("no AWS region: set AWS_REGION (or a profile's region in ~/.aws/config)")
    } else if has(&["no credentials", "loading credentials", "failed to load credentials", "could not provide credentials"]) {
        Some("no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (an emulator accepts any)")
    } else if has(&["unrecognizedclient", "invalidclienttokenid", "expiredtoken", "security token", "signaturedoesnotmatch"]) {
        Some("AWS refused the credentials: check AWS_PROFILE, or refresh an expired session (aws sso login)")
    } else if has(&["resourcenotfound", "nonexistentqueue", "queue does not exist", "requested resource not found", "does not exist on"]) {
        Some("a table, queue or bus of this stage is missing: deploy it (sam deploy) or create it with `o2c bootstrap --stage STAGE`")
    } else if has(&["dispatch failure", "connection refused", "dns error", "timed out", "tcp connect", "error trying to connect"]) {
        Some("AWS endpoint unreachable: check the network, AWS_REGION, and AWS_ENDPOINT_URL when using an emulator")
    } else if has(&["accessdenied", "not authorized"]) {
        Some("AWS denied the call: the credentials' IAM policy lacks this action on the stage's resources")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_an_aws_error_has_a_usual_cause_should_hint_at_it() {
        // The SDK's own texts, as `sdk_error` renders them.
        let unreachable = "dynamodb unavailable: dispatch failure: io error: client error (Connect): tcp connect error: Connection refused (os error 111)";
        assert!(hint(unreachable).is_some_and(|h| h.contains("AWS_ENDPOINT_URL")));
        let missing = "dynamodb unavailable: service error: ResourceNotFoundException: Requested resource not found";
        assert!(hint(missing).is_some_and(|h| h.contains("o2c bootstrap")));
        assert!(
            hint("sqs unavailable: service error: AWS.SimpleQueueService.NonExistentQueue").is_some_and(|h| h.contains("o2c bootstrap"))
        );
        let no_region = "dynamodb unavailable: dispatch failure: other: Invalid Configuration: Missing Region";
        assert!(hint(no_region).is_some_and(|h| h.contains("AWS_REGION")));
        let no_credentials =
            "dynamodb unavailable: dispatch failure: other: the credential provider was not enabled: no credentials found in chain.";
        assert!(hint(no_credentials).is_some_and(|h| h.contains("AWS_PROFILE")));
        let imds =
            "dynamodb unavailable: dispatch failure: other: an error occurred while loading credentials: failed to load IMDS session token";
        assert!(hint(imds).is_some_and(|h| h.contains("AWS_PROFILE")));
        // Not an AWS call: no AWS hint, even when the words match.
        assert_eq!(hint("no engagement ENG-1 in o2c.db"), None);
        assert_eq!(hint("cannot reach http://127.0.0.1:9/v1/events: error trying to connect: Connection refused"), None);
    }

    #[test]
    fn when_a_usage_error_ends_a_command_should_exit_2_and_other_errors_1() {
        let (code, msg) = report(&anyhow::Error::new(Usage("unknown status `bogus`".into())));
        assert_eq!((code, msg.as_str()), (ExitCode::from(USAGE), "o2c: unknown status `bogus`"));
        let (code, _) = report(&anyhow::anyhow!("no engagement ENG-1"));
        assert_eq!(code, ExitCode::from(1));
    }
}
