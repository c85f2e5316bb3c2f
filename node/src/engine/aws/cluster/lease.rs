//! The `lease#leader` row: one node at a time holds it (conditional writes).
//!
//! Invariant: a node takes the lease only when nobody holds it, it expired,
//! or it is already its own; it gives it up only while it is still its own.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

use super::{held, ClusterTable, LEASE_KEY};
use crate::clock::now_ms;
use crate::engine::aws::clients::call;
use crate::engine::EngineError;

impl ClusterTable {
    /// Takes or renews the lease for `me` for `length`; `Ok(false)` when
    /// another node holds it.
    pub(crate) async fn acquire_lease(
        &self,
        me: &str,
        length: Duration,
    ) -> Result<bool, EngineError> {
        let now = now_ms();
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(LEASE_KEY.into()))
            .item("owner", AttributeValue::S(me.to_string()))
            .item(
                "expires_at",
                AttributeValue::N((now + length.as_millis() as u64).to_string()),
            )
            .condition_expression("attribute_not_exists(pk) OR expires_at < :now OR #o = :me")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(":me", AttributeValue::S(me.to_string()))
            .send();
        held(call(&self.metrics, "dynamodb", "PutItem", request).await)
    }

    /// Deletes the lease if `me` still holds it; `Ok(false)` when it does
    /// not (nothing to give up).
    pub(crate) async fn release_lease(&self, me: &str) -> Result<bool, EngineError> {
        let request = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(LEASE_KEY.into()))
            .condition_expression("#o = :me")
            .expression_attribute_names("#o", "owner")
            .expression_attribute_values(":me", AttributeValue::S(me.to_string()))
            .send();
        held(call(&self.metrics, "dynamodb", "DeleteItem", request).await)
    }
}
