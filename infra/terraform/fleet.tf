# Fleet: EC2 launch template + Auto Scaling group (see README "Why EC2 and not
# ECS"). Each instance runs one sumu-node under systemd.

data "aws_ssm_parameter" "al2023_ami" {
  count = var.ami_id == null ? 1 : 0
  name  = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-${var.architecture}"
}

locals {
  ami_id = var.ami_id != null ? var.ami_id : nonsensitive(data.aws_ssm_parameter.al2023_ami[0].value)

  # TLS on the node: the listener and the files the boot script keeps fresh
  # (flags --tls-listen, --tls-cert, --tls-key).
  node_tls_environment = local.tls_on_node ? {
    SUMU_TLS_LISTEN = "0.0.0.0:${var.node_tls_port}"
    SUMU_TLS_CERT   = local.node_tls_cert_path
    SUMU_TLS_KEY    = local.node_tls_key_path
  } : {}

  # Environment of sumu-node (SUMU_API_KEY is added at boot from SSM).
  node_environment = merge(var.extra_environment, local.node_tls_environment, {
    SUMU_LISTEN                   = "0.0.0.0:${var.node_port}"
    SUMU_ENGINE                   = "aws"
    SUMU_AWS_REGION               = local.region
    SUMU_NAME_PREFIX              = local.prefix
    SUMU_CONNECTIONS_TABLE        = aws_dynamodb_table.connections.name
    SUMU_CLUSTER_TABLE            = aws_dynamodb_table.cluster.name
    SUMU_HISTORY_TABLE            = aws_dynamodb_table.history.name
    SUMU_RECOVERY_WINDOW_SECS     = tostring(var.recovery_window_seconds)
    SUMU_MESSAGES_TOPIC_ARN       = aws_sns_topic.messages.arn
    SUMU_MESSAGES_QUEUE_URL       = aws_sqs_queue.messages.url
    SUMU_NOTIFICATIONS_QUEUE_URL  = aws_sqs_queue.notifications.url
    SUMU_MESH_TOPIC_ARN           = aws_sns_topic.mesh.arn
    SUMU_PRESENCE_SOURCE          = var.presence_source
    SUMU_JWKS_URI                 = var.issuer_jwks_uri
    SUMU_JWT_AUDIENCES            = join(",", var.authorized_audiences)
    SUMU_JWT_ISSUER               = var.jwt_issuer
    SUMU_VERIFY_TOKEN_EXPIRATION  = var.verify_token_expiration ? "true" : "false"
    SUMU_DRAIN_SECS               = tostring(var.drain_seconds)
    SUMU_LOG_FORMAT               = "json"
    SUMU_METRICS_NAMESPACE        = var.metrics_namespace
  })

  user_data = templatefile("${path.module}/templates/user-data.sh.tftpl", {
    environment            = local.node_environment
    api_key_parameter_name = local.api_key_parameter_name
    region                 = local.region
    node_binary_s3_uri     = var.node_binary_s3_uri == null ? "" : var.node_binary_s3_uri
    drain_seconds          = var.drain_seconds
    asg_name               = local.asg_name
    lifecycle_hook_name    = local.lifecycle_hook_name
    tls_on_node            = local.tls_on_node
    node_tls_source        = local.node_tls_source
    node_tls_secret_arn    = var.node_tls_secret_arn == null ? "" : var.node_tls_secret_arn
    node_tls_secret_region = local.node_tls_secret_region
    node_tls_cert_param    = var.node_tls_ssm_parameter_names == null ? "" : var.node_tls_ssm_parameter_names.certificate
    node_tls_key_param     = var.node_tls_ssm_parameter_names == null ? "" : var.node_tls_ssm_parameter_names.private_key
    node_tls_refresh_min   = var.node_tls_refresh_minutes
  })
}

# ---------------------------------------------------------------------------
# Security groups: clients -> NLB (listener ports), NLB -> nodes (node port).
# ---------------------------------------------------------------------------

resource "aws_security_group" "nlb" {
  name_prefix = "${local.prefix}Nlb-"
  description = "sumu NLB: WebSocket clients in, nodes out"
  vpc_id      = var.vpc_id
  tags        = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "nlb_tls" {
  for_each          = toset(var.allowed_client_cidrs)
  security_group_id = aws_security_group.nlb.id
  description       = "wss clients"
  ip_protocol       = "tcp"
  from_port         = var.tls_port
  to_port           = var.tls_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "nlb_plain" {
  for_each          = var.enable_plain_tcp_listener ? toset(var.allowed_client_cidrs) : toset([])
  security_group_id = aws_security_group.nlb.id
  description       = "plain ws clients (opt-in)"
  ip_protocol       = "tcp"
  from_port         = var.plain_tcp_port
  to_port           = var.plain_tcp_port
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_egress_rule" "nlb_to_nodes_tls" {
  count                        = local.tls_on_node ? 1 : 0
  security_group_id            = aws_security_group.nlb.id
  description                  = "wss traffic passed through to the nodes' TLS port"
  ip_protocol                  = "tcp"
  from_port                    = var.node_tls_port
  to_port                      = var.node_tls_port
  referenced_security_group_id = aws_security_group.node.id
}

resource "aws_vpc_security_group_egress_rule" "nlb_to_nodes" {
  security_group_id            = aws_security_group.nlb.id
  description                  = "traffic and /readyz health checks to the nodes"
  ip_protocol                  = "tcp"
  from_port                    = var.node_port
  to_port                      = var.node_port
  referenced_security_group_id = aws_security_group.node.id
}

resource "aws_security_group" "node" {
  name_prefix = "${local.prefix}Node-"
  description = "sumu nodes: only the NLB reaches the node port"
  vpc_id      = var.vpc_id
  tags        = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "node_from_nlb" {
  security_group_id            = aws_security_group.node.id
  description                  = "WebSocket traffic and health checks from the NLB"
  ip_protocol                  = "tcp"
  from_port                    = var.node_port
  to_port                      = var.node_port
  referenced_security_group_id = aws_security_group.nlb.id
}

resource "aws_vpc_security_group_ingress_rule" "node_tls_from_nlb" {
  count                        = local.tls_on_node ? 1 : 0
  security_group_id            = aws_security_group.node.id
  description                  = "wss traffic (TLS ends on the node) from the NLB"
  ip_protocol                  = "tcp"
  from_port                    = var.node_tls_port
  to_port                      = var.node_tls_port
  referenced_security_group_id = aws_security_group.nlb.id
}

resource "aws_vpc_security_group_egress_rule" "node_https" {
  security_group_id = aws_security_group.node.id
  description       = "HTTPS to AWS APIs and the JWKS URI"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

# ---------------------------------------------------------------------------
# Launch template and Auto Scaling group
# ---------------------------------------------------------------------------

resource "aws_launch_template" "node" {
  name_prefix            = "${local.prefix}Node-"
  description            = "sumu-node"
  image_id               = local.ami_id
  instance_type          = var.instance_type
  user_data              = base64encode(local.user_data)
  update_default_version = true
  ebs_optimized          = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.node.arn
  }

  network_interfaces {
    associate_public_ip_address = false
    security_groups             = [aws_security_group.node.id]
    delete_on_termination       = true
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = var.root_volume_size_gb
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  monitoring {
    enabled = true
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "${local.prefix}-node" })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = local.tags
  }

  tags = local.tags

  lifecycle {
    precondition {
      condition     = !local.tls_on_node || ((var.node_tls_secret_arn == null) != (var.node_tls_ssm_parameter_names == null))
      error_message = "tls_termination = \"node\" needs exactly one of node_tls_secret_arn and node_tls_ssm_parameter_names."
    }
    precondition {
      condition     = !local.tls_on_node || var.node_tls_port != var.node_port
      error_message = "node_tls_port must differ from node_port (the plain port keeps serving /readyz)."
    }
  }
}

resource "aws_autoscaling_group" "nodes" {
  name                      = local.asg_name
  vpc_zone_identifier       = var.private_subnet_ids
  min_size                  = var.min_size
  max_size                  = var.max_size
  desired_capacity          = var.desired_capacity == null ? var.min_size : var.desired_capacity
  target_group_arns         = concat([aws_lb_target_group.nodes.arn], aws_lb_target_group.nodes_plain[*].arn)
  health_check_type         = "ELB"
  health_check_grace_period = 120
  default_instance_warmup   = 120
  termination_policies      = ["OldestLaunchTemplate", "OldestInstance"]
  enabled_metrics           = ["GroupInServiceInstances", "GroupDesiredCapacity", "GroupTerminatingInstances"]

  launch_template {
    id      = aws_launch_template.node.id
    version = aws_launch_template.node.latest_version
  }

  # Scale-in and instance refresh: the instance waits in Terminating:Wait
  # while sumu-node drains (SIGTERM -> /readyz false -> clients closed with
  # 1012 "service restart" in waves -> rows and inbox removed); the boot
  # script then completes the hook. If the script never answers, the hook
  # times out after drain_seconds + 60 s and the instance is terminated
  # anyway.
  initial_lifecycle_hook {
    name                 = local.lifecycle_hook_name
    lifecycle_transition = "autoscaling:EC2_INSTANCE_TERMINATING"
    default_result       = "CONTINUE"
    heartbeat_timeout    = local.lifecycle_heartbeat_seconds
  }

  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 90
      instance_warmup        = 120
    }
  }

  dynamic "tag" {
    for_each = merge(local.tags, { Name = "${local.prefix}-node" })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  lifecycle {
    precondition {
      condition     = var.min_size <= var.max_size
      error_message = "min_size must not exceed max_size."
    }
    precondition {
      condition     = var.desired_capacity == null || try(var.desired_capacity >= var.min_size && var.desired_capacity <= var.max_size, false)
      error_message = "desired_capacity must lie between min_size and max_size."
    }
    ignore_changes = [desired_capacity]
  }
}

resource "aws_autoscaling_policy" "cpu" {
  count                     = var.target_cpu_utilization == null ? 0 : 1
  name                      = "${local.prefix}Cpu"
  autoscaling_group_name    = aws_autoscaling_group.nodes.name
  policy_type               = "TargetTrackingScaling"
  estimated_instance_warmup = 120

  target_tracking_configuration {
    predefined_metric_specification {
      predefined_metric_type = "ASGAverageCPUUtilization"
    }
    target_value     = var.target_cpu_utilization
    disable_scale_in = false
  }
}

# Sockets per node: every node publishes its open sockets once a minute as the
# custom metric Sockets (namespace var.metrics_namespace, dimension Fleet =
# the name prefix, one statistic set per node per minute); its Average is the
# mean per node. Beside the CPU policy: the ASG scales out when either asks,
# and in only when both allow it.
resource "aws_autoscaling_policy" "sockets" {
  count                     = var.target_sockets_per_node == null ? 0 : 1
  name                      = "${local.prefix}Sockets"
  autoscaling_group_name    = aws_autoscaling_group.nodes.name
  policy_type               = "TargetTrackingScaling"
  estimated_instance_warmup = 120

  target_tracking_configuration {
    customized_metric_specification {
      metric_name = "Sockets"
      namespace   = var.metrics_namespace
      statistic   = "Average"
      unit        = "Count"

      metric_dimension {
        name  = "Fleet"
        value = local.prefix
      }
    }
    target_value     = var.target_sockets_per_node
    disable_scale_in = false
  }
}
