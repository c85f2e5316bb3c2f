//! Fleet drills: a local 3-node cluster behind HAProxy (`infra/local/cluster`, driven
//! by `sumu_testkit::cluster`), clients spread over every node through the balancer,
//! notification requests flowing through the notifications queue, and then a node
//! SIGKILLed, the leader SIGKILLed, a node SIGTERMed, a node restarted with the same
//! id. Each drill prints what it measured and fails on a lost or duplicated delivery,
//! a wrong presence event, or a recovery slower than its bound.
//!
//! The fault drills of issue 9 freeze the emulator (an AWS stall) and a node (a VM
//! pause) with SIGSTOP/SIGCONT, and bound how late a request may be after a crash.
//!
//! Nodes run with `--heartbeat-secs 2 --node-timeout-secs 6 --leader-lease-secs 6
//! --leader-renew-secs 2 --presence-source queue`, so presence events arrive on the
//! messages queue. The drills run one at a time (they share two cores with three
//! nodes, HAProxy and the emulator each).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use sumu_loadtest::cli::{FanoutMode, TokenPlacement};
use sumu_loadtest::drill::{
    late_deliveries, server_close_codes, Injector, InjectorConfig, Population, PopulationConfig,
    PresenceWatch,
};
use sumu_loadtest::nodes::Nodes;
use sumu_loadtest::notifier::Notifier;
use sumu_loadtest::scenario::fanout::{check_deliveries, SentRequest};
use sumu_loadtest::session::SessionOutcome;
use sumu_loadtest::target::Target;
use sumu_loadtest::tokens::{unix_now, user_name, ClaimOptions, Minter};
use sumu_testkit::cluster::Cluster;

const HEARTBEAT_SECS: u64 = 2;
const NODE_TIMEOUT_SECS: u64 = 6;
const LEASE_SECS: u64 = 6;
const RENEW_SECS: u64 = 2;
/// The leader lease plus one retry interval, plus a second of slack.
const TAKEOVER_BOUND: Duration = Duration::from_secs(LEASE_SECS + RENEW_SECS + 1);
/// The node's `--notification-visibility-secs` (its default): a request a node had
/// received when it died is routed by another node at most this long after.
const VISIBILITY: Duration = Duration::from_secs(5);
/// What README states for a crash: the visibility timeout plus routing through the
/// emulator (a receive, a lookup, a mesh hop) on a busy two-core machine.
const CRASH_LATE_BOUND: Duration = Duration::from_secs(5 + 4);
/// A graceful stop delays nothing: below the visibility timeout, so no request waited
/// for one.
const DRAIN_LATE_BOUND: Duration = Duration::from_millis(4500);
/// Normal routing on this machine: anything later waited for something.
const NORMAL_LATE_BOUND: Duration = Duration::from_millis(4500);
const SETTLE: Duration = Duration::from_millis(300);
const PREFIX: &str = "drill-";

/// At most two drills at a time, each on its own cluster (its own emulator, nodes,
/// balancer and state directory): the drills mostly wait on timers, and two at once
/// halve the lane's time; more would share two cores between the timed deliveries of
/// three clusters. Each test has its own runtime; tokio's semaphore works across them.
static DRILLS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Waits for one of the two drill slots; held for the whole drill.
async fn drill_slot() -> tokio::sync::SemaphorePermit<'static> {
    DRILLS
        .acquire()
        .await
        .expect("the drills' semaphore is never closed")
}

fn fast_args() -> Vec<String> {
    [
        "--heartbeat-secs",
        &HEARTBEAT_SECS.to_string(),
        "--node-timeout-secs",
        &NODE_TIMEOUT_SECS.to_string(),
        "--leader-lease-secs",
        &LEASE_SECS.to_string(),
        "--leader-renew-secs",
        &RENEW_SECS.to_string(),
        "--presence-source",
        "queue",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A cluster with AWS clients on its emulator.
struct Fleet {
    cluster: Cluster,
    sqs: aws_sdk_sqs::Client,
    ddb: aws_sdk_dynamodb::Client,
    sns: aws_sdk_sns::Client,
    nodes: Nodes,
    target: Arc<Target>,
}

impl Fleet {
    async fn up(n: usize) -> Fleet {
        Fleet::up_with(n, &[]).await
    }

    /// `n` nodes with the drills' timings and `extra` flags.
    async fn up_with(n: usize, extra: &[&str]) -> Fleet {
        let mut args = fast_args();
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let cluster = blocking(|| Cluster::up(n, &args));
        let creds = aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "static");
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .operation_attempt_timeout(Duration::from_secs(10))
            .build();
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(cluster.aws_endpoint())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .timeout_config(timeouts)
            .load()
            .await;
        let nodes = Nodes::new(cluster.node_urls().to_vec(), "dev").unwrap();
        let target = Arc::new(
            Target::resolve(cluster.url(), "/push", false)
                .await
                .unwrap(),
        );
        Fleet {
            sqs: aws_sdk_sqs::Client::new(&sdk),
            ddb: aws_sdk_dynamodb::Client::new(&sdk),
            sns: aws_sdk_sns::Client::new(&sdk),
            cluster,
            nodes,
            target,
        }
    }

    fn tokens(&self, users: std::ops::Range<usize>) -> Vec<(usize, Arc<str>)> {
        let minter = Minter::hs256(
            self.cluster.hs256_secret().as_bytes(),
            ClaimOptions {
                ttl: Duration::from_secs(3600),
                ..Default::default()
            },
        );
        let now = unix_now().as_secs();
        users
            .map(|u| {
                (
                    u,
                    Arc::from(minter.mint(&user_name(PREFIX, u), now).unwrap()),
                )
            })
            .collect()
    }

    /// One client for each of `users` (user `i` is `drill-{i}`).
    async fn population(&self, users: std::ops::Range<usize>, run_id: &str) -> Population {
        self.population_on(Arc::clone(&self.target), users, run_id, 50.0)
            .await
    }

    /// One client for each of `users`, connecting to `target` (the balancer, or a node
    /// directly), `ramp` new clients per second.
    async fn population_on(
        &self,
        target: Arc<Target>,
        users: std::ops::Range<usize>,
        run_id: &str,
        ramp: f64,
    ) -> Population {
        let config = PopulationConfig {
            target,
            placement: TokenPlacement::Query,
            ping_interval: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            reconnect_delay: Duration::from_millis(300),
        };
        Population::start(config, self.tokens(users), Arc::from(run_id), ramp).await
    }

    fn notifier(&self) -> Arc<Notifier> {
        Arc::new(Notifier::Sqs {
            client: self.sqs.clone(),
            queue_url: self.cluster.var("SUMU_NOTIFICATIONS_QUEUE_URL").to_string(),
        })
    }

    fn injector(&self, run_id: &str, users: usize) -> Injector {
        self.injector_from(run_id, users, 0)
    }

    /// An injector whose requests are numbered from `first_seq`.
    fn injector_from(&self, run_id: &str, users: usize, first_seq: u64) -> Injector {
        self.injector_k(run_id, users, first_seq, 10)
    }

    /// An injector of multicasts to `k` users each (request `i` targets users
    /// `i*k..i*k+k`, wrapping around).
    fn injector_k(&self, run_id: &str, users: usize, first_seq: u64, k: usize) -> Injector {
        Injector::start(
            self.notifier(),
            InjectorConfig {
                mode: FanoutMode::Multicast,
                k,
                users,
                prefix: PREFIX.into(),
                rate: 10.0,
                inflight: 8,
                run_id: Arc::from(run_id),
                first_seq,
            },
        )
    }

    fn presence(&self) -> PresenceWatch {
        PresenceWatch::start(
            self.sqs.clone(),
            self.cluster.var("SUMU_MESSAGES_QUEUE_URL").to_string(),
        )
    }

    fn table(&self, which: &str) -> String {
        format!("{}{which}", self.cluster.name_prefix())
    }

    async fn leader(&self) -> Option<String> {
        let item = self
            .ddb
            .get_item()
            .table_name(self.table("Cluster"))
            .key("pk", AttributeValue::S("lease#leader".into()))
            .consistent_read(true)
            .send()
            .await
            .ok()?
            .item?;
        let expires: u64 = item.get("expires_at")?.as_n().ok()?.parse().ok()?;
        if expires < unix_now().as_millis() as u64 {
            return None;
        }
        Some(item.get("owner")?.as_s().ok()?.clone())
    }

    async fn node_row(&self, node: &str) -> Option<HashMap<String, AttributeValue>> {
        self.ddb
            .get_item()
            .table_name(self.table("Cluster"))
            .key("pk", AttributeValue::S(format!("node#{node}")))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
    }

    /// Connection rows naming `node` (GSI `by_node`, every page).
    async fn rows_of(&self, node: &str) -> usize {
        let mut total = 0;
        let mut start = None;
        loop {
            let page = self
                .ddb
                .query()
                .table_name(self.table("Connections"))
                .index_name("by_node")
                .key_condition_expression("node_id = :n")
                .expression_attribute_values(":n", AttributeValue::S(node.into()))
                .select(aws_sdk_dynamodb::types::Select::Count)
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            total += page.count as usize;
            start = page.last_evaluated_key;
            if start.is_none() {
                return total;
            }
        }
    }

    async fn inbox_exists(&self, node: &str) -> bool {
        self.sqs
            .get_queue_url()
            .queue_name(format!("{}Inbox-{node}", self.cluster.name_prefix()))
            .send()
            .await
            .is_ok()
    }

    /// Whether the mesh topic has a subscription delivering to the queue at `inbox`.
    async fn subscribed_to_mesh(&self, inbox: &str) -> bool {
        let Ok(attrs) = self
            .sqs
            .get_queue_attributes()
            .queue_url(inbox)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
        else {
            return false;
        };
        let Some(arn) = attrs
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
            .cloned()
        else {
            return false;
        };
        let mut token = None;
        loop {
            let Ok(page) = self
                .sns
                .list_subscriptions_by_topic()
                .topic_arn(self.cluster.var("SUMU_MESH_TOPIC_ARN"))
                .set_next_token(token)
                .send()
                .await
            else {
                return false;
            };
            if page
                .subscriptions()
                .iter()
                .any(|s| s.endpoint() == Some(arn.as_str()))
            {
                return true;
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return false;
            }
        }
    }

    /// Node index of each connected user (by its name).
    async fn spread(&self) -> HashMap<String, usize> {
        self.nodes.user_locations().await
    }

    /// A node that is not the leader.
    async fn non_leader(&self) -> String {
        let leader = self.leader().await.expect("a leader");
        self.cluster
            .nodes()
            .iter()
            .find(|n| **n != leader)
            .expect("another node")
            .clone()
    }

    fn node_index(&self, node: &str) -> usize {
        self.cluster.nodes().iter().position(|n| n == node).unwrap()
    }
}

/// Evaluates `check` (an expression that may `.await`) every 100 ms: `Some(time it
/// took)`, or `None` after `within`.
macro_rules! time_until {
    ($within:expr, $check:expr) => {{
        let start = Instant::now();
        let within: Duration = $within;
        let mut took = None;
        while start.elapsed() < within {
            let done: bool = $check;
            if done {
                took = Some(start.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        took
    }};
}

fn users_on(spread: &HashMap<String, usize>, node: usize) -> Vec<usize> {
    let mut users: Vec<usize> = spread
        .iter()
        .filter(|(_, &n)| n == node)
        .filter_map(|(u, _)| u.strip_prefix(PREFIX)?.parse().ok())
        .collect();
    users.sort_unstable();
    users
}

fn per_node_counts(f: &Fleet, spread: &HashMap<String, usize>) -> BTreeMap<String, usize> {
    f.cluster
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), users_on(spread, i).len()))
        .collect()
}

fn duplicates(sessions: &[SessionOutcome]) -> u64 {
    sessions.iter().map(|s| s.duplicates).sum()
}

/// What a drill may see besides "nothing lost, duplicated or misdelivered" (which
/// every drill asserts, crash drills included: each node's record of what it
/// delivered makes a request routed twice reach a socket once).
#[derive(Clone, Copy)]
struct Bounds {
    /// The slowest delivery after its request was sent.
    late: Duration,
}

const NORMAL: Bounds = Bounds {
    late: NORMAL_LATE_BOUND,
};
const DRAIN: Bounds = Bounds {
    late: DRAIN_LATE_BOUND,
};
const CRASH: Bounds = Bounds {
    late: CRASH_LATE_BOUND,
};

/// Stops the injector, waits for what is owed (at most the visibility timeout plus a
/// margin: a request a dead node had polled comes back only after it), prints and
/// checks the accounting: nothing lost, duplicated or misdelivered, and no delivery
/// later than the bound after its request was sent.
async fn settle_and_check(name: &str, population: Population, injector: Injector, bounds: Bounds) {
    let requests: Vec<SentRequest> = injector.stop().await;
    settle_and_check_requests(name, population, requests, bounds).await;
}

async fn settle_and_check_requests(
    name: &str,
    population: Population,
    requests: Vec<SentRequest>,
    bounds: Bounds,
) {
    let late_bound = bounds.late;
    tokio::time::sleep(SETTLE * 2).await;
    let waited = Instant::now();
    let live_check = population
        .await_deliveries(&requests, SETTLE, VISIBILITY + Duration::from_secs(15))
        .await;
    let waited = waited.elapsed();
    let (late_2s, slowest) = late_deliveries(&population.sinks, Duration::from_secs(2));
    let failures = population.connect_failures();
    let sessions = population.stop(Duration::from_secs(10)).await;
    let check = check_deliveries(&requests, &sessions, SETTLE);
    let accepted = requests.iter().filter(|r| r.accepted.is_some()).count();
    println!(
        "[{name}] requests sent {} accepted {accepted}; deliveries expected {} received {} lost {} \
         duplicated {} misdelivered {}; later than 2 s: {late_2s} (slowest {:.1} s, bound {:.1} s); \
         waited {:.1} s for the last; sessions {} ({} reconnects); failed connects {:?}",
        requests.len(),
        check.expected,
        check.delivered_expected,
        check.lost,
        duplicates(&sessions),
        check.misdelivered,
        slowest.as_secs_f64(),
        late_bound.as_secs_f64(),
        waited.as_secs_f64(),
        sessions.len(),
        sessions.len().saturating_sub(
            sessions.iter().map(|s| s.user).collect::<std::collections::HashSet<_>>().len()
        ),
        failures.counts,
    );
    assert_eq!(accepted, requests.len(), "every request accepted by SQS");
    assert!(check.expected > 0);
    assert_eq!(
        live_check.lost, 0,
        "[{name}] deliveries still owed after the wait"
    );
    assert_eq!(check.lost, 0, "[{name}] lost deliveries");
    assert_eq!(duplicates(&sessions), 0, "[{name}] duplicated deliveries");
    assert_eq!(check.misdelivered, 0, "[{name}] misdelivered");
    assert!(
        slowest <= late_bound,
        "[{name}] a delivery {:.1} s after its request (bound {:.1} s)",
        slowest.as_secs_f64(),
        late_bound.as_secs_f64()
    );
}

/// `up` gives a fleet the balancer spreads sockets over; `down` leaves no process and
/// no listening port behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_up_spreads_sockets_and_down_leaves_nothing() {
    let _slot = drill_slot().await;
    let mut f = Fleet::up(3).await;
    let status = blocking(|| f.cluster.status());
    println!("{status}");
    for node in f.cluster.nodes() {
        assert!(
            status
                .lines()
                .any(|l| l.starts_with(node.as_str()) && l.contains(" 200 ") && l.contains("UP")),
            "{node} not up and routed in:\n{status}"
        );
    }
    let run = "smoke";
    let population = f.population(0..30, run).await;
    assert!(population.wait_open(30, Duration::from_secs(20)).await);
    let spread = f.spread().await;
    let counts = per_node_counts(&f, &spread);
    println!("[smoke] sockets per node through the balancer: {counts:?}");
    assert_eq!(spread.len(), 30, "every user found on one node");
    assert!(
        counts.values().all(|&c| c >= 5),
        "leastconn spreads: {counts:?}"
    );
    let injector = f.injector(run, 30);
    tokio::time::sleep(Duration::from_secs(2)).await;
    settle_and_check("smoke", population, injector, NORMAL).await;

    let pids: Vec<u32> = ["emulator", "balancer", "n1", "n2", "n3"]
        .iter()
        .filter_map(|n| std::fs::read_to_string(f.cluster.dir().join(format!("{n}.pid"))).ok())
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    assert_eq!(pids.len(), 5);
    let mut ports: Vec<u16> = vec![f.target.addr.port()];
    for url in f.cluster.node_urls() {
        ports.push(url.rsplit(':').next().unwrap().parse().unwrap());
    }
    ports.push(
        f.cluster
            .aws_endpoint()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap(),
    );
    blocking(|| f.cluster.down());
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still alive after down"
        );
    }
    for port in ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still accepts connections after down"
        );
    }
}

/// A node SIGKILLed: its clients reconnect through the balancer to the other nodes,
/// sockets that stayed connected keep receiving, the users that did not come back get
/// OFFLINE once (and nobody else does), and its rows, inbox and cluster row are gone
/// within the node timeout plus one reaper pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sigkill() {
    let _slot = drill_slot().await;
    let f = Fleet::up(3).await;
    let presence = f.presence();
    let run = "kill";
    let users = 60;
    let population = f.population(0..users, run).await;
    assert!(population.wait_open(users, Duration::from_secs(30)).await);
    let before = f.spread().await;
    println!(
        "[node_sigkill] sockets per node: {:?}",
        per_node_counts(&f, &before)
    );
    assert!(
        time_until!(Duration::from_secs(20), {
            presence
                .events()
                .iter()
                .filter(|e| e.status == "ONLINE")
                .count()
                >= users
        })
        .is_some(),
        "ONLINE for every user"
    );
    let victim = f.non_leader().await;
    let victim_users = users_on(&before, f.node_index(&victim));
    assert!(!victim_users.is_empty(), "{victim} holds sockets");
    let (gone, returning): (Vec<usize>, Vec<usize>) =
        victim_users.iter().partition(|u| *u % 2 == 0);
    population.stop_returning(gone.iter().copied());

    let injector = f.injector(run, users);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed = Instant::now();
    blocking(|| f.cluster.kill(&victim));

    let back = time_until!(Duration::from_secs(15), {
        let connected = population.connected_users();
        returning.iter().all(|u| connected.binary_search(u).is_ok())
    })
    .expect("returning clients reconnected");
    // A client counts itself connected once its upgrade answered; the node
    // lists it a moment later (and a user still listed by two nodes is
    // located nowhere): wait, bounded, until each is listed by exactly one.
    let mut after = HashMap::new();
    time_until!(Duration::from_secs(10), {
        after = f.spread().await;
        returning
            .iter()
            .all(|u| after.contains_key(&user_name(PREFIX, *u)))
    });
    for u in &returning {
        let at = after.get(&user_name(PREFIX, *u)).copied();
        assert!(
            at.is_some_and(|n| n != f.node_index(&victim)),
            "user {u} landed on node {at:?}"
        );
    }
    let bound = Duration::from_secs(NODE_TIMEOUT_SECS + 2 * HEARTBEAT_SECS + 4);
    // Each figure is measured from the kill.
    let left = |bound: Duration| bound.saturating_sub(killed.elapsed());
    let offline = time_until!(left(bound), {
        gone.iter()
            .all(|u| presence.count(&user_name(PREFIX, *u), "OFFLINE") >= 1)
    })
    .map(|_| killed.elapsed());
    let rows_gone =
        time_until!(left(bound), { f.rows_of(&victim).await == 0 }).map(|_| killed.elapsed());
    let row_gone =
        time_until!(left(bound), { f.node_row(&victim).await.is_none() }).map(|_| killed.elapsed());
    let inbox_gone =
        time_until!(left(bound), { !f.inbox_exists(&victim).await }).map(|_| killed.elapsed());
    let since = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    println!(
        "[node_sigkill] killed {victim} ({} sockets; {} did not return): returning clients back on \
         other nodes after {:.1} s; sockets per node now {:?}; OFFLINE of the gone users by {:?} s; \
         rows gone by {:?} s, cluster row by {:?} s, inbox by {:?} s (bound {} s)",
        victim_users.len(),
        gone.len(),
        back.as_secs_f64(),
        per_node_counts(&f, &after),
        since(offline),
        since(rows_gone),
        since(row_gone),
        since(inbox_gone),
        bound.as_secs()
    );
    assert!(
        offline.is_some(),
        "OFFLINE for every user that did not return"
    );
    assert!(
        rows_gone.is_some(),
        "the dead node's connection rows deleted"
    );
    assert!(row_gone.is_some(), "the dead node's cluster row deleted");
    assert!(inbox_gone.is_some(), "the dead node's inbox deleted");
    tokio::time::sleep(Duration::from_secs(3)).await;
    settle_and_check("node_sigkill", population, injector, CRASH).await;
    let events = presence.stop().await;
    for u in 0..users {
        let name = user_name(PREFIX, u);
        let off = events
            .iter()
            .filter(|e| e.user == name && e.status == "OFFLINE")
            .count();
        let on = events
            .iter()
            .filter(|e| e.user == name && e.status == "ONLINE")
            .count();
        if gone.contains(&u) {
            assert_eq!(off, 1, "OFFLINE of {name} once");
        } else {
            // Connected the whole time (or back on another node before its old row went).
            assert_eq!(
                off,
                0,
                "no false OFFLINE of {name} (stop at {:.1} s)",
                killed.elapsed().as_secs_f64()
            );
        }
        assert_eq!(on, 1, "ONLINE of {name} once");
    }
}

/// The leader SIGKILLed: another node takes the lease within the lease time, and
/// presence resumes from the checkpoints: changes made during the takeover are
/// reported, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sigkill() {
    let _slot = drill_slot().await;
    let f = Fleet::up(3).await;
    let presence = f.presence();
    let run = "leader";
    let stable = f.population(0..30, run).await;
    let leaving = f.population(30..40, run).await;
    assert!(stable.wait_open(30, Duration::from_secs(30)).await);
    assert!(leaving.wait_open(10, Duration::from_secs(30)).await);
    assert!(
        time_until!(Duration::from_secs(20), {
            presence
                .events()
                .iter()
                .filter(|e| e.status == "ONLINE")
                .count()
                >= 40
        })
        .is_some(),
        "ONLINE for every user"
    );
    let leader = f.leader().await.expect("a leader");
    let spread = f.spread().await;
    let leader_users = users_on(&spread, f.node_index(&leader));
    let stable_on_leader: Vec<usize> = leader_users.iter().copied().filter(|u| *u < 30).collect();
    stable.stop_returning(stable_on_leader.iter().copied());
    leaving.stop_returning(30..40);
    let injector = f.injector(run, 30);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let killed = Instant::now();
    blocking(|| f.cluster.kill(&leader));
    // During the takeover: 10 users leave (clean closes on any node), 10 new ones come.
    let left: Vec<usize> = (30..40).collect();
    let left_sessions = leaving.stop(Duration::from_secs(10)).await;
    let on_dead: usize = left
        .iter()
        .filter(|u| spread.get(&user_name(PREFIX, **u)) == Some(&f.node_index(&leader)))
        .count();
    let arriving = f.population(40..50, run).await;
    let takeover = time_until!(TAKEOVER_BOUND + Duration::from_secs(5), {
        f.leader().await.is_some_and(|l| l != leader)
    });
    let new_leader = f.leader().await;
    let expect_offline: Vec<usize> = stable_on_leader
        .iter()
        .copied()
        .chain(left.iter().copied())
        .collect();
    let all_events = time_until!(Duration::from_secs(40), {
        expect_offline
            .iter()
            .all(|u| presence.count(&user_name(PREFIX, *u), "OFFLINE") >= 1)
            && (40..50).all(|u| presence.count(&user_name(PREFIX, u), "ONLINE") >= 1)
    });
    println!(
        "[leader_sigkill] killed leader {leader}; lease taken by {new_leader:?} after {:?} s \
         (bound {} s); presence for the {} users that left (clean close or with the dead leader; \
         {on_dead} were on it) and the 10 that arrived complete after {:?} s; left sessions {}",
        takeover.map(|d| d.as_secs_f64()),
        TAKEOVER_BOUND.as_secs(),
        expect_offline.len(),
        all_events.map(|_| killed.elapsed().as_secs_f64()),
        left_sessions.len(),
    );
    assert!(
        takeover.is_some_and(|d| d <= TAKEOVER_BOUND),
        "takeover within the lease time"
    );
    assert!(
        all_events.is_some(),
        "presence resumed: every change reported"
    );
    settle_and_check("leader_sigkill", stable, injector, CRASH).await;
    let _ = arriving.stop(Duration::from_secs(10)).await;
    let events = presence.stop().await;
    let mut dup = 0;
    for u in 0..50 {
        let name = user_name(PREFIX, u);
        let off = events
            .iter()
            .filter(|e| e.user == name && e.status == "OFFLINE")
            .count();
        let on = events
            .iter()
            .filter(|e| e.user == name && e.status == "ONLINE")
            .count();
        assert!(on >= 1, "ONLINE of {name}");
        if expect_offline.contains(&u) {
            // Made during the takeover: reported once by the new leader.
            assert_eq!(off, 1, "OFFLINE of {name} exactly once");
        } else if u < 30 {
            assert_eq!(off, 0, "no false OFFLINE of {name}");
        }
        if (40..50).contains(&u) {
            assert_eq!(
                on, 1,
                "ONLINE of {name} (arrived during the takeover) exactly once"
            );
        } else {
            // Emitted by the old leader before the kill: the new one may repeat what
            // came after the old one's last checkpoint.
            dup += on.saturating_sub(1);
        }
    }
    println!(
        "[leader_sigkill] repeated ONLINE events from before the kill (allowed after a takeover): {dup}"
    );
}

/// A node SIGTERMed: `/readyz` turns 503 at once, the balancer stops sending it new
/// sockets, its sockets close in waves and reconnect on the other nodes, its rows,
/// inbox and cluster row are removed, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sigterm_drains() {
    let _slot = drill_slot().await;
    let f = Fleet::up(3).await;
    let run = "drain";
    let users = 60;
    let population = f.population(0..users, run).await;
    assert!(population.wait_open(users, Duration::from_secs(30)).await);
    let before = f.spread().await;
    let victim = f.non_leader().await;
    let victim_users = users_on(&before, f.node_index(&victim));
    assert!(!victim_users.is_empty());
    let injector = f.injector(run, users);
    tokio::time::sleep(Duration::from_secs(3)).await;

    let url = format!("{}/readyz", f.cluster.node_url(&victim));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let termed = Instant::now();
    blocking(|| f.cluster.stop_no_wait(&victim));
    let not_ready = time_until!(Duration::from_secs(3), {
        http.get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 503)
    });
    let moved = time_until!(Duration::from_secs(40), {
        let connected = population.connected_users();
        population.open() == users
            && victim_users
                .iter()
                .all(|u| connected.binary_search(u).is_ok())
            && population
                .ended()
                .iter()
                .filter(|s| victim_users.contains(&s.user))
                .count()
                >= victim_users.len()
    });
    let after = f.spread().await;
    let closed: Vec<SessionOutcome> = population
        .ended()
        .into_iter()
        .filter(|s| victim_users.contains(&s.user))
        .collect();
    let first = closed.iter().map(|s| s.ended_at).min();
    let last = closed.iter().map(|s| s.ended_at).max();
    let waves_s = match (first, last) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    let exited = time_until!(Duration::from_secs(30), {
        !std::path::Path::new(&format!(
            "/proc/{}",
            std::fs::read_to_string(f.cluster.dir().join(format!("{victim}.pid")))
                .unwrap_or_default()
                .trim()
        ))
        .exists()
    });
    let row_gone = f.node_row(&victim).await.is_none();
    let rows = f.rows_of(&victim).await;
    let inbox = f.inbox_exists(&victim).await;
    println!(
        "[node_sigterm] SIGTERM to {victim} ({} sockets): readyz 503 after {:?} s; its sockets closed \
         over {waves_s:.1} s (first at {:?} s) with codes {:?}; all back on other nodes after {:?} s, \
         sockets per node now {:?}; process exited after {:?} s; cluster row gone {row_gone}, \
         rows left {rows}, inbox left {inbox}",
        victim_users.len(),
        not_ready.map(|d| d.as_secs_f64()),
        first.map(|t| t.duration_since(termed).as_secs_f64()),
        server_close_codes(&closed),
        moved.map(|d| d.as_secs_f64()),
        per_node_counts(&f, &after),
        exited.map(|d| d.as_secs_f64()),
    );
    assert!(not_ready.is_some(), "readyz 503 while draining");
    assert!(moved.is_some(), "every drained client reconnected");
    for u in &victim_users {
        let at = after.get(&user_name(PREFIX, *u)).copied();
        assert!(
            at.is_some_and(|n| n != f.node_index(&victim)),
            "user {u} on {at:?}"
        );
    }
    assert!(exited.is_some(), "the drained node exited");
    assert!(
        row_gone && rows == 0 && !inbox,
        "a drained node removes its row, rows and inbox"
    );
    assert!(
        closed.len() < 2 || waves_s > 0.5,
        "sockets closed in waves, not all at once ({waves_s:.2} s)"
    );
    settle_and_check("node_sigterm", population, injector, DRAIN).await;
}

/// What common clients need from a drain: a close code they reconnect on (1012
/// "service restart"; sockette never reconnects after 1000, 1001 or 1005).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sigterm_closes_with_1012() {
    let _slot = drill_slot().await;
    let f = Fleet::up(2).await;
    let population = f.population(0..10, "code").await;
    assert!(population.wait_open(10, Duration::from_secs(20)).await);
    population.stop_returning(0..10);
    blocking(|| f.cluster.stop("n1"));
    let ended = population.ended();
    let codes = server_close_codes(&ended);
    println!("[sigterm_close_code] close codes of the drained sockets: {codes:?}");
    assert!(!ended.is_empty());
    assert_eq!(
        codes.get(&Some(1012)).copied(),
        Some(ended.len()),
        "{codes:?}"
    );
    let _ = population.stop(Duration::from_secs(5)).await;
}

/// A node SIGKILLed and restarted with the same `--node-id` before it was reaped: it
/// rejoins (ready, routed, a fresh cluster row and inbox), takes new sockets, its
/// stale rows are cleaned, and deliveries to its new sockets arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_restart_same_id_rejoins() {
    let _slot = drill_slot().await;
    let f = Fleet::up(3).await;
    let run = "restart";
    let population = f.population(0..30, run).await;
    assert!(population.wait_open(30, Duration::from_secs(30)).await);
    let before = f.spread().await;
    let victim = f.non_leader().await;
    let started_before = f.node_row(&victim).await.unwrap()["started_at"].clone();
    let victim_users = users_on(&before, f.node_index(&victim));
    blocking(|| f.cluster.kill(&victim));
    let t = Instant::now();
    blocking(|| f.cluster.start(&victim));
    let restarted = t.elapsed();
    let row = f
        .node_row(&victim)
        .await
        .expect("a cluster row after the restart");
    assert_ne!(row["started_at"], started_before, "a fresh row");
    assert!(f.inbox_exists(&victim).await);
    // The balancer (leastconn) sends newcomers to the empty node.
    let newcomers = f.population(30..45, run).await;
    assert!(newcomers.wait_open(15, Duration::from_secs(20)).await);
    assert!(population.wait_open(30, Duration::from_secs(20)).await);
    let injector = f.injector(run, 45);
    let victim_index = f.node_index(&victim);
    let clean = time_until!(Duration::from_secs(30), {
        let held = f.nodes.metrics(victim_index).await.map(|m| m.connections);
        let rows = f.rows_of(&victim).await;
        held.is_ok_and(|h| h as usize == rows)
    });
    let spread = f.spread().await;
    let on_victim = users_on(&spread, victim_index);
    println!(
        "[node_restart] {victim} (held {} sockets) killed and started again with the same id: ready \
         and routed after {:.1} s; now holds {} sockets ({:?}); its rows match its sockets after {:?} s",
        victim_users.len(),
        restarted.as_secs_f64(),
        on_victim.len(),
        per_node_counts(&f, &spread),
        clean.map(|d| d.as_secs_f64()),
    );
    assert!(
        !on_victim.is_empty(),
        "the restarted node takes new sockets"
    );
    assert!(clean.is_some(), "stale rows of the old process cleaned");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = newcomers.stop(Duration::from_secs(10)).await;
    // Accounting over the first population only (the newcomers were stopped above; the
    // injector targets users 0..45 so requests to them are owed to nobody now).
    settle_and_check("node_restart", population, injector, CRASH).await;
}

/// `GET /dev/token` on one node gives a token every node accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_tokens_work_across_the_fleet() {
    let _slot = drill_slot().await;
    let f = Fleet::up(2).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let body: serde_json::Value = http
        .get(format!("{}/dev/token?sub=alice", f.cluster.node_url("n1")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = body["token"].as_str().unwrap();
    for node in ["n1", "n2"] {
        let target = Target::resolve(f.cluster.node_url(node), "/push", false)
            .await
            .unwrap();
        let connected = sumu_loadtest::ws_client::connect(
            &target,
            token,
            TokenPlacement::Query,
            None,
            Duration::from_secs(5),
        )
        .await;
        assert!(
            connected.is_ok(),
            "{node} refused n1's dev token: {:?}",
            connected.err()
        );
    }
}

/// `GET /readyz` of a node: its status, or 0 when it does not answer in time.
async fn readyz(f: &Fleet, node: &str) -> u16 {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    match http
        .get(format!("{}/readyz", f.cluster.node_url(node)))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

fn inbox_url(row: &HashMap<String, AttributeValue>) -> String {
    row.get("inbox_url")
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default()
}

/// AWS stalls for 20 s (the emulator SIGSTOPped), then resumes. The leader reaps
/// nobody (it judges heartbeats only from what it watched while it could see AWS), no
/// false OFFLINE is sent, nothing is lost; during the stall a new socket is refused
/// with 503 `register_failed` within the register timeout instead of hanging, the
/// nodes' `/readyz` turn 503, and they come back by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_stall_reaps_nobody() {
    let _slot = drill_slot().await;
    let f = Fleet::up(3).await;
    let presence = f.presence();
    let run = "stall";
    let users = 30;
    let population = f.population(0..users, run).await;
    assert!(population.wait_open(users, Duration::from_secs(30)).await);
    assert!(
        time_until!(Duration::from_secs(20), {
            (0..users).all(|u| presence.count(&user_name(PREFIX, u), "ONLINE") >= 1)
        })
        .is_some(),
        "ONLINE for every user"
    );
    let mut inboxes = BTreeMap::new();
    for node in f.cluster.nodes() {
        inboxes.insert(node.clone(), inbox_url(&f.node_row(node).await.unwrap()));
    }
    // Requests before the stall (SQS itself is stalled during it, so none are sent
    // then), and after it.
    let injector = f.injector(run, users);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut requests = injector.stop().await;

    blocking(|| f.cluster.freeze_emulator());
    let frozen = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A new socket during the stall: refused quickly, not held until AWS is back.
    let token = f.tokens(100..101).pop().unwrap().1;
    let url = format!(
        "{}/push?authorization={token}",
        f.cluster.node_url("n1").replacen("http", "ws", 1)
    );
    let tried = Instant::now();
    let (status, body) = sumu_testkit::ws::refused(&url).await;
    let refused_after = tried.elapsed();
    let not_ready = time_until!(Duration::from_secs(17), {
        let mut all = true;
        for node in f.cluster.nodes() {
            all &= readyz(&f, node).await == 503;
        }
        all
    })
    .map(|_| frozen.elapsed());
    let remaining = Duration::from_secs(20).saturating_sub(frozen.elapsed());
    tokio::time::sleep(remaining).await;
    blocking(|| f.cluster.thaw_emulator());
    let thawed = Instant::now();
    let ready_again = time_until!(Duration::from_secs(20), {
        let mut all = true;
        for node in f.cluster.nodes() {
            all &= readyz(&f, node).await == 200;
        }
        all
    });
    // Long enough for a reaper that judged from stale heartbeats to have struck
    // (it did 2 s after the resume), and then some.
    tokio::time::sleep(Duration::from_secs(NODE_TIMEOUT_SECS * 2)).await;
    let mut reaped = Vec::new();
    for (node, inbox) in &inboxes {
        let now = f.node_row(node).await.map(|r| inbox_url(&r));
        if now.as_deref() != Some(inbox.as_str()) {
            reaped.push(node.clone());
        }
    }
    let injector = f.injector_from(run, users, requests.len() as u64);
    tokio::time::sleep(Duration::from_secs(4)).await;
    requests.extend(injector.stop().await);
    // The socket refused during the stall is not one of the population: its row,
    // written once AWS answered, is deleted by the refusal's compensation, so its
    // presence may flap ONLINE then OFFLINE; it must end OFFLINE (checked below).
    let refused_user = "drill-100";
    let events = presence.events();
    let false_offline: Vec<String> = events
        .iter()
        .filter(|e| e.status == "OFFLINE" && e.user != refused_user)
        .map(|e| e.user.clone())
        .collect();
    let refused_last = events
        .iter()
        .filter(|e| e.user == refused_user)
        .map(|e| e.status.clone())
        .next_back();
    println!(
        "[aws_stall] emulator frozen 20 s: a connect during the stall got {status} {body} after \
         {:.1} s; every readyz 503 after {:?} s; all ready again {:?} s after the resume; nodes \
         reaped (row or inbox changed): {reaped:?}; OFFLINE events: {}",
        refused_after.as_secs_f64(),
        not_ready.map(|d| d.as_secs_f64()),
        ready_again.map(|d| d.as_secs_f64()),
        false_offline.len()
    );
    assert_eq!(status, 503, "refused while AWS stalls: {body}");
    assert!(body.contains("register_failed"), "{body}");
    assert!(
        refused_after < Duration::from_secs(6),
        "refused within the register timeout (3 s) and a margin, not held: {refused_after:?}"
    );
    assert!(not_ready.is_some(), "readyz 503 while AWS stalls");
    assert!(
        ready_again.is_some(),
        "ready again by themselves after the stall"
    );
    assert!(
        reaped.is_empty(),
        "live nodes reaped after a stall: {reaped:?}"
    );
    assert!(false_offline.is_empty(), "false OFFLINE: {false_offline:?}");
    assert!(
        refused_last.as_deref().is_none_or(|s| s == "OFFLINE"),
        "the refused socket's user left ONLINE: {refused_last:?}"
    );
    let _ = thawed;
    // Requests sent before the stall waited for it: only the ones after are bounded.
    settle_and_check_requests(
        "aws_stall",
        population,
        requests,
        Bounds {
            late: Duration::from_secs(40),
        },
    )
    .await;
    let _ = presence.stop().await;
}

/// A node frozen (SIGSTOP, as a VM pause would) longer than the node timeout is reaped,
/// which is right; once it resumes it finds itself reaped and rejoins: not ready until
/// it has a new inbox, subscription and row and has written its sockets' rows again;
/// deliveries to the sockets it kept then arrive, and presence shows them online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_node_is_reaped_and_rejoins() {
    let _slot = drill_slot().await;
    let f = Fleet::up(3).await;
    let presence = f.presence();
    let run = "freeze";
    let users = 45;
    let population = f.population(0..users, run).await;
    assert!(population.wait_open(users, Duration::from_secs(30)).await);
    let victim = f.non_leader().await;
    let before = f.spread().await;
    let victim_users = users_on(&before, f.node_index(&victim));
    assert!(!victim_users.is_empty(), "{victim} holds sockets");
    let old_inbox = inbox_url(&f.node_row(&victim).await.unwrap());

    blocking(|| f.cluster.freeze(&victim));
    let frozen = Instant::now();
    let reaped = time_until!(
        Duration::from_secs(NODE_TIMEOUT_SECS + 3 * HEARTBEAT_SECS + 4),
        { f.node_row(&victim).await.is_none() }
    )
    .map(|_| frozen.elapsed());
    // Frozen 12 s in all (the VM pause).
    tokio::time::sleep(Duration::from_secs(12).saturating_sub(frozen.elapsed())).await;
    blocking(|| f.cluster.thaw(&victim));
    let thawed = Instant::now();
    let mut saw_not_ready = false;
    let rejoined = time_until!(Duration::from_secs(20), {
        let status = readyz(&f, &victim).await;
        saw_not_ready |= status == 503;
        let row = f.node_row(&victim).await;
        status == 200 && row.is_some_and(|r| inbox_url(&r) != old_inbox)
    })
    .map(|_| thawed.elapsed());
    // Its sockets' rows again, once each.
    let victim_index = f.node_index(&victim);
    let rows_back = time_until!(Duration::from_secs(10), {
        let held = f.nodes.metrics(victim_index).await.map(|m| m.connections);
        let rows = f.rows_of(&victim).await;
        held.is_ok_and(|h| h > 0 && h as usize == rows)
    });
    let kept = users_on(&f.spread().await, victim_index);
    println!(
        "[frozen_node] {victim} ({} sockets) frozen 12 s: reaped after {:?} s; after the resume \
         not ready seen: {saw_not_ready}; rejoined (ready, new inbox) after {:?} s; its rows match \
         its {} sockets: {}",
        victim_users.len(),
        reaped.map(|d| d.as_secs_f64()),
        rejoined.map(|d| d.as_secs_f64()),
        kept.len(),
        rows_back.is_some()
    );
    assert!(reaped.is_some(), "a node frozen past the timeout is reaped");
    assert!(rejoined.is_some(), "the reaped node rejoined by itself");
    assert!(rows_back.is_some(), "its sockets' rows written again");
    assert!(!kept.is_empty(), "it kept sockets through the freeze");
    // Presence ends right: every user it kept is ONLINE again (after the reaper's OFFLINE).
    let online_again = time_until!(Duration::from_secs(15), {
        let events = presence.events();
        kept.iter().all(|u| {
            let name = user_name(PREFIX, *u);
            events
                .iter()
                .rev()
                .find(|e| e.user == name)
                .is_some_and(|e| e.status == "ONLINE")
        })
    });
    assert!(
        online_again.is_some(),
        "presence shows the kept users online"
    );
    // Deliveries to every socket, the rejoined node's included.
    let injector = f.injector(run, users);
    tokio::time::sleep(Duration::from_secs(5)).await;
    settle_and_check("frozen_node", population, injector, NORMAL).await;
    let _ = presence.stop().await;
}

/// Sockets held by the node the mid-reap drill freezes. The run had 2,000;
/// the drill holds as many (one client process, this two-core machine).
const MID_REAP_SOCKETS: usize = 2000;
/// The mid-reap drill's clients (2,000 sockets, each pinging every 5 s) share this
/// two-core machine with three nodes, HAProxy and the emulator: seen 7.4 s for the
/// slowest delivery there under a load average of 13 (other engineers' builds).
/// The drill is about losses and black holes; the bound only catches a stuck queue.
const MID_REAP: Bounds = Bounds {
    late: Duration::from_secs(15),
};
/// `--reap-step-pause-ms` of the mid-reap drill: each step of a reap waits this long,
/// so the node resumes between two of them.
const REAP_STEP_PAUSE_MS: u64 = 1500;

/// When the mid-reap drills resume the frozen node.
#[derive(Clone, Copy, Debug)]
enum ResumeAt {
    /// The first sign of its reap: its row marked (or gone), or its rows going.
    ReapBegins,
    /// Once its connection rows are going (or its row is gone).
    RowsGoing,
}

/// Whether the leader's reap of `node` has reached `at`.
async fn reap_reached(f: &Fleet, node: &str, rows_before: usize, at: ResumeAt) -> bool {
    match f.node_row(node).await {
        None => true,
        Some(row) if row.contains_key("reaped_by") && matches!(at, ResumeAt::ReapBegins) => true,
        Some(_) => f.rows_of(node).await < rows_before,
    }
}

/// Issue 17, item 1: a node holding many sockets, frozen (SIGSTOP) past the node
/// timeout and resumed (SIGCONT) the moment the leader starts reaping it, must not
/// stay a black hole (ready, with no inbox, subscription or rows). It rejoins: a new
/// inbox, a subscription to it, its row, its sockets' rows; and its sockets (which
/// stayed connected through the freeze) get every later delivery, exactly once.
/// `--reap-step-pause-ms` spaces the reap's steps so the resume lands inside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_resumed_mid_reap_rejoins() {
    mid_reap_drill("mid_reap", ResumeAt::ReapBegins).await;
}

/// The same, resumed while the leader deletes its connection rows: the rows it writes
/// again when it rejoins must survive the rest of the reap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_resumed_while_its_rows_go_rejoins() {
    mid_reap_drill("mid_reap_rows", ResumeAt::RowsGoing).await;
}

async fn mid_reap_drill(name: &str, at: ResumeAt) {
    let _slot = drill_slot().await;
    let pause = REAP_STEP_PAUSE_MS.to_string();
    let f = Fleet::up_with(3, &["--reap-step-pause-ms", &pause]).await;
    let run = name;
    let victim = f.non_leader().await;
    let victim_index = f.node_index(&victim);
    let direct = Arc::new(
        Target::resolve(f.cluster.node_url(&victim), "/push", false)
            .await
            .unwrap(),
    );
    let held = MID_REAP_SOCKETS;
    let others = 30;
    let on_victim = f.population_on(direct, 0..held, run, 250.0).await;
    let elsewhere = f
        .population_on(Arc::clone(&f.target), held..held + others, run, 50.0)
        .await;
    assert!(on_victim.wait_open(held, Duration::from_secs(60)).await);
    assert!(elsewhere.wait_open(others, Duration::from_secs(30)).await);
    let rows = time_until!(Duration::from_secs(30), {
        let sockets = f.nodes.metrics(victim_index).await.map(|m| m.connections);
        let rows = f.rows_of(&victim).await;
        sockets.is_ok_and(|s| s as usize >= held && s as usize == rows)
    });
    assert!(
        rows.is_some(),
        "a row for each of {victim}'s {held} sockets: {} rows, {:?} sockets",
        f.rows_of(&victim).await,
        f.nodes.metrics(victim_index).await.map(|m| m.connections)
    );
    let old_inbox = inbox_url(&f.node_row(&victim).await.unwrap());
    let rows_before = f.rows_of(&victim).await;

    blocking(|| f.cluster.freeze(&victim));
    let frozen = Instant::now();
    let started = time_until!(
        Duration::from_secs(NODE_TIMEOUT_SECS + 3 * HEARTBEAT_SECS + 10),
        { reap_reached(&f, &victim, rows_before, at).await }
    );
    blocking(|| f.cluster.thaw(&victim));
    let thawed = Instant::now();
    let reap_began = started.map(|d| d.as_secs_f64());
    assert!(
        started.is_some(),
        "the leader's reap of {victim} did not reach {at:?} (frozen {:.1} s)",
        frozen.elapsed().as_secs_f64()
    );

    let mut saw_not_ready = false;
    let rejoined = time_until!(Duration::from_secs(40), {
        let status = readyz(&f, &victim).await;
        saw_not_ready |= status == 503;
        let row = f.node_row(&victim).await;
        status == 200
            && row.is_some_and(|r| inbox_url(&r) != old_inbox && !r.contains_key("reaped_by"))
    })
    .map(|_| thawed.elapsed());
    let rows_back = time_until!(Duration::from_secs(30), {
        let held_now = f.nodes.metrics(victim_index).await.map(|m| m.connections);
        let rows = f.rows_of(&victim).await;
        held_now.is_ok_and(|h| h > 0 && h as usize == rows)
    })
    .map(|_| thawed.elapsed());
    let row = f.node_row(&victim).await;
    let new_inbox = row.as_ref().map(inbox_url).unwrap_or_default();
    let subscribed = f.subscribed_to_mesh(&new_inbox).await;
    let kept = f
        .nodes
        .metrics(victim_index)
        .await
        .map(|m| m.connections)
        .unwrap_or(0);
    println!(
        "[{name}] {victim} ({held} sockets) frozen, resumed {reap_began:?} s after the freeze, \
         at {at:?} (steps {REAP_STEP_PAUSE_MS} ms apart): not ready seen {saw_not_ready}; \
         rejoined (ready, new unmarked row) after {:?} s; rows match its {kept} sockets after {:?} \
         s; its inbox {old_inbox} -> {new_inbox}, subscribed to the mesh: {subscribed}",
        rejoined.map(|d| d.as_secs_f64()),
        rows_back.map(|d| d.as_secs_f64()),
    );
    for node in f.cluster.nodes() {
        for line in blocking(|| f.cluster.logs(node))
            .lines()
            .filter(|l| l.contains("reap") || l.contains("rejoin"))
        {
            println!("[{name}] {node}: {line}");
        }
    }
    assert!(
        rejoined.is_some(),
        "{victim}, resumed during its reap, did not rejoin (a black hole)"
    );
    assert!(rows_back.is_some(), "its sockets' rows written again");
    assert!(subscribed, "its new inbox is subscribed to the mesh topic");
    assert!(kept > 0, "it kept sockets through the freeze");

    // Every later delivery reaches every socket that stayed connected, once. The
    // leader first reads the stream records of the rewritten rows (one Query each).
    tokio::time::sleep(Duration::from_secs(5)).await;
    // 100 requests to 50 users each: every socket is targeted twice or more.
    let injector = f.injector_k(run, held + others, 0, 50);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let requests = injector.stop().await;
    let (mine, theirs) = (
        format!("{name}: its sockets"),
        format!("{name}: the others"),
    );
    settle_and_check_requests(&mine, on_victim, requests.clone(), MID_REAP).await;
    settle_and_check_requests(&theirs, elsewhere, requests, MID_REAP).await;
}
