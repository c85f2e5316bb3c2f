//! `sumu-loadtest`: the binary edge. Parses flags, runs a scenario, prints the summary,
//! writes --json / --plot. Exit status: 0 = the run completed with no error counted,
//! 1 = it completed but counted errors (failed connects, lost deliveries, ...),
//! 2 = it could not run (bad flags, unreachable key file, refused target).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use sumu_loadtest::cli::{Cli, Command, OutputArgs};
use sumu_loadtest::scenario::fanout::ChurnPlan;
use sumu_loadtest::scenario::{connect, fanout, publish, sqs_hop, ScenarioOutput};
use sumu_loadtest::tokens::{unix_now, TokenSource};
use sumu_loadtest::{bench_report, plot};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(clean) => {
            if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the command; Ok(true) when no error was counted.
async fn run(cli: Cli) -> anyhow::Result<bool> {
    let (output, result) = match &cli.command {
        Command::Connect(args) => (&args.output, connect::run(args).await),
        Command::Fanout(args) => (&args.output, fanout::run(args, None).await),
        Command::Churn(args) => (
            &args.fanout.output,
            fanout::run(
                &args.fanout,
                Some(ChurnPlan {
                    rate: args.churn_rate,
                    life: args.churn_life,
                }),
            )
            .await,
        ),
        Command::Publish(args) => (&args.output, publish::run(args).await),
        Command::SqsHop(args) => (&args.output, sqs_hop::run(args).await),
        Command::Token(args) => {
            let source = TokenSource::from_args(&args.tokens, "")?;
            let TokenSource::Mint(minter) = source else {
                anyhow::bail!("token mints locally: give --hs256-secret or --private-key");
            };
            println!("{}", minter.mint(&args.sub, unix_now().as_secs())?);
            return Ok(true);
        }
        Command::BenchReport(args) => {
            bench_report::write(&args.dir, &args.peers, &args.preamble, &args.output)
                .context("writing the bench report")?;
            return Ok(true);
        }
    };
    let output_result = result.context("the run could not start")?;
    emit(output, &output_result)?;
    Ok(output_result.report.error_total() == 0)
}

fn emit(output: &OutputArgs, result: &ScenarioOutput) -> anyhow::Result<()> {
    if !output.quiet {
        print!("{}", result.report.summary_table());
    }
    if let Some(path) = &output.json {
        result.report.write_json(path)?;
    }
    if let Some(path) = &output.plot {
        let title = format!(
            "sumu-loadtest {} ({})",
            result.report.scenario, result.report.target
        );
        plot::write_percentile_plot(path, &title, &result.histograms)?;
    }
    Ok(())
}
