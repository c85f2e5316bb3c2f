//! The AWS resources a cluster uses: their names, `bootstrap` (idempotent
//! creation, for local use and users without Terraform) and the look-up of
//! ARNs and URLs a node was not given.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;

use super::clients::{call, Clients};
use crate::config::AwsConfig;
use crate::engine::{AwsErrorKind, EngineError};
use crate::metrics::Metrics;

/// Where a node's inputs and outputs are.
#[derive(Debug, Clone)]
pub(crate) struct Resources {
    pub(crate) connections_table: String,
    pub(crate) cluster_table: String,
    pub(crate) history_table: String,
    pub(crate) messages_topic_arn: String,
    pub(crate) messages_queue_url: String,
    pub(crate) notifications_queue_url: String,
    pub(crate) notifications_topic_arn: Option<String>,
    pub(crate) mesh_topic_arn: String,
}

impl Resources {
    /// Environment lines a node (or a backend) can be started with.
    pub(crate) fn to_env(&self) -> String {
        let mut out = format!(
            "SUMU_CONNECTIONS_TABLE={}\nSUMU_CLUSTER_TABLE={}\nSUMU_HISTORY_TABLE={}\nSUMU_MESSAGES_TOPIC_ARN={}\nSUMU_MESSAGES_QUEUE_URL={}\nSUMU_NOTIFICATIONS_QUEUE_URL={}\n",
            self.connections_table,
            self.cluster_table,
            self.history_table,
            self.messages_topic_arn,
            self.messages_queue_url,
            self.notifications_queue_url
        );
        if let Some(arn) = &self.notifications_topic_arn {
            out.push_str(&format!("SUMU_NOTIFICATIONS_TOPIC_ARN={arn}\n"));
        }
        out.push_str(&format!("SUMU_MESH_TOPIC_ARN={}\n", self.mesh_topic_arn));
        out
    }
}

/// The names of the topics and queues, all from the name prefix.
pub(crate) struct Names {
    pub(crate) messages: String,
    pub(crate) notifications: String,
    pub(crate) mesh: String,
    pub(crate) messages_dlq: String,
    pub(crate) notifications_dlq: String,
}

impl Names {
    pub(crate) fn of(cfg: &AwsConfig) -> Names {
        let p = &cfg.name_prefix;
        Names {
            messages: format!("{p}Messages"),
            notifications: format!("{p}Notifications"),
            mesh: format!("{p}Mesh"),
            messages_dlq: format!("{p}MessagesDLQ"),
            notifications_dlq: format!("{p}NotificationsDLQ"),
        }
    }
}

fn build_error(what: &'static str) -> impl Fn(aws_sdk_dynamodb::error::BuildError) -> EngineError {
    move |source| EngineError::Build { what, source }
}

fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, EngineError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(build_error("CreateTable"))
}

fn attr(name: &str) -> Result<AttributeDefinition, EngineError> {
    typed_attr(name, ScalarAttributeType::S)
}

fn typed_attr(name: &str, kind: ScalarAttributeType) -> Result<AttributeDefinition, EngineError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(kind)
        .build()
        .map_err(build_error("CreateTable"))
}

/// The recovery window's table (`engine/aws/history.rs` says what it
/// holds): hash `pk` (S), range `sk` (N), TTL on `delete_at`, no stream.
pub(crate) async fn create_history_table(c: &Clients, name: &str) -> Result<(), EngineError> {
    create_table(
        c,
        name,
        vec![key("pk", KeyType::Hash)?, key("sk", KeyType::Range)?],
        vec![attr("pk")?, typed_attr("sk", ScalarAttributeType::N)?],
        None,
        false,
    )
    .await
}

async fn create_table(
    c: &Clients,
    name: &str,
    keys: Vec<KeySchemaElement>,
    attrs: Vec<AttributeDefinition>,
    gsi: Option<GlobalSecondaryIndex>,
    stream: bool,
) -> Result<(), EngineError> {
    let mut req = c
        .dynamodb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(keys))
        .set_attribute_definitions(Some(attrs))
        .set_global_secondary_indexes(gsi.map(|g| vec![g]));
    if stream {
        req = req.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .map_err(build_error("CreateTable"))?,
        );
    }
    match call(&c.metrics, "dynamodb", "CreateTable", req.send()).await {
        Ok(_) => tracing::info!(table = name, "created table"),
        Err(e) if e.kind == AwsErrorKind::AlreadyExists => {
            tracing::info!(table = name, "table exists")
        }
        Err(e) => return Err(e.into()),
    }
    let ttl = TimeToLiveSpecification::builder()
        .attribute_name("delete_at")
        .enabled(true)
        .build()
        .map_err(build_error("UpdateTimeToLive"))?;
    let request = c
        .dynamodb
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(ttl)
        .send();
    match call(&c.metrics, "dynamodb", "UpdateTimeToLive", request).await {
        Ok(_) => Ok(()),
        // "TimeToLive is already enabled"
        Err(e) if e.kind == AwsErrorKind::Invalid => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn create_topic(c: &Clients, name: &str) -> Result<String, EngineError> {
    let out = call(
        &c.metrics,
        "sns",
        "CreateTopic",
        c.sns.create_topic().name(name).send(),
    )
    .await?;
    out.topic_arn()
        .map(str::to_string)
        .ok_or_else(|| EngineError::Missing {
            what: "ARN of topic",
            name: name.to_string(),
        })
}

pub(crate) async fn create_queue(
    metrics: &Metrics,
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: HashMap<QueueAttributeName, String>,
) -> Result<(String, String), EngineError> {
    let request = sqs
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes.clone()))
        .send();
    let url = match call(metrics, "sqs", "CreateQueue", request).await {
        Ok(out) => out.queue_url().unwrap_or_default().to_string(),
        Err(e) if e.kind == AwsErrorKind::AlreadyExists => {
            // Exists with other attributes: converge them.
            let url = queue_url(metrics, sqs, name).await?;
            let request = sqs
                .set_queue_attributes()
                .queue_url(&url)
                .set_attributes(Some(attributes))
                .send();
            call(metrics, "sqs", "SetQueueAttributes", request).await?;
            url
        }
        Err(e) => return Err(e.into()),
    };
    let request = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send();
    let arn = call(metrics, "sqs", "GetQueueAttributes", request)
        .await?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| EngineError::Missing {
            what: "ARN of queue",
            name: name.to_string(),
        })?;
    Ok((url, arn))
}

pub(crate) async fn queue_url(
    metrics: &Metrics,
    sqs: &aws_sdk_sqs::Client,
    name: &str,
) -> Result<String, EngineError> {
    let out = match call(
        metrics,
        "sqs",
        "GetQueueUrl",
        sqs.get_queue_url().queue_name(name).send(),
    )
    .await
    {
        Err(e) if e.kind == AwsErrorKind::NotFound => None,
        result => result?.queue_url().map(str::to_string),
    };
    out.ok_or_else(|| EngineError::Missing {
        what: "queue",
        name: name.to_string(),
    })
}

/// The ARN of an existing topic, by name (never creates one).
pub(crate) async fn topic_arn(c: &Clients, name: &str) -> Result<String, EngineError> {
    let suffix = format!(":{name}");
    let mut token = None;
    loop {
        let request = c.sns.list_topics().set_next_token(token).send();
        let out = call(&c.metrics, "sns", "ListTopics", request).await?;
        if let Some(arn) = out
            .topics()
            .iter()
            .filter_map(|t| t.topic_arn())
            .find(|a| a.ends_with(&suffix))
        {
            return Ok(arn.to_string());
        }
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            return Err(EngineError::Missing {
                what: "topic",
                name: name.to_string(),
            });
        }
    }
}

/// Lets `topic_arn` deliver to the queue (AWS requires it; emulators don't).
pub(crate) fn sns_to_sqs_policy(queue_arn: &str, topic_arn: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "sumu-sns",
            "Effect": "Allow",
            "Principal": {"Service": "sns.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}}
        }]
    })
    .to_string()
}

/// Creates every resource (idempotently) and answers where they are.
pub(crate) async fn bootstrap(c: &Clients, cfg: &AwsConfig) -> Result<Resources, EngineError> {
    let Names {
        messages,
        notifications,
        mesh,
        messages_dlq,
        notifications_dlq,
    } = Names::of(cfg);
    create_table(
        c,
        &cfg.connections_table,
        vec![
            key("user_id", KeyType::Hash)?,
            key("connection_id", KeyType::Range)?,
        ],
        vec![attr("user_id")?, attr("connection_id")?, attr("node_id")?],
        Some(
            GlobalSecondaryIndex::builder()
                .index_name("by_node")
                .key_schema(key("node_id", KeyType::Hash)?)
                .key_schema(key("connection_id", KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()
                .map_err(build_error("CreateTable"))?,
        ),
        true,
    )
    .await?;
    create_table(
        c,
        &cfg.cluster_table,
        vec![key("pk", KeyType::Hash)?],
        vec![attr("pk")?],
        None,
        false,
    )
    .await?;
    create_history_table(c, &cfg.history_table).await?;
    let messages_topic_arn = create_topic(c, &messages).await?;
    let notifications_topic_arn = create_topic(c, &notifications).await?;
    let mesh_topic_arn = create_topic(c, &mesh).await?;
    let (_, messages_dlq_arn) =
        create_queue(&c.metrics, &c.sqs, &messages_dlq, HashMap::new()).await?;
    let (_, notifications_dlq_arn) =
        create_queue(&c.metrics, &c.sqs, &notifications_dlq, HashMap::new()).await?;
    let redrive = |dlq: &str| {
        serde_json::json!({"deadLetterTargetArn": dlq, "maxReceiveCount": cfg.max_receive_count.to_string()})
            .to_string()
    };
    let (messages_queue_url, _) = create_queue(
        &c.metrics,
        &c.sqs,
        &messages,
        HashMap::from([(
            QueueAttributeName::RedrivePolicy,
            redrive(&messages_dlq_arn),
        )]),
    )
    .await?;
    let (notifications_queue_url, notifications_queue_arn) = create_queue(
        &c.metrics,
        &c.sqs,
        &notifications,
        HashMap::from([
            (
                QueueAttributeName::RedrivePolicy,
                redrive(&notifications_dlq_arn),
            ),
            (QueueAttributeName::VisibilityTimeout, "30".to_string()),
        ]),
    )
    .await?;
    let request = c
        .sqs
        .set_queue_attributes()
        .queue_url(&notifications_queue_url)
        .attributes(
            QueueAttributeName::Policy,
            sns_to_sqs_policy(&notifications_queue_arn, &notifications_topic_arn),
        )
        .send();
    call(&c.metrics, "sqs", "SetQueueAttributes", request).await?;
    let request = c
        .sns
        .subscribe()
        .topic_arn(&notifications_topic_arn)
        .protocol("sqs")
        .endpoint(&notifications_queue_arn)
        .attributes("RawMessageDelivery", "true")
        .return_subscription_arn(true)
        .send();
    call(&c.metrics, "sns", "Subscribe", request).await?;
    Ok(Resources {
        connections_table: cfg.connections_table.clone(),
        cluster_table: cfg.cluster_table.clone(),
        history_table: cfg.history_table.clone(),
        messages_topic_arn,
        messages_queue_url,
        notifications_queue_url,
        notifications_topic_arn: Some(notifications_topic_arn),
        mesh_topic_arn,
    })
}

/// What a starting node uses: given ARNs/URLs, else looked up by name. The
/// history table must exist when the recovery window is on.
pub(crate) async fn resolve(
    c: &Clients,
    cfg: &AwsConfig,
    recovery: bool,
) -> Result<Resources, EngineError> {
    let Names {
        messages,
        notifications,
        mesh,
        ..
    } = Names::of(cfg);
    let messages_topic_arn = match &cfg.messages_topic_arn {
        Some(a) => a.clone(),
        None => topic_arn(c, &messages).await?,
    };
    let messages_queue_url = match &cfg.messages_queue_url {
        Some(u) => u.clone(),
        None => queue_url(&c.metrics, &c.sqs, &messages).await?,
    };
    let notifications_queue_url = match &cfg.notifications_queue_url {
        Some(u) => u.clone(),
        None => queue_url(&c.metrics, &c.sqs, &notifications).await?,
    };
    let request = c
        .dynamodb
        .describe_table()
        .table_name(&cfg.connections_table)
        .send();
    call(&c.metrics, "dynamodb", "DescribeTable", request).await?;
    if recovery {
        let request = c
            .dynamodb
            .describe_table()
            .table_name(&cfg.history_table)
            .send();
        match call(&c.metrics, "dynamodb", "DescribeTable", request).await {
            Err(e) if e.kind == AwsErrorKind::NotFound => {
                return Err(EngineError::Missing {
                    what: "history table (--recovery-window-secs is on)",
                    name: cfg.history_table.clone(),
                })
            }
            other => {
                other?;
            }
        }
    }
    Ok(Resources {
        connections_table: cfg.connections_table.clone(),
        cluster_table: cfg.cluster_table.clone(),
        history_table: cfg.history_table.clone(),
        messages_topic_arn,
        messages_queue_url,
        notifications_queue_url,
        notifications_topic_arn: None,
        mesh_topic_arn: match &cfg.mesh_topic_arn {
            Some(a) => a.clone(),
            None => topic_arn(c, &mesh).await?,
        },
    })
}
