# ---------------------------------------------------------------------------
# Dead-letter queues: any message there is a request or client message that
# could not be processed max_receive_count times.
# ---------------------------------------------------------------------------

locals {
  dlqs = {
    messages      = aws_sqs_queue.messages_dlq.name
    notifications = aws_sqs_queue.notifications_dlq.name
  }
}

resource "aws_cloudwatch_metric_alarm" "dlq_depth" {
  for_each            = local.dlqs
  alarm_name          = "${each.value}-depth"
  alarm_description   = "Messages in ${each.value}: ${each.key} that failed ${var.max_receive_count} receives. Inspect them, fix the producer or sumu, then redrive."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = each.value }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.dlq_alarm_threshold
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = local.tags
}

# ---------------------------------------------------------------------------
# Presence stream lag.
#
# Nodes read the connections table's stream with the DynamoDB Streams API
# themselves (no Lambda event source mapping), so AWS publishes no
# IteratorAge metric for this consumer. The leader node publishes one:
#   namespace   var.metrics_namespace (default "Sumu")
#   metric      PresenceStreamIteratorAge, unit Milliseconds
#   dimension   TableName = <prefix>Connections
#   value       now - ApproximateCreationDateTime of the newest record of the
#               last GetRecords batch (0 when a shard is caught up), max over
#               shards, at least once a minute.
# Missing data is breaching by default: no datapoint means no leader is
# consuming the stream, and presence events are then not emitted at all.
# ---------------------------------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "stream_lag" {
  alarm_name          = "${local.connections_table_name}-stream-lag"
  alarm_description   = "Presence lags: the leader's PresenceStreamIteratorAge exceeded ${var.stream_lag_alarm_threshold_seconds} s, or no leader reports it. Check the leader's logs and the lease#leader row of ${local.cluster_table_name}."
  namespace           = var.metrics_namespace
  metric_name         = "PresenceStreamIteratorAge"
  dimensions          = { TableName = local.connections_table_name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.stream_lag_alarm_threshold_seconds * 1000
  treat_missing_data  = var.stream_lag_treat_missing_data
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = local.tags
}

# ---------------------------------------------------------------------------
# No healthy node behind the load balancer.
# ---------------------------------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "healthy_nodes" {
  alarm_name          = "${local.prefix}-healthy-nodes"
  alarm_description   = "No node of ${local.asg_name} passes the /readyz health check."
  namespace           = "AWS/NetworkELB"
  metric_name         = "HealthyHostCount"
  dimensions          = { LoadBalancer = aws_lb.nlb.arn_suffix, TargetGroup = aws_lb_target_group.nodes.arn_suffix }
  statistic           = "Minimum"
  period              = 60
  evaluation_periods  = 3
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  treat_missing_data  = "breaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = local.tags
}
