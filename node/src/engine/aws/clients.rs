//! AWS SDK clients: one shared configuration; locally only the endpoint
//! differs.

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region};

use crate::config::AwsConfig;
use crate::engine::EngineError;

#[derive(Clone)]
pub struct Clients {
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub sns: aws_sdk_sns::Client,
    pub sqs: aws_sdk_sqs::Client,
}

impl Clients {
    pub async fn new(cfg: &AwsConfig) -> Clients {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(4));
        let region = cfg
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".to_string());
        loader = loader.region(Region::new(region));
        if let Some(endpoint) = &cfg.endpoint {
            loader = loader.endpoint_url(endpoint);
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
        Clients {
            cloudwatch: aws_sdk_cloudwatch::Client::new(&sdk),
            dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
            streams: aws_sdk_dynamodbstreams::Client::new(&sdk),
            sns: aws_sdk_sns::Client::new(&sdk),
            sqs: aws_sdk_sqs::Client::new(&sdk),
        }
    }
}

/// Maps any SDK error to the engine's error, with the full error chain.
pub fn aws_error<E>(service: &'static str, operation: &'static str) -> impl Fn(E) -> EngineError
where
    E: std::error::Error,
{
    move |e| EngineError::Aws {
        service,
        operation,
        message: aws_sdk_sqs::error::DisplayErrorContext(&e).to_string(),
    }
}

/// The error code of an SDK error, if the service sent one.
pub fn error_code<E>(e: &aws_sdk_sqs::error::SdkError<E>) -> Option<String>
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata,
{
    use aws_sdk_sqs::error::ProvideErrorMetadata;
    e.code().map(str::to_string)
}
