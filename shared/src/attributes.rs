//! Message attribute names and `source` values set on everything a node
//! publishes to SNS or sends to SQS (SUMU's contract).

/// String attribute: the verified `sub` of the sender.
pub const USER_ID: &str = "user_id";
/// Number attribute: milliseconds since the Unix epoch, set by the node.
pub const TIMESTAMP: &str = "timestamp";
/// String attribute: where the message came from.
pub const SOURCE: &str = "source";

/// `source` of a client `publish` frame (SNS messages topic).
pub const SOURCE_PUBLISH: &str = "apigw.route.publish";
/// `source` of a client `send` frame (SQS messages queue).
pub const SOURCE_SEND: &str = "apigw.route.send";
/// `source` of a presence event.
pub const SOURCE_PRESENCE: &str = "lambda.presence.watchdog";
