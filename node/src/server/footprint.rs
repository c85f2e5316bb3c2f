//! (Tests only.) Where the heap of one socket goes, measured, so that it
//! cannot grow silently: `cargo test --release -p sumu-node --lib
//! footprint -- --nocapture` prints the table.
//!
//! The stack is the real one: the node's state and app as [`super::serve`]
//! wires them (memory engine), served by the plain listener's connection
//! service as `serve`'s listeners build it (`listeners::plain_service`:
//! actix-http's HTTP/1 service with the node's settings, the
//! graceful-shutdown future and `on_connect`), spawned per connection the
//! way actix-server's worker does, all on this thread; the clients run on a
//! thread of their own, so the counting allocator
//! (`sys::counting_alloc`, glibc chunk sizes, per thread) sees the node's
//! heap alone. `N` sockets go through each phase together and the heap
//! this thread holds is read after each:
//!
//! 1. `accepted`: a TCP connection the node accepted and polled (the
//!    dispatcher's task, its buffers, the connection's kill switch,
//!    tokio's registration);
//! 2. `upgraded`: the WebSocket upgrade done (the request, the session
//!    actor and its context, the hub's entry, the outbound record, the
//!    registration guard, the admission permit);
//! 3. `after a frame`: one client frame and its answer;
//! 4. `after a delivery`: one broadcast received;
//! 5. `closed`: every socket gone; what stays is the hub's and the
//!    admission's tables, which keep their capacity (no per-socket leak).
//!
//! sumu's own records are also measured alone (`parts`), to name what the
//! phases add up. A warm-up round first fills actix's pools and the
//! lazily built metrics, so the phases show what a socket costs, not
//! what the first one does.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use actix_service::{Service, ServiceFactory};
use bytestring::ByteString;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::listeners::{plain_service, Plain};
use super::{app, on_connect, wire, Wired};
use crate::config::{Config, Options};
use crate::sys::counting_alloc::held;

/// Sockets per phase (enough that per-socket figures are exact to a byte
/// or two; the hub's tables end at about the load they have at 18k).
const N: usize = 1000;
/// Sockets of the warm-up round, upgraded all at once: actix keeps request
/// heads (about 6.7 KiB each with their header map) in pools of up to 128
/// per thread, as many as were in flight together; the warm-up fills
/// them, and the measured round upgrades [`MEASURED_CONCURRENCY`] at a
/// time, so it takes its heads from the pools (else the pools' growth, a
/// matter of timing, would show as up to 700 B per socket).
const WARM_UP: usize = 300;
/// Upgrades in flight at once in the measured round.
const MEASURED_CONCURRENCY: usize = 16;

const SECRET: &str = "footprint-secret";

thread_local! {
    /// The size of one connection's future (what its task holds inline).
    static FUTURE_BYTES: Cell<usize> = const { Cell::new(0) };
}

/// What the client thread is asked to do with its sockets.
#[derive(Debug)]
enum Step {
    /// Open this many TCP connections (no request yet).
    Connect(usize),
    /// Upgrade every connection (a token per socket, users `user-0..`),
    /// this many at a time.
    Upgrade(usize),
    /// Send `{"action":"ping"}` on every socket and read its answer.
    Ping,
    /// Read one message on every socket.
    ReadOne,
    /// Drop every socket.
    Close,
}

/// The client side: a thread with its own runtime, so its heap is not
/// counted. Answers each step once it is done.
fn client(
    addr: std::net::SocketAddr,
    mut steps: mpsc::UnboundedReceiver<Step>,
    done: mpsc::UnboundedSender<()>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut raw: Vec<tokio::net::TcpStream> = Vec::new();
        let mut sockets = Vec::new();
        while let Some(step) = steps.recv().await {
            match step {
                Step::Connect(n) => {
                    for _ in 0..n {
                        raw.push(tokio::net::TcpStream::connect(addr).await.unwrap());
                    }
                }
                Step::Upgrade(concurrency) => {
                    let exp = sumu_testkit::tokens::now_secs() + 3600;
                    let upgrades = raw.drain(..).enumerate().map(|(i, tcp)| {
                        let token = sumu_testkit::tokens::sign(
                            jsonwebtoken::Algorithm::HS256,
                            SECRET.as_bytes(),
                            None,
                            serde_json::json!({"sub": format!("user-{i}"), "exp": exp}),
                        );
                        let url = format!("ws://{addr}/push?authorization={token}");
                        async move {
                            tokio_tungstenite::client_async(url, tcp)
                                .await
                                .expect("upgrade")
                                .0
                        }
                    });
                    sockets = futures_util::stream::iter(upgrades)
                        .buffer_unordered(concurrency)
                        .collect()
                        .await;
                }
                Step::Ping => {
                    for ws in &mut sockets {
                        ws.send(Message::text(r#"{"action":"ping"}"#))
                            .await
                            .unwrap();
                    }
                    for ws in &mut sockets {
                        let pong = ws.next().await.unwrap().unwrap();
                        assert!(pong.to_text().unwrap().contains("pong"), "{pong:?}");
                    }
                }
                Step::ReadOne => {
                    for ws in &mut sockets {
                        let msg = ws.next().await.unwrap().unwrap();
                        assert!(msg.is_text(), "{msg:?}");
                    }
                }
                Step::Close => {
                    raw.clear();
                    sockets.clear();
                }
            }
            done.send(()).unwrap();
        }
    });
}

/// The heap per socket of each phase, and what stays after the close.
#[derive(Debug, Default, Clone, Copy)]
struct Phases {
    accepted: isize,
    upgraded: isize,
    after_frame: isize,
    after_delivery: isize,
    closed: isize,
}

/// Drives the client thread through the phases with `n` sockets, reading
/// this thread's heap after each.
struct Driver {
    steps: mpsc::UnboundedSender<Step>,
    done: mpsc::UnboundedReceiver<()>,
    accepted: Rc<Cell<usize>>,
    wired: Wired,
}

impl Driver {
    async fn step(&mut self, step: Step) {
        self.steps.send(step).unwrap();
        self.done.recv().await.unwrap();
    }

    /// Lets every spawned task run to quiescence (sessions started, the
    /// hub's registrations handled, closed sockets unregistered).
    async fn settle() {
        actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    }

    async fn round(&mut self, n: usize, concurrency: usize) -> Phases {
        let per = |bytes: isize| bytes / n as isize;
        Driver::settle().await;
        let base = held();
        let accepted = self.accepted.get();
        self.step(Step::Connect(n)).await;
        while self.accepted.get() < accepted + n {
            actix_web::rt::time::sleep(Duration::from_millis(10)).await;
        }
        Driver::settle().await;
        let mut p = Phases {
            accepted: per(held() - base),
            ..Phases::default()
        };
        self.step(Step::Upgrade(concurrency)).await;
        Driver::settle().await;
        p.upgraded = per(held() - base);
        self.step(Step::Ping).await;
        Driver::settle().await;
        p.after_frame = per(held() - base);
        let delivered = self
            .wired
            .running
            .local
            .broadcast_stamped(
                Vec::new(),
                ByteString::from_static(r#"{"type":"footprint"}"#),
                None,
            )
            .await
            .unwrap();
        assert_eq!(delivered, n);
        self.step(Step::ReadOne).await;
        Driver::settle().await;
        p.after_delivery = per(held() - base);
        self.step(Step::Close).await;
        self.wired.running.local.emptied().await;
        Driver::settle().await;
        p.closed = per(held() - base);
        p
    }
}

fn config() -> Config {
    Config::resolve(Options {
        hs256_secret: Some(SECRET.into()),
        api_key: Some("footprint".into()),
        ..Options::default()
    })
    .unwrap()
}

fn measure() -> Phases {
    crate::sys::raise_file_limit();
    actix_web::rt::System::new().block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let wired = wire(config(), addr).await.unwrap();
        wired
            .ready
            .store(true, std::sync::atomic::Ordering::Release);
        // The plain listener's connection service, as `serve`'s listeners
        // build it for each worker (`listeners::plain_service`). The
        // server is never run: it only gives the graceful-shutdown signal
        // the connections wait on.
        let server = actix_server::Server::build();
        let plain = Plain {
            addr,
            proxy_protocol: false,
            // Longer than `serve`'s (the same timer, so the same heap): the
            // connections of the first phase wait for their request while
            // the others are measured, slowly under valgrind.
            request_timeout: Duration::from_secs(120),
            shutdown: server.graceful_shutdown_signal(),
            metrics: wired.running.metrics.clone(),
        };
        let state = wired.state.clone();
        let service = plain_service(&move || app(&state), plain, on_connect)
            .new_service(())
            .await
            .unwrap();
        let service = Rc::new(service);
        let accepted = Rc::new(Cell::new(0));
        let counter = accepted.clone();
        // As actix-server's worker: the service's future made first, then
        // moved into a task of its own.
        actix_web::rt::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let fut = service.call(tcp);
                FUTURE_BYTES.set(std::mem::size_of_val(&fut));
                actix_web::rt::spawn(async move {
                    let _ = fut.await;
                });
                counter.set(counter.get() + 1);
            }
        });
        let (steps, steps_rx) = mpsc::unbounded_channel();
        let (done_tx, done) = mpsc::unbounded_channel();
        let client = std::thread::spawn(move || client(addr, steps_rx, done_tx));
        let mut driver = Driver {
            steps,
            done,
            accepted,
            wired,
        };
        driver.round(WARM_UP, WARM_UP).await;
        let phases = driver.round(N, MEASURED_CONCURRENCY).await;
        drop(driver);
        client.join().unwrap();
        phases
    })
}

/// What each phase may hold per socket: what was measured (deterministic
/// to the byte on one toolchain and lock file), plus a little slack for a
/// dependency update. A change that makes a socket heavier fails here; one
/// that makes it lighter lowers them (and says so in its commit).
const BUDGET: Phases = Phases {
    accepted: 1696,
    upgraded: 3303,
    after_frame: 3563,
    after_delivery: 3563,
    closed: 219,
};
const SLACK: isize = 48;

#[test]
fn heap_per_socket() {
    let p = measure();
    println!(
        "heap per socket (bytes, glibc chunks): accepted {} | upgraded {} (+{}) | after a frame {} (+{}) | after a delivery {} (+{}) | closed {}",
        p.accepted,
        p.upgraded,
        p.upgraded - p.accepted,
        p.after_frame,
        p.after_frame - p.upgraded,
        p.after_delivery,
        p.after_delivery - p.after_frame,
        p.closed
    );
    println!("a connection's future: {} bytes", FUTURE_BYTES.get());
    for (phase, got, budget) in [
        ("accepted", p.accepted, BUDGET.accepted),
        ("upgraded", p.upgraded, BUDGET.upgraded),
        ("after a frame", p.after_frame, BUDGET.after_frame),
        ("after a delivery", p.after_delivery, BUDGET.after_delivery),
        ("closed", p.closed, BUDGET.closed),
    ] {
        assert!(
            got <= budget + SLACK,
            "{phase}: {got} bytes per socket, over the budget of {budget} (+{SLACK})"
        );
    }
}

/// sumu's own records of one socket, each measured alone (the rest of the
/// phases is actix's and tokio's: the connection's task and dispatcher,
/// tokio's registration, the request's payload).
#[derive(Debug, Clone, Copy)]
struct Parts {
    /// The connection's kill switch, in the connection data `on_connect`
    /// fills (the map, the switch, its abort hook).
    kill_switch: isize,
    /// The socket's queue and bound.
    outbound: isize,
    /// The session actor in its context (the context box, the mailbox,
    /// the frame reader, the timer, the inbox), started.
    session: isize,
    /// The hub's entry and the user's list of sockets (a new user).
    hub_entry: isize,
    /// The connection id and the user id.
    ids: isize,
}

/// Each part's budget: what was measured (deterministic, as [`BUDGET`]).
const PARTS_BUDGET: Parts = Parts {
    kill_switch: 256,
    outbound: 144,
    session: 992,
    hub_entry: 80,
    ids: 112,
};

fn measure_parts() -> Parts {
    use crate::outbound::{Metered, Outbound};
    use crate::session::Session;
    use actix_web_actors::ws::WebsocketContext;
    use bytes::Bytes;
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    actix_web::rt::System::new().block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let wired = wire(config(), addr).await.unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();

        let before = held();
        let mut ext = actix_web::dev::Extensions::new();
        on_connect(&tcp, &mut ext);
        let kill_switch = held() - before;

        let before = held();
        let connection_id: Arc<str> = uuid::Uuid::new_v4().simple().to_string().into();
        let user_id: Arc<str> = "user-12345".into();
        let ids = held() - before;

        let before = held();
        let outbound = Arc::new(Outbound::new(4 << 20, None));
        let outbound_bytes = held() - before;

        // A session, started: the first one also builds what is built once,
        // so the second is measured.
        let start_session = || {
            let session = Session::new(
                connection_id.clone(),
                user_id.clone(),
                wired.state.session_env.clone(),
                outbound.clone(),
            );
            let payload =
                futures_util::stream::pending::<Result<Bytes, actix_http::error::PayloadError>>();
            let stream = WebsocketContext::with_factory(payload, move |_| session);
            let mut stream = Box::pin(Metered::new(Box::pin(stream), outbound.clone()));
            // The first poll starts the actor (its timer, its inbox).
            let mut cx = Context::from_waker(Waker::noop());
            assert!(matches!(
                futures_util::Stream::poll_next(stream.as_mut(), &mut cx),
                Poll::Pending
            ));
            stream
        };
        drop(start_session());
        let before = held();
        let stream = start_session();
        let session_bytes = held() - before;

        // A hub whose tables have room: only the entry and the new user's
        // list are new.
        for i in 0..100 {
            register(&wired, socket(&format!("warm-{i}"))).await;
        }
        let one_more = socket("one-more");
        let before = held();
        register(&wired, one_more).await;
        let hub_entry = held() - before;
        drop(stream);
        Parts {
            kill_switch,
            outbound: outbound_bytes,
            session: session_bytes,
            hub_entry,
            ids,
        }
    })
}

/// A plain socket of a new user, as the hub is told of it (no session
/// behind it; its queue made beforehand, so not counted as the hub's).
fn socket(user: &str) -> crate::hub::Register {
    use std::sync::Arc;
    crate::hub::Register {
        connection_id: format!("c-{user}").into(),
        user_id: user.into(),
        outbound: Arc::new(crate::outbound::Outbound::new(1 << 20, None)),
        resumer: None,
    }
}

async fn register(wired: &Wired, socket: crate::hub::Register) {
    wired.running.local.register(socket).await.unwrap();
}

#[test]
fn heap_per_socket_by_part() {
    let p = measure_parts();
    println!(
        "sumu's records per socket (bytes, glibc chunks): kill switch {} | outbound {} | session {} | hub entry {} | ids {}",
        p.kill_switch, p.outbound, p.session, p.hub_entry, p.ids
    );
    for (part, got, budget) in [
        ("kill switch", p.kill_switch, PARTS_BUDGET.kill_switch),
        ("outbound", p.outbound, PARTS_BUDGET.outbound),
        ("session", p.session, PARTS_BUDGET.session),
        ("hub entry", p.hub_entry, PARTS_BUDGET.hub_entry),
        ("ids", p.ids, PARTS_BUDGET.ids),
    ] {
        assert!(
            got <= budget,
            "{part}: {got} bytes per socket, over the budget of {budget}"
        );
    }
}
