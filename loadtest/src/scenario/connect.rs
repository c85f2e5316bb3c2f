//! `connect`: open N sockets at a ramp rate, hold them with ping keepalive, report connect
//! latency, failures, sockets held, and (with --server-pid) server RSS per socket.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{base_report, config_entry, note_ramp, prepare, ScenarioError, ScenarioOutput};
use crate::cli::ConnectArgs;
use crate::cpu_monitor::CpuMonitor;
use crate::fleet::Fleet;
use crate::progress::{Position, Progress};
use crate::report::ServerMemory;
use crate::sys_limits::{read_fd_usage, read_vmrss_kib};

pub async fn run(args: &ConnectArgs) -> Result<ScenarioOutput, ScenarioError> {
    let n = args.fleet.sockets;
    let setup = prepare(&args.target, &args.tokens, &args.fleet, n).await?;
    let read_rss =
        |pid: u32| read_vmrss_kib(pid).map_err(|source| ScenarioError::ServerPid { pid, source });
    let rss_before = args.server_pid.map(read_rss).transpose()?;
    let fds_before = args
        .server_pid
        .and_then(|pid| read_fd_usage(pid).ok())
        .map(|(open, _)| open);

    let cpu = CpuMonitor::start();
    let mut fleet = Fleet::new(
        setup.fleet_config(&args.fleet),
        std::sync::Arc::clone(&setup.run_id),
    );
    let mut progress = Progress::new(!args.output.no_progress, n as u64);
    progress.phase("connect", n as u64, fleet.live.clone(), Position::Connected);

    let plans = setup.listening_plans(n, args.fleet.ping_interval);
    let ramp = fleet.ramp(plans, args.fleet.ramp).await;
    let held_after_ramp = fleet.live.open();

    let server = match (args.server_pid, rss_before) {
        (Some(pid), Some(before)) => {
            tokio::time::sleep(args.rss_settle).await;
            let after = read_rss(pid)?;
            let mut memory = ServerMemory::new(pid, before, after, fleet.live.open());
            if let Ok((fds, limit)) = read_fd_usage(pid) {
                memory.set_fds(fds_before.unwrap_or(0), fds, limit);
            }
            Some(memory)
        }
        _ => None,
    };

    let hold_start = Instant::now();
    progress.phase(
        "hold",
        args.hold.as_secs().max(1),
        fleet.live.clone(),
        Position::Elapsed(hold_start),
    );
    tokio::time::sleep(args.hold).await;
    let held_at_end = fleet.live.open();
    let live = fleet.live.clone();
    let sinks = fleet.sinks.clone();
    let result = fleet.stop(Duration::from_secs(15)).await;
    progress.finish();

    let mut report = base_report(
        "connect",
        &setup,
        &result.failures,
        &result.outcomes,
        cpu.finish(),
        n,
    );
    note_ramp(&mut report, &ramp);
    config_entry(&mut report, "sockets", n);
    config_entry(&mut report, "ramp_per_s", args.fleet.ramp);
    config_entry(&mut report, "users", setup.users);
    config_entry(&mut report, "hold_s", args.hold.as_secs_f64());
    config_entry(
        &mut report,
        "ping_interval_s",
        args.fleet.ping_interval.as_secs_f64(),
    );
    report
        .counters
        .insert("attempted".into(), live.attempted.load(Ordering::Relaxed));
    report
        .counters
        .insert("established".into(), ramp.established);
    report.counters.insert("failed".into(), ramp.failed);
    report
        .counters
        .insert("held_after_ramp".into(), held_after_ramp);
    report.counters.insert("held_at_end".into(), held_at_end);
    report.counters.insert(
        "pongs".into(),
        result.outcomes.iter().map(|o| o.pongs).sum(),
    );
    if result.aborted > 0 {
        report
            .errors
            .insert("tasks_aborted_at_stop".into(), result.aborted);
    }
    report
        .rates
        .insert("connects_per_s".into(), ramp.connect_rate());
    if let Some(memory) = server.as_ref().filter(|m| m.at_fd_limit()) {
        report.machine.limited_by_machine = true;
        report.machine.limits.push(format!(
            "the server process had {} of its {} file descriptors open ({:.2} per socket): \
             its open-file limit capped the sockets (raise ulimit -n where it starts)",
            memory.fds, memory.fd_limit, memory.fds_per_socket
        ));
    }
    report.server = server;

    let connect = sinks.connect.merged();
    let pong = sinks.pong.merged();
    report.latencies.insert("connect".into(), connect.summary());
    if !pong.is_empty() {
        report.latencies.insert("pong".into(), pong.summary());
    }
    Ok(ScenarioOutput {
        report,
        histograms: vec![("connect".into(), connect), ("pong".into(), pong)],
    })
}
