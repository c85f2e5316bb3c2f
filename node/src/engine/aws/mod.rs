//! The `aws` engine: DynamoDB connections table, SNS/SQS in and out, through
//! the official AWS SDK for Rust. Against AWS in production, against a local
//! emulator (`infra/local/`) in development and CI; only the endpoint differs.

mod batcher;
mod clients;
mod cluster;
mod dedup;
mod deleter;
mod delivered;
mod history;
mod leader;
mod mesh;
mod notifications;
mod output;
mod periodic;
mod presence;
mod queue;
mod reaper;
mod resources;
mod router;
mod sockets_metric;
mod status;
mod store;
mod sweeper;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Background, ClientOutput, Engine, EngineError, Health};
use crate::config::Config;
use crate::hub::LocalDelivery;
use crate::metrics::Metrics;
use clients::Clients;
use cluster::{Cluster, ClusterTable};
use deleter::Deleter;
use delivered::Delivered;
use leader::{Leader, Lease};
use mesh::{Mesh, MeshSettings};
use notifications::Poller;
use output::SnsSqsOutput;
use presence::{LagMetric, PresenceConsumer};
use reaper::Reaper;
pub(crate) use resources::Resources;
use router::AwsRouter;
use sockets_metric::SocketsMetric;
use store::DynamoStore;
use sweeper::Sweeper;

/// How often a node sweeps its own stale rows when no delete failed (a pass
/// reads all of the node's rows: see `sweeper.rs`).
const SWEEP_EVERY: Duration = Duration::from_secs(600);

struct AwsBackground {
    clients: Clients,
    resources: Resources,
    node_id: String,
    pollers: usize,
    store: DynamoStore,
    router: Arc<AwsRouter>,
    mesh: Arc<Mesh>,
    local: LocalDelivery,
    /// What this node delivered, per request (router, inbox and pollers).
    delivered: Arc<Delivered>,
    /// Taken by `start`: the leader campaigns once.
    leader: Mutex<Option<Leader>>,
    /// How long a received notification request stays invisible.
    visibility: Duration,
    /// The notification pollers: stopped first when the node drains.
    intake: TaskTracker,
    intake_stop: Mutex<Option<CancellationToken>>,
    /// Taken by `start`; None when CloudWatch metrics are off.
    sockets_metric: Mutex<Option<SocketsMetric>>,
}

/// How long the notification pollers may take to finish their last receive
/// and route what it brought, once the drain starts.
const INTAKE_GRACE: Duration = Duration::from_secs(20);

#[async_trait]
impl Background for AwsBackground {
    async fn start(&self, tasks: &TaskTracker, stop: CancellationToken) -> Result<(), EngineError> {
        self.mesh.join().await?;
        let intake_stop = stop.child_token();
        // One deleter for the pollers: it ends (after its last delete) when
        // they do, and the drain waits for it like for them.
        let (deleter, deleting) = Deleter::start(
            self.clients.sqs.clone(),
            self.resources.notifications_queue_url.clone(),
            deleter::linger_for(self.visibility),
            self.clients.metrics.clone(),
        );
        self.intake.spawn(async move {
            let _ = deleting.await;
        });
        for _ in 0..self.pollers {
            let poller = Poller {
                sqs: self.clients.sqs.clone(),
                queue_url: self.resources.notifications_queue_url.clone(),
                router: self.router.clone(),
                delivered: self.delivered.clone(),
                deleter: deleter.clone(),
                visibility: self.visibility,
                metrics: self.clients.metrics.clone(),
            };
            self.intake.spawn(poller.run(intake_stop.clone()));
        }
        drop(deleter);
        *self.intake_stop.lock().unwrap_or_else(|e| e.into_inner()) = Some(intake_stop);
        tasks.spawn(self.mesh.clone().poll_inbox(
            self.local.clone(),
            self.delivered.clone(),
            stop.clone(),
        ));
        tasks.spawn(self.mesh.clone().heartbeat(stop.clone()));
        let sweeper = Sweeper {
            store: self.store.clone(),
            node_id: self.node_id.clone(),
            local: self.local.clone(),
            every: SWEEP_EVERY,
            after_failed_delete: sweeper::AFTER_FAILED_DELETE,
        };
        tasks.spawn(sweeper.run(stop.clone()));
        let sockets_metric = self
            .sockets_metric
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(metric) = sockets_metric {
            tasks.spawn(metric.run(stop.clone()));
        }
        if let Some(leader) = self.leader.lock().unwrap_or_else(|e| e.into_inner()).take() {
            tasks.spawn(leader.run(stop));
        }
        tracing::info!(pollers = self.pollers, queue = %self.resources.notifications_queue_url, "aws engine started");
        Ok(())
    }

    async fn stop_intake(&self) {
        let token = self
            .intake_stop
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(token) = token {
            token.cancel();
        }
        self.intake.close();
        if tokio::time::timeout(INTAKE_GRACE, self.intake.wait())
            .await
            .is_err()
        {
            tracing::warn!("notification pollers did not finish in time");
        }
    }

    async fn leave(&self) {
        // Whatever stopped the node, the pollers are done before it leaves.
        self.stop_intake().await;
        self.mesh.leave().await;
    }
}

/// The aws engine of node `config.node_id`, delivering through `local` and
/// counting in the node's `metrics`; `address` is where the node listens
/// (for operators, in its row).
pub(crate) async fn engine(
    config: &Config,
    local: LocalDelivery,
    metrics: Arc<Metrics>,
    address: std::net::SocketAddr,
) -> Result<Engine, EngineError> {
    let cfg = &config.aws;
    let clients = Clients::new(cfg, metrics).await;
    let resources = resources::resolve(&clients, cfg, config.recovery.enabled()).await?;
    tracing::info!(?resources, "aws resources");
    let store = DynamoStore::new(
        clients.dynamodb.clone(),
        resources.connections_table.clone(),
        cfg.batch_linger,
        clients.metrics.clone(),
    );
    let output: Arc<dyn ClientOutput> = Arc::new(SnsSqsOutput::new(
        clients.sns.clone(),
        clients.sqs.clone(),
        resources.messages_topic_arn.clone(),
        resources.messages_queue_url.clone(),
        cfg.batch_linger,
        cfg.max_output_bytes_in_flight,
        clients.metrics.clone(),
    ));
    let health = Arc::new(Health::default());
    let history: Option<Arc<dyn crate::engine::history::History>> =
        config.recovery.enabled().then(|| {
            Arc::new(history::AwsHistory::new(
                clients.dynamodb.clone(),
                clients.metrics.clone(),
                resources.history_table.clone(),
                config.recovery.window,
            )) as Arc<dyn crate::engine::history::History>
        });
    let cluster_table = ClusterTable::new(
        clients.dynamodb.clone(),
        resources.cluster_table.clone(),
        clients.metrics.clone(),
    );
    let cluster = Arc::new(Cluster::new(cluster_table.clone()));
    let mesh = Arc::new(Mesh::new(
        MeshSettings {
            node_id: config.node_id.clone(),
            address: address.to_string(),
            topic_arn: resources.mesh_topic_arn.clone(),
            inbox_name: format!("{}Inbox-{}", cfg.name_prefix, config.node_id),
            heartbeat_every: cfg.heartbeat,
            row_ttl: config.limits.max_connection + Duration::from_secs(3600),
            write_timeout: cfg.register_timeout,
            receive_visibility: cfg.notification_visibility,
            batch_linger: cfg.batch_linger,
        },
        &clients,
        cluster,
        store.clone(),
        local.clone(),
        health.clone(),
    ));
    let delivered = Arc::new(Delivered::new(delivered::LIMITS));
    let router = Arc::new(AwsRouter::new(
        config.node_id.clone(),
        store.clone(),
        mesh.clone(),
        local.clone(),
        delivered.clone(),
        history.clone(),
        clients.metrics.clone(),
    ));
    let leader = Leader {
        lease: Lease {
            table: cluster_table.clone(),
            node_id: config.node_id.clone(),
            length: cfg.leader_lease,
        },
        renew_every: cfg.leader_renew,
        presence: Arc::new(PresenceConsumer {
            ddb: clients.dynamodb.clone(),
            streams: clients.streams.clone(),
            connections_table: resources.connections_table.clone(),
            cluster: cluster_table.clone(),
            store: store.clone(),
            output: output.clone(),
            source: config.presence_source,
            lag_metric: cfg.metrics_namespace.clone().map(|namespace| LagMetric {
                cloudwatch: clients.cloudwatch.clone(),
                namespace,
                metrics: clients.metrics.clone(),
            }),
            metrics: clients.metrics.clone(),
        }),
        reaper: Arc::new(Reaper {
            sqs: clients.sqs.clone(),
            sns: clients.sns.clone(),
            cluster: cluster_table,
            store: store.clone(),
            node_id: config.node_id.clone(),
            timeout: cfg.node_timeout,
            every: cfg.heartbeat,
            metrics: clients.metrics.clone(),
            step_pause: cfg.reap_step_pause,
        }),
    };
    let sockets_metric = cfg
        .metrics_namespace
        .clone()
        .map(|namespace| SocketsMetric {
            cloudwatch: clients.cloudwatch.clone(),
            metrics: clients.metrics.clone(),
            namespace,
            fleet: cfg.name_prefix.clone(),
            every: cfg.metrics_interval,
        });
    let background = Arc::new(AwsBackground {
        clients,
        resources,
        node_id: config.node_id.clone(),
        pollers: cfg.notification_pollers,
        store: store.clone(),
        router: router.clone(),
        mesh,
        local,
        delivered,
        leader: Mutex::new(Some(leader)),
        visibility: cfg.notification_visibility,
        intake: TaskTracker::new(),
        intake_stop: Mutex::new(None),
        sockets_metric: Mutex::new(sockets_metric),
    });
    Ok(Engine {
        store: Arc::new(store),
        output,
        router,
        background,
        bus: None,
        health,
        history,
    })
}

/// `sumu-node cluster status`: the fleet as AWS sees it, as a table or JSON.
pub(crate) async fn cluster_status(config: &Config, json: bool) -> Result<String, EngineError> {
    // A command, not a node: its calls are metered where nobody reads them.
    let clients = Clients::new(&config.aws, Arc::default()).await;
    let status = status::status(&clients, &config.aws).await?;
    Ok(if json {
        serde_json::to_string_pretty(&status).unwrap_or_default() + "\n"
    } else {
        status.table()
    })
}

/// `sumu-node bootstrap`: create everything, print where it is.
pub(crate) async fn bootstrap(config: &Config) -> Result<Resources, EngineError> {
    let clients = Clients::new(&config.aws, Arc::default()).await;
    resources::bootstrap(&clients, &config.aws).await
}
