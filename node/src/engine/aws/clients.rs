//! AWS SDK clients and the one way sumu calls AWS. Every call goes through
//! [`call`], which says once what an operation is named, meters it
//! (`sumu_aws_*` metrics) and maps its failure to a classified
//! [`AwsError`]; the clients bound every call in time (attempt and
//! operation timeouts), so nothing waits on AWS forever. Locally only the
//! endpoint differs.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};

use crate::config::AwsConfig;
use crate::engine::{AwsError, AwsErrorKind};
use crate::metrics::Metrics;

/// One attempt of an ordinary call (long polls override it).
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// A call with all its retries.
pub(crate) const OPERATION_TIMEOUT: Duration = Duration::from_secs(12);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone)]
pub(crate) struct Clients {
    pub(crate) cloudwatch: aws_sdk_cloudwatch::Client,
    pub(crate) dynamodb: aws_sdk_dynamodb::Client,
    pub(crate) streams: aws_sdk_dynamodbstreams::Client,
    pub(crate) sns: aws_sdk_sns::Client,
    pub(crate) sqs: aws_sdk_sqs::Client,
    /// Where [`call`] meters the calls made with these clients.
    pub(crate) metrics: Arc<Metrics>,
}

impl Clients {
    /// For the `emulator_tests` modules: a dev config of the aws engine
    /// pointed at `emulator`, and its clients.
    #[cfg(test)]
    pub(crate) async fn for_emulator(
        emulator: &sumu_testkit::Emulator,
    ) -> (crate::config::Config, Clients) {
        use crate::config::{Config, EngineKind, Options};
        let config = Config::resolve(Options {
            dev: Some(true),
            engine: Some(EngineKind::Aws),
            aws_endpoint: Some(emulator.endpoint.clone()),
            ..Options::default()
        })
        .unwrap();
        let clients = Clients::new(&config.aws, Default::default()).await;
        (config, clients)
    }

    pub(crate) async fn new(cfg: &AwsConfig, metrics: Arc<Metrics>) -> Clients {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(4))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .operation_timeout(OPERATION_TIMEOUT)
                    .build(),
            );
        let region = cfg
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".to_string());
        loader = loader.region(Region::new(region));
        if let Some(endpoint) = &cfg.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if cfg.endpoint.is_some() || cfg.service_endpoints != Default::default() {
            // A local emulator takes any credentials; spare local users the
            // ceremony when none are configured.
            if std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
                && std::env::var_os("AWS_PROFILE").is_none()
            {
                tracing::info!("endpoint override without AWS credentials: using test/test");
                loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
                    "test",
                    "test",
                    None,
                    None,
                    "sumu-local",
                ));
            }
        }
        let sdk = loader.load().await;
        // A per-service endpoint (`--aws-service-endpoints`) set in code wins
        // over the shared one, as the SDK ranks code above environment.
        let each = &cfg.service_endpoints;
        macro_rules! client {
            ($sdk:ident, $endpoint:expr) => {{
                let mut builder = $sdk::config::Builder::from(&sdk);
                if let Some(url) = $endpoint {
                    builder = builder.endpoint_url(url);
                }
                $sdk::Client::from_conf(builder.build())
            }};
        }
        Clients {
            cloudwatch: client!(aws_sdk_cloudwatch, &each.cloudwatch),
            dynamodb: client!(aws_sdk_dynamodb, &each.dynamodb),
            streams: client!(aws_sdk_dynamodbstreams, &each.dynamodbstreams),
            sns: client!(aws_sdk_sns, &each.sns),
            sqs: client!(aws_sdk_sqs, &each.sqs),
            metrics,
        }
    }
}

/// The timeouts of a long poll that waits up to `wait` for messages.
pub(crate) fn long_poll_timeouts(wait: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(wait + ATTEMPT_TIMEOUT)
        .operation_timeout(wait + OPERATION_TIMEOUT)
        .build()
}

/// Runs one AWS call: counts it and times it in `metrics`, and classifies
/// its failure.
pub(crate) async fn call<T, E, R, F>(
    metrics: &Metrics,
    service: &'static str,
    operation: &'static str,
    fut: F,
) -> Result<T, AwsError>
where
    F: Future<Output = Result<T, SdkError<E, R>>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let start = Instant::now();
    let result = fut.await;
    metrics
        .aws_calls
        .with_label_values(&[service, operation])
        .inc();
    metrics
        .aws_latency
        .with_label_values(&[service, operation])
        .observe(start.elapsed().as_secs_f64());
    result.map_err(|e| {
        metrics
            .aws_errors
            .with_label_values(&[service, operation])
            .inc();
        AwsError {
            service,
            operation,
            kind: classify(&e),
            source: Some(Box::new(e)),
        }
    })
}

/// The class of an SDK failure: by the error's variant, then by the
/// service's error code.
fn classify<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> AwsErrorKind {
    match e {
        SdkError::TimeoutError(_) => AwsErrorKind::Timeout,
        SdkError::DispatchFailure(d) if d.is_timeout() => AwsErrorKind::Timeout,
        SdkError::DispatchFailure(_) => AwsErrorKind::Unreachable,
        SdkError::ServiceError(s) => crate::engine::error_kind_of_code(s.err().code()),
        _ => AwsErrorKind::Other,
    }
}
