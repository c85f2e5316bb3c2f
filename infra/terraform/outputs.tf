locals {
  wss_port_suffix   = var.tls_port == 443 ? "" : ":${var.tls_port}"
  plain_port_suffix = var.plain_tcp_port == 80 ? "" : ":${var.plain_tcp_port}"
}

output "wss_url" {
  description = "URL clients connect to: wss://<domain_name>/push?authorization=<JWT>."
  value       = "wss://${var.domain_name}${local.wss_port_suffix}/push"
}

output "ws_url" {
  description = "Plain ws:// URL when enable_plain_tcp_listener is true, else null."
  value       = var.enable_plain_tcp_listener ? "ws://${var.domain_name}${local.plain_port_suffix}/push" : null
}

output "tls_termination" {
  description = "Where TLS ends: nlb (ACM certificate on the NLB's TLS listener) or node (TCP pass-through; sumu-node holds the certificate)."
  value       = var.tls_termination
}

output "node_tls_listen" {
  description = "With tls_termination = node: the address of sumu-node's TLS listener on each instance (SUMU_TLS_LISTEN), else null."
  value       = local.tls_on_node ? "0.0.0.0:${var.node_tls_port}" : null
}

output "node_tls_certificate_source" {
  description = "With tls_termination = node: where the nodes fetch their certificate and key (the Secrets Manager secret ARN or the two SSM parameter names), else null."
  value       = !local.tls_on_node ? null : (var.node_tls_secret_arn != null ? var.node_tls_secret_arn : "${var.node_tls_ssm_parameter_names.certificate},${var.node_tls_ssm_parameter_names.private_key}")
}

output "nlb_dns_name" {
  description = "DNS name of the Network Load Balancer."
  value       = aws_lb.nlb.dns_name
}

output "messages_topic_arn" {
  description = "SNS topic of client publish frames (and presence events when presence_source = topic). Backends subscribe to it."
  value       = aws_sns_topic.messages.arn
}

output "messages_queue_url" {
  description = "SQS queue of client send frames (and presence events when presence_source = queue). Backends consume it."
  value       = aws_sqs_queue.messages.url
}

output "messages_queue_arn" {
  description = "ARN of the messages queue."
  value       = aws_sqs_queue.messages.arn
}

output "notifications_topic_arn" {
  description = "SNS topic backends publish notification requests to (subscribed to the notifications queue)."
  value       = aws_sns_topic.notifications.arn
}

output "notifications_queue_url" {
  description = "SQS queue backends send notification requests to."
  value       = aws_sqs_queue.notifications.url
}

output "mesh_topic_arn" {
  description = "Internal node-to-node topic (not for backends)."
  value       = aws_sns_topic.mesh.arn
}

output "messages_dlq_url" {
  description = "Dead-letter queue of the messages queue."
  value       = aws_sqs_queue.messages_dlq.url
}

output "notifications_dlq_url" {
  description = "Dead-letter queue of the notifications queue (unparseable or failing notification requests)."
  value       = aws_sqs_queue.notifications_dlq.url
}

output "connections_table_name" {
  description = "DynamoDB connections table."
  value       = aws_dynamodb_table.connections.name
}

output "cluster_table_name" {
  description = "DynamoDB cluster table."
  value       = aws_dynamodb_table.cluster.name
}

output "kms_key_arn" {
  description = "KMS key encrypting the tables, topics and queues; backends need kms:GenerateDataKey and kms:Decrypt on it (included in backend_policy_arn)."
  value       = aws_kms_key.sumu.arn
}

output "backend_policy_arn" {
  description = "IAM policy to attach to backend roles: send/publish notification requests, consume the messages queue, subscribe to the messages topic."
  value       = aws_iam_policy.backend.arn
}

output "node_role_arn" {
  description = "IAM role of the nodes."
  value       = aws_iam_role.node.arn
}

output "api_key_ssm_parameter_name" {
  description = "SSM SecureString parameter holding the API key for POST /api/notify."
  value       = local.api_key_parameter_name
}

output "autoscaling_group_name" {
  description = "Auto Scaling group of the nodes."
  value       = aws_autoscaling_group.nodes.name
}
