//! The `sumu-node` binary: parse the command line, then serve (until
//! SIGTERM/SIGINT), bootstrap, or report the fleet's status. Exit codes: 0
//! done, 1 any error, 3 ([`server::EXIT_TLS`]) the TLS certificate or key is
//! unusable at start.

use anyhow::Context;
use clap::Parser;
use sumu_node::config::{Cli, ClusterCommand, Command, Config};
use sumu_node::server;

/// `e` and its causes on one line: `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref(), cli.options).context("configuration")?;
    sumu_node::init_logging(config.log_format, &config.log);
    sumu_node::raise_file_limit();
    let system = actix_web::rt::System::new();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            config.require_keys().context("configuration")?;
            let served = system.block_on(async {
                let listener = server::bind(config.listen)?;
                server::serve(config, listener, server::signalled()).await
            });
            if let Err(server::NodeError::Tls(e)) = &served {
                // One line naming the file, and a code of its own (README: "Exit codes").
                eprintln!("error: {}", chain(e));
                std::process::exit(server::EXIT_TLS);
            }
            served?
        }
        Command::Bootstrap => {
            let env = system
                .block_on(server::bootstrap(&config))
                .context("bootstrap")?;
            print!("{env}");
        }
        Command::Cluster {
            command: ClusterCommand::Status { json },
        } => {
            let status = system
                .block_on(server::cluster_status(&config, json))
                .context("cluster status")?;
            print!("{status}");
        }
    }
    Ok(())
}
