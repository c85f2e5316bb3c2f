use anyhow::Context;
use clap::Parser;
use sumu_node::config::{Cli, Command, Config};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref(), cli.options).context("configuration")?;
    sumu_node::logging::init(config.log_format, &config.log);
    raise_file_limit();
    let system = actix_web::rt::System::new();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            config.require_keys().context("configuration")?;
            system.block_on(sumu_node::server::run(config))?
        }
        Command::Bootstrap => {
            let resources = system
                .block_on(sumu_node::engine::aws::bootstrap(&config))
                .context("bootstrap")?;
            print!("{}", resources.to_env());
        }
    }
    Ok(())
}

/// Each socket is a descriptor: lift the soft limit to the hard one.
fn raise_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
