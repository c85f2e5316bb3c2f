//! `fanout` and `churn`: hold N receivers, inject notification requests (broadcast,
//! multicast of K users, unicast) over HTTP or SQS at a rate, and measure per-delivery
//! latency from the timestamp inside `data`. With churn, extra sockets connect and close
//! at a rate meanwhile. Afterwards every socket that was live for a whole request (from
//! `--settle` before it was sent to `--settle` after it was accepted) must have received
//! it exactly once: anything else is counted as lost, duplicated or misdelivered.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{base_report, config_entry, note_ramp, prepare, ScenarioError, ScenarioOutput};
use crate::cli::{FanoutArgs, FanoutMode, NotifyVia};
use crate::cpu_monitor::CpuMonitor;
use crate::fleet::Fleet;
use crate::latency::{LatencyHistogram, LocalRecorder, ShardedHistogram};
use crate::nodes::{NodeMetrics, Nodes};
use crate::notifier::{bench_data, request_body, targets_for, Notifier};
use crate::progress::{Position, Progress};
use crate::report::FleetReport;
use crate::session::{SessionOutcome, SessionPlan, Sinks};
use crate::sys_limits::{clock_ticks_per_second, read_cpu_ticks, read_process_user_sys_ticks};
use crate::tokens::{unix_now, user_name};

/// Extra sockets that connect and close while notifications run.
#[derive(Debug, Clone, Copy)]
pub struct ChurnPlan {
    pub rate: f64,
    pub life: Duration,
}

/// One notification request as sent.
#[derive(Debug, Clone)]
pub struct SentRequest {
    pub seq: u64,
    /// Targeted user indices, sorted; None = broadcast.
    pub users: Option<Vec<usize>>,
    pub started: Instant,
    /// When the server (or SQS) accepted it; None = failed.
    pub accepted: Option<Instant>,
    pub server_deliveries: Option<u64>,
    pub error: Option<(String, String)>,
}

/// Delivery accounting over all requests and sockets.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeliveryCheck {
    pub expected: u64,
    pub delivered_expected: u64,
    pub lost: u64,
    pub misdelivered: u64,
    pub duplicates: u64,
    pub foreign: u64,
    /// Deliveries of this run received by any socket (unique per socket and request).
    pub received: u64,
}

fn targeted(request: &SentRequest, user: usize) -> bool {
    match &request.users {
        None => true,
        Some(users) => users.binary_search(&user).is_ok(),
    }
}

/// Compares what each socket received with what it had to receive.
pub fn check_deliveries(
    requests: &[SentRequest],
    outcomes: &[SessionOutcome],
    settle: Duration,
) -> DeliveryCheck {
    let mut check = DeliveryCheck::default();
    let by_seq: std::collections::HashMap<u64, &SentRequest> =
        requests.iter().map(|r| (r.seq, r)).collect();
    for o in outcomes {
        check.duplicates += o.duplicates;
        check.foreign += o.foreign;
        check.received += o.seen.len() as u64;
        for seq in o.seen.iter() {
            match by_seq.get(&seq) {
                Some(r) if targeted(r, o.user) => {}
                _ => check.misdelivered += 1,
            }
        }
        for r in requests {
            let Some(accepted) = r.accepted else { continue };
            if !targeted(r, o.user) {
                continue;
            }
            let live_before = o.connected_at + settle <= r.started;
            let live_after = o.ended_at >= accepted + settle;
            if live_before && live_after {
                check.expected += 1;
                if o.seen.contains(r.seq) {
                    check.delivered_expected += 1;
                } else {
                    check.lost += 1;
                }
            }
        }
    }
    check
}

/// Sockets per user among `established` socket indices.
fn sockets_per_user(users: usize, established: impl Iterator<Item = usize>) -> Vec<u64> {
    let mut counts = vec![0u64; users];
    for index in established {
        counts[index % users] += 1;
    }
    counts
}

pub async fn run(
    args: &FanoutArgs,
    churn: Option<ChurnPlan>,
) -> Result<ScenarioOutput, ScenarioError> {
    let scenario = if churn.is_some() { "churn" } else { "fanout" };
    let n = args.fleet.sockets;
    let notify = &args.notify;
    if !(notify.rate.is_finite() && notify.rate > 0.0) {
        return Err(ScenarioError::Config(
            "--rate must be a positive number".into(),
        ));
    }
    if let Some(c) = churn {
        if !(c.rate.is_finite() && c.rate >= 0.0) {
            return Err(ScenarioError::Config("--churn-rate must be >= 0".into()));
        }
    }
    // Churning sockets alive at once: rate x life (plus slack).
    let churn_peak = churn
        .map(|c| (c.rate * c.life.as_secs_f64()).ceil() as usize + 64)
        .unwrap_or(0);
    let setup = prepare(&args.target, &args.tokens, &args.fleet, n + churn_peak).await?;
    let nodes = if args.target.nodes.is_empty() {
        None
    } else {
        Some(Nodes::new(args.target.nodes.clone(), &notify.api_key)?)
    };
    // Over HTTP with --nodes, request `seq` goes to node `seq mod N` (its router).
    let notifiers: Vec<Notifier> = match (notify.via, &nodes) {
        (NotifyVia::Http, Some(nodes)) => nodes
            .urls
            .iter()
            .map(|url| Notifier::http(url, &notify.api_key))
            .collect::<Result<_, _>>()?,
        (NotifyVia::Http, None) => vec![Notifier::http(&setup.target.http_base, &notify.api_key)?],
        (NotifyVia::Sqs, _) => vec![
            Notifier::sqs(
                notify.queue_url.as_deref(),
                notify.aws_endpoint.as_deref(),
                &notify.aws_region,
            )
            .await?,
        ],
    };
    let routed_by_node = notify.via == NotifyVia::Http && nodes.is_some();
    let notifiers = Arc::new(notifiers);

    let cpu = CpuMonitor::start();
    let mut fleet = Fleet::new(setup.fleet_config(&args.fleet), Arc::clone(&setup.run_id));
    if nodes.is_some() {
        // Each delivery's socket and latency, for the same-node / cross-node split.
        fleet.sinks = Arc::new(Sinks::with_tap());
    }
    let mut progress = Progress::new(!args.output.no_progress, n as u64);
    progress.phase("connect", n as u64, fleet.live.clone(), Position::Connected);
    let plans = setup.listening_plans(n, args.fleet.ping_interval);
    let ramp = fleet.ramp(plans, args.fleet.ramp).await;
    // Let the server register the last sockets before the first request.
    tokio::time::sleep(notify.settle).await;
    let mut fleet_report = None;
    let mut locations = std::collections::HashMap::new();
    let mut metrics_before = NodeMetrics::default();
    if let Some(nodes) = &nodes {
        let mut report = FleetReport::default();
        for (url, m) in nodes.urls.iter().zip(nodes.all_metrics().await) {
            let m = m?;
            report.sockets_per_node.insert(url.clone(), m.connections);
            metrics_before.add(&m);
        }
        locations = nodes.user_locations().await;
        report.sockets_located = (0..n)
            .filter(|&i| {
                locations.contains_key(&user_name(&args.tokens.user_prefix, setup.user_of(i)))
            })
            .count() as u64;
        fleet_report = Some(report);
    }

    progress.phase(
        "notify",
        notify.count,
        fleet.live.clone(),
        Position::Notifications,
    );
    let accept_latency = Arc::new(ShardedHistogram::new(4));
    let inflight = Arc::new(Semaphore::new(notify.inflight.max(1)));
    let mut sends: JoinSet<SentRequest> = JoinSet::new();
    let cpu_at_start = CpuSpent::read(args.server_pid);
    let send_start = Instant::now();
    let send_deadline = send_start + notify.duration;
    let interval = Duration::from_secs_f64(1.0 / notify.rate);
    let churn_interval = churn
        .filter(|c| c.rate > 0.0)
        .map(|c| Duration::from_secs_f64(1.0 / c.rate));
    let mut next_notify = send_start;
    let mut next_churn = send_start;
    let mut churn_index = n;
    let mut seq: u64 = 0;
    let mut collected: Vec<SentRequest> = Vec::new();
    let padding = notify.payload_bytes;
    let prefix = args.tokens.user_prefix.clone();
    // Bounded by --count and --duration (and churn by the same deadline).
    while seq < notify.count && Instant::now() < send_deadline {
        let churn_due = churn_interval
            .map(|_| next_churn)
            .filter(|t| *t < next_notify);
        if let (Some(due), Some(every), Some(plan)) = (churn_due, churn_interval, churn) {
            tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
            let index = churn_index;
            churn_index += 1;
            let user = setup.churn_user_of(index);
            fleet
                .spawn(
                    SessionPlan {
                        index,
                        user,
                        ping_interval: args.fleet.ping_interval,
                        close_at: Some(Instant::now() + plan.life),
                        publish: None,
                    },
                    setup.token_of_user(user),
                )
                .await;
            next_churn += every;
            continue;
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(next_notify)).await;
        next_notify += interval;
        let Ok(permit) = Arc::clone(&inflight).acquire_owned().await else {
            break;
        };
        let users = targets_for(seq, notify.mode, notify.k, setup.users).map(|mut u| {
            u.sort_unstable();
            u.dedup();
            u
        });
        let this_seq = seq;
        seq += 1;
        let notifiers = Arc::clone(&notifiers);
        let accept_latency = Arc::clone(&accept_latency);
        let run_id = Arc::clone(&setup.run_id);
        let prefix = prefix.clone();
        let live = fleet.live.clone();
        sends.spawn(async move {
            let started = Instant::now();
            let data = bench_data(&run_id, this_seq, unix_now().as_micros() as u64, padding);
            let body = request_body(users.as_deref(), &prefix, &data);
            let result = notifiers[(this_seq % notifiers.len() as u64) as usize]
                .send(body)
                .await;
            drop(permit);
            live.notifications.fetch_add(1, Ordering::Relaxed);
            let mut request = SentRequest {
                seq: this_seq,
                users,
                started,
                accepted: None,
                server_deliveries: None,
                error: None,
            };
            match result {
                Ok(server_deliveries) => {
                    let accepted = Instant::now();
                    let mut rec = LocalRecorder::new(this_seq as usize);
                    rec.record(
                        &accept_latency,
                        accepted.duration_since(started).as_micros() as u64,
                    );
                    rec.flush(&accept_latency);
                    request.accepted = Some(accepted);
                    request.server_deliveries = server_deliveries;
                }
                Err(e) => request.error = Some((e.kind_name(), e.to_string())),
            }
            request
        });
        while let Some(done) = sends.try_join_next() {
            if let Ok(r) = done {
                collected.push(r);
            }
        }
    }
    let send_end = Instant::now();
    let mut requests: Vec<SentRequest> = collected;
    // Each send is bounded by the HTTP client / SDK timeouts.
    while let Some(done) = sends.join_next().await {
        if let Ok(r) = done {
            requests.push(r);
        }
    }
    requests.sort_by_key(|r| r.seq);

    // Drain: wait for the deliveries the stable sockets still owe. Exact for broadcasts;
    // for multicasts after a ramp with failures (which sockets failed is not known yet)
    // this may wait until --drain-timeout.
    progress.phase(
        "drain",
        notify.count,
        fleet.live.clone(),
        Position::Notifications,
    );
    let per_user = sockets_per_user(setup.users, 0..n);
    let expected_stable: u64 = requests
        .iter()
        .filter(|r| r.accepted.is_some())
        .map(|r| match &r.users {
            None => ramp.established,
            Some(users) => users.iter().map(|&u| per_user[u]).sum(),
        })
        .sum();
    let drain_deadline = Instant::now() + notify.drain_timeout;
    while Instant::now() < drain_deadline
        && fleet.live.deliveries_stable.load(Ordering::Relaxed) < expected_stable
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu_spent =
        cpu_at_start.and_then(|start| Some(CpuSpent::read(args.server_pid)?.since(&start)));
    // Churning sockets still open get the same settle window to receive the last ones.
    tokio::time::sleep(notify.settle).await;

    let mut metrics_after = NodeMetrics::default();
    if let Some(nodes) = &nodes {
        for m in nodes.all_metrics().await {
            metrics_after.add(&m?);
        }
    }
    let live = fleet.live.clone();
    let sinks = fleet.sinks.clone();
    let result = fleet.stop(Duration::from_secs(15)).await;
    progress.finish();

    let check = check_deliveries(&requests, &result.outcomes, notify.settle);
    let mut report = base_report(
        scenario,
        &setup,
        &result.failures,
        &result.outcomes,
        cpu.finish(),
        n + churn_peak,
    );
    note_ramp(&mut report, &ramp);
    config_entry(&mut report, "sockets", n);
    config_entry(&mut report, "users", setup.users);
    config_entry(
        &mut report,
        "mode",
        format!("{:?}", notify.mode).to_lowercase(),
    );
    if notify.mode == FanoutMode::Multicast {
        config_entry(&mut report, "k", notify.k);
    }
    config_entry(
        &mut report,
        "via",
        format!("{:?}", notify.via).to_lowercase(),
    );
    config_entry(&mut report, "rate_per_s", notify.rate);
    config_entry(&mut report, "count", notify.count);
    config_entry(&mut report, "payload_bytes", notify.payload_bytes);
    if let Some(c) = churn {
        config_entry(&mut report, "churn_rate_per_s", c.rate);
        config_entry(&mut report, "churn_life_s", c.life.as_secs_f64());
    }

    let accepted = requests.iter().filter(|r| r.accepted.is_some()).count() as u64;
    let c = &mut report.counters;
    c.insert("established".into(), ramp.established);
    c.insert("failed".into(), live.failed.load(Ordering::Relaxed));
    c.insert("churn_sockets".into(), (churn_index - n) as u64);
    c.insert("notifications_sent".into(), requests.len() as u64);
    c.insert("notifications_accepted".into(), accepted);
    c.insert("expected_deliveries".into(), check.expected);
    c.insert("deliveries".into(), check.delivered_expected);
    c.insert("deliveries_total".into(), check.received);
    c.insert("lost".into(), check.lost);
    c.insert("duplicates".into(), check.duplicates);
    c.insert("misdelivered".into(), check.misdelivered);
    c.insert("foreign_frames".into(), check.foreign);
    let server_reported: Vec<u64> = requests
        .iter()
        .filter_map(|r| r.server_deliveries)
        .collect();
    if !server_reported.is_empty() {
        c.insert(
            "server_reported_deliveries".into(),
            server_reported.iter().sum(),
        );
    }
    for r in &requests {
        if let Some((kind, message)) = &r.error {
            *report.errors.entry(kind.clone()).or_insert(0) += 1;
            report
                .error_samples
                .entry(kind.clone())
                .or_insert_with(|| message.clone());
        }
    }
    if check.lost > 0 {
        report.errors.insert("lost_deliveries".into(), check.lost);
    }
    if check.duplicates > 0 {
        report
            .errors
            .insert("duplicate_deliveries".into(), check.duplicates);
    }
    if check.misdelivered > 0 {
        report
            .errors
            .insert("misdelivered".into(), check.misdelivered);
    }
    if result.aborted > 0 {
        report
            .errors
            .insert("tasks_aborted_at_stop".into(), result.aborted);
    }

    let last_delivery = result.outcomes.iter().filter_map(|o| o.last_delivery).max();
    if let Some(last) = last_delivery {
        let window = last.duration_since(send_start).as_secs_f64();
        if window > 0.0 {
            report
                .rates
                .insert("deliveries_per_s".into(), check.received as f64 / window);
        }
    }
    if let (Some(spent), true) = (cpu_spent, check.received > 0) {
        let per_delivery = |secs: f64| secs * 1e6 / check.received as f64;
        report.rates.insert(
            "server_cpu_us_per_delivery".into(),
            per_delivery(spent.server_s()),
        );
        report.rates.insert(
            "server_user_cpu_us_per_delivery".into(),
            per_delivery(spent.server_user_s),
        );
        report.rates.insert(
            "server_sys_cpu_us_per_delivery".into(),
            per_delivery(spent.server_sys_s),
        );
        report.rates.insert(
            "loadtest_cpu_us_per_delivery".into(),
            per_delivery(spent.own_s),
        );
        if spent.server_s() > 0.0 {
            report.rates.insert(
                "deliveries_per_server_cpu_s".into(),
                check.received as f64 / spent.server_s(),
            );
        }
    }
    let send_window = send_end.duration_since(send_start).as_secs_f64();
    if send_window > 0.0 {
        report.rates.insert(
            "notifications_per_s".into(),
            requests.len() as f64 / send_window,
        );
    }
    report
        .rates
        .insert("connects_per_s".into(), ramp.connect_rate());

    let mut split: Vec<(String, LatencyHistogram)> = Vec::new();
    if let Some(mut fleet) = fleet_report {
        fleet.aws_calls = metrics_after.aws_calls_since(&metrics_before);
        fleet.route = metrics_after.route_since(&metrics_before);
        let calls: u64 = fleet.aws_calls.values().sum();
        if accepted > 0 {
            fleet.aws_calls_per_request = calls as f64 / accepted as f64;
        }
        if check.received > 0 {
            fleet.aws_calls_per_delivery = calls as f64 / check.received as f64;
        }
        if let (true, Some(tap), Some(node_count)) = (
            routed_by_node,
            &sinks.tap,
            nodes.as_ref().map(|n| n.urls.len()),
        ) {
            let mut same = LatencyHistogram::new();
            let mut cross = LatencyHistogram::new();
            for (session, seq, latency) in tap.all() {
                let user = if session < n {
                    setup.user_of(session)
                } else {
                    setup.churn_user_of(session)
                };
                let Some(&holder) = locations.get(&user_name(&args.tokens.user_prefix, user))
                else {
                    continue;
                };
                if holder == (seq % node_count as u64) as usize {
                    same.record_micros(latency);
                } else {
                    cross.record_micros(latency);
                }
            }
            fleet.deliveries_same_node = same.len();
            fleet.deliveries_cross_node = cross.len();
            split.push(("delivery_same_node".into(), same));
            split.push(("delivery_cross_node".into(), cross));
        }
        report.fleet = Some(fleet);
    }
    for (name, h) in &split {
        if !h.is_empty() {
            report.latencies.insert(name.clone(), h.summary());
        }
    }

    let connect = sinks.connect.merged();
    let delivery = sinks.delivery.merged();
    let accept = accept_latency.merged();
    report.latencies.insert("connect".into(), connect.summary());
    report
        .latencies
        .insert("delivery".into(), delivery.summary());
    report.latencies.insert("notify".into(), accept.summary());
    let mut histograms: Vec<(String, LatencyHistogram)> = vec![
        ("delivery".into(), delivery),
        ("notify".into(), accept),
        ("connect".into(), connect),
    ];
    histograms.extend(split.into_iter().filter(|(_, h)| !h.is_empty()));
    Ok(ScenarioOutput { report, histograms })
}

/// CPU time of the server (by PID, user and system) and of this process, read together.
#[derive(Debug, Clone, Copy, PartialEq)]
struct CpuSpent {
    server_user_s: f64,
    server_sys_s: f64,
    own_s: f64,
}

impl CpuSpent {
    /// Both processes' CPU time so far; None without a server PID or when /proc cannot tell.
    fn read(server_pid: Option<u32>) -> Option<Self> {
        let ticks = clock_ticks_per_second();
        let (user, sys) = read_process_user_sys_ticks(server_pid?)?;
        let own = read_cpu_ticks()?.own;
        Some(CpuSpent {
            server_user_s: user as f64 / ticks,
            server_sys_s: sys as f64 / ticks,
            own_s: own as f64 / ticks,
        })
    }

    fn since(&self, start: &CpuSpent) -> CpuSpent {
        CpuSpent {
            server_user_s: (self.server_user_s - start.server_user_s).max(0.0),
            server_sys_s: (self.server_sys_s - start.server_sys_s).max(0.0),
            own_s: (self.own_s - start.own_s).max(0.0),
        }
    }

    fn server_s(&self) -> f64 {
        self.server_user_s + self.server_sys_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seq_set::SeqSet;
    use crate::session::SessionEnd;
    use std::collections::BTreeMap;

    fn outcome(
        user: usize,
        connected_at: Instant,
        ended_at: Instant,
        seen: &[u64],
    ) -> SessionOutcome {
        let mut set = SeqSet::new();
        for s in seen {
            set.insert(*s);
        }
        SessionOutcome {
            index: user,
            user,
            connected_at,
            ended_at,
            end: SessionEnd::Stopped,
            seen: set,
            duplicates: 0,
            foreign: 0,
            pongs: 0,
            published: 0,
            acked: 0,
            unknown_acks: 0,
            unacked: 0,
            error_frames: BTreeMap::new(),
            last_delivery: None,
        }
    }

    fn request(seq: u64, users: Option<Vec<usize>>, started: Instant, ok: bool) -> SentRequest {
        SentRequest {
            seq,
            users,
            started,
            accepted: ok.then_some(started + Duration::from_millis(5)),
            server_deliveries: None,
            error: None,
        }
    }

    #[test]
    fn counts_expected_lost_and_misdelivered() {
        let t0 = Instant::now();
        let s = |ms: u64| t0 + Duration::from_millis(ms);
        let settle = Duration::from_millis(100);
        let requests = vec![
            request(0, None, s(1000), true),          // broadcast
            request(1, Some(vec![1]), s(2000), true), // unicast to user 1
            request(2, None, s(3000), false),         // failed: expected nowhere
        ];
        let outcomes = vec![
            // Live throughout, got both it was owed.
            outcome(0, s(0), s(9000), &[0]),
            // Live throughout, user 1, missed the unicast.
            outcome(1, s(0), s(9000), &[0]),
            // Connected too late for request 0, and got request 1 which was not for it.
            outcome(2, s(950), s(9000), &[1]),
            // Closed right after request 0 was accepted: not expected to have it.
            outcome(3, s(0), s(1050), &[]),
        ];
        let check = check_deliveries(&requests, &outcomes, settle);
        // Expected: r0 -> sockets 0 and 1; r1 -> socket 1.
        assert_eq!(check.expected, 3);
        assert_eq!(check.delivered_expected, 2);
        assert_eq!(check.lost, 1);
        assert_eq!(check.misdelivered, 1);
        assert_eq!(check.received, 3);
    }

    #[test]
    fn user_socket_counts() {
        assert_eq!(sockets_per_user(3, 0..7), vec![3, 2, 2]);
    }
}
