# ---------------------------------------------------------------------------
# SNS topics
# ---------------------------------------------------------------------------

# publish frames and presence events (presence_source = topic) go here;
# backends subscribe their own endpoints.
resource "aws_sns_topic" "messages" {
  name              = local.messages_topic_name
  kms_master_key_id = aws_kms_key.sumu.arn
  tags              = local.tags
}

# Backends may publish notification requests here instead of sending them to
# the notifications queue; the topic is subscribed to that queue.
resource "aws_sns_topic" "notifications" {
  name              = local.notifications_topic_name
  kms_master_key_id = aws_kms_key.sumu.arn
  tags              = local.tags
}

# Node-to-node broadcast; every node subscribes its own inbox queue at start.
resource "aws_sns_topic" "mesh" {
  name              = local.mesh_topic_name
  kms_master_key_id = aws_kms_key.sumu.arn
  tags              = local.tags
}

# ---------------------------------------------------------------------------
# SQS queues with dead-letter queues
# ---------------------------------------------------------------------------

resource "aws_sqs_queue" "messages_dlq" {
  name                              = local.messages_dlq_name
  message_retention_seconds         = 1209600
  kms_master_key_id                 = aws_kms_key.sumu.arn
  kms_data_key_reuse_period_seconds = 300
  tags                              = local.tags
}

resource "aws_sqs_queue" "notifications_dlq" {
  name                              = local.notifications_dlq_name
  message_retention_seconds         = 1209600
  kms_master_key_id                 = aws_kms_key.sumu.arn
  kms_data_key_reuse_period_seconds = 300
  tags                              = local.tags
}

# send frames (and presence events with presence_source = queue); consumed by
# the backend.
resource "aws_sqs_queue" "messages" {
  name                              = local.messages_queue_name
  visibility_timeout_seconds        = var.queue_visibility_timeout_seconds
  message_retention_seconds         = var.queue_message_retention_seconds
  receive_wait_time_seconds         = 20
  kms_master_key_id                 = aws_kms_key.sumu.arn
  kms_data_key_reuse_period_seconds = 300

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.messages_dlq.arn
    maxReceiveCount     = var.max_receive_count
  })

  tags = local.tags
}

# Notification requests from backends; consumed by the nodes (competing
# consumers). A request that cannot be parsed ends in the DLQ via redrive.
resource "aws_sqs_queue" "notifications" {
  name                              = local.notifications_queue_name
  visibility_timeout_seconds        = var.queue_visibility_timeout_seconds
  message_retention_seconds         = var.queue_message_retention_seconds
  receive_wait_time_seconds         = 20
  kms_master_key_id                 = aws_kms_key.sumu.arn
  kms_data_key_reuse_period_seconds = 300

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.notifications_dlq.arn
    maxReceiveCount     = var.max_receive_count
  })

  tags = local.tags
}

# Only the queue that feeds a DLQ may redrive into it.
resource "aws_sqs_queue_redrive_allow_policy" "messages_dlq" {
  queue_url = aws_sqs_queue.messages_dlq.id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.messages.arn]
  })
}

resource "aws_sqs_queue_redrive_allow_policy" "notifications_dlq" {
  queue_url = aws_sqs_queue.notifications_dlq.id
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.notifications.arn]
  })
}

# ---------------------------------------------------------------------------
# notifications topic -> notifications queue (raw delivery)
# ---------------------------------------------------------------------------

data "aws_iam_policy_document" "notifications_queue" {
  statement {
    sid       = "NotificationsTopicSends"
    effect    = "Allow"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.notifications.arn]

    principals {
      type        = "Service"
      identifiers = ["sns.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_sns_topic.notifications.arn]
    }
  }

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [aws_sqs_queue.notifications.arn]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sqs_queue_policy" "notifications" {
  queue_url = aws_sqs_queue.notifications.id
  policy    = data.aws_iam_policy_document.notifications_queue.json
}

resource "aws_sns_topic_subscription" "notifications_to_queue" {
  topic_arn            = aws_sns_topic.notifications.arn
  protocol             = "sqs"
  endpoint             = aws_sqs_queue.notifications.arn
  raw_message_delivery = true

  depends_on = [aws_sqs_queue_policy.notifications]
}
