//! The runs: [`connect`], [`fanout`] (also `churn`), [`publish`] and [`sqs_hop`] (no
//! sockets: the bare SQS hop beside a fleet), and what they share:
//! resolving the target, tokens, source addresses, the file limit, and turning a
//! finished fleet into a [`RunReport`].

pub mod connect;
pub mod fanout;
pub mod publish;
pub mod sqs_hop;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::cli::{FleetArgs, TargetArgs, TokenArgs, TokenPlacement};
use crate::cpu_monitor::CpuReport;
use crate::fleet::{FailureTally, FleetConfig};
use crate::latency::LatencyHistogram;
use crate::report::{MachineReport, RunReport};
use crate::session::{end_counts, SessionEnd, SessionOutcome, SessionPlan};
use crate::source_addrs::{SourceAddrError, SourceAddrs};
use crate::sys_limits::{raise_nofile, Blame, FileLimit};
use crate::target::{Target, TargetError};
use crate::tokens::{unix_now, TokenError, TokenSource};

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    SourceAddr(#[from] SourceAddrError),
    #[error(transparent)]
    Notify(#[from] crate::notifier::NotifyError),
    #[error(transparent)]
    Node(#[from] crate::nodes::NodeError),
    #[error("cannot read the RSS of server pid {pid}: {source}")]
    ServerPid {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    #[error("SQS {operation} failed: {source}")]
    Sqs {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What a scenario hands back to the binary.
#[derive(Debug)]
pub struct ScenarioOutput {
    pub report: RunReport,
    /// Latency histograms by name (for the plot).
    pub histograms: Vec<(String, LatencyHistogram)>,
}

/// Everything resolved before the first socket opens.
#[derive(Debug)]
pub struct Setup {
    pub target: Arc<Target>,
    /// One token per user, in user order.
    pub tokens: Vec<Arc<str>>,
    pub users: usize,
    pub sources: SourceAddrs,
    pub file_limit: FileLimit,
    pub run_id: Arc<str>,
    pub started: Instant,
    pub started_unix_ms: u64,
    pub placement: TokenPlacement,
    /// `--direct`: the nodes the sockets connect to, round-robin.
    pub direct_targets: Vec<Arc<Target>>,
}

impl Setup {
    pub fn fleet_config(&self, fleet: &FleetArgs) -> FleetConfig {
        FleetConfig {
            target: Arc::clone(&self.target),
            placement: self.placement,
            sources: self.sources.clone(),
            connect_timeout: fleet.connect_timeout,
            max_inflight: fleet.max_inflight,
            stop_after_failures: fleet.stop_after_failures,
            direct_targets: self.direct_targets.clone(),
        }
    }

    /// Token of socket `index`.
    pub fn token_for(&self, index: usize) -> Arc<str> {
        Arc::clone(&self.tokens[index % self.tokens.len()])
    }

    pub fn user_of(&self, index: usize) -> usize {
        index % self.users
    }

    /// Plans for sockets `0..n` that only listen (and ping), with their tokens.
    pub fn listening_plans(
        &self,
        n: usize,
        ping_interval: std::time::Duration,
    ) -> Vec<(SessionPlan, Arc<str>)> {
        (0..n)
            .map(|i| {
                (
                    SessionPlan {
                        index: i,
                        user: self.user_of(i),
                        ping_interval,
                        close_at: None,
                        publish: None,
                    },
                    self.token_for(i),
                )
            })
            .collect()
    }

    /// User of churning socket `index`: scattered over all users, so that churning
    /// sockets do not line up with the rotation of multicast targets (which would make
    /// every one of them a target only while it is connecting).
    pub fn churn_user_of(&self, index: usize) -> usize {
        scatter(index, self.users)
    }

    /// Token of user `user`.
    pub fn token_of_user(&self, user: usize) -> Arc<str> {
        Arc::clone(&self.tokens[user % self.tokens.len()])
    }
}

/// A fixed pseudo-random spread of `index` over `0..users` (Knuth's multiplicative hash).
pub fn scatter(index: usize, users: usize) -> usize {
    ((index as u64).wrapping_mul(2_654_435_761) % users.max(1) as u64) as usize
}

/// A run id unique enough to tell this run's deliveries from another instance's.
pub fn new_run_id() -> String {
    format!("{:x}-{:x}", std::process::id(), unix_now().as_micros())
}

/// Resolves the target, raises the file limit, plans source addresses and obtains one
/// token per user. `sockets` = the most sockets the run may hold at once.
pub async fn prepare(
    target_args: &TargetArgs,
    token_args: &TokenArgs,
    fleet: &FleetArgs,
    sockets: usize,
) -> Result<Setup, ScenarioError> {
    if fleet.sockets == 0 {
        return Err(ScenarioError::Config("--sockets must be at least 1".into()));
    }
    if !(fleet.ramp.is_finite() && fleet.ramp > 0.0) {
        return Err(ScenarioError::Config(
            "--ramp must be a positive number".into(),
        ));
    }
    let target = Target::resolve(
        &target_args.url,
        &target_args.ws_path,
        target_args.allow_remote,
    )
    .await?
    .with_tls(&target_args.tls)?;
    let mut direct_targets = Vec::new();
    if target_args.direct {
        for url in &target_args.nodes {
            // --tls/--ca-file apply to the nodes' sockets too.
            let node = Target::resolve(url, &target_args.ws_path, target_args.allow_remote)
                .await?
                .with_tls(&target_args.tls)?;
            direct_targets.push(Arc::new(node));
        }
    }
    let users = token_args.users.unwrap_or(fleet.sockets).max(1);
    let file_limit = raise_nofile(sockets as u64 + 1024).unwrap_or(FileLimit { soft: 0, hard: 0 });
    let sources = SourceAddrs::plan(
        target.addr.ip(),
        sockets,
        fleet.source_ips,
        fleet.source_base,
    )?;
    let source = TokenSource::from_args(token_args, &target.http_base)?;
    let done = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&done);
    let tokens = source
        .tokens_for_users(
            users,
            &token_args.user_prefix,
            Arc::new(move || {
                counter.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .await?;
    Ok(Setup {
        target: Arc::new(target),
        tokens,
        users,
        sources,
        file_limit,
        run_id: Arc::from(new_run_id()),
        started: Instant::now(),
        started_unix_ms: unix_now().as_millis() as u64,
        placement: token_args.token_in,
        direct_targets,
    })
}

/// Fills the parts of the report every scenario shares: identity, connect failures,
/// sockets the server dropped, and machine limits.
pub fn base_report(
    scenario: &str,
    setup: &Setup,
    failures: &FailureTally,
    outcomes: &[SessionOutcome],
    cpu: CpuReport,
    planned_sockets: usize,
) -> RunReport {
    let mut report = RunReport {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        scenario: scenario.to_string(),
        target: setup.target.ws_url.clone(),
        run_id: setup.run_id.to_string(),
        started_unix_ms: setup.started_unix_ms,
        elapsed_s: setup.started.elapsed().as_secs_f64(),
        ..Default::default()
    };
    for (kind, count) in &failures.counts {
        report
            .errors
            .insert(format!("connect_{}", kind.name()), *count);
        if let Some(sample) = failures.samples.get(kind) {
            report
                .error_samples
                .insert(format!("connect_{}", kind.name()), sample.clone());
        }
    }
    let mut dropped = 0u64;
    for o in outcomes {
        if let SessionEnd::ServerClosed(_) | SessionEnd::Error(_) = o.end {
            dropped += 1;
            if let SessionEnd::Error(message) = &o.end {
                report
                    .error_samples
                    .entry("sockets_dropped".into())
                    .or_insert_with(|| message.clone());
            }
        }
    }
    if dropped > 0 {
        report.errors.insert("sockets_dropped".into(), dropped);
    }
    for (end, count) in end_counts(outcomes) {
        report.counters.insert(format!("end_{end}"), count);
    }
    report.machine = machine_report(setup, failures, cpu, planned_sockets);
    report
}

/// Records a ramp that stopped early (too many failures in a row) as an error.
pub fn note_ramp(report: &mut RunReport, ramp: &crate::fleet::RampStats) {
    if ramp.skipped > 0 {
        report.counters.insert("not_attempted".into(), ramp.skipped);
        report.errors.insert("ramp_stopped_early".into(), 1);
        report.error_samples.insert(
            "ramp_stopped_early".into(),
            format!(
                "ramp stopped after too many failed connects in a row; {} sockets never attempted",
                ramp.skipped
            ),
        );
    }
}

/// Machine limits: machine-side connect failures, too low a file limit, CPU saturation.
pub fn machine_report(
    setup: &Setup,
    failures: &FailureTally,
    cpu: CpuReport,
    planned_sockets: usize,
) -> MachineReport {
    let mut limits = Vec::new();
    let mut limited = false;
    for (kind, count) in &failures.counts {
        if kind.blame() == Blame::Machine {
            limited = true;
            limits.push(format!(
                "{count} connects failed with {}: {}",
                kind.name(),
                kind.machine_hint()
                    .unwrap_or("a resource of this machine ran out")
            ));
        }
    }
    if setup.file_limit.soft > 0 && (setup.file_limit.soft as usize) < planned_sockets + 64 {
        limited = true;
        limits.push(format!(
            "open-file limit {} is below the {planned_sockets} sockets planned (raise ulimit -Hn)",
            setup.file_limit.soft
        ));
    }
    let cpu_limits = cpu.limits();
    if !cpu_limits.is_empty() {
        limited = true;
    }
    limits.extend(cpu_limits);
    MachineReport {
        nofile_soft: setup.file_limit.soft,
        nofile_hard: setup.file_limit.hard,
        source_addrs: setup.sources.len(),
        cpu,
        limited_by_machine: limited,
        limits,
    }
}

/// Adds the flags of a run to the report's config map.
pub fn config_entry(report: &mut RunReport, key: &str, value: impl serde::Serialize) {
    if let Ok(v) = serde_json::to_value(value) {
        report.config.insert(key.to_string(), v);
    }
}

/// Error frames by status, summed over sessions.
pub fn error_frames(outcomes: &[SessionOutcome]) -> BTreeMap<u16, u64> {
    let mut total = BTreeMap::new();
    for o in outcomes {
        for (status, count) in &o.error_frames {
            *total.entry(*status).or_insert(0) += count;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scatter_covers_users_without_following_the_index() {
        let users = 100;
        let mut seen = vec![0u32; users];
        for i in 0..10_000 {
            seen[scatter(i, users)] += 1;
        }
        assert!(
            seen.iter().all(|&c| c > 0),
            "every user gets churning sockets"
        );
        let consecutive = (0..1000)
            .filter(|&i| scatter(i + 1, users) == (scatter(i, users) + 1) % users)
            .count();
        assert!(
            consecutive < 50,
            "{consecutive} consecutive indices map to consecutive users"
        );
        assert_eq!(scatter(5, 0), 0);
    }
}
