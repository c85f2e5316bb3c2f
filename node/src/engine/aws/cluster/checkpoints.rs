//! The `checkpoint#<stream>#<shard>` rows: the last sequence number the
//! leader's presence consumer processed in each shard of the connections
//! table's stream.
//!
//! Invariant: a checkpoint is written only after its records were handled
//! (the caller's order), so a new leader re-reads at most one batch.

use aws_sdk_dynamodb::types::AttributeValue;

use super::{checkpoint_key, s, ClusterTable};
use crate::engine::aws::clients::call;
use crate::engine::EngineError;

impl ClusterTable {
    /// The last sequence number processed in `shard`, if any.
    pub(crate) async fn checkpoint(
        &self,
        stream_arn: &str,
        shard: &str,
    ) -> Result<Option<String>, EngineError> {
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", checkpoint_key(stream_arn, shard))
            .consistent_read(true)
            .send();
        let out = call(&self.metrics, "dynamodb", "GetItem", request).await?;
        Ok(out.item().and_then(|i| s(i, "sequence_number")))
    }

    pub(crate) async fn save_checkpoint(
        &self,
        stream_arn: &str,
        shard: &str,
        seq: &str,
    ) -> Result<(), EngineError> {
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", checkpoint_key(stream_arn, shard))
            .item("sequence_number", AttributeValue::S(seq.to_string()))
            .send();
        call(&self.metrics, "dynamodb", "PutItem", request).await?;
        Ok(())
    }
}
