# Connections table: one row per live socket (DESIGN.md "DynamoDB").
resource "aws_dynamodb_table" "connections" {
  name                        = local.connections_table_name
  billing_mode                = local.connections_provisioned ? "PROVISIONED" : "PAY_PER_REQUEST"
  read_capacity               = local.connections_provisioned ? var.connections_min_capacity : null
  write_capacity              = local.connections_provisioned ? var.connections_min_capacity : null
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
    read_capacity   = local.connections_provisioned ? var.connections_min_capacity : null
    write_capacity  = local.connections_provisioned ? var.connections_min_capacity : null
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

  # Provisioned: auto scaling owns the capacities (an apply does not reset them
  # to the minimum); the index's definition never changes after creation.
  lifecycle {
    ignore_changes = [read_capacity, write_capacity, global_secondary_index]
  }

  tags = local.tags
}

# With connections_capacity = "provisioned": target tracking on the read and
# write capacity of the connections table and of its by_node index.
locals {
  connections_provisioned = var.connections_capacity == "provisioned"
  connections_scaling = local.connections_provisioned ? {
    table-read = {
      resource_id = "table/${local.connections_table_name}"
      dimension   = "dynamodb:table:ReadCapacityUnits"
      metric      = "DynamoDBReadCapacityUtilization"
    }
    table-write = {
      resource_id = "table/${local.connections_table_name}"
      dimension   = "dynamodb:table:WriteCapacityUnits"
      metric      = "DynamoDBWriteCapacityUtilization"
    }
    index-read = {
      resource_id = "table/${local.connections_table_name}/index/by_node"
      dimension   = "dynamodb:index:ReadCapacityUnits"
      metric      = "DynamoDBReadCapacityUtilization"
    }
    index-write = {
      resource_id = "table/${local.connections_table_name}/index/by_node"
      dimension   = "dynamodb:index:WriteCapacityUnits"
      metric      = "DynamoDBWriteCapacityUtilization"
    }
  } : {}
}

resource "aws_appautoscaling_target" "connections" {
  for_each           = local.connections_scaling
  service_namespace  = "dynamodb"
  resource_id        = each.value.resource_id
  scalable_dimension = each.value.dimension
  min_capacity       = var.connections_min_capacity
  max_capacity       = max(var.connections_max_capacity, var.connections_min_capacity)

  depends_on = [aws_dynamodb_table.connections]
}

resource "aws_appautoscaling_policy" "connections" {
  for_each           = local.connections_scaling
  name               = "${var.name_prefix}Connections-${each.key}"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.connections[each.key].service_namespace
  resource_id        = aws_appautoscaling_target.connections[each.key].resource_id
  scalable_dimension = aws_appautoscaling_target.connections[each.key].scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value = var.connections_target_utilization
    predefined_metric_specification {
      predefined_metric_type = each.value.metric
    }
  }
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
