//! The command line and process life the end-to-end examples share (`examples/demo.rs`,
//! `examples/e2e_bench.rs`): help from the example's doc header, `--NAME VALUE` flags, the
//! broker (named, or our own for the run) and stopping cleanly on Ctrl-C or SIGTERM.

use std::future::Future;

use anyhow::{Context, Result};

use crate::TestBroker;

/// When `args` ask for help: print the example's doc header (the first `lines` lines of
/// `source`, its own text through `include_str!`) and exit.
pub fn exit_with_help_if_asked(args: &[String], source: &str, lines: usize) {
    if lagbalance::settings::wants_help(args) {
        println!(
            "{}",
            source.lines().take(lines).collect::<Vec<_>>().join("\n")
        );
        std::process::exit(0);
    }
}

/// The value of `--name VALUE` in `args`, parsed, or `default` when absent.
pub fn flag<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => {
            let v = args
                .get(i + 1)
                .with_context(|| format!("{name} needs a value"))?;
            v.parse().map_err(|e| anyhow::anyhow!("{name} {v}: {e}"))
        }
    }
}

/// The broker to run against: `--bootstrap HOST:PORT`, else a non-empty `LAGBALANCE_BOOTSTRAP`;
/// `None` means the example starts its own ([`RunBroker::named_or_own`]).
pub fn bootstrap_arg(args: &[String]) -> Option<String> {
    args.iter()
        .position(|x| x == "--bootstrap")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| {
            std::env::var("LAGBALANCE_BOOTSTRAP")
                .ok()
                .filter(|b| !b.is_empty())
        })
}

/// The broker of one example run: the one named, or our own, which lives as long as this.
pub struct RunBroker {
    pub bootstrap: String,
    own: Option<TestBroker>,
}

impl RunBroker {
    /// The broker at `bootstrap`, or a fresh one of the default kind when `None`.
    pub async fn named_or_own(bootstrap: Option<&str>) -> Result<RunBroker> {
        match bootstrap {
            Some(b) => Ok(RunBroker {
                bootstrap: b.to_owned(),
                own: None,
            }),
            None => {
                let own = TestBroker::start_own().await?;
                Ok(RunBroker {
                    bootstrap: own.bootstrap.clone(),
                    own: Some(own),
                })
            }
        }
    }

    /// Stop our own broker now (a named one is left alone).
    pub fn stop(mut self) {
        if let Some(mut own) = self.own.take() {
            own.stop();
        }
    }
}

/// `work`'s outcome, or `None` when Ctrl-C or SIGTERM comes first. `work` is then dropped,
/// which is how an example stops the processes it started (they are killed on drop).
pub async fn until_interrupted<T>(work: impl Future<Output = T>) -> Result<Option<T>> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(tokio::select! {
        r = work => Some(r),
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
    })
}
