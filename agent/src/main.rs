//! `lagbalance-agent [run] [--flag value…]` | `lagbalance-agent status --group G --bootstrap B`
//! | `lagbalance-agent [status] --help`. Settings: `docs/agent.md`.

use std::collections::BTreeMap;
use std::process::ExitCode;

use lagbalance::settings::wants_help;
use lagbalance_agent::config::{reference_table, Config};
use lagbalance_agent::status::{self, StatusArgs};

const USAGE: &str = "usage:
  lagbalance-agent [run] [--flag value]...      watch the group and act (settings below)
  lagbalance-agent status --group G --bootstrap B [--topic T,…] [--sample 2s] [--partitions]
  lagbalance-agent [status] --help                print usage (-h too) and exit

Every flag has an environment variable; the flag wins.
";

fn env_map() -> BTreeMap<String, String> {
    std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            if !k.starts_with("LAGBALANCE_") {
                return None;
            }
            // A non-UTF-8 value is kept lossily so validation can reject it by name.
            Some((k, v.to_string_lossy().into_owned()))
        })
        .collect()
}

fn init_logs(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_current_span(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let env = env_map();
    let sub = args.first().cloned().unwrap_or_default();
    if sub == "status" && wants_help(&args[1..]) {
        print!("{}", status::USAGE);
        return ExitCode::SUCCESS;
    }
    if sub == "help" || wants_help(&args) {
        print!("{USAGE}\n{}", reference_table());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lagbalance-agent: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if sub == "status" {
        let parsed = match StatusArgs::parse(&env, &args[1..]) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("lagbalance-agent: {e}");
                return ExitCode::from(2);
            }
        };
        return match runtime.block_on(lagbalance_agent::status::run(parsed)) {
            Ok(table) => {
                print!("{table}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("lagbalance-agent status: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    if sub == "run" {
        args.remove(0);
    }
    let cfg = match Config::from_sources(&env, &args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lagbalance-agent: {e}");
            return ExitCode::from(2);
        }
    };
    init_logs(&cfg.log);
    match runtime.block_on(lagbalance_agent::run::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "agent failed");
            eprintln!("lagbalance-agent: {e:#}");
            ExitCode::from(1)
        }
    }
}
