//! `publish`: every socket publishes (or sends) frames with an `id` at a rate; the latency
//! is from writing the frame to receiving the `ack` with that id. The server's
//! per-connection rate limit is respected unless --exceed-rate-limit.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    base_report, config_entry, error_frames, note_ramp, prepare, ScenarioError, ScenarioOutput,
};
use crate::cli::PublishArgs;
use crate::cpu_monitor::CpuMonitor;
use crate::fleet::Fleet;
use crate::progress::{Position, Progress};
use crate::session::{PublishPlan, SessionPlan};

/// Client frames per second a socket sends: publishes plus keepalive pings.
pub fn frames_per_second(rate: f64, ping_interval: Duration) -> f64 {
    let pings = if ping_interval.is_zero() {
        0.0
    } else {
        1.0 / ping_interval.as_secs_f64()
    };
    rate + pings
}

pub async fn run(args: &PublishArgs) -> Result<ScenarioOutput, ScenarioError> {
    let n = args.fleet.sockets;
    if !(args.rate.is_finite() && args.rate > 0.0) {
        return Err(ScenarioError::Config(
            "--rate must be a positive number".into(),
        ));
    }
    let per_socket = frames_per_second(args.rate, args.fleet.ping_interval);
    if per_socket > args.server_rate_limit && !args.exceed_rate_limit {
        return Err(ScenarioError::Config(format!(
            "{per_socket:.1} frames/s per socket exceeds the server rate limit of {} frames/s; \
             lower --rate or pass --exceed-rate-limit to test the limiter knowingly",
            args.server_rate_limit
        )));
    }
    let setup = prepare(&args.target, &args.tokens, &args.fleet, n).await?;
    let cpu = CpuMonitor::start();
    let mut fleet = Fleet::new(setup.fleet_config(&args.fleet), Arc::clone(&setup.run_id));
    let mut progress = Progress::new(!args.output.no_progress, n as u64);
    progress.phase("connect", n as u64, fleet.live.clone(), Position::Connected);
    let publish = PublishPlan {
        action: args.action,
        interval: Duration::from_secs_f64(1.0 / args.rate),
        duration: args.duration,
        payload_bytes: args.payload_bytes,
    };
    let plans = (0..n)
        .map(|i| {
            (
                SessionPlan {
                    index: i,
                    user: setup.user_of(i),
                    ping_interval: args.fleet.ping_interval,
                    close_at: None,
                    publish: Some(publish.clone()),
                },
                setup.token_for(i),
            )
        })
        .collect();
    let ramp = fleet.ramp(plans, args.fleet.ramp).await;
    // Every socket publishes for --duration from its own connect; the last one connected
    // at the end of the ramp.
    let publish_start = ramp.started;
    let phase_start = Instant::now();
    progress.phase(
        "publish",
        args.duration.as_secs().max(1),
        fleet.live.clone(),
        Position::Elapsed(phase_start),
    );
    tokio::time::sleep(args.duration).await;
    let ack_deadline = Instant::now() + args.ack_timeout;
    let live = fleet.live.clone();
    while Instant::now() < ack_deadline {
        let published = live.published.load(Ordering::Relaxed);
        let answered =
            live.acked.load(Ordering::Relaxed) + live.error_frames.load(Ordering::Relaxed);
        if answered >= published {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let publish_end = Instant::now();
    let sinks = fleet.sinks.clone();
    let result = fleet.stop(Duration::from_secs(15)).await;
    progress.finish();

    let mut report = base_report(
        "publish",
        &setup,
        &result.failures,
        &result.outcomes,
        cpu.finish(),
        n,
    );
    note_ramp(&mut report, &ramp);
    config_entry(&mut report, "sockets", n);
    config_entry(
        &mut report,
        "action",
        format!("{:?}", args.action).to_lowercase(),
    );
    config_entry(&mut report, "rate_per_socket_per_s", args.rate);
    config_entry(&mut report, "duration_s", args.duration.as_secs_f64());
    config_entry(&mut report, "payload_bytes", args.payload_bytes);

    let published: u64 = result.outcomes.iter().map(|o| o.published).sum();
    let acked: u64 = result.outcomes.iter().map(|o| o.acked).sum();
    let unacked: u64 = result.outcomes.iter().map(|o| o.unacked).sum();
    let unknown: u64 = result.outcomes.iter().map(|o| o.unknown_acks).sum();
    let frames = error_frames(&result.outcomes);
    let rejected: u64 = frames.values().sum();
    let c = &mut report.counters;
    c.insert("established".into(), ramp.established);
    c.insert("failed".into(), ramp.failed);
    c.insert("published".into(), published);
    c.insert("acked".into(), acked);
    c.insert("rejected".into(), rejected);
    c.insert("unacked".into(), unacked.saturating_sub(rejected));
    for (status, count) in frames {
        report.errors.insert(format!("error_frame_{status}"), count);
    }
    if unacked > rejected {
        report.errors.insert("unacked".into(), unacked - rejected);
    }
    if unknown > 0 {
        report.errors.insert("unknown_acks".into(), unknown);
    }
    if result.aborted > 0 {
        report
            .errors
            .insert("tasks_aborted_at_stop".into(), result.aborted);
    }
    let window = publish_end.duration_since(publish_start).as_secs_f64();
    if window > 0.0 {
        report
            .rates
            .insert("acks_per_s".into(), acked as f64 / window);
    }
    report
        .rates
        .insert("connects_per_s".into(), ramp.connect_rate());
    let connect = sinks.connect.merged();
    let ack = sinks.ack.merged();
    report.latencies.insert("connect".into(), connect.summary());
    report.latencies.insert("ack".into(), ack.summary());
    Ok(ScenarioOutput {
        report,
        histograms: vec![("ack".into(), ack), ("connect".into(), connect)],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_include_keepalive() {
        assert_eq!(frames_per_second(10.0, Duration::ZERO), 10.0);
        assert!((frames_per_second(10.0, Duration::from_millis(500)) - 12.0).abs() < 1e-9);
    }
}
