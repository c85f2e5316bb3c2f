//! The `sumu-node` binary: parse the command line, then serve (until
//! SIGTERM/SIGINT), bootstrap, or report the fleet's status.

use anyhow::Context;
use clap::Parser;
use sumu_node::config::{Cli, ClusterCommand, Command, Config};
use sumu_node::server;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref(), cli.options).context("configuration")?;
    sumu_node::init_logging(config.log_format, &config.log);
    sumu_node::raise_file_limit();
    let system = actix_web::rt::System::new();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            config.require_keys().context("configuration")?;
            system.block_on(async {
                let listener = server::bind(config.listen)?;
                server::serve(config, listener, server::signalled()).await
            })?
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
