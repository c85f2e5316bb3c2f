# ---------------------------------------------------------------------------
# Node role: exactly what sumu-node (aws engine) and its boot script need.
# ---------------------------------------------------------------------------

data "aws_iam_policy_document" "node_assume" {
  statement {
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  name_prefix        = "${local.prefix}Node-"
  description        = "sumu-node instances of ${local.prefix}"
  assume_role_policy = data.aws_iam_policy_document.node_assume.json
  tags               = local.tags
}

resource "aws_iam_instance_profile" "node" {
  name_prefix = "${local.prefix}Node-"
  role        = aws_iam_role.node.name
  tags        = local.tags
}

data "aws_iam_policy_document" "node" {
  # Connections rows, node/lease/checkpoint rows, and the by_node GSI.
  statement {
    sid    = "Tables"
    effect = "Allow"
    actions = [
      "dynamodb:PutItem",
      "dynamodb:DeleteItem",
      "dynamodb:GetItem",
      "dynamodb:Query",
      "dynamodb:BatchWriteItem",
      "dynamodb:UpdateItem",
      "dynamodb:ConditionCheckItem",
      "dynamodb:DescribeTable",
    ]
    resources = [
      aws_dynamodb_table.connections.arn,
      "${aws_dynamodb_table.connections.arn}/index/by_node",
      aws_dynamodb_table.cluster.arn,
    ]
  }

  # The recovery window's history: exactly the calls engine/aws/history.rs
  # makes (and DescribeTable at start when the window is on).
  statement {
    sid    = "History"
    effect = "Allow"
    actions = [
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
      "dynamodb:Query",
      "dynamodb:BatchGetItem",
      "dynamodb:DescribeTable",
    ]
    resources = [aws_dynamodb_table.history.arn]
  }

  # The leader's reaper scans the (small) cluster table for node rows with a
  # stale heartbeat.
  statement {
    sid       = "ClusterScan"
    effect    = "Allow"
    actions   = ["dynamodb:Scan"]
    resources = [aws_dynamodb_table.cluster.arn]
  }

  # Presence: the leader reads the connections table's stream itself.
  statement {
    sid    = "ConnectionsStream"
    effect = "Allow"
    actions = [
      "dynamodb:DescribeStream",
      "dynamodb:GetShardIterator",
      "dynamodb:GetRecords",
    ]
    resources = ["${aws_dynamodb_table.connections.arn}/stream/*"]
  }

  statement {
    sid       = "ListStreams"
    effect    = "Allow"
    actions   = ["dynamodb:ListStreams"]
    resources = ["*"] # ListStreams supports no resource-level permission
  }

  statement {
    sid       = "PublishMessagesAndMesh"
    effect    = "Allow"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.messages.arn, aws_sns_topic.mesh.arn]
  }

  # A node may subscribe only its own kind of queue (an inbox) to the mesh.
  statement {
    sid       = "SubscribeInboxToMesh"
    effect    = "Allow"
    actions   = ["sns:Subscribe"]
    resources = [aws_sns_topic.mesh.arn]

    condition {
      test     = "StringEquals"
      variable = "sns:Protocol"
      values   = ["sqs"]
    }

    condition {
      test     = "StringLike"
      variable = "sns:Endpoint"
      values   = [local.inbox_queue_arn_pattern]
    }
  }

  statement {
    sid       = "UnsubscribeFromMesh"
    effect    = "Allow"
    actions   = ["sns:Unsubscribe"]
    resources = [aws_sns_topic.mesh.arn, "${aws_sns_topic.mesh.arn}:*"]
  }

  statement {
    sid    = "ConsumeNotifications"
    effect = "Allow"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
    ]
    resources = [aws_sqs_queue.notifications.arn]
  }

  statement {
    sid       = "SendMessages"
    effect    = "Allow"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.messages.arn]
  }

  # Per-node inbox queues: created, subscribed, read and deleted by the nodes
  # (a node deletes its own on shutdown; the leader deletes dead nodes').
  # Only names starting with <prefix>Inbox- are allowed.
  statement {
    sid    = "InboxQueues"
    effect = "Allow"
    actions = [
      "sqs:CreateQueue",
      "sqs:DeleteQueue",
      "sqs:GetQueueUrl",
      "sqs:GetQueueAttributes",
      "sqs:SetQueueAttributes",
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:SendMessage",
    ]
    resources = [local.inbox_queue_arn_pattern]
  }

  statement {
    sid       = "UseKey"
    effect    = "Allow"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.sumu.arn]
  }

  statement {
    sid       = "CustomMetrics"
    effect    = "Allow"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"] # PutMetricData has no resource type; restricted by namespace

    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = [var.metrics_namespace]
    }
  }

  # Boot script: read the API key, finish the termination lifecycle hook
  # after the drain.
  statement {
    sid       = "ReadApiKey"
    effect    = "Allow"
    actions   = ["ssm:GetParameter"]
    resources = [local.api_key_parameter_arn]
  }

  statement {
    sid       = "CompleteDrainHook"
    effect    = "Allow"
    actions   = ["autoscaling:CompleteLifecycleAction"]
    resources = ["arn:${local.partition}:autoscaling:${local.region}:${local.account_id}:autoScalingGroup:*:autoScalingGroupName/${local.asg_name}"]
  }

  dynamic "statement" {
    for_each = var.api_key_kms_key_arn == null ? [] : [var.api_key_kms_key_arn]
    content {
      sid       = "DecryptApiKey"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }

  # TLS on the node: read exactly the certificate's secret or its two
  # parameters (sumu-tls-fetch, at boot and on its timer), and decrypt with
  # their customer managed key only through that service.
  dynamic "statement" {
    for_each = local.tls_on_node && var.node_tls_secret_arn != null ? [var.node_tls_secret_arn] : []
    content {
      sid       = "ReadNodeTlsSecret"
      effect    = "Allow"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [statement.value]
    }
  }

  dynamic "statement" {
    for_each = local.tls_on_node && var.node_tls_ssm_parameter_names != null ? [local.node_tls_parameter_arns] : []
    content {
      sid       = "ReadNodeTlsParameters"
      effect    = "Allow"
      actions   = ["ssm:GetParameters"]
      resources = statement.value
    }
  }

  dynamic "statement" {
    for_each = local.tls_on_node && var.node_tls_kms_key_arn != null ? [var.node_tls_kms_key_arn] : []
    content {
      sid       = "DecryptNodeTls"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = [local.node_tls_via_service]
      }
    }
  }

  dynamic "statement" {
    for_each = var.node_binary_s3_uri == null ? [] : [var.node_binary_s3_uri]
    content {
      sid       = "DownloadNodeBinary"
      effect    = "Allow"
      actions   = ["s3:GetObject"]
      resources = ["arn:${local.partition}:s3:::${trimprefix(statement.value, "s3://")}"]
    }
  }
}

resource "aws_iam_role_policy" "node" {
  name   = "sumu-node"
  role   = aws_iam_role.node.id
  policy = data.aws_iam_policy_document.node.json
}

resource "aws_iam_role_policy_attachment" "node_ssm" {
  count      = var.enable_ssm_session_manager ? 1 : 0
  role       = aws_iam_role.node.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

# ---------------------------------------------------------------------------
# Backend policy: attach to the role of a backend service.
# ---------------------------------------------------------------------------

data "aws_iam_policy_document" "backend" {
  statement {
    sid    = "SendNotificationRequests"
    effect = "Allow"
    actions = [
      "sqs:SendMessage",
      "sqs:GetQueueUrl",
    ]
    resources = [aws_sqs_queue.notifications.arn]
  }

  statement {
    sid       = "PublishNotificationRequests"
    effect    = "Allow"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.notifications.arn]
  }

  statement {
    sid    = "ConsumeClientMessages"
    effect = "Allow"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
    ]
    resources = [aws_sqs_queue.messages.arn]
  }

  statement {
    sid       = "SubscribeToClientMessages"
    effect    = "Allow"
    actions   = ["sns:Subscribe"]
    resources = [aws_sns_topic.messages.arn]
  }

  statement {
    sid       = "UseKey"
    effect    = "Allow"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.sumu.arn]
  }
}

resource "aws_iam_policy" "backend" {
  name_prefix = "${local.prefix}Backend-"
  description = "Lets a backend send notification requests to ${local.prefix} and read its client messages"
  policy      = data.aws_iam_policy_document.backend.json
  tags        = local.tags
}
