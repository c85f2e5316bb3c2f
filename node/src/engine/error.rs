//! The engines' errors. Causes are kept (`#[source]`), never flattened to
//! text; AWS failures are classified once, by the SDK error's variant and
//! the service's error code (an exact value, never a substring of a
//! message), so callers branch on [`AwsErrorKind`].

use crate::hub::HubError;

/// What went wrong in an engine.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EngineError {
    /// An AWS call failed (after the SDK's own retries).
    #[error(transparent)]
    Aws(#[from] AwsError),
    /// A batch call succeeded but refused some of its entries.
    #[error("{service} {operation} refused an entry ({code}): {message}")]
    EntryRefused {
        service: &'static str,
        operation: &'static str,
        code: String,
        message: String,
    },
    /// A batch call failed as a whole; every entry in it shares the cause.
    #[error("{service} {operation}: the batch failed")]
    Batch {
        service: &'static str,
        operation: &'static str,
        #[source]
        source: std::sync::Arc<AwsError>,
    },
    /// A batcher answered fewer results than it was given items (a bug).
    #[error("{0}: batch answered short")]
    BatchShort(&'static str),
    /// BatchWriteItem left items unprocessed through every retry.
    #[error("dynamodb BatchWriteItem: item still unprocessed after {attempts} attempts")]
    Unprocessed { attempts: u32 },
    /// A batcher's task is gone (the node is stopping).
    #[error("{0}: batcher stopped")]
    BatcherStopped(&'static str),
    /// As much as the node allows already waits for AWS (AWS is slow or
    /// down): refused at once instead of held.
    #[error("{0}: too much is waiting for AWS already")]
    Overloaded(&'static str),
    /// A resource could not be found by name (and none was configured).
    #[error("{what} {name:?} not found: run `sumu-node bootstrap` or configure it")]
    Missing { what: &'static str, name: String },
    /// An AWS request could not be built (a bug, not an outage).
    #[error("building a {what} request")]
    Build {
        what: &'static str,
        #[source]
        source: aws_sdk_dynamodb::error::BuildError,
    },
    /// This node's own sockets could not be reached.
    #[error(transparent)]
    Hub(#[from] HubError),
    /// A socket's connection row was not written in time (`--register-timeout-ms`).
    #[error("connection row not written within {0:?}")]
    RegisterTimeout(std::time::Duration),
}

impl EngineError {
    /// Whether an AWS call failed because what it names does not exist (a
    /// deleted queue, say), alone or as a whole batch.
    pub(crate) fn not_found(&self) -> bool {
        match self {
            EngineError::Aws(e) => e.kind == AwsErrorKind::NotFound,
            EngineError::Batch { source, .. } => source.kind == AwsErrorKind::NotFound,
            _ => false,
        }
    }
}

/// The class of an AWS failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AwsErrorKind {
    /// No answer within the call's time bound.
    Timeout,
    /// The request could not be sent (connection refused, DNS, TLS).
    Unreachable,
    /// The service asked us to slow down.
    Throttled,
    /// The named queue, table, topic or subscription does not exist.
    NotFound,
    /// A conditional write's condition was false.
    ConditionFailed,
    /// What a create call would make exists already.
    AlreadyExists,
    /// The service refused the request's parameters (or the state change
    /// it asks for is already in place, e.g. TTL already enabled).
    Invalid,
    /// Any other error the service answered with.
    Service,
    /// A malformed response or a request the SDK could not build.
    Other,
}

impl std::fmt::Display for AwsErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AwsErrorKind::Timeout => "timed out",
            AwsErrorKind::Unreachable => "unreachable",
            AwsErrorKind::Throttled => "throttled",
            AwsErrorKind::NotFound => "not found",
            AwsErrorKind::ConditionFailed => "condition failed",
            AwsErrorKind::AlreadyExists => "already exists",
            AwsErrorKind::Invalid => "invalid request",
            AwsErrorKind::Service => "service error",
            AwsErrorKind::Other => "failed",
        })
    }
}

/// One failed AWS call: which operation, its class, and the SDK's error.
#[derive(Debug, thiserror::Error)]
#[error("{service} {operation}: {kind}")]
pub(crate) struct AwsError {
    pub(crate) service: &'static str,
    pub(crate) operation: &'static str,
    pub(crate) kind: AwsErrorKind,
    #[source]
    pub(crate) source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Service error codes that mean "slow down" (AWS's retry classifiers use
/// the same list).
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

/// Service error codes that mean the named resource does not exist.
const NOT_FOUND_CODES: &[&str] = &[
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "ResourceNotFoundException",
    "NotFound",
    "NotFoundException",
];

/// The class of a service error code.
pub(crate) fn kind_of_code(code: Option<&str>) -> AwsErrorKind {
    match code {
        Some(c) if THROTTLING_CODES.contains(&c) => AwsErrorKind::Throttled,
        Some(c) if NOT_FOUND_CODES.contains(&c) => AwsErrorKind::NotFound,
        Some("ConditionalCheckFailedException") => AwsErrorKind::ConditionFailed,
        Some(
            "ResourceInUseException"
            | "QueueAlreadyExists"
            | "QueueNameExists"
            | "AWS.SimpleQueueService.QueueNameExists",
        ) => AwsErrorKind::AlreadyExists,
        Some("ValidationException" | "InvalidParameterValue" | "InvalidParameter") => {
            AwsErrorKind::Invalid
        }
        _ => AwsErrorKind::Service,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified_by_exact_value() {
        assert_eq!(
            kind_of_code(Some("AWS.SimpleQueueService.NonExistentQueue")),
            AwsErrorKind::NotFound
        );
        assert_eq!(
            kind_of_code(Some("ProvisionedThroughputExceededException")),
            AwsErrorKind::Throttled
        );
        assert_eq!(
            kind_of_code(Some("ConditionalCheckFailedException")),
            AwsErrorKind::ConditionFailed
        );
        // A code that merely contains a known one is not that one.
        assert_eq!(kind_of_code(Some("NotFoundish")), AwsErrorKind::Service);
        assert_eq!(kind_of_code(None), AwsErrorKind::Service);
    }

    #[test]
    fn not_found_holds_alone_or_for_a_whole_batch_never_for_an_entry() {
        let aws = |kind| AwsError {
            service: "sqs",
            operation: "SendMessageBatch",
            kind,
            source: None,
        };
        assert!(EngineError::Aws(aws(AwsErrorKind::NotFound)).not_found());
        assert!(!EngineError::Aws(aws(AwsErrorKind::Unreachable)).not_found());
        let batch = |kind| EngineError::Batch {
            service: "sqs",
            operation: "SendMessageBatch",
            source: std::sync::Arc::new(aws(kind)),
        };
        assert!(batch(AwsErrorKind::NotFound).not_found());
        assert!(!batch(AwsErrorKind::Timeout).not_found());
        let refused = EngineError::EntryRefused {
            service: "sqs",
            operation: "SendMessageBatch",
            code: "AWS.SimpleQueueService.NonExistentQueue".into(),
            message: String::new(),
        };
        assert!(!refused.not_found());
    }
}
