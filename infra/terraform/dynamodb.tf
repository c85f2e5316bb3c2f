# Connections table: one row per live socket (DESIGN.md "DynamoDB").
resource "aws_dynamodb_table" "connections" {
  name                        = local.connections_table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "user_id"
  range_key                   = "connection_id"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "user_id"
    type = "S"
  }

  attribute {
    name = "connection_id"
    type = "S"
  }

  attribute {
    name = "node_id"
    type = "S"
  }

  # The reaper queries a dead node's rows by node id.
  global_secondary_index {
    name            = "by_node"
    hash_key        = "node_id"
    range_key       = "connection_id"
    projection_type = "ALL"
  }

  # Presence: the leader node reads this stream with the DynamoDB Streams API.
  stream_enabled   = true
  stream_view_type = "NEW_AND_OLD_IMAGES"

  # delete_at is a Number (epoch seconds). TTL is only a safety net: nodes
  # delete rows themselves so that the stream produces REMOVE records.
  ttl {
    attribute_name = "delete_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.sumu.arn
  }

  tags = local.tags
}

# Cluster table: node#<id>, lease#leader, checkpoint#<shard_id> rows.
resource "aws_dynamodb_table" "cluster" {
  name                        = local.cluster_table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "pk"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "pk"
    type = "S"
  }

  ttl {
    attribute_name = "delete_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.sumu.arn
  }

  tags = local.tags
}

# History of the recovery window (issue 18; node/docs/recovery.md): streams'
# heads h#<stream>, slots s#<stream>/seq, request claims r#<request>/part.
# Always created, so turning the window on is a node setting only. No stream
# (history is not presence). TTL clears what the nodes already ignore (they
# filter expiry at read time).
resource "aws_dynamodb_table" "history" {
  #checkov:skip=CKV_AWS_28:point-in-time recovery of a history whose items expire minutes after they are written restores nothing a client could still resume from
  name                        = local.history_table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "pk"
  range_key                   = "sk"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "pk"
    type = "S"
  }

  attribute {
    name = "sk"
    type = "N"
  }

  ttl {
    attribute_name = "delete_at"
    enabled        = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.sumu.arn
  }

  tags = local.tags
}
