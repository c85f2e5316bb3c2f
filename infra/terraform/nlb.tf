# Network Load Balancer. Where TLS (wss://) ends is tls_termination:
#   "nlb"  (default) a TLS listener with the ACM certificate; the nodes speak
#          plain HTTP/WebSocket on node_port.
#   "node" a TCP listener passes the bytes through to sumu-node's TLS listener
#          on node_tls_port; the node holds the certificate (templates/
#          user-data.sh.tftpl fetches and rotates it). An NLB capacity unit
#          covers 100,000 active TCP connections but only 3,000 TLS ones:
#          README "Where TLS ends".
# An NLB keeps long-lived TCP connections without an idle timeout of its own
# that the node's pings do not cover (350 s TCP idle timeout; sumu pings
# clients well inside it).

resource "aws_lb" "nlb" {
  #checkov:skip=CKV2_AWS_20:this is a Network Load Balancer: it has no HTTP listener to redirect; clients use the TLS listener (wss), the plain TCP listener is opt-in
  name                             = local.nlb_name
  load_balancer_type               = "network"
  internal                         = var.internal_nlb
  subnets                          = var.public_subnet_ids
  security_groups                  = [aws_security_group.nlb.id]
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.deletion_protection

  dynamic "access_logs" {
    for_each = var.nlb_access_logs_bucket == null ? [] : [var.nlb_access_logs_bucket]
    content {
      bucket  = access_logs.value
      prefix  = lower(local.prefix)
      enabled = true
    }
  }

  tags = local.tags
}

# The wss target group: the node's plain port (TLS on the NLB) or its TLS
# port (TLS on the node). Health checks always go to the plain port's /readyz,
# which needs no certificate.
resource "aws_lb_target_group" "nodes" {
  name               = local.target_group_name
  port               = local.wss_target_port
  protocol           = "TCP"
  target_type        = "instance"
  vpc_id             = var.vpc_id
  preserve_client_ip = true

  # Matches the node's drain (SUMU_DRAIN_SECS). A deregistered node gets no
  # new connections; its open sockets are never cut by the NLB (connection
  # termination off): the node closes them itself with 1012 in waves, so
  # clients reconnect to other nodes gracefully whichever of deregistration
  # and the termination lifecycle hook comes first.
  deregistration_delay   = var.drain_seconds
  connection_termination = false

  health_check {
    enabled             = true
    protocol            = "HTTP"
    path                = "/readyz"
    port                = tostring(var.node_port)
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  tags = local.tags
}

resource "aws_lb_listener" "tls" {
  count             = local.tls_on_node ? 0 : 1
  load_balancer_arn = aws_lb.nlb.arn
  port              = var.tls_port
  protocol          = "TLS"
  certificate_arn   = var.certificate_arn
  ssl_policy        = var.ssl_policy
  alpn_policy       = "HTTP1Only" # WebSocket upgrades are HTTP/1.1

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.nodes.arn
  }

  tags = local.tags

  lifecycle {
    precondition {
      condition     = var.certificate_arn != null
      error_message = "tls_termination = \"nlb\" needs certificate_arn (the ACM certificate of domain_name)."
    }
  }
}

# TLS on the node: the NLB forwards the TLS bytes untouched. Clients still use
# wss://<domain_name>:<tls_port>; the node presents the certificate.
resource "aws_lb_listener" "tls_passthrough" {
  count             = local.tls_on_node ? 1 : 0
  load_balancer_arn = aws_lb.nlb.arn
  port              = var.tls_port
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.nodes.arn
  }

  tags = local.tags
}

resource "aws_lb_listener" "plain" {
  count             = var.enable_plain_tcp_listener ? 1 : 0
  load_balancer_arn = aws_lb.nlb.arn
  port              = var.plain_tcp_port
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = local.tls_on_node ? aws_lb_target_group.nodes_plain[0].arn : aws_lb_target_group.nodes.arn
  }

  tags = local.tags
}

# With TLS on the node, the opt-in plain listener needs a target group on the
# node's plain port (the wss one points at its TLS port). Same drain settings.
resource "aws_lb_target_group" "nodes_plain" {
  count              = local.tls_on_node && var.enable_plain_tcp_listener ? 1 : 0
  name               = local.plain_target_group_name
  port               = var.node_port
  protocol           = "TCP"
  target_type        = "instance"
  vpc_id             = var.vpc_id
  preserve_client_ip = true

  deregistration_delay   = var.drain_seconds
  connection_termination = false

  health_check {
    enabled             = true
    protocol            = "HTTP"
    path                = "/readyz"
    port                = tostring(var.node_port)
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  tags = local.tags
}
