data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

locals {
  prefix     = var.name_prefix
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name
  partition  = data.aws_partition.current.partition

  # Resource names the nodes derive from SUMU_NAME_PREFIX (DESIGN.md).
  connections_table_name   = "${local.prefix}Connections"
  cluster_table_name       = "${local.prefix}Cluster"
  messages_topic_name      = "${local.prefix}Messages"
  notifications_topic_name = "${local.prefix}Notifications"
  mesh_topic_name          = "${local.prefix}Mesh"
  messages_queue_name      = "${local.prefix}Messages"
  notifications_queue_name = "${local.prefix}Notifications"
  messages_dlq_name        = "${local.prefix}MessagesDLQ"
  notifications_dlq_name   = "${local.prefix}NotificationsDLQ"
  asg_name                 = "${local.prefix}Nodes"

  # Load balancer and target group names: [a-z0-9-], at most 32 characters.
  lb_name_base      = substr(trim(replace(lower(local.prefix), "_", "-"), "-"), 0, 26)
  nlb_name          = "${local.lb_name_base}-nlb"
  target_group_name = "${local.lb_name_base}-nodes"
  lifecycle_hook_name      = "${local.prefix}Drain"

  # Per-node inbox queues are created by the nodes at run time, never by
  # Terraform; the node role may only touch queues with this name prefix.
  inbox_queue_arn_pattern = "arn:${local.partition}:sqs:${local.region}:${local.account_id}:${local.prefix}Inbox-*"

  # How long the ASG keeps a terminating instance alive for its drain.
  lifecycle_heartbeat_seconds = var.drain_seconds + 60

  api_key_parameter_name = coalesce(var.api_key_ssm_parameter_name, "/${local.prefix}/api-key")
  api_key_parameter_arn  = "arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter${local.api_key_parameter_name}"

  tags = merge({ "sumu:prefix" = local.prefix }, var.tags)
}
