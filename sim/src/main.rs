//! `lagbalance-sim --scenario NAME|all [--out DIR] [--seeds N] [--noise F] [--stats-period S]
//! [--agent VAR=VALUE]...`:
//! run a scenario preset against every strategy over seeds 1..=N, print the markdown table, and
//! write it with SVG plots into DIR (default docs/sim). Exits with an error if any acceptance
//! check of issue 4 is not met for some seed. `--scenario partitioner`
//! runs `agoda` and `hot-partitions` with a dedicated producer (issue 7) into DIR/partitioner.md.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use lagbalance_sim::report::{evaluate, evaluate_producer};
use lagbalance_sim::{
    by_name, with_producer, Measurement, Scenario, Strategy, DEFAULT_SEEDS, NAMES, PRODUCER_NAMES,
};

/// The value after a flag, parsed.
fn value<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T> {
    let v = v.with_context(|| format!("{flag} needs a value"))?;
    v.parse()
        .map_err(|_| anyhow::anyhow!("{flag}: cannot parse {v:?}"))
}

/// Apply `--agent` settings over the scenario's own and check them as the agent would.
fn set_agent_env(sc: &mut Scenario, env: &[(String, String)]) -> Result<()> {
    if env.is_empty() {
        return Ok(());
    }
    let Some(agents) = &mut sc.triggers.agents else {
        bail!("--agent: scenario {} runs without agents", sc.name);
    };
    for (var, val) in env {
        agents.env.retain(|(k, _)| k != var);
        agents.env.push((var.clone(), val.clone()));
    }
    sc.agent_config(sc.load)
        .map_err(|e| anyhow::anyhow!("--agent: {e}"))?;
    Ok(())
}

fn main() -> Result<()> {
    let mut scenario = None;
    let mut out = PathBuf::from("docs/sim");
    let mut seeds = DEFAULT_SEEDS;
    let mut measurement = Measurement::REALISTIC;
    let mut agent_env: Vec<(String, String)> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--scenario" => scenario = args.next(),
            "--out" => out = PathBuf::from(args.next().context("--out needs a directory")?),
            "--seeds" => seeds = value(&a, args.next())?,
            "--noise" => measurement.noise = value(&a, args.next())?,
            "--stats-period" => measurement.period_s = value(&a, args.next())?,
            "--agent" => {
                let v = args.next().context("--agent needs VAR=VALUE")?;
                let Some((var, val)) = v.split_once('=') else {
                    bail!("--agent: {v:?} is not VAR=VALUE");
                };
                agent_env.push((var.to_owned(), val.to_owned()));
            }
            "-h" | "--help" => {
                println!(
                    "usage: lagbalance-sim --scenario NAME|all|partitioner [--out DIR] [--seeds N] [--noise F] [--stats-period S] [--agent VAR=VALUE]...\n\
                     scenarios: {} (partitioner: agoda and hot-partitions with a dedicated producer, issue 7)\n\
                     --seeds N          evaluate over seeds 1..=N (default {DEFAULT_SEEDS})\n\
                     --noise F          relative error of the members' self-measurement, uniform ±F per sample (default {})\n\
                     --stats-period S   members sample themselves every S s and report the latest sample; 0 = at the join (default {})\n\
                     --agent VAR=VALUE  set an agent variable (e.g. LAGBALANCE_BUDGET_PER_HOUR=4) for every member's agent, over the scenario's own",
                    NAMES.join(", "),
                    Measurement::REALISTIC.noise,
                    Measurement::REALISTIC.period_s
                );
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if seeds == 0 || !(0.0..1.0).contains(&measurement.noise) || measurement.period_s < 0.0 {
        bail!("need --seeds >= 1, 0 <= --noise < 1 and --stats-period >= 0");
    }
    let seeds: Vec<u64> = (1..=seeds).collect();
    let Some(scenario) = scenario else {
        bail!(
            "--scenario NAME|all is required; scenarios: {}",
            NAMES.join(", ")
        );
    };
    if scenario == "partitioner" {
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        let mut md = String::from("## Lag-aware producer partitioner (issue 7)\n\n");
        for name in PRODUCER_NAMES {
            let Some(mut sc) = with_producer(name) else {
                bail!("no producer preset {name:?}");
            };
            sc.measurement = measurement;
            set_agent_env(&mut sc, &agent_env)?;
            let started = Instant::now();
            let rep = evaluate_producer(&sc, &seeds);
            eprintln!(
                "{name} with a producer: evaluated in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            println!("{}", rep.markdown);
            md.push_str(&rep.markdown);
            md.push('\n');
            for (file, svg) in &rep.svgs {
                std::fs::write(out.join(file), svg)?;
            }
        }
        std::fs::write(out.join("partitioner.md"), md)?;
        return Ok(());
    }
    let names: Vec<&str> = if scenario == "all" {
        NAMES.to_vec()
    } else {
        vec![scenario.as_str()]
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut failed = Vec::new();
    for name in names {
        let Some(mut sc) = by_name(name) else {
            bail!("unknown scenario {name:?}; scenarios: {}", NAMES.join(", "));
        };
        sc.measurement = measurement;
        set_agent_env(&mut sc, &agent_env)?;
        let started = Instant::now();
        let rep = evaluate(&sc, &Strategy::ALL, &seeds);
        println!("{}", rep.markdown);
        eprintln!(
            "{name}: evaluated in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        std::fs::write(out.join(format!("{name}.md")), &rep.markdown)?;
        for (file, svg) in &rep.svgs {
            std::fs::write(out.join(file), svg)?;
        }
        failed.extend(
            rep.checks
                .iter()
                .filter(|c| !c.1)
                .map(|c| format!("{name}: {}", c.0)),
        );
    }
    if !failed.is_empty() {
        // The files are written either way; the exit status lets scripts notice a regression.
        bail!("acceptance checks not met:\n  {}", failed.join("\n  "));
    }
    Ok(())
}
