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
  history_table_name       = "${local.prefix}History"
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
  plain_target_group_name = "${local.lb_name_base}-plain"
  lifecycle_hook_name      = "${local.prefix}Drain"

  # Per-node inbox queues are created by the nodes at run time, never by
  # Terraform; the node role may only touch queues with this name prefix.
  inbox_queue_arn_pattern = "arn:${local.partition}:sqs:${local.region}:${local.account_id}:${local.prefix}Inbox-*"

  # How long the ASG keeps a terminating instance alive for its drain.
  lifecycle_heartbeat_seconds = var.drain_seconds + 60

  api_key_parameter_name = coalesce(var.api_key_ssm_parameter_name, "/${local.prefix}/api-key")
  api_key_parameter_arn  = "arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter${local.api_key_parameter_name}"

  # Where TLS ends (variable tls_termination). With "node", the NLB's
  # listener is TCP and forwards to the node's TLS port; the node's plain port
  # still serves the /readyz health checks (and the opt-in plain listener).
  tls_on_node        = var.tls_termination == "node"
  node_tls_source    = var.node_tls_secret_arn != null ? "secretsmanager" : "ssm"
  wss_target_port    = local.tls_on_node ? var.node_tls_port : var.node_port
  node_tls_cert_path = "/etc/sumu/tls/current/fullchain.pem"
  node_tls_key_path  = "/etc/sumu/tls/current/privkey.pem"
  # A secret may live in another region (its ARN says which); parameters are
  # read in the module's region. KMS use is allowed only via that service.
  node_tls_secret_region = var.node_tls_secret_arn == null ? local.region : split(":", var.node_tls_secret_arn)[3]
  node_tls_via_service   = local.node_tls_source == "secretsmanager" ? "secretsmanager.${local.node_tls_secret_region}.amazonaws.com" : "ssm.${local.region}.amazonaws.com"

  # The exact SSM parameter ARNs the node may read (a name starts with '/').
  node_tls_parameter_arns = var.node_tls_ssm_parameter_names == null ? [] : [
    for n in [var.node_tls_ssm_parameter_names.certificate, var.node_tls_ssm_parameter_names.private_key] :
    "arn:${local.partition}:ssm:${local.region}:${local.account_id}:parameter${n}"
  ]

  tags = merge({ "sumu:prefix" = local.prefix }, var.tags)
}
