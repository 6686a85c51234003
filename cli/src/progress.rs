//! Progress lines on standard error for commands that can run longer than a couple of
//! seconds (indicatif draws only when standard error is a terminal, so scripts and pipes
//! see nothing extra).

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A spinner with a prefix and a message that the command updates.
pub fn spinner(prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed}]").unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_prefix(prefix.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A bar over `total` steps with a prefix.
pub fn bar(prefix: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} [{elapsed}]").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(prefix.to_owned());
    bar
}

/// Runs `fut` under a spinner named `prefix`, cleared when it ends.
pub async fn during<T>(prefix: &str, fut: impl Future<Output = T>) -> T {
    let s = spinner(prefix);
    let out = fut.await;
    s.finish_and_clear();
    out
}
