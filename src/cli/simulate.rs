//! `faaswap simulate`: runs policies over a scenario in virtual time and reports compliance,
//! latency, swaps and device load per policy and function count.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use rayon::prelude::*;

use super::CliError;
use crate::policy::{estimate, PolicyKind};
use crate::simulator::{self, workload, Report, Scenario, SimOptions};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// `paper-node` or a scenario TOML file (devices, links, models, workload).
    #[arg(long, default_value = "paper-node")]
    pub scenario: String,
    /// Function counts, comma-separated (models assigned round-robin).
    #[arg(long, value_delimiter = ',', default_value = "480,560,640")]
    pub functions: Vec<usize>,
    /// Policies, comma-separated: native, simpleswap, torpor, faaswap.
    #[arg(long = "policy", value_delimiter = ',', default_value = "native,simpleswap,torpor,faaswap")]
    pub policies: Vec<PolicyKind>,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Replay this CSV trace (`time_ms,function`) instead of generating arrivals.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// faaswap: drop requests that cannot meet their deadline anywhere (each counted as a miss
    /// and reported as dropped); `--shed false` runs every request however late.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub shed: bool,
    /// Write the JSON report here.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Draw compliance against function count per policy as SVG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Also print each run's compliance and p98 latency per model.
    #[arg(long)]
    pub by_model: bool,
}

pub fn run(a: SimulateArgs) -> Result<(), CliError> {
    let sim_err = |e: simulator::SimError| CliError::Usage(e.to_string());
    let scenario = Scenario::load(&a.scenario).map_err(sim_err)?;
    if a.functions.is_empty() || a.functions.iter().any(|&n| n == 0 || n > 100_000) {
        return Err(CliError::Usage("--functions must list counts from 1 to 100000".into()));
    }
    let mut runs = Vec::new();
    for &n in &a.functions {
        for &p in &a.policies {
            runs.push((n, p));
        }
    }
    let traces: Vec<(usize, Vec<simulator::Arrival>)> = a
        .functions
        .iter()
        .map(|&n| {
            let t = match &a.trace {
                Some(path) => workload::load_csv(path, &scenario, n).map_err(sim_err)?,
                None => workload::generate(&scenario, n, a.seed),
            };
            Ok((n, t))
        })
        .collect::<Result<_, CliError>>()?;
    let started = Instant::now();
    let reports = runs
        .par_iter()
        .map(|&(n, policy)| {
            let trace = &traces.iter().find(|(m, _)| *m == n).expect("a trace per count").1;
            simulator::run(&scenario, SimOptions { policy, functions: n, seed: a.seed, shed: a.shed }, trace)
        })
        .collect();
    let report = Report {
        scenario: scenario.name.clone(),
        seed: a.seed,
        batched_exec_model: estimate::BATCH_MODEL.to_string(),
        shed: a.shed,
        runs: reports,
        note: None,
    };
    print!("{}", report.table(a.by_model));
    std::io::Write::flush(&mut std::io::stdout())?;
    eprintln!("{} runs simulated in {:.1} s", report.runs.len(), started.elapsed().as_secs_f64());
    if let Some(path) = &a.output {
        let json = serde_json::to_string_pretty(&report).map_err(std::io::Error::from)?;
        std::fs::write(path, json + "\n")?;
    }
    if let Some(path) = &a.plot {
        report.plot(path).map_err(sim_err)?;
    }
    Ok(())
}
