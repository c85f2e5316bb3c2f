# One customer managed key encrypts the tables, their stream, the topics, the
# queues and the generated API key parameter.

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_109:key policy: "*" is this key only, and kms:* for the account root is AWS's default statement that delegates key access to IAM policies
  #checkov:skip=CKV_AWS_111:key policy: "*" is this key only; write access is delegated to IAM of this account (root principal) and to SNS for the notifications topic only
  #checkov:skip=CKV_AWS_356:key policy: a key policy's Resource must be "*" (it means the key the policy is attached to)
  statement {
    sid       = "AccountAdministers"
    effect    = "Allow"
    actions   = ["kms:*"]
    resources = ["*"] # in a key policy "*" means this key

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  # SNS must encrypt the messages it delivers from the notifications topic to
  # the KMS-encrypted notifications queue. (The topic's ARN is built from its
  # name: referencing the topic would be a cycle, the topic uses this key.)
  statement {
    sid       = "NotificationsTopicDeliversToQueue"
    effect    = "Allow"
    actions   = ["kms:GenerateDataKey*", "kms:Decrypt"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["sns.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:sns:${local.region}:${local.account_id}:${local.notifications_topic_name}"]
    }
  }
}

resource "aws_kms_key" "sumu" {
  description             = "${local.prefix}: encrypts sumu tables, topics and queues"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_key_deletion_window_days
  policy                  = data.aws_iam_policy_document.kms.json
  tags                    = local.tags
}

resource "aws_kms_alias" "sumu" {
  name          = "alias/${lower(local.prefix)}"
  target_key_id = aws_kms_key.sumu.key_id
}
