# sumu on AWS: one module, one file per concern.
#   kms.tf        customer managed key for tables, topics, queues, the API key
#   dynamodb.tf   connections table (stream, TTL, by_node GSI) and cluster table
#   messaging.tf  SNS topics (messages, notifications, mesh), SQS queues + DLQs
#   iam.tf        node role (least privilege) and a policy for backends
#   fleet.tf      launch template, auto scaling group, lifecycle hook, security groups
#   nlb.tf        Network Load Balancer, TLS or TCP pass-through (TLS on the node) listener,
#                 optional plain TCP listener, target groups
#   dns.tf        Route 53 alias record
#   alarms.tf     CloudWatch alarms (DLQ depth, presence stream lag, healthy hosts)
#   outputs.tf    wss URL, topic ARNs and queue URLs for backends

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40.0, < 6.0.0"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.5.0"
    }
  }
}
