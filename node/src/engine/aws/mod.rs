//! The `aws` engine: DynamoDB connections table, SNS/SQS in and out, through
//! the official AWS SDK for Rust. Against AWS in production, against a local
//! emulator (`infra/local/`) in development and CI; only the endpoint differs.

pub mod batcher;
pub mod clients;
pub mod cluster;
pub mod dedup;
pub mod leader;
pub mod mesh;
pub mod notifications;
pub mod output;
pub mod presence;
pub mod queue;
pub mod reaper;
pub mod resources;
pub mod router;
pub mod store;
pub mod sweeper;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{Background, Engine, EngineError};
use crate::config::Config;
use crate::registry::LocalDelivery;
use clients::Clients;
use cluster::Cluster;
use dedup::RecentIds;
use leader::{Leader, Lease};
use mesh::Mesh;
use notifications::Poller;
use output::SnsSqsOutput;
use presence::{LagMetric, PresenceConsumer};
use reaper::Reaper;
use resources::Resources;
use router::AwsRouter;
use store::DynamoStore;
use sweeper::Sweeper;

/// How often a node sweeps its own stale rows.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

struct AwsBackground {
    clients: Clients,
    resources: Resources,
    node_id: String,
    pollers: usize,
    store: DynamoStore,
    router: Arc<AwsRouter>,
    mesh: Arc<Mesh>,
    leader: Mutex<Option<Leader>>,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

#[async_trait]
impl Background for AwsBackground {
    async fn start(&self, local: LocalDelivery) -> Result<(), EngineError> {
        self.router.attach(local.clone());
        self.mesh.join().await?;
        let recent = Arc::new(Mutex::new(RecentIds::new(
            100_000,
            Duration::from_secs(900),
        )));
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..self.pollers {
            let poller = Poller {
                sqs: self.clients.sqs.clone(),
                queue_url: self.resources.notifications_queue_url.clone(),
                router: self.router.clone(),
                recent: recent.clone(),
            };
            tasks.push(tokio::spawn(poller.run(self.stop.subscribe())));
        }
        tasks.push(tokio::spawn(
            self.mesh
                .clone()
                .poll_inbox(local.clone(), self.stop.subscribe()),
        ));
        tasks.push(tokio::spawn(
            self.mesh.clone().heartbeat(self.stop.subscribe()),
        ));
        let sweeper = Sweeper {
            store: self.store.clone(),
            node_id: self.node_id.clone(),
            local,
            every: SWEEP_EVERY,
        };
        tasks.push(tokio::spawn(sweeper.run(self.stop.subscribe())));
        if let Some(leader) = self.leader.lock().unwrap_or_else(|e| e.into_inner()).take() {
            tasks.push(tokio::spawn(leader.run(self.stop.subscribe())));
        }
        tracing::info!(pollers = self.pollers, queue = %self.resources.notifications_queue_url, "aws engine started");
        Ok(())
    }

    async fn stop(&self) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        self.mesh.leave().await;
    }
}

pub async fn engine(config: &Config) -> Result<Engine, EngineError> {
    let cfg = &config.aws;
    let clients = Clients::new(cfg).await;
    let resources = resources::resolve(&clients, cfg).await?;
    tracing::info!(?resources, "aws resources");
    let store = DynamoStore::new(
        clients.dynamodb.clone(),
        resources.connections_table.clone(),
        cfg.batch_linger,
    );
    let output = SnsSqsOutput::new(
        clients.sns.clone(),
        clients.sqs.clone(),
        resources.messages_topic_arn.clone(),
        resources.messages_queue_url.clone(),
        cfg.batch_linger,
    );
    let cluster = Arc::new(Cluster::new(
        clients.dynamodb.clone(),
        resources.cluster_table.clone(),
    ));
    let mesh = Arc::new(Mesh::new(
        config.node_id.clone(),
        config.listen.to_string(),
        clients.sqs.clone(),
        clients.sns.clone(),
        resources.mesh_topic_arn.clone(),
        &cfg.name_prefix,
        cluster,
        store.clone(),
        cfg.heartbeat,
    ));
    let router = Arc::new(AwsRouter::new(
        config.node_id.clone(),
        store.clone(),
        mesh.clone(),
    ));
    let output: Arc<dyn super::ClientOutput> = Arc::new(output);
    let leader = Leader {
        lease: Lease {
            client: clients.dynamodb.clone(),
            table: resources.cluster_table.clone(),
            node_id: config.node_id.clone(),
        },
        presence: Arc::new(PresenceConsumer {
            ddb: clients.dynamodb.clone(),
            streams: clients.streams.clone(),
            connections_table: resources.connections_table.clone(),
            cluster_table: resources.cluster_table.clone(),
            store: store.clone(),
            output: output.clone(),
            source: config.presence_source,
            lag_metric: cfg.metrics_namespace.clone().map(|namespace| LagMetric {
                cloudwatch: clients.cloudwatch.clone(),
                namespace,
            }),
        }),
        reaper: Arc::new(Reaper {
            ddb: clients.dynamodb.clone(),
            sqs: clients.sqs.clone(),
            sns: clients.sns.clone(),
            cluster_table: resources.cluster_table.clone(),
            store: store.clone(),
            node_id: config.node_id.clone(),
            timeout: cfg.node_timeout,
            every: cfg.heartbeat,
        }),
    };
    let background = Arc::new(AwsBackground {
        clients,
        resources,
        node_id: config.node_id.clone(),
        pollers: cfg.notification_pollers,
        store: store.clone(),
        router: router.clone(),
        mesh,
        leader: Mutex::new(Some(leader)),
        stop: watch::channel(false).0,
        tasks: Mutex::new(Vec::new()),
    });
    Ok(Engine {
        store: Arc::new(store),
        output,
        router,
        background,
        bus: None,
    })
}

/// `sumu-node bootstrap`: create everything, print where it is.
pub async fn bootstrap(config: &Config) -> Result<Resources, EngineError> {
    let clients = Clients::new(&config.aws).await;
    resources::bootstrap(&clients, &config.aws).await
}
