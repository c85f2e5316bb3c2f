//! The recovery window on a real fleet (`infra/local/cluster`: the emulator,
//! nodes on the aws engine, HAProxy), with real signals: a client away for
//! 20 s that comes back on another node; the seam under a steady stream with
//! repeated reconnects across nodes; an old cursor, a garbage cursor,
//! recovery off; the routing node SIGKILLed while recovering sockets
//! receive; a node reaped and rejoined; a drain. Every check is exact:
//! each recovering socket gets every request that targeted its user once,
//! and nothing else.
//!
//! Notifications carry `{"i": <n>}` so a client knows which request each
//! one is. The tests run one at a time (the fleet drills' rule: two cores).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use sumu_shared::recovery::Cursor;
use sumu_testkit::cluster::Cluster;
use tokio_tungstenite::tungstenite::Message;

const WINDOW: &str = "120";
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn fleet_args(window: &str) -> Vec<String> {
    [
        "--heartbeat-secs",
        "2",
        "--node-timeout-secs",
        "6",
        "--leader-lease-secs",
        "6",
        "--leader-renew-secs",
        "2",
        "--presence-source",
        "none",
        "--recovery-window-secs",
        window,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

struct Fleet {
    cluster: Cluster,
    http: reqwest::Client,
}

impl Fleet {
    fn up(nodes: usize, window: &str) -> Fleet {
        let args = fleet_args(window);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Fleet {
            cluster: blocking(|| Cluster::up(nodes, &args)),
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, node: &str) -> String {
        self.cluster.node_url(node).to_string()
    }

    async fn token(&self, node: &str, sub: &str) -> String {
        let v: Value = self
            .http
            .get(format!("{}/dev/token?sub={sub}", self.url(node)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["token"].as_str().unwrap().to_string()
    }

    /// POST /api/notify on `node`; panics unless it is accepted.
    async fn notify(&self, node: &str, body: &str) {
        let r = self
            .http
            .post(format!("{}/api/notify", self.url(node)))
            .header("authorization", "Bearer dev")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            202,
            "{node}: {}",
            r.text().await.unwrap_or_default()
        );
    }

    /// Sends `body` to the notifications queue (routed by whichever node polls it).
    async fn enqueue(&self, sqs: &aws_sdk_sqs::Client, body: &str) {
        sqs.send_message()
            .queue_url(self.cluster.var("SUMU_NOTIFICATIONS_QUEUE_URL"))
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    async fn sqs(&self) -> aws_sdk_sqs::Client {
        let creds = aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "static");
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(self.cluster.aws_endpoint())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(creds)
            .load()
            .await;
        aws_sdk_sqs::Client::new(&sdk)
    }
}

async fn open(url: &str, token: &str, since: Option<&str>) -> Option<Ws> {
    let ws_url = url.replacen("http", "ws", 1);
    let mut u = format!("{ws_url}/push?authorization={token}&recover=1");
    if let Some(c) = since {
        u.push_str(&format!("&since={c}"));
    }
    tokio_tungstenite::connect_async(u)
        .await
        .ok()
        .map(|(ws, _)| ws)
}

/// The next text frame as JSON (`None`: closed, or nothing within `within`).
async fn next(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.ok()?? {
            Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).expect("JSON frame")),
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            _ => return None,
        }
    }
}

/// A frame's cursor, decoded.
fn cursor(f: &Value) -> (String, Cursor) {
    let text = f["cursor"].as_str().expect("cursor").to_string();
    let c = Cursor::decode(&text).expect("a cursor");
    (text, c)
}

/// What one recovering client saw, across all its sockets.
#[derive(Debug, Default)]
struct Seen {
    /// Every notification's `i`, in arrival order.
    got: Vec<u64>,
    /// The (user seq, broadcast seq) after each notification.
    positions: Vec<(u64, u64)>,
    outcomes: Vec<String>,
    /// Close codes the node sent.
    closes: Vec<Option<u16>>,
    sockets: usize,
    cursor: Option<String>,
}

/// A recovering client that resumes by itself: on every close it connects
/// to the next of `urls` with its last cursor.
struct Client {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Client {
    fn spawn(urls: Vec<String>, token: String, start: usize, since: Option<String>) -> Client {
        let seen = Arc::new(Mutex::new(Seen {
            cursor: since,
            ..Seen::default()
        }));
        let stop = Arc::new(tokio::sync::Notify::new());
        let task = {
            let (seen, stop) = (seen.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = start;
                loop {
                    let since = seen.lock().unwrap().cursor.clone();
                    let Some(mut ws) = open(&urls[i % urls.len()], &token, since.as_deref()).await
                    else {
                        i += 1;
                        tokio::select! {
                            () = stop.notified() => return,
                            () = tokio::time::sleep(Duration::from_millis(200)) => continue,
                        }
                    };
                    seen.lock().unwrap().sockets += 1;
                    loop {
                        let msg = tokio::select! {
                            () = stop.notified() => return,
                            m = ws.next() => m,
                        };
                        let text = match msg {
                            Some(Ok(Message::Text(t))) => t,
                            Some(Ok(Message::Close(frame))) => {
                                seen.lock()
                                    .unwrap()
                                    .closes
                                    .push(frame.map(|f| u16::from(f.code)));
                                break;
                            }
                            Some(Ok(_)) => continue,
                            _ => {
                                seen.lock().unwrap().closes.push(None);
                                break;
                            }
                        };
                        let f: Value = serde_json::from_str(&text).unwrap();
                        let (text_cursor, c) = cursor(&f);
                        let mut s = seen.lock().unwrap();
                        s.cursor = Some(text_cursor);
                        match f["type"].as_str() {
                            Some("notification") => {
                                s.got.push(f["data"]["i"].as_u64().expect("i"));
                                s.positions.push((c.user.seq, c.broadcast.seq));
                            }
                            Some("recovered") => s.outcomes.push("recovered".into()),
                            Some("recovery_failed") => s
                                .outcomes
                                .push(f["code"].as_str().unwrap_or("").to_string()),
                            other => panic!("unexpected frame {other:?}: {f}"),
                        }
                    }
                    i += 1;
                }
            })
        };
        Client { seen, stop, task }
    }

    fn got(&self) -> Vec<u64> {
        self.seen.lock().unwrap().got.clone()
    }

    async fn stop(self) -> Seen {
        self.stop.notify_waiters();
        self.stop.notify_one();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        Arc::try_unwrap(self.seen)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_else(|arc| std::mem::take(&mut *arc.lock().unwrap()))
    }
}

/// Waits until `client` has all of `want` (or `within` passes).
async fn until_has(client: &Client, want: &BTreeSet<u64>, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let got: BTreeSet<u64> = client.got().into_iter().collect();
        if want.is_subset(&got) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Exactly `want`, each once; positions never go back.
fn assert_exactly(user: &str, seen: &Seen, want: &BTreeSet<u64>) {
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for i in &seen.got {
        *counts.entry(*i).or_default() += 1;
    }
    let dup: Vec<u64> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(i, _)| *i)
        .collect();
    let got: BTreeSet<u64> = counts.keys().copied().collect();
    let missing: Vec<&u64> = want.difference(&got).collect();
    let extra: Vec<&u64> = got.difference(want).collect();
    assert!(
        dup.is_empty() && missing.is_empty() && extra.is_empty(),
        "{user}: duplicated {dup:?}, missing {missing:?}, not targeted {extra:?} \
         (sockets {}, outcomes {:?}, closes {:?})",
        seen.sockets,
        seen.outcomes,
        seen.closes
    );
    for w in seen.positions.windows(2) {
        assert!(
            w[1].0 >= w[0].0 && w[1].1 >= w[0].1 && w[1] != w[0],
            "{user}: positions went back or stood still: {w:?}"
        );
    }
}

/// The issue's first check: a client that drops for 20 s while unicasts,
/// multicasts and broadcasts (with and without exclusions) are routed by
/// every node comes back on ANOTHER node and gets exactly the ones that
/// targeted it, once, in order, then `recovered`; then live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_away_20s_gets_exactly_what_targeted_it_on_another_node() {
    let _serial = SERIAL.lock().await;
    let fleet = Fleet::up(3, WINDOW);
    let nodes: Vec<String> = fleet.cluster.nodes().to_vec();
    let token = fleet.token(&nodes[0], "alice").await;
    let mut ws = open(&fleet.url(&nodes[0]), &token, None)
        .await
        .expect("connect n1");
    let first = next(&mut ws, Duration::from_secs(10))
        .await
        .expect("outcome");
    assert_eq!(first["type"], "recovered", "{first}");
    let (since, _) = cursor(&first);
    drop(ws);
    let kinds: [(&str, bool); 8] = [
        (r#""users":["alice"]"#, true),
        (r#""users":["alice","bob"]"#, true),
        (r#""users":["bob","carol"]"#, false),
        ("", true),
        (r#""exclude_users":["alice"]"#, false),
        (r#""exclude_users":["bob"]"#, true),
        (
            r#""users":["alice","bob"],"exclude_users":["alice"]"#,
            false,
        ),
        (r#""users":["carol"]"#, false),
    ];
    let mut want = Vec::new();
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed() < Duration::from_secs(20) {
        let (fields, targets_alice) = kinds[i as usize % kinds.len()];
        let sep = if fields.is_empty() { "" } else { "," };
        let body = format!(r#"{{{fields}{sep}"data":{{"i":{i}}}}}"#);
        // Every node routes some: the mesh carries the positions.
        fleet.notify(&nodes[i as usize % nodes.len()], &body).await;
        if targets_alice {
            want.push(i);
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let mut ws = open(&fleet.url(&nodes[1]), &token, Some(&since))
        .await
        .expect("connect n2");
    let mut replayed = Vec::new();
    let outcome = loop {
        let f = next(&mut ws, Duration::from_secs(20))
            .await
            .expect("a frame");
        if f["type"] == "notification" {
            replayed.push(f["data"]["i"].as_u64().unwrap());
        } else {
            break f;
        }
    };
    println!(
        "sent {i} requests in 20 s; {} targeted alice; replayed {replayed:?}",
        want.len()
    );
    assert_eq!(outcome["type"], "recovered", "{outcome}");
    assert_eq!(replayed, want, "exactly the targeted ones, once, in order");
    assert_eq!(outcome["replayed"].as_u64(), Some(want.len() as u64));
    // Live ones follow, once.
    fleet
        .notify(&nodes[2], r#"{"users":["alice"],"data":{"i":100000}}"#)
        .await;
    let live = next(&mut ws, Duration::from_secs(10)).await.expect("live");
    assert_eq!(live["data"]["i"], 100000);
    assert!(
        next(&mut ws, Duration::from_millis(1500)).await.is_none(),
        "an extra frame"
    );
}

/// Who a request of kind `k` (of [`mixed`]) targets among `users`.
fn mixed(i: u64, users: &[String]) -> (String, BTreeSet<String>) {
    let n = users.len();
    let a = &users[i as usize % n];
    let b = &users[(i as usize + 1) % n];
    let all: BTreeSet<String> = users.iter().cloned().collect();
    let data = format!(r#""data":{{"i":{i}}}"#);
    match i % 5 {
        0 => (format!(r#"{{"users":["{a}"],{data}}}"#), [a.clone()].into()),
        1 => (
            format!(r#"{{"users":["{a}","{b}"],{data}}}"#),
            [a.clone(), b.clone()].into(),
        ),
        2 => (format!("{{{data}}}"), all),
        3 => {
            let mut rest = all;
            rest.remove(a);
            (format!(r#"{{"exclude_users":["{a}"],{data}}}"#), rest)
        }
        _ => (
            format!(r#"{{"users":["{a}","{b}"],"exclude_users":["{b}"],{data}}}"#),
            [a.clone()].into(),
        ),
    }
}

/// The seam under a steady stream: requests keep coming (three at a time,
/// routed by every node, so positions arrive out of order), while a client
/// drops and resumes on the next node again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seam_holds_under_a_steady_stream_with_repeated_reconnects_across_nodes() {
    let _serial = SERIAL.lock().await;
    let fleet = Arc::new(Fleet::up(3, WINDOW));
    let nodes: Vec<String> = fleet.cluster.nodes().to_vec();
    let urls: Vec<String> = nodes.iter().map(|n| fleet.url(n)).collect();
    let users: Vec<String> = ["sam", "sue", "syd"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let token = fleet.token(&nodes[0], "sam").await;
    // The client holds a position before the first request is sent.
    let mut client = Client::spawn(urls.clone(), token.clone(), 0, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.seen.lock().unwrap().outcomes.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = 240u64;
    let sender = {
        let (fleet, nodes, users) = (fleet.clone(), nodes.clone(), users.clone());
        tokio::spawn(async move {
            let mut want = BTreeSet::new();
            let sends = futures_util::stream::iter(0..total).map(|i| {
                let (body, targets) = mixed(i, &users);
                if targets.contains("sam") {
                    want.insert(i);
                }
                let (fleet, node) = (fleet.clone(), nodes[i as usize % nodes.len()].clone());
                async move {
                    fleet.notify(&node, &body).await;
                    tokio::time::sleep(Duration::from_millis(60)).await;
                }
            });
            sends.buffer_unordered(3).collect::<Vec<()>>().await;
            want
        })
    };
    // Drop the socket every few hundred ms, resume on the next node.
    let mut reconnects = 0;
    while !sender.is_finished() {
        tokio::time::sleep(Duration::from_millis(300 + (reconnects % 5) * 100)).await;
        let seen = client.stop().await;
        reconnects += 1;
        client = Client::spawn(
            urls.clone(),
            token.clone(),
            reconnects as usize,
            seen.cursor.clone(),
        );
        // Carry what was seen over to the new client's tally.
        let mut s = client.seen.lock().unwrap();
        s.got = seen.got;
        s.positions = seen.positions;
        s.outcomes = seen.outcomes;
        s.sockets += seen.sockets;
    }
    let want = sender.await.unwrap();
    until_has(&client, &want, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = client.stop().await;
    println!(
        "{total} requests, {} for sam; {reconnects} reconnects over {} sockets; outcomes {:?}",
        want.len(),
        seen.sockets,
        seen.outcomes.iter().collect::<BTreeSet<_>>()
    );
    assert!(reconnects >= 10, "only {reconnects} reconnects");
    assert!(
        seen.outcomes.iter().all(|o| o == "recovered"),
        "{:?}",
        seen.outcomes
    );
    assert_exactly("sam", &seen, &want);
}

/// The codes on the aws engine: a cursor whose missed messages are older
/// than the window, a garbage cursor, another user's cursor, recovery off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_and_garbage_cursors_and_recovery_off_fail_with_their_codes() {
    let _serial = SERIAL.lock().await;
    let fleet = Fleet::up(1, "3");
    let node = fleet.cluster.nodes()[0].clone();
    let url = fleet.url(&node);
    let token = fleet.token(&node, "olga").await;
    let outcome = |ws: Ws| async move {
        let mut ws = ws;
        loop {
            let f = next(&mut ws, Duration::from_secs(15))
                .await
                .expect("a frame");
            if f["type"] != "notification" {
                return (f, ws);
            }
        }
    };
    let (f, ws) = outcome(open(&url, &token, Some("garbage")).await.unwrap()).await;
    assert_eq!(
        (f["type"].as_str(), f["code"].as_str()),
        (Some("recovery_failed"), Some("invalid_cursor"))
    );
    let (fresh, _) = cursor(&f);
    drop(ws);
    let other = fleet.token(&node, "oscar").await;
    let (f, _) = outcome(open(&url, &other, Some(&fresh)).await.unwrap()).await;
    assert_eq!(f["code"], "invalid_cursor");
    fleet
        .notify(&node, r#"{"users":["olga"],"data":{"i":1}}"#)
        .await;
    fleet.notify(&node, r#"{"data":{"i":2}}"#).await;
    // Older than the 3 s window: not replayed, not skipped: expired.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (f, mut ws) = outcome(open(&url, &token, Some(&fresh)).await.unwrap()).await;
    assert_eq!(f["code"], "position_expired", "{f}");
    // The failure hands out the heads: live deliveries follow, once.
    fleet
        .notify(&node, r#"{"users":["olga"],"data":{"i":3}}"#)
        .await;
    assert_eq!(
        next(&mut ws, Duration::from_secs(10)).await.unwrap()["data"]["i"],
        3
    );
    drop(ws);
    drop(fleet);
    let off = Fleet::up(1, "0");
    let node = off.cluster.nodes()[0].clone();
    let token = off.token(&node, "olga").await;
    let (f, mut ws) = outcome(open(&off.url(&node), &token, Some(&fresh)).await.unwrap()).await;
    assert_eq!(f["code"], "disabled");
    off.notify(&node, r#"{"users":["olga"],"data":{"i":4}}"#)
        .await;
    let v = next(&mut ws, Duration::from_secs(10)).await.unwrap();
    assert_eq!(
        (v["type"].as_str(), v["data"]["i"].as_u64()),
        (Some("notification"), Some(4))
    );
}

/// Recovering sockets on every node of a fleet; requests through the
/// notifications queue (so any node routes them), a steady stream; `kill`
/// hits `victim` in the middle. Every socket must get every request that
/// targeted its user exactly once.
async fn steady_stream_through(
    fleet: &Fleet,
    per_node: usize,
    victim: &str,
    kill: impl FnOnce(&Cluster),
    clients_on: &[String],
    heavy: bool,
) {
    let nodes: Vec<String> = fleet.cluster.nodes().to_vec();
    let urls: Vec<String> = nodes.iter().map(|n| fleet.url(n)).collect();
    let sqs = fleet.sqs().await;
    let mut users = Vec::new();
    let mut clients = Vec::new();
    for (k, node) in clients_on.iter().enumerate() {
        let start = nodes.iter().position(|n| n == node).unwrap();
        for j in 0..per_node {
            let user = format!("r{k}x{j}");
            let token = fleet.token(node, &user).await;
            // Rotate from its own node to the others when it has to resume.
            let client = Client::spawn(urls.clone(), token, start, None);
            users.push(user);
            clients.push(client);
        }
    }
    // Every client holds a position before the first request is sent.
    let deadline = Instant::now() + Duration::from_secs(20);
    while clients
        .iter()
        .any(|c| c.seen.lock().unwrap().outcomes.is_empty())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = 160u64;
    let mut want: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut kill = Some(kill);
    for i in 0..total {
        let (body, targets) = mixed(i, &users);
        for u in targets {
            want.entry(u).or_default().insert(i);
        }
        fleet.enqueue(&sqs, &body).await;
        // A burst (no pause) before the fault, so the victim has a batch in
        // flight when it goes: received, partly routed, not deleted.
        let burst = (total / 3..total / 3 + 24).contains(&i);
        if i == total / 3 + 24 {
            if heavy {
                // Multicasts that take a while to record (2n+1 writes each),
                // so the victim is caught in the middle of routing one.
                for h in 0..3u64 {
                    let mut to: Vec<String> =
                        (0..300).map(|k| format!("\"ghost{h}x{k}\"")).collect();
                    to.extend(users.iter().map(|u| format!("\"{u}\"")));
                    let id = 1_000_000 + h;
                    let body = format!(r#"{{"users":[{}],"data":{{"i":{id}}}}}"#, to.join(","));
                    for u in &users {
                        want.entry(u.clone()).or_default().insert(id);
                    }
                    fleet.enqueue(&sqs, &body).await;
                }
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
            println!("{victim}: going down after {i} requests");
            if let Some(kill) = kill.take() {
                blocking(|| kill(&fleet.cluster));
            }
        }
        if !burst {
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    }
    for (user, client) in users.iter().zip(&clients) {
        until_has(client, &want[user], Duration::from_secs(40)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut resumed = 0;
    for (user, client) in users.iter().zip(clients) {
        let seen = client.stop().await;
        resumed += seen.sockets - 1;
        assert!(
            seen.outcomes.iter().all(|o| o == "recovered"),
            "{user}: {:?}",
            seen.outcomes
        );
        assert_exactly(user, &seen, &want[user]);
    }
    println!(
        "{} sockets, {total} requests: every one exactly once; {resumed} resumes",
        users.len()
    );
    for node in &nodes {
        let Ok(r) = fleet
            .http
            .get(format!("{}/metrics", fleet.url(node)))
            .send()
            .await
        else {
            continue;
        };
        let text = r.text().await.unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("sumu_recovery_")
                    || l.starts_with("sumu_recoveries_total")
                    || l.starts_with("sumu_notifications_total")
            })
            .collect();
        println!("{node}: {lines:?}");
    }
}

/// The routing node SIGKILLed while recovering sockets receive: what it had
/// received is routed again by another node (after the visibility timeout)
/// with the positions it recorded, so no socket gets it twice; what it had
/// only half delivered is filled from history; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routing_node_sigkilled_while_recovering_sockets_receive() {
    let _serial = SERIAL.lock().await;
    let fleet = Fleet::up(3, WINDOW);
    let nodes: Vec<String> = fleet.cluster.nodes().to_vec();
    let victim = nodes[0].clone();
    // Sockets on every node: the victim's resume on the others (while the
    // requests it held are routed again), the others' stay.
    steady_stream_through(&fleet, 2, &victim, |c| c.kill(&victim), &nodes, true).await;
}

/// A drain: the node holding recovering sockets closes them with 1012; they
/// resume on the other nodes from their cursors, while requests keep coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_nodes_clients_resume_elsewhere_with_nothing_lost() {
    let _serial = SERIAL.lock().await;
    let fleet = Fleet::up(3, WINDOW);
    let nodes: Vec<String> = fleet.cluster.nodes().to_vec();
    let victim = nodes[0].clone();
    steady_stream_through(
        &fleet,
        4,
        &victim,
        |c| c.stop_no_wait(&victim),
        &[victim.clone(), nodes[1].clone()],
        false,
    )
    .await;
}

/// A node frozen past the node timeout is reaped (its rows, inbox and
/// subscription go: what is routed meanwhile cannot reach it). Thawed, it
/// rejoins, and every recovering socket it kept catches up from history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaped_then_rejoined_node_catches_its_recovering_sockets_up() {
    let _serial = SERIAL.lock().await;
    let fleet = Fleet::up(3, WINDOW);
    let nodes: Vec<String> = fleet.cluster.nodes().to_vec();
    let frozen = nodes[2].clone();
    let urls = vec![fleet.url(&frozen)];
    let token = fleet.token(&frozen, "rex").await;
    let client = Client::spawn(urls, token, 0, None);
    tokio::time::sleep(Duration::from_secs(2)).await;
    fleet
        .notify(&nodes[0], r#"{"users":["rex"],"data":{"i":0}}"#)
        .await;
    until_has(&client, &[0].into(), Duration::from_secs(10)).await;
    blocking(|| fleet.cluster.freeze(&frozen));
    // Past the node timeout (6 s), a reaper pass (every heartbeat, 2 s) and
    // the reap itself.
    tokio::time::sleep(Duration::from_secs(14)).await;
    // Routed while it is out: none of these can reach it live.
    let mut want: BTreeSet<u64> = [0].into();
    for i in 1..=6u64 {
        let body = if i % 2 == 0 {
            format!(r#"{{"data":{{"i":{i}}}}}"#)
        } else {
            format!(r#"{{"users":["rex"],"data":{{"i":{i}}}}}"#)
        };
        fleet.notify(&nodes[(i % 2) as usize], &body).await;
        want.insert(i);
    }
    blocking(|| fleet.cluster.thaw(&frozen));
    until_has(&client, &want, Duration::from_secs(40)).await;
    let metric = |name: &'static str| {
        let url = format!("{}/metrics", fleet.url(&frozen));
        let http = fleet.http.clone();
        async move {
            let text = http.get(url).send().await.unwrap().text().await.unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        }
    };
    assert!(
        metric("sumu_errors_total{kind=\"node_rejoin\"}").await >= 1.0,
        "the node was not reaped (it never rejoined): the drill did not test the seam"
    );
    assert!(metric("sumu_recovery_replayed_total{phase=\"catch_up\"}").await >= 1.0);
    // Routed after the rejoin: live again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    fleet
        .notify(&nodes[0], r#"{"users":["rex"],"data":{"i":7}}"#)
        .await;
    want.insert(7);
    until_has(&client, &want, Duration::from_secs(20)).await;
    let seen = client.stop().await;
    println!(
        "rex: {:?} over {} socket(s), closes {:?}",
        seen.got, seen.sockets, seen.closes
    );
    assert_eq!(
        seen.sockets, 1,
        "the socket was kept: it caught up, it did not resume"
    );
    assert_exactly("rex", &seen, &want);
}

/// Resumes `user` at `url` from `since` and answers (time to `recovered`,
/// the replayed `i`s).
async fn timed_resume(url: &str, token: &str, since: &str) -> (Duration, Vec<u64>) {
    let started = Instant::now();
    let mut ws = open(url, token, Some(since)).await.expect("connect");
    let mut replayed = Vec::new();
    loop {
        let f = next(&mut ws, Duration::from_secs(30))
            .await
            .expect("a frame");
        match f["type"].as_str() {
            Some("notification") => replayed.push(f["data"]["i"].as_u64().unwrap()),
            Some("recovered") => return (started.elapsed(), replayed),
            _ => panic!("{f}"),
        }
    }
}

/// For the closing note: how long a resume that replays 300 messages takes,
/// from the connect to `recovered`, on the memory engine (one `--dev` node)
/// and on the aws engine (a 3-node fleet on the emulator, resuming on
/// another node than the one the client left). Prints the figures; fails
/// only on a wrong replay. `cargo test --release -p sumu-loadtest --test it
/// -- fleet_recovery::replay_300 --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_300_messages_timed() {
    let _serial = SERIAL.lock().await;
    let n = 300u64;
    let data = "x".repeat(100);
    let want: Vec<u64> = (0..n).collect();
    // Memory engine.
    let node = blocking(|| sumu_testkit::Node::dev(&[]));
    let url = format!("http://{}", node.addr);
    let token = node.dev_token("pat").await;
    let mut ws = open(&url, &token, None).await.unwrap();
    let (since, _) = cursor(&next(&mut ws, Duration::from_secs(10)).await.unwrap());
    drop(ws);
    let http = reqwest::Client::new();
    for i in 0..n {
        let body = format!(r#"{{"users":["pat"],"data":{{"i":{i},"pad":"{data}"}}}}"#);
        let r = http
            .post(format!("{url}/api/notify"))
            .header("authorization", "Bearer dev")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
    }
    let mut memory = Vec::new();
    for _ in 0..3 {
        let (took, replayed) = timed_resume(&url, &token, &since).await;
        assert_eq!(replayed, want);
        memory.push(took);
    }
    drop(node);
    // Aws engine.
    let fleet = Fleet::up(3, WINDOW);
    let nodes: Vec<String> = fleet.cluster.nodes().to_vec();
    let token = fleet.token(&nodes[0], "pat").await;
    let mut ws = open(&fleet.url(&nodes[0]), &token, None).await.unwrap();
    let (since, _) = cursor(&next(&mut ws, Duration::from_secs(10)).await.unwrap());
    drop(ws);
    let sends = futures_util::stream::iter(0..n).map(|i| {
        let body = format!(r#"{{"users":["pat"],"data":{{"i":{i},"pad":"{data}"}}}}"#);
        let fleet = &fleet;
        let node = nodes[i as usize % nodes.len()].clone();
        async move { fleet.notify(&node, &body).await }
    });
    // One at a time: the positions follow the order sent.
    sends.buffered(1).collect::<Vec<()>>().await;
    let mut aws = Vec::new();
    for k in 0..3 {
        let (took, replayed) = timed_resume(&fleet.url(&nodes[1 + k % 2]), &token, &since).await;
        assert_eq!(replayed, want);
        aws.push(took);
    }
    println!(
        "replay of {n} messages of ~{} B, connect to `recovered`: memory engine {memory:?}; aws engine \
         (emulator, another node) {aws:?}",
        data.len() + 20
    );
}

/// A request routed by two nodes: its first router is frozen past the
/// visibility timeout (5 s) while it holds a batch, another node routes the
/// batch again, then the first one thaws and finishes its own routing. The
/// positions recorded once per request make the recovering sockets drop the
/// second copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_routed_by_two_nodes_reaches_recovering_sockets_once() {
    let _serial = SERIAL.lock().await;
    let fleet = Fleet::up(3, WINDOW);
    let nodes: Vec<String> = fleet.cluster.nodes().to_vec();
    let victim = nodes[0].clone();
    steady_stream_through(
        &fleet,
        3,
        &victim,
        |c| {
            c.freeze(&victim);
            std::thread::sleep(Duration::from_secs(7));
            c.thaw(&victim);
        },
        &nodes,
        true,
    )
    .await;
}
